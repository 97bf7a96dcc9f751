//! The classic group state machine (Kafka's `GroupMetadata` + the classic half of its group
//! coordinator): Empty, PreparingRebalance, CompletingRebalance, Stable, Dead; JoinGroup with
//! KIP-394 member ids, static membership (KIP-345), protocol selection, the delayed initial
//! rebalance, SyncGroup, Heartbeat, LeaveGroup, session, rebalance and sync timeouts, and the
//! member checks of OffsetCommit.
//!
//! It is pure: time comes in as `now_ms`, and what must happen outside (answer a waiting
//! JoinGroup or SyncGroup, store the membership) comes out as [`Effect`]s in order, so the
//! unit tests below drive every transition without a runtime. The coordinator runs the
//! effects and holds the waiting requests.
//!
//! Never: reads a clock, does I/O, or answers a waiting request itself.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use corebus_wire::error_code::ResponseError;

pub use super::exchange::{
    Effect, GroupLimits, GroupState, JoinRequest, JoinResult, JoinedMember, Reply, SyncResult,
};
use super::member::{Member, Protocol};
use super::record::{GroupValue, MemberValue};

/// The join phase of PreparingRebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinPhase {
    /// The delayed first rebalance of an empty group (`group.initial.rebalance.delay.ms`):
    /// waits the delay, again while new members keep arriving, up to `limit_ms`.
    Initial {
        deadline_ms: i64,
        limit_ms: i64,
        new_member_added: bool,
    },
    /// Waits for every member to rejoin, at most the largest rebalance timeout.
    Normal { deadline_ms: i64 },
}

#[derive(Debug, Clone)]
pub struct ClassicGroup {
    id: String,
    state: GroupState,
    state_since_ms: i64,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they lapse.
    pending: BTreeMap<String, i64>,
    /// Static instance id to its current member id.
    instances: HashMap<String, String>,
    join: Option<JoinPhase>,
    /// CompletingRebalance: members that have not synced by then are removed.
    sync_deadline_ms: Option<i64>,
    /// The leader's assignment while it is being stored.
    pending_assignment: Option<BTreeMap<String, Bytes>>,
    limits: GroupLimits,
    /// A fresh, unique suffix for member ids (UUIDs; tests use a counter).
    id_source: fn() -> String,
}

fn uuid_suffix() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl ClassicGroup {
    pub fn new(id: &str, limits: GroupLimits, now_ms: i64) -> ClassicGroup {
        ClassicGroup {
            id: id.to_string(),
            state: GroupState::Empty,
            state_since_ms: now_ms,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            instances: HashMap::new(),
            join: None,
            sync_deadline_ms: None,
            pending_assignment: None,
            limits,
            id_source: uuid_suffix,
        }
    }

    /// A group as stored by its last membership record: Stable with its members (their
    /// sessions start now, so members that do not come back expire), or Empty.
    pub fn from_stored(id: &str, v: GroupValue, limits: GroupLimits, now_ms: i64) -> ClassicGroup {
        let mut g = ClassicGroup::new(id, limits, now_ms);
        g.generation = v.generation;
        g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
        g.protocol = v.protocol.clone();
        for m in v.members {
            let protocols = match &v.protocol {
                Some(p) => vec![Protocol {
                    name: p.clone(),
                    metadata: m.subscription,
                }],
                None => Vec::new(),
            };
            let mut member = Member {
                id: m.member_id.clone(),
                instance_id: m.group_instance_id.clone(),
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocols,
                assignment: m.assignment,
                awaiting_join: false,
                awaiting_sync: false,
                session_deadline_ms: 0,
                supports_skip_assignment: false,
            };
            member.touch(now_ms);
            if let Some(i) = &m.group_instance_id {
                g.instances.insert(i.clone(), m.member_id.clone());
            }
            g.members.insert(m.member_id, member);
        }
        // An empty group keeps the time it became empty (offsets expire from it).
        if v.current_state_timestamp_ms >= 0 {
            g.state_since_ms = v.current_state_timestamp_ms.min(now_ms);
        }
        if !g.members.is_empty() {
            g.state_since_ms = now_ms;
            g.leader = v
                .leader
                .filter(|l| g.members.contains_key(l))
                .or_else(|| g.members.keys().next().cloned());
            g.state = GroupState::Stable;
        }
        g
    }

    #[cfg(test)]
    fn with_id_source(mut self, f: fn() -> String) -> ClassicGroup {
        self.id_source = f;
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn state(&self) -> GroupState {
        self.state
    }
    /// When the group entered its current state.
    pub fn state_since_ms(&self) -> i64 {
        self.state_since_ms
    }
    pub fn generation(&self) -> i32 {
        self.generation
    }
    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }
    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    fn set_state(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_since_ms = now_ms;
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    /// A static instance id now held by a different member id.
    fn fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id
            .and_then(|i| self.instances.get(i))
            .is_some_and(|current| current != member_id)
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|p| self.members.values().all(|m| m.supports(&p.name)))
    }

    /// The protocol every member supports that most members prefer (ties: the earliest in
    /// the first member's order, so the choice is deterministic).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|n| self.members.values().all(|m| m.supports(n)))
            .collect();
        let mut best: Option<(&str, usize)> = None;
        for c in &candidates {
            let votes = self
                .members
                .values()
                .filter(|m| m.vote(&candidates) == Some(*c))
                .count();
            if best.is_none_or(|(_, v)| votes > v) {
                best = Some((c, votes));
            }
        }
        best.map(|(c, _)| c.to_string())
    }

    /// The membership record of the current generation, with `assignment` in place of the
    /// members' own when given.
    pub fn stored_value(
        &self,
        now_ms: i64,
        assignment: Option<&BTreeMap<String, Bytes>>,
    ) -> GroupValue {
        let protocol = self.protocol.clone();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp_ms: now_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: protocol
                        .as_deref()
                        .map(|p| m.metadata_for(p))
                        .unwrap_or_default(),
                    assignment: match assignment {
                        Some(a) => a.get(&m.id).cloned().unwrap_or_default(),
                        None => m.assignment.clone(),
                    },
                })
                .collect(),
        }
    }

    /// The JoinGroup answer of the current generation for `member_id`.
    fn current_join(&self, member_id: &str, leader_view: bool) -> JoinResult {
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            skip_assignment: false,
            members: if leader_view {
                self.member_list()
            } else {
                Vec::new()
            },
        }
    }

    fn member_list(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol.as_deref().unwrap_or_default();
        self.members
            .values()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(protocol),
            })
            .collect()
    }

    // ---- JoinGroup ----

    pub fn join(&mut self, req: JoinRequest, now_ms: i64) -> (Reply<JoinResult>, Vec<Effect>) {
        let limits = self.limits;
        let now = |e| (Reply::Now(JoinResult::error(e, &req.member_id)), Vec::new());
        if req.session_timeout_ms < limits.min_session_timeout_ms
            || req.session_timeout_ms > limits.max_session_timeout_ms
        {
            return now(ResponseError::InvalidSessionTimeout);
        }
        if self.state == GroupState::Dead {
            return now(ResponseError::CoordinatorNotAvailable);
        }
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            return now(ResponseError::InconsistentGroupProtocol);
        }
        if req.member_id.is_empty() {
            self.join_unknown(req, now_ms)
        } else {
            self.join_known(req, now_ms)
        }
    }

    fn join_unknown(&mut self, req: JoinRequest, now_ms: i64) -> (Reply<JoinResult>, Vec<Effect>) {
        if let Some(instance) = req.instance_id.clone()
            && let Some(old) = self.instances.get(&instance).cloned()
        {
            return self.replace_static(old, instance, req, now_ms);
        }
        if self.members.len() + self.pending.len() >= self.limits.max_size_members {
            return (
                Reply::Now(JoinResult::error(ResponseError::GroupMaxSizeReached, "")),
                Vec::new(),
            );
        }
        let prefix = req.instance_id.as_deref().unwrap_or(&req.client_id);
        let member_id = format!("{prefix}-{}", (self.id_source)());
        if req.instance_id.is_none() && req.require_known_member_id {
            let lapses = now_ms.saturating_add(i64::from(req.session_timeout_ms));
            self.pending.insert(member_id.clone(), lapses);
            return (
                Reply::Now(JoinResult::error(
                    ResponseError::MemberIdRequired,
                    &member_id,
                )),
                Vec::new(),
            );
        }
        self.add_member(member_id, req, now_ms)
    }

    fn join_known(&mut self, req: JoinRequest, now_ms: i64) -> (Reply<JoinResult>, Vec<Effect>) {
        let member_id = req.member_id.clone();
        if self.pending.remove(&member_id).is_some() {
            return self.add_member(member_id, req, now_ms);
        }
        let error = |e| (Reply::Now(JoinResult::error(e, &member_id)), Vec::new());
        if self.fenced(req.instance_id.as_deref(), &member_id) {
            return error(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(&member_id) {
            return error(ResponseError::UnknownMemberId);
        }
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        let same = self
            .members
            .get(&member_id)
            .is_some_and(|m| m.same_protocols(&req.protocols));
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(&req, now_ms);
                let effects = self.try_complete_join(now_ms);
                (Reply::Wait(member_id), effects)
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if same && !(self.state == GroupState::Stable && is_leader) =>
            {
                // A repeated join of this generation (a lost answer): answer it again.
                if let Some(m) = self.members.get_mut(&member_id) {
                    m.touch(now_ms);
                }
                (
                    Reply::Now(self.current_join(&member_id, is_leader)),
                    Vec::new(),
                )
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member(&req, now_ms);
                let effects = self.prepare_rebalance(now_ms);
                (Reply::Wait(member_id), effects)
            }
            GroupState::Empty | GroupState::Dead => error(ResponseError::UnknownMemberId),
        }
    }

    fn update_member(&mut self, req: &JoinRequest, now_ms: i64) {
        if let Some(m) = self.members.get_mut(&req.member_id) {
            m.protocols = req.protocols.clone();
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.supports_skip_assignment = req.supports_skip_assignment;
            m.awaiting_join = true;
            m.touch(now_ms);
        }
    }

    fn add_member(
        &mut self,
        member_id: String,
        req: JoinRequest,
        now_ms: i64,
    ) -> (Reply<JoinResult>, Vec<Effect>) {
        // Kafka extends the initial delay only for the group's very first rebalance.
        if self.generation == 0
            && let Some(JoinPhase::Initial {
                new_member_added, ..
            }) = &mut self.join
        {
            *new_member_added = true;
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        let mut member = Member {
            id: member_id.clone(),
            instance_id: req.instance_id.clone(),
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocols: req.protocols,
            assignment: Bytes::new(),
            awaiting_join: true,
            awaiting_sync: false,
            session_deadline_ms: 0,
            supports_skip_assignment: req.supports_skip_assignment,
        };
        member.touch(now_ms);
        if let Some(i) = &req.instance_id {
            self.instances.insert(i.clone(), member_id.clone());
        }
        self.members.insert(member_id.clone(), member);
        if self.leader.is_none() {
            self.leader = Some(member_id.clone());
        }
        let mut effects = match self.state {
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty => {
                self.prepare_rebalance(now_ms)
            }
            _ => Vec::new(),
        };
        effects.extend(self.try_complete_join(now_ms));
        (Reply::Wait(member_id), effects)
    }

    /// A static member joined again without its member id: it takes a new one and keeps its
    /// place. In a Stable group whose protocol stays the same that is all (no rebalance: its
    /// assignment is returned by SyncGroup); otherwise it joins the rebalance.
    fn replace_static(
        &mut self,
        old_id: String,
        instance: String,
        req: JoinRequest,
        now_ms: i64,
    ) -> (Reply<JoinResult>, Vec<Effect>) {
        let Some(mut member) = self.members.remove(&old_id) else {
            self.instances.remove(&instance);
            return (
                Reply::Now(JoinResult::error(ResponseError::UnknownMemberId, "")),
                Vec::new(),
            );
        };
        let mut effects = Vec::new();
        if member.awaiting_join {
            effects.push(Effect::Join {
                member_id: old_id.clone(),
                result: JoinResult::error(ResponseError::FencedInstanceId, &old_id),
            });
        }
        if member.awaiting_sync {
            effects.push(Effect::Sync {
                member_id: old_id.clone(),
                result: SyncResult::error(ResponseError::FencedInstanceId),
            });
        }
        let new_id = format!("{instance}-{}", (self.id_source)());
        member.id = new_id.clone();
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.protocols = req.protocols.clone();
        member.supports_skip_assignment = req.supports_skip_assignment;
        member.awaiting_join = false;
        member.awaiting_sync = false;
        member.touch(now_ms);
        self.members.insert(new_id.clone(), member);
        self.instances.insert(instance, new_id.clone());
        let old_leader = self.leader.clone().unwrap_or_default();
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        match self.state {
            GroupState::Stable if self.select_protocol() == self.protocol => {
                effects.push(Effect::Store(self.stored_value(now_ms, None)));
                let is_leader = self.leader.as_deref() == Some(new_id.as_str());
                let mut result = self.current_join(&new_id, false);
                if req.supports_skip_assignment {
                    // KIP-814: the leader learns it leads but runs no assignment.
                    result.skip_assignment = is_leader;
                    if is_leader {
                        result.members = self.member_list();
                    }
                } else {
                    // Older clients are told the old leader id, so a rejoining leader does
                    // not compute an assignment a Stable group would ignore.
                    result.leader = old_leader;
                }
                (Reply::Now(result), effects)
            }
            _ => {
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.awaiting_join = true;
                }
                match self.state {
                    GroupState::PreparingRebalance => {
                        effects.extend(self.try_complete_join(now_ms))
                    }
                    _ => effects.extend(self.prepare_rebalance(now_ms)),
                }
                (Reply::Wait(new_id), effects)
            }
        }
    }

    fn prepare_rebalance(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.state == GroupState::CompletingRebalance {
            self.pending_assignment = None;
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if m.awaiting_sync {
                    m.awaiting_sync = false;
                    effects.push(Effect::Sync {
                        member_id: m.id.clone(),
                        result: SyncResult::error(ResponseError::RebalanceInProgress),
                    });
                }
            }
        }
        let rebalance_ms = self.max_rebalance_timeout_ms();
        self.join = Some(if self.state == GroupState::Empty {
            let delay = i64::from(self.limits.initial_rebalance_delay_ms);
            JoinPhase::Initial {
                deadline_ms: now_ms.saturating_add(delay),
                limit_ms: now_ms.saturating_add(rebalance_ms.max(delay)),
                new_member_added: false,
            }
        } else {
            JoinPhase::Normal {
                deadline_ms: now_ms.saturating_add(rebalance_ms),
            }
        });
        self.sync_deadline_ms = None;
        self.set_state(GroupState::PreparingRebalance, now_ms);
        // Everyone may have joined already (a lone member rejoining, the last one leaving).
        effects.extend(self.try_complete_join(now_ms));
        effects
    }

    fn try_complete_join(&mut self, now_ms: i64) -> Vec<Effect> {
        let all_joined = self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join);
        match self.join {
            Some(JoinPhase::Normal { .. }) if all_joined => self.complete_join(now_ms),
            _ => Vec::new(),
        }
    }

    fn complete_join(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        // Dynamic members that did not rejoin are out; static ones keep their place.
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join && !m.is_static())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.members.remove(&id);
        }
        if self
            .leader
            .as_ref()
            .is_some_and(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.join = None;
        self.generation = self.generation.saturating_add(1);
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.set_state(GroupState::Empty, now_ms);
            effects.push(Effect::Store(self.stored_value(now_ms, None)));
            return effects;
        }
        self.protocol = self.select_protocol();
        self.set_state(GroupState::CompletingRebalance, now_ms);
        self.sync_deadline_ms = Some(now_ms.saturating_add(self.max_rebalance_timeout_ms()));
        let leader = self.leader.clone().unwrap_or_default();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let joined = self.members.get_mut(&id).is_some_and(|m| {
                m.touch(now_ms);
                std::mem::replace(&mut m.awaiting_join, false)
            });
            if joined {
                effects.push(Effect::Join {
                    result: self.current_join(&id, id == leader),
                    member_id: id,
                });
            }
        }
        effects
    }

    // ---- SyncGroup ----

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now_ms: i64,
    ) -> (Reply<SyncResult>, Vec<Effect>) {
        let error = |e| (Reply::Now(SyncResult::error(e)), Vec::new());
        if self.state == GroupState::Dead {
            return error(ResponseError::CoordinatorNotAvailable);
        }
        if self.fenced(instance_id, member_id) {
            return error(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return error(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return error(ResponseError::IllegalGeneration);
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            return error(ResponseError::InconsistentGroupProtocol);
        }
        let is_leader = self.leader.as_deref() == Some(member_id);
        match self.state {
            GroupState::Empty | GroupState::Dead => error(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => error(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.awaiting_sync = true;
                    m.touch(now_ms);
                }
                let mut effects = Vec::new();
                if is_leader && self.pending_assignment.is_none() {
                    let assignment: BTreeMap<String, Bytes> = assignments
                        .into_iter()
                        .filter(|(id, _)| self.members.contains_key(id))
                        .collect();
                    effects.push(Effect::StoreAssignment {
                        generation: self.generation,
                        value: self.stored_value(now_ms, Some(&assignment)),
                    });
                    self.pending_assignment = Some(assignment);
                }
                (Reply::Wait(member_id.to_string()), effects)
            }
            GroupState::Stable => {
                let assignment = match self.members.get_mut(member_id) {
                    Some(m) => {
                        m.touch(now_ms);
                        m.assignment.clone()
                    }
                    None => Bytes::new(),
                };
                (Reply::Now(self.sync_ok(assignment)), Vec::new())
            }
        }
    }

    fn sync_ok(&self, assignment: Bytes) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment,
        }
    }

    /// The leader's assignment of `generation` was stored (or failed to be): the group
    /// becomes Stable and every waiting SyncGroup gets its part, or the rebalance starts over.
    pub fn assignment_stored(&mut self, generation: i32, ok: bool, now_ms: i64) -> Vec<Effect> {
        if self.state != GroupState::CompletingRebalance || generation != self.generation {
            // A rebalance started meanwhile; its waiters were answered then.
            return Vec::new();
        }
        let Some(assignment) = self.pending_assignment.take() else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        if !ok {
            for m in self.members.values_mut().filter(|m| m.awaiting_sync) {
                m.awaiting_sync = false;
                effects.push(Effect::Sync {
                    member_id: m.id.clone(),
                    result: SyncResult::error(ResponseError::CoordinatorNotAvailable),
                });
            }
            effects.extend(self.prepare_rebalance(now_ms));
            return effects;
        }
        for m in self.members.values_mut() {
            m.assignment = assignment.get(&m.id).cloned().unwrap_or_default();
        }
        self.sync_deadline_ms = None;
        self.set_state(GroupState::Stable, now_ms);
        let waiting: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_sync)
            .map(|m| m.id.clone())
            .collect();
        for id in waiting {
            let assignment = match self.members.get_mut(&id) {
                Some(m) => {
                    m.awaiting_sync = false;
                    m.assignment.clone()
                }
                None => continue,
            };
            effects.push(Effect::Sync {
                member_id: id,
                result: self.sync_ok(assignment),
            });
        }
        effects
    }

    // ---- Heartbeat, LeaveGroup, OffsetCommit checks ----

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        match self.state {
            GroupState::Dead => return Err(ResponseError::CoordinatorNotAvailable),
            GroupState::Empty => return Err(ResponseError::UnknownMemberId),
            _ => {}
        }
        if self.fenced(instance_id, member_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        let Some(m) = self.members.get_mut(member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        m.touch(now_ms);
        if self.state == GroupState::PreparingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Removes the named members (a member id, or a static member by its instance id alone);
    /// one outcome per member, in order.
    pub fn leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        now_ms: i64,
    ) -> (Vec<Result<String, ResponseError>>, Vec<Effect>) {
        let mut outcomes = Vec::with_capacity(leaving.len());
        let mut effects = Vec::new();
        for (member_id, instance_id) in leaving {
            if self.state == GroupState::Dead {
                outcomes.push(Err(ResponseError::CoordinatorNotAvailable));
                continue;
            }
            let id = match (member_id.is_empty(), instance_id) {
                (true, Some(i)) => match self.instances.get(i) {
                    Some(id) => id.clone(),
                    None => {
                        outcomes.push(Err(ResponseError::UnknownMemberId));
                        continue;
                    }
                },
                _ => member_id.clone(),
            };
            if self.fenced(instance_id.as_deref(), &id) {
                outcomes.push(Err(ResponseError::FencedInstanceId));
                continue;
            }
            if self.pending.remove(&id).is_some() {
                effects.extend(self.try_complete_join(now_ms));
                outcomes.push(Ok(id));
                continue;
            }
            if !self.members.contains_key(&id) {
                outcomes.push(Err(ResponseError::UnknownMemberId));
                continue;
            }
            effects.extend(self.remove_member(&id, now_ms));
            outcomes.push(Ok(id));
        }
        (outcomes, effects)
    }

    fn remove_member(&mut self, member_id: &str, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(m) = self.members.remove(member_id) else {
            return effects;
        };
        if let Some(i) = &m.instance_id {
            self.instances.remove(i);
        }
        if m.awaiting_join {
            effects.push(Effect::Join {
                member_id: m.id.clone(),
                result: JoinResult::error(ResponseError::UnknownMemberId, &m.id),
            });
        }
        if m.awaiting_sync {
            effects.push(Effect::Sync {
                member_id: m.id.clone(),
                result: SyncResult::error(ResponseError::UnknownMemberId),
            });
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                effects.extend(self.prepare_rebalance(now_ms))
            }
            GroupState::PreparingRebalance => effects.extend(self.try_complete_join(now_ms)),
            GroupState::Empty | GroupState::Dead => {}
        }
        effects
    }

    /// Whether a member may commit offsets for `generation` (Kafka's order of checks); a
    /// commit counts as a heartbeat. Generation -1 from an empty group is a client that only
    /// stores offsets.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if self.fenced(instance_id, member_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        let Some(m) = self.members.get_mut(member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        m.touch(now_ms);
        Ok(())
    }

    /// Marks the group deleted (DeleteGroups on an empty group).
    pub fn mark_dead(&mut self, now_ms: i64) {
        self.set_state(GroupState::Dead, now_ms);
    }

    /// Undoes `mark_dead` when the deletion could not be stored.
    pub fn revive_empty(&mut self, now_ms: i64) {
        if self.state == GroupState::Dead {
            self.set_state(GroupState::Empty, now_ms);
        }
    }
}

#[path = "timers.rs"]
mod timers;

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
