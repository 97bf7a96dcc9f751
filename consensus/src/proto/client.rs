//! What a client sends a node and what comes back.
//!
//! Owns the request and reply shapes only. Node operations are [`crate::zab::ClientOp`]
//! itself; `Status` is answered by the runtime from the node's observable state (for tools
//! and tests), never by the protocol.

use crate::types::{NodeId, SessionId, Zxid};
use crate::watch::WatchEvent;
use crate::zab::{ClientError, ClientOp, FollowerProgress, Response, RoleName};

/// One request; `id` is chosen by the client (unique per connection) and echoed in the reply.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Request {
    pub id: u64,
    pub op: RequestOp,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum RequestOp {
    Node(ClientOp),
    Status,
    /// Session requests, in milliseconds; the node's runtime turns them into
    /// [`ClientOp`]s in ticks and draws the password of a new session.
    Session(SessionRequest),
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum SessionRequest {
    Create { timeout_ms: u64 },
    Attach { session: SessionId, password: u64 },
    Close,
    Ping,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Reply {
    /// The request's id; [`EVENT_ID`] for a watch event, which answers no request.
    pub id: u64,
    /// The node's commit point when it sent this; every event of a transaction at or before
    /// it was sent on this connection before this frame.
    pub zxid: Zxid,
    pub result: ReplyResult,
}

/// The id of a pushed watch event (clients number their requests from 1).
pub const EVENT_ID: u64 = 0;

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ReplyResult {
    Ok(Response),
    Status(NodeStatus),
    Err(ClientError),
    /// A watch fired (always with id [`EVENT_ID`]).
    Event(WatchEvent),
    /// A session created or attached, with its negotiated timeout.
    Session {
        session: SessionId,
        password: u64,
        timeout_ms: u64,
    },
}

/// A node's view of itself.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: RoleName,
    pub serving: bool,
    pub current_epoch: u32,
    pub committed: Zxid,
    pub last_zxid: Zxid,
    /// Nodes in the tree, the root included.
    pub tree_nodes: u64,
    /// CRC32C over every node's path, data and stat in path order: equal trees, equal digests.
    pub tree_digest: u32,
    /// On the leader, each follower it is connected to; empty on any other node.
    pub followers: Vec<FollowerProgress>,
    /// The node's tick, the unit of [`FollowerProgress::silent_ticks`].
    pub tick_ms: u64,
    /// Client connections this node closed because they did not read their replies
    /// (`limits::MAX_QUEUED_REPLIES_PER_CLIENT`), since it started.
    pub slow_clients_dropped: u64,
}
