//! Metadata (key 3): the live brokers and the controller as the cluster view has them (the
//! registrations in the consensus tree; this node alone without a group); topics with their
//! ids (KIP-516) and partitions with their leader, leader epoch, replicas and ISR as the
//! metadata image has them, so every broker of a cluster gives the same answer (a partition
//! whose leader is not live: LEADER_NOT_AVAILABLE with leader -1, and its replicas that are
//! not live listed as offline); auto-creation of unknown topics with `num.partitions` when the
//! broker allows it (`auto.create.topics.enable`) and the request does.
//!
//! Never: reports a topic that is not in the metadata image; creates a topic named by id.

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use corebus_wire::kafka_protocol::messages::{
    BrokerId, MetadataRequest, MetadataResponse, TopicName,
};
use uuid::Uuid;

use super::common::{ItemError, str_bytes};
use super::create_topics::{Placing, check_new_topic, create_internal};
use crate::metadata::{TopicId, TopicMeta};
use crate::shard::Shard;

/// What one requested topic resolved to.
enum Wanted {
    Found(TopicMeta),
    Missing {
        name: Option<String>,
        id: Uuid,
        error: ItemError,
    },
    /// Unknown and to be auto-created.
    Create(String),
}

pub async fn handle(shard: &Rc<Shard>, request: MetadataRequest, version: i16) -> MetadataResponse {
    let image = shard.metadata();
    // v0 has no null: an empty list means every topic there.
    let all = match &request.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    let mut wanted = Vec::new();
    if all {
        wanted.extend(image.topics.values().cloned().map(Wanted::Found));
    } else {
        let auto_create = request.allow_auto_topic_creation
            && shard.config.settings.bool("auto.create.topics.enable");
        for t in request.topics.unwrap_or_default() {
            wanted.push(match t.name {
                Some(name) => {
                    let name = name.0.to_string();
                    match image.topic(&name) {
                        Some(meta) => Wanted::Found(meta.clone()),
                        None => match super::common::check_topic_name(&name) {
                            Err(e) => Wanted::Missing {
                                name: Some(name),
                                id: Uuid::nil(),
                                error: e,
                            },
                            Ok(()) if auto_create => Wanted::Create(name),
                            Ok(()) => Wanted::Missing {
                                name: Some(name),
                                id: Uuid::nil(),
                                error: ItemError::new(
                                    ResponseError::UnknownTopicOrPartition,
                                    "unknown topic",
                                ),
                            },
                        },
                    }
                }
                None => match image.topic_by_id(TopicId(t.topic_id)) {
                    Some(meta) => Wanted::Found(meta.clone()),
                    None => Wanted::Missing {
                        name: None,
                        id: t.topic_id,
                        error: ItemError::new(ResponseError::UnknownTopicId, "unknown topic id"),
                    },
                },
            });
        }
    }
    let wanted = auto_create_missing(shard, wanted).await;
    let cluster = shard.cluster();
    let live = cluster.live_ids();
    let topics = wanted
        .into_iter()
        .map(|w| match w {
            Wanted::Found(meta) => topic_entry(&meta, &live),
            Wanted::Missing { name, id, error } => MetadataResponseTopic::default()
                .with_name(name.map(|n| TopicName(str_bytes(n))))
                .with_topic_id(id)
                .with_error_code(error.wire_code()),
            Wanted::Create(name) => MetadataResponseTopic::default()
                .with_name(Some(TopicName(str_bytes(name))))
                .with_error_code(ResponseError::UnknownServerError.code()),
        })
        .collect();
    let brokers = cluster
        .brokers
        .iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(str_bytes(b.host.clone()))
                .with_port(b.port)
                .with_rack(b.rack.clone().map(str_bytes))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(image.cluster_id.clone())))
        .with_controller_id(BrokerId(cluster.controller_wire_id()))
        .with_topics(topics)
}

/// Creates every `Wanted::Create` topic in one metadata change and replaces it by the result.
async fn auto_create_missing(shard: &Rc<Shard>, wanted: Vec<Wanted>) -> Vec<Wanted> {
    let default_partitions = shard.config.settings.i64("num.partitions").unwrap_or(1) as i32;
    let placing = Placing::of(shard);
    let mut new = Vec::new();
    let wanted: Vec<Wanted> = wanted
        .into_iter()
        .map(|w| match w {
            Wanted::Create(name) => {
                match check_new_topic(&name, -1, -1, None, [], default_partitions, &placing) {
                    Ok(t) => {
                        new.push(t);
                        Wanted::Create(name)
                    }
                    Err(error) => Wanted::Missing {
                        name: Some(name),
                        id: Uuid::nil(),
                        error,
                    },
                }
            }
            other => other,
        })
        .collect();
    if new.is_empty() {
        return wanted;
    }
    let mut created = create_internal(shard, new).await.into_iter();
    wanted
        .into_iter()
        .map(|w| match w {
            Wanted::Create(name) => match created.next() {
                Some(Ok(meta)) => {
                    tracing::info!(topic = %meta.name, partitions = meta.partitions.len(), "topic auto-created");
                    Wanted::Found(meta)
                }
                // Another request created it in between: report what exists now.
                Some(Err(e)) if e.code == ResponseError::TopicAlreadyExists => match shard.metadata().topic(&name) {
                    Some(meta) => Wanted::Found(meta.clone()),
                    None => Wanted::Missing { name: Some(name), id: Uuid::nil(), error: e },
                },
                Some(Err(e)) => Wanted::Missing { name: Some(name), id: Uuid::nil(), error: e },
                None => Wanted::Missing {
                    name: Some(name),
                    id: Uuid::nil(),
                    error: ItemError::new(ResponseError::UnknownServerError, "lost result"),
                },
            },
            other => other,
        })
        .collect()
}

fn topic_entry(meta: &TopicMeta, live: &[i32]) -> MetadataResponseTopic {
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let partitions = meta
        .partitions
        .iter()
        .enumerate()
        .map(|(p, m)| {
            let offline: Vec<i32> = m
                .replicas
                .iter()
                .copied()
                .filter(|r| !live.contains(r))
                .collect();
            let leader = if live.contains(&m.leader) {
                m.leader
            } else {
                -1
            };
            let mut entry = MetadataResponsePartition::default()
                .with_partition_index(p as i32)
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(m.leader_epoch)
                .with_replica_nodes(ids(&m.replicas))
                .with_isr_nodes(ids(&m.isr))
                .with_offline_replicas(ids(&offline));
            if leader < 0 {
                entry.error_code = ResponseError::LeaderNotAvailable.code();
            }
            entry
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(meta.name.clone()))))
        .with_topic_id(meta.id.0)
        // Clients leave internal topics out of pattern subscriptions (v1+ carry the flag).
        .with_is_internal(meta.name == crate::groups::OFFSETS_TOPIC)
        .with_partitions(partitions)
}
