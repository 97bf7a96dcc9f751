//! Storage engine benchmark: append and read throughput of the real engine (glommio DMA) on
//! one shard, each next to fio running the same I/O pattern in the same session.
//!
//! Append: 1 KiB records in 16 KiB batches (COREBUS_BENCH_BATCH_KIB sets another size), one
//! producer task per partition (each waits for its append before sending the next, as a
//! producer connection with one in-flight request does), 1 / 16 / 1000 partitions,
//! acknowledged when written or when synced (one fdatasync per batch, shared by group
//! commit). fio: O_DIRECT writes of the batch size over the same number of files, iodepth =
//! partitions (max 128), `--fdatasync=1` for the synced cases.
//! Read: a cold log (new shard, empty cache) read sequentially in 1 MiB fetches, against fio
//! 1 MiB O_DIRECT sequential reads; and tailing reads served by the batch cache.
//! Compaction: a log of 1 KiB keyed records overwriting 10,000 keys, 4 MiB segments, cleaned
//! once by the log cleaner (unthrottled); the rate is log bytes cleaned per second, next to
//! fio's sequential read of the same size (a clean reads the dirty part twice and writes the
//! kept records).
//!
//! Run: `cargo run --release -p corebus-broker --example storage_bench -- [dir] [seconds]`
//! (default dir `/tmp/corebus-storage-bench`, 5 s per case). Prints a Markdown table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use corebus_broker::storage::{
    CleanerOptions, CleanupPolicy, DmaDisk, Durability, LogConfig, PartitionLog, ShardOptions,
    StorageShard, now_ms, testing,
};
use corebus_wire::record::{Compression, RecordBatch, RecordBatchBuilder};
use glommio::{LocalExecutorBuilder, Placement};

const RECORD_BYTES: usize = 1024;
/// Append batch size: COREBUS_BENCH_BATCH_KIB (1 KiB records), 16 KiB by default.
fn batch_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("COREBUS_BENCH_BATCH_KIB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&k| (1..=1024).contains(&k))
            .unwrap_or(16)
            * RECORD_BYTES
    })
}

/// Records in one append batch.
fn batch_records() -> usize {
    batch_bytes() / RECORD_BYTES
}
const READ_FETCH_BYTES: usize = 1 << 20;
const MIB: f64 = (1 << 20) as f64;

/// The engine's defaults (preallocation steps doubling from 1 MiB to 32 MiB per segment);
/// COREBUS_BENCH_PREALLOCATE_MIB fixes the largest step instead.
fn options() -> ShardOptions {
    let default = ShardOptions::default();
    let preallocate_bytes = std::env::var("COREBUS_BENCH_PREALLOCATE_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(default.preallocate_bytes, |m| m << 20);
    ShardOptions {
        preallocate_bytes,
        ..default
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 20,
        ..LogConfig::default()
    }
}

fn executor() -> glommio::LocalExecutor {
    LocalExecutorBuilder::new(Placement::Fixed(0))
        // Room for 1000 partitions' writes in flight (glommio's default ring holds 128).
        .ring_depth(1024)
        // COREBUS_BENCH_SPIN_US: spin before parking (wake-up latency experiments).
        .spin_before_park(Duration::from_micros(
            std::env::var("COREBUS_BENCH_SPIN_US")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ))
        .make()
        .expect("glommio executor")
}

/// A shard on the real disk with `partitions` logs of `topic`.
async fn open_logs(
    dir: &Path,
    topic: &str,
    partitions: usize,
) -> (StorageShard<DmaDisk>, Vec<PartitionLog<DmaDisk>>) {
    let disk = DmaDisk::new(dir).await.expect("dma disk");
    let shard = StorageShard::new(disk, options());
    let mut logs = Vec::with_capacity(partitions);
    for p in 0..partitions {
        let d = StorageShard::<DmaDisk>::log_dir(dir, topic, p as i32);
        logs.push(shard.open_log(d, config()).await.expect("open"));
    }
    (shard, logs)
}

/// Appends for `seconds` with one producer per partition; returns MiB/s.
fn engine_append(dir: &Path, partitions: usize, durability: Durability, seconds: u64) -> f64 {
    let dir = dir.to_owned();
    executor().run(async move {
        let (shard, logs) = open_logs(&dir, "bench", partitions).await;
        let batch = Rc::new(testing::batch(batch_records() as i32, batch_bytes(), 0, 1));
        // Warm-up, untimed: every partition's file created and opened, as fio lays out its
        // files before its timed phase (a broker opens its partitions at startup).
        for log in &logs {
            let one = std::slice::from_ref(&*batch);
            log.append(one, 0, 0, Durability::Written)
                .await
                .expect("append");
        }
        let start = Instant::now();
        let deadline = start + Duration::from_secs(seconds);
        let tasks: Vec<_> = logs
            .iter()
            .cloned()
            .map(|log| {
                let batch = batch.clone();
                glommio::spawn_local(async move {
                    let mut bytes = 0u64;
                    let one = std::slice::from_ref(&*batch);
                    while Instant::now() < deadline {
                        log.append(one, 0, 0, durability).await.expect("append");
                        bytes += batch_bytes() as u64;
                    }
                    bytes
                })
            })
            .collect();
        let mut total = 0u64;
        for t in tasks {
            total += t.await;
        }
        let secs = start.elapsed().as_secs_f64();
        shard.close().await;
        total as f64 / MIB / secs
    })
}

/// Reads the log of partition 0 from the start in 1 MiB fetches from a new shard (empty
/// cache: every byte comes from a DMA read). Returns MiB/s.
fn engine_cold_read(dir: &Path) -> f64 {
    let dir = dir.to_owned();
    executor().run(async move {
        let (_shard, mut logs) = open_logs(&dir, "bench", 1).await;
        let log = logs.remove(0);
        let end = log.written_offset();
        let mut offset = log.log_start_offset();
        let mut bytes = 0usize;
        let start = Instant::now();
        while offset < end {
            let r = log.read(offset, READ_FETCH_BYTES).await.expect("read");
            bytes += r.len_bytes();
            // Next offset: the batches are 16 records each.
            offset += (r.len_bytes() / batch_bytes() * batch_records()) as i64;
            if r.is_empty() {
                break;
            }
        }
        bytes as f64 / MIB / start.elapsed().as_secs_f64()
    })
}

/// Keys the compaction case overwrites.
const COMPACTION_KEYS: usize = 10_000;

/// Writes `mib` MiB of 16-record batches of 1 KiB keyed records (keys cycling over
/// COMPACTION_KEYS) and cleans the log once. Returns (log MiB before / seconds of the clean,
/// MiB before, MiB after).
fn engine_compaction(dir: &Path, mib: u64) -> (f64, f64, f64) {
    let dir = dir.to_owned();
    executor().run(async move {
        let disk = DmaDisk::new(&dir).await.expect("dma disk");
        let shard = StorageShard::new(disk, options());
        let config = LogConfig {
            segment_bytes: 4 << 20,
            cleanup_policy: CleanupPolicy::Compact,
            ..LogConfig::default()
        };
        let d = StorageShard::<DmaDisk>::log_dir(&dir, "compact", 0);
        let log = shard.open_log(d, config).await.expect("open");
        let value = vec![b'v'; RECORD_BYTES - 24];
        let batches: Vec<RecordBatch> = (0..COMPACTION_KEYS / 16)
            .map(|b| {
                let mut builder = RecordBatchBuilder::new(Compression::None);
                for r in 0..16 {
                    let key = format!("key-{:08}", b * 16 + r);
                    builder.record(now_ms(), Some(key.as_bytes()), Some(&value));
                }
                builder.build().expect("batch")
            })
            .collect();
        let mut written = 0u64;
        let mut i = 0;
        while written < mib << 20 {
            let b = &batches[i % batches.len()];
            log.append(std::slice::from_ref(b), 0, now_ms(), Durability::Written)
                .await
                .expect("append");
            written += b.len() as u64;
            i += 1;
        }
        let before = log.size_bytes() as f64 / MIB;
        let start = Instant::now();
        let stats = log
            .compact(now_ms(), &CleanerOptions::default())
            .await
            .expect("compact")
            .expect("something to clean");
        let secs = start.elapsed().as_secs_f64();
        let after = log.size_bytes() as f64 / MIB;
        shard.close().await;
        assert!(stats.bytes_read > 0);
        (before / secs, before, after)
    })
}

/// A producer appends while a consumer fetches right behind it: every fetch is served by the
/// batch cache. Returns the consumer's MiB/s.
fn engine_tail_read(dir: &Path, seconds: u64) -> f64 {
    let dir = dir.to_owned();
    executor().run(async move {
        let (shard, mut logs) = open_logs(&dir, "tail", 1).await;
        let log = logs.remove(0);
        let batch = testing::batch(batch_records() as i32, batch_bytes(), 0, 1);
        let mut offset = log.written_offset();
        let mut read_bytes = 0usize;
        let mut read_time = Duration::ZERO;
        let mut sink: Vec<u8> = Vec::with_capacity(READ_FETCH_BYTES);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            // 64 batches (1 MiB) appended, then fetched back from the tail.
            for _ in 0..64 {
                log.append_nowait(std::slice::from_ref(&batch), 0, 0)
                    .expect("append");
            }
            log.wait_written(log.log_end_offset())
                .await
                .expect("written");
            let t = Instant::now();
            while offset < log.written_offset() {
                let r = log.read(offset, READ_FETCH_BYTES).await.expect("read");
                for c in &r.chunks {
                    // One copy, as a socket send into the kernel makes.
                    sink.clear();
                    sink.extend_from_slice(c);
                    std::hint::black_box(&sink);
                }
                read_bytes += r.len_bytes();
                offset += (r.len_bytes() / batch_bytes() * batch_records()) as i64;
            }
            read_time += t.elapsed();
        }
        shard.close().await;
        read_bytes as f64 / MIB / read_time.as_secs_f64()
    })
}

/// Runs fio and returns its bandwidth in MiB/s (from the JSON output).
fn fio(dir: &Path, args: &[String]) -> Option<f64> {
    let out = Command::new("fio")
        .arg(format!("--directory={}", dir.display()))
        .args([
            "--output-format=json",
            "--direct=1",
            "--ioengine=io_uring",
            "--group_reporting",
        ])
        .args(args)
        .output()
        .ok()?;
    let json = String::from_utf8_lossy(&out.stdout);
    // "bw_bytes" of the job's write or read section, whichever is non-zero.
    json.match_indices("\"bw_bytes\" : ")
        .filter_map(|(i, m)| {
            let rest = &json[i + m.len()..];
            let end = rest.find(|c: char| !c.is_ascii_digit())?;
            rest[..end].parse::<f64>().ok()
        })
        .fold(None, |best: Option<f64>, v| {
            Some(best.map_or(v, |b| b.max(v)))
        })
        .map(|b| b / MIB)
}

fn fio_append(dir: &Path, partitions: usize, sync: bool, seconds: u64) -> Option<f64> {
    let file_bytes = if partitions >= 1000 {
        4 << 20
    } else {
        256 << 20
    };
    let mut args = vec![
        "--name=append".to_owned(),
        "--rw=write".to_owned(),
        format!("--bs={}", batch_bytes()),
        format!("--nrfiles={partitions}"),
        format!("--filesize={file_bytes}"),
        "--file_service_type=roundrobin".to_owned(),
        format!("--iodepth={}", partitions.min(128)),
        format!("--runtime={seconds}"),
        "--time_based".to_owned(),
    ];
    if sync {
        args.push("--fdatasync=1".to_owned());
    }
    fio(dir, &args)
}

fn fio_seq_read(dir: &Path, bytes: u64) -> Option<f64> {
    let mib = (bytes >> 20).max(1);
    let args = [
        "--name=seqread".to_owned(),
        "--rw=read".to_owned(),
        "--bs=1M".to_owned(),
        format!("--size={mib}M"),
        "--iodepth=1".to_owned(),
    ];
    // Lay the file out first so the read is of real blocks.
    let layout = [
        "--name=seqread".to_owned(),
        "--rw=write".to_owned(),
        "--bs=1M".to_owned(),
        format!("--size={mib}M"),
    ];
    fio(dir, &layout)?;
    fio(dir, &args)
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("bench dir");
    d
}

fn ratio(engine: f64, fio: Option<f64>) -> String {
    fio.map_or("n/a".into(), |f| format!("{:.0}%", 100.0 * engine / f))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let base = PathBuf::from(args.next().unwrap_or("/tmp/corebus-storage-bench".into()));
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    println!("| case | corebus MiB/s | fio MiB/s | ratio |");
    println!("|---|---|---|---|");
    // COREBUS_BENCH_ONLY=compaction runs the compaction case alone; =append the append cases
    // alone (the broker benchmark's baseline).
    let only = std::env::var("COREBUS_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "compaction" {
        let d = fresh(&base, "engine");
        let (rate, before, after) = engine_compaction(&d, 64);
        let _ = std::fs::remove_dir_all(&d);
        let f = fresh(&base, "fio");
        let fio_read = fio_seq_read(&f, (before * MIB) as u64);
        let _ = std::fs::remove_dir_all(&f);
        println!(
            "| compaction of {before:.0} MiB (10,000 keys, 1 KiB records) to {after:.1} MiB, log MiB cleaned/s vs fio 1 MiB sequential read | {rate:.0} | {} | {} |",
            fio_read.map_or("n/a".into(), |v| format!("{v:.0}")),
            ratio(rate, fio_read)
        );
        if only == "compaction" {
            return;
        }
    }
    // COREBUS_BENCH_PARTITIONS=16 runs one partition count only (for quick comparisons).
    let counts: Vec<usize> = std::env::var("COREBUS_BENCH_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(vec![1, 16, 1000], |p| vec![p]);
    for &partitions in &counts {
        for &sync in &[false, true] {
            let durability = if sync {
                Durability::Synced
            } else {
                Durability::Written
            };
            let d = fresh(&base, "engine");
            let engine = engine_append(&d, partitions, durability, seconds);
            let _ = std::fs::remove_dir_all(&d);
            let f = fresh(&base, "fio");
            let fio_bw = fio_append(&f, partitions, sync, seconds);
            let _ = std::fs::remove_dir_all(&f);
            println!(
                "| append {} KiB batches, {partitions} partition(s), {} | {engine:.0} | {} | {} |",
                batch_bytes() >> 10,
                if sync {
                    "fdatasync per batch"
                } else {
                    "written (no sync)"
                },
                fio_bw.map_or("n/a".into(), |v| format!("{v:.0}")),
                ratio(engine, fio_bw)
            );
        }
    }
    if only == "append" {
        return;
    }
    // Cold read: write one partition for `seconds`, then read it back from a new shard.
    let d = fresh(&base, "engine");
    engine_append(&d, 1, Durability::Written, seconds);
    let log_bytes: u64 = std::fs::read_dir(StorageShard::<DmaDisk>::log_dir(&d, "bench", 0))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let cold = engine_cold_read(&d);
    let _ = std::fs::remove_dir_all(&d);
    let f = fresh(&base, "fio");
    let fio_read = fio_seq_read(&f, log_bytes);
    let _ = std::fs::remove_dir_all(&f);
    println!(
        "| cold read, 1 MiB fetches ({} MiB log) vs fio 1 MiB sequential read | {cold:.0} | {} | {} |",
        log_bytes >> 20,
        fio_read.map_or("n/a".into(), |v| format!("{v:.0}")),
        ratio(cold, fio_read)
    );
    let d = fresh(&base, "engine");
    let tail = engine_tail_read(&d, seconds);
    let _ = std::fs::remove_dir_all(&d);
    println!(
        "| tail read through the batch cache (one copy out, as a send) vs fio sequential read | {tail:.0} | {} | {} |",
        fio_read.map_or("n/a".into(), |v| format!("{v:.0}")),
        ratio(tail, fio_read)
    );
}
