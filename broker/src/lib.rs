//! The corebus broker: a thread-per-core Kafka-compatible server.
//!
//! Layout: `config` (command line, settings table) and `limits` are read once at start-up;
//! `shard` runs one pinned glommio executor per core and the messages between them;
//! `metadata` keeps topics, placement and configs durably; `server` accepts connections and
//! runs the per-connection request pipeline; `handlers` hold one file per Kafka API;
//! `consensus` starts this process's consensus role (the `corebus-consensus` crate);
//! `metrics` keeps per-shard counters and serves `/metrics`, `/health` and `/ready`;
//! `logging` installs the log subscriber.
//! `cluster` registers the broker in the consensus tree, elects the controller and watches
//! the live brokers.
//!
//! Dependency direction: handlers sit on shard, metadata and storage; none of those imports a
//! handler.

pub mod cluster;
pub mod config;
pub mod consensus;
pub mod groups;
pub mod handlers;
pub mod limits;
pub mod logging;
pub mod memory_trim;
pub mod metadata;
pub mod metrics;
pub mod panic_policy;
pub mod replication;
pub mod server;
pub mod shard;
pub mod storage;
