//! Which brokers hold a new partition's replicas, and which leads. As Kafka does
//! (`assignReplicasToBrokersRackUnaware` / `...RackAware`): the live brokers in a fixed order,
//! round-robin from a start that depends on the topic (so many small topics do not all start
//! on the same broker), the partition's first replica leading. With `broker.rack` set, the
//! order alternates racks (first broker of each rack, then the second of each, ...), so
//! consecutive partitions' leaders are on different racks, and a partition's further replicas
//! go to racks it has no replica on yet before a rack gets a second one. A broker without a
//! rack counts as a rack of its own kind (all rackless brokers together).
//!
//! Never: names a broker that is not in the list it is given; moves a partition that exists.

use std::collections::BTreeMap;
use std::ops::Range;

use uuid::Uuid;

use super::PartitionMeta;
use super::image::BrokerId;

/// A live broker, as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: BrokerId,
    pub rack: Option<String>,
}

/// The brokers in placement order: by id without racks; rack-alternated with them.
fn placement_order(live: &[Candidate]) -> Vec<Candidate> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<&Candidate>> = BTreeMap::new();
    for c in live {
        by_rack.entry(c.rack.as_deref()).or_default().push(c);
    }
    for brokers in by_rack.values_mut() {
        brokers.sort_by_key(|c| c.id);
        brokers.dedup_by_key(|c| c.id);
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    let mut order = Vec::new();
    for i in 0..deepest {
        for brokers in by_rack.values() {
            if let Some(c) = brokers.get(i)
                && !order.iter().any(|o: &Candidate| o.id == c.id)
            {
                order.push((*c).clone());
            }
        }
    }
    order
}

/// The partitions `range` of the topic `topic_id`, each with `replication_factor` replicas
/// of `live` (see the module docs), the first leading, all in the ISR. `live` empty, or
/// fewer brokers than the factor, gives no partitions: the caller says why.
pub fn spread(
    topic_id: Uuid,
    range: Range<i32>,
    live: &[Candidate],
    replication_factor: usize,
) -> Vec<PartitionMeta> {
    let order = placement_order(live);
    if order.is_empty() || replication_factor == 0 || replication_factor > order.len() {
        return Vec::new();
    }
    let n = order.len() as u64;
    let (hi, lo) = topic_id.as_u64_pair();
    let start = (hi ^ lo.rotate_left(17)) % n;
    range
        .map(|p| {
            let first = start + u64::try_from(p).unwrap_or(0);
            let ring: Vec<&Candidate> =
                (0..n).map(|j| &order[((first + j) % n) as usize]).collect();
            let mut replicas: Vec<BrokerId> = vec![ring[0].id];
            let mut racks = vec![ring[0].rack.as_deref()];
            // Racks without a replica first, then any broker, in ring order.
            for c in &ring[1..] {
                if replicas.len() < replication_factor && !racks.contains(&c.rack.as_deref()) {
                    replicas.push(c.id);
                    racks.push(c.rack.as_deref());
                }
            }
            for c in &ring[1..] {
                if replicas.len() < replication_factor && !replicas.contains(&c.id) {
                    replicas.push(c.id);
                }
            }
            PartitionMeta::replicated(replicas)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(ids: &[BrokerId]) -> Vec<Candidate> {
        ids.iter()
            .map(|id| Candidate {
                id: *id,
                rack: None,
            })
            .collect()
    }

    #[test]
    fn brokers_in_two_racks_alternate_and_replicas_span_both() {
        let id = Uuid::from_u128(7);
        let live: Vec<Candidate> = [(1, "a"), (2, "a"), (3, "b"), (4, "b")]
            .iter()
            .map(|(id, r)| Candidate {
                id: *id,
                rack: Some(r.to_string()),
            })
            .collect();
        let rack = |b: BrokerId| if b <= 2 { "a" } else { "b" };
        let one = spread(id, 0..8, &live, 1);
        for w in one.windows(2) {
            assert_ne!(rack(w[0].leader), rack(w[1].leader), "{one:?}");
        }
        for p in spread(id, 0..8, &live, 2) {
            assert_ne!(rack(p.replicas[0]), rack(p.replicas[1]), "{p:?}");
        }
        for p in spread(id, 0..8, &live, 3) {
            let mut r = p.replicas.clone();
            r.sort();
            r.dedup();
            assert_eq!(r.len(), 3, "{p:?}");
        }
    }

    #[test]
    fn partitions_go_round_robin_over_the_live_brokers() {
        let id = Uuid::from_u128(0xfeed_0000_0000_0000_0000_0000_0000_0042);
        let parts = spread(id, 0..6, &plain(&[3, 1, 2, 2]), 1);
        let leaders: Vec<BrokerId> = parts.iter().map(|p| p.leader).collect();
        // Every broker leads two, consecutive partitions on consecutive brokers.
        for b in [1, 2, 3] {
            assert_eq!(leaders.iter().filter(|l| **l == b).count(), 2);
        }
        for w in leaders.windows(2) {
            assert_eq!((w[0] % 3) + 1, w[1], "{leaders:?}");
        }
        // Partitions added later continue the same rotation.
        assert_eq!(
            spread(id, 6..7, &plain(&[1, 2, 3]), 1)[0].leader,
            leaders[0]
        );
        assert!(
            parts
                .iter()
                .all(|p| p.replicas == vec![p.leader] && p.isr == p.replicas)
        );
        assert_eq!(
            spread(id, 0..4, &plain(&[5]), 1),
            vec![PartitionMeta::led_by(5); 4]
        );
        assert!(spread(id, 0..4, &plain(&[]), 1).is_empty());
        assert!(spread(id, 0..4, &plain(&[1, 2]), 3).is_empty());
        // Three replicas on three brokers: every partition on all, leaders rotating.
        let three = spread(id, 0..3, &plain(&[1, 2, 3]), 3);
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
