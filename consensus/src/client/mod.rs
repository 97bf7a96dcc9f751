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

mod connection;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;

use crate::proto::client::{NodeStatus, ReplyResult, RequestOp};
use crate::txn::{OpResult, Stat, TreeError, Txn, TxnResult, WriteOp};
use crate::types::Zxid;
use crate::zab::{ClientError, ClientOp, Response};

use connection::Connection;

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
}

impl ClientConfig {
    pub fn new(servers: Vec<SocketAddr>) -> ClientConfig {
        ClientConfig {
            servers,
            request_timeout_ms: 10_000,
            connect_timeout_ms: 1_000,
            retry_backoff_ms: 20,
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
}

/// How `create` names the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    Persistent,
    /// The name gets a 10-digit suffix from the parent's child version.
    Sequential,
}

struct State {
    conn: Option<Rc<Connection>>,
    next_server: usize,
}

pub struct Client {
    cfg: ClientConfig,
    state: RefCell<State>,
}

impl Client {
    /// A client; it connects on first use (so it can be made before the group is up).
    pub fn new(cfg: ClientConfig) -> Result<Client, Error> {
        if cfg.servers.is_empty() {
            return Err(Error::NoServers);
        }
        Ok(Client {
            cfg,
            state: RefCell::new(State {
                conn: None,
                next_server: 0,
            }),
        })
    }

    pub async fn create(&self, path: &str, data: &[u8], mode: CreateMode) -> Result<String, Error> {
        let op = WriteOp::Create {
            path: path.to_string(),
            data: data.to_vec(),
            sequential: mode == CreateMode::Sequential,
            ephemeral_owner: None,
        };
        match self.write(Txn::Write(op)).await? {
            TxnResult::Write(OpResult::Created { path, .. }) => Ok(path),
            other => Err(self.unexpected(format!("{other:?}"))),
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
        match self.write(Txn::Write(op)).await? {
            TxnResult::Write(OpResult::Set { stat }) => Ok(stat),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    pub async fn delete(&self, path: &str, expected_version: Option<u32>) -> Result<(), Error> {
        let op = WriteOp::Delete {
            path: path.to_string(),
            expected_version,
        };
        match self.write(Txn::Write(op)).await? {
            TxnResult::Write(OpResult::Deleted) => Ok(()),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    /// Several writes atomically: all apply, or none and the error names the failing op.
    pub async fn multi(&self, ops: Vec<WriteOp>) -> Result<Vec<OpResult>, Error> {
        match self.write(Txn::Multi(ops)).await? {
            TxnResult::Multi(results) => Ok(results),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    pub async fn get(&self, path: &str) -> Result<(Vec<u8>, Stat), Error> {
        match self
            .read(ClientOp::Get {
                path: path.to_string(),
            })
            .await?
        {
            Response::Data { data, stat } => Ok((data, stat)),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    pub async fn exists(&self, path: &str) -> Result<Option<Stat>, Error> {
        match self
            .read(ClientOp::Exists {
                path: path.to_string(),
            })
            .await?
        {
            Response::Exists(stat) => Ok(stat),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    pub async fn children(&self, path: &str) -> Result<Vec<String>, Error> {
        match self
            .read(ClientOp::Children {
                path: path.to_string(),
            })
            .await?
        {
            Response::Children(names) => Ok(names),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    /// Waits until the connected node has applied every write acknowledged before the call;
    /// reads after it (on this client) see them. Returns the zxid the node reached.
    pub async fn sync(&self) -> Result<Zxid, Error> {
        match self.read(ClientOp::Sync).await? {
            Response::Synced { through } => Ok(through),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    /// The connected node's view of itself (role, zxids, a digest of its tree).
    pub async fn status(&self) -> Result<NodeStatus, Error> {
        match self.call(RequestOp::Status, true).await? {
            ReplyResult::Status(s) => Ok(s),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    /// The node this client is connected to, if any.
    pub fn server(&self) -> Option<SocketAddr> {
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

    fn unexpected(&self, what: String) -> Error {
        let server = self.server().unwrap_or(self.cfg.servers[0]);
        Error::Protocol { server, what }
    }

    /// Sends `op` until a node answers it, the deadline passes, or (when `!idempotent`) the
    /// outcome becomes unknown.
    async fn call(&self, op: RequestOp, idempotent: bool) -> Result<ReplyResult, Error> {
        let timeout_ms = self.cfg.request_timeout_ms;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let mut last = String::from("no attempt");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Unavailable { timeout_ms, last });
            }
            let conn = match self.connection(deadline, &mut last).await {
                Some(c) => c,
                None => return Err(Error::Unavailable { timeout_ms, last }),
            };
            let rx = match conn.send(op.clone()) {
                Ok(rx) => rx,
                Err(e) => {
                    last = format!("{}: {e}", conn.server);
                    self.drop_connection(&conn);
                    continue;
                }
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let reply = future::or(async { Some(rx.recv_async().await) }, async {
                glommio::timer::sleep(remaining).await;
                None
            })
            .await;
            match reply {
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
                    return Err(Error::Tree {
                        index: e.index,
                        error: e.error,
                    });
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

    /// The current connection, or a new one to the next server in turn.
    async fn connection(&self, deadline: Instant, last: &mut String) -> Option<Rc<Connection>> {
        loop {
            {
                let st = self.state.borrow();
                if let Some(c) = &st.conn
                    && !c.is_broken()
                {
                    return Some(c.clone());
                }
            }
            if Instant::now() >= deadline {
                return None;
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
            match Connection::open(server, timeout).await {
                Ok(c) => {
                    let mut st = self.state.borrow_mut();
                    // Another task of this executor may have connected meanwhile; keep one.
                    if let Some(existing) = &st.conn
                        && !existing.is_broken()
                    {
                        c.break_off();
                        return Some(existing.clone());
                    }
                    st.conn = Some(c.clone());
                    return Some(c);
                }
                Err(e) => {
                    *last = format!("{server}: {e}");
                    self.backoff(deadline).await;
                }
            }
        }
    }
}
