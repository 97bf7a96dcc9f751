//! FindCoordinator (key 10): the coordinator of a group is this node (every shard listens on
//! the same address; the request then crosses to the owning shard by itself). Asking creates
//! `__consumer_offsets` when it is missing, as in Kafka. v0-3 ask for one key, v4+ for a
//! batch (`coordinator_keys`). Transaction coordinators do not exist yet: key type 1 gets
//! COORDINATOR_NOT_AVAILABLE with a message saying so.
//!
//! Never: names a node other than this one.

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::find_coordinator_response::Coordinator;
use corebus_wire::kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse,
};
use corebus_wire::kafka_protocol::protocol::StrBytes;

use super::common::str_bytes;
use super::group_routing::{MAX_GROUP_STRING_BYTES, offsets_topic};
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
            offsets_topic(shard)
                .await
                .map(|_| ())
                .map_err(|e| (e, "the offsets topic is not available".to_string()))
        };
        answers.push((key, outcome));
    }
    let node = &shard.node;
    let entry = |key: StrBytes, outcome: &Result<(), (ResponseError, String)>| {
        let c = Coordinator::default().with_key(key);
        match outcome {
            Ok(()) => c
                .with_node_id(BrokerId(node.node_id))
                .with_host(str_bytes(node.host.clone()))
                .with_port(node.port),
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
