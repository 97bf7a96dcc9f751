//! Framing: every Kafka message travels as a 4-byte big-endian size followed by that many bytes.
//!
//! Owns: cutting frames out of a receive buffer ([`FrameDecoder`]) and writing the size prefix
//! around an encoded body ([`write_frame`]).
//! Never: allocates by a size read from the peer before checking it against `max_frame_bytes`;
//! copies a frame body (frames are split off the receive buffer, not copied); does socket I/O.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::WireError;
use crate::limits::WireLimits;

/// Size of the length prefix in front of every frame, in bytes.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// Cuts size-prefixed frames out of a receive buffer.
///
/// A server reads from its socket into a `BytesMut`, then calls [`FrameDecoder::next_frame`]
/// until it returns `Ok(None)`; [`FrameDecoder::bytes_needed`] then says how many more bytes
/// complete the next frame, so the next read can be sized (and a large frame's buffer reserved
/// once, after the size was validated).
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameDecoder {
    limits: WireLimits,
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: WireLimits) -> Self {
        Self { limits }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &WireLimits {
        &self.limits
    }

    /// Splits the next complete frame body (prefix removed) off the front of `buf`.
    ///
    /// `Ok(None)`: the frame is not complete yet; nothing was consumed. Once the size prefix is
    /// known and valid, `buf` is given room for the rest of the frame so the caller's next read
    /// lands in place. A negative size or one above `max_frame_bytes` is an error before any
    /// reservation; the connection cannot be resynchronised after it and should be closed.
    pub fn next_frame(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
        let Some(body_bytes) = self.peek_body_bytes(buf)? else {
            return Ok(None);
        };
        let frame_bytes = FRAME_PREFIX_BYTES + body_bytes;
        if buf.len() < frame_bytes {
            buf.reserve(frame_bytes - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(frame_bytes);
        frame.advance(FRAME_PREFIX_BYTES);
        Ok(Some(frame.freeze()))
    }

    /// How many more bytes `buf` needs before [`FrameDecoder::next_frame`] can return a frame:
    /// the rest of the size prefix if it is incomplete, else the rest of the frame. Zero means
    /// a frame (or an error) is ready.
    pub fn bytes_needed(&self, buf: &[u8]) -> Result<usize, WireError> {
        match self.peek_body_bytes(buf)? {
            None => Ok(FRAME_PREFIX_BYTES - buf.len()),
            Some(body_bytes) => Ok((FRAME_PREFIX_BYTES + body_bytes).saturating_sub(buf.len())),
        }
    }

    /// The validated body size announced by the prefix at the front of `buf`, if present
    /// (`Ok(None)`: the prefix is incomplete). Lets a server account for a frame's memory
    /// before it reads the body.
    pub fn peek_body_bytes(&self, buf: &[u8]) -> Result<Option<usize>, WireError> {
        let Some(prefix) = buf.first_chunk::<FRAME_PREFIX_BYTES>() else {
            return Ok(None);
        };
        let size = i32::from_be_bytes(*prefix);
        let body_bytes =
            usize::try_from(size).map_err(|_| WireError::NegativeFrameSize { size })?;
        check_frame_bytes(body_bytes, &self.limits)?;
        Ok(Some(body_bytes))
    }
}

/// Refuses a frame body larger than `limits.max_frame_bytes`.
pub(crate) fn check_frame_bytes(frame_bytes: usize, limits: &WireLimits) -> Result<(), WireError> {
    if frame_bytes > limits.max_frame_bytes {
        return Err(WireError::FrameTooLarge {
            frame_bytes,
            max_frame_bytes: limits.max_frame_bytes,
        });
    }
    Ok(())
}

/// Appends one frame to `out`: reserves the 4-byte prefix, lets `encode_body` append the body,
/// then patches the prefix with the body's length. On error `out` is left as it was, so a
/// half-written frame never reaches the socket.
pub fn write_frame(
    out: &mut BytesMut,
    encode_body: impl FnOnce(&mut BytesMut) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let start = out.len();
    out.put_i32(0);
    if let Err(error) = encode_body(out) {
        out.truncate(start);
        return Err(error);
    }
    let frame_bytes = out.len() - start - FRAME_PREFIX_BYTES;
    let Ok(size) = i32::try_from(frame_bytes) else {
        out.truncate(start);
        return Err(WireError::FrameSizeOverflow { frame_bytes });
    };
    out[start..start + FRAME_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        write_frame(&mut out, |b| {
            b.extend_from_slice(body);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn splits_frames_and_reports_missing_bytes() {
        let decoder = FrameDecoder::default();
        let mut wire = framed(b"hello");
        wire.extend_from_slice(&framed(b"world!"));
        let mut buf = BytesMut::new();
        assert_eq!(decoder.bytes_needed(&buf).unwrap(), 4);
        buf.extend_from_slice(&wire[..2]);
        assert_eq!(decoder.next_frame(&mut buf).unwrap(), None);
        assert_eq!(decoder.bytes_needed(&buf).unwrap(), 2);
        buf.extend_from_slice(&wire[2..6]);
        assert_eq!(decoder.next_frame(&mut buf).unwrap(), None);
        assert_eq!(decoder.bytes_needed(&buf).unwrap(), 3);
        buf.extend_from_slice(&wire[6..]);
        assert_eq!(
            decoder.next_frame(&mut buf).unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(
            decoder.next_frame(&mut buf).unwrap().as_deref(),
            Some(&b"world!"[..])
        );
        assert_eq!(decoder.next_frame(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_bad_sizes_before_reserving() {
        let decoder = FrameDecoder::new(WireLimits {
            max_frame_bytes: 16,
        });
        let mut negative = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert!(matches!(
            decoder.next_frame(&mut negative),
            Err(WireError::NegativeFrameSize { size: -1 })
        ));
        let mut huge = BytesMut::from(&i32::MAX.to_be_bytes()[..]);
        let capacity_before = huge.capacity();
        assert!(matches!(
            decoder.next_frame(&mut huge),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert_eq!(huge.capacity(), capacity_before);
        let mut at_limit = BytesMut::from(&16i32.to_be_bytes()[..]);
        assert_eq!(decoder.next_frame(&mut at_limit).unwrap(), None);
        assert!(at_limit.capacity() >= 20);
    }

    #[test]
    fn empty_frame_is_a_frame() {
        let decoder = FrameDecoder::default();
        let mut buf = framed(b"");
        assert_eq!(
            decoder.next_frame(&mut buf).unwrap().as_deref(),
            Some(&b""[..])
        );
    }

    #[test]
    fn failed_body_leaves_buffer_untouched() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let result = write_frame(&mut out, |b| {
            b.extend_from_slice(b"partial");
            Err(WireError::UnknownMessageKind)
        });
        assert!(result.is_err());
        assert_eq!(&out[..], b"keep");
    }
}
