//! `corebus`: the server binary. Parses the command line, sets up logging, and runs the node.

use std::process::ExitCode;

use clap::Parser;
use corebus_broker::config::{Cli, Config};
use tracing::{error, warn};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_config_reference {
        print!("{}", corebus_broker::config::reference::markdown());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = corebus_broker::logging::init(&cli) {
        eprintln!("corebus: {e}");
        return ExitCode::from(2);
    }
    corebus_broker::panic_policy::install();
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            error!("configuration refused: {e}");
            return ExitCode::from(2);
        }
    };
    // Freed memory goes back to the system in a thread of its own (`memory_trim`).
    corebus_broker::memory_trim::start(
        config.limits.memory_trim_interval_ms,
        config.limits.memory_trim_threshold_bytes,
    );
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
