//! What one shard reports to a scrape: a copy of its counters and histograms plus gauges read
//! from its storage engine, taken on the shard's own thread by a job the metrics endpoint
//! sends through the mesh, and sent back as a plain `Send` value.
//!
//! Owns: [`ShardSnapshot`], [`collect`] (ask every shard, wait a bounded time).
//! Never: runs on another thread than the shard it describes; makes a scrape wait for a shard
//! longer than [`SHARD_SNAPSHOT_TIMEOUT_MS`] (a shard that does not answer is reported down).

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::histogram::LatencyHistogram;
use super::shard::ShardMetrics;
use crate::shard::mesh::{Job, Mesh};
use crate::shard::{Shard, ShardId};

/// Longest a scrape waits for all shards' snapshots together, in milliseconds.
pub const SHARD_SNAPSHOT_TIMEOUT_MS: u64 = 1_000;

/// One shard's metrics at one moment.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub shard: u16,
    /// The shard's request and network counters, copied.
    pub counters: ShardMetrics,
    pub fsync_latency: LatencyHistogram,
    /// Partitions whose log this shard has open.
    pub partitions: u64,
    /// Bytes of record batches on disk in those partitions.
    pub log_size_bytes: u64,
    /// Produce data in flight against `produce_memory_budget_bytes`.
    pub produce_memory_in_use_bytes: u64,
    pub produce_memory_budget_bytes: u64,
    /// Request frames being read or run against `request_memory_pool_bytes`.
    pub request_memory_in_use_bytes: u64,
    pub request_memory_pool_bytes: u64,
    /// Fetch reads in flight against `fetch_memory_budget_bytes`.
    pub fetch_memory_in_use_bytes: u64,
    pub fetch_memory_budget_bytes: u64,
    /// Fetches of the shard's connections waiting for data now.
    pub parked_fetches: u64,
    /// Waits on the shard's partitions for parked fetches of any shard.
    pub fetch_waits: u64,
    pub batch_cache_bytes: u64,
    pub open_files: u64,
    pub files_closed_for_limit: u64,
}

impl ShardSnapshot {
    /// Takes the snapshot of `shard`; call on that shard's thread.
    pub fn take(shard: &Shard) -> ShardSnapshot {
        let storage = shard.logs.storage();
        let budget = shard.config.limits.shard_produce_memory_budget_bytes as u64;
        ShardSnapshot {
            shard: shard.id.0,
            counters: shard.metrics.borrow().clone(),
            fsync_latency: storage.fsync_latency(),
            partitions: shard.logs.partition_count() as u64,
            log_size_bytes: shard.logs.size_bytes(),
            produce_memory_in_use_bytes: budget.saturating_sub(shard.produce_budget.available()),
            produce_memory_budget_bytes: budget,
            request_memory_in_use_bytes: shard.request_memory.in_use_bytes() as u64,
            request_memory_pool_bytes: shard.request_memory.capacity_bytes() as u64,
            fetch_memory_in_use_bytes: shard.fetch_memory.in_use_bytes() as u64,
            fetch_memory_budget_bytes: shard.fetch_memory.capacity_bytes() as u64,
            parked_fetches: shard.parked_fetches.get() as u64,
            fetch_waits: shard.fetch_waits.get() as u64,
            batch_cache_bytes: storage.cache_bytes() as u64,
            open_files: storage.open_files() as u64,
            files_closed_for_limit: storage.files_closed_for_limit(),
        }
    }
}

/// Asks every shard of `mesh` for its snapshot and waits up to [`SHARD_SNAPSHOT_TIMEOUT_MS`]
/// in all; `None` for a shard that is gone or did not answer in time. Blocking: call from the
/// metrics thread, never from a shard.
pub fn collect(mesh: &Mesh) -> Vec<(u16, Option<ShardSnapshot>)> {
    let deadline = Instant::now() + Duration::from_millis(SHARD_SNAPSHOT_TIMEOUT_MS);
    let count = mesh.shard_count();
    let (tx, rx) = flume::bounded::<ShardSnapshot>(count);
    let mut asked = vec![false; count];
    for (i, asked) in asked.iter_mut().enumerate() {
        let reply = tx.clone();
        let job: Job = Box::new(move |shard: Rc<Shard>| {
            Box::pin(async move {
                let _ = reply.send(ShardSnapshot::take(&shard));
            })
        });
        let left = deadline.saturating_duration_since(Instant::now());
        *asked = mesh.post_timeout(ShardId(i as u16), job, left).is_ok();
    }
    drop(tx);
    let mut got: Vec<Option<ShardSnapshot>> = vec![None; count];
    let expected = asked.iter().filter(|a| **a).count();
    for _ in 0..expected {
        match rx.recv_deadline(deadline) {
            Ok(s) => {
                let i = usize::from(s.shard);
                if i < count {
                    got[i] = Some(s);
                }
            }
            Err(_) => break,
        }
    }
    got.into_iter()
        .enumerate()
        .map(|(i, s)| (i as u16, s))
        .collect()
}
