//! The driver: the one task that owns the [`Node`], feeds it events in arrival order and
//! executes its outputs under the contract of [`crate::zab`].
//!
//! Owns the node, the peer links, the reply channel of every client and the disk queue.
//! Output by output: `Send` goes to the peer's link (never waits), `Append`, `Sync` and
//! `Snapshot` go to the disk thread in order (never wait), `Truncate`, `ResetToSnapshot` and
//! `SetEpochs` go to the disk thread and the driver waits until they are durable before the
//! next output (a vote or an ACKEPOCH after a new epoch leaves only once the epoch is on disk),
//! and `Reply` goes to the client's connection. The node hears that appends are durable only
//! through [`Input::Synced`], after the fdatasync returned.
//!
//! Never: blocks on I/O (the disk is another thread); lets one client's slowness hold the node
//! (replies are queued to the connection's writer).

use std::cell::Cell;
use std::collections::HashMap;

use futures_lite::future;
use tracing::info;

use crate::proto::client::{
    EVENT_ID, NodeStatus, Reply, ReplyResult, Request, RequestOp, SessionRequest,
};
use crate::types::{ClientId, NodeId, RequestId, Zxid};
use crate::zab::{
    ClientOp, ClientRequest, DiskOp, Input, Node, Output, PeerMessage, Response, RoleName,
};

use super::disk::{DiskCmd, DiskEvent};
use super::peers::PeerLink;

/// What reaches the driver from the network and the timer.
pub(crate) enum Event {
    /// This many ticks have elapsed since the last tick event.
    Ticks(u32),
    Peer {
        from: NodeId,
        msg: PeerMessage,
    },
    PeerDown {
        peer: NodeId,
    },
    ClientOpened {
        client: ClientId,
        replies: flume::Sender<Reply>,
    },
    ClientClosed {
        client: ClientId,
    },
    Request {
        client: ClientId,
        request: Request,
    },
    Stop,
}

/// What the node shows the world outside the executor (for start-up checks and status).
#[derive(Debug, Default)]
pub struct Observed {
    /// 0 looking, 1 following, 2 leading; bit 7 set when serving.
    pub state: std::sync::atomic::AtomicU8,
    stopped: std::sync::atomic::AtomicBool,
    /// The last zxid in this node's log and the last committed one, 64-bit form (metrics).
    last_zxid: std::sync::atomic::AtomicU64,
    committed_zxid: std::sync::atomic::AtomicU64,
}

impl Observed {
    fn publish(&self, node: &Node) {
        let role = match node.role() {
            RoleName::Looking => 0,
            RoleName::Following => 1,
            RoleName::Leading => 2,
        };
        let serving = if node.is_serving() { 0x80 } else { 0 };
        self.state
            .store(role | serving, std::sync::atomic::Ordering::Relaxed);
        self.last_zxid.store(
            node.last_zxid().as_u64(),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.committed_zxid.store(
            node.committed().as_u64(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The last zxid in this node's log (as of its latest step).
    pub fn last_zxid(&self) -> Zxid {
        Zxid::from_u64(self.last_zxid.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The last zxid this node knows to be committed (as of its latest step).
    pub fn committed_zxid(&self) -> Zxid {
        Zxid::from_u64(
            self.committed_zxid
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    pub(crate) fn mark_stopped(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The node has stopped (asked to, or after a disk failure).
    pub fn stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn serving(&self) -> bool {
        self.state.load(std::sync::atomic::Ordering::Relaxed) & 0x80 != 0
    }

    pub fn role(&self) -> RoleName {
        match self.state.load(std::sync::atomic::Ordering::Relaxed) & 0x7f {
            2 => RoleName::Leading,
            1 => RoleName::Following,
            _ => RoleName::Looking,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("the consensus disk failed: {0}")]
    Disk(String),
}

pub(crate) struct Driver {
    pub node: Node,
    pub links: HashMap<NodeId, PeerLink>,
    pub disk: flume::Sender<DiskCmd>,
    pub observed: std::sync::Arc<Observed>,
    /// Length of one protocol tick: session timeouts cross the wire in milliseconds.
    tick_ms: u64,
    /// Draws session passwords (std's per-process random keys: no seedable state to leak).
    password_keys: std::collections::hash_map::RandomState,
    password_count: u64,
    clients: HashMap<ClientId, flume::Sender<Reply>>,
    out: Vec<Output>,
    last_role: Cell<Option<RoleName>>,
}

impl Driver {
    pub fn new(
        node: Node,
        links: HashMap<NodeId, PeerLink>,
        disk: flume::Sender<DiskCmd>,
        observed: std::sync::Arc<Observed>,
        tick_ms: u64,
    ) -> Driver {
        Driver {
            node,
            links,
            disk,
            observed,
            tick_ms: tick_ms.max(1),
            password_keys: std::collections::hash_map::RandomState::new(),
            password_count: 0,
            clients: HashMap::new(),
            out: Vec::new(),
            last_role: Cell::new(None),
        }
    }

    /// Runs until `Stop` or a disk failure.
    pub async fn run(
        mut self,
        events: flume::Receiver<Event>,
        disk_events: flume::Receiver<DiskEvent>,
    ) -> Result<(), DriverError> {
        let mut out = std::mem::take(&mut self.out);
        self.node.start(&mut out);
        self.execute(&mut out).await?;
        loop {
            // Disk completions first: they release replies and ACKs.
            let next = future::or(async { disk_events.recv_async().await.map(Err) }, async {
                events.recv_async().await.map(Ok)
            })
            .await;
            match next {
                Ok(Err(DiskEvent::Synced {
                    generation,
                    through,
                })) => self.node.step(
                    Input::Synced {
                        generation,
                        through,
                    },
                    &mut out,
                ),
                Ok(Err(DiskEvent::Failed(e))) => return Err(DriverError::Disk(e)),
                Ok(Ok(Event::Stop)) | Err(_) => return Ok(()),
                Ok(Ok(event)) => self.on_event(event, &mut out),
            }
            self.execute(&mut out).await?;
        }
    }

    fn on_event(&mut self, event: Event, out: &mut Vec<Output>) {
        match event {
            Event::Ticks(n) => {
                for _ in 0..n {
                    self.node.step(Input::Tick, out);
                }
            }
            Event::Peer { from, msg } => self.node.step(Input::Peer { from, msg }, out),
            Event::PeerDown { peer } => self.node.step(Input::PeerDown { peer }, out),
            Event::ClientOpened { client, replies } => {
                self.clients.insert(client, replies);
            }
            Event::ClientClosed { client } => {
                self.clients.remove(&client);
                self.node.step(Input::ClientGone { client }, out);
            }
            Event::Request { client, request } => match request.op {
                RequestOp::Node(op) => self.node.step(
                    Input::Client(ClientRequest {
                        client,
                        request: RequestId(request.id),
                        op,
                    }),
                    out,
                ),
                RequestOp::Session(s) => {
                    let op = match s {
                        SessionRequest::Create { timeout_ms } => ClientOp::CreateSession {
                            timeout_ticks: timeout_ms.div_ceil(self.tick_ms),
                            password: self.draw_password(),
                        },
                        SessionRequest::Attach { session, password } => {
                            ClientOp::AttachSession { session, password }
                        }
                        SessionRequest::Close => ClientOp::CloseSession,
                        SessionRequest::Ping => ClientOp::Ping,
                    };
                    let request = RequestId(request.id);
                    let req = ClientRequest {
                        client,
                        request,
                        op,
                    };
                    self.node.step(Input::Client(req), out);
                }
                RequestOp::Status => {
                    let status = ReplyResult::Status(self.status());
                    let zxid = self.node.committed();
                    self.reply(client, request.id, zxid, status);
                }
            },
            Event::Stop => {}
        }
    }

    fn status(&self) -> NodeStatus {
        let tree = self.node.tree();
        let mut digest = 0u32;
        for (path, node) in tree.iter() {
            let s = node.stat;
            digest = crc32c::crc32c_append(digest, path.as_bytes());
            digest = crc32c::crc32c_append(digest, &node.data);
            for v in [
                s.czxid.as_u64(),
                s.mzxid.as_u64(),
                s.pzxid.as_u64(),
                u64::from(s.version),
                u64::from(s.cversion),
            ] {
                digest = crc32c::crc32c_append(digest, &v.to_le_bytes());
            }
        }
        NodeStatus {
            id: self.node.id(),
            role: self.node.role(),
            serving: self.node.is_serving(),
            current_epoch: self.node.epochs().current.0,
            committed: self.node.committed(),
            last_zxid: self.node.last_zxid(),
            tree_nodes: tree.len() as u64,
            tree_digest: digest,
            followers: self.node.followers(),
            tick_ms: self.tick_ms,
        }
    }

    fn draw_password(&mut self) -> u64 {
        use std::hash::BuildHasher;
        self.password_count += 1;
        self.password_keys.hash_one(self.password_count)
    }

    fn reply(&self, client: ClientId, id: u64, zxid: Zxid, result: ReplyResult) {
        if let Some(tx) = self.clients.get(&client) {
            // The connection may be closing; its reply is then moot.
            let _ = tx.send(Reply { id, zxid, result });
        }
    }

    async fn execute(&mut self, out: &mut Vec<Output>) -> Result<(), DriverError> {
        for output in out.drain(..) {
            match output {
                Output::Send { to, msg } => {
                    if let Some(link) = self.links.get(&to) {
                        link.send(to, &msg);
                    }
                }
                Output::Disk(op) => {
                    let durable = matches!(
                        op,
                        DiskOp::Truncate { .. } | DiskOp::ResetToSnapshot(_) | DiskOp::SetEpochs(_)
                    );
                    if durable {
                        let (done, wait) = flume::bounded(1);
                        if self.disk.send(DiskCmd::Durable(op, done)).is_err()
                            || wait.recv_async().await.is_err()
                        {
                            return Err(DriverError::Disk("the disk thread stopped".into()));
                        }
                    } else if self.disk.send(DiskCmd::Op(op)).is_err() {
                        return Err(DriverError::Disk("the disk thread stopped".into()));
                    }
                }
                Output::Reply(r) => {
                    let result = match r.result {
                        Ok(Response::Session {
                            session,
                            password,
                            timeout_ticks,
                        }) => ReplyResult::Session {
                            session,
                            password,
                            timeout_ms: u64::from(timeout_ticks) * self.tick_ms,
                        },
                        Ok(resp) => ReplyResult::Ok(resp),
                        Err(e) => ReplyResult::Err(e),
                    };
                    self.reply(r.client, r.request.0, r.zxid, result);
                }
                // The same channel as the replies: an event is on the wire before any reply
                // the node produced after it.
                Output::Event { client, event } => {
                    let zxid = event.zxid;
                    self.reply(client, EVENT_ID, zxid, ReplyResult::Event(event));
                }
                Output::Applied { .. } | Output::Installed { .. } => {}
            }
        }
        self.observed.publish(&self.node);
        let role = self.node.role();
        if self.last_role.get() != Some(role) {
            self.last_role.set(Some(role));
            let epoch = self.node.epochs().current.0;
            match role {
                RoleName::Looking => {
                    info!(node = %self.node.id(), "consensus: looking for a leader")
                }
                r => {
                    info!(node = %self.node.id(), role = ?r, epoch, last_zxid = %self.node.last_zxid(), "consensus: role changed")
                }
            }
        }
        Ok(())
    }
}
