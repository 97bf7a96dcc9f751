//! `corebus-bench compare A B`: one workload against two bootstrap addresses, alternated
//! (A B, then B A, ...) so drift on a shared machine falls on both sides, with ratios.
//!
//! Owns: the alternation, the median per side, the B/A ratios, `DIR/compare.json`.
//! Never: runs A and B at the same time (they would compete for the same cores).

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::run::{RunOptions, RunResult, run};
use crate::workload::Workload;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Side {
    pub brokers: String,
    pub produce_msgs_per_s: f64,
    pub produce_mb_per_s: f64,
    pub publish_p50_ms: f64,
    pub publish_p99_ms: f64,
    pub end_to_end_p50_ms: f64,
    pub end_to_end_p99_ms: f64,
    pub errors: u64,
    pub mismatches: usize,
    pub runs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub workload: String,
    pub a: Side,
    pub b: Side,
    /// B / A for each figure (above 1: B has more throughput, or more latency).
    pub ratios: Vec<(String, f64)>,
}

/// The median of `values` (mean of the two middle ones for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn side(brokers: &str, runs: &[RunResult]) -> Side {
    let m = |f: fn(&RunResult) -> f64| median(runs.iter().map(f).collect());
    Side {
        brokers: brokers.to_owned(),
        produce_msgs_per_s: m(|r| r.throughput.produce_msgs_per_s),
        produce_mb_per_s: m(|r| r.throughput.produce_mb_per_s),
        publish_p50_ms: m(|r| r.publish_latency_ms.p50),
        publish_p99_ms: m(|r| r.publish_latency_ms.p99),
        end_to_end_p50_ms: m(|r| r.end_to_end_latency_ms.p50),
        end_to_end_p99_ms: m(|r| r.end_to_end_latency_ms.p99),
        errors: runs.iter().map(|r| r.errors).sum(),
        mismatches: runs.iter().filter(|r| r.mismatch).count(),
        runs: runs.len(),
    }
}

/// The figures compared, by label.
type Figure = (&'static str, fn(&Side) -> f64);
const FIGURES: [Figure; 6] = [
    ("produce msg/s", |s| s.produce_msgs_per_s),
    ("produce MB/s", |s| s.produce_mb_per_s),
    ("publish p50 ms", |s| s.publish_p50_ms),
    ("publish p99 ms", |s| s.publish_p99_ms),
    ("e2e p50 ms", |s| s.end_to_end_p50_ms),
    ("e2e p99 ms", |s| s.end_to_end_p99_ms),
];

/// B / A for every figure; NaN where A measured nothing (no ratio, not infinity).
pub fn ratios(a: &Side, b: &Side) -> Vec<(String, f64)> {
    FIGURES
        .iter()
        .map(|(label, f)| {
            let (x, y) = (f(a), f(b));
            ((*label).to_owned(), if x > 0.0 { y / x } else { f64::NAN })
        })
        .collect()
}

/// Runs `rounds` rounds, each with one run per side, writing every run's files under `out`.
pub fn compare(
    a: &str,
    b: &str,
    workload: &Workload,
    rounds: usize,
    out: &Path,
) -> anyhow::Result<Comparison> {
    let (mut runs_a, mut runs_b) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        // A B, B A, A B, ...: neither side always runs on a warmer (or busier) machine.
        let order = if round % 2 == 0 {
            [(a, 'a'), (b, 'b')]
        } else {
            [(b, 'b'), (a, 'a')]
        };
        for (brokers, label) in order {
            println!("-- compare round {}: {label} = {brokers}", round + 1);
            let result = run(&RunOptions {
                brokers: brokers.to_owned(),
                workload: workload.clone(),
                live: true,
            })?;
            crate::report::write(&out.join(format!("{label}-{}", round + 1)), &result)?;
            if label == 'a' {
                runs_a.push(result);
            } else {
                runs_b.push(result);
            }
        }
    }
    let (a, b) = (side(a, &runs_a), side(b, &runs_b));
    let ratios = ratios(&a, &b);
    Ok(Comparison {
        workload: workload.name.clone(),
        a,
        b,
        ratios,
    })
}

pub fn render(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== compare {}: A = {} ({} runs), B = {} ({} runs), medians",
        c.workload, c.a.brokers, c.a.runs, c.b.brokers, c.b.runs
    );
    let _ = writeln!(out, "{:<16} {:>14} {:>14} {:>8}", "", "A", "B", "B/A");
    for ((label, f), (_, ratio)) in FIGURES.iter().zip(&c.ratios) {
        let _ = writeln!(
            out,
            "{label:<16} {:>14.2} {:>14.2} {ratio:>8.3}",
            f(&c.a),
            f(&c.b)
        );
    }
    let _ = writeln!(
        out,
        "errors: A {}, B {}; runs with a count mismatch: A {}, B {}",
        c.a.errors, c.b.errors, c.a.mismatches, c.b.mismatches
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
        let a = Side {
            produce_msgs_per_s: 100.0,
            publish_p99_ms: 10.0,
            ..Side::default()
        };
        let b = Side {
            produce_msgs_per_s: 150.0,
            publish_p99_ms: 5.0,
            ..Side::default()
        };
        let r = ratios(&a, &b);
        assert_eq!(r[0], ("produce msg/s".to_owned(), 1.5));
        assert_eq!(r[3].0, "publish p99 ms");
        assert_eq!(r[3].1, 0.5);
        assert!(r[1].1.is_nan(), "no MB/s on A: no ratio, not infinity");
    }
}
