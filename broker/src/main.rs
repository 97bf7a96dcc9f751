//! `corebus`: the server binary. Parses the command line, sets up logging, and runs the node.

use std::process::ExitCode;

use clap::Parser;
use corebus_broker::config::{Cli, Config};
use tracing::{error, warn};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COREBUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            error!("configuration refused: {e}");
            return ExitCode::from(2);
        }
    };
    for (name, why) in config.settings.inert_given() {
        warn!(
            setting = name,
            "setting accepted for compatibility but has no effect: {why}"
        );
    }
    if !config.roles.broker {
        return match corebus_broker::consensus::run_consensus_only(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("corebus consensus node cannot run: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match corebus_broker::shard::runtime::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("corebus cannot run: {e}");
            ExitCode::FAILURE
        }
    }
}
