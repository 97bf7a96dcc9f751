//! One magic-2 record batch: its 61-byte header, CRC32C and the rewrite-while-copying of the
//! produce path.
//!
//! Layout (big-endian), offsets in bytes:
//! ```text
//!  0 base_offset i64 | 8 batch_length i32 | 12 partition_leader_epoch i32 | 16 magic i8
//! 17 crc u32 (CRC32C of bytes 21..end)    | 21 attributes i16 | 23 last_offset_delta i32
//! 27 base_timestamp i64 | 35 max_timestamp i64 | 43 producer_id i64 | 51 producer_epoch i16
//! 53 base_sequence i32  | 57 record_count i32  | 61 records ...
//! ```
//! Never: copies the batch (except in [`RecordBatch::copy_rewritten`], the one copy the produce
//! path makes) or looks at the records on the header path.

use bytes::Bytes;

use super::compression::{Compression, decompress};
use super::crc::shift_zeros;
use super::{DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES, RecordError, Records};

/// Bytes from the base offset through the record count: the fixed magic-2 header.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before the part the batch length counts: base offset (8) + batch length (4).
pub const BATCH_OVERHEAD_BYTES: usize = 12;

const BASE_OFFSET_AT: usize = 0;
pub(crate) const BATCH_LENGTH_AT: usize = 8;
const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
pub(crate) const CRC_AT: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
pub(crate) const ATTRIBUTES_AT: usize = 21;
pub(crate) const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
pub(crate) const RECORD_COUNT_AT: usize = 57;

/// The only magic this layer reads.
pub(crate) const MAGIC_V2: i8 = 2;
/// Attribute bit 3: the batch's timestamps are LogAppendTime.
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
/// Attribute bit 4: the batch belongs to a transaction.
const TRANSACTIONAL_BIT: i16 = 0x10;
/// Attribute bit 5: the batch holds a control record (transaction marker).
const CONTROL_BIT: i16 = 0x20;
/// Attribute bit 6: base timestamp holds the delete horizon (compacted tombstones, KIP-534).
pub(crate) const DELETE_HORIZON_BIT: i16 = 0x40;

/// Which clock a batch's timestamps come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

fn read_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn read_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(read_array(bytes, at))
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(read_array(bytes, at))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(read_array(bytes, at))
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(read_array(bytes, at))
}

/// The header fields of one batch, read from the front of a byte slice that may hold more
/// (a segment scanned from an aligned read buffer). Checks what [`RecordBatch::parse`] checks
/// except that the slice only has to hold the header, not the whole batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses and checks the header at the front of `bytes`: magic 2, a batch length that
    /// covers at least the header, non-negative record count and last offset delta.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, RecordError> {
        // The magic sits at byte 16 in every message format, so an old-format message is
        // reported as such even when it is shorter than a magic-2 header.
        if bytes.len() <= MAGIC_AT {
            return Err(RecordError::Truncated {
                what: "record batch header",
                needed: BATCH_HEADER_BYTES,
                available: bytes.len(),
            });
        }
        let magic = bytes[MAGIC_AT] as i8;
        match magic {
            MAGIC_V2 => {}
            0 | 1 => return Err(RecordError::UnsupportedMagic(magic)),
            other => return Err(RecordError::InvalidMagic(other)),
        }
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(RecordError::Truncated {
                what: "record batch header",
                needed: BATCH_HEADER_BYTES,
                available: bytes.len(),
            });
        }
        let batch_length = read_i32(bytes, BATCH_LENGTH_AT);
        if batch_length < (BATCH_HEADER_BYTES - BATCH_OVERHEAD_BYTES) as i32 {
            return Err(RecordError::InvalidBatchLength(batch_length));
        }
        let header = BatchHeader {
            base_offset: read_i64(bytes, BASE_OFFSET_AT),
            batch_length,
            partition_leader_epoch: read_i32(bytes, PARTITION_LEADER_EPOCH_AT),
            magic,
            crc: read_u32(bytes, CRC_AT),
            attributes: read_i16(bytes, ATTRIBUTES_AT),
            last_offset_delta: read_i32(bytes, LAST_OFFSET_DELTA_AT),
            base_timestamp: read_i64(bytes, BASE_TIMESTAMP_AT),
            max_timestamp: read_i64(bytes, MAX_TIMESTAMP_AT),
            producer_id: read_i64(bytes, PRODUCER_ID_AT),
            producer_epoch: read_i16(bytes, PRODUCER_EPOCH_AT),
            base_sequence: read_i32(bytes, BASE_SEQUENCE_AT),
            record_count: read_i32(bytes, RECORD_COUNT_AT),
        };
        if header.record_count < 0 {
            return Err(RecordError::NegativeRecordCount(header.record_count));
        }
        if header.last_offset_delta < 0 {
            return Err(RecordError::NegativeLastOffsetDelta(
                header.last_offset_delta,
            ));
        }
        Ok(header)
    }

    /// Size of the whole batch in bytes, overhead included.
    pub fn total_len(&self) -> usize {
        // parse() guarantees batch_length >= 49, so the cast is lossless.
        BATCH_OVERHEAD_BYTES + self.batch_length as usize
    }

    /// The offset of the batch's last record. Saturates rather than wrapping for a hostile base
    /// offset near `i64::MAX`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// The offset after the batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }
}

/// Checks the CRC32C of one whole batch given as a slice (`batch.len()` is the batch's total
/// length and at least the header). Used by [`RecordBatch::verify_crc`] and by storage
/// recovery, which scans aligned buffers rather than `Bytes`.
pub fn verify_batch_crc(batch: &[u8]) -> Result<(), RecordError> {
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(RecordError::Truncated {
            what: "record batch",
            needed: BATCH_HEADER_BYTES,
            available: batch.len(),
        });
    }
    let stored = read_u32(batch, CRC_AT);
    let computed = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    if stored == computed {
        Ok(())
    } else {
        Err(RecordError::CrcMismatch { stored, computed })
    }
}

/// One whole magic-2 batch, held as `Bytes` (a slice of the request or segment it came from).
/// Constructed only by [`RecordBatch::parse`], so every accessor reads inside the header.
#[derive(Clone)]
pub struct RecordBatch {
    bytes: Bytes,
}

impl RecordBatch {
    /// Checks the header (at least 61 bytes, magic 2, batch length equal to the bytes given,
    /// record count and last offset delta non-negative) without looking at the records or the
    /// CRC. Magic 0/1 gives [`RecordError::UnsupportedMagic`].
    pub fn parse(bytes: Bytes) -> Result<RecordBatch, RecordError> {
        let header = BatchHeader::parse(&bytes)?;
        if header.total_len() != bytes.len() {
            return Err(RecordError::BatchLengthMismatch {
                declared: header.batch_length,
                actual: bytes.len(),
            });
        }
        Ok(RecordBatch { bytes })
    }

    /// All header fields at once.
    pub fn header(&self) -> BatchHeader {
        BatchHeader {
            base_offset: self.base_offset(),
            batch_length: self.batch_length(),
            partition_leader_epoch: self.partition_leader_epoch(),
            magic: self.magic(),
            crc: self.crc(),
            attributes: self.attributes(),
            last_offset_delta: self.last_offset_delta(),
            base_timestamp: self.base_timestamp(),
            max_timestamp: self.max_timestamp(),
            producer_id: self.producer_id(),
            producer_epoch: self.producer_epoch(),
            base_sequence: self.base_sequence(),
            record_count: self.record_count(),
        }
    }

    pub fn base_offset(&self) -> i64 {
        read_i64(&self.bytes, BASE_OFFSET_AT)
    }

    pub fn batch_length(&self) -> i32 {
        read_i32(&self.bytes, BATCH_LENGTH_AT)
    }

    pub fn partition_leader_epoch(&self) -> i32 {
        read_i32(&self.bytes, PARTITION_LEADER_EPOCH_AT)
    }

    pub fn magic(&self) -> i8 {
        self.bytes[MAGIC_AT] as i8
    }

    pub fn crc(&self) -> u32 {
        read_u32(&self.bytes, CRC_AT)
    }

    pub fn attributes(&self) -> i16 {
        read_i16(&self.bytes, ATTRIBUTES_AT)
    }

    /// The codec of the records; ids 5..7 are an error.
    pub fn compression(&self) -> Result<Compression, RecordError> {
        Compression::from_attributes(self.attributes())
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }

    /// Whether the base timestamp holds the delete horizon of a compacted log (KIP-534).
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes() & DELETE_HORIZON_BIT != 0
    }

    pub fn last_offset_delta(&self) -> i32 {
        read_i32(&self.bytes, LAST_OFFSET_DELTA_AT)
    }

    pub fn base_timestamp(&self) -> i64 {
        read_i64(&self.bytes, BASE_TIMESTAMP_AT)
    }

    pub fn max_timestamp(&self) -> i64 {
        read_i64(&self.bytes, MAX_TIMESTAMP_AT)
    }

    /// -1 when the producer is not idempotent.
    pub fn producer_id(&self) -> i64 {
        read_i64(&self.bytes, PRODUCER_ID_AT)
    }

    pub fn producer_epoch(&self) -> i16 {
        read_i16(&self.bytes, PRODUCER_EPOCH_AT)
    }

    /// -1 when the producer is not idempotent.
    pub fn base_sequence(&self) -> i32 {
        read_i32(&self.bytes, BASE_SEQUENCE_AT)
    }

    pub fn record_count(&self) -> i32 {
        read_i32(&self.bytes, RECORD_COUNT_AT)
    }

    /// Base offset plus last offset delta (saturating on hostile values).
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .saturating_add(i64::from(self.last_offset_delta()))
    }

    /// The offset that follows this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// Size of the whole batch in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true for a parsed batch (it holds at least the header); here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The record data after the header (compressed when the batch is).
    pub fn records_bytes(&self) -> Bytes {
        self.bytes.slice(BATCH_HEADER_BYTES..)
    }

    /// The batch's records, decompressed when needed (at most
    /// [`DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES`]). For compaction, tools and validation; never
    /// on the plain produce or fetch path.
    pub fn records(&self) -> Result<Records, RecordError> {
        self.records_with_limit(DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES)
    }

    /// As [`RecordBatch::records`], refusing to decompress to more than `max_bytes`.
    pub fn records_with_limit(&self, max_bytes: usize) -> Result<Records, RecordError> {
        let data = match self.compression()? {
            // Uncompressed record data is iterated in place, without a copy.
            Compression::None => self.records_bytes(),
            codec => Bytes::from(decompress(
                codec,
                &self.bytes[BATCH_HEADER_BYTES..],
                max_bytes,
            )?),
        };
        Records::new(data, self.record_count())
    }

    /// CRC32C over attributes..end, through the crc32c crate (SSE4.2 / ARMv8 CRC when present).
    pub fn verify_crc(&self) -> Result<(), RecordError> {
        verify_batch_crc(&self.bytes)
    }

    /// The one copy of the produce path: copies this batch into `dst` with the base offset and
    /// partition leader epoch rewritten (both outside the CRC), and, when `log_append_time` is
    /// `Some(ts)`, the timestamp type set to LogAppendTime and the max timestamp set to `ts`.
    ///
    /// That matches Kafka's `LogValidator` (`setMaxTimestamp(LOG_APPEND_TIME, now)`): the base
    /// timestamp is left alone (consumers read every record's timestamp as the max timestamp of
    /// a LogAppendTime batch) and the CRC is updated only when the attributes or max timestamp
    /// actually change. The CRC update does not re-read the records: CRC32C is linear, so the
    /// new CRC is the stored one adjusted by the change to the 40 header bytes it covers. A
    /// batch whose stored CRC was wrong therefore stays detectably wrong instead of being
    /// laundered by a fresh checksum.
    ///
    /// `dst.len()` must equal `self.len()`: the caller sized the destination from this batch,
    /// so a mismatch is a bug in the caller, not bad input.
    pub fn copy_rewritten(
        &self,
        dst: &mut [u8],
        base_offset: i64,
        partition_leader_epoch: i32,
        log_append_time: Option<i64>,
    ) {
        assert_eq!(
            dst.len(),
            self.len(),
            "copy_rewritten: destination must be exactly the batch's length"
        );
        dst.copy_from_slice(&self.bytes);
        dst[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
        dst[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
            .copy_from_slice(&partition_leader_epoch.to_be_bytes());
        let Some(append_time) = log_append_time else {
            return;
        };
        let attributes = self.attributes() | TIMESTAMP_TYPE_BIT;
        if attributes == self.attributes() && append_time == self.max_timestamp() {
            return;
        }
        dst[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        dst[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&append_time.to_be_bytes());
        // crc(H' || T) ^ crc(H || T) = shift(crc(H') ^ crc(H), len(T)) for equal-length H, H'.
        let old_header_crc = crc32c::crc32c(&self.bytes[ATTRIBUTES_AT..BATCH_HEADER_BYTES]);
        let new_header_crc = crc32c::crc32c(&dst[ATTRIBUTES_AT..BATCH_HEADER_BYTES]);
        let tail_len = self.len() - BATCH_HEADER_BYTES;
        let crc = self.crc() ^ shift_zeros(old_header_crc ^ new_header_crc, tail_len);
        dst[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

impl std::fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("header", &self.header())
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid batch with no records, CRC filled in.
    fn empty_batch(attributes: i16, max_timestamp: i64) -> Vec<u8> {
        let mut b = vec![0u8; BATCH_HEADER_BYTES];
        b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4]
            .copy_from_slice(&((BATCH_HEADER_BYTES - BATCH_OVERHEAD_BYTES) as i32).to_be_bytes());
        b[MAGIC_AT] = 2;
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        b[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_timestamp.to_be_bytes());
        b.extend_from_slice(b"payload bytes that the CRC covers");
        let len = (b.len() - BATCH_OVERHEAD_BYTES) as i32;
        b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn old_magic_is_refused_even_when_short() {
        let mut b = vec![0u8; 30];
        b[MAGIC_AT] = 1;
        assert!(matches!(
            BatchHeader::parse(&b),
            Err(RecordError::UnsupportedMagic(1))
        ));
        assert_eq!(
            RecordError::UnsupportedMagic(1).kafka_error_code(),
            super::super::error::KAFKA_INVALID_RECORD
        );
        b[MAGIC_AT] = 7;
        assert!(matches!(
            BatchHeader::parse(&b),
            Err(RecordError::InvalidMagic(7))
        ));
    }

    #[test]
    fn length_must_match_the_slice() {
        let mut b = empty_batch(0, 5);
        b.push(0);
        assert!(matches!(
            RecordBatch::parse(Bytes::from(b)),
            Err(RecordError::BatchLengthMismatch { .. })
        ));
    }

    #[test]
    fn rewrite_with_log_append_time_keeps_a_valid_crc() {
        for attributes in [0i16, 0x08, 0x13] {
            let batch = RecordBatch::parse(Bytes::from(empty_batch(attributes, 5))).unwrap();
            batch.verify_crc().unwrap();
            let mut dst = vec![0u8; batch.len()];
            batch.copy_rewritten(&mut dst, 1234, 7, Some(99));
            let out = RecordBatch::parse(Bytes::from(dst)).unwrap();
            out.verify_crc().unwrap();
            assert_eq!(out.base_offset(), 1234);
            assert_eq!(out.partition_leader_epoch(), 7);
            assert_eq!(out.max_timestamp(), 99);
            assert_eq!(out.base_timestamp(), batch.base_timestamp());
            assert_eq!(out.timestamp_type(), TimestampType::LogAppendTime);
            assert_eq!(
                out.attributes() & !TIMESTAMP_TYPE_BIT,
                attributes & !TIMESTAMP_TYPE_BIT
            );
        }
    }

    #[test]
    fn rewrite_keeps_a_bad_crc_bad() {
        let mut raw = empty_batch(0, 5);
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let batch = RecordBatch::parse(Bytes::from(raw)).unwrap();
        assert!(batch.verify_crc().is_err());
        let mut dst = vec![0u8; batch.len()];
        batch.copy_rewritten(&mut dst, 1, 1, Some(1_700_000_000_000));
        assert!(verify_batch_crc(&dst).is_err());
    }
}
