//! Cluster metadata: topics with their ids, partition counts and owning shards, per-topic
//! settings and the producer-id allocator, behind the `MetadataStore` interface. The first
//! store is a local file written atomically (`local_file`); the consensus store takes its place
//! later behind the same trait. The `controller` (on shard 0) serialises changes and installs
//! each committed image on every shard.
//!
//! Never: is read from disk on the request path (every shard holds the current image in
//! memory); hands out a producer id before the block holding it is durable.

pub mod controller;
pub mod image;
pub mod local_file;

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
    #[error("metadata store is not on this shard")]
    NotController,
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
}
