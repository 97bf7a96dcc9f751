//! The data tree: ZooKeeper's data model, a map from path to node with data and [`Stat`].
//!
//! Owns applying committed transactions and answering local reads. Applying is deterministic
//! and total: any transaction on any tree yields a result or a [`TxnError`], never a panic, and
//! a failed `multi` leaves the tree untouched. Never decides what is committed.

use std::collections::{BTreeMap, BTreeSet};

use crate::limits::{MAX_MULTI_OPS, MAX_NODE_DATA_BYTES, MAX_PATH_BYTES};
use crate::txn::{OpResult, Stat, TreeError, Txn, TxnError, TxnResult, WriteOp};
use crate::types::Zxid;

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

/// What a failed multi must restore: the previous value of every path it touched.
type Undo = Vec<(String, Option<Node>)>;

impl DataTree {
    pub fn new() -> DataTree {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_string(), Node::default());
        DataTree {
            nodes,
            applied: Zxid::ZERO,
        }
    }

    /// Rebuilds a tree from `(path, data, stat)` triples (a snapshot). Children sets are derived;
    /// a node whose parent is missing is an error, since the snapshot is then corrupt.
    pub fn from_nodes(
        applied: Zxid,
        entries: impl IntoIterator<Item = (String, Vec<u8>, Stat)>,
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
        Ok(DataTree { nodes, applied })
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

    fn rollback(&mut self, undo: Undo) {
        // Newest first, so a path touched twice ends at its oldest saved value.
        for (path, old) in undo.into_iter().rev() {
            match old {
                Some(node) => {
                    self.nodes.insert(path, node);
                }
                None => {
                    self.nodes.remove(&path);
                }
            }
        }
    }

    fn save(&self, path: &str, undo: &mut Undo) {
        undo.push((path.to_string(), self.nodes.get(path).cloned()));
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
                self.save(parent_path, undo);
                self.save(&actual, undo);
                let name = actual[actual.rfind('/').map_or(0, |i| i + 1)..].to_string();
                if let Some(parent) = self.nodes.get_mut(parent_path) {
                    parent.stat.cversion = cversion;
                    parent.stat.pzxid = zxid;
                    parent.children.insert(name);
                }
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
                self.nodes.insert(actual.clone(), node);
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
                self.save(path, undo);
                let node = self.nodes.get_mut(path).ok_or(TreeError::NoNode)?;
                node.data = data.clone();
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
                self.save(parent_path, undo);
                self.save(path, undo);
                self.nodes.remove(path);
                if let Some(parent) = self.nodes.get_mut(parent_path) {
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
        let eph = Txn::Write(WriteOp::Create {
            path: "/e".into(),
            data: vec![],
            sequential: false,
            ephemeral_owner: Some(crate::types::SessionId(7)),
        });
        t.apply(Zxid::new(1, 3), &eph).unwrap();
        assert_eq!(
            t.apply(Zxid::new(1, 4), &create("/e/x", b""))
                .unwrap_err()
                .error,
            TreeError::NoChildrenForEphemerals
        );
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
