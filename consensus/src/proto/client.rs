//! What a client sends a node and what comes back.
//!
//! Owns the request and reply shapes only. Node operations are [`crate::zab::ClientOp`]
//! itself; `Status` is answered by the runtime from the node's observable state (for tools
//! and tests), never by the protocol.

use crate::types::{NodeId, Zxid};
use crate::zab::{ClientError, ClientOp, Response, RoleName};

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
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Reply {
    pub id: u64,
    pub result: ReplyResult,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ReplyResult {
    Ok(Response),
    Status(NodeStatus),
    Err(ClientError),
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
}
