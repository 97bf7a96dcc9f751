//! Every limit of the consensus crate, named once with its unit.
//!
//! Owns constants only. Protocol timing is in ticks (the runtime decides what a tick is) and
//! lives in [`crate::zab::Config`], not here.

/// Largest data a tree node holds (ZooKeeper's jute.maxbuffer default).
pub const MAX_NODE_DATA_BYTES: usize = 1024 * 1024;
/// Longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Most operations in one `multi`.
pub const MAX_MULTI_OPS: usize = 1024;
/// Largest encoded transaction in the log (a full multi of big nodes is refused earlier).
pub const MAX_TXN_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// A log segment rolls once it reaches this size.
pub const DEFAULT_LOG_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest snapshot file accepted on recovery.
pub const MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024 * 1024;
