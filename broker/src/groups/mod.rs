//! Consumer groups with Kafka's classic protocol and their committed offsets.
//!
//! - `placement`: which `__consumer_offsets` partition (and so which shard) owns a group.
//! - `record`: the key/value layouts of that topic's records (Kafka's own).
//! - `store`: writing a group's records durably and replaying a partition at start.
//! - `member`, `group`: the classic group state machine, pure, with time as an input;
//!   `exchange`: what it is asked and answers (results and effects).
//! - `offsets`: a group's committed offsets in memory.
//! - `coordinator`: one shard's groups, their waiting requests and timers.
//!
//! `__consumer_offsets` is created on first use (Kafka does the same), with
//! `offsets.topic.num.partitions` partitions (Kafka's default 50), compacted, and
//! `offsets.topic.segment.bytes` segments. A broker that never sees a group never creates
//! it; one that does opens 50 small logs, and only partitions that get written reserve
//! storage's preallocation step, since the engine preallocates on the first write of a
//! segment, not when a log opens.
//!
//! Offsets of an empty group expire after `offsets.retention.minutes`.
//!
//! KIP-848 (ConsumerGroupHeartbeat) is not here yet and is not advertised.
//!
//! Never: imports a handler; touches another shard's groups (requests arrive through the
//! mesh on the owning shard).

pub mod coordinator;
pub mod exchange;
pub mod group;
pub mod member;
pub mod offsets;
pub mod placement;
pub mod record;
pub mod store;

pub use coordinator::{GroupCoordinator, GroupSettings};
pub use group::GroupLimits;
pub use placement::{OFFSETS_TOPIC, partition_for};

use crate::config::BrokerSettings;

impl GroupSettings {
    /// Reads the group settings; every one has a default in the settings table, the
    /// fallbacks here (Kafka's defaults) only keep this total.
    pub fn from_settings(s: &BrokerSettings) -> GroupSettings {
        let int = |name: &str, fallback: i64| -> i32 {
            i32::try_from(s.i64(name).unwrap_or(fallback)).unwrap_or(i32::MAX)
        };
        GroupSettings {
            limits: GroupLimits {
                min_session_timeout_ms: int("group.min.session.timeout.ms", 6_000),
                max_session_timeout_ms: int("group.max.session.timeout.ms", 1_800_000),
                initial_rebalance_delay_ms: int("group.initial.rebalance.delay.ms", 3_000),
                max_size_members: usize::try_from(int("group.max.size", i64::from(i32::MAX)))
                    .unwrap_or(usize::MAX),
            },
            offset_metadata_max_bytes: usize::try_from(int("offset.metadata.max.bytes", 4096))
                .unwrap_or(4096),
            offsets_retention_ms: s
                .i64("offsets.retention.minutes")
                .unwrap_or(10_080)
                .saturating_mul(60_000),
            offsets_retention_check_interval_ms: s
                .i64("offsets.retention.check.interval.ms")
                .unwrap_or(600_000),
        }
    }
}
