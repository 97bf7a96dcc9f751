//! Partition log behaviour over the simulated disk (and the real one where it matters):
//! round trips, index lookups, rolls, recovery, retention, failures.

mod storage_common;

use std::path::PathBuf;
use std::rc::Rc;

use corebus_broker::storage::{
    Disk, DmaDisk, Durability, LogConfig, MessageTimestampType, PartitionLog, ReadEnd,
    ShardOptions, SimDisk, StorageError, StorageShard,
};
use storage_common::{expected, make, read_all, read_batches, run};

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

fn opts(cache_bytes: usize) -> ShardOptions {
    ShardOptions {
        batch_cache_bytes: cache_bytes,
        ..ShardOptions::default()
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/data/t-0")
}

#[test]
fn append_read_round_trip_from_cache_and_disk() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts(32 << 10));
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        let mut appended = Vec::new();
        for seed in 0..200u64 {
            let b = make(seed);
            let info = log
                .append(std::slice::from_ref(&b), 7, 0, Durability::Written)
                .await
                .unwrap();
            assert_eq!(
                info.last_offset - info.base_offset + 1,
                b.record_count() as i64
            );
            appended.push((info.base_offset, expected(&b, info.base_offset, 7)));
        }
        assert!(log.segment_count() > 5, "small segments rolled");
        let all = read_all(&log).await;
        assert_eq!(all.len(), appended.len());
        for ((h, bytes), (base, want)) in all.iter().zip(&appended) {
            assert_eq!(h.base_offset, *base);
            assert_eq!(&bytes[..], &want[..]);
        }
        // Every offset, including mid-batch ones, starts at the batch containing it.
        for (i, (base, want)) in appended.iter().enumerate() {
            let next = appended.get(i + 1).map_or(log.written_offset(), |n| n.0);
            for offset in [*base, (base + next) / 2, next - 1] {
                let r = log.read(offset, 1).await.unwrap();
                let got = r.to_bytes();
                assert_eq!(&got[..], &want[..], "offset {offset}");
            }
        }
        // Past the end and below the start.
        let end = log.written_offset();
        assert!(log.read(end, 100).await.unwrap().is_empty());
        match log.read(end + 1, 100).await {
            Err(e @ StorageError::OffsetOutOfRange { .. }) => assert_eq!(e.kafka_error_code(), 1),
            other => panic!(
                "expected out of range, got {:?}",
                other.map(|r| r.len_bytes())
            ),
        }
        // Close, reopen: the same log, read from disk (fresh shard, empty cache).
        log.close().await.unwrap();
        let shard2 = StorageShard::new(disk.clone(), opts(0));
        let log2 = shard2.open_log(dir(), small_config()).await.unwrap();
        assert_eq!(log2.log_end_offset(), end);
        let again = read_all(&log2).await;
        assert_eq!(again.len(), appended.len());
        for ((_, bytes), (_, want)) in again.iter().zip(&appended) {
            assert_eq!(&bytes[..], &want[..]);
        }
    });
}

#[test]
fn concurrent_appends_get_offsets_in_call_order() {
    run(|| async {
        let shard = StorageShard::new(SimDisk::new(), opts(1 << 20));
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        let mut tasks = Vec::new();
        let order = Rc::new(std::cell::RefCell::new(Vec::new()));
        for seed in 0..64u64 {
            let log = log.clone();
            let order = order.clone();
            tasks.push(glommio::spawn_local(async move {
                let info = log
                    .append(&[make(seed)], 0, 0, Durability::Written)
                    .await
                    .unwrap();
                order.borrow_mut().push(info.base_offset);
                (seed, info.base_offset)
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await);
        }
        // Offsets follow spawn (call) order; acks complete in offset order.
        let bases: Vec<i64> = results.iter().map(|r| r.1).collect();
        assert!(bases.windows(2).all(|w| w[0] < w[1]));
        let acked = order.borrow().clone();
        assert!(
            acked.windows(2).all(|w| w[0] < w[1]),
            "acks in offset order"
        );
        assert_eq!(read_all(&log).await.len(), 64);
    });
}

#[test]
fn synced_appends_survive_a_power_loss_and_unsynced_may_vanish() {
    for seed in 1..40u64 {
        eprintln!("power-loss seed {seed}");
        run(|| async move {
            let disk = SimDisk::new();
            let shard = StorageShard::new(disk.clone(), opts(1 << 20));
            let log = shard.open_log(dir(), small_config()).await.unwrap();
            let mut synced_end = 0;
            let mut appended = Vec::new();
            for i in 0..60u64 {
                let b = make(seed * 1000 + i);
                let durability = if (seed + i) % 7 == 0 {
                    Durability::Synced
                } else {
                    Durability::Written
                };
                let info = log
                    .append(std::slice::from_ref(&b), 1, 0, durability)
                    .await
                    .unwrap();
                appended.push((info.base_offset, expected(&b, info.base_offset, 1)));
                if durability == Durability::Synced {
                    synced_end = info.last_offset + 1;
                }
            }
            assert!(log.synced_offset() >= synced_end);
            drop(log);
            drop(shard);
            disk.crash(seed);
            let shard = StorageShard::new(disk.clone(), opts(1 << 20));
            let log = shard.open_log(dir(), small_config()).await.unwrap();
            assert!(
                log.log_end_offset() >= synced_end,
                "seed {seed}: synced data lost ({} < {synced_end})",
                log.log_end_offset()
            );
            let all = read_all(&log).await;
            // What survived is a prefix of what was appended, byte for byte.
            for ((h, bytes), (base, want)) in all.iter().zip(&appended) {
                assert_eq!(h.base_offset, *base);
                assert_eq!(&bytes[..], &want[..], "seed {seed}");
            }
            // And the log takes appends again from its recovered end.
            let end = log.log_end_offset();
            let info = log
                .append(&[make(7)], 1, 0, Durability::Synced)
                .await
                .unwrap();
            assert_eq!(info.base_offset, end);
        });
    }
}

#[test]
fn recovery_cuts_exactly_at_a_corrupt_or_truncated_batch() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts(0));
        let mut config = small_config();
        config.segment_bytes = 1 << 30;
        let log = shard.open_log(dir(), config.clone()).await.unwrap();
        let mut infos = Vec::new();
        for seed in 0..20u64 {
            infos.push(
                log.append(&[make(seed)], 0, 0, Durability::Synced)
                    .await
                    .unwrap(),
            );
        }
        log.close().await.unwrap();
        drop(log);
        let seg = dir().join("00000000000000000000.log");
        let original = disk.contents(&seg).unwrap();
        // Position of batch 12: sum of the lengths before it.
        let pos12: usize = (0..12u64).map(|s| make(s).len()).sum();
        // 1. Flip a byte inside batch 12 (CRC fails): recovery keeps batches 0..12.
        let mut corrupt = original.clone();
        corrupt[pos12 + 70] ^= 0xff;
        disk.set_contents(&seg, corrupt);
        // A crash after writes leaves no clean-shutdown marker (the first write after open
        // removes it): without it, open scans the segment.
        disk.remove(&dir().join("clean-shutdown")).await.unwrap();
        let log = shard.open_log(dir(), config.clone()).await.unwrap();
        assert_eq!(log.log_end_offset(), infos[12].base_offset);
        assert_eq!(disk.contents(&seg).unwrap().len(), pos12);
        drop(log);
        // 2. Cut the file in the middle of batch 5's header: recovery keeps 0..5.
        let pos5: usize = (0..5u64).map(|s| make(s).len()).sum();
        disk.set_contents(&seg, original[..pos5 + 30].to_vec());
        let log = shard.open_log(dir(), config.clone()).await.unwrap();
        assert_eq!(log.log_end_offset(), infos[5].base_offset);
        assert_eq!(read_all(&log).await.len(), 5);
        // And appends continue at exactly that offset.
        let info = log
            .append(&[make(99)], 0, 0, Durability::Written)
            .await
            .unwrap();
        assert_eq!(info.base_offset, infos[5].base_offset);
    });
}

#[test]
fn preallocated_zeros_are_cut_and_a_last_segment_of_zeros_is_dropped() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts(0));
        let config = small_config();
        let log = shard.open_log(dir(), config.clone()).await.unwrap();
        let mut acked = Vec::new();
        while log.segment_count() < 3 {
            let seed = acked.len() as u64;
            let info = log
                .append(&[make(seed)], 0, 0, Durability::Synced)
                .await
                .unwrap();
            acked.push((info.base_offset, seed));
        }
        // The active segment grew past its data with the zeros of its preallocation.
        let mut segments: Vec<String> = disk
            .list_dir(&dir())
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(".log"))
            .collect();
        segments.sort();
        let active = dir().join(segments.last().unwrap());
        assert!(
            disk.contents(&active).unwrap().len() > 64 << 10,
            "preallocated"
        );
        drop(log);
        drop(shard);
        // A crash between the seal of the middle segment and the first write of the last:
        // the last holds only zeros, the middle one is left untrimmed (zeros after its data).
        let middle = dir().join(&segments[segments.len() - 2]);
        let mut untrimmed = disk.contents(&middle).unwrap();
        let middle_len = untrimmed.len();
        untrimmed.resize(middle_len + (1 << 20), 0);
        disk.set_contents(&middle, untrimmed);
        disk.set_contents(&active, vec![0; 1 << 20]);
        let _ = disk.remove(&dir().join("clean-shutdown")).await;
        let shard = StorageShard::new(disk.clone(), opts(0));
        let log = shard.open_log(dir(), config.clone()).await.unwrap();
        assert_eq!(log.segment_count(), 2, "the segment of zeros is gone");
        assert!(disk.contents(&active).is_none());
        assert_eq!(
            disk.contents(&middle).unwrap().len(),
            middle_len,
            "zeros cut"
        );
        let base: i64 = segments.last().unwrap()[..20].parse().unwrap();
        assert_eq!(log.log_end_offset(), base);
        let kept: Vec<_> = acked.iter().filter(|(b, _)| *b < base).collect();
        let all = read_all(&log).await;
        assert_eq!(all.len(), kept.len());
        for ((h, bytes), (b, seed)) in all.iter().zip(&kept) {
            assert_eq!(h.base_offset, *b);
            assert_eq!(&bytes[..], &expected(&make(*seed), *b, 0)[..]);
        }
        // Appends go on at the recovered end; a clean close leaves the file at its data.
        let info = log
            .append(&[make(1_000)], 0, 0, Durability::Synced)
            .await
            .unwrap();
        assert_eq!(info.base_offset, base);
        log.close().await.unwrap();
        let mut names: Vec<String> = disk
            .list_dir(&dir())
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(".log"))
            .collect();
        names.sort();
        let last = disk.contents(&dir().join(names.last().unwrap())).unwrap();
        let tail = expected(&make(1_000), base, 0);
        assert!(
            last.ends_with(&tail),
            "closed at its data, no zeros after it"
        );
    });
}

#[test]
fn retention_by_size_and_time_and_delete_records() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts(0));
        let mut config = small_config();
        config.retention_ms = -1;
        config.retention_bytes = -1;
        let log = shard.open_log(dir(), config.clone()).await.unwrap();
        for seed in 0..300u64 {
            log.append(&[make(seed)], 0, 0, Durability::Written)
                .await
                .unwrap();
        }
        let segments = log.segment_count();
        assert!(segments > 10);
        // Size: keep at least 200 KiB, never the active segment.
        let mut c = config.clone();
        c.retention_bytes = 200 << 10;
        log.set_config(c);
        let deleted = log.enforce_retention(0).await.unwrap();
        assert!(deleted > 0);
        assert!(log.size_bytes() >= 200 << 10);
        assert!(log.size_bytes() < (200 << 10) + (64 << 10));
        let start = log.log_start_offset();
        assert!(start > 0);
        assert!(matches!(
            log.read(start - 1, 100).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(read_all(&log).await[0].0.base_offset, start);
        // Time: every sealed segment's timestamps are ~1e6 ms; now = 1e12 deletes all sealed.
        let mut c = config.clone();
        c.retention_ms = 1000;
        log.set_config(c);
        log.enforce_retention(1_000_000_000_000).await.unwrap();
        assert_eq!(log.segment_count(), 1, "only the active segment stays");
        // DeleteRecords inside the active segment moves the start without deleting files.
        let end = log.written_offset();
        let start = log.log_start_offset();
        let target = (start + end) / 2;
        assert_eq!(log.delete_records(target).await.unwrap(), target);
        assert!(log.delete_records(end + 1).await.is_err());
        let first = log.read(target, 1).await.unwrap().to_bytes();
        let h = corebus_wire::record::BatchHeader::parse(&first).unwrap();
        assert!(h.base_offset <= target && target < h.next_offset());
        // The log start offset survives a restart.
        log.close().await.unwrap();
        let log = shard.open_log(dir(), config).await.unwrap();
        assert_eq!(log.log_start_offset(), target);
    });
}

/// The partitions of one acks=all request share one group-commit round (`sync_all`), where
/// syncing each in turn costs a round per partition.
#[test]
fn sync_all_takes_one_group_commit_round_for_many_logs() {
    run(|| async {
        let shard = StorageShard::new(SimDisk::new(), opts(0));
        let mut logs = Vec::new();
        for i in 0..8 {
            let d = PathBuf::from(format!("/data/many-{i}"));
            logs.push(shard.open_log(d, small_config()).await.unwrap());
        }
        let append_all = |seed: u64| {
            logs.iter()
                .map(|l| (l, l.append_nowait(&[make(seed)], 0, 0).unwrap().ticket))
                .collect::<Vec<_>>()
        };
        let targets = append_all(1);
        let before = shard.group_commit_rounds();
        for r in PartitionLog::sync_all(&targets).await {
            r.unwrap();
        }
        assert_eq!(shard.group_commit_rounds() - before, 1);
        for (log, ticket) in &targets {
            assert!(log.synced_offset() >= ticket.next);
        }
        // The same syncs awaited one after another: a round each.
        let targets = append_all(2);
        let before = shard.group_commit_rounds();
        for (log, ticket) in &targets {
            log.sync_to(ticket.next).await.unwrap();
        }
        assert_eq!(shard.group_commit_rounds() - before, 8);
    });
}

/// KIP-734: MAX_TIMESTAMP names the record carrying the largest timestamp, not its batch,
/// also inside a compressed batch.
#[test]
fn max_timestamp_names_the_record_inside_its_batch() {
    use corebus_wire::record::{Compression, RecordBatchBuilder};
    run(|| async {
        let shard = StorageShard::new(SimDisk::new(), opts(0));
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        assert_eq!(log.max_timestamp().await.unwrap(), None);
        let base = 1_700_000_000_000i64;
        for (codec, deltas) in [
            (Compression::None, [100i64, 400, 200]),
            (Compression::Lz4, [50, 60, 30]),
        ] {
            let mut b = RecordBatchBuilder::new(codec);
            for d in deltas {
                b.record(base + d, Some(b"k"), Some(b"v"));
            }
            log.append(&[b.build().unwrap()], 0, 0, Durability::Written)
                .await
                .unwrap();
        }
        // Records 0..3 in the first batch, 3..6 in the second: the largest (+400) is offset 1.
        assert_eq!(log.max_timestamp().await.unwrap(), Some((base + 400, 1)));
        let mut b = RecordBatchBuilder::new(Compression::Lz4);
        for d in [500i64, 900, 900, 700] {
            b.record(base + d, None, Some(b"v"));
        }
        log.append(&[b.build().unwrap()], 0, 0, Durability::Written)
            .await
            .unwrap();
        // The first of two records with the largest timestamp: 6 + 1.
        assert_eq!(log.max_timestamp().await.unwrap(), Some((base + 900, 7)));
    });
}

#[test]
fn timestamps_lookup_and_log_append_time() {
    run(|| async {
        let shard = StorageShard::new(SimDisk::new(), opts(0));
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        let mut infos = Vec::new();
        for seed in 0..100u64 {
            infos.push(
                log.append(&[make(seed)], 0, 0, Durability::Written)
                    .await
                    .unwrap(),
            );
        }
        // make(seed) has max timestamp 1e6 + seed.
        for seed in [0u64, 1, 37, 99] {
            let (offset, ts) = log
                .offset_for_timestamp(1_000_000 + seed as i64)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(offset, infos[seed as usize].base_offset);
            assert_eq!(ts, 1_000_000 + seed as i64);
        }
        assert_eq!(log.offset_for_timestamp(2_000_000).await.unwrap(), None);
        assert_eq!(
            log.offset_for_timestamp(0).await.unwrap().unwrap().0,
            0,
            "earlier than everything: the first offset"
        );
        let (max_ts, max_off) = log.max_timestamp().await.unwrap().unwrap();
        assert_eq!((max_ts, max_off), (1_000_099, infos[99].base_offset));
        // LogAppendTime stamps the batch.
        let mut c = small_config();
        c.message_timestamp_type = MessageTimestampType::LogAppendTime;
        log.set_config(c);
        let info = log
            .append(&[make(1)], 0, 5_000_000, Durability::Written)
            .await
            .unwrap();
        assert_eq!(info.log_append_time, Some(5_000_000));
        let r = log.read(info.base_offset, 1).await.unwrap().to_bytes();
        let h = corebus_wire::record::BatchHeader::parse(&r).unwrap();
        assert_eq!(h.max_timestamp, 5_000_000);
        corebus_wire::record::verify_batch_crc(&r).unwrap();
        // Headers scan (producer-state rebuild).
        let headers = log.scan_headers(0, 1000).await.unwrap();
        assert_eq!(headers.len(), 101);
        assert_eq!(headers[50].base_offset, infos[50].base_offset);
    });
}

#[test]
fn truncate_to_cuts_the_end_and_appends_continue() {
    run(|| async {
        let shard = StorageShard::new(SimDisk::new(), opts(1 << 20));
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        let mut infos = Vec::new();
        for seed in 0..100u64 {
            infos.push(
                log.append(&[make(seed)], 0, 0, Durability::Written)
                    .await
                    .unwrap(),
            );
        }
        let cut = infos[40].base_offset;
        log.truncate_to(cut).await.unwrap();
        assert_eq!(log.log_end_offset(), cut);
        assert_eq!(read_all(&log).await.len(), 40);
        let info = log
            .append(&[make(500)], 0, 0, Durability::Written)
            .await
            .unwrap();
        assert_eq!(info.base_offset, cut);
        assert_eq!(read_all(&log).await.len(), 41);
        // Not a batch boundary: refused.
        assert!(
            log.truncate_to(infos[10].base_offset + 1).await.is_err()
                || make(10).record_count() == 1
        );
    });
}

#[test]
fn disk_full_gives_appends_back_and_recovers_when_space_returns() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts(1 << 20));
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        let first = log
            .append(&[make(1)], 0, 0, Durability::Synced)
            .await
            .unwrap();
        disk.set_disk_full(true);
        // Enough data to pass the preallocated extent (a roll to a new segment, whose file
        // cannot be preallocated).
        let mut failed = 0;
        for seed in 0..400u64 {
            match log.append(&[make(seed)], 0, 0, Durability::Written).await {
                Err(e @ StorageError::DiskFull { .. }) => {
                    assert_eq!(e.kafka_error_code(), 56);
                    failed += 1;
                }
                Err(e) => panic!("unexpected {e}"),
                Ok(_) => {}
            }
        }
        // The simulated disk refuses only growth past the file's end; appends that fit in
        // the preallocated extent went in, the rest must have failed without taking the log
        // offline.
        assert!(failed > 0);
        assert!(log.offline_reason().is_none());
        disk.set_disk_full(false);
        let end = log.written_offset();
        let info = log
            .append(&[make(2)], 0, 0, Durability::Synced)
            .await
            .unwrap();
        assert_eq!(info.base_offset, end, "no gap after the given-back appends");
        let all = read_all(&log).await;
        assert_eq!(all[0].0.base_offset, first.base_offset);
    });
}

#[test]
fn offsets_given_back_before_their_wait_began_are_not_taken_for_written() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts(1 << 20));
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        disk.set_disk_full(true);
        // The first write of a fresh segment cannot preallocate: its offsets are given back,
        // here before anyone waits for them (as for a produce request's later partitions).
        let given_back = log.append_nowait(&[make(1)], 0, 0).unwrap();
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(log.log_end_offset(), given_back.base_offset, "given back");
        disk.set_disk_full(false);
        let reused = log.append_nowait(&[make(2)], 0, 0).unwrap();
        assert_eq!(reused.base_offset, given_back.base_offset);
        log.wait_appended(reused.ticket).await.unwrap();
        assert!(log.written_offset() >= given_back.ticket.next);
        // The written mark passed the first append's end, but with other batches there.
        let late = log.wait_appended(given_back.ticket).await;
        assert!(
            matches!(late, Err(StorageError::DiskFull { .. })),
            "{late:?}"
        );
        let all = read_all(&log).await;
        assert_eq!(all.len(), 1);
        assert_eq!(
            &all[0].1[..],
            &expected(&make(2), reused.base_offset, 0)[..]
        );
    });
}

#[test]
fn a_failed_write_or_sync_takes_the_log_offline_for_good() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts(1 << 20));
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        log.append(&[make(1)], 0, 0, Durability::Written)
            .await
            .unwrap();
        disk.set_fail_syncs(true);
        let e = log
            .append(&[make(2)], 0, 0, Durability::Synced)
            .await
            .unwrap_err();
        assert!(matches!(e, StorageError::Offline { .. }));
        assert_eq!(e.kafka_error_code(), 56);
        disk.set_fail_syncs(false);
        // Never retried: still offline.
        assert!(
            log.append(&[make(3)], 0, 0, Durability::Written)
                .await
                .is_err()
        );
        assert!(log.read(0, 100).await.is_err());

        let log2 = shard
            .open_log(PathBuf::from("/data/t-1"), small_config())
            .await
            .unwrap();
        disk.set_fail_writes(true);
        assert!(
            log2.append(&[make(4)], 0, 0, Durability::Written)
                .await
                .is_err()
        );
        disk.set_fail_writes(false);
        assert!(log2.offline_reason().is_some());
    });
}

#[test]
fn flush_messages_syncs_without_being_asked() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts(1 << 20));
        let mut c = small_config();
        c.flush_messages = 1;
        let log = shard.open_log(dir(), c).await.unwrap();
        let info = log
            .append(&[make(1)], 0, 0, Durability::Written)
            .await
            .unwrap();
        for _ in 0..100 {
            if log.synced_offset() > info.last_offset {
                break;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(log.synced_offset() > info.last_offset);
        let mut c = small_config();
        c.flush_ms = 0;
        log.set_config(c);
        let info = log
            .append(&[make(2)], 0, 0, Durability::Written)
            .await
            .unwrap();
        glommio::timer::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            log.synced_offset() > info.last_offset,
            "flush.ms ticker synced"
        );
    });
}

#[test]
fn group_commit_syncs_many_partitions_together() {
    run(|| async {
        let shard = StorageShard::new(SimDisk::new(), opts(1 << 20));
        let mut logs = Vec::new();
        for p in 0..50 {
            logs.push(
                shard
                    .open_log(PathBuf::from(format!("/data/t-{p}")), small_config())
                    .await
                    .unwrap(),
            );
        }
        let tasks: Vec<_> = logs
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, log)| {
                glommio::spawn_local(async move {
                    log.append(&[make(i as u64)], 0, 0, Durability::Synced)
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        for log in &logs {
            assert_eq!(log.synced_offset(), log.log_end_offset());
        }
    });
}

#[test]
fn real_disk_round_trip_and_clean_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_owned();
    let dir = StorageShard::<DmaDisk>::log_dir(&data, "topic", 3);
    let appended = run(|| {
        let data = data.clone();
        let dir = dir.clone();
        async move {
            let disk = DmaDisk::new(&data).await.unwrap();
            let shard = StorageShard::new(disk, opts(0));
            let log = shard.open_log(dir, small_config()).await.unwrap();
            let mut appended = Vec::new();
            for seed in 0..150u64 {
                let b = make(seed);
                let d = if seed % 10 == 0 {
                    Durability::Synced
                } else {
                    Durability::Written
                };
                let info = log.append(std::slice::from_ref(&b), 2, 0, d).await.unwrap();
                appended.push(expected(&b, info.base_offset, 2));
            }
            let all = read_all(&log).await;
            assert_eq!(all.len(), 150);
            for ((_, got), want) in all.iter().zip(&appended) {
                assert_eq!(&got[..], &want[..]);
            }
            shard.close().await;
            appended
        }
    });
    run(|| async move {
        let disk = DmaDisk::new(&data).await.unwrap();
        let shard = StorageShard::new(disk, opts(0));
        let log = shard.open_log(dir.clone(), small_config()).await.unwrap();
        let all = read_all(&log).await;
        assert_eq!(all.len(), appended.len());
        for ((_, got), want) in all.iter().zip(&appended) {
            assert_eq!(&got[..], &want[..]);
        }
        assert!(std::fs::metadata(dir.join("00000000000000000000.index")).is_ok());
    });
}

#[test]
fn timestamp_lookup_finds_the_exact_record_inside_a_batch() {
    use corebus_wire::record::{Compression, RecordBatchBuilder};
    run(|| async {
        let shard = StorageShard::new(SimDisk::new(), opts(0));
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        log.append(&[make(1)], 0, 0, Durability::Written)
            .await
            .unwrap();
        for (round, codec) in [Compression::None, Compression::Lz4]
            .into_iter()
            .enumerate()
        {
            let t0 = 2_000_000 + 1000 * round as i64;
            let mut b = RecordBatchBuilder::new(codec);
            b.record(t0 + 100, Some(b"k"), Some(b"a"))
                .record(t0 + 200, Some(b"k"), Some(b"b"))
                .record(t0 + 300, Some(b"k"), Some(b"c"));
            let batch = b.build().unwrap();
            let info = log
                .append(&[batch], 0, 0, Durability::Written)
                .await
                .unwrap();
            let base = info.base_offset;
            assert_eq!(
                log.offset_for_timestamp(t0 + 150).await.unwrap(),
                Some((base + 1, t0 + 200)),
                "{codec:?}"
            );
            assert_eq!(
                log.offset_for_timestamp(t0 + 300).await.unwrap(),
                Some((base + 2, t0 + 300))
            );
            // Timestamps later than this batch's: the next batch (or none).
            let later = log.offset_for_timestamp(t0 + 301).await.unwrap();
            assert!(later.is_none_or(|(o, _)| o > base + 2));
            log.delete_records(base + 2).await.unwrap();
            assert_eq!(
                log.offset_for_timestamp(t0 + 150).await.unwrap(),
                Some((base + 2, t0 + 300)),
                "below the log start offset nothing is returned"
            );
        }
    });
}

#[test]
fn tailing_reads_come_from_the_cache_and_open_files_stay_bounded() {
    run(|| async {
        let disk = SimDisk::new();
        let options = ShardOptions {
            batch_cache_bytes: 1 << 20,
            max_open_files: 8,
            ..ShardOptions::default()
        };
        let shard = StorageShard::new(disk.clone(), options);
        let mut logs = Vec::new();
        for p in 0..20 {
            let d = PathBuf::from(format!("/data/t-{p}"));
            logs.push(shard.open_log(d, small_config()).await.unwrap());
        }
        let reads_before = disk.read_count();
        for round in 0..10u64 {
            for log in &logs {
                let offset = log.written_offset();
                let b = make(round);
                log.append(std::slice::from_ref(&b), 0, 0, Durability::Written)
                    .await
                    .unwrap();
                let got = log.read(offset, 1 << 20).await.unwrap().to_bytes();
                assert_eq!(&got[..], &expected(&b, offset, 0)[..]);
            }
        }
        assert_eq!(
            disk.read_count(),
            reads_before,
            "a tailing consumer never reads the disk"
        );
        assert!(
            shard.open_files() <= 8,
            "fd cache limit: {}",
            shard.open_files()
        );
        assert!(shard.cache_bytes() <= 1 << 20);
        // Evicted files reopen transparently.
        for log in &logs {
            assert_eq!(read_all(log).await.len(), 10);
        }
    });
}

#[test]
fn an_untouched_log_keeps_its_clean_marker_and_its_close_writes_nothing() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts(0));
        let marker = dir().join("clean-shutdown");
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        let mut end = 0;
        for seed in 0..5u64 {
            let info = log
                .append(&[make(seed)], 0, 0, Durability::Synced)
                .await
                .unwrap();
            end = info.last_offset + 1;
        }
        log.close().await.unwrap();
        drop(log);
        assert!(
            disk.contents(&marker).is_some(),
            "a clean close writes the marker"
        );

        // Open and close with nothing in between: the marker stays, nothing is written.
        let before = disk.mutations();
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        assert_eq!(log.log_end_offset(), end);
        log.close().await.unwrap();
        drop(log);
        assert_eq!(
            disk.mutations(),
            before,
            "an idle open and close mutate nothing"
        );
        assert!(disk.contents(&marker).is_some());

        // The first write after open removes the marker durably, before the data: a power
        // loss then leads to a scan of the segment, never to a stale marker being trusted.
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        let info = log
            .append(&[make(5)], 0, 0, Durability::Written)
            .await
            .unwrap();
        assert!(
            disk.contents(&marker).is_none(),
            "the first write removed the marker"
        );
        drop(log);
        disk.crash(7);
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        let end_after = log.log_end_offset();
        assert!(
            end_after == end || end_after == info.last_offset + 1,
            "recovered to the last close ({end}) or past the unsynced write, got {end_after}"
        );
        assert_eq!(
            read_all(&log).await.len(),
            if end_after == end { 5 } else { 6 }
        );
    });
}

/// A deleted topic's log is discarded: its writes drain, but it neither syncs nor writes the
/// clean-shutdown marker (both wasted on a directory about to go), so it succeeds even when
/// syncs fail, where a clean close does not; afterwards it refuses appends.
#[test]
fn discard_drains_without_syncing_or_marking_clean() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts(0));
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        for seed in 0..10u64 {
            log.append(&[make(seed)], 0, 0, Durability::Written)
                .await
                .unwrap();
        }
        disk.set_fail_syncs(true);
        log.discard().await.expect("discard needs no sync");
        assert!(
            disk.contents(&dir().join("clean-shutdown")).is_none(),
            "a discarded log writes no clean-shutdown marker"
        );
        assert!(
            log.append(&[make(99)], 0, 0, Durability::Written)
                .await
                .is_err(),
            "a discarded log refuses appends"
        );

        // The same log closed cleanly needs the sync, and says so.
        let other = PathBuf::from("/data/t-1");
        disk.set_fail_syncs(false);
        let log = shard.open_log(other, small_config()).await.unwrap();
        log.append(&[make(1)], 0, 0, Durability::Written)
            .await
            .unwrap();
        disk.set_fail_syncs(true);
        assert!(log.close().await.is_err(), "a clean close must sync");
    });
}

#[test]
fn a_replica_copy_keeps_the_leaders_offsets_and_epochs_byte_for_byte() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts(32 << 10));
        let leader = shard.open_log(dir(), small_config()).await.unwrap();
        for seed in 0..20u64 {
            let epoch = (seed / 7) as i32;
            leader
                .append(
                    std::slice::from_ref(&make(seed)),
                    epoch,
                    0,
                    Durability::Written,
                )
                .await
                .unwrap();
        }
        let from_leader = read_all(&leader).await;
        let follower = shard
            .open_log(PathBuf::from("/data/t-1"), small_config())
            .await
            .unwrap();
        // The leader's batches, as a fetch would carry them, in two rounds.
        let batches: Vec<_> = from_leader
            .iter()
            .map(|(_, bytes)| corebus_wire::record::RecordBatch::parse(bytes.clone()).unwrap())
            .collect();
        let (first, second) = batches.split_at(8);
        follower.append_replica(first, 0).unwrap();
        follower.append_replica(second, 0).unwrap();
        follower
            .wait_written(leader.written_offset())
            .await
            .unwrap();
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        let copied = read_all(&follower).await;
        assert_eq!(copied.len(), from_leader.len());
        for ((h1, b1), (h2, b2)) in copied.iter().zip(&from_leader) {
            assert_eq!(h1.base_offset, h2.base_offset);
            assert_eq!(&b1[..], &b2[..], "byte for byte");
        }
        // Going back is refused and appends nothing; so is a batch with a bad CRC.
        let end = follower.log_end_offset();
        match follower.append_replica(&batches[..1], 0) {
            Err(e @ StorageError::ReplicaOffset { .. }) => assert_eq!(e.kafka_error_code(), 1),
            other => panic!("expected a refusal, got {:?}", other.map(|i| i.base_offset)),
        }
        let mut torn = from_leader[0].1.to_vec();
        let last = torn.len() - 1;
        torn[last] ^= 0xff;
        // Moved past the end so only the CRC is wrong.
        torn[..8].copy_from_slice(&end.to_be_bytes());
        let torn = corebus_wire::record::RecordBatch::parse(bytes::Bytes::from(torn)).unwrap();
        assert!(matches!(
            follower.append_replica(&[torn], 0),
            Err(StorageError::InvalidBatch(_))
        ));
        assert_eq!(follower.log_end_offset(), end);
        // A gap (the leader compacted) is kept: the next batch lands at its own offset.
        let mut gapped = from_leader[0].1.to_vec();
        gapped[..8].copy_from_slice(&(end + 100).to_be_bytes());
        let gapped = corebus_wire::record::RecordBatch::parse(bytes::Bytes::from(gapped)).unwrap();
        let info = follower.append_replica(&[gapped], 0).unwrap();
        assert_eq!(info.base_offset, end + 100);
        assert!(follower.log_end_offset() > end + 100);
    })
}

#[test]
fn a_replicated_logs_high_watermark_moves_only_when_told_and_never_past_the_written_end() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts(32 << 10));
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        for seed in 0..4u64 {
            log.append(&[make(seed)], 0, 0, Durability::Written)
                .await
                .unwrap();
        }
        // A single replica: the high watermark is the written end.
        let end = log.written_offset();
        assert_eq!(log.high_watermark(), end);
        log.set_replicated(true);
        for seed in 4..8u64 {
            log.append(&[make(seed)], 0, 0, Durability::Written)
                .await
                .unwrap();
        }
        let written = log.written_offset();
        assert!(written > end);
        assert_eq!(log.high_watermark(), end, "writes alone move it no more");
        // A consumer reads nothing at the high watermark, and an offset between it and the
        // written end is empty rather than out of range; a follower reads on to the end.
        assert!(log.read(end, 1 << 20).await.unwrap().is_empty());
        assert!(log.read(written, 1 << 20).await.unwrap().is_empty());
        assert!(matches!(
            log.read(written + 1, 1 << 20).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        let copy = log.read_to(end, 1 << 20, ReadEnd::Written).await.unwrap();
        assert!(copy.len_bytes() > 0);
        assert_eq!(copy.high_watermark, end);
        // Told: it moves, never past the written end, never back.
        log.advance_high_watermark(end + 1);
        assert_eq!(log.high_watermark(), end + 1);
        log.advance_high_watermark(end);
        assert_eq!(log.high_watermark(), end + 1);
        log.advance_high_watermark(written + 10);
        assert_eq!(log.high_watermark(), written);
        // A waiter on it is released when it gets there.
        log.append(&[make(9)], 0, 0, Durability::Written)
            .await
            .unwrap();
        let later = log.written_offset();
        let waiting = log.wait_high_watermark(later);
        futures_lite::future::yield_now().await;
        log.set_replicated(false);
        waiting.await.unwrap();
        assert_eq!(log.high_watermark(), later);
    })
}

#[test]
fn leader_epochs_survive_a_crash_and_a_truncation_and_answer_as_kafkas_leader_does() {
    for seed in 1..20u64 {
        run(|| async move {
            let disk = SimDisk::new();
            let shard = StorageShard::new(disk.clone(), opts(1 << 20));
            let log = shard.open_log(dir(), small_config()).await.unwrap();
            // Epoch 0 alone writes no epochs file.
            log.append(&[make(1)], 0, 0, Durability::Synced)
                .await
                .unwrap();
            assert!(disk.contents(&dir().join("leader-epochs")).is_none());
            let mut starts = Vec::new();
            for epoch in [2, 5] {
                let info = log
                    .append(&[make(epoch as u64)], epoch, 0, Durability::Written)
                    .await
                    .unwrap();
                starts.push(info.base_offset);
                log.append(&[make(100 + epoch as u64)], epoch, 0, Durability::Written)
                    .await
                    .unwrap();
            }
            let synced_end = log.log_end_offset();
            log.sync_to(synced_end).await.unwrap();
            assert_eq!(log.latest_epoch(), 5);
            assert_eq!(log.end_offset_for_epoch(5), (5, synced_end));
            assert_eq!(log.end_offset_for_epoch(4), (2, starts[1]));
            assert_eq!(log.end_offset_for_epoch(1), (0, starts[0]));
            assert_eq!(log.end_offset_for_epoch(6), (-1, -1));
            // A batch of a newer epoch that may not survive the crash.
            log.append(&[make(9)], 7, 0, Durability::Written)
                .await
                .unwrap();
            drop(log);
            drop(shard);
            disk.crash(seed);
            let shard = StorageShard::new(disk.clone(), opts(1 << 20));
            let log = shard.open_log(dir(), small_config()).await.unwrap();
            let end = log.log_end_offset();
            assert!(end >= synced_end);
            // Epoch 7 is known exactly when its batch survived.
            let want_latest = if end > synced_end { 7 } else { 5 };
            assert_eq!(log.latest_epoch(), want_latest, "seed {seed}");
            assert_eq!(log.end_offset_for_epoch(4), (2, starts[1]));
            // A follower's truncation into epoch 2 forgets epoch 5, also across a reopen.
            log.truncate_to(starts[1]).await.unwrap();
            assert_eq!(log.latest_epoch(), 2);
            assert_eq!(log.end_offset_for_epoch(5), (-1, -1));
            log.close().await.unwrap();
            drop(log);
            let shard = StorageShard::new(disk.clone(), opts(1 << 20));
            let log = shard.open_log(dir(), small_config()).await.unwrap();
            assert_eq!(log.latest_epoch(), 2);
            assert_eq!(log.end_offset_for_epoch(2), (2, starts[1]));
        });
    }
}

#[test]
fn a_reopened_replicated_log_starts_its_high_watermark_at_the_checkpoint_or_the_log_start() {
    run(|| async {
        let disk = SimDisk::new();
        let shard = StorageShard::new(disk.clone(), opts(1 << 20));
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        for seed in 0..3u64 {
            log.append(&[make(seed)], 0, 0, Durability::Synced)
                .await
                .unwrap();
        }
        let end = log.written_offset();
        log.close().await.unwrap();
        drop(log);
        let shard = StorageShard::new(disk.clone(), opts(1 << 20));
        let log = shard.open_log(dir(), small_config()).await.unwrap();
        assert_eq!(
            log.high_watermark(),
            end,
            "a single replica sees its whole log"
        );
        // A checkpoint is followed, but never past what the log recovered.
        let first_batch_end = log.scan_headers(0, 1).await.unwrap()[0].last_offset() + 1;
        log.open_high_watermark(Some(first_batch_end));
        assert!(log.is_replicated());
        assert_eq!(log.high_watermark(), first_batch_end);
        assert_eq!(read_batches(&log, true).await.len(), 1);
        log.open_high_watermark(Some(end + 1_000));
        assert_eq!(log.high_watermark(), end);
        log.open_high_watermark(Some(-5));
        assert_eq!(log.high_watermark(), 0);
        // Without one, nothing is visible until replication says so.
        log.open_high_watermark(None);
        assert!(log.is_replicated());
        assert_eq!(log.high_watermark(), 0);
        assert!(log.read(0, 1 << 20).await.unwrap().is_empty());
        // A replica that becomes leader starts its epoch at its log end before any append: a
        // follower asking where its own epoch 0 ends is told here.
        log.begin_leader_epoch(5);
        assert_eq!(log.latest_epoch(), 5);
        assert_eq!(log.end_offset_for_epoch(5), (5, end));
        assert_eq!(log.end_offset_for_epoch(3), (0, end));
        // The broker rebuilds idempotent-producer state from the headers of the whole written
        // tail, high watermark or not (else a retried batch would be written twice).
        assert_eq!(log.scan_headers(0, 100).await.unwrap().len(), 3);
        log.advance_high_watermark(end);
        assert_eq!(read_all(&log).await.len(), 3);
    })
}
