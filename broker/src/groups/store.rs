//! Reading and writing a group's records in its `__consumer_offsets` partition: a write is
//! one append of keyed records (a null value is a tombstone) that returns once the records are
//! as durable as a produce with acks=all (the storage durability contract: synced, or written
//! with `write.caching`), which is when Kafka acknowledges an offset commit; and the replay
//! of a whole partition at start, last record per key winning.
//!
//! Never: writes a keyless record (the topic is compacted); skips a record it cannot read
//! without saying so (a damaged record is logged with its offset and left out).

use std::collections::HashMap;

use bytes::Bytes;
use corebus_wire::error_code::ResponseError;
use corebus_wire::record::{Compression, RecordBatch, RecordBatchBuilder, RecordBatches};
use tracing::warn;

use super::offsets::GroupOffsets;
use super::placement::{OFFSETS_TOPIC, partition_for};
use super::record::{GroupValue, OffsetValue, RecordKey};
use crate::shard::Shard;
use crate::shard::partitions::{Log, PartitionKey};
use crate::storage::{ReadEnd, StorageError, now_ms};

/// Record bytes per batch written; several batches go in one append. Well under the
/// broker's default `message.max.bytes`, so a large commit never hits the batch limit.
pub const GROUP_WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Bytes read per step when a partition is replayed at start.
pub const GROUP_LOAD_READ_BYTES: usize = 1 << 20;

/// Why a group's records could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{OFFSETS_TOPIC} does not exist")]
    NoTopic,
    #[error("{OFFSETS_TOPIC} partition {0} is not open on this shard")]
    NotOpen(i32),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot build a record batch: {0}")]
    Batch(#[from] corebus_wire::record::RecordError),
    /// A replicated partition's in-sync replicas did not all take the records in time
    /// (`offsets.commit.timeout.ms`); they may still, or be lost with a failover.
    #[error("the in-sync replicas did not acknowledge within {0} ms (offsets.commit.timeout.ms)")]
    NotReplicated(u64),
    #[error("this broker no longer leads {OFFSETS_TOPIC} partition {0}")]
    NotLeader(i32),
}

impl StoreError {
    /// The code a failed offset commit answers with, as Kafka's coordinator maps its append
    /// errors: the client finds the coordinator again, or retries.
    pub fn commit_error(&self) -> ResponseError {
        match self {
            StoreError::NotLeader(_) => ResponseError::NotCoordinator,
            StoreError::Storage(e)
                if e.kafka_error_code() == ResponseError::NotLeaderOrFollower.code() =>
            {
                ResponseError::NotCoordinator
            }
            _ => ResponseError::CoordinatorNotAvailable,
        }
    }
}

/// How long a write waits for its partition to open. Only right after `__consumer_offsets`
/// was created can a request get here first: the metadata reaches the shards one after the
/// other, and a shard opens the new logs after it has the new image.
pub const GROUP_PARTITION_OPEN_WAIT_MS: u64 = 10_000;

/// Pause between looks at a partition that is opening.
const GROUP_PARTITION_OPEN_POLL_MS: u64 = 5;

/// One record to write: a key and a value, or `None` for a tombstone.
pub type Write = (RecordKey, Option<Bytes>);

/// The log holding `group_id`'s records, when this shard owns it, and its partition.
fn group_log(shard: &Shard, group_id: &str) -> Result<(Log, PartitionKey), StoreError> {
    let image = shard.metadata();
    let topic = image.topic(OFFSETS_TOPIC).ok_or(StoreError::NoTopic)?;
    let key = (topic.id, partition_for(group_id, topic.partitions.len()));
    let log = shard.logs.log(key).ok_or(StoreError::NotOpen(key.1))?;
    Ok((log, key))
}

/// The log of `group_id`, waiting (bounded) while it is still being opened.
async fn open_group_log(shard: &Shard, group_id: &str) -> Result<(Log, PartitionKey), StoreError> {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(GROUP_PARTITION_OPEN_WAIT_MS);
    loop {
        match group_log(shard, group_id) {
            Err(StoreError::NoTopic | StoreError::NotOpen(_))
                if std::time::Instant::now() < deadline =>
            {
                glommio::timer::sleep(std::time::Duration::from_millis(
                    GROUP_PARTITION_OPEN_POLL_MS,
                ))
                .await;
            }
            other => return other,
        }
    }
}

/// Kafka's `offsets.commit.timeout.ms` default, when the setting cannot be read.
const DEFAULT_COMMIT_TIMEOUT_MS: u64 = 5_000;

/// Appends `records` to `group_id`'s partition and waits until they are durable, and on a
/// replicated partition until every in-sync replica has them (the high watermark passed
/// them: what Kafka's coordinator waits for with acks=-1), at most `offsets.commit.timeout.ms`.
pub async fn write(shard: &Shard, group_id: &str, records: Vec<Write>) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let (log, key) = open_group_log(shard, group_id).await?;
    let now = now_ms();
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut builder = RecordBatchBuilder::new(Compression::None);
    let mut bytes = 0usize;
    for (key, value) in records {
        let key = key.encode();
        if bytes > 0
            && bytes + key.len() + value.as_ref().map_or(0, Bytes::len) > GROUP_WRITE_BATCH_BYTES
        {
            batches.push(builder.build()?);
            builder = RecordBatchBuilder::new(Compression::None);
            bytes = 0;
        }
        bytes += key.len() + value.as_ref().map_or(0, Bytes::len);
        builder.record(now, Some(&key), value.as_deref());
    }
    batches.push(builder.build()?);
    // Led here now, checked with no await before the append (a group write never lands in a
    // follower's log, whatever image the shard that asked for it had).
    if !crate::replication::leader::leads(shard, key) {
        return Err(StoreError::NotLeader(key.1));
    }
    let durability = log.config().durability_for_acks(-1);
    let info = log
        .append(&batches, log.leader_epoch(), now, durability)
        .await?;
    if log.high_watermark() <= info.last_offset {
        let wait_ms = shard
            .config
            .settings
            .i64("offsets.commit.timeout.ms")
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(DEFAULT_COMMIT_TIMEOUT_MS);
        let passed = glommio::timer::timeout(std::time::Duration::from_millis(wait_ms), async {
            Ok(log.wait_high_watermark(info.last_offset + 1).await)
        })
        .await;
        match passed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(StoreError::NotReplicated(wait_ms)),
        }
    }
    Ok(())
}

/// What a partition's replay found for one group.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The last membership record, `None` after a tombstone or when there is none.
    pub group: Option<GroupValue>,
    pub offsets: GroupOffsets,
}

/// Replays a whole `__consumer_offsets` partition: the latest record per key wins,
/// tombstones remove. Damaged records are logged and left out.
pub async fn load(log: &Log) -> Result<HashMap<String, Loaded>, StorageError> {
    let mut groups: HashMap<String, Loaded> = HashMap::new();
    let mut offset = log.log_start_offset();
    let end = log.written_offset();
    while offset < end {
        // To the log end, as Kafka's coordinator loads: the high watermark of a replicated
        // offsets partition is established again only after open.
        let read = log
            .read_to(offset, GROUP_LOAD_READ_BYTES, ReadEnd::Written)
            .await?;
        if read.is_empty() {
            break;
        }
        let mut next = offset;
        for batch in RecordBatches::new(read.to_bytes()) {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    warn!(dir = %log.dir().display(), offset = next, error = %e, "unreadable batch in the offsets topic; replay stops here");
                    return Ok(groups);
                }
            };
            next = batch.next_offset();
            if batch.is_control() {
                continue;
            }
            let records = match batch.records() {
                Ok(r) => r,
                Err(e) => {
                    warn!(dir = %log.dir().display(), offset = batch.base_offset(), error = %e, "unreadable records in the offsets topic");
                    continue;
                }
            };
            for record in records {
                match record {
                    Ok(r) => {
                        let at = batch.base_offset() + i64::from(r.offset_delta);
                        // The first read may start inside a batch: skip what lies before.
                        if at >= offset {
                            apply(&mut groups, r.key, r.value, log, at);
                        }
                    }
                    Err(e) => {
                        warn!(dir = %log.dir().display(), offset = batch.base_offset(), error = %e, "unreadable record in the offsets topic");
                        break;
                    }
                }
            }
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    Ok(groups)
}

fn apply(
    groups: &mut HashMap<String, Loaded>,
    key: Option<Bytes>,
    value: Option<Bytes>,
    log: &Log,
    at: i64,
) {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        warn!(dir = %log.dir().display(), offset = at, error = %e, "{what} in the offsets topic is unreadable; left out");
    };
    let Some(key) = key else {
        bad("a keyless record", &"no key");
        return;
    };
    let key = match RecordKey::decode(&key) {
        Ok(k) => k,
        Err(e) => return bad("a record key", &e),
    };
    let entry = groups.entry(key.group().to_string()).or_default();
    match key {
        RecordKey::Offset {
            topic, partition, ..
        } => match value {
            None => {
                entry.offsets.remove(&topic, partition);
            }
            Some(v) => match OffsetValue::decode(&v) {
                Ok(v) => entry.offsets.put(topic, partition, v),
                Err(e) => bad("an offset value", &e),
            },
        },
        RecordKey::Group { .. } => match value {
            None => entry.group = None,
            Some(v) => match GroupValue::decode(&v) {
                Ok(v) => entry.group = Some(v),
                Err(e) => bad("a group value", &e),
            },
        },
    }
}
