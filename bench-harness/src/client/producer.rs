//! A batching producer: records in, Produce requests out, one acknowledgment callback per
//! batch.
//!
//! Owns: one queue of open batches per partition (a batch is sealed at `batch_bytes` or once
//! its first record is `linger` old, Kafka's `batch.size` and `linger.ms`), draining ready
//! batches into one Produce request per leader while that leader's connection has an
//! in-flight slot (so batches grow while the broker is busy, as Kafka's accumulator does),
//! acks 0/1/all, the batch codec, and the bounds on buffered record bytes (Kafka's
//! `buffer.memory`, and a budget shared by the producers of one executor) that make an
//! overloaded broker slow the caller down.
//! Never: retries (a failed batch is reported once as failed; a benchmark counts, it does not
//! hide errors); reorders a partition's batches; picks partitions (the caller does).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use corebus_wire::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use corebus_wire::kafka_protocol::messages::{ProduceRequest, RequestKind, ResponseKind};
use corebus_wire::record::{Compression, RecordBatchBuilder};
use glommio::sync::Semaphore;

use super::cluster::{Cluster, TopicLayout, topic_name};
use super::limits::{MAX_PRODUCE_REQUEST_BYTES, PRODUCE_TIMEOUT_MS};

/// Bytes a record adds to a batch besides its key and value (length, attributes, deltas,
/// key/value lengths, header count: a conservative estimate used for sizing only).
const RECORD_OVERHEAD_BYTES: usize = 16;

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// 0, 1 or -1 (all).
    pub acks: i16,
    pub compression: Compression,
    /// `batch.size`, in bytes of record data.
    pub batch_bytes: usize,
    /// `linger.ms`.
    pub linger: Duration,
    /// `buffer.memory`: record bytes appended but not yet acknowledged, in bytes.
    pub max_buffered_bytes: usize,
    /// `max.in.flight.requests.per.connection`.
    pub max_in_flight: usize,
}

/// How one batch ended.
pub struct BatchOutcome<'a> {
    pub partition: i32,
    /// The caller's tags of the batch's records, in order (the harness stores intended send
    /// times here).
    pub tags: &'a [u64],
    /// `Ok(())`, or what went wrong: a Kafka error code or a transport error.
    pub result: Result<(), String>,
}

pub type OnBatch = Rc<dyn Fn(BatchOutcome<'_>)>;

struct OpenBatch {
    builder: RecordBatchBuilder,
    bytes: usize,
    tags: Vec<u64>,
    opened_at: Instant,
}

struct Sealed {
    topic: usize,
    partition: i32,
    batch: OpenBatch,
}

pub struct Producer {
    cluster: Rc<Cluster>,
    config: ProducerConfig,
    topics: Vec<TopicLayout>,
    /// [topic][partition] queues; the last batch of a queue is the open one.
    queues: RefCell<Vec<Vec<VecDeque<OpenBatch>>>>,
    /// Partitions per leader node, for draining.
    by_leader: Vec<(i32, Vec<(usize, i32)>)>,
    in_flight: RefCell<HashMap<i32, usize>>,
    buffer: Rc<Semaphore>,
    /// The executor's budget of buffered record bytes, shared with its other producers.
    shared: Rc<Semaphore>,
    /// Callers waiting in [`Producer::send`] for buffer space: while there are any, every
    /// open batch goes out as soon as an in-flight slot frees (their bytes are what the
    /// waiters wait for, and no linger timer of theirs is running).
    waiting: Cell<usize>,
    on_batch: OnBatch,
    /// Requests sent and not yet finished (for [`Producer::flush`]).
    outstanding: Cell<usize>,
}

impl Producer {
    pub fn new(
        cluster: Rc<Cluster>,
        topics: Vec<TopicLayout>,
        config: ProducerConfig,
        shared: Rc<Semaphore>,
        on_batch: OnBatch,
    ) -> Rc<Producer> {
        let mut by_leader: HashMap<i32, Vec<(usize, i32)>> = HashMap::new();
        for (t, layout) in topics.iter().enumerate() {
            for (p, &leader) in layout.leaders.iter().enumerate() {
                by_leader.entry(leader).or_default().push((t, p as i32));
            }
        }
        let queues = topics
            .iter()
            .map(|l| l.leaders.iter().map(|_| VecDeque::new()).collect())
            .collect();
        Rc::new(Producer {
            cluster,
            buffer: Rc::new(Semaphore::new(config.max_buffered_bytes as u64)),
            shared,
            waiting: Cell::new(0),
            config,
            topics,
            queues: RefCell::new(queues),
            by_leader: by_leader.into_iter().collect(),
            in_flight: RefCell::new(HashMap::new()),
            on_batch,
            outstanding: Cell::new(0),
        })
    }

    pub fn partitions(&self, topic: usize) -> usize {
        self.topics[topic].leaders.len()
    }

    /// Appends one record, waiting while `buffer.memory` is used up. `tag` comes back in the
    /// batch's outcome.
    pub async fn send(
        self: &Rc<Self>,
        topic: usize,
        partition: i32,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        tag: u64,
    ) -> Result<(), String> {
        let bytes = key.map_or(0, <[u8]>::len) + value.len() + RECORD_OVERHEAD_BYTES;
        let units = self.units(bytes);
        self.reserve(&self.buffer, units)
            .await
            .map_err(|e| format!("producer buffer: {e}"))?;
        if let Err(e) = self.reserve(&self.shared, units).await {
            self.buffer.signal(units);
            return Err(format!("executor buffer: {e}"));
        }
        let mut queues = self.queues.borrow_mut();
        let queue = &mut queues[topic][partition as usize];
        let needs_new = queue
            .back()
            .is_none_or(|b| b.bytes + bytes > self.config.batch_bytes && !b.tags.is_empty());
        if needs_new {
            queue.push_back(OpenBatch {
                builder: RecordBatchBuilder::new(self.config.compression),
                bytes: 0,
                tags: Vec::new(),
                opened_at: Instant::now(),
            });
        }
        let Some(open) = queue.back_mut() else {
            return Err("no open batch".to_owned());
        };
        open.builder.record(timestamp_ms, key, Some(value));
        open.bytes += bytes;
        open.tags.push(tag);
        Ok(())
    }

    /// Semaphore units for a record or batch of `bytes` (capped so that one record larger
    /// than the buffer can still go).
    fn units(&self, bytes: usize) -> u64 {
        bytes.min(self.config.max_buffered_bytes) as u64
    }

    /// Takes `units` of `semaphore`, first sending everything open when it is used up (the
    /// broker is behind: the waiter waits for acknowledgments of what it buffered).
    async fn reserve(
        self: &Rc<Self>,
        semaphore: &Semaphore,
        units: u64,
    ) -> glommio::Result<(), ()> {
        if semaphore.try_acquire(units).unwrap_or(false) {
            return Ok(());
        }
        self.waiting.set(self.waiting.get() + 1);
        self.drain(Instant::now(), true);
        let result = semaphore.acquire(units).await;
        self.waiting.set(self.waiting.get() - 1);
        result
    }

    /// The earliest instant an open batch's linger runs out, if any batch is waiting.
    pub fn next_linger_deadline(&self) -> Option<Instant> {
        self.queues
            .borrow()
            .iter()
            .flatten()
            .filter_map(|q| q.front())
            .map(|b| b.opened_at + self.config.linger)
            .min()
    }

    /// Sends ready batches (full, or lingered long enough; everything if `all`) to leaders
    /// with a free in-flight slot.
    pub fn drain(self: &Rc<Self>, now: Instant, all: bool) {
        for (leader, partitions) in &self.by_leader {
            loop {
                let used = self.in_flight.borrow().get(leader).copied().unwrap_or(0);
                if used >= self.config.max_in_flight {
                    break;
                }
                let sealed = self.take_ready(partitions, now, all);
                if sealed.is_empty() {
                    break;
                }
                *self.in_flight.borrow_mut().entry(*leader).or_default() += 1;
                self.outstanding.set(self.outstanding.get() + 1);
                let this = self.clone();
                let leader = *leader;
                glommio::spawn_local(async move { this.send_request(leader, sealed).await })
                    .detach();
            }
        }
    }

    fn take_ready(&self, partitions: &[(usize, i32)], now: Instant, all: bool) -> Vec<Sealed> {
        let mut queues = self.queues.borrow_mut();
        let mut sealed = Vec::new();
        let mut request_bytes = 0;
        for &(topic, partition) in partitions {
            let queue = &mut queues[topic][partition as usize];
            // One batch per partition per request, as Kafka's producer sends them.
            let ready = queue.front().is_some_and(|b| {
                !b.tags.is_empty()
                    && (all
                        || queue.len() > 1
                        || b.bytes >= self.config.batch_bytes
                        || now >= b.opened_at + self.config.linger)
            });
            if !ready {
                continue;
            }
            if let Some(batch) = queue.pop_front() {
                request_bytes += batch.bytes;
                sealed.push(Sealed {
                    topic,
                    partition,
                    batch,
                });
            }
            if request_bytes >= MAX_PRODUCE_REQUEST_BYTES {
                break;
            }
        }
        sealed
    }

    async fn send_request(self: Rc<Self>, leader: i32, sealed: Vec<Sealed>) {
        let result = self.produce(leader, &sealed).await;
        for (i, s) in sealed.iter().enumerate() {
            let outcome = match &result {
                Ok(errors) => errors[i].clone(),
                Err(e) => Err(e.clone()),
            };
            (self.on_batch)(BatchOutcome {
                partition: s.partition,
                tags: &s.batch.tags,
                result: outcome,
            });
            let units = self.units(s.batch.bytes);
            self.buffer.signal(units);
            self.shared.signal(units);
        }
        if let Some(used) = self.in_flight.borrow_mut().get_mut(&leader) {
            *used = used.saturating_sub(1);
        }
        self.outstanding.set(self.outstanding.get() - 1);
        // A slot is free: whatever became ready meanwhile goes now (everything, while a
        // caller waits for buffer space).
        self.drain(Instant::now(), self.waiting.get() > 0);
    }

    /// One Produce request; per sealed batch, its outcome.
    async fn produce(
        &self,
        leader: i32,
        sealed: &[Sealed],
    ) -> Result<Vec<Result<(), String>>, String> {
        let mut topics: Vec<TopicProduceData> = Vec::new();
        for s in sealed {
            let batch = s.batch.builder.build().map_err(|e| e.to_string())?;
            let data = PartitionProduceData::default()
                .with_index(s.partition)
                .with_records(Some(batch.into_bytes()));
            let name = &self.topics[s.topic].name;
            match topics.iter_mut().find(|t| t.name.0.as_str() == name) {
                Some(t) => t.partition_data.push(data),
                None => topics.push(
                    TopicProduceData::default()
                        .with_name(topic_name(name))
                        .with_partition_data(vec![data]),
                ),
            }
        }
        let request = ProduceRequest::default()
            .with_acks(self.config.acks)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(topics);
        let connection = self
            .cluster
            .connection(leader)
            .await
            .map_err(|e| e.to_string())?;
        if self.config.acks == 0 {
            connection
                .send_only(RequestKind::Produce(request))
                .await
                .map_err(|e| e.to_string())?;
            return Ok(vec![Ok(()); sealed.len()]);
        }
        let ResponseKind::Produce(response) = connection
            .call(RequestKind::Produce(request))
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err("not a Produce answer".to_owned());
        };
        Ok(sealed
            .iter()
            .map(|s| {
                let name = &self.topics[s.topic].name;
                let answer = response
                    .responses
                    .iter()
                    .filter(|t| t.name.0.as_str() == name)
                    .flat_map(|t| &t.partition_responses)
                    .find(|p| p.index == s.partition);
                match answer {
                    Some(p) if p.error_code == 0 => Ok(()),
                    Some(p) => Err(format!("Kafka error {}", p.error_code)),
                    None => Err("partition missing from the answer".to_owned()),
                }
            })
            .collect())
    }

    /// Sends everything buffered and waits until every request has finished.
    pub async fn flush(self: &Rc<Self>) {
        loop {
            self.drain(Instant::now(), true);
            let empty = self
                .queues
                .borrow()
                .iter()
                .flatten()
                .all(VecDeque::is_empty);
            if empty && self.outstanding.get() == 0 {
                return;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
}
