//! Black-box tests of the record layer: builder -> parse -> records for every codec, CRC
//! checks, the produce-path rewrite, and hostile bytes (errors, never panics).

use bytes::Bytes;
use corebus_wire::record::compression::{compress_snappy_raw, decompress};
use corebus_wire::record::{
    BATCH_HEADER_BYTES, BatchHeader, Compression, ControlType, Record, RecordBatch,
    RecordBatchBuilder, RecordBatches, RecordError, Records, TimestampType, verify_batch_crc,
};
use proptest::prelude::*;

const CODECS: [Compression; 5] = Compression::ALL;

fn sample_batch(codec: Compression, records: usize) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new(codec);
    builder
        .base_offset(0)
        .producer(4242, 3, 17)
        .transactional(true);
    for i in 0..records {
        let key = format!("key-{i}");
        let value = format!("value-{i}-").repeat(i % 7 + 1);
        builder.record_with_headers(
            1_700_000_000_000 + i as i64,
            (i % 3 != 0).then_some(key.as_bytes()),
            (i % 5 != 0).then_some(value.as_bytes()),
            &[
                (b"trace", Some(b"a")),
                (b"trace", Some(b"b")),
                (b"empty", None),
            ],
        );
    }
    builder.build().expect("a valid batch builds")
}

fn collect(batch: &RecordBatch) -> Vec<Record> {
    batch
        .records()
        .expect("records open")
        .collect::<Result<_, _>>()
        .expect("records parse")
}

#[test]
fn every_codec_round_trips_through_parse_and_records() {
    for codec in CODECS {
        let built = sample_batch(codec, 50);
        let batch = RecordBatch::parse(built.as_bytes().clone()).unwrap();
        batch.verify_crc().unwrap();
        assert_eq!(batch.compression().unwrap(), codec);
        assert_eq!(batch.magic(), 2);
        assert_eq!(batch.record_count(), 50);
        assert_eq!(batch.last_offset_delta(), 49);
        assert_eq!(batch.next_offset(), 50);
        assert_eq!(batch.producer_id(), 4242);
        assert_eq!(batch.producer_epoch(), 3);
        assert_eq!(batch.base_sequence(), 17);
        assert!(batch.is_transactional() && !batch.is_control());
        assert_eq!(batch.timestamp_type(), TimestampType::CreateTime);
        assert_eq!(batch.base_timestamp(), 1_700_000_000_000);
        assert_eq!(batch.max_timestamp(), 1_700_000_000_049);
        let records = collect(&batch);
        assert_eq!(records.len(), 50);
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.offset_delta, i as i32);
            assert_eq!(record.timestamp_delta, i as i64);
            assert_eq!(record.key.is_some(), i % 3 != 0, "{codec:?} record {i}");
            assert_eq!(record.value.is_some(), i % 5 != 0);
            if let Some(value) = &record.value {
                assert_eq!(
                    &value[..],
                    format!("value-{i}-").repeat(i % 7 + 1).as_bytes()
                );
            }
            let headers: Vec<(&[u8], Option<&[u8]>)> = record
                .headers
                .iter()
                .map(|h| (&h.key[..], h.value.as_deref()))
                .collect();
            assert_eq!(
                headers,
                [
                    (&b"trace"[..], Some(&b"a"[..])),
                    (&b"trace"[..], Some(&b"b"[..])),
                    (&b"empty"[..], None)
                ]
            );
        }
        // BatchHeader reads the same fields from a plain slice.
        assert_eq!(
            BatchHeader::parse(batch.as_bytes()).unwrap(),
            batch.header()
        );
    }
}

#[test]
fn records_of_an_uncompressed_batch_are_slices_of_it() {
    let batch = sample_batch(Compression::None, 3);
    let records = collect(&batch);
    let value = records[1].value.as_ref().unwrap();
    let batch_range = batch.as_bytes().as_ptr_range();
    assert!(
        batch_range.contains(&value.as_ptr()),
        "no copy of record data"
    );
}

#[test]
fn raw_snappy_from_librdkafka_is_read_too() {
    let builder = sample_batch(Compression::None, 10);
    let plain = builder.as_bytes()[BATCH_HEADER_BYTES..].to_vec();
    let raw = compress_snappy_raw(&plain).unwrap();
    assert_eq!(
        decompress(Compression::Snappy, &raw, plain.len()).unwrap(),
        plain
    );
    // Rebuild the batch around the raw block and iterate it.
    let mut bytes = builder.as_bytes()[..BATCH_HEADER_BYTES].to_vec();
    bytes[22] |= 2; // attributes low byte: snappy
    bytes.extend_from_slice(&raw);
    let length = (bytes.len() - 12) as i32;
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    let batch = RecordBatch::parse(Bytes::from(bytes)).unwrap();
    assert_eq!(collect(&batch).len(), 10);
}

#[test]
fn crc_mismatch_is_detected_anywhere_in_the_covered_bytes() {
    let batch = sample_batch(Compression::Lz4, 20);
    for at in [21, 30, 60, 61, batch.len() / 2, batch.len() - 1] {
        let mut bytes = batch.as_bytes().to_vec();
        bytes[at] ^= 0x40;
        let result = verify_batch_crc(&bytes);
        assert!(
            matches!(result, Err(RecordError::CrcMismatch { .. })),
            "flip at {at}"
        );
    }
    // Fields outside the CRC (base offset, length, epoch) do not affect it.
    let mut bytes = batch.as_bytes().to_vec();
    bytes[3] ^= 1;
    bytes[13] ^= 1;
    verify_batch_crc(&bytes).unwrap();
}

#[test]
fn rewrite_sets_offset_epoch_and_log_append_time_with_a_valid_crc() {
    for codec in CODECS {
        let batch = sample_batch(codec, 8);
        let mut dst = vec![0u8; batch.len()];
        batch.copy_rewritten(&mut dst, 1_000_000, 12, Some(1_800_000_000_000));
        // The CRC updated by linearity equals a full recomputation.
        assert_eq!(
            u32::from_be_bytes(dst[17..21].try_into().unwrap()),
            crc32c::crc32c(&dst[21..])
        );
        let out = RecordBatch::parse(Bytes::from(dst)).unwrap();
        out.verify_crc().unwrap();
        assert_eq!(out.base_offset(), 1_000_000);
        assert_eq!(out.last_offset(), 1_000_007);
        assert_eq!(out.partition_leader_epoch(), 12);
        assert_eq!(out.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(out.max_timestamp(), 1_800_000_000_000);
        // Kafka leaves the base timestamp and everything else alone.
        assert_eq!(out.base_timestamp(), batch.base_timestamp());
        assert_eq!(out.compression().unwrap(), codec);
        assert!(out.is_transactional());
        assert_eq!(out.as_bytes()[61..], batch.as_bytes()[61..]);
        assert_eq!(collect(&out), collect(&batch));

        // Without LogAppendTime only the fields outside the CRC change: same CRC.
        let mut dst = vec![0u8; batch.len()];
        batch.copy_rewritten(&mut dst, 5, 6, None);
        let out = RecordBatch::parse(Bytes::from(dst)).unwrap();
        assert_eq!(out.crc(), batch.crc());
        assert_eq!(out.timestamp_type(), TimestampType::CreateTime);
        assert_eq!((out.base_offset(), out.partition_leader_epoch()), (5, 6));
    }
}

#[test]
fn batches_of_a_record_set_are_split_without_copies() {
    let mut set = Vec::new();
    let mut offset = 0;
    for codec in CODECS {
        let mut builder = RecordBatchBuilder::new(codec);
        builder.base_offset(offset);
        for i in 0..3 {
            builder.record(i, None, Some(b"v"));
        }
        set.extend_from_slice(builder.build().unwrap().as_bytes());
        offset += 3;
    }
    let set = Bytes::from(set);
    let batches: Vec<RecordBatch> = RecordBatches::new(set.clone())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(batches.len(), 5);
    for (i, batch) in batches.iter().enumerate() {
        assert_eq!(batch.base_offset(), 3 * i as i64);
        assert!(set.as_ptr_range().contains(&batch.as_bytes().as_ptr()));
        assert_eq!(collect(batch).len(), 3);
    }
    // A fetch response cut inside the last batch.
    let cut = set.slice(..set.len() - 5);
    assert_eq!(RecordBatches::allow_partial_tail(cut.clone()).count(), 4);
    assert!(RecordBatches::new(cut).last().unwrap().is_err());
}

#[test]
fn control_batches_read_back() {
    let mut builder = RecordBatchBuilder::new(Compression::None);
    builder
        .producer(9, 1, -1)
        .control_marker(ControlType::Abort, 3, 100);
    let batch = builder.build().unwrap();
    let record = &collect(&batch)[0];
    assert_eq!(
        ControlType::from_key(record.key.as_deref().unwrap()),
        Some(ControlType::Abort)
    );
}

#[test]
fn truncated_and_corrupt_batches_are_errors() {
    let batch = sample_batch(Compression::Gzip, 5);
    let bytes = batch.as_bytes().clone();
    for len in [0, 11, 12, 16, 17, 60, 61, bytes.len() - 1] {
        assert!(
            RecordBatch::parse(bytes.slice(..len)).is_err(),
            "truncated to {len}"
        );
        assert!(RecordBatches::new(bytes.slice(..len)).all(|b| b.is_err()));
    }
    // Compressed data cut short (header length patched to match).
    let mut short = bytes[..bytes.len() - 10].to_vec();
    let length = (short.len() - 12) as i32;
    short[8..12].copy_from_slice(&length.to_be_bytes());
    let short = RecordBatch::parse(Bytes::from(short)).unwrap();
    assert!(
        short
            .records()
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .is_err()
    );
    // A record count far larger than the data.
    let mut hostile = sample_batch(Compression::None, 2).as_bytes().to_vec();
    hostile[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    let hostile = RecordBatch::parse(Bytes::from(hostile)).unwrap();
    assert!(matches!(
        hostile.records(),
        Err(RecordError::RecordCountTooLarge { .. })
    ));
    // Magic 1 is refused with the error Kafka 4 answers.
    let mut old = bytes.to_vec();
    old[16] = 1;
    let error = RecordBatch::parse(Bytes::from(old)).unwrap_err();
    assert!(matches!(error, RecordError::UnsupportedMagic(1)));
    assert_eq!(error.kafka_error_code(), 87);
    // Unknown codec id.
    let mut codec = bytes.to_vec();
    codec[22] = 6;
    let batch = RecordBatch::parse(Bytes::from(codec)).unwrap();
    assert!(matches!(
        batch.records(),
        Err(RecordError::UnknownCompression(6))
    ));
}

#[test]
fn decompression_limit_applies_to_records() {
    let mut builder = RecordBatchBuilder::new(Compression::Zstd);
    builder.record(0, None, Some(&vec![0u8; 1 << 20]));
    let batch = builder.build().unwrap();
    assert!(batch.len() < 10_000);
    assert!(matches!(
        batch.records_with_limit(64 << 10),
        Err(RecordError::DecompressedTooLarge { .. })
    ));
    assert_eq!(collect(&batch).len(), 1);
}

/// Reads everything the record layer can read from `bytes`; must never panic.
fn exercise(bytes: Bytes) {
    for batch in RecordBatches::allow_partial_tail(bytes.clone())
        .chain(RecordBatches::new(bytes.clone()))
        .flatten()
    {
        let _ = batch.verify_crc();
        let _ = batch.header();
        let _ = (
            batch.last_offset(),
            batch.next_offset(),
            batch.timestamp_type(),
        );
        if let Ok(records) = batch.records_with_limit(1 << 20) {
            for record in records {
                let _ = record;
            }
        }
        let mut dst = vec![0u8; batch.len()];
        batch.copy_rewritten(&mut dst, i64::MAX, -1, Some(i64::MIN));
    }
    let _ = BatchHeader::parse(&bytes);
    if let Ok(records) = Records::new(bytes, 3) {
        for record in records {
            let _ = record;
        }
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(Bytes::from(bytes));
    }

    /// Valid batches with random bytes overwritten reach deep into the record parser.
    #[test]
    fn mutated_batches_never_panic(
        codec in 0usize..5,
        records in 0usize..6,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let batch = sample_batch(CODECS[codec], records);
        let mut bytes = batch.as_bytes().to_vec();
        for (at, value) in edits {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        let len = bytes.len();
        exercise(Bytes::from(bytes.clone()));
        bytes.truncate(cut.index(len + 1));
        exercise(Bytes::from(bytes));
    }
}
