//! ListOffsets lookups at partition leaders: earliest, latest, or the first offset at or
//! after a timestamp, for `consume` start positions and for group lag and seeks.
//!
//! Owns: the request shape and the grouping of partitions by leader. Never: decides what a
//! missing offset means to a command (each caller does).

use std::collections::BTreeMap;

use corebus_wire::kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsTopic,
};
use corebus_wire::kafka_protocol::messages::{
    BrokerId, ListOffsetsRequest, MetadataResponse, RequestKind, ResponseKind,
};
use corebus_wire::kafka_protocol::protocol::StrBytes;

use crate::Failure;
use crate::client::{Cluster, error_text};

/// ListOffsets timestamps that mean latest (the log end) and earliest (the log start).
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;

/// A partition of a topic.
pub type TopicPartition = (String, i32);

/// ListOffsets of `parts` at `leader` for one timestamp: partition -> offset (-1: no record
/// at or after the timestamp).
pub fn list_offsets(
    cluster: &mut Cluster,
    topic: &str,
    leader: i32,
    parts: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>, Failure> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(StrBytes::from_string(topic.to_owned()).into())
                .with_partitions(
                    parts
                        .iter()
                        .map(|i| {
                            ListOffsetsPartition::default()
                                .with_partition_index(*i)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                ),
        ]);
    let ResponseKind::ListOffsets(r) = cluster
        .broker(leader)?
        .call(RequestKind::ListOffsets(request))?
    else {
        return Err(Failure::Refused(
            "ListOffsets got another response kind".into(),
        ));
    };
    let mut out = BTreeMap::new();
    for p in r.topics.iter().flat_map(|t| &t.partitions) {
        if p.error_code != 0 {
            return Err(Failure::Refused(format!(
                "{topic}/{}: {}",
                p.partition_index,
                error_text(p.error_code, None)
            )));
        }
        out.insert(p.partition_index, p.offset);
    }
    Ok(out)
}

/// The leader of every partition `meta` describes.
pub fn leaders(meta: &MetadataResponse) -> BTreeMap<TopicPartition, i32> {
    let mut out = BTreeMap::new();
    for t in &meta.topics {
        let Some(name) = t.name.as_ref() else {
            continue;
        };
        for p in &t.partitions {
            out.insert((name.as_str().to_owned(), p.partition_index), p.leader_id.0);
        }
    }
    out
}

/// ListOffsets of every partition in `parts` for one timestamp, asking each leader once per
/// topic. A partition without a known leader is an error naming it.
pub fn offsets_at(
    cluster: &mut Cluster,
    leaders: &BTreeMap<TopicPartition, i32>,
    parts: &[TopicPartition],
    timestamp: i64,
) -> Result<BTreeMap<TopicPartition, i64>, Failure> {
    let mut by_leader: BTreeMap<(i32, &str), Vec<i32>> = BTreeMap::new();
    for tp in parts {
        let leader = leaders
            .get(tp)
            .copied()
            .filter(|l| *l >= 0)
            .ok_or_else(|| Failure::Refused(format!("{}/{} has no leader", tp.0, tp.1)))?;
        by_leader
            .entry((leader, tp.0.as_str()))
            .or_default()
            .push(tp.1);
    }
    let mut out = BTreeMap::new();
    for ((leader, topic), ps) in by_leader {
        for (p, o) in list_offsets(cluster, topic, leader, &ps, timestamp)? {
            out.insert((topic.to_owned(), p), o);
        }
    }
    Ok(out)
}
