//! Valid record batches for tests and benchmarks of the storage engine.
//!
//! Owns: a minimal magic-2 batch builder whose records are opaque filler bytes (storage never
//! looks inside records). Never: used on a production path.

use bytes::Bytes;
use corebus_wire::record::{BATCH_HEADER_BYTES, RecordBatch};

/// A valid batch of `records` records and `total_len` bytes (at least the 61-byte header),
/// base offset 0, timestamps `max_timestamp`, payload filled from `seed`.
pub fn batch(records: i32, total_len: usize, max_timestamp: i64, seed: u8) -> RecordBatch {
    let total_len = total_len.max(BATCH_HEADER_BYTES);
    let mut b = vec![0u8; total_len];
    b[8..12].copy_from_slice(&((total_len - 12) as i32).to_be_bytes());
    b[16] = 2; // magic
    b[23..27].copy_from_slice(&(records.max(1) - 1).to_be_bytes()); // last offset delta
    b[27..35].copy_from_slice(&max_timestamp.to_be_bytes()); // base timestamp
    b[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producer id
    b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    b[57..61].copy_from_slice(&records.to_be_bytes());
    for (i, byte) in b[BATCH_HEADER_BYTES..].iter_mut().enumerate() {
        *byte = seed.wrapping_add(i as u8).wrapping_mul(31);
    }
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    // Invariant of this builder: the bytes form a valid batch.
    RecordBatch::parse(Bytes::from(b)).expect("testing::batch builds a valid batch")
}
