//! THE table of every setting corebus knows: broker settings and topic settings, with Kafka's
//! names, types, defaults, validators and docs. A config reference is generated from it, start-up
//! validates against it, and DescribeConfigs reports from it.
//!
//! Owns: `SETTINGS`, `Setting`, `Scope`, `Synonym`, `Support`. Never: holds values, reads files.
//!
//! Topic settings carry no default of their own: as in Kafka, a topic setting that a topic does
//! not override takes the value of its broker synonym (for example `retention.ms` from
//! `log.retention.ms`, else `log.retention.minutes`, else `log.retention.hours`), which is what
//! DescribeConfigs reports as synonyms.

use super::value::{ConfigType, Validator};

/// Where a setting applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A broker setting (server.properties, `--override`).
    Broker,
    /// A per-topic setting (CreateTopics configs, AlterConfigs on a topic).
    Topic,
}

/// How corebus honours a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// The value changes behaviour.
    Honoured,
    /// Accepted so that a Kafka `server.properties` starts unchanged, but meaningless in
    /// corebus; the reason is logged at start-up when the setting is given, so it is never
    /// silently ignored.
    Inert(&'static str),
}

/// A broker setting a topic setting falls back to, and the factor that converts the broker
/// setting's unit into the topic setting's (hours to milliseconds is 3,600,000).
#[derive(Debug, Clone, Copy)]
pub struct Synonym {
    pub name: &'static str,
    pub factor: i64,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    pub scope: Scope,
    pub ty: ConfigType,
    /// The default in text form; `None` is Kafka's null (unset: a synonym or the code decides).
    pub default: Option<&'static str>,
    pub validator: Validator,
    pub support: Support,
    /// For topic settings: the broker settings it falls back to, in priority order.
    pub synonyms: &'static [Synonym],
    pub doc: &'static str,
}

const ANY: Validator = Validator::Any;
const NON_NEGATIVE: Validator = Validator::Range {
    min: 0,
    max: i64::MAX,
};
const POSITIVE: Validator = Validator::Range {
    min: 1,
    max: i64::MAX,
};
const POSITIVE_I32: Validator = Validator::Range {
    min: 1,
    max: i32::MAX as i64,
};
const NON_NEGATIVE_I32: Validator = Validator::Range {
    min: 0,
    max: i32::MAX as i64,
};
/// -1 means unlimited for retention settings, as in Kafka.
const UNLIMITED_OR_NON_NEGATIVE: Validator = Validator::Range {
    min: -1,
    max: i64::MAX,
};
const CLEANUP_POLICIES: Validator = Validator::ListOf(&["compact", "delete"]);
const TIMESTAMP_TYPES: Validator = Validator::OneOf(&["CreateTime", "LogAppendTime"]);
const COMPRESSION_TYPES: Validator =
    Validator::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]);
/// Kafka's minimum segment size (`LegacyRecord.RECORD_OVERHEAD_V0`).
const SEGMENT_BYTES: Validator = Validator::Range {
    min: 14,
    max: i32::MAX as i64,
};

const MS: i64 = 1;
const MINUTES_IN_MS: i64 = 60_000;
const HOURS_IN_MS: i64 = 3_600_000;

const fn broker(
    name: &'static str,
    ty: ConfigType,
    default: Option<&'static str>,
    validator: Validator,
    doc: &'static str,
) -> Setting {
    Setting {
        name,
        scope: Scope::Broker,
        ty,
        default,
        validator,
        support: Support::Honoured,
        synonyms: &[],
        doc,
    }
}

const fn inert(name: &'static str, ty: ConfigType, reason: &'static str) -> Setting {
    Setting {
        name,
        scope: Scope::Broker,
        ty,
        default: None,
        validator: ANY,
        support: Support::Inert(reason),
        synonyms: &[],
        doc: reason,
    }
}

const fn topic(
    name: &'static str,
    ty: ConfigType,
    validator: Validator,
    synonyms: &'static [Synonym],
    doc: &'static str,
) -> Setting {
    Setting {
        name,
        scope: Scope::Topic,
        ty,
        default: None,
        validator,
        support: Support::Honoured,
        synonyms,
        doc,
    }
}

const fn syn(name: &'static str, factor: i64) -> Synonym {
    Synonym { name, factor }
}

use ConfigType::{Boolean, Double, Int, List, Long, String as Str};

/// Every setting corebus accepts. Adding a setting means adding a row here and reading it
/// where it takes effect; nothing else.
pub static SETTINGS: &[Setting] = &[
    // --- Node identity and listeners (the CLI flags override these) ---
    broker(
        "node.id",
        Int,
        Some("1"),
        NON_NEGATIVE_I32,
        "This node's id in Metadata responses. Default 1, as Kafka 4's shipped server.properties.",
    ),
    broker(
        "broker.id",
        Int,
        None,
        NON_NEGATIVE_I32,
        "Kafka's older name for node.id; when both are set they must be equal.",
    ),
    broker(
        "listeners",
        Str,
        Some("PLAINTEXT://127.0.0.1:9092"),
        ANY,
        "Where to listen: one PLAINTEXT listener, HOST:PORT or PLAINTEXT://HOST:PORT.",
    ),
    broker(
        "advertised.listeners",
        Str,
        None,
        ANY,
        "The address clients are told to connect to; defaults to the listener.",
    ),
    broker(
        "broker.rack",
        Str,
        None,
        ANY,
        "The rack of this broker, published in its registration in the consensus tree \
         (replica placement will read it; nothing else does yet).",
    ),
    broker(
        "corebus.consensus.session.timeout.ms",
        Int,
        Some("9000"),
        Validator::Range {
            min: 200,
            max: 60_000,
        },
        "The timeout of the broker's consensus session (Kafka's zookeeper.session.timeout.ms; \
         KRaft's broker.session.timeout.ms, whose 9000 ms is the default here), in ms, within \
         the group's bounds (2 to 600 ping intervals: 200 to 60000 ms). The broker's \
         registration and controller node outlive a broker killed with SIGKILL by about this \
         much; a process stalled for longer loses its session and registers again.",
    ),
    broker(
        "corebus.consensus.session.renew.timeout.ms",
        Int,
        Some("300000"),
        Validator::Range {
            min: 1_000,
            max: 86_400_000,
        },
        "How long a broker whose consensus session expired keeps trying to open a new session \
         and register again (as a Kafka broker re-creates its ZooKeeper registration), in ms, \
         while it goes on serving; past it the broker stops and a supervisor restarts it.",
    ),
    broker(
        "log.dirs",
        Str,
        None,
        ANY,
        "The data directory (one per process in corebus); overrides log.dir.",
    ),
    broker(
        "log.dir",
        Str,
        Some("./data"),
        ANY,
        "The data directory when log.dirs is unset.",
    ),
    // --- Topics ---
    broker(
        "num.partitions",
        Int,
        Some("1"),
        POSITIVE_I32,
        "Partitions of an auto-created topic and of CreateTopics without a count (-1).",
    ),
    broker(
        "default.replication.factor",
        Int,
        Some("1"),
        Validator::Range { min: 1, max: 32767 },
        "Replication factor of topics created without one (CreateTopics with -1, and topics \
         created automatically); a topic asking for more replicas than there are live brokers \
         is refused with INVALID_REPLICATION_FACTOR.",
    ),
    broker(
        "auto.create.topics.enable",
        Boolean,
        Some("true"),
        ANY,
        "Create a topic when Metadata names one that does not exist.",
    ),
    inert(
        "corebus.replication.experimental",
        Boolean,
        "replication is always on: a topic may have as many replicas as there are live \
         brokers (this setting once gated it and is still accepted).",
    ),
    broker(
        "controlled.shutdown.enable",
        Boolean,
        Some("true"),
        ANY,
        "On SIGTERM, a broker asks the controller to move its partition leaderships to other \
         in-sync replicas (and to take it out of the in-sync sets) before it stops, so clients \
         switch leaders without waiting for its session to expire. A second signal stops it \
         at once.",
    ),
    broker(
        "corebus.controlled.shutdown.timeout.ms",
        Long,
        Some("30000"),
        POSITIVE,
        "How long a controlled shutdown may take, in ms: past it the broker stops anyway \
         (its remaining partitions fail over when its session expires).",
    ),
    broker(
        "delete.topic.enable",
        Boolean,
        Some("true"),
        ANY,
        "Allow DeleteTopics; when false it answers TOPIC_DELETION_DISABLED.",
    ),
    // --- Requests ---
    broker(
        "socket.request.max.bytes",
        Int,
        Some("104857600"),
        POSITIVE_I32,
        "Largest request frame accepted; a larger one closes the connection.",
    ),
    broker(
        "message.max.bytes",
        Int,
        Some("1048588"),
        NON_NEGATIVE_I32,
        "Largest record batch accepted (broker default of max.message.bytes).",
    ),
    broker(
        "compression.type",
        Str,
        Some("producer"),
        COMPRESSION_TYPES,
        "Broker default of the topic setting compression.type.",
    ),
    broker(
        "max.connections",
        Int,
        Some("10000"),
        POSITIVE_I32,
        "Most client connections open at once on this node (Kafka's default is unlimited; \
         corebus bounds everything). Further connections are closed at accept.",
    ),
    broker(
        "max.connections.per.ip",
        Int,
        Some("2147483647"),
        NON_NEGATIVE_I32,
        "Most client connections open at once from one address (Kafka's default: no bound); \
         a further one is closed at accept. 0 needs max.connections.per.ip.overrides.",
    ),
    broker(
        "max.connections.per.ip.overrides",
        Str,
        Some(""),
        ANY,
        "Exceptions to max.connections.per.ip, as HOST:COUNT pairs separated by commas \
         (an IP address or a host name, resolved at start-up), e.g. 127.0.0.1:200,[::1]:200.",
    ),
    broker(
        "corebus.max.inflight.requests.per.connection",
        Int,
        Some("256"),
        Validator::Range { min: 1, max: 1024 },
        "Pipelined requests read ahead and in progress per connection; past it the connection \
         is not read until a response is written. The bytes they hold are bounded by \
         corebus.shard.request.memory.pool.bytes; each request still takes effect only after \
         the one before it, only the waits for durability overlap. 256 measured best: at half \
         load with acks=all, librdkafka's p99 was 8 ms (p99.9 12 ms) against 25 ms (81 ms) \
         with 5 (BENCHMARKS.md, the window stage of scripts/broker-bench).",
    ),
    broker(
        "corebus.shard.produce.memory.budget.bytes",
        Long,
        Some("67108864"),
        Validator::Range {
            min: 1_048_576,
            max: i64::MAX,
        },
        "Produce data in flight per shard; past it the shard stops reading its sockets until \
         appends complete (backpressure instead of unbounded growth).",
    ),
    broker(
        "corebus.shard.request.memory.pool.bytes",
        Long,
        Some("134217728"),
        Validator::Range {
            min: 1_048_576,
            max: i64::MAX,
        },
        "Memory for requests being read and run, per shard (Kafka's queued.max.request.bytes \
         is per node and unbounded by default). A connection takes a frame's announced size \
         from it as soon as the size prefix arrives, before reading the body, and gives it back \
         when the request is done; while the pool is exhausted the shard's connections are \
         not read (backpressure instead of growth). A frame larger than the pool is refused \
         like one larger than socket.request.max.bytes.",
    ),
    broker(
        "fetch.max.bytes",
        Int,
        Some("57671680"),
        Validator::Range {
            min: 1024,
            max: i32::MAX as i64,
        },
        "Most record bytes one Fetch response carries, whatever the request's max_bytes \
         says (as in Kafka; the first batch of the first non-empty partition may exceed it, \
         KIP-74). Each partition read is capped by it too.",
    ),
    broker(
        "corebus.shard.fetch.memory.budget.bytes",
        Long,
        Some("67108864"),
        Validator::Range {
            min: 1_048_576,
            max: i64::MAX,
        },
        "Memory for Fetch reads in flight per shard, counted from before the read: a read for \
         a connection of the same shard is sent from its buffer, counted until the response \
         is written; a read for another shard's connection counts its buffer and its one copy \
         until the copy is made. Past it, reads on the shard wait for earlier ones to finish \
         instead of allocating (a read larger than the budget takes the whole budget), for at \
         most 200 ms: then the partition answers without data this time, and the fetch answers \
         with what it has. One response carries at most a quarter of it (a consumer that stops \
         reading holds no more).",
    ),
    broker(
        "corebus.memory.trim.interval.ms",
        Int,
        Some("10000"),
        NON_NEGATIVE_I32,
        "How often the broker looks at the memory its allocator holds free and, past \
         corebus.memory.trim.threshold.bytes, gives it back to the system (after a large \
         topic is deleted or many connections close) when more of it is free than in use. 0 \
         turns it off.",
    ),
    broker(
        "corebus.memory.trim.threshold.bytes",
        Long,
        Some("67108864"),
        NON_NEGATIVE,
        "Free memory held by the allocator past which it is given back to the system (see \
         corebus.memory.trim.interval.ms).",
    ),
    broker(
        "corebus.shard.max.open.files",
        Int,
        Some("0"),
        Validator::Range {
            min: 0,
            max: 1_000_000,
        },
        "Segment and index files one shard keeps open at once (past it the least recently \
         used idle ones are closed and opened again when needed). 0: derived at start-up from \
         the process's open-file limit, which the broker first raises from its soft to its \
         hard value: (limit - max.connections - 1024) / shards, at least 256. A partition being \
         written keeps one file open; give every written partition its own, or each write \
         opens and closes its file.",
    ),
    broker(
        "corebus.shard.max.parked.fetches",
        Int,
        Some("4096"),
        Validator::Range {
            min: 0,
            max: 1_000_000,
        },
        "Fetches a shard holds waiting for data (long polls with min_bytes not yet reached) \
         at once; past it a fetch is answered at once with what it has, as when its \
         max_wait_ms ends. A parked fetch also stops waiting when its connection closes.",
    ),
    broker(
        "connections.max.idle.ms",
        Long,
        Some("600000"),
        POSITIVE,
        "A client connection with no request in flight and nothing received for this long is \
         closed.",
    ),
    broker(
        "corebus.request.read.timeout.ms",
        Long,
        Some("30000"),
        POSITIVE,
        "Time a request frame may take to arrive, from its first byte (or, when the request \
         memory pool made it wait, from when its memory was granted) to its last; a \
         connection whose frame is not complete by then is closed, which gives back the \
         memory a stalled or trickling client holds.",
    ),
    // --- Log segments, retention, flushing, indexes (the storage engine reads these) ---
    broker(
        "log.segment.bytes",
        Int,
        Some("1073741824"),
        SEGMENT_BYTES,
        "Segment size before a roll (default of segment.bytes).",
    ),
    broker(
        "log.roll.ms",
        Long,
        None,
        POSITIVE,
        "Segment age before a roll, in ms.",
    ),
    broker(
        "log.roll.hours",
        Int,
        Some("168"),
        POSITIVE_I32,
        "Segment age before a roll, in hours, when log.roll.ms is unset.",
    ),
    broker(
        "log.roll.jitter.ms",
        Long,
        None,
        NON_NEGATIVE,
        "Random jitter subtracted from the roll age, in ms.",
    ),
    broker(
        "log.roll.jitter.hours",
        Int,
        Some("0"),
        NON_NEGATIVE_I32,
        "Roll jitter in hours when log.roll.jitter.ms is unset.",
    ),
    broker(
        "log.retention.ms",
        Long,
        None,
        UNLIMITED_OR_NON_NEGATIVE,
        "How long to keep a segment, in ms; -1 keeps forever.",
    ),
    broker(
        "log.retention.minutes",
        Int,
        None,
        UNLIMITED_OR_NON_NEGATIVE,
        "Retention in minutes when log.retention.ms is unset.",
    ),
    broker(
        "log.retention.hours",
        Int,
        Some("168"),
        UNLIMITED_OR_NON_NEGATIVE,
        "Retention in hours when log.retention.ms and log.retention.minutes are unset.",
    ),
    broker(
        "log.retention.bytes",
        Long,
        Some("-1"),
        UNLIMITED_OR_NON_NEGATIVE,
        "Largest size of a partition's log before old segments are deleted; -1 unlimited.",
    ),
    broker(
        "log.retention.check.interval.ms",
        Long,
        Some("300000"),
        POSITIVE,
        "How often retention is checked, in ms.",
    ),
    broker(
        "log.segment.delete.delay.ms",
        Long,
        Some("60000"),
        NON_NEGATIVE,
        "Delay before a deleted segment's files are removed, in ms.",
    ),
    broker(
        "log.index.interval.bytes",
        Int,
        Some("4096"),
        NON_NEGATIVE_I32,
        "Bytes of log between two offset-index entries.",
    ),
    broker(
        "log.index.size.max.bytes",
        Int,
        Some("10485760"),
        Validator::Range {
            min: 4,
            max: i32::MAX as i64,
        },
        "Largest offset index of a segment; a full index rolls the segment.",
    ),
    broker(
        "log.flush.interval.messages",
        Long,
        Some("9223372036854775807"),
        POSITIVE,
        "Records appended to a partition before it is synced (fdatasync).",
    ),
    broker(
        "log.flush.interval.ms",
        Long,
        None,
        NON_NEGATIVE,
        "Most time appended records stay unsynced, in ms; unset falls back to \
         log.flush.scheduler.interval.ms.",
    ),
    broker(
        "log.flush.scheduler.interval.ms",
        Long,
        Some("9223372036854775807"),
        NON_NEGATIVE,
        "How often the flusher checks for partitions to sync, in ms.",
    ),
    broker(
        "write.caching.default",
        Boolean,
        Some("false"),
        ANY,
        "Broker default of write.caching: false makes acks=all wait for the fdatasync.",
    ),
    broker(
        "log.preallocate",
        Boolean,
        Some("false"),
        ANY,
        "Preallocate new segment files.",
    ),
    broker(
        "log.cleanup.policy",
        List,
        Some("delete"),
        CLEANUP_POLICIES,
        "Broker default of cleanup.policy: delete, compact, or both.",
    ),
    broker(
        "log.cleaner.enable",
        Boolean,
        Some("true"),
        ANY,
        "Run the log cleaner for compacted topics.",
    ),
    broker(
        "log.cleaner.delete.retention.ms",
        Long,
        Some("86400000"),
        NON_NEGATIVE,
        "How long tombstones stay in a compacted log, in ms.",
    ),
    broker(
        "log.cleaner.min.cleanable.ratio",
        Double,
        Some("0.5"),
        Validator::RangeF64 { min: 0.0, max: 1.0 },
        "Dirty share of a log before it is compacted.",
    ),
    broker(
        "log.cleaner.min.compaction.lag.ms",
        Long,
        Some("0"),
        NON_NEGATIVE,
        "Youngest a record can be and still be compacted, in ms.",
    ),
    broker(
        "log.cleaner.max.compaction.lag.ms",
        Long,
        Some("9223372036854775807"),
        POSITIVE,
        "Oldest a record can be and still be uncompacted, in ms.",
    ),
    broker(
        "log.cleaner.backoff.ms",
        Long,
        Some("15000"),
        POSITIVE,
        "How long a shard's cleaner sleeps when no compacted log needs cleaning, in ms.",
    ),
    broker(
        "log.cleaner.io.max.bytes.per.second",
        Double,
        Some("1.7976931348623157E308"),
        Validator::RangeF64 {
            min: 1.0,
            max: f64::MAX,
        },
        "Read plus write bytes per second of each shard's cleaner (default: unthrottled).",
    ),
    broker(
        "log.cleaner.dedupe.buffer.size",
        Long,
        Some("134217728"),
        Validator::Range {
            min: 1 << 20,
            max: i64::MAX,
        },
        "Bytes of the cleaners' offset maps (32 bytes per key), shared evenly by the shards.",
    ),
    broker(
        "log.cleaner.io.buffer.size",
        Int,
        Some("524288"),
        Validator::Range {
            min: 4096,
            max: 64 << 20,
        },
        "Bytes a cleaner reads or writes at once, in bytes.",
    ),
    broker(
        "log.message.timestamp.type",
        Str,
        Some("CreateTime"),
        TIMESTAMP_TYPES,
        "Broker default of message.timestamp.type.",
    ),
    broker(
        "log.message.timestamp.before.max.ms",
        Long,
        Some("9223372036854775807"),
        NON_NEGATIVE,
        "How far in the past a CreateTime timestamp may lie, in ms.",
    ),
    broker(
        "log.message.timestamp.after.max.ms",
        Long,
        Some("3600000"),
        NON_NEGATIVE,
        "How far in the future a CreateTime timestamp may lie, in ms (Kafka 4 default: 1 hour).",
    ),
    broker(
        "min.insync.replicas",
        Int,
        Some("1"),
        Validator::Range { min: 1, max: 32767 },
        "In-sync replicas an acks=all produce needs, else NOT_ENOUGH_REPLICAS (a partition \
         with fewer replicas than this refuses acks=all, as in Kafka).",
    ),
    broker(
        "unclean.leader.election.enable",
        Boolean,
        Some("false"),
        ANY,
        "Kafka's unclean leader election: a partition whose in-sync replicas are all gone gets \
         another live replica as its leader (available again, but records only the lost \
         replicas held are lost). Off: it has no leader until an in-sync replica returns \
         (ElectLeaders with the unclean type still elects one on request). A topic's own \
         setting overrides it.",
    ),
    broker(
        "auto.leader.rebalance.enable",
        Boolean,
        Some("true"),
        ANY,
        "With replication: the controller gives partitions back to their preferred (first \
         assigned) replica when it is live and in sync, for brokers leading fewer of their \
         preferred partitions than leader.imbalance.per.broker.percentage allows.",
    ),
    broker(
        "leader.imbalance.check.interval.seconds",
        Long,
        Some("300"),
        POSITIVE,
        "How often the controller checks the leader balance, in seconds.",
    ),
    broker(
        "leader.imbalance.per.broker.percentage",
        Int,
        Some("10"),
        Validator::Range { min: 0, max: 100 },
        "Share of a broker's preferred partitions, in percent, that may be led by others \
         before leader balancing gives them back.",
    ),
    // --- Consumer groups and committed offsets ---
    broker(
        "offsets.topic.num.partitions",
        Int,
        Some("50"),
        POSITIVE_I32,
        "Partitions of __consumer_offsets, fixed when it is created (on first group use).",
    ),
    broker(
        "offsets.topic.segment.bytes",
        Int,
        Some("104857600"),
        SEGMENT_BYTES,
        "Segment size of __consumer_offsets, in bytes.",
    ),
    broker(
        "offset.metadata.max.bytes",
        Int,
        Some("4096"),
        // Stored with an i16 length, as in Kafka's record layout.
        Validator::Range {
            min: 0,
            max: i16::MAX as i64,
        },
        "Longest metadata string of a committed offset, in bytes.",
    ),
    broker(
        "offsets.retention.minutes",
        Int,
        Some("10080"),
        POSITIVE_I32,
        "How long an empty group's committed offsets are kept, in minutes.",
    ),
    broker(
        "offsets.retention.check.interval.ms",
        Long,
        Some("600000"),
        POSITIVE,
        "How often expired committed offsets are looked for, in ms.",
    ),
    broker(
        "offsets.commit.timeout.ms",
        Int,
        Some("5000"),
        POSITIVE,
        "How long an offset commit to a replicated __consumer_offsets partition waits for \
         its in-sync replicas, in ms; then COORDINATOR_NOT_AVAILABLE (the client retries).",
    ),
    broker(
        "group.initial.rebalance.delay.ms",
        Int,
        Some("3000"),
        NON_NEGATIVE_I32,
        "How long the first rebalance of an empty group waits for more members, in ms.",
    ),
    broker(
        "group.min.session.timeout.ms",
        Int,
        Some("6000"),
        POSITIVE_I32,
        "Shortest session timeout a group member may ask for, in ms.",
    ),
    broker(
        "group.max.session.timeout.ms",
        Int,
        Some("1800000"),
        POSITIVE_I32,
        "Longest session timeout a group member may ask for, in ms.",
    ),
    broker(
        "group.max.size",
        Int,
        Some("2147483647"),
        POSITIVE_I32,
        "Members a classic group may have.",
    ),
    // --- Kafka settings that do not apply to a thread-per-core single node ---
    inert(
        "num.network.threads",
        Int,
        "corebus runs one thread per core (see --shards).",
    ),
    inert(
        "num.io.threads",
        Int,
        "corebus runs one thread per core (see --shards).",
    ),
    inert(
        "num.recovery.threads.per.data.dir",
        Int,
        "each shard recovers its own partitions.",
    ),
    inert(
        "log.cleaner.threads",
        Int,
        "each shard runs one cleaner task for its own partitions.",
    ),
    inert(
        "num.replica.fetchers",
        Int,
        "each shard runs one fetcher per leader broker it follows partitions of.",
    ),
    inert(
        "queued.max.request.bytes",
        Long,
        "request memory is bounded per shard by corebus.shard.request.memory.pool.bytes.",
    ),
    inert(
        "socket.send.buffer.bytes",
        Int,
        "corebus keeps the kernel's socket buffer sizing.",
    ),
    inert(
        "socket.receive.buffer.bytes",
        Int,
        "corebus keeps the kernel's socket buffer sizing.",
    ),
    inert(
        "process.roles",
        Str,
        "corebus nodes are always brokers; metadata has its own store.",
    ),
    inert(
        "controller.quorum.bootstrap.servers",
        Str,
        "the metadata store is not KRaft.",
    ),
    inert(
        "controller.quorum.voters",
        Str,
        "the metadata store is not KRaft.",
    ),
    inert(
        "controller.listener.names",
        Str,
        "the metadata store is not KRaft.",
    ),
    inert(
        "inter.broker.listener.name",
        Str,
        "a single node has no inter-broker traffic.",
    ),
    inert(
        "listener.security.protocol.map",
        Str,
        "only PLAINTEXT is supported; other listeners are refused.",
    ),
    broker(
        "replica.lag.time.max.ms",
        Long,
        Some("30000"),
        POSITIVE,
        "A follower not caught up with its leader for this long leaves the in-sync replicas; \
         one that holds the high watermark again joins them.",
    ),
    broker(
        "replica.high.watermark.checkpoint.interval.ms",
        Long,
        Some("5000"),
        POSITIVE,
        "How often each shard writes the high watermarks of its partitions to disk \
         (high-watermarks.<shard> in the data directory), so that a restarted replica opens \
         them where they were rather than at the log start; also written at a clean stop.",
    ),
    broker(
        "follower.replication.throttled.rate",
        Long,
        Some("9223372036854775807"),
        POSITIVE,
        "Bytes per second each shard's fetchers copy into replicas a partition reassignment \
         is adding, until they are in sync (Kafka applies it to the replicas \
         follower.replication.throttled.replicas lists, which kafka-reassign-partitions \
         --throttle sets to the moving ones; corebus applies it to every adding replica). \
         Replicas already in the assignment are never throttled. Default: unthrottled.",
    ),
    broker(
        "offsets.topic.replication.factor",
        Int,
        Some("3"),
        Validator::Range { min: 1, max: 32767 },
        "Replicas of each __consumer_offsets partition, capped by the live brokers when the \
         topic is created (as Kafka does on small clusters).",
    ),
    inert(
        "transaction.state.log.replication.factor",
        Int,
        "a single node keeps one replica of internal topics.",
    ),
    inert(
        "transaction.state.log.min.isr",
        Int,
        "a single node keeps one replica of internal topics.",
    ),
    inert(
        "share.coordinator.state.topic.replication.factor",
        Int,
        "share groups are not supported.",
    ),
    inert(
        "share.coordinator.state.topic.min.isr",
        Int,
        "share groups are not supported.",
    ),
    // --- Topic settings (Kafka's topic-level names) ---
    topic(
        "cleanup.policy",
        List,
        CLEANUP_POLICIES,
        &[syn("log.cleanup.policy", MS)],
        "delete: old segments are deleted by retention; compact: the latest record per key is kept.",
    ),
    topic(
        "compression.type",
        Str,
        COMPRESSION_TYPES,
        &[syn("compression.type", MS)],
        "Codec of stored batches; producer keeps what the producer sent.",
    ),
    topic(
        "delete.retention.ms",
        Long,
        NON_NEGATIVE,
        &[syn("log.cleaner.delete.retention.ms", MS)],
        "How long tombstones stay in a compacted topic, in ms.",
    ),
    topic(
        "file.delete.delay.ms",
        Long,
        NON_NEGATIVE,
        &[syn("log.segment.delete.delay.ms", MS)],
        "Delay before a deleted segment's files are removed, in ms.",
    ),
    topic(
        "flush.messages",
        Long,
        POSITIVE,
        &[syn("log.flush.interval.messages", MS)],
        "Records appended before the partition is synced.",
    ),
    topic(
        "flush.ms",
        Long,
        NON_NEGATIVE,
        &[
            syn("log.flush.interval.ms", MS),
            syn("log.flush.scheduler.interval.ms", MS),
        ],
        "Most time appended records stay unsynced, in ms.",
    ),
    topic(
        "index.interval.bytes",
        Int,
        NON_NEGATIVE_I32,
        &[syn("log.index.interval.bytes", MS)],
        "Bytes of log between two offset-index entries.",
    ),
    topic(
        "max.compaction.lag.ms",
        Long,
        POSITIVE,
        &[syn("log.cleaner.max.compaction.lag.ms", MS)],
        "Oldest a record can be and still be uncompacted, in ms.",
    ),
    topic(
        "max.message.bytes",
        Int,
        NON_NEGATIVE_I32,
        &[syn("message.max.bytes", MS)],
        "Largest record batch accepted for this topic.",
    ),
    topic(
        "message.timestamp.type",
        Str,
        TIMESTAMP_TYPES,
        &[syn("log.message.timestamp.type", MS)],
        "CreateTime keeps the producer's timestamp; LogAppendTime stamps the append time.",
    ),
    topic(
        "message.timestamp.before.max.ms",
        Long,
        NON_NEGATIVE,
        &[syn("log.message.timestamp.before.max.ms", MS)],
        "How far in the past a CreateTime timestamp may lie, in ms.",
    ),
    topic(
        "message.timestamp.after.max.ms",
        Long,
        NON_NEGATIVE,
        &[syn("log.message.timestamp.after.max.ms", MS)],
        "How far in the future a CreateTime timestamp may lie, in ms.",
    ),
    topic(
        "min.cleanable.dirty.ratio",
        Double,
        Validator::RangeF64 { min: 0.0, max: 1.0 },
        &[syn("log.cleaner.min.cleanable.ratio", MS)],
        "Dirty share of the log before it is compacted.",
    ),
    topic(
        "min.compaction.lag.ms",
        Long,
        NON_NEGATIVE,
        &[syn("log.cleaner.min.compaction.lag.ms", MS)],
        "Youngest a record can be and still be compacted, in ms.",
    ),
    topic(
        "min.insync.replicas",
        Int,
        Validator::Range { min: 1, max: 32767 },
        &[syn("min.insync.replicas", MS)],
        "In-sync replicas an acks=all produce needs, else NOT_ENOUGH_REPLICAS.",
    ),
    topic(
        "preallocate",
        Boolean,
        ANY,
        &[syn("log.preallocate", MS)],
        "Preallocate new segment files.",
    ),
    topic(
        "retention.bytes",
        Long,
        UNLIMITED_OR_NON_NEGATIVE,
        &[syn("log.retention.bytes", MS)],
        "Largest size of a partition before old segments are deleted; -1 unlimited.",
    ),
    topic(
        "retention.ms",
        Long,
        UNLIMITED_OR_NON_NEGATIVE,
        &[
            syn("log.retention.ms", MS),
            syn("log.retention.minutes", MINUTES_IN_MS),
            syn("log.retention.hours", HOURS_IN_MS),
        ],
        "How long to keep a segment, in ms; -1 keeps forever.",
    ),
    topic(
        "segment.bytes",
        Int,
        SEGMENT_BYTES,
        &[syn("log.segment.bytes", MS)],
        "Segment size before a roll.",
    ),
    topic(
        "segment.index.bytes",
        Int,
        Validator::Range {
            min: 4,
            max: i32::MAX as i64,
        },
        &[syn("log.index.size.max.bytes", MS)],
        "Largest offset index of a segment.",
    ),
    topic(
        "segment.jitter.ms",
        Long,
        NON_NEGATIVE,
        &[
            syn("log.roll.jitter.ms", MS),
            syn("log.roll.jitter.hours", HOURS_IN_MS),
        ],
        "Random jitter subtracted from the roll age, in ms.",
    ),
    topic(
        "segment.ms",
        Long,
        POSITIVE,
        &[syn("log.roll.ms", MS), syn("log.roll.hours", HOURS_IN_MS)],
        "Segment age before a roll, in ms.",
    ),
    topic(
        "unclean.leader.election.enable",
        Boolean,
        ANY,
        &[syn("unclean.leader.election.enable", MS)],
        "Kafka's unclean leader election for this topic (see the broker setting); meaningless \
         with a single replica.",
    ),
    topic(
        "write.caching",
        Boolean,
        ANY,
        &[syn("write.caching.default", MS)],
        "true: acks=all answers once written (Kafka's behaviour, relying on replication); \
         false: acks=all waits for the fdatasync (Redpanda's name and default).",
    ),
];

/// The row of `name` in `scope`.
pub fn lookup(scope: Scope, name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.scope == scope && s.name == name)
}

/// The rows of one scope, in table order.
pub fn in_scope(scope: Scope) -> impl Iterator<Item = &'static Setting> {
    SETTINGS.iter().filter(move |s| s.scope == scope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::value::Value;
    use std::collections::HashSet;

    #[test]
    fn every_default_parses_and_passes_its_validator() {
        for s in SETTINGS {
            if let Some(d) = s.default {
                let v = Value::parse(s.ty, d).unwrap_or_else(|e| panic!("{}: {e}", s.name));
                s.validator
                    .check(&v)
                    .unwrap_or_else(|e| panic!("{}: {e}", s.name));
            }
        }
    }

    #[test]
    fn names_are_unique_per_scope_and_synonyms_exist() {
        let mut seen = HashSet::new();
        for s in SETTINGS {
            assert!(seen.insert((s.scope, s.name)), "{} twice", s.name);
            for syn in s.synonyms {
                let b = lookup(Scope::Broker, syn.name)
                    .unwrap_or_else(|| panic!("{}: synonym {} missing", s.name, syn.name));
                assert!(
                    b.ty == s.ty || (b.ty == Int && s.ty == Long),
                    "{}: synonym {} has another type",
                    s.name,
                    syn.name
                );
            }
            // A topic setting gets its value from its synonyms, so the last one needs a default.
            if s.scope == Scope::Topic {
                let last = s.synonyms.last().expect("topic setting without synonym");
                assert!(
                    lookup(Scope::Broker, last.name).unwrap().default.is_some(),
                    "{}",
                    s.name
                );
            }
        }
    }
}
