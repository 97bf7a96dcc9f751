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
//! Pure: the controller runs it on its latest image inside `Controller::transact`, which
//! commits the commands with its fence (a deposed controller cannot elect).

use std::collections::BTreeMap;

use super::image::{BrokerId, NO_LEADER};
use super::{MetadataCommand, MetadataImage, PartitionMeta};

/// The changes that elections and in-sync set clean-ups make for the live brokers `live`.
pub fn elect(image: &MetadataImage, live: &[BrokerId]) -> Vec<MetadataCommand> {
    let mut cmds = Vec::new();
    for topic in image.topics.values() {
        let mut changed: BTreeMap<i32, PartitionMeta> = BTreeMap::new();
        for (p, meta) in topic.partitions.iter().enumerate() {
            if meta.replicas.len() <= 1 {
                continue;
            }
            if let Some(next) = next_state(meta, live) {
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

/// One partition's state after an election with `live` brokers, if it changes.
pub fn next_state(meta: &PartitionMeta, live: &[BrokerId]) -> Option<PartitionMeta> {
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
        match meta.replicas.iter().find(|r| live_isr.contains(r)) {
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
        let next = next_state(&meta(&[1, 2, 3], 1, &[1, 3, 2]), &[2, 3]).unwrap();
        assert_eq!(next.leader, 2, "replica order, not ISR order");
        assert_eq!(next.isr, vec![3, 2]);
        assert_eq!((next.leader_epoch, next.partition_epoch), (4, 8));
        // An out-of-sync replica is never elected.
        let next = next_state(&meta(&[1, 2, 3], 1, &[1, 3]), &[2, 3]).unwrap();
        assert_eq!(next.leader, 3);
        assert_eq!(next.isr, vec![3]);
    }

    #[test]
    fn without_a_live_in_sync_replica_there_is_no_leader_until_one_returns() {
        let gone = next_state(&meta(&[1, 2, 3], 1, &[1]), &[2, 3]).unwrap();
        assert_eq!(gone.leader, NO_LEADER);
        assert_eq!(gone.isr, vec![1], "the last in-sync replica is remembered");
        assert_eq!(gone.leader_epoch, 4);
        assert_eq!(next_state(&gone, &[2, 3]), None);
        let back = next_state(&gone, &[1, 2, 3]).unwrap();
        assert_eq!((back.leader, back.leader_epoch), (1, 5));
        assert_eq!(back.isr, vec![1]);
    }

    #[test]
    fn a_live_leader_keeps_its_epoch_and_loses_dead_followers() {
        assert_eq!(
            next_state(&meta(&[1, 2, 3], 1, &[1, 2, 3]), &[1, 2, 3]),
            None
        );
        let next = next_state(&meta(&[1, 2, 3], 1, &[1, 2, 3]), &[1, 3]).unwrap();
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
        assert!(elect(&image, &[2]).is_empty());
    }
}
