//! A segment's sparse offset index and time index, in memory and in their files.
//!
//! Owns: when an entry is added (Kafka's rule: once more than `index.interval.bytes` of
//! batches were appended since the last entry), the lookups (binary search, then the caller
//! scans a bounded stretch of the segment), and the versioned file format:
//! ```text
//! magic "CBIX" | version u16 | kind u16 (1 offset, 2 time) | entries u32 | crc32c u32
//! entries: offset index (relative base offset u32, position u32)
//!          time index   (max timestamp so far i64, relative base offset u32)
//! ```
//! big-endian, zero-padded to a page so it is written with one direct write. The header's
//! CRC covers the entries; a file that fails it is rebuilt from the segment.
//! Never: touches the disk itself; it only encodes and decodes.

use super::disk::{PAGE_BYTES, align_up};

const MAGIC: &[u8; 4] = b"CBIX";
const FORMAT_VERSION: u16 = 1;
const KIND_OFFSET: u16 = 1;
const KIND_TIME: u16 = 2;
const HEADER_BYTES: usize = 16;
const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

/// Why an index file was refused (the caller rebuilds it from the segment).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadIndex(pub &'static str);

/// Offset and time index of one segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    /// (base offset - segment base, byte position of that batch), increasing.
    offsets: Vec<(u32, u32)>,
    /// (largest timestamp so far, base offset - segment base of the batch that set it).
    times: Vec<(i64, u32)>,
    bytes_since_entry: u64,
    /// Largest timestamp of any batch in the segment (-1 when none).
    pub max_timestamp: i64,
    /// Base offset of the batch holding `max_timestamp`.
    pub offset_of_max_timestamp: i64,
}

impl SegmentIndex {
    pub(crate) fn new() -> SegmentIndex {
        SegmentIndex {
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            ..Default::default()
        }
    }

    /// Records one appended batch (relative base offset, position, length, max timestamp).
    pub(crate) fn on_batch(
        &mut self,
        relative_offset: u32,
        base_offset: i64,
        position: u32,
        len: u64,
        max_timestamp: i64,
        interval_bytes: u64,
    ) {
        if max_timestamp > self.max_timestamp {
            self.max_timestamp = max_timestamp;
            self.offset_of_max_timestamp = base_offset;
        }
        if self.offsets.is_empty() || self.bytes_since_entry > interval_bytes {
            self.offsets.push((relative_offset, position));
            let newest_time = self.times.last().map_or(i64::MIN, |t| t.0);
            if self.max_timestamp > newest_time {
                let rel = (self.offset_of_max_timestamp - (base_offset - relative_offset as i64))
                    .clamp(0, u32::MAX as i64) as u32;
                self.times.push((self.max_timestamp, rel));
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += len;
    }

    /// Max timestamp of the segment's first batch (-1 when none): max.compaction.lag.ms.
    pub(crate) fn first_batch_timestamp(&self) -> i64 {
        self.times.first().map_or(-1, |t| t.0)
    }

    /// Position of the last indexed batch (0 when none).
    pub(crate) fn last_position(&self) -> u64 {
        self.offsets.last().map_or(0, |e| e.1 as u64)
    }

    /// Byte position to start scanning for `relative_offset`: the last indexed batch at or
    /// before it (0 when none).
    pub(crate) fn position_for(&self, relative_offset: u32) -> u32 {
        let i = self.offsets.partition_point(|e| e.0 <= relative_offset);
        if i == 0 { 0 } else { self.offsets[i - 1].1 }
    }

    /// Relative offset to start scanning for the first batch with max timestamp >= `ts`:
    /// every batch before the last entry whose timestamp is below `ts` is below `ts` too.
    pub(crate) fn offset_for_time(&self, ts: i64) -> u32 {
        let i = self.times.partition_point(|e| e.0 < ts);
        if i == 0 { 0 } else { self.times[i - 1].1 }
    }

    /// Drops entries for batches at or after `relative_offset` (truncation). The max
    /// timestamp is recomputed by the caller's rescan when it matters (see `PartitionLog`).
    pub(crate) fn truncate(&mut self, relative_offset: u32) {
        self.offsets.retain(|e| e.0 < relative_offset);
        self.times.retain(|e| e.1 < relative_offset);
        self.bytes_since_entry = u64::MAX / 2; // next batch gets an entry
    }

    pub(crate) fn encode_offsets(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_BYTES);
        for (rel, pos) in &self.offsets {
            body.extend_from_slice(&rel.to_be_bytes());
            body.extend_from_slice(&pos.to_be_bytes());
        }
        frame(KIND_OFFSET, self.offsets.len(), body)
    }

    pub(crate) fn encode_times(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.times.len() * TIME_ENTRY_BYTES);
        for (ts, rel) in &self.times {
            body.extend_from_slice(&ts.to_be_bytes());
            body.extend_from_slice(&rel.to_be_bytes());
        }
        frame(KIND_TIME, self.times.len(), body)
    }

    /// Rebuilds an index from its two files. `max_timestamp` comes from the last time entry
    /// (which is exact when the segment was sealed or closed cleanly: see `seal`).
    pub(crate) fn decode(
        offsets: &[u8],
        times: &[u8],
        segment_base: i64,
    ) -> Result<SegmentIndex, BadIndex> {
        let obody = unframe(KIND_OFFSET, OFFSET_ENTRY_BYTES, offsets)?;
        let tbody = unframe(KIND_TIME, TIME_ENTRY_BYTES, times)?;
        let offsets: Vec<(u32, u32)> = obody
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .map(|c| (be_u32(&c[..4]), be_u32(&c[4..])))
            .collect();
        let times: Vec<(i64, u32)> = tbody
            .chunks_exact(TIME_ENTRY_BYTES)
            .map(|c| (be_i64(&c[..8]), be_u32(&c[8..])))
            .collect();
        if !offsets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
        {
            return Err(BadIndex("offset entries not increasing"));
        }
        if !times
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        {
            return Err(BadIndex("time entries not increasing"));
        }
        let (max_timestamp, offset_rel) = times.last().copied().unwrap_or((-1, 0));
        Ok(SegmentIndex {
            offsets,
            times,
            bytes_since_entry: 0,
            max_timestamp,
            offset_of_max_timestamp: if max_timestamp < 0 {
                -1
            } else {
                segment_base + offset_rel as i64
            },
        })
    }

    /// The offset entries: (base offset - segment base, byte position).
    pub(crate) fn offset_entries(&self) -> &[(u32, u32)] {
        &self.offsets
    }

    /// The time entries: (largest timestamp so far, base offset - segment base).
    pub(crate) fn time_entries(&self) -> &[(i64, u32)] {
        &self.times
    }

    /// Makes the newest (max timestamp, offset) an entry of the time index, so a decoded index
    /// knows the segment's exact max timestamp (Kafka does the same when it seals a segment).
    pub(crate) fn seal(&mut self, segment_base: i64) {
        if self.max_timestamp >= 0 && self.times.last().is_none_or(|t| t.0 < self.max_timestamp) {
            let rel = (self.offset_of_max_timestamp - segment_base).clamp(0, u32::MAX as i64);
            self.times.push((self.max_timestamp, rel as u32));
        }
    }
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    i64::from_be_bytes(a)
}

fn frame(kind: u16, entries: usize, body: Vec<u8>) -> Vec<u8> {
    let total = align_up((HEADER_BYTES + body.len()) as u64) as usize;
    let mut out = Vec::with_capacity(total.max(PAGE_BYTES));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(entries as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out.resize(total, 0);
    out
}

fn unframe(kind: u16, entry_bytes: usize, file: &[u8]) -> Result<&[u8], BadIndex> {
    if file.len() < HEADER_BYTES {
        return Err(BadIndex("shorter than its header"));
    }
    if &file[..4] != MAGIC {
        return Err(BadIndex("bad magic"));
    }
    let version = u16::from_be_bytes([file[4], file[5]]);
    if version != FORMAT_VERSION {
        return Err(BadIndex("unknown format version"));
    }
    if u16::from_be_bytes([file[6], file[7]]) != kind {
        return Err(BadIndex("wrong index kind"));
    }
    let entries = be_u32(&file[8..12]) as usize;
    let body_len = entries
        .checked_mul(entry_bytes)
        .filter(|n| HEADER_BYTES + n <= file.len())
        .ok_or(BadIndex("entry count exceeds the file"))?;
    let body = &file[HEADER_BYTES..HEADER_BYTES + body_len];
    if crc32c::crc32c(body) != be_u32(&file[12..16]) {
        return Err(BadIndex("checksum mismatch"));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let mut ix = SegmentIndex::new();
        // 10 batches of 1000 bytes, 5 records each, timestamps rising then one late one.
        for i in 0..10u32 {
            let ts = if i == 7 { 50 } else { 100 + i as i64 };
            ix.on_batch(i * 5, 1000 + (i * 5) as i64, i * 1000, 1000, ts, 1500);
        }
        ix
    }

    #[test]
    fn entries_follow_the_interval() {
        let ix = sample();
        // Entry at batch 0, then whenever > 1500 bytes accumulated: batches 2, 4, 6, 8.
        assert_eq!(
            ix.offsets,
            vec![(0, 0), (10, 2000), (20, 4000), (30, 6000), (40, 8000)]
        );
        assert_eq!(ix.position_for(0), 0);
        assert_eq!(ix.position_for(14), 2000);
        assert_eq!(ix.position_for(99), 8000);
        assert_eq!(ix.max_timestamp, 109);
        assert_eq!(ix.offset_of_max_timestamp, 1045);
    }

    #[test]
    fn time_lookup_never_skips_an_earlier_match() {
        let ix = sample();
        // First batch with ts >= 104 is batch 4 (rel 20): the scan must start at or before it.
        assert!(ix.offset_for_time(104) <= 20);
        assert_eq!(ix.offset_for_time(0), 0);
    }

    #[test]
    fn files_round_trip_and_corruption_is_detected() {
        let mut ix = sample();
        ix.seal(1000);
        let (o, t) = (ix.encode_offsets(), ix.encode_times());
        assert_eq!(o.len() % PAGE_BYTES, 0);
        let back = SegmentIndex::decode(&o, &t, 1000).unwrap();
        assert_eq!(back.offsets, ix.offsets);
        assert_eq!(back.times, ix.times);
        assert_eq!(back.max_timestamp, 109);
        assert_eq!(back.offset_of_max_timestamp, 1045);
        let mut bad = o.clone();
        bad[HEADER_BYTES + 3] ^= 1;
        assert_eq!(
            SegmentIndex::decode(&bad, &t, 1000),
            Err(BadIndex("checksum mismatch"))
        );
        assert!(SegmentIndex::decode(&o[..10], &t, 1000).is_err());
    }

    #[test]
    fn truncate_drops_later_entries() {
        let mut ix = sample();
        ix.truncate(20);
        assert_eq!(ix.offsets, vec![(0, 0), (10, 2000)]);
        assert_eq!(ix.position_for(35), 2000);
    }
}
