//! The metrics listener (`--metrics-listen`): `/metrics` (OpenMetrics text), `/health`
//! (200 while the process lives), `/ready` (200 once every shard serves, 503 before that and
//! from SIGTERM on); anything else 404, a method other than GET or HEAD 405.
//!
//! It runs on one plain std thread with the small blocking `tiny_http` server rather than on
//! a shard: scrapes and probes are rare, a blocking thread cannot stall a reactor, and the
//! shards' state stays single-threaded (a scrape asks each shard for a snapshot through the
//! existing mesh, see `snapshot::collect`). Requests are answered one at a time on that
//! thread; `tiny_http` reads each connection on a helper thread of its own pool (four kept,
//! more while more connections are open), so this port is for scrapers and probes, not for
//! the open network: it binds loopback unless told otherwise.
//!
//! Owns: [`MetricsServer`], [`Endpoint`]. Never: reads a shard's state from this thread;
//! answers a scrape later than `SHARD_SNAPSHOT_TIMEOUT_MS` after asking the shards.

use std::net::SocketAddr;
use std::sync::Arc;

use corebus_consensus::runtime::Observed;
use thiserror::Error;
use tracing::{info, warn};

use super::exposition::{CONTENT_TYPE, ConsensusView, NodeMetrics, encode};
use super::health::{Health, Phase};
use super::snapshot::collect;
use crate::config::HostPort;
use crate::shard::mesh::Mesh;

#[derive(Debug, Error)]
#[error("cannot listen for metrics on {addr}: {reason}")]
pub struct MetricsBindError {
    pub addr: String,
    pub reason: String,
}

/// What the endpoint reports on.
pub struct Endpoint {
    pub health: Health,
    /// The shards' mesh (a broker node); `None` on a node without shards.
    pub mesh: Option<Mesh>,
    /// Open client connections on the node.
    pub connections: Arc<crate::server::admission::Admission>,
    /// This process's consensus role, when it has one.
    pub consensus: Option<Arc<Observed>>,
}

impl Endpoint {
    /// Takes one scrape: shards are asked only once they serve (before that their mailboxes
    /// are not read yet and each would only time out).
    pub fn scrape(&self) -> NodeMetrics {
        let phase = self.health.phase();
        let shards = match &self.mesh {
            Some(mesh) if phase != Phase::Starting => collect(mesh),
            Some(mesh) => (0..mesh.shard_count()).map(|i| (i as u16, None)).collect(),
            None => Vec::new(),
        };
        NodeMetrics {
            ready: phase == Phase::Ready,
            shards,
            connections_open: self.connections.open() as u64,
            consensus: self.consensus.as_ref().map(|o| ConsensusView {
                role: o.role(),
                serving: o.serving(),
                last_zxid: o.last_zxid().as_u64(),
                committed_zxid: o.committed_zxid().as_u64(),
                sessions: o.sessions(),
            }),
        }
    }
}

/// The running listener; [`MetricsServer::stop`] ends its thread.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
    addr: Option<SocketAddr>,
}

impl MetricsServer {
    /// Binds `listen` and serves `endpoint` on a thread of its own.
    pub fn start(listen: &HostPort, endpoint: Endpoint) -> Result<MetricsServer, MetricsBindError> {
        let addr = listen.to_string();
        let server = tiny_http::Server::http(addr.as_str()).map_err(|e| MetricsBindError {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
        let server = Arc::new(server);
        let bound = server.server_addr().to_ip();
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&serving, &endpoint))
            .map_err(|e| MetricsBindError {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        match bound {
            Some(a) => info!(listen = %a, "metrics, /health and /ready listening"),
            None => info!(listen = %addr, "metrics, /health and /ready listening"),
        }
        Ok(MetricsServer {
            server,
            thread: Some(thread),
            addr: bound,
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Stops accepting and joins the thread.
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, endpoint: &Endpoint) {
    for request in server.incoming_requests() {
        let (status, content_type, body) = route(request.method(), request.url(), endpoint);
        let mut response = tiny_http::Response::from_string(body).with_status_code(status);
        if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", content_type) {
            response = response.with_header(h);
        }
        if let Err(e) = request.respond(response) {
            // The scraper went away mid-answer: nothing to do but say so at debug level.
            tracing::debug!(error = %e, "metrics response not delivered");
        }
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Status, content type and body of the answer to `method path`.
fn route(
    method: &tiny_http::Method,
    url: &str,
    endpoint: &Endpoint,
) -> (u16, &'static str, String) {
    use tiny_http::Method;
    if !matches!(method, Method::Get | Method::Head) {
        return (405, TEXT, "only GET and HEAD\n".into());
    }
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    match path {
        "/metrics" => match encode(endpoint.scrape()) {
            Ok(text) => (200, CONTENT_TYPE, text),
            Err(e) => {
                warn!(error = %e, "cannot encode the metrics");
                (500, TEXT, "cannot encode the metrics\n".into())
            }
        },
        "/health" => (200, TEXT, "alive\n".into()),
        "/ready" => match endpoint.health.phase() {
            Phase::Ready => (200, TEXT, "ready\n".into()),
            Phase::Starting => (503, TEXT, "starting\n".into()),
            Phase::Stopping => (503, TEXT, "stopping\n".into()),
        },
        _ => (
            404,
            TEXT,
            "not found: try /metrics, /health or /ready\n".into(),
        ),
    }
}
