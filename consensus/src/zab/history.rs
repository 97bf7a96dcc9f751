//! A node's history: the tree of committed state, the log entries it holds in memory, and
//! the commit and durability points over them.
//!
//! Owns the invariants every role relies on: zxids in the log strictly increase; the commit
//! point never moves back and never passes the log's end; committed entries are never
//! truncated; the tree is exactly the committed prefix applied in order. Never sends
//! messages; it only emits the disk operations that mirror its changes.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{DiskOp, Output};
use crate::store::Recovered;
use crate::tree::DataTree;
use crate::txn::{LogEntry, TxnError, TxnResult};
use crate::types::Zxid;
use crate::watch::{self, Change};

/// A broken protocol invariant; the node leaves its role rather than corrupt its state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("append of {zxid} after {last}")]
    OutOfOrder { zxid: Zxid, last: Zxid },
    #[error("truncating to {after} would drop committed {committed}")]
    TruncateCommitted { after: Zxid, committed: Zxid },
    #[error("commit of {zxid} beyond the log's end {last}")]
    CommitBeyondLog { zxid: Zxid, last: Zxid },
    #[error("snapshot at {snapshot} is older than committed {committed}")]
    StaleSnapshot { snapshot: Zxid, committed: Zxid },
}

/// What committing returns per applied transaction: its zxid and result (for the replies)
/// and the changes it made (for the watches).
pub type Applied = Vec<(Zxid, Result<TxnResult, TxnError>, Vec<Change>)>;

#[derive(Debug)]
pub struct History {
    tree: DataTree,
    /// Entries after `base`, committed ones first. Entries up to `base` are only in the tree.
    entries: VecDeque<LogEntry>,
    base: Zxid,
    committed: Zxid,
    durable: Zxid,
    /// Bumped by anything that rewrites the log, so an old sync completion is not believed.
    generation: u64,
    sync_in_flight: bool,
    since_snapshot: u64,
}

impl History {
    /// From recovery: the snapshot is committed; the log after it is not known to be.
    pub fn recover(r: Recovered) -> History {
        let base = r.tree.applied();
        let last = r.log.last().map_or(base, |e| e.zxid);
        History {
            tree: r.tree,
            entries: r.log.into(),
            base,
            committed: base,
            durable: last,
            generation: 0,
            sync_in_flight: false,
            since_snapshot: 0,
        }
    }

    pub fn tree(&self) -> &DataTree {
        &self.tree
    }

    pub fn committed(&self) -> Zxid {
        self.committed
    }

    pub fn durable(&self) -> Zxid {
        self.durable
    }

    pub fn base(&self) -> Zxid {
        self.base
    }

    pub fn last(&self) -> Zxid {
        self.entries.back().map_or(self.base, |e| e.zxid)
    }

    /// Entries after `after` (which must be `>= base`).
    pub fn entries_after(&self, after: Zxid) -> Vec<LogEntry> {
        self.entries
            .iter()
            .filter(|e| e.zxid > after)
            .cloned()
            .collect()
    }

    /// The last zxid of `epoch` in this history, if known (in memory or at the base).
    pub fn last_of_epoch(&self, epoch: u32) -> Option<Zxid> {
        let in_log = self
            .entries
            .iter()
            .rev()
            .find(|e| e.zxid.epoch == epoch)
            .map(|e| e.zxid);
        // Entries of an epoch are contiguous, so with none in memory the epoch ends at the
        // base if the base is in it; an older epoch's end is no longer known.
        in_log.or_else(|| (self.base.epoch == epoch).then_some(self.base))
    }

    /// The last zxid of each epoch among the entries after the commit point.
    pub fn epoch_ends(&self) -> Vec<Zxid> {
        let mut ends: Vec<Zxid> = Vec::new();
        for e in self.entries.iter().filter(|e| e.zxid > self.committed) {
            match ends.last_mut() {
                Some(last) if last.epoch == e.zxid.epoch => *last = e.zxid,
                _ => ends.push(e.zxid),
            }
        }
        ends
    }

    /// Appends an entry (buffered) and asks for a sync if none is in flight: group commit,
    /// the next sync covers everything appended while this one runs.
    pub fn append(&mut self, entry: LogEntry, out: &mut Vec<Output>) -> Result<(), HistoryError> {
        let last = self.last();
        if entry.zxid <= last {
            return Err(HistoryError::OutOfOrder {
                zxid: entry.zxid,
                last,
            });
        }
        out.push(Output::Disk(DiskOp::Append(entry.clone())));
        self.entries.push_back(entry);
        self.request_sync(out);
        Ok(())
    }

    /// Asks for everything appended to become durable, unless it already is or a sync runs.
    pub fn request_sync(&mut self, out: &mut Vec<Output>) {
        if !self.sync_in_flight && self.durable < self.last() {
            self.sync_in_flight = true;
            out.push(Output::Disk(DiskOp::Sync {
                generation: self.generation,
                through: self.last(),
            }));
        }
    }

    /// A sync completed. Returns whether the durable point moved.
    pub fn synced(&mut self, generation: u64, through: Zxid, out: &mut Vec<Output>) -> bool {
        if generation != self.generation {
            return false;
        }
        self.sync_in_flight = false;
        let moved = through > self.durable;
        if moved {
            self.durable = through;
        }
        self.request_sync(out);
        moved
    }

    /// Treat the appended log as durable without a sync (only for the simulator's `Fault` switch).
    pub fn pretend_durable(&mut self) {
        self.durable = self.last();
    }

    /// Durably drops every entry after `after` (ZAB's TRUNC).
    pub fn truncate_after(
        &mut self,
        after: Zxid,
        out: &mut Vec<Output>,
    ) -> Result<(), HistoryError> {
        if after < self.committed {
            return Err(HistoryError::TruncateCommitted {
                after,
                committed: self.committed,
            });
        }
        while self.entries.back().is_some_and(|e| e.zxid > after) {
            self.entries.pop_back();
        }
        out.push(Output::Disk(DiskOp::Truncate { after }));
        // The truncate is synced, so everything left is durable.
        self.durable = self.last();
        self.generation += 1;
        self.sync_in_flight = false;
        Ok(())
    }

    /// Replaces everything with a leader's committed tree (ZAB's SNAP).
    pub fn install(
        &mut self,
        tree: Arc<DataTree>,
        out: &mut Vec<Output>,
    ) -> Result<(), HistoryError> {
        let zxid = tree.applied();
        if zxid < self.committed {
            return Err(HistoryError::StaleSnapshot {
                snapshot: zxid,
                committed: self.committed,
            });
        }
        out.push(Output::Disk(DiskOp::ResetToSnapshot(tree.clone())));
        out.push(Output::Installed { zxid });
        self.tree = (*tree).clone();
        self.entries.clear();
        self.base = zxid;
        self.committed = zxid;
        self.durable = zxid;
        self.generation += 1;
        self.sync_in_flight = false;
        self.since_snapshot = 0;
        Ok(())
    }

    /// Applies every entry through `through` to the tree. Returns each applied entry with its
    /// result, for replies. Emits a snapshot when one is due.
    pub fn commit_through(
        &mut self,
        through: Zxid,
        snapshot_every_txns: u64,
        retained_txns: usize,
        out: &mut Vec<Output>,
    ) -> Result<Applied, HistoryError> {
        let mut results = Vec::new();
        if through <= self.committed {
            return Ok(results);
        }
        let last = self.last();
        if through > last {
            return Err(HistoryError::CommitBeyondLog {
                zxid: through,
                last,
            });
        }
        // Entries are in zxid order: find the range by bisection, not by a scan of everything
        // retained (up to a snapshot interval of entries, on every commit).
        let from = self.entries.partition_point(|e| e.zxid <= self.committed);
        let to = self.entries.partition_point(|e| e.zxid <= through);
        for e in self.entries.range(from..to) {
            let r = self.tree.apply(e.zxid, &e.txn);
            out.push(Output::Applied { entry: e.clone() });
            let changes = r
                .as_ref()
                .map_or_else(|_| Vec::new(), |r| watch::changes_of(&e.txn, r));
            results.push((e.zxid, r, changes));
        }
        self.committed = through;
        self.since_snapshot += results.len() as u64;
        if self.since_snapshot >= snapshot_every_txns {
            self.since_snapshot = 0;
            out.push(Output::Disk(DiskOp::Snapshot(Arc::new(self.tree.clone()))));
            // Keep a tail of committed entries for DIFFs; older ones live in the snapshot.
            let committed_count = self
                .entries
                .iter()
                .take_while(|e| e.zxid <= self.committed)
                .count();
            let drop = committed_count.saturating_sub(retained_txns);
            for _ in 0..drop {
                if let Some(e) = self.entries.pop_front() {
                    self.base = e.zxid;
                }
            }
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Epochs;
    use crate::txn::Txn;

    fn fresh() -> History {
        History::recover(Recovered {
            epochs: Epochs::default(),
            tree: DataTree::new(),
            log: vec![],
        })
    }

    fn noop(e: u32, c: u32) -> LogEntry {
        LogEntry {
            zxid: Zxid::new(e, c),
            txn: Txn::Noop,
        }
    }

    #[test]
    fn group_commit_and_generations() {
        let mut h = fresh();
        let mut out = vec![];
        h.append(noop(1, 1), &mut out).unwrap();
        h.append(noop(1, 2), &mut out).unwrap();
        let syncs = out
            .iter()
            .filter(|o| matches!(o, Output::Disk(DiskOp::Sync { .. })))
            .count();
        assert_eq!(syncs, 1, "one sync in flight at a time");
        out.clear();
        assert!(h.synced(0, Zxid::new(1, 1), &mut out));
        assert!(
            matches!(out[..], [Output::Disk(DiskOp::Sync { through, .. })] if through == Zxid::new(1, 2))
        );
        h.truncate_after(Zxid::new(1, 1), &mut out).unwrap();
        // A completion from before the truncate is not believed.
        assert!(!h.synced(0, Zxid::new(1, 2), &mut out));
        assert_eq!(h.durable(), Zxid::new(1, 1));
        assert!(h.append(noop(1, 1), &mut out).is_err());
    }

    #[test]
    fn commits_apply_in_order_and_never_truncate_committed() {
        let mut h = fresh();
        let mut out = vec![];
        for c in 1..=5 {
            h.append(noop(1, c), &mut out).unwrap();
        }
        assert!(
            h.commit_through(Zxid::new(1, 6), 100, 10, &mut out)
                .is_err()
        );
        let r = h.commit_through(Zxid::new(1, 3), 2, 1, &mut out).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(h.tree().applied(), Zxid::new(1, 3));
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Disk(DiskOp::Snapshot(_))))
        );
        assert_eq!(h.base(), Zxid::new(1, 2), "one committed entry retained");
        assert_eq!(h.epoch_ends(), vec![Zxid::new(1, 5)]);
        assert!(h.truncate_after(Zxid::new(1, 2), &mut out).is_err());
        h.truncate_after(Zxid::new(1, 4), &mut out).unwrap();
        assert_eq!(h.last(), Zxid::new(1, 4));
        assert_eq!(h.last_of_epoch(1), Some(Zxid::new(1, 4)));
        assert_eq!(h.last_of_epoch(2), None);
    }
}
