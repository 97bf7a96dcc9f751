//! Which shard owns a partition: a pure function of the topic id, the partition index and the
//! shard count, so every shard computes the same answer; the controller records it in the
//! metadata when a partition is created.
//!
//! Never: moves a partition that already has an owner recorded (see `ShardId` in metadata).

use uuid::Uuid;

use super::ShardId;

/// The shard a new partition is placed on. Partitions of one topic go round-robin from a
/// start derived from the topic id, so many small topics do not all start on shard 0.
pub fn place(topic_id: Uuid, partition: i32, shard_count: usize) -> ShardId {
    let n = shard_count.max(1) as u64;
    let (hi, lo) = topic_id.as_u64_pair();
    let start = (hi ^ lo) % n;
    let p = u64::try_from(partition).unwrap_or(0);
    ShardId(((start + p) % n) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_deterministic_and_spreads() {
        let id = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
        assert_eq!(place(id, 3, 4), place(id, 3, 4));
        let shards: std::collections::BTreeSet<_> = (0..4).map(|p| place(id, p, 4)).collect();
        assert_eq!(shards.len(), 4);
        assert_eq!(place(id, 7, 1), ShardId(0));
    }
}
