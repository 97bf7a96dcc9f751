//! What can go wrong in the storage engine, and the Kafka error code each maps to.
//!
//! Owns: `StorageError`. Never: hides an I/O error behind a retry; an error on the write or
//! sync path of a log is reported as [`StorageError::Offline`] from then on.

use std::io;
use std::path::PathBuf;

use corebus_wire::record::RecordError;

/// Kafka error codes this module maps to (protocol error codes, `Errors.java`).
const OFFSET_OUT_OF_RANGE: i16 = 1;
const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_CONFIG: i16 = 40;
const KAFKA_STORAGE_ERROR: i16 = 56;
const UNKNOWN_SERVER_ERROR: i16 = -1;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A read or lookup outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// The log failed a write or a sync and will not take writes or serve reads again until
    /// the process restarts and recovery has run (the page cache and the device can no longer
    /// be trusted to hold what they said they wrote).
    #[error("log {dir} is offline: {reason}")]
    Offline { dir: PathBuf, reason: String },
    /// The disk is full: this append was not written (its offsets were given back); the log
    /// stays online and takes appends again once space returns.
    #[error("disk full under {dir}: append not written")]
    DiskFull { dir: PathBuf },
    /// A batch larger than `max.message.bytes` or than a segment can hold.
    #[error("record batch of {batch_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    BatchTooLarge {
        batch_bytes: usize,
        limit_bytes: usize,
    },
    /// The batch handed to `append` is not a valid magic-2 batch.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] RecordError),
    /// An on-disk structure is wrong in a way recovery cannot repair by truncating.
    #[error("corrupt log {dir}: {what}")]
    Corrupt { dir: PathBuf, what: String },
    /// A topic configuration value is refused.
    #[error("invalid log config {name}={value}: {why}")]
    InvalidConfig {
        name: String,
        value: String,
        why: &'static str,
    },
    /// Another process holds the data directory's lock file.
    #[error("data directory {dir} is locked by another process ({holder})")]
    Locked { dir: PathBuf, holder: String },
    /// A replica's copy of a leader batch that would go back before the log end (the follower
    /// must truncate first, or the leader sent something it did not ask for).
    #[error(
        "log {dir}: replica batch at offset {base_offset} is before the log end {log_end_offset}"
    )]
    ReplicaOffset {
        dir: PathBuf,
        base_offset: i64,
        log_end_offset: i64,
    },
    /// The log was closed (or deleted) while this call was in flight.
    #[error("log {dir} is closed")]
    Closed { dir: PathBuf },
    /// An I/O error outside the write path (open, recovery, reading).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> StorageError {
        StorageError::Io {
            what: what.into(),
            source,
        }
    }

    /// The Kafka error code a client gets for this error.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            StorageError::OffsetOutOfRange { .. } | StorageError::ReplicaOffset { .. } => {
                OFFSET_OUT_OF_RANGE
            }
            StorageError::Offline { .. }
            | StorageError::DiskFull { .. }
            | StorageError::Closed { .. }
            | StorageError::Io { .. } => KAFKA_STORAGE_ERROR,
            StorageError::BatchTooLarge { .. } => MESSAGE_TOO_LARGE,
            StorageError::InvalidBatch(e) => e.kafka_error_code(),
            StorageError::Corrupt { .. } => CORRUPT_MESSAGE,
            StorageError::InvalidConfig { .. } => INVALID_CONFIG,
            StorageError::Locked { .. } => UNKNOWN_SERVER_ERROR,
        }
    }

    /// A copy for the second and later waiters of a failed write (io::Error is not Clone).
    pub(crate) fn duplicate(&self) -> StorageError {
        match self {
            StorageError::Offline { dir, reason } => StorageError::Offline {
                dir: dir.clone(),
                reason: reason.clone(),
            },
            StorageError::DiskFull { dir } => StorageError::DiskFull { dir: dir.clone() },
            StorageError::Closed { dir } => StorageError::Closed { dir: dir.clone() },
            other => StorageError::Offline {
                dir: PathBuf::new(),
                reason: other.to_string(),
            },
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
