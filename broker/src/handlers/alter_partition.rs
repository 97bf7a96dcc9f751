//! AlterPartition (key 56, v2-v3): a partition leader asks the controller to change the
//! partition's in-sync set (`crate::replication::isr`, which decides and commits). Sent by
//! corebus brokers to the controller, as Kafka's leaders do; a broker that is not the
//! controller answers NOT_CONTROLLER for the whole request.
//!
//! Never: changes a partition for a broker that does not lead it, or against a leader epoch or
//! partition epoch that is no longer the partition's (`isr::decide`).

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::alter_partition_response::{PartitionData, TopicData};
use corebus_wire::kafka_protocol::messages::{
    AlterPartitionRequest, AlterPartitionResponse, BrokerId,
};

use crate::metadata::TopicId;
use crate::replication::isr::{IsrChange, alter_here};
use crate::shard::{Shard, ShardId};

/// v3 names the new members with their broker epochs (`new_isr_with_epochs`).
const ISR_WITH_EPOCHS_VERSION: i16 = 3;

pub async fn handle(
    shard: &Rc<Shard>,
    request: AlterPartitionRequest,
    version: i16,
) -> AlterPartitionResponse {
    let me = shard.node.node_id;
    if shard.cluster().controller_id.is_some_and(|c| c != me) {
        return AlterPartitionResponse::default()
            .with_error_code(ResponseError::NotController.code());
    }
    let from = request.broker_id.0;
    let mut changes = Vec::new();
    for t in &request.topics {
        for p in &t.partitions {
            let isr = if version >= ISR_WITH_EPOCHS_VERSION {
                p.new_isr_with_epochs
                    .iter()
                    .map(|b| b.broker_id.0)
                    .collect()
            } else {
                p.new_isr.iter().map(|b| b.0).collect()
            };
            changes.push(IsrChange {
                topic_id: TopicId(t.topic_id),
                partition: p.partition_index,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr,
            });
        }
    }
    let sent = changes.clone();
    let results = shard
        .on_shard(ShardId::CONTROLLER, move |s0: Rc<Shard>| async move {
            alter_here(&s0, from, sent).await
        })
        .await
        .unwrap_or_else(|_| {
            (0..changes.len())
                .map(|_| Err(ResponseError::NotController))
                .collect()
        });
    let mut topics: Vec<TopicData> = Vec::new();
    for (c, r) in changes.iter().zip(results) {
        let data = match r {
            Ok(meta) => PartitionData::default()
                .with_partition_index(c.partition)
                .with_leader_id(BrokerId(meta.leader))
                .with_leader_epoch(meta.leader_epoch)
                .with_isr(meta.isr.iter().map(|b| BrokerId(*b)).collect())
                .with_partition_epoch(meta.partition_epoch),
            Err(e) => PartitionData::default()
                .with_partition_index(c.partition)
                .with_error_code(e.code())
                .with_leader_id(BrokerId(-1))
                .with_leader_epoch(-1),
        };
        match topics.iter_mut().find(|t| t.topic_id == c.topic_id.0) {
            Some(t) => t.partitions.push(data),
            None => topics.push(
                TopicData::default()
                    .with_topic_id(c.topic_id.0)
                    .with_partitions(vec![data]),
            ),
        }
    }
    AlterPartitionResponse::default().with_topics(topics)
}
