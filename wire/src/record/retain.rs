//! Rewriting one batch with a subset of its records: what log compaction does to a batch.
//!
//! Owns: re-encoding the kept records of a magic-2 batch (decompressed first when the batch
//! is compressed, recompressed with the same codec), with the batch's base offset, last
//! offset delta, producer id, epoch and base sequence, partition leader epoch and max
//! timestamp unchanged, every kept record's offset delta unchanged, and a fresh CRC. It can
//! also stamp the KIP-534 delete horizon: the base timestamp then holds the horizon, the
//! horizon attribute bit is set, and every record's timestamp delta is recomputed so that the
//! records' absolute timestamps do not move.
//!
//! Never: renumbers offsets, drops the batch itself (an empty result keeps its header, as
//! Kafka keeps the last batch of an idempotent producer), or touches a control batch's
//! meaning (the caller decides which batches it rewrites).

use bytes::Bytes;

use super::batch::{BATCH_HEADER_BYTES, BATCH_OVERHEAD_BYTES, DELETE_HORIZON_BIT, RecordBatch};
use super::builder::{RecordFields, put_record};
use super::compression::{Compression, compress};
use super::{Record, RecordError};

/// What [`retain_records`] made of a batch.
#[derive(Debug)]
pub struct RetainedBatch {
    /// The rewritten batch (the original bytes when nothing changed).
    pub batch: RecordBatch,
    /// Records kept.
    pub kept: usize,
    /// Records the batch held before.
    pub total: usize,
    /// Whether the bytes differ from the original (records dropped or a horizon stamped).
    pub rewritten: bool,
}

impl RetainedBatch {
    /// Whether the result is the original batch, byte for byte.
    pub fn unchanged(&self) -> bool {
        !self.rewritten
    }
}

/// Rewrites `batch` keeping the records for which `keep` is true. `delete_horizon_ms`, when
/// given, the batch has no horizon yet and a kept record is a tombstone (null value), is
/// stamped as the batch's delete horizon (KIP-534: the cleaner may remove the batch's
/// tombstones once that time has passed).
/// `max_decompressed_bytes` bounds the decompressed record data.
pub fn retain_records(
    batch: &RecordBatch,
    max_decompressed_bytes: usize,
    delete_horizon_ms: Option<i64>,
    mut keep: impl FnMut(&Record) -> bool,
) -> Result<RetainedBatch, RecordError> {
    let mut kept = Vec::new();
    let mut total = 0usize;
    for record in batch.records_with_limit(max_decompressed_bytes)? {
        let record = record?;
        total += 1;
        if keep(&record) {
            kept.push(record);
        }
    }
    let has_tombstone = kept.iter().any(|r| r.value.is_none());
    let horizon = delete_horizon_ms.filter(|_| has_tombstone && !batch.has_delete_horizon());
    if kept.len() == total && horizon.is_none() {
        return Ok(RetainedBatch {
            batch: batch.clone(),
            kept: total,
            total,
            rewritten: false,
        });
    }
    let old_base = batch.base_timestamp();
    let new_base = horizon.unwrap_or(old_base);
    let mut data = Vec::new();
    let mut body = Vec::new();
    for r in &kept {
        let timestamp = old_base.wrapping_add(r.timestamp_delta);
        let fields = RecordFields {
            attributes: r.attributes as u8,
            timestamp_delta: timestamp.wrapping_sub(new_base),
            offset_delta: r.offset_delta,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: &r.headers,
        };
        put_record(&mut data, &mut body, &fields);
    }
    let codec = batch.compression()?;
    let records = match codec {
        Compression::None => data,
        codec => compress(codec, &data)?,
    };
    let mut attributes = batch.attributes();
    if horizon.is_some() {
        attributes |= DELETE_HORIZON_BIT;
    }
    let total_len = BATCH_HEADER_BYTES + records.len();
    let batch_length = i32::try_from(total_len - BATCH_OVERHEAD_BYTES).map_err(|_| {
        RecordError::InvalidLength {
            what: "rewritten batch",
            length: total_len as i64,
        }
    })?;
    let mut out = Vec::with_capacity(total_len);
    out.extend_from_slice(&batch.base_offset().to_be_bytes());
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&batch.partition_leader_epoch().to_be_bytes());
    out.push(batch.magic() as u8);
    out.extend_from_slice(&[0; 4]); // CRC, below
    let crc_start = out.len();
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&batch.last_offset_delta().to_be_bytes());
    out.extend_from_slice(&new_base.to_be_bytes());
    out.extend_from_slice(&batch.max_timestamp().to_be_bytes());
    out.extend_from_slice(&batch.producer_id().to_be_bytes());
    out.extend_from_slice(&batch.producer_epoch().to_be_bytes());
    out.extend_from_slice(&batch.base_sequence().to_be_bytes());
    out.extend_from_slice(&(kept.len() as i32).to_be_bytes());
    out.extend_from_slice(&records);
    let crc = crc32c::crc32c(&out[crc_start..]);
    out[crc_start - 4..crc_start].copy_from_slice(&crc.to_be_bytes());
    Ok(RetainedBatch {
        batch: RecordBatch::parse(Bytes::from(out))?,
        kept: kept.len(),
        total,
        rewritten: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordBatchBuilder;

    fn batch(codec: Compression) -> RecordBatch {
        let mut b = RecordBatchBuilder::new(codec);
        b.base_offset(100)
            .partition_leader_epoch(4)
            .producer(9, 1, 50)
            .record(1_000, Some(b"a"), Some(b"1"))
            .record_with_headers(1_010, Some(b"b"), None, &[(b"h", Some(b"v"))])
            .record(990, Some(b"a"), Some(b"2"));
        b.build().unwrap()
    }

    fn records(b: &RecordBatch) -> Vec<Record> {
        b.records().unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn keeps_offsets_header_and_a_valid_crc_for_every_codec() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let original = batch(codec);
            let out = retain_records(&original, 1 << 20, None, |r| r.offset_delta != 0).unwrap();
            let b = out.batch;
            b.verify_crc().unwrap();
            assert_eq!((out.kept, out.total), (2, 3));
            assert_eq!(b.compression().unwrap(), codec);
            assert_eq!(b.base_offset(), 100);
            assert_eq!(b.last_offset(), 102, "last offset delta is kept");
            assert_eq!(b.record_count(), 2);
            assert_eq!(b.partition_leader_epoch(), 4);
            assert_eq!(
                (b.producer_id(), b.producer_epoch(), b.base_sequence()),
                (9, 1, 50)
            );
            assert_eq!(b.max_timestamp(), original.max_timestamp());
            let rs = records(&b);
            assert_eq!(rs[0].offset_delta, 1);
            assert_eq!(rs[0].value, None);
            assert_eq!(rs[0].headers.len(), 1);
            assert_eq!(rs[1].offset_delta, 2);
            assert_eq!(rs[1].value.as_deref(), Some(&b"2"[..]));
        }
    }

    #[test]
    fn keeping_everything_returns_the_same_bytes() {
        let original = batch(Compression::Lz4);
        let out = retain_records(&original, 1 << 20, None, |_| true).unwrap();
        assert!(out.unchanged());
        assert_eq!(out.batch.as_bytes(), original.as_bytes());
    }

    #[test]
    fn an_empty_result_keeps_the_header() {
        let original = batch(Compression::Zstd);
        let out = retain_records(&original, 1 << 20, None, |_| false).unwrap();
        assert_eq!(out.kept, 0);
        out.batch.verify_crc().unwrap();
        assert_eq!(out.batch.record_count(), 0);
        assert_eq!(out.batch.next_offset(), original.next_offset());
        assert_eq!(out.batch.base_sequence(), 50);
        assert!(records(&out.batch).is_empty());
    }

    #[test]
    fn the_delete_horizon_moves_no_record_timestamp() {
        let original = batch(Compression::None);
        let out = retain_records(&original, 1 << 20, Some(5_000_000), |_| true).unwrap();
        let b = out.batch;
        assert!(b.has_delete_horizon());
        assert_eq!(b.base_timestamp(), 5_000_000);
        b.verify_crc().unwrap();
        let before: Vec<i64> = records(&original)
            .iter()
            .map(|r| original.base_timestamp() + r.timestamp_delta)
            .collect();
        let after: Vec<i64> = records(&b)
            .iter()
            .map(|r| b.base_timestamp() + r.timestamp_delta)
            .collect();
        assert_eq!(before, after);
        // A second horizon does not replace the first.
        let again = retain_records(&b, 1 << 20, Some(9_000_000), |_| true).unwrap();
        assert_eq!(again.batch.base_timestamp(), 5_000_000);
        assert!(again.unchanged());
        // Without a kept tombstone there is nothing for a horizon to expire.
        let plain =
            retain_records(&original, 1 << 20, Some(5_000_000), |r| r.value.is_some()).unwrap();
        assert!(!plain.batch.has_delete_horizon());
        assert_eq!(plain.batch.base_timestamp(), original.base_timestamp());
    }
}
