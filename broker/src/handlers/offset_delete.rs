//! OffsetDelete (key 47): removes a group's committed offsets (tombstones in
//! `__consumer_offsets`), except of topics a consumer group with members is subscribed to
//! (GROUP_SUBSCRIBED_TO_TOPIC per partition; subscriptions are read from the members'
//! ConsumerProtocolSubscription). Unknown topics get UNKNOWN_TOPIC_OR_PARTITION.
//!
//! Never: deletes the offsets of a topic the group is consuming.

use std::rc::Rc;

use bytes::{Buf, Bytes};
use corebus_wire::kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use corebus_wire::kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetDeleteRequest, OffsetDeleteResponse,
};
use corebus_wire::kafka_protocol::protocol::Decodable;

use super::common::find_partition;
use super::group_routing::on_coordinator;
use crate::shard::Shard;

/// Highest ConsumerProtocolSubscription version this build reads; newer ones only add
/// fields at the end, so they are read as this one (as Kafka does).
const MAX_SUBSCRIPTION_VERSION: i16 = 3;

pub async fn handle(
    shard: &Rc<Shard>,
    request: OffsetDeleteRequest,
    _version: i16,
) -> OffsetDeleteResponse {
    let group_id = request.group_id.0.to_string();
    let image = shard.metadata();
    let mut asked = Vec::new();
    let mut unknown = Vec::new();
    for t in &request.topics {
        let mut parts = Vec::new();
        for p in &t.partitions {
            match find_partition(
                &image,
                Some(&t.name.0),
                uuid::Uuid::nil(),
                p.partition_index,
            ) {
                Ok(_) => parts.push(p.partition_index),
                Err(e) => unknown.push((t.name.0.to_string(), p.partition_index, e)),
            }
        }
        asked.push((t.name.0.to_string(), parts));
    }
    let g = group_id.clone();
    let outcome = on_coordinator(shard, &group_id, move |s: Rc<Shard>| async move {
        s.groups
            .delete_offsets(&s, &g, asked, subscribed_topics)
            .await
    })
    .await
    .and_then(|r| r);
    let answered = match outcome {
        Ok(a) => a,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
    };
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let name = t.name.0.as_str();
                    let code = unknown
                        .iter()
                        .find(|(n, i, _)| n == name && *i == p.partition_index)
                        .map(|(_, _, e)| e.code())
                        .or_else(|| {
                            answered
                                .iter()
                                .filter(|(n, _)| n == name)
                                .flat_map(|(_, ps)| ps.iter())
                                .find(|(i, _)| *i == p.partition_index)
                                .map(|(_, e)| e.map_or(0, |e| e.code()))
                        })
                        .unwrap_or(0);
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

/// The topics the members subscribe to, from their consumer protocol metadata; `None` when
/// one cannot be read.
fn subscribed_topics(metadata: &[Bytes]) -> Option<Vec<String>> {
    let mut topics = Vec::new();
    for m in metadata {
        let mut buf = m.clone();
        if buf.remaining() < 2 {
            return None;
        }
        let version = buf.get_i16().clamp(0, MAX_SUBSCRIPTION_VERSION);
        let sub = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
        topics.extend(sub.topics.into_iter().map(|t| t.to_string()));
    }
    Some(topics)
}
