//! A group's committed offsets in memory: the latest stored record of each (topic,
//! partition), with its metadata string, leader epoch and commit time. The coordinator
//! changes it only after the record is written to `__consumer_offsets`, so what it answers
//! is always durable.
//!
//! Never: changes without the matching record written first.

use std::collections::BTreeMap;

use super::record::OffsetValue;

/// (topic, partition)
pub type TopicPartition = (String, i32);

#[derive(Debug, Clone, Default)]
pub struct GroupOffsets {
    offsets: BTreeMap<TopicPartition, OffsetValue>,
}

impl GroupOffsets {
    pub fn get(&self, topic: &str, partition: i32) -> Option<&OffsetValue> {
        self.offsets.get(&(topic.to_string(), partition))
    }

    pub fn put(&mut self, topic: String, partition: i32, value: OffsetValue) {
        self.offsets.insert((topic, partition), value);
    }

    pub fn remove(&mut self, topic: &str, partition: i32) -> Option<OffsetValue> {
        self.offsets.remove(&(topic.to_string(), partition))
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Every committed offset, by topic then partition.
    pub fn iter(&self) -> impl Iterator<Item = (&TopicPartition, &OffsetValue)> {
        self.offsets.iter()
    }

    /// The offsets of an empty group due to expire at `now_ms` (KIP-211): those for which
    /// `retention_ms` has passed since the later of their commit and the moment the group
    /// became empty (Kafka counts from the latter; the commit time too keeps an offset that a
    /// client outside any generation committed recently).
    pub fn expired(
        &self,
        empty_since_ms: i64,
        retention_ms: i64,
        now_ms: i64,
    ) -> Vec<TopicPartition> {
        self.offsets
            .iter()
            .filter(|(_, v)| {
                let base = v.commit_timestamp_ms.max(empty_since_ms);
                now_ms.saturating_sub(base) >= retention_ms
            })
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// The partitions of `topic` with a committed offset.
    pub fn partitions_of<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = i32> + 'a {
        self.offsets
            .range((topic.to_string(), i32::MIN)..=(topic.to_string(), i32::MAX))
            .map(|((_, p), _)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(offset: i64) -> OffsetValue {
        OffsetValue {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        }
    }

    #[test]
    fn latest_commit_wins_and_topics_stay_apart() {
        let mut o = GroupOffsets::default();
        o.put("a".into(), 0, v(1));
        o.put("a".into(), 0, v(5));
        o.put("a".into(), 2, v(7));
        o.put("ab".into(), 1, v(9));
        assert_eq!(o.get("a", 0).map(|v| v.offset), Some(5));
        assert_eq!(o.partitions_of("a").collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(o.remove("a", 0).map(|v| v.offset), Some(5));
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn offsets_expire_after_retention_from_the_later_of_commit_and_emptiness() {
        let mut o = GroupOffsets::default();
        let at = |offset, ts| OffsetValue {
            commit_timestamp_ms: ts,
            ..v(offset)
        };
        o.put("t".into(), 0, at(1, 1_000));
        o.put("t".into(), 1, at(2, 50_000));
        // Empty since 10 000, retention 60 000.
        assert!(o.expired(10_000, 60_000, 69_999).is_empty());
        assert_eq!(
            o.expired(10_000, 60_000, 70_000),
            vec![("t".to_string(), 0)]
        );
        assert_eq!(o.expired(10_000, 60_000, 110_000).len(), 2);
    }
}
