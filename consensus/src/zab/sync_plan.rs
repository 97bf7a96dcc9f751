//! How a leader brings one follower's history to its own: DIFF, TRUNC or SNAP.
//!
//! Owns the choice and the entries to send; pure over the leader's [`History`]. Never
//! truncates below the follower's commit point: committed entries are in every later leader's
//! history, so the follower's commit point is always a common point.

use std::sync::Arc;

use super::history::History;
use super::message::SyncPlan;
use crate::txn::LogEntry;
use crate::types::Zxid;

/// The plan for a follower whose log ends at `f_last`, that committed through `f_committed`,
/// and whose log after that holds epochs ending at `ends`.
///
/// The common point starts at its commit point and moves up per epoch: entries of one epoch
/// are contiguous from that epoch's first proposal in every history (one leader proposed them
/// in order, over a FIFO channel), so of two runs of one epoch the shorter is shared.
pub fn plan(
    h: &History,
    f_last: Zxid,
    f_committed: Zxid,
    ends: &[Zxid],
) -> (SyncPlan, Vec<LogEntry>) {
    let mut common = f_committed.min(h.last());
    for end in ends {
        if let Some(ours) = h.last_of_epoch(end.epoch) {
            common = common.max((*end).min(ours));
        }
    }
    if common < h.base() {
        // Our log no longer reaches back there: send the committed tree and what follows.
        let tree = Arc::new(h.tree().clone());
        return (SyncPlan::Snap(tree), h.entries_after(h.committed()));
    }
    let entries = h.entries_after(common);
    if common == f_last {
        (SyncPlan::Diff, entries)
    } else {
        (SyncPlan::Trunc { after: common }, entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Epochs;
    use crate::store::Recovered;
    use crate::tree::DataTree;
    use crate::txn::Txn;

    fn history(zxids: &[(u32, u32)], committed: (u32, u32), retained: usize) -> History {
        let log = zxids
            .iter()
            .map(|&(e, c)| LogEntry {
                zxid: Zxid::new(e, c),
                txn: Txn::Noop,
            })
            .collect();
        let mut h = History::recover(Recovered {
            epochs: Epochs::default(),
            tree: DataTree::new(),
            log,
        });
        let committed = Zxid::new(committed.0, committed.1);
        h.commit_through(committed, 1, retained, &mut vec![])
            .unwrap();
        h
    }

    fn z(e: u32, c: u32) -> Zxid {
        Zxid::new(e, c)
    }

    #[test]
    fn diff_trunc_and_snap() {
        // Leader: (1,1..3) committed, then epoch 3 proposals.
        let h = history(&[(1, 1), (1, 2), (1, 3), (3, 1), (3, 2)], (1, 3), 10);
        // A follower that is a prefix of us gets a DIFF.
        let (p, e) = plan(&h, z(1, 2), z(1, 1), &[z(1, 2)]);
        assert!(matches!(p, SyncPlan::Diff));
        assert_eq!(e.first().map(|e| e.zxid), Some(z(1, 3)));
        // One with epoch-2 proposals no leader kept is cut back to (1,3).
        let (p, e) = plan(&h, z(2, 4), z(1, 1), &[z(1, 3), z(2, 4)]);
        assert!(matches!(p, SyncPlan::Trunc { after } if after == z(1, 3)));
        assert_eq!(
            e.iter().map(|e| e.zxid).collect::<Vec<_>>(),
            vec![z(3, 1), z(3, 2)]
        );
        // One that ran ahead within epoch 1 (uncommitted (1,4)) is cut back too.
        let (p, _) = plan(&h, z(1, 4), z(1, 1), &[z(1, 4)]);
        assert!(matches!(p, SyncPlan::Trunc { after } if after == z(1, 3)));
    }

    #[test]
    fn too_far_behind_gets_the_tree() {
        // Nothing retained after the snapshot: the log starts after (1,3).
        let h = history(&[(1, 1), (1, 2), (1, 3), (3, 1)], (1, 3), 0);
        let (p, e) = plan(&h, z(1, 1), z(1, 1), &[]);
        assert!(matches!(p, SyncPlan::Snap(ref t) if t.applied() == z(1, 3)));
        assert_eq!(e.iter().map(|e| e.zxid).collect::<Vec<_>>(), vec![z(3, 1)]);
    }
}
