//! Iteration over the batches of a record set: a Produce request's records, a segment's
//! bytes, a Fetch response's records. Each item is a zero-copy slice of the input.
//!
//! Never: copies record data or reads past a batch's declared length; after the first error
//! the iterator ends (a corrupt length makes everything after it meaningless).

use bytes::Bytes;

use super::RecordError;
use super::batch::{BATCH_OVERHEAD_BYTES, RecordBatch};

/// Byte offset of the batch length inside the overhead.
const BATCH_LENGTH_AT: usize = 8;

/// Iterator over the batches of a record set.
#[derive(Clone, Debug)]
pub struct RecordBatches {
    rest: Bytes,
    allow_partial_tail: bool,
    done: bool,
}

impl RecordBatches {
    /// Every byte must belong to a whole batch: a truncated batch is an error.
    pub fn new(bytes: Bytes) -> RecordBatches {
        RecordBatches {
            rest: bytes,
            allow_partial_tail: false,
            done: false,
        }
    }

    /// A truncated last batch ends the iteration silently: Fetch responses may end with the
    /// front part of a batch that did not fit the fetch size.
    pub fn allow_partial_tail(bytes: Bytes) -> RecordBatches {
        RecordBatches {
            rest: bytes,
            allow_partial_tail: true,
            done: false,
        }
    }

    /// The bytes not yet iterated over (after an error or partial tail: the unread rest).
    pub fn remaining(&self) -> &Bytes {
        &self.rest
    }

    fn truncated(&mut self, needed: usize) -> Option<Result<RecordBatch, RecordError>> {
        self.done = true;
        if self.allow_partial_tail {
            return None;
        }
        Some(Err(RecordError::Truncated {
            what: "record batch",
            needed,
            available: self.rest.len(),
        }))
    }
}

impl Iterator for RecordBatches {
    type Item = Result<RecordBatch, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        if self.rest.len() < BATCH_OVERHEAD_BYTES {
            return self.truncated(BATCH_OVERHEAD_BYTES);
        }
        let mut length = [0u8; 4];
        length.copy_from_slice(&self.rest[BATCH_LENGTH_AT..BATCH_OVERHEAD_BYTES]);
        let batch_length = i32::from_be_bytes(length);
        if batch_length < 0 {
            self.done = true;
            return Some(Err(RecordError::InvalidBatchLength(batch_length)));
        }
        let total = BATCH_OVERHEAD_BYTES + batch_length as usize;
        if total > self.rest.len() {
            return self.truncated(total);
        }
        let batch = self.rest.split_to(total);
        let parsed = RecordBatch::parse(batch);
        if parsed.is_err() {
            self.done = true;
        }
        Some(parsed)
    }
}

impl std::iter::FusedIterator for RecordBatches {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::BATCH_HEADER_BYTES;

    fn batch(base_offset: i64, extra: usize) -> Vec<u8> {
        let mut b = vec![0u8; BATCH_HEADER_BYTES + extra];
        b[..8].copy_from_slice(&base_offset.to_be_bytes());
        let len = (b.len() - BATCH_OVERHEAD_BYTES) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[16] = 2;
        b
    }

    #[test]
    fn splits_batches_and_handles_a_partial_tail() {
        let mut set = batch(0, 3);
        set.extend(batch(10, 0));
        let whole = Bytes::from(set.clone());
        let offsets: Vec<i64> = RecordBatches::new(whole)
            .map(|b| b.map(|b| b.base_offset()))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(offsets, vec![0, 10]);

        set.extend_from_slice(&batch(20, 5)[..30]);
        let partial = Bytes::from(set);
        assert_eq!(
            RecordBatches::allow_partial_tail(partial.clone())
                .map(|b| b.unwrap().base_offset())
                .collect::<Vec<_>>(),
            vec![0, 10]
        );
        let strict: Vec<_> = RecordBatches::new(partial).collect();
        assert_eq!(strict.len(), 3);
        assert!(matches!(strict[2], Err(RecordError::Truncated { .. })));
    }

    #[test]
    fn a_negative_length_ends_iteration_with_an_error() {
        let mut b = batch(0, 0);
        b[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        let items: Vec<_> = RecordBatches::allow_partial_tail(Bytes::from(b)).collect();
        assert_eq!(items.len(), 1);
        assert!(matches!(items[0], Err(RecordError::InvalidBatchLength(-5))));
    }
}
