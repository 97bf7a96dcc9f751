//! Kafka record batches (magic 2) as zero-copy views over `bytes::Bytes`.
//!
//! Owns: the 61-byte batch header and its field accessors, CRC32C verification, the single
//! copy of the produce path (base offset, leader epoch and LogAppendTime rewritten while the
//! batch is copied into a storage buffer), iteration over the batches of a record set, record
//! iteration, compression codecs, a builder for tests and tools, and the strict validation of
//! batches that come from clients (`validate`; never applied to batches read from a log).
//!
//! Never: copies record data on the plain produce or fetch path (validating a client's
//! compressed batch decompresses it once into a scratch buffer, as Kafka does), allocates by a
//! length read from the input before checking it against the bytes present, or panics on
//! malformed bytes (every malformed case is a [`RecordError`]).

mod batch;
mod batches;
mod builder;
pub mod compression;
mod crc;
mod error;
// One record's layout is its own concept; the file name follows the layout of the crate.
#[allow(clippy::module_inception)]
mod record;
mod retain;
mod validate;

pub use batch::{
    BATCH_HEADER_BYTES, BATCH_OVERHEAD_BYTES, BatchHeader, RecordBatch, TimestampType,
    verify_batch_crc,
};
pub use batches::RecordBatches;
pub use builder::{ControlType, RecordBatchBuilder};
pub use compression::Compression;
pub use record::{MIN_HEADER_BYTES, MIN_RECORD_BYTES, Record, RecordHeader, Records};
pub use retain::{RetainedBatch, retain_records};
pub use validate::{InvalidBatch, RecordRules};

/// The most bytes [`RecordBatch::records`] decompresses one batch into. Kafka's default
/// `message.max.bytes` is 1 MiB of compressed data; 64x that leaves room for very
/// compressible payloads while bounding what a compression bomb can make the broker allocate.
/// Callers with other needs use [`RecordBatch::records_with_limit`].
pub const DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 << 20;
pub use error::{
    KAFKA_CORRUPT_MESSAGE, KAFKA_INVALID_RECORD, KAFKA_INVALID_TIMESTAMP, RecordError,
};
