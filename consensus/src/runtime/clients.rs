//! Client connections: reads requests into the driver, writes its replies back.
//!
//! Owns one connection's sockets and its in-flight limit
//! ([`crate::limits::MAX_INFLIGHT_REQUESTS_PER_CLIENT`]: the socket is not read past it, so a
//! client cannot queue unbounded work). Its reply queue is bounded too
//! ([`crate::limits::MAX_QUEUED_REPLIES_PER_CLIENT`]: watch events have no request to bound
//! them); the driver drops a client that fills it, and the writer then closes the socket once
//! it has written what was queued, so the client reconnects at once. Replies go out in the order the node produces them
//! (a read can overtake an earlier write, as in ZooKeeper's pipelining of one session, where
//! reads are answered locally); the client matches them by request id. A malformed or
//! oversized frame closes the connection with one log line.
//!
//! Never: executes a request itself; runs on the protocol task queue (see [`super`]).

use std::net::SocketAddr;
use std::rc::Rc;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::sync::Semaphore;
use rkyv::util::AlignedVec;
use tracing::{debug, warn};

use crate::limits::{
    MAX_CLIENT_FRAME_BYTES, MAX_INFLIGHT_REQUESTS_PER_CLIENT, MAX_QUEUED_REPLIES_PER_CLIENT,
};
use crate::proto::client::{EVENT_ID, Reply, Request};
use crate::proto::frame::{self, FrameError};
use crate::types::ClientId;

use super::driver::ClientEvent;

/// Replies gathered into one socket write at most.
const CLIENT_WRITE_BATCH_BYTES: usize = 256 * 1024;

pub(crate) async fn serve(
    client: ClientId,
    mut reader: impl AsyncRead + Unpin,
    writer: impl AsyncWrite + Unpin + 'static,
    remote: SocketAddr,
    events: flume::Sender<ClientEvent>,
    tq: glommio::TaskQueueHandle,
) {
    // Bounded: the driver disconnects a client that lets it fill (see the limit's docs).
    let (replies_tx, replies) = flume::bounded::<Reply>(MAX_QUEUED_REPLIES_PER_CLIENT);
    if events
        .send_async(ClientEvent::Opened {
            client,
            replies: replies_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let permits = Rc::new(Semaphore::new(MAX_INFLIGHT_REQUESTS_PER_CLIENT as u64));
    let writer_task =
        glommio::spawn_local_into(write_replies(writer, replies, permits.clone(), remote), tq);
    let mut buf = AlignedVec::new();
    loop {
        if permits.acquire(1).await.is_err() {
            break;
        }
        match frame::read_message::<Request, _>(&mut reader, &mut buf, MAX_CLIENT_FRAME_BYTES).await
        {
            Ok(request) => {
                if events
                    .send_async(ClientEvent::Request { client, request })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Err(FrameError::Closed) => break,
            Err(e @ FrameError::Io(_)) => {
                debug!(%remote, error = %e, "client connection failed");
                break;
            }
            Err(e) => {
                warn!(%remote, error = %e, "bad frame from client; closing the connection");
                break;
            }
        }
    }
    // The driver drops the reply sender, which ends the writer.
    let _ = events.send_async(ClientEvent::Closed { client }).await;
    permits.close();
    if let Ok(t) = writer_task {
        t.await;
    }
}

async fn write_replies(
    writer: impl AsyncWrite + Unpin,
    replies: flume::Receiver<Reply>,
    permits: Rc<Semaphore>,
    remote: SocketAddr,
) {
    write_until_closed(writer, replies, &permits, remote).await;
    // A reader waiting for a permit must not wait for a writer that is gone.
    permits.close();
}

async fn write_until_closed(
    mut writer: impl AsyncWrite + Unpin,
    replies: flume::Receiver<Reply>,
    permits: &Semaphore,
    remote: SocketAddr,
) {
    let mut batch = Vec::new();
    while let Ok(first) = replies.recv_async().await {
        batch.clear();
        let mut answered = 0u64;
        let mut next = Some(first);
        while let Some(reply) = next.take() {
            // A watch event answers no request: it gives back no in-flight permit.
            answered += u64::from(reply.id != EVENT_ID);
            match frame::encode(&reply, MAX_CLIENT_FRAME_BYTES) {
                Ok(p) => frame::put_frame(&mut batch, &p),
                Err(e) => {
                    warn!(%remote, error = %e, "cannot encode a reply; closing the connection");
                    return;
                }
            }
            if batch.len() < CLIENT_WRITE_BATCH_BYTES {
                next = replies.try_recv().ok();
            }
        }
        if let Err(e) = writer.write_all(&batch).await {
            debug!(%remote, error = %e, "client write failed");
            return;
        }
        permits.signal(answered);
    }
    // The driver let go of this client (it closed, or its queue filled): end the stream so
    // the peer sees it at once, once everything queued is written.
    let _ = writer.close().await;
}
