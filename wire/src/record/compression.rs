//! The compression codec of a record batch (attributes bits 0-2).

use super::RecordError;

/// Attribute bits that hold the codec id.
pub(crate) const COMPRESSION_MASK: i16 = 0x07;

/// Kafka's four codecs plus none, by the ids the batch attributes carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// Every codec, none first: for tests and tools that cover them all.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec named by a batch's attributes; ids 5..7 are malformed.
    pub fn from_attributes(attributes: i16) -> Result<Compression, RecordError> {
        match (attributes & COMPRESSION_MASK) as u8 {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(RecordError::UnknownCompression(other)),
        }
    }

    /// The codec id as written into the attributes.
    pub fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec's name, as Kafka's `compression.type` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Start of a snappy stream in xerial's framing (snappy-java's `SnappyOutputStream`), which
/// Kafka's Java client writes: magic, then version and compatible version as big-endian i32,
/// then blocks of (big-endian i32 length, raw snappy block).
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_BYTES: usize = 16;
const XERIAL_VERSION: i32 = 1;
/// Uncompressed bytes per xerial block, as snappy-java writes them (32 KiB).
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;
/// zstd level for the builder: the library default, as Kafka's producer uses.
const ZSTD_LEVEL: i32 = 3;

fn decompress_error(codec: Compression) -> impl FnOnce(std::io::Error) -> RecordError {
    move |source| RecordError::Decompress {
        codec: codec.name(),
        source,
    }
}

fn invalid_data(message: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// Reads a decoder to its end, failing once it yields more than `max_bytes`.
fn read_bounded(
    codec: Compression,
    reader: impl std::io::Read,
    size_guess: usize,
    max_bytes: usize,
) -> Result<Vec<u8>, RecordError> {
    use std::io::Read;
    let mut out = Vec::with_capacity(size_guess.min(max_bytes));
    reader
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut out)
        .map_err(decompress_error(codec))?;
    if out.len() > max_bytes {
        return Err(RecordError::DecompressedTooLarge {
            limit_bytes: max_bytes,
        });
    }
    Ok(out)
}

/// Decompresses one raw snappy block onto `out`, checking its declared size against what the
/// limit still allows before allocating.
fn snappy_raw_block(block: &[u8], out: &mut Vec<u8>, max_bytes: usize) -> Result<(), RecordError> {
    let declared = snap::raw::decompress_len(block)
        .map_err(|e| decompress_error(Compression::Snappy)(std::io::Error::other(e)))?;
    if declared > max_bytes - out.len() {
        return Err(RecordError::DecompressedTooLarge {
            limit_bytes: max_bytes,
        });
    }
    let start = out.len();
    out.resize(start + declared, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| decompress_error(Compression::Snappy)(std::io::Error::other(e)))?;
    Ok(())
}

fn snappy_decompress(input: &[u8], max_bytes: usize) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::new();
    let Some(mut rest) = input.strip_prefix(&XERIAL_MAGIC[..]) else {
        // librdkafka and others may write one raw snappy block.
        snappy_raw_block(input, &mut out, max_bytes)?;
        return Ok(out);
    };
    let truncated =
        || decompress_error(Compression::Snappy)(invalid_data("truncated xerial frame"));
    // Version and compatible version: snappy-java itself ignores them beyond the magic.
    rest = rest
        .get(XERIAL_HEADER_BYTES - XERIAL_MAGIC.len()..)
        .ok_or_else(truncated)?;
    while !rest.is_empty() {
        let (length, tail) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
        let length = usize::try_from(i32::from_be_bytes(*length)).map_err(|_| truncated())?;
        let block = tail.get(..length).ok_or_else(truncated)?;
        snappy_raw_block(block, &mut out, max_bytes)?;
        rest = &tail[length..];
    }
    Ok(out)
}

/// Decompresses a batch's record data, refusing to produce more than `max_bytes` (bounds
/// compression bombs). Snappy accepts both xerial framing and a raw snappy block; lz4 is the
/// LZ4 frame format Kafka writes for magic 2.
pub fn decompress(
    codec: Compression,
    input: &[u8],
    max_bytes: usize,
) -> Result<Vec<u8>, RecordError> {
    // A decent first guess avoids regrowing the buffer for ordinary ratios.
    let guess = input.len().saturating_mul(4);
    match codec {
        Compression::None => {
            if input.len() > max_bytes {
                return Err(RecordError::DecompressedTooLarge {
                    limit_bytes: max_bytes,
                });
            }
            Ok(input.to_vec())
        }
        // Kafka's Java client reads with GZIPInputStream, which accepts concatenated members.
        Compression::Gzip => read_bounded(
            codec,
            flate2::read::MultiGzDecoder::new(input),
            guess,
            max_bytes,
        ),
        Compression::Snappy => snappy_decompress(input, max_bytes),
        Compression::Lz4 => read_bounded(
            codec,
            lz4_flex::frame::FrameDecoder::new(input),
            guess,
            max_bytes,
        ),
        // The window stays at zstd's default ceiling (log 27): a streaming encoder picks its
        // window from the level, not the input size, and Kafka allows levels up to 22, whose
        // window is 2^27. So a frame may make the decoder reserve up to 128 MiB of (lazily
        // committed) memory; the output itself is bounded by `max_bytes`.
        Compression::Zstd => read_bounded(
            codec,
            zstd::stream::read::Decoder::new(input).map_err(decompress_error(codec))?,
            guess,
            max_bytes,
        ),
    }
}

fn compress_error(codec: Compression) -> impl FnOnce(std::io::Error) -> RecordError {
    move |source| RecordError::Compress {
        codec: codec.name(),
        source,
    }
}

/// Compresses record data the way Kafka's Java producer does (gzip member, xerial-framed
/// snappy, LZ4 frame, zstd frame). For the builder: tests, tools and the bench harness.
pub fn compress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, RecordError> {
    use std::io::Write;
    match codec {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(input).map_err(compress_error(codec))?;
            encoder.finish().map_err(compress_error(codec))
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER_BYTES + input.len());
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
            out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for chunk in input.chunks(XERIAL_BLOCK_BYTES) {
                let block = encoder
                    .compress_vec(chunk)
                    .map_err(|e| compress_error(codec)(std::io::Error::other(e)))?;
                // A block of at most 32 KiB input compresses to well under i32::MAX.
                out.extend_from_slice(&(block.len() as i32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
            encoder.write_all(input).map_err(compress_error(codec))?;
            encoder
                .finish()
                .map_err(|e| compress_error(codec)(std::io::Error::other(e)))
        }
        Compression::Zstd => {
            zstd::stream::encode_all(input, ZSTD_LEVEL).map_err(compress_error(codec))
        }
    }
}

/// A raw (unframed) snappy block, as librdkafka writes; for tests of the decoder's fallback.
pub fn compress_snappy_raw(input: &[u8]) -> Result<Vec<u8>, RecordError> {
    snap::raw::Encoder::new()
        .compress_vec(input)
        .map_err(|e| compress_error(Compression::Snappy)(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = Compression::ALL;

    fn sample() -> Vec<u8> {
        (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample();
        for codec in ALL {
            let packed = compress(codec, &data).unwrap();
            assert_eq!(
                decompress(codec, &packed, data.len()).unwrap(),
                data,
                "{codec:?}"
            );
            assert_eq!(Compression::from_attributes(codec.id()).unwrap(), codec);
        }
        let raw = compress_snappy_raw(&data).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, data.len()).unwrap(),
            data
        );
    }

    #[test]
    fn the_limit_stops_bombs() {
        let zeros = vec![0u8; 4 << 20];
        for codec in ALL {
            let packed = compress(codec, &zeros).unwrap();
            assert!(
                matches!(
                    decompress(codec, &packed, zeros.len() - 1),
                    Err(RecordError::DecompressedTooLarge { .. })
                ),
                "{codec:?}"
            );
        }
        let raw = compress_snappy_raw(&zeros).unwrap();
        assert!(matches!(
            decompress(Compression::Snappy, &raw, 1024),
            Err(RecordError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(
                decompress(codec, b"\x82SNAPPY\0garbage!!", 1 << 20).is_err(),
                "{codec:?}"
            );
            assert!(
                decompress(codec, &[0xff; 64], 1 << 20).is_err(),
                "{codec:?}"
            );
        }
        assert!(matches!(
            Compression::from_attributes(5),
            Err(RecordError::UnknownCompression(5))
        ));
    }
}
