//! The cleaner's offset map: for every key of the dirty range, the offset of its latest
//! record, in a bounded amount of memory.
//!
//! Owns: Kafka's `SkimpyOffsetMap` idea. Keys are not stored, only a 128-bit hash of each
//! (XXH3-128, seeded per clean so that keys cannot be chosen to collide), next to an offset:
//! memory per key is fixed whatever the key's size. The map takes at most
//! `max_bytes / OFFSET_MAP_ENTRY_BYTES` keys (`log.cleaner.dedupe.buffer.size`); when it is full
//! the cleaner cleans the prefix of the dirty range whose keys fit and leaves the rest dirty.
//! Memory is allocated as keys arrive and freed after the clean, so an idle shard holds none.
//! Never: answers for a key it was not given except through a 128-bit hash collision (the
//! same risk Kafka takes with MD5), or grows past its limit.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use twox_hash::XxHash3_128;

/// Bytes one key costs: 16 of hash, 8 of offset, and the hash table's control byte and spare
/// capacity (hashbrown keeps at most 7/8 of its slots full), rounded up.
pub(crate) const OFFSET_MAP_ENTRY_BYTES: usize = 32;

/// The keys are hashes already: the table uses their low 64 bits as they are.
#[derive(Default)]
pub(crate) struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

pub(crate) struct OffsetMap {
    seed: u64,
    max_entries: usize,
    entries: HashMap<u128, i64, BuildHasherDefault<PrehashedKey>>,
}

impl OffsetMap {
    /// A map of at most `max_bytes` (at least one key).
    pub(crate) fn new(max_bytes: usize, seed: u64) -> OffsetMap {
        OffsetMap {
            seed,
            max_entries: (max_bytes / OFFSET_MAP_ENTRY_BYTES).max(1),
            entries: HashMap::default(),
        }
    }

    fn hash(&self, key: &[u8]) -> u128 {
        XxHash3_128::oneshot_with_seed(self.seed, key)
    }

    #[cfg(test)]
    pub(crate) fn max_entries(&self) -> usize {
        self.max_entries
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `more` new keys would still fit (counted as if none of them were known yet).
    pub(crate) fn has_room_for(&self, more: usize) -> bool {
        self.entries.len().saturating_add(more) <= self.max_entries
    }

    /// Records that `key`'s latest record so far is at `offset` (offsets arrive in order).
    pub(crate) fn put(&mut self, key: &[u8], offset: i64) {
        let h = self.hash(key);
        let slot = self.entries.entry(h).or_insert(offset);
        *slot = (*slot).max(offset);
    }

    /// The latest offset of `key` over the range the map covers.
    pub(crate) fn get(&self, key: &[u8]) -> Option<i64> {
        self.entries.get(&self.hash(key)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_offset_per_key() {
        let mut m = OffsetMap::new(1 << 20, 7);
        m.put(b"a", 1);
        m.put(b"b", 2);
        m.put(b"a", 5);
        assert_eq!(m.get(b"a"), Some(5));
        assert_eq!(m.get(b"b"), Some(2));
        assert_eq!(m.get(b"c"), None);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn the_limit_is_in_bytes_per_entry() {
        let m = OffsetMap::new(10 * OFFSET_MAP_ENTRY_BYTES + 5, 1);
        assert_eq!(m.max_entries(), 10);
        assert!(m.has_room_for(10));
        assert!(!m.has_room_for(11));
        // Never zero: a clean always makes progress by at least one batch.
        assert_eq!(OffsetMap::new(0, 1).max_entries(), 1);
    }

    #[test]
    fn seeds_change_the_hashes_but_not_the_answers() {
        let mut a = OffsetMap::new(1 << 20, 1);
        let mut b = OffsetMap::new(1 << 20, 2);
        assert_ne!(a.hash(b"k"), b.hash(b"k"));
        for i in 0..1000i64 {
            let key = format!("key-{}", i % 97);
            a.put(key.as_bytes(), i);
            b.put(key.as_bytes(), i);
        }
        for k in 0..97 {
            let key = format!("key-{k}");
            assert_eq!(a.get(key.as_bytes()), b.get(key.as_bytes()));
        }
        assert_eq!(a.len(), 97);
    }
}
