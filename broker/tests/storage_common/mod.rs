//! Helpers shared by the storage tests: a small glommio executor, deterministic batches and
//! a byte-for-byte check of a log against what was appended.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use corebus_broker::storage::{Disk, PartitionLog, testing};
use corebus_wire::record::{BatchHeader, RecordBatch};
use glommio::{LocalExecutorBuilder, Placement};

/// Runs `f` on a small executor (tests run in parallel on two cores).
pub fn run<F, T>(f: impl FnOnce() -> F) -> T
where
    F: Future<Output = T>,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(2 << 20)
        .spin_before_park(Duration::from_millis(0))
        .make()
        .expect("glommio executor")
        .run(f())
}

/// Deterministic batch parameters for a seed: (records, bytes, timestamp).
pub fn shape(seed: u64) -> (i32, usize, i64) {
    let x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
    let records = 1 + (x % 20) as i32;
    let len = 61 + (x % 6000) as usize;
    (records, len, 1_000_000 + seed as i64)
}

pub fn make(seed: u64) -> RecordBatch {
    let (records, len, ts) = shape(seed);
    testing::batch(records, len, ts, seed as u8)
}

/// The bytes the log must hold for `batch` appended at `base` with `epoch`.
pub fn expected(batch: &RecordBatch, base: i64, epoch: i32) -> Vec<u8> {
    let mut v = vec![0u8; batch.len()];
    batch.copy_rewritten(&mut v, base, epoch, None);
    v
}

/// Reads the whole log from its start: every batch, in order, checked for contiguity.
pub async fn read_all<D: Disk>(log: &PartitionLog<D>) -> Vec<(BatchHeader, Bytes)> {
    let out = read_batches(log, true).await;
    let end = out
        .last()
        .map_or(log.log_start_offset(), |(h, _)| h.next_offset());
    assert_eq!(
        end.max(log.log_start_offset()),
        log.written_offset(),
        "read stops at the high watermark"
    );
    out
}

/// Reads every batch from the log start, in order; offsets must increase, and with
/// `contiguous` each batch must start where the previous one ended (a compacted log has gaps).
pub async fn read_batches<D: Disk>(
    log: &PartitionLog<D>,
    contiguous: bool,
) -> Vec<(BatchHeader, Bytes)> {
    let mut out: Vec<(BatchHeader, Bytes)> = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let r = log.read(offset, 64 << 10).await.expect("read");
        if r.is_empty() {
            break;
        }
        let all = r.to_bytes();
        let mut rest = all.clone();
        while !rest.is_empty() {
            let h = BatchHeader::parse(&rest).expect("valid header");
            let b = rest.split_to(h.total_len());
            corebus_wire::record::verify_batch_crc(&b).expect("crc");
            if let Some((prev, _)) = out.last() {
                let prev: &BatchHeader = prev;
                if contiguous {
                    assert_eq!(
                        h.base_offset,
                        prev.next_offset(),
                        "gap or overlap in the log"
                    );
                } else {
                    assert!(h.base_offset >= prev.next_offset(), "overlap in the log");
                }
            }
            offset = h.next_offset();
            out.push((h, b));
        }
    }
    out
}
