//! Write operations and the transactions the log carries, and what applying them returns.
//!
//! Owns the vocabulary only. A transaction is the client's write as the leader ordered it;
//! every node applies it to its tree deterministically (same tree + same txn = same result),
//! so the log holds the requests themselves and never per-node outcomes. Never validates
//! against a tree: that is [`crate::tree`]'s job at apply time.

use crate::types::{SessionId, Zxid};

/// One write on the tree. Also a `multi` member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum WriteOp {
    /// Create `path`; with `sequential` the name gets the parent's child-version as a 10-digit
    /// suffix (ZooKeeper's sequential nodes). `ephemeral_owner` is part 2's session owner.
    Create {
        path: String,
        data: Vec<u8>,
        sequential: bool,
        ephemeral_owner: Option<SessionId>,
    },
    /// Replace the data; with `expected_version` only if the version matches (compare-and-set).
    SetData {
        path: String,
        data: Vec<u8>,
        expected_version: Option<u32>,
    },
    /// Delete a childless node, optionally only at `expected_version`.
    Delete {
        path: String,
        expected_version: Option<u32>,
    },
    /// Fail unless the node exists (at `expected_version` if given); for `multi` guards.
    Check {
        path: String,
        expected_version: Option<u32>,
    },
}

impl WriteOp {
    pub fn path(&self) -> &str {
        match self {
            WriteOp::Create { path, .. }
            | WriteOp::SetData { path, .. }
            | WriteOp::Delete { path, .. }
            | WriteOp::Check { path, .. } => path,
        }
    }
}

/// A transaction: what one zxid carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Txn {
    Write(WriteOp),
    /// All or none, in order; later ops see the effects of earlier ones.
    Multi(Vec<WriteOp>),
    /// No change to the tree. A leader may propose it to commit its inherited history sooner.
    Noop,
    /// Opens a session. Its id is this transaction's zxid (unique group-wide, known to every
    /// node at apply time without coordination); `password` is chosen by the node the client
    /// asked, `timeout_ticks` is already clamped to the session limits.
    CreateSession {
        timeout_ticks: u32,
        password: u64,
    },
    /// Ends a session and deletes its ephemeral nodes in the same transaction. `expired` when
    /// the leader decided it (no word from the client within its timeout), not the client.
    CloseSession {
        session: SessionId,
        expired: bool,
    },
}

/// A log entry: a transaction at its zxid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LogEntry {
    pub zxid: Zxid,
    pub txn: Txn,
}

/// A node's metadata, as ZooKeeper's `Stat`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Stat {
    /// Created by this zxid.
    pub czxid: Zxid,
    /// Last data change.
    pub mzxid: Zxid,
    /// Last change to the children list.
    pub pzxid: Zxid,
    /// Data version: 0 at create, +1 per set.
    pub version: u32,
    /// Child version: +1 per child created or deleted (feeds sequential names).
    pub cversion: u32,
    pub ephemeral_owner: Option<SessionId>,
    pub num_children: u32,
    pub data_length: u32,
}

/// The outcome of one successful write.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum OpResult {
    /// The actual path (differs from the request for sequential nodes).
    Created {
        path: String,
        stat: Stat,
    },
    Set {
        stat: Stat,
    },
    Deleted,
    Checked,
}

/// The outcome of a whole transaction.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum TxnResult {
    Write(OpResult),
    Multi(Vec<OpResult>),
    Noop,
    SessionCreated {
        session: SessionId,
        timeout_ticks: u32,
    },
    /// The ephemeral nodes the close deleted, in path order.
    SessionClosed {
        deleted: Vec<String>,
    },
}

/// Why a write (or read) was refused by the tree. Maps one to one onto ZooKeeper's codes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    thiserror::Error,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum TreeError {
    #[error("no node")]
    NoNode,
    #[error("node exists")]
    NodeExists,
    #[error("bad version")]
    BadVersion,
    #[error("node has children")]
    NotEmpty,
    #[error("ephemeral nodes may not have children")]
    NoChildrenForEphemerals,
    #[error("bad path")]
    BadPath,
    #[error("data larger than the limit")]
    DataTooLarge,
    #[error("multi has too many or no operations")]
    BadMulti,
    #[error("sequential counter exhausted")]
    SequenceOverflow,
    #[error("transaction zxid not after the tree's last applied zxid")]
    OutOfOrder,
    /// The session is unknown: expired, closed, or never created (ZooKeeper's SESSIONEXPIRED).
    #[error("session expired or unknown")]
    NoSession,
    #[error("too many live sessions")]
    TooManySessions,
}

/// A failed transaction: for a multi, which op failed (nothing was applied).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    thiserror::Error,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[error("op {index} failed: {error}")]
pub struct TxnError {
    pub index: usize,
    pub error: TreeError,
}
