//! A partition's log: offsets, segments, and the append path up to "written" and "synced".
//!
//! Owns: offset assignment (in call order, from the log end offset), the one copy of each
//! batch into an aligned write buffer (`RecordBatch::copy_rewritten`), segment rolling, the
//! per-log write task that turns buffers into direct writes in offset order, the written and
//! synced marks, and what a failed write or sync does (the log goes offline for good; a full
//! disk gives the unwritten appends back instead).
//!
//! Concurrency: a log lives on one shard and is used only there. Several tasks may append at
//! once: each append copies its batches synchronously (no await between taking offsets and
//! copying), then waits for the written mark, which the single write task of the log moves
//! forward in offset order, so acknowledgements complete in offset order.
//! Never: awaits while holding a `RefCell` borrow; writes a page that a later write of the same
//! log could be racing (one write of a log is in flight at a time); reads the tail page back
//! from the disk to extend it (it stays in memory as the carry of the next buffer).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};

use corebus_wire::record::RecordBatch;
use tracing::{error, warn};

use super::batch_cache::CachedBatch;
use super::cleaner::CleanerLogState;
use super::config::{Durability, LogConfig, MessageTimestampType};
use super::disk::{Disk, DiskFile, OpenMode, align_up};
use super::error::{Result, StorageError};
use super::meta::{CLEAN_SHUTDOWN_FILE, remove_meta, write_meta};
use super::segment::Segment;
use super::shard::ShardCore;
use super::watermark::Watermark;
use super::writer::{Appender, Job, WriteJob};

/// What an append assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The LogAppendTime stamped into the batches, when the topic uses it.
    pub log_append_time: Option<i64>,
    pub log_start_offset: i64,
    /// What to wait on for this append (`wait_appended`, `sync_all`).
    pub ticket: AppendTicket,
}

/// An append's offsets as a wait needs them: the end, and how many give-backs of the log
/// came before they were assigned, so that a give-back that takes them back is seen even
/// when it happened before the wait began (see `watermark`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendTicket {
    /// The offset after the append.
    pub next: i64,
    rejections: u64,
}

pub(crate) struct LogState<D: Disk> {
    pub segments: BTreeMap<i64, Segment>,
    pub log_start_offset: i64,
    /// Next offset to assign (the log end offset, counting unwritten appends).
    pub next_offset: i64,
    pub appender: Appender<D::Buf>,
    pub jobs: VecDeque<Job<D::Buf>>,
    pub writer_running: bool,
    pub offline: Option<String>,
    pub closed: bool,
    /// Set while `truncate_to` runs: appends are refused.
    pub truncating: bool,
    /// The clean-shutdown marker of the previous close is still on disk: nothing has changed
    /// the active segment since open. It is removed (durably) before the first write or
    /// truncation, and a close that finds it still there has nothing to write, so idle logs
    /// cost no I/O to open or close.
    pub clean_marker_on_disk: bool,
    /// Records written since the last sync was issued (flush.messages).
    pub unsynced_records: i64,
    /// Wall clock of the oldest written-but-unsynced append (flush.ms).
    pub oldest_unsynced_ms: Option<i64>,
    pub sync_requested: bool,
    /// What the log cleaner knows of this log (checkpoint, swap under way).
    pub cleaner: CleanerLogState,
    /// Bumped whenever segments are replaced or removed: a read that looked a segment up
    /// before an await checks it to know its position still means the same file.
    pub generation: u64,
    /// Where each leader epoch's batches start (`epochs`).
    pub epochs: super::epochs::EpochCache,
}

impl<D: Disk> LogState<D> {
    pub(crate) fn active(&self) -> &Segment {
        // Invariant: a log always has at least one segment (open creates one).
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }
    pub(crate) fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }
    /// The segment holding `offset` (the last one whose base is at or below it).
    pub(crate) fn segment_for(&self, offset: i64) -> Option<&Segment> {
        self.segments.range(..=offset).next_back().map(|(_, s)| s)
    }
}

pub(crate) struct LogInner<D: Disk> {
    pub id: u64,
    pub dir: PathBuf,
    pub core: Rc<ShardCore<D>>,
    pub config: RefCell<LogConfig>,
    pub state: RefCell<LogState<D>>,
    /// Every offset below is written (O_DIRECT write completed): the high watermark.
    pub written: Watermark,
    /// Every offset below is synced (fdatasync completed).
    pub synced: Watermark,
    /// Every offset below is visible to consumers: the high watermark. It follows `written`
    /// while the log is its partition's only in-sync replica; a replicated partition's
    /// replication moves it (`PartitionLog::set_replicated`), never past `written`.
    pub high_watermark: Watermark,
    /// Whether replication, not `written`, moves the high watermark.
    pub replicated: std::cell::Cell<bool>,

    /// The leader epoch this log's own appends are stamped with (its partition's, as the
    /// replication layer last set it; 0 on a single node).
    pub leader_epoch: std::cell::Cell<i32>,
}

/// A handle to one partition's log. Cheap to clone; every clone is the same log.
pub struct PartitionLog<D: Disk> {
    pub(crate) inner: Rc<LogInner<D>>,
}

impl<D: Disk> Clone for PartitionLog<D> {
    fn clone(&self) -> Self {
        PartitionLog {
            inner: self.inner.clone(),
        }
    }
}

impl<D: Disk> PartitionLog<D> {
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
    pub fn log_start_offset(&self) -> i64 {
        self.inner.state.borrow().log_start_offset
    }
    /// Next offset to assign, counting appends not yet written.
    pub fn log_end_offset(&self) -> i64 {
        self.inner.state.borrow().next_offset
    }
    /// Offsets below are written (the log end offset as replicas and recovery know it).
    pub fn written_offset(&self) -> i64 {
        self.inner.written.get()
    }
    /// Offsets below are visible to consumers: the written offset while this log is its
    /// partition's only in-sync replica, else what replication last set.
    pub fn high_watermark(&self) -> i64 {
        self.inner.high_watermark.get()
    }
    /// Whether replication moves the high watermark (`set_replicated`).
    pub fn is_replicated(&self) -> bool {
        self.inner.replicated.get()
    }
    /// `true`: from now on only `advance_high_watermark` moves the high watermark (a leader
    /// with other in-sync replicas, or a follower). `false`: it follows the written offset
    /// again, and catches up with it at once.
    pub fn set_replicated(&self, replicated: bool) {
        self.inner.replicated.set(replicated);
        if !replicated {
            self.inner.high_watermark.advance(self.inner.written.get());
        }
    }
    /// Right after open, for a partition with other replicas: what this replica wrote before
    /// it stopped may be held by no other, so its high watermark starts from the one it
    /// checkpointed (`storage::hw_checkpoint`), never past what it recovered, or from the log
    /// start without a checkpoint; replication moves it on from there (the in-sync replicas'
    /// next fetches). Nothing waits on a log just opened.
    pub fn open_high_watermark(&self, checkpointed: Option<i64>) {
        self.inner.replicated.set(true);
        let start = self.inner.state.borrow().log_start_offset;
        let written = self.inner.written.get();
        let at = checkpointed.map_or(start, |hw| hw.clamp(start, written.max(start)));
        let err = StorageError::Closed {
            dir: self.inner.dir.clone(),
        };
        self.inner.high_watermark.reset(at, &err);
    }
    /// Moves the high watermark of a replicated log forward to `offset`, never past the
    /// written offset (a replica cannot expose what it has not written itself).
    pub fn advance_high_watermark(&self, offset: i64) {
        let to = offset.min(self.inner.written.get());
        self.inner.high_watermark.advance(to);
    }
    /// The leader epoch the partition's leader stamps its appends with (its current one).
    pub fn leader_epoch(&self) -> i32 {
        self.inner.leader_epoch.get()
    }
    /// Sets the partition's current leader epoch (the replication layer, from the metadata).
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.inner.leader_epoch.set(epoch.max(0));
    }
    /// This replica becomes the leader under `epoch`: its appends are stamped with it, and the
    /// epoch starts at the log end now, before any append (as Kafka's leader records it), so
    /// a follower asking where its own later epoch ends is answered from here.
    pub fn begin_leader_epoch(&self, epoch: i32) {
        let epoch = epoch.max(0);
        self.inner.leader_epoch.set(epoch);
        let mut state = self.inner.state.borrow_mut();
        let end = state.next_offset;
        state.epochs.assign(epoch, end);
    }
    /// The latest leader epoch of the log's batches (0 when all are epoch 0).
    pub fn latest_epoch(&self) -> i32 {
        self.inner.state.borrow().epochs.latest()
    }
    /// OffsetForLeaderEpoch's answer for `epoch`: the largest epoch at or below it and where
    /// the next one starts (the log end offset for the latest), as Kafka's leader gives it.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let state = self.inner.state.borrow();
        state.epochs.end_offset_for(epoch, state.next_offset)
    }

    /// Waits until the high watermark reaches `next_offset` (acks=all across replicas).
    pub async fn wait_high_watermark(&self, next_offset: i64) -> Result<()> {
        self.inner.high_watermark.wait_for(next_offset).await
    }
    /// Offsets below survive a power loss.
    pub fn synced_offset(&self) -> i64 {
        self.inner.synced.get()
    }
    pub fn config(&self) -> LogConfig {
        self.inner.config.borrow().clone()
    }
    /// Applies new topic settings (from the next append / retention check on).
    pub fn set_config(&self, config: LogConfig) {
        *self.inner.config.borrow_mut() = config;
    }
    /// Why the log is offline, if it is.
    pub fn offline_reason(&self) -> Option<String> {
        self.inner.state.borrow().offline.clone()
    }
    /// Bytes of batches on disk (DescribeLogDirs).
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .state
            .borrow()
            .segments
            .values()
            .map(|s| s.size)
            .sum()
    }
    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().segments.len()
    }
    /// The base offset of the active (last) segment: the cleaner never rewrites it.
    pub fn active_segment_base(&self) -> i64 {
        self.inner.state.borrow().active().base_offset
    }

    /// A segment file through the shard's fd cache.
    pub(crate) async fn segment_file(
        &self,
        path: &Path,
        mode: OpenMode,
    ) -> std::io::Result<Rc<D::File>> {
        self.inner.core.files.get(path, mode).await
    }

    /// `check_usable`, and no truncation under way (appends wait for none: they are refused).
    fn check_appendable(&self, state: &LogState<D>) -> Result<()> {
        self.check_usable(state)?;
        if state.truncating {
            return Err(StorageError::Closed {
                dir: self.inner.dir.clone(),
            });
        }
        Ok(())
    }

    pub(crate) fn check_usable(&self, state: &LogState<D>) -> Result<()> {
        if let Some(reason) = &state.offline {
            return Err(StorageError::Offline {
                dir: self.inner.dir.clone(),
                reason: reason.clone(),
            });
        }
        if state.closed {
            return Err(StorageError::Closed {
                dir: self.inner.dir.clone(),
            });
        }
        Ok(())
    }

    /// Appends validated batches with consecutive offsets from the log end offset, stamping
    /// LogAppendTime (`now_ms`) when the topic asks for it, and returns once the batches are
    /// `durability` (written: survives a process crash; synced: survives a power loss).
    /// On error nothing of this call is visible to readers.
    pub async fn append(
        &self,
        batches: &[RecordBatch],
        leader_epoch: i32,
        now_ms: i64,
        durability: Durability,
    ) -> Result<AppendInfo> {
        let info = self.append_nowait(batches, leader_epoch, now_ms)?;
        self.wait_appended(info.ticket).await?;
        if durability == Durability::Synced {
            self.sync_to(info.ticket.next).await?;
        }
        Ok(info)
    }

    /// The synchronous part of `append`: assigns offsets, copies the batches into the write
    /// buffer and starts the write task. The caller waits on `wait_written`/`sync_to`.
    pub fn append_nowait(
        &self,
        batches: &[RecordBatch],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        let config = self.inner.config.borrow().clone();
        let mut state = self.inner.state.borrow_mut();
        self.check_appendable(&state)?;
        if batches.is_empty() {
            return Err(StorageError::InvalidBatch(
                corebus_wire::record::RecordError::Truncated {
                    what: "record set",
                    needed: corebus_wire::record::BATCH_HEADER_BYTES,
                    available: 0,
                },
            ));
        }
        let limit_bytes = config.max_message_bytes.min(config.segment_bytes) as usize;
        if let Some(big) = batches.iter().find(|b| b.len() > limit_bytes) {
            return Err(StorageError::BatchTooLarge {
                batch_bytes: big.len(),
                limit_bytes,
            });
        }
        let log_append_time = (config.message_timestamp_type
            == MessageTimestampType::LogAppendTime)
            .then_some(now_ms);
        let base_offset = state.next_offset;
        state.epochs.assign(leader_epoch, base_offset);
        for batch in batches {
            let offset = state.next_offset;
            self.append_one(
                &mut state,
                &config,
                batch,
                offset,
                leader_epoch,
                log_append_time,
                now_ms,
            );
        }
        Ok(self.appended(state, base_offset, log_append_time))
    }

    /// What an append call appended (from `base_offset` to the log end), after starting the
    /// write task if it is not running.
    fn appended(
        &self,
        mut state: std::cell::RefMut<'_, LogState<D>>,
        base_offset: i64,
        log_append_time: Option<i64>,
    ) -> AppendInfo {
        let info = AppendInfo {
            base_offset,
            last_offset: state.next_offset - 1,
            log_append_time,
            log_start_offset: state.log_start_offset,
            ticket: AppendTicket {
                next: state.next_offset,
                rejections: self.inner.written.rejections(),
            },
        };
        let start_writer = !state.writer_running;
        state.writer_running = true;
        // glommio may poll a spawned task right away: no borrow may be held across the spawn.
        drop(state);
        if start_writer {
            self.spawn_writer();
        }
        info
    }

    /// Appends a replica's copy of the leader's batches, byte for byte: each keeps the base
    /// offset and leader epoch the leader gave it (a base offset past the log end leaves a gap,
    /// as compaction does on the leader), and no timestamp is stamped. Every batch's CRC is
    /// checked and its base offset must not go back; a refused call appends nothing. Returns
    /// without waiting for the write, like `append_nowait`.
    pub fn append_replica(&self, batches: &[RecordBatch], now_ms: i64) -> Result<AppendInfo> {
        let config = self.inner.config.borrow().clone();
        let mut state = self.inner.state.borrow_mut();
        self.check_appendable(&state)?;
        let Some(first) = batches.first() else {
            return Err(StorageError::InvalidBatch(
                corebus_wire::record::RecordError::Truncated {
                    what: "record set",
                    needed: corebus_wire::record::BATCH_HEADER_BYTES,
                    available: 0,
                },
            ));
        };
        let mut next = state.next_offset;
        for batch in batches {
            batch.verify_crc().map_err(StorageError::InvalidBatch)?;
            if batch.base_offset() < next || batch.last_offset_delta() < 0 {
                return Err(StorageError::ReplicaOffset {
                    dir: self.inner.dir.clone(),
                    base_offset: batch.base_offset(),
                    log_end_offset: next,
                });
            }
            next = batch.base_offset() + i64::from(batch.last_offset_delta()) + 1;
        }
        let limit_bytes = config.segment_bytes as usize;
        if let Some(big) = batches.iter().find(|b| b.len() > limit_bytes) {
            return Err(StorageError::BatchTooLarge {
                batch_bytes: big.len(),
                limit_bytes,
            });
        }
        let base_offset = first.base_offset();
        for batch in batches {
            let epoch = batch.partition_leader_epoch();
            state.epochs.assign(epoch, batch.base_offset());
            self.append_one(
                &mut state,
                &config,
                batch,
                batch.base_offset(),
                epoch,
                None,
                now_ms,
            );
        }
        Ok(self.appended(state, base_offset, None))
    }

    #[allow(clippy::too_many_arguments)]
    fn append_one(
        &self,
        state: &mut LogState<D>,
        config: &LogConfig,
        batch: &RecordBatch,
        offset: i64,
        leader_epoch: i32,
        log_append_time: Option<i64>,
        now_ms: i64,
    ) {
        let len = batch.len();
        let next = offset + i64::from(batch.last_offset_delta()) + 1;
        let active = state.active();
        let too_old = active
            .first_append_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= config.segment_ms);
        let too_far = active.relative(next).is_none();
        if active.size > 0
            && (active.size + len as u64 > config.segment_bytes || too_old || too_far)
        {
            self.roll(state, offset);
        }
        let coalesce = state
            .writer_running
            .then_some(self.inner.core.options.coalesce_buffer_bytes);
        if let Some(job) = state
            .appender
            .make_room(&self.inner.core.disk, len, coalesce)
        {
            state.jobs.push_back(Job::Write(job));
        }
        let (dst, start) = state.appender.slot(len);
        batch.copy_rewritten(dst, offset, leader_epoch, log_append_time);
        state.appender.record(offset, next, start, len);
        let max_timestamp = log_append_time.unwrap_or_else(|| batch.max_timestamp());
        let interval = config.index_interval_bytes;
        let seg = state.active_mut();
        let position = seg.size as u32;
        let relative = seg.relative(offset).unwrap_or(0);
        if let Some(index) = seg.index.as_mut() {
            index.on_batch(
                relative,
                offset,
                position,
                len as u64,
                max_timestamp,
                interval,
            );
        }
        seg.size += len as u64;
        seg.next_offset = next;
        seg.first_append_ms.get_or_insert(now_ms);
        state.next_offset = next;
    }

    /// Seals the active segment and starts a new one at `base_offset`. The old segment's
    /// pending bytes are written first, then synced and its index written (`Job::Seal`),
    /// before the first write to the new file: so every segment but the last is always
    /// synced and indexed, and recovery only has to scan the last one.
    fn roll(&self, state: &mut LogState<D>, base_offset: i64) {
        if let Some(job) = state.appender.seal() {
            state.jobs.push_back(Job::Write(job));
        }
        let old_base = state.active().base_offset;
        state.jobs.push_back(Job::Seal(old_base));
        let mut seg = Segment::new(&self.inner.dir, base_offset);
        seg.index = Some(super::index::SegmentIndex::new());
        let path = seg.log_path.clone();
        state.segments.insert(base_offset, seg);
        state.appender = Appender::new(base_offset, path, 0, Vec::new());
    }

    /// Waits until every offset below `next_offset` is written.
    pub async fn wait_written(&self, next_offset: i64) -> Result<()> {
        self.inner.written.wait_for(next_offset).await
    }

    /// Waits until an append is written; refused when its offsets were given back (a full
    /// disk), also when that happened before this wait began.
    pub async fn wait_appended(&self, ticket: AppendTicket) -> Result<()> {
        self.inner
            .written
            .wait_for_since(ticket.next, ticket.rejections)
            .await
    }

    /// A ticket for everything appended so far (the log end offset), for a caller that waits
    /// on the log's end rather than on one append of its own.
    pub fn end_ticket(&self) -> AppendTicket {
        AppendTicket {
            next: self.inner.state.borrow().next_offset,
            rejections: self.inner.written.rejections(),
        }
    }

    /// Waits until every offset below `next_offset` is synced, asking the shard's group
    /// commit for an fdatasync if none is under way.
    pub async fn sync_to(&self, next_offset: i64) -> Result<()> {
        self.inner.written.wait_for(next_offset).await?;
        if self.inner.synced.get() >= next_offset {
            return Ok(());
        }
        self.request_sync();
        self.inner.synced.wait_for(next_offset).await
    }

    /// Each `(log, next_offset)` durable up to `next_offset`, waiting for one group-commit
    /// round: every write is awaited first, then every sync is requested at once, so the
    /// partitions of one request share the next round (awaiting `sync_to` on each in turn
    /// would pay one round per partition, each queued only after the previous one ended).
    /// One result per target, in order.
    pub async fn sync_all(targets: &[(&PartitionLog<D>, AppendTicket)]) -> Vec<Result<()>> {
        let mut written = Vec::with_capacity(targets.len());
        for (log, ticket) in targets {
            written.push(log.wait_appended(*ticket).await);
        }
        for ((log, ticket), w) in targets.iter().zip(&written) {
            if w.is_ok() && log.inner.synced.get() < ticket.next {
                log.request_sync();
            }
        }
        let mut out = Vec::with_capacity(targets.len());
        for ((log, ticket), w) in targets.iter().zip(written) {
            out.push(match w {
                Ok(()) => log.inner.synced.wait_for(ticket.next).await,
                Err(e) => Err(e),
            });
        }
        out
    }

    /// Queues this log for the shard's next group fdatasync (no-op when already queued).
    pub(crate) fn request_sync(&self) {
        let mut state = self.inner.state.borrow_mut();
        if state.sync_requested || state.offline.is_some() {
            return;
        }
        state.sync_requested = true;
        drop(state);
        self.inner.core.queue_sync(Rc::downgrade(&self.inner));
    }

    /// One fdatasync covering everything written when it was issued (run by the shard's
    /// group commit, concurrently with other logs' syncs).
    pub(crate) async fn sync_once(&self) {
        let (target, path, records) = {
            let mut state = self.inner.state.borrow_mut();
            state.sync_requested = false;
            if state.offline.is_some() {
                return;
            }
            let target = self.inner.written.get();
            if self.inner.synced.get() >= target {
                return;
            }
            let Some(seg) = state.segment_for(target - 1) else {
                return;
            };
            (target, seg.log_path.clone(), state.unsynced_records)
        };
        let result = match self.segment_file(&path, OpenMode::Existing).await {
            Ok(file) => {
                let started = std::time::Instant::now();
                let synced = file.fdatasync().await;
                self.inner.core.record_fsync(started.elapsed());
                synced
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                {
                    let mut state = self.inner.state.borrow_mut();
                    state.unsynced_records -= records;
                    if state.unsynced_records <= 0 && self.inner.written.get() == target {
                        state.oldest_unsynced_ms = None;
                    }
                }
                self.inner.synced.advance(target);
            }
            Err(e) => self.go_offline(format!("fdatasync of {} failed: {e}", path.display())),
        }
    }

    /// The log can no longer be trusted: refuse everything until a restart runs recovery.
    pub(crate) fn go_offline(&self, reason: String) {
        error!(dir = %self.inner.dir.display(), %reason, "log goes offline");
        let err = StorageError::Offline {
            dir: self.inner.dir.clone(),
            reason: reason.clone(),
        };
        {
            let mut state = self.inner.state.borrow_mut();
            state.offline = Some(reason);
            state.jobs.clear();
        }
        self.inner.written.fail(&err);
        self.inner.synced.fail(&err);
        self.inner.high_watermark.fail(&err);
        self.inner.core.cache.borrow_mut().remove_log(self.inner.id);
    }

    fn spawn_writer(&self) {
        let log = self.clone();
        glommio::spawn_local(async move { log.run_writer().await }).detach();
    }

    /// The write task: runs while jobs are pending, one direct write at a time.
    async fn run_writer(self) {
        loop {
            let job = {
                let mut state = self.inner.state.borrow_mut();
                if state.offline.is_some() {
                    state.writer_running = false;
                    return;
                }
                match state.jobs.pop_front() {
                    Some(job) => job,
                    None => match state.appender.seal() {
                        Some(job) => Job::Write(job),
                        None => {
                            state.writer_running = false;
                            return;
                        }
                    },
                }
            };
            let ok = match job {
                Job::Write(job) => self.write(job).await,
                Job::Seal(base) => self.seal_segment(base).await,
            };
            if !ok {
                let mut state = self.inner.state.borrow_mut();
                // Appends that arrived after a give-back need a writer again.
                let more = state.offline.is_none()
                    && (state.appender.has_data() || !state.jobs.is_empty());
                state.writer_running = more;
                drop(state);
                if more {
                    self.spawn_writer();
                }
                return;
            }
        }
    }

    /// Performs one write job. False when the log went offline or gave the appends back.
    async fn write(&self, job: WriteJob<D::Buf>) -> bool {
        let core = &self.inner.core;
        if let Err(e) = self.remove_clean_marker().await {
            return self.write_failed(&job, e);
        }
        if let Err(e) = self.persist_epochs().await {
            return self.write_failed(&job, e);
        }
        let file = match core
            .files
            .get(&job.log_path, OpenMode::CreateIfMissing)
            .await
        {
            Ok(f) => f,
            Err(e) => return self.write_failed(&job, e),
        };
        let preallocated = {
            let state = self.inner.state.borrow();
            state
                .segments
                .get(&job.segment_base)
                .map_or(0, |s| s.preallocated)
        };
        if job.end_size > preallocated {
            let target = align_up(job.end_size) + core.options.preallocate_step(preallocated);
            if let Err(e) = file.preallocate(target).await {
                // Not every filesystem can preallocate; only a full disk matters here.
                if e.kind() == std::io::ErrorKind::StorageFull {
                    return self.write_failed(&job, e);
                }
            }
            if let Some(seg) = self
                .inner
                .state
                .borrow_mut()
                .segments
                .get_mut(&job.segment_base)
            {
                seg.preallocated = seg.preallocated.max(target);
            }
        }
        self.preallocate_ahead(&job, &file);
        let expected = job.write_len();
        match file.write_at(job.buf.clone(), job.pos).await {
            Ok(n) if n == expected => {}
            Ok(n) => {
                let e = std::io::Error::other(format!("short direct write: {n} of {expected}"));
                return self.write_failed(&job, e);
            }
            Err(e) => return self.write_failed(&job, e),
        }
        self.on_written(job);
        true
    }

    /// Once a write passes half of the reserved extent, reserves the next step in the
    /// background, so the write path rarely waits for an fallocate. A failure is ignored here:
    /// the write that needs the space then preallocates itself and sees the full disk.
    fn preallocate_ahead(&self, job: &WriteJob<D::Buf>, file: &Rc<D::File>) {
        let target = {
            let mut state = self.inner.state.borrow_mut();
            let Some(seg) = state.segments.get_mut(&job.segment_base) else {
                return;
            };
            let step = self.inner.core.options.preallocate_step(seg.preallocated);
            if step == 0 || seg.preallocating || job.end_size + step / 2 <= seg.preallocated {
                return;
            }
            seg.preallocating = true;
            seg.preallocated + step
        };
        let (log, file, base) = (self.clone(), file.clone(), job.segment_base);
        glommio::spawn_local(async move {
            let done = file.preallocate(target).await;
            let mut state = log.inner.state.borrow_mut();
            if let Some(seg) = state.segments.get_mut(&base) {
                seg.preallocating = false;
                if done.is_ok() {
                    seg.preallocated = seg.preallocated.max(target);
                }
            }
        })
        .detach();
    }

    /// Waits for a background fallocate of this segment to finish, so a truncation to the
    /// exact size is not followed by blocks reserved past it (they would leak until deletion).
    pub(crate) async fn wait_preallocation(&self, base: i64) {
        let busy = |log: &Self| {
            let state = log.inner.state.borrow();
            state.segments.get(&base).is_some_and(|s| s.preallocating)
        };
        while busy(self) {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    fn on_written(&self, job: WriteJob<D::Buf>) {
        let now = super::shard::now_ms();
        {
            let mut state = self.inner.state.borrow_mut();
            if let Some(seg) = state.segments.get_mut(&job.segment_base) {
                seg.written_size = seg.written_size.max(job.end_size);
            }
            let records = job.next_offset - job.first_offset;
            state.unsynced_records += records;
            state.oldest_unsynced_ms.get_or_insert(now);
            let mut cache = self.inner.core.cache.borrow_mut();
            for b in &job.batches {
                cache.insert(
                    self.inner.id,
                    CachedBatch {
                        base_offset: b.base_offset,
                        next_offset: b.next_offset,
                        buf: job.buf.clone(),
                        start: b.start,
                        len: b.len,
                    },
                );
            }
        }
        self.inner.written.advance(job.next_offset);
        if !self.inner.replicated.get() {
            self.inner.high_watermark.advance(job.next_offset);
        }
        let flush_messages = self.inner.config.borrow().flush_messages;
        if self.inner.state.borrow().unsynced_records >= flush_messages {
            self.request_sync();
        }
    }

    /// A write failed. A full disk gives back every unwritten append (their callers get
    /// `DiskFull`, the log stays online and takes appends again when space returns); any
    /// other error makes the log offline.
    /// Removes the previous close's clean-shutdown marker, durably, if it is still on disk:
    /// from here on the active segment changes, so a crash must be recovered by a scan.
    pub(crate) async fn remove_clean_marker(&self) -> std::io::Result<()> {
        if !self.inner.state.borrow().clean_marker_on_disk {
            return Ok(());
        }
        remove_meta(&self.inner.core.disk, &self.inner.dir, CLEAN_SHUTDOWN_FILE).await?;
        self.inner.state.borrow_mut().clean_marker_on_disk = false;
        Ok(())
    }

    /// Writes the leader epochs file if the cache changed since it was last written (before
    /// a write that may carry a batch of a new epoch, and after a truncation).
    pub(crate) async fn persist_epochs(&self) -> std::io::Result<()> {
        let Some((payload, version)) = self.inner.state.borrow().epochs.unpersisted() else {
            return Ok(());
        };
        write_meta(
            &self.inner.core.disk,
            &self.inner.dir,
            super::epochs::EPOCHS_FILE,
            &payload,
        )
        .await?;
        self.inner.state.borrow_mut().epochs.mark_persisted(version);
        Ok(())
    }

    fn write_failed(&self, job: &WriteJob<D::Buf>, e: std::io::Error) -> bool {
        if e.kind() == std::io::ErrorKind::StorageFull {
            warn!(dir = %self.inner.dir.display(), "disk full: giving back unwritten appends");
            self.give_back_unwritten(job);
        } else {
            self.go_offline(format!("write to {} failed: {e}", job.log_path.display()));
        }
        false
    }

    /// Rolls the in-memory log back to the written mark: drops pending buffers, segments that
    /// hold no written data, and index entries of unwritten batches. `failed` is the job that
    /// was not written; its buffer holds the tail page to continue from.
    fn give_back_unwritten(&self, failed: &WriteJob<D::Buf>) {
        let written = self.inner.written.get();
        let err = StorageError::DiskFull {
            dir: self.inner.dir.clone(),
        };
        let failed_base = failed.segment_base;
        {
            let mut state = self.inner.state.borrow_mut();
            // Seal jobs of earlier segments stay: their data is written and complete.
            state
                .jobs
                .retain(|j| matches!(j, Job::Seal(b) if *b < failed_base));
            // Segments after the failed one hold no written byte (jobs run in order).
            state.segments.retain(|&b, _| b <= failed_base);
            let cache_log = self.inner.id;
            let seg = state.active_mut();
            let size = failed.pos + failed.carry_len as u64;
            seg.size = size;
            seg.next_offset = written.max(seg.base_offset);
            if let Some(rel) = seg.relative(written)
                && let Some(ix) = seg.index.as_mut()
            {
                ix.truncate(rel);
            }
            let path = seg.log_path.clone();
            state.appender = Appender::new(failed_base, path, size, failed.carry());
            state.next_offset = written;
            self.inner
                .core
                .cache
                .borrow_mut()
                .truncate(cache_log, written);
        }
        self.inner.written.reject_above(written, &err);
        self.inner.high_watermark.reject_above(written, &err);
    }

    /// Syncs a segment that takes no more appends and writes its index files.
    async fn seal_segment(&self, base: i64) -> bool {
        let (path, index, size) = {
            let mut state = self.inner.state.borrow_mut();
            let Some(seg) = state.segments.get_mut(&base) else {
                return true;
            };
            let base_offset = seg.base_offset;
            if let Some(ix) = seg.index.as_mut() {
                ix.seal(base_offset);
            }
            (seg.log_path.clone(), seg.index.clone(), seg.written_size)
        };
        let file = match self.segment_file(&path, OpenMode::CreateIfMissing).await {
            Ok(f) => f,
            Err(e) => {
                self.go_offline(format!("opening {} to seal it: {e}", path.display()));
                return false;
            }
        };
        self.wait_preallocation(base).await;
        // The file's size becomes the data's exact end (no page padding, no preallocated
        // blocks): at open, a sealed segment's size is its file size.
        if let Err(e) = file.truncate(size).await {
            self.go_offline(format!("trimming sealed {} failed: {e}", path.display()));
            return false;
        }
        if let Err(e) = file.fdatasync().await {
            self.go_offline(format!(
                "fdatasync of sealed {} failed: {e}",
                path.display()
            ));
            return false;
        }
        if let Some(index) = index {
            self.write_index_files(base, &index).await;
        }
        if let Some(seg) = self.inner.state.borrow_mut().segments.get_mut(&base) {
            seg.sealed = true;
        }
        true
    }
}

/// Weak handle kept by the shard's group commit queue.
pub(crate) type WeakLog<D> = Weak<LogInner<D>>;
