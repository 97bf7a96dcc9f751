//! Opening a log (with crash recovery) and closing it cleanly.
//!
//! Owns: the startup contract. A clean close leaves a `clean-shutdown` marker naming the log
//! end offset and the active segment's exact size; open trusts those and the index files.
//! Without the marker (process killed, power lost) the last segment is scanned from its start:
//! every batch's length, magic, CRC32C and increasing offsets are checked, the file is
//! truncated at the first torn or invalid batch (logged with the offset and the bytes cut), its
//! indexes are rebuilt, and the truncation is synced before any append. Earlier segments need
//! no scan: a segment is synced and indexed before the next one receives its first write.
//! Index files that are missing or fail their checksum are rebuilt from their segment.
//! The marker is removed durably before the first write or truncation after open (not at
//! open: an idle log keeps it, and its close then has nothing to write). Before any of this, what an
//! interrupted clean left is finished or removed (`cleaner::swap`), and the cleaner
//! checkpoint is loaded.
//! Never: opens a log whose directory holds a segment that cannot be read at all (that is an
//! error for the operator, not something to truncate away).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::rc::Rc;

use tracing::{info, warn};

use super::cleaner::{CleanerLogState, checkpoint, swap};
use super::config::LogConfig;
use super::disk::{AlignedBuf, Disk, DiskFile, OpenMode, PAGE_BYTES, align_down};
use super::error::{Result, StorageError};
use super::index::SegmentIndex;
use super::log::{LogInner, LogState, PartitionLog};
use super::meta::{
    CLEAN_SHUTDOWN_FILE, LOG_START_FILE, encode_i64s, i64s, read_meta, remove_meta, write_meta,
};
use super::scan::{ScanEnd, scan};
use super::segment::{INDEX_SUFFIX, Segment, TIME_INDEX_SUFFIX, file_stem, parse_log_file_name};
use super::shard::ShardCore;
use super::watermark::Watermark;
use super::writer::Appender;

/// Whether a segment file holds any write: a batch starts with its base offset and a length
/// of at least 49, so a file whose first bytes are zeros (or that has none) was never written.
async fn holds_data<F: DiskFile>(file: &F) -> std::io::Result<bool> {
    if file.size().await? == 0 {
        return Ok(false);
    }
    let page = file.read_at(0, PAGE_BYTES).await?;
    let head = page.as_ref();
    Ok(head.iter().take(12).any(|b| *b != 0))
}

/// Result of scanning a segment from its start.
struct Rebuilt {
    index: SegmentIndex,
    valid_size: u64,
    next_offset: i64,
    stop: ScanEnd,
}

/// Scans `[0, size)` of a segment, rebuilding its index; stops at the first invalid batch.
async fn rebuild<F: DiskFile>(
    file: &F,
    base_offset: i64,
    size: u64,
    config: &LogConfig,
    chunk_bytes: usize,
) -> std::io::Result<Rebuilt> {
    let mut index = SegmentIndex::new();
    let mut next = base_offset;
    let mut valid = 0u64;
    let interval = config.index_interval_bytes;
    let stop = scan(file, 0, size, chunk_bytes, true, |h, pos, bytes| {
        // Offsets only grow; a compacted segment has gaps between its batches.
        if h.base_offset < next {
            return ControlFlow::Break(());
        }
        let rel = (h.base_offset - base_offset) as u32;
        index.on_batch(
            rel,
            h.base_offset,
            pos as u32,
            bytes.len() as u64,
            h.max_timestamp,
            interval,
        );
        next = h.next_offset();
        valid = pos + bytes.len() as u64;
        ControlFlow::Continue(())
    })
    .await?;
    index.seal(base_offset);
    Ok(Rebuilt {
        index,
        valid_size: valid,
        next_offset: next,
        stop,
    })
}

impl<D: Disk> PartitionLog<D> {
    pub(crate) async fn open(
        core: Rc<ShardCore<D>>,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<PartitionLog<D>> {
        let disk = core.disk.clone();
        let io = |what: &str, e| StorageError::io(format!("{what} {}", dir.display()), e);
        disk.create_dir_all(&dir).map_err(|e| io("creating", e))?;
        let mut names = disk.list_dir(&dir).map_err(|e| io("listing", e))?;
        // A clean interrupted by a crash: finish its swap or drop its uncommitted copy first.
        if swap::recover_leftovers(&disk, &dir, &names)
            .await
            .map_err(|e| io("finishing an interrupted clean of", e))?
        {
            names = disk.list_dir(&dir).map_err(|e| io("listing", e))?;
        }
        let mut bases: Vec<i64> = names
            .iter()
            .filter_map(|n| parse_log_file_name(n))
            .collect();
        bases.sort_unstable();
        for name in &names {
            let orphan_index = [INDEX_SUFFIX, TIME_INDEX_SUFFIX].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .and_then(|stem| stem.parse::<i64>().ok())
                    .is_some_and(|b| !bases.contains(&b))
            });
            if name.ends_with(".tmp") || orphan_index {
                let _ = disk.remove(&dir.join(name)).await;
            }
        }
        let clean = read_meta(&disk, &dir, CLEAN_SHUTDOWN_FILE)
            .await
            .and_then(|p| i64s::<3>(&p));
        let cleaner_checkpoint = checkpoint::read(&disk, &dir).await.unwrap_or_default();
        let start_checkpoint = read_meta(&disk, &dir, LOG_START_FILE)
            .await
            .and_then(|p| i64s::<1>(&p))
            .map(|[o]| o);
        // A segment is created by its first write, which follows the seal (trim + sync) of
        // the previous one; an empty last segment means a crash came between the two, so the
        // previous segment may still be untrimmed: drop the empty one and recover that one.
        // Empty: no byte, or only the zeros of its preallocation (`Disk::preallocate`).
        while bases.len() > 1 {
            let last = Segment::new(&dir, bases[bases.len() - 1]);
            let file = disk
                .open(&last.log_path, OpenMode::Existing)
                .await
                .map_err(|e| io("opening a segment of", e))?;
            if holds_data(&file)
                .await
                .map_err(|e| io("reading a segment of", e))?
            {
                break;
            }
            info!(segment = %last.log_path.display(), "removing an empty last segment");
            for path in [&last.log_path, &last.index_path, &last.time_index_path] {
                let _ = disk.remove(path).await;
            }
            bases.pop();
        }
        if bases.is_empty() {
            bases.push(start_checkpoint.unwrap_or(0).max(0));
        }
        let mut segments = BTreeMap::new();
        for (i, &base) in bases.iter().enumerate() {
            let mut seg = Segment::new(&dir, base);
            if let Some(&next_base) = bases.get(i + 1) {
                let file = core
                    .files
                    .get(&seg.log_path, OpenMode::Existing)
                    .await
                    .map_err(|e| io("opening a segment of", e))?;
                seg.size = file
                    .size()
                    .await
                    .map_err(|e| io("sizing a segment of", e))?;
                seg.written_size = seg.size;
                seg.next_offset = next_base;
                seg.sealed = true;
            }
            segments.insert(base, seg);
        }
        let last_base = *bases.last().unwrap_or(&0);
        let (size, next_offset, index, clean_trusted) =
            Self::recover_last(&core, &dir, &config, last_base, clean).await?;
        if let Some(seg) = segments.get_mut(&last_base) {
            seg.size = size;
            seg.written_size = size;
            seg.next_offset = next_offset;
            seg.index = Some(index);
        }
        let log_path = dir.join(format!("{}.log", file_stem(last_base)));
        let tail = Self::read_tail(&core, &log_path, size).await?;
        // The marker stays while the log is untouched (see `clean_marker_on_disk`); one that
        // open did not trust (a mismatch with the files) goes now, before anything else.
        let clean_marker_on_disk = clean_trusted;
        if !clean_marker_on_disk {
            remove_meta(&disk, &dir, CLEAN_SHUTDOWN_FILE)
                .await
                .map_err(|e| io("removing the clean-shutdown marker of", e))?;
        }
        let first_base = bases[0];
        let log_start_offset = start_checkpoint
            .unwrap_or(first_base)
            .max(first_base)
            .min(next_offset);
        // A power loss can take unsynced data below a DeleteRecords checkpoint: the log start
        // then comes down to the recovered end, durably, or a later open would resurrect it.
        if start_checkpoint.is_some_and(|c| c > log_start_offset) {
            write_meta(
                &disk,
                &dir,
                LOG_START_FILE,
                &encode_i64s(&[log_start_offset]),
            )
            .await
            .map_err(|e| io("rewriting the log start offset of", e))?;
        }
        let state = LogState {
            segments,
            log_start_offset,
            next_offset,
            appender: Appender::new(last_base, log_path, size, tail),
            jobs: VecDeque::new(),
            writer_running: false,
            offline: None,
            closed: false,
            truncating: false,
            clean_marker_on_disk,
            unsynced_records: 0,
            oldest_unsynced_ms: None,
            sync_requested: false,
            cleaner: CleanerLogState {
                first_dirty_offset: cleaner_checkpoint
                    .first_dirty_offset
                    .clamp(first_base, next_offset),
                tombstone_horizon_ms: cleaner_checkpoint.tombstone_horizon_ms,
                swapping: false,
                uncleanable: None,
            },
            generation: 0,
            epochs: super::epochs::EpochCache::loaded(
                read_meta(&disk, &dir, super::epochs::EPOCHS_FILE)
                    .await
                    .and_then(|p| super::epochs::EpochCache::decode(&p))
                    .unwrap_or_default(),
                next_offset,
            ),
        };
        let inner = Rc::new(LogInner {
            id: core.new_log_id(),
            dir,
            core: core.clone(),
            config: RefCell::new(config),
            state: RefCell::new(state),
            written: Watermark::new(next_offset),
            synced: Watermark::new(next_offset),
            high_watermark: Watermark::new(next_offset),
            replicated: std::cell::Cell::new(false),
            leader_epoch: std::cell::Cell::new(0),
        });
        core.register(&inner);
        Ok(PartitionLog { inner })
    }

    /// Size, next offset and index of the last segment, truncating a torn tail; and whether
    /// the clean-shutdown marker and the index files were trusted as they are.
    async fn recover_last(
        core: &Rc<ShardCore<D>>,
        dir: &std::path::Path,
        config: &LogConfig,
        base: i64,
        clean: Option<[i64; 3]>,
    ) -> Result<(u64, i64, SegmentIndex, bool)> {
        let seg = Segment::new(dir, base);
        let io = |what: &str, e| StorageError::io(format!("{what} {}", seg.log_path.display()), e);
        let file = core
            .files
            .get(&seg.log_path, OpenMode::CreateIfMissing)
            .await
            .map_err(|e| io("opening", e))?;
        let file_size = file.size().await.map_err(|e| io("sizing", e))?;
        if let Some([log_end, active_base, active_size]) = clean
            && active_base == base
            && active_size as u64 == file_size
            && log_end >= base
        {
            // Trusted as a whole only with its index files: a rebuilt index must be written
            // again at the next close, so that close has work to do.
            let (index, trusted) = match load_index(core, &seg, file_size).await {
                Some(ix) => (ix, true),
                None => {
                    let chunk = core.options.read_chunk_bytes;
                    let r = rebuild(&*file, base, file_size, config, chunk)
                        .await
                        .map_err(|e| io("rebuilding the index of", e))?;
                    (r.index, false)
                }
            };
            return Ok((file_size, log_end, index, trusted));
        }
        let chunk = core.options.read_chunk_bytes;
        let r = rebuild(&*file, base, file_size, config, chunk)
            .await
            .map_err(|e| io("recovering", e))?;
        if r.valid_size < file_size {
            let why = match &r.stop {
                ScanEnd::Invalid { why, .. } => why.clone(),
                ScanEnd::Stopped(_) => "offsets do not continue".into(),
                ScanEnd::End(_) => "end of data".into(),
            };
            // Zero padding after the last page is normal after a crash; anything else is a
            // torn or corrupt batch.
            info!(
                segment = %seg.log_path.display(),
                next_offset = r.next_offset,
                truncated_bytes = file_size - r.valid_size,
                valid_bytes = r.valid_size,
                reason = %why,
                "recovery truncates the log tail"
            );
            file.truncate(r.valid_size)
                .await
                .map_err(|e| io("truncating", e))?;
        }
        file.fdatasync().await.map_err(|e| io("syncing", e))?;
        Ok((r.valid_size, r.next_offset, r.index, false))
    }

    /// The bytes of the partial last page (they start the next write buffer).
    async fn read_tail(
        core: &Rc<ShardCore<D>>,
        path: &std::path::Path,
        size: u64,
    ) -> Result<Vec<u8>> {
        let start = align_down(size);
        let len = (size - start) as usize;
        if len == 0 {
            return Ok(Vec::new());
        }
        let io = |e| StorageError::io(format!("reading the tail of {}", path.display()), e);
        let file = core.files.get(path, OpenMode::Existing).await.map_err(io)?;
        let page = file.read_at(start, PAGE_BYTES).await.map_err(io)?;
        let page = page.as_ref();
        if page.len() < len {
            return Err(StorageError::Corrupt {
                dir: path.to_owned(),
                what: "the tail page is shorter than the recovered size".into(),
            });
        }
        Ok(page[..len].to_vec())
    }

    /// Loads (or rebuilds) the index of the segment at `base` if it is not in memory.
    pub(crate) async fn ensure_index(&self, base: i64) -> Result<()> {
        let (seg_copy, size) = {
            let state = self.inner.state.borrow();
            match state.segments.get(&base) {
                Some(s) if s.index.is_none() => {
                    (Segment::new(&self.inner.dir, base), s.written_size)
                }
                _ => return Ok(()),
            }
        };
        let core = &self.inner.core;
        let index = match load_index(core, &seg_copy, size).await {
            Some(ix) => ix,
            None => {
                let io =
                    |e| StorageError::io(format!("indexing {}", seg_copy.log_path.display()), e);
                let file = core
                    .files
                    .get(&seg_copy.log_path, OpenMode::Existing)
                    .await
                    .map_err(io)?;
                let config = self.inner.config.borrow().clone();
                let r = rebuild(&*file, base, size, &config, core.options.read_chunk_bytes)
                    .await
                    .map_err(io)?;
                if r.valid_size != size {
                    warn!(segment = %seg_copy.log_path.display(), "sealed segment has invalid batches past {}", r.valid_size);
                }
                self.write_index_files(base, &r.index).await;
                r.index
            }
        };
        if let Some(seg) = self.inner.state.borrow_mut().segments.get_mut(&base)
            && seg.index.is_none()
        {
            seg.index = Some(index);
        }
        Ok(())
    }

    /// Writes and syncs a segment's two index files (a failure only costs a rebuild later).
    pub(crate) async fn write_index_files(&self, base: i64, index: &SegmentIndex) {
        let seg = Segment::new(&self.inner.dir, base);
        for (path, bytes) in [
            (&seg.index_path, index.encode_offsets()),
            (&seg.time_index_path, index.encode_times()),
        ] {
            if let Err(e) = write_whole(&self.inner.core.disk, path, &bytes).await {
                warn!(path = %path.display(), error = %e, "could not write index file");
            }
        }
    }

    /// Drains writes, syncs, trims the active file to its exact size, writes its index and
    /// the clean-shutdown marker (nothing, when the previous close's marker is still valid).
    /// The log refuses appends from the first line on.
    pub async fn close(&self) -> Result<()> {
        self.shut(true).await
    }

    /// Closes a log whose directory is about to be removed (its topic was deleted): drains
    /// the writes in flight, then lets go of its files without the sync, index files and
    /// clean-shutdown marker of [`close`](Self::close), which a deleted log does not need.
    /// A topic of 10,000 partitions closed cleanly kept DeleteTopics waiting for minutes.
    pub async fn discard(&self) -> Result<()> {
        self.shut(false).await
    }

    async fn shut(&self, clean: bool) -> Result<()> {
        let next = {
            let mut state = self.inner.state.borrow_mut();
            state.closed = true;
            state.next_offset
        };
        let core = self.inner.core.clone();
        self.wait_for_swap().await;
        let drained = self.inner.written.wait_for(next).await;
        let untouched = self.inner.state.borrow().clean_marker_on_disk;
        let result = match (drained, self.offline_reason()) {
            // Nothing changed since the marker was written: it and the files still agree.
            (Ok(()), None) if untouched || !clean => Ok(()),
            (Ok(()), None) => self.write_clean_state(next).await,
            (Err(e), _) => Err(e),
            (Ok(()), Some(reason)) => Err(StorageError::Offline {
                dir: self.inner.dir.clone(),
                reason,
            }),
        };
        let paths: Vec<PathBuf> = {
            let state = self.inner.state.borrow();
            state
                .segments
                .values()
                .map(|s| s.log_path.clone())
                .collect()
        };
        for p in paths {
            core.files.forget(&p);
        }
        core.unregister(self.inner.id);
        result
    }

    async fn write_clean_state(&self, next: i64) -> Result<()> {
        let (path, base, size, index) = {
            let state = self.inner.state.borrow();
            let a = state.active();
            (a.log_path.clone(), a.base_offset, a.size, a.index.clone())
        };
        self.wait_preallocation(base).await;
        let io = |e| StorageError::io(format!("closing {}", path.display()), e);
        let file = self
            .segment_file(&path, OpenMode::CreateIfMissing)
            .await
            .map_err(io)?;
        file.truncate(size).await.map_err(io)?;
        file.fdatasync().await.map_err(io)?;
        if let Some(index) = index {
            self.write_index_files(base, &index).await;
        }
        let payload = encode_i64s(&[next, base, size as i64]);
        write_meta(
            &self.inner.core.disk,
            &self.inner.dir,
            CLEAN_SHUTDOWN_FILE,
            &payload,
        )
        .await
        .map_err(io)
    }
}

/// Reads a segment's index files; None when missing or invalid.
async fn load_index<D: Disk>(
    core: &Rc<ShardCore<D>>,
    seg: &Segment,
    segment_size: u64,
) -> Option<SegmentIndex> {
    let offsets = read_whole(&core.disk, &seg.index_path).await?;
    let times = read_whole(&core.disk, &seg.time_index_path).await?;
    match SegmentIndex::decode(&offsets, &times, seg.base_offset) {
        Ok(ix) if ix.last_position() >= segment_size && segment_size > 0 => {
            warn!(segment = %seg.log_path.display(), "index points past the segment: rebuilt");
            None
        }
        Ok(ix) => Some(ix),
        Err(bad) => {
            warn!(segment = %seg.log_path.display(), reason = bad.0, "index rebuilt");
            None
        }
    }
}

async fn read_whole<D: Disk>(disk: &D, path: &std::path::Path) -> Option<Vec<u8>> {
    let file = disk.open(path, OpenMode::Existing).await.ok()?;
    let size = file.size().await.ok()?;
    let len = super::disk::align_up(size) as usize;
    let data = file.read_at(0, len).await.ok()?;
    Some(data.as_ref().to_vec())
}

async fn write_whole<D: Disk>(
    disk: &D,
    path: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    let file = disk.open(path, OpenMode::CreateIfMissing).await?;
    let mut buf = disk.alloc(bytes.len());
    buf.as_mut_slice().copy_from_slice(bytes);
    file.write_at(Rc::new(buf), 0).await?;
    file.truncate(bytes.len() as u64).await?;
    // Synced: a stale but well-formed older version must never survive a power loss in
    // place of this one (its checksum would pass and its positions would be wrong).
    file.fdatasync().await
}
