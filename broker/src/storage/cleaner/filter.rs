//! What the cleaner keeps of one batch.
//!
//! Owns the retention rule, Kafka's:
//! - a record is kept when it is the latest of its key over the range the offset map covers
//!   (its offset is at or above the map's offset for the key) or its key is not in the map;
//! - a record without a key is dropped (a compacted topic refuses them; older ones can only
//!   come from before the topic was compacted), as Kafka's cleaner does;
//! - a tombstone (null value) stays until its batch's delete horizon has passed: the first
//!   clean that keeps it stamps `now + delete.retention.ms` into the batch (KIP-534), a later
//!   clean after that time removes it;
//! - batches at or above the end of the map's range, and control batches, stay as they are;
//! - a batch left without records is dropped, except the last batch of each idempotent
//!   producer id in the cleaned range, which stays empty so that producer state (epoch, last
//!   sequence) rebuilds from the log as it did before, and the last batch of each cleaned
//!   segment group, which stays empty so that the group's end offset is still in the data
//!   (recovery derives the log end offset from the last segment's last batch).
//!
//! The records themselves are re-encoded by `corebus_wire::record::retain_records` (offsets
//! and offset deltas unchanged, same codec, fresh CRC).
//! Never: changes an offset, or keeps a record whose key has a later record in the map.

use std::collections::HashMap;

use corebus_wire::record::{RecordBatch, RecordError, retain_records};

use super::offset_map::OffsetMap;

/// What the filter needs besides the batch.
pub(crate) struct FilterContext<'a> {
    pub map: &'a OffsetMap,
    /// Batches from here on are beyond the map's range and kept as they are.
    pub map_end: i64,
    pub now_ms: i64,
    pub delete_retention_ms: i64,
    /// Base offset of the last batch of each producer id in the cleaned range.
    pub last_batch_of_producer: &'a HashMap<i64, i64>,
    pub max_decompressed_bytes: usize,
}

/// The filter's answer for one batch.
#[derive(Debug)]
pub(crate) struct Filtered {
    /// The batch to write (the input itself when unchanged), or None to drop it.
    pub batch: Option<RecordBatch>,
    /// Whether the output differs from the input.
    pub changed: bool,
    /// Delete horizon of the tombstones this batch still holds, if any.
    pub tombstone_horizon_ms: Option<i64>,
    /// For a dropped batch: its header without records, which the cleaner writes instead
    /// when the batch is the last of its segment group (so the group's end offset stays
    /// readable from the data: recovery derives a log end offset from it).
    pub emptied: Option<RecordBatch>,
}

pub(crate) fn filter_batch(
    batch: &RecordBatch,
    cx: &FilterContext<'_>,
) -> Result<Filtered, RecordError> {
    let unchanged = |b: &RecordBatch| Filtered {
        batch: Some(b.clone()),
        changed: false,
        tombstone_horizon_ms: None,
        emptied: None,
    };
    if batch.is_control() || batch.base_offset() >= cx.map_end {
        return Ok(unchanged(batch));
    }
    let base = batch.base_offset();
    let expired = batch.has_delete_horizon() && batch.base_timestamp() <= cx.now_ms;
    let mut kept_tombstones = 0usize;
    let horizon = cx.now_ms.saturating_add(cx.delete_retention_ms.max(0));
    let out = retain_records(batch, cx.max_decompressed_bytes, Some(horizon), |r| {
        let Some(key) = r.key.as_deref() else {
            return false;
        };
        let offset = base + i64::from(r.offset_delta);
        if cx.map.get(key).is_some_and(|latest| offset < latest) {
            return false;
        }
        if r.value.is_none() {
            if expired {
                return false;
            }
            kept_tombstones += 1;
        }
        true
    })?;
    let changed = out.rewritten;
    let b = out.batch;
    let tombstone_horizon_ms =
        (kept_tombstones > 0 && b.has_delete_horizon()).then(|| b.base_timestamp());
    if out.kept > 0 {
        return Ok(Filtered {
            batch: Some(b),
            changed,
            tombstone_horizon_ms,
            emptied: None,
        });
    }
    let pid = b.producer_id();
    let last_of_producer = pid >= 0 && cx.last_batch_of_producer.get(&pid) == Some(&base);
    Ok(Filtered {
        changed: changed || !last_of_producer,
        emptied: (!last_of_producer).then(|| b.clone()),
        batch: last_of_producer.then_some(b),
        tombstone_horizon_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use corebus_wire::record::{Compression, ControlType, Record, RecordBatchBuilder};

    struct Fixture {
        map: OffsetMap,
        producers: HashMap<i64, i64>,
    }

    impl Fixture {
        fn new(keys: &[(&[u8], i64)]) -> Fixture {
            let mut map = OffsetMap::new(1 << 20, 3);
            for (k, o) in keys {
                map.put(k, *o);
            }
            Fixture {
                map,
                producers: HashMap::new(),
            }
        }
        fn cx(&self, now_ms: i64) -> FilterContext<'_> {
            FilterContext {
                map: &self.map,
                map_end: 1_000,
                now_ms,
                delete_retention_ms: 100,
                last_batch_of_producer: &self.producers,
                max_decompressed_bytes: 1 << 20,
            }
        }
    }

    /// (key, value) of a record to build.
    type Kv<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    fn build(base: i64, codec: Compression, records: &[Kv<'_>]) -> RecordBatch {
        let mut b = RecordBatchBuilder::new(codec);
        b.base_offset(base);
        for (i, (k, v)) in records.iter().enumerate() {
            b.record(10 + i as i64, *k, *v);
        }
        b.build().unwrap()
    }

    fn kept(f: &Filtered) -> Vec<(i32, Option<Vec<u8>>)> {
        let b = f.batch.as_ref().unwrap();
        b.records()
            .unwrap()
            .map(|r: Result<Record, _>| {
                let r = r.unwrap();
                (r.offset_delta, r.value.map(|v| v.to_vec()))
            })
            .collect()
    }

    #[test]
    fn keeps_the_latest_per_key_in_compressed_batches_too() {
        let fx = Fixture::new(&[(b"a", 12), (b"b", 11)]);
        for codec in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let batch = build(
                10,
                codec,
                &[
                    (Some(b"a"), Some(b"a0")),
                    (Some(b"b"), Some(b"b1")),
                    (Some(b"a"), Some(b"a2")),
                    (Some(b"c"), Some(b"c3")),
                    (None, Some(b"keyless")),
                ],
            );
            let f = filter_batch(&batch, &fx.cx(0)).unwrap();
            assert!(f.changed);
            let out = f.batch.as_ref().unwrap();
            out.verify_crc().unwrap();
            assert_eq!(out.compression().unwrap(), codec);
            assert_eq!(out.base_offset(), 10);
            assert_eq!(out.last_offset(), 14);
            // b1 (latest), a2 (latest), c3 (not in the map: beyond what the map saw).
            assert_eq!(
                kept(&f),
                vec![
                    (1, Some(b"b1".to_vec())),
                    (2, Some(b"a2".to_vec())),
                    (3, Some(b"c3".to_vec()))
                ]
            );
        }
    }

    #[test]
    fn tombstones_get_a_horizon_then_go_after_it() {
        let fx = Fixture::new(&[(b"a", 10)]);
        let batch = build(10, Compression::None, &[(Some(b"a"), None)]);
        let first = filter_batch(&batch, &fx.cx(1_000)).unwrap();
        assert!(first.changed);
        assert_eq!(first.tombstone_horizon_ms, Some(1_100));
        let stamped = first.batch.unwrap();
        assert!(stamped.has_delete_horizon());
        // Before the horizon: still there, unchanged.
        let again = filter_batch(&stamped, &fx.cx(1_099)).unwrap();
        assert!(!again.changed);
        assert_eq!(again.tombstone_horizon_ms, Some(1_100));
        // At the horizon: removed, and the emptied batch goes.
        let gone = filter_batch(&stamped, &fx.cx(1_100)).unwrap();
        assert!(gone.changed && gone.batch.is_none());
    }

    #[test]
    fn the_last_batch_of_a_producer_stays_empty() {
        let mut fx = Fixture::new(&[(b"a", 50)]);
        let mut b = RecordBatchBuilder::new(Compression::Snappy);
        b.base_offset(20).producer(77, 3, 5);
        b.record(1, Some(b"a"), Some(b"old"));
        b.record(2, Some(b"a"), Some(b"older"));
        let batch = b.build().unwrap();
        // Not the producer's last batch in the range: dropped.
        fx.producers.insert(77, 40);
        let f = filter_batch(&batch, &fx.cx(0)).unwrap();
        assert!(f.changed && f.batch.is_none());
        // Its last batch: kept without records, offsets and sequence intact.
        fx.producers.insert(77, 20);
        let f = filter_batch(&batch, &fx.cx(0)).unwrap();
        let out = f.batch.unwrap();
        assert_eq!(out.record_count(), 0);
        assert_eq!((out.base_offset(), out.last_offset()), (20, 21));
        assert_eq!(
            (out.producer_id(), out.producer_epoch(), out.base_sequence()),
            (77, 3, 5)
        );
        out.verify_crc().unwrap();
    }

    #[test]
    fn control_batches_and_batches_past_the_map_are_untouched() {
        let fx = Fixture::new(&[(b"a", 5_000)]);
        let mut b = RecordBatchBuilder::new(Compression::None);
        b.base_offset(30)
            .producer(1, 0, -1)
            .control_marker(ControlType::Commit, 0, 5);
        let marker = b.build().unwrap();
        let f = filter_batch(&marker, &fx.cx(0)).unwrap();
        assert!(!f.changed);
        let late = build(1_000, Compression::None, &[(Some(b"a"), Some(b"x"))]);
        let f = filter_batch(&late, &fx.cx(0)).unwrap();
        assert!(!f.changed);
        assert_eq!(f.batch.unwrap().as_bytes(), late.as_bytes());
    }
}
