//! The one error type of the record layer: every malformed batch, record or compressed payload
//! is a typed case, so callers can map it to the Kafka error code a client expects.

use thiserror::Error;

use crate::varint::VarintError;

/// Kafka's CORRUPT_MESSAGE (2): what Kafka answers for a batch it cannot parse or whose CRC
/// does not match (`CorruptRecordException`).
pub const KAFKA_CORRUPT_MESSAGE: i16 = 2;
/// Kafka's INVALID_RECORD (87): what Kafka 4 answers when a Produce request (v3+, the only
/// versions Kafka 4 accepts) carries a magic 0/1 batch (`ProduceRequest.validateRecords`
/// throws `InvalidRecordException`).
pub const KAFKA_INVALID_RECORD: i16 = 87;
/// Kafka's INVALID_TIMESTAMP: a record's CreateTime is outside the topic's allowed window.
pub const KAFKA_INVALID_TIMESTAMP: i16 = 32;

/// A malformed or unsupported record batch, record or compressed payload.
#[derive(Error, Debug)]
#[non_exhaustive]
pub enum RecordError {
    /// Fewer bytes than a field, header or declared length needs.
    #[error("truncated {what}: need {needed} bytes, {available} present")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    /// The batch length field is negative or smaller than a magic-2 header.
    #[error("invalid batch length {0}")]
    InvalidBatchLength(i32),
    /// The batch length field disagrees with the bytes given as one batch.
    #[error("batch length field {declared} does not match the {actual} bytes given")]
    BatchLengthMismatch { declared: i32, actual: usize },
    /// Magic 0 or 1: message formats Kafka 4 no longer accepts (KIP-724/KIP-896).
    #[error("record batch magic {0} is not supported (only magic 2)")]
    UnsupportedMagic(i8),
    /// A magic value no Kafka version ever wrote.
    #[error("invalid record batch magic {0}")]
    InvalidMagic(i8),
    #[error("negative record count {0}")]
    NegativeRecordCount(i32),
    #[error("negative last offset delta {0}")]
    NegativeLastOffsetDelta(i32),
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    /// Compression codec id 5..7 in the attributes.
    #[error("unknown compression codec id {0}")]
    UnknownCompression(u8),
    /// A varint ran past 5 (varint) or 10 (varlong) bytes, or past the end of the data.
    #[error("malformed varint in {field}: {source}")]
    Varint {
        field: &'static str,
        #[source]
        source: VarintError,
    },
    /// The record count cannot fit in the bytes present (each record takes at least
    /// `min_record_bytes`); refused before anything is allocated for it.
    #[error("record count {count} cannot fit in {available} bytes")]
    RecordCountTooLarge { count: i32, available: usize },
    /// A record's length, key, value or header field is negative (other than -1 for null) or
    /// runs past its record.
    #[error("invalid {what} length {length}")]
    InvalidLength { what: &'static str, length: i64 },
    /// A record's fields do not use up exactly its declared length.
    #[error("record length {declared} but its fields take {used} bytes")]
    RecordLengthMismatch { declared: usize, used: usize },
    /// The record data ends before the batch header's record count is reached.
    #[error("batch declares {declared} records but holds only {found}")]
    MissingRecords { declared: i32, found: usize },
    /// Bytes remain after the batch header's record count was read.
    #[error("{trailing} bytes remain after the batch's {declared} records")]
    TrailingBytes { declared: i32, trailing: usize },
    /// The codec rejected the compressed payload.
    #[error("{codec} decompression failed: {source}")]
    Decompress {
        codec: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Decompressed data would exceed the caller's limit (a compression bomb).
    #[error("decompressed size exceeds the limit of {limit_bytes} bytes")]
    DecompressedTooLarge { limit_bytes: usize },
    /// The codec failed while compressing (builder only).
    #[error("{codec} compression failed: {source}")]
    Compress {
        codec: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl RecordError {
    /// The Kafka error code a broker answers a Produce with when a partition's records fail
    /// with this error, matching Kafka 4 (`InvalidRecordException` -> INVALID_RECORD for old
    /// magic; `CorruptRecordException` -> CORRUPT_MESSAGE for everything malformed, including
    /// an unknown codec id, which is bytes no client writes rather than a codec the broker
    /// lacks).
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            RecordError::UnsupportedMagic(_) => KAFKA_INVALID_RECORD,
            _ => KAFKA_CORRUPT_MESSAGE,
        }
    }
}
