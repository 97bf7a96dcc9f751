//! Cluster metadata: topics with their ids, partitions (replicas, leader, ISR), per-topic
//! settings and the producer-id allocator, behind the `MetadataStore` interface. Two stores:
//! the consensus tree (`consensus_store`, the default whenever the node has the consensus role
//! or `--consensus-peers`) and a local file written atomically (`local_file`, for a broker
//! without a consensus group, and the source of a one-time import). `open` picks and loads the
//! store at start-up. The `controller` (on shard 0) serialises changes and installs each
//! committed image on every shard.
//!
//! Never: is read from disk on the request path (every shard holds the current image in
//! memory); hands out a producer id before the block holding it is durable.

pub mod assign;
pub mod consensus_store;
pub mod controller;
pub mod elect;
pub mod image;
pub mod local_file;
pub mod open;
pub mod reassign;

use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

pub use image::{MetadataCommand, MetadataImage, PartitionMeta, TopicId, TopicMeta};

/// Why a metadata change or load failed.
#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("unknown topic id {}", .0.0)]
    UnknownTopicId(TopicId),
    #[error("invalid metadata change: {0}")]
    Invalid(String),
    #[error("metadata file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// This broker is not the controller (or was replaced by a newer one).
    #[error("this broker is not the controller")]
    NotController,
    /// The consensus group did not take or answer the change in time (a write may or may not
    /// have happened; the store reads the tree again before the next one).
    #[error("consensus group unavailable: {0}")]
    Unavailable(String),
    /// Another writer changed the tree under this controller.
    #[error("metadata changed by another writer: {0}")]
    Conflict(String),
    /// A node of the consensus tree holds something this build cannot read.
    #[error("metadata node {path} is unreadable: {reason}")]
    BadNode { path: String, reason: String },
}

/// Where metadata lives. Changes are applied in the order `apply` is called and are durable
/// when it returns `Ok`; a failed `apply` leaves the image unchanged.
// The broker's executors are single-threaded, so the futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait MetadataStore {
    /// The latest committed image.
    fn current(&self) -> Arc<MetadataImage>;
    /// Applies `cmds` atomically (all or none) and makes the result durable.
    async fn apply(&self, cmds: Vec<MetadataCommand>) -> Result<Arc<MetadataImage>, MetadataError>;
    /// Brings `current()` up to date when the store may be behind (after a write of unknown
    /// outcome); `Some` with the new image when it changed.
    async fn refresh(&self) -> Result<Option<Arc<MetadataImage>>, MetadataError> {
        Ok(None)
    }
}

/// The store this node runs with (see `open`).
pub enum Store {
    Local(local_file::LocalFileStore),
    Consensus(consensus_store::ConsensusStore),
}

impl Store {
    /// The consensus store, when this node keeps its metadata in the tree.
    pub fn consensus(&self) -> Option<&consensus_store::ConsensusStore> {
        match self {
            Store::Consensus(s) => Some(s),
            Store::Local(_) => None,
        }
    }
}

impl MetadataStore for Store {
    fn current(&self) -> Arc<MetadataImage> {
        match self {
            Store::Local(s) => s.current(),
            Store::Consensus(s) => s.current(),
        }
    }

    async fn apply(&self, cmds: Vec<MetadataCommand>) -> Result<Arc<MetadataImage>, MetadataError> {
        match self {
            Store::Local(s) => s.apply(cmds).await,
            Store::Consensus(s) => s.apply(cmds).await,
        }
    }

    async fn refresh(&self) -> Result<Option<Arc<MetadataImage>>, MetadataError> {
        match self {
            Store::Local(s) => s.refresh().await,
            Store::Consensus(s) => s.refresh().await,
        }
    }
}
