//! OffsetFetch (key 9): a group's committed offsets with their metadata strings, from its
//! coordinator's shard: the partitions asked for (-1 and no metadata where nothing is
//! committed) or, when topics is null, every committed partition. v8+ ask for several groups
//! at once (one mesh hop per group).
//!
//! Never: answers an offset that was not durable when it was committed.

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use corebus_wire::kafka_protocol::messages::{
    GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};

use corebus_wire::kafka_protocol::protocol::StrBytes;

use super::common::str_bytes;
use super::group_routing::on_coordinator;
use crate::groups::coordinator::{OffsetAnswer, OffsetQuery};
use crate::groups::record::OffsetValue;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for g in &request.groups {
            let query: OffsetQuery = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let answer = fetch(shard, g.group_id.0.to_string(), query).await;
            let mut out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            match answer {
                Ok(topics) => {
                    out.topics = topics
                        .into_iter()
                        .map(|(topic, parts)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(str_bytes(topic)))
                                .with_partitions(partitions(parts, |p, offset, epoch, m| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(epoch)
                                        .with_metadata(Some(m))
                                }))
                        })
                        .collect();
                }
                Err(e) => out.error_code = e.code(),
            }
            groups.push(out);
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let query: OffsetQuery = request.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let group: GroupId = request.group_id.clone();
    match fetch(shard, group.0.to_string(), query).await {
        Ok(topics) => OffsetFetchResponse::default().with_topics(
            topics
                .into_iter()
                .map(|(topic, parts)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(str_bytes(topic)))
                        .with_partitions(partitions(parts, |p, offset, epoch, m| {
                            let mut r = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_metadata(Some(m));
                            if version >= 5 {
                                r.committed_leader_epoch = epoch;
                            }
                            r
                        }))
                })
                .collect(),
        ),
        Err(e) => {
            let mut r = OffsetFetchResponse::default();
            // v1 has no top-level error code: the error goes on every partition asked for.
            if version >= 2 {
                r.error_code = e.code();
            } else {
                r.topics = request
                    .topics
                    .iter()
                    .flatten()
                    .map(|t| {
                        OffsetFetchResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partition_indexes
                                    .iter()
                                    .map(|p| {
                                        OffsetFetchResponsePartition::default()
                                            .with_partition_index(*p)
                                            .with_committed_offset(-1)
                                            .with_metadata(Some(str_bytes("")))
                                            .with_error_code(e.code())
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
            }
            r
        }
    }
}

async fn fetch(
    shard: &Rc<Shard>,
    group_id: String,
    query: OffsetQuery,
) -> Result<OffsetAnswer, ResponseError> {
    let g = group_id.clone();
    on_coordinator(shard, &group_id, move |s: Rc<Shard>| async move {
        s.groups.fetch(&g, query)
    })
    .await
}

/// Each partition's answer built by `make(partition, offset, leader epoch, metadata)`;
/// Kafka's -1/-1/"" when nothing is committed.
fn partitions<P>(
    parts: Vec<(i32, Option<OffsetValue>)>,
    make: impl Fn(i32, i64, i32, StrBytes) -> P,
) -> Vec<P> {
    parts
        .into_iter()
        .map(|(p, v)| match v {
            Some(v) => make(p, v.offset, v.leader_epoch, str_bytes(v.metadata)),
            None => make(p, -1, -1, str_bytes("")),
        })
        .collect()
}
