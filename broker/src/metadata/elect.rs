//! Leader election by the controller when brokers come and go (Kafka's controller on a broker
//! fence): for each partition of more than one replica,
//! - a leader that is not live is replaced by the first replica, in assignment order (so the
//!   preferred leader first), that is in the in-sync set and live; the leader epoch and the
//!   partition epoch go up by one and the in-sync set keeps only its live members. With no
//!   such replica the partition has no leader (-1) until one of its in-sync replicas returns
//!   (never an out-of-sync replica: `unclean.leader.election.enable` is not honoured yet) and
//!   the in-sync set stays as it was, so the last replicas that had everything are known;
//! - with a live leader, in-sync members that are not live leave the set at once (the leader
//!   would drop them after `replica.lag.time.max.ms` anyway).
//!
//! A partition of one replica keeps its leader: Metadata already answers LEADER_NOT_AVAILABLE
//! while that broker is gone, and a single node whose own session expired must not see its
//! partitions' epochs churn when it registers again.
//!
//! A controlled shutdown (`hand_over`): a broker about to stop asks the controller to move its
//! leaderships to other live in-sync replicas first (and to take it out of the in-sync sets it
//! is in), so clients see NOT_LEADER_OR_FOLLOWER and a new leader instead of a dead one. A
//! partition with no other live in-sync replica stays with it. Brokers shutting down are
//! `barred`: never chosen as a new leader.
//!
//! Pure: the controller runs it on its latest image inside `Controller::transact`, which
//! commits the commands with its fence (a deposed controller cannot elect).

use std::collections::BTreeMap;

use super::image::{BrokerId, NO_LEADER};
use super::{MetadataCommand, MetadataImage, PartitionMeta};

/// The changes that elections and in-sync set clean-ups make for the live brokers `live`, no
/// broker of `barred` becoming a leader.
pub fn elect(
    image: &MetadataImage,
    live: &[BrokerId],
    barred: &[BrokerId],
) -> Vec<MetadataCommand> {
    let mut cmds = Vec::new();
    for topic in image.topics.values() {
        let mut changed: BTreeMap<i32, PartitionMeta> = BTreeMap::new();
        for (p, meta) in topic.partitions.iter().enumerate() {
            if meta.replicas.len() <= 1 {
                continue;
            }
            if let Some(next) = next_state(meta, live, barred) {
                changed.insert(p as i32, next);
            }
        }
        if !changed.is_empty() {
            cmds.push(MetadataCommand::AssignPartitions {
                id: topic.id,
                assignments: changed.into_iter().collect(),
            });
        }
    }
    cmds
}

/// One partition's state after an election with `live` brokers (none of `barred` chosen), if
/// it changes.
pub fn next_state(
    meta: &PartitionMeta,
    live: &[BrokerId],
    barred: &[BrokerId],
) -> Option<PartitionMeta> {
    let live_isr: Vec<BrokerId> = meta
        .isr
        .iter()
        .copied()
        .filter(|b| live.contains(b))
        .collect();
    let mut next = meta.clone();
    if meta.leader != NO_LEADER && live.contains(&meta.leader) {
        if live_isr.len() == meta.isr.len() {
            return None;
        }
        next.isr = live_isr;
    } else {
        match meta
            .replicas
            .iter()
            .find(|r| live_isr.contains(r) && !barred.contains(r))
        {
            Some(leader) => {
                next.leader = *leader;
                next.isr = live_isr;
            }
            None if meta.leader == NO_LEADER => return None,
            None => next.leader = NO_LEADER,
        }
        next.leader_epoch += 1;
    }
    next.partition_epoch += 1;
    Some(next)
}

/// A controlled shutdown of `leaving`: its leaderships move to the first replica, in assignment
/// order, that is in the in-sync set, in `eligible` and not `leaving` (epochs +1), and it
/// leaves the in-sync sets it is in (never emptying one). Returns the changes and how many
/// partitions it still leads after them (no other live in-sync replica).
pub fn hand_over(
    image: &MetadataImage,
    leaving: BrokerId,
    eligible: &[BrokerId],
) -> (Vec<MetadataCommand>, usize) {
    let mut cmds = Vec::new();
    let mut remaining = 0;
    for topic in image.topics.values() {
        let mut changed: BTreeMap<i32, PartitionMeta> = BTreeMap::new();
        for (p, meta) in topic.partitions.iter().enumerate() {
            if meta.replicas.len() <= 1 || !meta.isr.contains(&leaving) {
                continue;
            }
            let others: Vec<BrokerId> =
                meta.isr.iter().copied().filter(|b| *b != leaving).collect();
            let mut next = meta.clone();
            if meta.leader == leaving {
                let Some(leader) = meta
                    .replicas
                    .iter()
                    .find(|r| **r != leaving && others.contains(r) && eligible.contains(r))
                else {
                    remaining += 1;
                    continue;
                };
                next.leader = *leader;
                next.leader_epoch += 1;
            } else if others.is_empty() {
                continue;
            }
            next.isr = others;
            next.partition_epoch += 1;
            changed.insert(p as i32, next);
        }
        if !changed.is_empty() {
            cmds.push(MetadataCommand::AssignPartitions {
                id: topic.id,
                assignments: changed.into_iter().collect(),
            });
        }
    }
    (cmds, remaining)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(replicas: &[i32], leader: i32, isr: &[i32]) -> PartitionMeta {
        PartitionMeta {
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: 3,
            isr: isr.to_vec(),
            partition_epoch: 7,
        }
    }

    #[test]
    fn a_dead_leader_is_replaced_from_the_live_in_sync_replicas_in_preferred_order() {
        let next = next_state(&meta(&[1, 2, 3], 1, &[1, 3, 2]), &[2, 3], &[]).unwrap();
        assert_eq!(next.leader, 2, "replica order, not ISR order");
        assert_eq!(next.isr, vec![3, 2]);
        assert_eq!((next.leader_epoch, next.partition_epoch), (4, 8));
        // An out-of-sync replica is never elected.
        let next = next_state(&meta(&[1, 2, 3], 1, &[1, 3]), &[2, 3], &[]).unwrap();
        assert_eq!(next.leader, 3);
        assert_eq!(next.isr, vec![3]);
    }

    #[test]
    fn without_a_live_in_sync_replica_there_is_no_leader_until_one_returns() {
        let gone = next_state(&meta(&[1, 2, 3], 1, &[1]), &[2, 3], &[]).unwrap();
        assert_eq!(gone.leader, NO_LEADER);
        assert_eq!(gone.isr, vec![1], "the last in-sync replica is remembered");
        assert_eq!(gone.leader_epoch, 4);
        assert_eq!(next_state(&gone, &[2, 3], &[]), None);
        let back = next_state(&gone, &[1, 2, 3], &[]).unwrap();
        assert_eq!((back.leader, back.leader_epoch), (1, 5));
        assert_eq!(back.isr, vec![1]);
    }

    #[test]
    fn a_live_leader_keeps_its_epoch_and_loses_dead_followers() {
        assert_eq!(
            next_state(&meta(&[1, 2, 3], 1, &[1, 2, 3]), &[1, 2, 3], &[]),
            None
        );
        let next = next_state(&meta(&[1, 2, 3], 1, &[1, 2, 3]), &[1, 3], &[]).unwrap();
        assert_eq!((next.leader, next.leader_epoch), (1, 3));
        assert_eq!(next.isr, vec![1, 3]);
        assert_eq!(next.partition_epoch, 8);
    }

    #[test]
    fn single_replica_partitions_are_left_alone() {
        let mut image = MetadataImage::new_cluster();
        image
            .apply(MetadataCommand::CreateTopic(crate::metadata::TopicMeta {
                name: "one".into(),
                id: crate::metadata::TopicId::random(),
                partitions: vec![PartitionMeta::led_by(1)],
                configs: Default::default(),
            }))
            .unwrap();
        assert!(elect(&image, &[2], &[]).is_empty());
    }

    #[test]
    fn a_barred_broker_is_never_elected() {
        let next = next_state(&meta(&[1, 2, 3], 1, &[1, 2, 3]), &[2, 3], &[2]).unwrap();
        assert_eq!(next.leader, 3);
    }

    fn image_of(partitions: Vec<PartitionMeta>) -> MetadataImage {
        let mut image = MetadataImage::new_cluster();
        image
            .apply(MetadataCommand::CreateTopic(crate::metadata::TopicMeta {
                name: "t".into(),
                id: crate::metadata::TopicId::random(),
                partitions,
                configs: Default::default(),
            }))
            .unwrap();
        image
    }

    fn after(image: &MetadataImage, cmds: Vec<MetadataCommand>) -> Vec<PartitionMeta> {
        let mut image = image.clone();
        for c in cmds {
            image.apply(c).unwrap();
        }
        image.topics.values().next().unwrap().partitions.clone()
    }

    #[test]
    fn a_controlled_shutdown_moves_leaderships_and_leaves_in_sync_sets() {
        let image = image_of(vec![
            meta(&[1, 2, 3], 1, &[1, 2, 3]),
            meta(&[2, 1, 3], 2, &[2, 1, 3]),
            // Its only in-sync replica: it keeps it.
            meta(&[1, 2, 3], 1, &[1]),
            // Another in-sync replica, but not eligible (shutting down too).
            meta(&[1, 3], 1, &[1, 3]),
        ]);
        let (cmds, remaining) = hand_over(&image, 1, &[2]);
        assert_eq!(remaining, 2);
        let parts = after(&image, cmds);
        assert_eq!((parts[0].leader, parts[0].leader_epoch), (2, 4));
        assert_eq!(parts[0].isr, vec![2, 3]);
        assert_eq!(parts[0].partition_epoch, 8);
        assert_eq!(
            (parts[1].leader, parts[1].leader_epoch),
            (2, 3),
            "a follower there"
        );
        assert_eq!(parts[1].isr, vec![2, 3]);
        assert_eq!(parts[2], meta(&[1, 2, 3], 1, &[1]));
        assert_eq!(parts[3], meta(&[1, 3], 1, &[1, 3]));
        // Asked again, nothing more can move.
        let (cmds, remaining) = hand_over(&image_of(parts), 1, &[2]);
        assert!(cmds.is_empty());
        assert_eq!(remaining, 2);
    }
}
