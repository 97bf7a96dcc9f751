//! Every runtime limit of the broker, named once with its unit, read from the settings table
//! at start-up (so each is also a documented setting) plus the fixed bounds that are not
//! settings.
//!
//! Never: changes after start-up; is read from anywhere but `Config`.

use crate::config::BrokerSettings;

/// Partitions one topic may have; CreateTopics and CreatePartitions refuse more. Bounds the
/// metadata a single request can make the broker build.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 100_000;

/// Topics the node holds; CreateTopics past it gets POLICY_VIOLATION-free INVALID_REQUEST.
pub const MAX_TOPICS: usize = 100_000;

/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_BYTES: usize = 249;

/// Cross-shard messages queued to one shard before senders wait (backpressure between shards).
pub const SHARD_MAILBOX_DEPTH_MESSAGES: usize = 1024;

/// Time given to in-flight requests after SIGTERM/SIGINT before the shards stop anyway.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;

/// How often a shard that has drained checks whether the others have, before closing its logs.
pub const SHUTDOWN_POLL_MS: u64 = 5;

/// Most bytes read from a socket per read call (the size of each shard's read scratch).
pub const SOCKET_READ_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes a connection may read past the end of the frame it is reading: the starts of the
/// requests pipelined behind it, read in the same call so that a small pipelined request costs
/// one read, not two. This is all a connection buffers outside the request memory pool, since
/// a frame's memory is taken from the pool as soon as its size prefix is read.
pub const SOCKET_READ_AHEAD_BYTES: usize = 4 * 1024;

/// The limits a running broker enforces, from the broker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `max.connections`: client connections open at once on the node.
    pub max_connections: usize,
    /// `corebus.max.inflight.requests.per.connection`: pipelined requests read ahead.
    pub max_inflight_requests_per_connection: usize,
    /// `socket.request.max.bytes`: largest request frame.
    pub max_frame_bytes: usize,
    /// `corebus.shard.produce.memory.budget.bytes`: produce data in flight per shard.
    pub shard_produce_memory_budget_bytes: usize,
    /// `message.max.bytes`: largest record batch (the topic's `max.message.bytes` default).
    pub max_message_bytes: usize,
    /// `corebus.shard.request.memory.pool.bytes`: request frames being read or run, per shard,
    /// counted from their size prefix; also the largest frame a shard accepts.
    pub shard_request_memory_pool_bytes: usize,
    /// `connections.max.idle.ms`: a connection with nothing in flight and nothing read for
    /// this long is closed.
    pub connections_max_idle_ms: u64,
    /// `corebus.request.read.timeout.ms`: time a request frame may take to arrive, from its
    /// first byte (or from when the pool granted its memory) to its last.
    pub request_read_timeout_ms: u64,
    /// `fetch.max.bytes`: record bytes of one Fetch response (and of any one partition read),
    /// whatever the request asks.
    pub fetch_max_bytes: usize,
    /// `corebus.shard.fetch.memory.budget.bytes`: bytes of Fetch reads (read buffer and its
    /// copy) in flight per shard.
    pub shard_fetch_memory_budget_bytes: usize,
    /// `corebus.shard.max.parked.fetches`: fetches waiting for data at once per shard.
    pub shard_max_parked_fetches: usize,
    /// `corebus.shard.max.open.files`: segment files open at once per shard; 0 derives it
    /// from the process's open-file limit (`shard::open_files::budget`).
    pub shard_max_open_files: usize,
    /// `corebus.memory.trim.interval.ms`: how often freed memory is looked at (0: never).
    pub memory_trim_interval_ms: u64,
    /// `corebus.memory.trim.threshold.bytes`: free memory worth giving back.
    pub memory_trim_threshold_bytes: u64,
}

impl Limits {
    /// Reads the limits from validated settings; every one has a default in the table, the
    /// fallbacks here only keep this total.
    pub fn from_settings(s: &BrokerSettings) -> Limits {
        let get = |name: &str, fallback: i64| -> usize {
            usize::try_from(s.i64(name).unwrap_or(fallback)).unwrap_or(usize::MAX)
        };
        Limits {
            max_connections: get("max.connections", 10_000),
            max_inflight_requests_per_connection: get(
                "corebus.max.inflight.requests.per.connection",
                5,
            ),
            max_frame_bytes: get("socket.request.max.bytes", 104_857_600),
            shard_produce_memory_budget_bytes: get(
                "corebus.shard.produce.memory.budget.bytes",
                64 << 20,
            ),
            max_message_bytes: get("message.max.bytes", 1_048_588),
            shard_request_memory_pool_bytes: get(
                "corebus.shard.request.memory.pool.bytes",
                128 << 20,
            ),
            connections_max_idle_ms: get("connections.max.idle.ms", 600_000) as u64,
            request_read_timeout_ms: get("corebus.request.read.timeout.ms", 30_000) as u64,
            fetch_max_bytes: get("fetch.max.bytes", 57_671_680),
            shard_fetch_memory_budget_bytes: get(
                "corebus.shard.fetch.memory.budget.bytes",
                64 << 20,
            ),
            shard_max_parked_fetches: get("corebus.shard.max.parked.fetches", 4096),
            shard_max_open_files: get("corebus.shard.max.open.files", 0),
            memory_trim_interval_ms: get("corebus.memory.trim.interval.ms", 10_000) as u64,
            memory_trim_threshold_bytes: get("corebus.memory.trim.threshold.bytes", 64 << 20)
                as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_settings() {
        let mut s = BrokerSettings::default();
        assert_eq!(
            Limits::from_settings(&s).max_inflight_requests_per_connection,
            256
        );
        s.set("max.connections", "7", "test").unwrap();
        s.set(
            "corebus.shard.produce.memory.budget.bytes",
            "2097152",
            "test",
        )
        .unwrap();
        s.set("connections.max.idle.ms", "1500", "test").unwrap();
        let l = Limits::from_settings(&s);
        assert_eq!(l.max_connections, 7);
        assert_eq!(l.connections_max_idle_ms, 1500);
        assert_eq!(l.request_read_timeout_ms, 30_000);
        assert_eq!(l.shard_request_memory_pool_bytes, 128 << 20);
        assert_eq!(l.shard_produce_memory_budget_bytes, 2 << 20);
        assert_eq!(l.fetch_max_bytes, 57_671_680);
        assert_eq!(l.shard_fetch_memory_budget_bytes, 64 << 20);
        assert_eq!(l.shard_max_parked_fetches, 4096);
        s.set("fetch.max.bytes", "65536", "test").unwrap();
        s.set("corebus.shard.max.parked.fetches", "0", "test")
            .unwrap();
        let l = Limits::from_settings(&s);
        assert_eq!(l.fetch_max_bytes, 65_536);
        assert_eq!(l.shard_max_parked_fetches, 0);
        assert!(s.set("fetch.max.bytes", "1023", "test").is_err());
        assert!(
            s.set("corebus.shard.produce.memory.budget.bytes", "10", "test")
                .is_err()
        );
    }
}
