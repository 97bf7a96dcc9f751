//! Starting and stopping this process's consensus role (`--roles`), and the consensus-only
//! node.
//!
//! - Consensus role, no `--consensus-peers`: an embedded group of one on its own executor; it
//!   must elect itself and take a write before the broker starts, or start-up fails.
//! - Consensus role with peers: the node joins its group in the background; until a quorum is
//!   up it says so every [`QUORUM_WAIT_LOG_MS`], and the runtime names each peer it cannot
//!   reach.
//! - Broker role alone: the group is elsewhere; start-up checks that it answers and logs the
//!   outcome (loading the metadata from the tree, `metadata::open`, is what waits for it).
//!
//! The store lives in `<data dir>/consensus/`. Never: touches the broker's metadata.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use corebus_consensus::client::{Client, ClientConfig, CreateMode, Error as ClientError};
use corebus_consensus::runtime::{ConsensusNode, RuntimeConfig, StartError as NodeStartError};
use corebus_consensus::txn::TreeError;
use corebus_consensus::types::NodeId;
use glommio::{LocalExecutorBuilder, Placement};
use thiserror::Error;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::storage::{DataDirLock, StorageError};

/// How long one attempt of an embedded group of one to elect itself, or to take its first
/// write, may take before start-up says so and tries again.
pub const EMBEDDED_READY_TIMEOUT_MS: u64 = 10_000;
/// How long start-up keeps trying before it gives up on the embedded group: a machine busy
/// with other work can starve a fresh node for many seconds, and a node that waits a while
/// is better than one that exits and is restarted into the same starvation.
pub const EMBEDDED_START_DEADLINE_MS: u64 = 120_000;
/// While a group has no quorum, say so this often.
pub const QUORUM_WAIT_LOG_MS: u64 = 10_000;
/// How long the broker-only start-up check waits for the group.
pub const GROUP_PROBE_TIMEOUT_MS: u64 = 5_000;
/// The node every corebus group holds; creating it proves that the group takes writes.
pub const ROOT_NODE: &str = "/corebus";

#[derive(Debug, Error)]
pub enum ConsensusStartError {
    #[error(transparent)]
    Node(#[from] NodeStartError),
    #[error("the embedded consensus node did not elect itself within {0} ms")]
    NoLeader(u64),
    #[error("the embedded consensus node refused its first write: {0}")]
    FirstWrite(ClientError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot run a consensus client: {0}")]
    Probe(String),
    #[error("the consensus node failed: {0}")]
    Failed(String),
}

/// Starts the consensus role if this process has it; call [`stop`] with the result at exit.
pub fn start(config: &Config) -> Result<Option<ConsensusNode>, ConsensusStartError> {
    let c = &config.consensus;
    if !config.roles.consensus {
        let servers: Vec<_> = c.members.values().copied().collect();
        std::thread::Builder::new()
            .name("consensus-probe".into())
            .spawn(move || match probe(servers.clone()) {
                Ok(msg) => info!("consensus group reachable: {msg}"),
                Err(e) => warn!(servers = ?servers, "consensus group not reachable: {e}"),
            })
            .map_err(|e| ConsensusStartError::Probe(e.to_string()))?;
        return Ok(None);
    }
    let members = c.members.iter().map(|(&id, &a)| (NodeId(id), a)).collect();
    let dir = config.data_dir.join("consensus");
    let me = NodeId(config.node_id as u64);
    let node = ConsensusNode::start(RuntimeConfig::new(me, members, c.listen, dir))?;
    if !c.explicit_peers {
        let started = Instant::now();
        let deadline = Duration::from_millis(EMBEDDED_START_DEADLINE_MS);
        while !node.wait_serving(Duration::from_millis(EMBEDDED_READY_TIMEOUT_MS)) {
            if started.elapsed() >= deadline || node.observer().stopped() {
                let _ = node.stop();
                return Err(ConsensusStartError::NoLeader(EMBEDDED_START_DEADLINE_MS));
            }
            warn!(
                waited_ms = started.elapsed().as_millis() as u64,
                give_up_ms = EMBEDDED_START_DEADLINE_MS,
                "the embedded consensus node has not elected itself yet (a busy machine delays \
                 it); still waiting"
            );
        }
        if let Err(e) = first_write(node.local_addr(), started, deadline) {
            let _ = node.stop();
            return Err(e);
        }
        info!(listen = %node.local_addr(), "embedded consensus group of one is serving");
    } else {
        let observed = node.observer();
        let peers = format!("{:?}", c.members);
        std::thread::Builder::new()
            .name("consensus-quorum".into())
            .spawn(move || {
                let mut since = Instant::now();
                while !observed.serving() && !observed.stopped() {
                    std::thread::sleep(Duration::from_millis(50));
                    if since.elapsed() >= Duration::from_millis(QUORUM_WAIT_LOG_MS) {
                        warn!(members = %peers, "consensus group has no quorum yet; waiting for peers");
                        since = Instant::now();
                    }
                }
                if observed.serving() {
                    info!(role = ?observed.role(), "consensus group has a quorum");
                }
            })
            .map_err(|e| ConsensusStartError::Probe(e.to_string()))?;
    }
    Ok(Some(node))
}

/// Stops the consensus role (if any), logging a failure it had.
pub fn stop(node: Option<ConsensusNode>) {
    if let Some(node) = node
        && let Err(e) = node.stop()
    {
        error!("consensus node failed: {e}");
    }
}

/// `--roles consensus`: a consensus node without a Kafka listener, until SIGTERM/SIGINT or a
/// failure of the node.
pub fn run_consensus_only(config: &Config) -> Result<(), ConsensusStartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ConsensusStartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(ConsensusStartError::Signals)?;
    let Some(node) = start(config)? else {
        return Ok(());
    };
    info!(node_id = config.node_id, listen = %node.local_addr(), "corebus consensus node is ready");
    let observed = node.observer();
    loop {
        if let Some(sig) = signals.pending().next() {
            info!(signal = sig, "stopping the consensus node");
            return node
                .stop()
                .map_err(|e| ConsensusStartError::Failed(e.to_string()));
        }
        if observed.stopped() {
            return match node.join() {
                Ok(()) => Ok(()),
                Err(e) => Err(ConsensusStartError::Failed(e.to_string())),
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `f` with a client of `servers` on a short-lived executor of its own (start-up runs on
/// the main thread, which has none).
pub(crate) fn with_client<T: Send + 'static>(
    servers: Vec<std::net::SocketAddr>,
    timeout_ms: u64,
    f: impl AsyncFnOnce(Client) -> T + Send + 'static,
) -> Result<T, ConsensusStartError> {
    let probe = |e: String| ConsensusStartError::Probe(e);
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("consensus-client")
        .spawn(move || async move {
            let mut cfg = ClientConfig::new(servers);
            cfg.request_timeout_ms = timeout_ms;
            let client = Client::new(cfg).map_err(|e| e.to_string())?;
            Ok::<T, String>(f(client).await)
        })
        .map_err(|e| probe(e.to_string()))?
        .join()
        .map_err(|e| probe(e.to_string()))?
        .map_err(probe)
}

/// Creates [`ROOT_NODE`] if missing: the embedded group takes writes. A write without an
/// answer in time is tried again (creating the node twice is harmless: the second finds it)
/// until `deadline` after `started`, saying so each time.
fn first_write(
    addr: std::net::SocketAddr,
    started: Instant,
    deadline: Duration,
) -> Result<(), ConsensusStartError> {
    loop {
        let created = with_client(vec![addr], EMBEDDED_READY_TIMEOUT_MS, async |c: Client| {
            c.create(ROOT_NODE, b"", CreateMode::Persistent).await
        })?;
        let e = match created {
            Ok(_)
            | Err(ClientError::Tree {
                error: TreeError::NodeExists,
                ..
            }) => return Ok(()),
            Err(e) => e,
        };
        let retriable = matches!(
            e,
            ClientError::Timeout { .. }
                | ClientError::ConnectionLoss { .. }
                | ClientError::Unavailable { .. }
        );
        if !retriable || started.elapsed() >= deadline {
            return Err(ConsensusStartError::FirstWrite(e));
        }
        warn!(
            error = %e,
            waited_ms = started.elapsed().as_millis() as u64,
            give_up_ms = deadline.as_millis() as u64,
            "the embedded consensus node has not taken its first write yet (a busy machine \
             delays it); trying again"
        );
    }
}

/// Asks the group for its state through any member.
fn probe(servers: Vec<std::net::SocketAddr>) -> Result<String, ConsensusStartError> {
    let status = with_client(servers, GROUP_PROBE_TIMEOUT_MS, async |c: Client| {
        let s = c.status().await?;
        Ok::<_, ClientError>(format!(
            "node {} is {:?}, serving: {}",
            s.id.0, s.role, s.serving
        ))
    })?;
    status.map_err(|e| ConsensusStartError::Probe(e.to_string()))
}
