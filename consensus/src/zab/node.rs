//! One member of the group: the state shared by all roles (`Core`) and the role it plays
//! (looking, following, leading), with the transitions between them and local client
//! handling (reads, sync bookkeeping, replies).
//!
//! Owns role changes and client bookkeeping; the protocol steps of each role live in
//! [`super::leader`] and [`super::follower`]. Never performs I/O (see [`super`] for the
//! output contract).

use std::collections::{BTreeMap, BTreeSet};

use super::follower::Follower;
use super::history::{History, HistoryError};
use super::leader::{FollowerProgress, Leader};
use super::{
    ClientError, ClientOp, ClientReply, ClientRequest, Config, DiskOp, Input, Output, PeerMessage,
    Response,
};
use crate::election::{Election, ElectionAction, Notification, PeerState, Vote};
use crate::meta::Epochs;
use crate::session::negotiate_timeout_ticks;
use crate::store::Recovered;
use crate::txn::{Txn, TxnResult, WriteOp};
use crate::types::{ClientId, Epoch, NodeId, RequestId, SessionId, Zxid};
use crate::watch::{WatchKind, WatchTable};

/// What a role step asks of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Stay,
    /// Leave the role and start an election.
    Look,
}

/// State every role uses.
#[derive(Debug)]
pub(crate) struct Core {
    pub cfg: Config,
    pub now: u64,
    pub epochs: Epochs,
    pub history: History,
    last_round: u64,
    /// Writes of this node's clients, proposed and waiting for their commit.
    pub awaiting_commit: BTreeMap<Zxid, (ClientId, RequestId)>,
    /// Writes forwarded to the leader, not yet seen proposed.
    pub forwarded: BTreeSet<(ClientId, RequestId)>,
    /// Syncs sent to the leader, not yet answered.
    pub syncs_sent: BTreeSet<(ClientId, RequestId)>,
    /// Syncs answered by the leader, waiting for the commit point to reach `through`.
    pub syncs_waiting: Vec<(Zxid, ClientId, RequestId)>,
    /// The session each of this node's client connections speaks for.
    pub client_sessions: BTreeMap<ClientId, SessionId>,
    /// Sessions heard from since the leader last learned of it (a follower reports them
    /// after its next pong; the leader takes them on its next tick).
    pub touched: BTreeSet<SessionId>,
    /// The watches of this node's client connections.
    pub watches: WatchTable,
}

impl Core {
    pub fn send(&self, to: NodeId, msg: PeerMessage, out: &mut Vec<Output>) {
        if to != self.cfg.id {
            out.push(Output::Send { to, msg });
        }
    }

    pub fn reply(
        &self,
        client: ClientId,
        request: RequestId,
        result: Result<Response, ClientError>,
        out: &mut Vec<Output>,
    ) {
        out.push(Output::Reply(ClientReply {
            client,
            request,
            result,
            zxid: self.history.committed(),
        }));
    }

    /// Replaces the tree by a leader's snapshot; every watch is checked again against the
    /// new tree from the old commit point, as a moved client's would be.
    pub fn install(
        &mut self,
        tree: std::sync::Arc<crate::tree::DataTree>,
        out: &mut Vec<Output>,
    ) -> Result<(), HistoryError> {
        let since = self.history.committed();
        self.history.install(tree, out)?;
        let mut by_client: BTreeMap<ClientId, Vec<(WatchKind, String)>> = BTreeMap::new();
        for (client, kind, path) in self.watches.all() {
            by_client.entry(client).or_default().push((kind, path));
        }
        for (client, watches) in by_client {
            self.watches.drop_client(client);
            // The same number of watches as before always fits.
            let events = self
                .watches
                .rewatch(client, since, &watches, self.history.tree())
                .unwrap_or_default();
            for event in events {
                out.push(Output::Event { client, event });
            }
        }
        Ok(())
    }

    pub fn set_epochs(&mut self, epochs: Epochs, out: &mut Vec<Output>) {
        self.epochs = epochs;
        out.push(Output::Disk(DiskOp::SetEpochs(epochs)));
    }

    /// Commits through `through`, answering this node's clients and the syncs it satisfies.
    pub fn commit(&mut self, through: Zxid, out: &mut Vec<Output>) -> Result<(), HistoryError> {
        let results = self.history.commit_through(
            through,
            self.cfg.snapshot_every_txns,
            self.cfg.retained_txns,
            out,
        )?;
        for (zxid, result, changes) in results {
            // Events first: a client must hear of a change before any reply that shows it.
            for (client, event) in self.watches.trigger(zxid, &changes) {
                out.push(Output::Event { client, event });
            }
            if let Some((client, request)) = self.awaiting_commit.remove(&zxid) {
                let result = match result {
                    Ok(TxnResult::SessionCreated {
                        session,
                        timeout_ticks,
                    }) => {
                        self.client_sessions.insert(client, session);
                        let password = self
                            .history
                            .tree()
                            .session(session)
                            .map_or(0, |s| s.password);
                        Ok(Response::Session {
                            session,
                            password,
                            timeout_ticks,
                        })
                    }
                    Ok(r @ TxnResult::SessionClosed { .. }) => {
                        self.client_sessions.remove(&client);
                        Ok(Response::Txn(r))
                    }
                    Ok(r) => Ok(Response::Txn(r)),
                    Err(e) => Err(ClientError::Txn(e)),
                };
                self.reply(client, request, result, out);
            }
        }
        self.answer_syncs(out);
        Ok(())
    }

    pub fn answer_syncs(&mut self, out: &mut Vec<Output>) {
        let committed = self.history.committed();
        let (done, waiting): (Vec<_>, Vec<_>) =
            self.syncs_waiting.drain(..).partition(|s| s.0 <= committed);
        self.syncs_waiting = waiting;
        for (_, client, request) in done {
            self.reply(
                client,
                request,
                Ok(Response::Synced { through: committed }),
                out,
            );
        }
    }

    /// Leaving a role: every client waiting on it learns that the outcome is unknown.
    fn fail_pending(&mut self, out: &mut Vec<Output>) {
        let mut waiting: Vec<(ClientId, RequestId)> =
            self.awaiting_commit.values().copied().collect();
        waiting.extend(self.forwarded.iter().copied());
        waiting.extend(self.syncs_sent.iter().copied());
        waiting.extend(self.syncs_waiting.iter().map(|s| (s.1, s.2)));
        self.awaiting_commit.clear();
        self.forwarded.clear();
        self.syncs_sent.clear();
        self.syncs_waiting.clear();
        for (client, request) in waiting {
            self.reply(client, request, Err(ClientError::ConnectionLoss), out);
        }
    }

    pub fn own_vote(&self) -> Vote {
        Vote {
            leader: self.cfg.id,
            zxid: self.history.last(),
            epoch: self.epochs.current,
        }
    }

    fn broadcast(&self, msg: PeerMessage, out: &mut Vec<Output>) {
        for &m in &self.cfg.members {
            self.send(m, msg.clone(), out);
        }
    }
}

#[derive(Debug)]
struct Looking {
    election: Election,
    resend_in: u32,
}

#[derive(Debug)]
enum Role {
    Looking(Looking),
    Following(Follower),
    Leading(Leader),
}

/// Which role a node plays, for observers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum RoleName {
    Looking,
    Following,
    Leading,
}

/// A member of the group. Drive it with [`Node::step`].
#[derive(Debug)]
pub struct Node {
    core: Core,
    role: Role,
}

impl Node {
    /// A node recovered from its store; it starts looking. Call [`Node::start`] next.
    pub fn new(cfg: Config, recovered: Recovered) -> Node {
        let epochs = recovered.epochs;
        let history = History::recover(recovered);
        let core = Core {
            cfg,
            now: 0,
            epochs,
            history,
            last_round: 0,
            awaiting_commit: BTreeMap::new(),
            forwarded: BTreeSet::new(),
            syncs_sent: BTreeSet::new(),
            syncs_waiting: Vec::new(),
            client_sessions: BTreeMap::new(),
            touched: BTreeSet::new(),
            watches: WatchTable::default(),
        };
        let me = core.cfg.id;
        let members = core.cfg.members.len();
        let (election, _) = Election::start(
            me,
            members,
            0,
            core.own_vote(),
            core.cfg.election_finalize_ticks,
        );
        Node {
            core,
            role: Role::Looking(Looking {
                election,
                resend_in: 0,
            }),
        }
    }

    /// Starts the first election.
    pub fn start(&mut self, out: &mut Vec<Output>) {
        self.look(out);
    }

    pub fn id(&self) -> NodeId {
        self.core.cfg.id
    }

    pub fn role(&self) -> RoleName {
        match self.role {
            Role::Looking(_) => RoleName::Looking,
            Role::Following(_) => RoleName::Following,
            Role::Leading(_) => RoleName::Leading,
        }
    }

    /// The epoch this node leads, once established (for the one-leader-per-epoch check).
    pub fn leading_epoch(&self) -> Option<Epoch> {
        match &self.role {
            Role::Leading(l) => l.established_epoch(),
            _ => None,
        }
    }

    pub fn committed(&self) -> Zxid {
        self.core.history.committed()
    }

    /// The followers' progress while leading (empty in any other role).
    pub fn followers(&self) -> Vec<FollowerProgress> {
        match &self.role {
            Role::Leading(l) => l.followers(&self.core),
            _ => Vec::new(),
        }
    }

    pub fn last_zxid(&self) -> Zxid {
        self.core.history.last()
    }

    pub fn epochs(&self) -> Epochs {
        self.core.epochs
    }

    pub fn tree(&self) -> &crate::tree::DataTree {
        self.core.history.tree()
    }

    /// Serving clients: leading or following in the broadcast phase.
    pub fn is_serving(&self) -> bool {
        match &self.role {
            Role::Looking(_) => false,
            Role::Following(f) => f.is_serving(),
            Role::Leading(l) => l.is_serving(),
        }
    }

    fn look(&mut self, out: &mut Vec<Output>) {
        self.core.fail_pending(out);
        let round = match &self.role {
            Role::Looking(l) => l.election.round(),
            _ => self.core.last_round,
        };
        let me = self.core.cfg.id;
        let members = self.core.cfg.members.len();
        let (election, action) = Election::start(
            me,
            members,
            round,
            self.core.own_vote(),
            self.core.cfg.election_finalize_ticks,
        );
        self.core.last_round = election.round();
        self.role = Role::Looking(Looking {
            election,
            resend_in: self.core.cfg.election_resend_ticks,
        });
        self.election_actions(vec![action], out);
    }

    fn election_actions(&mut self, actions: Vec<ElectionAction>, out: &mut Vec<Output>) {
        for action in actions {
            match action {
                ElectionAction::Broadcast(n) => self.core.broadcast(PeerMessage::Vote(n), out),
                ElectionAction::SendTo(p, n) => self.core.send(p, PeerMessage::Vote(n), out),
                ElectionAction::Decided(vote) => {
                    if let Role::Looking(l) = &self.role {
                        self.core.last_round = l.election.round();
                    }
                    tracing::debug!(node = %self.core.cfg.id, leader = %vote.leader, "election decided");
                    let next = if vote.leader == self.core.cfg.id {
                        let (leader, next) = Leader::start(&mut self.core, vote, out);
                        self.role = Role::Leading(leader);
                        next
                    } else {
                        self.role = Role::Following(Follower::start(&mut self.core, vote, out));
                        Next::Stay
                    };
                    if next == Next::Look {
                        self.look(out);
                    }
                    return;
                }
            }
        }
    }

    /// Feeds one input; outputs are appended to `out` in the order they must be executed.
    pub fn step(&mut self, input: Input, out: &mut Vec<Output>) {
        let next = match input {
            Input::Tick => {
                self.core.now += 1;
                match &mut self.role {
                    Role::Looking(l) => {
                        let mut actions: Vec<ElectionAction> =
                            l.election.tick().into_iter().collect();
                        l.resend_in = l.resend_in.saturating_sub(1);
                        if l.resend_in == 0 {
                            l.resend_in = self.core.cfg.election_resend_ticks;
                            actions.push(ElectionAction::Broadcast(l.election.notification()));
                        }
                        self.election_actions(actions, out);
                        Next::Stay
                    }
                    Role::Following(f) => f.tick(&mut self.core, out),
                    Role::Leading(l) => l.tick(&mut self.core, out),
                }
            }
            Input::Peer {
                from,
                msg: PeerMessage::Vote(n),
            } => {
                self.on_vote(from, n, out);
                Next::Stay
            }
            Input::Peer { from, msg } => match &mut self.role {
                Role::Looking(_) => Next::Stay,
                Role::Following(f) => f.on_message(&mut self.core, from, msg, out),
                Role::Leading(l) => l.on_message(&mut self.core, from, msg, out),
            },
            Input::PeerDown { peer } => match &mut self.role {
                Role::Looking(_) => Next::Stay,
                Role::Following(f) => f.on_peer_down(peer),
                Role::Leading(l) => l.on_peer_down(peer),
            },
            Input::Synced {
                generation,
                through,
            } => {
                self.core.history.synced(generation, through, out);
                match &mut self.role {
                    Role::Looking(_) => Next::Stay,
                    Role::Following(f) => f.on_synced(&mut self.core, out),
                    Role::Leading(l) => l.on_synced(&mut self.core, out),
                }
            }
            Input::Client(req) => self.on_client(req, out),
            Input::ClientGone { client } => {
                self.core.client_sessions.remove(&client);
                self.core.watches.drop_client(client);
                Next::Stay
            }
        };
        if next == Next::Look {
            tracing::debug!(node = %self.core.cfg.id, "leaving role, looking");
            self.look(out);
        }
    }

    fn on_vote(&mut self, from: NodeId, n: Notification, out: &mut Vec<Output>) {
        let (vote, state) = match &mut self.role {
            Role::Looking(l) => {
                let actions = l.election.receive(from, n);
                self.election_actions(actions, out);
                return;
            }
            Role::Following(f) => (f.vote(), PeerState::Following),
            Role::Leading(l) => (l.vote(), PeerState::Leading),
        };
        // Tell a looking peer which group it can join.
        if n.state == PeerState::Looking {
            let reply = Notification {
                vote,
                round: self.core.last_round,
                state,
            };
            self.core.send(from, PeerMessage::Vote(reply), out);
        }
    }

    /// The session this connection speaks for, if it is still alive here.
    fn live_session(&self, client: ClientId) -> Option<SessionId> {
        let session = *self.core.client_sessions.get(&client)?;
        self.core.history.tree().session(session).map(|_| session)
    }

    /// Session requests answered by this node alone, and the translation of the others into
    /// writes. `Err` is the reply to give at once; `Ok(op)` continues as a normal request.
    fn session_op(&mut self, client: ClientId, op: ClientOp) -> Result<ClientOp, ClientError> {
        let not_permitted = |reason: &str| ClientError::NotPermitted {
            reason: reason.to_string(),
        };
        match op {
            ClientOp::CreateSession {
                timeout_ticks,
                password,
            } => {
                let cfg = &self.core.cfg;
                let timeout_ticks = negotiate_timeout_ticks(
                    timeout_ticks,
                    cfg.min_session_timeout_ticks,
                    cfg.max_session_timeout_ticks,
                );
                Ok(ClientOp::Write(Txn::CreateSession {
                    timeout_ticks,
                    password,
                }))
            }
            ClientOp::CloseSession => match self.live_session(client) {
                Some(session) => Ok(ClientOp::Write(Txn::CloseSession {
                    session,
                    expired: false,
                })),
                None => Err(ClientError::SessionExpired),
            },
            ClientOp::Write(Txn::CreateSession { .. } | Txn::CloseSession { .. }) => Err(
                not_permitted("session transactions are made by the session requests"),
            ),
            ClientOp::Write(txn) => {
                let ops: &[WriteOp] = match &txn {
                    Txn::Write(op) => std::slice::from_ref(op),
                    Txn::Multi(ops) => ops,
                    _ => &[],
                };
                let own = self.core.client_sessions.get(&client).copied();
                let foreign = ops.iter().any(|op| {
                    matches!(op, WriteOp::Create { ephemeral_owner: Some(owner), .. } if Some(*owner) != own)
                });
                if foreign {
                    return Err(not_permitted(
                        "an ephemeral node's owner must be this connection's session",
                    ));
                }
                Ok(ClientOp::Write(txn))
            }
            other => Ok(other),
        }
    }

    /// Watch requests, answered locally (a watch lives on the node the client talks to).
    fn watch_op(
        &mut self,
        client: ClientId,
        op: ClientOp,
        out: &mut Vec<Output>,
    ) -> Result<Response, ClientError> {
        let core = &mut self.core;
        let tree = core.history.tree();
        let too_many = |e: crate::watch::TooManyWatches| ClientError::TooManyWatches {
            limit: e.limit as u64,
        };
        let tree_err = |error| ClientError::Txn(crate::txn::TxnError { index: 0, error });
        match op {
            ClientOp::Watch { path, kind } => match kind {
                WatchKind::Data => {
                    let (data, stat) = tree.get(&path).map_err(tree_err)?;
                    let data = data.to_vec();
                    core.watches.add(client, kind, &path).map_err(too_many)?;
                    Ok(Response::Data { data, stat })
                }
                WatchKind::Exist => {
                    let stat = tree.exists(&path).map_err(tree_err)?;
                    let set = if stat.is_some() {
                        WatchKind::Data
                    } else {
                        WatchKind::Exist
                    };
                    core.watches.add(client, set, &path).map_err(too_many)?;
                    Ok(Response::Exists(stat))
                }
                WatchKind::Children => {
                    let names = tree.children(&path).map_err(tree_err)?;
                    core.watches.add(client, kind, &path).map_err(too_many)?;
                    Ok(Response::Children(names))
                }
                WatchKind::Persistent | WatchKind::PersistentRecursive => {
                    crate::tree::validate_path(&path).map_err(tree_err)?;
                    core.watches.add(client, kind, &path).map_err(too_many)?;
                    Ok(Response::Watching)
                }
            },
            ClientOp::SetWatches { since, watches } => {
                if watches.len() > crate::limits::MAX_REWATCH_PATHS {
                    return Err(ClientError::TooManyWatches {
                        limit: crate::limits::MAX_REWATCH_PATHS as u64,
                    });
                }
                // The broken variant claims the client missed nothing.
                let since = if core.cfg.fault() == super::Fault::NoMissedEvents {
                    tree.applied()
                } else {
                    since
                };
                let events = core
                    .watches
                    .rewatch(client, since, &watches, tree)
                    .map_err(too_many)?;
                for event in events {
                    out.push(Output::Event { client, event });
                }
                Ok(Response::Watching)
            }
            ClientOp::RemoveWatch { path, kind } => {
                core.watches.remove(client, kind, &path);
                Ok(Response::Watching)
            }
            _ => Err(ClientError::NotPermitted {
                reason: "not a watch request".into(),
            }),
        }
    }

    fn on_client(&mut self, req: ClientRequest, out: &mut Vec<Output>) -> Next {
        let ClientRequest {
            client,
            request,
            op,
        } = req;
        let serving = self.is_serving();
        // Any request of an attached connection keeps its session alive.
        if let Some(session) = self.core.client_sessions.get(&client) {
            self.core.touched.insert(*session);
        }
        let op = match self.session_op(client, op) {
            Ok(op) => op,
            Err(e) => {
                self.core.reply(client, request, Err(e), out);
                return Next::Stay;
            }
        };
        let tree = self.core.history.tree();
        let read = match &op {
            ClientOp::Get { path } => Some(tree.get(path).map(|(d, stat)| Response::Data {
                data: d.to_vec(),
                stat,
            })),
            ClientOp::Exists { path } => Some(tree.exists(path).map(Response::Exists)),
            ClientOp::Children { path } => Some(tree.children(path).map(Response::Children)),
            ClientOp::AttachSession { session, password } => {
                let result = match tree.session(*session) {
                    _ if !serving => Err(ClientError::NotReady),
                    None => Err(ClientError::SessionExpired),
                    Some(info) if info.password != *password => {
                        Err(ClientError::BadSessionPassword)
                    }
                    Some(info) => {
                        let session = *session;
                        self.core.client_sessions.insert(client, session);
                        self.core.touched.insert(session);
                        Ok(Response::Session {
                            session,
                            password: info.password,
                            timeout_ticks: info.timeout_ticks,
                        })
                    }
                };
                self.core.reply(client, request, result, out);
                return Next::Stay;
            }
            ClientOp::Ping => {
                let result = if !serving {
                    Err(ClientError::NotReady)
                } else if self.live_session(client).is_some() {
                    Ok(Response::Pong {
                        committed: self.core.history.committed(),
                    })
                } else {
                    Err(ClientError::SessionExpired)
                };
                self.core.reply(client, request, result, out);
                return Next::Stay;
            }
            ClientOp::Watch { .. } | ClientOp::SetWatches { .. } | ClientOp::RemoveWatch { .. } => {
                let result = if serving {
                    self.watch_op(client, op, out)
                } else {
                    Err(ClientError::NotReady)
                };
                self.core.reply(client, request, result, out);
                return Next::Stay;
            }
            ClientOp::Write(_)
            | ClientOp::Sync
            | ClientOp::CreateSession { .. }
            | ClientOp::CloseSession => None,
        };
        if let Some(read) = read {
            let result = if serving {
                read.map_err(|error| ClientError::Txn(crate::txn::TxnError { index: 0, error }))
            } else {
                Err(ClientError::NotReady)
            };
            self.core.reply(client, request, result, out);
            return Next::Stay;
        }
        if !serving {
            self.core
                .reply(client, request, Err(ClientError::NotReady), out);
            return Next::Stay;
        }
        match &mut self.role {
            Role::Looking(_) => Next::Stay,
            Role::Following(f) => f.on_client(&mut self.core, client, request, op, out),
            Role::Leading(l) => l.on_client(&mut self.core, client, request, op, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::DataTree;
    use crate::txn::{OpResult, Txn, TxnResult, WriteOp};
    use crate::zab::RoleName;

    fn fresh(id: u64, members: &[u64]) -> Node {
        let cfg = Config::new(NodeId(id), members.iter().map(|m| NodeId(*m)).collect());
        let recovered = Recovered {
            epochs: Epochs::default(),
            tree: DataTree::new(),
            log: vec![],
        };
        Node::new(cfg, recovered)
    }

    fn create(path: &str) -> Input {
        let op = WriteOp::Create {
            path: path.into(),
            data: b"x".to_vec(),
            sequential: false,
            ephemeral_owner: None,
        };
        Input::Client(ClientRequest {
            client: ClientId(7),
            request: RequestId(1),
            op: ClientOp::Write(Txn::Write(op)),
        })
    }

    #[test]
    fn a_group_of_one_replies_only_after_fsync() {
        let mut n = fresh(1, &[1]);
        let mut out = vec![];
        n.start(&mut out);
        assert_eq!(n.role(), RoleName::Leading);
        assert!(n.is_serving());
        assert_eq!(
            n.epochs(),
            Epochs {
                accepted: Epoch(1),
                current: Epoch(1)
            }
        );
        out.clear();
        n.step(create("/a"), &mut out);
        let (generation, through) = match &out[..] {
            [
                Output::Disk(DiskOp::Append(e)),
                Output::Disk(DiskOp::Sync {
                    generation,
                    through,
                }),
            ] => {
                assert_eq!(e.zxid, Zxid::new(1, 1));
                (*generation, *through)
            }
            other => panic!("expected append then sync, got {other:?}"),
        };
        out.clear();
        n.step(
            Input::Synced {
                generation,
                through,
            },
            &mut out,
        );
        assert!(matches!(out[0], Output::Applied { ref entry } if entry.zxid == through));
        let reply = out.iter().find_map(|o| match o {
            Output::Reply(r) => Some(r.clone()),
            _ => None,
        });
        let reply = reply.expect("a reply after the fsync");
        assert!(matches!(
            reply.result,
            Ok(Response::Txn(TxnResult::Write(OpResult::Created { .. })))
        ));
        assert_eq!(
            n.tree().get("/a").map(|(d, _)| d.to_vec()),
            Ok(b"x".to_vec())
        );
    }

    #[test]
    fn a_node_without_quorum_refuses_clients_without_executing() {
        let mut n = fresh(1, &[1, 2, 3]);
        let mut out = vec![];
        n.start(&mut out);
        assert_eq!(n.role(), RoleName::Looking);
        // It asks both peers for their votes.
        assert_eq!(
            out.iter()
                .filter(|o| matches!(o, Output::Send { .. }))
                .count(),
            2
        );
        out.clear();
        n.step(create("/a"), &mut out);
        assert!(matches!(&out[..], [Output::Reply(r)] if r.result == Err(ClientError::NotReady)));
    }
}
