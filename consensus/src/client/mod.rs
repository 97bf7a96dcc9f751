//! The consensus client: connect to any node, read from it, write through it.
//!
//! Writes follow the leader by **forwarding**: a follower passes a client's write to its
//! leader inside the group (ZooKeeper's way), so the client never needs to know who leads and
//! one connection serves reads and writes. A node that cannot serve (no leader, still
//! syncing) answers `NotReady` without executing anything; the client then tries the next
//! node until the request's deadline. A write whose connection breaks before the reply has an
//! unknown outcome and is reported as [`Error::ConnectionLoss`], never retried silently
//! (ZooKeeper's rule: the caller decides, e.g. by reading back). Reads, `exists`, `children`,
//! `sync` and `status` are retried on the next node, since they change nothing.
//!
//! Async on glommio, no thread of its own: usable from a broker shard or a CLI's executor. A
//! `Client` is one connection at a time, pipelined: many tasks of one executor may call it
//! concurrently. Never: blocks the executor; retries a write that may have happened.
//!
//! With [`ClientConfig::session_timeout_ms`] the client holds a session (ZooKeeper's): it
//! opens one on its first connection, heartbeats it, and re-attaches it (sync, then id and
//! password) on every later connection, so its ephemeral nodes survive a move to another node
//! within the timeout; see [`session`] for the timing.

mod connection;
mod session;
mod watches;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::proto::client::{NodeStatus, ReplyResult, RequestOp, SessionRequest};
use crate::txn::{OpResult, Stat, TreeError, Txn, TxnResult, WriteOp};
use crate::types::{SessionId, Zxid};
use crate::watch::{WatchEvent, WatchKind};
use crate::zab::{ClientError, ClientOp, Response};

use connection::{Connection, Registers};
pub use session::SessionHandle;
use session::SessionState;
use watches::Watches;

/// Client settings; every duration is in milliseconds.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Nodes to try, in order (any member will do).
    pub servers: Vec<SocketAddr>,
    /// Time one operation may take, retries on other nodes included.
    pub request_timeout_ms: u64,
    /// Time one connection attempt may take.
    pub connect_timeout_ms: u64,
    /// Wait before trying the next node after `NotReady` or a failed connect.
    pub retry_backoff_ms: u64,
    /// Hold a session with this timeout (the group clamps it to its bounds and the client
    /// uses the one it got). `None`: no session, so no ephemeral nodes.
    pub session_timeout_ms: Option<u64>,
}

impl ClientConfig {
    pub fn new(servers: Vec<SocketAddr>) -> ClientConfig {
        ClientConfig {
            servers,
            request_timeout_ms: 10_000,
            connect_timeout_ms: 1_000,
            retry_backoff_ms: 20,
            session_timeout_ms: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The tree refused the operation (for a multi, op `index` failed and nothing applied).
    #[error("op {index} refused: {error}")]
    Tree { index: usize, error: TreeError },
    /// The connection broke, or the node lost its leader, before a write's reply: it may or
    /// may not have been applied.
    #[error("connection to {server} lost before the reply; the write may or may not have happened")]
    ConnectionLoss { server: SocketAddr },
    /// No reply within the request timeout (for a write: outcome unknown).
    #[error("no reply within {timeout_ms} ms (last tried {server})")]
    Timeout { timeout_ms: u64, server: SocketAddr },
    /// No node could serve the request before the deadline.
    #[error("no consensus node served the request within {timeout_ms} ms: {last}")]
    Unavailable { timeout_ms: u64, last: String },
    #[error("no consensus servers configured")]
    NoServers,
    #[error("unexpected reply from {server}: {what}")]
    Protocol { server: SocketAddr, what: String },
    /// The session is gone: expired by the group, closed, or refused on re-attach. Its
    /// ephemeral nodes are deleted; [`Client::renew_session`] opens a new session.
    #[error("consensus session {session:?} expired")]
    SessionExpired { session: Option<SessionId> },
    /// An ephemeral create or a session close on a client configured without a session.
    #[error("this client holds no session (set session_timeout_ms)")]
    NoSession,
    /// The node refused the request for this connection.
    #[error("not permitted: {reason}")]
    NotPermitted { reason: String },
    #[error("too many watches on one connection (limit {limit})")]
    TooManyWatches { limit: u64 },
}

/// How `create` names the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    Persistent,
    /// The name gets a 10-digit suffix from the parent's child version.
    Sequential,
    /// Deleted when this client's session ends (closed or expired). Needs a session.
    Ephemeral,
    EphemeralSequential,
}

struct State {
    conn: Option<Rc<Connection>>,
    next_server: usize,
    session: SessionState,
    heartbeat_started: bool,
}

struct Inner {
    cfg: ClientConfig,
    state: RefCell<State>,
    /// One connection is established at a time, so concurrent callers never open two
    /// sessions.
    connecting: glommio::sync::Semaphore,
    watches: Rc<RefCell<Watches>>,
    events: flume::Receiver<WatchEvent>,
}

pub struct Client {
    inner: Rc<Inner>,
}

impl Client {
    /// A client; it connects on first use (so it can be made before the group is up).
    pub fn new(cfg: ClientConfig) -> Result<Client, Error> {
        if cfg.servers.is_empty() {
            return Err(Error::NoServers);
        }
        let session = match cfg.session_timeout_ms {
            Some(timeout_ms) => SessionState::Wanted { timeout_ms },
            None => SessionState::Off,
        };
        // Unbounded: one-shot watches bound it by their number, persistent ones by the write
        // rate of what they watch; the application is expected to drain it.
        let (sink, events) = flume::unbounded();
        Ok(Client {
            inner: Rc::new(Inner {
                watches: Rc::new(RefCell::new(Watches::new(sink))),
                events,
                cfg,
                state: RefCell::new(State {
                    conn: None,
                    next_server: 0,
                    session,
                    heartbeat_started: false,
                }),
                connecting: glommio::sync::Semaphore::new(1),
            }),
        })
    }

    /// The client's state, starting the session heartbeat the first time (it needs the
    /// executor, which `new` may not run on).
    fn i(&self) -> &Rc<Inner> {
        let inner = &self.inner;
        let start = {
            let mut st = inner.state.borrow_mut();
            let start = !st.heartbeat_started && st.session != SessionState::Off;
            st.heartbeat_started |= start;
            start
        };
        if start {
            glommio::spawn_local(session::heartbeat(Rc::downgrade(inner))).detach();
        }
        inner
    }

    /// The session this client holds, once one is open (after the first connection).
    pub fn session(&self) -> Option<SessionHandle> {
        match self.inner.state.borrow().session {
            SessionState::Live(h) => Some(h),
            _ => None,
        }
    }

    /// Opens the session now if it is not open yet (it opens on first use anyway).
    pub async fn open_session(&self) -> Result<SessionHandle, Error> {
        self.i().live_session().await
    }

    /// After the session expired or was closed: opens a new one (a new id; the old one's
    /// ephemeral nodes are gone and stay gone), keeping this client's watches, which are
    /// registered again on the new connection with the events missed meanwhile. ZooKeeper
    /// needs a new handle for this; a broker re-creating its registration (as a Kafka broker
    /// does after a ZooKeeper session expiry) keeps its client and its watches instead.
    /// Does nothing to a live session.
    pub async fn renew_session(&self) -> Result<SessionHandle, Error> {
        {
            let inner = self.i();
            let mut st = inner.state.borrow_mut();
            match st.session {
                SessionState::Off => return Err(Error::NoSession),
                SessionState::Expired(id) | SessionState::Closed(id) => {
                    let timeout_ms = inner.cfg.session_timeout_ms.ok_or(Error::NoSession)?;
                    tracing::info!(old = id.0, "opening a new consensus session");
                    st.session = SessionState::Wanted { timeout_ms };
                    // The next request connects afresh and opens the session there.
                    if let Some(c) = st.conn.take() {
                        c.break_off();
                    }
                }
                SessionState::Wanted { .. } | SessionState::Live(_) => {}
            }
        }
        self.open_session().await
    }

    /// Ends the session now: its ephemeral nodes are deleted at once. Not retried (a close
    /// whose reply is lost may or may not have happened; the session then expires anyway).
    pub async fn close_session(&self) -> Result<(), Error> {
        let handle = self.i().live_session().await?;
        let r = self
            .inner
            .call(RequestOp::Session(SessionRequest::Close), false)
            .await?;
        match r {
            ReplyResult::Ok(Response::Txn(TxnResult::SessionClosed { .. })) => {
                self.i().state.borrow_mut().session = SessionState::Closed(handle.id);
                Ok(())
            }
            other => Err(self.i().unexpected(format!("{other:?}"))),
        }
    }

    pub async fn create(&self, path: &str, data: &[u8], mode: CreateMode) -> Result<String, Error> {
        let ephemeral_owner = match mode {
            CreateMode::Ephemeral | CreateMode::EphemeralSequential => {
                Some(self.i().live_session().await?.id)
            }
            CreateMode::Persistent | CreateMode::Sequential => None,
        };
        let op = WriteOp::Create {
            path: path.to_string(),
            data: data.to_vec(),
            sequential: matches!(
                mode,
                CreateMode::Sequential | CreateMode::EphemeralSequential
            ),
            ephemeral_owner,
        };
        match self.i().write(Txn::Write(op)).await? {
            TxnResult::Write(OpResult::Created { path, .. }) => Ok(path),
            other => Err(self.i().unexpected(format!("{other:?}"))),
        }
    }

    /// Sets the data; with `expected_version`, only if the node is at that version (CAS).
    pub async fn set(
        &self,
        path: &str,
        data: &[u8],
        expected_version: Option<u32>,
    ) -> Result<Stat, Error> {
        let op = WriteOp::SetData {
            path: path.to_string(),
            data: data.to_vec(),
            expected_version,
        };
        match self.i().write(Txn::Write(op)).await? {
            TxnResult::Write(OpResult::Set { stat }) => Ok(stat),
            other => Err(self.i().unexpected(format!("{other:?}"))),
        }
    }

    pub async fn delete(&self, path: &str, expected_version: Option<u32>) -> Result<(), Error> {
        let op = WriteOp::Delete {
            path: path.to_string(),
            expected_version,
        };
        match self.i().write(Txn::Write(op)).await? {
            TxnResult::Write(OpResult::Deleted) => Ok(()),
            other => Err(self.i().unexpected(format!("{other:?}"))),
        }
    }

    /// Several writes atomically: all apply, or none and the error names the failing op.
    pub async fn multi(&self, ops: Vec<WriteOp>) -> Result<Vec<OpResult>, Error> {
        match self.i().write(Txn::Multi(ops)).await? {
            TxnResult::Multi(results) => Ok(results),
            other => Err(self.i().unexpected(format!("{other:?}"))),
        }
    }

    pub async fn get(&self, path: &str) -> Result<(Vec<u8>, Stat), Error> {
        match self
            .i()
            .read(ClientOp::Get {
                path: path.to_string(),
            })
            .await?
        {
            Response::Data { data, stat } => Ok((data, stat)),
            other => Err(self.i().unexpected(format!("{other:?}"))),
        }
    }

    pub async fn exists(&self, path: &str) -> Result<Option<Stat>, Error> {
        match self
            .i()
            .read(ClientOp::Exists {
                path: path.to_string(),
            })
            .await?
        {
            Response::Exists(stat) => Ok(stat),
            other => Err(self.i().unexpected(format!("{other:?}"))),
        }
    }

    pub async fn children(&self, path: &str) -> Result<Vec<String>, Error> {
        match self
            .i()
            .read(ClientOp::Children {
                path: path.to_string(),
            })
            .await?
        {
            Response::Children(names) => Ok(names),
            other => Err(self.i().unexpected(format!("{other:?}"))),
        }
    }

    /// Waits until the connected node has applied every write acknowledged before the call;
    /// reads after it (on this client) see them. Returns the zxid the node reached.
    pub async fn sync(&self) -> Result<Zxid, Error> {
        match self.i().read(ClientOp::Sync).await? {
            Response::Synced { through } => Ok(through),
            other => Err(self.i().unexpected(format!("{other:?}"))),
        }
    }

    /// The connected node's view of itself (role, zxids, a digest of its tree).
    pub async fn status(&self) -> Result<NodeStatus, Error> {
        match self.i().call(RequestOp::Status, true).await? {
            ReplyResult::Status(s) => Ok(s),
            other => Err(self.i().unexpected(format!("{other:?}"))),
        }
    }

    /// Watch events, in the order the group applied their changes; each arrives before the
    /// reply to any request sent after the change. One consumer (receivers share events).
    pub fn events(&self) -> flume::Receiver<WatchEvent> {
        self.inner.events.clone()
    }

    /// `get`, leaving a one-shot watch: the next data change or the deletion is told once.
    pub async fn get_watch(&self, path: &str) -> Result<(Vec<u8>, Stat), Error> {
        match self.i().watch(path, WatchKind::Data).await? {
            Response::Data { data, stat } => Ok((data, stat)),
            other => Err(self.inner.unexpected(format!("{other:?}"))),
        }
    }

    /// `exists`, leaving a one-shot watch: creation if missing, else data change or deletion.
    pub async fn exists_watch(&self, path: &str) -> Result<Option<Stat>, Error> {
        match self.i().watch(path, WatchKind::Exist).await? {
            Response::Exists(stat) => Ok(stat),
            other => Err(self.inner.unexpected(format!("{other:?}"))),
        }
    }

    /// `children`, leaving a one-shot watch on the children list (and the node's deletion).
    pub async fn children_watch(&self, path: &str) -> Result<Vec<String>, Error> {
        match self.i().watch(path, WatchKind::Children).await? {
            Response::Children(names) => Ok(names),
            other => Err(self.inner.unexpected(format!("{other:?}"))),
        }
    }

    /// A persistent watch on `path` (ZooKeeper's addWatch): with `recursive`, every
    /// creation, data change and deletion at or below it; without, every change of the node
    /// and of its children list. Stays until removed.
    pub async fn add_watch(&self, path: &str, recursive: bool) -> Result<(), Error> {
        let kind = if recursive {
            WatchKind::PersistentRecursive
        } else {
            WatchKind::Persistent
        };
        match self.i().watch(path, kind).await? {
            Response::Watching => Ok(()),
            other => Err(self.inner.unexpected(format!("{other:?}"))),
        }
    }

    pub async fn remove_watch(&self, path: &str, kind: WatchKind) -> Result<(), Error> {
        let op = ClientOp::RemoveWatch {
            path: path.to_string(),
            kind,
        };
        self.i().read(op).await?;
        self.inner.watches.borrow_mut().unset(kind, path);
        Ok(())
    }

    /// The node this client is connected to, if any.
    pub fn server(&self) -> Option<SocketAddr> {
        self.inner.server()
    }
}

impl Inner {
    fn server(&self) -> Option<SocketAddr> {
        self.state.borrow().conn.as_ref().map(|c| c.server)
    }

    async fn write(&self, txn: Txn) -> Result<TxnResult, Error> {
        match self
            .call(RequestOp::Node(ClientOp::Write(txn)), false)
            .await?
        {
            ReplyResult::Ok(Response::Txn(r)) => Ok(r),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    async fn read(&self, op: ClientOp) -> Result<Response, Error> {
        match self.call(RequestOp::Node(op), true).await? {
            ReplyResult::Ok(r) => Ok(r),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    async fn watch(&self, path: &str, kind: WatchKind) -> Result<Response, Error> {
        let op = RequestOp::Node(ClientOp::Watch {
            path: path.to_string(),
            kind,
        });
        match self
            .call_registering(op, Some((kind, path.to_string())), true)
            .await?
        {
            ReplyResult::Ok(r) => Ok(r),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    fn unexpected(&self, what: String) -> Error {
        let server = self.server().unwrap_or(self.cfg.servers[0]);
        Error::Protocol { server, what }
    }

    /// Sends `op` until a node answers it, the deadline passes, or (when `!idempotent`) the
    /// outcome becomes unknown.
    async fn call(&self, op: RequestOp, idempotent: bool) -> Result<ReplyResult, Error> {
        self.call_registering(op, None, idempotent).await
    }

    async fn call_registering(
        &self,
        op: RequestOp,
        registers: Registers,
        idempotent: bool,
    ) -> Result<ReplyResult, Error> {
        let timeout_ms = self.cfg.request_timeout_ms;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let mut last = String::from("no attempt");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Unavailable { timeout_ms, last });
            }
            let conn = self.connection(deadline, &mut last).await?;
            // An expiry answered to this request concerns this session, not a later one.
            let sent_under = self.session_id();
            let rx = match conn.send_registering(op.clone(), registers.clone()) {
                Ok(rx) => rx,
                Err(e) => {
                    last = format!("{}: {e}", conn.server);
                    self.drop_connection(&conn);
                    continue;
                }
            };
            match connection::reply_by(&rx, deadline).await {
                None => {
                    // A node that does not answer in time is not one to keep talking to.
                    self.drop_connection(&conn);
                    return Err(Error::Timeout {
                        timeout_ms,
                        server: conn.server,
                    });
                }
                Some(Err(_)) => {
                    self.drop_connection(&conn);
                    if !idempotent {
                        return Err(Error::ConnectionLoss {
                            server: conn.server,
                        });
                    }
                    last = format!("{}: connection lost", conn.server);
                }
                Some(Ok(ReplyResult::Err(ClientError::NotReady))) => {
                    last = format!("{}: not ready (no leader, or syncing)", conn.server);
                    // This node cannot serve now; another one may.
                    self.drop_connection(&conn);
                    self.backoff(deadline).await;
                }
                Some(Ok(ReplyResult::Err(ClientError::ConnectionLoss))) => {
                    if !idempotent {
                        return Err(Error::ConnectionLoss {
                            server: conn.server,
                        });
                    }
                    last = format!("{}: lost its leader", conn.server);
                    self.backoff(deadline).await;
                }
                Some(Ok(ReplyResult::Err(ClientError::Txn(e)))) => {
                    if e.error == TreeError::NoSession && self.session_id().is_some() {
                        // Our session is gone from the tree: it expired.
                        return Err(self.mark_expired(sent_under));
                    }
                    return Err(Error::Tree {
                        index: e.index,
                        error: e.error,
                    });
                }
                Some(Ok(ReplyResult::Err(
                    ClientError::SessionExpired | ClientError::BadSessionPassword,
                ))) => {
                    self.drop_connection(&conn);
                    return Err(self.mark_expired(sent_under));
                }
                Some(Ok(ReplyResult::Err(ClientError::NotPermitted { reason }))) => {
                    return Err(Error::NotPermitted { reason });
                }
                Some(Ok(ReplyResult::Err(ClientError::TooManyWatches { limit }))) => {
                    return Err(Error::TooManyWatches { limit });
                }
                Some(Ok(r)) => return Ok(r),
            }
        }
    }

    async fn backoff(&self, deadline: Instant) {
        let wait = Duration::from_millis(self.cfg.retry_backoff_ms)
            .min(deadline.saturating_duration_since(Instant::now()));
        glommio::timer::sleep(wait).await;
    }

    fn drop_connection(&self, conn: &Rc<Connection>) {
        conn.break_off();
        let mut st = self.state.borrow_mut();
        if st.conn.as_ref().is_some_and(|c| Rc::ptr_eq(c, conn)) {
            st.conn = None;
        }
    }

    fn current(&self) -> Option<Rc<Connection>> {
        let st = self.state.borrow();
        st.conn.as_ref().filter(|c| !c.is_broken()).cloned()
    }

    /// The current connection, or a new one to the next server in turn, with the session
    /// opened or re-attached on it before anything else is sent.
    async fn connection(
        &self,
        deadline: Instant,
        last: &mut String,
    ) -> Result<Rc<Connection>, Error> {
        let timeout_ms = self.cfg.request_timeout_ms;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        // Whoever holds the permit connects; the others then find its connection.
        let _permit = self
            .connecting
            .acquire_permit(1)
            .await
            .map_err(|_| Error::Unavailable {
                timeout_ms,
                last: "client closed".into(),
            })?;
        loop {
            if let Some(c) = self.current() {
                return Ok(c);
            }
            self.session_usable()?;
            if Instant::now() >= deadline {
                return Err(Error::Unavailable {
                    timeout_ms,
                    last: last.clone(),
                });
            }
            let server = {
                let mut st = self.state.borrow_mut();
                let s = self.cfg.servers[st.next_server % self.cfg.servers.len()];
                st.next_server = st.next_server.wrapping_add(1);
                s
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeout = Duration::from_millis(self.cfg.connect_timeout_ms)
                .min(remaining)
                .max(Duration::from_millis(1));
            let conn = match Connection::open(server, timeout, self.watches.clone()).await {
                Ok(c) => c,
                Err(e) => {
                    *last = format!("{server}: {e}");
                    self.backoff(deadline).await;
                    continue;
                }
            };
            match session::establish(self, &conn, deadline).await {
                Ok(()) => {
                    self.state.borrow_mut().conn = Some(conn.clone());
                    return Ok(conn);
                }
                Err(session::Refused::Retry(why)) => {
                    conn.break_off();
                    *last = format!("{server}: {why}");
                    self.backoff(deadline).await;
                }
                Err(session::Refused::Fatal(e)) => {
                    conn.break_off();
                    return Err(e);
                }
            }
        }
    }
}
