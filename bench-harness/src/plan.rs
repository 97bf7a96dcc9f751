//! `corebus-bench plan`: the highest sustainable rate of a workload, and from it the brokers,
//! disks and network a target needs.
//!
//! Owns: the step search (offer a fixed rate, measure, raise it by a factor until the p99
//! target breaks, errors appear, or throughput stops following the offer) and the capacity
//! arithmetic, printed line by line so a reader can check every number.
//! Never: extrapolates from a step that failed; calls a rate sustainable when the broker
//! answered with errors.

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use crate::run::{RunOptions, RunResult, run};
use crate::workload::{Rate, Workload};

/// A step is sustained when the measured produce rate reaches this share of the offer.
pub const FOLLOW_RATIO: f64 = 0.95;
/// First offered rate for a workload whose rate is "max", messages/s.
const DEFAULT_START_RATE: f64 = 1000.0;
/// Seconds per day, for retention.
const SECONDS_PER_DAY: f64 = 86_400.0;
/// MB per TB (SI, as disks are sold).
const MB_PER_TB: f64 = 1e6;
/// MB/s per Gbit/s of network.
const MB_PER_S_PER_GBIT: f64 = 125.0;

/// How the step search runs (flags of `corebus-bench plan`).
#[derive(Debug, Clone, clap::Args)]
pub struct SearchOptions {
    /// First offered rate, messages/s (default: the workload's rate, or 1000 for "max").
    #[arg(long)]
    pub start_rate: Option<f64>,
    /// Factor the rate grows by per step.
    #[arg(long, default_value_t = 1.5)]
    pub step_factor: f64,
    #[arg(long, default_value_t = 12)]
    pub max_steps: usize,
    /// Measured length of each step.
    #[arg(long, default_value = "10s", value_parser = crate::workload::parse_duration)]
    pub step_duration: Duration,
    /// Warm-up of each step.
    #[arg(long, default_value = "2s", value_parser = crate::workload::parse_duration)]
    pub step_warmup: Duration,
    /// Publish p99 a step must stay under, in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    pub p99_target_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub offered_msgs_per_s: f64,
    pub produce_msgs_per_s: f64,
    pub produce_mb_per_s: f64,
    pub publish_p99_ms: f64,
    pub end_to_end_p99_ms: f64,
    pub errors: u64,
    pub sustained: bool,
    pub verdict: String,
}

/// The verdict on one step.
pub fn judge(offered: f64, r: &RunResult, p99_target_ms: f64) -> (bool, String) {
    let achieved = r.throughput.produce_msgs_per_s;
    if r.errors > 0 {
        (false, format!("{} errors", r.errors))
    } else if achieved < FOLLOW_RATIO * offered {
        (
            false,
            format!(
                "throughput {achieved:.0} msg/s did not follow the offered {offered:.0} (< {:.0}%)",
                FOLLOW_RATIO * 100.0
            ),
        )
    } else if r.publish_latency_ms.p99 > p99_target_ms {
        (
            false,
            format!(
                "publish p99 {:.2} ms above the target {p99_target_ms} ms",
                r.publish_latency_ms.p99
            ),
        )
    } else {
        (true, "sustained".to_owned())
    }
}

/// The capacity plan for `target` from the best step, if a target was given.
pub fn plan_capacity(best: &RunResult, measured_rf: i16, target: &Target) -> Option<Capacity> {
    let ingress = target.ingress_mb_per_s?;
    let per_broker = best.throughput.produce_mb_per_s / best.broker_count.max(1) as f64;
    Some(capacity(
        per_broker,
        f64::from(measured_rf),
        ingress,
        target,
    ))
}

/// Steps the rate up; returns every step and the last sustained run.
pub fn search(
    brokers: &str,
    workload: &Workload,
    options: &SearchOptions,
) -> anyhow::Result<(Vec<Step>, Option<RunResult>)> {
    anyhow::ensure!(options.step_factor > 1.0, "--step-factor must be above 1");
    let mut rate = options.start_rate.unwrap_or(match workload.rate {
        Rate::PerSecond(r) => r,
        Rate::Max => DEFAULT_START_RATE,
    });
    anyhow::ensure!(rate > 0.0, "--start-rate must be positive");
    let mut steps = Vec::new();
    let mut best = None;
    for _ in 0..options.max_steps {
        let mut w = workload.clone();
        w.rate = Rate::PerSecond(rate);
        w.duration = options.step_duration;
        w.warmup = options.step_warmup;
        w.backlog = Duration::ZERO;
        println!("-- plan: offering {rate:.0} msg/s for {:?}", w.duration);
        let result = run(&RunOptions {
            brokers: brokers.to_owned(),
            workload: w,
            live: false,
        })?;
        let (sustained, verdict) = judge(rate, &result, options.p99_target_ms);
        println!(
            "   achieved {:.0} msg/s {:.2} MB/s, publish p99 {:.2} ms: {verdict}",
            result.throughput.produce_msgs_per_s,
            result.throughput.produce_mb_per_s,
            result.publish_latency_ms.p99
        );
        steps.push(Step {
            offered_msgs_per_s: rate,
            produce_msgs_per_s: result.throughput.produce_msgs_per_s,
            produce_mb_per_s: result.throughput.produce_mb_per_s,
            publish_p99_ms: result.publish_latency_ms.p99,
            end_to_end_p99_ms: result.end_to_end_latency_ms.p99,
            errors: result.errors,
            sustained,
            verdict,
        });
        if !sustained {
            break;
        }
        best = Some(result);
        rate *= options.step_factor;
    }
    Ok((steps, best))
}

/// What the capacity plan is for (flags of `corebus-bench plan`).
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct Target {
    /// Client data produced, MB/s; enables the capacity plan.
    #[arg(long = "target-mb-in")]
    pub ingress_mb_per_s: Option<f64>,
    /// Consumer groups reading everything.
    #[arg(long, default_value_t = 1.0)]
    pub fanout: f64,
    #[arg(long, default_value_t = 7.0)]
    pub retention_days: f64,
    /// Replication factor of the planned cluster.
    #[arg(long, default_value_t = 3.0)]
    pub replication_factor: f64,
    /// Usable share of every measured or nominal capacity, in (0, 1] (0.7 keeps 30% for
    /// failures and peaks).
    #[arg(long, default_value_t = 0.7)]
    pub headroom: f64,
    /// Size of one disk, TB.
    #[arg(long, default_value_t = 4.0)]
    pub disk_tb: f64,
    /// Sustained write speed of one disk, MB/s.
    #[arg(long, default_value_t = 500.0)]
    pub disk_mb_per_s: f64,
    /// Network per broker, Gbit/s.
    #[arg(long, default_value_t = 10.0)]
    pub nic_gbit_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    pub brokers: u64,
    pub disks_per_broker: u64,
    pub storage_tb: f64,
    pub arithmetic: Vec<String>,
}

/// Brokers, disks and network for `target`, from a measured per-broker produce capacity
/// (`measured_mb_per_s` of client data on one broker, at `measured_rf`).
pub fn capacity(
    measured_mb_per_s: f64,
    measured_rf: f64,
    ingress_mb_per_s: f64,
    target: &Target,
) -> Capacity {
    let mut lines = Vec::new();
    let t = target;
    let writes_per_broker = measured_mb_per_s * measured_rf;
    lines.push(format!(
        "measured: {measured_mb_per_s:.2} MB/s of client data per broker at replication factor \
         {measured_rf} = {writes_per_broker:.2} MB/s of log writes per broker"
    ));
    let usable_writes = writes_per_broker * t.headroom;
    let cluster_writes = ingress_mb_per_s * t.replication_factor;
    let for_writes = (cluster_writes / usable_writes).ceil();
    lines.push(format!(
        "log writes: {:.2} MB/s in x RF {} = {cluster_writes:.2} MB/s; / ({writes_per_broker:.2} \
         x headroom {}) = {:.2} -> {for_writes} broker(s)",
        ingress_mb_per_s,
        t.replication_factor,
        t.headroom,
        cluster_writes / usable_writes
    ));
    let nic = t.nic_gbit_per_s * MB_PER_S_PER_GBIT * t.headroom;
    let egress = ingress_mb_per_s * (t.fanout + t.replication_factor - 1.0);
    let network_peak = cluster_writes.max(egress);
    let for_network = (network_peak / nic).ceil();
    lines.push(format!(
        "network: in {cluster_writes:.2} MB/s (clients + replicas), out {:.2} x (fan-out {} + RF-1 \
         {}) = {egress:.2} MB/s; max / ({} Gbit/s x {} MB/s x headroom {}) = {:.2} -> \
         {for_network} broker(s)",
        ingress_mb_per_s,
        t.fanout,
        t.replication_factor - 1.0,
        t.nic_gbit_per_s,
        MB_PER_S_PER_GBIT,
        t.headroom,
        network_peak / nic
    ));
    let brokers = for_writes
        .max(for_network)
        .max(t.replication_factor)
        .max(1.0);
    lines.push(format!(
        "brokers = max({for_writes}, {for_network}, RF {}) = {brokers}",
        t.replication_factor
    ));
    let storage_mb = cluster_writes * t.retention_days * SECONDS_PER_DAY;
    let storage_tb = storage_mb / MB_PER_TB;
    let disks_for_space = (storage_tb / (t.disk_tb * t.headroom)).ceil();
    lines.push(format!(
        "storage: {cluster_writes:.2} MB/s x {} d x {SECONDS_PER_DAY} s = {storage_tb:.2} TB; / \
         ({} TB x headroom {}) = {disks_for_space} disk(s)",
        t.retention_days, t.disk_tb, t.headroom
    ));
    let per_broker_writes = cluster_writes / brokers;
    let disks_for_speed = (per_broker_writes / (t.disk_mb_per_s * t.headroom)).ceil();
    let disks_per_broker = (disks_for_space / brokers)
        .ceil()
        .max(disks_for_speed)
        .max(1.0);
    lines.push(format!(
        "disks per broker = max(ceil({disks_for_space} / {brokers}), ceil({per_broker_writes:.2} MB/s \
         / ({} MB/s x {}))) = {disks_per_broker}",
        t.disk_mb_per_s, t.headroom
    ));
    Capacity {
        brokers: brokers as u64,
        disks_per_broker: disks_per_broker as u64,
        storage_tb,
        arithmetic: lines,
    }
}

/// The plan as text.
pub fn render(steps: &[Step], best: Option<&RunResult>, capacity: Option<&Capacity>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:>12} {:>12} {:>9} {:>11} {:>11}  verdict",
        "offered/s", "achieved/s", "MB/s", "pub p99 ms", "e2e p99 ms"
    );
    for s in steps {
        let _ = writeln!(
            out,
            "{:>12.0} {:>12.0} {:>9.2} {:>11.2} {:>11.2}  {}",
            s.offered_msgs_per_s,
            s.produce_msgs_per_s,
            s.produce_mb_per_s,
            s.publish_p99_ms,
            s.end_to_end_p99_ms,
            s.verdict
        );
    }
    match best {
        Some(b) => {
            let _ = writeln!(
                out,
                "highest sustainable: {:.0} msg/s, {:.2} MB/s on {} broker(s) (publish p99 {:.2} ms)",
                b.throughput.produce_msgs_per_s,
                b.throughput.produce_mb_per_s,
                b.broker_count,
                b.publish_latency_ms.p99
            );
        }
        None => {
            let _ = writeln!(out, "no step was sustained: start lower (--start-rate)");
        }
    }
    if let Some(c) = capacity {
        let _ = writeln!(out, "\ncapacity plan:");
        for line in &c.arithmetic {
            let _ = writeln!(out, "  {line}");
        }
        let _ = writeln!(
            out,
            "  => {} broker(s), {} disk(s) each, {:.2} TB retained",
            c.brokers, c.disks_per_broker, c.storage_tb
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_arithmetic() {
        let target = Target {
            ingress_mb_per_s: Some(300.0),
            fanout: 2.0,
            retention_days: 1.0,
            replication_factor: 3.0,
            headroom: 0.5,
            disk_tb: 4.0,
            disk_mb_per_s: 200.0,
            nic_gbit_per_s: 10.0,
        };
        // 200 MB/s per broker at RF 1: 100 usable; 900 MB/s of writes -> 9 brokers.
        let c = capacity(200.0, 1.0, 300.0, &target);
        assert_eq!(c.brokers, 9);
        // Network: out 300 x (2 + 2) = 1200 MB/s over 625 usable per broker -> 2; writes win.
        // Storage: 900 MB/s x 86400 s = 77.76 TB over 2 TB usable per disk -> 39 disks;
        // 39 / 9 -> 5 per broker; speed: 100 MB/s per broker over 100 usable -> 1.
        assert!((c.storage_tb - 77.76).abs() < 1e-9);
        assert_eq!(c.disks_per_broker, 5);
        assert_eq!(c.arithmetic.len(), 6);
        // A tiny target still needs RF brokers.
        assert_eq!(capacity(200.0, 1.0, 1.0, &target).brokers, 3);
    }
}
