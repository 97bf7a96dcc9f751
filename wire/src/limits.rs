//! The protocol layer's limits, each named once with its unit.
//!
//! Owns: the bounds the wire layer enforces on untrusted input before it allocates.
//! Never: reads configuration files or the environment; the broker builds a `WireLimits` from
//! its own configuration and hands it in.

/// Kafka's default `socket.request.max.bytes`: the largest request frame a broker accepts.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 104_857_600;

/// Bounds on what the peer may make this side allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireLimits {
    /// Largest frame body (the bytes after the 4-byte size prefix) accepted, in bytes. A size
    /// prefix above it is refused before any buffer is reserved for the frame. Default
    /// [`DEFAULT_MAX_FRAME_BYTES`] (100 MiB), Kafka's `socket.request.max.bytes`.
    pub max_frame_bytes: usize,
}

impl Default for WireLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}
