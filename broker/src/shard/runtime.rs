//! Starting and stopping the node: pick the CPUs, bind the listeners, load the metadata, start
//! one pinned executor per shard, wait for SIGTERM/SIGINT, stop accepting, let in-flight
//! requests finish (bounded by `SHUTDOWN_GRACE_MS`), close every log cleanly once all shards
//! have drained, and return.
//!
//! Never: runs request work on the main thread (it only starts, signals and joins the shards).

use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use thiserror::Error;
use tracing::{error, info, warn};

use super::mesh::{Job, Mesh, serve_mailbox};
use super::partitions::ShardLogs;
use super::{NodeInfo, Shard, ShardId, cpus};
use crate::config::{Config, MetricsListen};
use crate::limits::{SHUTDOWN_GRACE_MS, SHUTDOWN_POLL_MS};
use crate::metadata::MetadataError;
use crate::metadata::controller::Controller;
use crate::metrics::health::Health;
use crate::metrics::http::{Endpoint, MetricsServer};
use crate::server::accept_loop;
use crate::server::listener::{BindError, bind_exclusive};
use crate::storage::{DataDirLock, StorageError};

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot read this process's CPU affinity: {0}")]
    Cpus(std::io::Error),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("cannot start shard {shard} on CPU {cpu}: {reason}")]
    Executor {
        shard: usize,
        cpu: usize,
        reason: String,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("shard {0} failed: {1}")]
    ShardFailed(usize, String),
    #[error(transparent)]
    Consensus(#[from] crate::consensus::ConsensusStartError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::http::MetricsBindError),
}

/// Runs the node until SIGTERM/SIGINT; `Ok` after a clean stop.
pub fn run(config: Config) -> Result<(), StartError> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    // One process per data directory; held until this function returns.
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    // The consensus role (if any) is up before the broker, and stopped after it.
    let consensus = crate::consensus::start(&config)?;
    // The metadata store talks to the node's own consensus role where it has one (its actual
    // address: `--consensus-listen` may have asked for port 0).
    let own = consensus.as_ref().map(|n| n.local_addr());
    let observed = consensus.as_ref().map(|n| n.observer());
    let result = run_broker(config, own, observed);
    crate::consensus::stop(consensus);
    result
}

fn run_broker(
    mut config: Arc<Config>,
    own_consensus: Option<std::net::SocketAddr>,
    observed: Option<Arc<corebus_consensus::runtime::Observed>>,
) -> Result<(), StartError> {
    let cpus = cpus::allowed_cpus().map_err(StartError::Cpus)?;
    let shard_count = config.shards.unwrap_or(cpus.len());
    // Each shard's share of the open-file limit for segment files, fixed from here on.
    super::open_files::size_budget(&mut Arc::make_mut(&mut config).limits, shard_count);
    if shard_count > cpus.len() {
        warn!(
            shards = shard_count,
            cpus = cpus.len(),
            "more shards than CPUs: some CPUs run two shards"
        );
    }
    let (sockets, bound) = bind_exclusive(&config.listen, shard_count)?;
    let (mesh, mailboxes) = Mesh::new(shard_count);
    let connections = Arc::new(crate::server::admission::Admission::new(
        config.limits.max_connections,
        config.per_ip.clone(),
    ));
    // Up before recovery and the metadata load, so probes see "alive, not ready" meanwhile.
    let health = Health::new();
    let metrics = start_metrics(
        &config,
        Endpoint {
            health: health.clone(),
            mesh: Some(mesh.clone()),
            connections: connections.clone(),
            consensus: observed,
        },
    )?;
    let result = run_shards(
        config,
        own_consensus,
        shard_count,
        &cpus,
        (sockets, bound),
        (mesh, mailboxes),
        connections,
        &health,
    );
    health.set_stopping();
    if let Some(m) = metrics {
        m.stop();
    }
    result
}

/// Starts the metrics listener as configured: `None` when it is off, or when the default
/// address is taken (said in a warning; an explicit address that cannot be bound is an error).
fn start_metrics(config: &Config, endpoint: Endpoint) -> Result<Option<MetricsServer>, StartError> {
    match &config.metrics {
        MetricsListen::Off => Ok(None),
        MetricsListen::On { addr, explicit } => match MetricsServer::start(addr, endpoint) {
            Ok(server) => Ok(Some(server)),
            Err(e) if !explicit => {
                warn!(error = %e, "running without /metrics, /health and /ready: pass --metrics-listen HOST:PORT (or off)");
                Ok(None)
            }
            Err(e) => Err(StartError::Metrics(e)),
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn run_shards(
    config: Arc<Config>,
    own_consensus: Option<std::net::SocketAddr>,
    shard_count: usize,
    cpus: &[usize],
    (sockets, bound): (Vec<socket2::Socket>, std::net::SocketAddr),
    (mesh, mailboxes): (Mesh, Vec<flume::Receiver<Job>>),
    connections: Arc<crate::server::admission::Admission>,
    health: &Health,
) -> Result<(), StartError> {
    let opened = crate::metadata::open::open(&config, own_consensus)?;
    let image = opened.image().clone();
    // The store itself is built on shard 0, the controller's.
    let mut opened = Some(opened);
    let node = Arc::new(NodeInfo {
        node_id: config.node_id,
        host: match &config.advertised {
            Some(a) => a.host.clone(),
            None => advertised_host(&bound),
        },
        port: i32::from(config.advertised.as_ref().map_or(bound.port(), |a| a.port)),
    });
    let image = Arc::new(image);

    // Signals are blocked into a thread of their own before the shards start, so no shard
    // thread ever runs a handler.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(StartError::Signals)?;

    // Each shard reports once it has recovered its partitions and is accepting (`Err`: it
    // cannot start, and the others are told to stop).
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<usize, usize>>();
    // Shards whose connections have drained at shutdown (see `run_shard`).
    let drained_shards = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(shard_count);
    for (i, (socket, mailbox)) in sockets.into_iter().zip(mailboxes).enumerate() {
        let cpu = cpus[i % cpus.len()];
        let (config, node, mesh, connections, image) = (
            config.clone(),
            node.clone(),
            mesh.clone(),
            connections.clone(),
            image.clone(),
        );
        let fd = socket.into_raw_fd();
        let ready = ready_tx.clone();
        let drained_shards = drained_shards.clone();
        let store = if i == 0 { opened.take() } else { None };
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{i}"))
            .spawn(move || async move {
                // SAFETY: fd is a listening TCP socket whose ownership moved here.
                let listener = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
                let id = ShardId(i as u16);
                let session_timeout_ms = crate::cluster::session_timeout_ms(&config);
                let controller =
                    match store.map(|s| s.into_store(&config.data_dir, session_timeout_ms)) {
                        Some(Ok(store)) => Some(Rc::new(Controller::new(store, mesh.clone()))),
                        Some(Err(e)) => return Err(format!("metadata store: {e}")),
                        None => None,
                    };
                // Direct I/O is prepared before anything else opens a DMA file here.
                let logs = match ShardLogs::new(
                    &config.data_dir,
                    config.limits.shard_max_open_files,
                    id,
                    shard_count,
                )
                .await
                {
                    Ok(l) => l,
                    Err(e) => {
                        return Err(format!("direct I/O on {}: {e}", config.data_dir.display()));
                    }
                };
                let shard = Rc::new(Shard::new(
                    id,
                    cpu,
                    config,
                    node,
                    mesh,
                    connections,
                    image.clone(),
                    controller,
                    logs,
                ));
                // Recovery of this shard's partitions happens before it accepts a connection.
                shard
                    .logs
                    .sync_with(&image, id, shard.here(), &shard.config.settings)
                    .await;
                // Groups are rebuilt from their offsets partitions before any request, from
                // a client or another shard, can reach them.
                shard.groups.load(&shard).await;
                // Led partitions track their followers; followed ones start copying.
                crate::replication::leader::lead_partitions(&shard);
                crate::replication::follow_leaders(&shard);
                glommio::spawn_local(crate::replication::isr::check_loop(shard.clone())).detach();
                glommio::spawn_local(crate::replication::balance::balance_loop(shard.clone()))
                    .detach();
                // Shard 0 registers the broker once it can serve, and follows the cluster.
                let membership = match join_cluster(&shard).await {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = ready.send(Err(i));
                        // The session opened for it ends now rather than at its timeout.
                        crate::cluster::watcher::leave(&shard).await;
                        return Err(format!("cannot join the cluster: {e}"));
                    }
                };
                info!(shard = i, cpu, "shard started");
                let _ = ready.send(Ok(i));
                let failure = Rc::new(std::cell::RefCell::new(None));
                if let Some(m) = membership {
                    glommio::spawn_local(follow_cluster(shard.clone(), m, failure.clone()))
                        .detach();
                }
                run_shard(shard.clone(), listener, mailbox, drained_shards).await;
                if shard.id == ShardId::CONTROLLER {
                    crate::cluster::watcher::leave(&shard).await;
                }
                match failure.take() {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            })
            .map_err(|e| StartError::Executor {
                shard: i,
                cpu,
                reason: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(ready_tx);
    // A shard that fails to start drops its sender or says so; the join below reports its
    // error, once the others were told to stop. Ready only when every shard started.
    let mut started = 0;
    for _ in 0..shard_count {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                stop_every_shard(&mesh);
                break;
            }
            Err(_) => break,
        }
        started += 1;
    }
    if started == shard_count {
        health.set_ready();
    }
    info!(
        listen = %bound,
        advertised = %format!("{}:{}", node.host, node.port),
        node_id = node.node_id,
        shards = shard_count,
        data_dir = %config.data_dir.display(),
        "corebus is ready"
    );

    let signal_mesh = mesh.clone();
    let signal_health = health.clone();
    let signal_thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signals = signals.forever();
            if let Some(sig) = signals.next() {
                info!(
                    signal = sig,
                    "stopping: leaderships handed over first (controlled shutdown), then no \
                     new connections, finishing in-flight requests"
                );
                signal_health.set_stopping();
                stop_after_hand_over(&signal_mesh);
                if let Some(sig) = signals.next() {
                    info!(signal = sig, "stopping at once");
                    stop_every_shard(&signal_mesh);
                }
            }
        });
    if let Err(e) = signal_thread {
        return Err(StartError::Signals(e));
    }
    drop(mesh);

    let mut failed = None;
    for (i, h) in handles.into_iter().enumerate() {
        let outcome = match h.join() {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => e.to_string(),
        };
        error!(shard = i, error = %outcome, "shard failed");
        failed.get_or_insert(StartError::ShardFailed(i, outcome));
    }
    match failed {
        Some(e) => Err(e),
        None => {
            info!("corebus stopped cleanly");
            Ok(())
        }
    }
}

/// Has shard 0 hand this broker's leaderships over (`replication::shutdown`), then tell every
/// shard to stop (from a thread that is not a shard's).
fn stop_after_hand_over(mesh: &Mesh) {
    let job: Job = Box::new(|shard: Rc<Shard>| {
        Box::pin(async move {
            crate::replication::shutdown::hand_over_leaderships(&shard).await;
            for s in 0..shard.shard_count() {
                let _ = shard
                    .on_shard(ShardId(s as u16), |target: Rc<Shard>| async move {
                        target.shutdown.fire()
                    })
                    .await;
            }
        })
    });
    if mesh.post_blocking(ShardId(0), job).is_err() {
        stop_every_shard(mesh);
    }
}

/// Tells every shard to stop (from a thread that is not a shard's).
fn stop_every_shard(mesh: &Mesh) {
    for s in 0..mesh.shard_count() {
        let job: Job = Box::new(|shard: Rc<Shard>| Box::pin(async move { shard.shutdown.fire() }));
        // A shard that is gone needs no telling.
        let _ = mesh.post_blocking(ShardId(s as u16), job);
    }
}

/// On shard 0 of a broker with a consensus group: registers it and learns the controller
/// (`cluster::watcher::join`); `None` elsewhere.
async fn join_cluster(
    shard: &Rc<Shard>,
) -> Result<Option<crate::cluster::watcher::Membership>, crate::cluster::ClusterError> {
    if shard.id != ShardId::CONTROLLER || !crate::metadata::open::uses_consensus(&shard.config) {
        return Ok(None);
    }
    let me = crate::cluster::BrokerEndpoint::of(&shard.node, crate::cluster::rack(&shard.config));
    let started = std::time::Instant::now();
    // Every step of joining is bounded, but a start-up that hangs here was seen once and not
    // reproduced: say so while it lasts, with the steps the log shows done so far.
    let slow = async {
        loop {
            glommio::timer::sleep(Duration::from_millis(JOIN_SLOW_WARN_MS)).await;
            warn!(
                waited_ms = started.elapsed().as_millis() as u64,
                "still joining the cluster (registration, topic watches, first cluster view); \
                 the shard does not serve until it has"
            );
        }
    };
    futures_lite::future::or(crate::cluster::watcher::join(shard, me), slow)
        .await
        .map(Some)
}

/// How often a slow join of the cluster is reported.
const JOIN_SLOW_WARN_MS: u64 = 10_000;

/// Follows the cluster on shard 0 (renewing an expired session); when the session is lost
/// and cannot be renewed within `corebus.consensus.session.renew.timeout.ms`, stops the node
/// with the reason left in `failure` (a supervisor restarts it).
async fn follow_cluster(
    shard: Rc<Shard>,
    membership: crate::cluster::watcher::Membership,
    failure: Rc<std::cell::RefCell<Option<String>>>,
) {
    if let Err(e) = crate::cluster::watcher::follow(shard.clone(), membership).await {
        error!(error = %e, "the broker lost its place in the cluster; stopping");
        failure.replace(Some(e.to_string()));
        for s in 0..shard.shard_count() {
            let _ = shard
                .on_shard(ShardId(s as u16), |target: Rc<Shard>| async move {
                    target.shutdown.fire()
                })
                .await;
        }
    }
}

async fn run_shard(
    shard: Rc<Shard>,
    listener: glommio::net::TcpListener,
    mailbox: flume::Receiver<Job>,
    drained_shards: Arc<AtomicUsize>,
) {
    glommio::spawn_local(serve_mailbox(shard.clone(), mailbox)).detach();
    glommio::spawn_local(retention_ticker(shard.clone())).detach();
    glommio::spawn_local(high_watermark_checkpoints(shard.clone())).detach();
    start_cleaner(&shard);
    glommio::spawn_local(crate::groups::coordinator::run_timers(shard.clone())).detach();
    accept_loop(shard.clone(), listener).await;
    // Accepting has stopped; connections finish the requests they read and close.
    let drained =
        glommio::timer::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), async {
            shard.tasks.close().await.map_err(|e| {
                glommio::GlommioError::<()>::IoError(std::io::Error::other(e.to_string()))
            })
        })
        .await;
    if drained.is_err() {
        warn!(
            shard = shard.id.0,
            "in-flight requests did not finish within the grace period"
        );
    }
    // A connection on another shard may still be appending here through the mesh: close
    // the logs only once every shard has drained (the mailbox keeps being served meanwhile).
    drained_shards.fetch_add(1, Ordering::AcqRel);
    let everyone = shard.shard_count();
    let all_drained = glommio::timer::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), async {
        while drained_shards.load(Ordering::Acquire) < everyone {
            glommio::timer::sleep(Duration::from_millis(SHUTDOWN_POLL_MS)).await;
        }
        Ok(())
    })
    .await;
    if all_drained.is_err() {
        warn!(
            shard = shard.id.0,
            "other shards did not drain within the grace period"
        );
    }
    // Every log drained, synced and marked clean, so the next start skips recovery scans
    // and nothing acknowledged with acks=1 depends on the page cache surviving.
    shard.logs.close().await;
    info!(shard = shard.id.0, "shard stopped");
}

/// Starts this shard's log cleaner (unless `log.cleaner.enable=false`, in which case compacted
/// topics keep every record, as in Kafka).
fn start_cleaner(shard: &Shard) {
    let s = &shard.config.settings;
    if !s.bool("log.cleaner.enable") {
        info!(
            shard = shard.id.0,
            "log.cleaner.enable=false: compacted topics are not cleaned"
        );
        return;
    }
    let defaults = crate::storage::CleanerOptions::default();
    let shards = shard.mesh.shard_count().max(1) as i64;
    let io_max = match s.get("log.cleaner.io.max.bytes.per.second") {
        Some((crate::config::value::Value::Double(v), _)) if v < f64::MAX => v,
        _ => f64::INFINITY,
    };
    let options = crate::storage::CleanerOptions {
        backoff_ms: s
            .i64("log.cleaner.backoff.ms")
            .map_or(defaults.backoff_ms, |v| v.max(1) as u64),
        io_max_bytes_per_second: io_max,
        dedupe_buffer_bytes: s
            .i64("log.cleaner.dedupe.buffer.size")
            .map_or(defaults.dedupe_buffer_bytes, |v| {
                (v / shards).max(1) as usize
            }),
        io_buffer_bytes: s
            .i64("log.cleaner.io.buffer.size")
            .map_or(defaults.io_buffer_bytes, |v| v.max(4096) as usize),
        ..defaults
    };
    shard.logs.storage().start_cleaner(options);
}

/// Runs `tick` every `setting` ms (`default_ms` when unset) until the shard stops.
async fn every<F, Fut>(shard: Rc<Shard>, setting: &str, default_ms: i64, tick: F)
where
    F: Fn(Rc<Shard>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let interval_ms = shard
        .config
        .settings
        .i64(setting)
        .unwrap_or(default_ms)
        .max(1) as u64;
    while !shard.shutdown.is_fired() {
        glommio::timer::sleep(Duration::from_millis(interval_ms)).await;
        if !shard.shutdown.is_fired() {
            tick(shard.clone()).await;
        }
    }
}

/// Runs retention on this shard's logs every `log.retention.check.interval.ms`.
async fn retention_ticker(shard: Rc<Shard>) {
    every(
        shard,
        "log.retention.check.interval.ms",
        300_000,
        |shard| async move {
            let deleted = shard
                .logs
                .storage()
                .enforce_retention(crate::storage::now_ms())
                .await;
            if deleted > 0 {
                info!(
                    shard = shard.id.0,
                    segments = deleted,
                    "retention deleted segments"
                );
            }
        },
    )
    .await
}

/// Writes the shard's high watermark checkpoint every
/// `replica.high.watermark.checkpoint.interval.ms` (the last one is written at close).
async fn high_watermark_checkpoints(shard: Rc<Shard>) {
    every(
        shard,
        "replica.high.watermark.checkpoint.interval.ms",
        5_000,
        |shard| async move { shard.logs.checkpoint_high_watermarks().await },
    )
    .await
}

/// The host to advertise when none was configured: the listen host, or for a wildcard listen
/// address this machine's host name.
fn advertised_host(bound: &std::net::SocketAddr) -> String {
    if !bound.ip().is_unspecified() {
        return bound.ip().to_string();
    }
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match (rc, std::str::from_utf8(&buf[..end])) {
        (0, Ok(name)) if !name.is_empty() => name.to_string(),
        _ => "localhost".to_string(),
    }
}
