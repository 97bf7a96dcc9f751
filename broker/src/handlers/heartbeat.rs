//! Heartbeat (key 12): keeps a member's session alive on its coordinator's shard; tells it
//! REBALANCE_IN_PROGRESS when it must rejoin, ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID when
//! it is out of date or gone, FENCED_INSTANCE_ID when another process took its static id.
//!
//! Never: waits (a heartbeat is answered at once).

use std::rc::Rc;

use corebus_wire::kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::group_routing::{check_group_id, on_coordinator};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    request: HeartbeatRequest,
    _version: i16,
) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let outcome = match check_group_id(&group_id) {
        Err(e) => Err(e),
        Ok(()) => {
            let member_id = request.member_id.to_string();
            let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
            let g = group_id.clone();
            on_coordinator(shard, &group_id, move |s: Rc<Shard>| async move {
                s.groups.heartbeat(
                    &g,
                    &member_id,
                    instance_id.as_deref(),
                    request.generation_id,
                )
            })
            .await
            .and_then(|r| r)
        }
    };
    HeartbeatResponse::default().with_error_code(outcome.err().map_or(0, |e| e.code()))
}
