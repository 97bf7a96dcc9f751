//! One client connection to one node: a writer task that gathers queued requests into socket
//! writes, a reader task that hands each reply to the request waiting for it.
//!
//! Owns the socket and the table of requests waiting for replies; never retries (that is
//! [`super::Client`]'s policy). When the connection breaks every waiting request is told
//! (its reply channel closes), so nothing waits for a dead socket.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::io::BufReader;
use futures_lite::{AsyncWriteExt, future};
use glommio::net::TcpStream;
use rkyv::util::AlignedVec;
use tracing::debug;

use crate::limits::{MAX_CLIENT_FRAME_BYTES, SOCKET_READ_BUFFER_BYTES};
use crate::proto::client::{EVENT_ID, Reply, ReplyResult, Request, RequestOp};
use crate::proto::frame::{self, FrameError};
use crate::proto::{Hello, PROTOCOL_VERSION};
use crate::watch::WatchKind;
use crate::zab::Response;

use super::watches::Watches;

/// A watch to record once the node accepted the request that sets it.
pub(crate) type Registers = Option<(WatchKind, String)>;

pub(crate) struct Connection {
    pub server: SocketAddr,
    writes: flume::Sender<AlignedVec>,
    pending: RefCell<HashMap<u64, (flume::Sender<ReplyResult>, Registers)>>,
    watches: Rc<RefCell<Watches>>,
    next_id: Cell<u64>,
    broken: Cell<bool>,
    /// The client's watches are registered on this connection: only then does a frame's
    /// stamp say the events up to it were received (a new connection's sync reply, before
    /// the re-registration, must not move the zxid it re-registers from).
    watching: Cell<bool>,
    /// When a request last went out and a reply last came in: the session heartbeat pings
    /// after a third of its timeout without traffic and leaves after two thirds unanswered.
    last_sent: Cell<Instant>,
    last_heard: Cell<Instant>,
}

impl Connection {
    pub async fn open(
        server: SocketAddr,
        connect_timeout: Duration,
        watches: Rc<RefCell<Watches>>,
    ) -> Result<Rc<Connection>, FrameError> {
        let stream = TcpStream::connect_timeout(server, connect_timeout)
            .await
            .map_err(|e| FrameError::Io(std::io::Error::other(e.to_string())))?;
        let _ = stream.set_nodelay(true);
        let (r, mut w) = futures_lite::io::split(stream);
        let hello = frame::encode(
            &Hello::Client {
                version: PROTOCOL_VERSION,
            },
            MAX_CLIENT_FRAME_BYTES,
        )?;
        let mut first = Vec::new();
        frame::put_frame(&mut first, &hello);
        w.write_all(&first).await?;
        let (writes, queue) = flume::unbounded::<AlignedVec>();
        let conn = Rc::new(Connection {
            server,
            writes,
            pending: RefCell::new(HashMap::new()),
            watches,
            next_id: Cell::new(1),
            broken: Cell::new(false),
            watching: Cell::new(false),
            last_sent: Cell::new(Instant::now()),
            last_heard: Cell::new(Instant::now()),
        });
        let reader = BufReader::with_capacity(SOCKET_READ_BUFFER_BYTES, r);
        glommio::spawn_local(read_replies(conn.clone(), reader)).detach();
        glommio::spawn_local(write_requests(conn.clone(), w, queue)).detach();
        Ok(conn)
    }

    pub fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// The watches are registered here (set once the connection is established).
    pub fn set_watching(&self) {
        self.watching.set(true);
    }

    pub fn last_sent(&self) -> Instant {
        self.last_sent.get()
    }

    pub fn last_heard(&self) -> Instant {
        self.last_heard.get()
    }

    /// Sends one request; the receiver gets its reply, or closes when the connection breaks.
    pub fn send(&self, op: RequestOp) -> Result<flume::Receiver<ReplyResult>, FrameError> {
        self.send_registering(op, None)
    }

    /// As `send`, recording the watch the request sets when the node accepts it (recorded by
    /// the reader, before it reads any event that could consume the watch).
    pub fn send_registering(
        &self,
        op: RequestOp,
        registers: Registers,
    ) -> Result<flume::Receiver<ReplyResult>, FrameError> {
        if self.broken.get() {
            return Err(FrameError::Closed);
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let payload = frame::encode(&Request { id, op }, MAX_CLIENT_FRAME_BYTES)?;
        let (tx, rx) = flume::bounded(1);
        self.pending.borrow_mut().insert(id, (tx, registers));
        if self.writes.send(payload).is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err(FrameError::Closed);
        }
        self.last_sent.set(Instant::now());
        Ok(rx)
    }

    /// Closes the connection; every waiting request learns it.
    pub fn break_off(&self) {
        self.broken.set(true);
        self.pending.borrow_mut().clear();
    }
}

/// The reply to a request sent with [`Connection::send`]: `None` when `deadline` passes
/// first, `Some(Err)` when the connection broke before it.
pub(crate) async fn reply_by(
    rx: &flume::Receiver<ReplyResult>,
    deadline: Instant,
) -> Option<Result<ReplyResult, flume::RecvError>> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    future::or(async { Some(rx.recv_async().await) }, async {
        glommio::timer::sleep(remaining).await;
        None
    })
    .await
}

async fn read_replies(
    conn: Rc<Connection>,
    mut reader: BufReader<futures_lite::io::ReadHalf<TcpStream>>,
) {
    let mut buf = AlignedVec::new();
    loop {
        if conn.broken.get() {
            break;
        }
        match frame::read_message::<Reply, _>(&mut reader, &mut buf, MAX_CLIENT_FRAME_BYTES).await {
            Ok(reply) => {
                conn.last_heard.set(Instant::now());
                if reply.id == EVENT_ID
                    && let ReplyResult::Event(event) = reply.result
                {
                    conn.watches.borrow_mut().fired(event);
                    continue;
                }
                if conn.watching.get() {
                    conn.watches.borrow_mut().saw(reply.zxid);
                }
                let waiter = conn.pending.borrow_mut().remove(&reply.id);
                if let Some((tx, registers)) = waiter {
                    if let (Some((kind, path)), ReplyResult::Ok(r)) = (registers, &reply.result) {
                        // `exists` of a missing node sets a creation watch instead.
                        let kind = match (kind, r) {
                            (WatchKind::Exist, Response::Exists(Some(_))) => WatchKind::Data,
                            (k, _) => k,
                        };
                        conn.watches.borrow_mut().set(kind, path);
                    }
                    let _ = tx.send(reply.result);
                }
            }
            Err(e) => {
                debug!(server = %conn.server, error = %e, "consensus connection closed");
                break;
            }
        }
    }
    conn.break_off();
}

async fn write_requests(
    conn: Rc<Connection>,
    mut writer: futures_lite::io::WriteHalf<TcpStream>,
    queue: flume::Receiver<AlignedVec>,
) {
    let mut batch = Vec::new();
    loop {
        // Wake up now and then to notice a connection the reader found broken.
        let next = future::or(async { queue.recv_async().await.ok().map(Some) }, async {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            Some(None)
        })
        .await;
        let first = match next {
            None => break,
            Some(None) if conn.broken.get() => break,
            Some(None) => continue,
            Some(Some(p)) => p,
        };
        batch.clear();
        frame::put_frame(&mut batch, &first);
        while let Ok(p) = queue.try_recv() {
            frame::put_frame(&mut batch, &p);
        }
        if writer.write_all(&batch).await.is_err() {
            break;
        }
    }
    conn.break_off();
    let _ = writer.close().await;
}
