//! Property test: random sequences of append / roll / truncate / DeleteRecords / retention /
//! clean reopen / power loss, over the simulated disk, checked after every step against a
//! model (a list of batches with their bytes and the log start offset).

mod storage_common;

use std::path::PathBuf;

use corebus_broker::storage::{Durability, LogConfig, ShardOptions, SimDisk, StorageShard};
use proptest::prelude::*;
use storage_common::{expected, make, read_all, run};

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
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(any::<u16>(), 1..4), any::<bool>())
            .prop_map(|(seeds, sync)| Op::Append { seeds, sync }),
        1 => (0u16..1000).prop_map(|at_permille| Op::Truncate { at_permille }),
        1 => (0u16..1000).prop_map(|at_permille| Op::DeleteRecords { at_permille }),
        1 => (0u16..300).prop_map(|kib| Op::RetainKib { kib }),
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
}

impl Model {
    fn end(&self) -> i64 {
        self.batches.last().map_or(self.log_start, |b| b.1)
    }
}

fn config() -> LogConfig {
    let mut c = LogConfig::default();
    c.segment_bytes = 24 << 10; // a roll every few batches
    c.index_interval_bytes = 2048;
    c.retention_ms = -1;
    c
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
                    let batches: Vec<_> = seeds.iter().map(|&s| make(s as u64)).collect();
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
                    log.truncate_to(cut).await.unwrap();
                    model.batches.retain(|b| b.0 < cut);
                    model.synced_end = model.synced_end.min(cut);
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
                        assert!(
                            model.batches.iter().any(|b| b.0 == start),
                            "step {step}: retention start {start} is not a batch boundary"
                        );
                        assert!(log.size_bytes() >= kib as u64 * 1024 || log.segment_count() == 1);
                        assert!(log.size_bytes() < before);
                    }
                    model.log_start = start;
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
            let got = read_all(&log).await;
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
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_its_model(ops in prop::collection::vec(op(), 1..40)) {
        check(ops);
    }
}
