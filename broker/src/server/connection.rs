//! One client connection: reads frames, decodes requests, runs them pipelined (up to
//! `max_inflight_requests_per_connection` read ahead), each starting only once the one before
//! it took effect (`super::order`: as Kafka, which handles a connection's requests one at a
//! time, except that durability waits overlap), and writes the responses strictly in request
//! order.
//!
//! Backpressure: the reader stops reading when the in-flight queue is full, and before a
//! Produce request runs it takes its size from the shard's produce memory budget (so a shard
//! never holds more produce data than the budget; past it, sockets are simply not read).
//! A frame that cannot be parsed closes the connection after the responses already owed are
//! written, with one log line; an ApiVersions request at an unknown version gets the KIP-511
//! v0 answer.
//!
//! Never: reorders responses; starts a request before the one read before it took effect;
//! panics on client input; blocks the reactor.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
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

use super::order::Order;
use super::split::{ReadHalf, WriteHalf, split};
use crate::handlers;
use crate::limits::SOCKET_READ_CHUNK_BYTES;
use crate::metrics::response_error::{fetch_error_code, response_error_code};
use crate::metrics::shard::RequestOutcome;
use crate::shard::Shard;

/// Bytes of an undecodable frame shown in the log line about it.
const MALFORMED_FRAME_LOGGED_BYTES: usize = 128;

/// What the writer does for one request, in request order.
enum Outcome {
    /// Write this framed response.
    Respond(Bytes),
    /// Write these pieces, in order, as one framed response.
    RespondPieces(Vec<Bytes>),
    /// The request wants no response (Produce with acks=0).
    Silent,
    /// Close the connection once the earlier responses are out.
    Close,
}

/// Serves `stream` until the peer closes it, it misbehaves, or the shard shuts down.
pub async fn serve_connection(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    // Responses are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    let (reader, writer) = split(stream);
    let depth = shard.config.limits.max_inflight_requests_per_connection;
    let (queue_tx, queue_rx) =
        local_channel::new_bounded::<glommio::task::JoinHandle<Outcome>>(depth);
    let write_task =
        glommio::spawn_local(write_responses(shard.clone(), writer, queue_rx, peer)).detach();
    read_requests(&shard, reader, queue_tx, peer).await;
    // The sender is gone: the writer drains what is owed and ends.
    let _ = write_task.await;
    debug!(%peer, "connection closed");
}

async fn read_requests(
    shard: &Rc<Shard>,
    mut reader: ReadHalf,
    queue: local_channel::LocalSender<glommio::task::JoinHandle<Outcome>>,
    peer: SocketAddr,
) {
    let limits = WireLimits {
        max_frame_bytes: shard.config.limits.max_frame_bytes,
    };
    let decoder = FrameDecoder::new(limits);
    let mut order = Order::default();
    let mut buf = BytesMut::with_capacity(SOCKET_READ_CHUNK_BYTES);
    loop {
        loop {
            let frame = match decoder.next_frame(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    warn!(%peer, error = %e, "unreadable frame; closing the connection");
                    return;
                }
            };
            let (outcome, close) = start_request(shard, frame, limits, peer, &mut order).await;
            if queue.send(outcome).await.is_err() {
                debug!(%peer, "writer gone; stop reading");
                return;
            }
            if close {
                return;
            }
        }
        let start = buf.len();
        // The decoder already refused a bad size prefix above, so an error here cannot happen.
        let want = decoder
            .bytes_needed(&buf)
            .unwrap_or(0)
            .max(SOCKET_READ_CHUNK_BYTES);
        buf.resize(start + want, 0);
        let read = future::or(
            async { Some(reader.read(&mut buf[start..]).await) },
            async {
                shard.shutdown.wait().await;
                None
            },
        )
        .await;
        match read {
            None => return, // shutting down: finish what was read, take no more
            Some(Ok(0)) => {
                debug!(%peer, "peer closed the connection");
                return;
            }
            Some(Ok(n)) => {
                shard.count(|m| m.received_bytes += n as u64);
                buf.truncate(start + n);
            }
            Some(Err(e)) => {
                debug!(%peer, error = %e, "read failed");
                return;
            }
        }
    }
}

/// Decodes `frame` and starts running it; returns the task whose outcome the writer awaits,
/// and whether the connection must close after it.
async fn start_request(
    shard: &Rc<Shard>,
    frame: Bytes,
    limits: WireLimits,
    peer: SocketAddr,
    order: &mut Order,
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
            let reply = handlers::handle(&shard, request, peer, turn).await;
            drop(permit);
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
                Ok(pieces) => (Outcome::RespondPieces(pieces), RequestOutcome::Code(code)),
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
) {
    'responses: while let Some(task) = queue.recv().await {
        match task.await {
            Some(Outcome::Respond(bytes)) => {
                if let Err(e) = writer.write_all(&bytes).await {
                    debug!(%peer, error = %e, "write failed");
                    break;
                }
                shard.count(|m| m.sent_bytes += bytes.len() as u64);
            }
            Some(Outcome::RespondPieces(pieces)) => {
                for piece in pieces {
                    if let Err(e) = writer.write_all(&piece).await {
                        debug!(%peer, error = %e, "write failed");
                        break 'responses;
                    }
                    shard.count(|m| m.sent_bytes += piece.len() as u64);
                }
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
    }
    let _ = writer.close().await;
}
