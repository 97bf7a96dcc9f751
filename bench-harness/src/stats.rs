//! Measurements: latency histograms, percentiles, and the per-second interval each executor
//! reports.
//!
//! Owns: the HdrHistogram settings (microseconds, 1 us to [`MAX_LATENCY_US`], 3 significant
//! digits: 0.1% error at any value), the percentile set every report uses, and merging
//! intervals from several executors.
//! Never: averages percentiles (intervals are merged as histograms, the only correct way to
//! combine them); drops a value out of range (it is clamped to the maximum and counted).

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency recorded, in microseconds (one hour); larger ones are clamped.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant decimal digits the histograms keep.
const SIGNIFICANT_DIGITS: u8 = 3;

/// The percentiles every report lists, as (label, quantile).
pub const PERCENTILES: [(&str, f64); 7] = [
    ("p50", 0.50),
    ("p75", 0.75),
    ("p90", 0.90),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        Latency(
            Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
                .expect("constant histogram bounds are within hdrhistogram's limits"),
        )
    }

    /// Records one latency; zero (a sub-microsecond answer) counts as 1 us.
    pub fn record_us(&mut self, micros: u64) {
        self.0.saturating_record(micros.clamp(1, MAX_LATENCY_US));
    }

    pub fn add(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot go out of range.
        let _ = self.0.add(&other.0);
    }

    pub fn summary(&self) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        if self.0.is_empty() {
            return Percentiles::default();
        }
        let at = |q: f64| ms(self.0.value_at_quantile(q));
        Percentiles {
            count: self.0.len(),
            mean: self.0.mean() / 1000.0,
            p50: at(0.50),
            p75: at(0.75),
            p90: at(0.90),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
            p9999: at(0.9999),
            max: ms(self.0.max()),
        }
    }

    /// The percentile spectrum (quantile, latency in ms) for the distribution plot: points at
    /// 0%, 50%, 75%, 87.5%, ... as HdrHistogram's own plots use, up to the maximum.
    pub fn spectrum(&self) -> Vec<(f64, f64)> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let mut points = Vec::new();
        let mut q: f64 = 0.0;
        while q < 0.999_999 {
            points.push((q, self.0.value_at_quantile(q) as f64 / 1000.0));
            q += (1.0 - q) / 2.0;
            // Intermediate points between halvings make the curve smooth.
            points.push((q, self.0.value_at_quantile(q) as f64 / 1000.0));
        }
        points.push((1.0, self.0.max() as f64 / 1000.0));
        points
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p999: f64,
    #[serde(rename = "p99.99")]
    pub p9999: f64,
    pub max: f64,
}

impl Percentiles {
    /// The values in [`PERCENTILES`] order, then max.
    pub fn values(&self) -> [f64; 8] {
        [
            self.p50, self.p75, self.p90, self.p95, self.p99, self.p999, self.p9999, self.max,
        ]
    }
}

/// What one executor measured during one second of the run.
#[derive(Debug, Clone, Default)]
pub struct Interval {
    /// Seconds since the run's start (warm-up included).
    pub second: u64,
    /// Records handed to the producer (their intended time fell in this second).
    pub sent: u64,
    /// Records acknowledged by the broker.
    pub acked: u64,
    pub acked_bytes: u64,
    /// Records that failed (produce errors, counted per record).
    pub produce_errors: u64,
    /// Failed fetches and partition errors.
    pub consume_errors: u64,
    /// Our records read back.
    pub consumed: u64,
    pub consumed_bytes: u64,
    /// Records read back that this run did not write (another run's, or corrupted stamps).
    pub foreign: u64,
    pub publish: Latency,
    pub end_to_end: Latency,
    /// A few error messages, for the report.
    pub error_samples: Vec<String>,
}

/// Most error messages an interval keeps.
pub const MAX_ERROR_SAMPLES: usize = 5;

impl Interval {
    pub fn new(second: u64) -> Interval {
        Interval {
            second,
            ..Interval::default()
        }
    }

    pub fn merge(&mut self, other: &Interval) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.acked_bytes += other.acked_bytes;
        self.produce_errors += other.produce_errors;
        self.consume_errors += other.consume_errors;
        self.consumed += other.consumed;
        self.consumed_bytes += other.consumed_bytes;
        self.foreign += other.foreign;
        self.publish.add(&other.publish);
        self.end_to_end.add(&other.end_to_end);
        for e in &other.error_samples {
            if self.error_samples.len() < MAX_ERROR_SAMPLES {
                self.error_samples.push(e.clone());
            }
        }
    }

    pub fn errors(&self) -> u64 {
        self.produce_errors + self.consume_errors
    }

    pub fn note_error(&mut self, what: &str) {
        if self.error_samples.len() < MAX_ERROR_SAMPLES {
            self.error_samples.push(what.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Latency::new();
        // 1..=10_000 us: the q-quantile is q * 10 ms, within the histogram's 0.1%.
        for us in 1..=10_000 {
            h.record_us(us);
        }
        let p = h.summary();
        assert_eq!(p.count, 10_000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(p.p50, 5.0), "{p:?}");
        assert!(close(p.p90, 9.0), "{p:?}");
        assert!(close(p.p99, 9.9), "{p:?}");
        assert!(close(p.p999, 9.99), "{p:?}");
        assert!(close(p.max, 10.0), "{p:?}");
        assert!(close(p.mean, 5.0005), "{p:?}");
        let v = p.values();
        assert!(v.windows(2).all(|w| w[0] <= w[1]), "ordered: {v:?}");
    }

    #[test]
    fn merging_is_exact_where_averaging_percentiles_is_not() {
        // One executor saw 99 fast answers, another one slow one: the merged p99 is the fast
        // value and the max is the slow one; averaging the two p99s would claim ~500 ms.
        let mut a = Interval::new(0);
        for _ in 0..99 {
            a.publish.record_us(1_000);
        }
        let mut b = Interval::new(0);
        b.publish.record_us(1_000_000);
        a.merge(&b);
        let p = a.publish.summary();
        assert_eq!(p.count, 100);
        assert!((p.p99 - 1.0).abs() < 0.01, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = Latency::new();
        h.record_us(0);
        h.record_us(u64::MAX);
        let p = h.summary();
        assert_eq!(p.count, 2);
        assert!(p.max >= MAX_LATENCY_US as f64 / 1000.0 * 0.999);
        assert!(Latency::new().summary() == Percentiles::default());
    }

    #[test]
    fn spectrum_rises_to_the_max() {
        let mut h = Latency::new();
        for us in [10, 20, 30, 40, 5_000] {
            h.record_us(us);
        }
        let s = h.spectrum();
        assert!(s.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(s.last().unwrap().0, 1.0);
        assert!((s.last().unwrap().1 - 5.0).abs() < 0.01);
    }
}
