//! One benchmark run: topics created, executors started, the workload driven, the
//! per-second intervals merged into the result.
//!
//! Owns: the timeline (warm-up, measured phase with its backlog pause, drain), spreading
//! producers and consumers over one glommio executor per allowed CPU, the live line, the
//! acknowledged-versus-consumed accounting, and the [`RunResult`].
//! Never: lets warm-up seconds into the measured figures; hides a count mismatch; merges
//! percentiles any way but as histograms.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use glommio::sync::Semaphore;
use glommio::{LocalExecutorBuilder, Placement};
use serde::Serialize;

use crate::client::Cluster;
use crate::client::cluster::{NewTopic, TopicLayout};
use crate::client::consumer::{Assignment, RecordSink, fetch_loop};
use crate::client::limits::MAX_EXECUTOR_BUFFERED_BYTES;
use crate::client::producer::{BatchOutcome, Producer, ProducerConfig};
use crate::payload::{Keys, PayloadPool, Payloads, Sticky, keyed_partition, read_stamp};
use crate::schedule::Schedule;
use crate::stats::{Interval, Percentiles};
use crate::workload::{Rate, Workload};

/// Records a producer generates before it lets other tasks run.
const MAX_RECORDS_PER_TURN: usize = 512;
/// Shortest pause of a producer between turns, in microseconds: the granularity of the
/// schedule (a message due inside a pause is sent at its end and its wait is counted).
const MIN_SLEEP_US: u64 = 20;
/// Time given to executors between connecting and the first intended send, so they start
/// together, in milliseconds.
const START_DELAY_MS: u64 = 200;
/// How often consumers look at the stop flag and the backlog clock, in milliseconds.
const CONTROL_POLL_MS: u64 = 10;
/// Bytes in a megabyte, as throughput is reported (MB/s, SI).
pub const BYTES_PER_MB: f64 = 1e6;

/// What `run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub brokers: String,
    pub workload: Workload,
    /// Prints the live line once per second.
    pub live: bool,
}

/// One second of the run, as the report plots it.
#[derive(Debug, Clone, Serialize)]
pub struct SecondPoint {
    pub second: u64,
    pub phase: &'static str,
    pub produce_msgs_per_s: u64,
    pub produce_mb_per_s: f64,
    pub consume_msgs_per_s: u64,
    pub errors: u64,
    pub publish_ms: Percentiles,
    pub end_to_end_ms: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub produce_msgs_per_s: f64,
    pub produce_mb_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
}

/// Everything a run measured; `result.json` is this, serialized.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub workload: String,
    pub brokers: String,
    pub broker_count: usize,
    pub started_unix_ms: u128,
    pub warmup_s: u64,
    pub duration_s: u64,
    pub backlog_s: u64,
    pub topics: usize,
    pub partitions_per_topic: usize,
    pub message_size: usize,
    pub producers: usize,
    pub consumers: usize,
    pub acks: String,
    pub compression: String,
    pub batch_bytes: usize,
    pub linger_ms: f64,
    /// Offered rate in messages/s; `None` for "max".
    pub offered_msgs_per_s: Option<f64>,
    /// Whether latency counts from intended send times (fixed rate) or from actual ones.
    pub coordinated_omission_corrected: bool,
    /// Records handed to producers, whole run.
    pub sent: u64,
    /// Records acknowledged, whole run (acks=0: written to the socket).
    pub produced: u64,
    /// This run's records read back, whole run.
    pub consumed: u64,
    pub errors: u64,
    pub produce_errors: u64,
    pub consume_errors: u64,
    /// Records read back that this run did not write.
    pub foreign_records: u64,
    /// `produced - consumed` when consumers ran (0 is the only good value).
    pub missing: i64,
    pub mismatch: bool,
    /// Measured phase only.
    pub throughput: Throughput,
    pub publish_latency_ms: Percentiles,
    pub end_to_end_latency_ms: Percentiles,
    pub series: Vec<SecondPoint>,
    pub error_samples: Vec<String>,
    pub executors: usize,
    #[serde(skip)]
    pub publish_spectrum: Vec<(f64, f64)>,
    #[serde(skip)]
    pub end_to_end_spectrum: Vec<(f64, f64)>,
}

/// Messages from executors to the main thread.
enum Report {
    Ready,
    Interval(Box<Interval>),
    ProducersDone,
    Finished,
    Failed(String),
}

/// What one executor is given.
#[derive(Clone)]
struct ExecutorPlan {
    index: usize,
    brokers: String,
    workload: Workload,
    layouts: Vec<TopicLayout>,
    /// (global producer index, topic index).
    producers: Vec<(usize, usize)>,
    /// (topic index, partitions).
    consumers: Vec<(usize, Vec<i32>)>,
    run_tag: u32,
    epoch: Instant,
    warmup_s: u64,
    duration_s: u64,
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn micros_since(epoch: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(epoch).as_micros() as u64
}

fn executor_count() -> anyhow::Result<Vec<usize>> {
    crate::cpus::allowed_cpus().context("sched_getaffinity")
}

/// Creates the workload's topics on `brokers`; returns their layouts and the broker count.
fn create_topics(
    cpu: usize,
    brokers: &str,
    workload: &Workload,
    names: Vec<String>,
) -> anyhow::Result<(Vec<TopicLayout>, usize)> {
    let brokers = brokers.to_owned();
    let topics: Vec<NewTopic> = names
        .into_iter()
        .map(|name| NewTopic {
            name,
            partitions: workload.partitions_per_topic as i32,
            replication_factor: workload.replication_factor,
            configs: workload
                .topic_configs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
        .collect();
    let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name("bench-setup")
        .spawn(move || async move {
            let cluster = Cluster::connect(&brokers, 1).await?;
            let layouts = cluster.create_topics(&topics).await?;
            Ok::<_, crate::client::ClientError>((layouts, cluster.broker_count()))
        })
        .map_err(|e| anyhow::anyhow!("starting the setup executor: {e}"))?;
    let joined = handle
        .join()
        .map_err(|e| anyhow::anyhow!("setup executor: {e}"))?;
    Ok(joined?)
}

/// Runs one workload against `options.brokers`.
pub fn run(options: &RunOptions) -> anyhow::Result<RunResult> {
    let workload = &options.workload;
    let cpus = executor_count()?;
    let run_tag: u32 = rand::random();
    let slug: String = workload
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let names: Vec<String> = (0..workload.topics)
        .map(|i| format!("bench-{slug}-{run_tag:08x}-{i}"))
        .collect();
    let (layouts, broker_count) = create_topics(cpus[0], &options.brokers, workload, names)
        .with_context(|| format!("creating topics on {}", options.brokers))?;

    let executors = cpus
        .len()
        .min(workload.producers().max(workload.consumers()))
        .max(1);
    let warmup_s = workload.warmup.as_secs();
    let duration_s = workload.duration.as_secs().max(1);
    let epoch = Instant::now();
    let mut plans: Vec<ExecutorPlan> = (0..executors)
        .map(|index| ExecutorPlan {
            index,
            brokers: options.brokers.clone(),
            workload: workload.clone(),
            layouts: layouts.clone(),
            producers: Vec::new(),
            consumers: Vec::new(),
            run_tag,
            epoch,
            warmup_s,
            duration_s,
        })
        .collect();
    for g in 0..workload.producers() {
        plans[g % executors]
            .producers
            .push((g, g / workload.producers_per_topic));
    }
    for c in 0..workload.consumers() {
        let (topic, k) = (
            c / workload.consumers_per_topic,
            c % workload.consumers_per_topic,
        );
        let partitions: Vec<i32> = (0..workload.partitions_per_topic as i32)
            .filter(|p| *p as usize % workload.consumers_per_topic == k)
            .collect();
        if !partitions.is_empty() {
            plans[c % executors].consumers.push((topic, partitions));
        }
    }

    let (report_tx, reports) = flume::unbounded::<Report>();
    let (start_tx, start_rx) = flume::bounded::<Instant>(executors);
    let mut start_tx = Some(start_tx);
    // Set once consumers have read everything (or the drain timed out), or on a failure;
    // producers look at it too, so a failed run ends early.
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (plan, &cpu) in plans.into_iter().zip(cpus.iter().cycle()) {
        let (report_tx, start_rx, stop) = (report_tx.clone(), start_rx.clone(), stop.clone());
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("bench-{}", plan.index))
            .spawn(move || async move {
                let failed = report_tx.clone();
                if let Err(e) = executor_main(plan, report_tx, start_rx, stop).await {
                    let _ = failed.send(Report::Failed(e));
                }
            })
            .map_err(|e| anyhow::anyhow!("starting an executor: {e}"))?;
        handles.push(handle);
    }
    drop(report_tx);

    let mut merged: BTreeMap<u64, (Interval, usize)> = BTreeMap::new();
    let mut all = Interval::new(0);
    let (mut ready, mut producers_done, mut finished) = (0, 0, 0);
    let mut drain_deadline: Option<Instant> = None;
    let mut failure: Option<String> = None;
    let mut printed_header = false;
    while finished < executors {
        let report = match reports.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => Some(r),
            Err(flume::RecvTimeoutError::Timeout) => None,
            Err(flume::RecvTimeoutError::Disconnected) => break,
        };
        match report {
            Some(Report::Ready) => {
                ready += 1;
                if ready == executors
                    && let Some(start_tx) = &start_tx
                {
                    let start = Instant::now() + Duration::from_millis(START_DELAY_MS);
                    for _ in 0..executors {
                        let _ = start_tx.send(start);
                    }
                }
            }
            Some(Report::Interval(interval)) => {
                all.merge(&interval);
                let entry = merged
                    .entry(interval.second)
                    .or_insert_with(|| (Interval::new(interval.second), 0));
                entry.0.merge(&interval);
                entry.1 += 1;
                if options.live && entry.1 == executors {
                    if !printed_header {
                        println!(
                            "{:>5} {:>7} {:>11} {:>9} {:>11} {:>10} {:>10} {:>7}",
                            "sec",
                            "phase",
                            "sent/s",
                            "MB/s",
                            "consumed/s",
                            "pub p99",
                            "e2e p99",
                            "errors"
                        );
                        printed_header = true;
                    }
                    let (i, _) = &merged[&interval.second];
                    println!(
                        "{:>5} {:>7} {:>11} {:>9.2} {:>11} {:>8.2}ms {:>8.2}ms {:>7}",
                        i.second,
                        phase(i.second, warmup_s, duration_s),
                        i.acked,
                        i.acked_bytes as f64 / BYTES_PER_MB,
                        i.consumed,
                        i.publish.summary().p99,
                        i.end_to_end.summary().p99,
                        i.errors()
                    );
                }
            }
            Some(Report::ProducersDone) => {
                producers_done += 1;
                if producers_done == executors {
                    drain_deadline = Some(Instant::now() + workload.drain_timeout);
                }
            }
            Some(Report::Finished) => finished += 1,
            Some(Report::Failed(e)) => {
                // That executor has returned; the others stop early: producers and
                // consumers see the stop flag, and any still waiting for the start sees the
                // start channel close.
                finished += 1;
                failure.get_or_insert(e);
                stop.store(true, Ordering::Relaxed);
                start_tx = None;
            }
            None => {}
        }
        if let Some(deadline) = drain_deadline {
            let drained = workload.consumers() == 0 || all.consumed >= all.acked;
            if drained || Instant::now() >= deadline {
                stop.store(true, Ordering::Relaxed);
            }
        }
    }
    for handle in handles {
        let _ = handle.join();
    }
    // Late intervals (sent after the loop saw Finished) come in here.
    while let Ok(Report::Interval(interval)) = reports.try_recv() {
        all.merge(&interval);
        merged
            .entry(interval.second)
            .or_insert_with(|| (Interval::new(interval.second), 0))
            .0
            .merge(&interval);
    }
    if let Some(e) = failure {
        bail!("{e}");
    }
    Ok(summarize(options, broker_count, executors, &merged, &all))
}

fn phase(second: u64, warmup_s: u64, duration_s: u64) -> &'static str {
    if second < warmup_s {
        "warmup"
    } else if second < warmup_s + duration_s {
        "measure"
    } else {
        "drain"
    }
}

fn summarize(
    options: &RunOptions,
    broker_count: usize,
    executors: usize,
    merged: &BTreeMap<u64, (Interval, usize)>,
    all: &Interval,
) -> RunResult {
    let w = &options.workload;
    let warmup_s = w.warmup.as_secs();
    let duration_s = w.duration.as_secs().max(1);
    let mut measured = Interval::new(0);
    let mut series = Vec::new();
    for (second, (i, _)) in merged {
        let phase = phase(*second, warmup_s, duration_s);
        if phase == "measure" {
            measured.merge(i);
        }
        series.push(SecondPoint {
            second: *second,
            phase,
            produce_msgs_per_s: i.acked,
            produce_mb_per_s: i.acked_bytes as f64 / BYTES_PER_MB,
            consume_msgs_per_s: i.consumed,
            errors: i.errors(),
            publish_ms: i.publish.summary(),
            end_to_end_ms: i.end_to_end.summary(),
        });
    }
    let secs = duration_s as f64;
    let consumers = w.consumers();
    let missing = if consumers > 0 {
        all.acked as i64 - all.consumed as i64
    } else {
        0
    };
    RunResult {
        workload: w.name.clone(),
        brokers: options.brokers.clone(),
        broker_count,
        started_unix_ms: unix_ms(),
        warmup_s,
        duration_s,
        backlog_s: w.backlog.as_secs(),
        topics: w.topics,
        partitions_per_topic: w.partitions_per_topic,
        message_size: w.message_size,
        producers: w.producers(),
        consumers,
        acks: match w.acks.0 {
            -1 => "all".to_owned(),
            n => n.to_string(),
        },
        compression: w.compression.name().to_owned(),
        batch_bytes: w.batch_bytes,
        linger_ms: w.linger.as_secs_f64() * 1000.0,
        offered_msgs_per_s: match w.rate {
            Rate::PerSecond(r) => Some(r),
            Rate::Max => None,
        },
        coordinated_omission_corrected: matches!(w.rate, Rate::PerSecond(_)),
        sent: all.sent,
        produced: all.acked,
        consumed: all.consumed,
        errors: all.errors(),
        produce_errors: all.produce_errors,
        consume_errors: all.consume_errors,
        foreign_records: all.foreign,
        missing,
        mismatch: missing != 0,
        throughput: Throughput {
            produce_msgs_per_s: measured.acked as f64 / secs,
            produce_mb_per_s: measured.acked_bytes as f64 / BYTES_PER_MB / secs,
            consume_msgs_per_s: measured.consumed as f64 / secs,
            consume_mb_per_s: measured.consumed_bytes as f64 / BYTES_PER_MB / secs,
        },
        publish_latency_ms: measured.publish.summary(),
        end_to_end_latency_ms: measured.end_to_end.summary(),
        publish_spectrum: measured.publish.spectrum(),
        end_to_end_spectrum: measured.end_to_end.spectrum(),
        series,
        error_samples: all.error_samples.clone(),
        executors,
    }
}

/// Stats of one executor, shared by its producers' callbacks and consumers' sinks.
type Stats = Rc<RefCell<Interval>>;

struct ConsumerStats {
    stats: Stats,
    run_tag: u32,
    epoch: Instant,
    now_us: Cell<u64>,
}

impl RecordSink for ConsumerStats {
    fn begin_response(&self) {
        self.now_us.set(micros_since(self.epoch, Instant::now()));
    }

    fn record(&self, value: Option<&[u8]>) {
        let mut s = self.stats.borrow_mut();
        match value.and_then(|v| read_stamp(v, self.run_tag).map(|t| (v.len(), t))) {
            Some((len, intended_us)) => {
                s.consumed += 1;
                s.consumed_bytes += len as u64;
                s.end_to_end
                    .record_us(self.now_us.get().saturating_sub(intended_us));
            }
            None => s.foreign += 1,
        }
    }

    fn error(&self, what: &str) {
        let mut s = self.stats.borrow_mut();
        s.consume_errors += 1;
        s.note_error(what);
    }
}

async fn executor_main(
    plan: ExecutorPlan,
    reports: flume::Sender<Report>,
    start: flume::Receiver<Instant>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let w = &plan.workload;
    let stats: Stats = Rc::new(RefCell::new(Interval::new(0)));
    let config = ProducerConfig {
        acks: w.acks.0,
        compression: w.compression,
        batch_bytes: w.batch_bytes,
        linger: w.linger,
        max_buffered_bytes: w.buffer_bytes,
        max_in_flight: w.max_in_flight,
    };
    let shared = Rc::new(Semaphore::new(
        MAX_EXECUTOR_BUFFERED_BYTES.max(w.buffer_bytes) as u64,
    ));
    // Connect everything before the clock starts.
    let mut producers = Vec::new();
    for &(global, topic) in &plan.producers {
        let cluster = Rc::new(connect(&plan, topic).await?);
        let stats = stats.clone();
        let epoch = plan.epoch;
        let message_size = w.message_size;
        let on_batch = Rc::new(move |outcome: BatchOutcome<'_>| {
            let now_us = micros_since(epoch, Instant::now());
            let mut s = stats.borrow_mut();
            match outcome.result {
                Ok(()) => {
                    s.acked += outcome.tags.len() as u64;
                    // Throughput counts message bytes (values), as OMB does, so produce and
                    // consume MB/s compare.
                    s.acked_bytes += (outcome.tags.len() * message_size) as u64;
                    for &intended_us in outcome.tags {
                        s.publish.record_us(now_us.saturating_sub(intended_us));
                    }
                }
                Err(e) => {
                    s.produce_errors += outcome.tags.len() as u64;
                    s.note_error(&format!("produce to partition {}: {e}", outcome.partition));
                }
            }
        });
        let producer = Producer::new(
            cluster,
            vec![plan.layouts[topic].clone()],
            config.clone(),
            shared.clone(),
            on_batch,
        );
        producers.push((global, producer));
    }
    let mut consumers = Vec::new();
    for (topic, partitions) in &plan.consumers {
        let cluster = Rc::new(connect(&plan, *topic).await?);
        let layout = &plan.layouts[*topic];
        let mut by_leader: BTreeMap<i32, Vec<Assignment>> = BTreeMap::new();
        for &p in partitions {
            let leader = layout.leaders[p as usize];
            by_leader.entry(leader).or_default().push(Assignment {
                topic: layout.name.clone(),
                partition: p,
                offset: 0,
            });
        }
        consumers.push((cluster, by_leader));
    }
    // The generators too: their payload pool is megabytes of random bytes to fill.
    let pool = PayloadPool::new(w, u64::from(plan.run_tag) << 8 | plan.index as u64)?;
    let total_producers = w.producers();
    let mut prepared = Vec::new();
    for (global, producer) in producers {
        let generator = Generator::new(&plan, global, total_producers, &pool, stats.clone())?;
        prepared.push((generator, producer));
    }
    reports.send(Report::Ready).map_err(|e| e.to_string())?;
    let start = start.recv_async().await.map_err(|e| e.to_string())?;

    let finished = Rc::new(Cell::new(false));
    glommio::spawn_local(ticker(
        stats.clone(),
        reports.clone(),
        start,
        finished.clone(),
    ))
    .detach();

    let paused = Rc::new(Cell::new(!w.backlog.is_zero()));
    let stop_local = Rc::new(Cell::new(false));
    let sink: Rc<dyn RecordSink> = Rc::new(ConsumerStats {
        stats: stats.clone(),
        run_tag: plan.run_tag,
        epoch: plan.epoch,
        now_us: Cell::new(0),
    });
    let mut fetchers = Vec::new();
    for (cluster, by_leader) in consumers {
        for (leader, assignments) in by_leader {
            fetchers.push(glommio::spawn_local(fetch_loop(
                cluster.clone(),
                leader,
                assignments,
                sink.clone(),
                paused.clone(),
                stop_local.clone(),
            )));
        }
    }
    // The backlog phase: consumers wait until `backlog` into the measured phase.
    let resume_at = start + Duration::from_secs(plan.warmup_s) + w.backlog;
    let control = glommio::spawn_local({
        let (paused, stop_local, stop) = (paused.clone(), stop_local.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                if paused.get() && Instant::now() >= resume_at {
                    paused.set(false);
                }
                glommio::timer::sleep(Duration::from_millis(CONTROL_POLL_MS)).await;
            }
            stop_local.set(true);
        }
    });

    let end = start + Duration::from_secs(plan.warmup_s + plan.duration_s);
    let mut generators = Vec::new();
    for (generator, producer) in prepared {
        generators.push(glommio::spawn_local(generator.run(
            producer,
            start,
            end,
            stop.clone(),
        )));
    }
    for g in generators {
        g.await;
    }
    reports
        .send(Report::ProducersDone)
        .map_err(|e| e.to_string())?;
    control.await;
    for f in fetchers {
        f.await;
    }
    finished.set(true);
    let last = std::mem::replace(&mut *stats.borrow_mut(), Interval::new(u64::MAX));
    let second = micros_since(start, Instant::now()) / 1_000_000;
    let last = Interval { second, ..last };
    reports
        .send(Report::Interval(Box::new(last)))
        .map_err(|e| e.to_string())?;
    reports.send(Report::Finished).map_err(|e| e.to_string())?;
    Ok(())
}

async fn connect(plan: &ExecutorPlan, topic: usize) -> Result<Cluster, String> {
    let cluster = Cluster::connect(&plan.brokers, plan.workload.max_in_flight)
        .await
        .map_err(|e| e.to_string())?;
    cluster
        .metadata(std::slice::from_ref(&plan.layouts[topic].name))
        .await
        .map_err(|e| e.to_string())?;
    Ok(cluster)
}

/// Sends this executor's interval once per second of the run.
async fn ticker(
    stats: Stats,
    reports: flume::Sender<Report>,
    start: Instant,
    finished: Rc<Cell<bool>>,
) {
    let mut second = 0u64;
    loop {
        let boundary = start + Duration::from_secs(second + 1);
        glommio::timer::sleep(boundary.saturating_duration_since(Instant::now())).await;
        if finished.get() {
            return;
        }
        let interval = std::mem::replace(&mut *stats.borrow_mut(), Interval::new(second + 1));
        if reports.send(Report::Interval(Box::new(interval))).is_err() {
            return;
        }
        second += 1;
    }
}

/// One producer's record generator: the schedule, keys, values, partitioner.
struct Generator {
    topic: usize,
    rate: Option<f64>,
    phase: Duration,
    payloads: Payloads,
    keys: Keys,
    sticky: Sticky,
    batch_bytes: usize,
    run_tag: u32,
    epoch: Instant,
    stats: Stats,
}

impl Generator {
    fn new(
        plan: &ExecutorPlan,
        global: usize,
        total: usize,
        pool: &PayloadPool,
        stats: Stats,
    ) -> Result<Generator, String> {
        let w = &plan.workload;
        let seed = u64::from(plan.run_tag) << 20 | global as u64;
        let rate = match w.rate {
            Rate::PerSecond(r) => Some(r / total as f64),
            Rate::Max => None,
        };
        Ok(Generator {
            topic: 0,
            rate,
            phase: rate.map_or(Duration::ZERO, |r| Schedule::phase(r, global, total)),
            payloads: Payloads::new(pool, w.message_size, seed),
            keys: Keys::new(w, seed)?,
            sticky: Sticky::new(global),
            batch_bytes: w.batch_bytes,
            run_tag: plan.run_tag,
            epoch: plan.epoch,
            stats,
        })
    }

    async fn run(
        mut self,
        producer: Rc<Producer>,
        start: Instant,
        end: Instant,
        stop: Arc<AtomicBool>,
    ) {
        let partitions = producer.partitions(self.topic);
        let mut schedule = self.rate.map(|r| Schedule::new(start + self.phase, r));
        glommio::timer::sleep(start.saturating_duration_since(Instant::now())).await;
        let mut key = Vec::new();
        loop {
            let now = Instant::now();
            if now >= end || stop.load(Ordering::Relaxed) {
                break;
            }
            let timestamp_ms = unix_ms() as i64;
            let mut sent = 0;
            while sent < MAX_RECORDS_PER_TURN {
                let intended = match schedule.as_mut() {
                    Some(s) => match s.take_due(now) {
                        Some((_, t)) if t < end => t,
                        _ => break,
                    },
                    // Closed loop: the intended time is the actual one.
                    None => Instant::now(),
                };
                let intended_us = micros_since(self.epoch, intended);
                let key_id = self.keys.next_id();
                key.clear();
                if let Some(id) = key_id {
                    key.extend_from_slice(self.keys.key_bytes(id));
                }
                let value = self.payloads.next(self.run_tag, intended_us);
                let record_bytes = key.len() + value.len();
                let partition = match key_id {
                    Some(_) => keyed_partition(&key, partitions),
                    None => self.sticky.next(record_bytes, self.batch_bytes, partitions),
                };
                let key = key_id.map(|_| key.as_slice());
                if let Err(e) = producer
                    .send(
                        self.topic,
                        partition as i32,
                        timestamp_ms,
                        key,
                        value,
                        intended_us,
                    )
                    .await
                {
                    let mut s = self.stats.borrow_mut();
                    s.produce_errors += 1;
                    s.note_error(&e);
                }
                self.stats.borrow_mut().sent += 1;
                sent += 1;
            }
            producer.drain(Instant::now(), false);
            let next = schedule
                .as_ref()
                .map_or(Instant::now(), Schedule::next_due)
                .min(producer.next_linger_deadline().unwrap_or(end))
                .min(end);
            // Always a timer, never a bare yield: glommio polls the sockets when the task
            // queue runs dry, so a producer that only yields starves its own
            // acknowledgments until the preemption timer (measured: a standing 200 ms of
            // publish latency at 20k msg/s). Messages due meanwhile keep their intended
            // times, so the tick's delay is counted, not hidden.
            let wait = next.saturating_duration_since(Instant::now());
            glommio::timer::sleep(wait.max(Duration::from_micros(MIN_SLEEP_US))).await;
        }
        producer.flush().await;
    }
}
