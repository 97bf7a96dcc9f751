//! FindCoordinator (key 10): the coordinator of a group is the broker leading the group's
//! `__consumer_offsets` partition (as in Kafka), named with its advertised endpoint from the
//! cluster view; on that broker every shard listens on the same address and the group's
//! requests cross to the owning shard by themselves. Asking creates `__consumer_offsets` when
//! it is missing. A leader that is not live (or none) is COORDINATOR_NOT_AVAILABLE
//! (retriable). v0-3 ask for one key, v4+ for a batch (`coordinator_keys`). Transaction
//! coordinators do not exist yet: key type 1 gets COORDINATOR_NOT_AVAILABLE with a message
//! saying so.
//!
//! Never: names a broker that is not registered as live.

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::find_coordinator_response::Coordinator;
use corebus_wire::kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse,
};
use corebus_wire::kafka_protocol::protocol::StrBytes;

use super::common::str_bytes;
use super::group_routing::{MAX_GROUP_STRING_BYTES, coordinator_broker, offsets_topic};
use crate::cluster::BrokerEndpoint;
use crate::metadata::MetadataImage;
use crate::shard::Shard;

const KEY_TYPE_GROUP: i8 = 0;

pub async fn handle(
    shard: &Rc<Shard>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if version >= 4 {
        request.coordinator_keys.clone()
    } else {
        vec![request.key.clone()]
    };
    let mut answers = Vec::with_capacity(keys.len());
    for key in keys {
        let outcome = if request.key_type != KEY_TYPE_GROUP {
            Err((
                ResponseError::CoordinatorNotAvailable,
                "transactions are not supported yet".to_string(),
            ))
        } else if key.len() > MAX_GROUP_STRING_BYTES {
            Err((
                ResponseError::InvalidGroupId,
                "group id too long".to_string(),
            ))
        } else {
            match offsets_topic(shard).await {
                Ok(image) => coordinator_endpoint(shard, &image, &key),
                Err(e) => Err((e, "the offsets topic is not available".to_string())),
            }
        };
        answers.push((key, outcome));
    }
    let entry = |key: StrBytes, outcome: &Result<BrokerEndpoint, (ResponseError, String)>| {
        let c = Coordinator::default().with_key(key);
        match outcome {
            Ok(b) => c
                .with_node_id(BrokerId(b.node_id))
                .with_host(str_bytes(b.host.clone()))
                .with_port(b.port),
            Err((e, m)) => c
                .with_node_id(BrokerId(-1))
                .with_host(str_bytes(""))
                .with_port(-1)
                .with_error_code(e.code())
                .with_error_message(Some(str_bytes(m.clone()))),
        }
    };
    if version >= 4 {
        return FindCoordinatorResponse::default()
            .with_coordinators(answers.into_iter().map(|(k, o)| entry(k, &o)).collect());
    }
    let (key, outcome) = answers.pop().unwrap_or_else(|| {
        (
            StrBytes::default(),
            Err((ResponseError::InvalidRequest, String::new())),
        )
    });
    let c = entry(key, &outcome);
    let mut r = FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    // v0 has no error message field.
    if version >= 1 {
        r = r.with_error_message(c.error_message);
    }
    r
}

/// The live broker coordinating the group `key`, or why there is none.
fn coordinator_endpoint(
    shard: &Shard,
    image: &MetadataImage,
    key: &str,
) -> Result<BrokerEndpoint, (ResponseError, String)> {
    let leader = coordinator_broker(image, key).ok_or_else(|| {
        (
            ResponseError::CoordinatorNotAvailable,
            "the group's offsets partition has no leader".to_string(),
        )
    })?;
    shard
        .cluster()
        .brokers
        .iter()
        .find(|b| b.node_id == leader)
        .cloned()
        .ok_or_else(|| {
            (
                ResponseError::CoordinatorNotAvailable,
                format!("the group's coordinator, broker {leader}, is not live"),
            )
        })
}
