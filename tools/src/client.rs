//! A blocking Kafka client for one command at a time: connects to a bootstrap address,
//! negotiates versions with ApiVersions (KIP-511 fallback included), and sends one request
//! and waits for its answer. Connections to other brokers (partition leaders) are opened on
//! demand from the Metadata the cluster gave.
//!
//! Owns: sockets, version choice, timeouts, the frame size limit of responses.
//! Never: pipelines (an admin command has no use for it; `corebus-bench` is the fast client);
//! decodes a response bigger than `MAX_RESPONSE_FRAME_BYTES`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use corebus_wire::kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FindCoordinatorRequest, MetadataRequest, MetadataResponse,
    RequestHeader, RequestKind, ResponseKind,
};
use corebus_wire::kafka_protocol::protocol::StrBytes;
use corebus_wire::request::request_api_key;
use corebus_wire::{ErrorCode, VersionRange, decode_response, encode_request, supported_versions};
use thiserror::Error;

/// Largest response frame accepted (a Fetch answer is bounded by the request's max bytes).
pub const MAX_RESPONSE_FRAME_BYTES: usize = 256 << 20;
/// Connect timeout per address.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long one request may wait for its response (long-poll fetches ask for less).
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// What the broker sees as `client.id`.
const CLIENT_ID: &str = "corebus-ctl";
/// FindCoordinator key type of a consumer group (Kafka's `CoordinatorType.GROUP`).
const COORDINATOR_KEY_GROUP: i8 = 0;
/// FindCoordinator attempts while the coordinator is loading or moving, and the wait between.
pub const COORDINATOR_ATTEMPTS: usize = 20;
pub const COORDINATOR_RETRY_MS: u64 = 250;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection to {addr} failed: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} answered with bytes that are not a valid {api:?} response: {reason}")]
    Protocol {
        addr: String,
        api: ApiKey,
        reason: String,
    },
    #[error("{addr} does not support {api:?} at any version this tool speaks")]
    Unsupported { addr: String, api: ApiKey },
    #[error("the cluster has no broker with id {0}")]
    UnknownBroker(i32),
    #[error("{0}")]
    Kafka(String),
}

impl ClientError {
    /// Errors that mean the cluster could not be reached at all (exit code 3).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Connect { .. } | ClientError::Io { .. })
    }
}

/// `NAME (code)` of a Kafka error code, with the broker's message when it gave one.
pub fn error_text(code: i16, message: Option<&StrBytes>) -> String {
    let name = ErrorCode::from_code(code).name();
    match message {
        Some(m) if !m.is_empty() => format!("{name} ({code}): {}", m.as_str()),
        _ => format!("{name} ({code})"),
    }
}

/// A failed Kafka error code, as the error a command returns.
pub fn kafka_error(code: i16, context: &str, message: Option<&StrBytes>) -> ClientError {
    ClientError::Kafka(format!("{context}: {}", error_text(code, message)))
}

/// One broker connection with the versions it supports.
pub struct Connection {
    addr: String,
    stream: TcpStream,
    versions: HashMap<i16, VersionRange>,
    next_correlation_id: i32,
}

impl Connection {
    /// Connects to `addr` (HOST:PORT) and negotiates versions.
    pub fn open(addr: &str) -> Result<Connection, ClientError> {
        let connect_error = |reason: String| ClientError::Connect {
            addr: addr.to_owned(),
            reason,
        };
        let addrs = addr
            .to_socket_addrs()
            .map_err(|e| connect_error(e.to_string()))?;
        let mut last = String::from("no address");
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_millis(CONNECT_TIMEOUT_MS)) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let stream = stream.ok_or_else(|| connect_error(last))?;
        let io = |source| ClientError::Io {
            addr: addr.to_owned(),
            source,
        };
        stream.set_nodelay(true).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
            .map_err(io)?;
        let mut conn = Connection {
            addr: addr.to_owned(),
            stream,
            versions: HashMap::new(),
            next_correlation_id: 1,
        };
        conn.negotiate()?;
        Ok(conn)
    }

    fn negotiate(&mut self) -> Result<(), ClientError> {
        let ours = supported_versions(ApiKey::ApiVersions);
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let body = RequestKind::ApiVersions(request);
        let mut answer = self.send_at(&body, ApiKey::ApiVersions, ours.max)?;
        if let ResponseKind::ApiVersions(r) = &answer
            && r.error_code == ErrorCode::UNSUPPORTED_VERSION.code()
        {
            // KIP-511: retry at the highest version both sides know.
            let theirs = r
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                .map_or(0, |k| k.max_version);
            answer = self.send_at(&body, ApiKey::ApiVersions, theirs.min(ours.max))?;
        }
        let ResponseKind::ApiVersions(r) = answer else {
            return Err(self.protocol(ApiKey::ApiVersions, "not an ApiVersions answer"));
        };
        if r.error_code != 0 {
            return Err(kafka_error(r.error_code, "ApiVersions", None));
        }
        self.versions = r
            .api_keys
            .iter()
            .map(|k| {
                (
                    k.api_key,
                    VersionRange {
                        min: k.min_version,
                        max: k.max_version,
                    },
                )
            })
            .collect();
        Ok(())
    }

    /// The highest version of `api` both this tool and the broker speak.
    pub fn version(&self, api: ApiKey) -> Result<i16, ClientError> {
        let ours = supported_versions(api);
        let unsupported = || ClientError::Unsupported {
            addr: self.addr.clone(),
            api,
        };
        let theirs = self.versions.get(&(api as i16)).ok_or_else(unsupported)?;
        let v = ours.max.min(theirs.max);
        if v < ours.min.max(theirs.min) {
            return Err(unsupported());
        }
        Ok(v)
    }

    /// Sends `body` at the negotiated version and returns the response.
    pub fn call(&mut self, body: RequestKind) -> Result<ResponseKind, ClientError> {
        let api =
            request_api_key(&body).ok_or_else(|| ClientError::Kafka("unknown request".into()))?;
        let v = self.version(api)?;
        self.send_at(&body, api, v)
    }

    /// Sends a request and expects no answer (Produce with acks=0).
    pub fn send_only(&mut self, body: RequestKind) -> Result<(), ClientError> {
        let api =
            request_api_key(&body).ok_or_else(|| ClientError::Kafka("unknown request".into()))?;
        let v = self.version(api)?;
        let frame = self.encode(&body, api, v)?;
        self.write(&frame)
    }

    fn encode(&mut self, body: &RequestKind, api: ApiKey, v: i16) -> Result<Bytes, ClientError> {
        let header = RequestHeader::default()
            .with_correlation_id(self.next_correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        encode_request(&header, body, v).map_err(|e| self.protocol(api, &e.to_string()))
    }

    fn write(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        let addr = self.addr.clone();
        self.stream
            .write_all(frame)
            .map_err(|source| ClientError::Io { addr, source })
    }

    fn send_at(
        &mut self,
        body: &RequestKind,
        api: ApiKey,
        v: i16,
    ) -> Result<ResponseKind, ClientError> {
        let frame = self.encode(body, api, v)?;
        let correlation_id = self.next_correlation_id.wrapping_sub(1);
        self.write(&frame)?;
        let frame = self.read_frame(api)?;
        let (header, response) =
            decode_response(frame, api, v).map_err(|e| self.protocol(api, &e.to_string()))?;
        if header.correlation_id != correlation_id {
            return Err(self.protocol(
                api,
                &format!(
                    "correlation id {} answers a request we did not send ({correlation_id})",
                    header.correlation_id
                ),
            ));
        }
        Ok(response)
    }

    fn read_frame(&mut self, api: ApiKey) -> Result<Bytes, ClientError> {
        let addr = self.addr.clone();
        let io = |source| ClientError::Io {
            addr: addr.clone(),
            source,
        };
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).map_err(io)?;
        let size = i32::from_be_bytes(prefix);
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= MAX_RESPONSE_FRAME_BYTES)
            .ok_or_else(|| {
                self.protocol(
                    api,
                    &format!("frame size {size} outside 0..={MAX_RESPONSE_FRAME_BYTES}"),
                )
            })?;
        let mut body = BytesMut::zeroed(size);
        self.stream.read_exact(&mut body).map_err(io)?;
        Ok(body.freeze())
    }

    fn protocol(&self, api: ApiKey, reason: &str) -> ClientError {
        ClientError::Protocol {
            addr: self.addr.clone(),
            api,
            reason: reason.to_owned(),
        }
    }
}

/// The cluster as one bootstrap connection plus connections to other brokers when needed.
pub struct Cluster {
    bootstrap: Connection,
    brokers: HashMap<i32, String>,
    others: HashMap<i32, Connection>,
}

impl Cluster {
    /// Connects to the first reachable address of `bootstrap`.
    pub fn connect(bootstrap: &[String]) -> Result<Cluster, ClientError> {
        let mut last = None;
        for addr in bootstrap {
            match Connection::open(addr) {
                Ok(c) => {
                    return Ok(Cluster {
                        bootstrap: c,
                        brokers: HashMap::new(),
                        others: HashMap::new(),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            addr: String::new(),
            reason: "no bootstrap address given".into(),
        }))
    }

    /// The bootstrap connection (any broker answers admin requests).
    pub fn any(&mut self) -> &mut Connection {
        &mut self.bootstrap
    }

    /// Metadata for `topics` (all topics when `None`); remembers the brokers' addresses.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse, ClientError> {
        self.fetch_metadata(topics, false)
    }

    /// Metadata for `topics`, which the cluster creates when it auto-creates topics (as a
    /// producer's first Metadata does).
    pub fn metadata_creating(
        &mut self,
        topics: &[String],
    ) -> Result<MetadataResponse, ClientError> {
        self.fetch_metadata(Some(topics), true)
    }

    fn fetch_metadata(
        &mut self,
        topics: Option<&[String]>,
        auto_create: bool,
    ) -> Result<MetadataResponse, ClientError> {
        use corebus_wire::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(auto_create)
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(StrBytes::from_string(n.clone()).into()))
                    })
                    .collect()
            }));
        let ResponseKind::Metadata(m) = self.bootstrap.call(RequestKind::Metadata(request))? else {
            return Err(self
                .bootstrap
                .protocol(ApiKey::Metadata, "not a Metadata answer"));
        };
        for b in &m.brokers {
            self.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        Ok(m)
    }

    /// The broker id of the coordinator of consumer group `group` (FindCoordinator, both the
    /// single-key shape before v4 and the batched one after), retried while the cluster
    /// answers with a retriable error such as COORDINATOR_LOAD_IN_PROGRESS. `broker(id)`
    /// then connects to it.
    pub fn coordinator(&mut self, group: &str) -> Result<i32, ClientError> {
        let key = StrBytes::from_string(group.to_owned());
        // The encoder refuses a field the chosen version does not have.
        let request = if self.bootstrap.version(ApiKey::FindCoordinator)? >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![key])
        } else {
            FindCoordinatorRequest::default().with_key(key)
        }
        .with_key_type(COORDINATOR_KEY_GROUP);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ResponseKind::FindCoordinator(r) = self
                .bootstrap
                .call(RequestKind::FindCoordinator(request.clone()))?
            else {
                return Err(self
                    .bootstrap
                    .protocol(ApiKey::FindCoordinator, "not a FindCoordinator answer"));
            };
            let (code, message, id, addr) = match r.coordinators.first() {
                Some(c) => (
                    c.error_code,
                    c.error_message.clone(),
                    c.node_id.0,
                    format!("{}:{}", c.host.as_str(), c.port),
                ),
                None => (
                    r.error_code,
                    r.error_message.clone(),
                    r.node_id.0,
                    format!("{}:{}", r.host.as_str(), r.port),
                ),
            };
            if code == 0 {
                self.brokers.insert(id, addr);
                return Ok(id);
            }
            if !ErrorCode::from_code(code).is_retriable() || attempt >= COORDINATOR_ATTEMPTS {
                return Err(kafka_error(
                    code,
                    &format!("coordinator of group {group}"),
                    message.as_ref(),
                ));
            }
            std::thread::sleep(Duration::from_millis(COORDINATOR_RETRY_MS));
        }
    }

    /// A connection to the controller Metadata names (admin requests Kafka's controller
    /// answers: partition reassignments).
    pub fn controller(&mut self) -> Result<&mut Connection, ClientError> {
        let id = self.metadata(Some(&[]))?.controller_id.0;
        self.broker(id)
    }

    /// A connection to broker `id` (from the last Metadata).
    pub fn broker(&mut self, id: i32) -> Result<&mut Connection, ClientError> {
        let addr = self
            .brokers
            .get(&id)
            .cloned()
            .ok_or(ClientError::UnknownBroker(id))?;
        if addr == self.bootstrap.addr {
            return Ok(&mut self.bootstrap);
        }
        match self.others.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => Ok(e.insert(Connection::open(&addr)?)),
        }
    }
}
