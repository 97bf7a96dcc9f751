//! Frames: a 4-byte little-endian payload length, then the rkyv bytes of one message.
//!
//! Owns the framing and the size check; never decides what a bad frame means for a
//! connection (the caller closes it and logs). Payloads are validated by rkyv's bytecheck
//! before anything reads them, so a malformed frame is an error, never a panic.

use std::io;

use futures_lite::{AsyncRead, AsyncReadExt};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {bytes} bytes is over the limit of {limit_bytes} bytes")]
    TooLarge { bytes: u64, limit_bytes: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("cannot encode a frame: {0}")]
    Encode(String),
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Encodes one message as a frame payload (no prefix: writers add it as they batch).
pub fn encode<T>(value: &T, limit_bytes: usize) -> Result<AlignedVec, FrameError>
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    let bytes =
        rkyv::to_bytes::<rancor::Error>(value).map_err(|e| FrameError::Encode(e.to_string()))?;
    if bytes.len() > limit_bytes {
        return Err(FrameError::TooLarge {
            bytes: bytes.len() as u64,
            limit_bytes,
        });
    }
    Ok(bytes)
}

/// Appends `payload` with its length prefix to `out` (a writer's batch buffer).
pub fn put_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Validates and decodes one payload.
pub fn decode<T>(payload: &AlignedVec) -> Result<T, FrameError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    rkyv::from_bytes::<T, rancor::Error>(payload).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Reads one frame's payload into `buf` (aligned, reused between frames). `Closed` when the
/// stream ends cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut AlignedVec,
    limit_bytes: usize,
) -> Result<(), FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match reader.read_exact(&mut header).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > limit_bytes {
        return Err(FrameError::TooLarge {
            bytes: len as u64,
            limit_bytes,
        });
    }
    buf.clear();
    buf.resize(len, 0);
    reader.read_exact(buf.as_mut_slice()).await?;
    Ok(())
}

/// Reads and decodes one frame.
pub async fn read_message<T, R>(
    reader: &mut R,
    buf: &mut AlignedVec,
    limit_bytes: usize,
) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: rkyv::Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    read_frame(reader, buf, limit_bytes).await?;
    decode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Hello;
    use crate::types::NodeId;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_frame(&mut out, payload);
        out
    }

    #[test]
    fn round_trip_and_refusals() {
        futures_lite::future::block_on(async {
            let hello = Hello::Peer {
                version: 1,
                from: NodeId(3),
            };
            let bytes = framed(&encode(&hello, 1024).unwrap());
            let mut buf = AlignedVec::new();
            let got: Hello = read_message(&mut &bytes[..], &mut buf, 1024).await.unwrap();
            assert_eq!(got, hello);

            // Over the limit: refused from the prefix alone, before reading the payload.
            let err = read_message::<Hello, _>(&mut &bytes[..], &mut buf, 2).await;
            assert!(matches!(err, Err(FrameError::TooLarge { .. })));
            assert!(matches!(
                encode(&hello, 2),
                Err(FrameError::TooLarge { .. })
            ));

            // Garbage of a plausible length: an error, not a panic.
            let junk = framed(&[0xff; 24]);
            let err = read_message::<Hello, _>(&mut &junk[..], &mut buf, 1024).await;
            assert!(matches!(err, Err(FrameError::Malformed(_))), "{err:?}");

            // A clean end between frames, and a cut inside one.
            let err = read_message::<Hello, _>(&mut &[][..], &mut buf, 1024).await;
            assert!(matches!(err, Err(FrameError::Closed)));
            let err = read_message::<Hello, _>(&mut &bytes[..6], &mut buf, 1024).await;
            assert!(matches!(err, Err(FrameError::Io(_))));
        });
    }
}
