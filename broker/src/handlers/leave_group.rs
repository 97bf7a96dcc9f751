//! LeaveGroup (key 13): members leave their group at once (no session timeout to wait out);
//! v0-2 name one member, v3+ a batch of members, each by member id or, for static members,
//! by `group.instance.id` alone (KIP-345).
//!
//! Never: removes a static member named by an instance id that another member id holds.

use std::rc::Rc;

use corebus_wire::kafka_protocol::messages::leave_group_response::MemberResponse;
use corebus_wire::kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::common::str_bytes;
use super::group_routing::{check_group_id, on_coordinator};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let outcomes = match check_group_id(&group_id) {
        Err(e) => Err(e),
        Ok(()) => {
            let g = group_id.clone();
            let members = leaving.clone();
            on_coordinator(shard, &group_id, move |s: Rc<Shard>| async move {
                s.groups.leave(&s, &g, members).await
            })
            .await
        }
    };
    let outcomes = match outcomes {
        Ok(o) => o,
        Err(e) => return LeaveGroupResponse::default().with_error_code(e.code()),
    };
    if version < 3 {
        let code = outcomes
            .first()
            .and_then(|o| o.as_ref().err())
            .map_or(0, |e| e.code());
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = leaving
        .into_iter()
        .zip(outcomes)
        .map(|((member_id, instance_id), outcome)| {
            let error = outcome.err().map_or(0, |e| e.code());
            // Kafka echoes the member as the request named it.
            MemberResponse::default()
                .with_member_id(str_bytes(member_id))
                .with_group_instance_id(instance_id.map(str_bytes))
                .with_error_code(error)
        })
        .collect::<Vec<_>>();
    // Kafka's top-level code stays NONE when only some members failed.
    LeaveGroupResponse::default().with_members(members)
}
