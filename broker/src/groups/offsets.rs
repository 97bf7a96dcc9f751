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
}
