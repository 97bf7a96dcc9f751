//! ListOffsets (key 2): earliest (-2) and earliest-local (-4) give the log start offset,
//! latest-tiered (-5) gives -1 (nothing is in tiered storage, as Kafka answers without it),
//! latest (-1) the high watermark (equal to the last stable offset until transactions exist),
//! max timestamp (-3) the first record carrying the largest timestamp (KIP-734), and a
//! timestamp the first record at or after it (the storage engine finds both through the time
//! index and the records of that batch).
//!
//! Never: returns an offset above the high watermark.

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use corebus_wire::kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::common::locate_partition;
use crate::metadata::TopicId;
use crate::shard::partitions::Log;
use crate::shard::{Shard, router};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
/// KIP-1005: the last offset in tiered storage.
const LATEST_TIERED: i64 = -5;

/// (error code, timestamp, offset)
type Answer = (i16, i64, i64);

pub async fn handle(
    shard: &Rc<Shard>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let image = shard.metadata();
    let mut answers: Vec<Answer> = Vec::new();
    let mut positions = Vec::new();
    let mut work = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            let pos = answers.len();
            answers.push((ResponseError::UnknownTopicOrPartition.code(), -1, -1));
            match locate_partition(
                &image,
                shard.here(),
                Some(topic.name.0.as_str()),
                uuid::Uuid::nil(),
                p.partition_index,
            ) {
                Ok((id, owner)) => {
                    positions.push(pos);
                    work.push((owner, (id, p.partition_index, p.timestamp)));
                }
                Err(e) => answers[pos].0 = e.code(),
            }
        }
    }
    let done = router::scatter(shard, work, |s: Rc<Shard>, items| async move {
        let mut out = Vec::with_capacity(items.len());
        for (id, partition, ts) in items {
            out.push(lookup(&s, id, partition, ts).await);
        }
        out
    })
    .await;
    for (pos, a) in positions.into_iter().zip(done) {
        answers[pos] = a.unwrap_or((ResponseError::KafkaStorageError.code(), -1, -1));
    }
    let mut answers = answers.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let (code, timestamp, offset) = answers.next().unwrap_or((
                        ResponseError::UnknownServerError.code(),
                        -1,
                        -1,
                    ));
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                        .with_timestamp(timestamp)
                        .with_offset(offset)
                        // Only v4+ carries the leader epoch; the field must keep its default below.
                        .with_leader_epoch(if code == 0 && version >= 4 { 0 } else { -1 })
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

async fn lookup(shard: &Shard, id: TopicId, partition: i32, timestamp: i64) -> Answer {
    let Some(log) = shard.logs.log((id, partition)) else {
        return (ResponseError::KafkaStorageError.code(), -1, -1);
    };
    let result = match timestamp {
        LATEST => Ok((-1, log.high_watermark())),
        EARLIEST | EARLIEST_LOCAL => Ok((-1, log.log_start_offset())),
        // Nothing is tiered (corebus has no remote storage): Kafka answers -1 then too.
        LATEST_TIERED => Ok((-1, -1)),
        // What consumers cannot read yet is not named (Kafka answers at the high watermark).
        MAX_TIMESTAMP => log.max_timestamp().await.map(|m| match m {
            Some((ts, offset)) if offset < log.high_watermark() => (ts, offset),
            _ => (-1, -1),
        }),
        ts if ts >= 0 => by_timestamp(&log, ts).await,
        _ => return (ResponseError::InvalidRequest.code(), -1, -1),
    };
    match result {
        Ok((ts, offset)) => (0, ts, offset),
        Err(e) => (e.kafka_error_code(), -1, -1),
    }
}

/// The first record whose timestamp is at or after `ts`, as (its timestamp, its offset);
/// (-1, -1) when there is none. The storage engine finds it exactly (time index, then the
/// records of that batch).
async fn by_timestamp(log: &Log, ts: i64) -> Result<(i64, i64), crate::storage::StorageError> {
    Ok(match log.offset_for_timestamp(ts).await? {
        Some((offset, timestamp)) => (timestamp, offset),
        None => (-1, -1),
    })
}
