//! A latency histogram with fixed Prometheus-style buckets, kept in plain per-shard state.
//!
//! Owns: [`LatencyHistogram`] and the bucket bounds [`LATENCY_BUCKETS_SECONDS`]. Recording is
//! a bucket search over a dozen bounds and three additions: no allocation, no atomics, no
//! lock (each shard owns its histograms; the metrics endpoint asks for a copy by message).
//!
//! Never: is shared between threads while being written; loses an observation (values past
//! the last bound land in the `+Inf` bucket).

use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds, from 50 us (an fdatasync on a busy NVMe
/// core) to 10 s (a long-polling fetch at its default `max.wait.ms` is 0.5 s).
pub const LATENCY_BUCKETS_SECONDS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Buckets including the implicit `+Inf` one.
const BUCKETS: usize = LATENCY_BUCKETS_SECONDS.len() + 1;

/// Observations per bucket (not cumulative; the encoder accumulates), their count and sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyHistogram {
    counts: [u64; BUCKETS],
    count: u64,
    sum_nanos: u128,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: [0; BUCKETS],
            count: 0,
            sum_nanos: 0,
        }
    }
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe(&mut self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        // Prometheus buckets are `le` (less than or equal) bounds.
        let bucket = LATENCY_BUCKETS_SECONDS.partition_point(|&bound| bound < seconds);
        self.counts[bucket] += 1;
        self.count += 1;
        self.sum_nanos += latency.as_nanos();
    }

    /// Adds `other`'s observations to this one (node-wide totals from per-shard histograms).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_nanos += other.sum_nanos;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    /// `(upper bound, observations in that bucket)` in ascending order, the last bound being
    /// `f64::MAX`, which the exposition encoders write as `+Inf`.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKETS_SECONDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.counts.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_le_bucket() {
        let mut h = LatencyHistogram::default();
        h.observe(Duration::from_micros(50)); // exactly on a bound: that bucket
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_secs(60)); // past the last bound: +Inf
        let b = h.buckets();
        assert_eq!(b.len(), LATENCY_BUCKETS_SECONDS.len() + 1);
        assert_eq!(b[0], (0.000_05, 1));
        assert_eq!(b[1], (0.000_1, 1));
        assert_eq!(b.last(), Some(&(f64::MAX, 1)));
        assert_eq!(h.count(), 3);
        assert!((h.sum_seconds() - 60.000_101).abs() < 1e-9);
    }

    #[test]
    fn merge_adds_everything() {
        let mut a = LatencyHistogram::default();
        let mut b = LatencyHistogram::default();
        a.observe(Duration::from_millis(3));
        b.observe(Duration::from_millis(3));
        b.observe(Duration::from_millis(300));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        let total: u64 = a.buckets().iter().map(|(_, n)| n).sum();
        assert_eq!(total, 3);
    }
}
