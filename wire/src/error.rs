//! `WireError`: everything that can go wrong turning bytes into messages and back.
//!
//! Owns: the typed failure of framing, header and body codecs, with the context a server needs
//! to answer (the correlation id whenever it could be read).
//! Never: decides what the server does about an error (answer, close the connection); that is
//! the broker's call, made from the variant.

use kafka_protocol::messages::ApiKey;

use crate::error_code::ErrorCode;

/// A failure of the protocol layer. Variants that come from a request carry its correlation id
/// when the first 8 bytes of the frame were present, so the server can still answer.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The 4-byte size prefix was negative.
    #[error("frame size prefix is negative ({size})")]
    NegativeFrameSize {
        /// The prefix as read.
        size: i32,
    },

    /// The size prefix (or a frame handed in directly) exceeds `max_frame_bytes`.
    #[error("frame of {frame_bytes} bytes exceeds max_frame_bytes = {max_frame_bytes}")]
    FrameTooLarge {
        /// The announced or actual frame body size, in bytes.
        frame_bytes: usize,
        /// The configured limit, in bytes.
        max_frame_bytes: usize,
    },

    /// A request is larger than its API may be ([`crate::WireLimits::max_request_bytes`]:
    /// Produce up to `max_frame_bytes`, the others less).
    #[error(
        "{api_key:?} request of {frame_bytes} bytes exceeds its limit of {max_request_bytes} \
         bytes (correlation id {correlation_id})"
    )]
    RequestTooLarge {
        /// The api key.
        api_key: ApiKey,
        /// The frame body size, in bytes.
        frame_bytes: usize,
        /// The limit for this api key, in bytes.
        max_request_bytes: usize,
        /// The request's correlation id.
        correlation_id: i32,
    },

    /// An encoded frame body would not fit the signed 32-bit size prefix.
    #[error("encoded frame of {frame_bytes} bytes does not fit a 32-bit size prefix")]
    FrameSizeOverflow {
        /// The size that was produced, in bytes.
        frame_bytes: usize,
    },

    /// The frame is too short to hold api key, api version and correlation id (8 bytes).
    #[error("frame of {frame_bytes} bytes is too short for a request header")]
    TruncatedHeader {
        /// The frame body size, in bytes.
        frame_bytes: usize,
    },

    /// The api key is not one this crate knows.
    #[error("unknown api key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey {
        /// The raw api key.
        api_key: i16,
        /// The request's correlation id.
        correlation_id: i32,
    },

    /// The api version is outside the supported range of a known api key (ApiVersions excepted:
    /// see [`WireError::ApiVersionsFallback`]).
    #[error("{api_key:?} v{api_version} is not supported (correlation id {correlation_id})")]
    UnsupportedVersion {
        /// The api key.
        api_key: ApiKey,
        /// The requested version.
        api_version: i16,
        /// The request's correlation id.
        correlation_id: i32,
    },

    /// An ApiVersions request this side cannot read: its version is unsupported, or its header
    /// or body does not parse at that version. KIP-511: answer it with
    /// [`crate::response::encode_api_versions_fallback`] (a v0-format response carrying
    /// UNSUPPORTED_VERSION and the supported ranges), so the client retries with a version
    /// both sides know.
    #[error("ApiVersions v{api_version} cannot be read here (correlation id {correlation_id})")]
    ApiVersionsFallback {
        /// The version the client sent.
        api_version: i16,
        /// The request's correlation id.
        correlation_id: i32,
    },

    /// The request header (client id, tagged fields) does not parse.
    #[error("malformed {api_key:?} v{api_version} request header: {reason}")]
    MalformedHeader {
        /// The api key.
        api_key: ApiKey,
        /// The api version.
        api_version: i16,
        /// The request's correlation id.
        correlation_id: i32,
        /// What the decoder reported.
        reason: String,
    },

    /// The body does not parse at the version given (truncated, bad length, bad varint...).
    #[error("malformed {api_key:?} v{api_version} body: {reason}")]
    MalformedBody {
        /// The api key.
        api_key: ApiKey,
        /// The api version.
        api_version: i16,
        /// The correlation id of the request or response.
        correlation_id: i32,
        /// What the decoder reported.
        reason: String,
    },

    /// The body parsed but bytes were left over in the frame.
    #[error("{api_key:?} v{api_version} body leaves {trailing_bytes} bytes unread")]
    TrailingBytes {
        /// The api key.
        api_key: ApiKey,
        /// The api version.
        api_version: i16,
        /// The correlation id of the request or response.
        correlation_id: i32,
        /// How many bytes were left, in bytes.
        trailing_bytes: usize,
    },

    /// A response frame is too short for its header, or its header does not parse.
    #[error("malformed {api_key:?} v{api_version} response header: {reason}")]
    MalformedResponseHeader {
        /// The api key the caller expected.
        api_key: ApiKey,
        /// The api version the caller expected.
        api_version: i16,
        /// What the decoder reported.
        reason: String,
    },

    /// A message could not be encoded at the version asked for (a field that the version cannot
    /// carry holds a non-default value, an unknown api key, ...).
    #[error("cannot encode {api_key:?} v{api_version}: {reason}")]
    Encode {
        /// The api key.
        api_key: ApiKey,
        /// The api version.
        api_version: i16,
        /// What the encoder reported.
        reason: String,
    },

    /// An advertised version cap lies below the API's lowest supported version.
    #[error("cannot cap {api_key:?} at v{max_version}: its lowest version is v{min_version}")]
    VersionCapBelowFloor {
        /// The api key.
        api_key: ApiKey,
        /// The cap asked for.
        max_version: i16,
        /// The lowest version the API has.
        min_version: i16,
    },

    /// The body's variant is not a message this crate can name an api key for.
    #[error("message variant has no known api key")]
    UnknownMessageKind,
}

impl WireError {
    /// The Kafka error code a server would answer this error with, or `None` when there is no
    /// answer to give (the frame or its api key could not be read, or the failure is local).
    ///
    /// Kafka itself closes the connection on a request it cannot parse; a server that answers
    /// instead uses INVALID_REQUEST (42), which is what Kafka's `InvalidRequestException` maps
    /// to. Versions it does not speak get UNSUPPORTED_VERSION (35).
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Self::UnsupportedVersion { .. } | Self::ApiVersionsFallback { .. } => {
                Some(ErrorCode::UNSUPPORTED_VERSION)
            }
            Self::RequestTooLarge { .. }
            | Self::MalformedHeader { .. }
            | Self::MalformedBody { .. }
            | Self::TrailingBytes { .. } => Some(ErrorCode::INVALID_REQUEST),
            Self::NegativeFrameSize { .. }
            | Self::FrameTooLarge { .. }
            | Self::FrameSizeOverflow { .. }
            | Self::TruncatedHeader { .. }
            | Self::UnknownApiKey { .. }
            | Self::MalformedResponseHeader { .. }
            | Self::Encode { .. }
            | Self::VersionCapBelowFloor { .. }
            | Self::UnknownMessageKind => None,
        }
    }

    /// The correlation id of the request this error belongs to, when it was readable; a server
    /// uses it to answer instead of dropping the connection.
    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            Self::UnknownApiKey { correlation_id, .. }
            | Self::UnsupportedVersion { correlation_id, .. }
            | Self::RequestTooLarge { correlation_id, .. }
            | Self::ApiVersionsFallback { correlation_id, .. }
            | Self::MalformedHeader { correlation_id, .. }
            | Self::MalformedBody { correlation_id, .. }
            | Self::TrailingBytes { correlation_id, .. } => Some(*correlation_id),
            Self::NegativeFrameSize { .. }
            | Self::FrameTooLarge { .. }
            | Self::FrameSizeOverflow { .. }
            | Self::TruncatedHeader { .. }
            | Self::MalformedResponseHeader { .. }
            | Self::Encode { .. }
            | Self::VersionCapBelowFloor { .. }
            | Self::UnknownMessageKind => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answerable_errors_map_to_kafka_codes() {
        let unsupported = WireError::UnsupportedVersion {
            api_key: ApiKey::Produce,
            api_version: 2,
            correlation_id: 5,
        };
        assert_eq!(unsupported.error_code().map(ErrorCode::code), Some(35));
        let trailing = WireError::TrailingBytes {
            api_key: ApiKey::Metadata,
            api_version: 4,
            correlation_id: 5,
            trailing_bytes: 1,
        };
        assert_eq!(trailing.error_code().map(ErrorCode::code), Some(42));
        let unknown = WireError::UnknownApiKey {
            api_key: 1000,
            correlation_id: 5,
        };
        assert_eq!(
            (unknown.error_code(), unknown.correlation_id()),
            (None, Some(5))
        );
        assert_eq!(WireError::NegativeFrameSize { size: -1 }.error_code(), None);
    }
}
