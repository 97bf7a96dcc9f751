//! OffsetForLeaderEpoch (key 23): the end offset of the largest leader epoch at or below the
//! one asked, from the partition log's epoch cache (`storage::epochs`, Kafka's
//! `LeaderEpochFileCache` rules: the latest epoch ends at the log end offset, an older one
//! where the next starts, an unknown future one is undefined). Clients and followers use it to
//! find where their copy diverges from the leader's after a leader change. A
//! `current_leader_epoch` older than the partition's gets FENCED_LEADER_EPOCH, a newer one
//! UNKNOWN_LEADER_EPOCH; -1 skips the check. A single node's partitions stay at epoch 0.
//!
//! Never: answers for a partition this broker does not lead (NOT_LEADER_OR_FOLLOWER).

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
            // -1: the client does not know the current epoch and skips the check.
            let ours = log.leader_epoch();
            if current >= 0 && current < ours {
                return Err(ResponseError::FencedLeaderEpoch.code());
            }
            if current > ours {
                return Err(ResponseError::UnknownLeaderEpoch.code());
            }
            Ok(log.end_offset_for_epoch(wanted))
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
