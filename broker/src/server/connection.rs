//! One client connection: reads frames, decodes requests, runs them pipelined (up to
//! `max_inflight_requests_per_connection` read ahead), each starting only once the one before
//! it took effect (`super::order`: as Kafka, which handles a connection's requests one at a
//! time, except that durability waits overlap), and writes the responses strictly in request
//! order. A Fetch response goes out as pieces (storage chunks of this shard referenced where
//! they lie, `super::pieces`) in one vectored send, and the fetch memory its chunks hold is
//! given back once it is written.
//!
//! Memory: as soon as a frame's size prefix is read, the frame's size is taken from the
//! shard's request memory pool (`corebus.shard.request.memory.pool.bytes`; a frame larger
//! than the pool is refused like one over `socket.request.max.bytes`), and only then is the
//! body read; the memory is given back when the request is done. Each read appends at most
//! `SOCKET_READ_CHUNK_BYTES` (and never more than `SOCKET_READ_AHEAD_BYTES` past the frame
//! being read) through the shard's read scratch, so reading a frame costs its size, never a
//! buffer zeroed to the size the peer announced.
//!
//! Backpressure: the reader stops reading when the in-flight queue is full, while the request
//! memory pool is exhausted, and before a Produce request runs it takes its size from the
//! shard's produce memory budget (so a shard never holds more produce data than the budget;
//! past it, sockets are simply not read).
//!
//! Timeouts: a frame not complete within `corebus.request.read.timeout.ms` of its first byte
//! (or of the pool granting its memory) closes the connection with one log line, which gives
//! back what a stalled or trickling client holds; a connection with nothing in flight and
//! nothing read for `connections.max.idle.ms` is closed.
//!
//! When the reader ends (the peer closed, a read failed or timed out, a frame was refused,
//! shutdown), the connection's `closing` signal fires: a parked Fetch answers at once
//! instead of holding the connection (and its waits on other shards) until `max_wait_ms`.
//!
//! A frame that cannot be parsed closes the connection after the responses already owed are
//! written, with one log line; an ApiVersions request at an unknown version gets the KIP-511
//! v0 answer.
//!
//! Never: reorders responses; starts a request before the one read before it took effect;
//! reads more than `SOCKET_READ_AHEAD_BYTES` of a frame before the pool granted its memory;
//! panics on client input; blocks the reactor.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncWriteExt, future};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use kafka_protocol::messages::ApiKey;
use tracing::{Instrument, debug, info_span, warn};

use corebus_wire::error::WireError;
use corebus_wire::frame::FrameDecoder;
use corebus_wire::header::peek_request_prefix;
use corebus_wire::kafka_protocol;
use corebus_wire::limits::WireLimits;
use corebus_wire::request::decode_request;
use corebus_wire::response::{encode_api_versions_fallback, encode_response};

use super::closing::{self, Closed};
use super::order::Order;
use super::split::{ReadHalf, WriteHalf, split};
use crate::handlers;
use crate::limits::{SOCKET_READ_AHEAD_BYTES, SOCKET_READ_CHUNK_BYTES};
use crate::metrics::response_error::{fetch_error_code, response_error_code};
use crate::metrics::shard::RequestOutcome;
use crate::shard::Shard;
use crate::shard::memory_pool::MemoryPermit;

/// Bytes of an undecodable frame shown in the log line about it.
const MALFORMED_FRAME_LOGGED_BYTES: usize = 128;

thread_local! {
    /// Where each read lands before it is appended to its connection's buffer: zeroed once per
    /// shard thread, so no read zero-fills anything, and shared by the shard's connections,
    /// so an idle connection holds no read buffer of its own. Borrowed only within one poll of
    /// a read (glommio's socket read copies into it synchronously or registers for readiness
    /// and keeps no reference), never across an await, so connections cannot contend for it.
    static READ_SCRATCH: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; SOCKET_READ_CHUNK_BYTES].into_boxed_slice());
}

/// What the writer does for one request, in request order.
enum Outcome {
    /// Write this framed response.
    Respond(Bytes),
    /// Write these pieces, in order, as one framed response (one vectored send), then give
    /// back the fetch memory they held.
    RespondPieces(super::gather::FramedFetch),
    /// The request wants no response (Produce with acks=0).
    Silent,
    /// Close the connection once the earlier responses are out.
    Close,
}

/// What the reader and the writer know of a connection's activity, for the idle timeout.
struct Activity {
    /// Requests read whose outcome the writer has not finished with.
    in_flight: Cell<usize>,
    /// When a byte was last read or a request last finished.
    last: Cell<Instant>,
}

impl Activity {
    fn touch(&self) {
        self.last.set(Instant::now());
    }
}

/// Serves `stream` until the peer closes it, it misbehaves, it idles or stalls, or the shard
/// shuts down.
pub async fn serve_connection(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    // Responses are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    let (reader, writer) = split(stream);
    let depth = shard.config.limits.max_inflight_requests_per_connection;
    let (queue_tx, queue_rx) =
        local_channel::new_bounded::<glommio::task::JoinHandle<Outcome>>(depth);
    let activity = Rc::new(Activity {
        in_flight: Cell::new(0),
        last: Cell::new(Instant::now()),
    });
    let write_task = glommio::spawn_local(write_responses(
        shard.clone(),
        writer,
        queue_rx,
        peer,
        activity.clone(),
    ))
    .detach();
    let (closer, closed) = closing::pair();
    read_requests(&shard, reader, queue_tx, peer, &activity, closed).await;
    // Requests still waiting for something to answer (parked fetches) answer now: nothing more
    // will be read, and a peer that closed will not read what they would wait for.
    drop(closer);
    // The sender is gone: the writer drains what is owed and ends.
    let _ = write_task.await;
    debug!(%peer, "connection closed");
}

/// What ended a wait for the socket.
enum Woken {
    Read(io::Result<usize>),
    Timer,
    Shutdown,
}

async fn read_requests(
    shard: &Rc<Shard>,
    mut reader: ReadHalf,
    queue: local_channel::LocalSender<glommio::task::JoinHandle<Outcome>>,
    peer: SocketAddr,
    activity: &Activity,
    closed: Closed,
) {
    let config = &shard.config.limits;
    // A frame the pool could never hold is refused up front, exactly like an oversized one.
    let limits = WireLimits {
        max_frame_bytes: config
            .max_frame_bytes
            .min(shard.request_memory.capacity_bytes()),
    };
    let idle = Duration::from_millis(config.connections_max_idle_ms);
    let read_timeout = Duration::from_millis(config.request_read_timeout_ms);
    let decoder = FrameDecoder::new(limits);
    let mut order = Order::default();
    let mut buf = BytesMut::with_capacity(SOCKET_READ_AHEAD_BYTES);
    // The memory granted to the frame at the front of `buf`, while its body is being read.
    let mut memory: Option<MemoryPermit> = None;
    // When the frame at the front of `buf` must be complete; `None` between frames.
    let mut frame_deadline: Option<Instant> = None;
    loop {
        loop {
            let body_bytes = match decoder.peek_body_bytes(&buf) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    warn!(%peer, error = %e, "unreadable frame; closing the connection");
                    return;
                }
            };
            let permit = match memory.take() {
                Some(p) => p,
                None => {
                    let taken = future::or(
                        async { Some(shard.request_memory.take(body_bytes).await) },
                        async {
                            shard.shutdown.wait().await;
                            None
                        },
                    )
                    .await;
                    match taken {
                        None => return,
                        Some(Ok(p)) => {
                            // Waiting for memory is the broker's doing, not the peer's: the
                            // body's time to arrive starts now.
                            frame_deadline = Some(Instant::now() + read_timeout);
                            p
                        }
                        Some(Err(e)) => {
                            warn!(%peer, error = %e, "no request memory; closing the connection");
                            return;
                        }
                    }
                }
            };
            let frame = match decoder.next_frame(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    memory = Some(permit);
                    break;
                }
                Err(e) => {
                    warn!(%peer, error = %e, "unreadable frame; closing the connection");
                    return;
                }
            };
            frame_deadline = None;
            activity.in_flight.set(activity.in_flight.get() + 1);
            let (outcome, close) =
                start_request(shard, frame, limits, peer, &mut order, permit, &closed).await;
            if queue.send(outcome).await.is_err() {
                debug!(%peer, "writer gone; stop reading");
                return;
            }
            if close {
                return;
            }
        }
        let now = Instant::now();
        if !buf.is_empty() && frame_deadline.is_none() {
            // The first bytes of a size prefix: the frame's clock starts.
            frame_deadline = Some(now + read_timeout);
        }
        let wake_at = match frame_deadline {
            Some(deadline) => deadline,
            // Busy with requests: not idle; looked at again one idle period from now.
            None if activity.in_flight.get() > 0 => now + idle,
            None => activity.last.get() + idle,
        };
        // The decoder already refused a bad size prefix above, so an error here cannot happen.
        let want = decoder.bytes_needed(&buf).unwrap_or(0) + SOCKET_READ_AHEAD_BYTES;
        let woken = future::or(
            async { Woken::Read(read_into(&mut reader, &mut buf, want).await) },
            future::or(
                async {
                    shard.shutdown.wait().await;
                    Woken::Shutdown
                },
                async {
                    glommio::timer::sleep(wake_at.saturating_duration_since(now)).await;
                    Woken::Timer
                },
            ),
        )
        .await;
        match woken {
            Woken::Shutdown => return, // finish what was read, take no more
            Woken::Timer => {
                let now = Instant::now();
                match frame_deadline {
                    Some(deadline) if now >= deadline => {
                        warn!(
                            %peer,
                            timeout_ms = config.request_read_timeout_ms,
                            received_bytes = buf.len(),
                            missing_bytes = decoder.bytes_needed(&buf).unwrap_or(0),
                            "request frame not complete within corebus.request.read.timeout.ms; closing the connection"
                        );
                        shard.count(|m| m.request_read_timeouts += 1);
                        return;
                    }
                    Some(_) => {}
                    None => {
                        if activity.in_flight.get() == 0
                            && now.saturating_duration_since(activity.last.get()) >= idle
                        {
                            debug!(%peer, idle_ms = config.connections_max_idle_ms, "idle; closing the connection");
                            shard.count(|m| m.idle_connections_closed += 1);
                            return;
                        }
                    }
                }
            }
            Woken::Read(Ok(0)) => {
                debug!(%peer, "peer closed the connection");
                return;
            }
            Woken::Read(Ok(n)) => {
                shard.count(|m| m.received_bytes += n as u64);
                activity.touch();
            }
            Woken::Read(Err(e)) => {
                debug!(%peer, error = %e, "read failed");
                return;
            }
        }
    }
}

/// Reads once from `reader`, at most `max` bytes (and at most the scratch), and appends what
/// arrived to `buf`: a copy of exactly the bytes read, so a read costs what it brings.
async fn read_into(reader: &mut ReadHalf, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    future::poll_fn(|cx| {
        READ_SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let len = max.clamp(1, scratch.len());
            match Pin::new(&mut *reader).poll_read(cx, &mut scratch[..len]) {
                Poll::Ready(Ok(n)) => {
                    buf.extend_from_slice(&scratch[..n]);
                    Poll::Ready(Ok(n))
                }
                other => other,
            }
        })
    })
    .await
}

/// Decodes `frame` and starts running it; returns the task whose outcome the writer awaits,
/// and whether the connection must close after it.
async fn start_request(
    shard: &Rc<Shard>,
    frame: Bytes,
    limits: WireLimits,
    peer: SocketAddr,
    order: &mut Order,
    memory: MemoryPermit,
    closed: &Closed,
) -> (glommio::task::JoinHandle<Outcome>, bool) {
    let ready = |o: Outcome| glommio::spawn_local(async move { o }).detach();
    let is_produce =
        peek_request_prefix(&frame).is_some_and(|p| p.api_key == ApiKey::Produce as i16);
    // Held until the request finishes: the produce data it references stays counted.
    let permit = if is_produce {
        let budget = shard.config.limits.shard_produce_memory_budget_bytes;
        let units = frame.len().min(budget) as u64;
        match shard.produce_budget.acquire_static_permit(units).await {
            Ok(p) => Some(p),
            Err(_) => return (ready(Outcome::Close), true),
        }
    } else {
        None
    };
    // Kept (a reference count, not a copy) to show the start of a frame that does not decode.
    let raw = frame.clone();
    let decoded = match decode_request(frame, &limits) {
        // Kafka's broker ignores bytes after a request body, and librdkafka 2.16 sends some
        // (3 after a Metadata v13 body listing all topics): strictness here would cut off a
        // mainstream client. Decode again without them.
        Err(WireError::TrailingBytes {
            api_key,
            api_version,
            trailing_bytes,
            ..
        }) if trailing_bytes < raw.len() => {
            debug!(%peer, ?api_key, api_version, trailing_bytes, "ignoring bytes after the request body, as Kafka does");
            decode_request(raw.slice(..raw.len() - trailing_bytes), &limits)
        }
        other => other,
    };
    let request = match decoded {
        Ok(r) => r,
        Err(WireError::ApiVersionsFallback {
            api_version,
            correlation_id,
        }) => {
            debug!(%peer, api_version, "ApiVersions at an unsupported version: v0 fallback");
            let mut out = BytesMut::new();
            let outcome = match encode_api_versions_fallback(
                correlation_id,
                &handlers::api_support(),
                &mut out,
            ) {
                Ok(()) => Outcome::Respond(out.freeze()),
                Err(e) => {
                    warn!(%peer, error = %e, "cannot encode the ApiVersions fallback");
                    Outcome::Close
                }
            };
            return (ready(outcome), false);
        }
        Err(e) => {
            let shown = &raw[..raw.len().min(MALFORMED_FRAME_LOGGED_BYTES)];
            warn!(%peer, error = %e, frame_start = ?Bytes::copy_from_slice(shown), "malformed request; closing the connection");
            shard.count(|m| m.malformed_requests += 1);
            return (ready(Outcome::Close), true);
        }
    };
    let span = info_span!(
        "request",
        api = ?request.api_key,
        v = request.api_version,
        corr = request.correlation_id(),
        client = request.header.client_id.as_deref().unwrap_or(""),
    );
    let shard = shard.clone();
    let closed = closed.clone();
    let (wait, turn) = order.place();
    let task = glommio::spawn_local(
        async move {
            let (corr, key, version) = (
                request.correlation_id(),
                request.api_key,
                request.api_version,
            );
            let started = Instant::now();
            wait.done().await;
            let reply = handlers::handle(&shard, request, peer, turn, closed).await;
            // The request (and the frame it was decoded from) is gone: its memory is free.
            drop(permit);
            drop(memory);
            let (outcome, counted) = respond(corr, key, version, reply);
            shard.count(|m| m.record_request(key as i16, counted, started.elapsed()));
            outcome
        }
        .instrument(span),
    )
    .detach();
    (task, false)
}

/// Frames `reply`; returns what the writer does and how the request counts in the metrics.
fn respond(
    corr: i32,
    key: ApiKey,
    version: i16,
    reply: handlers::Reply,
) -> (Outcome, RequestOutcome) {
    let body = match reply {
        handlers::Reply::Respond(body) => body,
        handlers::Reply::Fetch(fetch) => {
            let code = fetch_error_code(&fetch.response);
            return match super::gather::frame_fetch(corr, version, fetch) {
                Ok(framed) => (Outcome::RespondPieces(framed), RequestOutcome::Code(code)),
                Err(e) => {
                    warn!(error = %e, "cannot encode the Fetch response; closing the connection");
                    (Outcome::Close, RequestOutcome::Closed)
                }
            };
        }
        handlers::Reply::Nothing => return (Outcome::Silent, RequestOutcome::NoResponse),
        handlers::Reply::Close => return (Outcome::Close, RequestOutcome::Closed),
    };
    let code = response_error_code(&body);
    let mut out = BytesMut::new();
    match encode_response(corr, key, version, &body, &mut out) {
        Ok(()) => (Outcome::Respond(out.freeze()), RequestOutcome::Code(code)),
        Err(e) => {
            warn!(error = %e, "cannot encode the response; closing the connection");
            (Outcome::Close, RequestOutcome::Closed)
        }
    }
}

async fn write_responses(
    shard: Rc<Shard>,
    mut writer: WriteHalf,
    queue: local_channel::LocalReceiver<glommio::task::JoinHandle<Outcome>>,
    peer: SocketAddr,
    activity: Rc<Activity>,
) {
    while let Some(task) = queue.recv().await {
        match task.await {
            Some(Outcome::Respond(bytes)) => {
                if let Err(e) = writer.write_all(&bytes).await {
                    debug!(%peer, error = %e, "write failed");
                    break;
                }
                shard.count(|m| m.sent_bytes += bytes.len() as u64);
            }
            Some(Outcome::RespondPieces(framed)) => {
                let slices: Vec<&[u8]> = framed.pieces.iter().map(|p| p.as_slice()).collect();
                if let Err(e) = writer.write_all_vectored(&slices).await {
                    debug!(%peer, error = %e, "write failed");
                    break;
                }
                let sent: usize = slices.iter().map(|s| s.len()).sum();
                shard.count(|m| m.sent_bytes += sent as u64);
                // Written: the storage chunks (and the fetch memory they held) go here.
                drop(slices);
                drop(framed);
            }
            Some(Outcome::Silent) => {}
            Some(Outcome::Close) => {
                debug!(%peer, "closing after the responses owed");
                break;
            }
            None => {
                warn!(%peer, "a request task ended without an answer; closing the connection");
                break;
            }
        }
        // Answered: the idle clock restarts from here.
        activity
            .in_flight
            .set(activity.in_flight.get().saturating_sub(1));
        activity.touch();
    }
    let _ = writer.close().await;
}
