//! A deterministic simulator of one partition replicated on three brokers, for tests.
//!
//! What runs is the production code wherever it decides something: each broker's log is a
//! real `PartitionLog` over its own simulated disk (`storage::SimDisk`: a power loss keeps
//! only synced bytes, possibly with a torn tail); the leader's side is the real
//! [`Leaders`] (follower progress, high watermark, in-sync proposals, the committed set); the
//! follower cuts its log with the fetcher's own [`truncation`]; the controller decides
//! in-sync changes with [`isr::decide`] and elections with [`elect::elect`], each committed
//! as one image change. What the simulator writes itself is the plumbing between them, as
//! `follower.rs`, `handlers/fetch.rs`, `handlers/offset_for_leader_epoch.rs`,
//! `handlers/produce.rs` and the cluster watcher do it over TCP and the consensus group: a
//! follower has one request out per leader (the broker runs one fetcher per leader, so a new
//! leader's starts while the old one's is out): OffsetForLeaderEpoch under a leader epoch it
//! has not checked, else a Fetch from its log end, which the leader holds while it has nothing
//! new (the long poll); it drops the answers of a leader replaced meanwhile (`still_led_by`)
//! and fetches again only once what it appended is written and synced; each broker writes its
//! high watermark checkpoint through the real file code now and then and a restarted one opens
//! its log at it (as `ShardLogs` does); an acks=all append
//! is answered once it is synced on the leader, the high watermark passed it, the leader
//! still leads under the append's epoch and the in-sync set holds `min.insync.replicas`.
//!
//! Time, the network and the disks are inputs from one seed: messages are delayed, dropped
//! and (after a restart) lost with their connection, links are slow for a while; brokers are
//! killed (SIGKILL: completed writes survive) or, with `power_loss`, lose power, alone or all
//! at once; a running broker is cut off from the controller for a while (its session expires
//! there and others take its leaderships while it leads on by its old image, then it
//! registers again); the controller (the consensus group, simulated on its own in
//! `corebus-consensus`) expires sessions and elects, and brokers learn each image change
//! after a random delay, some watches lagging by seconds. A run then goes quiet: every broker
//! back until the replicas agree; one broker killed, and the other two must take writes again
//! and agree (liveness: nothing may hold the high watermark for good); all back again.
//!
//! Checked: every acknowledged batch is in the final log at the offset it was acknowledged
//! with (no unclean election is ever made, so some in-sync replica always survives); a
//! replica's high watermark never goes backwards while it runs; what a consumer could read
//! from a leader (below its high watermark) is never replaced later (not checked across a
//! power loss: the leader's high watermark counts its own written, not yet synced, records,
//! so a leader that loses power while alone in the in-sync set loses what it showed); the
//! replicas settle in each quiet phase; at the end every replica holds the leader's batches
//! byte for byte. Deliberately broken variants ([`Fault`]) must be caught.
//!
//! Not modelled yet: idempotent producers and their state on followers, DeleteRecords and a
//! leader's log start, crashes in the middle of a follower's append or truncation (its I/O
//! runs to the end inside one step), a broker's own stale view of who is live, and the gap
//! between an image's install and `lead_partitions`.
//!
//! Never: used outside tests; reads the wall clock for anything it decides.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use corebus_wire::error_code::ResponseError;
use corebus_wire::record::{BatchHeader, RecordBatches};
use glommio::{LocalExecutorBuilder, Placement};

use super::follower::{Truncation, truncation};
use super::isr::{self, IsrChange};
use super::leader::Leaders;
use crate::metadata::elect;
use crate::metadata::image::BrokerId;
use crate::metadata::{MetadataCommand, MetadataImage, PartitionMeta, TopicId, TopicMeta};
use crate::shard::ShardId;
use crate::shard::router::Here;
use crate::storage::{
    Disk, LogConfig, PartitionLog, ReadEnd, ShardOptions, SimDisk, StorageShard, hw_checkpoint,
    testing,
};

type Log = PartitionLog<SimDisk>;

const BROKERS: [BrokerId; 3] = [1, 2, 3];
/// The controller's address on the simulated network.
const CONTROLLER: BrokerId = 0;
const SESSION_TIMEOUT_MS: i64 = 1_000;
/// `replica.lag.time.max.ms`.
const LAG_MS: i64 = 1_500;
/// A request without an answer after this is given up (the connection is dropped).
const ANSWER_TIMEOUT_MS: i64 = 800;
/// An acks=all produce request's timeout.
const PRODUCE_TIMEOUT_MS: i64 = 5_000;
const FETCH_MAX_BYTES: usize = 8 << 10;
const MIN_INSYNC: i32 = 2;
/// `replica.high.watermark.checkpoint.interval.ms`, shorter than the default so that runs
/// restart from recent checkpoints as well as stale ones.
const CHECKPOINT_MS: i64 = 400;
/// Kafka's OFFSET_OUT_OF_RANGE.
const OFFSET_OUT_OF_RANGE: i16 = 1;

/// A deliberately broken variant, to prove that the checkers catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The leader's high watermark follows its own written offset (the followers ignored).
    HighWatermarkFromLeaderAlone,
    /// A follower's next fetch reports what it appended before that is synced.
    FollowerReportsBeforeSync,
    /// A follower takes the answers of a leader replaced while its request was out (the real
    /// fetcher drops them: `follower::still_led_by`).
    StaleLeaderAnswers,
    /// The high watermark checkpoint holds the log's written end, not its high watermark.
    CheckpointLogEnd,
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Steps of faults and traffic before the quiet end.
    pub steps: u32,
    /// Brokers may lose power (unsynced writes lost), not only be killed.
    pub power_loss: bool,
    pub fault: Fault,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            steps: 600,
            power_loss: false,
            fault: Fault::None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub acknowledged: usize,
    pub produced: u64,
    pub crashes: u32,
    pub leader_changes: u32,
    pub messages: u64,
    /// The final log's end offset.
    pub end_offset: i64,
    /// Restarts whose high watermark a checkpoint placed above the log start.
    pub checkpointed_starts: u32,
    pub violations: Vec<String>,
}

/// Small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
    /// True with probability `n` in 1,000.
    fn per_mille(&mut self, n: u64) -> bool {
        self.below(1_000) < n
    }
}

enum Msg {
    Fetch { offset: i64, epoch: i32 },
    Fetched(Result<(Bytes, i64), i16>),
    AskEpoch { current: i32, latest: i32 },
    EpochAnswer(Result<(i32, i64), i16>),
    Alter(IsrChange),
    Altered(IsrChange, Result<PartitionMeta, ResponseError>),
}

struct Envelope {
    at: i64,
    seq: u64,
    from: BrokerId,
    /// The sender's incarnation (an answer goes to it, and is lost if it restarted).
    from_life: u32,
    to: BrokerId,
    to_life: u32,
    /// Matches an answer to its request.
    request: u64,
    msg: Msg,
}

/// A broker while its process runs.
struct Up {
    // Kept for its group-commit task, which ends with it.
    _storage: StorageShard<SimDisk>,
    log: Log,
    image: Rc<MetadataImage>,
    leaders: Leaders<SimDisk>,
    /// The leader epoch this follower's log was checked against its leader's.
    checked: Option<i32>,
    /// The follower's requests in flight, by leader (the real broker runs one fetcher per
    /// leader, so the new leader's starts while the old one's request is out): its id, when
    /// it went out, and the leader epoch it went out under.
    in_flight: BTreeMap<BrokerId, (u64, i64, i32)>,
    /// Replica fetches this leader holds (long poll) until it has more or they time out.
    parked: Vec<Parked>,
    /// The in-sync change in flight: its id, when it went out, and the change.
    altering: Option<(u64, i64, IsrChange)>,
    next_isr_check_ms: i64,
    /// When this broker next writes its high watermark checkpoint.
    next_checkpoint_ms: i64,
    last_high_watermark: i64,
}

struct Broker {
    id: BrokerId,
    disk: SimDisk,
    life: u32,
    up: Option<Up>,
    down_since: i64,
    /// Its metadata watch lags: no image is installed before this.
    watch_stalled_until: i64,
    /// Its network is slow (messages from and to it take longer) until this.
    slow_until: i64,
    /// Cut off from the controller (the consensus group) from `.0` until `.1`: its session
    /// expires there while its process runs on with the image it had, leading what that
    /// says it leads (the other brokers still reach it).
    isolated: Option<(i64, i64)>,
}

/// A replica fetch the leader holds: who asked, for which request, from where.
struct Parked {
    from: BrokerId,
    from_life: u32,
    request: u64,
    offset: i64,
    until: i64,
}

/// How long a leader holds a replica fetch that finds nothing new (`FETCH_MAX_WAIT_MS`).
const LONG_POLL_MS: i64 = 500;

/// An acks=all append waiting for its answer.
struct Pending {
    broker: BrokerId,
    life: u32,
    epoch: i32,
    base: i64,
    next: i64,
    id: u64,
    since: i64,
}

struct Sim {
    opts: SimOptions,
    rng: Rng,
    now: i64,
    topic: TopicId,
    config: LogConfig,
    image: MetadataImage,
    live: BTreeSet<BrokerId>,
    brokers: Vec<Broker>,
    net: Vec<Envelope>,
    seq: u64,
    pending: Vec<Pending>,
    next_batch: u64,
    /// Acknowledged: batch base offset -> batch id.
    acked: BTreeMap<i64, u64>,
    /// Seen by a consumer: batch base offset -> batch id.
    visible: BTreeMap<i64, u64>,
    /// Up to where each leadership (broker, process, leader epoch) was read for `visible`.
    scanned: BTreeMap<(BrokerId, u32, i32), i64>,
    /// No messages are dropped (the quiet end).
    quiet: bool,
    report: Report,
}

/// Runs one seed to the end and reports what the checkers found.
pub fn run(seed: u64, opts: &SimOptions) -> Report {
    let opts = opts.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spin_before_park(Duration::from_millis(0))
        .make()
        .expect("glommio executor")
        .run(async move {
            let mut sim = Sim::new(seed, opts).await;
            sim.run().await;
            sim.report
        })
}

fn config() -> LogConfig {
    LogConfig {
        min_insync_replicas: MIN_INSYNC,
        // Several segments per run: truncation and recovery cross segment boundaries.
        segment_bytes: 48 << 10,
        ..LogConfig::default()
    }
}

fn shard_options() -> ShardOptions {
    ShardOptions {
        // Syncs happen only when asked (acks=all, followers): none on a wall-clock tick.
        flush_check_interval_ms: 3_600_000,
        // No background fallocate (whose wait sleeps on a real timer).
        preallocate_bytes: 0,
        batch_cache_bytes: 1 << 20,
        ..ShardOptions::default()
    }
}

fn data_dir() -> PathBuf {
    PathBuf::from("/sim")
}

fn log_dir() -> PathBuf {
    data_dir().join("t-0")
}

/// The id of a batch this simulator produced: its timestamp.
fn batch_id(header: &BatchHeader) -> u64 {
    header.base_timestamp as u64
}

/// Every batch of `log` from the one holding `from` (or its log start) to `end` (whole
/// batches): (base offset, id, bytes).
async fn batches(log: &Log, from: i64, end: ReadEnd) -> Vec<(i64, u64, Bytes)> {
    let mut out = Vec::new();
    let mut offset = from.max(log.log_start_offset());
    loop {
        let Ok(read) = log.read_to(offset, 1 << 20, end).await else {
            break;
        };
        let bytes = read.to_bytes();
        if bytes.is_empty() {
            break;
        }
        let before = offset;
        for batch in RecordBatches::allow_partial_tail(bytes) {
            let Ok(batch) = batch else { break };
            let Ok(h) = BatchHeader::parse(batch.as_bytes()) else {
                break;
            };
            offset = h.next_offset();
            out.push((h.base_offset, batch_id(&h), batch.as_bytes().clone()));
        }
        // A read that yields no whole batch would be read again for ever.
        assert!(offset > before, "a read at {before} holds no whole batch");
    }
    out
}

/// A replica fetch's answer from `offset`: the leader's batches up to its written offset, and
/// its high watermark.
async fn read_for_replica(log: &Log, offset: i64) -> Result<(Bytes, i64), i16> {
    if offset == log.written_offset() {
        return Ok((Bytes::new(), log.high_watermark()));
    }
    match log.read_to(offset, FETCH_MAX_BYTES, ReadEnd::Written).await {
        Ok(read) => Ok((read.to_bytes(), read.high_watermark)),
        Err(err) => Err(err.kafka_error_code()),
    }
}

impl Sim {
    async fn new(seed: u64, opts: SimOptions) -> Sim {
        let topic = TopicId(uuid::Uuid::from_u128(u128::from(seed) + 1));
        let mut image = MetadataImage::new_cluster();
        image
            .apply(MetadataCommand::CreateTopic(TopicMeta {
                name: "t".into(),
                id: topic,
                partitions: vec![PartitionMeta::replicated(BROKERS.to_vec())],
                configs: Default::default(),
            }))
            .expect("a new topic");
        image.epoch = 1;
        let mut sim = Sim {
            opts,
            rng: Rng::new(seed),
            now: 1_000_000,
            topic,
            config: config(),
            image,
            live: BROKERS.iter().copied().collect(),
            brokers: BROKERS
                .iter()
                .map(|id| Broker {
                    id: *id,
                    disk: SimDisk::new(),
                    life: 0,
                    up: None,
                    down_since: 0,
                    watch_stalled_until: 0,
                    slow_until: 0,
                    isolated: None,
                })
                .collect(),
            net: Vec::new(),
            seq: 0,
            pending: Vec::new(),
            next_batch: 1,
            acked: BTreeMap::new(),
            visible: BTreeMap::new(),
            scanned: BTreeMap::new(),
            quiet: false,
            report: Report::default(),
        };
        for i in 0..sim.brokers.len() {
            sim.start(i).await;
        }
        sim
    }

    fn meta(image: &MetadataImage) -> &PartitionMeta {
        &image.topics["t"].partitions[0]
    }

    fn index(id: BrokerId) -> usize {
        BROKERS.iter().position(|b| *b == id).expect("a broker")
    }

    /// Starts broker `i`'s process: opens (recovers) its log, with the high watermark its
    /// checkpoint holds as a replica's opens it (`ShardLogs::sync_with`), and installs the
    /// controller's current image.
    async fn start(&mut self, i: usize) {
        let b = &mut self.brokers[i];
        b.life += 1;
        b.disk.halt_after(None);
        let storage = StorageShard::new(b.disk.clone(), shard_options());
        let log = match storage.open_log(log_dir(), self.config.clone()).await {
            Ok(log) => log,
            Err(e) => {
                self.report
                    .violations
                    .push(format!("broker {} cannot recover its log: {e}", b.id));
                return;
            }
        };
        // The data directory exists as the broker's does (the simulated disk knows of the
        // log's directory only).
        let _ = b.disk.create_dir_all(&data_dir());
        let (checkpoints, _) = hw_checkpoint::read_all(&b.disk, &data_dir()).await;
        log.open_high_watermark(checkpoints.get(&(*self.topic.0.as_bytes(), 0)).copied());
        if log.high_watermark() > log.log_start_offset() {
            self.report.checkpointed_starts += 1;
        }
        let next_checkpoint_ms = self.now + CHECKPOINT_MS;
        b.up = Some(Up {
            _storage: storage,
            log: log.clone(),
            image: Rc::new(MetadataImage::new_cluster()),
            leaders: Leaders::default(),
            checked: None,
            in_flight: BTreeMap::new(),
            parked: Vec::new(),
            altering: None,
            next_isr_check_ms: 0,
            next_checkpoint_ms,
            last_high_watermark: log.high_watermark(),
        });
        self.install(i);
    }

    /// Broker `i` learns the controller's current image (as the watcher installs it, then
    /// `lead_partitions`).
    fn install(&mut self, i: usize) {
        if self.brokers[i].isolated.is_some() {
            return;
        }
        let image = Rc::new(self.image.clone());
        let (me, topic, now) = (self.brokers[i].id, self.topic, self.now);
        let Some(up) = self.brokers[i].up.as_mut() else {
            return;
        };
        if up.image.epoch >= image.epoch {
            return;
        }
        up.image = image.clone();
        let log = up.log.clone();
        let here = Here {
            node_id: me,
            shard_count: 1,
        };
        up.leaders.sync_with(
            &image,
            ShardId(0),
            here,
            |key| (key == (topic, 0)).then(|| log.clone()),
            now,
        );
        if self.opts.fault == Fault::HighWatermarkFromLeaderAlone && Sim::meta(&image).leader == me
        {
            log.set_replicated(false);
        }
    }

    /// Commits `cmds` as one image change at the controller.
    fn commit(&mut self, cmds: Vec<MetadataCommand>) {
        if cmds.is_empty() {
            return;
        }
        let leader = Sim::meta(&self.image).leader;
        for cmd in cmds {
            self.image.apply(cmd).expect("the controller's own change");
        }
        self.image.epoch += 1;
        if Sim::meta(&self.image).leader != leader {
            self.report.leader_changes += 1;
        }
    }

    fn elect(&mut self) {
        let live: Vec<BrokerId> = self.live.iter().copied().collect();
        let cmds = elect::elect(&self.image, &live, &[], false);
        self.commit(cmds);
    }

    fn send(&mut self, from: BrokerId, to: BrokerId, to_life: u32, request: u64, msg: Msg) {
        self.report.messages += 1;
        if !self.quiet && self.rng.per_mille(15) {
            return;
        }
        let cut =
            |b: &BrokerId| *b != CONTROLLER && self.brokers[Sim::index(*b)].isolated.is_some();
        if (from == CONTROLLER || to == CONTROLLER) && (cut(&from) || cut(&to)) {
            return;
        }
        let slow = [from, to]
            .iter()
            .any(|b| *b != CONTROLLER && self.brokers[Sim::index(*b)].slow_until > self.now);
        let delay = if slow || self.rng.per_mille(20) {
            50 + self.rng.below(400) as i64
        } else {
            1 + self.rng.below(25) as i64
        };
        let from_life = if from == CONTROLLER {
            0
        } else {
            self.brokers[Sim::index(from)].life
        };
        self.seq += 1;
        self.net.push(Envelope {
            at: self.now + delay,
            seq: self.seq,
            from,
            from_life,
            to,
            to_life,
            request,
            msg,
        });
    }

    async fn run(&mut self) {
        for _ in 0..self.opts.steps {
            self.step(true, true).await;
        }
        // The quiet end: every broker back, nothing dropped, until the replicas agree.
        self.quiet = true;
        if !self.settle(None).await {
            return self.unsettled("after the faults stopped");
        }
        // Liveness: one broker killed, the other two take writes again once its session
        // expired, and settle (a high watermark held by a dead or never-committed member
        // would stop both).
        let down = self.rng.below(BROKERS.len() as u64) as usize;
        self.kill(down).await;
        let acked = self.acked.len();
        let until = self.now + 3 * SESSION_TIMEOUT_MS;
        while self.now < until {
            self.step(false, true).await;
        }
        if self.acked.len() == acked {
            self.report.violations.push(format!(
                "nothing acknowledged in {} ms with broker {} down",
                3 * SESSION_TIMEOUT_MS,
                BROKERS[down]
            ));
        }
        if !self.settle(Some(BROKERS[down])).await {
            return self.unsettled(&format!("with broker {} down", BROKERS[down]));
        }
        if !self.settle(None).await {
            return self.unsettled("once every broker was back");
        }
        self.final_check().await;
    }

    fn unsettled(&mut self, when: &str) {
        self.report.violations.push(format!(
            "the replicas did not settle {when}: {:?}",
            Sim::meta(&self.image)
        ));
    }

    /// Steps without faults or new writes, restarting the brokers that are down (except
    /// `without`), until `settled(without)`; false when they never do.
    async fn settle(&mut self, without: Option<BrokerId>) -> bool {
        for _ in 0..20_000 {
            for i in 0..self.brokers.len() {
                let b = &self.brokers[i];
                if Some(b.id) != without && b.up.is_none() && !self.live.contains(&b.id) {
                    self.restart(i).await;
                }
            }
            self.step(false, false).await;
            if self.settled(without) {
                return true;
            }
        }
        false
    }

    /// Every running broker runs the controller's latest image, the partition has a leader
    /// with every broker but `without` in sync, no append waits, and every replica but
    /// `without` holds the leader's log end and high watermark.
    fn settled(&self, without: Option<BrokerId>) -> bool {
        let meta = Sim::meta(&self.image);
        let mut isr = meta.isr.clone();
        isr.sort_unstable();
        let expected: Vec<BrokerId> = BROKERS
            .iter()
            .copied()
            .filter(|b| Some(*b) != without)
            .collect();
        if meta.leader < 0 || isr != expected || !self.pending.is_empty() {
            return false;
        }
        let ups: Vec<&Up> = self
            .brokers
            .iter()
            .filter(|b| Some(b.id) != without)
            .filter_map(|b| b.up.as_ref())
            .collect();
        if ups.len() != expected.len() || ups.iter().any(|u| u.image.epoch != self.image.epoch) {
            return false;
        }
        let leader = &self.brokers[Sim::index(meta.leader)];
        let Some(l) = leader.up.as_ref() else {
            return false;
        };
        let end = l.log.written_offset();
        l.log.high_watermark() == end
            && ups
                .iter()
                .all(|u| u.log.written_offset() == end && u.log.high_watermark() == end)
    }

    async fn step(&mut self, faults: bool, produce: bool) {
        self.now += 1 + self.rng.below(20) as i64;
        self.deliver().await;
        if faults {
            self.faults().await;
        }
        self.expire_sessions();
        for i in 0..self.brokers.len() {
            if faults && self.rng.per_mille(5) {
                self.brokers[i].watch_stalled_until = self.now + 1 + self.rng.below(2_000) as i64;
            }
            if faults && self.rng.per_mille(5) {
                self.brokers[i].slow_until = self.now + 1 + self.rng.below(3_000) as i64;
            }
            if self.brokers[i].watch_stalled_until <= self.now && self.rng.below(3) == 0 {
                self.install(i);
            }
        }
        if produce && self.rng.below(3) == 0 {
            self.produce();
        }
        for i in 0..self.brokers.len() {
            self.answer_parked(i).await;
            self.follow(i).await;
            self.check_isr(i);
            self.checkpoint(i).await;
        }
        // Lets the logs' write and group-commit tasks run a varying number of times.
        for _ in 0..=self.rng.below(3) {
            futures_lite::future::yield_now().await;
        }
        if self.opts.fault == Fault::HighWatermarkFromLeaderAlone {
            for b in &self.brokers {
                if let Some(up) = b.up.as_ref().filter(|u| Sim::meta(&u.image).leader == b.id) {
                    up.log.advance_high_watermark(up.log.written_offset());
                }
            }
        }
        self.answer_produces();
        self.observe().await;
    }

    /// Broker `i` writes its high watermark checkpoint when its time has come, as the shard's
    /// ticker does (`ShardLogs::checkpoint_high_watermarks`), through the real file code.
    async fn checkpoint(&mut self, i: usize) {
        let (now, key, fault) = (self.now, (*self.topic.0.as_bytes(), 0), self.opts.fault);
        let b = &mut self.brokers[i];
        let Some(up) = b.up.as_mut().filter(|u| u.next_checkpoint_ms <= now) else {
            return;
        };
        up.next_checkpoint_ms = now + CHECKPOINT_MS;
        let hw = match fault {
            Fault::CheckpointLogEnd => up.log.written_offset(),
            _ => up.log.high_watermark(),
        };
        let entries = [(key, hw)].into();
        let name = hw_checkpoint::file_name(0);
        // A broker killed meanwhile leaves the file it had (the write is atomic).
        let _ = hw_checkpoint::write(&b.disk, &data_dir(), &name, &entries).await;
    }

    async fn faults(&mut self) {
        if self.rng.per_mille(6) {
            let i = self.rng.below(self.brokers.len() as u64) as usize;
            self.crash(i).await;
        }
        if self.rng.per_mille(4) {
            let i = self.rng.below(self.brokers.len() as u64) as usize;
            let b = &mut self.brokers[i];
            if b.up.is_some() && b.isolated.is_none() {
                let until = self.now + 500 + self.rng.below(4_000) as i64;
                self.brokers[i].isolated = Some((self.now, until));
            }
        }
        if self.opts.power_loss && self.rng.per_mille(1) {
            // The whole rack loses power at once.
            for i in 0..self.brokers.len() {
                self.crash(i).await;
            }
        }
        for i in 0..self.brokers.len() {
            let b = &self.brokers[i];
            if b.up.is_none() && !self.live.contains(&b.id) && self.rng.per_mille(30) {
                self.restart(i).await;
            }
        }
    }

    /// Broker `i`'s process dies: killed (its completed writes stay) or, with `power_loss`,
    /// half of the time by a power loss (only synced bytes are sure to stay).
    async fn crash(&mut self, i: usize) {
        let power = self.opts.power_loss && self.rng.below(2) == 0;
        self.stop(i, power).await;
    }

    /// Broker `i`'s process is killed (SIGKILL).
    async fn kill(&mut self, i: usize) {
        self.stop(i, false).await;
    }

    async fn stop(&mut self, i: usize, power: bool) {
        if self.brokers[i].up.is_none() {
            return;
        }
        let seed = self.rng.below(u64::MAX);
        self.report.crashes += 1;
        let disk = self.brokers[i].disk.clone();
        // From here on nothing of this process reaches the disk; its tasks fail out.
        disk.halt_after(Some(0));
        self.brokers[i].up = None;
        self.brokers[i].down_since = self.now;
        self.brokers[i].isolated = None;
        for _ in 0..8 {
            futures_lite::future::yield_now().await;
        }
        if power {
            disk.crash(seed);
        }
        // Halted until the next start: nothing left of this process writes again.
    }

    async fn restart(&mut self, i: usize) {
        self.start(i).await;
        let id = self.brokers[i].id;
        self.live.insert(id);
        self.elect();
    }

    /// The controller expires the session of a broker down for longer than the timeout and
    /// elects.
    /// Also ends isolations: a broker that reaches the controller again registers again
    /// (a new session) if its old one expired, as `cluster::watcher` does.
    fn expire_sessions(&mut self) {
        let now = self.now;
        let mut back = Vec::new();
        for b in &mut self.brokers {
            if let Some((_, until)) = b.isolated
                && (until <= now || b.up.is_none())
            {
                b.isolated = None;
                if b.up.is_some() && !self.live.contains(&b.id) {
                    back.push(b.id);
                }
            }
        }
        let expired: Vec<BrokerId> = self
            .brokers
            .iter()
            .filter(|b| {
                let silent_since = match (&b.up, b.isolated) {
                    (None, _) => Some(b.down_since),
                    (Some(_), Some((since, _))) => Some(since),
                    (Some(_), None) => None,
                };
                self.live.contains(&b.id)
                    && silent_since.is_some_and(|t| now - t >= SESSION_TIMEOUT_MS)
            })
            .map(|b| b.id)
            .collect();
        if expired.is_empty() && back.is_empty() {
            return;
        }
        for id in expired {
            self.live.remove(&id);
        }
        self.live.extend(back);
        self.elect();
    }

    /// A producer appends a batch to the broker that leads by its own image (as `leads`
    /// and `enough_in_sync` check before an append).
    fn produce(&mut self) {
        let key = (self.topic, 0);
        let now = self.now;
        let id = self.next_batch;
        let records = 1 + self.rng.below(5) as i32;
        let len = 80 + self.rng.below(3_000) as usize;
        // Any broker that leads by its own image (a deposed one that does not know yet too).
        let leading: Vec<&Broker> = self
            .brokers
            .iter()
            .filter(|b| {
                b.up.as_ref().is_some_and(|u| {
                    let meta = Sim::meta(&u.image);
                    meta.leader == b.id && u.leaders.led_epoch(key) == Some(meta.leader_epoch)
                })
            })
            .collect();
        if leading.is_empty() {
            return;
        }
        let b = leading[self.rng.below(leading.len() as u64) as usize];
        let up = b.up.as_ref().expect("up");
        if up.leaders.isr_len(key) < MIN_INSYNC as usize {
            return;
        }
        let batch = testing::batch(records, len, id as i64, id as u8);
        let epoch = up.log.leader_epoch();
        let Ok(info) = up.log.append_nowait(&[batch], epoch, now) else {
            return;
        };
        self.next_batch += 1;
        self.report.produced += 1;
        let next = info.last_offset + 1;
        let log = up.log.clone();
        let (broker, life) = (b.id, b.life);
        // acks=all is synced on the leader (`durability_for_acks`).
        glommio::spawn_local(async move {
            let _ = log.sync_to(next).await;
        })
        .detach();
        self.pending.push(Pending {
            broker,
            life,
            epoch,
            base: info.base_offset,
            next,
            id,
            since: now,
        });
    }

    /// Answers the acks=all appends that are done: acknowledged (synced here, the high
    /// watermark passed, still the leader under the append's epoch, enough in sync) or
    /// failed (the broker died or stopped leading, the log gave the offsets back, timeout).
    fn answer_produces(&mut self) {
        let key = (self.topic, 0);
        let mut acked = Vec::new();
        let now = self.now;
        self.pending.retain(|p| {
            let b = &self.brokers[Sim::index(p.broker)];
            let Some(up) = b.up.as_ref().filter(|_| b.life == p.life) else {
                return false;
            };
            let led = up.leaders.led_epoch(key);
            let single = Sim::meta(&up.image).replicas.len() <= 1;
            if !single && led != Some(p.epoch) {
                return false;
            }
            if up.log.synced_offset() >= p.next && up.log.high_watermark() >= p.next {
                if up.leaders.isr_len(key) >= MIN_INSYNC as usize {
                    acked.push((p.base, p.id));
                }
                return false;
            }
            now - p.since < PRODUCE_TIMEOUT_MS
        });
        for (base, id) in acked {
            if let Some(other) = self.acked.insert(base, id) {
                self.report.violations.push(format!(
                    "offset {base} acknowledged twice: batch {other} and batch {id}"
                ));
            }
        }
    }

    /// What consumers could read now, from each broker that leads by its own image: every
    /// batch below its high watermark, recorded the first time; a different batch at an
    /// offset already seen is a violation. Also checks that no running replica's high
    /// watermark went backwards.
    async fn observe(&mut self) {
        let key = (self.topic, 0);
        for i in 0..self.brokers.len() {
            let (id, life) = (self.brokers[i].id, self.brokers[i].life);
            let Some(up) = self.brokers[i].up.as_mut() else {
                continue;
            };
            let hw = up.log.high_watermark();
            if hw < up.last_high_watermark {
                self.report.violations.push(format!(
                    "broker {id}'s high watermark went back from {} to {hw}",
                    up.last_high_watermark
                ));
            }
            up.last_high_watermark = hw;
            let meta = Sim::meta(&up.image);
            if meta.leader != id || up.leaders.led_epoch(key) != Some(meta.leader_epoch) {
                continue;
            }
            let log = up.log.clone();
            let leadership = (id, life, meta.leader_epoch);
            let from = self.scanned.get(&leadership).copied().unwrap_or(0);
            if from >= hw {
                continue;
            }
            for (base, batch, _) in batches(&log, from, ReadEnd::HighWatermark).await {
                match self.visible.insert(base, batch) {
                    Some(seen) if seen != batch => self.report.violations.push(format!(
                        "a consumer read batch {seen} at offset {base} and later batch {batch} \
                         there (broker {id})"
                    )),
                    _ => {}
                }
            }
            self.scanned.insert(leadership, hw);
        }
    }

    /// The follower's side of broker `i`: one request at a time to the leader of its image.
    async fn follow(&mut self, i: usize) {
        let now = self.now;
        let me = self.brokers[i].id;
        self.seq += 1;
        let request = self.seq;
        let Some(up) = self.brokers[i].up.as_mut() else {
            return;
        };
        let meta = Sim::meta(&up.image).clone();
        // No answer in time: the connection is dropped and the request forgotten.
        up.in_flight
            .retain(|_, (_, since, _)| now - *since < ANSWER_TIMEOUT_MS + LONG_POLL_MS);
        if meta.leader < 0 || meta.leader == me || !meta.replicas.contains(&me) {
            return;
        }
        if up.in_flight.contains_key(&meta.leader) {
            return;
        }
        up.in_flight
            .insert(meta.leader, (request, now, meta.leader_epoch));
        let msg = if up.checked != Some(meta.leader_epoch) {
            Msg::AskEpoch {
                current: meta.leader_epoch,
                latest: up.log.latest_epoch(),
            }
        } else {
            Msg::Fetch {
                offset: up.log.log_end_offset(),
                epoch: meta.leader_epoch,
            }
        };
        let to_life = self.brokers[Sim::index(meta.leader)].life;
        self.send(me, meta.leader, to_life, request, msg);
    }

    /// Answers the replica fetches broker `i` holds that have something new, or waited long
    /// enough.
    async fn answer_parked(&mut self, i: usize) {
        let now = self.now;
        let me = self.brokers[i].id;
        let Some(up) = self.brokers[i].up.as_mut() else {
            return;
        };
        let written = up.log.written_offset();
        let (due, held): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut up.parked)
            .into_iter()
            .partition(|p| p.offset != written || now >= p.until);
        up.parked = held;
        let log = up.log.clone();
        for p in due {
            let answer = read_for_replica(&log, p.offset).await;
            self.send(me, p.from, p.from_life, p.request, Msg::Fetched(answer));
        }
    }

    /// The leader's in-sync check of broker `i` (`isr::check_loop`), and the timeout of a
    /// change it sent.
    fn check_isr(&mut self, i: usize) {
        let now = self.now;
        let me = self.brokers[i].id;
        let live: Vec<BrokerId> = self.live.iter().copied().collect();
        self.seq += 1;
        let request = self.seq;
        let Some(up) = self.brokers[i].up.as_mut() else {
            return;
        };
        if let Some((_, since, change)) = &up.altering
            && now - since >= ANSWER_TIMEOUT_MS
        {
            let change = change.clone();
            up.altering = None;
            up.leaders
                .altered(&change, Err(ResponseError::RequestTimedOut), me, now);
        }
        if now < up.next_isr_check_ms || up.altering.is_some() {
            return;
        }
        up.next_isr_check_ms = now + isr::CHECK_INTERVAL_MS as i64;
        let mut proposals = up.leaders.proposals(now, LAG_MS, me, &live);
        let Some(change) = proposals.pop() else {
            return;
        };
        up.altering = Some((request, now, change.clone()));
        self.send(me, CONTROLLER, 0, request, Msg::Alter(change));
    }

    async fn deliver(&mut self) {
        let now = self.now;
        let mut due: Vec<Envelope> = Vec::new();
        let mut rest = Vec::new();
        for e in self.net.drain(..) {
            if e.at <= now {
                due.push(e);
            } else {
                rest.push(e);
            }
        }
        self.net = rest;
        due.sort_by_key(|e| (e.at, e.seq));
        for e in due {
            self.receive(e).await;
        }
    }

    async fn receive(&mut self, e: Envelope) {
        if e.to == CONTROLLER {
            if let Msg::Alter(change) = e.msg {
                let live: Vec<BrokerId> = self.live.iter().copied().collect();
                let result = match isr::decide(&self.image, &live, e.from, &change) {
                    Ok(Some(meta)) => {
                        self.commit(vec![MetadataCommand::AssignPartitions {
                            id: self.topic,
                            assignments: vec![(0, meta.clone())],
                        }]);
                        Ok(meta)
                    }
                    Ok(None) => Ok(Sim::meta(&self.image).clone()),
                    Err(err) => Err(err),
                };
                self.send(
                    CONTROLLER,
                    e.from,
                    e.from_life,
                    e.request,
                    Msg::Altered(change, result),
                );
            }
            return;
        }
        let i = Sim::index(e.to);
        let now = self.now;
        let me = e.to;
        let key = (self.topic, 0);
        let b = &mut self.brokers[i];
        if b.life != e.to_life {
            return;
        }
        let Some(up) = b.up.as_mut() else {
            return;
        };
        match e.msg {
            Msg::Fetch { offset, epoch } => {
                let log = up.log.clone();
                let answer = match up
                    .leaders
                    .on_fetch(key, &log, e.from, offset, epoch, me, now)
                {
                    Err(err) => Some(Err(err.code())),
                    Ok(()) if offset > log.written_offset() => Some(Err(OFFSET_OUT_OF_RANGE)),
                    Ok(()) if offset == log.written_offset() => {
                        // Nothing new: held until there is (the fetch handler's long poll).
                        up.parked.push(Parked {
                            from: e.from,
                            from_life: e.from_life,
                            request: e.request,
                            offset,
                            until: now + LONG_POLL_MS,
                        });
                        None
                    }
                    Ok(()) => Some(read_for_replica(&log, offset).await),
                };
                if self.opts.fault == Fault::HighWatermarkFromLeaderAlone {
                    log.advance_high_watermark(log.written_offset());
                }
                if let Some(answer) = answer {
                    self.send(me, e.from, e.from_life, e.request, Msg::Fetched(answer));
                }
            }
            Msg::AskEpoch { current, latest } => {
                // As the OffsetForLeaderEpoch handler: only the leader answers, fenced by
                // the epoch the follower knows.
                let meta = Sim::meta(&up.image);
                let ours = up.log.leader_epoch();
                let answer = if meta.leader != me || up.leaders.led_epoch(key).is_none() {
                    Err(ResponseError::NotLeaderOrFollower.code())
                } else if current < ours {
                    Err(ResponseError::FencedLeaderEpoch.code())
                } else if current > ours {
                    Err(ResponseError::UnknownLeaderEpoch.code())
                } else {
                    Ok(up.log.end_offset_for_epoch(latest))
                };
                self.send(me, e.from, e.from_life, e.request, Msg::EpochAnswer(answer));
            }
            Msg::EpochAnswer(answer) => {
                let Some(&(request, _, asked_under)) = up.in_flight.get(&e.from) else {
                    return;
                };
                if request != e.request {
                    return;
                }
                up.in_flight.remove(&e.from);
                let meta = Sim::meta(&up.image);
                let still_led = meta.leader == e.from && meta.leader_epoch == asked_under;
                if !still_led && self.opts.fault != Fault::StaleLeaderAnswers {
                    return;
                }
                // As the fetcher: no cut without an answer (an error, or an epoch the leader
                // cannot place).
                let Ok(answer) = answer else { return };
                if answer.0 < 0 {
                    return;
                }
                let log = up.log.clone();
                let own_end = log.log_end_offset();
                let Truncation { to, settled } = truncation(&log, answer).await;
                if to < own_end && log.truncate_to(to).await.is_err() {
                    return;
                }
                if (settled || to >= own_end)
                    && let Some(up) = self.brokers[i].up.as_mut()
                {
                    up.checked = Some(asked_under);
                }
            }
            Msg::Fetched(answer) => {
                let Some(&(request, _, fetched_under)) = up.in_flight.get(&e.from) else {
                    return;
                };
                if request != e.request {
                    return;
                }
                let meta = Sim::meta(&up.image);
                let still_led = meta.leader == e.from && meta.leader_epoch == fetched_under;
                let log = up.log.clone();
                let answer = answer.and_then(|a| {
                    if still_led || self.opts.fault == Fault::StaleLeaderAnswers {
                        Ok(a)
                    } else {
                        Err(ResponseError::NotLeaderOrFollower.code())
                    }
                });
                let Ok((records, hw)) = answer else {
                    up.in_flight.remove(&e.from);
                    return;
                };
                let end = log.log_end_offset();
                let mut appended = Vec::new();
                for batch in RecordBatches::allow_partial_tail(records) {
                    match batch {
                        Ok(batch) if batch.base_offset() >= end => appended.push(batch),
                        Ok(_) => {}
                        Err(err) => {
                            self.report
                                .violations
                                .push(format!("broker {me} got a malformed batch: {err}"));
                            break;
                        }
                    }
                }
                let fault = self.opts.fault;
                // The request stays in flight until the appends are written (and synced):
                // the next fetch offset says what this replica holds.
                if !appended.is_empty() {
                    if let Err(err) = log.append_replica(&appended, now) {
                        self.report
                            .violations
                            .push(format!("broker {me} refused its leader's batches: {err}"));
                    }
                    let next = log.log_end_offset();
                    if fault != Fault::FollowerReportsBeforeSync {
                        let _ = log.sync_to(next).await;
                    }
                    let _ = log.wait_written(next).await;
                }
                log.advance_high_watermark(hw);
                let b = &mut self.brokers[i];
                if b.life == e.to_life
                    && let Some(up) = b.up.as_mut()
                    && up.in_flight.get(&e.from).map(|f| f.0) == Some(e.request)
                {
                    up.in_flight.remove(&e.from);
                }
            }
            Msg::Altered(change, result) => {
                if up.altering.as_ref().map(|(r, _, _)| *r) != Some(e.request) {
                    return;
                }
                up.altering = None;
                up.leaders.altered(&change, result, me, now);
            }
            Msg::Alter(_) => {}
        }
    }

    /// After the quiet end: every acknowledged and every consumer-visible batch is in the
    /// leader's log where it was seen, and every replica holds the leader's bytes.
    async fn final_check(&mut self) {
        let leader = Sim::meta(&self.image).leader;
        let log = self.brokers[Sim::index(leader)]
            .up
            .as_ref()
            .expect("settled")
            .log
            .clone();
        let ours = batches(&log, 0, ReadEnd::Written).await;
        let by_offset: BTreeMap<i64, u64> = ours.iter().map(|(o, id, _)| (*o, *id)).collect();
        for (base, id) in &self.acked {
            match by_offset.get(base) {
                Some(got) if got == id => {}
                got => self.report.violations.push(format!(
                    "acknowledged batch {id} at offset {base} is gone (found {got:?})"
                )),
            }
        }
        if !self.opts.power_loss {
            for (base, id) in &self.visible {
                match by_offset.get(base) {
                    Some(got) if got == id => {}
                    got => self.report.violations.push(format!(
                        "batch {id} that a consumer read at offset {base} is gone (found {got:?})"
                    )),
                }
            }
        }
        for b in &self.brokers {
            let up = b.up.as_ref().expect("settled");
            let theirs = batches(&up.log, 0, ReadEnd::Written).await;
            let same = theirs.len() == ours.len()
                && theirs
                    .iter()
                    .zip(&ours)
                    .all(|(a, b)| a.0 == b.0 && a.2 == b.2);
            if !same {
                self.report.violations.push(format!(
                    "broker {} holds other batches than the leader {leader}",
                    b.id
                ));
            }
        }
        self.report.acknowledged = self.acked.len();
        self.report.end_offset = log.written_offset();
    }
}

#[cfg(test)]
mod tests;
