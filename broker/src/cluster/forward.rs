//! What a broker asks of the controller over the Kafka protocol: in-sync set changes of the
//! partitions it leads (AlterPartition, `crate::replication::isr`), and topic creation, for
//! what a broker creates on its own account:
//! `__consumer_offsets` on a group's first FindCoordinator and topics auto-created by Metadata
//! (as a Kafka broker forwards them, KIP-590). Only the controller writes topics; a broker that
//! is not the controller sends it a CreateTopics request over the Kafka protocol, to the
//! listener its registration advertises, then waits for the new topic to reach its own image
//! through its metadata watch.
//!
//! Every step is bounded: connecting, the answer ([`FORWARD_TIMEOUT_MS`] in all, its frame at
//! most [`MAX_FORWARD_RESPONSE_BYTES`]) and the wait for the watch. A failure is an error the
//! caller turns into a retriable Kafka code; nothing is retried here.
//!
//! Never: forwards a client's own CreateTopics (Kafka clients send it to the controller and
//! retry on NOT_CONTROLLER); runs on the controller itself.

use std::time::{Duration, Instant};

use super::{BrokerEndpoint, peer};
use crate::handlers::create_topics::NewTopic;
use crate::metadata::PartitionMeta;
use crate::replication::isr::IsrChange;
use crate::shard::Shard;
use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::{
    AlterPartitionRequest, ApiKey, BrokerHeartbeatRequest, BrokerId, CreateTopicsRequest,
    RequestHeader, RequestKind, ResponseKind, alter_partition_request,
};
use corebus_wire::kafka_protocol::protocol::StrBytes;
use corebus_wire::request::creatable_topic;
use corebus_wire::{decode_response, encode_request};

/// Time a forwarded creation may take, the controller's answer included.
pub const FORWARD_TIMEOUT_MS: u64 = 10_000;
/// Largest answer accepted (one topic's result is tens of bytes).
pub const MAX_FORWARD_RESPONSE_BYTES: usize = 1 << 20;
/// CreateTopics version sent: the newest without flexible headers, which every corebus
/// speaks (KIP-896's floor is 2).
const CREATE_TOPICS_VERSION: i16 = 4;
/// How often the local image is looked at while waiting for the watch.
const WATCH_POLL_MS: u64 = 20;
const CLIENT_ID: &str = "corebus-broker-forward";

/// Asks the controller to create `topics`; one Kafka error code per topic, in order (0 when
/// created), once each created topic is in this broker's image. `Err` says why the controller
/// could not be asked or answered.
pub async fn create_topics(shard: &Shard, topics: &[NewTopic]) -> Result<Vec<i16>, String> {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(FORWARD_TIMEOUT_MS);
    let (controller, endpoint) = controller_endpoint(shard)?;
    let request = create_request(topics);
    let call = ask(endpoint.clone(), request);
    let codes = match glommio::timer::timeout(Duration::from_millis(FORWARD_TIMEOUT_MS), async {
        Ok(call.await)
    })
    .await
    {
        Ok(Ok(codes)) => codes,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(format!(
                "the controller (broker {controller} at {}:{}) did not answer within \
                 {FORWARD_TIMEOUT_MS} ms",
                endpoint.host, endpoint.port
            ));
        }
    };
    if codes.len() != topics.len() {
        return Err(format!(
            "the controller answered {} results for {} topics",
            codes.len(),
            topics.len()
        ));
    }
    // Created (or already there): wait until this broker's watch has brought them in.
    let wanted: Vec<&str> = topics
        .iter()
        .zip(&codes)
        .filter(|(_, code)| **code == 0)
        .map(|(t, _)| t.name.as_str())
        .collect();
    while !wanted.iter().all(|n| shard.metadata().topic(n).is_some()) {
        if Instant::now() >= deadline {
            return Err(format!(
                "created by the controller, but not in this broker's metadata after \
                 {FORWARD_TIMEOUT_MS} ms"
            ));
        }
        glommio::timer::sleep(Duration::from_millis(WATCH_POLL_MS)).await;
    }
    Ok(codes)
}

/// The controller's id and advertised listener, as this broker's cluster view has them.
fn controller_endpoint(shard: &Shard) -> Result<(i32, BrokerEndpoint), String> {
    let cluster = shard.cluster();
    let controller = cluster
        .controller_id
        .ok_or_else(|| "no controller is known yet".to_string())?;
    let endpoint = cluster
        .brokers
        .iter()
        .find(|b| b.node_id == controller)
        .cloned()
        .ok_or_else(|| format!("the controller, broker {controller}, is not registered"))?;
    Ok((controller, endpoint))
}

fn create_request(topics: &[NewTopic]) -> CreateTopicsRequest {
    let topics = topics
        .iter()
        .map(|t| {
            let factor = i16::try_from(t.replication_factor).unwrap_or(-1);
            creatable_topic(&t.name, t.partitions, factor, &t.configs)
        })
        .collect();
    CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(FORWARD_TIMEOUT_MS as i32)
}

/// One CreateTopics round trip to `to`; the per-topic error codes.
async fn ask(to: BrokerEndpoint, request: CreateTopicsRequest) -> Result<Vec<i16>, String> {
    let header = RequestHeader::default()
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let frame = encode_request(
        &header,
        &RequestKind::CreateTopics(request),
        CREATE_TOPICS_VERSION,
    )
    .map_err(|e| format!("cannot encode CreateTopics: {e}"))?;
    let addr = format!("{}:{}", to.host, to.port);
    let mut stream = peer::connect(&to, FORWARD_TIMEOUT_MS).await?;
    let body = peer::exchange(&mut stream, &frame, MAX_FORWARD_RESPONSE_BYTES)
        .await
        .map_err(|e| format!("controller at {addr}: {e}"))?;
    let (header, response) = decode_response(body, ApiKey::CreateTopics, CREATE_TOPICS_VERSION)
        .map_err(|e| format!("controller at {addr}: {e}"))?;
    if header.correlation_id != 1 {
        return Err(format!(
            "controller at {addr}: answer to correlation id {}",
            header.correlation_id
        ));
    }
    match response {
        ResponseKind::CreateTopics(r) => Ok(r.topics.iter().map(|t| t.error_code).collect()),
        other => Err(format!(
            "controller at {addr}: not a CreateTopics answer: {other:?}"
        )),
    }
}

/// AlterPartition version sent: v2 (topics by id, the new set as broker ids).
const ALTER_PARTITION_VERSION: i16 = 2;
/// BrokerHeartbeat version sent (v1 adds the offline log directories, none here).
const BROKER_HEARTBEAT_VERSION: i16 = 1;

/// Sends in-sync set changes of this broker's led partitions to the controller (Kafka's
/// AlterPartition, as a leader does): one result per change, in order, with the partition's
/// state as the controller committed it. `Err` says why the controller could not be asked or
/// answered.
pub async fn alter_partition(
    shard: &Shard,
    changes: &[IsrChange],
) -> Result<Vec<Result<PartitionMeta, ResponseError>>, String> {
    let mut topics: Vec<alter_partition_request::TopicData> = Vec::new();
    for c in changes {
        let p = alter_partition_request::PartitionData::default()
            .with_partition_index(c.partition)
            .with_leader_epoch(c.leader_epoch)
            .with_partition_epoch(c.partition_epoch)
            .with_new_isr(c.isr.iter().map(|b| BrokerId(*b)).collect());
        match topics.iter_mut().find(|t| t.topic_id == c.topic_id.0) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                alter_partition_request::TopicData::default()
                    .with_topic_id(c.topic_id.0)
                    .with_partitions(vec![p]),
            ),
        }
    }
    let request = AlterPartitionRequest::default()
        .with_broker_id(BrokerId(shard.node.node_id))
        .with_broker_epoch(-1)
        .with_topics(topics);
    let response = call_controller(
        shard,
        RequestKind::AlterPartition(request),
        ApiKey::AlterPartition,
        ALTER_PARTITION_VERSION,
    )
    .await?;
    let ResponseKind::AlterPartition(response) = response else {
        return Err("the controller's answer is not an AlterPartition answer".to_string());
    };
    let top = code_error(response.error_code);
    Ok(changes
        .iter()
        .map(|c| {
            if let Some(e) = top {
                return Err(e);
            }
            let p = response
                .topics
                .iter()
                .filter(|t| t.topic_id == c.topic_id.0)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == c.partition)
                .ok_or(ResponseError::UnknownServerError)?;
            if let Some(e) = code_error(p.error_code) {
                return Err(e);
            }
            let isr: Vec<i32> = p.isr.iter().map(|b| b.0).collect();
            Ok(PartitionMeta {
                // The answer does not carry the replicas; the leader keeps its own.
                replicas: Vec::new(),
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                isr,
                partition_epoch: p.partition_epoch,
                adding: Vec::new(),
                removing: Vec::new(),
            })
        })
        .collect())
}

/// Asks the controller to move this broker's leaderships away before it stops (a controlled
/// shutdown: BrokerHeartbeat with `want_shut_down`, as a KRaft broker does); whether the
/// controller says it may stop now (it leads nothing another replica could take).
pub async fn controlled_shutdown(shard: &Shard) -> Result<bool, String> {
    // This life's registration, as the controller's view has it (Kafka's broker epoch).
    let me = shard.node.node_id;
    let registered = shard
        .cluster()
        .brokers
        .iter()
        .find(|b| b.node_id == me)
        .map(|b| b.registered)
        .ok_or_else(|| "this broker is not in its own cluster view".to_string())?;
    let request = BrokerHeartbeatRequest::default()
        .with_broker_id(BrokerId(me))
        .with_broker_epoch(i64::try_from(registered).unwrap_or(-1))
        .with_want_shut_down(true);
    let response = call_controller(
        shard,
        RequestKind::BrokerHeartbeat(request),
        ApiKey::BrokerHeartbeat,
        BROKER_HEARTBEAT_VERSION,
    )
    .await?;
    let ResponseKind::BrokerHeartbeat(response) = response else {
        return Err("the controller's answer is not a BrokerHeartbeat answer".to_string());
    };
    match code_error(response.error_code) {
        Some(e) => Err(format!("the controller answered {e:?}")),
        None => Ok(response.should_shut_down),
    }
}

/// One request to the controller's advertised listener and its answer, bounded by
/// [`FORWARD_TIMEOUT_MS`] and [`MAX_FORWARD_RESPONSE_BYTES`].
async fn call_controller(
    shard: &Shard,
    request: RequestKind,
    key: ApiKey,
    version: i16,
) -> Result<ResponseKind, String> {
    let (_, to) = controller_endpoint(shard)?;
    let header = RequestHeader::default()
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let frame = encode_request(&header, &request, version)
        .map_err(|e| format!("cannot encode {key:?}: {e}"))?;
    let addr = format!("{}:{}", to.host, to.port);
    let exchange = async {
        let mut stream = peer::connect(&to, FORWARD_TIMEOUT_MS).await?;
        peer::exchange(&mut stream, &frame, MAX_FORWARD_RESPONSE_BYTES).await
    };
    let body = glommio::timer::timeout(Duration::from_millis(FORWARD_TIMEOUT_MS), async {
        Ok(exchange.await)
    })
    .await
    .map_err(|_| format!("controller at {addr} did not answer in time"))?
    .map_err(|e| format!("controller at {addr}: {e}"))?;
    let (_, response) =
        decode_response(body, key, version).map_err(|e| format!("controller at {addr}: {e}"))?;
    Ok(response)
}

fn code_error(code: i16) -> Option<ResponseError> {
    (code != 0)
        .then(|| ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError))
}
