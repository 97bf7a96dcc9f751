//! The peer protocol: Fast Leader Election notifications and ZAB's discovery,
//! synchronization and broadcast messages.
//!
//! Owns message shapes only. Every ZAB message after election carries the leader's epoch so
//! that a message from an older leader is recognised and dropped.

use std::sync::Arc;

use crate::election::Notification;
use crate::tree::DataTree;
use crate::txn::{LogEntry, Txn};
use crate::types::{ClientId, Epoch, NodeId, RequestId, SessionId, Zxid};

/// Who must answer the client when a proposal commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Origin {
    pub node: NodeId,
    pub client: ClientId,
    pub request: RequestId,
}

/// How the leader brings a follower's history to its own.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum SyncPlan {
    /// The follower's history is a prefix of ours: send what follows.
    Diff,
    /// The follower has entries after `after` that we do not: drop them, then send the rest.
    Trunc { after: Zxid },
    /// The follower is too far behind for our in-memory log: here is the committed tree.
    Snap(Arc<DataTree>),
}

#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PeerMessage {
    Vote(Notification),
    /// Follower -> leader: the newest epoch it accepted.
    FollowerInfo {
        accepted_epoch: Epoch,
    },
    /// Leader -> follower: the epoch it will lead.
    NewEpoch {
        epoch: Epoch,
    },
    /// Follower -> leader: promise to follow `epoch`, and where its history ends.
    /// `epoch_ends` has the last zxid of each epoch in its log after `committed`.
    AckEpoch {
        epoch: Epoch,
        current_epoch: Epoch,
        last_zxid: Zxid,
        committed: Zxid,
        epoch_ends: Vec<Zxid>,
    },
    /// Leader -> follower: the plan, the entries after the common point, and what is known
    /// committed among them.
    Sync {
        epoch: Epoch,
        plan: SyncPlan,
        entries: Vec<LogEntry>,
        committed: Zxid,
    },
    /// Leader -> follower: your history now equals mine up to `last_zxid`; adopt `epoch`.
    NewLeader {
        epoch: Epoch,
        last_zxid: Zxid,
    },
    AckNewLeader {
        epoch: Epoch,
    },
    /// Leader -> follower: start serving; everything through `committed` is committed.
    UpToDate {
        epoch: Epoch,
        committed: Zxid,
    },
    Propose {
        epoch: Epoch,
        entry: LogEntry,
        origin: Option<Origin>,
    },
    /// Follower -> leader: everything through `zxid` is durable here.
    Ack {
        epoch: Epoch,
        zxid: Zxid,
    },
    /// Leader -> followers: everything through `zxid` is committed.
    Commit {
        epoch: Epoch,
        zxid: Zxid,
    },
    /// Leader -> follower heartbeat; `round` numbers it so a sync can wait for a quorum of
    /// answers to a ping sent after the sync arrived (proof the leader still leads).
    Ping {
        epoch: Epoch,
        round: u64,
    },
    Pong {
        epoch: Epoch,
        round: u64,
    },
    /// Follower -> leader: a client's write.
    Forward {
        epoch: Epoch,
        client: ClientId,
        request: RequestId,
        txn: Txn,
    },
    /// Follower -> leader: a client's sync.
    SyncRequest {
        epoch: Epoch,
        client: ClientId,
        request: RequestId,
    },
    /// Leader -> follower: a forwarded write or sync was not taken (not serving, or
    /// back-pressure); the client gets `NotReady`.
    Rejected {
        epoch: Epoch,
        client: ClientId,
        request: RequestId,
    },
    /// Follower -> leader, after its answer to a ping: the sessions it heard from since the
    /// last one (ZooKeeper's learners report session touches with their pings).
    Touch {
        epoch: Epoch,
        sessions: Vec<SessionId>,
    },
    /// Leader -> follower: answer the sync once you have applied `through`.
    SyncReply {
        epoch: Epoch,
        client: ClientId,
        request: RequestId,
        through: Zxid,
    },
}

impl PeerMessage {
    /// Whether only a leader sends this (what keeps a follower following).
    pub fn from_leader(&self) -> bool {
        matches!(
            self,
            PeerMessage::NewEpoch { .. }
                | PeerMessage::Sync { .. }
                | PeerMessage::NewLeader { .. }
                | PeerMessage::UpToDate { .. }
                | PeerMessage::Propose { .. }
                | PeerMessage::Commit { .. }
                | PeerMessage::Ping { .. }
                | PeerMessage::Rejected { .. }
                | PeerMessage::SyncReply { .. }
        )
    }
}
