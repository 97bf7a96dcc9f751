//! OffsetCommit (key 8): checks each partition (the topic must exist, Kafka's
//! UNKNOWN_TOPIC_OR_PARTITION otherwise; metadata within `offset.metadata.max.bytes`), then
//! the group's coordinator checks the member and generation (ILLEGAL_GENERATION,
//! UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID where Kafka gives them) and
//! writes every valid partition in one append; the answer waits until it is durable.
//! Generation -1 with an empty group is a client that only stores offsets.
//!
//! Never: acknowledges an offset that is not durable; commits for a partition that does not
//! exist.

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use corebus_wire::kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::common::find_partition;
use super::group_routing::on_coordinator;
use crate::groups::coordinator::CommitItem;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    request: OffsetCommitRequest,
    _version: i16,
) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let image = shard.metadata();
    // One slot per partition in request order: an early error, or the position of its item.
    let mut slots: Vec<Result<usize, ResponseError>> = Vec::new();
    let mut items = Vec::new();
    for t in &request.topics {
        for p in &t.partitions {
            match find_partition(
                &image,
                Some(&t.name.0),
                uuid::Uuid::nil(),
                p.partition_index,
            ) {
                Ok(_) => {
                    slots.push(Ok(items.len()));
                    items.push(CommitItem {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    });
                }
                Err(e) => slots.push(Err(e)),
            }
        }
    }
    let outcome = if items.is_empty() {
        Ok(Vec::new())
    } else {
        let member_id = request.member_id.to_string();
        let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
        let generation = request.generation_id_or_member_epoch;
        let g = group_id.clone();
        on_coordinator(shard, &group_id, move |s: Rc<Shard>| async move {
            s.groups
                .commit(
                    &s,
                    &g,
                    &member_id,
                    instance_id.as_deref(),
                    generation,
                    items,
                )
                .await
        })
        .await
        .and_then(|r| r)
    };
    let mut slots = slots.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error = match slots.next() {
                        Some(Ok(i)) => match &outcome {
                            Ok(per_item) => per_item.get(i).copied().flatten(),
                            Err(e) => Some(*e),
                        },
                        Some(Err(e)) => Some(e),
                        None => Some(ResponseError::UnknownServerError),
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.map_or(0, |e| e.code()))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
