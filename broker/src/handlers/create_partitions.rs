//! CreatePartitions (key 37): grows a topic to `count` partitions, each new one led by one live
//! broker (as assigned, or spread as at creation, `metadata::assign`). Kafka never shrinks a topic: a count not above the current one is
//! INVALID_PARTITIONS. `validate_only` checks and commits nothing.
//!
//! Never: renumbers or moves existing partitions.

use std::collections::HashSet;
use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use corebus_wire::kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::common::{ItemError, metadata_failure, on_controller};
use crate::limits::MAX_PARTITIONS_PER_TOPIC;
use crate::metadata::assign::spread;
use crate::metadata::{MetadataCommand, PartitionMeta};
use crate::shard::Shard;

/// One topic of the request: its name, the new partition count and the replica
/// assignments of the new partitions, when given.
type Ask = (String, i32, Option<Vec<Vec<i32>>>);

pub async fn handle(
    shard: &Rc<Shard>,
    request: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let cluster = shard.cluster();
    let live = cluster.live_ids();
    let candidates = cluster.candidates();
    let validate_only = request.validate_only;
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = request
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .filter(|n| !seen.insert(n.clone()))
        .collect();
    let asks: Vec<Ask> = request
        .topics
        .into_iter()
        .map(|t| {
            let assignments = t.assignments.map(|a| {
                a.into_iter()
                    .map(|x| x.broker_ids.into_iter().map(|b| b.0).collect())
                    .collect()
            });
            (t.name.0.to_string(), t.count, assignments)
        })
        .collect();
    let names: Vec<_> = asks.iter().map(|a| a.0.clone()).collect();
    let decided = on_controller(shard, move |image| {
        let mut cmds = Vec::new();
        let mut results = Vec::new();
        for (name, count, assignments) in asks {
            let result = (|| {
                if duplicates.contains(&name) {
                    return Err(ItemError::new(ResponseError::InvalidRequest, "Duplicate topic in request."));
                }
                let meta = image
                    .topic(&name)
                    .ok_or_else(|| ItemError::new(ResponseError::UnknownTopicOrPartition, "unknown topic"))?;
                let current = meta.partitions.len() as i32;
                if count <= current {
                    return Err(ItemError::new(
                        ResponseError::InvalidPartitions,
                        format!("Topic currently has {current} partitions, which is higher than the requested {count}."),
                    ));
                }
                if count > MAX_PARTITIONS_PER_TOPIC {
                    return Err(ItemError::new(
                        ResponseError::InvalidPartitions,
                        format!("at most {MAX_PARTITIONS_PER_TOPIC} partitions per topic"),
                    ));
                }
                // New partitions get as many replicas as the topic's first one has (after its
                // reassignment, if one is under way).
                let factor = meta
                    .partitions
                    .first()
                    .map_or(1, |p| p.target_replicas().len().max(1));
                let added: Vec<PartitionMeta> = match &assignments {
                    Some(a) => {
                        let fits = |b: &Vec<i32>| {
                            b.len() == factor
                                && b.iter().collect::<HashSet<_>>().len() == b.len()
                                && b.iter().all(|id| live.contains(id))
                        };
                        if a.len() as i32 != count - current || !a.iter().all(fits) {
                            return Err(ItemError::new(
                                ResponseError::InvalidReplicaAssignment,
                                format!("each new partition must be assigned to {factor} distinct live broker(s) (of {live:?}), as the topic's partitions are"),
                            ));
                        }
                        a.iter().cloned().map(PartitionMeta::replicated).collect()
                    }
                    None => spread(meta.id.0, current..count, &candidates, factor),
                };
                if added.is_empty() {
                    return Err(ItemError::new(ResponseError::InvalidReplicationFactor, "no live broker to lead the new partitions"));
                }
                if !validate_only {
                    cmds.push(MetadataCommand::AddPartitions { id: meta.id, added });
                }
                Ok(())
            })();
            results.push(result);
        }
        (cmds, results)
    })
    .await;
    let results: Vec<Result<(), ItemError>> = match decided {
        Ok(r) => r,
        Err(e) => names.iter().map(|_| Err(metadata_failure(&e))).collect(),
    };
    CreatePartitionsResponse::default().with_results(
        names
            .into_iter()
            .zip(results)
            .map(|(name, r)| {
                let mut out = CreatePartitionsTopicResult::default()
                    .with_name(super::common::str_bytes(name).into());
                if let Err(e) = r {
                    out.error_code = e.wire_code();
                    out.error_message = e.wire_message();
                }
                out
            })
            .collect(),
    )
}
