//! In-sync set changes, with Kafka's AlterPartition semantics.
//!
//! The leader proposes (`check_loop`, on the shard that leads the partition): a follower
//! that has not been caught up for `replica.lag.time.max.ms` leaves the set; a replica
//! outside it whose fetch offset reached the high watermark, and that fetched within that
//! time, joins it. The proposal names the leader epoch and partition epoch the leader knows;
//! the controller ([`decide`]) applies it only if both are still the partition's, the
//! proposer still leads it and every new member is a live replica, and bumps the partition
//! epoch, in one compare-and-set write of the tree (the controller's fenced `multi`). The
//! leader uses the new set only once that write succeeded (`Leaders::altered`), so a stale
//! leader's change fails instead of overwriting a newer state. One proposal per partition is
//! in flight at a time; a refused one is tried again no sooner than [`RETRY_AFTER_MS`].
//!
//! The proposal goes from the leader's shard to shard 0 of its broker; there, when this broker
//! is the controller, it is decided and committed in place, else it is sent to the controller
//! as a Kafka AlterPartition request (`cluster::forward::alter_partition`), which the
//! controller answers with `handlers::alter_partition`.
//!
//! Never: removes the leader from the set; adds a broker that is not a live replica; lets the
//! high watermark count a set that was not committed.

use std::rc::Rc;
use std::time::Duration;

use corebus_wire::error_code::ResponseError;
use tracing::{info, warn};

use crate::metadata::image::BrokerId;
use crate::metadata::{MetadataCommand, MetadataImage, PartitionMeta, TopicId, reassign};
use crate::shard::{Shard, ShardId};
use crate::storage::now_ms;

/// How often a shard looks at its led partitions' followers.
pub const CHECK_INTERVAL_MS: u64 = 250;
/// Wait before proposing again for a partition whose last proposal failed.
pub const RETRY_AFTER_MS: i64 = 1_000;
/// Kafka's default `replica.lag.time.max.ms`.
pub const DEFAULT_REPLICA_LAG_TIME_MAX_MS: i64 = 30_000;

/// A proposed in-sync set for one partition, as the leader knows the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub topic_id: TopicId,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<BrokerId>,
}

/// The controller's decision on `change` from broker `from`, against `image` with `live`
/// brokers: the partition's new state (`Ok(None)`: already that set, nothing to write), or the
/// error Kafka's controller gives.
pub fn decide(
    image: &MetadataImage,
    live: &[BrokerId],
    from: BrokerId,
    change: &IsrChange,
) -> Result<Option<PartitionMeta>, ResponseError> {
    let topic = image
        .topic_by_id(change.topic_id)
        .ok_or(ResponseError::UnknownTopicId)?;
    let meta = usize::try_from(change.partition)
        .ok()
        .and_then(|p| topic.partitions.get(p))
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    // Kafka's controller: epochs from the future mean this controller is behind
    // (NOT_CONTROLLER, the leader retries), older ones a stale leader.
    if change.leader_epoch > meta.leader_epoch || change.partition_epoch > meta.partition_epoch {
        return Err(ResponseError::NotController);
    }
    if change.leader_epoch < meta.leader_epoch {
        return Err(ResponseError::FencedLeaderEpoch);
    }
    if meta.leader != from {
        return Err(ResponseError::InvalidRequest);
    }
    if change.partition_epoch < meta.partition_epoch {
        return Err(ResponseError::InvalidUpdateVersion);
    }
    let mut seen = std::collections::BTreeSet::new();
    let well_formed = change
        .isr
        .iter()
        .all(|b| seen.insert(*b) && meta.replicas.contains(b))
        && change.isr.contains(&from);
    if !well_formed {
        return Err(ResponseError::InvalidRequest);
    }
    if !change
        .isr
        .iter()
        .all(|b| meta.isr.contains(b) || live.contains(b))
    {
        return Err(ResponseError::IneligibleReplica);
    }
    if change.isr == meta.isr {
        return Ok(None);
    }
    let mut next = meta.clone();
    next.isr = change.isr.clone();
    next.partition_epoch += 1;
    Ok(Some(next))
}

/// Decides and commits `changes` from broker `from` on this broker's controller (shard 0):
/// one result per change, in order. NOT_CONTROLLER for each when this broker is not the
/// controller.
pub async fn alter_here(
    shard: &Rc<Shard>,
    from: BrokerId,
    changes: Vec<IsrChange>,
) -> Vec<Result<PartitionMeta, ResponseError>> {
    let count = changes.len();
    // A broker in a controlled shutdown does not join an in-sync set again.
    let view = shard.cluster();
    let mut live = view.live_ids();
    if let Some(c) = shard.controller() {
        let barred = c.barred(&view);
        live.retain(|b| !barred.contains(b));
    }
    let outcome = crate::handlers::common::on_controller(shard, move |image: &MetadataImage| {
        let mut cmds = Vec::new();
        let mut results = Vec::with_capacity(changes.len());
        for c in &changes {
            // A reassignment completes as soon as its last target replica is in sync, in
            // the same write (`metadata::reassign`): the brokers in `live` are not barred.
            let decided = decide(image, &live, from, c)
                .map(|d| d.map(|meta| reassign::complete(&meta, &live, &[]).unwrap_or(meta)));
            results.push(match decided {
                Ok(Some(meta)) => {
                    cmds.push(MetadataCommand::AssignPartitions {
                        id: c.topic_id,
                        assignments: vec![(c.partition, meta.clone())],
                    });
                    Ok(meta)
                }
                Ok(None) => current(image, c).ok_or(ResponseError::UnknownTopicOrPartition),
                Err(e) => Err(e),
            });
        }
        (cmds, results)
    })
    .await;
    match outcome {
        Ok(results) => results,
        Err(e) => {
            let code = crate::handlers::common::metadata_failure(&e).code;
            (0..count).map(|_| Err(code)).collect()
        }
    }
}

fn current(image: &MetadataImage, c: &IsrChange) -> Option<PartitionMeta> {
    let p = usize::try_from(c.partition).ok()?;
    image.topic_by_id(c.topic_id)?.partitions.get(p).cloned()
}

/// Sends `changes` to the controller, wherever it is (runs on shard 0).
async fn alter(
    shard: &Rc<Shard>,
    changes: Vec<IsrChange>,
) -> Vec<Result<PartitionMeta, ResponseError>> {
    let me = shard.node.node_id;
    let cluster = shard.cluster();
    match cluster.controller_id {
        Some(c) if c != me => {
            let count = changes.len();
            match crate::cluster::forward::alter_partition(shard, &changes).await {
                Ok(results) => results,
                Err(reason) => {
                    warn!(%reason, "cannot send an in-sync set change to the controller");
                    (0..count)
                        .map(|_| Err(ResponseError::RequestTimedOut))
                        .collect()
                }
            }
        }
        _ => alter_here(shard, me, changes).await,
    }
}

/// The shard's periodic look at its led partitions (started once per shard; ends at
/// shutdown): proposes the in-sync set changes `Leaders::proposals` finds, each in its own
/// task, and hands the outcome back to `Leaders`.
pub async fn check_loop(shard: Rc<Shard>) {
    let lag_ms = shard
        .config
        .settings
        .i64("replica.lag.time.max.ms")
        .unwrap_or(DEFAULT_REPLICA_LAG_TIME_MAX_MS)
        .max(1);
    loop {
        let stop = futures_lite::future::or(
            async {
                glommio::timer::sleep(Duration::from_millis(CHECK_INTERVAL_MS)).await;
                false
            },
            async {
                shard.shutdown.wait().await;
                true
            },
        )
        .await;
        if stop {
            return;
        }
        let live = shard.cluster().live_ids();
        let proposals = shard
            .leaders
            .proposals(now_ms(), lag_ms, shard.node.node_id, &live);
        if proposals.is_empty() {
            continue;
        }
        let s = shard.clone();
        glommio::spawn_local(async move {
            let sent = proposals.clone();
            let results = s
                .on_shard(ShardId::CONTROLLER, move |s0: Rc<Shard>| async move {
                    alter(&s0, sent).await
                })
                .await
                .unwrap_or_default();
            for (i, change) in proposals.iter().enumerate() {
                let result = results
                    .get(i)
                    .cloned()
                    .unwrap_or(Err(ResponseError::UnknownServerError));
                match &result {
                    Ok(meta) => info!(
                        topic = %change.topic_id.0,
                        partition = change.partition,
                        isr = ?meta.isr,
                        partition_epoch = meta.partition_epoch,
                        "in-sync replicas changed"
                    ),
                    Err(e) => warn!(
                        topic = %change.topic_id.0,
                        partition = change.partition,
                        proposed = ?change.isr,
                        error = ?e,
                        "in-sync set change refused"
                    ),
                }
                s.leaders.altered(change, result, s.node.node_id, now_ms());
            }
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TopicMeta;

    fn image() -> (MetadataImage, TopicId) {
        let mut image = MetadataImage::new_cluster();
        let id = TopicId::random();
        image
            .apply(MetadataCommand::CreateTopic(TopicMeta {
                name: "t".into(),
                id,
                partitions: vec![PartitionMeta::replicated(vec![1, 2, 3])],
                configs: Default::default(),
            }))
            .unwrap();
        (image, id)
    }

    fn change(id: TopicId, isr: &[BrokerId], partition_epoch: i32) -> IsrChange {
        IsrChange {
            topic_id: id,
            partition: 0,
            leader_epoch: 0,
            partition_epoch,
            isr: isr.to_vec(),
        }
    }

    #[test]
    fn a_shrink_from_the_leader_bumps_the_partition_epoch() {
        let (image, id) = image();
        let next = decide(&image, &[1, 2, 3], 1, &change(id, &[1, 2], 0))
            .unwrap()
            .unwrap();
        assert_eq!(next.isr, vec![1, 2]);
        assert_eq!(next.partition_epoch, 1);
        assert_eq!(next.leader, 1);
        assert_eq!(
            decide(&image, &[1, 2, 3], 1, &change(id, &[1, 2, 3], 0)),
            Ok(None)
        );
    }

    #[test]
    fn stale_or_foreign_proposals_are_refused() {
        let (image, id) = image();
        let live = [1, 2, 3];
        assert_eq!(
            decide(&image, &live, 2, &change(id, &[2], 0)),
            Err(ResponseError::InvalidRequest)
        );
        // From the future: this controller is behind.
        assert_eq!(
            decide(&image, &live, 1, &change(id, &[1], 3)),
            Err(ResponseError::NotController)
        );
        let mut ahead = change(id, &[1], 0);
        ahead.leader_epoch = 1;
        assert_eq!(
            decide(&image, &live, 1, &ahead),
            Err(ResponseError::NotController)
        );
        // Not a replica, twice, or without the leader.
        for isr in [&[1, 4][..], &[1, 1][..], &[2, 3][..]] {
            assert_eq!(
                decide(&image, &live, 1, &change(id, isr, 0)),
                Err(ResponseError::InvalidRequest),
                "{isr:?}"
            );
        }
        assert_eq!(
            decide(&image, &live, 1, &change(TopicId::random(), &[1], 0)),
            Err(ResponseError::UnknownTopicId)
        );
    }

    #[test]
    fn only_live_replicas_join() {
        let (mut image, id) = image();
        let shrunk = decide(&image, &[1, 2, 3], 1, &change(id, &[1], 0))
            .unwrap()
            .unwrap();
        image
            .apply(MetadataCommand::AssignPartitions {
                id,
                assignments: vec![(0, shrunk)],
            })
            .unwrap();
        assert_eq!(
            decide(&image, &[1, 2], 1, &change(id, &[1, 3], 1)),
            Err(ResponseError::IneligibleReplica)
        );
        let grown = decide(&image, &[1, 2], 1, &change(id, &[1, 2], 1))
            .unwrap()
            .unwrap();
        assert_eq!((grown.isr.clone(), grown.partition_epoch), (vec![1, 2], 2));
        image
            .apply(MetadataCommand::AssignPartitions {
                id,
                assignments: vec![(0, grown)],
            })
            .unwrap();
        // A stale leader's change (an older partition epoch) is refused.
        assert_eq!(
            decide(&image, &[1, 2], 1, &change(id, &[1], 1)),
            Err(ResponseError::InvalidUpdateVersion)
        );
    }
}
