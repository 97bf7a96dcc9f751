//! A shard's fetchers: one task per leader broker, following every partition whose replica
//! this shard holds and that broker leads (see the module docs of `replication`).
//!
//! A fetcher's round: read which partitions it follows from the shard's current image (so a
//! metadata change takes effect at the next round), connect to the leader's advertised
//! listener if not connected (from the cluster view); for partitions not yet checked under
//! their current leader epoch, ask the leader where this replica's latest epoch ends
//! (OffsetForLeaderEpoch) and truncate what the leader does not have (`truncate`); send one
//! Fetch (v12, `replica_id` = this
//! broker, each partition from its log end), append each partition's batches, wait for them
//! to be written (and synced where the topic's acks=all asks for syncs), take the leader's high
//! watermark (never past this replica's own written end), repeat: the next fetch offset then
//! tells the leader what this replica holds. The
//! leader long-polls (`max_wait_ms`), so an idle partition costs one request per
//! [`FETCH_MAX_WAIT_MS`]. A failure (no endpoint, connect, timeout, a malformed answer, an
//! append refused) drops the connection and waits [`RETRY_MIN_MS`], doubling up to
//! [`RETRY_MAX_MS`]; a partition-level error only skips that partition for the round (a round
//! in which the leader refused every partition and nothing was appended waits
//! [`RETRY_MIN_MS`] before the next).
//!
//! The replica's log start follows the leader's (DeleteRecords and retention there), never past
//! its own high watermark; a replica whose log end is below the leader's log start fetches
//! from there instead (the records below exist nowhere else), leaving a gap as compaction does.
//!
//! Replicas a reassignment is adding, while not yet in sync (learners), copy at most
//! `follower.replication.throttled.rate` bytes per second on the broker ([`Throttle`]): while
//! over it, they are left out of the fetches and the other partitions go on.
//!
//! The task ends when it follows nothing any more or the shard shuts down.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use corebus_wire::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use corebus_wire::kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use corebus_wire::kafka_protocol::messages::{
    ApiKey, BrokerId as WireBrokerId, FetchRequest, OffsetForLeaderEpochRequest, RequestHeader,
    RequestKind, ResponseKind, TopicName,
};
use corebus_wire::kafka_protocol::protocol::StrBytes;
use corebus_wire::record::RecordBatches;
use corebus_wire::{decode_response, encode_request};
use futures_lite::future;
use glommio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::cluster::peer;
use crate::metadata::TopicId;
use crate::metadata::image::BrokerId;
use crate::shard::Shard;
use crate::shard::partitions::Log;
use crate::shard::router::replica_shard;
use crate::storage::{AppendTicket, Disk, Durability, PartitionLog, now_ms};

/// Kafka's OFFSET_OUT_OF_RANGE.
const OFFSET_OUT_OF_RANGE: i16 = 1;
/// Fetch version sent: topics by name, `replica_id` in the body (v15 moved it).
const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch version sent: `replica_id` and `current_leader_epoch`, topics by name.
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 3;
/// How long the leader may hold a fetch that finds nothing new.
pub const FETCH_MAX_WAIT_MS: i32 = 500;
/// Bytes asked per partition and per request (Kafka's `replica.fetch.max.bytes` and
/// `replica.fetch.response.max.bytes`).
pub const PARTITION_MAX_BYTES: i32 = 1 << 20;
pub const FETCH_MAX_BYTES: i32 = 10 << 20;
/// The largest answer read: the request's limit plus room for the response's framing (one
/// partition may exceed its limit by its first batch, up to `message.max.bytes`).
pub const MAX_FETCH_RESPONSE_BYTES: usize = 64 << 20;
/// Time for connecting, and for an answer beyond the leader's long poll.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
pub const ANSWER_TIMEOUT_MS: u64 = 30_000;
/// Waits after a failed round.
pub const RETRY_MIN_MS: u64 = 100;
pub const RETRY_MAX_MS: u64 = 2_000;
const CLIENT_ID: &str = "corebus-replica-fetcher";

/// One followed partition, as a round sees it.
struct Followed {
    topic: TopicId,
    name: String,
    partition: i32,
    leader_epoch: i32,
    log: Log,
    /// This replica is being added by a reassignment: its catch-up is throttled
    /// (`follower.replication.throttled.rate`).
    learner: bool,
}

/// The byte rate of reassignment catch-up (`follower.replication.throttled.rate`, for the
/// whole broker: each shard's fetchers share a shard's part of it): a token bucket that may
/// go into debt by one fetch; while in debt, learner partitions are left out of the fetches
/// (as Kafka's throttled follower leaves throttled partitions out of its fetch requests), the
/// others go on.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_sec: u64,
    debt: u64,
    at_ms: i64,
}

impl Throttle {
    /// A shard's share of `follower.replication.throttled.rate` (the rate is the broker's).
    pub fn for_shard(
        settings: &crate::config::BrokerSettings,
        shard_count: usize,
        now_ms: i64,
    ) -> Option<Throttle> {
        let rate = settings
            .i64("follower.replication.throttled.rate")
            .unwrap_or(i64::MAX);
        if rate == i64::MAX {
            return None;
        }
        let shards = i64::try_from(shard_count.max(1)).unwrap_or(1);
        Throttle::new((rate / shards).max(1), now_ms)
    }

    /// `None` when the rate is unlimited (`i64::MAX`, the default) or not positive.
    pub fn new(bytes_per_sec: i64, now_ms: i64) -> Option<Throttle> {
        (bytes_per_sec > 0 && bytes_per_sec < i64::MAX).then_some(Throttle {
            bytes_per_sec: bytes_per_sec as u64,
            debt: 0,
            at_ms: now_ms,
        })
    }

    fn repay(&mut self, now_ms: i64) {
        let elapsed = u64::try_from(now_ms.saturating_sub(self.at_ms)).unwrap_or(0);
        let repaid = self.bytes_per_sec.saturating_mul(elapsed) / 1000;
        if repaid > 0 {
            self.debt = self.debt.saturating_sub(repaid);
            self.at_ms = now_ms;
        }
    }

    /// How long learners must wait before their next fetch (0: they may fetch now).
    pub fn wait_ms(&mut self, now_ms: i64) -> u64 {
        self.repay(now_ms);
        if self.debt == 0 {
            self.at_ms = now_ms;
            return 0;
        }
        (self.debt.saturating_mul(1000) / self.bytes_per_sec).max(1)
    }

    /// What one learner partition may ask for per fetch: a second's worth, at most
    /// [`PARTITION_MAX_BYTES`] (the leader still sends a first batch that is larger).
    pub fn per_fetch_bytes(&self) -> i32 {
        i32::try_from(self.bytes_per_sec)
            .map_or(PARTITION_MAX_BYTES, |r| r.min(PARTITION_MAX_BYTES))
    }

    /// Counts `bytes` copied into learners.
    pub fn charge(&mut self, bytes: u64) {
        self.debt = self.debt.saturating_add(bytes);
    }
}

/// Starts a fetcher for every leader this shard follows a partition of and has none yet
/// (called after each metadata install and at start).
pub fn follow_leaders(shard: &Rc<Shard>) {
    let mut leaders: Vec<BrokerId> = followed(shard).keys().copied().collect();
    leaders.retain(|l| shard.following.borrow_mut().insert(*l));
    for leader in leaders {
        info!(
            shard = shard.id.0,
            leader, "following partitions of broker {leader}"
        );
        glommio::spawn_local(fetcher(shard.clone(), leader)).detach();
    }
}

/// The partitions this shard holds a replica of and another live-or-not broker leads, by
/// leader.
fn followed(shard: &Shard) -> BTreeMap<BrokerId, Vec<Followed>> {
    let image = shard.metadata();
    let here = shard.here();
    let mut out: BTreeMap<BrokerId, Vec<Followed>> = BTreeMap::new();
    for topic in image.topics.values() {
        for (p, meta) in topic.partitions.iter().enumerate() {
            let p = p as i32;
            if meta.leader < 0 || meta.leader == here.node_id {
                continue;
            }
            if replica_shard(&image, topic.id, p, here) != Some(shard.id) {
                continue;
            }
            let Some(log) = shard.logs.log((topic.id, p)) else {
                continue;
            };
            out.entry(meta.leader).or_default().push(Followed {
                topic: topic.id,
                name: topic.name.clone(),
                partition: p,
                leader_epoch: meta.leader_epoch,
                log,
                // Only while it copies: once in sync it counts for the high watermark.
                learner: meta.adding.contains(&here.node_id) && !meta.isr.contains(&here.node_id),
            });
        }
    }
    out
}

async fn fetcher(shard: Rc<Shard>, leader: BrokerId) {
    let mut conn: Option<(String, TcpStream)> = None;
    let mut wait_ms = RETRY_MIN_MS;
    let mut correlation = 0i32;
    let mut cached: Option<(u64, Vec<Followed>)> = None;
    // The leader epoch each partition's log was last checked against this leader's
    // (`truncate`): a partition is fetched only under the epoch it was checked for.
    let mut checked: HashMap<(TopicId, i32), i32> = HashMap::new();
    // Where to fetch a partition from when its log end is below the leader's log start
    // (retention or DeleteRecords moved it): from there, leaving a gap below as compaction
    // does (Kafka truncates fully and starts there; records below it exist nowhere else).
    let mut skip_to: HashMap<(TopicId, i32), i64> = HashMap::new();
    loop {
        if shard.shutdown.is_fired() {
            break;
        }
        // What it follows is looked up again only when the image changed.
        let epoch = shard.metadata().epoch;
        if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            cached = followed(&shard).remove(&leader).map(|parts| (epoch, parts));
        }
        let Some((_, parts)) = cached.as_ref() else {
            break;
        };
        let round = async {
            let unchecked: Vec<&Followed> = parts
                .iter()
                .filter(|f| checked.get(&(f.topic, f.partition)) != Some(&f.leader_epoch))
                .collect();
            if !unchecked.is_empty() {
                correlation = correlation.wrapping_add(1);
                let stream = connect(&shard, leader, &mut conn).await?;
                for (f, epoch) in truncate(&shard, leader, stream, &unchecked, correlation).await? {
                    checked.insert((f.topic, f.partition), epoch);
                }
            }
            let learners_wait_ms = shard
                .learner_throttle
                .borrow_mut()
                .as_mut()
                .map_or(0, |t| t.wait_ms(now_ms()));
            let ready: Vec<&Followed> = parts
                .iter()
                .filter(|f| checked.get(&(f.topic, f.partition)) == Some(&f.leader_epoch))
                .filter(|f| !f.learner || learners_wait_ms == 0)
                .collect();
            if ready.is_empty() {
                let wait = if learners_wait_ms > 0 {
                    learners_wait_ms.min(RETRY_MAX_MS)
                } else {
                    RETRY_MIN_MS
                };
                glommio::timer::sleep(Duration::from_millis(wait)).await;
                return Ok::<(), String>(());
            }
            correlation = correlation.wrapping_add(1);
            // A throttled learner asks for at most a second's worth per fetch.
            let learner_max_bytes = shard
                .learner_throttle
                .borrow()
                .as_ref()
                .map_or(PARTITION_MAX_BYTES, |t| t.per_fetch_bytes());
            let learner_bytes = fetch_round(
                &shard,
                leader,
                &ready,
                &mut conn,
                correlation,
                learner_max_bytes,
                &mut skip_to,
            )
            .await?;
            if let Some(t) = shard.learner_throttle.borrow_mut().as_mut() {
                t.charge(learner_bytes);
            }
            Ok(())
        };
        let outcome = future::or(async { Some(round.await) }, async {
            shard.shutdown.wait().await;
            None
        })
        .await;
        match outcome {
            None => break,
            Some(Ok(())) => wait_ms = RETRY_MIN_MS,
            Some(Err(reason)) => {
                conn = None;
                debug!(leader, %reason, "replica fetch failed; retrying");
                if wait_ms >= RETRY_MAX_MS {
                    warn!(leader, %reason, "replica fetch keeps failing");
                }
                glommio::timer::sleep(Duration::from_millis(wait_ms)).await;
                wait_ms = (wait_ms * 2).min(RETRY_MAX_MS);
            }
        }
    }
    shard.following.borrow_mut().remove(&leader);
    info!(
        shard = shard.id.0,
        leader, "no longer following broker {leader}"
    );
}

/// The connection to `leader` (connecting to its advertised listener when there is none, or
/// it moved), with its endpoint for messages.
async fn connect<'a>(
    shard: &Shard,
    leader: BrokerId,
    conn: &'a mut Option<(String, TcpStream)>,
) -> Result<(&'a str, &'a mut TcpStream), String> {
    let to = shard
        .cluster()
        .brokers
        .iter()
        .find(|b| b.node_id == leader)
        .cloned()
        .ok_or_else(|| format!("broker {leader} is not live"))?;
    let endpoint = format!("{}:{}", to.host, to.port);
    if conn.as_ref().is_none_or(|(at, _)| *at != endpoint) {
        let stream = peer::connect(&to, CONNECT_TIMEOUT_MS).await?;
        *conn = Some((endpoint, stream));
    }
    match conn.as_mut() {
        Some((at, stream)) => Ok((at.as_str(), stream)),
        None => Err("no connection".into()),
    }
}

/// One request and its answer on the leader connection, bounded in time and size.
async fn call(
    (endpoint, stream): (&str, &mut TcpStream),
    correlation: i32,
    request: RequestKind,
    key: ApiKey,
    version: i16,
    wait_ms: u64,
) -> Result<ResponseKind, String> {
    let frame = encode_request(
        &RequestHeader::default()
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID))),
        &request,
        version,
    )
    .map_err(|e| format!("cannot encode {key:?}: {e}"))?;
    let answer =
        glommio::timer::timeout(Duration::from_millis(wait_ms + ANSWER_TIMEOUT_MS), async {
            Ok(peer::exchange(stream, &frame, MAX_FETCH_RESPONSE_BYTES).await)
        })
        .await
        .map_err(|_| format!("no answer from {endpoint} in time"))??;
    let (header, response) =
        decode_response(answer, key, version).map_err(|e| format!("{endpoint}: {e}"))?;
    if header.correlation_id != correlation {
        return Err(format!("{endpoint}: answer to another request"));
    }
    Ok(response)
}

/// Before fetching under a leader epoch it has not checked yet, a follower asks the leader
/// where its own latest epoch ends there (OffsetForLeaderEpoch, Kafka's KIP-101/KIP-279) and
/// truncates what the leader does not have: to the leader's end offset for that epoch when
/// the leader knows it, else to where the epoch the leader answered with ends in its own log,
/// never past its own end. Returns the partitions checked, with the epoch they were checked
/// under; one the leader refused (or that could not be truncated) is tried again next round.
async fn truncate<'p>(
    shard: &Shard,
    leader: BrokerId,
    conn: (&str, &mut TcpStream),
    parts: &[&'p Followed],
    correlation: i32,
) -> Result<Vec<(&'p Followed, i32)>, String> {
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    for f in parts {
        let p = OffsetForLeaderPartition::default()
            .with_partition(f.partition)
            .with_current_leader_epoch(f.leader_epoch)
            .with_leader_epoch(f.log.latest_epoch());
        match topics.iter_mut().find(|t| *t.topic.0 == *f.name) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                OffsetForLeaderTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(f.name.clone())))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let endpoint = conn.0.to_string();
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(WireBrokerId(shard.node.node_id))
        .with_topics(topics);
    let response = call(
        conn,
        correlation,
        RequestKind::OffsetForLeaderEpoch(request),
        ApiKey::OffsetForLeaderEpoch,
        OFFSET_FOR_LEADER_EPOCH_VERSION,
        0,
    )
    .await?;
    let ResponseKind::OffsetForLeaderEpoch(response) = response else {
        return Err(format!("{endpoint}: not an OffsetForLeaderEpoch answer"));
    };
    let mut out = Vec::new();
    let mut truncated = false;
    for t in response.topics {
        for p in t.partitions {
            let Some(f) = parts
                .iter()
                .find(|f| *f.name == *t.topic.0 && f.partition == p.partition)
            else {
                continue;
            };
            // A leader replaced while the question was out has no say any more: its answer
            // could cut what the new leader's fetcher already copied (and reported).
            if !still_led_by(&shard.metadata(), f, leader) {
                continue;
            }
            if p.error_code != 0 || p.leader_epoch < 0 {
                debug!(topic = %f.name, partition = f.partition, error = p.error_code, "the leader cannot say where this replica's epoch ends yet");
                continue;
            }
            let own_end = f.log.log_end_offset();
            let Truncation { to, settled } =
                truncation(&f.log, (p.leader_epoch, p.end_offset)).await;
            if to < own_end {
                // Again after the header scan's await, right before the cut.
                if !still_led_by(&shard.metadata(), f, leader) {
                    continue;
                }
                if let Err(e) = f.log.truncate_to(to).await {
                    warn!(topic = %f.name, partition = f.partition, to, error = %e, "cannot truncate a replica to its leader's log");
                    continue;
                }
                info!(topic = %f.name, partition = f.partition, from = own_end, to, leader_epoch = f.leader_epoch, "replica truncated to its leader's log");
                truncated = true;
                let states = crate::shard::partitions::rebuild_producers(&f.log).await;
                shard
                    .logs
                    .with_producers((f.topic, f.partition), |s| *s = states);
            }
            if settled || to >= own_end {
                out.push((*f, f.leader_epoch));
            }
        }
    }
    // A cut can lower the high watermark (below what the checkpoint holds only after an
    // unclean election): the checkpoint says so before this replica appends past the cut, or
    // a restart could reopen it at the old value over records of the new leader's line.
    if truncated {
        shard.logs.checkpoint_high_watermarks().await;
    }
    Ok(out)
}

/// Where a follower cuts its log after the leader answered OffsetForLeaderEpoch for the
/// follower's latest epoch with `answer` (the largest epoch the leader has at or below it,
/// and where that epoch ends there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Truncate to here (the log end when nothing is to be cut).
    pub to: i64,
    /// The logs agree below `to`; otherwise ask again after truncating, with the epoch that
    /// is then latest (KIP-279's further rounds).
    pub settled: bool,
}

/// The truncation of `log` for the leader's `answer` (epoch, end offset) to a question about
/// `log.latest_epoch()`: to the leader's end offset for that epoch when the leader knows it,
/// else to where the epoch the leader answered with ends here too, never past the log end,
/// and down to the start of the batch holding that offset (a replica's batches need not have
/// the leader's boundaries, as they may come from another leader; a truncation cuts whole
/// batches, as Kafka's does, and what it cuts too much is fetched again). Shared by the
/// fetcher and the replication simulator.
pub async fn truncation<D: Disk>(log: &PartitionLog<D>, answer: (i32, i64)) -> Truncation {
    let (epoch, end) = answer;
    let asked = log.latest_epoch();
    let own_end = log.log_end_offset();
    // Where the leader's answered epoch ends here too; when this replica's own epoch at that
    // point is another one, the logs may differ below as well.
    let (own_epoch, own_epoch_end) = log.end_offset_for_epoch(epoch);
    let settled = epoch == asked || own_epoch == epoch;
    let to = if epoch == asked {
        end.min(own_end)
    } else {
        end.min(own_epoch_end).min(own_end)
    };
    let to = match log.scan_headers(to, 1).await {
        Ok(headers) => headers.first().map_or(to, |h| h.base_offset.min(to)),
        Err(_) => to,
    };
    Truncation { to, settled }
}

/// One Fetch to `leader` for `parts`, and the appends of what it answered; the bytes appended
/// to learners (replicas a reassignment is adding), for the throttle.
async fn fetch_round(
    shard: &Shard,
    leader: BrokerId,
    parts: &[&Followed],
    conn: &mut Option<(String, TcpStream)>,
    correlation: i32,
    learner_max_bytes: i32,
    skip_to: &mut HashMap<(TopicId, i32), i64>,
) -> Result<u64, String> {
    let conn = connect(shard, leader, conn).await?;
    let endpoint = conn.0.to_string();
    // A skip the log end has reached is done with.
    skip_to.retain(|(t, p), at| {
        parts
            .iter()
            .find(|f| f.topic == *t && f.partition == *p)
            .is_some_and(|f| f.log.log_end_offset() < *at)
    });
    let request = RequestKind::Fetch(fetch_request(
        shard.node.node_id,
        parts,
        correlation,
        learner_max_bytes,
        skip_to,
    ));
    let response = call(
        conn,
        correlation,
        request,
        ApiKey::Fetch,
        FETCH_VERSION,
        FETCH_MAX_WAIT_MS as u64,
    )
    .await?;
    let ResponseKind::Fetch(response) = response else {
        return Err(format!("{endpoint}: not a Fetch answer"));
    };
    if response.error_code != 0 {
        return Err(format!("{endpoint}: Fetch error {}", response.error_code));
    }
    let now = now_ms();
    // The image as the answer arrives: a partition whose leader changed meanwhile is skipped.
    let image = shard.metadata();
    let mut refused = 0usize;
    let mut failed: Option<String> = None;
    let mut appended: Vec<(&&Followed, i64)> = Vec::new();
    // The leader's log start of each partition it answered (DeleteRecords and retention
    // there move it; followers follow, as Kafka's do).
    let mut starts: Vec<(&&Followed, i64)> = Vec::new();
    let mut learner_bytes = 0u64;
    for topic in response.responses {
        for p in topic.partitions {
            let Some(part) = parts
                .iter()
                .find(|f| *f.name == *topic.topic.0 && f.partition == p.partition_index)
            else {
                continue;
            };
            // The answer of a leader replaced while the fetch was out (a long poll lasts up
            // to FETCH_MAX_WAIT_MS) is dropped, as Kafka's fetcher drops answers to a fetch
            // state that is gone: the new leader's fetcher may already have truncated this
            // log, and the old leader's later batches appended after that would sit at
            // offsets the new leader fills differently, then count as held by this replica.
            // No await between this check and the append below.
            if !still_led_by(&image, part, leader) {
                continue;
            }
            let end = part.log.log_end_offset();
            if p.error_code == OFFSET_OUT_OF_RANGE && p.log_start_offset > end {
                info!(
                    topic = %part.name,
                    partition = part.partition,
                    log_end = end,
                    leader_log_start = p.log_start_offset,
                    "the leader no longer has this replica's next records; fetching from its log start"
                );
                skip_to.insert((part.topic, part.partition), p.log_start_offset);
                continue;
            }
            if p.error_code != 0 {
                debug!(topic = %part.name, partition = part.partition, error = p.error_code, "leader refused a replica fetch");
                refused += 1;
                continue;
            }
            starts.push((part, p.log_start_offset));
            let records = p.records.unwrap_or_default();
            if part.learner {
                learner_bytes += records.len() as u64;
            }
            match append(shard, part, records, now) {
                Ok(true) => appended.push((part, p.high_watermark)),
                Ok(false) => part.log.advance_high_watermark(p.high_watermark),
                // Reported once what was appended is written: the next fetch starts from the
                // log end, so it must never go out with earlier appends still unwritten.
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
    }
    // The next fetch tells the leader what this replica holds, so it goes only once the
    // appends are written (and synced, where the topic's acks=all waits for syncs).
    let synced: Vec<(&Log, AppendTicket)> = appended
        .iter()
        .filter(|(f, _)| f.log.config().durability_for_acks(-1) == Durability::Synced)
        .map(|(f, _)| (&f.log, f.log.end_ticket()))
        .collect();
    // Every wait runs even after a failure (a failed write or sync takes its log offline,
    // which refuses the next append, so nothing unwritten is ever reported).
    for r in Log::sync_all(&synced).await {
        if let Err(e) = r {
            failed.get_or_insert(format!("replica sync: {e}"));
        }
    }
    for (f, hw) in &appended {
        match f.log.wait_written(f.log.log_end_offset()).await {
            Ok(()) => f.log.advance_high_watermark(*hw),
            Err(e) => {
                failed.get_or_insert(format!("{}-{}: {e}", f.name, f.partition));
            }
        }
    }
    // The log start follows the leader's, never past what this replica holds below its
    // high watermark (records deleted there must not come back from here after a failover).
    for (f, leader_start) in starts {
        let start = leader_start.min(f.log.high_watermark());
        if start > f.log.log_start_offset()
            && let Err(e) = f.log.delete_records(start).await
        {
            warn!(topic = %f.name, partition = f.partition, error = %e, "cannot follow the leader's log start");
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if refused > 0 && appended.is_empty() {
        // Nothing moved: the leader refused this replica's fetches (another leader, an
        // offset it does not have); wait before asking again.
        glommio::timer::sleep(Duration::from_millis(RETRY_MIN_MS)).await;
    }
    Ok(learner_bytes)
}

/// Whether `image` still has `part` led by `leader` under the epoch it was fetched with.
fn still_led_by(image: &crate::metadata::MetadataImage, part: &Followed, leader: BrokerId) -> bool {
    crate::shard::router::partition_meta(image, part.topic, part.partition)
        .is_some_and(|m| m.leader == leader && m.leader_epoch == part.leader_epoch)
}

/// The Fetch for `parts`, starting at a different partition each `round`: the leader fills
/// the response in request order, so a fixed order would starve the last partitions of a
/// busy leader for good (and drop them from the in-sync set). A learner asks for at most
/// `learner_max_bytes` (the throttle's second's worth).
fn fetch_request(
    node_id: BrokerId,
    parts: &[&Followed],
    round: i32,
    learner_max_bytes: i32,
    skip_to: &HashMap<(TopicId, i32), i64>,
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    let first = usize::try_from(round).unwrap_or(0) % parts.len().max(1);
    let (head, tail) = parts.split_at(first);
    for f in tail.iter().chain(head) {
        let partition = FetchPartition::default()
            .with_partition(f.partition)
            .with_current_leader_epoch(f.leader_epoch)
            .with_fetch_offset(
                skip_to
                    .get(&(f.topic, f.partition))
                    .map_or(f.log.log_end_offset(), |at| {
                        (*at).max(f.log.log_end_offset())
                    }),
            )
            .with_log_start_offset(f.log.log_start_offset())
            .with_partition_max_bytes(if f.learner {
                learner_max_bytes
            } else {
                PARTITION_MAX_BYTES
            });
        match topics.iter_mut().find(|t| *t.topic.0 == *f.name) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(f.name.clone())))
                    .with_topic_id(f.topic.0)
                    .with_partitions(vec![partition]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(WireBrokerId(node_id))
        .with_max_wait_ms(FETCH_MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Appends the whole batches of `records` (a fetch may end with part of one) to the follower's
/// log, and records their idempotent producers as the leader did (so a follower that becomes
/// the leader deduplicates retries as its predecessor would); whether anything was appended.
fn append(shard: &Shard, part: &Followed, records: Bytes, now: i64) -> Result<bool, String> {
    let mut batches = Vec::new();
    for batch in RecordBatches::allow_partial_tail(records) {
        let batch = batch.map_err(|e| format!("{}-{}: {e}", part.name, part.partition))?;
        batches.push(batch);
    }
    if batches.is_empty() {
        return Ok(false);
    }
    // The leader's batches from before our log end (a fetch offset inside a batch) are skipped.
    let end = part.log.log_end_offset();
    batches.retain(|b| b.base_offset() >= end);
    if batches.is_empty() {
        return Ok(false);
    }
    part.log
        .append_replica(&batches, now)
        .map_err(|e| format!("{}-{}: {e}", part.name, part.partition))?;
    shard
        .logs
        .with_producers((part.topic, part.partition), |states| {
            for b in batches.iter().filter(|b| b.producer_id() >= 0) {
                states.record(
                    b.producer_id(),
                    b.producer_epoch(),
                    b.base_sequence(),
                    b.record_count(),
                    b.base_offset(),
                    b.max_timestamp(),
                );
            }
        });
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_holds_learners_to_their_rate() {
        assert!(Throttle::new(i64::MAX, 0).is_none());
        assert!(Throttle::new(0, 0).is_none());
        let mut t = Throttle::new(1_000_000, 0).unwrap();
        assert_eq!(t.wait_ms(0), 0);
        t.charge(500_000);
        assert_eq!(t.wait_ms(0), 500);
        assert_eq!(t.wait_ms(250), 250);
        assert_eq!(t.wait_ms(500), 0);
        // A fetch larger than a second's worth waits for all of it.
        t.charge(3_000_000);
        assert_eq!(t.wait_ms(500), 3000);
        assert_eq!(t.wait_ms(3_500), 0);
    }
}
