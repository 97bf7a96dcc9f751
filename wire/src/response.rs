//! Responses: a typed response out as a frame (server side), and a frame back into a typed
//! response (client side), including the ApiVersions fallback of KIP-511.
//!
//! Owns: [`encode_response`] (framed, with the header version the api key and version call for,
//! header v0 for ApiVersions always), [`decode_response`], and
//! [`encode_api_versions_fallback`].
//! Never: writes a tagged field that holds its default value (the generated encoders skip them;
//! librdkafka before 2.1 mis-skips non-empty tagged fields); leaves half a frame in the output
//! buffer on error.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::types::with_array_budget;

use crate::error::WireError;
use crate::error_code::ErrorCode;
use crate::frame::write_frame;
use crate::header::{decode_response_header, encode_response_header, response_header_version};
use crate::limits::decode_budget_bytes;
use crate::request::define_api_key_lookup;
use crate::versions::{ApiSupport, is_supported_version, supported_versions};

/// The ApiVersions version whose format every client can read: the fallback answer uses it.
pub const API_VERSIONS_FALLBACK_VERSION: i16 = 0;

crate::for_each_api!(define_api_key_lookup, response_api_key, ResponseKind);

/// Appends the framed response (size prefix, header, body) to `out`.
///
/// `api_key` and `api_version` are the request's; `body` must be that API's response. On error
/// `out` is unchanged.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
    out: &mut BytesMut,
) -> Result<(), WireError> {
    let encode_error = |reason: String| WireError::Encode {
        api_key,
        api_version,
        reason,
    };
    if response_api_key(body) != Some(api_key) {
        return Err(encode_error(
            "response body belongs to another api key".to_owned(),
        ));
    }
    if !is_supported_version(api_key, api_version) {
        return Err(encode_error(
            "version outside the supported range".to_owned(),
        ));
    }
    let header_version = response_header_version(api_key, api_version);
    write_frame(out, |out| {
        encode_response_header(correlation_id, header_version, out).map_err(encode_error)?;
        body.encode(out, api_version)
            .map_err(|e| encode_error(format!("{e:#}")))
    })
}

/// Appends the answer to an ApiVersions request this side cannot read
/// ([`WireError::ApiVersionsFallback`]): a v0-format ApiVersions response with header v0,
/// error UNSUPPORTED_VERSION (35) and the ApiVersions range of `support` (the generated range
/// if `support` does not list ApiVersions), as Kafka answers (KIP-511). Clients then retry with
/// the highest version both sides know.
pub fn encode_api_versions_fallback(
    correlation_id: i32,
    support: &ApiSupport,
    out: &mut BytesMut,
) -> Result<(), WireError> {
    let range = support
        .range(ApiKey::ApiVersions)
        .unwrap_or_else(|| supported_versions(ApiKey::ApiVersions));
    let only_api_versions = ApiSupport::new().with_max_version(ApiKey::ApiVersions, range.max)?;
    let body = ApiVersionsResponse::default()
        .with_error_code(ErrorCode::UNSUPPORTED_VERSION.code())
        .with_api_keys(only_api_versions.api_version_entries());
    encode_response(
        correlation_id,
        ApiKey::ApiVersions,
        API_VERSIONS_FALLBACK_VERSION,
        &ResponseKind::ApiVersions(body),
        out,
    )
}

/// Decodes one response frame (the bytes after the size prefix) to a request of `api_key` at
/// `api_version` (client side).
///
/// An ApiVersions response carrying UNSUPPORTED_VERSION is read in the v0 format, whatever
/// version was asked for: a broker that does not know the requested version answers in v0
/// (KIP-511), and the caller then retries with a version from the returned range.
///
/// Bytes left after the body are ignored here, as Kafka's Java client and librdkafka ignore
/// them: brokers in the field are not all exact (librdkafka's own mock cluster ends its
/// Metadata v13 responses with a stray byte). Requests, on the server side, stay strict.
pub fn decode_response(
    frame: Bytes,
    api_key: ApiKey,
    api_version: i16,
) -> Result<(ResponseHeader, ResponseKind), WireError> {
    let api_version = match api_key {
        ApiKey::ApiVersions if is_unsupported_version_answer(&frame) => {
            API_VERSIONS_FALLBACK_VERSION
        }
        _ => api_version,
    };
    let mut rest = frame;
    let header = decode_response_header(&mut rest, api_key, api_version).map_err(|reason| {
        WireError::MalformedResponseHeader {
            api_key,
            api_version,
            reason,
        }
    })?;
    let budget_bytes = decode_budget_bytes(rest.len());
    let decoded = with_array_budget(budget_bytes, || {
        ResponseKind::decode(api_key, &mut rest, api_version)
    });
    let body = decoded.map_err(|e| WireError::MalformedBody {
        api_key,
        api_version,
        correlation_id: header.correlation_id,
        reason: format!("{e:#}"),
    })?;
    Ok((header, body))
}

/// Whether an ApiVersions response frame carries UNSUPPORTED_VERSION: its header is always v0
/// (the 4-byte correlation id) and every version's body starts with the error code.
fn is_unsupported_version_answer(frame: &[u8]) -> bool {
    frame.get(4..6) == Some(&ErrorCode::UNSUPPORTED_VERSION.code().to_be_bytes()[..])
}
