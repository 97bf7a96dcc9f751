//! Peer transport: one outbound TCP connection per peer, dialled by us and carrying only our
//! messages to it, and inbound connections dialled by the peers carrying theirs to us.
//!
//! One direction per connection keeps the rules simple (no dialling race to settle) and still
//! gives the protocol what [`crate::zab`] asks: messages of one connection arrive in order
//! without duplicates, and a break is reported as [`crate::zab::Input::PeerDown`] at both
//! ends (the writer sees the error, the other end's reader sees the close). Messages the node
//! sends while a link is down are dropped, never held for the next connection, so a new
//! connection never starts with a stale tail. Dialling retries with exponential backoff.
//!
//! Owns sockets, framing and backoff; never interprets a message. Runs on the protocol task
//! queue (see [`super`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWriteExt, future};
use glommio::net::TcpStream;
use rkyv::util::AlignedVec;
use tracing::{debug, info, warn};

use crate::limits::{
    MAX_PEER_FRAME_BYTES, PEER_CONNECT_TIMEOUT_MS, PEER_QUEUE_MESSAGES,
    PEER_RECONNECT_BACKOFF_MAX_MS, PEER_RECONNECT_BACKOFF_MIN_MS,
};
use crate::proto::frame::{self, FrameError};
use crate::proto::{Hello, PROTOCOL_VERSION};
use crate::types::NodeId;
use crate::zab::PeerMessage;

use super::driver::Event;

/// Bytes one write to a peer socket gathers at most.
const PEER_WRITE_BATCH_BYTES: usize = 1024 * 1024;

/// The driver's end of one outbound link.
pub(crate) struct PeerLink {
    queue: flume::Sender<AlignedVec>,
    connected: Rc<Cell<bool>>,
    reset: flume::Sender<()>,
}

impl PeerLink {
    /// Queues one message; drops it while the link is down. A message that cannot be encoded
    /// or a queue that is full resets the connection, since skipping a message inside a live
    /// connection would break its FIFO promise.
    pub fn send(&self, to: NodeId, msg: &PeerMessage) {
        if !self.connected.get() {
            return;
        }
        let payload = match frame::encode(msg, MAX_PEER_FRAME_BYTES) {
            Ok(p) => p,
            Err(e) => {
                warn!(peer = %to, error = %e, "cannot send to peer; resetting its connection");
                let _ = self.reset.try_send(());
                return;
            }
        };
        if self.queue.try_send(payload).is_err() {
            warn!(peer = %to, limit = PEER_QUEUE_MESSAGES, "peer queue full; resetting its connection");
            let _ = self.reset.try_send(());
        }
    }
}

/// Starts the dialler of `peer`; its messages to us come back on other connections.
pub(crate) fn start_link(
    me: NodeId,
    peer: NodeId,
    addr: SocketAddr,
    events: flume::Sender<Event>,
    tq: glommio::TaskQueueHandle,
) -> PeerLink {
    let (queue, rx) = flume::bounded(PEER_QUEUE_MESSAGES);
    let (reset, reset_rx) = flume::bounded(1);
    let connected = Rc::new(Cell::new(false));
    let task = dial_loop(me, peer, addr, rx, reset_rx, connected.clone(), events);
    if let Ok(t) = glommio::spawn_local_into(task, tq) {
        t.detach();
    }
    PeerLink {
        queue,
        connected,
        reset,
    }
}

async fn dial_loop(
    me: NodeId,
    peer: NodeId,
    addr: SocketAddr,
    rx: flume::Receiver<AlignedVec>,
    reset: flume::Receiver<()>,
    connected: Rc<Cell<bool>>,
    events: flume::Sender<Event>,
) {
    let mut backoff_ms = PEER_RECONNECT_BACKOFF_MIN_MS;
    let mut failures = 0u64;
    loop {
        if rx.is_disconnected() {
            return;
        }
        let stream = match TcpStream::connect_timeout(
            addr,
            Duration::from_millis(PEER_CONNECT_TIMEOUT_MS),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                failures += 1;
                // The first failure and then about every ten seconds: say it without flooding.
                if failures == 1
                    || failures.is_multiple_of((10_000 / PEER_RECONNECT_BACKOFF_MAX_MS).max(1))
                {
                    warn!(peer = %peer, %addr, error = %e, failures, "cannot reach consensus peer; retrying");
                }
                glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(PEER_RECONNECT_BACKOFF_MAX_MS);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut stream = stream;
        let mut batch = Vec::new();
        let hello = Hello::Peer {
            version: PROTOCOL_VERSION,
            from: me,
        };
        match frame::encode(&hello, MAX_PEER_FRAME_BYTES) {
            Ok(p) => frame::put_frame(&mut batch, &p),
            Err(e) => {
                warn!(error = %e, "cannot encode the peer hello");
                return;
            }
        }
        if stream.write_all(&batch).await.is_err() {
            glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
            continue;
        }
        if failures > 0 {
            info!(peer = %peer, %addr, "connected to consensus peer");
        }
        failures = 0;
        backoff_ms = PEER_RECONNECT_BACKOFF_MIN_MS;
        // A reset asked before this connection existed is about an older one.
        while reset.try_recv().is_ok() {}
        connected.set(true);
        let why = write_loop(&mut stream, &rx, &reset, &mut batch).await;
        connected.set(false);
        // Whatever was queued for the broken connection is dropped with it.
        while rx.try_recv().is_ok() {}
        debug!(peer = %peer, reason = why, "peer connection closed");
        if events.send_async(Event::PeerDown { peer }).await.is_err() {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
    }
}

/// Writes queued messages until the connection breaks or is reset; gathers what is queued
/// into one write.
async fn write_loop(
    stream: &mut TcpStream,
    rx: &flume::Receiver<AlignedVec>,
    reset: &flume::Receiver<()>,
    batch: &mut Vec<u8>,
) -> &'static str {
    loop {
        let first = future::or(async { rx.recv_async().await.ok() }, async {
            let _ = reset.recv_async().await;
            None
        })
        .await;
        let Some(first) = first else {
            return "reset or stopped";
        };
        batch.clear();
        frame::put_frame(batch, &first);
        while batch.len() < PEER_WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => frame::put_frame(batch, &p),
                Err(_) => break,
            }
        }
        let wrote = future::or(async { Some(stream.write_all(batch).await) }, async {
            let _ = reset.recv_async().await;
            None
        })
        .await;
        match wrote {
            Some(Ok(())) => {}
            Some(Err(_)) => return "write failed",
            None => return "reset",
        }
    }
}

/// Which inbound connection of each peer is current; an older one stops delivering.
#[derive(Default)]
pub(crate) struct InboundGenerations {
    current: RefCell<HashMap<NodeId, u64>>,
    next: Cell<u64>,
}

/// Reads a peer's messages into the driver until the connection ends.
pub(crate) async fn serve_inbound(
    from: NodeId,
    mut reader: impl AsyncRead + Unpin,
    remote: SocketAddr,
    generations: Rc<InboundGenerations>,
    events: flume::Sender<Event>,
) {
    let generation = generations.next.get() + 1;
    generations.next.set(generation);
    let replaced = generations
        .current
        .borrow_mut()
        .insert(from, generation)
        .is_some();
    // A new connection from a peer means its previous one is gone, whatever our socket says.
    if replaced
        && events
            .send_async(Event::PeerDown { peer: from })
            .await
            .is_err()
    {
        return;
    }
    let is_current = || generations.current.borrow().get(&from) == Some(&generation);
    let mut buf = AlignedVec::new();
    let ended = loop {
        match frame::read_message::<PeerMessage, _>(&mut reader, &mut buf, MAX_PEER_FRAME_BYTES)
            .await
        {
            Ok(msg) => {
                if !is_current() {
                    return;
                }
                if events.send_async(Event::Peer { from, msg }).await.is_err() {
                    return;
                }
            }
            Err(FrameError::Closed) => break None,
            Err(e) => break Some(e),
        }
    };
    if let Some(e) = ended {
        match e {
            FrameError::Io(_) => {
                debug!(peer = %from, %remote, error = %e, "peer connection failed")
            }
            e => {
                warn!(peer = %from, %remote, error = %e, "bad frame from peer; closing its connection")
            }
        }
    }
    if is_current() {
        generations.current.borrow_mut().remove(&from);
        let _ = events.send_async(Event::PeerDown { peer: from }).await;
    }
}
