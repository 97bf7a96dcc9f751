//! The protocol layer's limits, each named once with its unit.
//!
//! Owns: the bounds the wire layer enforces on untrusted input before it allocates.
//! Never: reads configuration files or the environment; the broker builds a `WireLimits` from
//! its own configuration and hands it in.

use kafka_protocol::messages::ApiKey;

/// Kafka's default `socket.request.max.bytes`: the largest request frame a broker accepts.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 104_857_600;

/// Largest request frame accepted for any API but Produce, in bytes (16 MiB; the smaller of
/// this and `max_frame_bytes` applies).
///
/// The generated decoders turn every array element into a struct of tens of bytes, from as
/// little as two input bytes: a 100 MiB Metadata request of null topic names decodes into
/// 3.6 GB and half a minute of work (measured). Produce carries its bulk as record bytes sliced
/// out of the frame without copying, so only it gets the full `max_frame_bytes`; every other
/// request a client sends stays far below this (a consumer fetching 10 000 partitions sends
/// about 300 KiB).
pub const MAX_NON_PRODUCE_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Bounds on what the peer may make this side allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireLimits {
    /// Largest frame body (the bytes after the 4-byte size prefix) accepted, in bytes. A size
    /// prefix above it is refused before any buffer is reserved for the frame. Default
    /// [`DEFAULT_MAX_FRAME_BYTES`] (100 MiB), Kafka's `socket.request.max.bytes`.
    pub max_frame_bytes: usize,
}

impl WireLimits {
    /// The largest request of `api_key` accepted, in bytes.
    pub fn max_request_bytes(&self, api_key: ApiKey) -> usize {
        match api_key {
            ApiKey::Produce => self.max_frame_bytes,
            _ => self.max_frame_bytes.min(MAX_NON_PRODUCE_REQUEST_BYTES),
        }
    }
}

impl Default for WireLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}
