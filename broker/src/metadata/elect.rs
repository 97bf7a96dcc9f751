//! Leader election by the controller when brokers come and go (Kafka's controller on a broker
//! fence): for each partition of more than one replica,
//! - a leader that is not live is replaced by the first replica, in assignment order (so the
//!   preferred leader first), that is in the in-sync set and live; the leader epoch and the
//!   partition epoch go up by one and the in-sync set keeps only its live members. With no
//!   such replica the partition has no leader (-1) until one of its in-sync replicas returns
//!   and the in-sync set stays as it was, so the last replicas that had everything are known;
//!   unless `unclean.leader.election.enable` (the topic's, else the broker's) lets the first
//!   live replica lead alone (records only the lost replicas held are lost);
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
//! Elections asked for (`elect_asked`, ElectLeaders): *preferred* gives a partition back to
//! its first assigned replica when that one is live and in sync; *unclean* gives a partition
//! whose leader is gone to a live replica even outside the in-sync set (what
//! `unclean.leader.election.enable` would do on its own: acknowledged records may be lost).
//! Leader balancing (`rebalance`, `auto.leader.rebalance.enable`): a broker that leads less
//! than it prefers by more than `leader.imbalance.per.broker.percentage` gets its preferred
//! partitions back.
//!
//! Pure: the controller runs it on its latest image inside `Controller::transact`, which
//! commits the commands with its fence (a deposed controller cannot elect).

use std::collections::BTreeMap;

use super::image::{BrokerId, NO_LEADER};
use super::{MetadataCommand, MetadataImage, PartitionMeta};

/// The changes that elections and in-sync set clean-ups make for the live brokers `live`, no
/// broker of `barred` becoming a leader. `unclean_default` is the broker's
/// `unclean.leader.election.enable`; a topic's own setting overrides it.
pub fn elect(
    image: &MetadataImage,
    live: &[BrokerId],
    barred: &[BrokerId],
    unclean_default: bool,
) -> Vec<MetadataCommand> {
    let mut cmds = Vec::new();
    for topic in image.topics.values() {
        let unclean = topic
            .configs
            .get(UNCLEAN_SETTING)
            .map_or(unclean_default, |v| v.eq_ignore_ascii_case("true"));
        let mut changed: BTreeMap<i32, PartitionMeta> = BTreeMap::new();
        for (p, meta) in topic.partitions.iter().enumerate() {
            if meta.replicas.len() <= 1 {
                continue;
            }
            if let Some(next) = next_state(meta, live, barred, unclean) {
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

/// Kafka's setting, per topic and for the broker.
pub const UNCLEAN_SETTING: &str = "unclean.leader.election.enable";

/// One partition's state after an election with `live` brokers (none of `barred` chosen), if
/// it changes. With `unclean`, a partition whose in-sync replicas are all gone gets the first
/// live replica (one not still being added before others) as its only in-sync member:
/// available again, and whatever only the lost replicas held is lost, as Kafka warns.
pub fn next_state(
    meta: &PartitionMeta,
    live: &[BrokerId],
    barred: &[BrokerId],
    unclean: bool,
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
            None => match unclean_choice(meta, live, barred).filter(|_| unclean) {
                Some(leader) => {
                    next.leader = leader;
                    next.isr = vec![leader];
                }
                None if meta.leader == NO_LEADER => return None,
                None => next.leader = NO_LEADER,
            },
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

/// Which election ElectLeaders asks for (Kafka's ElectionType: 0 preferred, 1 unclean).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    Preferred,
    Unclean,
}

/// Why an election asked for a partition changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotElected {
    /// The partition already has the leader the election would give it.
    NotNeeded,
    /// No replica the election may choose is live (and in sync, for a preferred election).
    NotAvailable,
    /// No such topic or partition.
    Unknown,
}

/// One partition's state after `election` with `live` brokers (none of `barred` chosen).
pub fn elect_one(
    meta: &PartitionMeta,
    election: Election,
    live: &[BrokerId],
    barred: &[BrokerId],
) -> Result<PartitionMeta, NotElected> {
    let may_lead = |b: &BrokerId| live.contains(b) && !barred.contains(b);
    let mut next = meta.clone();
    match election {
        Election::Preferred => {
            let preferred = *meta.replicas.first().ok_or(NotElected::Unknown)?;
            if meta.leader == preferred {
                return Err(NotElected::NotNeeded);
            }
            if !meta.isr.contains(&preferred) || !may_lead(&preferred) {
                return Err(NotElected::NotAvailable);
            }
            next.leader = preferred;
        }
        Election::Unclean => {
            if meta.leader != NO_LEADER && live.contains(&meta.leader) {
                return Err(NotElected::NotNeeded);
            }
            let clean = meta
                .replicas
                .iter()
                .find(|r| meta.isr.contains(r) && may_lead(r));
            let leader = clean
                .copied()
                .or_else(|| unclean_choice(meta, live, barred))
                .ok_or(NotElected::NotAvailable)?;
            next.leader = leader;
            next.isr = if clean.is_some() {
                meta.isr
                    .iter()
                    .copied()
                    .filter(|b| live.contains(b))
                    .collect()
            } else {
                vec![leader]
            };
        }
    }
    next.leader_epoch += 1;
    next.partition_epoch += 1;
    Ok(next)
}

/// The outcome per asked partition of an ElectLeaders.
pub type Asked = Vec<(String, i32, Result<(), NotElected>)>;

/// ElectLeaders: `election` for the partitions `asked` (topic name, partition), or for every
/// partition of more than one replica when `None`. Returns the changes and one outcome per
/// partition.
pub fn elect_asked(
    image: &MetadataImage,
    election: Election,
    asked: Option<&[(String, i32)]>,
    live: &[BrokerId],
    barred: &[BrokerId],
) -> (Vec<MetadataCommand>, Asked) {
    let all: Vec<(String, i32)>;
    let asked = match asked {
        Some(a) => a,
        None => {
            all = image
                .topics
                .values()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| m.replicas.len() > 1)
                        .map(|(p, _)| (t.name.clone(), p as i32))
                })
                .collect();
            &all
        }
    };
    let mut changed: BTreeMap<String, BTreeMap<i32, PartitionMeta>> = BTreeMap::new();
    let mut outcomes = Vec::with_capacity(asked.len());
    for (name, p) in asked {
        let meta = image
            .topic(name)
            .and_then(|t| t.partitions.get(usize::try_from(*p).ok()?));
        let outcome = match meta {
            None => Err(NotElected::Unknown),
            Some(meta) => elect_one(meta, election, live, barred).map(|next| {
                changed.entry(name.clone()).or_default().insert(*p, next);
            }),
        };
        outcomes.push((name.clone(), *p, outcome));
    }
    let cmds = changed
        .into_iter()
        .filter_map(|(name, parts)| {
            Some(MetadataCommand::AssignPartitions {
                id: image.topic(&name)?.id,
                assignments: parts.into_iter().collect(),
            })
        })
        .collect();
    (cmds, outcomes)
}

/// Leader balancing: for each broker that leads fewer of the partitions it is the preferred
/// replica of than it prefers, by more than `percentage` percent of them, the preferred
/// elections of those partitions that can have one.
pub fn rebalance(
    image: &MetadataImage,
    live: &[BrokerId],
    barred: &[BrokerId],
    percentage: u32,
) -> Vec<MetadataCommand> {
    let mut preferred: BTreeMap<BrokerId, (usize, Vec<(String, i32)>)> = BTreeMap::new();
    for t in image.topics.values() {
        for (p, meta) in t.partitions.iter().enumerate() {
            if meta.replicas.len() <= 1 {
                continue;
            }
            let entry = preferred.entry(meta.replicas[0]).or_default();
            entry.0 += 1;
            if meta.leader != meta.replicas[0] {
                entry.1.push((t.name.clone(), p as i32));
            }
        }
    }
    let asked: Vec<(String, i32)> = preferred
        .into_values()
        .filter(|(total, off)| off.len() * 100 > *total * percentage as usize)
        .flat_map(|(_, off)| off)
        .collect();
    if asked.is_empty() {
        return Vec::new();
    }
    elect_asked(image, Election::Preferred, Some(&asked), live, barred).0
}

/// The replica an unclean election picks: the first live one not shutting down, in
/// assignment order, preferring one that had the whole log once (not one a reassignment is
/// still adding, which may hold only part of it).
fn unclean_choice(
    meta: &PartitionMeta,
    live: &[BrokerId],
    barred: &[BrokerId],
) -> Option<BrokerId> {
    let may_lead = |r: &&BrokerId| live.contains(r) && !barred.contains(r);
    meta.replicas
        .iter()
        .filter(may_lead)
        .find(|r| !meta.adding.contains(r))
        .or_else(|| meta.replicas.iter().find(may_lead))
        .copied()
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
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    #[test]
    fn a_dead_leader_is_replaced_from_the_live_in_sync_replicas_in_preferred_order() {
        let next = next_state(&meta(&[1, 2, 3], 1, &[1, 3, 2]), &[2, 3], &[], false).unwrap();
        assert_eq!(next.leader, 2, "replica order, not ISR order");
        assert_eq!(next.isr, vec![3, 2]);
        assert_eq!((next.leader_epoch, next.partition_epoch), (4, 8));
        // An out-of-sync replica is never elected.
        let next = next_state(&meta(&[1, 2, 3], 1, &[1, 3]), &[2, 3], &[], false).unwrap();
        assert_eq!(next.leader, 3);
        assert_eq!(next.isr, vec![3]);
    }

    #[test]
    fn without_a_live_in_sync_replica_there_is_no_leader_until_one_returns() {
        let gone = next_state(&meta(&[1, 2, 3], 1, &[1]), &[2, 3], &[], false).unwrap();
        assert_eq!(gone.leader, NO_LEADER);
        assert_eq!(gone.isr, vec![1], "the last in-sync replica is remembered");
        assert_eq!(gone.leader_epoch, 4);
        assert_eq!(next_state(&gone, &[2, 3], &[], false), None);
        let back = next_state(&gone, &[1, 2, 3], &[], false).unwrap();
        assert_eq!((back.leader, back.leader_epoch), (1, 5));
        assert_eq!(back.isr, vec![1]);
    }

    #[test]
    fn a_live_leader_keeps_its_epoch_and_loses_dead_followers() {
        assert_eq!(
            next_state(&meta(&[1, 2, 3], 1, &[1, 2, 3]), &[1, 2, 3], &[], false),
            None
        );
        let next = next_state(&meta(&[1, 2, 3], 1, &[1, 2, 3]), &[1, 3], &[], false).unwrap();
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
        assert!(elect(&image, &[2], &[], false).is_empty());
    }

    #[test]
    fn unclean_election_gives_a_partition_whose_in_sync_replicas_are_gone_a_live_one() {
        let only_1_in_sync = meta(&[1, 2, 3], 1, &[1]);
        // Clean: no leader until 1 returns.
        let waiting = next_state(&only_1_in_sync, &[2, 3], &[], false).unwrap();
        assert_eq!((waiting.leader, waiting.isr.clone()), (NO_LEADER, vec![1]));
        // Unclean: the first live replica, alone in sync; epochs move.
        let next = next_state(&only_1_in_sync, &[2, 3], &[2], true).unwrap();
        assert_eq!((next.leader, next.isr.clone()), (3, vec![3]));
        assert_eq!((next.leader_epoch, next.partition_epoch), (4, 8));
        // A partition already waiting gets one as soon as a replica is live.
        let later = next_state(&waiting, &[3], &[], true).unwrap();
        assert_eq!((later.leader, later.isr), (3, vec![3]));
        // A replica still being added comes after one that had the whole log.
        let mut moving = meta(&[4, 2], 1, &[1]);
        moving.replicas = vec![4, 2, 1];
        moving.adding = vec![4];
        moving.removing = vec![1];
        assert_eq!(next_state(&moving, &[2, 4], &[], true).unwrap().leader, 2);
        // The topic's setting overrides the broker's.
        let mut image = image_of(vec![only_1_in_sync.clone()]);
        assert!(!elect(&image, &[2, 3], &[], true).is_empty());
        let name = image.topics.keys().next().unwrap().clone();
        image
            .topics
            .get_mut(&name)
            .unwrap()
            .configs
            .insert(UNCLEAN_SETTING.into(), "false".into());
        let cmds = elect(&image, &[2, 3], &[], true);
        let MetadataCommand::AssignPartitions { assignments, .. } = &cmds[0] else {
            panic!("{cmds:?}");
        };
        assert_eq!(assignments[0].1.leader, NO_LEADER);
    }

    #[test]
    fn a_barred_broker_is_never_elected() {
        let next = next_state(&meta(&[1, 2, 3], 1, &[1, 2, 3]), &[2, 3], &[2], false).unwrap();
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

    #[test]
    fn a_preferred_election_gives_the_partition_back_to_its_first_replica() {
        let back = elect_one(
            &meta(&[1, 2, 3], 2, &[2, 3, 1]),
            Election::Preferred,
            &[1, 2, 3],
            &[],
        );
        let back = back.unwrap();
        assert_eq!(
            (back.leader, back.leader_epoch, back.partition_epoch),
            (1, 4, 8)
        );
        assert_eq!(back.isr, vec![2, 3, 1]);
        let led = meta(&[1, 2, 3], 1, &[1, 2, 3]);
        assert_eq!(
            elect_one(&led, Election::Preferred, &[1, 2, 3], &[]),
            Err(NotElected::NotNeeded)
        );
        // Out of sync, gone, or shutting down: not available.
        let m = meta(&[1, 2, 3], 2, &[2, 3]);
        assert_eq!(
            elect_one(&m, Election::Preferred, &[1, 2, 3], &[]),
            Err(NotElected::NotAvailable)
        );
        let m = meta(&[1, 2, 3], 2, &[1, 2, 3]);
        assert_eq!(
            elect_one(&m, Election::Preferred, &[2, 3], &[]),
            Err(NotElected::NotAvailable)
        );
        assert_eq!(
            elect_one(&m, Election::Preferred, &[1, 2, 3], &[1]),
            Err(NotElected::NotAvailable)
        );
    }

    #[test]
    fn an_unclean_election_takes_a_live_replica_only_when_no_in_sync_one_is_live() {
        let live_leader = meta(&[1, 2, 3], 1, &[1]);
        assert_eq!(
            elect_one(&live_leader, Election::Unclean, &[1, 2], &[]),
            Err(NotElected::NotNeeded)
        );
        let gone = meta(&[1, 2, 3], NO_LEADER, &[1]);
        let next = elect_one(&gone, Election::Unclean, &[2, 3], &[]).unwrap();
        assert_eq!((next.leader, next.isr.clone()), (2, vec![2]));
        let clean = meta(&[1, 2, 3], NO_LEADER, &[1, 3]);
        let next = elect_one(&clean, Election::Unclean, &[2, 3], &[]).unwrap();
        assert_eq!((next.leader, next.isr.clone()), (3, vec![3]));
        assert_eq!(
            elect_one(&gone, Election::Unclean, &[], &[]),
            Err(NotElected::NotAvailable)
        );
    }

    #[test]
    fn balancing_gives_brokers_their_preferred_partitions_back_past_the_threshold() {
        // Broker 1 prefers two partitions and leads neither; broker 2 leads everything.
        let image = image_of(vec![
            meta(&[1, 2, 3], 2, &[1, 2, 3]),
            meta(&[1, 3, 2], 2, &[1, 2, 3]),
            meta(&[2, 1, 3], 2, &[1, 2, 3]),
        ]);
        let parts = after(&image, rebalance(&image, &[1, 2, 3], &[], 10));
        assert_eq!(
            parts.iter().map(|p| p.leader).collect::<Vec<_>>(),
            vec![1, 1, 2]
        );
        // Balanced: nothing to do.
        assert!(rebalance(&image_of(parts), &[1, 2, 3], &[], 10).is_empty());
        // One of ten off is within 10%.
        let mut ten: Vec<PartitionMeta> = (0..10).map(|_| meta(&[1, 2], 1, &[1, 2])).collect();
        ten[0].leader = 2;
        assert!(rebalance(&image_of(ten), &[1, 2], &[], 10).is_empty());
    }

    #[test]
    fn elect_asked_reports_each_partition() {
        let image = image_of(vec![meta(&[1, 2], 2, &[1, 2]), meta(&[1, 2], 1, &[1, 2])]);
        let asked = vec![
            ("t".to_string(), 0),
            ("t".to_string(), 1),
            ("t".to_string(), 5),
            ("u".to_string(), 0),
        ];
        let (cmds, outcomes) = elect_asked(&image, Election::Preferred, Some(&asked), &[1, 2], &[]);
        assert_eq!(cmds.len(), 1);
        let results: Vec<_> = outcomes.into_iter().map(|(_, _, r)| r).collect();
        assert_eq!(
            results,
            vec![
                Ok(()),
                Err(NotElected::NotNeeded),
                Err(NotElected::Unknown),
                Err(NotElected::Unknown)
            ]
        );
        let (_, all) = elect_asked(&image, Election::Preferred, None, &[1, 2], &[]);
        assert_eq!(all.len(), 2);
    }
}
