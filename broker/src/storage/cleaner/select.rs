//! Which part of a compacted log is cleanable, how dirty it is, and which log goes first.
//!
//! Owns: Kafka's rules, as pure functions of a log's segment summaries and the clock:
//! - the *clean* part is below the cleaner checkpoint (first dirty offset), the *dirty* part
//!   from there up to the first uncleanable offset;
//! - never the active segment; never a segment holding a record younger than
//!   `min.compaction.lag.ms` (by the segment's largest timestamp), nor anything after it;
//! - a log qualifies when its dirty ratio, dirty bytes / (clean + dirty bytes), is above
//!   `min.cleanable.dirty.ratio`, or at once when the first batch of a dirty segment is older
//!   than `max.compaction.lag.ms`, or when the delete horizon of a kept tombstone has passed
//!   (KIP-534: the tombstones can go now);
//! - of the qualifying logs the dirtiest is cleaned first.
//!
//! Never: does I/O; looks at the active segment's data.

/// What the selection needs to know about one sealed (non-active) segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size_bytes: u64,
    /// Largest timestamp in the segment (-1 when none).
    pub max_timestamp: i64,
    /// Max timestamp of the segment's first batch (-1 when none).
    pub first_batch_timestamp: i64,
}

/// A log's compaction settings, in the units of their Kafka names.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    pub min_cleanable_dirty_ratio_permille: u32,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
}

/// The cleanable state of one log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dirtiness {
    /// The cleaner checkpoint: offsets below were cleaned.
    pub first_dirty_offset: i64,
    /// Offsets from here on are not cleaned this time (active segment, compaction lag).
    pub first_uncleanable_offset: i64,
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    /// Cleaned now whatever the ratio (max.compaction.lag.ms, an expired delete horizon).
    pub due: bool,
}

impl Dirtiness {
    /// Dirty bytes per mille of clean + dirty bytes.
    pub(crate) fn ratio_permille(&self) -> u64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            return 0;
        }
        (self.dirty_bytes as u128 * 1000 / total as u128) as u64
    }

    /// Whether the log should be cleaned now. Kafka's comparison is strict (ratio above the
    /// minimum), so a minimum of 1.0 cleans only when due.
    pub(crate) fn qualifies(&self, rules: &Rules) -> bool {
        let total = self.clean_bytes + self.dirty_bytes;
        if self.due && total > 0 {
            return true;
        }
        self.dirty_bytes > 0
            && u128::from(self.dirty_bytes) * 1000
                > u128::from(rules.min_cleanable_dirty_ratio_permille) * u128::from(total)
    }
}

/// Assesses a log from its sealed segments (oldest first, the active segment left out).
/// `tombstone_horizon_ms` is the earliest delete horizon of a tombstone still kept.
pub(crate) fn assess(
    sealed: &[SegmentSummary],
    first_dirty_offset: i64,
    rules: &Rules,
    tombstone_horizon_ms: Option<i64>,
    now_ms: i64,
) -> Dirtiness {
    let mut d = Dirtiness {
        first_dirty_offset,
        first_uncleanable_offset: first_dirty_offset,
        clean_bytes: 0,
        dirty_bytes: 0,
        due: tombstone_horizon_ms.is_some_and(|h| h <= now_ms),
    };
    let lag_floor = now_ms.saturating_sub(rules.min_compaction_lag_ms.max(0));
    let max_lag_floor = now_ms.saturating_sub(rules.max_compaction_lag_ms.max(0));
    for s in sealed {
        if s.next_offset <= first_dirty_offset {
            d.clean_bytes += s.size_bytes;
            d.first_uncleanable_offset = d.first_uncleanable_offset.max(s.next_offset);
            continue;
        }
        if rules.min_compaction_lag_ms > 0 && s.max_timestamp > lag_floor {
            break; // too young, and so is everything after it
        }
        if s.first_batch_timestamp >= 0 && s.first_batch_timestamp < max_lag_floor {
            d.due = true;
        }
        d.dirty_bytes += s.size_bytes;
        d.first_uncleanable_offset = s.next_offset;
    }
    d
}

/// Index of the log to clean first: the one with the highest dirty ratio among those that
/// qualify (ties: the first).
pub(crate) fn dirtiest(candidates: &[(Dirtiness, Rules)]) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (i, (d, rules)) in candidates.iter().enumerate() {
        if !d.qualifies(rules) {
            continue;
        }
        let r = d.ratio_permille();
        if best.is_none_or(|(_, b)| r > b) {
            best = Some((i, r));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, next: i64, size: u64, ts: i64) -> SegmentSummary {
        SegmentSummary {
            base_offset: base,
            next_offset: next,
            size_bytes: size,
            max_timestamp: ts,
            first_batch_timestamp: ts - 10,
        }
    }

    const RULES: Rules = Rules {
        min_cleanable_dirty_ratio_permille: 500,
        min_compaction_lag_ms: 0,
        max_compaction_lag_ms: i64::MAX,
    };

    #[test]
    fn ratio_is_dirty_over_clean_plus_dirty() {
        let segs = [seg(0, 10, 100, 1_000), seg(10, 20, 300, 2_000)];
        let d = assess(&segs, 10, &RULES, None, 10_000);
        assert_eq!((d.clean_bytes, d.dirty_bytes), (100, 300));
        assert_eq!(d.first_uncleanable_offset, 20);
        assert_eq!(d.ratio_permille(), 750);
        assert!(d.qualifies(&RULES));
        let strict = Rules {
            min_cleanable_dirty_ratio_permille: 750,
            ..RULES
        };
        assert!(!d.qualifies(&strict), "Kafka compares strictly");
        // Nothing dirty: never qualifies, even at a ratio of zero.
        let clean = assess(&segs, 20, &RULES, None, 10_000);
        let zero = Rules {
            min_cleanable_dirty_ratio_permille: 0,
            ..RULES
        };
        assert!(!clean.qualifies(&zero));
    }

    #[test]
    fn min_compaction_lag_stops_at_the_first_young_segment() {
        let segs = [
            seg(0, 10, 100, 1_000),
            seg(10, 20, 100, 9_500),
            seg(20, 30, 100, 1_000),
        ];
        let rules = Rules {
            min_compaction_lag_ms: 1_000,
            ..RULES
        };
        let d = assess(&segs, 0, &rules, None, 10_000);
        assert_eq!(d.first_uncleanable_offset, 10);
        assert_eq!(d.dirty_bytes, 100);
        // Once old enough, the whole range is cleanable.
        let later = assess(&segs, 0, &rules, None, 11_000);
        assert_eq!(later.first_uncleanable_offset, 30);
    }

    #[test]
    fn max_compaction_lag_and_expired_horizons_make_a_log_due() {
        let segs = [seg(0, 10, 900, 1_000), seg(10, 20, 100, 5_000)];
        let rules = Rules {
            max_compaction_lag_ms: 3_000,
            ..RULES
        };
        let d = assess(&segs, 10, &rules, None, 10_000);
        assert!(d.due && d.qualifies(&rules), "first dirty batch is 5 s old");
        let d = assess(&segs, 10, &RULES, None, 10_000);
        assert!(!d.due && !d.qualifies(&RULES), "ratio 0.1 is below 0.5");
        let d = assess(&segs, 20, &RULES, Some(9_000), 10_000);
        assert!(d.due && d.qualifies(&RULES), "a tombstone horizon passed");
        let d = assess(&segs, 20, &RULES, Some(11_000), 10_000);
        assert!(!d.qualifies(&RULES));
    }

    #[test]
    fn the_dirtiest_qualifying_log_goes_first() {
        let a = assess(
            &[seg(0, 10, 100, 0), seg(10, 20, 200, 0)],
            10,
            &RULES,
            None,
            1,
        );
        let b = assess(
            &[seg(0, 10, 100, 0), seg(10, 20, 900, 0)],
            10,
            &RULES,
            None,
            1,
        );
        let c = assess(
            &[seg(0, 10, 100, 0), seg(10, 20, 50, 0)],
            10,
            &RULES,
            None,
            1,
        );
        assert_eq!(dirtiest(&[(a, RULES), (b, RULES), (c, RULES)]), Some(1));
        assert_eq!(dirtiest(&[(c, RULES)]), None);
    }
}
