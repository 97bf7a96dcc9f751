//! DescribeGroups (key 15): each group's state, protocol and members from its coordinator's
//! shard (one hop per group); member metadata and assignments of a Stable group only, as in
//! Kafka. An unknown group is Dead, and from v6 also GROUP_ID_NOT_FOUND.
//!
//! Never: shows a member's assignment while a rebalance is changing it.

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::describe_groups_response::{
    DescribedGroup, DescribedGroupMember,
};
use corebus_wire::kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::common::str_bytes;
use super::group_routing::on_coordinator;
use crate::groups::group::GroupState;
use crate::shard::Shard;

/// Kafka's "not requested" value of authorized operations.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;
/// No ACLs exist: every group operation is allowed (READ 3, DELETE 6, DESCRIBE 8).
const ALL_GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub async fn handle(
    shard: &Rc<Shard>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut out = Vec::with_capacity(request.groups.len());
    for group_id in &request.groups {
        let id = group_id.0.to_string();
        let mut d = DescribedGroup::default()
            .with_group_id(group_id.clone())
            .with_authorized_operations(if request.include_authorized_operations {
                ALL_GROUP_OPERATIONS
            } else {
                OPERATIONS_NOT_REQUESTED
            });
        let g = id.clone();
        let found = on_coordinator(shard, &id, move |s: Rc<Shard>| async move {
            s.groups.describe(&g)
        })
        .await;
        match found {
            Ok(Some(g)) => {
                d.group_state = str_bytes(g.state.name());
                d.protocol_type = str_bytes(g.protocol_type);
                d.protocol_data = str_bytes(g.protocol);
                d.members = g
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default()
                            .with_member_id(str_bytes(m.member_id))
                            .with_client_id(str_bytes(m.client_id))
                            .with_client_host(str_bytes(m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment);
                        if version >= 4 {
                            dm.group_instance_id = m.instance_id.map(str_bytes);
                        }
                        dm
                    })
                    .collect();
            }
            Ok(None) => {
                d.group_state = str_bytes(GroupState::Dead.name());
                if version >= 6 {
                    d.error_code = ResponseError::GroupIdNotFound.code();
                    d.error_message = Some(str_bytes(format!("Group {id} not found.")));
                }
            }
            Err(e) => d.error_code = e.code(),
        }
        out.push(d);
    }
    DescribeGroupsResponse::default().with_groups(out)
}
