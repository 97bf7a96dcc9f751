//! The Kafka wire protocol, as corebus speaks it.
//!
//! Owns: framing (size prefix, `max_frame_bytes`), request and response headers, decoding every
//! request and encoding every response through the generated `kafka-protocol` messages, the
//! version table, Kafka error codes, and the zero-copy record-batch layer (views over
//! `bytes::Bytes`, CRC32C, the offset rewrite done while copying into storage, record
//! iteration, compression, and the gather encoder for Fetch responses).
//!
//! Never: knows about a server, storage, a runtime or sockets; panics or allocates by a length
//! read from the input before checking it against the bytes present.

pub mod error;
pub mod error_code;
pub mod fetch;
pub mod frame;
pub mod header;
pub mod limits;
pub mod record;
pub mod request;
pub mod response;
pub mod varint;
pub mod versions;

/// The generated message types, re-exported so that users of this crate name one dependency.
pub use kafka_protocol;

// The protocol layer's entry points, named once at the crate root.
pub use error::WireError;
pub use error_code::{ErrorCode, ResponseError};
pub use frame::{FrameDecoder, write_frame};
pub use limits::WireLimits;
pub use request::{Request, decode_request, encode_request, encode_request_into};
pub use response::{decode_response, encode_api_versions_fallback, encode_response};
pub use versions::{ApiSupport, VersionRange, supported_versions};
