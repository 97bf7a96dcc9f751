//! CreateTopics (key 19): validate each topic (name, partition count, replication factor,
//! replica assignment, configs against the settings table), then create the valid ones in one
//! metadata change with fresh topic ids, each partition led by one live broker (spread over
//! them as Kafka does at replication factor 1, `metadata::assign`, or as the request's
//! assignment says). `validate_only` runs
//! every check and commits nothing. Also used by Metadata's auto-creation.
//!
//! Never: creates a topic with a setting the table does not accept; reuses a topic id.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use corebus_wire::kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, TopicName,
};

use super::common::{
    ItemError, check_topic_name, metadata_failure, on_controller, result_code, str_bytes,
};
use crate::config::check_topic_setting;
use crate::config::settings::{Scope, in_scope};
use crate::limits::{MAX_PARTITIONS_PER_TOPIC, MAX_TOPICS};
use crate::metadata::assign::spread;
use crate::metadata::image::BrokerId;
use crate::metadata::{MetadataCommand, PartitionMeta, TopicId, TopicMeta};
use crate::shard::Shard;

/// A topic to create, checked as far as it can be without the metadata image.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    /// The replicas of each partition (the first leads), when the request assigned them;
    /// else `replication_factor` replicas spread over the live brokers.
    pub assignments: Option<Vec<Vec<BrokerId>>>,
    pub replication_factor: usize,
}

/// Where new partitions may go: the live brokers (a partition has at most one replica on
/// each), and the replication factor of a topic created without one
/// (`default.replication.factor`).
#[derive(Debug, Clone)]
pub struct Placing {
    pub live: Vec<BrokerId>,
    pub default_replication: i16,
}

impl Placing {
    pub fn of(shard: &Shard) -> Placing {
        let default_replication = shard
            .config
            .settings
            .i64("default.replication.factor")
            .map_or(1, |v| v.clamp(1, i16::MAX as i64) as i16);
        Placing {
            live: shard.cluster().live_ids(),
            default_replication,
        }
    }
}

/// Creates `topics` (already checked by `check_new_topic`) on the controller; one result per
/// topic, in order. With `validate_only` nothing is committed and the ids are nil.
pub async fn create(
    shard: &Rc<Shard>,
    topics: Vec<NewTopic>,
    validate_only: bool,
) -> Vec<Result<TopicMeta, ItemError>> {
    let count = topics.len();
    let live = shard.cluster().candidates();
    let outcome = on_controller(shard, move |image| {
        let mut cmds = Vec::new();
        let mut results = Vec::with_capacity(topics.len());
        let mut total = image.topics.len();
        for t in topics {
            if image.topic(&t.name).is_some() {
                results.push(Err(ItemError::new(
                    ResponseError::TopicAlreadyExists,
                    format!("Topic '{}' already exists.", t.name),
                )));
                continue;
            }
            if total >= MAX_TOPICS {
                results.push(Err(ItemError::new(
                    ResponseError::PolicyViolation,
                    format!("this node already holds {MAX_TOPICS} topics"),
                )));
                continue;
            }
            let id = TopicId::random();
            let partitions = match t.assignments {
                Some(lists) => lists.into_iter().map(PartitionMeta::replicated).collect(),
                None => spread(id.0, 0..t.partitions, &live, t.replication_factor),
            };
            if partitions.is_empty() {
                results.push(Err(ItemError::new(
                    ResponseError::InvalidReplicationFactor,
                    "no live broker to lead the topic's partitions",
                )));
                continue;
            }
            total += 1;
            let meta = TopicMeta {
                name: t.name,
                id,
                partitions,
                configs: t.configs,
            };
            if !validate_only {
                cmds.push(MetadataCommand::CreateTopic(meta.clone()));
            }
            results.push(Ok(meta));
        }
        (cmds, results)
    })
    .await;
    match outcome {
        Ok(results) => results,
        Err(e) => (0..count).map(|_| Err(metadata_failure(&e))).collect(),
    }
}

/// Creates topics this broker needs on its own account (`__consumer_offsets`, auto-created
/// topics): through this node's controller when it is the controller, else forwarded to the
/// controller (`cluster::forward`), which a broker that is not the controller must do since
/// only the controller writes topics. One result per topic, in order.
pub async fn create_internal(
    shard: &Rc<Shard>,
    topics: Vec<NewTopic>,
) -> Vec<Result<TopicMeta, ItemError>> {
    let results = create(shard, topics.clone(), false).await;
    let not_controller = |r: &Result<TopicMeta, ItemError>| {
        r.as_ref()
            .is_err_and(|e| e.code == ResponseError::NotController)
    };
    let elsewhere = shard
        .cluster()
        .controller_id
        .is_some_and(|c| c != shard.node.node_id);
    if !elsewhere || !results.iter().any(not_controller) {
        return results;
    }
    let (forwarded, positions): (Vec<NewTopic>, Vec<usize>) = topics
        .into_iter()
        .zip(&results)
        .enumerate()
        .filter(|(_, (_, r))| not_controller(r))
        .map(|(i, (t, _))| (t, i))
        .unzip();
    let mut results = results;
    match crate::cluster::forward::create_topics(shard, &forwarded).await {
        Ok(codes) => {
            let image = shard.metadata();
            for ((t, pos), code) in forwarded.iter().zip(positions).zip(codes) {
                results[pos] = match (code, image.topic(&t.name)) {
                    (0, Some(meta)) => Ok(meta.clone()),
                    (0, None) => Err(ItemError::new(
                        ResponseError::UnknownServerError,
                        "created by the controller but not known here",
                    )),
                    (code, _) => Err(ItemError::new(
                        ResponseError::try_from_code(code)
                            .unwrap_or(ResponseError::UnknownServerError),
                        format!("the controller refused to create {} (error {code})", t.name),
                    )),
                };
            }
        }
        Err(reason) => {
            tracing::warn!(%reason, "cannot forward a topic creation to the controller");
            for pos in positions {
                results[pos] = Err(ItemError::new(
                    ResponseError::RequestTimedOut,
                    format!("forwarded to the controller: {reason}"),
                ));
            }
        }
    }
    results
}

/// The checks that need no metadata image: name, partition count, replication factor (at
/// least 1 and at most the live brokers; -1 is `default.replication.factor`), assignment
/// (distinct live brokers, as many for every partition), configs. `default_partitions`
/// replaces -1.
pub fn check_new_topic(
    name: &str,
    num_partitions: i32,
    replication_factor: i16,
    assigned_partitions: Option<Vec<(i32, Vec<i32>)>>,
    configs: impl IntoIterator<Item = (String, Option<String>)>,
    default_partitions: i32,
    placing: &Placing,
) -> Result<NewTopic, ItemError> {
    check_topic_name(name)?;
    let live = &placing.live;
    let mut assigned = None;
    let factor: usize;
    let partitions = match assigned_partitions {
        Some(assignments) if !assignments.is_empty() => {
            if num_partitions != -1 || replication_factor != -1 {
                return Err(ItemError::new(
                    ResponseError::InvalidRequest,
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
                ));
            }
            factor = assignments.first().map_or(1, |(_, b)| b.len());
            let mut by_partition = BTreeMap::new();
            for (p, brokers) in &assignments {
                let distinct = brokers.iter().collect::<HashSet<_>>().len() == brokers.len();
                let fits = !brokers.is_empty()
                    && brokers.len() == factor
                    && distinct
                    && brokers.iter().all(|b| live.contains(b));
                if !fits || by_partition.insert(*p, brokers.clone()).is_some() {
                    return Err(ItemError::new(
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "assignment of partition {p} must name 1 to {} distinct live \
                             broker(s) (of {live:?}), as many as every other partition, once",
                            live.len().max(1)
                        ),
                    ));
                }
            }
            let n = assignments.len() as i32;
            if by_partition.keys().copied().ne(0..n) {
                return Err(ItemError::new(
                    ResponseError::InvalidReplicaAssignment,
                    "partitions must be numbered consecutively from 0",
                ));
            }
            assigned = Some(by_partition.into_values().collect());
            n
        }
        _ => {
            if replication_factor == 0 || replication_factor < -1 {
                return Err(ItemError::new(
                    ResponseError::InvalidReplicationFactor,
                    "Replication factor must be larger than 0, or -1 to use the default value.",
                ));
            }
            let wanted = if replication_factor == -1 {
                placing.default_replication
            } else {
                replication_factor
            };
            if wanted as usize > live.len() {
                return Err(ItemError::new(
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "Unable to replicate the partition {wanted} time(s): The target replication factor of {wanted} cannot be reached because only {} broker(s) are registered.",
                        live.len()
                    ),
                ));
            }
            factor = wanted as usize;
            if num_partitions == -1 {
                default_partitions
            } else {
                num_partitions
            }
        }
    };
    if partitions <= 0 || partitions > MAX_PARTITIONS_PER_TOPIC {
        return Err(ItemError::new(
            ResponseError::InvalidPartitions,
            format!(
                "Number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}, got {partitions}."
            ),
        ));
    }
    let mut checked = BTreeMap::new();
    for (k, v) in configs {
        // Kafka skips configs given with a null value.
        let Some(v) = v else { continue };
        check_topic_setting(&k, &v).map_err(|m| ItemError::new(ResponseError::InvalidConfig, m))?;
        checked.insert(k, v);
    }
    Ok(NewTopic {
        name: name.to_string(),
        partitions,
        configs: checked,
        assignments: assigned,
        replication_factor: factor,
    })
}

pub async fn handle(
    shard: &Rc<Shard>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let settings = &shard.config.settings;
    let default_partitions = settings.i64("num.partitions").unwrap_or(1) as i32;
    let placing = Placing::of(shard);
    let names: Vec<String> = request
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .collect();
    let mut duplicates = HashSet::new();
    let mut seen = HashSet::new();
    for n in &names {
        if !seen.insert(n) {
            duplicates.insert(n.clone());
        }
    }
    // Checked topics go to the controller; the others already have their answer.
    let mut answers: Vec<Option<Result<TopicMeta, ItemError>>> = Vec::with_capacity(names.len());
    let mut to_create = Vec::new();
    for t in request.topics {
        let name = t.name.0.to_string();
        if duplicates.contains(&name) {
            answers.push(Some(Err(ItemError::new(
                ResponseError::InvalidRequest,
                format!(
                    "Create topics request from client contains multiple entries for topic {name}"
                ),
            ))));
            continue;
        }
        let assignments = t
            .assignments
            .into_iter()
            .map(|a| {
                (
                    a.partition_index,
                    a.broker_ids.into_iter().map(|b| b.0).collect(),
                )
            })
            .collect();
        let configs = t
            .configs
            .into_iter()
            .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string())));
        match check_new_topic(
            &name,
            t.num_partitions,
            t.replication_factor,
            Some(assignments),
            configs,
            default_partitions,
            &placing,
        ) {
            Ok(nt) => {
                to_create.push(nt);
                answers.push(None);
            }
            Err(e) => answers.push(Some(Err(e))),
        }
    }
    let mut created = create(shard, to_create, request.validate_only)
        .await
        .into_iter();
    let mut topics = Vec::with_capacity(names.len());
    for (name, answer) in names.into_iter().zip(answers) {
        let result = match answer {
            Some(r) => r,
            None => created.next().unwrap_or_else(|| {
                Err(ItemError::new(
                    ResponseError::UnknownServerError,
                    "lost result",
                ))
            }),
        };
        topics.push(topic_result(shard, name, &result, version));
    }
    CreateTopicsResponse::default().with_topics(topics)
}

fn topic_result(
    shard: &Shard,
    name: String,
    result: &Result<TopicMeta, ItemError>,
    version: i16,
) -> CreatableTopicResult {
    let mut r = CreatableTopicResult::default()
        .with_name(TopicName(str_bytes(name)))
        .with_error_code(result_code(result));
    match result {
        Err(e) => {
            r.error_message = e.wire_message();
            // v5+: -1 when the topic was not created.
            r.num_partitions = -1;
            r.replication_factor = -1;
        }
        Ok(meta) => {
            r.topic_id = meta.id.0;
            r.num_partitions = meta.partitions.len() as i32;
            r.replication_factor = meta.partitions.first().map_or(1, |p| p.replicas.len()) as i16;
            if version >= 5 {
                r.configs = Some(
                    in_scope(Scope::Topic)
                        .map(|s| {
                            let resolved = shard.config.settings.resolve_topic(s, &meta.configs);
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(s.name))
                                .with_value(resolved.value.map(|v| str_bytes(v.to_string())))
                                .with_config_source(resolved.source.wire_code())
                        })
                        .collect(),
                );
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        n: i32,
        rf: i16,
        assign: Option<Vec<(i32, Vec<i32>)>>,
        cfg: &[(&str, &str)],
    ) -> Result<NewTopic, ItemError> {
        check_new_topic(
            "t",
            n,
            rf,
            assign,
            cfg.iter()
                .map(|(k, v)| (k.to_string(), Some(v.to_string()))),
            3,
            &Placing {
                live: vec![1, 2],
                default_replication: 1,
            },
        )
    }

    #[test]
    fn defaults_and_refusals_use_kafkas_codes() {
        assert_eq!(check(-1, -1, None, &[]).unwrap().partitions, 3);
        assert_eq!(
            check(0, 1, None, &[]).unwrap_err().code,
            ResponseError::InvalidPartitions
        );
        assert_eq!(
            check(2, 3, None, &[]).unwrap_err().code,
            ResponseError::InvalidReplicationFactor
        );
        // Two brokers live: up to two replicas; -1 is default.replication.factor.
        assert_eq!(check(2, 2, None, &[]).unwrap().replication_factor, 2);
        assert_eq!(check(2, -1, None, &[]).unwrap().replication_factor, 1);
        for bad in [0, -2] {
            assert_eq!(
                check(2, bad, None, &[]).unwrap_err().code,
                ResponseError::InvalidReplicationFactor,
                "{bad}"
            );
        }
        let three_by_default = check_new_topic(
            "t",
            1,
            -1,
            None,
            [],
            1,
            &Placing {
                live: vec![1, 2],
                default_replication: 3,
            },
        );
        assert_eq!(
            three_by_default.unwrap_err().code,
            ResponseError::InvalidReplicationFactor
        );
        assert_eq!(
            check(2, 1, None, &[("retention.ms", "soon")])
                .unwrap_err()
                .code,
            ResponseError::InvalidConfig
        );
        assert_eq!(
            check(2, 1, None, &[("no.such", "1")]).unwrap_err().code,
            ResponseError::InvalidConfig
        );
        let ok = check(2, 1, None, &[("cleanup.policy", "compact")]).unwrap();
        assert_eq!(
            ok.configs.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );
        let assigned = check(-1, -1, Some(vec![(1, vec![1]), (0, vec![2])]), &[]).unwrap();
        assert_eq!(assigned.partitions, 2);
        assert_eq!(assigned.assignments, Some(vec![vec![2], vec![1]]));
        let both = check(-1, -1, Some(vec![(0, vec![2, 1])]), &[]).unwrap();
        assert_eq!(both.assignments, Some(vec![vec![2, 1]]));
        for bad in [
            vec![(0, vec![3])],
            vec![(0, vec![1, 1])],
            vec![(0, vec![1, 2]), (1, vec![1])],
            vec![(0, vec![1]), (0, vec![2])],
            vec![(0, vec![1]), (2, vec![2])],
        ] {
            assert_eq!(
                check(-1, -1, Some(bad.clone()), &[]).unwrap_err().code,
                ResponseError::InvalidReplicaAssignment,
                "{bad:?}"
            );
        }
        assert_eq!(
            check(2, -1, Some(vec![(0, vec![1])]), &[])
                .unwrap_err()
                .code,
            ResponseError::InvalidRequest
        );
    }
}
