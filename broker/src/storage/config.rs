//! Per-log settings under Kafka's topic-config names, and the per-shard engine options.
//!
//! Owns: `LogConfig` (defaults equal Kafka's broker defaults unless a comment says why not)
//! and `ShardOptions` (limits of one shard's storage: cache bytes, open files, write sizes).
//! Never: reads files or the environment; the broker maps its configuration onto these.

use super::error::{Result, StorageError};

/// What happens to old segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

impl CleanupPolicy {
    /// Whether time/size retention deletes old segments.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
    /// Whether the log is compacted (records need a key).
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }
}

/// Which timestamp a batch keeps (`message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageTimestampType {
    CreateTime,
    LogAppendTime,
}

/// How durable an append must be before `append` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The O_DIRECT write completed: survives a process crash (acks=1).
    Written,
    /// fdatasync completed: survives a power loss (acks=all, unless `write_caching`).
    Synced,
}

/// One log's settings, Kafka topic-config names in snake case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first append is this old.
    pub segment_ms: i64,
    /// `retention.ms`: delete sealed segments whose newest timestamp is older (-1: never).
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest sealed segments while the log is larger (-1: never).
    pub retention_bytes: i64,
    /// `index.interval.bytes`: bytes of batches between offset/time index entries.
    pub index_interval_bytes: u64,
    /// `flush.messages`: sync after this many unsynced records (i64::MAX: never by count).
    pub flush_messages: i64,
    /// `flush.ms`: sync data older than this (i64::MAX: never by time).
    pub flush_ms: i64,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `message.timestamp.type`.
    pub message_timestamp_type: MessageTimestampType,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: u64,
    /// `delete.retention.ms` (compaction: how long tombstones stay).
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio` in per mille (compaction), kept exact as an integer.
    pub min_cleanable_dirty_ratio_permille: u32,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log whose oldest dirty batch is older is compacted whatever
    /// its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `write.caching` (Redpanda's name): when false, the default, acks=all waits for the
    /// fdatasync; when true acks=all returns once written, as Kafka does (relying on
    /// replication for power-loss safety).
    pub write_caching: bool,
    /// `min.insync.replicas`: the in-sync replicas an acks=all append needs (the replication
    /// layer enforces it; the log only carries it, resolved once per topic change).
    pub min_insync_replicas: i32,
}

/// Kafka's defaults: 1 GiB segments, 7-day roll and retention, 4 KiB index interval,
/// 1 MiB + overhead max batch, 24 h tombstone retention, 0.5 dirty ratio.
const DEFAULT_SEGMENT_BYTES: u64 = 1 << 30;
const DEFAULT_SEGMENT_MS: i64 = 7 * 24 * 3600 * 1000;
const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
const DEFAULT_INDEX_INTERVAL_BYTES: u64 = 4096;
const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1_048_588;
const DEFAULT_DELETE_RETENTION_MS: i64 = 24 * 3600 * 1000;
const DEFAULT_MIN_CLEANABLE_DIRTY_RATIO_PERMILLE: u32 = 500;
/// Smallest segment accepted: a segment must hold at least a few pages and one header.
const MIN_SEGMENT_BYTES: u64 = 14;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: DEFAULT_SEGMENT_MS,
            retention_ms: DEFAULT_RETENTION_MS,
            retention_bytes: -1,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            cleanup_policy: CleanupPolicy::Delete,
            message_timestamp_type: MessageTimestampType::CreateTime,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
            min_cleanable_dirty_ratio_permille: DEFAULT_MIN_CLEANABLE_DIRTY_RATIO_PERMILLE,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            write_caching: false,
            min_insync_replicas: 1,
        }
    }
}

fn invalid(name: &str, value: &str, why: &'static str) -> StorageError {
    StorageError::InvalidConfig {
        name: name.to_owned(),
        value: value.to_owned(),
        why,
    }
}

fn parse_i64(name: &str, value: &str, min: i64) -> Result<i64> {
    match value.trim().parse::<i64>() {
        Ok(v) if v >= min => Ok(v),
        Ok(_) => Err(invalid(name, value, "below the minimum")),
        Err(_) => Err(invalid(name, value, "not an integer")),
    }
}

impl LogConfig {
    /// Sets one topic config by its Kafka name. Names this engine does not own (for example
    /// `unclean.leader.election.enable`) give `Ok(false)` so the broker can handle them; a refused value
    /// gives `InvalidConfig`.
    pub fn set(&mut self, name: &str, value: &str) -> Result<bool> {
        match name {
            "segment.bytes" => {
                let v = parse_i64(name, value, MIN_SEGMENT_BYTES as i64)?;
                // Kafka's segment.bytes is an int; index positions are u32.
                if v > i64::from(i32::MAX) {
                    return Err(invalid(name, value, "above the maximum (2147483647)"));
                }
                self.segment_bytes = v as u64
            }
            "segment.ms" => self.segment_ms = parse_i64(name, value, 1)?,
            "retention.ms" => self.retention_ms = parse_i64(name, value, -1)?,
            "retention.bytes" => self.retention_bytes = parse_i64(name, value, -1)?,
            "index.interval.bytes" => self.index_interval_bytes = parse_i64(name, value, 0)? as u64,
            "flush.messages" => self.flush_messages = parse_i64(name, value, 1)?,
            "flush.ms" => self.flush_ms = parse_i64(name, value, 0)?,
            "max.message.bytes" => self.max_message_bytes = parse_i64(name, value, 0)? as u64,
            "delete.retention.ms" => self.delete_retention_ms = parse_i64(name, value, 0)?,
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = parse_i64(name, value, 0)?,
            "max.compaction.lag.ms" => self.max_compaction_lag_ms = parse_i64(name, value, 1)?,
            "min.cleanable.dirty.ratio" => {
                let ratio: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid(name, value, "not a number"))?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(invalid(name, value, "must be between 0 and 1"));
                }
                self.min_cleanable_dirty_ratio_permille = (ratio * 1000.0).round() as u32;
            }
            "cleanup.policy" => {
                let mut parts: Vec<&str> = value.split(',').map(str::trim).collect();
                parts.sort_unstable();
                parts.dedup();
                self.cleanup_policy = match parts.as_slice() {
                    ["delete"] => CleanupPolicy::Delete,
                    ["compact"] => CleanupPolicy::Compact,
                    ["compact", "delete"] => CleanupPolicy::CompactDelete,
                    _ => return Err(invalid(name, value, "expected delete, compact or both")),
                }
            }
            "message.timestamp.type" => {
                self.message_timestamp_type = match value.trim() {
                    "CreateTime" => MessageTimestampType::CreateTime,
                    "LogAppendTime" => MessageTimestampType::LogAppendTime,
                    _ => return Err(invalid(name, value, "expected CreateTime or LogAppendTime")),
                }
            }
            "write.caching" => {
                self.write_caching = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid(name, value, "expected true or false")),
                }
            }
            "min.insync.replicas" => {
                self.min_insync_replicas =
                    parse_i64(name, value, 1)?.min(i64::from(i32::MAX)) as i32
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// How durable an append must be before a produce with `acks` is answered.
    pub fn durability_for_acks(&self, acks: i16) -> Durability {
        if acks == -1 && !self.write_caching {
            Durability::Synced
        } else {
            Durability::Written
        }
    }
}

/// Limits of one shard's storage engine.
#[derive(Clone, Debug)]
pub struct ShardOptions {
    /// Bytes of recent batches kept in memory for tailing readers, over all logs of the shard.
    pub batch_cache_bytes: usize,
    /// Segment files (log, index) kept open at once over all logs of the shard.
    pub max_open_files: usize,
    /// Size of the write buffer allocated while a write is in flight (coalescing appends
    /// that arrive meanwhile into one large write).
    pub coalesce_buffer_bytes: usize,
    /// Largest fallocate step for the active segment. Steps start at
    /// `preallocate_min_bytes` and double with what the segment already reserved, so a
    /// partition written rarely reserves little (10,000 such partitions must not reserve
    /// 320 GB) while a busy one soon reserves this much at a time. 0 turns preallocation off.
    pub preallocate_bytes: u64,
    /// First fallocate step of a segment.
    pub preallocate_min_bytes: u64,
    /// How often `flush.ms` deadlines are checked.
    pub flush_check_interval_ms: u64,
    /// Bytes read at once when a read or recovery scans a segment.
    pub read_chunk_bytes: usize,
}

impl ShardOptions {
    /// The next fallocate step of a segment that has `reserved` bytes preallocated: as much
    /// again, between `preallocate_min_bytes` and `preallocate_bytes`.
    pub fn preallocate_step(&self, reserved: u64) -> u64 {
        let max = self.preallocate_bytes;
        reserved.clamp(self.preallocate_min_bytes.min(max), max)
    }
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            batch_cache_bytes: 64 << 20,
            max_open_files: 4096,
            coalesce_buffer_bytes: 256 << 10,
            preallocate_bytes: 32 << 20,
            preallocate_min_bytes: 1 << 20,
            flush_check_interval_ms: 100,
            read_chunk_bytes: 1 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocation_steps_double_from_the_minimum_to_the_maximum() {
        let o = ShardOptions::default();
        let mut reserved = 0;
        let mut steps = Vec::new();
        for _ in 0..8 {
            let step = o.preallocate_step(reserved);
            steps.push(step >> 20);
            reserved += step;
        }
        assert_eq!(steps, [1, 1, 2, 4, 8, 16, 32, 32]);
        let off = ShardOptions {
            preallocate_bytes: 0,
            ..ShardOptions::default()
        };
        assert_eq!(off.preallocate_step(5 << 20), 0);
        let small = ShardOptions {
            preallocate_bytes: 256 << 10,
            ..ShardOptions::default()
        };
        assert_eq!(
            small.preallocate_step(0),
            256 << 10,
            "the maximum caps the minimum"
        );
    }

    #[test]
    fn set_by_kafka_names() {
        let mut c = LogConfig::default();
        assert!(c.set("segment.bytes", "1048576").unwrap());
        assert_eq!(c.segment_bytes, 1 << 20);
        assert!(c.set("cleanup.policy", "delete, compact").unwrap());
        assert_eq!(c.cleanup_policy, CleanupPolicy::CompactDelete);
        assert!(c.set("message.timestamp.type", "LogAppendTime").unwrap());
        assert!(c.set("min.cleanable.dirty.ratio", "0.25").unwrap());
        assert_eq!(c.min_cleanable_dirty_ratio_permille, 250);
        assert!(c.set("min.insync.replicas", "2").unwrap());
        assert_eq!(c.min_insync_replicas, 2);
        assert!(c.set("min.insync.replicas", "0").is_err());
        assert!(!c.set("unclean.leader.election.enable", "true").unwrap());
        assert!(c.set("segment.bytes", "-5").is_err());
        assert!(c.set("segment.bytes", "4294967296").is_err());
        assert!(c.set("cleanup.policy", "forever").is_err());
        assert_eq!(c.durability_for_acks(-1), Durability::Synced);
        assert_eq!(c.durability_for_acks(1), Durability::Written);
    }
}
