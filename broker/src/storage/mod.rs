//! The storage engine: per-partition segmented logs on direct I/O, one engine per shard.
//!
//! Layout: `<data>/<topic>-<partition>/` holds Kafka-named segments
//! (`00000000000000000000.log`, `.index`, `.timeindex`), a `log-start-offset` checkpoint and,
//! after a clean close, a `clean-shutdown` marker. `<data>/.lock` keeps a second process off
//! the directory ([`lock::DataDirLock`]); `<data>/high-watermarks.<shard>` are the shards'
//! high watermark checkpoints ([`hw_checkpoint`]).
//!
//! # Durability contract
//! - An append is **written** when its O_DIRECT write completed. It then survives the process
//!   being killed. `PartitionLog::append(.., Durability::Written)` returns only then, readers
//!   never see anything beyond the written mark (the high watermark on one node), and offsets
//!   are never handed out twice (a disk-full failure gives back offsets nobody has seen).
//! - An append is **synced** when an fdatasync that started after its write completed has
//!   finished. It then survives a power loss. `Durability::Synced` / `sync_to` wait for that.
//!   Syncs are issued per topic by `flush.messages` and `flush.ms`, and on demand; the syncs
//!   of all partitions of a shard that ask at once run concurrently through io_uring (group
//!   commit). corebus's default is that acks=all waits for the sync (as Redpanda does;
//!   `write.caching=true` gives Kafka's behaviour of relying on replication instead): it costs
//!   one fdatasync latency per produce round trip (about 90 us with a busy core here, about
//!   4 ms when both cores sleep), shared by every partition of the shard in that round.
//! - A failed write or fdatasync makes that log offline for good (`StorageError::Offline`,
//!   KAFKA_STORAGE_ERROR); it is never retried, because after a failed fsync neither the page
//!   cache nor the device's report can be trusted. A full disk (ENOSPC, detected by
//!   preallocation before the write) fails the unwritten appends with `DiskFull` and the log
//!   takes appends again once space returns.
//! - Segments are synced and indexed before the next segment receives data, so crash recovery
//!   scans only the last segment and truncates it at the first torn or invalid batch.
//!
//! # Threading
//! Thread-per-core: a [`StorageShard`] and its [`PartitionLog`]s live on one glommio executor
//! and are `Rc`-based (not `Send`). Several tasks of that shard may append to one log
//! concurrently; offsets follow call order and acknowledgements complete in offset order.
//! Nothing here blocks the reactor on the produce or fetch path; opening a log lists its
//! directory with std::fs (startup only).
//!
//! # Locked memory
//! glommio registers its I/O buffers (`io_memory`) and refuses to start below 512 KiB of
//! locked memory. Root (CAP_IPC_LOCK) is fine; a non-root deployment needs `ulimit -l` (or
//! `LimitMEMLOCK=` in systemd) at least the sum of every shard's `io_memory` plus 512 KiB.
//!
//! # Compaction
//! `cleanup.policy=compact` (and `compact,delete`) logs are compacted by the shard's log
//! cleaner ([`cleaner`]): the latest record per key survives, offsets never change (a
//! compacted log has gaps), tombstones go `delete.retention.ms` after their first clean.
//! A clean is swapped in crash-safely (`.cleaned` then `.swap` files, finished or discarded
//! by recovery) and its clean/dirty boundary is checkpointed in `cleaner-checkpoint`.
//!
//! Never: knows about requests, clusters or handlers; touches another shard's logs.

mod batch_cache;
pub mod bounded;
pub mod cleaner;
pub mod config;
pub mod disk;
pub mod dma_disk;
pub mod epochs;
pub mod error;
mod fd_cache;
pub mod hw_checkpoint;
mod index;
pub mod inspect;
pub mod lock;
mod log;
mod meta;
mod read;
mod recovery;
mod retention;
mod scan;
mod segment;
mod shard;
pub mod sim_disk;
pub mod testing;
mod watermark;
mod writer;

pub use cleaner::{CleanStats, CleanerOptions};
pub use config::{CleanupPolicy, Durability, LogConfig, MessageTimestampType, ShardOptions};
pub use disk::{AlignedBuf, Disk, DiskFile, OpenMode, PAGE_BYTES};
pub use dma_disk::DmaDisk;
pub use error::StorageError;
pub use lock::DataDirLock;
pub use log::{AppendInfo, AppendTicket, PartitionLog};
pub use read::{LogRead, ReadChunk, ReadEnd};
pub use shard::{CONCURRENT_LOG_OPENS_CLOSES, StorageShard, now_ms};
pub use sim_disk::SimDisk;
