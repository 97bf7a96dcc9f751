//! Log output: `tracing` events to stderr, human-readable by default or one JSON object per
//! line (`--log-format json`: `timestamp`, `level`, `target`, `message`, the event's fields and
//! the current span), with levels per module (`--log-level warn,corebus_broker::storage=debug`,
//! else `COREBUS_LOG`, else `RUST_LOG`, else `info`).
//!
//! Owns: choosing the directives and installing the global subscriber, once, at start-up.
//! Never: writes to stdout (that is for `--print-config-reference` and the like).

use tracing_subscriber::EnvFilter;

use crate::config::{Cli, LogFormat};

/// The levels used when neither the flag nor an environment variable sets any.
pub const DEFAULT_LOG_DIRECTIVES: &str = "info";

/// The directives in force: the flag, else `COREBUS_LOG`, else `RUST_LOG`, else the default;
/// `env` looks up a variable (the process environment in production).
pub fn directives(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> String {
    cli.log_level
        .clone()
        .or_else(|| env("COREBUS_LOG"))
        .or_else(|| env("RUST_LOG"))
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_LOG_DIRECTIVES.to_string())
}

/// Installs the global subscriber; an error names the directives that do not parse.
pub fn init(cli: &Cli) -> Result<(), String> {
    let directives = directives(cli, |name| std::env::var(name).ok());
    let filter = EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| format!("log levels {directives:?} do not parse: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match cli.log_format {
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|e| format!("cannot install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flag_then_corebus_log_then_rust_log_then_default() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let plain = Cli::parse_from(["corebus"]);
        let flagged = Cli::parse_from(["corebus", "--log-level", "warn,corebus_broker=debug"]);
        let both: &[(&str, &str)] = &[("COREBUS_LOG", "debug"), ("RUST_LOG", "trace")];
        let rust: &[(&str, &str)] = &[("RUST_LOG", "trace")];
        assert_eq!(directives(&flagged, env(both)), "warn,corebus_broker=debug");
        assert_eq!(directives(&plain, env(both)), "debug");
        assert_eq!(directives(&plain, env(rust)), "trace");
        assert_eq!(directives(&plain, env(&[])), "info");
    }
}
