//! The log cleaner: compaction of `cleanup.policy=compact` (and `compact,delete`) logs.
//!
//! Owns: one background task per shard (on its own glommio task queue with fewer shares than
//! the produce and fetch path, `Latency::NotImportant`), woken every `log.cleaner.backoff.ms`,
//! that picks the dirtiest compacted log of the shard ([`select`]) and cleans it
//! ([`clean`]): an offset map of the dirty range ([`offset_map`], at most
//! `log.cleaner.dedupe.buffer.size` bytes), then each group of old segments rewritten with
//! the records the map says to keep ([`filter`]), swapped in crash-safely ([`swap`]), and the
//! clean/dirty boundary stored durably ([`checkpoint`]). Reads and writes of a clean are
//! throttled to `log.cleaner.io.max.bytes.per.second` ([`throttle`]).
//!
//! Idle cost: a wake looks at each open log's in-memory segment list and cleaner checkpoint
//! only (no I/O, no per-log timer), so thousands of small compacted partitions (the groups'
//! `__consumer_offsets`) cost a few microseconds per wake when nothing was written.
//!
//! Offsets never change: a cleaned segment keeps its batches' base offsets and offset
//! deltas, so a compacted log has gaps, as Kafka's has. A read at a removed offset returns
//! the next batch; ListOffsets, DeleteRecords and retention work as on any log.
//!
//! Never: touches the active segment or records younger than `min.compaction.lag.ms`; runs
//! two cleans of one log at once; removes an old segment before its cleaned copy is durable.

pub(crate) mod checkpoint;
mod clean;
pub(crate) mod filter;
pub(crate) mod offset_map;
pub(crate) mod select;
pub(crate) mod swap;
mod throttle;

use std::rc::Weak;
use std::time::Duration;

use glommio::{Latency, Shares};
use tracing::{info, warn};

pub use clean::CleanStats;

use super::disk::Disk;
use super::log::PartitionLog;
use super::shard::{ShardCore, StorageShard, now_ms};

/// Settings of one shard's cleaner, under Kafka's broker setting names.
#[derive(Clone, Debug)]
pub struct CleanerOptions {
    /// `log.cleaner.backoff.ms`: sleep between looks for a dirty log when none qualified.
    pub backoff_ms: u64,
    /// `log.cleaner.io.max.bytes.per.second`: read plus write bytes of a clean per second
    /// (infinite: unthrottled, Kafka's default).
    pub io_max_bytes_per_second: f64,
    /// `log.cleaner.dedupe.buffer.size`: this shard's share of the offset map memory.
    pub dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.buffer.size`: bytes read or written at once by a clean.
    pub io_buffer_bytes: usize,
    /// Scheduler shares of the cleaner's task queue (glommio's default queue has 1000).
    pub task_queue_shares: usize,
}

/// Kafka's defaults: 15 s backoff, unthrottled, 128 MiB dedupe buffer, 512 KiB I/O buffer.
impl Default for CleanerOptions {
    fn default() -> Self {
        CleanerOptions {
            backoff_ms: 15_000,
            io_max_bytes_per_second: f64::INFINITY,
            dedupe_buffer_bytes: 128 << 20,
            io_buffer_bytes: 512 << 10,
            task_queue_shares: CLEANER_TASK_QUEUE_SHARES,
        }
    }
}

/// A tenth of the default queue's 1000 shares: under load the produce path gets ~90% of the
/// core; when the shard is idle the cleaner runs at full speed.
pub const CLEANER_TASK_QUEUE_SHARES: usize = 100;

/// The cleaner's view of one log, kept in the log's state.
#[derive(Clone, Debug, Default)]
pub(crate) struct CleanerLogState {
    /// The cleaner checkpoint: offsets below are clean.
    pub first_dirty_offset: i64,
    /// Earliest delete horizon of a tombstone still kept (the log is due then).
    pub tombstone_horizon_ms: Option<i64>,
    /// A swap is between its commit and its end: retention, truncation and close wait.
    pub swapping: bool,
    /// Why the cleaner gave up on this log until a restart (data it cannot read).
    pub uncleanable: Option<String>,
}

impl<D: Disk> PartitionLog<D> {
    /// Waits until no segment swap of this log is between its commit and its end (a swap
    /// takes a few renames and directory syncs).
    pub(crate) async fn wait_for_swap(&self) {
        while self.inner.state.borrow().cleaner.swapping {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    /// After a truncation to `offset`: offsets from there on are dirty again, durably (else a
    /// restart would take later appends for clean ones).
    pub(crate) async fn lower_cleaner_checkpoint(&self, offset: i64) {
        let new = {
            let mut st = self.inner.state.borrow_mut();
            if st.cleaner.first_dirty_offset <= offset {
                return;
            }
            st.cleaner.first_dirty_offset = offset;
            checkpoint::Checkpoint {
                first_dirty_offset: offset,
                tombstone_horizon_ms: st.cleaner.tombstone_horizon_ms,
            }
        };
        if let Err(e) = checkpoint::write(&self.inner.core.disk, &self.inner.dir, new).await {
            warn!(dir = %self.inner.dir.display(), error = %e, "cannot lower the cleaner checkpoint");
        }
    }

    /// The cleaner checkpoint: offsets below were compacted.
    pub fn first_dirty_offset(&self) -> i64 {
        self.inner.state.borrow().cleaner.first_dirty_offset
    }
}

impl<D: Disk> StorageShard<D> {
    /// Starts the shard's cleaner task (call once, inside the shard's executor).
    pub fn start_cleaner(&self, options: CleanerOptions) {
        let core = std::rc::Rc::downgrade(&self.core);
        let shares = Shares::Static(options.task_queue_shares.max(1));
        let queue =
            glommio::executor().create_task_queue(shares, Latency::NotImportant, "log-cleaner");
        let task = run(core, options);
        match glommio::spawn_local_into(task, queue) {
            Ok(t) => {
                t.detach();
            }
            Err(e) => warn!(error = %e, "cannot start the log cleaner"),
        }
    }

    /// Cleans the dirtiest qualifying log of the shard, if any. Returns what was cleaned.
    pub async fn clean_dirtiest(
        &self,
        now_ms: i64,
        options: &CleanerOptions,
    ) -> Option<CleanStats> {
        clean_dirtiest(&self.core, now_ms, options).await
    }
}

async fn clean_dirtiest<D: Disk>(
    core: &ShardCore<D>,
    now_ms: i64,
    options: &CleanerOptions,
) -> Option<CleanStats> {
    let logs: Vec<_> = core
        .live_logs()
        .into_iter()
        .filter(|l| l.might_need_cleaning(now_ms))
        .collect();
    let mut candidates = Vec::new();
    for log in logs {
        match log.dirtiness(now_ms).await {
            Ok(Some(d)) => candidates.push((log, d)),
            Ok(None) => {}
            Err(e) => warn!(dir = %log.dir().display(), error = %e, "cleaner cannot assess log"),
        }
    }
    let assessed: Vec<_> = candidates.iter().map(|(_, d)| *d).collect();
    let pick = select::dirtiest(&assessed)?;
    let log = &candidates[pick].0;
    match log.compact(now_ms, options).await {
        Ok(stats) => stats,
        Err(e) => {
            warn!(dir = %log.dir().display(), error = %e, "log cleaning failed");
            None
        }
    }
}

/// The shard's cleaner loop: clean while something qualifies, else sleep the backoff.
async fn run<D: Disk>(core: Weak<ShardCore<D>>, options: CleanerOptions) {
    loop {
        let Some(c) = core.upgrade() else { return };
        if c.is_closed() {
            return;
        }
        let cleaned = clean_dirtiest(&c, now_ms(), &options).await;
        drop(c);
        match cleaned {
            Some(stats) => {
                info!(
                    dir = %stats.dir.display(),
                    bytes_read = stats.bytes_read,
                    bytes_written = stats.bytes_written,
                    batches_dropped = stats.batches_dropped,
                    segments_before = stats.segments_before,
                    segments_after = stats.segments_after,
                    "log cleaned"
                );
                glommio::yield_if_needed().await;
            }
            None => glommio::timer::sleep(Duration::from_millis(options.backoff_ms.max(1))).await,
        }
    }
}
