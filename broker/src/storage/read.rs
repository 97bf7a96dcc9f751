//! Reading a log: fetches, timestamp lookups and batch-header scans.
//!
//! Owns: `read(offset, max_bytes)` and what it returns. Recent batches come from the shard's
//! batch cache (no disk access, no copy: a chunk is a range of the write buffer itself); older
//! ones from one direct read into an aligned buffer, which the caller sends as it is.
//!
//! Why a DMA read and not sendfile/splice: glommio 0.9 has no splice, sendfile or SEND_ZC
//! operation and keeps its sockets blocking (MSG_DONTWAIT per call), so a plain sendfile()
//! from the shard would block the whole reactor on a cold read or a full socket buffer; and
//! the segment files are opened O_DIRECT, so there is no page-cache copy for sendfile to
//! reuse anyway. One read into an aligned buffer and one send is what Redpanda does; its cost
//! is measured by `examples/storage_bench.rs` against fio (see BENCHMARKS.md).
//!
//! Compacted logs have gaps: a read at an offset the cleaner removed starts at the next batch
//! (as Kafka's does). A read that finds its segment was swapped by the cleaner (or removed by
//! retention) while it opened the file looks the segment up again (`LogState::generation`).
//! Never: returns data at or above the high watermark to a consumer, or at or above the
//! written mark to a follower (`ReadEnd`), starts anywhere
//! but at the batch containing the requested offset (or the next one after a gap), or returns
//! a partial batch.

use std::ops::{ControlFlow, Deref};
use std::rc::Rc;

use bytes::Bytes;
use corebus_wire::record::compression::decompress;
use corebus_wire::record::{
    BATCH_HEADER_BYTES, BatchHeader, Compression, RecordBatch, Records, TimestampType,
};

use super::disk::{AlignedBuf, Disk, DiskFile, OpenMode, PAGE_BYTES, align_down, align_up};
use super::error::{Result, StorageError};
use super::log::PartitionLog;
use super::scan::{ScanEnd, scan};

/// Bytes of one fetch response part, ready to send.
pub enum ReadChunk<D: Disk> {
    /// Straight from the write buffer the batches were written from.
    Cached {
        buf: Rc<D::Buf>,
        start: usize,
        len: usize,
    },
    /// From a direct read of the segment file.
    File {
        buf: Rc<<D::File as DiskFile>::ReadBuf>,
        start: usize,
        len: usize,
    },
}

impl<D: Disk> Deref for ReadChunk<D> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadChunk::Cached { buf, start, len } => &buf.as_slice()[*start..*start + *len],
            ReadChunk::File { buf, start, len } => &(**buf).as_ref()[*start..*start + *len],
        }
    }
}

/// Where a read stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// Below the high watermark: what consumers may see.
    HighWatermark,
    /// Below the written offset: what a follower copies.
    Written,
}

/// The answer to a read.
pub struct LogRead<D: Disk> {
    /// Whole batches, from the one containing the requested offset, in offset order.
    pub chunks: Vec<ReadChunk<D>>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

impl<D: Disk> LogRead<D> {
    pub fn len_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
    /// Bytes this read keeps alive while it is held: a direct read's whole buffer (it reads
    /// around the batches it returns), and the returned ranges of batch-cache buffers (the
    /// cache holds the rest of those anyway).
    pub fn held_bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| match c {
                ReadChunk::Cached { len, .. } => *len,
                ReadChunk::File { buf, .. } => (**buf).as_ref().len(),
            })
            .sum()
    }
    /// A copy of all chunks in one buffer (tests, and callers that must cross a shard: the
    /// chunks are shard-local). Fetch sends the chunks themselves when the connection is on
    /// the owning shard, and copies them once, chunk by chunk, when it is not.
    pub fn to_bytes(&self) -> Bytes {
        let mut v = Vec::with_capacity(self.len_bytes());
        for c in &self.chunks {
            v.extend_from_slice(c);
        }
        Bytes::from(v)
    }
}

/// Where a run of whole batches sits inside a read buffer.
enum Walk {
    /// Batches `[start, end)` of the buffer (at least one).
    Found { start: usize, end: usize },
    /// The batch at this file position (of `total` bytes) is not fully in the buffer.
    NeedMore { position: u64, total: usize },
    /// This segment ends before `offset` (reached `end` of data).
    PastEnd,
}

/// Walks the batches of `data` (file position `data_pos`, valid up to file position `end`)
/// from file position `from`, looking for the batch containing `offset`.
fn walk(
    data: &[u8],
    data_pos: u64,
    from: u64,
    end: u64,
    offset: i64,
    max_bytes: usize,
    limit: i64,
) -> std::result::Result<Walk, String> {
    let avail = data.len().min((end - data_pos) as usize);
    let mut off = (from - data_pos) as usize;
    let mut found: Option<usize> = None;
    loop {
        let position = data_pos + off as u64;
        if position >= end {
            return Ok(match found {
                Some(start) => Walk::Found { start, end: off },
                None => Walk::PastEnd,
            });
        }
        if avail - off.min(avail) < BATCH_HEADER_BYTES {
            return Ok(match found {
                Some(start) => Walk::Found { start, end: off },
                None => Walk::NeedMore {
                    position,
                    total: BATCH_HEADER_BYTES,
                },
            });
        }
        let h = BatchHeader::parse(&data[off..avail]).map_err(|e| e.to_string())?;
        let total = h.total_len();
        let done =
            h.next_offset() > limit || found.is_some_and(|start| off + total - start > max_bytes);
        if done {
            return Ok(match found {
                Some(start) => Walk::Found { start, end: off },
                None => Walk::PastEnd,
            });
        }
        if off + total > avail {
            return Ok(match found {
                Some(start) => Walk::Found { start, end: off },
                None => Walk::NeedMore { position, total },
            });
        }
        if found.is_none() && h.next_offset() > offset {
            found = Some(off);
        }
        off += total;
    }
}

/// Upper bound on a batch's decompressed records when a timestamp lookup reads inside it.
const MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 << 20;

/// The first record of `batch` with timestamp >= `timestamp` and offset >= `start`. For a
/// LogAppendTime batch every record carries the max timestamp. A batch whose records cannot
/// be read answers at batch granularity (its first offset and max timestamp) rather than
/// failing the lookup.
fn first_record_at_or_after(
    header: &BatchHeader,
    bytes: Bytes,
    timestamp: i64,
    start: i64,
) -> (i64, i64) {
    let batch_level = (header.base_offset.max(start), header.max_timestamp);
    let Ok(batch) = RecordBatch::parse(bytes) else {
        return batch_level;
    };
    if batch.timestamp_type() == TimestampType::LogAppendTime {
        return batch_level;
    }
    let data = match batch.compression() {
        Ok(Compression::None) => batch.records_bytes(),
        Ok(codec) => {
            match decompress(codec, &batch.records_bytes(), MAX_DECOMPRESSED_BATCH_BYTES) {
                Ok(v) => Bytes::from(v),
                Err(_) => return batch_level,
            }
        }
        Err(_) => return batch_level,
    };
    let Ok(records) = Records::new(data, batch.record_count()) else {
        return batch_level;
    };
    for record in records {
        let Ok(record) = record else {
            return batch_level;
        };
        let offset = header.base_offset + i64::from(record.offset_delta);
        let ts = header.base_timestamp.saturating_add(record.timestamp_delta);
        if offset >= start && ts >= timestamp {
            return (offset, ts);
        }
    }
    batch_level
}

impl<D: Disk> PartitionLog<D> {
    fn out_of_range(&self, offset: i64, start: i64, end: i64) -> StorageError {
        let _ = self;
        StorageError::OffsetOutOfRange {
            offset,
            log_start_offset: start,
            log_end_offset: end,
        }
    }

    /// Whole batches from the one containing `offset`, up to `max_bytes` (at least one batch
    /// even when larger, as Kafka does since KIP-74), below the high watermark, from one
    /// segment: what a consumer may read. Empty at or above the high watermark up to the
    /// written offset (a replicated partition's high watermark lags it); OffsetOutOfRange
    /// below the log start offset or above the written offset.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<LogRead<D>> {
        self.read_to(offset, max_bytes, ReadEnd::HighWatermark)
            .await
    }

    /// `read` up to `end`: the high watermark (consumers) or the written offset (a follower
    /// copying the leader's log). The answer's `high_watermark` is the high watermark either way.
    pub async fn read_to(&self, offset: i64, max_bytes: usize, end: ReadEnd) -> Result<LogRead<D>> {
        let (written, hw, start) = {
            let state = self.inner.state.borrow();
            self.check_usable(&state)?;
            (
                self.inner.written.get(),
                self.inner.high_watermark.get(),
                state.log_start_offset,
            )
        };
        let empty = |chunks| LogRead {
            chunks,
            high_watermark: hw,
            log_start_offset: start,
        };
        if offset < start || offset > written {
            return Err(self.out_of_range(offset, start, written));
        }
        let hw = match end {
            ReadEnd::HighWatermark => hw,
            ReadEnd::Written => written,
        };
        if offset >= hw {
            return Ok(empty(Vec::new()));
        }
        if let Some(chunks) = self.read_cached(offset, max_bytes, hw) {
            return Ok(empty(chunks));
        }
        let chunks = self.read_file(offset, max_bytes, hw).await?;
        Ok(empty(chunks))
    }

    fn read_cached(&self, offset: i64, max_bytes: usize, hw: i64) -> Option<Vec<ReadChunk<D>>> {
        let cache = self.inner.core.cache.borrow();
        let batches = cache.read(self.inner.id, offset, max_bytes, hw)?;
        let mut chunks: Vec<ReadChunk<D>> = Vec::new();
        for b in batches {
            // Consecutive batches of one buffer go out as one chunk.
            if let Some(ReadChunk::Cached { buf, start, len }) = chunks.last_mut()
                && Rc::ptr_eq(buf, &b.buf)
                && *start + *len == b.start
            {
                *len += b.len;
                continue;
            }
            chunks.push(ReadChunk::Cached {
                buf: b.buf.clone(),
                start: b.start,
                len: b.len,
            });
        }
        Some(chunks)
    }

    async fn read_file(
        &self,
        mut offset: i64,
        max_bytes: usize,
        hw: i64,
    ) -> Result<Vec<ReadChunk<D>>> {
        loop {
            let Some(base) = self
                .inner
                .state
                .borrow()
                .segment_for(offset)
                .map(|s| s.base_offset)
            else {
                return Ok(Vec::new());
            };
            self.ensure_index(base).await?;
            let (path, mut pos, end, interval, next_base, generation) = {
                let state = self.inner.state.borrow();
                let Some(seg) = state.segments.get(&base) else {
                    return Ok(Vec::new()); // deleted by retention meanwhile
                };
                let rel = seg.relative(offset).unwrap_or(u32::MAX);
                let pos = seg.index.as_ref().map_or(0, |ix| ix.position_for(rel)) as u64;
                let next_base = state.segments.range(base + 1..).next().map(|(b, _)| *b);
                let interval = self.inner.config.borrow().index_interval_bytes as usize;
                (
                    seg.log_path.clone(),
                    pos,
                    seg.written_size,
                    interval,
                    next_base,
                    state.generation,
                )
            };
            let io = |e| StorageError::io(format!("reading {}", path.display()), e);
            let opened = self.segment_file(&path, OpenMode::Existing).await;
            // The cleaner may have swapped (or retention removed) the segment while the file
            // was opened: its position then means nothing in this file. Look it up again.
            if self.inner.state.borrow().generation != generation {
                continue;
            }
            let file = opened.map_err(io)?;
            let mut want_extra = 0usize;
            while pos < end {
                let aligned = align_down(pos);
                let lead = (pos - aligned) as usize;
                let span = lead + (interval + max_bytes + PAGE_BYTES).max(want_extra);
                let len = (align_up(span as u64)).min(align_up(end) - aligned) as usize;
                let data = Rc::new(file.read_at(aligned, len).await.map_err(io)?);
                let walked = walk((*data).as_ref(), aligned, pos, end, offset, max_bytes, hw)
                    .map_err(|why| StorageError::Corrupt {
                        dir: path.clone(),
                        what: format!("reading offset {offset} from byte {pos} (end {end}): {why}"),
                    })?;
                match walked {
                    Walk::Found { start, end } => {
                        return Ok(vec![ReadChunk::File {
                            buf: data,
                            start,
                            len: end - start,
                        }]);
                    }
                    Walk::NeedMore { position, total } => {
                        if position == pos && want_extra >= total + PAGE_BYTES {
                            return Err(StorageError::Corrupt {
                                dir: path.clone(),
                                what: format!("short read at byte {pos}"),
                            });
                        }
                        pos = position;
                        want_extra = total + PAGE_BYTES;
                    }
                    Walk::PastEnd => break,
                }
            }
            // Nothing at or after `offset` in this segment: continue in the next one.
            match next_base {
                Some(b) if b < hw => offset = offset.max(b),
                _ => return Ok(Vec::new()),
            }
        }
    }

    /// Kafka ListOffsets by timestamp: the first record (at or above the log start offset)
    /// whose timestamp is at or after `timestamp`, as (offset, timestamp); None when every
    /// record is older. The time index finds the first batch whose max timestamp qualifies;
    /// inside it the records are read (decompressed if needed) to find the exact record.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        loop {
            if let Some(answer) = self.offset_for_timestamp_once(timestamp).await? {
                return Ok(answer);
            }
        }
    }

    /// One attempt of `offset_for_timestamp`; None when segments were replaced meanwhile.
    async fn offset_for_timestamp_once(
        &self,
        timestamp: i64,
    ) -> Result<Option<Option<(i64, i64)>>> {
        let generation = self.inner.state.borrow().generation;
        let (start, hw, bases) = {
            let state = self.inner.state.borrow();
            self.check_usable(&state)?;
            let start = state.log_start_offset;
            let first = state.segment_for(start).map_or(start, |s| s.base_offset);
            let bases: Vec<i64> = state.segments.range(first..).map(|(b, _)| *b).collect();
            (start, self.inner.high_watermark.get(), bases)
        };
        for base in bases {
            self.ensure_index(base).await?;
            let found = {
                let state = self.inner.state.borrow();
                let Some(seg) = state.segments.get(&base) else {
                    continue;
                };
                let Some(ix) = seg.index.as_ref() else {
                    continue;
                };
                if ix.max_timestamp < timestamp {
                    continue;
                }
                let rel = ix.offset_for_time(timestamp);
                let from_rel = seg.relative(start).map_or(rel, |s| s.max(rel));
                (
                    seg.log_path.clone(),
                    ix.position_for(from_rel) as u64,
                    seg.written_size,
                )
            };
            let (path, pos, end) = found;
            let io = |e| StorageError::io(format!("reading {}", path.display()), e);
            let opened = self.segment_file(&path, OpenMode::Existing).await;
            if self.inner.state.borrow().generation != generation {
                return Ok(None);
            }
            let file = opened.map_err(io)?;
            let mut hit = None;
            let chunk = self.inner.core.options.read_chunk_bytes;
            let stop = scan(&*file, pos, end, chunk, false, |h, _, bytes| {
                if h.next_offset() > hw {
                    return ControlFlow::Break(());
                }
                // A batch the cleaner emptied holds no record to answer with.
                if h.next_offset() > start && h.max_timestamp >= timestamp && h.record_count > 0 {
                    hit = Some((*h, Bytes::copy_from_slice(bytes)));
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })
            .await
            .map_err(io)?;
            if let Some((header, bytes)) = hit {
                return Ok(Some(Some(first_record_at_or_after(
                    &header, bytes, timestamp, start,
                ))));
            }
            if let ScanEnd::Invalid { position, why } = stop {
                return Err(StorageError::Corrupt {
                    dir: path,
                    what: format!("at byte {position}: {why}"),
                });
            }
        }
        Ok(Some(None))
    }

    /// The largest timestamp in the log and the offset of the first record carrying it
    /// (ListOffsets MAX_TIMESTAMP, KIP-734), None when the log is empty. The time indexes name
    /// the batch; its records are read to find the record (a batch whose records cannot be
    /// read, or that went meanwhile, answers at batch granularity).
    pub async fn max_timestamp(&self) -> Result<Option<(i64, i64)>> {
        let Some((ts, batch_offset)) = self.max_timestamp_batch().await? else {
            return Ok(None);
        };
        let Ok(read) = self.read(batch_offset, 1).await else {
            return Ok(Some((ts, batch_offset)));
        };
        let Some(first) = read.chunks.first() else {
            return Ok(Some((ts, batch_offset)));
        };
        let Ok(header) = BatchHeader::parse(first) else {
            return Ok(Some((ts, batch_offset)));
        };
        let bytes = Bytes::copy_from_slice(&first[..header.total_len().min(first.len())]);
        let (offset, found) = first_record_at_or_after(&header, bytes, ts, self.log_start_offset());
        Ok(Some((found, offset)))
    }

    /// The largest timestamp in the log and the first offset of the batch holding it.
    async fn max_timestamp_batch(&self) -> Result<Option<(i64, i64)>> {
        let bases: Vec<i64> = self.inner.state.borrow().segments.keys().copied().collect();
        let mut best: Option<(i64, i64)> = None;
        for base in bases {
            self.ensure_index(base).await?;
            let state = self.inner.state.borrow();
            let Some(ix) = state.segments.get(&base).and_then(|s| s.index.as_ref()) else {
                continue;
            };
            let start = state.log_start_offset;
            if ix.max_timestamp >= 0
                && ix.offset_of_max_timestamp >= start
                && best.is_none_or(|(ts, _)| ix.max_timestamp > ts)
            {
                best = Some((ix.max_timestamp, ix.offset_of_max_timestamp));
            }
        }
        Ok(best)
    }

    /// Headers of the batches from the one containing `from_offset` up to the written offset,
    /// at most `max_batches` (the broker rebuilds idempotent-producer state from these).
    pub async fn scan_headers(
        &self,
        from_offset: i64,
        max_batches: usize,
    ) -> Result<Vec<BatchHeader>> {
        let scan_chunk_bytes = self.inner.core.options.read_chunk_bytes;
        let mut out = Vec::new();
        let mut offset = from_offset.max(self.log_start_offset());
        while out.len() < max_batches {
            // Up to what is written, not to the high watermark: the idempotent producers of
            // a replica restarted with its high watermark at its log start are in its tail.
            let read = self
                .read_to(offset, scan_chunk_bytes, ReadEnd::Written)
                .await?;
            if read.is_empty() {
                break;
            }
            for chunk in &read.chunks {
                let mut rest: &[u8] = chunk;
                while !rest.is_empty() && out.len() < max_batches {
                    let h = BatchHeader::parse(rest)?;
                    offset = h.next_offset();
                    rest = &rest[h.total_len().min(rest.len())..];
                    out.push(h);
                }
            }
        }
        Ok(out)
    }
}
