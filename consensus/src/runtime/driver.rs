//! The driver: the one task that owns the [`Node`], feeds it events and executes its outputs
//! under the contract of [`crate::zab`].
//!
//! Owns the node, the peer links, the reply channel of every client and the disk queue.
//! Output by output: `Send` goes to the peer's link (never waits), `Append`, `Sync` and
//! `Snapshot` go to the disk thread in order (never wait), `Truncate`, `ResetToSnapshot` and
//! `SetEpochs` go to the disk thread and the driver waits until they are durable before the
//! next output (a vote or an ACKEPOCH after a new epoch leaves only once the epoch is on disk),
//! and `Reply` goes to the client's connection. The node hears that appends are durable only
//! through [`Input::Synced`], after the fdatasync returned.
//!
//! # What goes first
//!
//! Three queues reach the driver: disk completions, the protocol queue (peer messages, peer
//! breaks, ticks) and the client queue (requests, connections). Disk completions go first
//! (they release replies and ACKs), then peer messages, then time, then clients; each kind
//! at most [`DRIVER_BURST_EVENTS`] in a row while another waits. So a backlog of client
//! requests never holds a heartbeat or an ACK behind it, and time is applied only after every
//! peer message already received: ticks that piled up while the executor was held up (a
//! descheduled process, a slow step) do not count as silence of a peer whose messages were
//! waiting in the queue or on its socket meanwhile (after such a stall the driver lets the
//! sockets be read once before applying the ticks). Between events the driver yields when
//! the executor needs it, so the peers' readers and the tick timer keep running.
//!
//! Never: blocks on I/O (the disk is another thread); lets one client's slowness hold the node
//! (replies are queued to the connection's writer). A step that takes longer than
//! [`SLOW_DRIVER_STEP_WARN_MS`] is logged with what it was.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::Instant;

use flume::TryRecvError;
use futures_lite::future;
use tracing::{info, warn};

use crate::limits::{DRIVER_BURST_EVENTS, MAX_QUEUED_REPLIES_PER_CLIENT, SLOW_DRIVER_STEP_WARN_MS};
use crate::proto::client::{
    EVENT_ID, NodeStatus, Reply, ReplyResult, Request, RequestOp, SessionRequest,
};
use crate::types::{ClientId, NodeId, RequestId, Zxid};
use crate::zab::{
    ClientOp, ClientRequest, DiskOp, Input, Node, Output, PeerMessage, Response, RoleName,
};

use super::disk::{DiskCmd, DiskEvent};
use super::peers::PeerLink;

/// What reaches the driver from the peers and the timer (the protocol queue).
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
    Stop,
}

/// What reaches the driver from client connections (the client queue). One connection's
/// events stay in its order: opened, its requests, closed.
pub(crate) enum ClientEvent {
    Opened {
        client: ClientId,
        replies: flume::Sender<Reply>,
    },
    Closed {
        client: ClientId,
    },
    Request {
        client: ClientId,
        request: Request,
    },
}

/// The driver's three inputs.
pub(crate) struct Queues {
    pub protocol: flume::Receiver<Event>,
    pub clients: flume::Receiver<ClientEvent>,
    pub disk: flume::Receiver<DiskEvent>,
}

/// One event taken from a queue while the driver waited for any.
enum Woken {
    Disk(DiskEvent),
    Protocol(Event),
    Client(ClientEvent),
    /// The protocol queue or the disk thread is gone: the node is stopping.
    Gone,
}

/// What the driver stepped, for the slow-step warning.
#[derive(Debug, Clone, Copy)]
enum StepKind {
    Disk,
    Peer,
    Ticks(u32),
    Client,
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
    /// Live sessions in this node's copy of the tree (metrics).
    sessions: std::sync::atomic::AtomicU64,
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
        self.sessions.store(
            node.tree().session_count() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Live sessions in this node's copy of the tree (as of its latest step).
    pub fn sessions(&self) -> u64 {
        self.sessions.load(std::sync::atomic::Ordering::Relaxed)
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
    /// Clients disconnected because their reply queue filled (`NodeStatus`).
    slow_clients_dropped: u64,
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
            slow_clients_dropped: 0,
            clients: HashMap::new(),
            out: Vec::new(),
            last_role: Cell::new(None),
        }
    }

    /// Runs until `Stop` or a disk failure.
    pub async fn run(mut self, queues: Queues) -> Result<(), DriverError> {
        let mut out = std::mem::take(&mut self.out);
        self.node.start(&mut out);
        self.execute(&mut out).await?;
        // Ticks received, not applied yet (see the module docs).
        let mut ticks: u32 = 0;
        // The sockets were given one turn to be read before a pile of ticks.
        let mut read_before_ticks = false;
        loop {
            let mut worked = false;
            for _ in 0..DRIVER_BURST_EVENTS {
                match queues.disk.try_recv() {
                    Ok(e) => self.disk_event(e, &mut out).await?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
                worked = true;
            }
            for _ in 0..DRIVER_BURST_EVENTS {
                match queues.protocol.try_recv() {
                    Ok(Event::Stop) | Err(TryRecvError::Disconnected) => return Ok(()),
                    Ok(Event::Ticks(n)) => ticks = ticks.saturating_add(n),
                    Ok(e) => self.protocol_event(e, &mut out).await?,
                    Err(TryRecvError::Empty) => break,
                }
                worked = true;
            }
            if ticks > 0 {
                if ticks > 1 && !read_before_ticks {
                    // The executor fell behind: what the peers sent meanwhile may still be
                    // on the sockets. Let their readers run once, then take their messages.
                    read_before_ticks = true;
                    glommio::executor().yield_task_queue_now().await;
                    continue;
                }
                read_before_ticks = false;
                self.apply_ticks(std::mem::take(&mut ticks), &mut out)
                    .await?;
                worked = true;
            }
            for _ in 0..DRIVER_BURST_EVENTS {
                match queues.clients.try_recv() {
                    Ok(e) => self.client_event(e, &mut out).await?,
                    // Client connections come and go; only the protocol queue's end stops us.
                    Err(_) => break,
                }
                worked = true;
            }
            if worked {
                continue;
            }
            // Nothing queued: wait for the first event of any kind, in the same order.
            let woken = future::or(
                async {
                    queues
                        .disk
                        .recv_async()
                        .await
                        .map_or(Woken::Gone, Woken::Disk)
                },
                future::or(
                    async {
                        queues
                            .protocol
                            .recv_async()
                            .await
                            .map_or(Woken::Gone, Woken::Protocol)
                    },
                    async {
                        match queues.clients.recv_async().await {
                            Ok(e) => Woken::Client(e),
                            // No client sender left (the acceptor ended): only the other
                            // queues can wake us now.
                            Err(_) => future::pending().await,
                        }
                    },
                ),
            )
            .await;
            match woken {
                Woken::Gone | Woken::Protocol(Event::Stop) => return Ok(()),
                Woken::Disk(e) => self.disk_event(e, &mut out).await?,
                Woken::Protocol(Event::Ticks(n)) => ticks = ticks.saturating_add(n),
                Woken::Protocol(e) => self.protocol_event(e, &mut out).await?,
                Woken::Client(e) => self.client_event(e, &mut out).await?,
            }
        }
    }

    async fn disk_event(
        &mut self,
        event: DiskEvent,
        out: &mut Vec<Output>,
    ) -> Result<(), DriverError> {
        let started = Instant::now();
        match event {
            DiskEvent::Synced {
                generation,
                through,
            } => self.node.step(
                Input::Synced {
                    generation,
                    through,
                },
                out,
            ),
            DiskEvent::Failed(e) => return Err(DriverError::Disk(e)),
        }
        self.finish_step(StepKind::Disk, started, out).await
    }

    async fn protocol_event(
        &mut self,
        event: Event,
        out: &mut Vec<Output>,
    ) -> Result<(), DriverError> {
        let started = Instant::now();
        match event {
            Event::Peer { from, msg } => self.node.step(Input::Peer { from, msg }, out),
            Event::PeerDown { peer } => self.node.step(Input::PeerDown { peer }, out),
            // The run loop takes these itself.
            Event::Ticks(_) | Event::Stop => {}
        }
        self.finish_step(StepKind::Peer, started, out).await
    }

    async fn apply_ticks(&mut self, n: u32, out: &mut Vec<Output>) -> Result<(), DriverError> {
        let started = Instant::now();
        for _ in 0..n {
            self.node.step(Input::Tick, out);
        }
        self.finish_step(StepKind::Ticks(n), started, out).await
    }

    /// Executes the step's outputs, warns if the whole took too long, and lets the
    /// executor run others (the peers' readers, the timer) if it asks for it.
    async fn finish_step(
        &mut self,
        kind: StepKind,
        started: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), DriverError> {
        let stepped = started.elapsed();
        self.execute(out).await?;
        let total = started.elapsed();
        if total.as_millis() >= u128::from(SLOW_DRIVER_STEP_WARN_MS) {
            let (step, ticks) = match kind {
                StepKind::Disk => ("disk completion", 0),
                StepKind::Peer => ("peer message", 0),
                StepKind::Ticks(n) => ("ticks", n),
                StepKind::Client => ("client event", 0),
            };
            warn!(
                node = %self.node.id(),
                step,
                ticks,
                step_ms = stepped.as_millis() as u64,
                total_ms = total.as_millis() as u64,
                "consensus: slow driver step (nothing else was heard meanwhile)"
            );
        }
        glommio::yield_if_needed().await;
        Ok(())
    }

    async fn client_event(
        &mut self,
        event: ClientEvent,
        out: &mut Vec<Output>,
    ) -> Result<(), DriverError> {
        let started = Instant::now();
        match event {
            ClientEvent::Opened { client, replies } => {
                self.clients.insert(client, replies);
            }
            ClientEvent::Closed { client } => {
                self.clients.remove(&client);
                self.node.step(Input::ClientGone { client }, out);
            }
            ClientEvent::Request { client, request } => self.request(client, request, out),
        }
        self.finish_step(StepKind::Client, started, out).await
    }

    fn request(&mut self, client: ClientId, request: Request, out: &mut Vec<Output>) {
        match request.op {
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
            slow_clients_dropped: self.slow_clients_dropped,
        }
    }

    fn draw_password(&mut self) -> u64 {
        use std::hash::BuildHasher;
        self.password_count += 1;
        self.password_keys.hash_one(self.password_count)
    }

    fn reply(&mut self, client: ClientId, id: u64, zxid: Zxid, result: ReplyResult) {
        let Some(tx) = self.clients.get(&client) else {
            return;
        };
        match tx.try_send(Reply { id, zxid, result }) {
            // Disconnected: the connection is closing; its reply is moot.
            Ok(()) | Err(flume::TrySendError::Disconnected(_)) => {}
            Err(flume::TrySendError::Full(_)) => {
                // The client does not read its socket: let it go rather than queue for it
                // without bound (limits::MAX_QUEUED_REPLIES_PER_CLIENT). Dropping the sender
                // ends its writer, which closes the stream; the session lives on.
                warn!(
                    client = client.0,
                    queued = MAX_QUEUED_REPLIES_PER_CLIENT,
                    "consensus client does not read its replies; disconnecting it"
                );
                self.clients.remove(&client);
                self.slow_clients_dropped += 1;
            }
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
                        if self
                            .disk
                            .send_async(DiskCmd::Durable(op, done))
                            .await
                            .is_err()
                            || wait.recv_async().await.is_err()
                        {
                            return Err(DriverError::Disk("the disk thread stopped".into()));
                        }
                    } else if self.disk.send_async(DiskCmd::Op(op)).await.is_err() {
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
