//! Cleaning one log: the offset map pass, the rewrite of each segment group, the swap, the
//! checkpoint.
//!
//! Owns the order of a clean:
//! 1. assess the log (`select`); the cleanable range ends at the first uncleanable offset;
//! 2. one pass from the first sealed segment to that end: idempotent producers' last batches
//!    everywhere, and every key of the dirty range into the offset map until the map is
//!    full (`log.cleaner.dedupe.buffer.size`); the map's end is where this clean stops;
//! 3. the sealed segments below the map's end, grouped into runs of at most `segment.bytes`
//!    (Kafka's grouping, so a compacted log does not keep ever more, ever smaller segments),
//!    are each rewritten through `filter` into one cleaned copy with a fresh index, and
//!    swapped in (`swap`) unless nothing changed;
//! 4. the new checkpoint (first dirty offset = the map's end, earliest kept tombstone
//!    horizon) is written.
//!
//! Every batch read is CRC-checked before it is rewritten (a rewrite computes a fresh CRC and
//! would otherwise launder a corrupt batch); a log whose data cannot be read is left alone
//! until a restart (`uncleanable`), as Kafka marks such partitions.
//!
//! Concurrency: the clean reads segments through the shard's fd cache while appends,
//! fetches, retention and DeleteRecords go on. Nothing changes in the log's state until the
//! swap, which first checks, in one synchronous step, that every segment of the group is
//! still there unchanged and that no truncation or close is under way; otherwise the cleaned
//! copy is thrown away. Between commit and end of a swap, retention, truncation and close
//! wait for it (`CleanerLogState::swapping`).
//! Never: holds a `RefCell` borrow across an await; writes the checkpoint before the swap.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use corebus_wire::record::{BatchHeader, DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES, RecordBatch};
use tracing::warn;

use super::CleanerOptions;
use super::checkpoint::{self, Checkpoint};
use super::filter::{FilterContext, filter_batch};
use super::offset_map::OffsetMap;
use super::select::{Dirtiness, Rules, SegmentSummary, assess};
use super::swap::{self, CLEANED_SUFFIX, SWAP_SUFFIX};
use super::throttle::Throttle;
use crate::storage::disk::{AlignedBuf, Disk, DiskFile, OpenMode, align_down, align_up};
use crate::storage::error::{Result, StorageError};
use crate::storage::index::SegmentIndex;
use crate::storage::log::{LogState, PartitionLog};
use crate::storage::scan::{ScanEnd, scan};
use crate::storage::segment::Segment;

/// Attribute bit 5 of a batch: a control batch (transaction marker), never compacted here.
const CONTROL_BIT: i16 = 0x20;

/// What one clean did.
#[derive(Clone, Debug, Default)]
pub struct CleanStats {
    pub dir: PathBuf,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub batches_dropped: u64,
    pub segments_before: usize,
    pub segments_after: usize,
    /// The new cleaner checkpoint.
    pub first_dirty_offset: i64,
}

/// A sealed segment as the clean found it.
#[derive(Clone, Debug)]
struct Source {
    base: i64,
    next: i64,
    size: u64,
    path: PathBuf,
}

/// Where a piece of a segment scan ended.
enum PieceEnd {
    /// Paused at this position; more batches follow.
    More(u64),
    /// Reached the end of the range.
    Done,
    /// The visitor asked to stop.
    Stopped,
}

/// Visits the batches of `[pos, end)` of `file` (CRC-checked) until about `piece_bytes` were
/// visited, so the caller can throttle and yield between pieces. Returns the end and the bytes
/// visited; an invalid batch is an error.
async fn scan_piece<F: DiskFile>(
    file: &F,
    pos: u64,
    end: u64,
    piece_bytes: usize,
    mut visit: impl FnMut(&BatchHeader, &[u8]) -> ControlFlow<()>,
) -> std::io::Result<std::result::Result<(PieceEnd, u64), String>> {
    let mut consumed = 0u64;
    let mut paused = false;
    let stop = scan(file, pos, end, piece_bytes, true, |h, _, bytes| {
        if consumed >= piece_bytes as u64 {
            paused = true;
            return ControlFlow::Break(());
        }
        if visit(h, bytes).is_break() {
            return ControlFlow::Break(());
        }
        consumed += bytes.len() as u64;
        ControlFlow::Continue(())
    })
    .await?;
    Ok(match stop {
        ScanEnd::End(_) => Ok((PieceEnd::Done, consumed)),
        ScanEnd::Stopped(p) if paused => Ok((PieceEnd::More(p), consumed)),
        ScanEnd::Stopped(_) => Ok((PieceEnd::Stopped, consumed)),
        ScanEnd::Invalid { position, why } => Err(format!("byte {position}: {why}")),
    })
}

/// Accumulates the cleaned segment and writes it in page-aligned direct writes.
struct SegmentWriter {
    pending: Vec<u8>,
    /// File position of `pending[0]` (page aligned).
    flushed: u64,
    chunk_bytes: usize,
}

impl SegmentWriter {
    fn new(chunk_bytes: usize) -> SegmentWriter {
        SegmentWriter {
            pending: Vec::new(),
            flushed: 0,
            chunk_bytes: chunk_bytes.max(crate::storage::disk::PAGE_BYTES),
        }
    }

    fn len(&self) -> u64 {
        self.flushed + self.pending.len() as u64
    }

    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    async fn write<D: Disk>(
        disk: &D,
        file: &D::File,
        bytes: &[u8],
        pos: u64,
    ) -> std::io::Result<()> {
        let len = align_up(bytes.len() as u64) as usize;
        let mut buf = disk.alloc(len);
        buf.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
        buf.as_mut_slice()[bytes.len()..].fill(0);
        let n = file.write_at(Rc::new(buf), pos).await?;
        if n != len {
            return Err(std::io::Error::other(format!(
                "short direct write: {n} of {len}"
            )));
        }
        Ok(())
    }

    /// Writes the whole pages pending once a chunk's worth is there. Returns bytes written.
    async fn flush_full<D: Disk>(&mut self, disk: &D, file: &D::File) -> std::io::Result<u64> {
        if self.pending.len() < self.chunk_bytes {
            return Ok(0);
        }
        let full = align_down(self.pending.len() as u64) as usize;
        Self::write(disk, file, &self.pending[..full], self.flushed).await?;
        self.pending.drain(..full);
        self.flushed += full as u64;
        Ok(full as u64)
    }

    /// Writes the rest, trims the file to the exact size and syncs it. Returns the size.
    async fn finish<D: Disk>(&mut self, disk: &D, file: &D::File) -> std::io::Result<u64> {
        let total = self.len();
        if !self.pending.is_empty() {
            Self::write(disk, file, &self.pending, self.flushed).await?;
        }
        file.truncate(total).await?;
        file.fdatasync().await?;
        Ok(total)
    }
}

/// Splits `sources` into runs whose total size fits one segment (and whose offsets fit the
/// index's 32-bit relative offsets). Every run has at least one segment.
fn group_by_size(sources: &[Source], segment_bytes: u64) -> Vec<Vec<Source>> {
    let mut groups: Vec<Vec<Source>> = Vec::new();
    let mut bytes = 0u64;
    for s in sources {
        let fits = groups.last().is_some_and(|g| {
            bytes + s.size <= segment_bytes && s.next - g[0].base <= i64::from(u32::MAX)
        });
        if fits {
            bytes += s.size;
            if let Some(g) = groups.last_mut() {
                g.push(s.clone());
            }
        } else {
            bytes = s.size;
            groups.push(vec![s.clone()]);
        }
    }
    groups
}

fn io_err(dir: &Path, what: &str, e: std::io::Error) -> StorageError {
    StorageError::io(format!("{what} ({})", dir.display()), e)
}

impl<D: Disk> PartitionLog<D> {
    /// Sealed segments but the active one, oldest first, stopping at the first still
    /// being sealed.
    fn sealed_sources(state: &LogState<D>) -> Vec<Source> {
        let n = state.segments.len();
        state
            .segments
            .values()
            .take(n.saturating_sub(1))
            .take_while(|s| s.sealed)
            .map(|s| Source {
                base: s.base_offset,
                next: s.next_offset,
                size: s.size,
                path: s.log_path.clone(),
            })
            .collect()
    }

    /// Cheap test (no I/O) whether this log may have something to clean: it compacts and
    /// has a sealed segment past its checkpoint, or a kept tombstone's horizon has passed.
    pub(crate) fn might_need_cleaning(&self, now_ms: i64) -> bool {
        if !self.inner.config.borrow().cleanup_policy.compacts() {
            return false;
        }
        let st = self.inner.state.borrow();
        if st.offline.is_some() || st.closed || st.truncating || st.cleaner.uncleanable.is_some() {
            return false;
        }
        if st.cleaner.tombstone_horizon_ms.is_some_and(|h| h <= now_ms) {
            return true;
        }
        // Segments are in offset order: the newest sealed one has the largest next offset.
        st.segments
            .values()
            .rev()
            .nth(1)
            .is_some_and(|s| s.sealed && s.next_offset > st.cleaner.first_dirty_offset)
    }

    /// The log's cleanable state and rules; None when it does not compact or cannot be
    /// cleaned. Loads the indexes of dirty segments (their timestamps decide the lag rules).
    pub(crate) async fn dirtiness(&self, now_ms: i64) -> Result<Option<(Dirtiness, Rules)>> {
        let config = self.config();
        if !config.cleanup_policy.compacts() {
            return Ok(None);
        }
        let (sources, first_dirty, horizon) = {
            let st = self.inner.state.borrow();
            self.check_usable(&st)?;
            if st.cleaner.uncleanable.is_some() || st.truncating {
                return Ok(None);
            }
            let first_base = st.segments.keys().next().copied().unwrap_or(0);
            (
                Self::sealed_sources(&st),
                st.cleaner.first_dirty_offset.max(first_base),
                st.cleaner.tombstone_horizon_ms,
            )
        };
        let mut summaries = Vec::with_capacity(sources.len());
        for s in &sources {
            let (mut max_timestamp, mut first_batch_timestamp) = (-1, -1);
            if s.next > first_dirty {
                self.ensure_index(s.base).await?;
                let st = self.inner.state.borrow();
                if let Some(ix) = st.segments.get(&s.base).and_then(|g| g.index.as_ref()) {
                    max_timestamp = ix.max_timestamp;
                    first_batch_timestamp = ix.first_batch_timestamp();
                }
            }
            summaries.push(SegmentSummary {
                base_offset: s.base,
                next_offset: s.next,
                size_bytes: s.size,
                max_timestamp,
                first_batch_timestamp,
            });
        }
        let rules = Rules {
            min_cleanable_dirty_ratio_permille: config.min_cleanable_dirty_ratio_permille,
            min_compaction_lag_ms: config.min_compaction_lag_ms,
            max_compaction_lag_ms: config.max_compaction_lag_ms,
        };
        let d = assess(&summaries, first_dirty, &rules, horizon, now_ms);
        Ok(Some((d, rules)))
    }

    /// Cleans whatever is cleanable now (the lag rules apply, the dirty ratio does not: the
    /// shard's cleaner checks that before it calls this). None when there was nothing to do
    /// or a concurrent change (retention, truncation, close) made the clean give up.
    pub async fn compact(
        &self,
        now_ms: i64,
        options: &CleanerOptions,
    ) -> Result<Option<CleanStats>> {
        let Some((d, _)) = self.dirtiness(now_ms).await? else {
            return Ok(None);
        };
        if d.first_uncleanable_offset <= d.first_dirty_offset && !d.due {
            return Ok(None);
        }
        let result = self.compact_range(now_ms, options, d).await;
        if let Err(StorageError::Corrupt { what, .. }) = &result {
            warn!(dir = %self.inner.dir.display(), reason = %what, "log is uncleanable until a restart");
            self.inner.state.borrow_mut().cleaner.uncleanable = Some(what.clone());
        }
        result
    }

    async fn open_source(&self, src: &Source) -> Result<Rc<D::File>> {
        self.segment_file(&src.path, OpenMode::Existing)
            .await
            .map_err(|e| io_err(&self.inner.dir, "cleaner opening a segment", e))
    }

    fn corrupt(&self, what: String) -> StorageError {
        StorageError::Corrupt {
            dir: self.inner.dir.clone(),
            what,
        }
    }

    async fn compact_range(
        &self,
        now_ms: i64,
        options: &CleanerOptions,
        d: Dirtiness,
    ) -> Result<Option<CleanStats>> {
        let config = self.config();
        let sources = Self::sealed_sources(&self.inner.state.borrow());
        let segments_before = self.segment_count();
        let first_dirty = d.first_dirty_offset;
        let limit = d.first_uncleanable_offset;
        let mut throttle = Throttle::new(options.io_max_bytes_per_second);
        let mut stats = CleanStats {
            dir: self.inner.dir.clone(),
            segments_before,
            ..CleanStats::default()
        };
        // A fresh random seed per clean (std's per-process random keys, stepped per
        // RandomState): nobody can pick keys that collide in the map.
        let seed = std::collections::hash_map::RandomState::new().hash_one(self.inner.id);
        let mut map = OffsetMap::new(options.dedupe_buffer_bytes, seed);
        let mut producers: HashMap<i64, i64> = HashMap::new();
        let mut map_end = first_dirty;
        'segments: for src in sources.iter().filter(|s| s.base < limit) {
            let file = self.open_source(src).await?;
            let mut pos = 0;
            loop {
                let mut bad = None;
                let piece = scan_piece(
                    &*file,
                    pos,
                    src.size,
                    options.io_buffer_bytes,
                    |h, bytes| {
                        if h.base_offset >= limit {
                            return ControlFlow::Break(());
                        }
                        if h.producer_id >= 0 {
                            producers.insert(h.producer_id, h.base_offset);
                        }
                        if h.next_offset() <= first_dirty {
                            return ControlFlow::Continue(());
                        }
                        if h.attributes & CONTROL_BIT != 0 {
                            map_end = h.next_offset();
                            return ControlFlow::Continue(());
                        }
                        let count = h.record_count.max(0) as usize;
                        if map.len() > 0 && !map.has_room_for(count) {
                            return ControlFlow::Break(()); // full: clean up to here
                        }
                        let records =
                            RecordBatch::parse(Bytes::copy_from_slice(bytes)).and_then(|b| {
                                b.records_with_limit(DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES)
                            });
                        let records = match records {
                            Ok(r) => r,
                            Err(e) => {
                                bad = Some(format!("batch at offset {}: {e}", h.base_offset));
                                return ControlFlow::Break(());
                            }
                        };
                        for r in records {
                            match r {
                                Ok(r) => {
                                    if let Some(key) = r.key.as_deref() {
                                        map.put(key, h.base_offset + i64::from(r.offset_delta));
                                    }
                                }
                                Err(e) => {
                                    bad = Some(format!("record in batch {}: {e}", h.base_offset));
                                    return ControlFlow::Break(());
                                }
                            }
                        }
                        map_end = h.next_offset();
                        ControlFlow::Continue(())
                    },
                )
                .await
                .map_err(|e| io_err(&self.inner.dir, "cleaner reading a segment", e))?;
                if let Some(why) = bad {
                    return Err(self.corrupt(why));
                }
                let (end, bytes) =
                    piece.map_err(|why| self.corrupt(format!("{}: {why}", src.path.display())))?;
                stats.bytes_read += bytes;
                throttle.account(bytes).await;
                glommio::yield_if_needed().await;
                match end {
                    PieceEnd::More(p) => pos = p,
                    PieceEnd::Done => break,
                    PieceEnd::Stopped => break 'segments,
                }
            }
        }
        let chosen: Vec<Source> = sources.into_iter().filter(|s| s.base < map_end).collect();
        if chosen.is_empty() {
            return Ok(None);
        }
        let cx = FilterContext {
            map: &map,
            map_end,
            now_ms,
            delete_retention_ms: config.delete_retention_ms,
            last_batch_of_producer: &producers,
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES,
        };
        let mut horizon: Option<i64> = None;
        for group in group_by_size(&chosen, config.segment_bytes) {
            let Some(h) = self
                .clean_group(&group, &cx, options, &mut throttle, &mut stats)
                .await?
            else {
                return Ok(None); // the log changed under the clean; try again later
            };
            horizon = match (horizon, h) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let new = {
            let mut st = self.inner.state.borrow_mut();
            st.cleaner.first_dirty_offset = st.cleaner.first_dirty_offset.max(map_end);
            st.cleaner.tombstone_horizon_ms = horizon;
            Checkpoint {
                first_dirty_offset: st.cleaner.first_dirty_offset,
                tombstone_horizon_ms: horizon,
            }
        };
        if let Err(e) = checkpoint::write(&self.inner.core.disk, &self.inner.dir, new).await {
            // Only costs a longer clean next time (it starts from the log start).
            warn!(dir = %self.inner.dir.display(), error = %e, "cannot write the cleaner checkpoint");
        }
        stats.first_dirty_offset = new.first_dirty_offset;
        stats.segments_after = self.segment_count();
        Ok(Some(stats))
    }

    /// Rewrites one group and swaps it in. Some(earliest kept tombstone horizon) when done,
    /// None when the log changed meanwhile and the copy was thrown away.
    async fn clean_group(
        &self,
        group: &[Source],
        cx: &FilterContext<'_>,
        options: &CleanerOptions,
        throttle: &mut Throttle,
        stats: &mut CleanStats,
    ) -> Result<Option<Option<i64>>> {
        let dir = self.inner.dir.clone();
        let disk = self.inner.core.disk.clone();
        let (x, e) = (group[0].base, group[group.len() - 1].next);
        let cleaned_path = dir.join(swap::file_name(x, e, CLEANED_SUFFIX));
        let interval = self.inner.config.borrow().index_interval_bytes;
        let out = disk
            .open(&cleaned_path, OpenMode::CreateIfMissing)
            .await
            .map_err(|err| io_err(&dir, "creating a cleaned segment", err))?;
        out.truncate(0)
            .await
            .map_err(|err| io_err(&dir, "emptying a cleaned segment", err))?;
        let mut writer = SegmentWriter::new(options.io_buffer_bytes);
        let mut index = SegmentIndex::new();
        let mut changed = false;
        let mut horizon: Option<i64> = None;
        // The emptied form of the latest batch, while no later batch was kept.
        let mut trailing_empty: Option<RecordBatch> = None;
        let put = |b: &RecordBatch, writer: &mut SegmentWriter, index: &mut SegmentIndex| {
            let position = writer.len() as u32;
            let rel = (b.base_offset() - x) as u32;
            index.on_batch(
                rel,
                b.base_offset(),
                position,
                b.len() as u64,
                b.max_timestamp(),
                interval,
            );
            writer.push(b.as_bytes());
        };
        for src in group {
            let file = self.open_source(src).await?;
            let mut pos = 0;
            loop {
                let mut bad = None;
                let piece = scan_piece(
                    &*file,
                    pos,
                    src.size,
                    options.io_buffer_bytes,
                    |h, bytes| {
                        let filtered = RecordBatch::parse(Bytes::copy_from_slice(bytes))
                            .and_then(|b| filter_batch(&b, cx));
                        let f = match filtered {
                            Ok(f) => f,
                            Err(err) => {
                                bad = Some(format!("batch at offset {}: {err}", h.base_offset));
                                return ControlFlow::Break(());
                            }
                        };
                        changed |= f.changed;
                        if let Some(t) = f.tombstone_horizon_ms {
                            horizon = Some(horizon.map_or(t, |h| h.min(t)));
                        }
                        match f.batch {
                            Some(b) => {
                                trailing_empty = None;
                                put(&b, &mut writer, &mut index);
                            }
                            None => {
                                stats.batches_dropped += 1;
                                trailing_empty = f.emptied;
                            }
                        }
                        ControlFlow::Continue(())
                    },
                )
                .await
                .map_err(|err| io_err(&dir, "cleaner reading a segment", err))?;
                if let Some(why) = bad {
                    let _ = disk.remove(&cleaned_path).await;
                    return Err(self.corrupt(why));
                }
                let (end, bytes) = match piece {
                    Ok(p) => p,
                    Err(why) => {
                        let _ = disk.remove(&cleaned_path).await;
                        return Err(self.corrupt(format!("{}: {why}", src.path.display())));
                    }
                };
                let written = writer
                    .flush_full(&disk, &out)
                    .await
                    .map_err(|err| io_err(&dir, "writing a cleaned segment", err))?;
                stats.bytes_read += bytes;
                stats.bytes_written += written;
                throttle.account(bytes + written).await;
                glommio::yield_if_needed().await;
                match end {
                    PieceEnd::More(p) => pos = p,
                    PieceEnd::Done | PieceEnd::Stopped => break,
                }
            }
        }
        if let Some(b) = trailing_empty.take() {
            stats.batches_dropped -= 1;
            put(&b, &mut writer, &mut index);
        }
        if !changed && group.len() == 1 {
            drop(out);
            let _ = disk.remove(&cleaned_path).await;
            return Ok(Some(horizon));
        }
        let before = writer.flushed;
        let size = writer
            .finish(&disk, &out)
            .await
            .map_err(|err| io_err(&dir, "finishing a cleaned segment", err))?;
        stats.bytes_written += size - before;
        drop(out);
        index.seal(x);
        let swapped = self
            .swap_in(group, x, e, size, index, &cleaned_path)
            .await?;
        Ok(swapped.then_some(horizon))
    }

    /// Checks that the group is unchanged and nothing conflicting runs, then swaps.
    async fn swap_in(
        &self,
        group: &[Source],
        x: i64,
        e: i64,
        size: u64,
        index: SegmentIndex,
        cleaned_path: &Path,
    ) -> Result<bool> {
        let ok = {
            let mut st = self.inner.state.borrow_mut();
            let unchanged = group.iter().all(|s| {
                st.segments
                    .get(&s.base)
                    .is_some_and(|g| g.sealed && g.next_offset == s.next && g.size == s.size)
            });
            let not_active = st.segments.range(e..).next().is_some();
            let ok = unchanged
                && not_active
                && st.offline.is_none()
                && !st.closed
                && !st.truncating
                && !st.cleaner.swapping;
            if ok {
                st.cleaner.swapping = true;
            }
            ok
        };
        if !ok {
            let _ = self.inner.core.disk.remove(cleaned_path).await;
            return Ok(false);
        }
        let result = self
            .swap_committed(group, x, e, size, index, cleaned_path)
            .await;
        self.inner.state.borrow_mut().cleaner.swapping = false;
        result.map(|()| true)
    }

    /// Steps 2 to 5 of the swap protocol (see `swap`). After the commit any failure makes
    /// the log offline: the restart's recovery finishes the swap.
    async fn swap_committed(
        &self,
        group: &[Source],
        x: i64,
        e: i64,
        size: u64,
        index: SegmentIndex,
        cleaned_path: &Path,
    ) -> Result<()> {
        let core = self.inner.core.clone();
        let disk = &core.disk;
        let dir = self.inner.dir.clone();
        let swap_path = dir.join(swap::file_name(x, e, SWAP_SUFFIX));
        if let Err(err) = disk.rename(cleaned_path, &swap_path).await {
            let _ = disk.remove(cleaned_path).await;
            return Err(io_err(&dir, "committing a cleaned segment", err));
        }
        let fail = |what: &str, err: std::io::Error| {
            self.go_offline(format!("{what} during a segment swap: {err}"));
            io_err(&dir, what, err)
        };
        disk.sync_dir(&dir)
            .await
            .map_err(|err| fail("syncing the directory", err))?;
        let new_file = Rc::new(
            disk.open(&swap_path, OpenMode::Existing)
                .await
                .map_err(|err| fail("opening the swap file", err))?,
        );
        let final_path = swap::log_path(&dir, x);
        {
            let mut st = self.inner.state.borrow_mut();
            for s in group {
                st.segments.remove(&s.base);
            }
            let mut seg = Segment::new(&dir, x);
            seg.size = size;
            seg.written_size = size;
            seg.preallocated = size;
            seg.next_offset = e;
            seg.sealed = true;
            seg.index = Some(index.clone());
            st.segments.insert(x, seg);
            st.generation += 1;
            // Readers that look up the segment from now on get the new file under its final
            // name, even before the rename below; those holding the old one keep reading it.
            core.files.replace(&final_path, new_file.clone());
            for s in &group[1..] {
                core.files.forget(&s.path);
            }
            core.cache.borrow_mut().drop_below(self.inner.id, e);
        }
        for s in group {
            let old = Segment::new(&dir, s.base);
            let mut doomed = vec![old.index_path, old.time_index_path];
            if s.base != x {
                doomed.push(old.log_path);
            }
            for path in doomed {
                match disk.remove(&path).await {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(fail("removing a replaced segment file", err)),
                }
            }
        }
        disk.sync_dir(&dir)
            .await
            .map_err(|err| fail("syncing the directory", err))?;
        disk.rename(&swap_path, &final_path)
            .await
            .map_err(|err| fail("renaming the swap file", err))?;
        disk.sync_dir(&dir)
            .await
            .map_err(|err| fail("syncing the directory", err))?;
        self.write_index_files(x, &index).await;
        drop(new_file);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(base: i64, next: i64, size: u64) -> Source {
        Source {
            base,
            next,
            size,
            path: PathBuf::new(),
        }
    }

    #[test]
    fn groups_fit_one_segment() {
        let s = [
            src(0, 10, 40),
            src(10, 20, 50),
            src(20, 30, 30),
            src(30, 40, 200),
        ];
        let g: Vec<Vec<i64>> = group_by_size(&s, 100)
            .iter()
            .map(|g| g.iter().map(|s| s.base).collect())
            .collect();
        assert_eq!(g, vec![vec![0, 10], vec![20], vec![30]]);
    }
}
