//! ListGroups (key 16): every group of every shard (one mesh hop per shard), filtered by
//! state (v4+, Kafka's state names, case-insensitive) and by type (v5+: all groups here are
//! "classic").
//!
//! Never: lists a deleted (Dead) group.

use std::rc::Rc;

use corebus_wire::kafka_protocol::messages::list_groups_response::ListedGroup;
use corebus_wire::kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::common::str_bytes;
use crate::groups::coordinator::GroupSummary;
use crate::shard::{Shard, ShardId};

/// The type of every group this broker has (KIP-848 groups are not supported yet).
const CLASSIC: &str = "classic";

pub async fn handle(
    shard: &Rc<Shard>,
    request: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let mut groups: Vec<GroupSummary> = Vec::new();
    for s in 0..shard.shard_count() {
        if let Ok(found) = shard
            .on_shard(
                ShardId(s as u16),
                |s: Rc<Shard>| async move { s.groups.list() },
            )
            .await
        {
            groups.extend(found);
        }
    }
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_string())
        .collect();
    let types: Vec<String> = request.types_filter.iter().map(|s| s.to_string()).collect();
    let listed = groups
        .into_iter()
        .filter(|g| {
            states.is_empty()
                || states
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(g.state.name()))
        })
        .filter(|_| types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case(CLASSIC)))
        .map(|g| {
            let mut l = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(g.group_id)))
                .with_protocol_type(str_bytes(g.protocol_type));
            if version >= 4 {
                l.group_state = str_bytes(g.state.name());
            }
            if version >= 5 {
                l.group_type = str_bytes(CLASSIC);
            }
            l
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}
