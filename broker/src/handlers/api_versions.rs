//! ApiVersions (key 18): what this broker speaks. Lists exactly `handlers::api_support()`, so an
//! API that does not fully work is never advertised. The KIP-511 answer to an unreadable
//! version is given by the connection (it needs no handler).
//!
//! Never: advertises an API without a working handler.

use corebus_wire::kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::shard::Shard;

pub fn handle(_shard: &Shard, _request: ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    super::api_support().api_versions_response()
}
