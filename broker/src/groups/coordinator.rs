//! The group coordinator of one shard: the groups whose `__consumer_offsets` partition this
//! shard owns, their committed offsets, the JoinGroup and SyncGroup requests waiting on them,
//! and the timer that drives their timeouts. It runs the state machine's effects: answers
//! waiting requests, and stores membership and offsets before anything that depends on them
//! is answered.
//!
//! Requests for a group reach the shard owning it through the mesh (one hop per request,
//! see the group handlers); everything here runs on that shard only.
//!
//! The groups of a partition are served once it is loaded (`follow_leadership`): at start,
//! and whenever this shard comes to lead another `__consumer_offsets` partition (a failover
//! moved it here); until then its groups get COORDINATOR_LOAD_IN_PROGRESS. A partition led
//! elsewhere now is unloaded: its groups are forgotten and their waiting requests answered
//! NOT_COORDINATOR, so clients find the new coordinator.
//!
//! Never: holds a RefCell borrow across an await; answers a commit before its records are
//! durable (on every in-sync replica of a replicated partition); serves a group whose
//! partition another shard or broker leads.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use corebus_wire::error_code::ResponseError;
use tracing::{info, warn};

use super::group::{
    ClassicGroup, Effect, GroupLimits, GroupState, JoinRequest, JoinResult, Reply, SyncResult,
};
use super::offsets::{GroupOffsets, TopicPartition};
use super::placement::OFFSETS_TOPIC;
use super::record::{OffsetValue, RecordKey};
use super::store::{self, Write};
use crate::shard::Shard;
use crate::storage::now_ms;

/// How often group timers are checked. Session timeouts are at least
/// `group.min.session.timeout.ms` (6 s by default) and rebalance delays hundreds of ms, so a
/// 50 ms tick keeps every timeout within a few percent, and a scan of a shard's groups per
/// tick is cheap next to one request.
pub const GROUP_TIMER_TICK_MS: u64 = 50;

/// The group settings, from the broker settings.
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    pub limits: GroupLimits,
    /// `offset.metadata.max.bytes`: longest metadata string of a committed offset.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.retention.minutes`, in ms: how long an empty group's offsets are kept.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`
    pub offsets_retention_check_interval_ms: i64,
}

/// A group and its offsets.
struct GroupEntry {
    group: ClassicGroup,
    offsets: GroupOffsets,
    /// OffsetCommits written but not yet applied to `offsets`: the timer neither forgets
    /// nor expires offsets of the group meanwhile.
    commits_in_flight: usize,
}

/// One partition of an OffsetCommit.
#[derive(Debug, Clone)]
pub struct CommitItem {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupSummary {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// Requested offsets of one topic, or all topics (`None`).
pub type OffsetQuery = Option<Vec<(String, Vec<i32>)>>;

/// Per topic, per partition: the committed offset, if any.
pub type OffsetAnswer = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;

type Waiters<T> = RefCell<HashMap<(String, String), flume::Sender<T>>>;

pub struct GroupCoordinator {
    settings: GroupSettings,
    next_retention_check_ms: std::cell::Cell<i64>,
    groups: RefCell<HashMap<String, GroupEntry>>,
    join_waiters: Waiters<JoinResult>,
    sync_waiters: Waiters<SyncResult>,
    /// The `__consumer_offsets` partitions whose groups are loaded here (and served).
    loaded: RefCell<BTreeSet<i32>>,
    /// One leadership change at a time.
    following: glommio::sync::Semaphore,
}

impl GroupCoordinator {
    pub fn new(settings: GroupSettings) -> GroupCoordinator {
        GroupCoordinator {
            settings,
            next_retention_check_ms: std::cell::Cell::new(0),
            groups: RefCell::new(HashMap::new()),
            join_waiters: RefCell::new(HashMap::new()),
            sync_waiters: RefCell::new(HashMap::new()),
            loaded: RefCell::new(BTreeSet::new()),
            following: glommio::sync::Semaphore::new(1),
        }
    }

    fn new_group(&self, group_id: &str, now: i64) -> GroupEntry {
        GroupEntry {
            group: ClassicGroup::new(group_id, self.settings.limits, now),
            offsets: GroupOffsets::default(),
            commits_in_flight: 0,
        }
    }

    /// Rebuilds the groups of every `__consumer_offsets` partition this shard owns from their
    /// logs. Runs at start, before the shard serves requests.
    pub async fn load(&self, shard: &Shard) {
        self.follow_leadership(shard).await;
    }

    /// Whether the groups of `__consumer_offsets` partition `partition` are served here. A
    /// partition led here whose log is empty has nothing to load: it is taken as loaded at
    /// once (a topic just created serves its first JoinGroup without a retry).
    pub fn serves(&self, shard: &Shard, partition: i32) -> bool {
        let image = shard.metadata();
        let Some(topic) = image.topic(OFFSETS_TOPIC) else {
            return false;
        };
        // Led here now: an unload after a leadership change may not have run yet.
        if !crate::replication::leader::leads(shard, (topic.id, partition)) {
            return false;
        }
        if self.loaded.borrow().contains(&partition) {
            return true;
        }
        let empty = shard
            .logs
            .log((topic.id, partition))
            .is_some_and(|log| log.log_end_offset() == log.log_start_offset());
        if empty && self.following.available() > 0 {
            self.loaded.borrow_mut().insert(partition);
            return true;
        }
        false
    }

    /// Brings the loaded partitions in line with the ones this shard leads now: loads the
    /// groups of newly led ones from their logs, and forgets those of partitions led
    /// elsewhere (their waiting requests get NOT_COORDINATOR). Runs at start and after each
    /// metadata image.
    pub async fn follow_leadership(&self, shard: &Shard) {
        let Ok(_one_at_a_time) = self.following.acquire_permit(1).await else {
            return;
        };
        let image = shard.metadata();
        let Some(topic) = image.topic(OFFSETS_TOPIC) else {
            return;
        };
        let count = topic.partitions.len();
        let led: BTreeSet<i32> = (0..count as i32)
            .filter(|p| {
                crate::shard::router::owner(&image, topic.id, *p, shard.here()) == Ok(shard.id)
            })
            .collect();
        let gone: Vec<i32> = self.loaded.borrow().difference(&led).copied().collect();
        for p in gone {
            self.unload(p, count);
        }
        let now = now_ms();
        let mut loaded_groups = 0usize;
        let new: Vec<i32> = led.difference(&self.loaded.borrow()).copied().collect();
        for p in new {
            let Some(log) = shard.logs.log((topic.id, p)) else {
                continue;
            };
            let loaded = match store::load(&log).await {
                Ok(l) => l,
                Err(e) => {
                    warn!(partition = p, error = %e, "cannot replay an offsets partition; its groups start empty");
                    HashMap::new()
                }
            };
            let mut groups = self.groups.borrow_mut();
            // What an earlier leadership of this partition left is replaced by its log.
            groups.retain(|id, _| super::partition_for(id, count) != p);
            for (id, l) in loaded {
                if l.group.is_none() && l.offsets.is_empty() {
                    continue;
                }
                let group = match l.group {
                    Some(v) => ClassicGroup::from_stored(&id, v, self.settings.limits, now),
                    None => ClassicGroup::new(&id, self.settings.limits, now),
                };
                loaded_groups += 1;
                groups.insert(
                    id,
                    GroupEntry {
                        group,
                        offsets: l.offsets,
                        commits_in_flight: 0,
                    },
                );
            }
            self.loaded.borrow_mut().insert(p);
        }
        if loaded_groups > 0 {
            info!(
                shard = shard.id.0,
                groups = loaded_groups,
                "consumer groups loaded"
            );
        }
    }

    /// Forgets the groups of `__consumer_offsets` partition `p` (of `count`), led elsewhere
    /// now; requests waiting on them are answered NOT_COORDINATOR.
    fn unload(&self, p: i32, count: usize) {
        self.loaded.borrow_mut().remove(&p);
        let mine = |id: &str| super::partition_for(id, count) == p;
        let before = self.groups.borrow().len();
        self.groups.borrow_mut().retain(|id, _| !mine(id));
        let forgotten = before - self.groups.borrow().len();
        answer_waiters(&self.join_waiters, &mine, |member| {
            JoinResult::error(ResponseError::NotCoordinator, member)
        });
        answer_waiters(&self.sync_waiters, &mine, |_| {
            SyncResult::error(ResponseError::NotCoordinator)
        });
        if forgotten > 0 {
            info!(
                partition = p,
                groups = forgotten,
                "offsets partition led elsewhere now: its groups are unloaded"
            );
        }
    }

    /// Runs `effects` (and those they lead to) in order.
    async fn run_effects(&self, shard: &Shard, group_id: &str, effects: Vec<Effect>) {
        let mut queue: VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Join { member_id, result } => {
                    let key = (group_id.to_string(), member_id);
                    if let Some(tx) = self.join_waiters.borrow_mut().remove(&key) {
                        let _ = tx.send(result);
                    }
                }
                Effect::Sync { member_id, result } => {
                    let key = (group_id.to_string(), member_id);
                    if let Some(tx) = self.sync_waiters.borrow_mut().remove(&key) {
                        let _ = tx.send(result);
                    }
                }
                Effect::Store(value) => {
                    let record = (RecordKey::group_key(group_id), Some(value.encode()));
                    if let Err(e) = store::write(shard, group_id, vec![record]).await {
                        warn!(group = group_id, error = %e, "cannot store group membership");
                    }
                }
                Effect::StoreAssignment { generation, value } => {
                    let record = (RecordKey::group_key(group_id), Some(value.encode()));
                    let ok = match store::write(shard, group_id, vec![record]).await {
                        Ok(()) => true,
                        Err(e) => {
                            warn!(group = group_id, error = %e, "cannot store the group's assignment; rebalancing");
                            false
                        }
                    };
                    let more = match self.groups.borrow_mut().get_mut(group_id) {
                        Some(e) => e.group.assignment_stored(generation, ok, now_ms()),
                        None => Vec::new(),
                    };
                    queue.extend(more);
                }
            }
        }
    }

    pub async fn join(&self, shard: &Shard, group_id: &str, req: JoinRequest) -> JoinResult {
        let now = now_ms();
        let req_member = req.member_id.clone();
        let (reply, effects) = {
            let mut groups = self.groups.borrow_mut();
            if !groups.contains_key(group_id) {
                if !req.member_id.is_empty() {
                    return JoinResult::error(ResponseError::UnknownMemberId, &req.member_id);
                }
                groups.insert(group_id.to_string(), self.new_group(group_id, now));
            }
            match groups.get_mut(group_id) {
                Some(e) => e.group.join(req, now),
                None => return JoinResult::error(ResponseError::CoordinatorNotAvailable, ""),
            }
        };
        let member_id = req_member.clone();
        self.answer(
            &self.join_waiters,
            shard,
            group_id,
            reply,
            effects,
            move || JoinResult::error(ResponseError::RebalanceInProgress, &member_id),
        )
        .await
    }

    /// Runs `effects` and answers `reply`: at once, or when an effect answers the waiter
    /// registered for it (first, so an effect of this same call finds it). `gone` is the
    /// answer when the waiter is dropped unanswered (replaced by a newer request).
    async fn answer<T>(
        &self,
        waiters: &Waiters<T>,
        shard: &Shard,
        group_id: &str,
        reply: Reply<T>,
        effects: Vec<Effect>,
        gone: impl FnOnce() -> T,
    ) -> T {
        let rx = match &reply {
            Reply::Wait(member_id) => {
                let (tx, rx) = flume::bounded(1);
                // A request already waiting for this member is replaced; its client gave up.
                waiters
                    .borrow_mut()
                    .insert((group_id.to_string(), member_id.clone()), tx);
                Some(rx)
            }
            Reply::Now(_) => None,
        };
        self.run_effects(shard, group_id, effects).await;
        match (reply, rx) {
            (Reply::Now(r), _) => r,
            (Reply::Wait(_), Some(rx)) => rx.recv_async().await.unwrap_or_else(|_| gone()),
            (Reply::Wait(_), None) => gone(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn sync(
        &self,
        shard: &Shard,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncResult {
        let now = now_ms();
        let (reply, effects) = match self.groups.borrow_mut().get_mut(group_id) {
            Some(e) => e.group.sync(
                member_id,
                instance_id,
                generation,
                protocol_type,
                protocol_name,
                assignments,
                now,
            ),
            None => return SyncResult::error(ResponseError::UnknownMemberId),
        };
        self.answer(&self.sync_waiters, shard, group_id, reply, effects, || {
            SyncResult::error(ResponseError::RebalanceInProgress)
        })
        .await
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        match self.groups.borrow_mut().get_mut(group_id) {
            Some(e) => e
                .group
                .heartbeat(member_id, instance_id, generation, now_ms()),
            None => Err(ResponseError::UnknownMemberId),
        }
    }

    /// LeaveGroup: one outcome per member; an unknown group leaves every member unknown.
    pub async fn leave(
        &self,
        shard: &Shard,
        group_id: &str,
        members: Vec<(String, Option<String>)>,
    ) -> Vec<Result<String, ResponseError>> {
        let (outcomes, effects) = match self.groups.borrow_mut().get_mut(group_id) {
            Some(e) => e.group.leave(&members, now_ms()),
            None => (
                members
                    .iter()
                    .map(|_| Err(ResponseError::UnknownMemberId))
                    .collect(),
                Vec::new(),
            ),
        };
        self.run_effects(shard, group_id, effects).await;
        outcomes
    }

    /// OffsetCommit: the member checks, then one write of every valid partition; the
    /// offsets are visible to OffsetFetch once durable. `Err` fails the whole request.
    pub async fn commit(
        &self,
        shard: &Shard,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        items: Vec<CommitItem>,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let now = now_ms();
        {
            let mut groups = self.groups.borrow_mut();
            if !groups.contains_key(group_id) {
                if generation >= 0 {
                    return Err(ResponseError::IllegalGeneration);
                }
                groups.insert(group_id.to_string(), self.new_group(group_id, now));
            }
            if let Some(e) = groups.get_mut(group_id) {
                e.group
                    .check_commit(member_id, instance_id, generation, now)?;
                e.commits_in_flight += 1;
            }
        }
        let max = self.settings.offset_metadata_max_bytes;
        let mut results = Vec::with_capacity(items.len());
        let mut writes: Vec<Write> = Vec::new();
        let mut values = Vec::new();
        for item in items {
            let metadata = item.metadata.unwrap_or_default();
            if metadata.len() > max {
                results.push(Some(ResponseError::OffsetMetadataTooLarge));
                continue;
            }
            results.push(None);
            let value = OffsetValue {
                offset: item.offset,
                leader_epoch: item.leader_epoch,
                metadata,
                commit_timestamp_ms: now,
            };
            writes.push((
                RecordKey::Offset {
                    group: group_id.to_string(),
                    topic: item.topic.clone(),
                    partition: item.partition,
                },
                Some(value.encode()),
            ));
            values.push((item.topic, item.partition, value));
        }
        let written = store::write(shard, group_id, writes).await;
        // Led elsewhere now (its groups were unloaded meanwhile): the new coordinator has
        // whatever the in-sync replicas acknowledged.
        if !self.serves(shard, group_partition(shard, group_id)) {
            return Err(ResponseError::NotCoordinator);
        }
        // A DeleteGroups may have removed the group meanwhile: durable offsets bring it back.
        let mut groups = self.groups.borrow_mut();
        let e = groups
            .entry(group_id.to_string())
            .or_insert_with(|| self.new_group(group_id, now));
        e.commits_in_flight = e.commits_in_flight.saturating_sub(1);
        if let Err(err) = written {
            warn!(group = group_id, error = %err, "cannot store committed offsets");
            return Err(err.commit_error());
        }
        for (topic, partition, value) in values {
            e.offsets.put(topic, partition, value);
        }
        Ok(results)
    }

    /// OffsetFetch of one group: the requested partitions (every committed one when `None`).
    pub fn fetch(&self, group_id: &str, query: OffsetQuery) -> OffsetAnswer {
        let groups = self.groups.borrow();
        let offsets = groups.get(group_id).map(|e| &e.offsets);
        match query {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|p| (p, offsets.and_then(|o| o.get(&topic, p)).cloned()))
                        .collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut out: OffsetAnswer = Vec::new();
                for ((topic, p), v) in offsets.into_iter().flat_map(|o| o.iter()) {
                    match out.last_mut() {
                        Some((t, parts)) if t == topic => parts.push((*p, Some(v.clone()))),
                        _ => out.push((topic.clone(), vec![(*p, Some(v.clone()))])),
                    }
                }
                out
            }
        }
    }

    pub fn list(&self) -> Vec<GroupSummary> {
        self.groups
            .borrow()
            .iter()
            .filter(|(_, e)| e.group.state() != GroupState::Dead)
            .map(|(id, e)| GroupSummary {
                group_id: id.clone(),
                protocol_type: e.group.protocol_type().unwrap_or_default().to_string(),
                state: e.group.state(),
            })
            .collect()
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.groups.borrow();
        let g = &groups.get(group_id)?.group;
        let stable = g.state() == GroupState::Stable;
        let protocol = g.protocol().unwrap_or_default();
        Some(GroupDescription {
            state: g.state(),
            protocol_type: g.protocol_type().unwrap_or_default().to_string(),
            protocol: if stable {
                protocol.to_string()
            } else {
                String::new()
            },
            members: g
                .members()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    // Kafka shows metadata and assignments of a Stable group only.
                    metadata: if stable {
                        m.metadata_for(protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }

    /// DeleteGroups of one group: only an empty group; its offsets and membership get
    /// tombstones.
    pub async fn delete(&self, shard: &Shard, group_id: &str) -> Result<(), ResponseError> {
        let now = now_ms();
        let writes: Vec<Write> = {
            let mut groups = self.groups.borrow_mut();
            let Some(e) = groups.get_mut(group_id) else {
                return Err(ResponseError::GroupIdNotFound);
            };
            match e.group.state() {
                GroupState::Dead => return Err(ResponseError::GroupIdNotFound),
                GroupState::Empty => {}
                _ => return Err(ResponseError::NonEmptyGroup),
            }
            e.group.mark_dead(now);
            e.offsets
                .iter()
                .map(|((topic, partition), _)| {
                    (
                        RecordKey::Offset {
                            group: group_id.to_string(),
                            topic: topic.clone(),
                            partition: *partition,
                        },
                        None,
                    )
                })
                .chain(std::iter::once((RecordKey::group_key(group_id), None)))
                .collect()
        };
        match store::write(shard, group_id, writes).await {
            Ok(()) => {
                self.groups.borrow_mut().remove(group_id);
                Ok(())
            }
            Err(e) => {
                warn!(group = group_id, error = %e, "cannot store a group's deletion");
                if let Some(e) = self.groups.borrow_mut().get_mut(group_id) {
                    e.group.revive_empty(now_ms());
                }
                Err(ResponseError::CoordinatorNotAvailable)
            }
        }
    }

    /// OffsetDelete: removes committed offsets, except of topics the group is subscribed to
    /// while it has members (GROUP_SUBSCRIBED_TO_TOPIC). `subscribed` is given the members'
    /// metadata of the selected protocol and returns the topics, `None` if unreadable.
    pub async fn delete_offsets(
        &self,
        shard: &Shard,
        group_id: &str,
        topics: Vec<(String, Vec<i32>)>,
        subscribed: impl Fn(&[Bytes]) -> Option<Vec<String>>,
    ) -> Result<Vec<(String, Vec<(i32, Option<ResponseError>)>)>, ResponseError> {
        let mut writes: Vec<Write> = Vec::new();
        let mut answer = Vec::with_capacity(topics.len());
        {
            let groups = self.groups.borrow();
            let Some(e) = groups.get(group_id) else {
                return Err(ResponseError::GroupIdNotFound);
            };
            let busy = match e.group.state() {
                GroupState::Dead => return Err(ResponseError::GroupIdNotFound),
                GroupState::Empty => Vec::new(),
                _ if e.group.protocol_type() == Some("consumer") => {
                    let protocol = e.group.protocol().unwrap_or_default();
                    let metadata: Vec<Bytes> = e
                        .group
                        .members()
                        .map(|m| m.metadata_for(protocol))
                        .collect();
                    subscribed(&metadata).ok_or(ResponseError::NonEmptyGroup)?
                }
                _ => return Err(ResponseError::NonEmptyGroup),
            };
            for (topic, partitions) in topics {
                let in_use = busy.contains(&topic);
                let parts = partitions
                    .into_iter()
                    .map(|p| {
                        if in_use {
                            return (p, Some(ResponseError::GroupSubscribedToTopic));
                        }
                        if e.offsets.get(&topic, p).is_some() {
                            writes.push((
                                RecordKey::Offset {
                                    group: group_id.to_string(),
                                    topic: topic.clone(),
                                    partition: p,
                                },
                                None,
                            ));
                        }
                        (p, None)
                    })
                    .collect();
                answer.push((topic, parts));
            }
        }
        let removed: Vec<(String, i32)> = writes
            .iter()
            .filter_map(|(k, _)| match k {
                RecordKey::Offset {
                    topic, partition, ..
                } => Some((topic.clone(), *partition)),
                RecordKey::Group { .. } => None,
            })
            .collect();
        if let Err(e) = store::write(shard, group_id, writes).await {
            warn!(group = group_id, error = %e, "cannot store deleted offsets");
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if let Some(e) = self.groups.borrow_mut().get_mut(group_id) {
            for (topic, p) in removed {
                e.offsets.remove(&topic, p);
            }
        }
        Ok(answer)
    }

    /// One pass of every group's timers.
    async fn tick(&self, shard: &Shard) {
        let now = now_ms();
        let mut fired: Vec<(String, Vec<Effect>)> = Vec::new();
        {
            let mut groups = self.groups.borrow_mut();
            // An Empty group that never completed a rebalance and holds no offsets has
            // nothing stored: forget it (a client that only asked for a member id).
            groups.retain(|_, e| {
                !(e.group.state() == GroupState::Empty
                    && e.group.generation() == 0
                    && !e.group.has_timers()
                    && e.offsets.is_empty()
                    && e.commits_in_flight == 0)
            });
            for (id, e) in groups.iter_mut() {
                if e.group.has_timers() {
                    let effects = e.group.tick(now);
                    if !effects.is_empty() {
                        fired.push((id.clone(), effects));
                    }
                }
            }
        }
        for (id, effects) in fired {
            self.run_effects(shard, &id, effects).await;
        }
        if now >= self.next_retention_check_ms.get() {
            self.next_retention_check_ms
                .set(now.saturating_add(self.settings.offsets_retention_check_interval_ms));
            self.expire_offsets(shard, now).await;
        }
    }

    /// Removes offsets past `offsets.retention.minutes` (see `GroupOffsets::expired`); an
    /// empty group left without offsets is deleted too, as Kafka does.
    async fn expire_offsets(&self, shard: &Shard, now: i64) {
        let retention_ms = self.settings.offsets_retention_ms;
        let mut work: Vec<(String, Vec<TopicPartition>, bool)> = Vec::new();
        for (id, e) in self.groups.borrow().iter() {
            if e.group.state() != GroupState::Empty || e.commits_in_flight > 0 {
                continue;
            }
            let expired = e
                .offsets
                .expired(e.group.state_since_ms(), retention_ms, now);
            if !expired.is_empty() {
                let whole_group = expired.len() == e.offsets.len();
                work.push((id.clone(), expired, whole_group));
            }
        }
        for (id, expired, whole_group) in work {
            let mut writes: Vec<Write> = expired
                .iter()
                .map(|(topic, partition)| {
                    (
                        RecordKey::Offset {
                            group: id.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                        },
                        None,
                    )
                })
                .collect();
            if whole_group {
                writes.push((RecordKey::group_key(&id), None));
            }
            if let Err(e) = store::write(shard, &id, writes).await {
                warn!(group = %id, error = %e, "cannot store expired offsets");
                continue;
            }
            let mut groups = self.groups.borrow_mut();
            if let Some(e) = groups.get_mut(&id) {
                for (topic, partition) in &expired {
                    e.offsets.remove(topic, *partition);
                }
                if whole_group && e.offsets.is_empty() && e.group.state() == GroupState::Empty {
                    groups.remove(&id);
                }
            }
            info!(group = %id, offsets = expired.len(), "expired committed offsets (offsets.retention.minutes)");
        }
    }

    /// Answers every waiting request (the shard is stopping; clients find the coordinator
    /// again).
    fn release_waiters(&self) {
        for (_, tx) in self.join_waiters.borrow_mut().drain() {
            let _ = tx.send(JoinResult::error(ResponseError::NotCoordinator, ""));
        }
        for (_, tx) in self.sync_waiters.borrow_mut().drain() {
            let _ = tx.send(SyncResult::error(ResponseError::NotCoordinator));
        }
    }
}

/// Drives the group timers of `shard` every `GROUP_TIMER_TICK_MS` until it stops.
pub async fn run_timers(shard: Rc<Shard>) {
    while !shard.shutdown.is_fired() {
        glommio::timer::sleep(Duration::from_millis(GROUP_TIMER_TICK_MS)).await;
        shard.groups.tick(&shard).await;
    }
    shard.groups.release_waiters();
}

/// Answers (with `answer(member_id)`) and removes the requests waiting on groups for which
/// `mine` holds.
fn answer_waiters<T>(
    waiters: &Waiters<T>,
    mine: &dyn Fn(&str) -> bool,
    answer: impl Fn(&str) -> T,
) {
    let keys: Vec<(String, String)> = waiters
        .borrow()
        .keys()
        .filter(|(group, _)| mine(group))
        .cloned()
        .collect();
    for key in keys {
        if let Some(tx) = waiters.borrow_mut().remove(&key) {
            let _ = tx.send(answer(&key.1));
        }
    }
}

/// The `__consumer_offsets` partition of `group_id` in the shard's image (-1 without the topic).
pub fn group_partition(shard: &Shard, group_id: &str) -> i32 {
    shard
        .metadata()
        .topic(OFFSETS_TOPIC)
        .map_or(-1, |t| super::partition_for(group_id, t.partitions.len()))
}
