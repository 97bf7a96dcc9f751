//! `corebus-ctl`: the admin CLI, in the spirit of Redpanda's rpk. The cluster commands speak
//! the Kafka protocol (through `wire`), so they work against any Kafka broker; `log` reads a
//! partition directory offline through the storage engine's own format code; `consensus`
//! speaks to the consensus group through its own client.
//!
//! Exit codes scripts can trust: 0 done; 1 the cluster or the data refused or failed the
//! operation (a Kafka error code, a verification failure); 2 bad usage; 3 the cluster could
//! not be reached.

mod client;
mod cmd;
mod offsets;
mod output;
mod partitioner;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use client::ClientError;
use output::Format;

/// Default bootstrap address, as the broker's default listener.
const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

#[derive(Parser)]
#[command(
    name = "corebus-ctl",
    version,
    about = "Operate corebus (or any Kafka cluster)"
)]
struct Cli {
    /// Bootstrap brokers, HOST:PORT[,HOST:PORT...]
    #[arg(long, global = true, env = "COREBUS_BROKERS", default_value = DEFAULT_BROKERS, value_delimiter = ',')]
    brokers: Vec<String>,
    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The cluster: brokers, controller, health
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCommand),
    /// Topics: create, delete, list, describe, alter-config, add-partitions
    #[command(subcommand)]
    Topic(cmd::topic::TopicCommand),
    /// Partitions: move, cancel a move, list moves, balance the brokers
    #[command(subcommand)]
    Partition(cmd::partition::PartitionCommand),
    /// Produce lines from standard input
    Produce(cmd::produce::ProduceArgs),
    /// Consume records and print them
    Consume(cmd::consume::ConsumeArgs),
    /// Consumer groups: list, describe (members, offsets, lag), delete, seek
    #[command(subcommand)]
    Group(cmd::group::GroupCommand),
    /// Offline inspection of a partition directory (like kafka-dump-log)
    #[command(subcommand)]
    Log(cmd::log::LogCommand),
    /// The consensus group: the metadata tree (ls, get, watch) and its members (stat)
    Consensus(cmd::consensus::ConsensusArgs),
}

/// Why a command failed, and the exit code it maps to.
#[derive(Debug)]
pub enum Failure {
    /// The cluster or the data said no (exit 1).
    Refused(String),
    /// The cluster could not be reached (exit 3).
    Unreachable(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        if e.is_unreachable() {
            Failure::Unreachable(e.to_string())
        } else {
            Failure::Refused(e.to_string())
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::Refused(e.to_string())
    }
}

pub type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    // Die quietly when the reader of our output goes away (`corebus-ctl ... | head`), as
    // Unix tools do, instead of failing on EPIPE.
    // SAFETY: restoring a signal's default disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Cluster(c) => cmd::cluster::run(c, &cli.brokers, cli.format),
        Command::Topic(c) => cmd::topic::run(c, &cli.brokers, cli.format),
        Command::Partition(c) => cmd::partition::run(c, &cli.brokers, cli.format),
        Command::Produce(a) => cmd::produce::run(a, &cli.brokers, cli.format),
        Command::Consume(a) => cmd::consume::run(a, &cli.brokers, cli.format),
        Command::Group(c) => cmd::group::run(c, &cli.brokers, cli.format),
        Command::Log(c) => cmd::log::run(c, cli.format),
        Command::Consensus(a) => cmd::consensus::run(a, cli.format),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(why)) => {
            eprintln!("corebus-ctl: {why}");
            ExitCode::from(1)
        }
        Err(Failure::Unreachable(why)) => {
            eprintln!("corebus-ctl: {why}");
            ExitCode::from(3)
        }
    }
}
