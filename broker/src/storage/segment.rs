//! One segment of a partition log: its files' names and what the log knows about it.
//!
//! Owns: the Kafka file naming (`<20-digit base offset>.log`, `.index`, `.timeindex`) and
//! the in-memory state of a segment (sizes assigned and written, next offset, index).
//! Never: does I/O itself (the log does, through the shard's fd cache).

use std::path::{Path, PathBuf};

use super::index::SegmentIndex;

pub(crate) const LOG_SUFFIX: &str = ".log";
pub(crate) const INDEX_SUFFIX: &str = ".index";
pub(crate) const TIME_INDEX_SUFFIX: &str = ".timeindex";

/// `00000000000000000042` for base offset 42.
pub(crate) fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// The base offset of a segment file name like `00000000000000000042.log`.
pub(crate) fn parse_log_file_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(LOG_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub(crate) struct Segment {
    pub base_offset: i64,
    /// Offset after the last batch appended (assigned, maybe not yet written).
    pub next_offset: i64,
    /// Bytes of batches appended (assigned).
    pub size: u64,
    /// Bytes of batches whose write completed: reads from the file stop here.
    pub written_size: u64,
    /// Bytes reserved with fallocate.
    pub preallocated: u64,
    /// A background fallocate of the next step is in flight.
    pub preallocating: bool,
    /// None until loaded (old segments load their index on first use).
    pub index: Option<SegmentIndex>,
    /// Wall clock of the first append (segment.ms); None for a segment found at open.
    pub first_append_ms: Option<i64>,
    /// No more appends; its data is synced and its index files are written.
    pub sealed: bool,
    pub log_path: PathBuf,
    pub index_path: PathBuf,
    pub time_index_path: PathBuf,
}

impl Segment {
    pub(crate) fn new(dir: &Path, base_offset: i64) -> Segment {
        let stem = file_stem(base_offset);
        Segment {
            base_offset,
            next_offset: base_offset,
            size: 0,
            written_size: 0,
            preallocated: 0,
            preallocating: false,
            index: None,
            first_append_ms: None,
            sealed: false,
            log_path: dir.join(format!("{stem}{LOG_SUFFIX}")),
            index_path: dir.join(format!("{stem}{INDEX_SUFFIX}")),
            time_index_path: dir.join(format!("{stem}{TIME_INDEX_SUFFIX}")),
        }
    }

    /// `offset - base` as the u32 the index stores; None when it does not fit (a segment
    /// holds at most 2^32 offsets: appends roll before that).
    pub(crate) fn relative(&self, offset: i64) -> Option<u32> {
        u32::try_from(offset.checked_sub(self.base_offset)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_stem(42), "00000000000000000042");
        assert_eq!(parse_log_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_log_file_name("00000000000000000042.index"), None);
        assert_eq!(parse_log_file_name("42.log"), None);
        assert_eq!(parse_log_file_name("0000000000000000004x.log"), None);
    }
}
