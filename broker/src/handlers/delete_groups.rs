//! DeleteGroups (key 42): deletes empty groups (their offsets and membership get tombstones
//! in `__consumer_offsets`); a group with members gets NON_EMPTY_GROUP, an unknown one
//! GROUP_ID_NOT_FOUND. One hop per group to its coordinator's shard.
//!
//! Never: deletes a group that has members.

use std::rc::Rc;

use corebus_wire::kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use corebus_wire::kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::group_routing::on_coordinator;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    request: DeleteGroupsRequest,
    _version: i16,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in &request.groups_names {
        let id = group_id.0.to_string();
        let g = id.clone();
        let outcome = on_coordinator(shard, &id, move |s: Rc<Shard>| async move {
            s.groups.delete(&s, &g).await
        })
        .await
        .and_then(|r| r);
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id.clone())
                .with_error_code(outcome.err().map_or(0, |e| e.code())),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
