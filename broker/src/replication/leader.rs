//! The leader's side of replication, on the shard that owns a led partition: what each
//! follower has (from the offsets its fetches ask for), the high watermark that follows from
//! the in-sync replicas, and whether an acks=all append has enough in-sync replicas.
//!
//! A follower fetches from its own written (or, when the topic's acks=all waits for syncs,
//! synced) log end: its fetch offset says it holds everything below (`follower` awaits its
//! writes before fetching again). The high watermark is the least of the leader's written
//! offset and every other in-sync replica's fetch offset ([`high_watermark`]); a replica
//! without a fetch under the current leader epoch holds it where it is. A partition whose
//! in-sync set is the leader alone has its high watermark follow the leader's written offset
//! (the single-replica path, unchanged).
//!
//! Caught up (Kafka's `lastCaughtUpTimeMs`): a fetch at or past the leader's log end when it
//! arrives makes the follower caught up now; a fetch at or past the log end the leader had at
//! the follower's previous fetch makes it caught up as of that fetch. So a follower that keeps
//! up with a steady stream counts as caught up although it is never exactly at the end.
//!
//! The in-sync set changes through the controller (`isr`): this module says which followers
//! lag or may join (`Leaders::proposals`) and takes the committed set (`Leaders::altered`).
//!
//! Never: moves a high watermark backwards or past the leader's written offset; counts a
//! fetch from a broker that is not one of the partition's replicas.

use std::cell::RefCell;
use std::collections::HashMap;

use corebus_wire::error_code::ResponseError;

use super::isr::{IsrChange, RETRY_AFTER_MS};
use crate::metadata::image::BrokerId;
use crate::metadata::{MetadataImage, PartitionMeta};
use crate::shard::partitions::PartitionKey;
use crate::shard::router::{Here, replica_shard};
use crate::shard::{Shard, ShardId};
use crate::storage::{Disk, DmaDisk, PartitionLog, now_ms};

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The offset its last fetch asked for: it holds every offset below.
    pub end: i64,
    /// When that fetch arrived.
    pub fetched_ms: i64,
    /// The leader's log end when that fetch arrived.
    pub leader_end_at_fetch: i64,
    /// The last time it was caught up with the leader's log end (see the module docs).
    pub caught_up_ms: Option<i64>,
}

impl Progress {
    /// The progress after a fetch at `offset`, at `now`, when the leader's log ends at
    /// `leader_end`.
    pub fn after_fetch(
        previous: Option<Progress>,
        offset: i64,
        leader_end: i64,
        now: i64,
    ) -> Progress {
        let caught_up_ms = if offset >= leader_end {
            Some(now)
        } else {
            match previous {
                Some(p) if offset >= p.leader_end_at_fetch => Some(p.fetched_ms),
                Some(p) => p.caught_up_ms,
                None => None,
            }
        };
        Progress {
            end: offset,
            fetched_ms: now,
            leader_end_at_fetch: leader_end,
            caught_up_ms,
        }
    }
}

/// The high watermark of a partition whose leader has written up to `leader_written`, given
/// each other in-sync replica's progress (`None`: not heard of under this leader epoch, which
/// holds the high watermark back). `None` when it cannot be known yet.
pub fn high_watermark(
    leader_written: i64,
    others: impl IntoIterator<Item = Option<i64>>,
) -> Option<i64> {
    let mut hw = leader_written;
    for end in others {
        hw = hw.min(end?);
    }
    Some(hw)
}

/// One partition this shard leads that has other replicas.
struct Led<D: Disk> {
    log: PartitionLog<D>,
    leader_epoch: i32,
    /// The partition epoch of `isr` (the image's, or a newer one this leader committed).
    partition_epoch: i32,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    followers: HashMap<BrokerId, Progress>,
    /// When this broker started leading under `leader_epoch`: a follower not heard of since
    /// counts as caught up then.
    since_ms: i64,
    /// An in-sync set change is in flight (`isr::check_loop`).
    pending: bool,
    /// The set proposed while it adds members: until the answer, the high watermark counts
    /// them too (Kafka's maximal ISR), so nothing becomes visible that a joining member
    /// lacks.
    pending_isr: Option<Vec<BrokerId>>,
    /// No new proposal before this (after a refused one).
    retry_at_ms: i64,
    /// A change whose outcome is unknown (`altered`): sent again as it was until an answer or
    /// the image settles it.
    unknown: Option<IsrChange>,
}

impl<D: Disk> Led<D> {
    /// Whether in-sync follower `b` has not been caught up for longer than `lag_ms`.
    fn lagging(&self, b: BrokerId, now: i64, lag_ms: i64) -> bool {
        let caught_up = self
            .followers
            .get(&b)
            .and_then(|p| p.caught_up_ms)
            .unwrap_or(self.since_ms)
            .max(self.since_ms);
        now.saturating_sub(caught_up) > lag_ms
    }

    /// Whether replica `b`, outside the set, may join it: it holds everything below the high
    /// watermark, has fetched within `lag_ms`, and would not count as lagging at once.
    fn may_join(&self, b: BrokerId, now: i64, lag_ms: i64) -> bool {
        self.followers.get(&b).is_some_and(|p| {
            p.end >= self.log.high_watermark() && now.saturating_sub(p.fetched_ms) <= lag_ms
        }) && !self.lagging(b, now, lag_ms)
    }

    /// Forgets a change of unknown outcome once the set this leader knows is newer than the
    /// one it was proposed against: committed or not, that set is the truth now (and the
    /// change, sent again, could only be refused as stale).
    fn forget_settled(&mut self) {
        if self
            .unknown
            .as_ref()
            .is_some_and(|u| self.partition_epoch > u.partition_epoch)
        {
            self.unknown = None;
            self.pending_isr = None;
        }
    }

    /// The committed set and any member a pending proposal adds.
    fn maximal(&self) -> impl Iterator<Item = BrokerId> + '_ {
        let added = self
            .pending_isr
            .iter()
            .flatten()
            .filter(|b| !self.isr.contains(b));
        self.isr.iter().chain(added).copied()
    }

    /// Hands the log's high watermark to replication unless the leader is alone in the
    /// (maximal) set, and moves it to what the set holds.
    fn settle(&self, me: BrokerId) {
        let alone = self.maximal().all(|b| b == me);
        self.log.set_replicated(!alone);
        if !alone {
            advance(&self.log, self, me);
        }
    }
}

/// The partitions a shard leads with followers, and their followers' progress. Generic over
/// the disk so the replication simulator (`replication::sim`) drives this very code over
/// simulated disks; time comes in as arguments for the same reason.
pub struct Leaders<D: Disk = DmaDisk> {
    led: RefCell<HashMap<PartitionKey, Led<D>>>,
}

impl<D: Disk> Default for Leaders<D> {
    fn default() -> Self {
        Leaders {
            led: RefCell::new(HashMap::new()),
        }
    }
}

impl<D: Disk> Leaders<D> {
    /// Brings the led set in line with `image` (after the shard's logs were): partitions this
    /// shard leads with more than one replica are tracked (their followers' progress is kept
    /// while the leader epoch stays); logs of replicated partitions get the high watermark
    /// replication moves, except where the leader is the only in-sync replica. `now`: the
    /// time in milliseconds.
    pub fn sync_with(
        &self,
        image: &MetadataImage,
        me: ShardId,
        here: Here,
        log: impl Fn(PartitionKey) -> Option<PartitionLog<D>>,
        now: i64,
    ) {
        let mut led = self.led.borrow_mut();
        let mut next: HashMap<PartitionKey, Led<D>> = HashMap::new();
        for topic in image.topics.values() {
            for (p, meta) in topic.partitions.iter().enumerate() {
                // A partition of one replica that never changed leader needs nothing here.
                if meta.replicas.len() <= 1 && meta.leader_epoch == 0 {
                    continue;
                }
                let p = p as i32;
                let key = (topic.id, p);
                if replica_shard(image, topic.id, p, here) != Some(me) {
                    continue;
                }
                let Some(l) = log(key) else {
                    continue;
                };
                if meta.leader == here.node_id {
                    // The leader stamps its appends with the partition's current epoch, which
                    // starts at its log end.
                    l.begin_leader_epoch(meta.leader_epoch);
                }
                if meta.replicas.len() <= 1 {
                    if meta.leader == here.node_id && l.is_replicated() {
                        // Alone again (a reassignment moved the others away): the high
                        // watermark follows its own writes.
                        l.set_replicated(false);
                    }
                    continue;
                }
                if meta.leader != here.node_id {
                    // A follower: the leader's answers move its high watermark.
                    l.set_replicated(true);
                    continue;
                }
                let entry = match led.remove(&key) {
                    Some(mut old) if old.leader_epoch == meta.leader_epoch => {
                        // A set this leader committed may be newer than the image yet.
                        if meta.partition_epoch >= old.partition_epoch {
                            old.partition_epoch = meta.partition_epoch;
                            old.isr = meta.isr.clone();
                        }
                        old.forget_settled();
                        old.replicas = meta.replicas.clone();
                        old.log = l.clone();
                        old
                    }
                    _ => Led {
                        log: l.clone(),
                        leader_epoch: meta.leader_epoch,
                        partition_epoch: meta.partition_epoch,
                        replicas: meta.replicas.clone(),
                        isr: meta.isr.clone(),
                        followers: HashMap::new(),
                        since_ms: now,
                        pending: false,
                        pending_isr: None,
                        retry_at_ms: 0,
                        unknown: None,
                    },
                };
                entry.settle(here.node_id);
                next.insert(key, entry);
            }
        }
        *led = next;
    }

    /// A replica fetch from `replica` at `offset`, which knows `leader_epoch` as the current
    /// one: records its progress and moves the high watermark. NOT_LEADER_OR_FOLLOWER when
    /// this shard does not lead the partition with `replica` among its replicas;
    /// FENCED_LEADER_EPOCH when the follower's epoch is older, UNKNOWN_LEADER_EPOCH when newer
    /// (this leader was replaced and must not count the fetch: Kafka's KIP-320 fencing).
    /// `now`: the fetch's arrival, in milliseconds.
    #[allow(clippy::too_many_arguments)]
    pub fn on_fetch(
        &self,
        key: PartitionKey,
        log: &PartitionLog<D>,
        replica: BrokerId,
        offset: i64,
        leader_epoch: i32,
        me: BrokerId,
        now: i64,
    ) -> Result<(), ResponseError> {
        let mut led = self.led.borrow_mut();
        let Some(entry) = led.get_mut(&key) else {
            return Err(ResponseError::NotLeaderOrFollower);
        };
        if replica == me || !entry.replicas.contains(&replica) {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        if leader_epoch >= 0 && leader_epoch < entry.leader_epoch {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        if leader_epoch > entry.leader_epoch {
            return Err(ResponseError::UnknownLeaderEpoch);
        }
        let leader_end = log.written_offset();
        // A fetch past the leader's end holds nothing the leader has: it is refused by the
        // read (out of range) and counts for nothing here.
        if offset > leader_end {
            return Ok(());
        }
        let previous = entry.followers.get(&replica).copied();
        entry.followers.insert(
            replica,
            Progress::after_fetch(previous, offset, leader_end, now),
        );
        if log.is_replicated() {
            advance(log, entry, me);
        }
        Ok(())
    }

    /// The in-sync set changes to propose now (`isr::check_loop`): lagging followers out,
    /// caught-up replicas of the `live` brokers in; at most one in flight per partition,
    /// which this marks.
    pub fn proposals(
        &self,
        now: i64,
        lag_ms: i64,
        me: BrokerId,
        live: &[BrokerId],
    ) -> Vec<IsrChange> {
        let mut out = Vec::new();
        for (key, l) in self.led.borrow_mut().iter_mut() {
            if l.pending || now < l.retry_at_ms {
                continue;
            }
            // As Kafka's leader retries its pending AlterPartition: the controller applies it
            // now, says it already did (a stale partition epoch: the image will show it), or
            // refuses it for good (a member no longer live: INELIGIBLE_REPLICA). Never a new
            // set meanwhile, which could leave the unknown one's members counted for ever.
            if let Some(change) = l.unknown.clone() {
                l.pending = true;
                out.push(change);
                continue;
            }
            // In the replicas' order, so a set that did not change compares equal.
            let isr: Vec<BrokerId> = l
                .replicas
                .iter()
                .copied()
                .filter(|b| {
                    *b == me
                        || if l.isr.contains(b) {
                            !l.lagging(*b, now, lag_ms)
                        } else {
                            // Only a live broker may join (the controller refuses others, and a
                            // pending join holds the high watermark back meanwhile).
                            live.contains(b) && l.may_join(*b, now, lag_ms)
                        }
                })
                .collect();
            let mut before = l.isr.clone();
            before.sort_unstable();
            let mut after = isr.clone();
            after.sort_unstable();
            if before == after {
                continue;
            }
            l.pending = true;
            if isr.iter().any(|b| !l.isr.contains(b)) {
                // (No earlier set is pending here: one of unknown outcome is sent again
                // above until settled, and settling it clears `pending_isr`.)
                l.pending_isr = Some(isr.clone());
                l.settle(me);
            }
            out.push(IsrChange {
                topic_id: key.0,
                partition: key.1,
                leader_epoch: l.leader_epoch,
                partition_epoch: l.partition_epoch,
                isr,
            });
        }
        out
    }

    /// The controller's answer to `change`: a committed set is used from now on (if this
    /// shard still leads under the same epoch and has nothing newer); a refusal waits
    /// `isr::RETRY_AFTER_MS` before the next proposal. Only a refusal that says the change
    /// was not applied (INELIGIBLE_REPLICA, INVALID_REQUEST: the controller decided on the
    /// partition's current epochs) drops the members it would have added; after any other
    /// error (a timeout, a lost answer, a stale epoch, a consensus write of unknown outcome)
    /// the change may be committed, so they keep counting for the high watermark until an
    /// answer to the same change sent again (`proposals`) or the image (`sync_with`) shows
    /// what was committed, as Kafka's leader keeps its pending maximal set. Otherwise a member
    /// committed to the set could lack records below the high watermark, and be elected.
    pub fn altered(
        &self,
        change: &IsrChange,
        result: Result<PartitionMeta, ResponseError>,
        me: BrokerId,
        now: i64,
    ) {
        let mut led = self.led.borrow_mut();
        let Some(l) = led.get_mut(&(change.topic_id, change.partition)) else {
            return;
        };
        // The late answer to a proposal of an earlier leadership of this broker: the
        // proposal of this one may still be in flight, and is not settled by it.
        if change.leader_epoch != l.leader_epoch {
            return;
        }
        l.pending = false;
        match result {
            Ok(meta)
                if meta.leader_epoch == l.leader_epoch
                    && meta.partition_epoch > l.partition_epoch =>
            {
                l.pending_isr = None;
                l.unknown = None;
                l.partition_epoch = meta.partition_epoch;
                l.isr = meta.isr;
            }
            Ok(_) => {
                l.pending_isr = None;
                l.unknown = None;
            }
            Err(e) => {
                if matches!(
                    e,
                    ResponseError::IneligibleReplica | ResponseError::InvalidRequest
                ) {
                    l.pending_isr = None;
                    l.unknown = None;
                } else {
                    l.unknown = Some(change.clone());
                    l.forget_settled();
                }
                l.retry_at_ms = now + RETRY_AFTER_MS;
            }
        }
        l.settle(me);
    }

    /// The leader epoch under which this shard leads `key` with followers (`None` when it
    /// does not, or the partition has one replica).
    pub fn led_epoch(&self, key: PartitionKey) -> Option<i32> {
        self.led.borrow().get(&key).map(|l| l.leader_epoch)
    }

    /// The in-sync replicas of a partition this shard leads (1 when it has no followers).
    pub fn isr_len(&self, key: PartitionKey) -> usize {
        self.led
            .borrow()
            .get(&key)
            .map_or(1, |l| l.isr.len().max(1))
    }

    /// What the leader knows of `replica` of `key` (tests, metrics).
    pub fn progress(&self, key: PartitionKey, replica: BrokerId) -> Option<Progress> {
        self.led
            .borrow()
            .get(&key)?
            .followers
            .get(&replica)
            .copied()
    }
}

/// Moves `log`'s high watermark to what `entry`'s in-sync replicas hold (the maximal set:
/// members a pending proposal adds count too).
fn advance<D: Disk>(log: &PartitionLog<D>, entry: &Led<D>, me: BrokerId) {
    let others = entry
        .maximal()
        .filter(|b| *b != me)
        .map(|b| entry.followers.get(&b).map(|p| p.end));
    if let Some(hw) = high_watermark(log.written_offset(), others) {
        log.advance_high_watermark(hw);
    }
}

/// Whether this shard leads `key` now, by its own image and, for a partition of more than
/// one replica, under the epoch its leader state was set up for (between an image's install
/// and `lead_partitions` the two may disagree: not leading then). Checked by every append
/// on the shard that owns the log, without an await before the append: a request routed by
/// a shard that still had an older image never lands in a follower's log.
pub fn leads(shard: &Shard, key: PartitionKey) -> bool {
    let image = shard.metadata();
    if crate::shard::router::owner(&image, key.0, key.1, shard.here()) != Ok(shard.id) {
        return false;
    }
    let meta = image
        .topic_by_id(key.0)
        .and_then(|t| t.partitions.get(usize::try_from(key.1).ok()?));
    match meta {
        Some(m) if m.replicas.len() > 1 => shard.leaders.led_epoch(key) == Some(m.leader_epoch),
        Some(_) => true,
        None => false,
    }
}

/// Runs after each metadata install on `shard`.
pub fn lead_partitions(shard: &Shard) {
    let image = shard.metadata();
    shard.leaders.sync_with(
        &image,
        shard.id,
        shard.here(),
        |key| shard.logs.log(key),
        now_ms(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_high_watermark_is_the_least_in_sync_end() {
        assert_eq!(high_watermark(10, []), Some(10));
        assert_eq!(high_watermark(10, [Some(7), Some(9)]), Some(7));
        assert_eq!(high_watermark(10, [Some(12)]), Some(10));
        assert_eq!(high_watermark(10, [Some(7), None]), None);
    }

    #[test]
    fn a_follower_that_keeps_up_with_a_stream_stays_caught_up() {
        // First fetch behind the end: never caught up yet.
        let p = Progress::after_fetch(None, 5, 10, 1_000);
        assert_eq!(p.caught_up_ms, None);
        // Next fetch reaches the end the leader had at the first one: caught up as of then,
        // although the leader moved on meanwhile.
        let p = Progress::after_fetch(Some(p), 10, 20, 1_100);
        assert_eq!(p.caught_up_ms, Some(1_000));
        let p = Progress::after_fetch(Some(p), 20, 30, 1_200);
        assert_eq!(p.caught_up_ms, Some(1_100));
        // Falls behind: the time stays where it was.
        let p = Progress::after_fetch(Some(p), 21, 40, 1_300);
        assert_eq!(p.caught_up_ms, Some(1_100));
        // At the end: caught up now.
        let p = Progress::after_fetch(Some(p), 40, 40, 1_400);
        assert_eq!(p.caught_up_ms, Some(1_400));
    }
}
