//! The epoch file: ZAB's `acceptedEpoch` and `currentEpoch`, which must survive crashes.
//!
//! Owns the format only (written whole and atomically by the store, replacing the old one).
//!
//! ```text
//! magic "CBZE" | format version u16 | reserved u16 | accepted u32 | current u32 | crc32c u32
//! ```

use crate::types::Epoch;

pub const EPOCH_FILE: &str = "epochs";
const MAGIC: [u8; 4] = *b"CBZE";
const VERSION: u16 = 1;
const EPOCH_FILE_BYTES: usize = 20;

/// `accepted`: the newest epoch this node promised to follow (NEWEPOCH). `current`: the epoch
/// of the newest leader whose history this node adopted (NEWLEADER). Always current <= accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Epochs {
    pub accepted: Epoch,
    pub current: Epoch,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("epoch file damaged: {0}")]
pub struct EpochFileError(pub &'static str);

pub fn encode_epochs(e: Epochs) -> Vec<u8> {
    let mut out = Vec::with_capacity(EPOCH_FILE_BYTES);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&e.accepted.0.to_le_bytes());
    out.extend_from_slice(&e.current.0.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The file is replaced atomically, so any damage is an error (never "assume zero", which
/// would let this node vote for an epoch it already refused).
pub fn decode_epochs(b: &[u8]) -> Result<Epochs, EpochFileError> {
    if b.len() != EPOCH_FILE_BYTES {
        return Err(EpochFileError("length"));
    }
    let le32 = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    if crc32c::crc32c(&b[..16]) != le32(16) {
        return Err(EpochFileError("checksum"));
    }
    if b[..4] != MAGIC || u16::from_le_bytes([b[4], b[5]]) != VERSION {
        return Err(EpochFileError("magic or version"));
    }
    let e = Epochs {
        accepted: Epoch(le32(8)),
        current: Epoch(le32(12)),
    };
    if e.current > e.accepted {
        return Err(EpochFileError("current epoch after accepted epoch"));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let e = Epochs {
            accepted: Epoch(5),
            current: Epoch(4),
        };
        let b = encode_epochs(e);
        assert_eq!(decode_epochs(&b), Ok(e));
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x10;
            assert!(decode_epochs(&bad).is_err());
        }
        assert!(
            decode_epochs(&encode_epochs(Epochs {
                accepted: Epoch(1),
                current: Epoch(2)
            }))
            .is_err()
        );
    }
}
