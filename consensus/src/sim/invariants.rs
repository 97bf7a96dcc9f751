//! Protocol invariants checked as the simulation runs: at most one leader per epoch, and one
//! committed sequence that every node applies as a prefix, never losing or reordering a
//! committed zxid, and whose replay equals every node's tree.
//!
//! Owns the global committed sequence (the union of what any node applied). Never looks
//! inside a node beyond its public observers.

use std::collections::{BTreeMap, HashMap};

use crate::tree::DataTree;
use crate::txn::LogEntry;
use crate::types::{Epoch, NodeId, Zxid};

#[derive(Debug, Default)]
pub struct Invariants {
    leaders: BTreeMap<Epoch, NodeId>,
    committed: Vec<LogEntry>,
    index: HashMap<Zxid, usize>,
    /// How many entries of `committed` each node has applied.
    applied: BTreeMap<NodeId, usize>,
    pub violations: Vec<String>,
}

impl Invariants {
    pub fn committed(&self) -> &[LogEntry] {
        &self.committed
    }

    pub fn leading(&mut self, node: NodeId, epoch: Epoch) {
        let first = *self.leaders.entry(epoch).or_insert(node);
        if first != node {
            self.violations.push(format!(
                "two leaders in epoch {}: {first} and {node}",
                epoch.0
            ));
        }
    }

    /// `node` applied `entry` as its next committed transaction.
    pub fn applied(&mut self, node: NodeId, entry: &LogEntry) {
        let k = self.applied.entry(node).or_insert(0);
        match self.committed.get(*k) {
            Some(expected) if expected == entry => {}
            Some(expected) => self.violations.push(format!(
                "{node} applied {entry:?} as committed #{k}, but {expected:?} was committed there"
            )),
            None => {
                self.index.insert(entry.zxid, self.committed.len());
                self.committed.push(entry.clone());
            }
        }
        *k += 1;
    }

    /// `node`'s tree was set to the committed state at `zxid` (recovery or a leader's SNAP).
    /// `restart` allows going back (a restarted node starts from its last snapshot).
    pub fn reset(&mut self, node: NodeId, zxid: Zxid, restart: bool) {
        let k = if zxid == Zxid::ZERO {
            0
        } else if let Some(i) = self.index.get(&zxid) {
            i + 1
        } else {
            self.violations.push(format!(
                "{node} holds committed state at {zxid}, which was never committed"
            ));
            return;
        };
        let before = self.applied.get(&node).copied().unwrap_or(0);
        if !restart && k < before {
            self.violations
                .push(format!("{node} went back from committed #{before} to #{k}"));
        }
        self.applied.insert(node, k);
    }

    /// Replays the first `k` committed entries and compares with `tree`.
    pub fn tree_matches(&self, node: NodeId, tree: &DataTree, k: usize) -> Option<String> {
        let mut replay = DataTree::new();
        for e in &self.committed[..k.min(self.committed.len())] {
            // Failed transactions are part of the history too; their result is irrelevant here.
            let _ = replay.apply(e.zxid, &e.txn);
        }
        (replay != *tree)
            .then(|| format!("{node}'s tree differs from the replay of {k} committed entries"))
    }

    pub fn applied_count(&self, node: NodeId) -> usize {
        self.applied.get(&node).copied().unwrap_or(0)
    }
}
