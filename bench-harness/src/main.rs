//! `corebus-bench`: a Kafka load generator and capacity planner that speaks the protocol
//! itself (through `wire`), so one or two cores can load any Kafka-compatible broker.
//!
//!   run      one workload file against a bootstrap address: live line, summary table,
//!            DIR/result.json, DIR/report.html
//!   sink     an acknowledge-only Kafka responder: the harness's own ceiling
//!   plan     the highest sustainable rate (p99 target, throughput following the offer), and
//!            brokers/disks/network for a target, with the arithmetic shown
//!   compare  one workload against two bootstrap addresses, alternated, with ratios
//!
//! Exit status: 0 when the run completed with no error and no acknowledged-versus-consumed
//! mismatch, 1 otherwise (the files are written either way).

mod client;
mod compare;
mod cpus;
mod payload;
mod plan;
mod report;
mod run;
mod schedule;
mod sink;
mod stats;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::workload::Workload;

#[derive(Parser)]
#[command(
    name = "corebus-bench",
    version,
    about = "Kafka load generator and capacity planner"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct WorkloadArgs {
    /// Workload file (TOML; see bench-harness/workloads/).
    #[arg(long)]
    workload: PathBuf,
    /// Overrides the workload's measured duration ("30s", "5m").
    #[arg(long, value_parser = workload::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Overrides the workload's warm-up ("0s" for none).
    #[arg(long, value_parser = workload::parse_duration)]
    warmup: Option<std::time::Duration>,
}

impl WorkloadArgs {
    fn load(&self) -> anyhow::Result<Workload> {
        let mut w = Workload::load(&self.workload).map_err(anyhow::Error::msg)?;
        if let Some(d) = self.duration {
            anyhow::ensure!(d.as_secs() >= 1, "--duration must be at least 1s");
            w.duration = d;
        }
        if let Some(d) = self.warmup {
            w.warmup = d;
        }
        anyhow::ensure!(
            w.backlog < w.duration,
            "the workload's backlog must be shorter than the duration"
        );
        Ok(w)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Runs one workload and writes DIR/result.json and DIR/report.html.
    Run {
        /// Bootstrap broker, HOST:PORT.
        #[arg(long)]
        brokers: String,
        #[command(flatten)]
        workload: WorkloadArgs,
        /// Output directory.
        #[arg(long, default_value = "bench-out")]
        out: PathBuf,
    },
    /// Steps the offered rate up until the p99 target breaks or throughput stops following;
    /// with --target-mb-in, plans brokers, disks and network from the measured capacity.
    Plan {
        #[arg(long)]
        brokers: String,
        #[command(flatten)]
        workload: WorkloadArgs,
        #[command(flatten)]
        search: plan::SearchOptions,
        #[command(flatten)]
        target: plan::Target,
        #[arg(long, default_value = "bench-plan")]
        out: PathBuf,
    },
    /// Runs the same workload against A and B, alternated, and prints B/A ratios.
    Compare {
        /// Bootstrap of side A, HOST:PORT.
        a: String,
        /// Bootstrap of side B, HOST:PORT.
        b: String,
        #[command(flatten)]
        workload: WorkloadArgs,
        /// Rounds; each runs A and B once (A B, B A, ...).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        #[arg(long, default_value = "bench-compare")]
        out: PathBuf,
    },
    /// Serves an acknowledge-only Kafka responder (stores nothing) until killed.
    Sink {
        /// Address to listen on, IP:PORT.
        #[arg(long, default_value = "127.0.0.1:9099")]
        listen: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("corebus-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Ok(clean) where clean means no errors and no mismatch.
fn real_main(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Run {
            brokers,
            workload,
            out,
        } => {
            let workload = workload.load()?;
            let options = run::RunOptions {
                brokers,
                workload,
                live: true,
            };
            let result = run::run(&options)?;
            print!("{}", report::table::render(&result));
            report::write(&out, &result).with_context(|| format!("writing {}", out.display()))?;
            println!("   wrote {}/result.json and report.html", out.display());
            Ok(result.errors == 0 && !result.mismatch)
        }
        Command::Plan {
            brokers,
            workload,
            search,
            target,
            out,
        } => {
            let workload = workload.load()?;
            anyhow::ensure!(
                target.headroom > 0.0 && target.headroom <= 1.0,
                "--headroom must be in (0, 1]"
            );
            let (steps, best) = plan::search(&brokers, &workload, &search)?;
            let capacity = best
                .as_ref()
                .and_then(|b| plan::plan_capacity(b, workload.replication_factor, &target));
            print!("{}", plan::render(&steps, best.as_ref(), capacity.as_ref()));
            std::fs::create_dir_all(&out)?;
            let json = serde_json::json!({
                "workload": workload.name,
                "p99_target_ms": search.p99_target_ms,
                "steps": steps,
                "highest_sustainable": best.as_ref().map(|b| &b.throughput),
                "capacity": capacity,
            });
            std::fs::write(out.join("plan.json"), serde_json::to_string_pretty(&json)?)?;
            if let Some(b) = &best {
                report::write(&out.join("best"), b)?;
            }
            println!("   wrote {}/plan.json", out.display());
            Ok(best.is_some())
        }
        Command::Compare {
            a,
            b,
            workload,
            rounds,
            out,
        } => {
            let workload = workload.load()?;
            let comparison = compare::compare(&a, &b, &workload, rounds, &out)?;
            print!("{}", compare::render(&comparison));
            std::fs::create_dir_all(&out)?;
            std::fs::write(
                out.join("compare.json"),
                serde_json::to_string_pretty(&comparison)?,
            )?;
            println!("   wrote {}/compare.json", out.display());
            Ok(comparison.a.errors == 0
                && comparison.b.errors == 0
                && comparison.a.mismatches == 0
                && comparison.b.mismatches == 0)
        }
        Command::Sink { listen } => {
            sink::serve(&listen)?;
            Ok(true)
        }
    }
}
