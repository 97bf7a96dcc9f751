//! Partition reassignment (KIP-455), decided by the controller: a partition moves from its
//! replicas to a target set by first growing to both, then shrinking to the target once every
//! target replica is in sync.
//!
//! - `start`: the partition's replicas become the target followed by the replicas leaving
//!   (`adding` = target minus current, `removing` = current minus target); the leader and the
//!   in-sync set are unchanged, so nothing is lost and clients see no leader change. A new
//!   target replaces an ongoing reassignment: it starts again from the replicas the partition
//!   had before it. The new replicas fetch from the leader like any follower; the leader adds
//!   each to the in-sync set once it caught up (AlterPartition).
//! - `complete`: once every target replica is in the in-sync set, the replicas become the
//!   target, the in-sync set keeps only target replicas and, when the leader is leaving, the
//!   first target replica in sync, live and not shutting down leads. The controller tries it
//!   in the same write as every in-sync set change it commits (AlterPartition), and in
//!   `start` (a target already in sync completes at once).
//! - `cancel`: back to the replicas the partition had before (`adding` leave, the in-sync set
//!   keeps only original replicas, a leader that was added hands over to an original one);
//!   refused when no original replica is in sync.
//!
//! Every change bumps the partition epoch, so a leader's AlterPartition against the older
//! state is refused and retried; a change that removes a replica or the leader bumps the
//! leader epoch too.
//!
//! Pure: the handlers run it on the controller's latest image inside its fenced transaction.

use corebus_wire::error_code::ResponseError;

use super::PartitionMeta;
use super::image::{BrokerId, NO_LEADER};

/// Why a reassignment was refused: Kafka's error code and a message.
pub type Refusal = (ResponseError, String);

/// The partition's state once a reassignment to `target` has started (or completed at once,
/// when nothing has to be copied), or the error Kafka gives for the target. `Ok(None)`: the
/// partition is already exactly that (the same plan sent again), nothing to write.
///
/// A new target replaces an ongoing reassignment as Kafka does: counted from the replicas
/// the partition had before it (`adding` = target minus those, `removing` = those minus
/// target); a replica added by the old plan and not in the new target leaves at once. The
/// in-sync set keeps every member that stays a replica; a leader that leaves hands over to
/// the first replica in sync, live and not shutting down, and a target that would leave the
/// partition without one is refused.
///
/// `allow_rf_change` false (AlterPartitionReassignments v1) refuses a target of another size
/// than the partition's current target (its replicas when it is not being reassigned).
pub fn start(
    meta: &PartitionMeta,
    target: &[BrokerId],
    allow_rf_change: bool,
    live: &[BrokerId],
    barred: &[BrokerId],
) -> Result<Option<PartitionMeta>, Refusal> {
    if target.is_empty() {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "the target replica list is empty".into(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = target.iter().find(|b| !seen.insert(**b)) {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            format!("broker {dup} appears twice in the target replicas"),
        ));
    }
    if let Some(unknown) = target.iter().find(|b| !live.contains(b)) {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            format!("broker {unknown} is not a registered, live broker"),
        ));
    }
    let current_target = meta.target_replicas();
    if !allow_rf_change && target.len() != current_target.len() {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!(
                "the target has {} replicas and the partition {}; the request does not allow \
                 the replication factor to change",
                target.len(),
                current_target.len()
            ),
        ));
    }
    let original = meta.original_replicas();
    let mut next = meta.clone();
    next.removing = original
        .iter()
        .copied()
        .filter(|b| !target.contains(b))
        .collect();
    next.adding = target
        .iter()
        .copied()
        .filter(|b| !original.contains(b))
        .collect();
    next.replicas = target
        .iter()
        .copied()
        .chain(next.removing.clone())
        .collect();
    next.isr.retain(|b| next.replicas.contains(b));
    keep_or_elect(&mut next, live, barred);
    if meta.leader != NO_LEADER && next.leader == NO_LEADER {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "no in-sync replica of the partition would remain to lead it".into(),
        ));
    }
    if let Some(done) = complete(&next, live, barred) {
        next = done;
    }
    if next == *meta {
        return Ok(None);
    }
    Ok(Some(with_epochs(meta, next)))
}

/// The partition with its reassignment completed, when every target replica is in sync;
/// `None` when it has no reassignment or one still copying.
pub fn complete(
    meta: &PartitionMeta,
    live: &[BrokerId],
    barred: &[BrokerId],
) -> Option<PartitionMeta> {
    if !meta.is_reassigning() {
        return None;
    }
    let target = meta.target_replicas();
    if !target.iter().all(|b| meta.isr.contains(b)) {
        return None;
    }
    Some(with_epochs(meta, settled_on(meta, target, live, barred)))
}

/// The partition back on the replicas it had before its reassignment; refused when it has
/// none, or when no original replica is in sync (reverting would need an unclean election:
/// Kafka refuses it the same way).
pub fn cancel(
    meta: &PartitionMeta,
    live: &[BrokerId],
    barred: &[BrokerId],
) -> Result<PartitionMeta, Refusal> {
    if !meta.is_reassigning() {
        return Err((
            ResponseError::NoReassignmentInProgress,
            "no reassignment is in progress".into(),
        ));
    }
    let next = settled_on(meta, meta.original_replicas(), live, barred);
    if next.isr.is_empty() {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "no original replica is in sync: reverting would need an unclean leader election"
                .into(),
        ));
    }
    Ok(with_epochs(meta, next))
}

/// `meta` on exactly `replicas`: no reassignment, the in-sync set cut to them, a leader that
/// is not one of them replaced (`keep_or_elect`). Epochs untouched.
fn settled_on(
    meta: &PartitionMeta,
    replicas: Vec<BrokerId>,
    live: &[BrokerId],
    barred: &[BrokerId],
) -> PartitionMeta {
    let mut next = meta.clone();
    next.isr.retain(|b| replicas.contains(b));
    next.replicas = replicas;
    next.adding.clear();
    next.removing.clear();
    keep_or_elect(&mut next, live, barred);
    next
}

/// Keeps a leader that is one of the replicas; otherwise the first replica, in assignment
/// order, that is in sync, live and not shutting down leads (none: no leader until one
/// returns, as the failover election leaves it).
fn keep_or_elect(next: &mut PartitionMeta, live: &[BrokerId], barred: &[BrokerId]) {
    if next.leader != NO_LEADER && next.replicas.contains(&next.leader) {
        return;
    }
    next.leader = next
        .replicas
        .iter()
        .copied()
        .find(|b| next.isr.contains(b) && live.contains(b) && !barred.contains(b))
        .unwrap_or(NO_LEADER);
}

/// `next` with the epochs a change from `before` takes: the partition epoch always moves; the
/// leader epoch moves when the leader changes or a replica leaves (as Kafka's controller bumps
/// it then), so the leader starts over with its followers and a replica that left and comes
/// back counts only from its new fetches.
fn with_epochs(before: &PartitionMeta, mut next: PartitionMeta) -> PartitionMeta {
    next.partition_epoch = before.partition_epoch + 1;
    let lost_a_replica = before.replicas.iter().any(|b| !next.replicas.contains(b));
    next.leader_epoch = if next.leader != before.leader || lost_a_replica {
        before.leader_epoch + 1
    } else {
        before.leader_epoch
    };
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(replicas: &[i32], leader: i32, isr: &[i32]) -> PartitionMeta {
        PartitionMeta {
            leader,
            isr: isr.to_vec(),
            leader_epoch: 3,
            partition_epoch: 7,
            ..PartitionMeta::replicated(replicas.to_vec())
        }
    }

    const LIVE: &[i32] = &[1, 2, 3, 4, 5];

    #[test]
    fn a_move_grows_first_then_shrinks_once_the_new_replicas_are_in_sync() {
        let m = meta(&[1, 2, 3], 1, &[1, 2, 3]);
        let started = start(&m, &[1, 2, 4], true, LIVE, &[]).unwrap().unwrap();
        assert_eq!(started.replicas, vec![1, 2, 4, 3]);
        assert_eq!(started.adding, vec![4]);
        assert_eq!(started.removing, vec![3]);
        assert_eq!((started.leader, started.leader_epoch), (1, 3));
        assert_eq!(started.isr, vec![1, 2, 3]);
        assert_eq!(started.partition_epoch, 8);
        started.check().unwrap();
        assert_eq!(complete(&started, LIVE, &[]), None, "4 is not in sync yet");
        let mut caught_up = started.clone();
        caught_up.isr.push(4);
        caught_up.partition_epoch += 1;
        let done = complete(&caught_up, LIVE, &[]).unwrap();
        assert_eq!(done.replicas, vec![1, 2, 4]);
        assert_eq!(done.isr, vec![1, 2, 4]);
        assert!(done.adding.is_empty() && done.removing.is_empty());
        // The leader stays; its epoch moves because a replica left.
        assert_eq!((done.leader, done.leader_epoch), (1, 4));
        assert_eq!(done.partition_epoch, 10);
        done.check().unwrap();
    }

    #[test]
    fn a_leaving_leader_hands_over_to_the_first_live_target_replica_in_sync() {
        let mut m = meta(&[1, 2, 3], 1, &[1, 2, 3]);
        m.adding = vec![];
        let started = start(&m, &[3, 2], true, LIVE, &[3]).unwrap().unwrap();
        // Every target replica is in sync already: completed at once. 3 is shutting down.
        assert_eq!(started.replicas, vec![3, 2]);
        assert_eq!(started.isr, vec![2, 3]);
        assert_eq!((started.leader, started.leader_epoch), (2, 4));
        assert!(!started.is_reassigning());
        started.check().unwrap();
    }

    #[test]
    fn a_reorder_or_the_same_replicas_complete_at_once() {
        let m = meta(&[1, 2, 3], 1, &[1, 2, 3]);
        assert_eq!(start(&m, &[1, 2, 3], true, LIVE, &[]).unwrap(), None);
        let reordered = start(&m, &[3, 1, 2], true, LIVE, &[]).unwrap().unwrap();
        assert_eq!(reordered.replicas, vec![3, 1, 2]);
        assert_eq!(
            reordered.leader, 1,
            "the preferred leader changes, not the leader"
        );
        assert!(!reordered.is_reassigning());
    }

    #[test]
    fn a_new_target_replaces_an_ongoing_reassignment_and_cancel_reverts_it() {
        let m = meta(&[1, 2], 1, &[1, 2]);
        let first = start(&m, &[3, 4], true, LIVE, &[]).unwrap().unwrap();
        assert_eq!(first.replicas, vec![3, 4, 1, 2]);
        assert_eq!(first.original_replicas(), vec![1, 2]);
        let second = start(&first, &[1, 5], true, LIVE, &[]).unwrap().unwrap();
        assert_eq!(second.replicas, vec![1, 5, 2]);
        assert_eq!(second.adding, vec![5]);
        assert_eq!(second.removing, vec![2]);
        let back = cancel(&second, LIVE, &[]).unwrap();
        assert_eq!(back.replicas, vec![1, 2]);
        assert_eq!(back.isr, vec![1, 2]);
        assert!(!back.is_reassigning());
        assert!(back.partition_epoch > second.partition_epoch);
        assert_eq!(
            cancel(&back, LIVE, &[]).unwrap_err().0,
            ResponseError::NoReassignmentInProgress
        );
    }

    #[test]
    fn the_same_plan_twice_writes_nothing_the_second_time() {
        let m = meta(&[1, 2], 1, &[1, 2]);
        let s = start(&m, &[2, 3], true, LIVE, &[]).unwrap().unwrap();
        assert_eq!(start(&s, &[2, 3], true, LIVE, &[]).unwrap(), None);
    }

    #[test]
    fn an_added_replica_that_leads_alone_is_never_dropped() {
        // Original 1 died; the added 2 caught up and leads alone.
        let m = meta(&[1], 1, &[1]);
        let mut s = start(&m, &[2, 3], true, LIVE, &[]).unwrap().unwrap();
        s.leader = 2;
        s.isr = vec![2];
        let live = &[2, 3, 4];
        // Cancelling would need an unclean election: refused.
        let refused = cancel(&s, live, &[]).unwrap_err();
        assert_eq!(refused.0, ResponseError::InvalidReplicaAssignment);
        // A new target keeping 2: it stays in sync and leads.
        let kept = start(&s, &[2, 4], true, live, &[]).unwrap().unwrap();
        assert_eq!(kept.replicas, vec![2, 4, 1]);
        assert_eq!((kept.leader, kept.isr.clone()), (2, vec![2]));
        // A new target without 2 would leave no in-sync replica: refused.
        let refused = start(&s, &[4], true, live, &[]).unwrap_err();
        assert_eq!(refused.0, ResponseError::InvalidReplicaAssignment);
    }

    #[test]
    fn bad_targets_are_refused_with_kafkas_codes() {
        let m = meta(&[1, 2], 1, &[1, 2]);
        let code = |t: &[i32], rf: bool| start(&m, t, rf, LIVE, &[]).unwrap_err().0;
        // Without a replication factor change the size is the current target's.
        let moving = start(&m, &[3, 4], true, LIVE, &[]).unwrap().unwrap();
        assert_eq!(
            start(&moving, &[3, 4, 5], false, LIVE, &[]).unwrap_err().0,
            ResponseError::InvalidReplicationFactor
        );
        assert!(start(&moving, &[4, 5], false, LIVE, &[]).is_ok());
        assert_eq!(code(&[], true), ResponseError::InvalidReplicaAssignment);
        assert_eq!(code(&[1, 1], true), ResponseError::InvalidReplicaAssignment);
        assert_eq!(code(&[1, 9], true), ResponseError::InvalidReplicaAssignment);
        assert_eq!(
            code(&[1, 2, 3], false),
            ResponseError::InvalidReplicationFactor
        );
        assert!(start(&m, &[1, 2, 3], true, LIVE, &[]).is_ok());
        assert!(start(&m, &[2, 3], false, LIVE, &[]).is_ok());
    }

    #[test]
    fn cancel_after_the_leader_moved_to_an_added_replica_gives_it_back() {
        let m = meta(&[1], 1, &[1]);
        let mut s = start(&m, &[1, 2], true, LIVE, &[]).unwrap().unwrap();
        // The controller moved leadership to 2 meanwhile (1 was gone for a while).
        s.leader = 2;
        s.isr = vec![1, 2];
        let back = cancel(&s, LIVE, &[]).unwrap();
        assert_eq!((back.replicas.clone(), back.leader), (vec![1], 1));
        assert_eq!(back.leader_epoch, s.leader_epoch + 1);
        back.check().unwrap();
    }
}
