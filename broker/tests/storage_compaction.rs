//! The log cleaner over the simulated disk: latest record per key with offsets unchanged,
//! tombstone expiry, producer-state batches, selection by dirty ratio and lag, readers during
//! swaps, and a clean interrupted at every one of its disk operations followed by a power
//! loss.

mod storage_common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bytes::Bytes;
use corebus_broker::storage::{
    CleanerOptions, CleanupPolicy, Disk, Durability, LogConfig, PartitionLog, ShardOptions,
    SimDisk, StorageShard,
};
use corebus_wire::record::{BatchHeader, Compression, RecordBatch, RecordBatchBuilder};
use storage_common::run;

/// (offset, key, value) of one record.
type Rec = (i64, Vec<u8>, Option<Vec<u8>>);

const NOW: i64 = 1_000_000;
const DELETE_RETENTION_MS: i64 = 1_000;

fn config() -> LogConfig {
    LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        segment_bytes: 1500,
        index_interval_bytes: 256,
        retention_ms: -1,
        delete_retention_ms: DELETE_RETENTION_MS,
        ..LogConfig::default()
    }
}

fn opts() -> ShardOptions {
    ShardOptions {
        batch_cache_bytes: 4 << 10,
        ..ShardOptions::default()
    }
}

fn cleaner() -> CleanerOptions {
    CleanerOptions {
        io_buffer_bytes: 4096,
        ..CleanerOptions::default()
    }
}

fn dir(n: u32) -> PathBuf {
    PathBuf::from(format!("/data/compact-{n}"))
}

/// Batch `i`: three keyed records, some tombstones, a codec that varies.
fn batch_for(i: u64) -> RecordBatch {
    let codec = match i % 4 {
        0 => Compression::None,
        1 => Compression::Lz4,
        2 => Compression::Zstd,
        _ => Compression::Gzip,
    };
    let mut b = RecordBatchBuilder::new(codec);
    for j in 0..3u64 {
        let key = format!("k{}", (i * 7 + j) % 12);
        let value = format!("value-{i}-{j}-{}", "x".repeat((i % 5) as usize * 20));
        let tombstone = (i + j).is_multiple_of(11);
        b.record(
            NOW - 100_000 + i as i64,
            Some(key.as_bytes()),
            (!tombstone).then_some(value.as_bytes()),
        );
    }
    b.build().expect("valid batch")
}

/// Appends batches `0..n` (synced) and returns every record appended.
async fn fill<D: Disk>(log: &PartitionLog<D>, n: u64) -> Vec<Rec> {
    let mut all = Vec::new();
    for i in 0..n {
        let b = batch_for(i);
        let info = log
            .append(std::slice::from_ref(&b), 1, NOW, Durability::Synced)
            .await
            .unwrap();
        for (j, r) in b.records().unwrap().enumerate() {
            let r = r.unwrap();
            all.push((
                info.base_offset + j as i64,
                r.key.unwrap().to_vec(),
                r.value.map(|v| v.to_vec()),
            ));
        }
    }
    all
}

/// Every batch and record of the log from its start; checks offsets strictly increase.
async fn read_records<D: Disk>(log: &PartitionLog<D>) -> (Vec<BatchHeader>, Vec<Rec>) {
    let mut headers: Vec<BatchHeader> = Vec::new();
    let mut recs: Vec<Rec> = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let r = log.read(offset, 8 << 10).await.expect("read");
        if r.is_empty() {
            break;
        }
        let mut rest = r.to_bytes();
        while !rest.is_empty() {
            let h = BatchHeader::parse(&rest).expect("header");
            let bytes: Bytes = rest.split_to(h.total_len());
            let batch = RecordBatch::parse(bytes).expect("batch");
            batch.verify_crc().expect("crc");
            if let Some(prev) = headers.last() {
                assert!(h.base_offset >= prev.next_offset(), "batches overlap");
            }
            if h.next_offset() <= offset {
                continue; // the batch before a mid-batch start
            }
            for rec in batch.records().unwrap() {
                let rec = rec.unwrap();
                let o = h.base_offset + i64::from(rec.offset_delta);
                if let Some(last) = recs.last() {
                    assert!(o > last.0, "record offsets must increase");
                }
                recs.push((o, rec.key.unwrap().to_vec(), rec.value.map(|v| v.to_vec())));
            }
            offset = h.next_offset();
            headers.push(h);
        }
    }
    (headers, recs)
}

/// What a full clean of everything below `first_dirty` keeps: the latest record per key
/// below it (tombstones included unless `tombstones_expired`), and all records from it.
fn expected(all: &[Rec], first_dirty: i64, tombstones_expired: bool) -> Vec<Rec> {
    let mut latest: HashMap<&[u8], i64> = HashMap::new();
    for (o, k, _) in all.iter().filter(|r| r.0 < first_dirty) {
        latest.insert(k, *o);
    }
    all.iter()
        .filter(|(o, k, v)| {
            *o >= first_dirty
                || (latest.get(k.as_slice()) == Some(o) && (v.is_some() || !tombstones_expired))
        })
        .cloned()
        .collect()
}

#[test]
fn compaction_keeps_the_latest_record_per_key_at_its_offset() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts());
        let log = shard.open_log(dir(0), config()).await.unwrap();
        let all = fill(&log, 80).await;
        let segments_before = log.segment_count();
        assert!(segments_before > 5, "small segments: {segments_before}");
        let stats = log
            .compact(NOW, &cleaner())
            .await
            .unwrap()
            .expect("cleaned");
        let fd = log.first_dirty_offset();
        assert!(
            fd > 0 && fd < log.log_end_offset(),
            "active segment untouched: {fd}"
        );
        assert_eq!(stats.first_dirty_offset, fd);
        assert!(stats.batches_dropped > 0);
        assert!(log.segment_count() <= segments_before);
        let (_, recs) = read_records(&log).await;
        assert_eq!(recs, expected(&all, fd, false));
        // Nothing new: a second clean finds nothing dirty.
        assert!(log.compact(NOW, &cleaner()).await.unwrap().is_none());
        // A fetch at a removed offset gets the next batch that has data.
        let kept: Vec<i64> = recs.iter().map(|r| r.0).collect();
        let removed = (0..fd)
            .find(|o| !kept.contains(o))
            .expect("something removed");
        let next_kept = *kept.iter().find(|&&o| o > removed).unwrap();
        let r = log.read(removed, 1).await.unwrap();
        let h = BatchHeader::parse(&r.to_bytes()).unwrap();
        assert!(h.next_offset() > removed && h.base_offset <= next_kept);
        // ListOffsets by time and DeleteRecords keep working on the compacted log.
        let (o, _) = log.offset_for_timestamp(0).await.unwrap().unwrap();
        assert_eq!(o, kept[0]);
        log.close().await.unwrap();
        drop(log);
        let log = shard.open_log(dir(0), config()).await.unwrap();
        assert_eq!(log.first_dirty_offset(), fd, "the checkpoint is durable");
        assert_eq!(
            read_records(&log).await.1,
            recs,
            "a restart keeps the compacted log"
        );
        let start = log.delete_records(next_kept).await.unwrap();
        assert_eq!(start, next_kept);
        assert_eq!(read_records(&log).await.1[0].0, next_kept);
    });
}

#[test]
fn cleaned_segments_merge_into_groups_of_at_most_segment_bytes() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts());
        let log = shard.open_log(dir(8), config()).await.unwrap();
        let mut all = fill(&log, 60).await;
        log.compact(NOW, &cleaner())
            .await
            .unwrap()
            .expect("cleaned");
        // The first clean leaves one small segment per old one; the next merges them.
        all.extend(fill(&log, 60).await);
        let before = log.segment_count();
        log.compact(NOW, &cleaner())
            .await
            .unwrap()
            .expect("cleaned");
        assert!(
            log.segment_count() < before,
            "{} >= {before}",
            log.segment_count()
        );
        assert_eq!(
            read_records(&log).await.1,
            expected(&all, log.first_dirty_offset(), false)
        );
        assert!(log.size_bytes() <= 2 * config().segment_bytes + 4096);
    });
}

#[test]
fn tombstones_go_after_delete_retention_ms_even_without_new_writes() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts());
        let log = shard.open_log(dir(1), config()).await.unwrap();
        let all = fill(&log, 60).await;
        log.compact(NOW, &cleaner())
            .await
            .unwrap()
            .expect("cleaned");
        let fd = log.first_dirty_offset();
        let (_, recs) = read_records(&log).await;
        assert!(
            recs.iter().any(|r| r.0 < fd && r.2.is_none()),
            "tombstones kept at first"
        );
        // Before the horizon the log is not due; after it, it is, with nothing dirty.
        let before = shard
            .clean_dirtiest(NOW + DELETE_RETENTION_MS - 1, &cleaner())
            .await;
        assert!(before.is_none());
        let after = shard
            .clean_dirtiest(NOW + DELETE_RETENTION_MS, &cleaner())
            .await;
        assert!(
            after.is_some(),
            "an expired tombstone horizon makes the log due"
        );
        let (_, recs) = read_records(&log).await;
        assert_eq!(recs, expected(&all, fd, true));
        assert!(!recs.iter().any(|r| r.0 < fd && r.2.is_none()));
    });
}

#[test]
fn the_last_batch_of_an_idempotent_producer_survives_empty() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts());
        let log = shard.open_log(dir(2), config()).await.unwrap();
        for seq in 0..3 {
            let mut b = RecordBatchBuilder::new(Compression::Snappy);
            b.producer(42, 1, seq * 2)
                .record(NOW, Some(b"p"), Some(b"one"))
                .record(NOW, Some(b"q"), Some(b"two"));
            log.append(&[b.build().unwrap()], 1, NOW, Durability::Synced)
                .await
                .unwrap();
        }
        // Later plain writes overwrite both keys, then enough to roll a few segments.
        fill(&log, 40).await;
        let mut b = RecordBatchBuilder::new(Compression::None);
        b.record(NOW, Some(b"p"), Some(b"new"))
            .record(NOW, Some(b"q"), Some(b"new"));
        log.append(&[b.build().unwrap()], 1, NOW, Durability::Synced)
            .await
            .unwrap();
        fill(&log, 20).await;
        log.compact(NOW, &cleaner())
            .await
            .unwrap()
            .expect("cleaned");
        let (headers, _) = read_records(&log).await;
        let ours: Vec<&BatchHeader> = headers.iter().filter(|h| h.producer_id == 42).collect();
        assert_eq!(ours.len(), 1, "only the producer's last batch stays");
        let h = ours[0];
        assert_eq!((h.base_offset, h.record_count, h.base_sequence), (4, 0, 4));
        assert_eq!(
            h.last_offset_delta, 1,
            "its offsets (and so its last sequence) stay"
        );
    });
}

#[test]
fn the_dirtiest_log_goes_first_and_lag_rules_hold() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts());
        let a = shard.open_log(dir(3), config()).await.unwrap();
        let mut strict = config();
        strict.min_cleanable_dirty_ratio_permille = 990;
        let b = shard.open_log(dir(4), strict.clone()).await.unwrap();
        let mut lagged = config();
        lagged.min_compaction_lag_ms = 10 * 60_000;
        let c = shard.open_log(dir(5), lagged).await.unwrap();
        fill(&a, 30).await;
        fill(&b, 60).await;
        fill(&c, 60).await;
        b.compact(NOW, &cleaner())
            .await
            .unwrap()
            .expect("b cleaned");
        fill(&b, 30).await; // b: dirty again, but not 99% dirty
        // c's records are 100 s old at most: younger than its 10 min lag, never cleaned.
        let first = shard
            .clean_dirtiest(NOW, &cleaner())
            .await
            .expect("a qualifies");
        assert_eq!(first.dir, dir(3), "a is all dirty");
        assert_eq!(c.first_dirty_offset(), 0);
        let second = shard.clean_dirtiest(NOW, &cleaner()).await;
        assert!(second.is_none(), "b is below its dirty ratio, c too young");
        assert!(c.compact(NOW, &cleaner()).await.unwrap().is_none());
        // max.compaction.lag.ms makes b due whatever its ratio.
        let mut due = strict;
        due.max_compaction_lag_ms = 1;
        b.set_config(due);
        let third = shard
            .clean_dirtiest(NOW, &cleaner())
            .await
            .expect("b is due");
        assert_eq!(third.dir, dir(4));
    });
}

#[test]
fn a_small_offset_map_cleans_a_prefix_and_the_rest_later() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts());
        let log = shard.open_log(dir(6), config()).await.unwrap();
        let all = fill(&log, 60).await;
        let small = CleanerOptions {
            dedupe_buffer_bytes: 6 * 32, // 6 of the 12 keys: two batches per clean
            ..cleaner()
        };
        let mut rounds = 0;
        while log.compact(NOW, &small).await.unwrap().is_some() {
            let fd = log.first_dirty_offset();
            assert_eq!(
                read_records(&log).await.1,
                expected(&all, fd, false),
                "round {rounds}"
            );
            rounds += 1;
        }
        assert!(rounds > 3, "the map filled: {rounds} rounds");
    });
}

#[test]
fn readers_during_swaps_see_whole_batches_in_offset_order() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts());
        let log = shard.open_log(dir(7), config()).await.unwrap();
        fill(&log, 40).await;
        let reader = {
            let log = log.clone();
            glommio::spawn_local(async move {
                let mut reads = 0;
                for _ in 0..200 {
                    let (_, recs) = read_records(&log).await;
                    assert!(!recs.is_empty());
                    reads += 1;
                    futures_lite::future::yield_now().await;
                }
                reads
            })
        };
        for round in 0..10u64 {
            let b = batch_for(round * 13 + 5);
            for _ in 0..8 {
                log.append(std::slice::from_ref(&b), 1, NOW, Durability::Written)
                    .await
                    .unwrap();
            }
            log.compact(NOW, &cleaner()).await.unwrap();
        }
        assert_eq!(reader.await, 200);
    });
}

#[test]
fn idle_compacted_logs_cost_no_disk_io_per_wake() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts());
        let mut logs = Vec::new();
        for n in 0..200 {
            let log = shard.open_log(dir(100 + n), config()).await.unwrap();
            fill(&log, 12).await;
            logs.push(log);
        }
        while shard.clean_dirtiest(NOW, &cleaner()).await.is_some() {}
        assert!(logs.iter().all(|l| l.first_dirty_offset() > 0));
        let reads = disk.read_count();
        let writes = disk.mutations();
        let started = std::time::Instant::now();
        for _ in 0..100 {
            assert!(shard.clean_dirtiest(NOW, &cleaner()).await.is_none());
        }
        let per_wake = started.elapsed() / 100;
        assert_eq!(disk.read_count(), reads, "an idle wake reads nothing");
        assert_eq!(disk.mutations(), writes, "an idle wake writes nothing");
        eprintln!("idle wake over 200 compacted logs: {per_wake:?}");
    });
}

/// A log with data in sealed segments, every append synced.
async fn prepared(disk: &SimDisk) -> (StorageShard<SimDisk>, PartitionLog<SimDisk>, Vec<Rec>) {
    let shard = StorageShard::new(disk.clone(), opts());
    let log = shard.open_log(dir(9), config()).await.unwrap();
    let all = fill(&log, 40).await;
    // A first clean, then more data: the interrupted clean rewrites clean and dirty parts.
    log.compact(NOW, &cleaner())
        .await
        .unwrap()
        .expect("cleaned");
    let more: Vec<Rec> = fill(&log, 25).await;
    let mut all = all;
    all.extend(more);
    (shard, log, all)
}

#[test]
fn a_clean_interrupted_at_every_step_then_power_loss_loses_nothing_it_should_keep() {
    // A reference run counts the clean's disk operations and gives the full result.
    let (total_ops, reference) = run(|| async {
        let disk = SimDisk::new();
        let (_shard, log, _) = prepared(&disk).await;
        let before = disk.mutations();
        log.compact(NOW, &cleaner())
            .await
            .unwrap()
            .expect("cleaned");
        let ops = disk.mutations() - before;
        (ops, read_records(&log).await.1)
    });
    assert!(total_ops > 10, "a clean is many steps: {total_ops}");
    for step in 0..=total_ops {
        let reference = reference.clone();
        run(|| async move {
            let disk = SimDisk::new();
            let (shard, log, all) = prepared(&disk).await;
            disk.halt_after(Some(step));
            let outcome = log.compact(NOW, &cleaner()).await;
            disk.halt_after(None);
            if step == total_ops {
                assert!(outcome.is_ok(), "step {step}: the whole clean fits");
            }
            drop(log);
            drop(shard);
            disk.crash(step * 31 + 7);
            let shard = StorageShard::new(disk.clone(), opts());
            let log = shard.open_log(dir(9), config()).await.unwrap();
            let names = disk.list_dir(&dir(9)).unwrap();
            assert!(
                !names
                    .iter()
                    .any(|n| n.ends_with(".cleaned") || n.ends_with(".swap")),
                "step {step}: leftovers {names:?}"
            );
            let (_, recs) = read_records(&log).await;
            // Every record read was appended, at its offset.
            let appended: BTreeMap<i64, &Rec> = all.iter().map(|r| (r.0, r)).collect();
            for r in &recs {
                assert_eq!(appended.get(&r.0), Some(&r), "step {step}: record {}", r.0);
            }
            // Every record missing has a later record of its key present.
            let present: BTreeMap<i64, &Rec> = recs.iter().map(|r| (r.0, r)).collect();
            for r in &all {
                if !present.contains_key(&r.0) {
                    assert!(
                        recs.iter().any(|p| p.1 == r.1 && p.0 > r.0),
                        "step {step}: record {} of key {:?} lost",
                        r.0,
                        String::from_utf8_lossy(&r.1)
                    );
                }
            }
            // And the clean, run again, ends where an uninterrupted one does.
            log.compact(NOW, &cleaner()).await.unwrap();
            assert_eq!(read_records(&log).await.1, reference, "step {step}");
        });
    }
}
