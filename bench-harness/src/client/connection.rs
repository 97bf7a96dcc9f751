//! One TCP connection to a broker, with pipelined requests.
//!
//! Owns: connecting, the ApiVersions handshake, correlation ids, the bound on requests in
//! flight ([`super::limits::DEFAULT_MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION`] by default) and on
//! encoded bytes not yet written ([`MAX_UNSENT_BYTES_PER_CONNECTION`]), a writer task that
//! sends everything queued in one write, a reader task that cuts response frames
//! ([`super::limits::MAX_RESPONSE_FRAME_BYTES`]) and hands each to its caller, and a watchdog
//! that fails the connection when the oldest request waits past
//! [`super::limits::REQUEST_TIMEOUT_MS`].
//!
//! Never: reorders requests (Kafka answers a connection's requests in order, so the pending
//! queue is a FIFO and a correlation id out of order kills the connection); retries (the
//! caller counts an error and decides); holds a `RefCell` borrow across an await.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use corebus_wire::kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, RequestHeader, RequestKind, ResponseKind,
};
use corebus_wire::kafka_protocol::protocol::StrBytes;
use corebus_wire::request::request_api_key;
use corebus_wire::{FrameDecoder, WireLimits, decode_response, encode_request_into};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};

use super::error::ClientError;
use super::limits::{CONNECT_TIMEOUT_MS, MAX_RESPONSE_FRAME_BYTES, REQUEST_TIMEOUT_MS};
use super::versions::{ApiVersionTable, FIRST_API_VERSIONS_VERSION};

/// Encoded requests a connection holds before the writer has sent them, in bytes; a caller
/// waits beyond it (acks=0 producers have no other backpressure).
pub const MAX_UNSENT_BYTES_PER_CONNECTION: usize = 8 * 1024 * 1024;

/// Bytes the reader asks the socket for at least, per read.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// The client id every request carries.
const CLIENT_ID: &str = "corebus-bench";

type Reply = flume::Sender<Result<ResponseKind, ClientError>>;

struct Pending {
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    sent_at: Instant,
    reply: Reply,
    // Released when the answer arrives (or the connection dies), freeing an in-flight slot.
    _permit: StaticPermit,
}

#[derive(Default)]
struct Outbox {
    buf: BytesMut,
    writer: Option<Waker>,
    space_waiters: Vec<Waker>,
    closed: bool,
}

struct Inner {
    address: String,
    versions: RefCell<ApiVersionTable>,
    outbox: RefCell<Outbox>,
    pending: RefCell<VecDeque<Pending>>,
    in_flight: Rc<Semaphore>,
    next_correlation_id: Cell<i32>,
    dead: RefCell<Option<String>>,
}

/// A connection; share it as `Rc<Connection>`. Dropping the last handle closes the socket.
pub struct Connection {
    inner: Rc<Inner>,
}

impl Connection {
    /// Connects to `address`, starts the connection's tasks and negotiates versions.
    pub async fn connect(address: &str, max_in_flight: usize) -> Result<Connection, ClientError> {
        let connect_error = |reason: String| ClientError::Connect {
            address: address.to_owned(),
            reason,
        };
        let stream = TcpStream::connect_timeout(address, Duration::from_millis(CONNECT_TIMEOUT_MS))
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| connect_error(e.to_string()))?;
        let (reader, writer) = futures_lite::io::split(stream);
        let inner = Rc::new(Inner {
            address: address.to_owned(),
            versions: RefCell::new(ApiVersionTable::default()),
            outbox: RefCell::new(Outbox::default()),
            pending: RefCell::new(VecDeque::new()),
            in_flight: Rc::new(Semaphore::new(max_in_flight.max(1) as u64)),
            next_correlation_id: Cell::new(0),
            dead: RefCell::new(None),
        });
        glommio::spawn_local(write_loop(inner.clone(), writer)).detach();
        glommio::spawn_local(read_loop(inner.clone(), reader)).detach();
        glommio::spawn_local(watchdog(Rc::downgrade(&inner))).detach();
        let connection = Connection { inner };
        connection.negotiate().await?;
        Ok(connection)
    }

    /// The negotiated version of `api_key` with this broker.
    pub fn version(&self, api_key: ApiKey) -> Result<i16, ClientError> {
        self.inner
            .versions
            .borrow()
            .negotiate(api_key, &self.inner.address)
    }

    async fn negotiate(&self) -> Result<(), ClientError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = FIRST_API_VERSIONS_VERSION;
        // At most two rounds: the second uses the highest version the broker named.
        for _ in 0..2 {
            let body = RequestKind::ApiVersions(request.clone());
            let ResponseKind::ApiVersions(response) = self.call_at(body, version).await? else {
                return Err(ClientError::Metadata(
                    "ApiVersions answered with another kind".to_owned(),
                ));
            };
            let table = ApiVersionTable::from_response(&response);
            if response.error_code == 0 {
                *self.inner.versions.borrow_mut() = table;
                return Ok(());
            }
            let next = table.negotiate(ApiKey::ApiVersions, &self.inner.address)?;
            if next == version {
                break;
            }
            version = next;
        }
        Err(ClientError::Kafka {
            what: format!("ApiVersions with {}", self.inner.address),
            code: corebus_wire::ErrorCode::UNSUPPORTED_VERSION.code(),
        })
    }

    /// Sends `body` at the negotiated version and waits for its answer.
    pub async fn call(&self, body: RequestKind) -> Result<ResponseKind, ClientError> {
        let api_key = request_api_key(&body).ok_or(ClientError::Metadata(
            "request of an unknown kind".to_owned(),
        ))?;
        let version = self.version(api_key)?;
        self.call_at(body, version).await
    }

    /// Sends a request the broker does not answer (Produce with acks=0). Returns once it is
    /// queued for the socket; the in-flight slot is free again at once.
    pub async fn send_only(&self, body: RequestKind) -> Result<(), ClientError> {
        let api_key = request_api_key(&body).ok_or(ClientError::Metadata(
            "request of an unknown kind".to_owned(),
        ))?;
        let version = self.version(api_key)?;
        self.wait_for_space().await?;
        self.enqueue(&body, version)?;
        Ok(())
    }

    async fn call_at(
        &self,
        body: RequestKind,
        api_version: i16,
    ) -> Result<ResponseKind, ClientError> {
        let api_key = request_api_key(&body).ok_or(ClientError::Metadata(
            "request of an unknown kind".to_owned(),
        ))?;
        let permit = self
            .inner
            .in_flight
            .acquire_static_permit(1)
            .await
            .map_err(|_| self.lost())?;
        self.wait_for_space().await?;
        let (reply, answer) = flume::bounded(1);
        let correlation_id = self.enqueue(&body, api_version)?;
        self.inner.pending.borrow_mut().push_back(Pending {
            correlation_id,
            api_key,
            api_version,
            sent_at: Instant::now(),
            reply,
            _permit: permit,
        });
        let response = answer.recv_async().await.map_err(|_| self.lost())??;
        if corebus_wire::response::response_api_key(&response) != Some(api_key) {
            return Err(ClientError::WrongResponse {
                address: self.inner.address.clone(),
                api_key,
                got: format!("{:?}", corebus_wire::response::response_api_key(&response)),
            });
        }
        Ok(response)
    }

    /// Encodes one request into the outbox and wakes the writer; returns its correlation id.
    fn enqueue(&self, body: &RequestKind, api_version: i16) -> Result<i32, ClientError> {
        if self.inner.dead.borrow().is_some() {
            return Err(self.lost());
        }
        let correlation_id = self.inner.next_correlation_id.get();
        self.inner
            .next_correlation_id
            .set(correlation_id.wrapping_add(1) & i32::MAX);
        let header = RequestHeader::default()
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut outbox = self.inner.outbox.borrow_mut();
        encode_request_into(&header, body, api_version, &mut outbox.buf)?;
        if let Some(writer) = outbox.writer.take() {
            writer.wake();
        }
        Ok(correlation_id)
    }

    async fn wait_for_space(&self) -> Result<(), ClientError> {
        poll_fn(|cx| {
            if self.inner.dead.borrow().is_some() {
                return Poll::Ready(Err(self.lost()));
            }
            let mut outbox = self.inner.outbox.borrow_mut();
            if outbox.buf.len() < MAX_UNSENT_BYTES_PER_CONNECTION {
                Poll::Ready(Ok(()))
            } else {
                outbox.space_waiters.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    fn lost(&self) -> ClientError {
        ClientError::ConnectionLost {
            address: self.inner.address.clone(),
            reason: self
                .inner
                .dead
                .borrow()
                .clone()
                .unwrap_or_else(|| "closed".to_owned()),
        }
    }

    /// Whether the connection has failed (its requests all error from then on).
    pub fn is_dead(&self) -> bool {
        self.inner.dead.borrow().is_some()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut outbox = self.inner.outbox.borrow_mut();
        outbox.closed = true;
        if let Some(writer) = outbox.writer.take() {
            writer.wake();
        }
    }
}

/// Marks the connection dead and fails every waiting request with `reason`.
fn fail(inner: &Inner, reason: String) {
    if inner.dead.borrow().is_none() {
        *inner.dead.borrow_mut() = Some(reason.clone());
    }
    inner.in_flight.close();
    let pending: Vec<Pending> = inner.pending.borrow_mut().drain(..).collect();
    for p in pending {
        let _ = p.reply.send(Err(ClientError::ConnectionLost {
            address: inner.address.clone(),
            reason: reason.clone(),
        }));
    }
    let mut outbox = inner.outbox.borrow_mut();
    outbox.closed = true;
    for waiter in outbox.space_waiters.drain(..) {
        waiter.wake();
    }
    if let Some(writer) = outbox.writer.take() {
        writer.wake();
    }
}

async fn write_loop(inner: Rc<Inner>, mut socket: WriteHalf<TcpStream>) {
    loop {
        let next = poll_fn(|cx| {
            let mut outbox = inner.outbox.borrow_mut();
            if !outbox.buf.is_empty() {
                let batch = outbox.buf.split();
                for waiter in outbox.space_waiters.drain(..) {
                    waiter.wake();
                }
                Poll::Ready(Some(batch))
            } else if outbox.closed {
                Poll::Ready(None)
            } else {
                outbox.writer = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let Some(batch) = next else {
            let _ = socket.close().await;
            return;
        };
        if let Err(e) = socket.write_all(&batch).await {
            fail(&inner, format!("write: {e}"));
            return;
        }
    }
}

async fn read_loop(inner: Rc<Inner>, mut socket: ReadHalf<TcpStream>) {
    let decoder = FrameDecoder::new(WireLimits {
        max_frame_bytes: MAX_RESPONSE_FRAME_BYTES,
    });
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        loop {
            match decoder.next_frame(&mut buf) {
                Ok(Some(frame)) => {
                    if let Err(reason) = dispatch(&inner, frame) {
                        fail(&inner, reason);
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    fail(&inner, format!("framing: {e}"));
                    return;
                }
            }
        }
        let filled = buf.len();
        let room = (buf.capacity() - filled).max(READ_CHUNK_BYTES);
        buf.resize(filled + room, 0);
        match socket.read(&mut buf[filled..]).await {
            Ok(0) => {
                buf.truncate(filled);
                fail(&inner, "closed by the broker".to_owned());
                return;
            }
            Ok(n) => buf.truncate(filled + n),
            Err(e) => {
                fail(&inner, format!("read: {e}"));
                return;
            }
        }
    }
}

/// Hands one response frame to the oldest pending request.
fn dispatch(inner: &Inner, frame: bytes::Bytes) -> Result<(), String> {
    let Some(pending) = inner.pending.borrow_mut().pop_front() else {
        return Err("a response nobody asked for".to_owned());
    };
    let got = frame
        .first_chunk::<4>()
        .map(|c| i32::from_be_bytes(*c))
        .ok_or("a response shorter than its header")?;
    if got != pending.correlation_id {
        let error = ClientError::CorrelationMismatch {
            address: inner.address.clone(),
            got,
            expected: pending.correlation_id,
        };
        let reason = error.to_string();
        let _ = pending.reply.send(Err(error));
        return Err(reason);
    }
    let decoded = decode_response(frame, pending.api_key, pending.api_version)
        .map(|(_, body)| body)
        .map_err(ClientError::from);
    // A caller that went away (its task was dropped) simply does not read the answer.
    let _ = pending.reply.send(decoded);
    Ok(())
}

/// Fails the connection when its oldest request has waited past the request timeout, so a
/// broker that stops answering shows up as errors instead of a silent stall.
async fn watchdog(inner: std::rc::Weak<Inner>) {
    let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.dead.borrow().is_some() {
            return;
        }
        let overdue = inner
            .pending
            .borrow()
            .front()
            .filter(|p| p.sent_at.elapsed() > timeout)
            .map(|p| p.api_key);
        if let Some(api_key) = overdue {
            let error = ClientError::Timeout {
                address: inner.address.clone(),
                api_key,
                timeout_ms: REQUEST_TIMEOUT_MS,
            };
            fail(&inner, error.to_string());
            return;
        }
    }
}
