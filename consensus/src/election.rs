//! Fast Leader Election (ZooKeeper's FLE): nodes exchange votes until a quorum agrees on the
//! candidate with the highest `(current epoch, last zxid, id)`.
//!
//! Owns the vote bookkeeping of one election round and the decision; pure, no timing of its
//! own (the node calls [`Election::tick`]). Never affects safety: a wrongly chosen leader is
//! refused by ZAB's discovery, so this module only has to converge, not to be right.

use std::collections::BTreeMap;

use crate::types::{Epoch, NodeId, Zxid};

/// A vote for `leader`, whose history ends at `zxid` and who adopted `epoch` last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Vote {
    pub leader: NodeId,
    pub zxid: Zxid,
    pub epoch: Epoch,
}

impl Vote {
    /// ZooKeeper's `totalOrderPredicate`: epoch, then zxid, then id.
    pub fn beats(&self, other: &Vote) -> bool {
        (self.epoch, self.zxid, self.leader) > (other.epoch, other.zxid, other.leader)
    }

    /// Two votes name the same outcome (a leader with the same history).
    fn same(&self, other: &Vote) -> bool {
        self.leader == other.leader && self.epoch == other.epoch && self.zxid == other.zxid
    }
}

/// What the sender of a notification is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PeerState {
    Looking,
    Following,
    Leading,
}

/// An election message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Notification {
    pub vote: Vote,
    /// The sender's election round (ZooKeeper's logical clock).
    pub round: u64,
    pub state: PeerState,
}

/// What the node must do after an election step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionAction {
    /// Send our current notification to every peer.
    Broadcast(Notification),
    /// Send our current notification to one peer (it is behind).
    SendTo(NodeId, Notification),
    /// The election is over: lead if `leader` is us, else follow it.
    Decided(Vote),
}

/// One node's view of the election in progress.
#[derive(Debug, Clone)]
pub struct Election {
    me: NodeId,
    quorum: usize,
    members: usize,
    round: u64,
    own: Vote,
    vote: Vote,
    received: BTreeMap<NodeId, Vote>,
    out_of_election: BTreeMap<NodeId, (Vote, PeerState)>,
    /// Ticks left before a quorum for our vote is final (waiting for a better vote).
    finalize_in: Option<u32>,
    finalize_wait_ticks: u32,
}

impl Election {
    /// Starts a new round voting for ourselves. `round` is the previous round (kept in memory).
    pub fn start(
        me: NodeId,
        members: usize,
        previous_round: u64,
        own: Vote,
        finalize_wait_ticks: u32,
    ) -> (Election, ElectionAction) {
        let mut e = Election {
            me,
            quorum: members / 2 + 1,
            members,
            round: previous_round + 1,
            own,
            vote: own,
            received: BTreeMap::new(),
            out_of_election: BTreeMap::new(),
            finalize_in: None,
            finalize_wait_ticks,
        };
        e.received.insert(me, own);
        // A group of one is its own quorum.
        let action = if e.quorum <= 1 {
            ElectionAction::Decided(own)
        } else {
            ElectionAction::Broadcast(e.notification())
        };
        (e, action)
    }

    pub fn round(&self) -> u64 {
        self.round
    }

    pub fn vote(&self) -> Vote {
        self.vote
    }

    pub fn notification(&self) -> Notification {
        Notification {
            vote: self.vote,
            round: self.round,
            state: PeerState::Looking,
        }
    }

    fn better_of_own(&self, v: Vote) -> Vote {
        if v.beats(&self.own) { v } else { self.own }
    }

    fn agreeing(&self, v: &Vote) -> usize {
        self.received.values().filter(|r| r.same(v)).count()
    }

    /// Handles a notification from `from`; returns what to send and maybe the decision.
    pub fn receive(&mut self, from: NodeId, n: Notification) -> Vec<ElectionAction> {
        let mut out = Vec::new();
        match n.state {
            PeerState::Looking => {
                if n.round > self.round {
                    self.round = n.round;
                    self.received.clear();
                    self.vote = self.better_of_own(n.vote);
                    self.received.insert(self.me, self.vote);
                    self.finalize_in = None;
                    out.push(ElectionAction::Broadcast(self.notification()));
                } else if n.round < self.round {
                    out.push(ElectionAction::SendTo(from, self.notification()));
                    return out;
                } else if n.vote.beats(&self.vote) {
                    self.vote = n.vote;
                    self.received.insert(self.me, self.vote);
                    self.finalize_in = None;
                    out.push(ElectionAction::Broadcast(self.notification()));
                }
                self.received.insert(from, n.vote);
                if self.agreeing(&self.vote) >= self.quorum {
                    if self.received.len() >= self.members && self.all_agree() {
                        // Everyone answered and agrees: no better vote can come.
                        out.push(ElectionAction::Decided(self.vote));
                    } else if self.finalize_in.is_none() {
                        self.finalize_in = Some(self.finalize_wait_ticks);
                    }
                }
            }
            PeerState::Following | PeerState::Leading => {
                // A group already formed: join it once a quorum of it confirms the leader and
                // the leader itself says it leads.
                self.out_of_election.insert(from, (n.vote, n.state));
                let v = n.vote;
                let confirming = self
                    .out_of_election
                    .values()
                    .filter(|(o, _)| o.leader == v.leader)
                    .count();
                // Only the leader's identity is compared: members of one group may report the
                // votes of different elections (a leader re-elected by a later round, a follower
                // that joined an earlier one), and a wrong guess only costs a timeout.
                let leader_says = matches!(
                    self.out_of_election.get(&v.leader),
                    Some((_, PeerState::Leading))
                );
                // We would follow, so we count ourselves in.
                if v.leader != self.me && leader_says && confirming + 1 >= self.quorum {
                    self.round = self.round.max(n.round);
                    out.push(ElectionAction::Decided(v));
                }
            }
        }
        out
    }

    fn all_agree(&self) -> bool {
        self.received.values().all(|r| r.same(&self.vote))
    }

    /// Advances the finalize wait; decides when it runs out with the quorum still there.
    pub fn tick(&mut self) -> Option<ElectionAction> {
        let left = self.finalize_in?;
        if left > 0 {
            self.finalize_in = Some(left - 1);
            return None;
        }
        self.finalize_in = None;
        (self.agreeing(&self.vote) >= self.quorum).then_some(ElectionAction::Decided(self.vote))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(id: u64, epoch: u32, z: (u32, u32)) -> Vote {
        Vote {
            leader: NodeId(id),
            zxid: Zxid::new(z.0, z.1),
            epoch: Epoch(epoch),
        }
    }

    fn looking(v: Vote, round: u64) -> Notification {
        Notification {
            vote: v,
            round,
            state: PeerState::Looking,
        }
    }

    #[test]
    fn order_is_epoch_zxid_id() {
        assert!(vote(1, 2, (1, 1)).beats(&vote(3, 1, (1, 9))));
        assert!(vote(1, 1, (1, 9)).beats(&vote(3, 1, (1, 8))));
        assert!(vote(3, 1, (1, 9)).beats(&vote(1, 1, (1, 9))));
    }

    #[test]
    fn three_nodes_converge_on_the_most_up_to_date() {
        let own = [vote(1, 1, (1, 5)), vote(2, 1, (1, 7)), vote(3, 1, (1, 6))];
        let mut nodes: Vec<Election> = own
            .iter()
            .map(|v| Election::start(v.leader, 3, 0, *v, 0).0)
            .collect();
        let mut queue: Vec<(usize, usize, Notification)> = vec![];
        for (i, node) in nodes.iter().enumerate() {
            for j in (0..3).filter(|&j| j != i) {
                queue.push((i, j, node.notification()));
            }
        }
        let mut decided = [None; 3];
        while let Some((from, to, n)) = queue.pop() {
            for a in nodes[to].receive(NodeId(from as u64 + 1), n) {
                match a {
                    ElectionAction::Broadcast(n) => (0..3)
                        .filter(|&k| k != to)
                        .for_each(|k| queue.push((to, k, n))),
                    ElectionAction::SendTo(p, n) => queue.push((to, p.0 as usize - 1, n)),
                    ElectionAction::Decided(v) => decided[to] = Some(v.leader),
                }
            }
        }
        for (i, n) in nodes.iter_mut().enumerate() {
            if decided[i].is_none() {
                decided[i] = n.tick().and_then(|a| match a {
                    ElectionAction::Decided(v) => Some(v.leader),
                    _ => None,
                });
            }
        }
        assert_eq!(decided, [Some(NodeId(2)); 3]);
    }

    #[test]
    fn joins_an_established_group() {
        let (mut e, _) = Election::start(NodeId(3), 3, 0, vote(3, 1, (1, 1)), 2);
        let leader = vote(1, 2, (2, 4));
        let follow = Notification {
            vote: leader,
            round: 4,
            state: PeerState::Following,
        };
        assert!(e.receive(NodeId(2), follow).is_empty());
        let lead = Notification {
            vote: leader,
            round: 4,
            state: PeerState::Leading,
        };
        assert_eq!(
            e.receive(NodeId(1), lead),
            vec![ElectionAction::Decided(leader)]
        );
    }

    #[test]
    fn older_round_gets_our_notification_back() {
        let (mut e, _) = Election::start(NodeId(1), 3, 5, vote(1, 1, (1, 1)), 2);
        let acts = e.receive(NodeId(2), looking(vote(2, 1, (1, 1)), 2));
        assert_eq!(
            acts,
            vec![ElectionAction::SendTo(NodeId(2), e.notification())]
        );
    }
}
