//! Metrics and health: per-shard counters and histograms kept in plain shard-local state
//! (`shard`, `histogram`), the response's error code for the request counters
//! (`response_error`), snapshots taken on each shard by message (`snapshot`), their
//! OpenMetrics encoding (`exposition`), the node's lifecycle for the probes (`health`) and the
//! HTTP listener on a thread of its own (`http`).
//!
//! Never: takes a lock or touches an atomic on the request path (the one node-wide atomic,
//! the connection count, predates this module and is touched at accept and close only);
//! reads a shard's state from another thread.

pub mod exposition;
pub mod health;
pub mod histogram;
pub mod http;
pub mod response_error;
pub mod shard;
pub mod snapshot;
