//! The runtime: one [`crate::zab::Node`] over TCP and real files, on its own glommio executor.
//!
//! - [`driver`]: owns the node and executes its outputs under the [`crate::zab`] contract.
//! - [`peers`]: the peer transport (one outbound connection per peer, reconnect with backoff).
//! - [`clients`]: client connections. [`ticker`]: the tick timer.
//! - [`disk`]: the disk thread; [`files`]: the store's files with fdatasync.
//!
//! # Scheduling: what keeps heartbeats on time
//!
//! The node runs on an executor of its own (a thread named `consensus`, not pinned: the
//! shards pin one executor per CPU, and on a machine with spare CPUs this one lands on a free
//! one). Inside it, two task queues: `consensus-protocol` (the driver, the tick timer, the
//! acceptor and every peer connection: pings, votes, proposals, ACKs) with
//! [`PROTOCOL_SHARES`] shares and `Latency::Matters`, and `consensus-clients` (client
//! connections) with [`CLIENT_SHARES`] and `Latency::NotImportant`, so a burst of client
//! traffic cannot delay a ping past its deadline. The driver itself takes peer messages and
//! ticks from a queue of their own, ahead of client requests (see [`driver`]), and applies
//! transactions in time independent of the tree's size (a write costs no work per sibling),
//! so no single step holds the node. The fdatasync is not on either: a dedicated
//! thread (`consensus-disk`) runs every disk operation, so a slow disk delays commits but
//! never a heartbeat; group commit comes from the node keeping one sync in flight.
//!
//! # Start-up
//!
//! [`ConsensusNode::start`] recovers the store, binds the listener and starts the executor;
//! it returns once the node is listening (errors: the data directory, a corrupt store, the
//! address). Peers are dialled in the background; an unreachable one is logged and retried.

pub mod clients;
pub mod disk;
pub mod driver;
pub mod files;
pub mod peers;
pub mod ticker;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_lite::io::BufReader;
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};
use rkyv::util::AlignedVec;
use tracing::{debug, info, warn};

use crate::limits::{
    CLIENT_QUEUE_EVENTS, DEFAULT_LOG_SEGMENT_BYTES, DEFAULT_TICK_MS, HELLO_TIMEOUT_MS,
    MAX_CLIENT_CONNECTIONS, MAX_CLIENT_FRAME_BYTES, PROTOCOL_QUEUE_EVENTS,
    SOCKET_READ_BUFFER_BYTES,
};
use crate::proto::frame;
use crate::proto::{Hello, PROTOCOL_VERSION};
use crate::store::{LogStore, StoreError};
use crate::types::{ClientId, NodeId};
use crate::zab::{Config, Node};

pub use driver::{DriverError, Observed};

/// Shares of the protocol task queue (peers, timer, driver).
pub const PROTOCOL_SHARES: usize = 1000;
/// Shares of the client task queue.
pub const CLIENT_SHARES: usize = 100;
/// How often a task on the protocol queue asks others to yield.
const PROTOCOL_LATENCY_MS: u64 = 1;

/// What one node needs to run.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub id: NodeId,
    /// Every member with its consensus address, this node included.
    pub members: BTreeMap<NodeId, SocketAddr>,
    /// Where to listen for peers and clients.
    pub listen: SocketAddr,
    /// The store's directory (log segments, snapshots, epochs).
    pub data_dir: PathBuf,
    pub tick_ms: u64,
}

impl RuntimeConfig {
    pub fn new(
        id: NodeId,
        members: BTreeMap<NodeId, SocketAddr>,
        listen: SocketAddr,
        data_dir: PathBuf,
    ) -> RuntimeConfig {
        RuntimeConfig {
            id,
            members,
            listen,
            data_dir,
            tick_ms: DEFAULT_TICK_MS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("consensus member list does not contain this node ({0})")]
    NotAMember(NodeId),
    #[error("consensus tick must be at least 1 ms")]
    Tick,
    #[error("cannot open the consensus store in {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot recover the consensus store in {dir}: {source}")]
    Store { dir: PathBuf, source: StoreError },
    #[error("cannot listen for consensus on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the consensus executor: {0}")]
    Executor(String),
}

/// A running node. Dropping it does not stop it; call [`ConsensusNode::stop`].
pub struct ConsensusNode {
    local_addr: SocketAddr,
    observed: Arc<Observed>,
    stop: flume::Sender<driver::Event>,
    thread: glommio::ExecutorJoinHandle<Result<(), DriverError>>,
}

impl ConsensusNode {
    pub fn start(cfg: RuntimeConfig) -> Result<ConsensusNode, StartError> {
        if !cfg.members.contains_key(&cfg.id) {
            return Err(StartError::NotAMember(cfg.id));
        }
        if cfg.tick_ms == 0 {
            return Err(StartError::Tick);
        }
        let files = files::DirFiles::open(&cfg.data_dir).map_err(|source| StartError::Dir {
            dir: cfg.data_dir.clone(),
            source,
        })?;
        let (store, recovered) =
            LogStore::recover(files, DEFAULT_LOG_SEGMENT_BYTES).map_err(|source| {
                StartError::Store {
                    dir: cfg.data_dir.clone(),
                    source,
                }
            })?;
        info!(
            dir = %cfg.data_dir.display(),
            snapshot = %recovered.tree.applied(),
            log_entries = recovered.log.len(),
            epoch = recovered.epochs.current.0,
            "consensus store recovered"
        );
        // Bound here so that a taken address is an error of `start`, not a log line later.
        let listener =
            std::net::TcpListener::bind(cfg.listen).map_err(|source| StartError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let members: Vec<NodeId> = cfg.members.keys().copied().collect();
        let node = Node::new(Config::new(cfg.id, members), recovered);
        let (disk_events_tx, disk_events) = flume::unbounded();
        let disk = disk::spawn(store, disk_events_tx)
            .map_err(|e| StartError::Executor(format!("disk thread: {e}")))?;
        let observed = Arc::new(Observed::default());
        let (events_tx, events) = flume::bounded(PROTOCOL_QUEUE_EVENTS);
        let (clients_tx, clients) = flume::bounded(CLIENT_QUEUE_EVENTS);
        let queues = driver::Queues {
            protocol: events,
            clients,
            disk: disk_events,
        };
        let stop = events_tx.clone();
        let obs = observed.clone();
        let stopped = observed.clone();
        let thread = LocalExecutorBuilder::new(Placement::Unbound)
            .name("consensus")
            .spawn(move || async move {
                let result = run(
                    cfg,
                    node,
                    listener,
                    disk.tx.clone(),
                    obs,
                    events_tx,
                    clients_tx,
                    queues,
                )
                .await;
                let _ = disk.tx.send(disk::DiskCmd::Stop);
                let _ = disk.thread.join();
                stopped.mark_stopped();
                result
            })
            .map_err(|e| StartError::Executor(e.to_string()))?;
        info!(listen = %local_addr, "consensus node listening");
        Ok(ConsensusNode {
            local_addr,
            observed,
            stop,
            thread,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node's role and whether it serves clients, as of its last step.
    pub fn observed(&self) -> &Observed {
        &self.observed
    }

    /// The same view, to watch from another thread.
    pub fn observer(&self) -> Arc<Observed> {
        self.observed.clone()
    }

    /// Waits until the node serves clients (a leader is established and this node is in
    /// its broadcast phase); false after `timeout` or if the node stopped.
    pub fn wait_serving(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !self.observed.serving() {
            if std::time::Instant::now() >= deadline || self.observed.stopped() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Stops the node and waits for its threads; the error of a node that had already failed.
    pub fn stop(self) -> Result<(), DriverError> {
        let _ = self.stop.send(driver::Event::Stop);
        self.join()
    }

    /// Waits until the node stops by itself (a disk failure).
    pub fn join(self) -> Result<(), DriverError> {
        match self.thread.join() {
            Ok(r) => r,
            Err(e) => Err(DriverError::Disk(format!("consensus executor ended: {e}"))),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    cfg: RuntimeConfig,
    node: Node,
    listener: std::net::TcpListener,
    disk: flume::Sender<disk::DiskCmd>,
    observed: Arc<Observed>,
    events_tx: flume::Sender<driver::Event>,
    clients_tx: flume::Sender<driver::ClientEvent>,
    queues: driver::Queues,
) -> Result<(), DriverError> {
    let ex = glommio::executor();
    let protocol_tq = ex.create_task_queue(
        Shares::Static(PROTOCOL_SHARES),
        Latency::Matters(Duration::from_millis(PROTOCOL_LATENCY_MS)),
        "consensus-protocol",
    );
    let client_tq = ex.create_task_queue(
        Shares::Static(CLIENT_SHARES),
        Latency::NotImportant,
        "consensus-clients",
    );
    let mut links = HashMap::new();
    for (&peer, &addr) in &cfg.members {
        if peer != cfg.id {
            let link = peers::start_link(cfg.id, peer, addr, events_tx.clone(), protocol_tq);
            links.insert(peer, link);
        }
    }
    let tick = Duration::from_millis(cfg.tick_ms);
    if let Ok(t) = glommio::spawn_local_into(ticker::run(tick, events_tx.clone()), protocol_tq) {
        t.detach();
    }
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the fd is a bound, listening TCP socket whose ownership moves here.
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) };
    let members: Vec<NodeId> = cfg.members.keys().copied().collect();
    // Every connection task ends when this sender is dropped (a receive then fails).
    let (stopping, stop) = flume::bounded::<()>(1);
    let routes = Routes {
        protocol: events_tx,
        clients: clients_tx,
        protocol_tq,
        client_tq,
    };
    let acceptor = accept_loop(listener, cfg.id, members, routes, stop);
    let acceptor = glommio::spawn_local_into(acceptor, protocol_tq);
    let driver = driver::Driver::new(node, links, disk, observed, cfg.tick_ms);
    let result = match glommio::spawn_local_into(driver.run(queues), protocol_tq) {
        Ok(t) => t.await,
        Err(e) => Err(DriverError::Disk(format!("cannot spawn the driver: {e}"))),
    };
    drop(stopping);
    if let Ok(t) = acceptor {
        t.await;
    }
    result
}

/// Resolves when the node stops.
pub(crate) async fn stopped(stop: &flume::Receiver<()>) {
    let _ = stop.recv_async().await;
}

/// Where accepted connections go: a peer's messages to the driver's protocol queue, served on
/// the protocol task queue; a client's requests to its client queue, on the client task queue.
struct Routes {
    protocol: flume::Sender<driver::Event>,
    clients: flume::Sender<driver::ClientEvent>,
    protocol_tq: glommio::TaskQueueHandle,
    client_tq: glommio::TaskQueueHandle,
}

async fn accept_loop(
    listener: glommio::net::TcpListener,
    me: NodeId,
    members: Vec<NodeId>,
    routes: Routes,
    stop: flume::Receiver<()>,
) {
    let Routes {
        protocol: events,
        clients: client_events,
        protocol_tq,
        client_tq,
    } = routes;
    let live = Rc::new(std::cell::Cell::new(0usize));
    let generations = Rc::new(peers::InboundGenerations::default());
    let next_client = Rc::new(AtomicU64::new(1));
    let clients = Rc::new(std::cell::Cell::new(0usize));
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stopped(&stop).await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                warn!(error = %e, "consensus accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(remote) = stream.peer_addr() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (r, writer) = futures_lite::io::split(stream);
        let mut reader = BufReader::with_capacity(SOCKET_READ_BUFFER_BYTES, r);
        let (events, client_events, generations, next_client, clients, members, stop) = (
            events.clone(),
            client_events.clone(),
            generations.clone(),
            next_client.clone(),
            clients.clone(),
            members.clone(),
            stop.clone(),
        );
        let live_here = live.clone();
        live.set(live.get() + 1);
        let conn = async move {
            let _live = Live(live_here);
            let mut buf = AlignedVec::new();
            let hello = glommio::timer::timeout(Duration::from_millis(HELLO_TIMEOUT_MS), async {
                Ok(
                    frame::read_message::<Hello, _>(&mut reader, &mut buf, MAX_CLIENT_FRAME_BYTES)
                        .await,
                )
            })
            .await;
            match hello {
                Ok(Ok(Hello::Peer { version, from })) if version == PROTOCOL_VERSION => {
                    if from == me || !members.contains(&from) {
                        warn!(%remote, peer = %from, "connection from a node that is not a peer; closing");
                        return;
                    }
                    let served = peers::serve_inbound(from, reader, remote, generations, events);
                    futures_lite::future::or(served, stopped(&stop)).await;
                }
                Ok(Ok(Hello::Client { version })) if version == PROTOCOL_VERSION => {
                    if clients.get() >= MAX_CLIENT_CONNECTIONS {
                        warn!(%remote, limit = MAX_CLIENT_CONNECTIONS, "too many consensus clients; closing");
                        return;
                    }
                    clients.set(clients.get() + 1);
                    let client = ClientId(next_client.fetch_add(1, Ordering::Relaxed));
                    let served =
                        clients::serve(client, reader, writer, remote, client_events, client_tq);
                    let served = async move {
                        futures_lite::future::or(served, stopped(&stop)).await;
                    };
                    match glommio::spawn_local_into(served, client_tq) {
                        Ok(t) => t.await,
                        Err(e) => warn!(error = %e, "cannot start a client task"),
                    }
                    clients.set(clients.get() - 1);
                }
                Ok(Ok(other)) => {
                    warn!(%remote, hello = ?other, "protocol version unknown; closing")
                }
                Ok(Err(e)) => warn!(%remote, error = %e, "bad hello; closing"),
                Err(_) => debug!(%remote, "no hello in time; closing"),
            }
        };
        if let Ok(t) = glommio::spawn_local_into(conn, protocol_tq) {
            t.detach();
        }
    }
    // Each connection task sees `stop` and ends; wait (bounded) so that their sockets are
    // closed when the node's start-up can be repeated on the same address.
    for _ in 0..STOP_WAIT_POLLS {
        if live.get() == 0 {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// Polls of 1 ms waiting for connection tasks to end at stop.
const STOP_WAIT_POLLS: usize = 1_000;

/// Counts a connection task while it lives.
struct Live(Rc<std::cell::Cell<usize>>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}
