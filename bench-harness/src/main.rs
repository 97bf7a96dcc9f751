//! `corebus-bench`: a Kafka load generator and capacity planner that speaks the protocol
//! itself (through `wire`), so one or two cores can load any Kafka-compatible broker.
//!
//!   run      one workload file against a bootstrap address: live line, summary table,
//!            DIR/result.json, DIR/report.html
//!   sink     an acknowledge-only Kafka responder: the harness's own ceiling
//!
//! Exit status: 0 when the run completed with no error and no acknowledged-versus-consumed
//! mismatch, 1 otherwise (the files are written either way).

mod client;
mod cpus;
mod payload;
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
        Command::Sink { listen } => {
            sink::serve(&listen)?;
            Ok(true)
        }
    }
}
