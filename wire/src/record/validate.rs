//! Validation of a batch that comes from a client (Produce), at parity with Kafka's
//! `LogValidator` for `AppendOrigin.CLIENT`: the offset range agrees with the record count,
//! control batches and producer ids without a sequence are refused, and every record body is
//! parsed (decompressed first when the batch is compressed), so a malformed record never
//! reaches the log where it would break every consumer reading past it. The same pass checks
//! each record's CreateTime against the topic's window, as Kafka's `validateTimestamp` does
//! per record (INVALID_TIMESTAMP, naming the record).
//!
//! Owns: [`InvalidBatch`], the reasons a client's batch is refused and the Kafka error code of
//! each (INVALID_RECORD for what Kafka throws `InvalidRecordException` for, CORRUPT_MESSAGE for
//! bytes that cannot be decoded at all).
//!
//! Never: runs on batches read back from the log or rewritten by the cleaner (a compacted batch
//! legitimately holds fewer records than `last_offset_delta + 1`, possibly none, so
//! [`RecordBatch::parse`] stays lenient); allocates per record (records are walked in place;
//! a compressed batch costs one decompression buffer); checks the CRC (the caller does that
//! first, as Kafka's `ensureValid` does before `LogValidator`).

use thiserror::Error;

use super::batch::{RecordBatch, TimestampType};
use super::compression::{Compression, decompress};
use super::error::{KAFKA_INVALID_RECORD, KAFKA_INVALID_TIMESTAMP};
use super::record::scan_record;
use super::{DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES, RecordError};

/// Why a client's batch is refused. The messages follow Kafka's wording where Kafka has one,
/// so a client's logs read the same against either broker.
#[derive(Error, Debug)]
#[non_exhaustive]
pub enum InvalidBatch {
    /// `last_offset_delta < 0`: the batch would cover no offsets.
    #[error("Batch has an invalid offset range: last offset delta {0}")]
    InvalidOffsetRange(i32),
    /// `record_count <= 0`: Kafka never stores an empty batch from a client.
    #[error("Invalid reported count for record batch: {0}")]
    InvalidRecordCount(i32),
    /// `last_offset_delta + 1 != record_count`: without this one small batch could move the
    /// log end forward by up to 2^31 offsets.
    #[error(
        "Inconsistent batch offset range [0, {last_offset_delta}] and count of records {record_count}"
    )]
    InconsistentOffsetRange {
        last_offset_delta: i32,
        record_count: i32,
    },
    /// Transaction markers are written by the broker only.
    #[error("Clients are not allowed to write control records")]
    ControlBatch,
    /// An idempotent batch (producer id >= 0) must carry a sequence.
    #[error(
        "Invalid sequence number {base_sequence} in record batch with producerId {producer_id}"
    )]
    InvalidSequence {
        producer_id: i64,
        base_sequence: i32,
    },
    /// The record at `index` cannot be parsed.
    #[error("Found invalid record structure in record {index}: {source}")]
    MalformedRecord {
        index: usize,
        #[source]
        source: RecordError,
    },
    /// Records must carry offset deltas 0, 1, 2, ... in order.
    #[error(
        "Record {index} has offset delta {offset_delta}; inner records must have incremental offsets"
    )]
    NonIncrementalOffset { index: usize, offset_delta: i32 },
    /// The record data ends before the declared record count is reached.
    #[error("Batch declares {declared} records but holds only {found}")]
    MissingRecords { declared: i32, found: usize },
    /// Bytes remain after the declared number of records.
    #[error(
        "Incorrect declared batch size, {trailing} bytes remain after the batch's {declared} records"
    )]
    TrailingBytes { declared: i32, trailing: usize },
    /// A compacted topic refuses keyless records: the cleaner could not keep them.
    #[error("Compacted topic cannot accept message without key (record {index})")]
    MissingKey { index: usize },
    /// A record's CreateTime is outside the topic's window
    /// (`message.timestamp.before.max.ms`, `message.timestamp.after.max.ms`).
    #[error(
        "Timestamp {timestamp} of record {index} is out of range. The timestamp should be within [{min}, {max}]"
    )]
    InvalidTimestamp {
        index: usize,
        timestamp: i64,
        min: i64,
        max: i64,
    },
    /// The batch's bytes cannot be decoded at all (unknown codec, failed or oversized
    /// decompression, broken framing).
    #[error("{0}")]
    Corrupt(RecordError),
    /// Several records of one well-formed batch are refused (missing keys, timestamps out of
    /// the window): Kafka lists every one of them in `record_errors`, so does this.
    #[error("{} records refused, the first: {}", .0.len(), .0.first().map_or(String::new(), ToString::to_string))]
    Records(Vec<InvalidBatch>),
}

impl InvalidBatch {
    /// Kafka's answer: INVALID_RECORD for everything Kafka raises `InvalidRecordException` for,
    /// CORRUPT_MESSAGE (or what the framing error itself maps to) for undecodable bytes.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            InvalidBatch::Corrupt(e) => e.kafka_error_code(),
            InvalidBatch::InvalidTimestamp { .. } => KAFKA_INVALID_TIMESTAMP,
            // As Kafka's LogValidator: INVALID_TIMESTAMP if any record's time is refused.
            InvalidBatch::Records(all) => all
                .iter()
                .map(InvalidBatch::kafka_error_code)
                .find(|c| *c == KAFKA_INVALID_TIMESTAMP)
                .unwrap_or(KAFKA_INVALID_RECORD),
            _ => KAFKA_INVALID_RECORD,
        }
    }

    /// The index of the offending record inside its batch, for Produce v8+'s `record_errors`
    /// (KIP-467); `None` when the batch as a whole is at fault.
    pub fn record_index(&self) -> Option<usize> {
        match self {
            InvalidBatch::MalformedRecord { index, .. }
            | InvalidBatch::NonIncrementalOffset { index, .. }
            | InvalidBatch::MissingKey { index }
            | InvalidBatch::InvalidTimestamp { index, .. } => Some(*index),
            InvalidBatch::Records(all) => all.first().and_then(InvalidBatch::record_index),
            _ => None,
        }
    }

    /// Every refused record as (its index in the batch, why), for Produce v8+'s
    /// `record_errors`; empty when the batch as a whole is at fault.
    pub fn record_errors(&self) -> Vec<(usize, String)> {
        match self {
            InvalidBatch::Records(all) => {
                all.iter().flat_map(InvalidBatch::record_errors).collect()
            }
            one => one
                .record_index()
                .map(|i| (i, one.to_string()))
                .into_iter()
                .collect(),
        }
    }

    /// Classifies an error from parsing a client's batch framing ([`RecordBatch::parse`] via
    /// `RecordBatches`): the lenient parse already refuses negative counts and deltas, which
    /// Kafka answers as invalid records; everything else stays what the framing error says
    /// (CORRUPT_MESSAGE, or INVALID_RECORD for magic 0/1).
    pub fn from_parse_error(error: RecordError) -> InvalidBatch {
        match error {
            RecordError::NegativeLastOffsetDelta(delta) => InvalidBatch::InvalidOffsetRange(delta),
            RecordError::NegativeRecordCount(count) => InvalidBatch::InvalidRecordCount(count),
            other => InvalidBatch::Corrupt(other),
        }
    }
}

impl RecordBatch {
    /// The header checks of Kafka's `LogValidator.validateBatch` for a client's batch: offset
    /// range consistent with a positive record count, no control batch, a sequence whenever
    /// there is a producer id. Reads the header only.
    pub fn validate_header_from_client(&self) -> Result<(), InvalidBatch> {
        let last_offset_delta = self.last_offset_delta();
        let record_count = self.record_count();
        if last_offset_delta < 0 {
            return Err(InvalidBatch::InvalidOffsetRange(last_offset_delta));
        }
        if record_count <= 0 {
            return Err(InvalidBatch::InvalidRecordCount(record_count));
        }
        // Both are non-negative i32 here, so the i64 sum cannot overflow.
        if i64::from(last_offset_delta) + 1 != i64::from(record_count) {
            return Err(InvalidBatch::InconsistentOffsetRange {
                last_offset_delta,
                record_count,
            });
        }
        if self.is_control() {
            return Err(InvalidBatch::ControlBatch);
        }
        if self.producer_id() >= 0 && self.base_sequence() < 0 {
            return Err(InvalidBatch::InvalidSequence {
                producer_id: self.producer_id(),
                base_sequence: self.base_sequence(),
            });
        }
        Ok(())
    }

    /// Parses every record of a client's batch in one pass (decompressing a compressed batch
    /// into one buffer of at most [`DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES`]): each record well
    /// formed and using exactly its declared length, record `i` at offset delta `i`, exactly
    /// `record_count` records and no bytes after them; and what `rules` add (keys, CreateTime
    /// bounds).
    pub fn validate_records_from_client(&self, rules: &RecordRules) -> Result<(), InvalidBatch> {
        let compression = self.compression().map_err(InvalidBatch::Corrupt)?;
        let raw = &self.as_bytes()[super::BATCH_HEADER_BYTES..];
        let decompressed;
        let data: &[u8] = match compression {
            // Uncompressed records are walked where they are, without a copy.
            Compression::None => raw,
            codec => {
                decompressed = decompress(codec, raw, DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES)
                    .map_err(InvalidBatch::Corrupt)?;
                &decompressed
            }
        };
        // A LogAppendTime batch's record times are replaced by the broker's: nothing to check.
        let timestamps = rules
            .create_time_window
            .filter(|_| self.timestamp_type() == TimestampType::CreateTime)
            .map(|window| (self.base_timestamp(), window));
        check_records(data, self.record_count(), rules.require_keys, timestamps)
    }

    /// Both client checks: [`RecordBatch::validate_header_from_client`] then
    /// [`RecordBatch::validate_records_from_client`].
    pub fn validate_from_client(&self, require_keys: bool) -> Result<(), InvalidBatch> {
        self.validate_header_from_client()?;
        self.validate_records_from_client(&RecordRules {
            require_keys,
            create_time_window: None,
        })
    }
}

/// What a topic asks of each record beyond being well formed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordRules {
    /// Every record must have a key (compacted topics).
    pub require_keys: bool,
    /// `(min, max)`, inclusive: the CreateTime a record may carry, when the topic checks it.
    pub create_time_window: Option<(i64, i64)>,
}

/// Walks `declared` records over `data` (uncompressed record data) without allocating;
/// `timestamps` is the batch's base timestamp and the window its records' CreateTimes must
/// fall in.
fn check_records(
    data: &[u8],
    declared: i32,
    require_keys: bool,
    timestamps: Option<(i64, (i64, i64))>,
) -> Result<(), InvalidBatch> {
    // A negative count reads no records; the header check refuses it before this runs.
    let declared_records = usize::try_from(declared).unwrap_or(0);
    let mut pos = 0;
    let mut refused = Vec::new();
    for index in 0..declared_records {
        if pos == data.len() {
            return Err(InvalidBatch::MissingRecords {
                declared,
                found: index,
            });
        }
        let shape = scan_record(data, &mut pos)
            .map_err(|source| InvalidBatch::MalformedRecord { index, source })?;
        if usize::try_from(shape.offset_delta).ok() != Some(index) {
            return Err(InvalidBatch::NonIncrementalOffset {
                index,
                offset_delta: shape.offset_delta,
            });
        }
        // A record with a refused key or time does not stop the walk: the batch is well
        // formed, and Kafka names every such record.
        // One refusal per record, the key first (as Kafka's validateRecord).
        if require_keys && !shape.has_key {
            refused.push(InvalidBatch::MissingKey { index });
        } else if let Some((base, (min, max))) = timestamps {
            let timestamp = base.saturating_add(shape.timestamp_delta);
            if timestamp < min || timestamp > max {
                refused.push(InvalidBatch::InvalidTimestamp {
                    index,
                    timestamp,
                    min,
                    max,
                });
            }
        }
    }
    if pos != data.len() {
        return Err(InvalidBatch::TrailingBytes {
            declared,
            trailing: data.len() - pos,
        });
    }
    match refused.len() {
        0 => Ok(()),
        1 => Err(refused.remove(0)),
        _ => Err(InvalidBatch::Records(refused)),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::record::RecordBatchBuilder;
    use crate::record::batch::{
        ATTRIBUTES_AT, BATCH_HEADER_BYTES, BATCH_LENGTH_AT, BATCH_OVERHEAD_BYTES, CRC_AT,
        LAST_OFFSET_DELTA_AT, RECORD_COUNT_AT,
    };
    use crate::record::builder::{RecordFields, put_record};
    use crate::record::compression::compress;
    use crate::varint::{put_varint, put_varlong};

    const CODECS: [Compression; 5] = Compression::ALL;

    fn valid(codec: Compression) -> RecordBatch {
        let mut builder = RecordBatchBuilder::new(codec);
        builder
            .producer(9, 0, 0)
            .record(1_000, Some(b"k0"), Some(b"v0"))
            .record_with_headers(
                1_001,
                Some(b"k1"),
                None,
                &[(b"h", Some(b"x")), (b"h", None)],
            )
            .record(1_002, Some(b""), Some(&[7u8; 300][..]));
        builder.build().unwrap()
    }

    /// Rewrites the batch's bytes with `edit` and puts a correct batch length and CRC back, so
    /// only the intended field is wrong.
    fn edited(batch: &RecordBatch, edit: impl FnOnce(&mut Vec<u8>)) -> RecordBatch {
        let mut b = batch.as_bytes().to_vec();
        edit(&mut b);
        let len = (b.len() - BATCH_OVERHEAD_BYTES) as i32;
        b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let out = RecordBatch::parse(Bytes::from(b)).unwrap();
        out.verify_crc().unwrap();
        out
    }

    fn put_i32(b: &mut [u8], at: usize, v: i32) {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// A batch with `count` declared records (and a consistent last offset delta) whose record
    /// data is `data`, compressed with `codec`.
    fn with_record_data(codec: Compression, count: i32, data: &[u8]) -> RecordBatch {
        let packed = compress(codec, data).unwrap();
        edited(&valid(codec), |b| {
            b.truncate(BATCH_HEADER_BYTES);
            b.extend_from_slice(&packed);
            put_i32(b, RECORD_COUNT_AT, count);
            put_i32(b, LAST_OFFSET_DELTA_AT, (count - 1).max(0));
        })
    }

    fn record(offset_delta: i32, key: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        put_record(
            &mut out,
            &mut Vec::new(),
            &RecordFields {
                attributes: 0,
                timestamp_delta: 0,
                offset_delta,
                key,
                value: Some(b"value"),
                headers: &[],
            },
        );
        out
    }

    /// A record from raw body bytes, length-prefixed with `declared` as its length.
    fn raw_record(declared: i32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, declared);
        out.extend_from_slice(body);
        out
    }

    /// Attributes, timestamp delta 0 and offset delta 1: the start of a second record.
    fn body_prefix() -> Vec<u8> {
        let mut body = vec![0u8];
        put_varlong(&mut body, 0);
        put_varint(&mut body, 1);
        body
    }

    fn refusal(batch: &RecordBatch, require_keys: bool) -> InvalidBatch {
        batch
            .validate_from_client(require_keys)
            .expect_err("the batch must be refused")
    }

    #[test]
    fn valid_batches_pass_with_every_codec() {
        for codec in CODECS {
            let batch = valid(codec);
            batch.verify_crc().unwrap();
            assert!(batch.validate_from_client(true).is_ok(), "{codec:?}");
            assert!(batch.validate_from_client(false).is_ok(), "{codec:?}");
        }
        let mut single = RecordBatchBuilder::new(Compression::None);
        single.record(5, None, None);
        assert!(single.build().unwrap().validate_from_client(false).is_ok());
    }

    #[test]
    fn offset_range_must_match_the_count() {
        let batch = valid(Compression::None);
        let zero = with_record_data(Compression::None, 0, &[]);
        let e = refusal(&zero, false);
        assert!(matches!(e, InvalidBatch::InvalidRecordCount(0)), "{e}");
        assert_eq!(e.kafka_error_code(), KAFKA_INVALID_RECORD);
        assert!(e.to_string().contains("Invalid reported count"));

        let huge = edited(&batch, |b| put_i32(b, LAST_OFFSET_DELTA_AT, i32::MAX));
        let e = refusal(&huge, false);
        assert!(
            matches!(
                e,
                InvalidBatch::InconsistentOffsetRange {
                    last_offset_delta: i32::MAX,
                    record_count: 3
                }
            ),
            "{e}"
        );
        assert_eq!(e.kafka_error_code(), KAFKA_INVALID_RECORD);
        assert!(e.to_string().contains("Inconsistent batch offset range"));

        let short = edited(&batch, |b| put_i32(b, LAST_OFFSET_DELTA_AT, 1));
        assert!(matches!(
            refusal(&short, false),
            InvalidBatch::InconsistentOffsetRange { .. }
        ));
    }

    #[test]
    fn negative_header_fields_refused_by_the_parse_map_to_invalid_record() {
        let batch = valid(Compression::None);
        for (at, expect_delta) in [(LAST_OFFSET_DELTA_AT, true), (RECORD_COUNT_AT, false)] {
            let mut b = batch.as_bytes().to_vec();
            put_i32(&mut b, at, -1);
            let e = RecordBatch::parse(Bytes::from(b)).unwrap_err();
            let e = InvalidBatch::from_parse_error(e);
            assert_eq!(e.kafka_error_code(), KAFKA_INVALID_RECORD, "{e}");
            if expect_delta {
                assert!(matches!(e, InvalidBatch::InvalidOffsetRange(-1)), "{e}");
            } else {
                assert!(matches!(e, InvalidBatch::InvalidRecordCount(-1)), "{e}");
            }
        }
        let e = InvalidBatch::from_parse_error(RecordError::InvalidBatchLength(3));
        assert_eq!(e.kafka_error_code(), crate::record::KAFKA_CORRUPT_MESSAGE);
    }

    #[test]
    fn control_batches_and_missing_sequences_are_refused() {
        let mut builder = RecordBatchBuilder::new(Compression::None);
        builder
            .producer(3, 0, 0)
            .control_marker(crate::record::ControlType::Commit, 1, 5);
        let e = refusal(&builder.build().unwrap(), false);
        assert!(matches!(e, InvalidBatch::ControlBatch), "{e}");
        assert_eq!(e.kafka_error_code(), KAFKA_INVALID_RECORD);

        let mut builder = RecordBatchBuilder::new(Compression::None);
        builder.producer(3, 0, -1).record(5, Some(b"k"), None);
        let e = refusal(&builder.build().unwrap(), false);
        assert!(
            matches!(
                e,
                InvalidBatch::InvalidSequence {
                    producer_id: 3,
                    base_sequence: -1
                }
            ),
            "{e}"
        );
    }

    /// Malformed record bodies, each refused as INVALID_RECORD at record index 1 (record 0 is
    /// fine), for every codec.
    #[test]
    fn malformed_records_are_refused_with_their_index() {
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        // Length varint longer than the bytes left.
        cases.push(("length past the end", raw_record(200, &body_prefix())));
        // Length shorter than the fields: the value runs past the record.
        let mut body = body_prefix();
        put_varint(&mut body, -1);
        put_varint(&mut body, 4);
        body.extend_from_slice(b"abcd");
        put_varint(&mut body, 0);
        let len = body.len() as i32;
        cases.push(("record shorter than its fields", raw_record(len - 3, &body)));
        // An extra byte inside the record beyond what its fields use.
        let mut padded = body.clone();
        padded.push(0);
        cases.push(("byte left inside the record", raw_record(len + 1, &padded)));
        // Key length -2.
        let mut body = body_prefix();
        put_varint(&mut body, -2);
        put_varint(&mut body, -1);
        put_varint(&mut body, 0);
        cases.push(("key length -2", raw_record(body.len() as i32, &body)));
        // Value length past the record.
        let mut body = body_prefix();
        put_varint(&mut body, -1);
        put_varint(&mut body, 1000);
        body.extend_from_slice(b"xy");
        put_varint(&mut body, 0);
        cases.push((
            "value past the record",
            raw_record(body.len() as i32, &body),
        ));
        // Negative header count.
        let mut body = body_prefix();
        put_varint(&mut body, -1);
        put_varint(&mut body, -1);
        put_varint(&mut body, -1);
        cases.push(("header count -1", raw_record(body.len() as i32, &body)));
        // A header key running past the record.
        let mut body = body_prefix();
        put_varint(&mut body, -1);
        put_varint(&mut body, -1);
        put_varint(&mut body, 1);
        put_varint(&mut body, 50);
        put_varint(&mut body, -1);
        cases.push((
            "header key past the record",
            raw_record(body.len() as i32, &body),
        ));
        // A null header key.
        let mut body = body_prefix();
        put_varint(&mut body, -1);
        put_varint(&mut body, -1);
        put_varint(&mut body, 1);
        put_varint(&mut body, -1);
        put_varint(&mut body, -1);
        cases.push(("null header key", raw_record(body.len() as i32, &body)));
        // A truncated varint at the very end.
        cases.push(("truncated length varint", vec![0x80]));
        for codec in CODECS {
            for (name, second) in &cases {
                let mut data = record(0, Some(b"k"));
                data.extend_from_slice(second);
                let batch = with_record_data(codec, 2, &data);
                let e = refusal(&batch, false);
                assert!(
                    matches!(e, InvalidBatch::MalformedRecord { index: 1, .. }),
                    "{codec:?} {name}: {e}"
                );
                assert_eq!(e.kafka_error_code(), KAFKA_INVALID_RECORD, "{name}");
                assert_eq!(e.record_index(), Some(1), "{name}");
            }
        }
    }

    #[test]
    fn offset_deltas_must_count_up_from_zero() {
        for codec in CODECS {
            let mut data = record(0, Some(b"a"));
            data.extend(record(2, Some(b"b")));
            let e = refusal(&with_record_data(codec, 2, &data), false);
            assert!(
                matches!(
                    e,
                    InvalidBatch::NonIncrementalOffset {
                        index: 1,
                        offset_delta: 2
                    }
                ),
                "{codec:?}: {e}"
            );
            assert_eq!(e.kafka_error_code(), KAFKA_INVALID_RECORD);
            let mut data = record(1, Some(b"a"));
            data.extend(record(2, Some(b"b")));
            assert!(matches!(
                refusal(&with_record_data(codec, 2, &data), false),
                InvalidBatch::NonIncrementalOffset { index: 0, .. }
            ));
        }
    }

    #[test]
    fn the_record_count_must_match_the_records() {
        for codec in CODECS {
            let mut data = record(0, Some(b"a"));
            data.extend(record(1, Some(b"b")));
            let e = refusal(&with_record_data(codec, 3, &data), false);
            assert!(
                matches!(
                    e,
                    InvalidBatch::MissingRecords {
                        declared: 3,
                        found: 2
                    }
                ),
                "{codec:?}: {e}"
            );
            assert_eq!(e.kafka_error_code(), KAFKA_INVALID_RECORD);
            let e = refusal(&with_record_data(codec, 1, &data), false);
            assert!(
                matches!(e, InvalidBatch::TrailingBytes { declared: 1, .. }),
                "{codec:?}: {e}"
            );
            assert_eq!(e.kafka_error_code(), KAFKA_INVALID_RECORD);
            // A single stray byte after the last record.
            let mut data = record(0, Some(b"a"));
            data.push(0);
            assert!(matches!(
                refusal(&with_record_data(codec, 1, &data), false),
                InvalidBatch::TrailingBytes { trailing: 1, .. }
            ));
        }
    }

    #[test]
    fn every_records_create_time_is_checked_against_the_window() {
        for codec in CODECS {
            // Records at 1_000, 1_001, 1_002: the first one outside a window is named.
            let batch = valid(codec);
            let rules = |min, max| RecordRules {
                require_keys: false,
                create_time_window: Some((min, max)),
            };
            assert!(
                batch
                    .validate_records_from_client(&rules(1_000, 1_002))
                    .is_ok()
            );
            let e = batch
                .validate_records_from_client(&rules(999, 1_001))
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    InvalidBatch::InvalidTimestamp {
                        index: 2,
                        timestamp: 1_002,
                        min: 999,
                        max: 1_001
                    }
                ),
                "{codec:?}: {e}"
            );
            assert_eq!(e.kafka_error_code(), KAFKA_INVALID_TIMESTAMP);
            assert_eq!(e.record_index(), Some(2));
            let e = batch
                .validate_records_from_client(&rules(1_001, 2_000))
                .unwrap_err();
            assert_eq!(e.record_index(), Some(0), "{codec:?}: too old");
        }
        // A LogAppendTime batch's times are the broker's to set: not checked.
        let mut builder = RecordBatchBuilder::new(Compression::None);
        builder.log_append_time(5).record(1, None, Some(b"v"));
        let stamped = builder.build().unwrap();
        let far = RecordRules {
            require_keys: false,
            create_time_window: Some((1_000, 2_000)),
        };
        assert!(stamped.validate_records_from_client(&far).is_ok());
    }

    #[test]
    fn every_refused_record_of_a_well_formed_batch_is_named() {
        for codec in CODECS {
            let mut data = record(0, None);
            data.extend(record(1, Some(b"k")));
            data.extend(record(2, None));
            let batch = with_record_data(codec, 3, &data);
            let e = refusal(&batch, true);
            let named: Vec<usize> = e.record_errors().into_iter().map(|(i, _)| i).collect();
            assert_eq!(named, vec![0, 2], "{codec:?}: {e}");
            assert_eq!(e.kafka_error_code(), KAFKA_INVALID_RECORD);
            assert_eq!(e.record_index(), Some(0));
            assert!(e.to_string().starts_with("2 records refused"), "{e}");
        }
        // A key and a time refused: one refusal per record (the key first, as Kafka), and the
        // partition's code is INVALID_TIMESTAMP, as Kafka's.
        let mut builder = RecordBatchBuilder::new(Compression::None);
        builder
            .record(1_000, None, Some(b"v"))
            .record(1_000, Some(b"k"), Some(b"v"))
            .record(5_000, Some(b"k"), Some(b"v"))
            .record(9_000, None, Some(b"v"));
        let rules = RecordRules {
            require_keys: true,
            create_time_window: Some((0, 2_000)),
        };
        let e = builder
            .build()
            .unwrap()
            .validate_records_from_client(&rules)
            .unwrap_err();
        let named: Vec<(usize, bool)> = e
            .record_errors()
            .into_iter()
            .map(|(i, why)| (i, why.contains("without key")))
            .collect();
        assert_eq!(named, vec![(0, true), (2, false), (3, true)], "{e}");
        assert_eq!(e.kafka_error_code(), KAFKA_INVALID_TIMESTAMP);
    }

    #[test]
    fn keys_are_required_only_when_asked() {
        for codec in CODECS {
            let mut data = record(0, Some(b"a"));
            data.extend(record(1, None));
            let batch = with_record_data(codec, 2, &data);
            assert!(batch.validate_from_client(false).is_ok(), "{codec:?}");
            let e = refusal(&batch, true);
            assert!(matches!(e, InvalidBatch::MissingKey { index: 1 }), "{e}");
            assert_eq!(e.kafka_error_code(), KAFKA_INVALID_RECORD);
            assert_eq!(e.record_index(), Some(1));
            assert!(
                e.to_string()
                    .contains("Compacted topic cannot accept message without key")
            );
        }
    }

    #[test]
    fn undecodable_compressed_data_is_corrupt() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = edited(&valid(codec), |b| {
                b.truncate(BATCH_HEADER_BYTES);
                b.extend_from_slice(&[0xff; 40]);
            });
            let e = refusal(&batch, false);
            assert!(matches!(e, InvalidBatch::Corrupt(_)), "{codec:?}: {e}");
            assert_eq!(e.kafka_error_code(), crate::record::KAFKA_CORRUPT_MESSAGE);
            assert_eq!(e.record_index(), None);
        }
        // Codec id 5 does not exist.
        let batch = edited(&valid(Compression::None), |b| {
            b[ATTRIBUTES_AT + 1] |= 5;
        });
        let e = refusal(&batch, false);
        assert!(
            matches!(e, InvalidBatch::Corrupt(RecordError::UnknownCompression(5))),
            "{e}"
        );
    }

    /// The log's own reads stay lenient: a compacted batch with fewer records than its offset
    /// range, or none at all, still parses and iterates.
    #[test]
    fn the_generic_parse_still_accepts_compacted_batches() {
        let data = record(0, Some(b"a"));
        let batch = edited(&with_record_data(Compression::None, 1, &data), |b| {
            put_i32(b, LAST_OFFSET_DELTA_AT, 9);
        });
        assert_eq!(batch.next_offset(), 10);
        assert_eq!(batch.records().unwrap().count(), 1);
        assert!(batch.validate_from_client(false).is_err());
        let empty = with_record_data(Compression::None, 0, &[]);
        assert_eq!(empty.records().unwrap().count(), 0);
        assert!(empty.validate_from_client(false).is_err());
    }
}
