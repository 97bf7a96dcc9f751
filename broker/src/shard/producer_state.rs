//! Idempotent-producer state of one partition: per producer id, its epoch and the sequence
//! ranges and offsets of its last 5 batches (Kafka's `max.in.flight` bound for idempotence),
//! so that a retried batch is answered with its original offset instead of being written
//! twice, a gap gives OUT_OF_ORDER_SEQUENCE_NUMBER and an old epoch INVALID_PRODUCER_EPOCH.
//!
//! State is rebuilt from the batch headers of the log's tail when a partition opens, so it
//! survives restarts and crashes; it is never evicted for being idle.
//!
//! Never: does I/O; decides anything about batches without a producer id.

use std::collections::{HashMap, VecDeque};

use corebus_wire::error_code::ResponseError;
use corebus_wire::record::BatchHeader;

/// Batches remembered per producer (Kafka: 5, the most a producer keeps in flight).
pub const BATCHES_REMEMBERED_PER_PRODUCER: usize = 5;

/// Records of the log's tail read back to rebuild producer state when a partition opens; a
/// producer idle for longer than that is treated as new (its next batch is accepted).
pub const PRODUCER_STATE_REBUILD_RECORDS: i64 = 1_000_000;

/// Batch headers read back per rebuild, at most.
pub const PRODUCER_STATE_REBUILD_BATCHES: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchSeq {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    max_timestamp: i64,
}

/// One producer as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
}

#[derive(Debug, Clone, Default)]
struct Producer {
    epoch: i16,
    recent: VecDeque<BatchSeq>,
}

/// What to do with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// Already written: answer with this base offset.
    Duplicate {
        base_offset: i64,
    },
    Refuse(ResponseError),
}

#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
}

/// The last sequence of a batch starting at `first` with `count` records (sequences wrap
/// from i32::MAX to 0).
pub fn last_sequence(first: i32, count: i32) -> i32 {
    let span = i64::from(count.max(1)) - 1;
    ((i64::from(first) + span) % (i64::from(i32::MAX) + 1)) as i32
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

impl ProducerStates {
    /// Rebuilds from batch headers in offset order.
    pub fn from_headers(headers: &[BatchHeader]) -> ProducerStates {
        let mut s = ProducerStates::default();
        for h in headers.iter().filter(|h| h.producer_id >= 0) {
            s.record(
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                // The offset span, not the record count: a batch the log cleaner emptied keeps
                // its last offset delta (so its last sequence) but holds no records.
                h.last_offset_delta.saturating_add(1),
                h.base_offset,
                h.max_timestamp,
            );
        }
        s
    }

    /// Judges a batch of `count` records from `producer_id`/`epoch` starting at `first_seq`.
    pub fn check(&self, producer_id: i64, epoch: i16, first_seq: i32, count: i32) -> Verdict {
        let Some(p) = self.producers.get(&producer_id) else {
            // Unknown producer (new, or idle past the rebuild window): accepted, as Kafka does
            // since KIP-360 when it has no state for it.
            return Verdict::Append;
        };
        if epoch < p.epoch {
            return Verdict::Refuse(ResponseError::InvalidProducerEpoch);
        }
        if epoch > p.epoch {
            // A bumped epoch starts its sequences again at 0.
            return if first_seq == 0 {
                Verdict::Append
            } else {
                Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
            };
        }
        let last_seq = last_sequence(first_seq, count);
        if let Some(b) = p
            .recent
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Verdict::Duplicate {
                base_offset: b.base_offset,
            };
        }
        match p.recent.back() {
            Some(b) if first_seq != next_sequence(b.last_seq) => {
                Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
            }
            _ => Verdict::Append,
        }
    }

    /// Records an appended batch.
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        count: i32,
        base_offset: i64,
        max_timestamp: i64,
    ) {
        let p = self.producers.entry(producer_id).or_default();
        if epoch != p.epoch {
            p.epoch = epoch;
            p.recent.clear();
        }
        if p.recent.len() == BATCHES_REMEMBERED_PER_PRODUCER {
            p.recent.pop_front();
        }
        p.recent.push_back(BatchSeq {
            first_seq,
            last_seq: last_sequence(first_seq, count),
            base_offset,
            max_timestamp,
        });
    }

    /// Every producer with state, ordered by id.
    pub fn describe(&self) -> Vec<ActiveProducer> {
        let mut out: Vec<ActiveProducer> = self
            .producers
            .iter()
            .filter_map(|(id, p)| {
                let last = p.recent.back()?;
                Some(ActiveProducer {
                    producer_id: *id,
                    epoch: p.epoch,
                    last_sequence: last.last_seq,
                    last_timestamp: last.max_timestamp,
                })
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_gaps_and_epochs() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(7, 0, 0, 10), Verdict::Append);
        s.record(7, 0, 0, 10, 100, 0);
        assert_eq!(s.check(7, 0, 10, 5), Verdict::Append);
        s.record(7, 0, 10, 5, 110, 0);
        // A retry of either batch gets its original offset.
        assert_eq!(
            s.check(7, 0, 0, 10),
            Verdict::Duplicate { base_offset: 100 }
        );
        assert_eq!(
            s.check(7, 0, 10, 5),
            Verdict::Duplicate { base_offset: 110 }
        );
        assert_eq!(
            s.check(7, 0, 20, 1),
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(
            s.check(7, 1, 3, 1),
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(s.check(7, 1, 0, 1), Verdict::Append);
        s.record(7, 1, 0, 1, 200, 0);
        assert_eq!(
            s.check(7, 0, 15, 1),
            Verdict::Refuse(ResponseError::InvalidProducerEpoch)
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..6 {
            s.record(1, 0, i, 1, i64::from(i), 0);
        }
        assert_eq!(
            s.describe(),
            vec![ActiveProducer {
                producer_id: 1,
                epoch: 0,
                last_sequence: 5,
                last_timestamp: 0
            }]
        );
        assert_eq!(s.check(1, 0, 5, 1), Verdict::Duplicate { base_offset: 5 });
        assert_eq!(s.check(1, 0, 1, 1), Verdict::Duplicate { base_offset: 1 });
        assert_eq!(
            s.check(1, 0, 0, 1),
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(last_sequence(i32::MAX - 1, 3), 0);
        let mut s = ProducerStates::default();
        s.record(2, 0, i32::MAX - 1, 2, 10, 0);
        assert_eq!(s.check(2, 0, 0, 1), Verdict::Append);
    }
}
