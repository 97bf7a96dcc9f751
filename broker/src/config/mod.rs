//! Start-up configuration: the command line, Kafka's `server.properties` file and `--override`
//! settings, checked against the one settings table, resolved into the values the broker runs
//! with; and the resolution of topic settings through their broker synonyms (what
//! DescribeConfigs reports).
//!
//! Precedence, highest first: a command-line flag (`--listen`, `--data-dir`, ...), then an
//! `--override key=value`, then the `--config` file, then the table's default. An unknown or
//! malformed setting stops start-up with an error naming it.
//!
//! Never: reads anything at run time (configuration is immutable once the shards start); holds
//! per-topic overrides (those live in the metadata store).

pub mod consensus;
pub mod reference;
pub mod settings;
pub mod value;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use thiserror::Error;

use crate::limits::Limits;
use settings::{Scope, Setting, Support, lookup};
use value::{Value, parse_host_port};

/// The `corebus` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "corebus",
    version,
    about = "corebus: a Kafka-compatible broker, thread-per-core"
)]
pub struct Cli {
    /// Address to listen on, HOST:PORT [default: 127.0.0.1:9092, or `listeners`]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address clients are told to connect to [default: the listen address, or
    /// `advertised.listeners`]
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_listener: Option<String>,
    /// Data directory [default: ./data, or `log.dirs`/`log.dir`]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// This node's id [default: 1, as Kafka 4's shipped server.properties, or `node.id`]
    #[arg(long, value_name = "N")]
    pub node_id: Option<i32>,
    /// Number of shards (one pinned thread each) [default: the CPUs this process may run on]
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// A Kafka `server.properties` file with broker settings
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A broker setting, `key=value`; repeatable; beats the --config file
    #[arg(long = "override", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// What this process runs: `consensus`, `broker`, or both
    #[arg(long, value_name = "ROLES", default_value = "consensus,broker")]
    pub roles: String,
    /// Address of this node's consensus role, HOST:PORT [default: the --listen host, port 9093]
    #[arg(long, value_name = "HOST:PORT")]
    pub consensus_listen: Option<String>,
    /// Every member of the consensus group, this node included: `ID@HOST:PORT,...`
    /// [default: this node alone, an embedded group of one]
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    pub consensus_peers: Option<String>,
    /// Where to serve /metrics (Prometheus), /health and /ready, HOST:PORT, or `off`
    /// [default: 127.0.0.1:9644; when that default is taken the node starts without it and
    /// says so, an explicit address that cannot be bound stops start-up]
    #[arg(long, value_name = "HOST:PORT|off")]
    pub metrics_listen: Option<String>,
    /// Log line format on stderr: `human` or `json` (one JSON object per line)
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Log levels, `tracing` directives: `info`, `warn,corebus_broker::storage=debug`, ...
    /// [default: $COREBUS_LOG, else $RUST_LOG, else `info`]
    #[arg(long, value_name = "DIRECTIVES")]
    pub log_level: Option<String>,
    /// Print the configuration reference (every flag and setting, Markdown) and exit
    #[arg(long)]
    pub print_config_reference: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line with `timestamp`, `level`, `target`, `message` and the
    /// event's fields.
    Json,
}

/// The metrics listener's address when `--metrics-listen` is not given (Redpanda's admin
/// port).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9644";

/// Where the metrics endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsListen {
    /// `--metrics-listen off`.
    Off,
    /// `explicit`: given on the command line, so failing to bind it stops start-up.
    On { addr: HostPort, explicit: bool },
}

/// Why start-up refused the configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("unknown setting `{name}` ({origin}); see the settings reference")]
    Unknown { name: String, origin: String },
    #[error("setting `{name}` = {value:?} ({origin}): {reason}")]
    Malformed {
        name: String,
        value: String,
        origin: String,
        reason: String,
    },
    #[error("cannot read config file {path}: {source}")]
    File {
        path: PathBuf,
        source: java_properties::PropertiesError,
    },
    #[error("{0}")]
    Conflict(String),
}

/// Where a setting's value came from, numbered as DescribeConfigs reports `config_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    StaticBroker = 4,
    Default = 5,
}

impl ConfigSource {
    pub fn wire_code(self) -> i8 {
        self as i8
    }
}

/// A broker setting given explicitly (file or override), with its origin for error messages.
#[derive(Debug, Clone)]
struct Explicit {
    value: Value,
}

/// The broker settings in force: what was given explicitly, the rest from the table.
#[derive(Debug, Clone, Default)]
pub struct BrokerSettings {
    explicit: BTreeMap<&'static str, Explicit>,
}

impl BrokerSettings {
    /// Checks `name = text` against the table and records it; `origin` names where it came from.
    pub fn set(&mut self, name: &str, text: &str, origin: &str) -> Result<(), ConfigError> {
        let setting = lookup(Scope::Broker, name).ok_or_else(|| ConfigError::Unknown {
            name: name.to_string(),
            origin: origin.to_string(),
        })?;
        let value = parse_checked(setting, text).map_err(|reason| ConfigError::Malformed {
            name: name.to_string(),
            value: text.to_string(),
            origin: origin.to_string(),
            reason,
        })?;
        self.explicit.insert(setting.name, Explicit { value });
        Ok(())
    }

    /// The value of a broker setting and where it came from; `None` when it is unset and has no
    /// default (Kafka's null).
    pub fn get(&self, name: &str) -> Option<(Value, ConfigSource)> {
        if let Some(e) = self.explicit.get(name) {
            return Some((e.value.clone(), ConfigSource::StaticBroker));
        }
        let setting = lookup(Scope::Broker, name)?;
        // Defaults are checked by a unit test, so this parse cannot fail at run time.
        let v = Value::parse(setting.ty, setting.default?).ok()?;
        Some((v, ConfigSource::Default))
    }

    /// An integer broker setting (Int or Long); `None` when unset without default.
    pub fn i64(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|(v, _)| v.as_i64())
    }

    /// A boolean broker setting; `false` when unset.
    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Some((Value::Boolean(true), _)))
    }

    /// The explicitly given settings that corebus accepts but does not use, with the reason.
    pub fn inert_given(&self) -> Vec<(&'static str, &'static str)> {
        self.explicit
            .keys()
            .filter_map(|n| match lookup(Scope::Broker, n).map(|s| s.support) {
                Some(Support::Inert(why)) => Some((*n, why)),
                _ => None,
            })
            .collect()
    }

    /// Resolves a topic setting for a topic with `overrides` (its own settings, already
    /// validated): the value in force, its source, and the synonyms in Kafka's order (topic
    /// override, then each broker synonym that has a value).
    pub fn resolve_topic(
        &self,
        setting: &'static Setting,
        overrides: &BTreeMap<String, String>,
    ) -> ResolvedSetting {
        let mut synonyms = Vec::new();
        if let Some(text) = overrides.get(setting.name)
            && let Ok(v) = Value::parse(setting.ty, text)
        {
            synonyms.push(SynonymValue {
                name: setting.name,
                value: v,
                source: ConfigSource::DynamicTopic,
            });
        }
        for syn in setting.synonyms {
            if let Some((v, source)) = self.get(syn.name) {
                synonyms.push(SynonymValue {
                    name: syn.name,
                    value: scale(v, syn.factor, setting.ty),
                    source,
                });
            }
        }
        let (value, source) = match synonyms.first() {
            Some(s) => (Some(s.value.clone()), s.source),
            None => (None, ConfigSource::Default),
        };
        ResolvedSetting {
            setting,
            value,
            source,
            synonyms,
        }
    }
}

/// A broker synonym's value converted to the topic setting's unit and type.
fn scale(v: Value, factor: i64, ty: value::ConfigType) -> Value {
    match (v.as_i64(), ty) {
        (Some(n), value::ConfigType::Long) => {
            // -1 means unlimited whatever the unit.
            let scaled = if n < 0 { n } else { n.saturating_mul(factor) };
            Value::Long(scaled)
        }
        _ => v,
    }
}

/// One synonym of a resolved setting.
#[derive(Debug, Clone)]
pub struct SynonymValue {
    pub name: &'static str,
    pub value: Value,
    pub source: ConfigSource,
}

/// A topic setting as it applies to one topic.
#[derive(Debug, Clone)]
pub struct ResolvedSetting {
    pub setting: &'static Setting,
    pub value: Option<Value>,
    pub source: ConfigSource,
    pub synonyms: Vec<SynonymValue>,
}

/// Parses and validates `text` for `setting`.
pub fn parse_checked(setting: &Setting, text: &str) -> Result<Value, String> {
    let v = Value::parse(setting.ty, text)?;
    setting.validator.check(&v)?;
    Ok(v)
}

/// Checks one topic setting as given by a client (CreateTopics, AlterConfigs); the error is the
/// message Kafka's INVALID_CONFIG carries.
pub fn check_topic_setting(name: &str, text: &str) -> Result<&'static Setting, String> {
    let setting =
        lookup(Scope::Topic, name).ok_or_else(|| format!("unknown topic config name: {name}"))?;
    parse_checked(setting, text)
        .map_err(|reason| format!("invalid value {text:?} for configuration {name}: {reason}"))?;
    Ok(setting)
}

/// A listener address, as given and as resolved later by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Everything the broker runs with, fixed at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: i32,
    pub listen: HostPort,
    /// `None`: advertise the address actually bound (which resolves port 0).
    pub advertised: Option<HostPort>,
    pub data_dir: PathBuf,
    /// `None`: one shard per CPU this process may run on.
    pub shards: Option<usize>,
    pub limits: Limits,
    /// `max.connections.per.ip` and its overrides.
    pub per_ip: crate::server::admission::PerIpLimits,
    pub settings: BrokerSettings,
    pub roles: consensus::Roles,
    pub consensus: consensus::ConsensusConfig,
    pub metrics: MetricsListen,
}

impl Config {
    /// Builds the configuration from the command line (reading `--config` if given).
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let mut settings = BrokerSettings::default();
        if let Some(path) = &cli.config {
            let origin = format!("in {}", path.display());
            for (k, v) in read_properties(path)? {
                settings.set(&k, &v, &origin)?;
            }
        }
        for o in &cli.overrides {
            let (k, v) = o.split_once('=').ok_or_else(|| ConfigError::Malformed {
                name: o.clone(),
                value: String::new(),
                origin: "--override".to_string(),
                reason: "expected key=value".to_string(),
            })?;
            settings.set(k.trim(), v, "--override")?;
        }
        Self::from_settings(cli, settings)
    }

    fn from_settings(cli: &Cli, mut settings: BrokerSettings) -> Result<Config, ConfigError> {
        let node_id = match (cli.node_id, settings.explicit.get("broker.id")) {
            (Some(n), _) => n,
            (None, Some(b)) => {
                let b = b.value.as_i64().unwrap_or(-1);
                let n = settings.i64("node.id").unwrap_or(b);
                if settings.explicit.contains_key("node.id") && n != b {
                    return Err(ConfigError::Conflict(format!(
                        "broker.id ({b}) and node.id ({n}) differ"
                    )));
                }
                b as i32
            }
            (None, None) => settings.i64("node.id").unwrap_or(1) as i32,
        };
        if node_id < 0 {
            return Err(ConfigError::Conflict(format!(
                "--node-id {node_id}: a node id is not negative"
            )));
        }
        let listen = match &cli.listen {
            Some(l) => listener("--listen", l)?,
            None => {
                let text = setting_text(&settings, "listeners");
                listener("listeners", &text)?
            }
        };
        let advertised = match &cli.advertised_listener {
            Some(l) => Some(listener("--advertised-listener", l)?),
            None => match settings.get("advertised.listeners") {
                Some((v, _)) => Some(listener("advertised.listeners", &v.to_string())?),
                None => None,
            },
        };
        let data_dir = match &cli.data_dir {
            Some(d) => d.clone(),
            None => {
                let dirs = match settings.get("log.dirs") {
                    Some((v, _)) => v.to_string(),
                    None => setting_text(&settings, "log.dir"),
                };
                if dirs.contains(',') {
                    return Err(ConfigError::Malformed {
                        name: "log.dirs".into(),
                        value: dirs,
                        origin: "settings".into(),
                        reason: "corebus uses one data directory per process".into(),
                    });
                }
                PathBuf::from(dirs.trim())
            }
        };
        if cli.shards == Some(0) {
            return Err(ConfigError::Conflict(
                "--shards 0: at least one shard".into(),
            ));
        }
        record_flags(
            cli,
            &mut settings,
            node_id,
            &listen,
            advertised.as_ref(),
            &data_dir,
        )?;
        let limits = Limits::from_settings(&settings);
        let per_ip = crate::server::admission::PerIpLimits::parse(
            settings
                .i64("max.connections.per.ip")
                .unwrap_or(i64::from(i32::MAX)),
            &setting_text(&settings, "max.connections.per.ip.overrides"),
        )
        .map_err(|reason| ConfigError::Malformed {
            name: "max.connections.per.ip.overrides".into(),
            value: setting_text(&settings, "max.connections.per.ip.overrides"),
            origin: "broker settings".into(),
            reason,
        })?;
        let roles = consensus::Roles::parse(&cli.roles)?;
        let consensus = consensus::resolve_consensus(
            node_id,
            roles,
            &listen,
            cli.consensus_listen.as_deref(),
            cli.consensus_peers.as_deref(),
        )?;
        if !roles.consensus && !consensus.explicit_peers {
            return Err(ConfigError::Conflict(
                "--roles broker needs --consensus-peers: the group this broker uses".into(),
            ));
        }
        let metrics = match cli.metrics_listen.as_deref().map(str::trim) {
            Some(off) if off.eq_ignore_ascii_case("off") => MetricsListen::Off,
            Some(text) => MetricsListen::On {
                addr: metrics_listener(text)?,
                explicit: true,
            },
            None => MetricsListen::On {
                addr: metrics_listener(DEFAULT_METRICS_LISTEN)?,
                explicit: false,
            },
        };
        Ok(Config {
            node_id,
            listen,
            advertised,
            data_dir,
            shards: cli.shards,
            limits,
            per_ip,
            settings,
            roles,
            consensus,
            metrics,
        })
    }
}

fn setting_text(settings: &BrokerSettings, name: &str) -> String {
    settings
        .get(name)
        .map(|(v, _)| v.to_string())
        .unwrap_or_default()
}

/// Parses a listener: `HOST:PORT` or Kafka's `PLAINTEXT://HOST:PORT`; one listener only.
/// Records what the command-line flags set under the Kafka settings they stand for, so
/// DescribeConfigs reports them as Kafka reports its `server.properties` entries
/// (STATIC_BROKER_CONFIG, with the value in force) rather than as defaults.
fn record_flags(
    cli: &Cli,
    settings: &mut BrokerSettings,
    node_id: i32,
    listen: &HostPort,
    advertised: Option<&HostPort>,
    data_dir: &std::path::Path,
) -> Result<(), ConfigError> {
    if cli.node_id.is_some() {
        settings.set("node.id", &node_id.to_string(), "--node-id")?;
        if settings.explicit.contains_key("broker.id") {
            settings.set("broker.id", &node_id.to_string(), "--node-id")?;
        }
    }
    if cli.listen.is_some() {
        settings.set("listeners", &format!("PLAINTEXT://{listen}"), "--listen")?;
    }
    if let (Some(_), Some(a)) = (&cli.advertised_listener, advertised) {
        settings.set(
            "advertised.listeners",
            &format!("PLAINTEXT://{a}"),
            "--advertised-listener",
        )?;
    }
    if cli.data_dir.is_some() {
        settings.set("log.dirs", &data_dir.display().to_string(), "--data-dir")?;
    }
    Ok(())
}

fn listener(origin: &str, text: &str) -> Result<HostPort, ConfigError> {
    let bad = |reason: String| ConfigError::Malformed {
        name: origin.to_string(),
        value: text.to_string(),
        origin: "listener".to_string(),
        reason,
    };
    let t = text.trim();
    if t.contains(',') {
        return Err(bad("corebus serves one listener".into()));
    }
    let addr = match t.split_once("://") {
        Some((proto, rest)) if proto.eq_ignore_ascii_case("PLAINTEXT") => rest,
        Some((proto, _)) => {
            return Err(bad(format!(
                "listener {proto:?}: only PLAINTEXT is supported"
            )));
        }
        None => t,
    };
    let (host, port) = parse_host_port(addr).map_err(bad)?;
    Ok(HostPort { host, port })
}

/// Parses `--metrics-listen HOST:PORT`.
fn metrics_listener(text: &str) -> Result<HostPort, ConfigError> {
    let (host, port) = parse_host_port(text).map_err(|reason| ConfigError::Malformed {
        name: "--metrics-listen".to_string(),
        value: text.to_string(),
        origin: "command line".to_string(),
        reason: format!("{reason} (or `off`)"),
    })?;
    Ok(HostPort { host, port })
}

/// Reads a Kafka `server.properties` file (Java properties syntax: `=`/`:` separators, `#`/`!`
/// comments, line continuations and escapes).
fn read_properties(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let file_err = |source| ConfigError::File {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path)
        .map_err(|e| file_err(java_properties::PropertiesError::from(e)))?;
    let map = java_properties::read(std::io::BufReader::new(file)).map_err(file_err)?;
    let mut pairs: Vec<(String, String)> = map.into_iter().collect();
    pairs.sort();
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["corebus"];
        all.extend_from_slice(args);
        Cli::parse_from(all)
    }

    #[test]
    fn defaults_with_no_arguments() {
        let c = Config::load(&cli(&[])).unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(c.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.settings.i64("num.partitions"), Some(1));
    }

    #[test]
    fn flags_are_reported_as_the_static_settings_they_stand_for() {
        let c = Config::load(&cli(&[])).unwrap();
        assert_eq!(c.settings.get("advertised.listeners"), None);
        assert_eq!(
            c.settings.get("listeners").map(|(_, s)| s),
            Some(ConfigSource::Default)
        );
        let c = Config::load(&cli(&[
            "--node-id",
            "7",
            "--listen",
            "127.0.0.1:19092",
            "--advertised-listener",
            "kafka-7.example:9092",
            "--data-dir",
            "/var/lib/corebus",
        ]))
        .unwrap();
        let static_value = |name: &str| match c.settings.get(name) {
            Some((v, ConfigSource::StaticBroker)) => v.to_string(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(static_value("node.id"), "7");
        assert_eq!(static_value("listeners"), "PLAINTEXT://127.0.0.1:19092");
        assert_eq!(
            static_value("advertised.listeners"),
            "PLAINTEXT://kafka-7.example:9092"
        );
        assert_eq!(static_value("log.dirs"), "/var/lib/corebus");
    }

    #[test]
    fn connections_per_address_are_read_and_bad_overrides_refused() {
        let c = Config::load(&cli(&[])).unwrap();
        assert_eq!(
            c.per_ip,
            crate::server::admission::PerIpLimits::parse(i64::from(i32::MAX), "").unwrap()
        );
        let c = Config::load(&cli(&[
            "--override",
            "max.connections.per.ip=4",
            "--override",
            "max.connections.per.ip.overrides=10.1.2.3:9",
        ]))
        .unwrap();
        assert_eq!(c.per_ip.max_for("10.1.2.3".parse().unwrap()), 9);
        assert_eq!(c.per_ip.max_for("10.1.2.4".parse().unwrap()), 4);
        for bad in [
            &["--override", "max.connections.per.ip.overrides=10.1.2.3"][..],
            &["--override", "max.connections.per.ip=0"][..],
        ] {
            let e = Config::load(&cli(bad)).unwrap_err().to_string();
            assert!(e.contains("max.connections.per.ip"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn metrics_listener_default_explicit_and_off() {
        let c = Config::load(&cli(&[])).unwrap();
        assert_eq!(
            c.metrics,
            MetricsListen::On {
                addr: HostPort {
                    host: "127.0.0.1".into(),
                    port: 9644
                },
                explicit: false
            }
        );
        let c = Config::load(&cli(&["--metrics-listen", "0.0.0.0:9100"])).unwrap();
        assert!(
            matches!(c.metrics, MetricsListen::On { explicit: true, ref addr } if addr.port == 9100)
        );
        let c = Config::load(&cli(&["--metrics-listen", "off"])).unwrap();
        assert_eq!(c.metrics, MetricsListen::Off);
        let e = Config::load(&cli(&["--metrics-listen", "nowhere"])).unwrap_err();
        assert!(e.to_string().contains("--metrics-listen"), "{e}");
    }

    #[test]
    fn unknown_and_malformed_settings_are_named() {
        let e = Config::load(&cli(&["--override", "num.partitons=3"])).unwrap_err();
        assert!(e.to_string().contains("num.partitons"), "{e}");
        let e = Config::load(&cli(&["--override", "num.partitions=many"])).unwrap_err();
        assert!(e.to_string().contains("num.partitions"), "{e}");
        let e = Config::load(&cli(&["--override", "log.cleanup.policy=shred"])).unwrap_err();
        assert!(e.to_string().contains("log.cleanup.policy"), "{e}");
        let e = Config::load(&cli(&["--listen", "SSL://h:1"])).unwrap_err();
        assert!(e.to_string().contains("PLAINTEXT"), "{e}");
    }

    #[test]
    fn file_then_override_then_flag() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("server.properties");
        std::fs::write(
            &p,
            "# Kafka style\nnum.partitions=3\nlisteners=PLAINTEXT://0.0.0.0:19092\n\
             log.dirs=/tmp/x\nnum.io.threads=8\nlog.retention.hours : 24\n",
        )
        .unwrap();
        let path = p.to_str().unwrap();
        let c = Config::load(&cli(&[
            "--config",
            path,
            "--override",
            "num.partitions=4",
            "--data-dir",
            "/tmp/y",
        ]))
        .unwrap();
        assert_eq!(c.settings.i64("num.partitions"), Some(4));
        assert_eq!(c.listen.port, 19092);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/y"));
        assert_eq!(
            c.settings.inert_given(),
            vec![(
                "num.io.threads",
                "corebus runs one thread per core (see --shards)."
            )]
        );
        let retention = lookup(Scope::Topic, "retention.ms").unwrap();
        let r = c.settings.resolve_topic(retention, &BTreeMap::new());
        assert_eq!(r.value, Some(Value::Long(24 * 3_600_000)));
        assert_eq!(r.source, ConfigSource::StaticBroker);
        assert_eq!(r.synonyms.len(), 1);
    }

    #[test]
    fn topic_override_wins_and_synonyms_follow() {
        let c = Config::load(&cli(&[])).unwrap();
        let retention = lookup(Scope::Topic, "retention.ms").unwrap();
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "1000".to_string());
        let r = c.settings.resolve_topic(retention, &o);
        assert_eq!(r.value, Some(Value::Long(1000)));
        assert_eq!(r.source, ConfigSource::DynamicTopic);
        let names: Vec<_> = r.synonyms.iter().map(|s| s.name).collect();
        assert_eq!(names, vec!["retention.ms", "log.retention.hours"]);
        assert_eq!(r.synonyms[1].value, Value::Long(168 * 3_600_000));
        assert!(check_topic_setting("retention.ms", "abc").is_err());
        assert!(check_topic_setting("no.such", "1").is_err());
    }
}
