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

/// Memory the generated decoders may reserve for arrays while decoding any one frame, before
/// the per-byte allowance below, in bytes (32 MiB).
pub const DECODE_BUDGET_BASE_BYTES: usize = 32 * 1024 * 1024;

/// Array memory allowed per byte of the frame being decoded, on top of the base. Real messages
/// stay near 1 (strings and bytes are slices of the frame, not copies; a Metadata topic of
/// 20-character name takes 23 bytes on the wire and 72 in memory), while hostile ones reach 36
/// (a 2-byte null topic name becoming a 72-byte struct; a 3-byte Produce topic entry a 96-byte
/// one).
pub const DECODE_BUDGET_BYTES_PER_FRAME_BYTE: usize = 2;

/// The array memory the decoders may reserve for one frame of `frame_bytes` bytes.
pub fn decode_budget_bytes(frame_bytes: usize) -> usize {
    DECODE_BUDGET_BASE_BYTES
        .saturating_add(frame_bytes.saturating_mul(DECODE_BUDGET_BYTES_PER_FRAME_BYTE))
}

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
