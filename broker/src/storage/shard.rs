//! One shard's storage engine: the logs it owns and what they share.
//!
//! Owns: the disk handle, the fd cache, the batch cache, the group commit of fdatasyncs
//! (every log that asked for a sync while the previous round ran is synced in the next
//! round, all at once through io_uring), the `flush.ms` ticker and the retention pass. The
//! shard's log cleaner is in `cleaner` (started by `start_cleaner`).
//! Never: touches another shard's logs; is used from another thread (`Rc`, not `Send`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::warn;

use super::batch_cache::BatchCache;
use super::bounded::run_bounded;
use super::config::{LogConfig, ShardOptions};
use super::disk::Disk;
use super::error::Result;
use super::fd_cache::FdCache;
use super::log::{LogInner, PartitionLog, WeakLog};
use super::watermark::Watermark;
use crate::metrics::histogram::LatencyHistogram;

/// Logs of one shard opened or closed at once (each costs a few fsyncs, which overlap
/// through io_uring; the fd cache holds far more files than this).
pub const CONCURRENT_LOG_OPENS_CLOSES: usize = 64;

/// Milliseconds since the Unix epoch (wall clock, as Kafka timestamps are).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) struct ShardCore<D: Disk> {
    pub disk: D,
    pub options: ShardOptions,
    pub files: FdCache<D>,
    pub cache: RefCell<BatchCache<D::Buf>>,
    sync_queue: RefCell<Vec<WeakLog<D>>>,
    /// Counts sync requests; the group-commit task waits on it.
    sync_events: Rc<Watermark>,
    logs: RefCell<HashMap<u64, WeakLog<D>>>,
    next_log_id: Cell<u64>,
    closed: Cell<bool>,
    /// Group-commit rounds run so far (each syncs every log queued before it started).
    sync_rounds: Cell<u64>,
    /// Latency of the group commit's fdatasyncs (metrics).
    fsync_latency: RefCell<LatencyHistogram>,
}

impl<D: Disk> ShardCore<D> {
    pub(crate) fn queue_sync(&self, log: WeakLog<D>) {
        self.sync_queue.borrow_mut().push(log);
        self.sync_events.advance(self.sync_events.get() + 1);
    }

    pub(crate) fn record_fsync(&self, latency: Duration) {
        self.fsync_latency.borrow_mut().observe(latency);
    }

    pub(crate) fn register(&self, log: &Rc<LogInner<D>>) {
        self.logs.borrow_mut().insert(log.id, Rc::downgrade(log));
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.logs.borrow_mut().remove(&id);
        self.cache.borrow_mut().remove_log(id);
    }

    pub(crate) fn new_log_id(&self) -> u64 {
        self.next_log_id.set(self.next_log_id.get() + 1);
        self.next_log_id.get()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    pub(crate) fn live_logs(&self) -> Vec<PartitionLog<D>> {
        self.logs
            .borrow()
            .values()
            .filter_map(Weak::upgrade)
            .map(|inner| PartitionLog { inner })
            .collect()
    }
}

/// The storage engine of one shard. Create it inside the shard's glommio executor; it spawns
/// the group-commit and flush tasks there. Cheap to clone.
pub struct StorageShard<D: Disk> {
    pub(crate) core: Rc<ShardCore<D>>,
}

impl<D: Disk> Clone for StorageShard<D> {
    fn clone(&self) -> Self {
        StorageShard {
            core: self.core.clone(),
        }
    }
}

impl<D: Disk> StorageShard<D> {
    pub fn new(disk: D, options: ShardOptions) -> StorageShard<D> {
        let core = Rc::new(ShardCore {
            files: FdCache::new(disk.clone(), options.max_open_files),
            cache: RefCell::new(BatchCache::new(options.batch_cache_bytes)),
            disk,
            options,
            sync_queue: RefCell::new(Vec::new()),
            sync_events: Rc::new(Watermark::new(0)),
            logs: RefCell::new(HashMap::new()),
            next_log_id: Cell::new(0),
            closed: Cell::new(false),
            sync_rounds: Cell::new(0),
            fsync_latency: RefCell::new(LatencyHistogram::default()),
        });
        let events = core.sync_events.clone();
        glommio::spawn_local(group_commit(Rc::downgrade(&core), events)).detach();
        glommio::spawn_local(flush_ticker(Rc::downgrade(&core))).detach();
        StorageShard { core }
    }

    pub fn disk(&self) -> &D {
        &self.core.disk
    }

    /// Opens (recovering if needed) or creates the log in `dir`.
    pub async fn open_log(&self, dir: PathBuf, config: LogConfig) -> Result<PartitionLog<D>> {
        PartitionLog::open(self.core.clone(), dir, config).await
    }

    /// The directory of `topic`-`partition` under `data_dir`, Kafka's layout.
    pub fn log_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
        data_dir.join(format!("{topic}-{partition}"))
    }

    /// Runs retention on every open log of the shard (call every
    /// `log.retention.check.interval.ms`). Returns the number of segments deleted.
    pub async fn enforce_retention(&self, now_ms: i64) -> usize {
        let mut deleted = 0;
        for log in self.core.live_logs() {
            match log.enforce_retention(now_ms).await {
                Ok(n) => deleted += n,
                Err(e) => warn!(dir = %log.dir().display(), error = %e, "retention failed"),
            }
        }
        deleted
    }

    /// Closes every open log cleanly (writes drained, synced, clean-shutdown markers), up to
    /// `CONCURRENT_LOG_OPENS_CLOSES` at once.
    pub async fn close(&self) {
        run_bounded(
            self.core.live_logs(),
            CONCURRENT_LOG_OPENS_CLOSES,
            |log| async move {
                if let Err(e) = log.close().await {
                    warn!(dir = %log.dir().display(), error = %e, "close failed");
                }
            },
        )
        .await;
        self.core.closed.set(true);
        self.core
            .sync_events
            .advance(self.core.sync_events.get() + 1);
    }

    /// Bytes in the batch cache and files open, for metrics and tests.
    pub fn cache_bytes(&self) -> usize {
        self.core.cache.borrow().bytes()
    }
    pub fn open_files(&self) -> usize {
        self.core.files.open_count()
    }
    /// Segment files closed to stay within `ShardOptions::max_open_files` (then opened again
    /// when used), since start-up.
    pub fn files_closed_for_limit(&self) -> u64 {
        self.core.files.closed_for_limit()
    }
    /// Latency of every group-commit fdatasync so far (metrics).
    /// Group-commit rounds run so far.
    pub fn group_commit_rounds(&self) -> u64 {
        self.core.sync_rounds.get()
    }

    pub fn fsync_latency(&self) -> LatencyHistogram {
        *self.core.fsync_latency.borrow()
    }
}

/// Group commit: each round syncs every log queued since the previous round started, all
/// concurrently, so N partitions asking at once cost about one fdatasync latency.
async fn group_commit<D: Disk>(core: Weak<ShardCore<D>>, events: Rc<Watermark>) {
    let mut seen = 0;
    loop {
        if events.wait_for(seen + 1).await.is_err() {
            return;
        }
        seen = events.get();
        let Some(core) = core.upgrade() else { return };
        if core.closed.get() && core.sync_queue.borrow().is_empty() {
            return;
        }
        let queued = std::mem::take(&mut *core.sync_queue.borrow_mut());
        if !queued.is_empty() {
            core.sync_rounds.set(core.sync_rounds.get() + 1);
        }
        drop(core);
        let tasks: Vec<_> = queued
            .iter()
            .filter_map(Weak::upgrade)
            .map(|inner| {
                let log = PartitionLog { inner };
                glommio::spawn_local(async move { log.sync_once().await })
            })
            .collect();
        for task in tasks {
            task.await;
        }
    }
}

/// Requests a sync for logs whose oldest unsynced data is older than their `flush.ms`.
async fn flush_ticker<D: Disk>(core: Weak<ShardCore<D>>) {
    loop {
        let interval = match core.upgrade() {
            Some(c) if !c.closed.get() => c.options.flush_check_interval_ms,
            _ => return,
        };
        glommio::timer::sleep(Duration::from_millis(interval.max(1))).await;
        let Some(c) = core.upgrade() else { return };
        let now = now_ms();
        for log in c.live_logs() {
            let flush_ms = log.inner.config.borrow().flush_ms;
            let due = log
                .inner
                .state
                .borrow()
                .oldest_unsynced_ms
                .is_some_and(|t| now.saturating_sub(t) >= flush_ms);
            if due {
                log.request_sync();
            }
        }
    }
}
