//! The ZAB protocol as a pure state machine: `(node, input) -> outputs`.
//!
//! Owns the protocol: [`Node`] takes an [`Input`] (a peer message, a client request, a tick,
//! a disk-sync completion) and appends [`Output`]s (messages, disk operations, client replies).
//! No I/O, clock or randomness happens inside; the runtime or the simulator executes outputs.
//!
//! The contract with whoever executes the outputs:
//! - Outputs are executed in order. Every [`DiskOp`] except `Append` and `Sync` is durable
//!   before any later output is executed (a `Send` after `SetEpochs` leaves only once the
//!   epochs are on disk). `Append` is buffered; `Sync` makes everything appended before it
//!   durable and comes back as [`Input::Synced`] with the same generation.
//! - Peer channels are FIFO and may break (as TCP): a break is reported as
//!   [`Input::PeerDown`]; messages are never duplicated or reordered within one connection.
//!
//! Submodules: [`message`] (the peer protocol), [`history`] (log + commit point + tree),
//! [`node`] (roles and client handling), [`leader`], [`follower`], [`sync_plan`].

pub mod follower;
pub mod history;
pub mod leader;
pub mod message;
pub mod node;
#[cfg(test)]
mod session_tests;
pub mod sync_plan;
#[cfg(test)]
pub(crate) mod testkit;

use std::sync::Arc;

pub use leader::FollowerProgress;
pub use message::{Origin, PeerMessage, SyncPlan};
pub use node::{Node, RoleName};

use crate::limits::{MAX_SESSION_TIMEOUT_PING_INTERVALS, MIN_SESSION_TIMEOUT_PING_INTERVALS};
use crate::meta::Epochs;
use crate::tree::DataTree;
use crate::txn::{LogEntry, Stat, Txn, TxnError, TxnResult};
use crate::types::{ClientId, NodeId, RequestId, SessionId, Zxid};
use crate::watch::{WatchEvent, WatchKind};

/// Deliberate protocol bugs, for proving that the simulator's checkers catch them.
#[cfg(any(test, feature = "sim"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Followers ACK and the leader counts itself as soon as a proposal is appended, before
    /// it is durable.
    AckBeforeFsync,
    /// The leader commits a proposal on its own durability, without a quorum.
    CommitWithoutQuorum,
    /// Followers never tell the leader which sessions they heard from.
    DropSessionTouches,
    /// The leader never proposes an expiry: dead clients' ephemeral nodes live forever.
    NoSessionExpiry,
    /// Re-registered watches are set without the events missed since the client's zxid.
    NoMissedEvents,
}

/// Static configuration of one node. Timing is in ticks; the runtime picks the tick length.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: NodeId,
    /// Every voting member, this node included.
    pub members: Vec<NodeId>,
    /// Re-send our election notification this often while looking.
    pub election_resend_ticks: u32,
    /// After a quorum agrees, wait this long for a better vote before deciding.
    pub election_finalize_ticks: u32,
    /// Discovery and synchronization must finish within this (ZooKeeper's initLimit).
    pub init_limit_ticks: u32,
    /// Silence tolerated from the leader, or from a quorum of followers (syncLimit).
    pub sync_limit_ticks: u32,
    /// The leader pings followers this often.
    pub ping_interval_ticks: u32,
    /// Write a snapshot after this many committed transactions.
    pub snapshot_every_txns: u64,
    /// Committed transactions kept in memory after a snapshot, to bring followers up with a
    /// DIFF instead of a full SNAP.
    pub retained_txns: usize,
    /// Proposals in flight (proposed, not committed) before new writes get `NotReady`.
    pub max_outstanding_proposals: u32,
    /// Bounds of a negotiated session timeout (see [`crate::session`]).
    pub min_session_timeout_ticks: u32,
    pub max_session_timeout_ticks: u32,
    #[cfg(any(test, feature = "sim"))]
    pub fault: Fault,
}

impl Config {
    /// Defaults for a tick of about 10 ms.
    pub fn new(id: NodeId, members: Vec<NodeId>) -> Config {
        let ping_interval_ticks = 10;
        Config {
            id,
            members,
            election_resend_ticks: 20,
            election_finalize_ticks: 2,
            // A follower gives its leader 2 s of silence (a leader, its quorum) before
            // looking, and a new leader 4 s to sync. 500 ms was less than the stalls a busy
            // 2-core machine produces: under 100 concurrent writers a follower found the
            // leader silent, the leader lost its quorum and every in-flight write of that
            // follower's clients came back with an unknown outcome. ZooKeeper's defaults
            // (syncLimit 5 and initLimit 10 ticks of 2 s) are longer still; a SIGKILLed
            // leader is noticed at once anyway, by its closed connections.
            init_limit_ticks: 400,
            sync_limit_ticks: 200,
            ping_interval_ticks,
            snapshot_every_txns: 10_000,
            retained_txns: 1_000,
            max_outstanding_proposals: 1_000,
            min_session_timeout_ticks: MIN_SESSION_TIMEOUT_PING_INTERVALS * ping_interval_ticks,
            max_session_timeout_ticks: MAX_SESSION_TIMEOUT_PING_INTERVALS * ping_interval_ticks,
            #[cfg(any(test, feature = "sim"))]
            fault: Fault::None,
        }
    }

    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn fault(&self) -> Fault {
        self.fault
    }

    #[cfg(not(any(test, feature = "sim")))]
    pub(crate) fn fault(&self) -> Fault {
        Fault::None
    }
}

/// Without the simulator the fault switch does not exist; this stand-in keeps call sites
/// identical and compiles to nothing.
#[cfg(not(any(test, feature = "sim")))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    AckBeforeFsync,
    CommitWithoutQuorum,
    DropSessionTouches,
    NoSessionExpiry,
    NoMissedEvents,
}

/// A request from a client connected to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    pub client: ClientId,
    pub request: RequestId,
    pub op: ClientOp,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ClientOp {
    /// A write or multi; ordered by the leader.
    Write(Txn),
    Get {
        path: String,
    },
    Exists {
        path: String,
    },
    Children {
        path: String,
    },
    /// Wait until this node has applied everything the leader had proposed when the sync
    /// reached it; a read after that sees every write acknowledged before the sync started.
    Sync,
    /// Open a session for this connection (committed through the quorum). The node clamps
    /// the timeout; `password` is the node's secret for the session (the runtime draws it).
    CreateSession {
        timeout_ticks: u64,
        password: u64,
    },
    /// Bind this connection to an existing session (after a move to this node).
    AttachSession {
        session: SessionId,
        password: u64,
    },
    /// End this connection's session now, deleting its ephemeral nodes.
    CloseSession,
    /// The session's heartbeat; any request of an attached connection counts as one too.
    Ping,
    /// Read and set a watch in one step: `Data` answers as `Get` (no watch when the node is
    /// missing), `Exist` as `Exists` (a data watch if the node exists, else a creation
    /// watch), `Children` as `Children`; the persistent kinds answer `Watching`.
    Watch {
        path: String,
        kind: WatchKind,
    },
    /// Re-register watches after a move; the events missed since `since` come at once.
    SetWatches {
        since: Zxid,
        watches: Vec<(WatchKind, String)>,
    },
    RemoveWatch {
        path: String,
        kind: WatchKind,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Response {
    Txn(TxnResult),
    Data {
        data: Vec<u8>,
        stat: Stat,
    },
    Exists(Option<Stat>),
    Children(Vec<String>),
    Synced {
        through: Zxid,
    },
    /// A session created or attached: this connection now speaks for it.
    Session {
        session: SessionId,
        password: u64,
        timeout_ticks: u32,
    },
    /// A ping answered; `committed` is how far this node has applied.
    Pong {
        committed: Zxid,
    },
    /// A persistent watch set, watches re-registered, or a watch removed.
    Watching,
}

#[derive(
    Debug, Clone, PartialEq, Eq, thiserror::Error, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum ClientError {
    #[error(transparent)]
    Txn(#[from] TxnError),
    /// Not executed: this node is not serving (no leader, syncing, or back-pressure). Retry.
    #[error("not ready")]
    NotReady,
    /// The outcome is unknown: the write may still commit (ZooKeeper's ConnectionLoss).
    #[error("connection to the leader lost; outcome unknown")]
    ConnectionLoss,
    /// The session is gone (expired or closed) or was never known.
    #[error("session expired")]
    SessionExpired,
    #[error("wrong session password")]
    BadSessionPassword,
    /// The request needs a session this connection does not hold (an ephemeral create for
    /// another session, a session transaction sent as a plain write, a close without one).
    #[error("not permitted on this connection: {reason}")]
    NotPermitted { reason: String },
    #[error("too many watches on this connection (limit {limit})")]
    TooManyWatches { limit: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReply {
    pub client: ClientId,
    pub request: RequestId,
    pub result: Result<Response, ClientError>,
    /// The node's commit point when it answered: every event of a transaction at or before
    /// it went to this client before this reply (what a moved client's `SetWatches` starts
    /// from).
    pub zxid: Zxid,
}

/// A disk operation; see the module docs for which ones are durable on return.
#[derive(Debug, Clone)]
pub enum DiskOp {
    Append(LogEntry),
    Sync {
        generation: u64,
        through: Zxid,
    },
    Truncate {
        after: Zxid,
    },
    /// A snapshot of committed state; the store may purge the log it covers.
    Snapshot(Arc<DataTree>),
    /// Replace the whole history with this snapshot (SNAP from the leader).
    ResetToSnapshot(Arc<DataTree>),
    SetEpochs(Epochs),
}

#[derive(Debug, Clone)]
pub enum Input {
    /// One tick of time. The runtime feeds one per elapsed tick period, catching up after a
    /// stall, so timeouts measure real time; safety never depends on them.
    Tick,
    Peer {
        from: NodeId,
        msg: PeerMessage,
    },
    PeerDown {
        peer: NodeId,
    },
    Client(ClientRequest),
    /// A client connection closed (its session, if any, lives on until it expires).
    ClientGone {
        client: ClientId,
    },
    Synced {
        generation: u64,
        through: Zxid,
    },
}

#[derive(Debug, Clone)]
pub enum Output {
    Send {
        to: NodeId,
        msg: PeerMessage,
    },
    Disk(DiskOp),
    Reply(ClientReply),
    /// A committed transaction was applied to the tree (watches hang off this in part 2).
    Applied {
        entry: LogEntry,
    },
    /// The tree was replaced by a leader's snapshot at this zxid.
    Installed {
        zxid: Zxid,
    },
    /// A watch fired for one of this node's clients. Comes before any later reply to it.
    Event {
        client: ClientId,
        event: WatchEvent,
    },
}
