//! Routing of group requests to the shard coordinating the group: `__consumer_offsets` is
//! created on first use (with `offsets.topic.num.partitions` partitions, compacted), the
//! group's partition is found by Kafka's hash rule, and the request crosses the mesh once to
//! the shard owning that partition. Also the checks every group request shares.
//!
//! Never: runs group logic (the coordinator does, on its shard).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use corebus_wire::error_code::ResponseError;

use super::create_topics::{NewTopic, Placing, create_internal};
use crate::groups::{OFFSETS_TOPIC, partition_for};
use crate::metadata::MetadataImage;
use crate::metadata::image::BrokerId;
use crate::shard::router::NotHere;
use crate::shard::{Shard, ShardId};

/// Longest group id, instance id or protocol name accepted: Kafka's record layout stores
/// them with an i16 length, and a member id adds a 37-byte UUID suffix.
pub const MAX_GROUP_STRING_BYTES: usize = i16::MAX as usize - 64;

/// The metadata image with `__consumer_offsets` in it, creating the topic when missing.
pub async fn offsets_topic(shard: &Rc<Shard>) -> Result<Arc<MetadataImage>, ResponseError> {
    let image = shard.metadata();
    if image.topic(OFFSETS_TOPIC).is_some() {
        return Ok(image);
    }
    let settings = &shard.config.settings;
    let partitions = settings.i64("offsets.topic.num.partitions").unwrap_or(50) as i32;
    let segment_bytes = settings
        .i64("offsets.topic.segment.bytes")
        .unwrap_or(104_857_600);
    let configs = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), segment_bytes.to_string()),
        ("compression.type".to_string(), "producer".to_string()),
    ]);
    // Capped by the live brokers, as Kafka does on small clusters.
    let placing = Placing::of(shard);
    let wanted = settings
        .i64("offsets.topic.replication.factor")
        .unwrap_or(3)
        .max(1) as usize;
    let replication_factor = wanted.min(placing.live.len().max(1));
    let topic = NewTopic {
        name: OFFSETS_TOPIC.to_string(),
        partitions,
        configs,
        assignments: None,
        replication_factor,
    };
    for result in create_internal(shard, vec![topic]).await {
        match result {
            Ok(_) if replication_factor < wanted => tracing::warn!(
                partitions,
                replication_factor,
                wanted,
                "created {OFFSETS_TOPIC} with fewer replicas than offsets.topic.replication.factor: \
                 only {replication_factor} broker(s) are live; add replicas later with a \
                 partition reassignment (corebus-ctl partition balance)"
            ),
            Ok(_) => tracing::info!(partitions, replication_factor, "created {OFFSETS_TOPIC}"),
            // Another request created it meanwhile.
            Err(e) if e.code == ResponseError::TopicAlreadyExists => {}
            Err(e) => {
                tracing::warn!(error = %e.message, "cannot create {OFFSETS_TOPIC}");
                return Err(ResponseError::CoordinatorNotAvailable);
            }
        }
    }
    let image = shard.metadata();
    match image.topic(OFFSETS_TOPIC) {
        Some(_) => Ok(image),
        None => Err(ResponseError::CoordinatorNotAvailable),
    }
}

/// The shard of this node coordinating `group_id`: the group's `__consumer_offsets`
/// partition is led here. Led by another broker: NOT_COORDINATOR (the client asks
/// FindCoordinator again); led by none: COORDINATOR_NOT_AVAILABLE.
pub async fn coordinator_shard(
    shard: &Rc<Shard>,
    group_id: &str,
) -> Result<ShardId, ResponseError> {
    let image = offsets_topic(shard).await?;
    let topic = image
        .topic(OFFSETS_TOPIC)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let p = partition_for(group_id, topic.partitions.len());
    crate::shard::router::owner(&image, topic.id, p, shard.here()).map_err(|e| match e {
        NotHere::NotLeader { leader } if leader >= 0 => ResponseError::NotCoordinator,
        _ => ResponseError::CoordinatorNotAvailable,
    })
}

/// The broker coordinating `group_id`: the leader of its `__consumer_offsets` partition (-1
/// when it has none).
pub fn coordinator_broker(image: &MetadataImage, group_id: &str) -> Option<BrokerId> {
    let topic = image.topic(OFFSETS_TOPIC)?;
    let p = partition_for(group_id, topic.partitions.len());
    topic
        .partitions
        .get(usize::try_from(p).ok()?)
        .map(|m| m.leader)
        .filter(|l| *l >= 0)
}

/// Runs `f` on the shard coordinating `group_id` (one mesh hop); a group id too long to
/// store is INVALID_GROUP_ID.
pub async fn on_coordinator<T, F, Fut>(
    shard: &Rc<Shard>,
    group_id: &str,
    f: F,
) -> Result<T, ResponseError>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    if group_id.len() > MAX_GROUP_STRING_BYTES {
        return Err(ResponseError::InvalidGroupId);
    }
    let owner = coordinator_shard(shard, group_id).await?;
    let group_id = group_id.to_string();
    shard
        .on_shard(owner, move |s: Rc<Shard>| async move {
            // Led here, but its groups not loaded yet (a failover just moved it here).
            let partition = crate::groups::coordinator::group_partition(&s, &group_id);
            if !s.groups.serves(&s, partition) {
                return Err(ResponseError::CoordinatorLoadInProgress);
            }
            Ok(f(s).await)
        })
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable)?
}

/// The checks of a group id for the membership APIs (JoinGroup, SyncGroup, Heartbeat,
/// LeaveGroup): not empty, and short enough to store.
pub fn check_group_id(group_id: &str) -> Result<(), ResponseError> {
    if group_id.is_empty() || group_id.len() > MAX_GROUP_STRING_BYTES {
        return Err(ResponseError::InvalidGroupId);
    }
    Ok(())
}

/// The error code of an outcome.
pub fn code(e: Option<ResponseError>) -> i16 {
    e.map_or(0, |e| e.code())
}
