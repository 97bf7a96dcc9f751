//! CRC32C arithmetic the batch rewrite needs beyond what the `crc32c` crate offers fast:
//! shifting a CRC past `n` zero bytes in O(log n) multiplications.
//!
//! `crc32c::crc32c_combine` does the same with zlib's old matrix-squaring method, ~1 us per
//! bit of the length: 45 us for a 1 MiB batch, more than re-reading a 16 KiB one. This is
//! zlib's newer method (multiplication modulo the polynomial with a table of x^(2^k)),
//! under a microsecond at any length. Checked against `crc32c_combine` in the tests.
//!
//! Never: computes a CRC over data (the `crc32c` crate's hardware path does that).

/// The CRC32C (Castagnoli) polynomial, bit-reflected.
const POLY: u32 = 0x82F6_3B78;
/// The polynomial x^0 = 1 in reflected order.
const ONE: u32 = 1 << 31;

/// a * b modulo the polynomial, both in reflected bit order.
const fn mul_mod_p(a: u32, mut b: u32) -> u32 {
    let mut m = ONE;
    let mut product = 0;
    loop {
        if a & m != 0 {
            product ^= b;
            if a & (m - 1) == 0 {
                return product;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
}

/// Entries of X2N: a length's 64 bits shifted by 3 (bytes to bits). zlib's CRC-32 table can
/// wrap at 32 because x has order 2^32-1 modulo its primitive polynomial; the Castagnoli
/// polynomial is not primitive, so no wrap here.
const X2N_ENTRIES: usize = 64 + 3;

/// X2N[k] = x^(2^k) modulo the polynomial.
const X2N: [u32; X2N_ENTRIES] = {
    let mut table = [0u32; X2N_ENTRIES];
    let mut p = ONE >> 1; // x^1
    let mut k = 0;
    while k < X2N_ENTRIES {
        table[k] = p;
        p = mul_mod_p(p, p);
        k += 1;
    }
    table
};

/// x^(n * 2^k) modulo the polynomial, for k <= 3 (n has at most 64 bits, so the index
/// stays below X2N_ENTRIES).
fn x_pow_n_2k(mut n: usize, mut k: usize) -> u32 {
    let mut p = ONE;
    while n != 0 {
        if n & 1 != 0 {
            p = mul_mod_p(X2N[k], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// The change a CRC32C undergoes when `len` bytes follow the data: for equal-length prefixes
/// A and A' and any suffix B of `len` bytes, crc(A'B) = crc(AB) ^ shift(crc(A) ^ crc(A'), len).
pub(crate) fn shift_zeros(crc_delta: u32, len: usize) -> u32 {
    // x^(8 * len): 2^3 bits per byte.
    mul_mod_p(x_pow_n_2k(len, 3), crc_delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_crates_combine() {
        for len in [
            0usize,
            1,
            2,
            7,
            8,
            61,
            1000,
            16 << 10,
            (1 << 20) + 3,
            usize::MAX >> 20,
        ] {
            for delta in [0u32, 1, 0xdead_beef, u32::MAX] {
                assert_eq!(
                    shift_zeros(delta, len),
                    crc32c::crc32c_combine(delta, 0, len),
                    "len {len} delta {delta:#x}"
                );
            }
        }
    }
}
