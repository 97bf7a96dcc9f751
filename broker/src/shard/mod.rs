//! The thread-per-core runtime: one glommio `LocalExecutor` per shard, pinned to one CPU of
//! this process's affinity mask, each serving its own listener socket, its own connections and
//! the partitions it owns; the mesh between shards; the shutdown signal.
//!
//! Owns: `ShardId`, `Shard` (everything one shard holds), `NodeInfo`, `Shutdown`.
//! Never: shares mutable state between shards (a shard's state is `Rc`/`RefCell`, reachable
//! only from its own thread; other shards reach it by sending a job through the mesh); takes a
//! lock on the request path.

pub mod cpus;
pub mod fetch_sessions;
pub mod memory_pool;
pub mod mesh;
pub mod open_files;
pub mod partitions;
pub mod placement;
pub mod producer_state;
pub mod router;
pub mod runtime;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cluster::{BrokerEndpoint, ClusterView};
use crate::config::Config;
use crate::groups::{GroupCoordinator, GroupSettings};
use crate::metadata::MetadataImage;
use crate::metadata::controller::Controller;
use crate::metrics::shard::ShardMetrics;
use mesh::{Mesh, ShardGone};

/// A shard's index, 0-based; shard 0 also hosts the metadata controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The shard that hosts the metadata controller.
    pub const CONTROLLER: ShardId = ShardId(0);
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What clients are told about this node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node_id: i32,
    /// Advertised host and port.
    pub host: String,
    pub port: i32,
}

/// A one-way, level-triggered stop signal local to a shard: once fired, every current and
/// future `wait` completes at once.
#[derive(Clone)]
pub struct Shutdown {
    // Firing drops the only sender; receivers then see the channel disconnected.
    fire: Rc<RefCell<Option<flume::Sender<()>>>>,
    watch: flume::Receiver<()>,
}

impl Shutdown {
    fn new() -> Shutdown {
        let (tx, rx) = flume::bounded(1);
        Shutdown {
            fire: Rc::new(RefCell::new(Some(tx))),
            watch: rx,
        }
    }

    pub fn fire(&self) {
        self.fire.borrow_mut().take();
    }

    pub fn is_fired(&self) -> bool {
        self.fire.borrow().is_none()
    }

    /// Completes when the signal has fired.
    pub async fn wait(&self) {
        // Nothing is ever sent: this returns only on disconnect.
        let _ = self.watch.recv_async().await;
    }
}

/// Everything one shard holds. Lives on its shard's thread only.
pub struct Shard {
    pub id: ShardId,
    pub cpu: usize,
    pub config: Arc<Config>,
    pub node: Arc<NodeInfo>,
    pub mesh: Mesh,
    /// Open client connections on the whole node, in total and per address
    /// (`max.connections`, `max.connections.per.ip`); touched at accept and close only.
    pub connections: Arc<crate::server::admission::Admission>,
    /// Bytes of produce requests in flight on this shard (`corebus.shard.produce.memory.budget.bytes`);
    /// connections wait for units before reading further, which is the backpressure.
    pub produce_budget: Rc<glommio::sync::Semaphore>,
    /// Request frames being read or run on this shard (`corebus.shard.request.memory.pool.bytes`),
    /// counted from their size prefix; connections wait for it before reading a frame's body.
    pub request_memory: memory_pool::MemoryPool,
    /// Fetch reads in flight on this shard (`corebus.shard.fetch.memory.budget.bytes`): a
    /// partition read waits for it before allocating its buffer, and holds it until its
    /// chunks are written (or, read for another shard, copied).
    pub fetch_memory: memory_pool::MemoryPool,
    /// Fetches of this shard's connections waiting for data now (bounded by
    /// `corebus.shard.max.parked.fetches`).
    pub parked_fetches: Cell<usize>,
    /// Waits on this shard's partitions for parked fetches (of any shard) running now.
    pub fetch_waits: Cell<usize>,
    pub shutdown: Shutdown,
    /// Tasks that must finish before the shard stops (connections and the requests they run).
    pub tasks: glommio::sync::Gate,
    /// The partitions this shard owns and its storage engine.
    pub logs: partitions::ShardLogs,
    /// KIP-227 sessions of the consumers connected to this shard.
    pub fetch_sessions: RefCell<fetch_sessions::FetchSessions>,
    /// The consumer groups whose `__consumer_offsets` partition this shard owns.
    pub groups: GroupCoordinator,
    /// This shard's counters (plain state; the metrics endpoint asks for a snapshot by message).
    pub metrics: RefCell<ShardMetrics>,
    /// The leader brokers this shard runs a replica fetcher for (`crate::replication`).
    pub following: RefCell<std::collections::BTreeSet<i32>>,
    /// The catch-up rate of replicas a reassignment adds, shared by this shard's fetchers
    /// (`follower.replication.throttled.rate` split over the shards); `None`: unthrottled.
    pub learner_throttle: RefCell<Option<crate::replication::follower::Throttle>>,
    /// The partitions this shard leads with followers, and what each follower has.
    pub leaders: crate::replication::leader::Leaders,
    metadata: RefCell<Arc<MetadataImage>>,
    /// The live brokers and the controller, as shard 0 last installed them.
    cluster: RefCell<Arc<ClusterView>>,
    controller: Option<Rc<Controller>>,
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ShardId,
        cpu: usize,
        config: Arc<Config>,
        node: Arc<NodeInfo>,
        mesh: Mesh,
        connections: Arc<crate::server::admission::Admission>,
        metadata: Arc<MetadataImage>,
        controller: Option<Rc<Controller>>,
        logs: partitions::ShardLogs,
    ) -> Shard {
        let budget = config.limits.shard_produce_memory_budget_bytes as u64;
        let request_pool_bytes = config.limits.shard_request_memory_pool_bytes;
        let fetch_budget_bytes = config.limits.shard_fetch_memory_budget_bytes;
        let shard_count = mesh.shard_count();
        let learner_throttle = crate::replication::follower::Throttle::for_shard(
            &config.settings,
            shard_count,
            crate::storage::now_ms(),
        );
        let groups = GroupCoordinator::new(GroupSettings::from_settings(&config.settings));
        let me = BrokerEndpoint::of(&node, crate::cluster::rack(&config));
        let cluster = if crate::metadata::open::uses_consensus(&config) {
            ClusterView::starting(me)
        } else {
            ClusterView::alone(me)
        };
        Shard {
            id,
            cpu,
            config,
            node,
            mesh,
            connections,
            produce_budget: Rc::new(glommio::sync::Semaphore::new(budget)),
            request_memory: memory_pool::MemoryPool::new(request_pool_bytes),
            fetch_memory: memory_pool::MemoryPool::new(fetch_budget_bytes),
            parked_fetches: Cell::new(0),
            fetch_waits: Cell::new(0),
            shutdown: Shutdown::new(),
            tasks: glommio::sync::Gate::new(),
            logs,
            fetch_sessions: RefCell::new(fetch_sessions::FetchSessions::new(id, shard_count)),
            groups,
            metrics: RefCell::new(ShardMetrics::default()),
            following: RefCell::new(std::collections::BTreeSet::new()),
            learner_throttle: RefCell::new(learner_throttle),
            leaders: Default::default(),
            metadata: RefCell::new(metadata),
            cluster: RefCell::new(Arc::new(cluster)),
            controller,
        }
    }

    /// The metadata image this shard runs with (the latest one the controller installed).
    pub fn metadata(&self) -> Arc<MetadataImage> {
        self.metadata.borrow().clone()
    }

    /// Installs a newer image (an older one, a late message, is ignored) and opens, updates
    /// or sets aside this shard's partitions to match it before returning, so a produce right
    /// after CreateTopics finds its partition open.
    pub async fn install_metadata(self: &Rc<Self>, image: Arc<MetadataImage>) {
        {
            let mut current = self.metadata.borrow_mut();
            if image.epoch <= current.epoch {
                return;
            }
            *current = image.clone();
        }
        self.logs
            .sync_with(&image, self.id, self.here(), &self.config.settings)
            .await;
        crate::replication::leader::lead_partitions(self);
        crate::replication::follow_leaders(self);
        // Group coordinators follow the leadership of `__consumer_offsets` partitions: off
        // the install (loading a partition's groups reads its log).
        let shard = self.clone();
        glommio::spawn_local(async move { shard.groups.follow_leadership(&shard).await }).detach();
    }

    /// The live brokers and the controller.
    pub fn cluster(&self) -> Arc<ClusterView> {
        self.cluster.borrow().clone()
    }

    /// Installs a newer view (an older one, a late message, is ignored).
    pub fn install_cluster(&self, view: Arc<ClusterView>) {
        let mut current = self.cluster.borrow_mut();
        if view.generation > current.generation {
            *current = view;
        }
    }

    /// The controller, when this is its shard.
    pub fn controller(&self) -> Option<&Rc<Controller>> {
        self.controller.as_ref()
    }

    pub fn shard_count(&self) -> usize {
        self.mesh.shard_count()
    }

    /// This node as routing sees it (`router::owner`).
    pub fn here(&self) -> router::Here {
        router::Here {
            node_id: self.node.node_id,
            shard_count: self.shard_count(),
        }
    }

    /// Runs `f` on `target`: directly when it is this shard, else through the mesh.
    pub async fn on_shard<T, F, Fut>(self: &Rc<Self>, target: ShardId, f: F) -> Result<T, ShardGone>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
    {
        if target == self.id {
            Ok(f(self.clone()).await)
        } else {
            self.mesh.call(target, f).await
        }
    }

    /// Adds to this shard's counters (one short borrow; never held across an await).
    pub fn count(&self, f: impl FnOnce(&mut ShardMetrics)) {
        f(&mut self.metrics.borrow_mut());
    }
}
