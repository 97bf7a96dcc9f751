//! Kafka API handlers, one file per API, and the dispatch from a decoded request to its
//! handler. `api_support` is the single list of what this broker advertises: an API is added
//! there only when its handler fully works.
//!
//! Never: touches sockets or framing (the connection does); reaches another shard's state
//! except through the mesh; panics on client input.

pub mod alter_configs;
pub mod alter_partition;
pub mod api_versions;
pub mod broker_heartbeat;
pub mod common;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod group_routing;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod partition_reassignments;
pub mod produce;
pub mod sync_group;
pub mod topic_configs;

use std::net::SocketAddr;
use std::rc::Rc;

use corebus_wire::kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use corebus_wire::request::Request;
use corebus_wire::versions::ApiSupport;
use tracing::warn;

use crate::server::closing::Closed;
use crate::server::order::Turn;
use crate::shard::Shard;

/// What the connection does with a handled request.
pub enum Reply {
    /// Send this response.
    Respond(ResponseKind),
    /// Send a Fetch response with its record data beside it.
    Fetch(fetch::FetchReply),
    /// Send nothing (Produce with acks=0).
    Nothing,
    /// Close the connection (a request Kafka would also drop the connection for).
    Close,
}

/// The APIs and versions this broker advertises in ApiVersions, and accepts.
pub fn api_support() -> ApiSupport {
    ApiSupport::new()
        .with(ApiKey::Produce)
        .with(ApiKey::Fetch)
        .with(ApiKey::ListOffsets)
        .with(ApiKey::DeleteRecords)
        .with(ApiKey::OffsetForLeaderEpoch)
        .with(ApiKey::InitProducerId)
        .with(ApiKey::DescribeLogDirs)
        .with(ApiKey::DescribeProducers)
        .with(ApiKey::ApiVersions)
        .with(ApiKey::Metadata)
        .with(ApiKey::CreateTopics)
        .with(ApiKey::DeleteTopics)
        .with(ApiKey::CreatePartitions)
        .with(ApiKey::DescribeCluster)
        .with(ApiKey::DescribeConfigs)
        .with(ApiKey::AlterConfigs)
        .with(ApiKey::IncrementalAlterConfigs)
        .with(ApiKey::FindCoordinator)
        .with(ApiKey::JoinGroup)
        .with(ApiKey::SyncGroup)
        .with(ApiKey::Heartbeat)
        .with(ApiKey::LeaveGroup)
        .with(ApiKey::OffsetCommit)
        .with(ApiKey::OffsetFetch)
        .with(ApiKey::ListGroups)
        .with(ApiKey::DescribeGroups)
        .with(ApiKey::DeleteGroups)
        .with(ApiKey::OffsetDelete)
        .with(ApiKey::AlterPartition)
        .with(ApiKey::BrokerHeartbeat)
        .with(ApiKey::ElectLeaders)
        .with(ApiKey::AlterPartitionReassignments)
        .with(ApiKey::ListPartitionReassignments)
}

/// Runs `request` on this shard; `peer` is the client's address (group members' client host).
/// `turn` lets the connection's next request start: passed on when this request's effects are
/// applied (by Produce once its appends are in the logs; by every other API when it ends,
/// since `turn` is dropped then). `closed` fires when the connection's reader ends; requests
/// that only wait before answering (a parked Fetch) stop waiting then.
pub async fn handle(
    shard: &Rc<Shard>,
    request: Request,
    peer: SocketAddr,
    turn: Turn,
    closed: Closed,
) -> Reply {
    if !api_support().supports(request.api_key, request.api_version) {
        // A client only sends what ApiVersions advertised; Kafka closes the connection too.
        warn!(api = ?request.api_key, v = request.api_version, "request for an API or version not advertised; closing");
        return Reply::Close;
    }
    let v = request.api_version;
    let key = request.api_key;
    let client_id = request.header.client_id.clone().unwrap_or_default();
    match request.body {
        RequestKind::ApiVersions(r) => {
            Reply::Respond(ResponseKind::ApiVersions(api_versions::handle(shard, r, v)))
        }
        RequestKind::Produce(r) => produce::handle(shard, r, v, turn).await,
        RequestKind::Fetch(r) => Reply::Fetch(fetch::handle(shard, r, v, closed).await),
        RequestKind::ListOffsets(r) => Reply::Respond(ResponseKind::ListOffsets(
            list_offsets::handle(shard, r, v).await,
        )),
        RequestKind::DeleteRecords(r) => Reply::Respond(ResponseKind::DeleteRecords(
            delete_records::handle(shard, r, v).await,
        )),
        RequestKind::OffsetForLeaderEpoch(r) => Reply::Respond(ResponseKind::OffsetForLeaderEpoch(
            offset_for_leader_epoch::handle(shard, r, v).await,
        )),
        RequestKind::InitProducerId(r) => Reply::Respond(ResponseKind::InitProducerId(
            init_producer_id::handle(shard, r, v).await,
        )),
        RequestKind::DescribeLogDirs(r) => Reply::Respond(ResponseKind::DescribeLogDirs(
            describe_log_dirs::handle(shard, r, v).await,
        )),
        RequestKind::DescribeProducers(r) => Reply::Respond(ResponseKind::DescribeProducers(
            describe_producers::handle(shard, r, v).await,
        )),
        RequestKind::Metadata(r) => {
            Reply::Respond(ResponseKind::Metadata(metadata::handle(shard, r, v).await))
        }
        RequestKind::CreateTopics(r) => Reply::Respond(ResponseKind::CreateTopics(
            create_topics::handle(shard, r, v).await,
        )),
        RequestKind::DeleteTopics(r) => Reply::Respond(ResponseKind::DeleteTopics(
            delete_topics::handle(shard, r, v).await,
        )),
        RequestKind::CreatePartitions(r) => Reply::Respond(ResponseKind::CreatePartitions(
            create_partitions::handle(shard, r, v).await,
        )),
        RequestKind::DescribeCluster(r) => Reply::Respond(ResponseKind::DescribeCluster(
            describe_cluster::handle(shard, r, v),
        )),
        RequestKind::DescribeConfigs(r) => Reply::Respond(ResponseKind::DescribeConfigs(
            describe_configs::handle(shard, r, v),
        )),
        RequestKind::AlterConfigs(r) => Reply::Respond(ResponseKind::AlterConfigs(
            alter_configs::handle(shard, r, v).await,
        )),
        RequestKind::IncrementalAlterConfigs(r) => {
            Reply::Respond(ResponseKind::IncrementalAlterConfigs(
                incremental_alter_configs::handle(shard, r, v).await,
            ))
        }
        RequestKind::FindCoordinator(r) => Reply::Respond(ResponseKind::FindCoordinator(
            find_coordinator::handle(shard, r, v).await,
        )),
        RequestKind::JoinGroup(r) => Reply::Respond(ResponseKind::JoinGroup(
            join_group::handle(shard, r, v, &client_id, peer).await,
        )),
        RequestKind::SyncGroup(r) => Reply::Respond(ResponseKind::SyncGroup(
            sync_group::handle(shard, r, v).await,
        )),
        RequestKind::Heartbeat(r) => Reply::Respond(ResponseKind::Heartbeat(
            heartbeat::handle(shard, r, v).await,
        )),
        RequestKind::LeaveGroup(r) => Reply::Respond(ResponseKind::LeaveGroup(
            leave_group::handle(shard, r, v).await,
        )),
        RequestKind::OffsetCommit(r) => Reply::Respond(ResponseKind::OffsetCommit(
            offset_commit::handle(shard, r, v).await,
        )),
        RequestKind::OffsetFetch(r) => Reply::Respond(ResponseKind::OffsetFetch(
            offset_fetch::handle(shard, r, v).await,
        )),
        RequestKind::ListGroups(r) => Reply::Respond(ResponseKind::ListGroups(
            list_groups::handle(shard, r, v).await,
        )),
        RequestKind::DescribeGroups(r) => Reply::Respond(ResponseKind::DescribeGroups(
            describe_groups::handle(shard, r, v).await,
        )),
        RequestKind::DeleteGroups(r) => Reply::Respond(ResponseKind::DeleteGroups(
            delete_groups::handle(shard, r, v).await,
        )),
        RequestKind::OffsetDelete(r) => Reply::Respond(ResponseKind::OffsetDelete(
            offset_delete::handle(shard, r, v).await,
        )),
        RequestKind::AlterPartition(r) => Reply::Respond(ResponseKind::AlterPartition(
            alter_partition::handle(shard, r, v).await,
        )),
        RequestKind::BrokerHeartbeat(r) => Reply::Respond(ResponseKind::BrokerHeartbeat(
            broker_heartbeat::handle(shard, r, v).await,
        )),
        RequestKind::ElectLeaders(r) => Reply::Respond(ResponseKind::ElectLeaders(
            elect_leaders::handle(shard, r, v).await,
        )),
        RequestKind::AlterPartitionReassignments(r) => {
            Reply::Respond(ResponseKind::AlterPartitionReassignments(
                partition_reassignments::alter(shard, r, v).await,
            ))
        }
        RequestKind::ListPartitionReassignments(r) => {
            Reply::Respond(ResponseKind::ListPartitionReassignments(
                partition_reassignments::list(shard, r, v).await,
            ))
        }
        // Unreachable while api_support lists only the APIs above; a safe answer if not.
        _ => {
            warn!(api = ?key, "advertised API without a handler; closing");
            Reply::Close
        }
    }
}
