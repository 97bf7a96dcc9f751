//! Which shard of this node owns a partition, and the one call handlers use to run
//! per-partition work where it lives (Seastar's `submit_to` + `parallel_for_each` in one):
//! [`scatter`] groups the items by owning shard, sends each other shard its group in one
//! message, all at once, runs this shard's group in place meanwhile, and returns one result
//! per item in request order. A request spanning S shards therefore waits for the slowest
//! group, not the sum of S.
//!
//! Which broker serves a partition is in the replicated metadata (its leader); which core of
//! that broker serves it is computed here, per node, from `placement::place` and this node's
//! own shard count: a node-local fact, so two brokers with different shard counts (or one
//! restarted with another `--shards`) each place their partitions on shards of their own, and
//! nothing in the replicated metadata says or decides it.
//!
//! Never: visits shards one after another; reorders results; drops an item (an item of a
//! group whose shard is gone gets [`ShardGone`]); touches another shard's state except
//! through the mesh.

use std::future::Future;
use std::rc::Rc;

use super::mesh::ShardGone;
use super::placement::place;
use super::{Shard, ShardId};
use crate::metadata::image::BrokerId;
use crate::metadata::{MetadataImage, PartitionMeta, TopicId};

/// This node, as routing sees it: its broker id and its number of shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Here {
    pub node_id: BrokerId,
    pub shard_count: usize,
}

/// Why this node does not serve a partition's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHere {
    /// The image has no such topic or partition.
    NoSuchPartition,
    /// Another broker leads it (or none does: `leader` is -1).
    NotLeader { leader: BrokerId },
}

/// A partition of the image, when its topic and it exist.
pub fn partition_meta(
    image: &MetadataImage,
    topic: TopicId,
    partition: i32,
) -> Option<&PartitionMeta> {
    let meta = image.topic_by_id(topic)?;
    meta.partitions.get(usize::try_from(partition).ok()?)
}

/// The shard of this node that serves `partition` of `topic`'s requests: the partition exists
/// and this node leads it.
pub fn owner(
    image: &MetadataImage,
    topic: TopicId,
    partition: i32,
    here: Here,
) -> Result<ShardId, NotHere> {
    let meta = partition_meta(image, topic, partition).ok_or(NotHere::NoSuchPartition)?;
    if meta.leader != here.node_id {
        return Err(NotHere::NotLeader {
            leader: meta.leader,
        });
    }
    Ok(place(topic.0, partition, here.shard_count))
}

/// The shard of this node that holds its replica of `partition` of `topic`, if this node has
/// one (its log is open there).
pub fn replica_shard(
    image: &MetadataImage,
    topic: TopicId,
    partition: i32,
    here: Here,
) -> Option<ShardId> {
    let meta = partition_meta(image, topic, partition)?;
    meta.replicas
        .contains(&here.node_id)
        .then(|| place(topic.0, partition, here.shard_count))
}

/// Items grouped by owning shard, in order of first appearance: for each shard, the
/// positions of its items in the request and the items themselves, both in request order.
pub type Groups<T> = Vec<(ShardId, Vec<usize>, Vec<T>)>;

/// What each group gave: its shard, its items' positions, and its results (one per item, in
/// order) or the shard being gone.
pub type Answered<R> = Vec<(ShardId, Vec<usize>, Result<Vec<R>, ShardGone>)>;

/// Splits `items` (owner, item) by owner, keeping each item's position in the request.
pub fn group<T>(items: Vec<(ShardId, T)>) -> Groups<T> {
    let mut groups: Groups<T> = Vec::new();
    for (pos, (owner, item)) in items.into_iter().enumerate() {
        match groups.iter_mut().find(|(s, _, _)| *s == owner) {
            Some((_, positions, group)) => {
                positions.push(pos);
                group.push(item);
            }
            None => groups.push((owner, vec![pos], vec![item])),
        }
    }
    groups
}

/// Puts each group's results back in request order; `len` is the number of items. A group
/// that failed, or answered fewer results than it had items, fails its (remaining) items.
pub fn reassemble<R>(len: usize, done: Answered<R>) -> Vec<Result<R, ShardGone>> {
    let mut out: Vec<Option<Result<R, ShardGone>>> = (0..len).map(|_| None).collect();
    let mut unanswered = Vec::new();
    for (owner, positions, results) in done {
        let mut results = match results {
            Ok(r) => r.into_iter(),
            Err(gone) => {
                for pos in positions {
                    out[pos] = Some(Err(gone));
                }
                continue;
            }
        };
        for pos in positions {
            match results.next() {
                Some(r) => out[pos] = Some(Ok(r)),
                None => unanswered.push((pos, owner)),
            }
        }
    }
    for (pos, owner) in unanswered {
        out[pos] = Some(Err(ShardGone(owner)));
    }
    out.into_iter()
        .enumerate()
        .map(|(pos, r)| {
            // Every position belongs to exactly one group (`group` made them), so none is
            // left; a caller passing groups of its own still gets an answer per item.
            r.unwrap_or_else(|| {
                tracing::error!(pos, "scatter: an item belonged to no group");
                Err(ShardGone(ShardId(u16::MAX)))
            })
        })
        .collect()
}

/// Runs `op` once per owning shard with that shard's items (in request order) and returns one
/// result per item, in request order. `op` must answer one result per item it is given, in
/// the order given. Other shards' groups go out first, each as one mesh message, and run
/// concurrently with this shard's group, which runs in place.
pub async fn scatter<T, R, F, Fut>(
    shard: &Rc<Shard>,
    items: Vec<(ShardId, T)>,
    op: F,
) -> Vec<Result<R, ShardGone>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Rc<Shard>, Vec<T>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = Vec<R>> + 'static,
{
    let len = items.len();
    let mut local = None;
    let mut remote = Vec::new();
    for (owner, positions, group) in group(items) {
        if owner == shard.id {
            local = Some((positions, group));
            continue;
        }
        let (s, op) = (shard.clone(), op.clone());
        let call = glommio::spawn_local(async move {
            s.on_shard(owner, move |o: Rc<Shard>| op(o, group)).await
        })
        .detach();
        remote.push((owner, positions, call));
    }
    let mut done = Vec::with_capacity(remote.len() + 1);
    if let Some((positions, group)) = local {
        done.push((shard.id, positions, Ok(op(shard.clone(), group).await)));
    }
    for (owner, positions, call) in remote {
        // A task that ended without an answer ran on a shard that is going away.
        let results = call.await.unwrap_or(Err(ShardGone(owner)));
        done.push((owner, positions, results));
    }
    reassemble(len, done)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::metadata::{MetadataCommand, TopicMeta};

    #[test]
    fn only_the_leader_owns_and_only_replicas_hold() {
        let mut image = MetadataImage::new_cluster();
        let id = TopicId::random();
        let mut follower = PartitionMeta::led_by(2);
        follower.replicas.push(1);
        image
            .apply(MetadataCommand::CreateTopic(TopicMeta {
                name: "t".into(),
                id,
                partitions: vec![PartitionMeta::led_by(1), follower, PartitionMeta::led_by(3)],
                configs: Default::default(),
            }))
            .unwrap();
        let here = Here {
            node_id: 1,
            shard_count: 4,
        };
        assert_eq!(owner(&image, id, 0, here), Ok(place(id.0, 0, 4)));
        assert_eq!(
            owner(&image, id, 1, here),
            Err(NotHere::NotLeader { leader: 2 })
        );
        assert_eq!(owner(&image, id, 3, here), Err(NotHere::NoSuchPartition));
        assert_eq!(owner(&image, id, -1, here), Err(NotHere::NoSuchPartition));
        assert_eq!(
            owner(&image, TopicId::random(), 0, here),
            Err(NotHere::NoSuchPartition)
        );
        assert_eq!(replica_shard(&image, id, 1, here), Some(place(id.0, 1, 4)));
        assert_eq!(replica_shard(&image, id, 2, here), None);
    }

    proptest! {
        /// Any assignment of items to shards, any shards failing: every item comes back in
        /// its place, failed exactly when its owner failed.
        #[test]
        fn results_come_back_in_request_order(
            owners in proptest::collection::vec(0u16..4, 0..40),
            failing in proptest::collection::btree_set(0u16..4, 0..3),
        ) {
            let items: Vec<(ShardId, usize)> =
                owners.iter().enumerate().map(|(i, o)| (ShardId(*o), i)).collect();
            let groups = group(items);
            // Each group's items are in request order and name their positions.
            for (_, positions, group) in &groups {
                prop_assert_eq!(positions, group);
            }
            let done = groups
                .into_iter()
                .map(|(owner, positions, group)| {
                    let r = if failing.contains(&owner.0) {
                        Err(ShardGone(owner))
                    } else {
                        Ok(group.into_iter().map(|i| i * 10).collect())
                    };
                    (owner, positions, r)
                })
                .collect();
            let out = reassemble(owners.len(), done);
            prop_assert_eq!(out.len(), owners.len());
            for (i, r) in out.into_iter().enumerate() {
                if failing.contains(&owners[i]) {
                    prop_assert_eq!(r, Err(ShardGone(ShardId(owners[i]))));
                } else {
                    prop_assert_eq!(r, Ok(i * 10));
                }
            }
        }
    }

    #[test]
    fn a_group_answering_too_few_results_fails_the_rest() {
        let items = vec![(ShardId(1), 'a'), (ShardId(1), 'b'), (ShardId(0), 'c')];
        let done = group(items)
            .into_iter()
            .map(|(owner, positions, g)| {
                let answered: Vec<char> = g.into_iter().take(1).collect();
                (owner, positions, Ok(answered))
            })
            .collect();
        assert_eq!(
            reassemble(3, done),
            vec![Ok('a'), Err(ShardGone(ShardId(1))), Ok('c')]
        );
    }
}
