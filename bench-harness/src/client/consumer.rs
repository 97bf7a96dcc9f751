//! A consumer that fetches assigned partitions from given offsets, without a group.
//!
//! Owns: one fetch loop per leader (long-poll Fetch of its partitions, in order), the next
//! offset of each partition, skipping records before the fetch offset inside a returned batch
//! (Kafka returns whole batches), skipping control batches, and decompression with a bound.
//! Never: commits offsets or joins a group (the benchmark assigns partitions itself, so a
//! rebalance cannot blur the figures); stops on an error (it reports it and fetches again).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use corebus_wire::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use corebus_wire::kafka_protocol::messages::{FetchRequest, RequestKind, ResponseKind};
use corebus_wire::record::RecordBatches;

use super::cluster::{Cluster, topic_name};
use super::limits::{
    FETCH_MAX_BYTES, FETCH_MAX_WAIT_MS, FETCH_PARTITION_MAX_BYTES, MAX_DECOMPRESSED_BATCH_BYTES,
};

/// Pause after a failed fetch before the next, in milliseconds.
const FETCH_ERROR_BACKOFF_MS: u64 = 100;

/// One assigned partition.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// What the consumer hands its caller.
pub trait RecordSink {
    /// A fetch answer arrived; its records follow (one clock read per answer, not per
    /// record).
    fn begin_response(&self);
    /// One record's value (None for a null value).
    fn record(&self, value: Option<&[u8]>);
    /// A failed fetch or partition error.
    fn error(&self, what: &str);
}

/// Fetches `assignments` (all led by `leader`) until `stop` is set, pausing while `paused`.
pub async fn fetch_loop(
    cluster: Rc<Cluster>,
    leader: i32,
    mut assignments: Vec<Assignment>,
    sink: Rc<dyn RecordSink>,
    paused: Rc<Cell<bool>>,
    stop: Rc<Cell<bool>>,
) {
    while !stop.get() {
        if paused.get() {
            glommio::timer::sleep(Duration::from_millis(FETCH_MAX_WAIT_MS as u64)).await;
            continue;
        }
        if let Err(e) = fetch_once(&cluster, leader, &mut assignments, sink.as_ref()).await {
            sink.error(&e);
            glommio::timer::sleep(Duration::from_millis(FETCH_ERROR_BACKOFF_MS)).await;
        }
    }
}

async fn fetch_once(
    cluster: &Cluster,
    leader: i32,
    assignments: &mut [Assignment],
    sink: &dyn RecordSink,
) -> Result<(), String> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for a in assignments.iter() {
        let partition = FetchPartition::default()
            .with_partition(a.partition)
            .with_fetch_offset(a.offset)
            .with_partition_max_bytes(FETCH_PARTITION_MAX_BYTES);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == a.topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(topic_name(&a.topic))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let request = FetchRequest::default()
        .with_replica_id(corebus_wire::kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(FETCH_MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let connection = cluster
        .connection(leader)
        .await
        .map_err(|e| e.to_string())?;
    let ResponseKind::Fetch(response) = connection
        .call(RequestKind::Fetch(request))
        .await
        .map_err(|e| e.to_string())?
    else {
        return Err("not a Fetch answer".to_owned());
    };
    if response.error_code != 0 {
        return Err(format!("Fetch: Kafka error {}", response.error_code));
    }
    sink.begin_response();
    for topic in response.responses {
        for data in topic.partitions {
            let Some(a) = assignments
                .iter_mut()
                .find(|a| a.partition == data.partition_index && a.topic == topic.topic.0.as_str())
            else {
                continue;
            };
            if data.error_code != 0 {
                sink.error(&format!(
                    "Fetch {}-{}: Kafka error {}",
                    a.topic, a.partition, data.error_code
                ));
                continue;
            }
            let Some(records) = data.records else {
                continue;
            };
            read_batches(records, a, sink)?;
        }
    }
    Ok(())
}

/// Hands the records at or after `a.offset` to `sink` and advances the offset.
fn read_batches(
    records: bytes::Bytes,
    a: &mut Assignment,
    sink: &dyn RecordSink,
) -> Result<(), String> {
    for batch in RecordBatches::allow_partial_tail(records) {
        let batch = batch.map_err(|e| format!("{}-{}: {e}", a.topic, a.partition))?;
        let next = batch.next_offset();
        if next <= a.offset {
            continue;
        }
        if !batch.is_control() {
            let base = batch.base_offset();
            let records = batch
                .records_with_limit(MAX_DECOMPRESSED_BATCH_BYTES)
                .map_err(|e| format!("{}-{}: {e}", a.topic, a.partition))?;
            for record in records {
                let record = record.map_err(|e| format!("{}-{}: {e}", a.topic, a.partition))?;
                if base + i64::from(record.offset_delta) >= a.offset {
                    sink.record(record.value.as_deref());
                }
            }
        }
        a.offset = next;
    }
    Ok(())
}
