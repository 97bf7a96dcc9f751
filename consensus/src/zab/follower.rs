//! The follower: joins a leader (FOLLOWERINFO), promises its epoch (ACKEPOCH), adopts its
//! history (SYNC, then NEWLEADER once the history is durable), then logs proposals and
//! acknowledges them only once they are durable, applying commits in order.
//!
//! Owns the follower's phases. Never acknowledges anything that is not on disk, never ACKs a
//! proposal before it adopted the leader's epoch, and leaves the leader (back to election)
//! on silence, on a broken connection, or on any message that contradicts its history.

use super::node::{Core, Next};
use super::{ClientError, ClientOp, Fault, Output, PeerMessage, SyncPlan};
use crate::election::Vote;
use crate::meta::Epochs;
use crate::types::{ClientId, Epoch, NodeId, RequestId, Zxid};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// FOLLOWERINFO sent.
    Connecting,
    /// ACKEPOCH sent; receiving the SYNC.
    Syncing,
    /// NEWLEADER received; waiting for the history to be durable before adopting the epoch.
    AwaitDurable { target: Zxid },
    /// Adopted the epoch, waiting for UPTODATE.
    Synced,
    /// Serving.
    Broadcast,
}

#[derive(Debug)]
pub(crate) struct Follower {
    vote: Vote,
    leader: NodeId,
    epoch: Epoch,
    phase: Phase,
    got_sync: bool,
    last_heard: u64,
    acked: Zxid,
}

impl Follower {
    pub fn start(core: &mut Core, vote: Vote, out: &mut Vec<Output>) -> Follower {
        core.send(
            vote.leader,
            PeerMessage::FollowerInfo {
                accepted_epoch: core.epochs.accepted,
            },
            out,
        );
        Follower {
            vote,
            leader: vote.leader,
            epoch: Epoch(0),
            phase: Phase::Connecting,
            got_sync: false,
            last_heard: core.now,
            acked: Zxid::ZERO,
        }
    }

    pub fn vote(&self) -> Vote {
        self.vote
    }

    pub fn is_serving(&self) -> bool {
        self.phase == Phase::Broadcast
    }

    pub fn on_peer_down(&mut self, peer: NodeId) -> Next {
        if peer == self.leader {
            Next::Look
        } else {
            Next::Stay
        }
    }

    pub fn tick(&mut self, core: &mut Core, out: &mut Vec<Output>) -> Next {
        let limit = if self.phase == Phase::Broadcast {
            core.cfg.sync_limit_ticks
        } else {
            core.cfg.init_limit_ticks
        };
        let silent = core.now.saturating_sub(self.last_heard);
        if silent > u64::from(limit) {
            tracing::debug!(node = %core.cfg.id, leader = %self.leader, silent, now = core.now, "leader silent, looking");
            return Next::Look;
        }
        // The leader may not have been leading yet when FOLLOWERINFO reached it (it was still
        // deciding): say it again until it answers, as ZooKeeper's learner retries connecting.
        let resend = u64::from(core.cfg.ping_interval_ticks.max(1));
        if self.phase == Phase::Connecting && silent > 0 && silent.is_multiple_of(resend) {
            let info = PeerMessage::FollowerInfo {
                accepted_epoch: core.epochs.accepted,
            };
            core.send(self.leader, info, out);
        }
        Next::Stay
    }

    fn adopted(&self, core: &Core) -> bool {
        core.epochs.current == self.epoch && matches!(self.phase, Phase::Synced | Phase::Broadcast)
    }

    /// Adopts the epoch once the synced history is durable, then acknowledges what is durable.
    fn progress(&mut self, core: &mut Core, out: &mut Vec<Output>) {
        let ack_early = core.cfg.fault() == Fault::AckBeforeFsync;
        if let Phase::AwaitDurable { target } = self.phase
            && (core.history.durable() >= target || ack_early)
        {
            let epochs = Epochs {
                accepted: core.epochs.accepted,
                current: self.epoch,
            };
            core.set_epochs(epochs, out);
            core.send(
                self.leader,
                PeerMessage::AckNewLeader { epoch: self.epoch },
                out,
            );
            self.phase = Phase::Synced;
        }
        if !self.adopted(core) {
            return;
        }
        let durable = if ack_early {
            core.history.last()
        } else {
            core.history.durable()
        };
        if durable > self.acked && durable.epoch == self.epoch.0 {
            self.acked = durable;
            core.send(
                self.leader,
                PeerMessage::Ack {
                    epoch: self.epoch,
                    zxid: durable,
                },
                out,
            );
        }
    }

    pub fn on_synced(&mut self, core: &mut Core, out: &mut Vec<Output>) -> Next {
        self.progress(core, out);
        Next::Stay
    }

    pub fn on_message(
        &mut self,
        core: &mut Core,
        from: NodeId,
        msg: PeerMessage,
        out: &mut Vec<Output>,
    ) -> Next {
        if from != self.leader {
            return Next::Stay;
        }
        if matches!(msg, PeerMessage::FollowerInfo { .. }) {
            // The node we follow is following someone too (election views crossed): it
            // will never lead this round, so look again instead of waiting for a timeout.
            return Next::Look;
        }
        if !msg.from_leader() {
            // Only a leader's messages prove that it is alive and leading.
            return Next::Stay;
        }
        self.last_heard = core.now;
        match msg {
            PeerMessage::NewEpoch { epoch } => {
                if self.phase != Phase::Connecting {
                    return Next::Stay;
                }
                if epoch < core.epochs.accepted {
                    // We promised a newer leader already.
                    return Next::Look;
                }
                if epoch > core.epochs.accepted {
                    let epochs = Epochs {
                        accepted: epoch,
                        current: core.epochs.current,
                    };
                    core.set_epochs(epochs, out);
                }
                self.epoch = epoch;
                self.phase = Phase::Syncing;
                let h = &core.history;
                let msg = PeerMessage::AckEpoch {
                    epoch,
                    current_epoch: core.epochs.current,
                    last_zxid: h.last(),
                    committed: h.committed(),
                    epoch_ends: h.epoch_ends(),
                };
                core.send(self.leader, msg, out);
                Next::Stay
            }
            PeerMessage::Sync {
                epoch,
                plan,
                entries,
                committed,
            } => {
                if epoch != self.epoch || self.phase != Phase::Syncing || self.got_sync {
                    return Next::Stay;
                }
                let applied = match plan {
                    SyncPlan::Diff => Ok(()),
                    SyncPlan::Trunc { after } => core.history.truncate_after(after, out),
                    SyncPlan::Snap(tree) => core.install(tree, out),
                };
                if let Err(e) = applied {
                    tracing::warn!(node = %core.cfg.id, error = %e, "leader's sync contradicts our history");
                    return Next::Look;
                }
                for entry in entries {
                    if core.history.append(entry, out).is_err() {
                        return Next::Look;
                    }
                }
                self.got_sync = true;
                let through = committed.min(core.history.last());
                if core.commit(through, out).is_err() {
                    return Next::Look;
                }
                Next::Stay
            }
            PeerMessage::NewLeader { epoch, last_zxid } => {
                if epoch != self.epoch || self.phase != Phase::Syncing || !self.got_sync {
                    return Next::Stay;
                }
                if core.history.last() != last_zxid {
                    return Next::Look;
                }
                self.phase = Phase::AwaitDurable { target: last_zxid };
                core.history.request_sync(out);
                self.progress(core, out);
                Next::Stay
            }
            PeerMessage::UpToDate { epoch, committed } => {
                if epoch != self.epoch || self.phase != Phase::Synced {
                    return Next::Stay;
                }
                if core.commit(committed, out).is_err() {
                    return Next::Look;
                }
                self.phase = Phase::Broadcast;
                Next::Stay
            }
            PeerMessage::Propose {
                epoch,
                entry,
                origin,
            } => {
                if epoch != self.epoch || !self.got_sync {
                    return Next::Stay;
                }
                let zxid = entry.zxid;
                if core.history.append(entry, out).is_err() {
                    return Next::Look;
                }
                if let Some(o) = origin
                    && o.node == core.cfg.id
                    && core.forwarded.remove(&(o.client, o.request))
                {
                    core.awaiting_commit.insert(zxid, (o.client, o.request));
                }
                if core.cfg.fault() == Fault::AckBeforeFsync {
                    core.history.pretend_durable();
                }
                self.progress(core, out);
                Next::Stay
            }
            PeerMessage::Commit { epoch, zxid } => {
                if epoch != self.epoch || !self.got_sync {
                    return Next::Stay;
                }
                if core.commit(zxid, out).is_err() {
                    Next::Look
                } else {
                    Next::Stay
                }
            }
            PeerMessage::Ping { epoch, round } => {
                core.send(self.leader, PeerMessage::Pong { epoch, round }, out);
                if !core.touched.is_empty() && core.cfg.fault() != Fault::DropSessionTouches {
                    let sessions = std::mem::take(&mut core.touched).into_iter().collect();
                    core.send(self.leader, PeerMessage::Touch { epoch, sessions }, out);
                }
                Next::Stay
            }
            PeerMessage::SyncReply {
                epoch,
                client,
                request,
                through,
            } => {
                if epoch == self.epoch && core.syncs_sent.remove(&(client, request)) {
                    core.syncs_waiting.push((through, client, request));
                    core.answer_syncs(out);
                }
                Next::Stay
            }
            PeerMessage::Rejected {
                epoch,
                client,
                request,
            } => {
                let known = core.forwarded.remove(&(client, request))
                    | core.syncs_sent.remove(&(client, request));
                if epoch == self.epoch && known {
                    core.reply(client, request, Err(ClientError::NotReady), out);
                }
                Next::Stay
            }
            _ => Next::Stay,
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
        let epoch = self.epoch;
        match op {
            ClientOp::Write(txn) => {
                core.forwarded.insert((client, request));
                core.send(
                    self.leader,
                    PeerMessage::Forward {
                        epoch,
                        client,
                        request,
                        txn,
                    },
                    out,
                );
            }
            ClientOp::Sync => {
                core.syncs_sent.insert((client, request));
                core.send(
                    self.leader,
                    PeerMessage::SyncRequest {
                        epoch,
                        client,
                        request,
                    },
                    out,
                );
            }
            _ => core.reply(client, request, Err(ClientError::NotReady), out),
        }
        Next::Stay
    }
}

#[cfg(test)]
mod tests {
    use crate::election::{Notification, PeerState, Vote};
    use crate::txn::{LogEntry, Txn};
    use crate::types::{Epoch, NodeId, Zxid};
    use crate::zab::testkit::{fresh_node, peer, sent};
    use crate::zab::{DiskOp, Fault, Input, Node, Output, PeerMessage, SyncPlan};

    /// Node 2 of {1, 2, 3} joins leader 1 in epoch 1 and reaches the broadcast phase.
    fn serving_follower(fault: Fault) -> Node {
        let mut n = fresh_node(2, &[1, 2, 3], fault);
        n.start(&mut vec![]);
        let vote = Vote {
            leader: NodeId(1),
            zxid: Zxid::ZERO,
            epoch: Epoch(0),
        };
        peer(
            &mut n,
            3,
            PeerMessage::Vote(Notification {
                vote,
                round: 1,
                state: PeerState::Following,
            }),
        );
        let out = peer(
            &mut n,
            1,
            PeerMessage::Vote(Notification {
                vote,
                round: 1,
                state: PeerState::Leading,
            }),
        );
        assert!(matches!(
            sent(&out, None)[..],
            [PeerMessage::FollowerInfo { .. }]
        ));
        let out = peer(&mut n, 1, PeerMessage::NewEpoch { epoch: Epoch(1) });
        assert!(
            matches!(out[0], Output::Disk(DiskOp::SetEpochs(e)) if e.accepted == Epoch(1)),
            "promise is durable first"
        );
        assert!(matches!(
            sent(&out, None)[..],
            [PeerMessage::AckEpoch { .. }]
        ));
        let sync = PeerMessage::Sync {
            epoch: Epoch(1),
            plan: SyncPlan::Diff,
            entries: vec![],
            committed: Zxid::ZERO,
        };
        peer(&mut n, 1, sync);
        let out = peer(
            &mut n,
            1,
            PeerMessage::NewLeader {
                epoch: Epoch(1),
                last_zxid: Zxid::ZERO,
            },
        );
        assert!(matches!(
            sent(&out, None)[..],
            [PeerMessage::AckNewLeader { .. }]
        ));
        peer(
            &mut n,
            1,
            PeerMessage::UpToDate {
                epoch: Epoch(1),
                committed: Zxid::ZERO,
            },
        );
        assert!(n.is_serving());
        n
    }

    fn propose(n: &mut Node, counter: u32) -> Vec<Output> {
        let entry = LogEntry {
            zxid: Zxid::new(1, counter),
            txn: Txn::Noop,
        };
        peer(
            n,
            1,
            PeerMessage::Propose {
                epoch: Epoch(1),
                entry,
                origin: None,
            },
        )
    }

    #[test]
    fn acks_only_what_is_durable_with_group_commit() {
        let mut n = serving_follower(Fault::None);
        let out = propose(&mut n, 1);
        assert!(sent(&out, None).is_empty(), "no ACK before the fsync");
        let Some(Output::Disk(DiskOp::Sync {
            generation,
            through,
        })) = out.last().cloned()
        else {
            panic!("expected a sync request, got {out:?}");
        };
        // A second proposal while the sync runs waits for the next one (group commit).
        let out = propose(&mut n, 2);
        assert!(
            out.iter()
                .all(|o| !matches!(o, Output::Disk(DiskOp::Sync { .. }) | Output::Send { .. }))
        );
        let mut out = vec![];
        n.step(
            Input::Synced {
                generation,
                through,
            },
            &mut out,
        );
        assert!(
            matches!(sent(&out, None)[..], [PeerMessage::Ack { zxid, .. }] if *zxid == Zxid::new(1, 1))
        );
        assert!(out.iter().any(|o| matches!(o, Output::Disk(DiskOp::Sync { through, .. }) if *through == Zxid::new(1, 2))));
        // Commit applies in order.
        let out = peer(
            &mut n,
            1,
            PeerMessage::Commit {
                epoch: Epoch(1),
                zxid: Zxid::new(1, 2),
            },
        );
        assert_eq!(
            out.iter()
                .filter(|o| matches!(o, Output::Applied { .. }))
                .count(),
            2
        );
        assert_eq!(n.committed(), Zxid::new(1, 2));
    }

    #[test]
    fn the_broken_variant_acks_before_the_fsync() {
        let mut n = serving_follower(Fault::AckBeforeFsync);
        let out = propose(&mut n, 1);
        assert!(matches!(sent(&out, None)[..], [PeerMessage::Ack { .. }]));
    }

    #[test]
    fn proposals_from_another_epoch_or_node_are_ignored() {
        let mut n = serving_follower(Fault::None);
        let entry = LogEntry {
            zxid: Zxid::new(2, 1),
            txn: Txn::Noop,
        };
        assert!(
            peer(
                &mut n,
                1,
                PeerMessage::Propose {
                    epoch: Epoch(2),
                    entry: entry.clone(),
                    origin: None
                }
            )
            .is_empty()
        );
        assert!(
            peer(
                &mut n,
                3,
                PeerMessage::Propose {
                    epoch: Epoch(1),
                    entry,
                    origin: None
                }
            )
            .is_empty()
        );
        assert_eq!(n.last_zxid(), Zxid::ZERO);
    }
}
