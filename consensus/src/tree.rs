//! The data tree: ZooKeeper's data model, a map from path to node with data and [`Stat`].
//!
//! Owns applying committed transactions and answering local reads. Applying is deterministic
//! and total: any transaction on any tree yields a result or a [`TxnError`], never a panic, and
//! a failed `multi` leaves the tree untouched. Never decides what is committed.
//!
//! The tree also holds the table of live sessions (part of the replicated state, so every
//! node agrees on which sessions exist and who owns each ephemeral node) and an index of each
//! session's ephemeral nodes, derived from the nodes' `ephemeral_owner` and kept in step on
//! every change, so closing a session never scans the tree.

use std::collections::{BTreeMap, BTreeSet};

use crate::limits::{MAX_MULTI_OPS, MAX_NODE_DATA_BYTES, MAX_PATH_BYTES, MAX_SESSIONS};
use crate::session::SessionInfo;
use crate::txn::{OpResult, Stat, TreeError, Txn, TxnError, TxnResult, WriteOp};
use crate::types::{SessionId, Zxid};

/// One node of the tree.
#[derive(
    Debug, Clone, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Node {
    pub data: Vec<u8>,
    /// `num_children` and `data_length` are filled on read, not stored.
    pub stat: Stat,
    /// Child names (last path component), sorted.
    pub children: BTreeSet<String>,
}

/// The whole tree plus the zxid of the last transaction applied to it.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DataTree {
    nodes: BTreeMap<String, Node>,
    applied: Zxid,
    sessions: BTreeMap<SessionId, SessionInfo>,
    /// Derived from `nodes`: each owner's ephemeral paths.
    ephemerals: BTreeMap<SessionId, BTreeSet<String>>,
}

impl Default for DataTree {
    fn default() -> Self {
        DataTree::new()
    }
}

/// Checks a path the way ZooKeeper's `PathUtils.validatePath` does (minus the Unicode ranges).
pub fn validate_path(path: &str) -> Result<(), TreeError> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES || !path.starts_with('/') {
        return Err(TreeError::BadPath);
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') || path.contains('\0') {
        return Err(TreeError::BadPath);
    }
    for part in path[1..].split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(TreeError::BadPath);
        }
    }
    Ok(())
}

/// `("/a/b", "b")` -> parent `"/a"`; the root has no parent.
fn split_parent(path: &str) -> Option<(&str, &str)> {
    if path == "/" {
        return None;
    }
    let cut = path.rfind('/')?;
    let parent = if cut == 0 { "/" } else { &path[..cut] };
    Some((parent, &path[cut + 1..]))
}

/// One change a transaction made, with what is needed to take it back. A step never holds a
/// copy of a node's children: saving a parent whole would cost one allocation per child on
/// every create or delete under it, which made each write O(siblings) and a parent with tens
/// of thousands of children stall the node for milliseconds per write.
#[derive(Debug)]
enum UndoStep {
    /// `path` was created; taking it back removes it.
    Created { path: String },
    /// `path` was deleted; this is the node as it was (childless, since only those can go).
    Deleted { path: String, node: Node },
    /// The data and stat of `path` before a set.
    DataSet {
        path: String,
        data: Vec<u8>,
        stat: Stat,
    },
    /// `name` was added to (or removed from) `parent`'s children; `stat` is the parent's
    /// stat before.
    ChildAdded {
        parent: String,
        name: String,
        stat: Stat,
    },
    ChildRemoved {
        parent: String,
        name: String,
        stat: Stat,
    },
}

/// What a failed multi must take back, in the order the changes were made.
type Undo = Vec<UndoStep>;

impl DataTree {
    pub fn new() -> DataTree {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_string(), Node::default());
        DataTree {
            nodes,
            applied: Zxid::ZERO,
            sessions: BTreeMap::new(),
            ephemerals: BTreeMap::new(),
        }
    }

    /// Rebuilds a tree without sessions from `(path, data, stat)` triples; see
    /// [`DataTree::from_parts`].
    pub fn from_nodes(
        applied: Zxid,
        entries: impl IntoIterator<Item = (String, Vec<u8>, Stat)>,
    ) -> Result<DataTree, TreeError> {
        DataTree::from_parts(applied, entries, [])
    }

    /// Rebuilds a tree from `(path, data, stat)` triples and the live sessions (a snapshot).
    /// Children sets and the ephemeral index are derived; a node whose parent is missing is an
    /// error, since the snapshot is then corrupt.
    pub fn from_parts(
        applied: Zxid,
        entries: impl IntoIterator<Item = (String, Vec<u8>, Stat)>,
        sessions: impl IntoIterator<Item = (SessionId, SessionInfo)>,
    ) -> Result<DataTree, TreeError> {
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        for (path, data, stat) in entries {
            validate_path(&path)?;
            nodes.insert(
                path,
                Node {
                    data,
                    stat,
                    children: BTreeSet::new(),
                },
            );
        }
        nodes.entry("/".to_string()).or_default();
        let paths: Vec<String> = nodes.keys().cloned().collect();
        for path in &paths {
            if let Some((parent, name)) = split_parent(path) {
                let parent = nodes.get_mut(parent).ok_or(TreeError::NoNode)?;
                parent.children.insert(name.to_string());
            }
        }
        let mut ephemerals: BTreeMap<SessionId, BTreeSet<String>> = BTreeMap::new();
        for (path, node) in &nodes {
            if let Some(owner) = node.stat.ephemeral_owner {
                ephemerals.entry(owner).or_default().insert(path.clone());
            }
        }
        Ok(DataTree {
            nodes,
            applied,
            sessions: sessions.into_iter().collect(),
            ephemerals,
        })
    }

    /// Live sessions, in id order.
    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, SessionInfo)> + '_ {
        self.sessions.iter().map(|(id, s)| (*id, *s))
    }

    /// How many sessions are live (metrics).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn session(&self, id: SessionId) -> Option<SessionInfo> {
        self.sessions.get(&id).copied()
    }

    /// The ephemeral nodes `owner` holds, in path order.
    pub fn ephemerals_of(&self, owner: SessionId) -> impl Iterator<Item = &str> + '_ {
        self.ephemerals
            .get(&owner)
            .into_iter()
            .flat_map(|paths| paths.iter().map(String::as_str))
    }

    /// Every node change goes through here or [`DataTree::take`], so the ephemeral index
    /// can never disagree with the nodes.
    fn put(&mut self, path: String, node: Node) {
        self.take(&path);
        if let Some(owner) = node.stat.ephemeral_owner {
            self.ephemerals
                .entry(owner)
                .or_default()
                .insert(path.clone());
        }
        self.nodes.insert(path, node);
    }

    fn take(&mut self, path: &str) -> Option<Node> {
        let node = self.nodes.remove(path)?;
        if let Some(owner) = node.stat.ephemeral_owner
            && let Some(paths) = self.ephemerals.get_mut(&owner)
        {
            paths.remove(path);
            if paths.is_empty() {
                self.ephemerals.remove(&owner);
            }
        }
        Some(node)
    }

    /// The zxid of the last applied transaction.
    pub fn applied(&self) -> Zxid {
        self.applied
    }

    /// Every node in path order (for snapshots).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(p, n)| (p.as_str(), n))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    fn full_stat(node: &Node) -> Stat {
        let mut stat = node.stat;
        stat.num_children = node.children.len() as u32;
        stat.data_length = node.data.len() as u32;
        stat
    }

    pub fn get(&self, path: &str) -> Result<(&[u8], Stat), TreeError> {
        validate_path(path)?;
        let node = self.nodes.get(path).ok_or(TreeError::NoNode)?;
        Ok((&node.data, Self::full_stat(node)))
    }

    pub fn exists(&self, path: &str) -> Result<Option<Stat>, TreeError> {
        validate_path(path)?;
        Ok(self.nodes.get(path).map(Self::full_stat))
    }

    pub fn children(&self, path: &str) -> Result<Vec<String>, TreeError> {
        validate_path(path)?;
        let node = self.nodes.get(path).ok_or(TreeError::NoNode)?;
        Ok(node.children.iter().cloned().collect())
    }

    /// Applies a committed transaction at `zxid`. Zxids must increase; an older one is refused
    /// without change (applying history twice would be a bug in the caller, never silent).
    pub fn apply(&mut self, zxid: Zxid, txn: &Txn) -> Result<TxnResult, TxnError> {
        if zxid <= self.applied {
            return Err(TxnError {
                index: 0,
                error: TreeError::OutOfOrder,
            });
        }
        self.applied = zxid;
        match txn {
            Txn::Noop => Ok(TxnResult::Noop),
            Txn::CreateSession {
                timeout_ticks,
                password,
            } => {
                if self.sessions.len() >= MAX_SESSIONS {
                    return Err(TxnError {
                        index: 0,
                        error: TreeError::TooManySessions,
                    });
                }
                let session = SessionId(zxid.as_u64());
                let info = SessionInfo {
                    timeout_ticks: *timeout_ticks,
                    password: *password,
                };
                self.sessions.insert(session, info);
                Ok(TxnResult::SessionCreated {
                    session,
                    timeout_ticks: *timeout_ticks,
                })
            }
            Txn::CloseSession { session, .. } => self.close_session(zxid, *session),
            Txn::Write(op) => {
                let mut undo = Undo::new();
                match self.apply_op(zxid, op, &mut undo) {
                    Ok(r) => Ok(TxnResult::Write(r)),
                    Err(error) => {
                        self.rollback(undo);
                        Err(TxnError { index: 0, error })
                    }
                }
            }
            Txn::Multi(ops) => {
                if ops.is_empty() || ops.len() > MAX_MULTI_OPS {
                    return Err(TxnError {
                        index: 0,
                        error: TreeError::BadMulti,
                    });
                }
                let mut undo = Undo::new();
                let mut results = Vec::with_capacity(ops.len());
                for (index, op) in ops.iter().enumerate() {
                    match self.apply_op(zxid, op, &mut undo) {
                        Ok(r) => results.push(r),
                        Err(error) => {
                            self.rollback(undo);
                            return Err(TxnError { index, error });
                        }
                    }
                }
                Ok(TxnResult::Multi(results))
            }
        }
    }

    /// Deletes every ephemeral node of `session`, then the session, all or nothing.
    fn close_session(&mut self, zxid: Zxid, session: SessionId) -> Result<TxnResult, TxnError> {
        if !self.sessions.contains_key(&session) {
            return Err(TxnError {
                index: 0,
                error: TreeError::NoSession,
            });
        }
        let paths: Vec<String> = self.ephemerals_of(session).map(str::to_string).collect();
        let mut undo = Undo::new();
        for (index, path) in paths.iter().enumerate() {
            let op = WriteOp::Delete {
                path: path.clone(),
                expected_version: None,
            };
            // Ephemeral nodes have no children, so this cannot fail on a sound tree; if it
            // does the tree is not sound and nothing changes.
            if let Err(error) = self.apply_op(zxid, &op, &mut undo) {
                self.rollback(undo);
                return Err(TxnError { index, error });
            }
        }
        self.sessions.remove(&session);
        Ok(TxnResult::SessionClosed { deleted: paths })
    }

    fn rollback(&mut self, undo: Undo) {
        // Newest first: each step is taken back on the tree exactly as that step left it.
        for step in undo.into_iter().rev() {
            match step {
                UndoStep::Created { path } => {
                    self.take(&path);
                }
                UndoStep::Deleted { path, node } => self.put(path, node),
                UndoStep::DataSet { path, data, stat } => {
                    if let Some(node) = self.nodes.get_mut(&path) {
                        node.data = data;
                        node.stat = stat;
                    }
                }
                UndoStep::ChildAdded { parent, name, stat } => {
                    if let Some(node) = self.nodes.get_mut(&parent) {
                        node.children.remove(&name);
                        node.stat = stat;
                    }
                }
                UndoStep::ChildRemoved { parent, name, stat } => {
                    if let Some(node) = self.nodes.get_mut(&parent) {
                        node.children.insert(name);
                        node.stat = stat;
                    }
                }
            }
        }
    }

    fn check_version(node: &Node, expected: Option<u32>) -> Result<(), TreeError> {
        match expected {
            Some(v) if v != node.stat.version => Err(TreeError::BadVersion),
            _ => Ok(()),
        }
    }

    fn apply_op(
        &mut self,
        zxid: Zxid,
        op: &WriteOp,
        undo: &mut Undo,
    ) -> Result<OpResult, TreeError> {
        validate_path(op.path())?;
        match op {
            WriteOp::Create {
                path,
                data,
                sequential,
                ephemeral_owner,
            } => {
                if data.len() > MAX_NODE_DATA_BYTES {
                    return Err(TreeError::DataTooLarge);
                }
                let (parent_path, _) = split_parent(path).ok_or(TreeError::NodeExists)?;
                let parent = self.nodes.get(parent_path).ok_or(TreeError::NoNode)?;
                if parent.stat.ephemeral_owner.is_some() {
                    return Err(TreeError::NoChildrenForEphemerals);
                }
                if let Some(owner) = ephemeral_owner
                    && !self.sessions.contains_key(owner)
                {
                    return Err(TreeError::NoSession);
                }
                let actual = if *sequential {
                    format!("{path}{:010}", parent.stat.cversion)
                } else {
                    path.clone()
                };
                validate_path(&actual)?;
                if self.nodes.contains_key(&actual) {
                    return Err(TreeError::NodeExists);
                }
                let cversion = parent
                    .stat
                    .cversion
                    .checked_add(1)
                    .ok_or(TreeError::SequenceOverflow)?;
                let name = actual[actual.rfind('/').map_or(0, |i| i + 1)..].to_string();
                if let Some(parent) = self.nodes.get_mut(parent_path) {
                    undo.push(UndoStep::ChildAdded {
                        parent: parent_path.to_string(),
                        name: name.clone(),
                        stat: parent.stat,
                    });
                    parent.stat.cversion = cversion;
                    parent.stat.pzxid = zxid;
                    parent.children.insert(name);
                }
                undo.push(UndoStep::Created {
                    path: actual.clone(),
                });
                let stat = Stat {
                    czxid: zxid,
                    mzxid: zxid,
                    pzxid: zxid,
                    ephemeral_owner: *ephemeral_owner,
                    ..Stat::default()
                };
                let node = Node {
                    data: data.clone(),
                    stat,
                    children: BTreeSet::new(),
                };
                let full = Self::full_stat(&node);
                self.put(actual.clone(), node);
                Ok(OpResult::Created {
                    path: actual,
                    stat: full,
                })
            }
            WriteOp::SetData {
                path,
                data,
                expected_version,
            } => {
                if data.len() > MAX_NODE_DATA_BYTES {
                    return Err(TreeError::DataTooLarge);
                }
                let node = self.nodes.get(path).ok_or(TreeError::NoNode)?;
                Self::check_version(node, *expected_version)?;
                let version = node.stat.version.wrapping_add(1);
                let node = self.nodes.get_mut(path).ok_or(TreeError::NoNode)?;
                undo.push(UndoStep::DataSet {
                    path: path.clone(),
                    data: std::mem::replace(&mut node.data, data.clone()),
                    stat: node.stat,
                });
                node.stat.version = version;
                node.stat.mzxid = zxid;
                Ok(OpResult::Set {
                    stat: Self::full_stat(node),
                })
            }
            WriteOp::Delete {
                path,
                expected_version,
            } => {
                let (parent_path, name) = split_parent(path).ok_or(TreeError::BadPath)?;
                let node = self.nodes.get(path).ok_or(TreeError::NoNode)?;
                Self::check_version(node, *expected_version)?;
                if !node.children.is_empty() {
                    return Err(TreeError::NotEmpty);
                }
                let parent = self.nodes.get(parent_path).ok_or(TreeError::NoNode)?;
                let cversion = parent
                    .stat
                    .cversion
                    .checked_add(1)
                    .ok_or(TreeError::SequenceOverflow)?;
                if let Some(node) = self.take(path) {
                    undo.push(UndoStep::Deleted {
                        path: path.clone(),
                        node,
                    });
                }
                if let Some(parent) = self.nodes.get_mut(parent_path) {
                    undo.push(UndoStep::ChildRemoved {
                        parent: parent_path.to_string(),
                        name: name.to_string(),
                        stat: parent.stat,
                    });
                    parent.children.remove(name);
                    parent.stat.cversion = cversion;
                    parent.stat.pzxid = zxid;
                }
                Ok(OpResult::Deleted)
            }
            WriteOp::Check {
                path,
                expected_version,
            } => {
                let node = self.nodes.get(path).ok_or(TreeError::NoNode)?;
                Self::check_version(node, *expected_version)?;
                Ok(OpResult::Checked)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(path: &str, data: &[u8]) -> Txn {
        Txn::Write(WriteOp::Create {
            path: path.into(),
            data: data.to_vec(),
            sequential: false,
            ephemeral_owner: None,
        })
    }

    fn set(path: &str, data: &[u8], v: Option<u32>) -> Txn {
        Txn::Write(WriteOp::SetData {
            path: path.into(),
            data: data.to_vec(),
            expected_version: v,
        })
    }

    #[test]
    fn create_set_cas_delete() {
        let mut t = DataTree::new();
        t.apply(Zxid::new(1, 1), &create("/a", b"x")).unwrap();
        assert_eq!(
            t.apply(Zxid::new(1, 2), &create("/a", b"y"))
                .unwrap_err()
                .error,
            TreeError::NodeExists
        );
        assert_eq!(
            t.apply(Zxid::new(1, 3), &create("/b/c", b""))
                .unwrap_err()
                .error,
            TreeError::NoNode
        );
        let r = t.apply(Zxid::new(1, 4), &set("/a", b"z", Some(0))).unwrap();
        assert!(
            matches!(r, TxnResult::Write(OpResult::Set { stat }) if stat.version == 1 && stat.mzxid == Zxid::new(1, 4))
        );
        assert_eq!(
            t.apply(Zxid::new(1, 5), &set("/a", b"w", Some(0)))
                .unwrap_err()
                .error,
            TreeError::BadVersion
        );
        assert_eq!(t.get("/a").unwrap().0, b"z");
        t.apply(Zxid::new(1, 6), &create("/a/k", b"")).unwrap();
        let del = |v| {
            Txn::Write(WriteOp::Delete {
                path: "/a".into(),
                expected_version: v,
            })
        };
        assert_eq!(
            t.apply(Zxid::new(1, 7), &del(Some(1))).unwrap_err().error,
            TreeError::NotEmpty
        );
        assert_eq!(t.exists("/a").unwrap().unwrap().num_children, 1);
        assert_eq!(t.exists("/a").unwrap().unwrap().cversion, 1);
        assert_eq!(t.children("/").unwrap(), vec!["a".to_string()]);
        assert_eq!(t.applied(), Zxid::new(1, 7));
        // Applying an old zxid again is refused.
        assert!(t.apply(Zxid::new(1, 7), &Txn::Noop).is_err());
    }

    #[test]
    fn sequential_names_use_parent_cversion() {
        let mut t = DataTree::new();
        t.apply(Zxid::new(1, 1), &create("/q", b"")).unwrap();
        let seq = Txn::Write(WriteOp::Create {
            path: "/q/n-".into(),
            data: vec![],
            sequential: true,
            ephemeral_owner: None,
        });
        let r1 = t.apply(Zxid::new(1, 2), &seq).unwrap();
        let r2 = t.apply(Zxid::new(1, 3), &seq).unwrap();
        assert!(
            matches!(r1, TxnResult::Write(OpResult::Created { ref path, .. }) if path == "/q/n-0000000000")
        );
        assert!(
            matches!(r2, TxnResult::Write(OpResult::Created { ref path, .. }) if path == "/q/n-0000000001")
        );
    }

    #[test]
    fn failed_multi_changes_nothing() {
        let mut t = DataTree::new();
        t.apply(Zxid::new(1, 1), &create("/a", b"1")).unwrap();
        let before = t.clone();
        let multi = Txn::Multi(vec![
            WriteOp::SetData {
                path: "/a".into(),
                data: b"2".to_vec(),
                expected_version: Some(0),
            },
            WriteOp::Create {
                path: "/b".into(),
                data: vec![],
                sequential: false,
                ephemeral_owner: None,
            },
            WriteOp::Delete {
                path: "/a".into(),
                expected_version: None,
            },
            WriteOp::Check {
                path: "/b".into(),
                expected_version: Some(3),
            },
        ]);
        let err = t.apply(Zxid::new(1, 2), &multi).unwrap_err();
        assert_eq!(
            err,
            TxnError {
                index: 3,
                error: TreeError::BadVersion
            }
        );
        // Only the applied zxid moved.
        let mut expected = before;
        expected.applied = Zxid::new(1, 2);
        assert_eq!(t, expected);
        let ok = Txn::Multi(vec![
            WriteOp::SetData {
                path: "/a".into(),
                data: b"2".to_vec(),
                expected_version: Some(0),
            },
            WriteOp::Create {
                path: "/b".into(),
                data: vec![],
                sequential: false,
                ephemeral_owner: None,
            },
        ]);
        assert!(
            matches!(t.apply(Zxid::new(1, 3), &ok).unwrap(), TxnResult::Multi(r) if r.len() == 2)
        );
    }

    #[test]
    fn failed_multi_takes_back_every_step_under_one_parent() {
        let mut t = DataTree::new();
        t.apply(Zxid::new(1, 1), &create("/p", b"")).unwrap();
        let owner = open_session(&mut t, Zxid::new(1, 2));
        t.apply(Zxid::new(1, 3), &Txn::Write(eph("/p/e", owner.0)))
            .unwrap();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let zxid = Zxid::new(1, 4 + i as u32);
            t.apply(zxid, &create(&format!("/p/{name}"), b"old"))
                .unwrap();
        }
        let before = t.clone();
        let delete = |path: &str| WriteOp::Delete {
            path: path.into(),
            expected_version: None,
        };
        let make = |path: &str, data: &[u8]| WriteOp::Create {
            path: path.into(),
            data: data.to_vec(),
            sequential: false,
            ephemeral_owner: None,
        };
        // Every kind of step on the same parent and the same paths, twice over, then a
        // failing check: the tree, the parent's children and stat, and the ephemeral index
        // must all be as before.
        let multi = Txn::Multi(vec![
            delete("/p/a"),
            make("/p/a", b"new"),
            WriteOp::SetData {
                path: "/p/a".into(),
                data: b"newer".to_vec(),
                expected_version: Some(0),
            },
            delete("/p/e"),
            make("/p/d", b""),
            make("/p/d/x", b""),
            WriteOp::SetData {
                path: "/p/b".into(),
                data: b"set".to_vec(),
                expected_version: None,
            },
            WriteOp::SetData {
                path: "/p/b".into(),
                data: b"set again".to_vec(),
                expected_version: Some(1),
            },
            delete("/p/c"),
            WriteOp::Create {
                path: "/p/s-".into(),
                data: vec![],
                sequential: true,
                ephemeral_owner: None,
            },
            WriteOp::Check {
                path: "/p".into(),
                expected_version: Some(9),
            },
        ]);
        let err = t.apply(Zxid::new(1, 7), &multi).unwrap_err();
        assert_eq!(err.index, 10);
        let mut expected = before;
        expected.applied = Zxid::new(1, 7);
        assert_eq!(t, expected);
        assert_eq!(t.ephemerals_of(owner).collect::<Vec<_>>(), vec!["/p/e"]);
        assert_eq!(t.children("/p").unwrap(), vec!["a", "b", "c", "e"]);
    }

    #[test]
    fn paths_and_limits() {
        for bad in ["", "a", "/a/", "//a", "/a/./b", "/a/../b", "/a\0"] {
            assert_eq!(validate_path(bad), Err(TreeError::BadPath), "{bad:?}");
        }
        let mut t = DataTree::new();
        let big = vec![0u8; MAX_NODE_DATA_BYTES + 1];
        assert_eq!(
            t.apply(Zxid::new(1, 1), &create("/a", &big))
                .unwrap_err()
                .error,
            TreeError::DataTooLarge
        );
        assert_eq!(
            t.apply(Zxid::new(1, 2), &create("/", b""))
                .unwrap_err()
                .error,
            TreeError::NodeExists
        );
        let owner = open_session(&mut t, Zxid::new(1, 3));
        t.apply(Zxid::new(1, 4), &Txn::Write(eph("/e", owner.0)))
            .unwrap();
        assert_eq!(
            t.apply(Zxid::new(1, 5), &create("/e/x", b""))
                .unwrap_err()
                .error,
            TreeError::NoChildrenForEphemerals
        );
    }

    fn eph(path: &str, owner: u64) -> WriteOp {
        WriteOp::Create {
            path: path.into(),
            data: vec![],
            sequential: false,
            ephemeral_owner: Some(SessionId(owner)),
        }
    }

    fn open_session(t: &mut DataTree, zxid: Zxid) -> SessionId {
        let txn = Txn::CreateSession {
            timeout_ticks: 30,
            password: 7,
        };
        match t.apply(zxid, &txn).unwrap() {
            TxnResult::SessionCreated { session, .. } => session,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn closing_a_session_deletes_its_ephemerals_at_once() {
        let mut t = DataTree::new();
        t.apply(Zxid::new(1, 1), &create("/b", b"")).unwrap();
        let s = open_session(&mut t, Zxid::new(1, 2));
        assert_eq!(s, SessionId(Zxid::new(1, 2).as_u64()));
        let other = open_session(&mut t, Zxid::new(1, 3));
        // Ephemerals need a live owner.
        assert_eq!(
            t.apply(Zxid::new(1, 4), &Txn::Write(eph("/b/x", 99)))
                .unwrap_err()
                .error,
            TreeError::NoSession
        );
        t.apply(Zxid::new(1, 5), &Txn::Write(eph("/b/1", s.0)))
            .unwrap();
        t.apply(Zxid::new(1, 6), &Txn::Write(eph("/b/2", s.0)))
            .unwrap();
        t.apply(Zxid::new(1, 7), &Txn::Write(eph("/b/3", other.0)))
            .unwrap();
        // An ephemeral deleted by hand leaves the index too.
        let del = Txn::Write(WriteOp::Delete {
            path: "/b/2".into(),
            expected_version: None,
        });
        t.apply(Zxid::new(1, 8), &del).unwrap();
        // A failed multi that created an ephemeral leaves no trace in the index.
        let multi = Txn::Multi(vec![
            eph("/b/4", s.0),
            WriteOp::Check {
                path: "/nope".into(),
                expected_version: None,
            },
        ]);
        assert!(t.apply(Zxid::new(1, 9), &multi).is_err());
        assert_eq!(t.ephemerals_of(s).collect::<Vec<_>>(), vec!["/b/1"]);
        let close = Txn::CloseSession {
            session: s,
            expired: true,
        };
        let r = t.apply(Zxid::new(1, 10), &close).unwrap();
        assert_eq!(
            r,
            TxnResult::SessionClosed {
                deleted: vec!["/b/1".to_string()]
            }
        );
        assert_eq!(t.children("/b").unwrap(), vec!["3".to_string()]);
        assert_eq!(t.session(s), None);
        assert!(t.session(other).is_some());
        assert_eq!(t.exists("/b").unwrap().unwrap().pzxid, Zxid::new(1, 10));
        // Closing twice is refused.
        assert_eq!(
            t.apply(Zxid::new(1, 11), &close).unwrap_err().error,
            TreeError::NoSession
        );
        // The index is rebuilt from the nodes alone.
        let rebuilt = DataTree::from_parts(
            t.applied(),
            t.iter()
                .map(|(p, n)| (p.to_string(), n.data.clone(), n.stat)),
            t.sessions(),
        )
        .unwrap();
        assert_eq!(rebuilt, t);
    }

    #[test]
    fn from_nodes_rebuilds_children() {
        let mut t = DataTree::new();
        t.apply(Zxid::new(1, 1), &create("/a", b"1")).unwrap();
        t.apply(Zxid::new(1, 2), &create("/a/b", b"2")).unwrap();
        let rebuilt = DataTree::from_nodes(
            t.applied(),
            t.iter()
                .map(|(p, n)| (p.to_string(), n.data.clone(), n.stat)),
        )
        .unwrap();
        assert_eq!(rebuilt, t);
        assert!(
            DataTree::from_nodes(Zxid::ZERO, [("/x/y".to_string(), vec![], Stat::default())])
                .is_err()
        );
    }
}
