//! The aligned write buffer of a log's active segment and the write jobs cut from it.
//!
//! Owns: where appended bytes go before their direct write, and the rewritable tail page.
//! A buffer always starts at a page boundary of the file: a new buffer begins with a copy of
//! the partial last page of the previous one (the "carry", under 4 KiB), so each write is
//! page aligned and rewrites that page with more data, and the file is never read to extend
//! it. Sealing a buffer zeroes the padding after the data (the file never holds stale memory)
//! and trims the buffer to whole pages.
//! Never: hands a buffer to a write and keeps mutating it (a sealed buffer is behind an `Rc`
//! and read-only: the batch cache serves reads straight from it).

use std::path::PathBuf;
use std::rc::Rc;

use super::disk::{AlignedBuf, Disk, PAGE_BYTES, align_down, align_up};

/// A batch inside a write buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingBatch {
    pub base_offset: i64,
    pub next_offset: i64,
    pub start: usize,
    pub len: usize,
}

/// One direct write: `buf` at file position `pos` of the segment file.
pub(crate) struct WriteJob<B> {
    pub segment_base: i64,
    pub log_path: PathBuf,
    pub pos: u64,
    pub buf: Rc<B>,
    /// Bytes at the front of `buf` that continue the previous write (the carried page).
    pub carry_len: usize,
    /// File size once written (data end, before padding).
    pub end_size: u64,
    pub first_offset: i64,
    pub next_offset: i64,
    pub batches: Vec<PendingBatch>,
}

/// Work for a log's write task, in order.
pub(crate) enum Job<B> {
    Write(WriteJob<B>),
    /// The segment with this base takes no more appends: sync it and write its index.
    Seal(i64),
}

pub(crate) struct Appender<B> {
    segment_base: i64,
    log_path: PathBuf,
    buf: Option<B>,
    filled: usize,
    /// File position of the buffer's (or carry's) first byte; page aligned.
    file_pos: u64,
    /// The partial page at `file_pos` while no buffer is allocated.
    carry: Vec<u8>,
    /// Bytes of the current buffer that came from the carry.
    carry_len: usize,
    batches: Vec<PendingBatch>,
}

impl<B: AlignedBuf> Appender<B> {
    /// An appender for a segment whose data ends at `size`; `tail` holds the bytes of the
    /// last partial page (`size % PAGE_BYTES` of them).
    pub(crate) fn new(segment_base: i64, log_path: PathBuf, size: u64, tail: Vec<u8>) -> Self {
        debug_assert_eq!(tail.len() as u64, size - align_down(size));
        Appender {
            segment_base,
            log_path,
            buf: None,
            filled: 0,
            file_pos: align_down(size),
            carry: tail,
            carry_len: 0,
            batches: Vec::new(),
        }
    }

    /// True when batches were appended since the last seal.
    pub(crate) fn has_data(&self) -> bool {
        !self.batches.is_empty()
    }

    /// Makes room for `len` more bytes. When the current buffer is full its batches are
    /// sealed into a job (returned). `coalesce_bytes` is the size to allocate while a write is
    /// in flight, so appends that arrive meanwhile go out as one large write.
    pub(crate) fn make_room<D: Disk<Buf = B>>(
        &mut self,
        disk: &D,
        len: usize,
        coalesce_bytes: Option<usize>,
    ) -> Option<WriteJob<B>> {
        if let Some(buf) = &self.buf
            && self.filled + len <= buf.as_slice().len()
        {
            return None;
        }
        let sealed = self.seal();
        if let Some(buf) = self.buf.take() {
            // A buffer holding only the carry: keep the carry, drop the buffer.
            self.carry = buf.as_slice()[..self.filled].to_vec();
        }
        let needed = align_up((self.carry.len() + len) as u64) as usize;
        let size = needed.max(coalesce_bytes.map_or(0, |c| align_up(c as u64) as usize));
        let mut buf = disk.alloc(size);
        buf.as_mut_slice()[..self.carry.len()].copy_from_slice(&self.carry);
        self.filled = self.carry.len();
        self.carry_len = self.carry.len();
        self.carry.clear();
        self.buf = Some(buf);
        sealed
    }

    /// The next `len` bytes of the buffer (after `make_room`) and their position in it.
    pub(crate) fn slot(&mut self, len: usize) -> (&mut [u8], usize) {
        let start = self.filled;
        self.filled += len;
        let buf = self.buf.as_mut().expect("make_room allocates before slot");
        (&mut buf.as_mut_slice()[start..start + len], start)
    }

    /// Notes the batch just copied into `slot`.
    pub(crate) fn record(&mut self, base_offset: i64, next_offset: i64, start: usize, len: usize) {
        self.batches.push(PendingBatch {
            base_offset,
            next_offset,
            start,
            len,
        });
    }

    /// Cuts the appended batches into a write job (None when there are none).
    pub(crate) fn seal(&mut self) -> Option<WriteJob<B>> {
        if self.batches.is_empty() {
            return None;
        }
        let mut buf = self.buf.take()?;
        let used = self.filled;
        let padded = align_up(used as u64) as usize;
        buf.as_mut_slice()[used..padded].fill(0);
        buf.trim_to(padded);
        let tail_start = align_down(used as u64) as usize;
        self.carry = buf.as_slice()[tail_start..used].to_vec();
        let batches = std::mem::take(&mut self.batches);
        let job = WriteJob {
            segment_base: self.segment_base,
            log_path: self.log_path.clone(),
            pos: self.file_pos,
            carry_len: self.carry_len,
            end_size: self.file_pos + used as u64,
            first_offset: batches[0].base_offset,
            next_offset: batches[batches.len() - 1].next_offset,
            batches,
            buf: Rc::new(buf),
        };
        self.file_pos += tail_start as u64;
        self.filled = 0;
        self.carry_len = 0;
        Some(job)
    }
}

impl<B: AlignedBuf> WriteJob<B> {
    /// The bytes the write covers (whole pages).
    pub(crate) fn write_len(&self) -> usize {
        self.buf.as_slice().len()
    }
    /// The carried bytes at the front of the buffer (to continue from after a give-back).
    pub(crate) fn carry(&self) -> Vec<u8> {
        self.buf.as_slice()[..self.carry_len].to_vec()
    }
}

const _: () = assert!(PAGE_BYTES.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim_disk::SimDisk;

    #[test]
    fn buffers_carry_the_tail_page_and_stay_aligned() {
        let disk = SimDisk::new();
        let mut a = Appender::new(0, PathBuf::from("x.log"), 0, Vec::new());
        assert!(a.make_room(&disk, 5000, None).is_none());
        let (dst, start) = a.slot(5000);
        dst.fill(7);
        a.record(0, 3, start, 5000);
        let job = a.seal().unwrap();
        assert_eq!((job.pos, job.write_len(), job.end_size), (0, 8192, 5000));
        assert!(job.buf.as_slice()[5000..].iter().all(|&b| b == 0));
        // Next buffer starts at the page holding byte 5000, with 904 carried bytes.
        assert!(a.make_room(&disk, 100, Some(65536)).is_none());
        let (dst, start) = a.slot(100);
        dst.fill(9);
        assert_eq!(start, 904);
        a.record(3, 4, start, 100);
        let job2 = a.seal().unwrap();
        assert_eq!((job2.pos, job2.carry_len, job2.end_size), (4096, 904, 5100));
        assert_eq!(job2.write_len(), 4096);
        assert!(job2.buf.as_slice()[..904].iter().all(|&b| b == 7));
        assert!(a.seal().is_none());
    }

    #[test]
    fn a_full_buffer_is_sealed_into_a_job() {
        let disk = SimDisk::new();
        let mut a = Appender::new(0, PathBuf::from("x.log"), 0, Vec::new());
        assert!(a.make_room(&disk, 4000, None).is_none());
        let (_, s) = a.slot(4000);
        a.record(0, 1, s, 4000);
        let job = a.make_room(&disk, 4000, None).expect("first buffer sealed");
        assert_eq!(job.end_size, 4000);
        let (_, s) = a.slot(4000);
        assert_eq!(s, 4000); // the carry occupies the front of the new buffer
    }
}
