//! The consensus metadata store: the image kept as nodes of the consensus tree, one node per
//! topic, one per topic's settings, a counter node for producer ids. A change is one `multi`
//! (all its nodes or none), committed in the group's log before `apply` returns.
//!
//! Tree layout (in the spirit of Kafka's ZooKeeper layout; values are versioned JSON, see
//! below):
//!
//! | path | holds |
//! |---|---|
//! | `/corebus/cluster/id` | `{"version":1,"cluster_id":"<32 hex>"}` |
//! | `/corebus/topics/<name>` | `{"version":2,"id":"<uuid>","partitions":[{"replicas":[<broker id>, ...],"leader":<broker id or -1>,"leader_epoch":E,"isr":[...],"partition_epoch":P}, ...]}` by partition number, as Kafka's `PartitionRecord`; no core index: which shard of the leader serves a partition is computed on that node (`crate::shard::router`). Version 1 held a shard index per partition instead: it is read as unassigned partitions, which the first broker to start adopts and rewrites as version 2 (`crate::metadata::open`) |
//! | `/corebus/config/topics/<name>` | `{"version":1,"configs":{"<key>":"<value>", ...}}` (created with the topic, `{}` when none) |
//! | `/corebus/producer-ids` | `{"version":1,"next":<first id not handed out>}` |
//! | `/corebus/brokers/ids/<node id>` | ephemeral, one per live broker, under its session: `{"version":1,"node_id":N,"listeners":[{"name":"PLAINTEXT","host":"..","port":P}],"rack":null\|".."}` (`crate::cluster::registration`) |
//! | `/corebus/controller` | ephemeral, the controller's, under its session: `{"version":1,"node_id":N,"epoch":E}` (`crate::cluster::election`) |
//! | `/corebus/controller_epoch` | `{"version":1,"epoch":E}`: the latest controller's epoch, bumped by compare-and-set in the same `multi` that creates `/corebus/controller`; every topic change of the controller carries a check of its data version (the fence) |
//! | `/corebus/import-in-progress` | exists only while a local metadata file is being imported |
//!
//! The ephemeral nodes outlive a broker killed with SIGKILL by at most the consensus
//! session bound (`corebus_consensus::session`: session timeout + a ping interval + a tick +
//! a commit, plus an election if the group's leader changes meanwhile); a clean shutdown
//! closes the session and they go at once.
//!
//! The tree's format version is 2: topic nodes are written as version 2, every other node
//! keeps version 1 (its form did not change, so an older broker still reads it); version 1
//! topic nodes are read as described above.
//!
//! Values are JSON because the image already is (`local_file` writes it with serde): one
//! encoding for metadata, readable with any consensus client. Every value carries `version`; a
//! newer version than this build knows, unparsable bytes or impossible values (a nil topic id,
//! a topic without partitions) are a [`MetadataError::BadNode`] naming the path, never a panic.
//!
//! Producer ids: the counter node is advanced by compare-and-set on its version. A stale
//! version (someone else advanced it) re-reads the counter and retries, at most
//! [`PRODUCER_ID_CAS_ATTEMPTS`] times; a block is committed before any id of it is used, so no
//! id is handed out twice, across restarts included.
//!
//! Failures: every call to the group is bounded by [`METADATA_STORE_TIMEOUT_MS`]. A write whose
//! outcome is unknown (timeout, lost connection) marks the store stale: the next change first
//! reads the whole tree again (`refresh`), so a change that did happen is seen rather than
//! repeated. Until then `current()` keeps serving the last image.
//!
//! The image's `epoch` is this process's count of installed images (the shards install only a
//! newer one), not a property of the tree.
//!
//! Writers: only the controller changes topics. The store's [`WriterRole`] says what this
//! broker may write: `Unfenced` at start-up (before the cluster machinery runs: the import
//! and the re-placement of orphans, as a single node always did), `Controller` with the
//! version of `/corebus/controller_epoch` it won (added to each topic change as a check, so
//! a controller that was replaced fails with [`MetadataError::NotController`] instead of
//! overwriting its successor's change), or `Follower` (topic changes are refused with
//! `NotController`; producer-id blocks are still taken, by compare-and-set on the counter,
//! which fences itself).
//!
//! Never: writes outside `/corebus`; reuses a producer id; creates the ephemeral nodes
//! (`crate::cluster` does, under the broker's session); panics on what it reads.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use corebus_consensus::client::{Client, ClientConfig, CreateMode, Error as ClientError};
use corebus_consensus::limits::MAX_MULTI_OPS;
use corebus_consensus::txn::{OpResult, TreeError, WriteOp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::info;
use uuid::Uuid;

use super::{
    MetadataCommand, MetadataError, MetadataImage, MetadataStore, PartitionMeta, TopicId, TopicMeta,
};
/// The version topic nodes are written in, the tree format's (the newest read; 1 is read
/// too). 2: each partition's replicas, leader, epochs and ISR (1: a shard index).
pub const TOPIC_NODE_VERSION: u32 = 2;
/// The version of the nodes whose form has not changed since format 1 (cluster id, settings,
/// producer ids, controller epoch, registrations, controller): still written as 1, so a
/// broker of the previous release reads them during a rolling upgrade.
pub const NODE_VERSION_1: u32 = 1;
/// Time one call to the consensus group may take (retries on other members included).
pub const METADATA_STORE_TIMEOUT_MS: u64 = 5_000;
/// Compare-and-set attempts on the producer-id counter before a change gives up.
pub const PRODUCER_ID_CAS_ATTEMPTS: usize = 16;
/// Bytes of node values one import `multi` carries (well under the group's record limit).
const IMPORT_MULTI_BYTES: usize = 4 * 1024 * 1024;

pub const ROOT: &str = "/corebus";
pub const CLUSTER: &str = "/corebus/cluster";
pub const CLUSTER_ID: &str = "/corebus/cluster/id";
pub const TOPICS: &str = "/corebus/topics";
pub const CONFIG: &str = "/corebus/config";
pub const TOPIC_CONFIGS: &str = "/corebus/config/topics";
pub const PRODUCER_IDS: &str = "/corebus/producer-ids";
pub const BROKERS: &str = "/corebus/brokers";
/// Broker registrations (ephemeral children, one per broker session; `crate::cluster`).
pub const BROKER_IDS: &str = "/corebus/brokers/ids";
/// The controller's ephemeral node (`crate::cluster::election`); never created by this store.
pub const CONTROLLER: &str = "/corebus/controller";
/// The latest controller epoch; created here at 0, bumped by each new controller.
pub const CONTROLLER_EPOCH: &str = "/corebus/controller_epoch";
pub const IMPORT_MARKER: &str = "/corebus/import-in-progress";

/// The persistent nodes every corebus tree has, parents first.
const SKELETON: [&str; 7] = [
    ROOT,
    CLUSTER,
    TOPICS,
    CONFIG,
    TOPIC_CONFIGS,
    BROKERS,
    BROKER_IDS,
];

pub fn topic_path(name: &str) -> String {
    format!("{TOPICS}/{name}")
}

pub fn topic_config_path(name: &str) -> String {
    format!("{TOPIC_CONFIGS}/{name}")
}

#[derive(Debug, Deserialize)]
struct Envelope {
    version: u32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct TopicNode {
    version: u32,
    id: Uuid,
    /// Each partition's replicas, leader, epochs and ISR, by partition number.
    partitions: Vec<PartitionMeta>,
}

/// A topic node of format 1: a shard index per partition, which no broker reads any more.
#[derive(Debug, Deserialize)]
struct TopicNodeV1 {
    id: Uuid,
    partitions: Vec<u16>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ConfigNode {
    version: u32,
    configs: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ProducerIdsNode {
    version: u32,
    next: i64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ClusterIdNode {
    version: u32,
    cluster_id: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ControllerEpochNode {
    version: u32,
    epoch: u64,
}

/// The value of [`CONTROLLER_EPOCH`] holding `epoch`.
pub fn controller_epoch_value(epoch: u64) -> Vec<u8> {
    encode(&ControllerEpochNode {
        version: NODE_VERSION_1,
        epoch,
    })
}

/// The epoch held by a [`CONTROLLER_EPOCH`] value.
pub fn decode_controller_epoch(bytes: &[u8]) -> Result<u64, MetadataError> {
    let node: ControllerEpochNode = decode(CONTROLLER_EPOCH, bytes)?;
    Ok(node.epoch)
}

/// What this broker may write (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterRole {
    /// Start-up, before the cluster machinery runs: writes as a single node always did.
    Unfenced,
    /// The controller, holding `/corebus/controller_epoch` at data version `fence_version`.
    Controller { fence_version: u32 },
    /// Another broker is (or none is yet) the controller: topic changes are refused.
    Follower,
}

pub(crate) fn bad(path: &str, reason: impl Into<String>) -> MetadataError {
    MetadataError::BadNode {
        path: path.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // These types are maps of strings and numbers: serialising them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Decodes a node value of a form unchanged since format 1, refusing any other version.
pub(crate) fn decode<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T, MetadataError> {
    decode_up_to(path, bytes, NODE_VERSION_1)
}

/// Decodes a node value of version 1..=`newest`, refusing any other.
fn decode_up_to<T: DeserializeOwned>(
    path: &str,
    bytes: &[u8],
    newest: u32,
) -> Result<T, MetadataError> {
    let env: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| bad(path, format!("not a corebus value: {e}")))?;
    if env.version == 0 || env.version > newest {
        return Err(bad(
            path,
            format!(
                "format version {} is not one this corebus reads (1..={newest})",
                env.version
            ),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| bad(path, e.to_string()))
}

fn topic_value(t: &TopicMeta) -> Vec<u8> {
    encode(&TopicNode {
        version: TOPIC_NODE_VERSION,
        id: t.id.0,
        partitions: t.partitions.clone(),
    })
}

fn config_value(configs: &BTreeMap<String, String>) -> Vec<u8> {
    encode(&ConfigNode {
        version: NODE_VERSION_1,
        configs: configs.clone(),
    })
}

fn producer_ids_value(next: i64) -> Vec<u8> {
    encode(&ProducerIdsNode {
        version: NODE_VERSION_1,
        next,
    })
}

fn cluster_id_value(id: &str) -> Vec<u8> {
    encode(&ClusterIdNode {
        version: NODE_VERSION_1,
        cluster_id: id.to_string(),
    })
}

fn decode_topic(
    name: &str,
    path: &str,
    bytes: &[u8],
    configs: BTreeMap<String, String>,
) -> Result<TopicMeta, MetadataError> {
    let env: Envelope = decode_up_to(path, bytes, TOPIC_NODE_VERSION)?;
    let (id, partitions) = if env.version == 1 {
        let node: TopicNodeV1 = decode_up_to(path, bytes, TOPIC_NODE_VERSION)?;
        let unassigned = vec![PartitionMeta::unassigned(); node.partitions.len()];
        (node.id, unassigned)
    } else {
        let node: TopicNode = decode_up_to(path, bytes, TOPIC_NODE_VERSION)?;
        for (i, p) in node.partitions.iter().enumerate() {
            if !p.is_assigned() {
                return Err(bad(path, format!("partition {i} has no replicas")));
            }
            p.check()
                .map_err(|e| bad(path, format!("partition {i}: {e}")))?;
        }
        (node.id, node.partitions)
    };
    if id.is_nil() {
        return Err(bad(path, "nil topic id"));
    }
    if partitions.is_empty() {
        return Err(bad(path, "a topic without partitions"));
    }
    Ok(TopicMeta {
        name: name.to_string(),
        id: TopicId(id),
        partitions,
        configs,
    })
}

fn decode_producer_ids(bytes: &[u8]) -> Result<i64, MetadataError> {
    let node: ProducerIdsNode = decode(PRODUCER_IDS, bytes)?;
    if node.next < 0 {
        return Err(bad(
            PRODUCER_IDS,
            format!("negative next producer id {}", node.next),
        ));
    }
    Ok(node.next)
}

/// What a failed call to the group means for the caller.
pub(crate) fn group_error(e: ClientError) -> MetadataError {
    match e {
        ClientError::Tree { index, error } => {
            MetadataError::Conflict(format!("the tree refused op {index}: {error}"))
        }
        other => MetadataError::Unavailable(other.to_string()),
    }
}

/// The image read from the tree with the data version of every node it came from, so the
/// next change can compare-and-set against what was read.
#[derive(Debug, Clone)]
pub struct LoadedTree {
    pub image: MetadataImage,
    versions: HashMap<String, u32>,
}

struct State {
    image: Arc<MetadataImage>,
    versions: HashMap<String, u32>,
    /// A write's outcome is unknown: read the tree again before the next change.
    stale: bool,
    role: WriterRole,
}

pub struct ConsensusStore {
    client: Client,
    state: RefCell<State>,
    writer: glommio::sync::Semaphore,
}

/// A client whose every call is bounded by [`METADATA_STORE_TIMEOUT_MS`]; with
/// `session_timeout_ms` it holds a consensus session (the broker's, which owns its
/// registration and, when it wins, the controller node).
pub fn metadata_client(
    servers: Vec<SocketAddr>,
    session_timeout_ms: Option<u64>,
) -> Result<Client, MetadataError> {
    let mut cfg = ClientConfig::new(servers);
    cfg.request_timeout_ms = METADATA_STORE_TIMEOUT_MS;
    cfg.session_timeout_ms = session_timeout_ms;
    cfg.connect_timeout_ms = cfg.connect_timeout_ms.min(METADATA_STORE_TIMEOUT_MS);
    Client::new(cfg).map_err(group_error)
}

impl ConsensusStore {
    /// A store over `loaded` (read by [`ConsensusStore::load`] at start-up); must be built on
    /// the executor that will use it.
    pub fn new(client: Client, loaded: LoadedTree) -> ConsensusStore {
        ConsensusStore {
            client,
            state: RefCell::new(State {
                image: Arc::new(loaded.image),
                versions: loaded.versions,
                stale: false,
                role: WriterRole::Unfenced,
            }),
            writer: glommio::sync::Semaphore::new(1),
        }
    }

    /// Creates the skeleton, cluster id and producer-id counter where missing, then reads the
    /// whole tree. Creating is idempotent, so two brokers starting at once agree on one id.
    pub async fn load(client: &Client) -> Result<LoadedTree, MetadataError> {
        for path in SKELETON {
            create_if_missing(client, path, b"").await?;
        }
        let fresh = MetadataImage::new_cluster();
        create_if_missing(client, CLUSTER_ID, &cluster_id_value(&fresh.cluster_id)).await?;
        create_if_missing(
            client,
            PRODUCER_IDS,
            &producer_ids_value(fresh.next_producer_id),
        )
        .await?;
        create_if_missing(client, CONTROLLER_EPOCH, &controller_epoch_value(0)).await?;
        read_tree(client).await
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn role(&self) -> WriterRole {
        self.state.borrow().role
    }

    /// Says what this broker may write from now on (`crate::cluster` calls it as the
    /// controller node comes and goes).
    pub fn set_role(&self, role: WriterRole) {
        self.state.borrow_mut().role = role;
    }

    /// Reads the whole tree again and installs it (a broker that is not the controller, told
    /// by a watch that topics changed); returns the new image.
    pub async fn reload(&self) -> Result<Arc<MetadataImage>, MetadataError> {
        let _turn = self.turn().await?;
        let loaded = read_tree(&self.client).await?;
        Ok(self.install_loaded(loaded))
    }

    /// The tree as this store last read or wrote it.
    pub fn loaded(&self) -> LoadedTree {
        let st = self.state.borrow();
        LoadedTree {
            image: (*st.image).clone(),
            versions: st.versions.clone(),
        }
    }

    /// Imports an image from the old local metadata file into a tree that has no topics (or
    /// whose earlier import was cut short): topics and their settings, the cluster id, and a
    /// producer-id counter past both the file's and the tree's. Large images go in several
    /// `multi`s; a marker node says an import is under way so a crash in between resumes it.
    pub async fn import(&self, file: &MetadataImage) -> Result<Arc<MetadataImage>, MetadataError> {
        let _turn = self.turn().await?;
        let current = self.current();
        let resuming = self
            .client
            .exists(IMPORT_MARKER)
            .await
            .map_err(group_error)?
            .is_some();
        let mut chunks: Vec<Vec<WriteOp>> = vec![Vec::new()];
        let mut bytes = 0;
        if !resuming {
            chunks[0].push(create_op(IMPORT_MARKER, Vec::new()));
        }
        for t in file.topics.values() {
            if current.topics.contains_key(&t.name) {
                continue;
            }
            let (tv, cv) = (topic_value(t), config_value(&t.configs));
            let len = tv.len() + cv.len();
            let last = chunks.last().map_or(0, Vec::len);
            if last + 2 > MAX_MULTI_OPS || (bytes + len > IMPORT_MULTI_BYTES && last > 0) {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += len;
            if let Some(c) = chunks.last_mut() {
                c.push(create_op(&topic_path(&t.name), tv));
                c.push(create_op(&topic_config_path(&t.name), cv));
            }
        }
        let next_pid = file.next_producer_id.max(current.next_producer_id);
        let version = self.version(PRODUCER_IDS)?;
        chunks.push(vec![
            WriteOp::SetData {
                path: PRODUCER_IDS.into(),
                data: producer_ids_value(next_pid),
                expected_version: Some(version),
            },
            WriteOp::SetData {
                path: CLUSTER_ID.into(),
                data: cluster_id_value(&file.cluster_id),
                expected_version: None,
            },
            WriteOp::Delete {
                path: IMPORT_MARKER.into(),
                expected_version: None,
            },
        ]);
        for ops in chunks.into_iter().filter(|c| !c.is_empty()) {
            if let Err(e) = self.client.multi(ops).await {
                self.state.borrow_mut().stale = true;
                return Err(group_error(e));
            }
        }
        let loaded = read_tree(&self.client).await?;
        info!(
            topics = loaded.image.topics.len(),
            next_producer_id = loaded.image.next_producer_id,
            "local metadata file imported into the consensus tree"
        );
        Ok(self.install_loaded(loaded))
    }

    async fn turn(&self) -> Result<glommio::sync::Permit<'_>, MetadataError> {
        self.writer
            .acquire_permit(1)
            .await
            .map_err(|e| MetadataError::Invalid(format!("metadata writer closed: {e}")))
    }

    fn version(&self, path: &str) -> Result<u32, MetadataError> {
        self.state
            .borrow()
            .versions
            .get(path)
            .copied()
            .ok_or_else(|| bad(path, "node was not read from the tree"))
    }

    fn install_loaded(&self, loaded: LoadedTree) -> Arc<MetadataImage> {
        let mut st = self.state.borrow_mut();
        let mut image = loaded.image;
        image.epoch = st.image.epoch + 1;
        let image = Arc::new(image);
        st.image = image.clone();
        st.versions = loaded.versions;
        st.stale = false;
        image
    }

    /// Re-reads the counter after a compare-and-set lost to another writer.
    async fn reread_producer_ids(&self) -> Result<i64, MetadataError> {
        let (data, stat) = self.client.get(PRODUCER_IDS).await.map_err(group_error)?;
        let next = decode_producer_ids(&data)?;
        self.state
            .borrow_mut()
            .versions
            .insert(PRODUCER_IDS.into(), stat.version);
        Ok(next)
    }
}

impl MetadataStore for ConsensusStore {
    fn current(&self) -> Arc<MetadataImage> {
        self.state.borrow().image.clone()
    }

    async fn refresh(&self) -> Result<Option<Arc<MetadataImage>>, MetadataError> {
        if !self.state.borrow().stale {
            return Ok(None);
        }
        let _turn = self.turn().await?;
        if !self.state.borrow().stale {
            return Ok(None);
        }
        let loaded = read_tree(&self.client).await?;
        info!("metadata re-read from the consensus tree after a write of unknown outcome");
        Ok(Some(self.install_loaded(loaded)))
    }

    async fn apply(&self, cmds: Vec<MetadataCommand>) -> Result<Arc<MetadataImage>, MetadataError> {
        let _turn = self.turn().await?;
        if self.state.borrow().stale {
            return Err(MetadataError::Unavailable(
                "the metadata must be read again from the consensus group first".into(),
            ));
        }
        let mut base = (*self.current()).clone();
        for _ in 0..PRODUCER_ID_CAS_ATTEMPTS {
            let mut next = base.clone();
            for c in cmds.iter().cloned() {
                next.apply(c)?;
            }
            let mut ops = self.diff(&base, &next)?;
            if ops.is_empty() {
                return Ok(self.current());
            }
            self.fence(&mut ops)?;
            let paths: Vec<String> = ops.iter().map(|o| o.path().to_string()).collect();
            match self.client.multi(ops).await {
                Ok(results) => {
                    let mut st = self.state.borrow_mut();
                    for (path, r) in paths.into_iter().zip(results) {
                        match r {
                            OpResult::Created { stat, .. } | OpResult::Set { stat } => {
                                st.versions.insert(path, stat.version);
                            }
                            OpResult::Deleted => {
                                st.versions.remove(&path);
                            }
                            OpResult::Checked => {}
                        }
                    }
                    next.epoch = st.image.epoch + 1;
                    let next = Arc::new(next);
                    st.image = next.clone();
                    return Ok(next);
                }
                Err(ClientError::Tree {
                    index,
                    error: TreeError::BadVersion,
                }) if paths.get(index).is_some_and(|p| p == PRODUCER_IDS) => {
                    // Another writer advanced the counter: take ours from where it is now.
                    base.next_producer_id = self.reread_producer_ids().await?;
                }
                Err(ClientError::Tree {
                    index,
                    error: TreeError::BadVersion | TreeError::NoNode,
                }) if paths.get(index).is_some_and(|p| p == CONTROLLER_EPOCH) => {
                    // A newer controller was elected: this broker must not write any more.
                    let mut st = self.state.borrow_mut();
                    st.stale = true;
                    st.role = WriterRole::Follower;
                    return Err(MetadataError::NotController);
                }
                Err(e) => {
                    // Refused (the tree is not what was read) or of unknown outcome: either
                    // way the tree is read again before the next change.
                    self.state.borrow_mut().stale = true;
                    return Err(group_error(e));
                }
            }
        }
        Err(MetadataError::Conflict(format!(
            "the producer-id counter changed under {PRODUCER_ID_CAS_ATTEMPTS} attempts in a row"
        )))
    }
}

impl ConsensusStore {
    /// Applies the writer rule to a change: topic changes carry the controller's fence, or
    /// are refused on a broker that is not the controller.
    fn fence(&self, ops: &mut Vec<WriteOp>) -> Result<(), MetadataError> {
        if ops.iter().all(|o| o.path() == PRODUCER_IDS) {
            return Ok(());
        }
        match self.role() {
            WriterRole::Unfenced => Ok(()),
            WriterRole::Follower => Err(MetadataError::NotController),
            WriterRole::Controller { fence_version } => {
                ops.push(WriteOp::Check {
                    path: CONTROLLER_EPOCH.into(),
                    expected_version: Some(fence_version),
                });
                Ok(())
            }
        }
    }

    /// The writes that turn the tree of `from` into that of `to`; every change to a node read
    /// before is conditional on the version read.
    fn diff(
        &self,
        from: &MetadataImage,
        to: &MetadataImage,
    ) -> Result<Vec<WriteOp>, MetadataError> {
        let mut ops = Vec::new();
        for (name, old) in &from.topics {
            if to.topics.get(name).is_none_or(|t| t.id != old.id) {
                for path in [topic_config_path(name), topic_path(name)] {
                    let expected_version = Some(self.version(&path)?);
                    ops.push(WriteOp::Delete {
                        path,
                        expected_version,
                    });
                }
            }
        }
        for (name, new) in &to.topics {
            match from.topics.get(name).filter(|t| t.id == new.id) {
                None => {
                    ops.push(create_op(&topic_path(name), topic_value(new)));
                    ops.push(create_op(
                        &topic_config_path(name),
                        config_value(&new.configs),
                    ));
                }
                Some(old) => {
                    if old.partitions != new.partitions {
                        ops.push(self.set_op(topic_path(name), topic_value(new))?);
                    }
                    if old.configs != new.configs {
                        ops.push(self.set_op(topic_config_path(name), config_value(&new.configs))?);
                    }
                }
            }
        }
        if from.next_producer_id != to.next_producer_id {
            ops.push(self.set_op(PRODUCER_IDS.into(), producer_ids_value(to.next_producer_id))?);
        }
        // One op of room for the controller's fence.
        if ops.len() + 1 > MAX_MULTI_OPS {
            return Err(MetadataError::Invalid(format!(
                "one change of {} tree writes; at most {MAX_MULTI_OPS}",
                ops.len()
            )));
        }
        Ok(ops)
    }

    fn set_op(&self, path: String, data: Vec<u8>) -> Result<WriteOp, MetadataError> {
        let expected_version = Some(self.version(&path)?);
        Ok(WriteOp::SetData {
            path,
            data,
            expected_version,
        })
    }
}

fn create_op(path: &str, data: Vec<u8>) -> WriteOp {
    WriteOp::Create {
        path: path.to_string(),
        data,
        sequential: false,
        ephemeral_owner: None,
    }
}

async fn create_if_missing(client: &Client, path: &str, data: &[u8]) -> Result<(), MetadataError> {
    match client.create(path, data, CreateMode::Persistent).await {
        Ok(_)
        | Err(ClientError::Tree {
            error: TreeError::NodeExists,
            ..
        }) => Ok(()),
        Err(e) => Err(group_error(e)),
    }
}

/// Reads the image out of the tree. Only the controller writes, so reading node by node after
/// a `sync` sees one consistent state.
async fn read_tree(client: &Client) -> Result<LoadedTree, MetadataError> {
    client.sync().await.map_err(group_error)?;
    let mut versions = HashMap::new();
    let (data, _) = client.get(CLUSTER_ID).await.map_err(group_error)?;
    let cluster: ClusterIdNode = decode(CLUSTER_ID, &data)?;
    let (data, stat) = client.get(PRODUCER_IDS).await.map_err(group_error)?;
    let next_producer_id = decode_producer_ids(&data)?;
    versions.insert(PRODUCER_IDS.to_string(), stat.version);
    let mut image = MetadataImage::new_cluster();
    image.cluster_id = cluster.cluster_id;
    image.next_producer_id = next_producer_id;
    image.epoch = 0;
    for name in client.children(TOPICS).await.map_err(group_error)? {
        let cpath = topic_config_path(&name);
        let (data, cstat) = client
            .get(&cpath)
            .await
            .map_err(|e| missing_or(e, &cpath))?;
        let config: ConfigNode = decode(&cpath, &data)?;
        let tpath = topic_path(&name);
        let (data, tstat) = client.get(&tpath).await.map_err(group_error)?;
        let topic = decode_topic(&name, &tpath, &data, config.configs)?;
        versions.insert(cpath, cstat.version);
        versions.insert(tpath.clone(), tstat.version);
        image
            .apply(MetadataCommand::CreateTopic(topic))
            .map_err(|e| bad(&tpath, e.to_string()))?;
    }
    Ok(LoadedTree { image, versions })
}

fn missing_or(e: ClientError, path: &str) -> MetadataError {
    match e {
        ClientError::Tree {
            error: TreeError::NoNode,
            ..
        } => bad(path, "a topic without its settings node"),
        other => group_error(other),
    }
}

#[cfg(test)]
mod tests;
