//! Watches, as ZooKeeper 3.6 has them: one-shot data, exists and child watches, and
//! persistent (optionally recursive) watches, per client connection of one node.
//!
//! Owns the watch table of a node and the rules that turn an applied transaction into
//! events: which change fires which watch, with which event type, and which watches a fired
//! event consumes. Also the re-registration after a client moved (ZooKeeper's SetWatches):
//! from the zxid the client last saw, the events it missed are computed from the tree's
//! stats. Never sends anything and never reads a clock; the node emits the events in its
//! output order, which is what puts each event on the connection before any reply that
//! shows the data that fired it.

use std::collections::{BTreeMap, BTreeSet};

use crate::limits::MAX_WATCHES_PER_CONNECTION;
use crate::tree::DataTree;
use crate::txn::{OpResult, Txn, TxnResult, WriteOp};
use crate::types::{ClientId, Zxid};

/// What a watch is set for.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum WatchKind {
    /// One-shot: the node's data changes or it is deleted (set by a read of an existing node).
    Data,
    /// One-shot: the node is created (set by `exists` of a missing node).
    Exist,
    /// One-shot: the node's children change or it is deleted.
    Children,
    /// Stays until removed: every change of the node itself and of its children list.
    Persistent,
    /// Stays until removed: creation, data change and deletion of the node and of every node
    /// below it (ZooKeeper's PERSISTENT_RECURSIVE; no children-changed events).
    PersistentRecursive,
}

impl WatchKind {
    pub fn is_persistent(self) -> bool {
        matches!(self, WatchKind::Persistent | WatchKind::PersistentRecursive)
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum EventType {
    NodeCreated,
    NodeDeleted,
    NodeDataChanged,
    NodeChildrenChanged,
}

/// One event, for one client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct WatchEvent {
    pub kind: EventType,
    pub path: String,
    /// The transaction that caused it (for missed events after a move: the node's state
    /// when it found the change).
    pub zxid: Zxid,
}

/// One change a transaction made, in the order it made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created(String),
    Deleted(String),
    DataChanged(String),
    ChildrenChanged(String),
}

fn parent_of(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    let cut = path.rfind('/')?;
    Some(if cut == 0 { "/" } else { &path[..cut] })
}

fn op_changes(op: &WriteOp, result: &OpResult, out: &mut Vec<Change>) {
    let with_parent = |path: &str, out: &mut Vec<Change>| {
        if let Some(parent) = parent_of(path) {
            out.push(Change::ChildrenChanged(parent.to_string()));
        }
    };
    match (op, result) {
        (WriteOp::Create { .. }, OpResult::Created { path, .. }) => {
            out.push(Change::Created(path.clone()));
            with_parent(path, out);
        }
        (WriteOp::SetData { path, .. }, OpResult::Set { .. }) => {
            out.push(Change::DataChanged(path.clone()));
        }
        (WriteOp::Delete { path, .. }, OpResult::Deleted) => {
            out.push(Change::Deleted(path.clone()));
            with_parent(path, out);
        }
        _ => {}
    }
}

/// The changes of one successfully applied transaction (a failed one changes nothing).
pub fn changes_of(txn: &Txn, result: &TxnResult) -> Vec<Change> {
    let mut out = Vec::new();
    match (txn, result) {
        (Txn::Write(op), TxnResult::Write(r)) => op_changes(op, r, &mut out),
        (Txn::Multi(ops), TxnResult::Multi(rs)) => {
            for (op, r) in ops.iter().zip(rs) {
                op_changes(op, r, &mut out);
            }
        }
        (Txn::CloseSession { .. }, TxnResult::SessionClosed { deleted }) => {
            for path in deleted {
                out.push(Change::Deleted(path.clone()));
                if let Some(parent) = parent_of(path) {
                    out.push(Change::ChildrenChanged(parent.to_string()));
                }
            }
        }
        _ => {}
    }
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("connection holds {limit} watches already")]
pub struct TooManyWatches {
    pub limit: usize,
}

/// Every watch of one node's connections.
#[derive(Debug, Default)]
pub struct WatchTable {
    by_path: BTreeMap<(WatchKind, String), BTreeSet<ClientId>>,
    by_client: BTreeMap<ClientId, BTreeSet<(WatchKind, String)>>,
}

impl WatchTable {
    pub fn add(
        &mut self,
        client: ClientId,
        kind: WatchKind,
        path: &str,
    ) -> Result<(), TooManyWatches> {
        let mine = self.by_client.entry(client).or_default();
        let key = (kind, path.to_string());
        if mine.contains(&key) {
            return Ok(());
        }
        if mine.len() >= MAX_WATCHES_PER_CONNECTION {
            return Err(TooManyWatches {
                limit: MAX_WATCHES_PER_CONNECTION,
            });
        }
        mine.insert(key.clone());
        self.by_path.entry(key).or_default().insert(client);
        Ok(())
    }

    pub fn remove(&mut self, client: ClientId, kind: WatchKind, path: &str) -> bool {
        let key = (kind, path.to_string());
        let had = self
            .by_client
            .get_mut(&client)
            .is_some_and(|m| m.remove(&key));
        if let Some(set) = self.by_path.get_mut(&key) {
            set.remove(&client);
            if set.is_empty() {
                self.by_path.remove(&key);
            }
        }
        had
    }

    /// A connection closed: its watches go with it.
    pub fn drop_client(&mut self, client: ClientId) {
        for key in self.by_client.remove(&client).unwrap_or_default() {
            if let Some(set) = self.by_path.get_mut(&key) {
                set.remove(&client);
                if set.is_empty() {
                    self.by_path.remove(&key);
                }
            }
        }
    }

    pub fn count(&self, client: ClientId) -> usize {
        self.by_client.get(&client).map_or(0, BTreeSet::len)
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Consumes (one-shot) or keeps (persistent) every watch of `kind` on `path`, returning
    /// its clients.
    fn fire(&mut self, kind: WatchKind, path: &str) -> Vec<ClientId> {
        let key = (kind, path.to_string());
        if kind.is_persistent() {
            return self
                .by_path
                .get(&key)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
        }
        let clients: Vec<ClientId> = self
            .by_path
            .remove(&key)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        for c in &clients {
            if let Some(m) = self.by_client.get_mut(c) {
                m.remove(&key);
            }
        }
        clients
    }

    /// The events of one applied transaction, in change order; each client is told once
    /// per change however many of its watches match it.
    pub fn trigger(&mut self, zxid: Zxid, changes: &[Change]) -> Vec<(ClientId, WatchEvent)> {
        let mut events = Vec::new();
        if self.by_path.is_empty() {
            return events;
        }
        for change in changes {
            let (kind, path, direct): (EventType, &str, &[WatchKind]) = match change {
                Change::Created(p) => (
                    EventType::NodeCreated,
                    p,
                    &[WatchKind::Exist, WatchKind::Persistent],
                ),
                Change::Deleted(p) => (
                    EventType::NodeDeleted,
                    p,
                    &[WatchKind::Data, WatchKind::Children, WatchKind::Persistent],
                ),
                Change::DataChanged(p) => (
                    EventType::NodeDataChanged,
                    p,
                    &[WatchKind::Data, WatchKind::Persistent],
                ),
                Change::ChildrenChanged(p) => (
                    EventType::NodeChildrenChanged,
                    p,
                    &[WatchKind::Children, WatchKind::Persistent],
                ),
            };
            let mut told: BTreeSet<ClientId> = BTreeSet::new();
            for &k in direct {
                told.extend(self.fire(k, path));
            }
            // Recursive watches on the path or any ancestor; never for children changes.
            if kind != EventType::NodeChildrenChanged {
                let mut at = Some(path);
                while let Some(p) = at {
                    told.extend(self.fire(WatchKind::PersistentRecursive, p));
                    at = parent_of(p);
                }
            }
            for client in told {
                let event = WatchEvent {
                    kind,
                    path: path.to_string(),
                    zxid,
                };
                events.push((client, event));
            }
        }
        events
    }

    /// Re-registers a moved client's watches against `tree`, as ZooKeeper's SetWatches: a
    /// one-shot watch whose change happened after `since` fires at once (and is consumed);
    /// the others are set. Persistent watches are set without computing missed events
    /// (ZooKeeper does the same: their history is not kept).
    pub fn rewatch(
        &mut self,
        client: ClientId,
        since: Zxid,
        watches: &[(WatchKind, String)],
        tree: &DataTree,
    ) -> Result<Vec<WatchEvent>, TooManyWatches> {
        let now = tree.applied();
        let mut events = Vec::new();
        let event = |kind, path: &str| WatchEvent {
            kind,
            path: path.to_string(),
            zxid: now,
        };
        for (kind, path) in watches {
            let stat = tree.exists(path).ok().flatten();
            let missed = match (kind, stat) {
                (WatchKind::Data, None) | (WatchKind::Children, None) => {
                    Some(event(EventType::NodeDeleted, path))
                }
                (WatchKind::Data, Some(s)) if s.mzxid > since => {
                    Some(event(EventType::NodeDataChanged, path))
                }
                (WatchKind::Exist, Some(_)) => Some(event(EventType::NodeCreated, path)),
                (WatchKind::Children, Some(s)) if s.pzxid > since => {
                    Some(event(EventType::NodeChildrenChanged, path))
                }
                _ => None,
            };
            match missed {
                Some(e) => events.push(e),
                None => self.add(client, *kind, path)?,
            }
        }
        Ok(events)
    }

    /// Every watch as `(client, kind, path)`, for re-checking them all after the tree was
    /// replaced by a leader's snapshot.
    pub fn all(&self) -> Vec<(ClientId, WatchKind, String)> {
        self.by_client
            .iter()
            .flat_map(|(c, ws)| ws.iter().map(|(k, p)| (*c, *k, p.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::Txn;

    fn create(path: &str) -> Txn {
        Txn::Write(WriteOp::Create {
            path: path.into(),
            data: vec![],
            sequential: false,
            ephemeral_owner: None,
        })
    }

    fn apply(
        t: &mut DataTree,
        w: &mut WatchTable,
        c: u32,
        txn: Txn,
    ) -> Vec<(ClientId, WatchEvent)> {
        let zxid = Zxid::new(1, c);
        let r = t.apply(zxid, &txn).unwrap();
        w.trigger(zxid, &changes_of(&txn, &r))
    }

    fn kinds(events: &[(ClientId, WatchEvent)]) -> Vec<(u64, EventType, &str)> {
        events
            .iter()
            .map(|(c, e)| (c.0, e.kind, e.path.as_str()))
            .collect()
    }

    #[test]
    fn one_shot_watches_fire_once_and_persistent_ones_stay() {
        let mut t = DataTree::new();
        let mut w = WatchTable::default();
        let (a, b) = (ClientId(1), ClientId(2));
        w.add(a, WatchKind::Exist, "/x").unwrap();
        w.add(a, WatchKind::Children, "/").unwrap();
        w.add(b, WatchKind::PersistentRecursive, "/").unwrap();
        let ev = apply(&mut t, &mut w, 1, create("/x"));
        assert_eq!(
            kinds(&ev),
            vec![
                (1, EventType::NodeCreated, "/x"),
                (2, EventType::NodeCreated, "/x"),
                (1, EventType::NodeChildrenChanged, "/"),
            ]
        );
        // Consumed: a second create under / tells only the persistent watcher.
        let ev = apply(&mut t, &mut w, 2, create("/y"));
        assert_eq!(kinds(&ev), vec![(2, EventType::NodeCreated, "/y")]);
        w.add(a, WatchKind::Data, "/x").unwrap();
        w.add(a, WatchKind::Children, "/x").unwrap();
        let del = Txn::Write(WriteOp::Delete {
            path: "/x".into(),
            expected_version: None,
        });
        // Two of a's watches match the delete: it is told once.
        let ev = apply(&mut t, &mut w, 3, del);
        assert_eq!(
            kinds(&ev),
            vec![
                (1, EventType::NodeDeleted, "/x"),
                (2, EventType::NodeDeleted, "/x"),
            ]
        );
        assert_eq!(w.count(a), 0);
        assert_eq!(w.count(b), 1);
        w.drop_client(b);
        assert!(w.is_empty());
    }

    #[test]
    fn rewatch_reports_what_was_missed_since_a_zxid() {
        let mut t = DataTree::new();
        let mut w = WatchTable::default();
        apply(&mut t, &mut w, 1, create("/a"));
        apply(&mut t, &mut w, 2, create("/b"));
        let seen = t.applied();
        let set = Txn::Write(WriteOp::SetData {
            path: "/a".into(),
            data: b"new".to_vec(),
            expected_version: None,
        });
        apply(&mut t, &mut w, 3, set);
        apply(&mut t, &mut w, 4, create("/c"));
        let c = ClientId(9);
        let watches = vec![
            (WatchKind::Data, "/a".to_string()),
            (WatchKind::Data, "/b".to_string()),
            (WatchKind::Exist, "/c".to_string()),
            (WatchKind::Exist, "/d".to_string()),
            (WatchKind::Children, "/".to_string()),
            (WatchKind::Data, "/gone".to_string()),
        ];
        let ev = w.rewatch(c, seen, &watches, &t).unwrap();
        let got: Vec<(EventType, &str)> = ev.iter().map(|e| (e.kind, e.path.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (EventType::NodeDataChanged, "/a"),
                (EventType::NodeCreated, "/c"),
                (EventType::NodeChildrenChanged, "/"),
                (EventType::NodeDeleted, "/gone"),
            ]
        );
        // The unchanged ones are set.
        assert_eq!(w.count(c), 2);
    }
}
