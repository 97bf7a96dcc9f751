//! The leader: discovery (choose a new epoch from a quorum's accepted epochs),
//! synchronization (bring each follower to our history with DIFF, TRUNC or SNAP, then
//! NEWLEADER), and broadcast (pipelined PROPOSE, quorum ACK, COMMIT in zxid order).
//!
//! Owns the leader's bookkeeping of followers. Safety rests on three rules kept here: the
//! epoch is larger than any accepted epoch in a quorum; we lead only if no follower of the
//! discovery quorum is ahead of us in `(current epoch, last zxid)`; we count only ACKs of
//! this epoch's proposals from followers that adopted this epoch (acked NEWLEADER).

use std::collections::{BTreeMap, BTreeSet};

use super::message::Origin;
use super::node::{Core, Next};
use super::sync_plan;
use super::{ClientError, ClientOp, Fault, Output, PeerMessage};
use crate::election::Vote;
use crate::meta::Epochs;
use crate::txn::{LogEntry, Txn};
use crate::types::{ClientId, Epoch, NodeId, RequestId, SessionId, Zxid};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Collecting FOLLOWERINFO from a quorum to pick the epoch.
    Discovery,
    /// NEWEPOCH sent; collecting ACKEPOCH from a quorum.
    AwaitEpochAcks,
    /// Followers are being synced; waiting for a quorum of NEWLEADER acks.
    Syncing,
    /// Established: taking writes.
    Broadcast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Sent FOLLOWERINFO.
    Info,
    /// NEWEPOCH sent.
    EpochSent,
    /// ACKEPOCH received; waiting for the epoch quorum before syncing.
    EpochAcked,
    /// SYNC and NEWLEADER sent: receives proposals and commits from now on.
    AwaitNewLeaderAck,
    /// Adopted our epoch; its ACKs count.
    Synced,
}

#[derive(Debug)]
struct Slot {
    stage: Stage,
    acked: Zxid,
    /// Our last zxid when we sent it SYNC and NEWLEADER: it holds everything through it
    /// durably once it acked NEWLEADER (its ACKs count only this epoch's proposals).
    synced_to: Zxid,
    last_heard: u64,
    /// The newest ping round it answered.
    pong_round: u64,
    /// From ACKEPOCH: its last zxid, commit point and epoch ends.
    summary: Option<(Zxid, Zxid, Vec<Zxid>)>,
}

#[derive(Debug)]
pub(crate) struct Leader {
    vote: Vote,
    phase: Phase,
    epoch: Epoch,
    slots: BTreeMap<NodeId, Slot>,
    infos: BTreeMap<NodeId, Epoch>,
    newleader_acks: BTreeSet<NodeId>,
    self_adopted: bool,
    initial_last: Zxid,
    deadline: u64,
    next_ping: u64,
    /// Ping rounds sent so far.
    round: u64,
    /// Syncs waiting for a quorum to answer a ping of at least their round.
    pending_syncs: Vec<PendingSync>,
    /// When each live session was last heard of, in this leader's ticks. Empty at the start
    /// of every leadership: each session gets a fresh timeout from its first tick.
    session_seen: BTreeMap<SessionId, u64>,
    /// Sessions whose expiry is proposed and not yet applied.
    expiring: BTreeSet<SessionId>,
}

/// A sync the leader answers once its leadership is confirmed after the sync arrived (as
/// Raft's ReadIndex): a quorum answered a ping sent after it. A deposed leader that has not
/// noticed yet can therefore never answer with a stale point.
#[derive(Debug)]
struct PendingSync {
    round: u64,
    through: Zxid,
    /// The follower whose client asked, or `None` for our own client.
    via: Option<NodeId>,
    client: ClientId,
    request: RequestId,
}

/// A follower as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FollowerProgress {
    pub id: NodeId,
    /// It adopted this epoch and takes proposals; `false` while it is being synced.
    pub synced: bool,
    /// The newest zxid it holds durably as far as we know (its sync point or its last ACK);
    /// zero until it is synced.
    pub acked: Zxid,
    /// This epoch's proposals we hold that it has not acknowledged; `None` until synced.
    pub lag: Option<u32>,
    /// Ticks since we last heard from it.
    pub silent_ticks: u64,
}

/// How many of `epoch`'s proposals a history ending at `last` holds after `point`, when
/// `point` holds every earlier epoch's entries of that history (the commit point, or a
/// synced follower's position). Proposals of an epoch are numbered from 1.
fn proposals_after(epoch: Epoch, last: Zxid, point: Zxid) -> u32 {
    match (last.epoch == epoch.0, point.epoch == epoch.0) {
        (false, _) => 0,
        (true, true) => last.counter.saturating_sub(point.counter),
        (true, false) => last.counter,
    }
}

impl Leader {
    pub fn start(core: &mut Core, vote: Vote, out: &mut Vec<Output>) -> (Leader, Next) {
        let mut l = Leader {
            vote,
            phase: Phase::Discovery,
            epoch: Epoch(0),
            slots: BTreeMap::new(),
            infos: BTreeMap::from([(core.cfg.id, core.epochs.accepted)]),
            newleader_acks: BTreeSet::new(),
            self_adopted: false,
            initial_last: Zxid::ZERO,
            deadline: core.now + u64::from(core.cfg.init_limit_ticks),
            next_ping: 0,
            round: 0,
            pending_syncs: Vec::new(),
            session_seen: BTreeMap::new(),
            expiring: BTreeSet::new(),
        };
        let next = l.try_choose_epoch(core, out);
        (l, next)
    }

    pub fn vote(&self) -> Vote {
        self.vote
    }

    /// The epoch we lead once a quorum adopted it (NEWLEADER acks). Two nodes can both win a
    /// quorum of epoch promises for the same epoch number (a follower that promised one may
    /// then promise the other with the same number, as in ZooKeeper); only one of them can get
    /// a quorum to adopt it, because a follower that adopted it is "ahead" of the other.
    pub fn established_epoch(&self) -> Option<Epoch> {
        (self.phase == Phase::Broadcast).then_some(self.epoch)
    }

    pub fn is_serving(&self) -> bool {
        self.phase == Phase::Broadcast
    }

    /// Each connected follower's progress, for observers (`stat`).
    pub fn followers(&self, core: &Core) -> Vec<FollowerProgress> {
        let last = core.history.last();
        self.slots
            .iter()
            .map(|(id, s)| {
                let synced = s.stage == Stage::Synced;
                let acked = if synced {
                    s.acked.max(s.synced_to)
                } else {
                    Zxid::ZERO
                };
                FollowerProgress {
                    id: *id,
                    synced,
                    acked,
                    lag: synced.then(|| proposals_after(self.epoch, last, acked)),
                    silent_ticks: core.now.saturating_sub(s.last_heard),
                }
            })
            .collect()
    }

    fn in_flight(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.slots
            .iter()
            .filter(|(_, s)| s.stage >= Stage::AwaitNewLeaderAck)
            .map(|(id, _)| *id)
    }

    fn try_choose_epoch(&mut self, core: &mut Core, out: &mut Vec<Output>) -> Next {
        if self.phase != Phase::Discovery || self.infos.len() < core.cfg.quorum() {
            return Next::Stay;
        }
        let Some(epoch) = self.infos.values().max().and_then(|e| e.0.checked_add(1)) else {
            return Next::Look;
        };
        self.epoch = Epoch(epoch);
        let epochs = Epochs {
            accepted: self.epoch,
            current: core.epochs.current,
        };
        core.set_epochs(epochs, out);
        self.phase = Phase::AwaitEpochAcks;
        // Each step of establishment gets its own time limit.
        self.deadline = core.now + u64::from(core.cfg.init_limit_ticks);
        for (id, slot) in self.slots.iter_mut() {
            core.send(*id, PeerMessage::NewEpoch { epoch: self.epoch }, out);
            slot.stage = Stage::EpochSent;
        }
        self.try_sync_quorum(core, out)
    }

    fn try_sync_quorum(&mut self, core: &mut Core, out: &mut Vec<Output>) -> Next {
        let acked = self
            .slots
            .values()
            .filter(|s| s.stage >= Stage::EpochAcked)
            .count();
        if self.phase != Phase::AwaitEpochAcks || acked + 1 < core.cfg.quorum() {
            return Next::Stay;
        }
        self.phase = Phase::Syncing;
        // Each step of establishment gets its own time limit.
        self.deadline = core.now + u64::from(core.cfg.init_limit_ticks);
        self.initial_last = core.history.last();
        tracing::debug!(node = %core.cfg.id, epoch = self.epoch.0, "epoch agreed, syncing followers");
        let ready: Vec<NodeId> = self
            .slots
            .iter()
            .filter(|(_, s)| s.stage == Stage::EpochAcked)
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            self.send_sync(core, id, out);
        }
        core.history.request_sync(out);
        self.try_adopt(core, out)
    }

    /// Our own NEWLEADER step: adopt the epoch once our history is durable.
    fn try_adopt(&mut self, core: &mut Core, out: &mut Vec<Output>) -> Next {
        if self.phase != Phase::Syncing || self.self_adopted {
            return Next::Stay;
        }
        if core.history.durable() < self.initial_last && core.cfg.fault() != Fault::AckBeforeFsync {
            return Next::Stay;
        }
        let epochs = Epochs {
            accepted: self.epoch,
            current: self.epoch,
        };
        core.set_epochs(epochs, out);
        self.self_adopted = true;
        self.try_establish(core, out)
    }

    fn try_establish(&mut self, core: &mut Core, out: &mut Vec<Output>) -> Next {
        if self.phase != Phase::Syncing
            || !self.self_adopted
            || self.newleader_acks.len() + 1 < core.cfg.quorum()
        {
            return Next::Stay;
        }
        self.phase = Phase::Broadcast;
        self.next_ping = core.now;
        // ZAB: the new leader's whole initial history is committed once a quorum adopted it.
        if core.commit(self.initial_last, out).is_err() {
            return Next::Look;
        }
        let committed = core.history.committed();
        for (id, slot) in &self.slots {
            if slot.stage == Stage::Synced {
                core.send(
                    *id,
                    PeerMessage::UpToDate {
                        epoch: self.epoch,
                        committed,
                    },
                    out,
                );
            }
        }
        tracing::debug!(node = %core.cfg.id, epoch = self.epoch.0, %committed, "leader established");
        Next::Stay
    }

    fn send_sync(&mut self, core: &mut Core, id: NodeId, out: &mut Vec<Output>) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let Some((f_last, f_committed, ends)) = &slot.summary else {
            return;
        };
        let (plan, entries) = sync_plan::plan(&core.history, *f_last, *f_committed, ends);
        let committed = core.history.committed();
        slot.synced_to = core.history.last();
        core.send(
            id,
            PeerMessage::Sync {
                epoch: self.epoch,
                plan,
                entries,
                committed,
            },
            out,
        );
        core.send(
            id,
            PeerMessage::NewLeader {
                epoch: self.epoch,
                last_zxid: core.history.last(),
            },
            out,
        );
        slot.stage = Stage::AwaitNewLeaderAck;
    }

    pub fn on_peer_down(&mut self, peer: NodeId) -> Next {
        // Its promises stay valid (they are durable); it rejoins with FOLLOWERINFO.
        self.slots.remove(&peer);
        Next::Stay
    }

    pub fn on_message(
        &mut self,
        core: &mut Core,
        from: NodeId,
        msg: PeerMessage,
        out: &mut Vec<Output>,
    ) -> Next {
        if let Some(slot) = self.slots.get_mut(&from) {
            slot.last_heard = core.now;
        }
        // A follower's client request while we do not serve: tell it, so the client retries.
        if let PeerMessage::Forward {
            epoch,
            client,
            request,
            ..
        }
        | PeerMessage::SyncRequest {
            epoch,
            client,
            request,
        } = &msg
            && (*epoch != self.epoch || self.phase != Phase::Broadcast)
        {
            let rejected = PeerMessage::Rejected {
                epoch: *epoch,
                client: *client,
                request: *request,
            };
            core.send(from, rejected, out);
            return Next::Stay;
        }
        match msg {
            PeerMessage::FollowerInfo { accepted_epoch } => {
                let slot = Slot {
                    stage: Stage::Info,
                    acked: Zxid::ZERO,
                    synced_to: Zxid::ZERO,
                    last_heard: core.now,
                    pong_round: 0,
                    summary: None,
                };
                self.slots.insert(from, slot);
                if self.phase == Phase::Discovery {
                    self.infos.insert(from, accepted_epoch);
                    return self.try_choose_epoch(core, out);
                }
                if accepted_epoch > self.epoch {
                    // It promised a newer epoch (to a leader that never got established) and
                    // will refuse ours forever. Start over: the next discovery picks an epoch
                    // above its promise, so it can join. Safe, since elections always are.
                    tracing::debug!(node = %core.cfg.id, follower = %from, "follower promised a newer epoch");
                    return Next::Look;
                }
                core.send(from, PeerMessage::NewEpoch { epoch: self.epoch }, out);
                if let Some(slot) = self.slots.get_mut(&from) {
                    slot.stage = Stage::EpochSent;
                }
                Next::Stay
            }
            PeerMessage::AckEpoch {
                epoch,
                current_epoch,
                last_zxid,
                committed,
                epoch_ends,
            } => {
                let Some(slot) = self.slots.get_mut(&from) else {
                    return Next::Stay;
                };
                if epoch != self.epoch || slot.stage != Stage::EpochSent {
                    return Next::Stay;
                }
                let ours = (core.epochs.current, core.history.last());
                if self.phase != Phase::Broadcast && (current_epoch, last_zxid) > ours {
                    // A quorum member knows more than we do: we must not lead.
                    tracing::debug!(node = %core.cfg.id, follower = %from, "follower ahead of leader");
                    return Next::Look;
                }
                slot.stage = Stage::EpochAcked;
                slot.summary = Some((last_zxid, committed, epoch_ends));
                match self.phase {
                    Phase::AwaitEpochAcks => self.try_sync_quorum(core, out),
                    Phase::Syncing | Phase::Broadcast => {
                        self.send_sync(core, from, out);
                        Next::Stay
                    }
                    Phase::Discovery => Next::Stay,
                }
            }
            PeerMessage::AckNewLeader { epoch } => {
                let Some(slot) = self.slots.get_mut(&from) else {
                    return Next::Stay;
                };
                if epoch != self.epoch || slot.stage != Stage::AwaitNewLeaderAck {
                    return Next::Stay;
                }
                slot.stage = Stage::Synced;
                match self.phase {
                    Phase::Syncing => {
                        self.newleader_acks.insert(from);
                        self.try_establish(core, out)
                    }
                    Phase::Broadcast => {
                        let committed = core.history.committed();
                        core.send(
                            from,
                            PeerMessage::UpToDate {
                                epoch: self.epoch,
                                committed,
                            },
                            out,
                        );
                        Next::Stay
                    }
                    _ => Next::Stay,
                }
            }
            PeerMessage::Ack { epoch, zxid } => {
                let Some(slot) = self.slots.get_mut(&from) else {
                    return Next::Stay;
                };
                if epoch != self.epoch || slot.stage != Stage::Synced {
                    return Next::Stay;
                }
                slot.acked = slot.acked.max(zxid);
                self.try_commit(core, out)
            }
            PeerMessage::Pong { epoch, round } => {
                if let Some(slot) = self.slots.get_mut(&from)
                    && epoch == self.epoch
                    && slot.stage == Stage::Synced
                {
                    slot.pong_round = slot.pong_round.max(round);
                    self.answer_syncs(core, out);
                }
                Next::Stay
            }
            PeerMessage::Forward {
                client,
                request,
                txn,
                ..
            } => self.propose(
                core,
                txn,
                Some(Origin {
                    node: from,
                    client,
                    request,
                }),
                out,
            ),
            PeerMessage::Touch { epoch, sessions } => {
                if epoch == self.epoch {
                    for s in sessions {
                        self.session_seen.insert(s, core.now);
                    }
                }
                Next::Stay
            }
            PeerMessage::SyncRequest {
                client, request, ..
            } => {
                self.start_sync(core, Some(from), client, request, out);
                Next::Stay
            }
            // Messages for followers, or from an older leader's time: not ours to act on.
            _ => Next::Stay,
        }
    }

    /// Proposes `txn`; `origin` is the client to answer, `None` for the leader's own (an
    /// expiry), which under back-pressure is simply not proposed (the next tick retries).
    fn propose(
        &mut self,
        core: &mut Core,
        txn: Txn,
        origin: Option<Origin>,
        out: &mut Vec<Output>,
    ) -> Next {
        let last = core.history.last();
        let outstanding = proposals_after(self.epoch, last, core.history.committed());
        if outstanding >= core.cfg.max_outstanding_proposals {
            let Some(origin) = origin else {
                return Next::Stay;
            };
            if origin.node == core.cfg.id {
                core.reply(
                    origin.client,
                    origin.request,
                    Err(ClientError::NotReady),
                    out,
                );
            } else {
                let msg = PeerMessage::Rejected {
                    epoch: self.epoch,
                    client: origin.client,
                    request: origin.request,
                };
                core.send(origin.node, msg, out);
            }
            return Next::Stay;
        }
        let zxid = if last.epoch == self.epoch.0 {
            match last.next_in_epoch() {
                Some(z) => z,
                // Counter exhausted: a new epoch restarts it.
                None => return Next::Look,
            }
        } else {
            Zxid::new(self.epoch.0, 1)
        };
        let entry = LogEntry { zxid, txn };
        if core.history.append(entry.clone(), out).is_err() {
            return Next::Look;
        }
        if core.cfg.fault() == Fault::AckBeforeFsync {
            core.history.pretend_durable();
        }
        if let Some(o) = origin
            && o.node == core.cfg.id
        {
            core.awaiting_commit.insert(zxid, (o.client, o.request));
        }
        let ids: Vec<NodeId> = self.in_flight().collect();
        for id in ids {
            let msg = PeerMessage::Propose {
                epoch: self.epoch,
                entry: entry.clone(),
                origin,
            };
            core.send(id, msg, out);
        }
        self.try_commit(core, out)
    }

    /// Takes the sessions heard of since the last tick, arms every session this leadership has
    /// not seen yet with a fresh timeout, and proposes the expiry of each one silent past its
    /// timeout. Expiry goes through the quorum like any write, so every node deletes the
    /// session's ephemeral nodes at the same zxid.
    fn expire_sessions(&mut self, core: &mut Core, out: &mut Vec<Output>) -> Next {
        let now = core.now;
        for s in std::mem::take(&mut core.touched) {
            self.session_seen.insert(s, now);
        }
        let tree = core.history.tree();
        self.session_seen.retain(|s, _| tree.session(*s).is_some());
        self.expiring.retain(|s| tree.session(*s).is_some());
        let mut due = Vec::new();
        for (session, info) in tree.sessions() {
            let seen = *self.session_seen.entry(session).or_insert(now);
            if now.saturating_sub(seen) > u64::from(info.timeout_ticks)
                && !self.expiring.contains(&session)
            {
                due.push(session);
            }
        }
        if core.cfg.fault() == Fault::NoSessionExpiry {
            return Next::Stay;
        }
        for session in due {
            let before = core.history.last();
            tracing::debug!(node = %core.cfg.id, session = session.0, "session expired");
            let txn = Txn::CloseSession {
                session,
                expired: true,
            };
            if self.propose(core, txn, None, out) == Next::Look {
                return Next::Look;
            }
            if core.history.last() != before {
                self.expiring.insert(session);
            }
        }
        Next::Stay
    }

    fn try_commit(&mut self, core: &mut Core, out: &mut Vec<Output>) -> Next {
        if self.phase != Phase::Broadcast {
            return Next::Stay;
        }
        let mut points: Vec<Zxid> = self
            .slots
            .values()
            .filter(|s| s.stage == Stage::Synced)
            .map(|s| s.acked)
            .collect();
        points.push(core.history.durable());
        points.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_point = if core.cfg.fault() == Fault::CommitWithoutQuorum {
            Some(core.history.durable())
        } else {
            points.get(core.cfg.quorum() - 1).copied()
        };
        let Some(point) = quorum_point else {
            return Next::Stay;
        };
        // Only this epoch's proposals are committed by counting (older ones were committed
        // when the epoch was established).
        if point <= core.history.committed() || point.epoch != self.epoch.0 {
            return Next::Stay;
        }
        if core.commit(point, out).is_err() {
            return Next::Look;
        }
        let ids: Vec<NodeId> = self.in_flight().collect();
        for id in ids {
            core.send(
                id,
                PeerMessage::Commit {
                    epoch: self.epoch,
                    zxid: point,
                },
                out,
            );
        }
        Next::Stay
    }

    pub fn on_synced(&mut self, core: &mut Core, out: &mut Vec<Output>) -> Next {
        match self.try_adopt(core, out) {
            Next::Stay => self.try_commit(core, out),
            look => look,
        }
    }

    pub fn on_client(
        &mut self,
        core: &mut Core,
        client: ClientId,
        request: RequestId,
        op: ClientOp,
        out: &mut Vec<Output>,
    ) -> Next {
        // The node answers NotReady itself unless we serve (broadcast phase).
        match op {
            ClientOp::Write(txn) => self.propose(
                core,
                txn,
                Some(Origin {
                    node: core.cfg.id,
                    client,
                    request,
                }),
                out,
            ),
            ClientOp::Sync => {
                core.syncs_sent.insert((client, request));
                self.start_sync(core, None, client, request, out);
                Next::Stay
            }
            _ => {
                core.reply(client, request, Err(ClientError::NotReady), out);
                Next::Stay
            }
        }
    }

    fn ping(&mut self, core: &mut Core, out: &mut Vec<Output>) {
        self.round += 1;
        let ids: Vec<NodeId> = self.in_flight().collect();
        for id in ids {
            core.send(
                id,
                PeerMessage::Ping {
                    epoch: self.epoch,
                    round: self.round,
                },
                out,
            );
        }
    }

    fn start_sync(
        &mut self,
        core: &mut Core,
        via: Option<NodeId>,
        client: ClientId,
        request: RequestId,
        out: &mut Vec<Output>,
    ) {
        self.ping(core, out);
        let through = core.history.last();
        self.pending_syncs.push(PendingSync {
            round: self.round,
            through,
            via,
            client,
            request,
        });
        self.answer_syncs(core, out);
    }

    /// Answers the syncs whose ping round a quorum (us included) has answered.
    fn answer_syncs(&mut self, core: &mut Core, out: &mut Vec<Output>) {
        let mut rounds: Vec<u64> = self
            .slots
            .values()
            .filter(|s| s.stage == Stage::Synced)
            .map(|s| s.pong_round)
            .collect();
        rounds.push(u64::MAX);
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&confirmed) = rounds.get(core.cfg.quorum() - 1) else {
            return;
        };
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .pending_syncs
            .drain(..)
            .partition(|p| p.round <= confirmed);
        self.pending_syncs = waiting;
        for p in done {
            match p.via {
                Some(node) => {
                    let msg = PeerMessage::SyncReply {
                        epoch: self.epoch,
                        client: p.client,
                        request: p.request,
                        through: p.through,
                    };
                    core.send(node, msg, out);
                }
                None => {
                    if core.syncs_sent.remove(&(p.client, p.request)) {
                        core.syncs_waiting.push((p.through, p.client, p.request));
                    }
                }
            }
        }
        core.answer_syncs(out);
    }

    pub fn tick(&mut self, core: &mut Core, out: &mut Vec<Output>) -> Next {
        if self.phase != Phase::Broadcast {
            return if core.now >= self.deadline {
                Next::Look
            } else {
                Next::Stay
            };
        }
        if core.now >= self.next_ping {
            self.next_ping = core.now + u64::from(core.cfg.ping_interval_ticks);
            self.ping(core, out);
        }
        if self.expire_sessions(core, out) == Next::Look {
            return Next::Look;
        }
        let limit = u64::from(core.cfg.sync_limit_ticks);
        let alive = self
            .slots
            .values()
            .filter(|s| s.stage == Stage::Synced && core.now.saturating_sub(s.last_heard) <= limit)
            .count();
        if alive + 1 < core.cfg.quorum() {
            tracing::debug!(node = %core.cfg.id, "lost the quorum, stepping down");
            return Next::Look;
        }
        Next::Stay
    }
}

#[cfg(test)]
mod tests {
    use crate::election::{Notification, PeerState, Vote};
    use crate::txn::{Txn, WriteOp};
    use crate::types::{ClientId, Epoch, NodeId, RequestId, Zxid};
    use crate::zab::testkit::{fresh_node, peer, sent};
    use crate::zab::{ClientOp, ClientRequest, Fault, Input, Node, PeerMessage, RoleName};

    /// Node 1 of {1, 2, 3} elected and established in epoch 1 with node 2.
    fn established_leader() -> Node {
        let mut n = fresh_node(1, &[1, 2, 3], Fault::None);
        n.start(&mut vec![]);
        let vote = Vote {
            leader: NodeId(1),
            zxid: Zxid::ZERO,
            epoch: Epoch(0),
        };
        for from in [2, 3] {
            peer(
                &mut n,
                from,
                PeerMessage::Vote(Notification {
                    vote,
                    round: 10,
                    state: PeerState::Looking,
                }),
            );
        }
        assert_eq!(n.role(), RoleName::Leading);
        let out = peer(
            &mut n,
            2,
            PeerMessage::FollowerInfo {
                accepted_epoch: Epoch(0),
            },
        );
        assert!(matches!(
            sent(&out, Some(2))[..],
            [PeerMessage::NewEpoch { epoch: Epoch(1) }]
        ));
        let ack = PeerMessage::AckEpoch {
            epoch: Epoch(1),
            current_epoch: Epoch(0),
            last_zxid: Zxid::ZERO,
            committed: Zxid::ZERO,
            epoch_ends: vec![],
        };
        let out = peer(&mut n, 2, ack);
        assert!(matches!(
            sent(&out, Some(2))[..],
            [PeerMessage::Sync { .. }, PeerMessage::NewLeader { .. }]
        ));
        peer(&mut n, 2, PeerMessage::AckNewLeader { epoch: Epoch(1) });
        assert!(n.is_serving());
        n
    }

    #[test]
    fn the_leader_reports_each_followers_position_and_lag() {
        let mut n = established_leader();
        let follower = |n: &Node, id: u64| {
            n.followers()
                .into_iter()
                .find(|f| f.id == NodeId(id))
                .expect("a follower slot")
        };
        // Synced with nothing to hold: no lag.
        let f = follower(&n, 2);
        assert!(f.synced);
        assert_eq!((f.acked, f.lag), (Zxid::ZERO, Some(0)));

        for (request, path) in [(1, "/a"), (2, "/b")] {
            let write = ClientOp::Write(Txn::Write(WriteOp::Create {
                path: path.into(),
                data: vec![],
                sequential: false,
                ephemeral_owner: None,
            }));
            let req = ClientRequest {
                client: ClientId(7),
                request: RequestId(request),
                op: write,
            };
            n.step(Input::Client(req), &mut vec![]);
        }
        assert_eq!(follower(&n, 2).lag, Some(2));
        peer(
            &mut n,
            2,
            PeerMessage::Ack {
                epoch: Epoch(1),
                zxid: Zxid::new(1, 1),
            },
        );
        let f = follower(&n, 2);
        assert_eq!((f.acked, f.lag), (Zxid::new(1, 1), Some(1)));

        // A follower still in discovery has no position yet.
        peer(
            &mut n,
            3,
            PeerMessage::FollowerInfo {
                accepted_epoch: Epoch(0),
            },
        );
        let f = follower(&n, 3);
        assert!(!f.synced);
        assert_eq!(f.lag, None);

        for _ in 0..3 {
            n.step(Input::Tick, &mut vec![]);
        }
        assert_eq!(follower(&n, 2).silent_ticks, 3);
        // Only a leader has followers.
        assert!(
            fresh_node(2, &[1, 2, 3], Fault::None)
                .followers()
                .is_empty()
        );
    }

    #[test]
    fn a_follower_that_promised_a_newer_epoch_makes_the_leader_start_over() {
        let mut n = established_leader();
        peer(
            &mut n,
            3,
            PeerMessage::FollowerInfo {
                accepted_epoch: Epoch(5),
            },
        );
        assert_eq!(n.role(), RoleName::Looking);
    }

    #[test]
    fn a_sync_is_answered_only_after_a_quorum_answers_a_later_ping() {
        let mut n = established_leader();
        let request = PeerMessage::SyncRequest {
            epoch: Epoch(1),
            client: ClientId(9),
            request: RequestId(4),
        };
        let out = peer(&mut n, 2, request);
        let round = match sent(&out, Some(2))[..] {
            [PeerMessage::Ping { round, .. }] => *round,
            ref other => panic!("expected a ping, got {other:?}"),
        };
        // An answer to an older ping proves nothing about now.
        let out = peer(
            &mut n,
            2,
            PeerMessage::Pong {
                epoch: Epoch(1),
                round: round - 1,
            },
        );
        assert!(sent(&out, Some(2)).is_empty());
        let out = peer(
            &mut n,
            2,
            PeerMessage::Pong {
                epoch: Epoch(1),
                round,
            },
        );
        assert!(matches!(
            sent(&out, Some(2))[..],
            [PeerMessage::SyncReply { .. }]
        ));
    }
}
