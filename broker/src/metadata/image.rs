//! The metadata image: every topic with its id, partitions and their owning shards, per-topic
//! settings, the cluster id and the producer-id allocator; and the commands that change it.
//!
//! Owns: `MetadataImage`, `MetadataCommand`, `TopicId`, and the rules a change must obey
//! (names unique, ids never reused, producer ids only move forward).
//! Never: does I/O (the store persists images), validates setting values (the handlers do,
//! against the settings table).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::MetadataError;
use crate::shard::ShardId;

/// The version of the image's on-disk form; a newer file is refused, an older one upgraded.
pub const IMAGE_FORMAT_VERSION: u32 = 1;

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

/// One partition. `shard` is a legacy field of the stored formats (the local file's format 1
/// and the tree's format 1 record it): the shard the controller's own placement gave the
/// partition when it was created. Nothing reads it to route: each node computes its owner
/// from its own shard count (`shard::router`). It goes when the tree layout gains replicas,
/// leaders and ISRs (the data-path issue's next step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub shard: ShardId,
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
                self.topic_mut(id)?.partitions.extend(added);
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
            partitions: vec![PartitionMeta { shard: ShardId(0) }; 2],
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
            added: vec![PartitionMeta { shard: ShardId(1) }],
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
}
