//! Crash test on the real disk: a child process appends and prints every acknowledged batch;
//! the parent kills it with SIGKILL at a random moment, recovers the log and checks that every
//! acknowledged batch is there byte for byte and that offsets have no gaps. Repeated for
//! `COREBUS_CRASH_ROUNDS` rounds (default 50; `scripts/storage-crash-long.sh` runs more).
//!
//! SIGKILL does not lose completed O_DIRECT writes, so this checks the "written" contract;
//! the power-loss side ("synced") is checked over the simulated disk in `storage_log.rs`.

mod storage_common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corebus_broker::storage::{
    DmaDisk, Durability, LogConfig, PartitionLog, ShardOptions, StorageShard,
};
use storage_common::{expected, make, read_all, run};

const CHILD_DIR_ENV: &str = "COREBUS_CRASH_CHILD_DIR";
const CHILD_ROUND_ENV: &str = "COREBUS_CRASH_CHILD_ROUND";
/// Concurrent appending tasks in the child (exercises coalescing and in-order acks).
const CHILD_TASKS: u64 = 4;
/// Appends per task per round: bounds the log so verification stays fast.
const CHILD_APPENDS_PER_TASK: u64 = 150;

fn config() -> LogConfig {
    LogConfig {
        // Many rolls: the crash can land mid-roll too.
        segment_bytes: 256 << 10,
        index_interval_bytes: 4096,
        ..LogConfig::default()
    }
}

fn log_dir(data: &Path) -> PathBuf {
    StorageShard::<DmaDisk>::log_dir(data, "crash", 0)
}

/// Opens (recovering) the crash log on the real disk.
async fn open_real(data: &Path) -> (StorageShard<DmaDisk>, PartitionLog<DmaDisk>) {
    let disk = DmaDisk::new(data).await.expect("dma disk");
    let shard = StorageShard::new(disk, ShardOptions::default());
    let log = shard
        .open_log(log_dir(data), config())
        .await
        .expect("open and recover");
    (shard, log)
}

/// The child: appends until killed, printing `A <base> <last> <seed>` after each ack.
#[test]
#[ignore = "run by crash_recovery_keeps_every_acknowledged_batch as its child process"]
fn crash_child_process() {
    let (Ok(data), Ok(round)) = (std::env::var(CHILD_DIR_ENV), std::env::var(CHILD_ROUND_ENV))
    else {
        panic!("{CHILD_DIR_ENV} and {CHILD_ROUND_ENV} must be set");
    };
    let round: u64 = round.parse().expect("round number");
    let data = PathBuf::from(data);
    run(|| async move {
        let (_shard, log) = open_real(&data).await;
        let tasks: Vec<_> = (0..CHILD_TASKS)
            .map(|task| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    for i in 0..CHILD_APPENDS_PER_TASK {
                        let seed = (round << 32) | (task << 24) | i;
                        let d = if i % 16 == 0 {
                            Durability::Synced
                        } else {
                            Durability::Written
                        };
                        let info = log.append(&[make(seed)], 0, 0, d).await.expect("append");
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "A {} {} {seed}", info.base_offset, info.last_offset)
                            .and_then(|_| out.flush())
                            .expect("stdout");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        // Finished before being killed: stay alive so the kill always lands on a live process.
        glommio::timer::sleep(Duration::from_secs(30)).await;
    });
}

/// Tiny deterministic generator for kill times.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn crash_recovery_keeps_every_acknowledged_batch() {
    let rounds: u64 = std::env::var("COREBUS_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().to_owned();
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = Rng(0x5eed ^ std::process::id() as u64);
    // Every batch ever acknowledged: base offset -> (last offset, seed).
    let mut acked: HashMap<i64, (i64, u64)> = HashMap::new();
    let started = Instant::now();
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["crash_child_process", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_DIR_ENV, &data)
            .env(CHILD_ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.push(line);
            }
            lines
        });
        // Kill anywhere from during startup/recovery to mid-stream.
        std::thread::sleep(Duration::from_millis(5 + rng.below(120)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap child");
        let lines = reader.join().expect("reader thread");
        let mut this_round = 0;
        for line in lines.iter().filter_map(|l| l.strip_prefix("A ")) {
            let v: Vec<&str> = line.split(' ').collect();
            let (base, last, seed) = (
                v[0].parse().unwrap(),
                v[1].parse().unwrap(),
                v[2].parse().unwrap(),
            );
            let prev = acked.insert(base, (last, seed));
            assert!(prev.is_none(), "offset {base} acknowledged twice");
            this_round += 1;
        }
        let clean_close = rng.below(2) == 0;
        let data = data.clone();
        let acked_now = acked.clone();
        run(|| async move {
            let (_shard, log) = open_real(&data).await;
            let all = read_all(&log).await; // checks CRCs and contiguity
            let by_base: HashMap<i64, &bytes::Bytes> =
                all.iter().map(|(h, b)| (h.base_offset, b)).collect();
            for (base, (last, seed)) in &acked_now {
                let got = by_base
                    .get(base)
                    .unwrap_or_else(|| panic!("round {round}: acknowledged batch at {base} lost"));
                let batch = make(*seed);
                assert_eq!(base + batch.last_offset_delta() as i64, *last);
                assert_eq!(
                    &got[..],
                    &expected(&batch, *base, 0)[..],
                    "round {round}: batch {base} differs"
                );
            }
            if clean_close {
                log.close().await.expect("clean close");
            }
        });
        eprintln!(
            "round {round}: {this_round} acks this round, {} in total",
            acked.len()
        );
    }
    assert!(!acked.is_empty(), "the child never acknowledged anything");
    eprintln!("{rounds} rounds in {:?}", started.elapsed());
}
