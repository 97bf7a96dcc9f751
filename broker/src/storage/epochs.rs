//! A log's leader epochs: at which offset each leader epoch's batches start (Kafka's
//! `LeaderEpochFileCache`), for OffsetForLeaderEpoch and for a follower's truncation after a
//! leader change.
//!
//! Epoch 0 is implicit from the start of the log: a log whose batches were all written under
//! epoch 0 (every single-node log) has no entry and no file, and costs nothing. An entry is
//! added when an append (a leader's, or a follower's copy of a batch) carries an epoch above
//! the latest; a lower one is not recorded (the leader's own epochs only grow).
//!
//! Durability: the entries are written to `leader-epochs` (`meta`, atomic, synced) by the
//! log's write task before the first write of a batch of a new epoch (`PartitionLog::write`),
//! so every epoch on disk is in the file; at open, entries at or past the recovered log end
//! (their batches were lost) are dropped. A truncation drops the entries it cuts and rewrites
//! the file before it returns.
//!
//! Never: keeps more than [`MAX_ENTRIES`] (the oldest go first: they only answer for offsets
//! that retention has long removed); holds two entries with the same epoch or start offsets
//! that go back.

/// Name of the checkpoint file in a log directory.
pub(crate) const EPOCHS_FILE: &str = "leader-epochs";
/// Entries kept (12 bytes each, within one checkpoint page).
pub const MAX_ENTRIES: usize = 256;
/// Kafka's "no such epoch" and "no such offset".
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    /// (epoch, start offset), both strictly increasing; epoch 0 from the log start implied.
    entries: Vec<(i32, i64)>,
    /// Bumped by every change; `persisted` is the version the file holds.
    version: u64,
    persisted: u64,
}

impl EpochCache {
    /// The entries as read from the checkpoint file, without those at or past `log_end`.
    pub fn loaded(entries: Vec<(i32, i64)>, log_end: i64) -> EpochCache {
        let mut cache = EpochCache::default();
        for (epoch, start) in entries {
            if start < log_end {
                cache.assign(epoch, start);
            }
        }
        // What the file holds beyond this is dropped the next time it is written.
        cache.persisted = cache.version;
        cache
    }

    /// Records that batches of `epoch` start at `offset` (no-op unless `epoch` is above the
    /// latest). Returns whether an entry was added.
    pub fn assign(&mut self, epoch: i32, offset: i64) -> bool {
        if epoch <= self.latest() {
            return false;
        }
        // A start offset cannot go back; one at the same offset replaces an empty epoch.
        while self.entries.last().is_some_and(|(_, s)| *s >= offset) {
            self.entries.pop();
        }
        self.entries.push((epoch, offset));
        if self.entries.len() > MAX_ENTRIES {
            self.entries.remove(0);
        }
        self.version += 1;
        true
    }

    /// Drops the entries of epochs that start at or past `offset` (a truncation to `offset`).
    pub fn truncate_from(&mut self, offset: i64) {
        let before = self.entries.len();
        self.entries.retain(|(_, s)| *s < offset);
        if self.entries.len() != before {
            self.version += 1;
        }
    }

    /// The latest epoch (0 when no entry).
    pub fn latest(&self) -> i32 {
        self.entries.last().map_or(0, |(e, _)| *e)
    }

    /// Kafka's `endOffsetFor`: the largest epoch at or below `requested` and the offset where
    /// the next epoch starts (`log_end` for the latest epoch); undefined for a negative or an
    /// unknown future epoch.
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        if requested < 0 || requested > self.latest() {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        }
        if requested == self.latest() {
            return (requested, log_end);
        }
        let higher = self
            .entries
            .iter()
            .find(|(e, _)| *e > requested)
            .map_or(log_end, |(_, s)| *s);
        let floor = self
            .entries
            .iter()
            .rev()
            .find(|(e, _)| *e <= requested)
            .map_or(0, |(e, _)| *e);
        (floor, higher)
    }

    /// The file's payload and the version it holds, when the file is behind.
    pub(crate) fn unpersisted(&self) -> Option<(Vec<u8>, u64)> {
        (self.version != self.persisted).then(|| (self.encode(), self.version))
    }

    pub(crate) fn mark_persisted(&mut self, version: u64) {
        self.persisted = self.persisted.max(version);
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 12);
        for (e, s) in &self.entries {
            out.extend_from_slice(&e.to_be_bytes());
            out.extend_from_slice(&s.to_be_bytes());
        }
        out
    }

    /// Entries of a checkpoint payload; None when it is not a whole number of entries.
    pub(crate) fn decode(payload: &[u8]) -> Option<Vec<(i32, i64)>> {
        if !payload.len().is_multiple_of(12) {
            return None;
        }
        Some(
            payload
                .chunks_exact(12)
                .map(|c| {
                    let mut e = [0u8; 4];
                    e.copy_from_slice(&c[..4]);
                    let mut s = [0u8; 8];
                    s.copy_from_slice(&c[4..]);
                    (i32::from_be_bytes(e), i64::from_be_bytes(s))
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_end_offset_rules() {
        let mut c = EpochCache::default();
        // Nothing recorded: everything is epoch 0.
        assert_eq!(c.end_offset_for(0, 50), (0, 50));
        assert_eq!(c.end_offset_for(1, 50), (UNDEFINED_EPOCH, UNDEFINED_OFFSET));
        assert_eq!(
            c.end_offset_for(-1, 50),
            (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
        );
        assert!(c.assign(2, 10));
        assert!(c.assign(5, 30));
        assert!(!c.assign(4, 40), "an older epoch is not recorded");
        assert_eq!(c.end_offset_for(5, 50), (5, 50));
        assert_eq!(c.end_offset_for(4, 50), (2, 30));
        assert_eq!(c.end_offset_for(2, 50), (2, 30));
        assert_eq!(c.end_offset_for(1, 50), (0, 10));
        assert_eq!(c.end_offset_for(0, 50), (0, 10));
        assert_eq!(c.end_offset_for(6, 50), (UNDEFINED_EPOCH, UNDEFINED_OFFSET));
    }

    #[test]
    fn truncation_reload_and_the_file() {
        let mut c = EpochCache::default();
        assert_eq!(c.unpersisted(), None, "epoch 0 alone needs no file");
        c.assign(1, 10);
        c.assign(3, 20);
        let (payload, v) = c.unpersisted().unwrap();
        c.mark_persisted(v);
        assert_eq!(c.unpersisted(), None);
        c.truncate_from(20);
        assert_eq!(c.latest(), 1);
        assert!(c.unpersisted().is_some());
        // Reloaded after a crash that lost everything from 15 on.
        let back = EpochCache::loaded(EpochCache::decode(&payload).unwrap(), 15);
        assert_eq!(back.latest(), 1);
        assert_eq!(back.end_offset_for(1, 15), (1, 15));
        assert!(EpochCache::decode(&payload[1..]).is_none());
        // An epoch at the same start replaces an empty one; the cap drops the oldest.
        let mut c = EpochCache::default();
        c.assign(1, 10);
        c.assign(2, 10);
        assert_eq!(c.end_offset_for(1, 20), (0, 10));
        for e in 3..(MAX_ENTRIES as i32 + 10) {
            c.assign(e, i64::from(e) * 10);
        }
        assert_eq!(c.entries.len(), MAX_ENTRIES);
    }
}
