//! A small asynchronous Kafka client, written for load generation, on the workspace's `wire`
//! crate (request encoding, response decoding, framing, record batches, compression).
//!
//! Owns: connections with pipelined in-flight requests matched by correlation id
//! ([`connection`]), ApiVersions negotiation ([`versions`]), cluster metadata with partition
//! leaders and CreateTopics ([`cluster`]), a batching producer with acks 0/1/all, linger and
//! compression ([`producer`]) and a fetching consumer from a given offset ([`consumer`]).
//!
//! Never: links librdkafka or any part of the broker (it must load any Kafka-compatible
//! broker, and must not share a bug with the one it measures); blocks the executor; is shared
//! across threads (each executor builds its own clients).
//!
//! Runtime: glommio, the project's runtime, one `LocalExecutor` pinned per CPU the harness is
//! given (`taskset`/cgroups are respected through `sched_getaffinity`). A load generator is a
//! thread-per-core program for the same reason the broker is: its producers, consumers and
//! statistics of one core never take a lock or migrate, so one or two cores can drive a broker
//! and the figures are not bent by a work-stealing scheduler moving tasks between threads
//! mid-measurement. Statistics leave an executor only once per second, as whole interval
//! histograms.

pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod limits;
pub mod producer;
pub mod versions;

pub use cluster::Cluster;
pub use error::ClientError;
