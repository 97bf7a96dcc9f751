//! Offline inspection of a partition directory (`corebus-ctl log dump|verify`, like Kafka's
//! kafka-dump-log): every segment's batches with their CRC checked, offsets checked to
//! increase, the offset and time indexes checked against the batches, and the checkpoint
//! files read. It reads the on-disk formats through the same code the engine uses.
//!
//! Owns: the report of what is on disk and what is wrong with it.
//! Never: writes, repairs or locks anything (it may run beside a live broker, whose newest
//! tail it can then see half-written: that is reported, not fixed); runs on a reactor (plain
//! blocking reads, for tools).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use corebus_wire::record::{BATCH_HEADER_BYTES, BatchHeader, RecordBatch, verify_batch_crc};

use super::index::SegmentIndex;
use super::meta::{CLEAN_SHUTDOWN_FILE, LOG_START_FILE, decode_meta, i64s};
use super::segment::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, parse_log_file_name};

/// One batch as found in a segment file.
#[derive(Debug, Clone)]
pub struct BatchInfo {
    /// Byte position in the segment file.
    pub position: u64,
    pub header: BatchHeader,
    pub crc_ok: bool,
    /// The batch's bytes, for record-level dumps.
    pub bytes: Bytes,
}

impl BatchInfo {
    /// The batch as the record layer sees it (for iterating records).
    pub fn batch(&self) -> Option<RecordBatch> {
        RecordBatch::parse(self.bytes.clone()).ok()
    }
}

/// One segment: its files and what was found in them.
#[derive(Debug, Clone)]
pub struct SegmentReport {
    pub base_offset: i64,
    pub path: PathBuf,
    pub size_bytes: u64,
    pub batches: Vec<BatchInfo>,
    /// Bytes at the end that are not a whole valid batch (a torn tail, zero padding of a
    /// file still being written, or corruption), with the reason.
    pub invalid_tail: Option<(u64, String)>,
    /// Offset and time index entries, when the files are present and well-formed.
    pub index_entries: Option<usize>,
    pub time_index_entries: Option<usize>,
    pub problems: Vec<String>,
    /// What is normal for the active segment of a log that was not closed cleanly (index
    /// files not yet written, a torn or preallocated tail) and damage anywhere else.
    pub notes: Vec<String>,
}

/// A partition directory.
#[derive(Debug, Clone)]
pub struct PartitionReport {
    pub dir: PathBuf,
    pub segments: Vec<SegmentReport>,
    /// The log start offset checkpoint, when present and valid.
    pub log_start_offset: Option<i64>,
    /// Whether the last close was clean (the marker is present and valid).
    pub clean_shutdown: bool,
    /// Problems of the directory as a whole (offsets across segments, files).
    pub problems: Vec<String>,
}

impl PartitionReport {
    /// Every problem, segment problems included, each with its segment.
    pub fn all_problems(&self) -> Vec<String> {
        let mut out = self.problems.clone();
        for s in &self.segments {
            out.extend(
                s.problems
                    .iter()
                    .map(|p| format!("{}: {p}", s.path.display())),
            );
        }
        out
    }
}

/// Reads and checks every segment of the partition directory `dir`.
pub fn inspect_partition(dir: &Path) -> std::io::Result<PartitionReport> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(base) = name.to_str().and_then(parse_log_file_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let mut report = PartitionReport {
        dir: dir.to_path_buf(),
        segments: Vec::new(),
        log_start_offset: read_checkpoint(dir, LOG_START_FILE).map(|[o]| o),
        clean_shutdown: std::fs::read(dir.join(CLEAN_SHUTDOWN_FILE))
            .ok()
            .and_then(|b| decode_meta(&b))
            .is_some(),
        problems: Vec::new(),
    };
    if bases.is_empty() {
        report.problems.push("no segment files".into());
    }
    let mut previous_next: Option<i64> = None;
    for base in bases {
        let seg = inspect_segment(dir, base)?;
        if let (Some(prev), Some(first)) = (previous_next, seg.batches.first())
            && first.header.base_offset < prev
        {
            report.problems.push(format!(
                "segment {base} starts at offset {} below the previous segment's end {prev}",
                first.header.base_offset
            ));
        }
        if let Some(last) = seg.batches.last() {
            previous_next = Some(last.header.next_offset());
        }
        report.segments.push(seg);
    }
    let last = report.segments.len().saturating_sub(1);
    for (i, seg) in report.segments.iter_mut().enumerate() {
        if let Some((pos, why)) = &seg.invalid_tail {
            seg.notes
                .push(format!("invalid bytes at position {pos}: {why}"));
        }
        if i != last || report.clean_shutdown {
            let notes = std::mem::take(&mut seg.notes);
            seg.problems.extend(notes);
        }
    }
    Ok(report)
}

fn read_checkpoint<const N: usize>(dir: &Path, name: &str) -> Option<[i64; N]> {
    let bytes = std::fs::read(dir.join(name)).ok()?;
    i64s(&decode_meta(&bytes)?)
}

fn inspect_segment(dir: &Path, base: i64) -> std::io::Result<SegmentReport> {
    let stem = super::segment::file_stem(base);
    let path = dir.join(format!("{stem}{LOG_SUFFIX}"));
    let data = Bytes::from(std::fs::read(&path)?);
    let mut seg = SegmentReport {
        base_offset: base,
        path,
        size_bytes: data.len() as u64,
        batches: Vec::new(),
        invalid_tail: None,
        index_entries: None,
        time_index_entries: None,
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let mut pos = 0usize;
    let mut next_expected: Option<i64> = None;
    while pos < data.len() {
        let rest = &data[pos..];
        let header = match BatchHeader::parse(rest) {
            Ok(h) => h,
            Err(e) => {
                seg.invalid_tail = Some((pos as u64, e.to_string()));
                break;
            }
        };
        let len = header.total_len();
        if len < BATCH_HEADER_BYTES || len > rest.len() {
            seg.invalid_tail = Some((
                pos as u64,
                format!("batch of {len} bytes runs past the file's end"),
            ));
            break;
        }
        let bytes = data.slice(pos..pos + len);
        let crc_ok = verify_batch_crc(&bytes).is_ok();
        if !crc_ok {
            seg.problems.push(format!(
                "batch at position {pos} (offset {}) fails its CRC32C",
                header.base_offset
            ));
        }
        if header.base_offset < base {
            seg.problems.push(format!(
                "batch at position {pos} has offset {} below the segment's base {base}",
                header.base_offset
            ));
        }
        if let Some(n) = next_expected
            && header.base_offset < n
        {
            seg.problems.push(format!(
                "batch at position {pos} has offset {} below the previous batch's end {n}",
                header.base_offset
            ));
        }
        next_expected = Some(header.next_offset());
        seg.batches.push(BatchInfo {
            position: pos as u64,
            header,
            crc_ok,
            bytes,
        });
        pos += len;
    }
    check_indexes(dir, &stem, &mut seg);
    Ok(seg)
}

/// Checks the segment's index files against its batches: every offset entry must point at
/// the start of the batch with that base offset, every time entry at a batch whose max
/// timestamp it is.
fn check_indexes(dir: &Path, stem: &str, seg: &mut SegmentReport) {
    let offsets = std::fs::read(dir.join(format!("{stem}{INDEX_SUFFIX}")));
    let times = std::fs::read(dir.join(format!("{stem}{TIME_INDEX_SUFFIX}")));
    let (offsets, times) = match (offsets, times) {
        (Ok(o), Ok(t)) => (o, t),
        // The active segment's indexes are written when it is sealed or closed.
        _ => {
            seg.notes
                .push("index files missing (the broker rebuilds them at open)".into());
            return;
        }
    };
    let index = match SegmentIndex::decode(&offsets, &times, seg.base_offset) {
        Ok(i) => i,
        Err(e) => {
            seg.problems
                .push(format!("index files invalid ({}; rebuilt at open)", e.0));
            return;
        }
    };
    seg.index_entries = Some(index.offset_entries().len());
    seg.time_index_entries = Some(index.time_entries().len());
    for &(rel, position) in index.offset_entries() {
        let offset = seg.base_offset + i64::from(rel);
        let hit = seg
            .batches
            .iter()
            .find(|b| b.position == u64::from(position));
        match hit {
            Some(b) if b.header.base_offset == offset => {}
            Some(b) => seg.problems.push(format!(
                "offset index entry {offset} -> position {position} points at batch {}",
                b.header.base_offset
            )),
            None => seg.problems.push(format!(
                "offset index entry {offset} -> position {position} is not a batch start"
            )),
        }
    }
    for &(ts, rel) in index.time_entries() {
        let offset = seg.base_offset + i64::from(rel);
        match seg.batches.iter().find(|b| b.header.base_offset == offset) {
            Some(b) if b.header.max_timestamp == ts => {}
            Some(b) => seg.problems.push(format!(
                "time index entry {ts} -> offset {offset}: that batch's max timestamp is {}",
                b.header.max_timestamp
            )),
            None => seg.problems.push(format!(
                "time index entry {ts} -> offset {offset} is not a batch's base offset"
            )),
        }
    }
}
