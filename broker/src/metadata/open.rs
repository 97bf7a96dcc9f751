//! Choosing and loading the metadata store at start-up, before the shards run.
//!
//! - The node has the consensus role or `--consensus-peers`: the consensus tree
//!   (`consensus_store`). Loading waits for the group up to [`METADATA_LOAD_TIMEOUT_MS`] (a
//!   group of several nodes may still be electing), then start-up fails with the reason.
//!   A data directory that still has the old local metadata file while the tree has no topics
//!   is imported once, and the file renamed to [`IMPORTED_FILE_NAME`]; when the tree has
//!   topics the tree wins and the file is left alone (and said so).
//! - Otherwise (a broker without any consensus group): the local file (`local_file`).
//!
//! - Partitions of an older format (which recorded a shard index, not brokers) are adopted by
//!   this broker once: it becomes their only replica and leader, and the store is rewritten in
//!   the current format. In a group of several brokers the first one to start with this
//!   release adopts them (each broker of an older release kept its own copy of every
//!   partition; the adopter's copy is the one served from then on).
//!
//! Which shard serves a partition is not read from here: each node computes it from its own
//! shard count (`shard::router`), so a node restarted with another `--shards` rewrites
//! nothing.
//!
//! Never: runs on a shard (it uses a short-lived executor of its own); starts a broker on an
//! image it could not read.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::consensus_store::{
    ConsensusStore, IMPORT_MARKER, LoadedTree, METADATA_STORE_TIMEOUT_MS, metadata_client,
};
use super::local_file::{LocalFileStore, METADATA_FILE_NAME};
use super::{MetadataError, MetadataImage, MetadataStore, Store};
use crate::config::Config;

/// How long start-up waits for the consensus group to serve the metadata.
pub const METADATA_LOAD_TIMEOUT_MS: u64 = 30_000;
/// Pause between attempts to reach the group at start-up.
const LOAD_RETRY_MS: u64 = 200;
/// While waiting for the group at start-up, say so this often.
const LOAD_WAIT_LOG_MS: u64 = 5_000;
/// What the local metadata file is renamed to once imported into the tree.
pub const IMPORTED_FILE_NAME: &str = "corebus-metadata.json.imported";
/// Topics adopted per metadata change (each topic is one tree write; a change holds at most
/// `corebus_consensus::limits::MAX_MULTI_OPS`).
const ADOPT_TOPICS_PER_CHANGE: usize = 256;

/// The loaded metadata, before its store is built on the controller shard.
pub enum Opened {
    Local(MetadataImage),
    Consensus {
        servers: Vec<SocketAddr>,
        loaded: LoadedTree,
    },
}

impl Opened {
    pub fn image(&self) -> &MetadataImage {
        match self {
            Opened::Local(image) => image,
            Opened::Consensus { loaded, .. } => &loaded.image,
        }
    }

    /// The store; build it on the executor that will use it (shard 0). A consensus store's
    /// client holds the broker's session, with `session_timeout_ms`.
    pub fn into_store(
        self,
        data_dir: &Path,
        session_timeout_ms: u64,
    ) -> Result<Store, MetadataError> {
        Ok(match self {
            Opened::Local(image) => Store::Local(LocalFileStore::new(data_dir, image)),
            Opened::Consensus { servers, loaded } => Store::Consensus(ConsensusStore::new(
                metadata_client(servers, Some(session_timeout_ms))?,
                loaded,
            )),
        })
    }
}

/// Whether this node keeps its metadata in the consensus tree.
pub fn uses_consensus(config: &Config) -> bool {
    config.roles.consensus || config.consensus.explicit_peers
}

/// The consensus members to ask: this node's own consensus role first when it has one (`own`,
/// its actual address; its reads are local), then the other members.
fn servers(config: &Config, own: Option<SocketAddr>) -> Vec<SocketAddr> {
    let me = config.node_id as u64;
    let others = config
        .consensus
        .members
        .iter()
        .filter(|(id, _)| own.is_none() || **id != me)
        .map(|(_, a)| *a);
    own.into_iter().chain(others).collect()
}

/// Picks the store, loads it, imports an old local file if due.
pub fn open(config: &Config, own: Option<SocketAddr>) -> Result<Opened, MetadataError> {
    let me = config.node_id;
    if !uses_consensus(config) {
        let mut image = LocalFileStore::load_or_init(&config.data_dir)?;
        let adopt = image.adopt_unassigned(me);
        if !adopt.is_empty() {
            let topics = adopt.len();
            LocalFileStore::apply_blocking(&config.data_dir, &mut image, adopt)?;
            info!(
                topics,
                node_id = me,
                "partitions of an older metadata format adopted"
            );
        }
        return Ok(Opened::Local(image));
    }
    let servers = servers(config, own);
    let mut file = LocalFileStore::read_existing(&config.data_dir)?;
    if let Some(file) = file.as_mut() {
        // Imported with this broker as the leader of what it holds.
        for c in file.adopt_unassigned(me) {
            file.apply(c)?;
        }
    }
    let data_dir = config.data_dir.clone();
    let loaded = crate::consensus::with_client(
        servers.clone(),
        METADATA_STORE_TIMEOUT_MS,
        async move |client| {
            let loaded = load_waiting(&client).await?;
            let store = ConsensusStore::new(client, loaded);
            if let Some(file) = file {
                migrate(&store, &file, &data_dir).await?;
            }
            adopt(&store, me).await?;
            Ok::<_, MetadataError>(store.loaded())
        },
    )
    .map_err(|e| MetadataError::Unavailable(e.to_string()))??;
    info!(
        topics = loaded.image.topics.len(),
        servers = ?servers,
        "metadata loaded from the consensus tree"
    );
    Ok(Opened::Consensus { servers, loaded })
}

/// Loads the tree, retrying while the group cannot serve, for up to
/// [`METADATA_LOAD_TIMEOUT_MS`].
async fn load_waiting(
    client: &corebus_consensus::client::Client,
) -> Result<LoadedTree, MetadataError> {
    let start = Instant::now();
    let mut said = Instant::now();
    loop {
        match ConsensusStore::load(client).await {
            Ok(loaded) => return Ok(loaded),
            Err(MetadataError::Unavailable(reason))
                if start.elapsed() < Duration::from_millis(METADATA_LOAD_TIMEOUT_MS) =>
            {
                if said.elapsed() >= Duration::from_millis(LOAD_WAIT_LOG_MS) {
                    warn!(%reason, "waiting for the consensus group to serve the metadata");
                    said = Instant::now();
                }
                glommio::timer::sleep(Duration::from_millis(LOAD_RETRY_MS)).await;
            }
            Err(MetadataError::Unavailable(reason)) => {
                return Err(MetadataError::Unavailable(format!(
                    "no metadata from the consensus group within {METADATA_LOAD_TIMEOUT_MS} ms: \
                     {reason}"
                )));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Gives the tree's partitions of an older format to this broker (see the module docs).
async fn adopt(store: &ConsensusStore, me: i32) -> Result<(), MetadataError> {
    let cmds = store.current().adopt_unassigned(me);
    if cmds.is_empty() {
        return Ok(());
    }
    let topics = cmds.len();
    let mut left = cmds.into_iter().peekable();
    while left.peek().is_some() {
        let chunk: Vec<_> = left.by_ref().take(ADOPT_TOPICS_PER_CHANGE).collect();
        store.apply(chunk).await?;
    }
    info!(
        topics,
        node_id = me,
        "partitions of tree format 1 adopted and rewritten in format 2"
    );
    Ok(())
}

/// Imports the old local file once (see the module docs).
async fn migrate(
    store: &ConsensusStore,
    file: &MetadataImage,
    data_dir: &Path,
) -> Result<(), MetadataError> {
    let resuming = store
        .client()
        .exists(IMPORT_MARKER)
        .await
        .map_err(|e| MetadataError::Unavailable(e.to_string()))?
        .is_some();
    let path = data_dir.join(METADATA_FILE_NAME);
    if !store.current().topics.is_empty() && !resuming {
        warn!(
            file = %path.display(),
            "the consensus tree already has topics: the local metadata file is ignored"
        );
        return Ok(());
    }
    info!(
        file = %path.display(),
        topics = file.topics.len(),
        resuming,
        "importing the local metadata file into the consensus tree"
    );
    store.import(file).await?;
    let to = data_dir.join(IMPORTED_FILE_NAME);
    // Start-up's own executor: a blocking rename here holds up nothing else.
    std::fs::rename(&path, &to).map_err(|source| MetadataError::Io { path, source })?;
    Ok(())
}
