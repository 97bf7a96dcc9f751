//! SyncGroup (key 14): the leader hands in the assignment of the new generation; every
//! member waits on the coordinator's shard until it is stored and gets its own part. v5
//! answers with the protocol type and name.
//!
//! Never: answers a member with another member's assignment.

use std::rc::Rc;

use bytes::Bytes;
use corebus_wire::kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::common::str_bytes;
use super::group_routing::{check_group_id, code, on_coordinator};
use crate::groups::group::SyncResult;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let group_id = request.group_id.0.to_string();
    let result = match check_group_id(&group_id) {
        Err(e) => SyncResult::error(e),
        Ok(()) => {
            let member_id = request.member_id.to_string();
            let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
            let protocol_type = request.protocol_type.as_ref().map(|s| s.to_string());
            let protocol_name = request.protocol_name.as_ref().map(|s| s.to_string());
            let assignments: Vec<(String, Bytes)> = request
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect();
            let g = group_id.clone();
            on_coordinator(shard, &group_id, move |s: Rc<Shard>| async move {
                s.groups
                    .sync(
                        &s,
                        &g,
                        &member_id,
                        instance_id.as_deref(),
                        request.generation_id,
                        protocol_type.as_deref(),
                        protocol_name.as_deref(),
                        assignments,
                    )
                    .await
            })
            .await
            .unwrap_or_else(SyncResult::error)
        }
    };
    let mut resp = SyncGroupResponse::default()
        .with_error_code(code(result.error))
        .with_assignment(result.assignment);
    if version >= 5 {
        resp.protocol_type = result.protocol_type.map(str_bytes);
        resp.protocol_name = result.protocol_name.map(str_bytes);
    }
    resp
}
