//! Walking the batches of a segment file: recovery, reads and timestamp lookups.
//!
//! Owns: reading a byte range of a segment in large aligned chunks and handing each whole
//! batch (header parsed by `corebus_wire`, optionally CRC-checked) to a visitor, with its
//! file position. Never: parses records, or trusts a length that reaches past the range.

use std::io;
use std::ops::ControlFlow;

use corebus_wire::record::{BATCH_HEADER_BYTES, BatchHeader, verify_batch_crc};

use super::disk::{DiskFile, align_down, align_up};

/// Where and why a scan stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Every batch up to `end` was visited; the value is `end`.
    End(u64),
    /// The visitor stopped at the batch at this position (not consumed).
    Stopped(u64),
    /// The bytes at `position` are not a valid batch (torn write, corruption, zero padding).
    Invalid { position: u64, why: String },
}

/// Visits the batches of `file` in `[start, end)`. `chunk_bytes` is the read size.
pub(crate) async fn scan<F: DiskFile>(
    file: &F,
    start: u64,
    end: u64,
    chunk_bytes: usize,
    verify_crc: bool,
    mut visit: impl FnMut(&BatchHeader, u64, &[u8]) -> ControlFlow<()>,
) -> io::Result<ScanEnd> {
    let mut pos = start;
    // Bytes needed past `pos` for the next step (a batch larger than a chunk).
    let mut needed = BATCH_HEADER_BYTES;
    while pos < end {
        let aligned = align_down(pos);
        let lead = (pos - aligned) as usize;
        let want = (align_up((lead + needed.max(chunk_bytes)) as u64)).min(align_up(end) - aligned)
            as usize;
        let buf = file.read_at(aligned, want).await?;
        let data = buf.as_ref();
        let avail = data.len().min((end - aligned) as usize);
        let mut off = lead;
        let mut progressed = false;
        loop {
            if pos >= end {
                return Ok(ScanEnd::End(pos));
            }
            let rest = &data[off.min(avail)..avail];
            if rest.len() < BATCH_HEADER_BYTES {
                needed = BATCH_HEADER_BYTES;
                break;
            }
            let header = match BatchHeader::parse(rest) {
                Ok(h) => h,
                Err(e) => {
                    return Ok(ScanEnd::Invalid {
                        position: pos,
                        why: e.to_string(),
                    });
                }
            };
            let total = header.total_len();
            if pos + total as u64 > end {
                return Ok(ScanEnd::Invalid {
                    position: pos,
                    why: format!("batch of {total} bytes extends past the end at {end}"),
                });
            }
            if rest.len() < total {
                needed = total;
                break;
            }
            let bytes = &rest[..total];
            if verify_crc && let Err(e) = verify_batch_crc(bytes) {
                return Ok(ScanEnd::Invalid {
                    position: pos,
                    why: e.to_string(),
                });
            }
            if visit(&header, pos, bytes).is_break() {
                return Ok(ScanEnd::Stopped(pos));
            }
            pos += total as u64;
            off += total;
            progressed = true;
        }
        // The range (or the file, when shorter than `end`) ends inside a batch: a torn tail.
        let remaining = (end - pos).min(data.len().saturating_sub(off) as u64);
        if remaining < needed as u64 && (!progressed || end - pos < needed as u64) {
            return Ok(ScanEnd::Invalid {
                position: pos,
                why: "file ends inside a batch".into(),
            });
        }
    }
    Ok(ScanEnd::End(pos))
}
