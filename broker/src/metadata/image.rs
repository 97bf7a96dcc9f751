//! The metadata image: every topic with its id, its partitions (replicas, leader, leader epoch,
//! ISR and partition epoch of each, by broker id), per-topic settings, the cluster id and the
//! producer-id allocator; and the commands that change it.
//!
//! Owns: `MetadataImage`, `MetadataCommand`, `TopicId`, and the rules a change must obey
//! (names unique, ids never reused, producer ids only move forward, a partition's leader is
//! one of its replicas and its ISR a subset of them).
//! Never: does I/O (the store persists images), validates setting values (the handlers do,
//! against the settings table).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::MetadataError;

/// The version of the image's on-disk form; a newer file is refused, an older one upgraded.
/// 2: partitions carry replicas, leader, epochs and ISR by broker id (1 had a shard index).
pub const IMAGE_FORMAT_VERSION: u32 = 2;

/// A broker's node id, as the wire and the metadata name it.
pub type BrokerId = i32;

/// "No leader" (Kafka's -1).
pub const NO_LEADER: BrokerId = -1;

/// A topic id (KIP-516): a random UUID, never the all-zero one (the wire's "no id").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicId(pub Uuid);

impl TopicId {
    /// A fresh random id.
    pub fn random() -> TopicId {
        loop {
            let id = Uuid::new_v4();
            if !id.is_nil() {
                return TopicId(id);
            }
        }
    }
}

/// One partition, as Kafka's `PartitionRecord` has it: which brokers hold a replica, which of
/// them leads (and since which leader epoch), which are in sync, and a partition epoch bumped
/// by every change of these. Nothing here names a core: which shard of the leader serves the
/// partition is computed on that node (`shard::router`).
///
/// A partition read from an older format (which recorded only a shard index) has no replicas
/// yet ([`PartitionMeta::is_assigned`] is false); the broker that opens such a store adopts it
/// (`metadata::open`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    #[serde(default)]
    pub replicas: Vec<BrokerId>,
    #[serde(default = "no_leader")]
    pub leader: BrokerId,
    #[serde(default)]
    pub leader_epoch: i32,
    #[serde(default)]
    pub isr: Vec<BrokerId>,
    #[serde(default)]
    pub partition_epoch: i32,
    /// During a reassignment (`metadata::reassign`): the target replicas not in the original
    /// set, still copying, and the original replicas not in the target, leaving once every
    /// target replica is in sync. Both are members of `replicas`; both empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<BrokerId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<BrokerId>,
}

fn no_leader() -> BrokerId {
    NO_LEADER
}

impl PartitionMeta {
    /// A new partition with one replica, `leader`, which leads it and is in sync.
    pub fn led_by(leader: BrokerId) -> PartitionMeta {
        PartitionMeta::replicated(vec![leader])
    }

    /// A new partition on `replicas` (non-empty), the first leading, all in sync.
    pub fn replicated(replicas: Vec<BrokerId>) -> PartitionMeta {
        PartitionMeta {
            leader: replicas.first().copied().unwrap_or(NO_LEADER),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    /// A partition of an older format, not yet given to a broker.
    pub fn unassigned() -> PartitionMeta {
        PartitionMeta {
            replicas: Vec::new(),
            leader: NO_LEADER,
            leader_epoch: 0,
            isr: Vec::new(),
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    pub fn is_assigned(&self) -> bool {
        !self.replicas.is_empty()
    }

    /// A reassignment is under way (`metadata::reassign`).
    pub fn is_reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas the ongoing reassignment moves to (all of them when there is none).
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.removing.contains(b))
            .collect()
    }

    /// The replicas before the ongoing reassignment (all of them when there is none).
    pub fn original_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.adding.contains(b))
            .collect()
    }

    /// What is wrong with this partition's fields, if anything: replicas distinct and
    /// non-negative, the leader one of them (or none), the ISR a subset of them.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.replicas {
            if *r < 0 || !seen.insert(*r) {
                return Err(format!(
                    "replicas {:?} are not distinct broker ids",
                    self.replicas
                ));
            }
        }
        if self.leader != NO_LEADER && !seen.contains(&self.leader) {
            return Err(format!(
                "leader {} is not one of the replicas {:?}",
                self.leader, self.replicas
            ));
        }
        let mut in_sync = std::collections::BTreeSet::new();
        if self
            .isr
            .iter()
            .any(|b| !seen.contains(b) || !in_sync.insert(*b))
        {
            return Err(format!(
                "ISR {:?} is not a set of the replicas {:?}",
                self.isr, self.replicas
            ));
        }
        if self.leader_epoch < 0 || self.partition_epoch < 0 {
            return Err("negative epoch".into());
        }
        let mut moving = std::collections::BTreeSet::new();
        if self
            .adding
            .iter()
            .chain(&self.removing)
            .any(|b| !seen.contains(b) || !moving.insert(*b))
        {
            return Err(format!(
                "adding {:?} and removing {:?} are not disjoint sets of the replicas {:?}",
                self.adding, self.removing, self.replicas
            ));
        }
        Ok(())
    }
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: TopicId,
    /// Index = partition number.
    pub partitions: Vec<PartitionMeta>,
    /// Topic-level settings that differ from the broker's (validated before they get here).
    pub configs: BTreeMap<String, String>,
}

/// Everything the metadata store keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetadataImage {
    pub format_version: u32,
    pub cluster_id: String,
    /// Bumped by every committed change.
    pub epoch: u64,
    pub topics: BTreeMap<String, TopicMeta>,
    /// The first producer id not yet handed out. Ids below it are never given again, also
    /// after a crash, because a block is committed before any id of it is used.
    pub next_producer_id: i64,
    #[serde(skip)]
    by_id: HashMap<TopicId, String>,
}

/// A change to the image. The consensus store will replicate these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetadataCommand {
    CreateTopic(TopicMeta),
    DeleteTopic {
        id: TopicId,
    },
    /// Appends partitions to a topic (Kafka never removes partitions).
    AddPartitions {
        id: TopicId,
        added: Vec<PartitionMeta>,
    },
    /// Replaces the replicas, leader, epochs and ISR of some partitions of a topic (the
    /// adoption of partitions of an older format; later leader changes).
    AssignPartitions {
        id: TopicId,
        assignments: Vec<(i32, PartitionMeta)>,
    },
    /// Replaces a topic's settings.
    SetTopicConfigs {
        id: TopicId,
        configs: BTreeMap<String, String>,
    },
    /// Hands out `count` producer ids starting at the image's `next_producer_id`.
    AllocateProducerIds {
        count: i64,
    },
}

impl MetadataImage {
    /// The image of a new cluster.
    pub fn new_cluster() -> MetadataImage {
        MetadataImage {
            format_version: IMAGE_FORMAT_VERSION,
            cluster_id: Uuid::new_v4().simple().to_string(),
            epoch: 0,
            topics: BTreeMap::new(),
            // Producer id 0 is valid in Kafka, but starting at 1000 keeps ids recognisable
            // in logs and clear of tests that use small literal ids.
            next_producer_id: 1000,
            by_id: HashMap::new(),
        }
    }

    /// Rebuilds the derived index after deserialising.
    pub fn reindex(&mut self) {
        self.by_id = self
            .topics
            .values()
            .map(|t| (t.id, t.name.clone()))
            .collect();
    }

    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: TopicId) -> Option<&TopicMeta> {
        self.by_id.get(&id).and_then(|n| self.topics.get(n))
    }

    /// Applies one command, or refuses it without changing anything.
    pub fn apply(&mut self, cmd: MetadataCommand) -> Result<(), MetadataError> {
        match cmd {
            MetadataCommand::CreateTopic(t) => {
                for p in &t.partitions {
                    p.check().map_err(MetadataError::Invalid)?;
                }
                if self.topics.contains_key(&t.name) {
                    return Err(MetadataError::TopicExists(t.name));
                }
                if self.by_id.contains_key(&t.id) || t.id.0.is_nil() {
                    return Err(MetadataError::Invalid(format!(
                        "topic id {} in use",
                        t.id.0
                    )));
                }
                self.by_id.insert(t.id, t.name.clone());
                self.topics.insert(t.name.clone(), t);
            }
            MetadataCommand::DeleteTopic { id } => {
                let name = self
                    .by_id
                    .remove(&id)
                    .ok_or(MetadataError::UnknownTopicId(id))?;
                self.topics.remove(&name);
            }
            MetadataCommand::AddPartitions { id, added } => {
                for p in &added {
                    p.check().map_err(MetadataError::Invalid)?;
                }
                self.topic_mut(id)?.partitions.extend(added);
            }
            MetadataCommand::AssignPartitions { id, assignments } => {
                for (p, meta) in &assignments {
                    meta.check().map_err(MetadataError::Invalid)?;
                    let count = self.topic_mut(id)?.partitions.len();
                    if usize::try_from(*p).map_or(true, |p| p >= count) {
                        return Err(MetadataError::Invalid(format!(
                            "partition {p} of a topic of {count}"
                        )));
                    }
                }
                let topic = self.topic_mut(id)?;
                for (p, meta) in assignments {
                    topic.partitions[p as usize] = meta;
                }
            }
            MetadataCommand::SetTopicConfigs { id, configs } => {
                self.topic_mut(id)?.configs = configs;
            }
            MetadataCommand::AllocateProducerIds { count } => {
                if count <= 0 {
                    return Err(MetadataError::Invalid(format!(
                        "producer id block of {count}"
                    )));
                }
                self.next_producer_id = self
                    .next_producer_id
                    .checked_add(count)
                    .ok_or_else(|| MetadataError::Invalid("producer ids exhausted".into()))?;
            }
        }
        Ok(())
    }

    /// The partitions of an older format that no broker has yet, as (topic id, partition).
    pub fn unassigned(&self) -> Vec<(TopicId, i32)> {
        self.topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !p.is_assigned())
                    .map(|(i, _)| (t.id, i as i32))
            })
            .collect()
    }

    /// The commands that give every unassigned partition to `broker` as its only replica and
    /// leader (one per topic); empty when there is none.
    pub fn adopt_unassigned(&self, broker: BrokerId) -> Vec<MetadataCommand> {
        let mut by_topic: BTreeMap<TopicId, Vec<(i32, PartitionMeta)>> = BTreeMap::new();
        for (id, p) in self.unassigned() {
            by_topic
                .entry(id)
                .or_default()
                .push((p, PartitionMeta::led_by(broker)));
        }
        by_topic
            .into_iter()
            .map(|(id, assignments)| MetadataCommand::AssignPartitions { id, assignments })
            .collect()
    }

    fn topic_mut(&mut self, id: TopicId) -> Result<&mut TopicMeta, MetadataError> {
        let name = self
            .by_id
            .get(&id)
            .ok_or(MetadataError::UnknownTopicId(id))?;
        self.topics
            .get_mut(name)
            .ok_or(MetadataError::UnknownTopicId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id: TopicId::random(),
            partitions: vec![PartitionMeta::led_by(1); 2],
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn create_delete_recreate_gets_a_new_id() {
        let mut img = MetadataImage::new_cluster();
        let t = topic("a");
        let first = t.id;
        img.apply(MetadataCommand::CreateTopic(t.clone())).unwrap();
        assert!(matches!(
            img.apply(MetadataCommand::CreateTopic(topic("a"))),
            Err(MetadataError::TopicExists(_))
        ));
        img.apply(MetadataCommand::DeleteTopic { id: first })
            .unwrap();
        assert!(img.topic_by_id(first).is_none());
        let again = topic("a");
        img.apply(MetadataCommand::CreateTopic(again.clone()))
            .unwrap();
        assert_ne!(img.topic("a").unwrap().id, first);
    }

    #[test]
    fn partitions_configs_and_producer_ids() {
        let mut img = MetadataImage::new_cluster();
        let t = topic("a");
        img.apply(MetadataCommand::CreateTopic(t.clone())).unwrap();
        img.apply(MetadataCommand::AddPartitions {
            id: t.id,
            added: vec![PartitionMeta::led_by(2)],
        })
        .unwrap();
        assert_eq!(img.topic("a").unwrap().partitions.len(), 3);
        let start = img.next_producer_id;
        img.apply(MetadataCommand::AllocateProducerIds { count: 100 })
            .unwrap();
        assert_eq!(img.next_producer_id, start + 100);
        assert!(
            img.apply(MetadataCommand::AllocateProducerIds { count: 0 })
                .is_err()
        );
        assert!(
            img.apply(MetadataCommand::DeleteTopic {
                id: TopicId::random()
            })
            .is_err()
        );
    }

    #[test]
    fn a_format_1_partition_reads_unassigned_and_is_adopted() {
        // The local file's format 1 recorded a shard index per partition.
        let old: PartitionMeta = serde_json::from_str(r#"{"shard":3}"#).unwrap();
        assert_eq!(old, PartitionMeta::unassigned());
        let mut img = MetadataImage::new_cluster();
        let mut t = topic("a");
        t.partitions = vec![PartitionMeta::unassigned(), PartitionMeta::led_by(1)];
        img.apply(MetadataCommand::CreateTopic(t.clone())).unwrap();
        assert_eq!(img.unassigned(), vec![(t.id, 0)]);
        for c in img.adopt_unassigned(7) {
            img.apply(c).unwrap();
        }
        assert!(img.unassigned().is_empty());
        let parts = &img.topic("a").unwrap().partitions;
        assert_eq!(parts[0], PartitionMeta::led_by(7));
        assert_eq!(parts[1], PartitionMeta::led_by(1));
        assert!(img.adopt_unassigned(7).is_empty());
    }

    #[test]
    fn impossible_partitions_are_refused() {
        let bad = [
            PartitionMeta {
                leader: 2,
                ..PartitionMeta::led_by(1)
            },
            PartitionMeta {
                isr: vec![1, 2],
                ..PartitionMeta::led_by(1)
            },
            PartitionMeta {
                replicas: vec![1, 1],
                ..PartitionMeta::led_by(1)
            },
            PartitionMeta {
                leader_epoch: -1,
                ..PartitionMeta::led_by(1)
            },
        ];
        for p in bad {
            assert!(p.check().is_err(), "{p:?}");
            let mut img = MetadataImage::new_cluster();
            let mut t = topic("a");
            t.partitions = vec![p.clone()];
            assert!(img.apply(MetadataCommand::CreateTopic(t)).is_err());
        }
        let mut img = MetadataImage::new_cluster();
        let t = topic("a");
        img.apply(MetadataCommand::CreateTopic(t.clone())).unwrap();
        let out_of_range = MetadataCommand::AssignPartitions {
            id: t.id,
            assignments: vec![(2, PartitionMeta::led_by(1))],
        };
        assert!(img.apply(out_of_range).is_err());
        assert_eq!(img.topic("a").unwrap().partitions, t.partitions);
    }
}
