//! DeleteRecords (key 21): moves a partition's log start offset forward (offset -1: to the
//! high watermark); reads below it then get OFFSET_OUT_OF_RANGE and retention removes the
//! segments wholly below it.
//!
//! Never: moves the log start offset backwards or past the high watermark.

use std::rc::Rc;

use corebus_wire::kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use corebus_wire::kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::common::{Route, on_partition_logs};
use crate::shard::Shard;

/// The offset meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(
    shard: &Rc<Shard>,
    request: DeleteRecordsRequest,
    _version: i16,
) -> DeleteRecordsResponse {
    let items = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index, p.offset))
        })
        .collect();
    let mut results = on_partition_logs(
        shard,
        Route::Leader,
        items,
        |_, _, log, offset: i64| async move {
            let before = if offset == HIGH_WATERMARK {
                log.high_watermark()
            } else {
                offset
            };
            log.delete_records(before)
                .await
                .map_err(|e| e.kafka_error_code())
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
                    let r = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    match results.next().unwrap_or(Err(-1)) {
                        Ok(low) => r.with_low_watermark(low),
                        Err(code) => r.with_error_code(code).with_low_watermark(-1),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
