//! Kafka's variable-length integers: zigzag varint (i32) and varlong (i64) as used inside
//! records (KIP-98), and the unsigned varint of flexible versions (KIP-482).
//!
//! Owns: reading them from a byte slice at a cursor and appending them to a `Vec<u8>`.
//! Never: reads past the slice, accepts more than 5 (varint) or 10 (varlong) bytes, or
//! accepts a last byte whose bits do not fit the integer (that is overflow, an error).

use thiserror::Error;

/// Most bytes a 32-bit varint takes (5 x 7 bits >= 32).
pub const MAX_VARINT_BYTES: usize = 5;
/// Most bytes a 64-bit varlong takes (10 x 7 bits >= 64).
pub const MAX_VARLONG_BYTES: usize = 10;

/// A varint that cannot be read.
#[derive(Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The bytes ended before the varint's last byte.
    #[error("varint truncated")]
    Truncated,
    /// More bytes, or more bits, than the integer holds.
    #[error("varint overflows {bits} bits")]
    Overflow { bits: u32 },
}

/// Reads an unsigned LEB128 value of at most `bits` bits starting at `*pos`, advancing `*pos`
/// past it only on success.
fn read_unsigned(bytes: &[u8], pos: &mut usize, bits: u32) -> Result<u64, VarintError> {
    let mut value: u64 = 0;
    let mut shift: u32 = 0;
    let mut at = *pos;
    loop {
        let Some(&byte) = bytes.get(at) else {
            return Err(VarintError::Truncated);
        };
        at += 1;
        let payload = u64::from(byte & 0x7f);
        // Bits of this byte that land at or above `bits` would be silently dropped: overflow.
        if shift >= bits || (bits - shift < 7 && payload >> (bits - shift) != 0) {
            return Err(VarintError::Overflow { bits });
        }
        value |= payload << shift;
        if byte & 0x80 == 0 {
            *pos = at;
            return Ok(value);
        }
        shift += 7;
    }
}

/// Reads an unsigned varint (flexible-version lengths and counts).
pub fn read_unsigned_varint(bytes: &[u8], pos: &mut usize) -> Result<u32, VarintError> {
    // read_unsigned refuses anything above 32 bits, so the cast is lossless.
    read_unsigned(bytes, pos, 32).map(|v| v as u32)
}

/// Reads a zigzag-encoded i32 (record lengths, deltas, key and value lengths).
pub fn read_varint(bytes: &[u8], pos: &mut usize) -> Result<i32, VarintError> {
    let raw = read_unsigned(bytes, pos, 32)? as u32;
    Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

/// Reads a zigzag-encoded i64 (timestamp deltas).
pub fn read_varlong(bytes: &[u8], pos: &mut usize) -> Result<i64, VarintError> {
    let raw = read_unsigned(bytes, pos, 64)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

fn put_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends an unsigned varint.
pub fn put_unsigned_varint(out: &mut Vec<u8>, value: u32) {
    put_unsigned(out, u64::from(value));
}

/// Appends a zigzag-encoded i32.
pub fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_unsigned(out, u64::from(((value << 1) ^ (value >> 31)) as u32));
}

/// Appends a zigzag-encoded i64.
pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    put_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn unsigned_len(value: u64) -> usize {
    // One byte per started group of 7 significant bits; zero still takes one byte.
    let significant_bits = 64 - value.leading_zeros() as usize;
    significant_bits.div_ceil(7).max(1)
}

/// Bytes `put_unsigned_varint(value)` appends.
pub fn unsigned_varint_len(value: u32) -> usize {
    unsigned_len(u64::from(value))
}

/// Bytes `put_varint(value)` appends.
pub fn varint_len(value: i32) -> usize {
    unsigned_len(u64::from(((value << 1) ^ (value >> 31)) as u32))
}

/// Bytes `put_varlong(value)` appends.
pub fn varlong_len(value: i64) -> usize {
    unsigned_len(((value << 1) ^ (value >> 63)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        // Values from Kafka's ByteUtilsTest.
        let mut out = Vec::new();
        put_varint(&mut out, 0);
        put_varint(&mut out, -1);
        put_varint(&mut out, 1);
        put_varint(&mut out, 63);
        put_varint(&mut out, -64);
        put_varint(&mut out, 64);
        assert_eq!(out, [0x00, 0x01, 0x02, 0x7e, 0x7f, 0x80, 0x01]);
        let mut out = Vec::new();
        put_varint(&mut out, i32::MIN);
        assert_eq!(out, [0xff, 0xff, 0xff, 0xff, 0x0f]);
    }

    #[test]
    fn overflow_and_truncation_are_errors() {
        let six = [0x80u8, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(
            read_varint(&six, &mut 0),
            Err(VarintError::Overflow { bits: 32 })
        );
        // Fifth byte carrying bits above 32.
        let high = [0xffu8, 0xff, 0xff, 0xff, 0x1f];
        assert_eq!(
            read_varint(&high, &mut 0),
            Err(VarintError::Overflow { bits: 32 })
        );
        let eleven = [0xffu8; 11];
        assert_eq!(
            read_varlong(&eleven, &mut 0),
            Err(VarintError::Overflow { bits: 64 })
        );
        let mut pos = 0;
        assert_eq!(read_varint(&[0x80], &mut pos), Err(VarintError::Truncated));
        assert_eq!(pos, 0, "a failed read leaves the cursor alone");
    }

    proptest! {
        #[test]
        fn varint_round_trips(v: i32) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            let mut pos = 0;
            prop_assert_eq!(read_varint(&out, &mut pos), Ok(v));
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn varlong_round_trips(v: i64) {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            prop_assert_eq!(out.len(), varlong_len(v));
            let mut pos = 0;
            prop_assert_eq!(read_varlong(&out, &mut pos), Ok(v));
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn unsigned_round_trips(v: u32) {
            let mut out = Vec::new();
            put_unsigned_varint(&mut out, v);
            prop_assert_eq!(out.len(), unsigned_varint_len(v));
            let mut pos = 0;
            prop_assert_eq!(read_unsigned_varint(&out, &mut pos), Ok(v));
        }

        #[test]
        fn random_bytes_never_panic(bytes: Vec<u8>) {
            let mut pos = 0;
            let _ = read_varlong(&bytes, &mut pos);
            let mut pos = 0;
            let _ = read_varint(&bytes, &mut pos);
        }
    }
}
