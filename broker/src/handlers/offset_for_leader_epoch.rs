//! OffsetForLeaderEpoch (key 23): the end offset of the largest leader epoch at or below the
//! one asked. A single node has one epoch, 0, for every partition, so any epoch from 0 up ends
//! at the log end offset; clients use this to detect log truncation after a leader change,
//! which here never happens. A current epoch above 0 gets UNKNOWN_LEADER_EPOCH.
//!
//! Never: reports an epoch other than 0 until replication exists.

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use corebus_wire::kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};

use super::common::{Route, on_partition_logs};
use crate::shard::Shard;

/// The only leader epoch of a single node.
const LEADER_EPOCH: i32 = 0;

pub async fn handle(
    shard: &Rc<Shard>,
    request: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let items = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.topic.0.to_string(),
                    p.partition,
                    (p.current_leader_epoch, p.leader_epoch),
                )
            })
        })
        .collect();
    let mut results = on_partition_logs(
        shard,
        Route::Leader,
        items,
        |_, _, log, (current, wanted): (i32, i32)| async move {
            // -1: the client does not know the current epoch and skips the check. Epoch 0 is the
            // lowest there is, so a known current epoch can only be ours or from the future.
            if current > LEADER_EPOCH {
                return Err(ResponseError::UnknownLeaderEpoch.code());
            }
            Ok(if wanted < LEADER_EPOCH {
                (-1, -1)
            } else {
                (LEADER_EPOCH, log.written_offset())
            })
        },
    )
    .await
    .into_iter();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = EpochEndOffset::default().with_partition(p.partition);
                    match results.next().unwrap_or(Err(-1)) {
                        Ok((epoch, end)) => r.with_leader_epoch(epoch).with_end_offset(end),
                        Err(code) => r
                            .with_error_code(code)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
