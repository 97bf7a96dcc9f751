//! The shard's cache of recent batches: tailing consumers are served from memory.
//!
//! Owns: references to the write buffers that recent batches were appended into (no copy:
//! a cached batch is a range of an `Rc` of the very buffer the direct write used), per log
//! in offset order, evicted oldest-first over the whole shard once `batch_cache_bytes` is
//! passed. The newest batches of a log, including those in the rewritable tail page, are
//! therefore read from here and not from the file.
//! Never: holds a batch that is not yet written (the log inserts after the write completed)
//! or serves a range with a hole (per log the cache is a contiguous run of offsets).
//!
//! Accounting counts batch bytes; a buffer shared by several batches stays alive until its
//! last cached batch is evicted, so memory can exceed the budget by at most one write buffer
//! per log.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use super::disk::AlignedBuf;

/// One cached batch: `buf[start..start + len]`.
pub(crate) struct CachedBatch<B> {
    pub base_offset: i64,
    pub next_offset: i64,
    pub buf: Rc<B>,
    pub start: usize,
    pub len: usize,
}

pub(crate) struct BatchCache<B> {
    max_bytes: usize,
    bytes: usize,
    logs: HashMap<u64, VecDeque<CachedBatch<B>>>,
    /// Eviction order over all logs: (log id, base offset).
    fifo: VecDeque<(u64, i64)>,
}

impl<B: AlignedBuf> BatchCache<B> {
    pub(crate) fn new(max_bytes: usize) -> BatchCache<B> {
        BatchCache {
            max_bytes,
            bytes: 0,
            logs: HashMap::new(),
            fifo: VecDeque::new(),
        }
    }

    /// Adds a written batch; it must directly follow the log's newest cached batch, else the
    /// log's entries are dropped first (a gap would make reads skip data).
    pub(crate) fn insert(&mut self, log: u64, batch: CachedBatch<B>) {
        if self.max_bytes == 0 || batch.len > self.max_bytes {
            self.remove_log(log);
            return;
        }
        let entries = self.logs.entry(log).or_default();
        if entries
            .back()
            .is_some_and(|b| b.next_offset != batch.base_offset)
        {
            self.bytes -= entries.iter().map(|b| b.len).sum::<usize>();
            entries.clear();
        }
        self.bytes += batch.len;
        self.fifo.push_back((log, batch.base_offset));
        entries.push_back(batch);
        while self.bytes > self.max_bytes {
            let Some((victim, base)) = self.fifo.pop_front() else {
                break;
            };
            self.evict(victim, base);
        }
    }

    fn evict(&mut self, log: u64, base: i64) {
        if let Some(entries) = self.logs.get_mut(&log) {
            // Stale fifo entries (truncated or already dropped batches) are skipped.
            if entries.front().is_some_and(|b| b.base_offset == base)
                && let Some(b) = entries.pop_front()
            {
                self.bytes -= b.len;
            }
            if entries.is_empty() {
                self.logs.remove(&log);
            }
        }
    }

    /// The cached batches from the one containing `offset`, whole batches up to `max_bytes`
    /// (at least one), all below `limit` (the log's written end). None when the cache does
    /// not hold `offset`.
    pub(crate) fn read(
        &self,
        log: u64,
        offset: i64,
        max_bytes: usize,
        limit: i64,
    ) -> Option<Vec<&CachedBatch<B>>> {
        let entries = self.logs.get(&log)?;
        let first = entries.front()?;
        if offset < first.base_offset {
            return None;
        }
        let start = entries.partition_point(|b| b.next_offset <= offset);
        let mut out = Vec::new();
        let mut total = 0usize;
        for b in entries.range(start..) {
            if b.next_offset > limit || (!out.is_empty() && total + b.len > max_bytes) {
                break;
            }
            total += b.len;
            out.push(b);
        }
        (!out.is_empty()).then_some(out)
    }

    /// Drops the log's batches at or after `offset` (truncation, or appends given back).
    pub(crate) fn truncate(&mut self, log: u64, offset: i64) {
        if let Some(entries) = self.logs.get_mut(&log) {
            while entries.back().is_some_and(|b| b.next_offset > offset) {
                if let Some(b) = entries.pop_back() {
                    self.bytes -= b.len;
                }
            }
        }
    }

    /// Drops the log's batches that start below `offset` (the cleaner replaced their segment:
    /// the cache must not serve records the cleaned log no longer holds).
    pub(crate) fn drop_below(&mut self, log: u64, offset: i64) {
        if let Some(entries) = self.logs.get_mut(&log) {
            while entries.front().is_some_and(|b| b.base_offset < offset) {
                if let Some(b) = entries.pop_front() {
                    self.bytes -= b.len;
                }
            }
        }
    }

    pub(crate) fn remove_log(&mut self, log: u64) {
        if let Some(entries) = self.logs.remove(&log) {
            self.bytes -= entries.iter().map(|b| b.len).sum::<usize>();
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::disk::Disk;
    use crate::storage::sim_disk::SimBuf;
    use crate::storage::sim_disk::SimDisk;

    fn batch(buf: &Rc<SimBuf>, base: i64, n: i64, start: usize, len: usize) -> CachedBatch<SimBuf> {
        CachedBatch {
            base_offset: base,
            next_offset: base + n,
            buf: buf.clone(),
            start,
            len,
        }
    }

    #[test]
    fn reads_evicts_and_truncates() {
        let buf = Rc::new(SimDisk::new().alloc(4096));
        let mut c = BatchCache::new(300);
        c.insert(1, batch(&buf, 0, 10, 0, 100));
        c.insert(1, batch(&buf, 10, 10, 100, 100));
        c.insert(2, batch(&buf, 0, 5, 200, 100));
        // Mid-batch offset starts at the containing batch.
        let r = c.read(1, 15, 1000, 20).unwrap();
        assert_eq!(
            r.iter().map(|b| b.base_offset).collect::<Vec<_>>(),
            vec![10]
        );
        // Max bytes: at least one batch, then whole batches only.
        assert_eq!(c.read(1, 0, 150, 20).unwrap().len(), 1);
        // Limit: nothing past the written end.
        assert!(c.read(1, 10, 1000, 15).is_none());
        // Over budget: the oldest batch of the shard goes.
        c.insert(2, batch(&buf, 5, 5, 300, 100));
        assert_eq!(c.bytes(), 300);
        assert!(c.read(1, 0, 1000, 20).is_none());
        c.truncate(2, 5);
        assert_eq!(c.bytes(), 200);
        // A gap drops the log's entries rather than serving around it.
        c.insert(1, batch(&buf, 40, 1, 0, 10));
        assert!(c.read(1, 10, 1000, 100).is_none());
        c.insert(1, batch(&buf, 41, 1, 10, 10));
        c.drop_below(1, 41);
        assert!(c.read(1, 40, 1000, 100).is_none());
        assert_eq!(c.read(1, 41, 1000, 100).unwrap().len(), 1);
    }
}
