//! The cluster as this broker sees it, kept in the consensus tree under the broker's session:
//! its own registration (`registration`, the ephemeral `/corebus/brokers/ids/<node id>`), the
//! race for the controller (`election`, the ephemeral `/corebus/controller` and the
//! `/corebus/controller_epoch` fence), and the watches that keep the [`ClusterView`] (live
//! brokers, controller id) and the topics of a broker that is not the controller up to date
//! (`watcher`). The tree layout is documented in `crate::metadata::consensus_store`.
//!
//! All of it runs on shard 0, next to the metadata controller, with the store's client (one
//! consensus session per broker, as a Kafka broker has one ZooKeeper session); the other shards
//! get each new view by message.
//!
//! Without a consensus group (a broker on a local metadata file) the view is this node alone,
//! always the controller, and nothing here runs.
//!
//! Never: writes topics (the controller does, through the store); serves a request.

pub mod election;
pub mod forward;
pub mod peer;
pub mod registration;
pub mod watcher;

use corebus_consensus::client::Error as ClientError;
use thiserror::Error;

use crate::config::Config;
use crate::config::value::Value;
use crate::metadata::MetadataError;
use crate::shard::NodeInfo;

/// The broker's consensus session timeout (`corebus.consensus.session.timeout.ms`).
pub fn session_timeout_ms(config: &Config) -> u64 {
    millis(
        config,
        "corebus.consensus.session.timeout.ms",
        DEFAULT_SESSION_TIMEOUT_MS,
    )
}

/// The default of `corebus.consensus.session.timeout.ms` (KRaft's `broker.session.timeout.ms`).
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 9_000;

/// How long an expired session is renewed before the broker gives up
/// (`corebus.consensus.session.renew.timeout.ms`).
pub fn session_renew_timeout_ms(config: &Config) -> u64 {
    millis(
        config,
        "corebus.consensus.session.renew.timeout.ms",
        DEFAULT_SESSION_RENEW_TIMEOUT_MS,
    )
}

/// The default of `corebus.consensus.session.renew.timeout.ms`.
pub const DEFAULT_SESSION_RENEW_TIMEOUT_MS: u64 = 300_000;

/// A duration setting in ms (validated positive at load; `default` if unset).
fn millis(config: &Config, name: &str, default: u64) -> u64 {
    config
        .settings
        .i64(name)
        .map_or(default, |v| v.max(1) as u64)
}

/// This broker's rack (`broker.rack`), if set.
pub fn rack(config: &Config) -> Option<String> {
    match config.settings.get("broker.rack") {
        Some((Value::String(r), _)) if !r.is_empty() => Some(r),
        _ => None,
    }
}

/// One live broker, as its registration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    pub node_id: i32,
    /// The advertised host and port of its Kafka listener.
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// The zxid that created its registration: a new one for every life of the broker
    /// (Kafka's broker epoch), 0 where unknown.
    pub registered: u64,
}

impl BrokerEndpoint {
    /// This node's endpoint.
    pub fn of(node: &NodeInfo, rack: Option<String>) -> BrokerEndpoint {
        BrokerEndpoint {
            node_id: node.node_id,
            host: node.host.clone(),
            port: node.port,
            rack,
            registered: 0,
        }
    }
}

/// What Metadata and DescribeCluster report about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// Counts the views shard 0 made; a shard installs only a newer one.
    pub generation: u64,
    /// The live brokers, by node id.
    pub brokers: Vec<BrokerEndpoint>,
    /// The controller's node id; `None` while there is none (Kafka reports -1).
    pub controller_id: Option<i32>,
}

impl ClusterView {
    /// A node without a consensus group: itself, and the controller.
    pub fn alone(me: BrokerEndpoint) -> ClusterView {
        ClusterView {
            generation: 0,
            controller_id: Some(me.node_id),
            brokers: vec![me],
        }
    }

    /// A broker of a consensus group before shard 0 has read the tree: itself, no
    /// controller known yet.
    pub fn starting(me: BrokerEndpoint) -> ClusterView {
        ClusterView {
            generation: 0,
            controller_id: None,
            brokers: vec![me],
        }
    }

    /// The live brokers' ids.
    pub fn live_ids(&self) -> Vec<i32> {
        self.brokers.iter().map(|b| b.node_id).collect()
    }

    /// The live brokers as partition placement sees them (id and rack).
    pub fn candidates(&self) -> Vec<crate::metadata::assign::Candidate> {
        self.brokers
            .iter()
            .map(|b| crate::metadata::assign::Candidate {
                id: b.node_id,
                rack: b.rack.clone(),
            })
            .collect()
    }

    /// The controller id as Kafka puts it on the wire.
    pub fn controller_wire_id(&self) -> i32 {
        self.controller_id.unwrap_or(-1)
    }
}

/// Why the broker's place in the cluster could not be taken or kept.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// Another live broker holds this node id (Kafka's NODE_EXISTS at registration).
    #[error(
        "NODE_EXISTS: broker id {node_id} is already registered at {path} by another live \
         broker ({holder}); it was still there after {waited_ms} ms, longer than a dead \
         broker's session can outlive it: give every broker its own node.id"
    )]
    NodeExists {
        node_id: i32,
        path: String,
        holder: String,
        waited_ms: u64,
    },
    #[error("consensus group: {0}")]
    Group(#[from] ClientError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The group ended the broker's session (it was cut off for longer than the timeout).
    #[error("the broker's consensus session expired")]
    SessionExpired,
    /// The session expired and no new one could be opened and registered in time.
    #[error(
        "the broker's consensus session expired and it could not register again within \
         {waited_ms} ms (corebus.consensus.session.renew.timeout.ms): {last}"
    )]
    RenewFailed { waited_ms: u64, last: String },
}
