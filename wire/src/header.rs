//! Request headers v0-v2 and response headers v0-v1 (v2 and v1 are the flexible ones, KIP-482).
//!
//! Owns: the fixed 8-byte prefix every request starts with (api key, api version, correlation
//! id), the choice of header version for an api key and version, and the header codecs, all
//! through kafka-protocol's generated `RequestHeader`/`ResponseHeader`.
//! Never: decodes a body; trusts a header field before the api key and version are known.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Bytes at the front of every request frame that are the same in all header versions:
/// api key (i16), api version (i16), correlation id (i32).
pub const REQUEST_PREFIX_BYTES: usize = 8;

/// The part of a request header readable before its version is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    /// The raw api key; may name no API.
    pub api_key: i16,
    /// The raw api version; may be outside the supported range.
    pub api_version: i16,
    /// The correlation id the response must echo.
    pub correlation_id: i32,
}

/// Reads the fixed prefix of a request frame, or `None` if the frame is shorter than
/// [`REQUEST_PREFIX_BYTES`].
pub fn peek_request_prefix(frame: &[u8]) -> Option<RequestPrefix> {
    let prefix = frame.first_chunk::<REQUEST_PREFIX_BYTES>()?;
    Some(RequestPrefix {
        api_key: i16::from_be_bytes([prefix[0], prefix[1]]),
        api_version: i16::from_be_bytes([prefix[2], prefix[3]]),
        correlation_id: i32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]),
    })
}

/// The request header version a request of `api_key` at `api_version` carries (1, or 2 from
/// the API's first flexible version on).
pub fn request_header_version(api_key: ApiKey, api_version: i16) -> i16 {
    api_key.request_header_version(api_version)
}

/// The response header version to write for `api_key` at `api_version` (0, or 1 from the API's
/// first flexible version on).
///
/// ApiVersions is the exception: its responses always use header v0, even at flexible versions
/// (KIP-511), because the client reads the response before it knows what the broker speaks.
/// kafka-protocol's table says the same; the explicit arm keeps it true whatever the table does.
pub fn response_header_version(api_key: ApiKey, api_version: i16) -> i16 {
    match api_key {
        ApiKey::ApiVersions => 0,
        _ => api_key.response_header_version(api_version),
    }
}

/// Decodes a request header from the front of `frame`, advancing past it. The caller has
/// already checked the api key and version from the prefix.
pub(crate) fn decode_request_header(
    frame: &mut Bytes,
    api_key: ApiKey,
    api_version: i16,
) -> Result<RequestHeader, String> {
    RequestHeader::decode(frame, request_header_version(api_key, api_version))
        .map_err(|e| format!("{e:#}"))
}

/// Appends `header` at the header version its api key and version call for.
pub(crate) fn encode_request_header(
    header: &RequestHeader,
    api_key: ApiKey,
    out: &mut BytesMut,
) -> Result<(), String> {
    header
        .encode(
            out,
            request_header_version(api_key, header.request_api_version),
        )
        .map_err(|e| format!("{e:#}"))
}

/// Appends a response header for `correlation_id` at `header_version`.
pub(crate) fn encode_response_header(
    correlation_id: i32,
    header_version: i16,
    out: &mut BytesMut,
) -> Result<(), String> {
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(out, header_version)
        .map_err(|e| format!("{e:#}"))
}

/// Decodes a response header from the front of `frame`, advancing past it.
pub(crate) fn decode_response_header(
    frame: &mut Bytes,
    api_key: ApiKey,
    api_version: i16,
) -> Result<ResponseHeader, String> {
    ResponseHeader::decode(frame, response_header_version(api_key, api_version))
        .map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_response_header_is_always_v0() {
        let range = ApiKey::ApiVersions.valid_versions();
        for version in range.min..=range.max {
            assert_eq!(response_header_version(ApiKey::ApiVersions, version), 0);
        }
        // ...while its request header turns flexible at v3.
        assert_eq!(request_header_version(ApiKey::ApiVersions, 2), 1);
        assert_eq!(request_header_version(ApiKey::ApiVersions, 3), 2);
    }

    #[test]
    fn flexible_versions_pick_flexible_headers() {
        assert_eq!(request_header_version(ApiKey::Metadata, 8), 1);
        assert_eq!(request_header_version(ApiKey::Metadata, 9), 2);
        assert_eq!(response_header_version(ApiKey::Metadata, 8), 0);
        assert_eq!(response_header_version(ApiKey::Metadata, 9), 1);
        assert_eq!(request_header_version(ApiKey::Produce, 9), 2);
        assert_eq!(response_header_version(ApiKey::Produce, 8), 0);
    }

    #[test]
    fn response_header_v1_adds_only_an_empty_tag_section() {
        let mut v0 = BytesMut::new();
        encode_response_header(-7, 0, &mut v0).unwrap();
        assert_eq!(&v0[..], &(-7i32).to_be_bytes());
        let mut v1 = BytesMut::new();
        encode_response_header(-7, 1, &mut v1).unwrap();
        assert_eq!(&v1[..4], &(-7i32).to_be_bytes());
        assert_eq!(&v1[4..], &[0]);
    }

    #[test]
    fn prefix_needs_eight_bytes() {
        assert_eq!(peek_request_prefix(&[0, 18, 0, 3, 0, 0, 0]), None);
        let prefix = peek_request_prefix(&[0, 18, 0, 3, 0, 0, 1, 2, 9]).unwrap();
        assert_eq!(
            prefix,
            RequestPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 258
            }
        );
    }
}
