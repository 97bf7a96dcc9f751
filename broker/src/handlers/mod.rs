//! Kafka API handlers, one file per API, and the dispatch from a decoded request to its
//! handler. `api_support` is the single list of what this broker advertises: an API is added
//! there only when its handler fully works.
//!
//! Never: touches sockets or framing (the connection does); reaches another shard's state
//! except through the mesh; panics on client input.

pub mod api_versions;
pub mod common;

use std::rc::Rc;

use corebus_wire::kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use corebus_wire::request::Request;
use corebus_wire::versions::ApiSupport;
use tracing::warn;

use crate::shard::Shard;

/// What the connection does with a handled request.
pub enum Reply {
    /// Send this response.
    Respond(ResponseKind),
    /// Send nothing (Produce with acks=0).
    Nothing,
    /// Close the connection (a request Kafka would also drop the connection for).
    Close,
}

/// The APIs and versions this broker advertises in ApiVersions, and accepts.
pub fn api_support() -> ApiSupport {
    ApiSupport::new().with(ApiKey::ApiVersions)
}

/// Runs `request` on this shard.
pub async fn handle(shard: &Rc<Shard>, request: Request) -> Reply {
    if !api_support().supports(request.api_key, request.api_version) {
        // A client only sends what ApiVersions advertised; Kafka closes the connection too.
        warn!(api = ?request.api_key, v = request.api_version, "request for an API or version not advertised; closing");
        return Reply::Close;
    }
    let v = request.api_version;
    match request.body {
        RequestKind::ApiVersions(r) => {
            Reply::Respond(ResponseKind::ApiVersions(api_versions::handle(shard, r, v)))
        }
        _ => Reply::Close,
    }
}
