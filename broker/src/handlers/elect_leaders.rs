//! ElectLeaders (key 43, v0-v2): a preferred election (give partitions back to their first
//! assigned replica, when it is live and in sync) or an unclean one (give a partition whose
//! leader is gone to a live replica, in sync or not), for the partitions asked or for all of
//! them (`metadata::elect::elect_asked`). Answered by the controller, as Kafka's admin client
//! expects (it sends ElectLeaders to the controller Metadata names); another broker answers
//! NOT_CONTROLLER.
//!
//! Never: elects a broker that is not live or is shutting down; a preferred election never
//! leaves the in-sync set.

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::elect_leaders_response::{
    PartitionResult, ReplicaElectionResult,
};
use corebus_wire::kafka_protocol::messages::{
    ElectLeadersRequest, ElectLeadersResponse, TopicName,
};
use corebus_wire::kafka_protocol::protocol::StrBytes;
use tracing::info;

use crate::handlers::common::on_controller_with_brokers;
use crate::metadata::elect::{Asked, Election, NotElected, elect_asked};
use crate::shard::Shard;

/// v1 added the election type and the top-level error code.
const ELECTION_TYPE_VERSION: i16 = 1;

pub async fn handle(
    shard: &Rc<Shard>,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let election = match (version >= ELECTION_TYPE_VERSION, request.election_type) {
        (false, _) | (true, 0) => Election::Preferred,
        (true, 1) => Election::Unclean,
        (true, _) => return refuse(&request, version, ResponseError::InvalidRequest),
    };
    if shard.cluster().controller_id != Some(shard.node.node_id) {
        return refuse(&request, version, ResponseError::NotController);
    }
    let asked: Option<Vec<(String, i32)>> = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect()
    });
    let outcome = on_controller_with_brokers(shard, None, move |image, live, barred| {
        elect_asked(image, election, asked.as_deref(), live, barred)
    })
    .await;
    match outcome {
        Ok(outcomes) => {
            let elected = outcomes.iter().filter(|(_, _, r)| r.is_ok()).count();
            if elected > 0 {
                info!(
                    ?election,
                    partitions = elected,
                    "leaders elected on request"
                );
            }
            answer(outcomes, election)
        }
        Err(code) => refuse(&request, version, code),
    }
}

fn answer(outcomes: Asked, election: Election) -> ElectLeadersResponse {
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, outcome) in outcomes {
        let (code, message) = match outcome {
            Ok(()) => (None, None),
            Err(NotElected::NotNeeded) => (Some(ResponseError::ElectionNotNeeded), None),
            Err(NotElected::NotAvailable) => match election {
                Election::Preferred => (
                    Some(ResponseError::PreferredLeaderNotAvailable),
                    Some("the preferred replica is not live and in sync"),
                ),
                Election::Unclean => (
                    Some(ResponseError::EligibleLeadersNotAvailable),
                    Some("no replica is live"),
                ),
            },
            Err(NotElected::Unknown) => (Some(ResponseError::UnknownTopicOrPartition), None),
        };
        let r = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code.map_or(0, |c| c.code()))
            .with_error_message(message.map(StrBytes::from_static_str));
        match results.iter_mut().find(|t| *t.topic.0 == *topic) {
            Some(t) => t.partition_result.push(r),
            None => results.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partition_result(vec![r]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}

/// The whole request refused with `code`: top-level from v1, per partition always.
fn refuse(
    request: &ElectLeadersRequest,
    version: i16,
    code: ResponseError,
) -> ElectLeadersResponse {
    let results = request
        .topic_partitions
        .iter()
        .flatten()
        .map(|t| {
            ReplicaElectionResult::default()
                .with_topic(t.topic.clone())
                .with_partition_result(
                    t.partitions
                        .iter()
                        .map(|p| {
                            PartitionResult::default()
                                .with_partition_id(*p)
                                .with_error_code(code.code())
                        })
                        .collect(),
                )
        })
        .collect();
    let response = ElectLeadersResponse::default().with_replica_election_results(results);
    if version >= ELECTION_TYPE_VERSION {
        response.with_error_code(code.code())
    } else {
        response
    }
}
