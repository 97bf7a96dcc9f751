//! The on-disk transaction log format: segments of checksummed records, with a format version.
//!
//! Owns encoding and scanning bytes only; never touches a file (see [`crate::store`]).
//!
//! A segment is named `log.<zxid as 16 hex digits>` after its first record and starts with
//! a header:
//!
//! ```text
//! magic "CBZL" | format version u16 | reserved u16 | base zxid u64 | header crc32c u32
//! ```
//!
//! then records, all little-endian:
//!
//! ```text
//! payload length u32 | crc32c u32 of (zxid ++ payload) | zxid u64 | payload (rkyv Txn)
//! ```
//!
//! Zxids strictly increase within and across segments. Only the tail of the newest segment
//! can be torn by a crash (the store syncs a segment before it opens the next one), so a bad
//! record there is cut off; anywhere else it is corruption and an error.

use crate::limits::MAX_TXN_RECORD_BYTES;
use crate::txn::{LogEntry, Txn};
use crate::types::Zxid;

pub const LOG_MAGIC: [u8; 4] = *b"CBZL";
/// Version 2 added the session transactions (`Txn::CreateSession`, `Txn::CloseSession`) as
/// new variants after the old ones, so a version 1 record decodes unchanged and version 1
/// segments are still read; a version 1 build refuses a version 2 segment by its header.
pub const LOG_FORMAT_VERSION: u16 = 2;
const LOG_FORMAT_V1: u16 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 20;
pub const RECORD_HEADER_BYTES: usize = 16;
const SEGMENT_PREFIX: &str = "log.";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("segment {segment}: bad header ({reason})")]
    BadHeader {
        segment: String,
        reason: &'static str,
    },
    #[error(
        "segment {segment}: format version {version} unknown (this build reads {LOG_FORMAT_VERSION})"
    )]
    UnknownVersion { segment: String, version: u16 },
    #[error("segment {segment}: corrupt record at byte {offset} ({reason})")]
    Corrupt {
        segment: String,
        offset: u64,
        reason: &'static str,
    },
    #[error("segment {segment}: zxid {zxid} at byte {offset} not after {previous}")]
    OutOfOrder {
        segment: String,
        offset: u64,
        zxid: Zxid,
        previous: Zxid,
    },
    #[error("transaction of {bytes} bytes exceeds the record limit")]
    TooLarge { bytes: usize },
    #[error("encoding a transaction failed: {0}")]
    Encode(String),
}

/// The file name of the segment whose first record is `base`.
pub fn segment_name(base: Zxid) -> String {
    format!("{SEGMENT_PREFIX}{:016x}", base.as_u64())
}

/// The base zxid of a segment file name, or `None` if the name is not a segment's.
pub fn parse_segment_name(name: &str) -> Option<Zxid> {
    let hex = name.strip_prefix(SEGMENT_PREFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(Zxid::from_u64)
}

pub fn encode_segment_header(base: Zxid) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEGMENT_HEADER_BYTES);
    out.extend_from_slice(&LOG_MAGIC);
    out.extend_from_slice(&LOG_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&base.as_u64().to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Encodes a transaction as rkyv bytes (shared by the log and the peer protocol later).
pub fn encode_txn(txn: &Txn) -> Result<Vec<u8>, LogError> {
    let bytes =
        rkyv::to_bytes::<rkyv::rancor::Error>(txn).map_err(|e| LogError::Encode(e.to_string()))?;
    if bytes.len() > MAX_TXN_RECORD_BYTES {
        return Err(LogError::TooLarge { bytes: bytes.len() });
    }
    Ok(bytes.to_vec())
}

/// Decodes and validates rkyv bytes of a transaction (copied to an aligned buffer first,
/// since records sit at arbitrary offsets).
pub fn decode_txn(payload: &[u8]) -> Option<Txn> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<Txn, rkyv::rancor::Error>(&aligned).ok()
}

pub fn encode_record(entry: &LogEntry) -> Result<Vec<u8>, LogError> {
    let payload = encode_txn(&entry.txn)?;
    let zxid = entry.zxid.as_u64().to_le_bytes();
    let mut crc = crc32c::crc32c(&zxid);
    crc = crc32c::crc32c_append(crc, &payload);
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&zxid);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// What a scan of one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    pub base: Zxid,
    pub entries: Vec<LogEntry>,
    /// Byte offset just past each entry (same indexes as `entries`).
    pub ends: Vec<u64>,
    /// Length of the valid prefix; shorter than the file when the tail was torn.
    pub valid_len: u64,
    /// The file had bytes past `valid_len` (a torn tail that must be cut off).
    pub torn: bool,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Scans a segment. `tail` says whether this is the newest segment, where a torn tail is
/// expected after a crash and cut off; in older segments any bad byte is [`LogError`].
/// A newest segment too short for its header scans as empty and torn (it was being created).
pub fn scan_segment(
    name: &str,
    bytes: &[u8],
    tail: bool,
    after: Zxid,
) -> Result<SegmentScan, LogError> {
    let segment = || name.to_string();
    let named = parse_segment_name(name).ok_or(LogError::BadHeader {
        segment: segment(),
        reason: "file name",
    })?;
    if bytes.len() < SEGMENT_HEADER_BYTES {
        if tail {
            return Ok(SegmentScan {
                base: named,
                entries: vec![],
                ends: vec![],
                valid_len: 0,
                torn: !bytes.is_empty(),
            });
        }
        return Err(LogError::BadHeader {
            segment: segment(),
            reason: "short",
        });
    }
    let header_crc = u32_at(bytes, 16);
    if crc32c::crc32c(&bytes[..16]) != header_crc {
        if tail {
            return Ok(SegmentScan {
                base: named,
                entries: vec![],
                ends: vec![],
                valid_len: 0,
                torn: true,
            });
        }
        return Err(LogError::BadHeader {
            segment: segment(),
            reason: "checksum",
        });
    }
    if bytes[..4] != LOG_MAGIC {
        return Err(LogError::BadHeader {
            segment: segment(),
            reason: "magic",
        });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != LOG_FORMAT_VERSION && version != LOG_FORMAT_V1 {
        return Err(LogError::UnknownVersion {
            segment: segment(),
            version,
        });
    }
    let base = Zxid::from_u64(u64_at(bytes, 8));
    if base != named {
        return Err(LogError::BadHeader {
            segment: segment(),
            reason: "base zxid differs from file name",
        });
    }
    let mut scan = SegmentScan {
        base,
        entries: vec![],
        ends: vec![],
        valid_len: SEGMENT_HEADER_BYTES as u64,
        torn: false,
    };
    let mut previous = after;
    let mut at = SEGMENT_HEADER_BYTES;
    let corrupt = |offset: usize, reason| LogError::Corrupt {
        segment: segment(),
        offset: offset as u64,
        reason,
    };
    while at < bytes.len() {
        let rest = &bytes[at..];
        let problem = if rest.len() < RECORD_HEADER_BYTES {
            Some("short record header")
        } else {
            let len = u32_at(rest, 0) as usize;
            if len > MAX_TXN_RECORD_BYTES {
                Some("record length over the limit")
            } else if rest.len() < RECORD_HEADER_BYTES + len {
                Some("short record")
            } else {
                let body = &rest[8..RECORD_HEADER_BYTES + len];
                if crc32c::crc32c(body) != u32_at(rest, 4) {
                    Some("checksum")
                } else {
                    None
                }
            }
        };
        if let Some(reason) = problem {
            if tail {
                scan.torn = true;
                return Ok(scan);
            }
            return Err(corrupt(at, reason));
        }
        let len = u32_at(rest, 0) as usize;
        let zxid = Zxid::from_u64(u64_at(rest, 8));
        if zxid <= previous || zxid < base {
            return Err(LogError::OutOfOrder {
                segment: segment(),
                offset: at as u64,
                zxid,
                previous,
            });
        }
        // The checksum matched, so a payload that does not decode is a writer bug, not a tear.
        let txn = decode_txn(&rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len])
            .ok_or_else(|| corrupt(at, "payload does not decode"))?;
        at += RECORD_HEADER_BYTES + len;
        previous = zxid;
        scan.entries.push(LogEntry { zxid, txn });
        scan.ends.push(at as u64);
        scan.valid_len = at as u64;
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::WriteOp;

    fn entry(c: u32) -> LogEntry {
        LogEntry {
            zxid: Zxid::new(1, c),
            txn: Txn::Write(WriteOp::SetData {
                path: "/a".into(),
                data: vec![c as u8; 10],
                expected_version: None,
            }),
        }
    }

    fn segment(n: u32) -> Vec<u8> {
        let mut bytes = encode_segment_header(Zxid::new(1, 1));
        for c in 1..=n {
            bytes.extend(encode_record(&entry(c)).unwrap());
        }
        bytes
    }

    #[test]
    fn round_trip() {
        let name = segment_name(Zxid::new(1, 1));
        assert_eq!(name, "log.0000000100000001");
        let scan = scan_segment(&name, &segment(3), false, Zxid::ZERO).unwrap();
        assert_eq!(scan.entries, vec![entry(1), entry(2), entry(3)]);
        assert!(!scan.torn);
        assert_eq!(*scan.ends.last().unwrap(), segment(3).len() as u64);
    }

    #[test]
    fn every_torn_tail_is_cut_at_a_record_boundary() {
        let name = segment_name(Zxid::new(1, 1));
        let full = segment(3);
        let ends = scan_segment(&name, &full, true, Zxid::ZERO).unwrap().ends;
        for cut in 0..full.len() {
            let scan = scan_segment(&name, &full[..cut], true, Zxid::ZERO).unwrap();
            let whole = ends.iter().filter(|&&e| e as usize <= cut).count();
            assert_eq!(scan.entries.len(), whole, "cut {cut}");
            assert_eq!(
                scan.torn,
                cut != 0 && cut != SEGMENT_HEADER_BYTES && !ends.contains(&(cut as u64))
            );
            // In an older segment the same damage is an error.
            if scan.torn && cut > SEGMENT_HEADER_BYTES {
                assert!(scan_segment(&name, &full[..cut], false, Zxid::ZERO).is_err());
            }
        }
    }

    #[test]
    fn flipped_bits_are_detected() {
        let name = segment_name(Zxid::new(1, 1));
        let full = segment(2);
        for i in SEGMENT_HEADER_BYTES..full.len() {
            let mut bad = full.clone();
            bad[i] ^= 0x40;
            assert!(
                scan_segment(&name, &bad, false, Zxid::ZERO).is_err(),
                "byte {i}"
            );
            let scan = scan_segment(&name, &bad, true, Zxid::ZERO);
            // As a tail it either cuts before the damage or refuses it; never returns it.
            if let Ok(scan) = scan {
                assert!(scan.entries.len() < 2);
            }
        }
    }

    /// `Txn` as version 1 wrote it.
    #[derive(rkyv::Archive, rkyv::Serialize)]
    enum TxnV1 {
        Write(WriteOp),
        Multi(Vec<WriteOp>),
        Noop,
    }

    #[test]
    fn version_1_records_decode_as_today_and_sessions_round_trip() {
        let op = WriteOp::Create {
            path: "/a".into(),
            data: vec![1, 2, 3],
            sequential: true,
            ephemeral_owner: None,
        };
        let cases = [
            (TxnV1::Write(op.clone()), Txn::Write(op.clone())),
            (TxnV1::Multi(vec![op.clone()]), Txn::Multi(vec![op])),
            (TxnV1::Noop, Txn::Noop),
        ];
        for (old, now) in cases {
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
            assert_eq!(decode_txn(&bytes), Some(now));
        }
        // A version 1 segment header is accepted.
        let name = segment_name(Zxid::new(1, 1));
        let mut v1 = segment(1);
        v1[4..6].copy_from_slice(&LOG_FORMAT_V1.to_le_bytes());
        let crc = crc32c::crc32c(&v1[..16]);
        v1[16..20].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            scan_segment(&name, &v1, false, Zxid::ZERO).unwrap().entries,
            vec![entry(1)]
        );
        for txn in [
            Txn::CreateSession {
                timeout_ticks: 20,
                password: u64::MAX,
            },
            Txn::CloseSession {
                session: crate::types::SessionId(5),
                expired: true,
            },
        ] {
            let e = LogEntry {
                zxid: Zxid::new(1, 1),
                txn,
            };
            let mut bytes = encode_segment_header(Zxid::new(1, 1));
            bytes.extend(encode_record(&e).unwrap());
            assert_eq!(
                scan_segment(&name, &bytes, false, Zxid::ZERO)
                    .unwrap()
                    .entries,
                vec![e]
            );
        }
    }

    #[test]
    fn rejects_wrong_version_order_and_name() {
        let name = segment_name(Zxid::new(1, 1));
        let mut bad = segment(1);
        bad[4] = 9;
        let crc = crc32c::crc32c(&bad[..16]);
        bad[16..20].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            scan_segment(&name, &bad, true, Zxid::ZERO),
            Err(LogError::UnknownVersion { .. })
        ));
        assert!(matches!(
            scan_segment(&name, &segment(2), true, Zxid::new(1, 1)),
            Err(LogError::OutOfOrder { .. })
        ));
        assert!(
            scan_segment(
                &segment_name(Zxid::new(2, 1)),
                &segment(1),
                true,
                Zxid::ZERO
            )
            .is_err()
        );
        assert_eq!(parse_segment_name("snap.0000000100000001"), None);
    }
}
