//! Property test: random sequences of append / roll / truncate / DeleteRecords / retention /
//! compaction / clean reopen / power loss, over the simulated disk, checked after every step
//! against a model (a list of batches with their bytes and the log start offset; compaction
//! keeps the latest record per key below the cleaner's new checkpoint).

mod storage_common;

use std::path::PathBuf;

use std::collections::HashMap;

use bytes::Bytes;
use corebus_broker::storage::{
    CleanerOptions, CleanupPolicy, Durability, LogConfig, ShardOptions, SimDisk, StorageShard,
};
use corebus_wire::record::{
    Compression, DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES, RecordBatch, RecordBatchBuilder,
    retain_records,
};
use proptest::prelude::*;
use storage_common::{expected, read_batches, run};

#[derive(Clone, Debug)]
enum Op {
    /// Append these batches (one call), waiting for the sync when `sync`.
    Append { seeds: Vec<u16>, sync: bool },
    /// Truncate to the start of the batch at this fraction (per mille) of the live batches.
    Truncate { at_permille: u16 },
    /// DeleteRecords up to this fraction of [log start, high watermark].
    DeleteRecords { at_permille: u16 },
    /// Retention by size: keep at least this many KiB.
    RetainKib { kib: u16 },
    /// Close cleanly and reopen.
    Reopen,
    /// Power loss (unsynced writes may vanish, the last one may tear), then reopen.
    Crash { seed: u64 },
    /// Run the log cleaner; `later` runs it after tombstones' delete horizon, `small_map`
    /// with an offset map of a few keys (a partial clean).
    Compact { later: bool, small_map: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(any::<u16>(), 1..4), any::<bool>())
            .prop_map(|(seeds, sync)| Op::Append { seeds, sync }),
        1 => (0u16..1000).prop_map(|at_permille| Op::Truncate { at_permille }),
        1 => (0u16..1000).prop_map(|at_permille| Op::DeleteRecords { at_permille }),
        1 => (0u16..24).prop_map(|kib| Op::RetainKib { kib }),
        2 => (any::<bool>(), any::<bool>()).prop_map(|(later, small_map)| Op::Compact { later, small_map }),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
    ]
}

#[derive(Default, Debug)]
struct Model {
    /// (base offset, next offset, bytes) of every batch not cut by truncation or a crash.
    batches: Vec<(i64, i64, Vec<u8>)>,
    log_start: i64,
    synced_end: i64,
    /// The log end offset (compaction can empty the last batches of sealed segments).
    log_end: i64,
}

impl Model {
    fn end(&self) -> i64 {
        self.log_end
    }

    /// The cleaner ran and its checkpoint is now `first_dirty`: below it, the latest record
    /// per key stays (tombstones until their horizon), emptied batches go; except in the
    /// active segment (from `active_base`), which the cleaner never rewrites. (A power loss
    /// can make a cleaned segment active again: when the new last segment lost all its data,
    /// recovery drops it, so `first_dirty` can then lie inside the active segment.)
    fn compact(&mut self, first_dirty: i64, active_base: i64, now_ms: i64) {
        let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
        for (base, _, bytes) in self.batches.iter().filter(|b| b.0 < first_dirty) {
            let batch = RecordBatch::parse(Bytes::from(bytes.clone())).unwrap();
            for r in batch.records().unwrap() {
                let r = r.unwrap();
                latest.insert(r.key.unwrap().to_vec(), base + i64::from(r.offset_delta));
            }
        }
        let horizon = now_ms + DELETE_RETENTION_MS;
        let mut out = Vec::new();
        for (base, next, bytes) in std::mem::take(&mut self.batches) {
            if base >= first_dirty || base >= active_base {
                out.push((base, next, bytes));
                continue;
            }
            let batch = RecordBatch::parse(Bytes::from(bytes)).unwrap();
            let expired = batch.has_delete_horizon() && batch.base_timestamp() <= now_ms;
            let kept = retain_records(
                &batch,
                DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES,
                Some(horizon),
                |r| {
                    let key = r.key.as_deref().unwrap();
                    let offset = base + i64::from(r.offset_delta);
                    latest.get(key) == Some(&offset) && !(r.value.is_none() && expired)
                },
            )
            .unwrap();
            if kept.kept > 0 {
                out.push((base, next, kept.batch.as_bytes().to_vec()));
            }
        }
        self.batches = out;
    }
}

const NOW_MS: i64 = 10_000_000;
const DELETE_RETENTION_MS: i64 = 60_000;

/// A batch of 1 to 4 records over 6 keys, some tombstones, some compressed.
fn keyed(seed: u16) -> RecordBatch {
    let codec = if seed.is_multiple_of(3) {
        Compression::Lz4
    } else {
        Compression::None
    };
    let mut b = RecordBatchBuilder::new(codec);
    for j in 0..(1 + seed % 4) {
        let key = format!("key-{}", (seed / 4 + j * 5) % 6);
        let value = format!("{seed}-{j}-{}", "v".repeat((seed % 40) as usize));
        let tombstone = (seed / 3 + j).is_multiple_of(7);
        b.record(
            NOW_MS - 1_000,
            Some(key.as_bytes()),
            (!tombstone).then_some(value.as_bytes()),
        );
    }
    b.build().unwrap()
}

fn config() -> LogConfig {
    LogConfig {
        // A roll every few batches.
        segment_bytes: 1 << 10,
        index_interval_bytes: 256,
        retention_ms: -1,
        cleanup_policy: CleanupPolicy::CompactDelete,
        delete_retention_ms: DELETE_RETENTION_MS,
        ..LogConfig::default()
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/data/model-0")
}

fn check(ops: Vec<Op>) {
    run(|| async move {
        let disk = SimDisk::new();
        let opts = ShardOptions {
            batch_cache_bytes: 16 << 10,
            ..ShardOptions::default()
        };
        let mut shard = StorageShard::new(disk.clone(), opts.clone());
        let mut log = shard.open_log(dir(), config()).await.unwrap();
        let mut model = Model::default();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { seeds, sync } => {
                    let batches: Vec<_> = seeds.iter().map(|&s| keyed(s)).collect();
                    let d = if sync {
                        Durability::Synced
                    } else {
                        Durability::Written
                    };
                    let info = log.append(&batches, 3, 0, d).await.unwrap();
                    assert_eq!(info.base_offset, model.end(), "step {step}");
                    let mut base = info.base_offset;
                    for b in &batches {
                        let next = base + b.last_offset_delta() as i64 + 1;
                        model.batches.push((base, next, expected(b, base, 3)));
                        base = next;
                    }
                    model.log_end = base;
                    if sync {
                        model.synced_end = model.end();
                    }
                }
                Op::Truncate { at_permille } => {
                    let live: Vec<i64> = model
                        .batches
                        .iter()
                        .filter(|b| b.0 >= model.log_start)
                        .map(|b| b.0)
                        .collect();
                    if live.is_empty() {
                        continue;
                    }
                    let cut = live[live.len() * at_permille as usize / 1000];
                    // The compacted part cannot be cut into (see `truncate_to`).
                    let compacted_to = log.first_dirty_offset();
                    match log.truncate_to(cut).await {
                        Err(_) if cut <= compacted_to => continue,
                        r => r.unwrap(),
                    }
                    model.batches.retain(|b| b.0 < cut);
                    model.synced_end = model.synced_end.min(cut);
                    model.log_end = cut;
                }
                Op::DeleteRecords { at_permille } => {
                    let span = model.end() - model.log_start;
                    let to = model.log_start + span * at_permille as i64 / 1000;
                    let start = log.delete_records(to).await.unwrap();
                    model.log_start = model.log_start.max(to);
                    assert_eq!(start, model.log_start, "step {step}");
                }
                Op::RetainKib { kib } => {
                    let mut c = config();
                    c.retention_bytes = kib as i64 * 1024;
                    log.set_config(c);
                    let before = log.size_bytes();
                    log.enforce_retention(0).await.unwrap();
                    log.set_config(config());
                    let start = log.log_start_offset();
                    assert!(start >= model.log_start, "step {step}: start moved back");
                    if start > model.log_start {
                        // A segment's base: a batch boundary, or in a compaction gap.
                        assert!(
                            !model.batches.iter().any(|b| b.0 < start && start < b.1),
                            "step {step}: retention start {start} is inside a batch"
                        );
                        assert!(log.size_bytes() >= kib as u64 * 1024 || log.segment_count() == 1);
                        assert!(log.size_bytes() < before);
                    }
                    model.log_start = start;
                }
                Op::Compact { later, small_map } => {
                    let now = if later {
                        NOW_MS + 2 * DELETE_RETENTION_MS
                    } else {
                        NOW_MS
                    };
                    let options = CleanerOptions {
                        dedupe_buffer_bytes: if small_map { 4 * 32 } else { 1 << 20 },
                        io_buffer_bytes: 4096,
                        ..CleanerOptions::default()
                    };
                    if log.compact(now, &options).await.unwrap().is_some() {
                        model.compact(log.first_dirty_offset(), log.active_segment_base(), now);
                    }
                }
                Op::Reopen => {
                    log.close().await.unwrap();
                    log = shard.open_log(dir(), config()).await.unwrap();
                }
                Op::Crash { seed } => {
                    drop(log);
                    drop(shard);
                    disk.crash(seed);
                    shard = StorageShard::new(disk.clone(), opts.clone());
                    log = shard.open_log(dir(), config()).await.unwrap();
                    let end = log.log_end_offset();
                    assert!(end >= model.synced_end, "step {step}: synced data lost");
                    model.batches.retain(|b| b.1 <= end);
                    model.synced_end = end;
                    model.log_end = end;
                    // The log start checkpoint is synced when written; it only comes back
                    // down when the power loss took unsynced data below it.
                    model.log_start = model.log_start.min(end);
                }
            }
            assert_eq!(
                log.log_end_offset(),
                model.end().max(model.log_start),
                "step {step}"
            );
            assert_eq!(log.log_start_offset(), model.log_start, "step {step}");
            // Batches the cleaner emptied (kept for their offsets) hold no records: the model
            // has no such batches.
            let got: Vec<_> = read_batches(&log, false)
                .await
                .into_iter()
                .filter(|(h, _)| h.record_count > 0)
                .collect();
            let want: Vec<&(i64, i64, Vec<u8>)> = model
                .batches
                .iter()
                .filter(|b| b.1 > model.log_start)
                .collect();
            assert_eq!(got.len(), want.len(), "step {step}: batch count");
            for ((h, bytes), (base, _, w)) in got.iter().zip(want) {
                assert_eq!(h.base_offset, *base, "step {step}");
                assert_eq!(&bytes[..], &w[..], "step {step}: bytes of batch {base}");
            }
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_its_model(ops in prop::collection::vec(op(), 1..40)) {
        check(ops);
    }
}
