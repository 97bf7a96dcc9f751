//! Fetch (key 1): reads each partition on its owning shard (`shard::router::scatter`: one
//! message per shard per round, all shards at once), from the batch holding the fetch offset
//! (a mid-batch start returns the whole batch; clients skip the earlier records), within
//! `partition_max_bytes` and the response limit (the request's `max_bytes`, never more than
//! the broker's `fetch.max.bytes`, as in Kafka), cut at batch boundaries in request order
//! (KIP-74: only the first batch of the first non-empty partition may exceed the limit, so a
//! large batch cannot stall a consumer). With less than `min_bytes`, the request waits up to
//! `max_wait_ms` and is woken by the first append to any of its partitions.
//!
//! Copies: a partition owned by the shard holding the connection is answered with the storage
//! engine's chunks themselves (batch-cache ranges, DMA read buffers: `server::pieces`), which
//! the connection writes with one vectored send, so its records are never copied by the CPU.
//! A partition of another shard is copied once on its owner (what crosses the mesh must be
//! `Send`; the chunks hold shard-local `Rc`s) and that copy is sent as it is.
//!
//! Memory: each shard reads its partitions of a round one after another, each asking for no
//! more than what the response limit still leaves after that shard's earlier reads, and stops
//! reading once it is used up; so a round reads at most the limit plus one batch per owning
//! shard, whatever the client asks. Each read first takes its cost from the owning shard's
//! fetch memory budget (`corebus.shard.fetch.memory.budget.bytes`), so reads wait for memory
//! instead of allocating without bound: a local read takes its buffer and holds it until the
//! response is written (the budget thus counts the chunks a slow socket keeps alive, and one
//! response may take at most a quarter of it, so one stalled consumer cannot starve the
//! shard's other fetches); a read
//! for another shard takes its buffer and its copy and gives them back once copied. A fetch
//! that parks gives back what its last round read (it reads again when it wakes). A shard
//! parks at most
//! `corebus.shard.max.parked.fetches` fetches at once (past it a fetch is answered at once,
//! as at its `max_wait_ms`), and a parked fetch stops waiting, on every shard it waits on,
//! when its connection's reader ends (`server::closing`).
//!
//! Replica fetches (a `replica_id`, from a follower broker, `crate::replication`): the leader
//! first records what the follower holds (its fetch offset, `replication::leader`), which may
//! move the high watermark, then reads up to its written offset rather than the high
//! watermark, and parks on writes rather than on the high watermark. A broker that is not one
//! of the partition's replicas gets NOT_LEADER_OR_FOLLOWER.
//!
//! Fetch sessions (KIP-227, `shard::fetch_sessions`): a full fetch with epoch 0 opens a session,
//! incremental fetches then carry only changed partitions and are answered only for partitions
//! with news; epoch -1 fetches without a session. Transactions do not exist yet, so the last stable offset
//! is the high watermark and no aborted transactions are listed.
//!
//! Never: returns data above the high watermark to a consumer (nothing a crash or a lost
//! leader could take back); blocks a shard while waiting (the wait is an await on the logs'
//! watermarks); reads a partition
//! for more than the response can still carry; leaves a wait running on another shard after
//! the fetch stopped waiting.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, PartitionData,
};
use corebus_wire::kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use futures_lite::future;

use corebus_wire::kafka_protocol::messages::TopicName;
use uuid::Uuid;

use super::common::{locate_partition, str_bytes};
use crate::metadata::TopicId;
use crate::server::closing::Closed;
use crate::server::pieces::Piece;
use crate::shard::fetch_sessions::{PartKey, Plan};
use crate::shard::memory_pool::MemoryPermit;
use crate::shard::{Shard, ShardId, router};
use crate::storage::ReadEnd;

/// Longest a fetch waits for data, whatever `max_wait_ms` says (Kafka's clients use 500 ms).
const MAX_FETCH_WAIT_MS: i32 = 60_000;
/// First Fetch version with sessions (KIP-227).
const FETCH_SESSION_VERSION: i16 = 7;
/// First Fetch version naming topics by id (KIP-516).
const FETCH_TOPIC_ID_VERSION: i16 = 13;
/// Kafka's isolation levels.
const READ_COMMITTED: i8 = 1;
/// What a partition read may allocate beyond its ask and copy: the index interval it may
/// start before the fetch offset and the page alignment of a direct read, rounded up.
const READ_SLACK_BYTES: usize = 64 * 1024;

/// One partition to read, as sent to its shard.
#[derive(Clone, Copy)]
struct Want {
    topic_id: TopicId,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    /// The follower broker fetching (a replica fetch), or `None` for a consumer.
    replica: Option<BrokerIdNum>,
    /// The leader epoch the follower knows (`current_leader_epoch`; -1: not checked).
    leader_epoch: i32,
}

/// A broker id as the request carries it.
type BrokerIdNum = i32;

/// Kafka's "not a replica" `replica_id` (a consumer); v15 moved the field into `replica_state`.
const REPLICA_STATE_VERSION: i16 = 15;

/// The follower a request comes from, if it is a replica fetch.
fn replica_of(request: &FetchRequest, version: i16) -> Option<BrokerIdNum> {
    let id = if version >= REPLICA_STATE_VERSION {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    (id >= 0).then_some(id)
}

/// A partition of the answer: its position, index, and owning shard with the read to do
/// (or the error it gets).
type Slot = (usize, i32, Result<(ShardId, Want), i16>);

/// A partition to read as the session or request gives it, with what the client last heard.
type PlannedPart = (PartKey, i64, i32, Option<(i64, i64)>);

/// What a partition read gave: whole batches, as the pieces they are sent from.
#[derive(Default)]
struct Got {
    error: i16,
    high_watermark: i64,
    log_start_offset: i64,
    records: Vec<Piece>,
    /// The fetch memory the pieces hold (local reads), given back once they are written.
    held: Option<MemoryPermit>,
}

impl Got {
    fn records_len(&self) -> usize {
        self.records.iter().map(Piece::len).sum()
    }

    /// An answer without data.
    fn empty(error: i16, high_watermark: i64, log_start_offset: i64) -> Got {
        Got {
            error,
            high_watermark,
            log_start_offset,
            ..Got::default()
        }
    }

    /// Gives back the data and the memory it holds (the offsets stay).
    fn release(&mut self) {
        self.records.clear();
        self.held = None;
    }
}

/// What a shard sends back for a partition it read for another shard's connection: the one
/// copy of its chunks (a mesh message must be `Send`).
struct Copied {
    error: i16,
    high_watermark: i64,
    log_start_offset: i64,
    records: Bytes,
}

impl Copied {
    /// Copies `got`'s pieces into one buffer; the read's buffers (and its memory) go.
    fn of(got: Got) -> Copied {
        let mut v = Vec::with_capacity(got.records_len());
        for p in &got.records {
            v.extend_from_slice(p.as_slice());
        }
        Copied {
            error: got.error,
            high_watermark: got.high_watermark,
            log_start_offset: got.log_start_offset,
            records: Bytes::from(v),
        }
    }

    fn into_got(self) -> Got {
        let records = if self.records.is_empty() {
            Vec::new()
        } else {
            vec![Piece::Shared(self.records)]
        };
        Got {
            error: self.error,
            high_watermark: self.high_watermark,
            log_start_offset: self.log_start_offset,
            records,
            held: None,
        }
    }
}

/// A Fetch answer: the response with its record data kept beside it (topic-major, one entry
/// per partition in response order), so the connection sends the data without encoding a
/// copy of it (`server::gather`), and the fetch memory that data holds until it is written.
pub struct FetchReply {
    pub response: FetchResponse,
    pub records: Vec<Vec<Piece>>,
    pub held: Vec<MemoryPermit>,
}

pub async fn handle(
    shard: &Rc<Shard>,
    request: FetchRequest,
    version: i16,
    closed: Closed,
) -> FetchReply {
    // Topics are named by id from v13 on, by name before.
    let by_id = version >= FETCH_TOPIC_ID_VERSION;
    let topic_key = |name: &TopicName, id: Uuid| {
        if by_id {
            (String::new(), id)
        } else {
            (name.0.to_string(), Uuid::nil())
        }
    };
    let requested: Vec<(PartKey, i64, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            let (name, id) = topic_key(&t.topic, t.topic_id);
            t.partitions.iter().map(move |p| {
                (
                    (name.clone(), id, p.partition),
                    p.fetch_offset,
                    p.partition_max_bytes,
                )
            })
        })
        .collect();
    let forgotten: Vec<PartKey> = request
        .forgotten_topics_data
        .iter()
        .flat_map(|f| {
            let (name, id) = topic_key(&f.topic, f.topic_id);
            f.partitions.iter().map(move |p| (name.clone(), id, *p))
        })
        .collect();
    let plan = if version >= FETCH_SESSION_VERSION {
        shard.fetch_sessions.borrow_mut().begin(
            request.session_id,
            request.session_epoch,
            requested.clone(),
            forgotten,
        )
    } else {
        Plan::Full { session_id: 0 }
    };
    // The partitions to read, with what the client last heard (incremental sessions only).
    let (session_id, incremental, parts): (i32, bool, Vec<PlannedPart>) = match plan {
        Plan::Refuse(e) => {
            return FetchReply {
                response: FetchResponse::default().with_error_code(e.code()),
                records: Vec::new(),
                held: Vec::new(),
            };
        }
        Plan::Full { session_id } => (
            session_id,
            false,
            requested
                .into_iter()
                .map(|(k, o, m)| (k, o, m, None))
                .collect(),
        ),
        Plan::Incremental { session_id, parts } => (
            session_id,
            true,
            parts
                .into_iter()
                .map(|p| (p.key, p.fetch_offset, p.max_bytes, p.sent))
                .collect(),
        ),
    };
    let image = shard.metadata();
    let replica = replica_of(&request, version);
    // A follower's view of each partition's leader epoch, checked against the leader's own.
    let follower_epochs: std::collections::HashMap<PartKey, i32> = match replica {
        Some(_) => request
            .topics
            .iter()
            .flat_map(|t| {
                let (name, id) = topic_key(&t.topic, t.topic_id);
                t.partitions
                    .iter()
                    .map(move |p| ((name.clone(), id, p.partition), p.current_leader_epoch))
            })
            .collect(),
        None => Default::default(),
    };
    let response_max = response_limit(request.max_bytes, shard.config.limits.fetch_max_bytes)
        .min(shard.fetch_memory.capacity_bytes() / RESPONSE_SHARE_OF_FETCH_BUDGET);
    let slots: Vec<Slot> = parts
        .iter()
        .enumerate()
        .map(|(pos, ((name, id, partition), offset, max_bytes, _))| {
            let name = (!by_id).then_some(name.as_str());
            let routed = locate_partition(&image, shard.here(), name, *id, *partition)
                .map(|(topic_id, owner)| {
                    (
                        owner,
                        Want {
                            topic_id,
                            partition: *partition,
                            offset: *offset,
                            // No partition can use more than the whole response.
                            max_bytes: usize::try_from(*max_bytes).unwrap_or(0).min(response_max),
                            replica,
                            leader_epoch: if follower_epochs.is_empty() {
                                -1
                            } else {
                                let key = (name.unwrap_or_default().to_string(), *id, *partition);
                                follower_epochs.get(&key).copied().unwrap_or(-1)
                            },
                        },
                    )
                })
                .map_err(|e| e.code());
            (pos, *partition, routed)
        })
        .collect();
    let wait = Duration::from_millis(request.max_wait_ms.clamp(0, MAX_FETCH_WAIT_MS) as u64);
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let parked_cap = shard.config.limits.shard_max_parked_fetches;
    let mut got = read_round(shard, &slots, response_max).await;
    loop {
        let total: usize = got.iter().map(Got::records_len).sum();
        let any_error = got.iter().any(|g| g.error != 0);
        // Data below the high watermark that this round did not return (a partition limit of
        // 0, say) will never wake a wait: answer now instead of spinning until the deadline.
        let stuck = slots.iter().zip(&got).any(|((_, _, r), g)| {
            r.as_ref()
                .is_ok_and(|(_, w)| g.records.is_empty() && g.high_watermark > w.offset)
        });
        if total >= min_bytes
            || any_error
            || stuck
            || Instant::now() >= deadline
            || shard.shutdown.is_fired()
            || closed.is_closed()
        {
            break;
        }
        let Some(parked) = Parked::enter(&shard.parked_fetches, parked_cap) else {
            // As Kafka answers at max_wait_ms: with what there is, possibly nothing.
            shard.count(|m| m.fetches_not_parked += 1);
            break;
        };
        // The round is read again after the wait: a parked fetch holds no read memory (and
        // cannot wait on memory it holds itself).
        got.iter_mut().for_each(Got::release);
        wait_for_data(shard, &slots, deadline, &closed).await;
        drop(parked);
        if closed.is_closed() {
            // No one will read a fresher answer; do not read again for it.
            break;
        }
        got = read_round(shard, &slots, response_max).await;
    }
    trim_to(&mut got, response_max);
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    let mut records = Vec::new();
    let mut held = Vec::new();
    let mut sent = Vec::new();
    for ((key, _, _, heard), g) in parts.into_iter().zip(got) {
        // An incremental answer leaves out partitions with nothing new for the client.
        let news = !g.records.is_empty()
            || g.error != 0
            || heard != Some((g.high_watermark, g.log_start_offset));
        if incremental && !news {
            continue;
        }
        sent.push((key.clone(), g.high_watermark, g.log_start_offset));
        let (name, id, partition) = key;
        let mut data = PartitionData::default()
            .with_partition_index(partition)
            .with_error_code(g.error)
            .with_high_watermark(g.high_watermark)
            .with_last_stable_offset(g.high_watermark)
            .with_log_start_offset(g.log_start_offset)
            .with_preferred_read_replica(BrokerId(-1));
        records.push(g.records);
        held.extend(g.held);
        if request.isolation_level == READ_COMMITTED {
            data.aborted_transactions = Some(Vec::new());
        }
        match responses.last_mut() {
            Some(t) if t.topic.0.as_str() == name && t.topic_id == id => t.partitions.push(data),
            _ => responses.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(str_bytes(name)))
                    .with_topic_id(id)
                    .with_partitions(vec![data]),
            ),
        }
    }
    if session_id != 0 {
        shard.fetch_sessions.borrow_mut().finish(session_id, &sent);
    }
    FetchReply {
        response: FetchResponse::default()
            .with_session_id(session_id)
            .with_responses(responses),
        records,
        held,
    }
}

/// One response carries at most this fraction of its shard's fetch memory budget (16 MiB of
/// the default 64 MiB): a local read holds its memory until the response is written, so a
/// consumer that stops reading its socket with a fetch in flight keeps at most a quarter of
/// the budget from the shard's other fetches (KIP-74 lets a response be smaller than asked).
const RESPONSE_SHARE_OF_FETCH_BUDGET: usize = 4;

/// The record bytes a response may carry: the request's `max_bytes` (a negative one means no
/// limit; old clients send i32::MAX anyway), never more than the broker's `fetch.max.bytes`.
fn response_limit(requested: i32, fetch_max_bytes: usize) -> usize {
    usize::try_from(requested)
        .unwrap_or(usize::MAX)
        .min(fetch_max_bytes)
}

/// A wait counted in one of its shard's gauges (parked fetches, waits on its partitions)
/// while this lives.
struct Parked<'a>(&'a Cell<usize>);

impl<'a> Parked<'a> {
    /// Counts one more wait in `count`, unless `cap` are counted already.
    fn enter(count: &'a Cell<usize>, cap: usize) -> Option<Parked<'a>> {
        if count.get() >= cap {
            return None;
        }
        count.set(count.get() + 1);
        Some(Parked(count))
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Reads every routed partition once, each on its shard (all shards at once), each shard
/// within `response_max` in all; errors stand for the others. This shard's partitions are
/// read in place and keep their storage chunks; the others' come back copied once.
async fn read_round(shard: &Rc<Shard>, slots: &[Slot], response_max: usize) -> Vec<Got> {
    let mut got: Vec<Got> = slots
        .iter()
        .map(|(_, _, r)| match r {
            Ok(_) => Got::default(),
            Err(code) => Got::empty(*code, -1, -1),
        })
        .collect();
    let (mut local_positions, mut local) = (Vec::new(), Vec::new());
    let (mut remote_positions, mut remote) = (Vec::new(), Vec::new());
    for (pos, (_, _, r)) in slots.iter().enumerate() {
        match r {
            Ok((owner, want)) if *owner == shard.id => {
                local_positions.push(pos);
                local.push(*want);
            }
            Ok((owner, want)) => {
                remote_positions.push(pos);
                remote.push((*owner, *want));
            }
            Err(_) => {}
        }
    }
    // Not through `router::scatter`'s in-place group: its results must be `Send` and local
    // chunks are not. The remote groups go out first and run meanwhile.
    let (remote_done, local_done) = future::zip(
        router::scatter(shard, remote, move |s: Rc<Shard>, wants| async move {
            read_on_owner(&s, wants, response_max, ReadFor::OtherShard, Copied::of).await
        }),
        read_on_owner(shard, local, response_max, ReadFor::ThisShard, |g| g),
    )
    .await;
    for (pos, g) in remote_positions.into_iter().zip(remote_done) {
        match g {
            Ok(c) => got[pos] = c.into_got(),
            Err(_) => got[pos].error = ResponseError::KafkaStorageError.code(),
        }
    }
    for (pos, g) in local_positions.into_iter().zip(local_done) {
        got[pos] = g;
    }
    got
}

/// Whose connection a read is for, which decides what it costs and how long it holds it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadFor {
    /// This shard's: sent from its buffer, held until written.
    ThisShard,
    /// Another shard's: copied once, given back once copied.
    OtherShard,
}

impl ReadFor {
    /// Copies of the read buffer a read holds at its peak.
    fn copies(self) -> usize {
        match self {
            ReadFor::ThisShard => 0,
            ReadFor::OtherShard => 1,
        }
    }
}

/// Longest a read waits for fetch memory; past it the partition (and the rest of its group)
/// answers without data this round. Held memory goes with written responses, and a
/// connection writes its responses in order, so a fetch waiting for memory behind a later
/// response of its own connection (or of a connection on another shard that waits the same
/// way) would otherwise wait forever.
const FETCH_MEMORY_WAIT_MS: u64 = 200;

/// What reading up to `ask` bytes of a log holding `log_bytes` may hold at its peak: the read
/// buffer and `copies` copies of it (a read returns no more than the log holds, and at least
/// one batch, which may exceed the ask by that batch).
fn read_cost_bytes(ask: usize, log_bytes: u64, copies: usize) -> usize {
    let data = ask.min(usize::try_from(log_bytes).unwrap_or(usize::MAX));
    data.saturating_mul(1 + copies)
        .saturating_add(READ_SLACK_BYTES)
}

/// The pieces of a read: its chunks, as they are.
fn pieces_of<D: crate::storage::Disk>(read: crate::storage::LogRead<D>) -> Vec<Piece> {
    read.chunks.into_iter().map(Piece::local).collect()
}

/// Runs on the owning shard: one read per partition, one answer per want, in order, one read
/// at a time, each asking for no more than `response_max` leaves after the reads before it
/// (once used up, the rest answer without data). Each read takes its cost (its buffer and
/// `copies` copies) of the shard's fetch memory budget; `finish` turns the read into the
/// answer right after it (the remote path copies it there and gives the memory back, the
/// local one keeps the chunks and the memory until the response is written).
async fn read_on_owner<R>(
    shard: &Shard,
    wants: Vec<Want>,
    response_max: usize,
    read_for: ReadFor,
    finish: impl Fn(Got) -> R,
) -> Vec<R> {
    let mut out = Vec::with_capacity(wants.len());
    let mut left = response_max;
    // Whether this group keeps fetch memory from an earlier read: it then never waits for
    // more (it could wait for itself), it stops reading when none is free.
    let mut holding = false;
    for want in wants {
        let Some(log) = shard.logs.log((want.topic_id, want.partition)) else {
            out.push(finish(Got::empty(
                ResponseError::KafkaStorageError.code(),
                -1,
                -1,
            )));
            continue;
        };
        // A follower's fetch says what it holds: recorded before the read, so the high
        // watermark it answers with counts it.
        if let Some(replica) = want.replica
            && let Err(e) = shard.leaders.on_fetch(
                (want.topic_id, want.partition),
                &log,
                replica,
                want.offset,
                want.leader_epoch,
                shard.node.node_id,
                crate::storage::now_ms(),
            )
        {
            out.push(finish(Got::empty(e.code(), -1, -1)));
            continue;
        }
        let high_watermark = log.high_watermark();
        let log_start_offset = log.log_start_offset();
        let (end, read_end) = match want.replica {
            Some(_) => (log.written_offset(), ReadEnd::Written),
            None => (high_watermark, ReadEnd::HighWatermark),
        };
        // With the response already full here, a read could only be trimmed away; the
        // partition answers without data (the request then answers without waiting).
        let g = if want.offset == end || left == 0 {
            Got::empty(0, high_watermark, log_start_offset)
        } else {
            let ask = want.max_bytes.min(left);
            let budget = &shard.fetch_memory;
            let cost = read_cost_bytes(ask, log.size_bytes(), read_for.copies())
                .min(budget.capacity_bytes());
            // Capped at the capacity, so never refused by size.
            let held = if holding {
                budget.try_take(cost)
            } else {
                let wait = Duration::from_millis(FETCH_MEMORY_WAIT_MS);
                glommio::timer::timeout(wait, async { Ok(budget.take(cost).await.ok()) })
                    .await
                    .ok()
                    .flatten()
            };
            let Some(mut held) = held else {
                // No memory now: this and the rest of the group answer without data; the
                // fetch answers at once (data is left below the high watermark).
                shard.count(|m| m.fetch_reads_deferred += 1);
                left = 0;
                out.push(finish(Got::empty(0, high_watermark, log_start_offset)));
                continue;
            };
            match log.read_to(want.offset, ask, read_end).await {
                Ok(read) => {
                    if read_for == ReadFor::ThisShard {
                        // Kept until written: count what the read keeps alive, not its
                        // worst case.
                        held.shrink_to(read.held_bytes());
                        holding |= held.bytes() > 0;
                    }
                    left = left.saturating_sub(read.len_bytes());
                    Got {
                        error: 0,
                        high_watermark: read.high_watermark,
                        log_start_offset: read.log_start_offset,
                        records: pieces_of(read),
                        held: Some(held),
                    }
                }
                Err(e) => Got::empty(e.kafka_error_code(), high_watermark, log_start_offset),
            }
        };
        out.push(finish(g));
    }
    out
}

/// Waits until some partition of the request has data past its fetch offset, the deadline
/// passes, the connection closes, or the shard shuts down.
async fn wait_for_data(shard: &Rc<Shard>, slots: &[Slot], deadline: Instant, closed: &Closed) {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let work = slots
        .iter()
        .filter_map(|(_, _, r)| {
            let (owner, want) = r.as_ref().ok()?;
            Some((
                *owner,
                (
                    want.topic_id,
                    want.partition,
                    want.offset,
                    want.replica.is_some(),
                ),
            ))
        })
        .collect();
    let (woke_tx, woke_rx) = flume::bounded::<()>(1);
    // Dropped when this returns, which every wait watches: a wait on another shard would
    // otherwise run to its deadline after one shard woke, or after the connection closed.
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    // Dropping these cancels this shard's tasks that await the waits.
    let mut waits = Vec::new();
    // Returns at the first wake from any shard, so not `router::scatter` (which waits for all).
    for (owner, _, items) in router::group(work) {
        let s = shard.clone();
        let tx = woke_tx.clone();
        let stop = stop_rx.clone();
        waits.push(glommio::spawn_local(async move {
            let _ = s
                .on_shard(owner, move |o: Rc<Shard>| async move {
                    wait_on_owner(&o, items, remaining, stop).await
                })
                .await;
            let _ = tx.try_send(());
        }));
    }
    drop(woke_tx);
    let shutdown = shard.shutdown.clone();
    future::or(
        async {
            let _ = woke_rx.recv_async().await;
        },
        future::or(
            async {
                glommio::timer::sleep(remaining).await;
            },
            future::or(async move { shutdown.wait().await }, closed.wait()),
        ),
    )
    .await;
    drop(stop_tx);
    drop(waits);
}

/// Runs on the owning shard: returns when any of `items` has a high watermark (for a follower:
/// a written offset) past its fetch offset, after `wait`, or when the fetch stops waiting (`stop` disconnects).
async fn wait_on_owner(
    shard: &Shard,
    items: Vec<(TopicId, i32, i64, bool)>,
    wait: Duration,
    stop: flume::Receiver<()>,
) {
    // Not capped here: there is at most one per parked fetch of the node and owning shard,
    // and the fetches are capped where they park.
    let _counted = Parked::enter(&shard.fetch_waits, usize::MAX);
    let (tx, rx) = flume::bounded::<()>(1);
    let mut waits = Vec::new();
    for (topic_id, partition, offset, replica) in items {
        let Some(log) = shard.logs.log((topic_id, partition)) else {
            continue;
        };
        let tx = tx.clone();
        waits.push(glommio::spawn_local(async move {
            // A follower waits for the leader's writes, a consumer for the high watermark.
            let _ = if replica {
                log.wait_written(offset.saturating_add(1)).await
            } else {
                log.wait_high_watermark(offset.saturating_add(1)).await
            };
            let _ = tx.try_send(());
        }));
    }
    drop(tx);
    let _ = glommio::timer::timeout(wait, async {
        future::or(
            async {
                let _ = rx.recv_async().await;
            },
            async {
                // Nothing is sent: this returns when the fetch drops the sender.
                let _ = stop.recv_async().await;
            },
        )
        .await;
        Ok(())
    })
    .await;
    drop(waits);
}

/// Keeps record data within `max_bytes` in request order, cutting at batch boundaries: each
/// partition keeps the whole batches that still fit, and the first batch of the first
/// non-empty partition is kept whatever its size (KIP-74: only that one batch may exceed the
/// limit, so a large batch cannot stall a consumer).
fn trim_to(got: &mut [Got], max_bytes: usize) {
    let mut used = 0usize;
    for g in got.iter_mut() {
        // A record set's pieces each hold whole batches (a read never splits one), so the
        // cut is found piece by piece; the pieces after it go.
        let mut kept_pieces = 0;
        for p in g.records.iter_mut() {
            let room = max_bytes.saturating_sub(used);
            let keep = whole_batches_within(p.as_slice(), room, used == 0);
            used = used.saturating_add(keep);
            let whole = keep == p.len();
            p.truncate(keep);
            if keep > 0 {
                kept_pieces += 1;
            }
            if !whole {
                break;
            }
        }
        g.records.truncate(kept_pieces);
        if g.records.is_empty() {
            // Nothing of this read is sent: its memory need not wait for the write.
            g.held = None;
        }
    }
}

/// Offset of the record batch's `batchLength` field (after the base offset).
const BATCH_LENGTH_AT: usize = 8;
/// Bytes of a batch before what `batchLength` counts: the base offset and the length itself.
const BATCH_PREFIX_BYTES: usize = 12;

/// The length of the longest prefix of `records` made of whole batches within `room` bytes;
/// with `at_least_one`, the first batch counts whatever its size.
fn whole_batches_within(records: &[u8], room: usize, at_least_one: bool) -> usize {
    let mut end = 0usize;
    while let Some(len_bytes) = records.get(end + BATCH_LENGTH_AT..end + BATCH_PREFIX_BYTES) {
        let declared = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        let Some(next) = usize::try_from(declared)
            .ok()
            .and_then(|l| end.checked_add(BATCH_PREFIX_BYTES + l))
            .filter(|n| *n <= records.len())
        else {
            // The log only returns whole batches; anything else is not split further.
            break;
        };
        if next > room && !(at_least_one && end == 0) {
            break;
        }
        end = next;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Record bytes of batches of these total sizes (only the length field is real).
    fn batches(sizes: &[usize]) -> Vec<u8> {
        let mut v = Vec::new();
        for &n in sizes {
            let mut b = vec![0u8; n];
            b[BATCH_LENGTH_AT..BATCH_PREFIX_BYTES]
                .copy_from_slice(&((n - BATCH_PREFIX_BYTES) as i32).to_be_bytes());
            v.extend_from_slice(&b);
        }
        v
    }

    /// A record set in one piece of batches of these total sizes.
    fn got(sizes: &[usize]) -> Got {
        got_pieces(&[sizes])
    }

    /// A record set of several pieces, each of batches of these total sizes.
    fn got_pieces(pieces: &[&[usize]]) -> Got {
        Got {
            records: pieces
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| Piece::Shared(Bytes::from(batches(p))))
                .collect(),
            ..Got::default()
        }
    }

    fn sizes(g: &[Got]) -> Vec<usize> {
        g.iter().map(Got::records_len).collect()
    }

    #[test]
    fn max_bytes_lets_only_the_first_batch_exceed_it() {
        // The first non-empty partition's first batch goes whole, nothing after it fits.
        let mut g = vec![got(&[]), got(&[100, 20]), got(&[30]), got(&[12])];
        trim_to(&mut g, 50);
        assert_eq!(sizes(&g), vec![0, 100, 0, 0]);
        // Whole batches while they fit, across partitions; a partition may be cut.
        let mut g = vec![got(&[13]), got(&[15, 15]), got(&[20])];
        trim_to(&mut g, 45);
        assert_eq!(sizes(&g), vec![13, 30, 0]);
        let mut g = vec![got(&[20, 20, 20]), got(&[12])];
        trim_to(&mut g, 45);
        assert_eq!(sizes(&g), vec![40, 0]);
        // Within the limit nothing is cut.
        let mut g = vec![got(&[20, 20]), got(&[12])];
        trim_to(&mut g, 1_000);
        assert_eq!(sizes(&g), vec![40, 12]);
    }

    #[test]
    fn the_cut_finds_batch_boundaries_across_pieces() {
        let pieces_of = |g: &Got| g.records.iter().map(Piece::len).collect::<Vec<_>>();
        // The cut falls inside the second piece: it keeps its first batch.
        let mut g = vec![got_pieces(&[&[20, 20], &[20, 20]]), got(&[12])];
        trim_to(&mut g, 65);
        assert_eq!(pieces_of(&g[0]), vec![40, 20]);
        assert_eq!(sizes(&g), vec![60, 0]);
        // The cut falls at a piece boundary: the later pieces go.
        let mut g = vec![got_pieces(&[&[20, 20], &[20], &[12]])];
        trim_to(&mut g, 45);
        assert_eq!(pieces_of(&g[0]), vec![40]);
        // KIP-74 holds for a first piece whose first batch is over the limit.
        let mut g = vec![got_pieces(&[&[100], &[20]]), got(&[12])];
        trim_to(&mut g, 50);
        assert_eq!(sizes(&g), vec![100, 0]);
        // Nothing cut: every piece stays.
        let mut g = vec![got_pieces(&[&[20], &[20], &[20]])];
        trim_to(&mut g, 60);
        assert_eq!(pieces_of(&g[0]), vec![20, 20, 20]);
    }

    #[test]
    fn the_broker_caps_what_a_request_may_ask() {
        assert_eq!(response_limit(i32::MAX, 1 << 20), 1 << 20);
        assert_eq!(response_limit(-1, 1 << 20), 1 << 20);
        assert_eq!(response_limit(500, 1 << 20), 500);
        assert_eq!(response_limit(0, 1 << 20), 0);
    }

    #[test]
    fn a_read_costs_its_buffer_and_copies_of_no_more_than_the_log_holds() {
        // A hostile ask over a small log costs what the log holds, not the ask.
        let remote = ReadFor::OtherShard.copies();
        assert_eq!(
            read_cost_bytes(usize::MAX, 1_000, remote),
            2_000 + READ_SLACK_BYTES
        );
        assert_eq!(
            read_cost_bytes(100, 1 << 30, remote),
            200 + READ_SLACK_BYTES
        );
        assert_eq!(read_cost_bytes(usize::MAX, u64::MAX, remote), usize::MAX);
        // A local read is sent from its buffer: no copy to pay for.
        assert_eq!(
            read_cost_bytes(100, 1 << 30, ReadFor::ThisShard.copies()),
            100 + READ_SLACK_BYTES
        );
    }

    #[test]
    fn parking_stops_at_the_cap_and_frees_on_drop() {
        let count = Cell::new(0);
        let a = Parked::enter(&count, 2).expect("room for one");
        let b = Parked::enter(&count, 2).expect("room for two");
        assert!(
            Parked::enter(&count, 2).is_none(),
            "a third is past the cap"
        );
        assert_eq!(count.get(), 2);
        drop(a);
        assert_eq!(count.get(), 1);
        let c = Parked::enter(&count, 2).expect("room again");
        drop((b, c));
        assert_eq!(count.get(), 0);
        assert!(
            Parked::enter(&count, 0).is_none(),
            "a cap of 0 parks nothing"
        );
    }

    #[test]
    fn a_malformed_length_stops_the_cut_without_panicking() {
        let mut v = batches(&[20]);
        v.extend_from_slice(&[0u8; 8]); // a truncated second batch
        v.extend_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(whole_batches_within(&v, 1_000, true), 20);
        assert_eq!(whole_batches_within(&[1, 2, 3], 1_000, true), 0);
        // In a record set, the malformed tail is cut off.
        let mut g = vec![Got {
            records: vec![Piece::Shared(Bytes::from(v))],
            ..Got::default()
        }];
        trim_to(&mut g, 1_000);
        assert_eq!(sizes(&g), vec![20]);
    }

    mod zero_copy {
        use std::path::PathBuf;
        use std::time::Duration;

        use corebus_wire::kafka_protocol::messages::{ApiKey, ResponseKind};
        use corebus_wire::response::encode_response;
        use glommio::{LocalExecutorBuilder, Placement};

        use super::*;
        use crate::server::gather::frame_fetch;
        use crate::server::pieces::{Unsent, send_until_full};
        use crate::shard::memory_pool::MemoryPool;
        use crate::storage::{
            Durability, LogConfig, ReadChunk, ShardOptions, SimDisk, StorageShard, testing,
        };

        fn run<T>(f: impl std::future::Future<Output = T>) -> T {
            LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(2 << 20)
                .spin_before_park(Duration::from_millis(0))
                .make()
                .expect("glommio executor")
                .run(f)
        }

        /// Frames a one-partition reply of `got` and writes it through the vectored writer
        /// into a socket that takes `take` bytes per call; returns the pieces' addresses and
        /// the bytes written, and checks they equal the generated (copying) encoding.
        fn frame_and_write(got: Got, inline: Bytes, take: usize) -> (Vec<*const u8>, usize) {
            let data = PartitionData::default()
                .with_partition_index(0)
                .with_high_watermark(got.high_watermark);
            let topic = FetchableTopicResponse::default()
                .with_topic(TopicName(str_bytes("t".to_string())))
                .with_partitions(vec![data]);
            let response = FetchResponse::default().with_responses(vec![topic]);
            let mut expected_response = response.clone();
            expected_response.responses[0].partitions[0].records = Some(inline);
            let mut expected = bytes::BytesMut::new();
            encode_response(
                9,
                ApiKey::Fetch,
                12,
                &ResponseKind::Fetch(expected_response),
                &mut expected,
            )
            .unwrap();
            let reply = FetchReply {
                response,
                records: vec![got.records],
                held: got.held.into_iter().collect(),
            };
            let framed = frame_fetch(9, 12, reply).unwrap();
            let addresses = framed
                .pieces
                .iter()
                .map(|p| p.as_slice().as_ptr())
                .collect();
            let slices: Vec<&[u8]> = framed.pieces.iter().map(Piece::as_slice).collect();
            let mut written = Vec::new();
            let mut calls = 0;
            let mut unsent = Unsent::new(&slices);
            let all = send_until_full(&mut unsent, |iov| {
                calls += 1;
                let mut n = 0;
                for s in iov {
                    let k = s.len().min(take - n);
                    written.extend_from_slice(&s[..k]);
                    n += k;
                }
                Ok(n)
            })
            .unwrap();
            assert!(all);
            assert_eq!(written, expected.to_vec(), "written == the concatenation");
            (addresses, calls)
        }

        #[test]
        fn a_local_read_reaches_the_socket_without_a_copy() {
            run(async {
                let disk = SimDisk::new();
                // A small cache: the first batches are evicted and read from the file.
                let storage = StorageShard::new(
                    disk,
                    ShardOptions {
                        batch_cache_bytes: 32 << 10,
                        ..ShardOptions::default()
                    },
                );
                let log = storage
                    .open_log(
                        PathBuf::from("/data/t-0"),
                        LogConfig {
                            segment_bytes: 1 << 20,
                            index_interval_bytes: 1024,
                            ..LogConfig::default()
                        },
                    )
                    .await
                    .unwrap();
                for seed in 0..64u8 {
                    let b = testing::batch(3, 2_000, 1_000 + i64::from(seed), seed);
                    log.append(std::slice::from_ref(&b), 0, 0, Durability::Written)
                        .await
                        .unwrap();
                }
                let budget = MemoryPool::new(1 << 20);
                for (offset, from_file) in [(0i64, true), (log.written_offset() - 3, false)] {
                    let read = log.read(offset, 16 << 10).await.unwrap();
                    assert!(!read.is_empty());
                    let file = read
                        .chunks
                        .iter()
                        .all(|c| matches!(c, ReadChunk::File { .. }));
                    let cached = read
                        .chunks
                        .iter()
                        .all(|c| matches!(c, ReadChunk::Cached { .. }));
                    assert!(if from_file { file } else { cached });
                    let chunk_addresses: Vec<*const u8> =
                        read.chunks.iter().map(|c| c.as_ptr()).collect();
                    let inline = read.to_bytes();
                    let held = budget.take(inline.len()).await.unwrap();
                    assert!(budget.in_use_bytes() > 0);
                    let got = Got {
                        high_watermark: read.high_watermark,
                        log_start_offset: read.log_start_offset,
                        records: pieces_of(read),
                        held: Some(held),
                        ..Got::default()
                    };
                    let (addresses, calls) = frame_and_write(got, inline.clone(), usize::MAX);
                    for a in &chunk_addresses {
                        assert!(
                            addresses.contains(a),
                            "the storage chunk itself is a piece of the response"
                        );
                    }
                    assert_eq!(calls, 1, "one sendmsg for the whole response");
                    // The reply (and the memory it held) is gone once written.
                    assert_eq!(budget.in_use_bytes(), 0);
                    // A socket taking a few bytes at a time still gets the same stream.
                    let read = log.read(offset, 16 << 10).await.unwrap();
                    let got = Got {
                        high_watermark: read.high_watermark,
                        records: pieces_of(read),
                        ..Got::default()
                    };
                    frame_and_write(got, inline, 333);
                }
            });
        }
    }
}
