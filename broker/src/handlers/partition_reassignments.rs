//! AlterPartitionReassignments (key 45, v0-v1) and ListPartitionReassignments (key 46, v0):
//! move partitions to other brokers, cancel a move, list the moves under way
//! (`metadata::reassign` decides; the controller commits in its fenced transaction). Kafka's
//! admin clients send both to the controller Metadata names; another broker answers
//! NOT_CONTROLLER.
//!
//! The request's `timeout_ms` is not waited on: the reassignment is started (or cancelled)
//! when the controller's write commits, before the answer; the copying goes on in the
//! background and `ListPartitionReassignments` shows it until the new replicas are in sync.
//!
//! Never: names a broker that is not live as a new replica; drops a replica before every
//! target replica is in sync.

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use corebus_wire::kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use corebus_wire::kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use corebus_wire::kafka_protocol::protocol::StrBytes;
use tracing::info;

use crate::handlers::common::on_controller_with_brokers;
use crate::metadata::{MetadataCommand, MetadataImage, reassign};
use crate::shard::Shard;

/// v1 added `allow_replication_factor_change` (KIP-860).
const RF_CHANGE_VERSION: i16 = 1;

/// One partition asked for: its new replicas, or `None` to cancel its reassignment.
type Asked = (String, i32, Option<Vec<i32>>);
/// One partition's outcome: its error code and message (none: done).
type Outcome = (String, i32, Option<(ResponseError, String)>);

pub async fn alter(
    shard: &Rc<Shard>,
    request: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    let allow_rf_change = version < RF_CHANGE_VERSION || request.allow_replication_factor_change;
    let asked: Vec<Asked> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
                )
            })
        })
        .collect();
    let response = AlterPartitionReassignmentsResponse::default();
    let response = if version >= RF_CHANGE_VERSION {
        response.with_allow_replication_factor_change(allow_rf_change)
    } else {
        response
    };
    if shard.cluster().controller_id != Some(shard.node.node_id) {
        return response
            .with_error_code(ResponseError::NotController.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "this broker is not the controller",
            )));
    }
    let outcome = on_controller_with_brokers(shard, None, move |image, live, barred| {
        decide(image, &asked, allow_rf_change, live, barred)
    })
    .await;
    match outcome {
        Ok(outcomes) => response.with_responses(answer(outcomes)),
        Err(code) => response.with_error_code(code.code()),
    }
}

/// The controller's changes for `asked`, one outcome per partition in order. A partition named
/// twice is refused the second time (Kafka: INVALID_REQUEST for duplicates).
fn decide(
    image: &MetadataImage,
    asked: &[Asked],
    allow_rf_change: bool,
    live: &[i32],
    barred: &[i32],
) -> (Vec<MetadataCommand>, Vec<Outcome>) {
    let mut cmds = Vec::new();
    let mut outcomes = Vec::with_capacity(asked.len());
    let mut done = std::collections::BTreeSet::new();
    for (topic, partition, target) in asked {
        let result = (|| {
            if !done.insert((topic.as_str(), *partition)) {
                return Err((
                    ResponseError::InvalidRequest,
                    "the partition is named twice".to_string(),
                ));
            }
            let unknown = || {
                (
                    ResponseError::UnknownTopicOrPartition,
                    "no such topic or partition".to_string(),
                )
            };
            let t = image.topic(topic).ok_or_else(unknown)?;
            let meta = usize::try_from(*partition)
                .ok()
                .and_then(|p| t.partitions.get(p))
                .ok_or_else(unknown)?;
            let next = match target {
                Some(target) => reassign::start(meta, target, allow_rf_change, live, barred)?,
                None => Some(reassign::cancel(meta, live, barred)?),
            };
            if let Some(next) = next {
                info!(
                    topic = %topic,
                    partition,
                    replicas = ?next.replicas,
                    adding = ?next.adding,
                    removing = ?next.removing,
                    leader = next.leader,
                    "partition reassignment {}",
                    if target.is_some() { "started" } else { "cancelled" }
                );
                cmds.push(MetadataCommand::AssignPartitions {
                    id: t.id,
                    assignments: vec![(*partition, next)],
                });
            }
            Ok(())
        })();
        outcomes.push((topic.clone(), *partition, result.err()));
    }
    (cmds, outcomes)
}

fn answer(outcomes: Vec<Outcome>) -> Vec<ReassignableTopicResponse> {
    let mut topics: Vec<ReassignableTopicResponse> = Vec::new();
    for (topic, partition, error) in outcomes {
        let (code, message) = match error {
            None => (0, None),
            Some((e, m)) => (e.code(), Some(StrBytes::from_string(m))),
        };
        let r = ReassignablePartitionResponse::default()
            .with_partition_index(partition)
            .with_error_code(code)
            .with_error_message(message);
        match topics.iter_mut().find(|t| *t.name.0 == *topic) {
            Some(t) => t.partitions.push(r),
            None => topics.push(
                ReassignableTopicResponse::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(vec![r]),
            ),
        }
    }
    topics
}

pub async fn list(
    shard: &Rc<Shard>,
    request: ListPartitionReassignmentsRequest,
    _version: i16,
) -> ListPartitionReassignmentsResponse {
    if shard.cluster().controller_id != Some(shard.node.node_id) {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(ResponseError::NotController.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "this broker is not the controller",
            )));
    }
    let image = shard.metadata();
    let asked: Option<Vec<(String, Vec<i32>)>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    ListPartitionReassignmentsResponse::default().with_topics(ongoing(&image, asked.as_deref()))
}

/// The partitions under reassignment, of `asked` (topic, partitions) or of every topic. Topics
/// and partitions that do not exist or are not moving are left out, as Kafka's controller does.
fn ongoing(
    image: &MetadataImage,
    asked: Option<&[(String, Vec<i32>)]>,
) -> Vec<OngoingTopicReassignment> {
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let mut out = Vec::new();
    for topic in image.topics.values() {
        let wanted: Option<&Vec<i32>> = match asked {
            None => None,
            Some(a) => match a.iter().find(|(name, _)| *name == topic.name) {
                Some((_, parts)) => Some(parts),
                None => continue,
            },
        };
        let partitions: Vec<OngoingPartitionReassignment> = topic
            .partitions
            .iter()
            .enumerate()
            .filter(|(p, m)| m.is_reassigning() && wanted.is_none_or(|w| w.contains(&(*p as i32))))
            .map(|(p, m)| {
                OngoingPartitionReassignment::default()
                    .with_partition_index(p as i32)
                    .with_replicas(ids(&m.replicas))
                    .with_adding_replicas(ids(&m.adding))
                    .with_removing_replicas(ids(&m.removing))
            })
            .collect();
        if !partitions.is_empty() {
            out.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(topic.name.clone())))
                    .with_partitions(partitions),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{PartitionMeta, TopicId, TopicMeta};

    fn image() -> MetadataImage {
        let mut img = MetadataImage::new_cluster();
        img.apply(MetadataCommand::CreateTopic(TopicMeta {
            name: "t".into(),
            id: TopicId::random(),
            partitions: vec![PartitionMeta::replicated(vec![1, 2]); 2],
            configs: Default::default(),
        }))
        .unwrap();
        img
    }

    #[test]
    fn a_started_move_is_listed_and_errors_are_per_partition() {
        let mut img = image();
        let asked: Vec<Asked> = vec![
            ("t".into(), 0, Some(vec![1, 3])),
            ("t".into(), 1, None),
            ("t".into(), 5, Some(vec![1])),
            ("nope".into(), 0, Some(vec![1])),
            ("t".into(), 0, Some(vec![2])),
        ];
        let (cmds, outcomes) = decide(&img, &asked, true, &[1, 2, 3], &[]);
        let codes: Vec<Option<ResponseError>> =
            outcomes.iter().map(|o| o.2.as_ref().map(|e| e.0)).collect();
        assert_eq!(
            codes,
            vec![
                None,
                Some(ResponseError::NoReassignmentInProgress),
                Some(ResponseError::UnknownTopicOrPartition),
                Some(ResponseError::UnknownTopicOrPartition),
                Some(ResponseError::InvalidRequest),
            ]
        );
        for c in cmds {
            img.apply(c).unwrap();
        }
        let listed = ongoing(&img, None);
        assert_eq!(listed.len(), 1);
        let p = &listed[0].partitions;
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].partition_index, 0);
        assert_eq!(p[0].replicas, vec![BrokerId(1), BrokerId(3), BrokerId(2)]);
        assert_eq!(p[0].adding_replicas, vec![BrokerId(3)]);
        assert_eq!(p[0].removing_replicas, vec![BrokerId(2)]);
        assert!(ongoing(&img, Some(&[("t".into(), vec![1])])).is_empty());
        assert_eq!(ongoing(&img, Some(&[("t".into(), vec![0, 1])])).len(), 1);
        // Cancelled: back to 1, 2 and nothing listed.
        let (cmds, outcomes) = decide(&img, &[("t".into(), 0, None)], true, &[1, 2, 3], &[]);
        assert!(outcomes[0].2.is_none());
        for c in cmds {
            img.apply(c).unwrap();
        }
        assert_eq!(img.topic("t").unwrap().partitions[0].replicas, vec![1, 2]);
        assert!(ongoing(&img, None).is_empty());
    }
}
