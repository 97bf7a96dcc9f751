//! Which broker leads a new partition. Until replication exists every partition has one
//! replica, and new partitions are spread over the live brokers as Kafka spreads them at
//! replication factor 1 (`assignReplicasToBrokersRackUnaware`): round-robin over the brokers
//! sorted by id, from a start that depends on the topic, so many small topics do not all
//! start on the same broker.
//!
//! Never: names a broker that is not in the list it is given; moves a partition that exists.

use std::ops::Range;

use uuid::Uuid;

use super::PartitionMeta;
use super::image::BrokerId;

/// The partitions `range` of the topic `topic_id`, each with `replication_factor` replicas
/// on consecutive brokers of `live` (sorted and deduplicated here), the first leading, all in
/// the ISR. `live` empty, or fewer brokers than the factor, gives no partitions: the caller
/// says why.
pub fn spread(
    topic_id: Uuid,
    range: Range<i32>,
    live: &[BrokerId],
    replication_factor: usize,
) -> Vec<PartitionMeta> {
    let mut brokers = live.to_vec();
    brokers.sort_unstable();
    brokers.dedup();
    if brokers.is_empty() || replication_factor == 0 || replication_factor > brokers.len() {
        return Vec::new();
    }
    let n = brokers.len() as u64;
    let (hi, lo) = topic_id.as_u64_pair();
    let start = (hi ^ lo.rotate_left(17)) % n;
    range
        .map(|p| {
            let p = u64::try_from(p).unwrap_or(0);
            let replicas: Vec<BrokerId> = (0..replication_factor as u64)
                .map(|j| brokers[((start + p + j) % n) as usize])
                .collect();
            PartitionMeta::replicated(replicas)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_go_round_robin_over_the_live_brokers() {
        let id = Uuid::from_u128(0xfeed_0000_0000_0000_0000_0000_0000_0042);
        let parts = spread(id, 0..6, &[3, 1, 2, 2], 1);
        let leaders: Vec<BrokerId> = parts.iter().map(|p| p.leader).collect();
        // Every broker leads two, consecutive partitions on consecutive brokers.
        for b in [1, 2, 3] {
            assert_eq!(leaders.iter().filter(|l| **l == b).count(), 2);
        }
        for w in leaders.windows(2) {
            assert_eq!((w[0] % 3) + 1, w[1], "{leaders:?}");
        }
        // Partitions added later continue the same rotation.
        assert_eq!(spread(id, 6..7, &[1, 2, 3], 1)[0].leader, leaders[0]);
        assert!(
            parts
                .iter()
                .all(|p| p.replicas == vec![p.leader] && p.isr == p.replicas)
        );
        assert_eq!(spread(id, 0..4, &[5], 1), vec![PartitionMeta::led_by(5); 4]);
        assert!(spread(id, 0..4, &[], 1).is_empty());
        assert!(spread(id, 0..4, &[1, 2], 3).is_empty());
        // Three replicas on three brokers: every partition on all, leaders rotating.
        let three = spread(id, 0..3, &[1, 2, 3], 3);
        for (p, meta) in three.iter().enumerate() {
            assert_eq!(meta.leader, leaders[p]);
            assert_eq!(meta.replicas[0], meta.leader);
            let mut all = meta.replicas.clone();
            all.sort();
            assert_eq!(all, vec![1, 2, 3]);
            assert_eq!(meta.isr, meta.replicas);
            assert!(meta.check().is_ok());
        }
    }
}
