//! Removing data from a log: retention, DeleteRecords and truncation.
//!
//! Owns: which segments go. Retention deletes whole sealed segments from the oldest, by
//! `retention.ms` (the segment's newest timestamp is older than now - retention.ms) and by
//! `retention.bytes` (while the log without that segment is still at least that large),
//! never the active segment, and advances the log start offset to the next segment.
//! DeleteRecords moves the log start offset (persisted in `log-start-offset`) and deletes
//! segments wholly below it. `truncate_to` cuts the log end back (replication).
//! On a compacted log: removal waits for a segment swap of the cleaner under way, and removes
//! only segments still wholly below the log start offset (the cleaner may have merged the
//! chosen ones meanwhile); truncation into the compacted part is refused.
//! Never: deletes a segment a read could still need below the log start offset's segment;
//! forgets to persist a log start offset before deleting the files below it.

use tracing::info;

use super::disk::{Disk, DiskFile, OpenMode, PAGE_BYTES, align_down};
use super::error::{Result, StorageError};
use super::log::PartitionLog;
use super::meta::{LOG_START_FILE, encode_i64s, write_meta};
use super::segment::Segment;
use super::writer::Appender;

impl<D: Disk> PartitionLog<D> {
    /// Applies `retention.ms` / `retention.bytes` (for `cleanup.policy` with delete) and
    /// removes segments below the log start offset. Returns how many segments were deleted.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        let config = self.config();
        let bases: Vec<i64> = {
            let state = self.inner.state.borrow();
            self.check_usable(&state)?;
            let n = state.segments.len();
            state
                .segments
                .keys()
                .copied()
                .take(n.saturating_sub(1))
                .collect()
        };
        let mut doomed = Vec::new();
        let mut total = self.size_bytes();
        for base in bases {
            self.ensure_index(base).await?;
            let state = self.inner.state.borrow();
            let Some(seg) = state.segments.get(&base) else {
                continue;
            };
            if !seg.sealed {
                break; // its data is still being written
            }
            let below_start = seg.next_offset <= state.log_start_offset;
            let deletes = config.cleanup_policy.deletes();
            let max_ts = seg.index.as_ref().map_or(-1, |ix| ix.max_timestamp);
            let too_old = deletes
                && config.retention_ms >= 0
                && max_ts >= 0
                && max_ts < now_ms.saturating_sub(config.retention_ms);
            let too_big = deletes
                && config.retention_bytes >= 0
                && total.saturating_sub(seg.size) >= config.retention_bytes as u64;
            // Only what every in-sync replica holds may go by time or size (as in Kafka): a
            // follower must still be able to copy the rest.
            let replicated = seg.next_offset <= self.inner.high_watermark.get();
            if !(below_start || ((too_old || too_big) && replicated)) {
                break;
            }
            total -= seg.size;
            doomed.push(base);
        }
        let Some(&last) = doomed.last() else {
            return Ok(0);
        };
        let new_start = {
            let state = self.inner.state.borrow();
            let next = state.segments.get(&last).map_or(0, |s| s.next_offset);
            state.log_start_offset.max(next)
        };
        self.persist_log_start(new_start).await?;
        self.remove_segments(&doomed).await;
        Ok(doomed.len())
    }

    /// DeleteRecords: moves the log start offset to `before_offset` (at most the high
    /// watermark) and deletes segments wholly below it. Returns the new log start offset.
    pub async fn delete_records(&self, before_offset: i64) -> Result<i64> {
        let (start, hw) = {
            let state = self.inner.state.borrow();
            self.check_usable(&state)?;
            (state.log_start_offset, self.inner.high_watermark.get())
        };
        if before_offset > hw || before_offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                offset: before_offset,
                log_start_offset: start,
                log_end_offset: hw,
            });
        }
        if before_offset <= start {
            return Ok(start);
        }
        self.persist_log_start(before_offset).await?;
        let doomed: Vec<i64> = {
            let state = self.inner.state.borrow();
            let n = state.segments.len();
            state
                .segments
                .values()
                .take(n.saturating_sub(1))
                .take_while(|s| s.sealed && s.next_offset <= before_offset)
                .map(|s| s.base_offset)
                .collect()
        };
        self.remove_segments(&doomed).await;
        Ok(before_offset)
    }

    async fn persist_log_start(&self, offset: i64) -> Result<()> {
        let disk = self.inner.core.disk.clone();
        write_meta(
            &disk,
            &self.inner.dir,
            LOG_START_FILE,
            &encode_i64s(&[offset]),
        )
        .await
        .map_err(|e| {
            StorageError::io(
                format!(
                    "checkpointing the log start of {}",
                    self.inner.dir.display()
                ),
                e,
            )
        })?;
        let mut state = self.inner.state.borrow_mut();
        state.log_start_offset = state.log_start_offset.max(offset);
        Ok(())
    }

    /// Drops segments from memory first (reads stop finding them), then their files. Only
    /// segments wholly below the log start offset go: the cleaner may have merged one of
    /// `bases` into a segment that reaches past it since the caller chose them.
    async fn remove_segments(&self, bases: &[i64]) {
        self.wait_for_swap().await;
        let removed: Vec<Segment> = {
            let mut state = self.inner.state.borrow_mut();
            let start = state.log_start_offset;
            let n = state.segments.len();
            let removable: Vec<i64> = state
                .segments
                .values()
                .take(n.saturating_sub(1))
                .filter(|s| s.sealed && s.next_offset <= start && bases.contains(&s.base_offset))
                .map(|s| s.base_offset)
                .collect();
            if !removable.is_empty() {
                state.generation += 1;
            }
            removable
                .iter()
                .filter_map(|b| state.segments.remove(b))
                .collect()
        };
        for seg in removed {
            info!(segment = %seg.log_path.display(), "deleting segment");
            self.delete_files(&seg).await;
        }
    }

    async fn delete_files(&self, seg: &Segment) {
        let core = &self.inner.core;
        for path in [&seg.log_path, &seg.index_path, &seg.time_index_path] {
            core.files.forget(path);
            // A missing index file is normal (never written, or rebuilt lazily).
            let _ = core.disk.remove(path).await;
        }
        let _ = core.disk.sync_dir(&self.inner.dir).await;
    }

    /// Cuts the log back so that `offset` is the new log end offset (replication: a follower
    /// dropping a diverged suffix). `offset` must be a batch boundary at or above the log
    /// start offset, and above the compacted part of a cleaned log (the data below a cut there
    /// may end before the cut, in a compaction gap, and a restart would then derive a lower
    /// log end offset); concurrent appends are refused while this runs.
    pub async fn truncate_to(&self, offset: i64) -> Result<()> {
        let next = {
            let mut state = self.inner.state.borrow_mut();
            self.check_usable(&state)?;
            let first_base = state.segments.keys().next().copied().unwrap_or(0);
            let compacted = state.cleaner.first_dirty_offset > first_base;
            if compacted && offset <= state.cleaner.first_dirty_offset {
                // The compacted part is not a place a truncation may cut (see above).
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start_offset: state.cleaner.first_dirty_offset + 1,
                    log_end_offset: state.next_offset,
                });
            }
            if offset < state.log_start_offset || offset > state.next_offset {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start_offset: state.log_start_offset,
                    log_end_offset: state.next_offset,
                });
            }
            state.truncating = true;
            state.next_offset
        };
        let result = self.truncate_inner(offset, next).await;
        self.inner.state.borrow_mut().truncating = false;
        result
    }

    async fn truncate_inner(&self, offset: i64, next: i64) -> Result<()> {
        // The cleaner starts no swap while `truncating` is set; one already under way ends.
        self.wait_for_swap().await;
        self.inner.written.wait_for(next).await?;
        // Wait for the write task to finish its queue (seal jobs after the last write).
        while self.inner.state.borrow().writer_running {
            glommio::yield_if_needed().await;
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        if offset == next {
            return Ok(());
        }
        self.remove_clean_marker().await.map_err(|e| {
            StorageError::io(
                format!(
                    "removing the clean-shutdown marker of {}",
                    self.inner.dir.display()
                ),
                e,
            )
        })?;
        // Find the byte position of `offset` in its segment.
        let base = self
            .inner
            .state
            .borrow()
            .segment_for(offset)
            .map(|s| s.base_offset)
            .unwrap_or(offset);
        let position = self.position_of(base, offset).await?;
        let doomed: Vec<Segment> = {
            let mut state = self.inner.state.borrow_mut();
            let later: Vec<i64> = state.segments.range(base + 1..).map(|(b, _)| *b).collect();
            later
                .iter()
                .filter_map(|b| state.segments.remove(b))
                .collect()
        };
        for seg in &doomed {
            self.delete_files(seg).await;
        }
        let path = {
            let state = self.inner.state.borrow();
            state.active().log_path.clone()
        };
        self.wait_preallocation(base).await;
        let io = |e| StorageError::io(format!("truncating {}", path.display()), e);
        let file = self
            .segment_file(&path, OpenMode::CreateIfMissing)
            .await
            .map_err(io)?;
        file.truncate(position).await.map_err(io)?;
        if let Err(e) = file.fdatasync().await {
            self.go_offline(format!("fdatasync after truncation failed: {e}"));
            return Err(io(e));
        }
        let tail_start = align_down(position);
        let tail_len = (position - tail_start) as usize;
        let tail = if tail_len > 0 {
            let page = file.read_at(tail_start, PAGE_BYTES).await.map_err(io)?;
            page.as_ref()
                .get(..tail_len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| StorageError::Corrupt {
                    dir: path.clone(),
                    what: "tail page shorter than the truncation point".into(),
                })?
        } else {
            Vec::new()
        };
        {
            let mut state = self.inner.state.borrow_mut();
            let seg = state.active_mut();
            seg.size = position;
            seg.written_size = position;
            // The cut freed what was reserved past it.
            seg.preallocated = position;
            seg.next_offset = offset;
            seg.sealed = false;
            if let (Some(rel), Some(ix)) = (seg.relative(offset), seg.index.as_mut()) {
                ix.truncate(rel);
            }
            state.appender = Appender::new(base, path.clone(), position, tail);
            state.next_offset = offset;
            state.generation += 1;
            state.log_start_offset = state.log_start_offset.min(offset);
        }
        self.lower_cleaner_checkpoint(offset).await;
        self.inner
            .core
            .cache
            .borrow_mut()
            .truncate(self.inner.id, offset);
        let err = StorageError::Closed {
            dir: self.inner.dir.clone(),
        };
        self.inner.written.reset(offset, &err);
        let synced = self.inner.synced.get().min(offset);
        self.inner.synced.reset(synced, &err);
        let visible = self.inner.high_watermark.get().min(offset);
        self.inner.high_watermark.reset(visible, &err);
        self.inner.state.borrow_mut().epochs.truncate_from(offset);
        self.persist_epochs().await.map_err(|e| {
            StorageError::io(
                format!("writing the leader epochs of {}", self.inner.dir.display()),
                e,
            )
        })?;
        Ok(())
    }

    /// Byte position of the batch starting at `offset` in the segment at `base` (the segment
    /// end when `offset` is its next offset).
    async fn position_of(&self, base: i64, offset: i64) -> Result<u64> {
        self.ensure_index(base).await?;
        let (path, from, end) = {
            let state = self.inner.state.borrow();
            let seg = state
                .segments
                .get(&base)
                .ok_or_else(|| StorageError::Corrupt {
                    dir: self.inner.dir.clone(),
                    what: format!("segment {base} vanished"),
                })?;
            if offset == seg.next_offset {
                return Ok(seg.written_size);
            }
            let rel = seg.relative(offset).unwrap_or(0);
            let pos = seg.index.as_ref().map_or(0, |ix| ix.position_for(rel));
            (seg.log_path.clone(), pos as u64, seg.written_size)
        };
        let io = |e| StorageError::io(format!("scanning {}", path.display()), e);
        let file = self
            .segment_file(&path, OpenMode::Existing)
            .await
            .map_err(io)?;
        let mut found = None;
        let chunk = self.inner.core.options.read_chunk_bytes;
        super::scan::scan(&*file, from, end, chunk, false, |h, pos, _| {
            if h.base_offset >= offset {
                found = Some((pos, h.base_offset));
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        })
        .await
        .map_err(io)?;
        match found {
            Some((pos, b)) if b == offset => Ok(pos),
            _ => Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: base,
                log_end_offset: end as i64,
            }),
        }
    }
}
