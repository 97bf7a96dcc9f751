//! Workload files: what to run, in the spirit of the OpenMessaging Benchmark's workloads.
//!
//! Owns: the TOML format (every field, its unit and default), parsing, and validation with
//! messages that name the field. Durations are written as `"30s"`, `"500ms"`, `"2h"`.
//! Never: starts anything; an unknown field is refused, never ignored (a misspelt `acks`
//! silently running with the default would publish a wrong figure).

use std::path::{Path, PathBuf};
use std::time::Duration;

use corebus_wire::record::Compression;
use serde::{Deserialize, Deserializer};

/// Smallest message size, in bytes: the run tag and the intended send time stamped in every
/// value (see [`crate::payload::STAMP_BYTES`]).
pub const MIN_MESSAGE_BYTES: usize = crate::payload::STAMP_BYTES;
/// Largest message size accepted, in bytes (Kafka's default `message.max.bytes` is 1 MiB).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Most topics x partitions a workload may ask for.
pub const MAX_TOTAL_PARTITIONS: usize = 100_000;
/// Most producers or consumers in one workload.
pub const MAX_CLIENTS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadKind {
    /// Incompressible random bytes.
    Random,
    /// Text made of a small vocabulary: compresses about 3-4x, like JSON logs do.
    Compressible,
    /// The bytes of `payload_file`, cycled.
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    /// No key: the sticky partitioner spreads records (Kafka's KIP-794 behaviour).
    None,
    /// Keys 0, 1, 2, ... modulo `key_space`.
    RoundRobin,
    /// Keys drawn uniformly from `key_space`.
    Random,
    /// Keys drawn from a Zipf distribution over `key_space` (a few hot keys, as in real
    /// traffic), exponent `zipf_exponent`.
    Zipf,
}

/// Offered rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Messages per second across the whole workload, spread evenly over the producers.
    PerSecond(f64),
    /// As fast as the producers can: closed loop, so latency cannot be corrected for
    /// coordinated omission and is reported from the actual send time.
    Max,
}

/// Acknowledgment mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acks(pub i16);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    #[serde(default = "one")]
    pub topics: usize,
    pub partitions_per_topic: usize,
    /// Bytes per record value.
    pub message_size: usize,
    #[serde(default = "default_payload")]
    pub payload: PayloadKind,
    /// With `payload = "file"`; relative to the workload file.
    #[serde(default)]
    pub payload_file: Option<PathBuf>,
    #[serde(default = "default_keys")]
    pub keys: KeyDistribution,
    #[serde(default = "default_key_space")]
    pub key_space: u64,
    #[serde(default = "default_zipf_exponent")]
    pub zipf_exponent: f64,
    #[serde(default = "one")]
    pub producers_per_topic: usize,
    #[serde(default = "one")]
    pub consumers_per_topic: usize,
    #[serde(deserialize_with = "rate")]
    pub rate: Rate,
    #[serde(default = "default_acks", deserialize_with = "acks")]
    pub acks: Acks,
    #[serde(default = "default_compression", deserialize_with = "compression")]
    pub compression: Compression,
    /// `batch.size`, bytes.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// `linger.ms`.
    #[serde(default = "default_linger", deserialize_with = "duration")]
    pub linger: Duration,
    /// `buffer.memory` per producer, bytes.
    #[serde(default = "default_buffer_bytes")]
    pub buffer_bytes: usize,
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_duration", deserialize_with = "duration")]
    pub duration: Duration,
    #[serde(default = "default_warmup", deserialize_with = "duration")]
    pub warmup: Duration,
    /// Backlog phase: consumers are paused for this long at the start of the measured phase,
    /// then drain the backlog while producers go on (OMB's consumer backlog test).
    #[serde(default, deserialize_with = "duration")]
    pub backlog: Duration,
    /// How long consumers may take after the producers stopped to read everything
    /// acknowledged.
    #[serde(default = "default_drain_timeout", deserialize_with = "duration")]
    pub drain_timeout: Duration,
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i16,
    /// Topic configs passed to CreateTopics (`retention.ms`, `segment.bytes`, ...).
    #[serde(default)]
    pub topic_configs: std::collections::BTreeMap<String, String>,
}

fn one() -> usize {
    1
}
fn default_payload() -> PayloadKind {
    PayloadKind::Random
}
fn default_keys() -> KeyDistribution {
    KeyDistribution::None
}
fn default_key_space() -> u64 {
    10_000
}
fn default_zipf_exponent() -> f64 {
    1.1
}
fn default_acks() -> Acks {
    Acks(-1)
}
fn default_compression() -> Compression {
    Compression::None
}
fn default_batch_bytes() -> usize {
    128 * 1024
}
fn default_linger() -> Duration {
    Duration::from_millis(1)
}
fn default_buffer_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_in_flight() -> usize {
    crate::client::limits::DEFAULT_MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION
}
fn default_duration() -> Duration {
    Duration::from_secs(60)
}
fn default_warmup() -> Duration {
    Duration::from_secs(5)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_replication_factor() -> i16 {
    1
}

/// Parses a humantime duration (`"30s"`, `"1500ms"`, `"2h"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("duration {text:?}: {e}"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) if n.is_finite() && n > 0.0 => Ok(Rate::PerSecond(n)),
        Raw::Text(t) if t == "max" => Ok(Rate::Max),
        _ => Err(serde::de::Error::custom(
            "rate must be a positive number of messages per second or \"max\"",
        )),
    }
}

/// Parses `acks` as Kafka spells it: 0, 1, -1 or "all".
pub fn parse_acks(text: &str) -> Result<Acks, String> {
    match text {
        "0" => Ok(Acks(0)),
        "1" => Ok(Acks(1)),
        "all" | "-1" => Ok(Acks(-1)),
        other => Err(format!("acks {other:?}: expected 0, 1 or all")),
    }
}

fn acks<'de, D: Deserializer<'de>>(d: D) -> Result<Acks, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Number(n) => n.to_string(),
        Raw::Text(t) => t,
    };
    parse_acks(&text).map_err(serde::de::Error::custom)
}

/// Parses a codec name as Kafka's `compression.type` spells it.
pub fn parse_compression(text: &str) -> Result<Compression, String> {
    [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .into_iter()
    .find(|c| c.name() == text)
    .ok_or_else(|| format!("compression {text:?}: expected none, gzip, snappy, lz4 or zstd"))
}

fn compression<'de, D: Deserializer<'de>>(d: D) -> Result<Compression, D::Error> {
    let text = String::deserialize(d)?;
    parse_compression(&text).map_err(serde::de::Error::custom)
}

impl Workload {
    /// Reads and validates a workload file; a relative `payload_file` is resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Workload, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut workload =
            Workload::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(file) = &workload.payload_file
            && file.is_relative()
        {
            let base = path.parent().unwrap_or(Path::new("."));
            workload.payload_file = Some(base.join(file));
        }
        Ok(workload)
    }

    pub fn parse(text: &str) -> Result<Workload, String> {
        let workload: Workload = toml::from_str(text).map_err(|e| e.to_string())?;
        workload.validate()?;
        Ok(workload)
    }

    fn validate(&self) -> Result<(), String> {
        let check = |ok: bool, message: String| if ok { Ok(()) } else { Err(message) };
        check(self.topics >= 1, "topics must be at least 1".into())?;
        check(
            self.partitions_per_topic >= 1,
            "partitions_per_topic must be at least 1".into(),
        )?;
        check(
            self.topics.saturating_mul(self.partitions_per_topic) <= MAX_TOTAL_PARTITIONS,
            format!("topics x partitions_per_topic above {MAX_TOTAL_PARTITIONS}"),
        )?;
        check(
            (MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&self.message_size),
            format!(
                "message_size {} outside {MIN_MESSAGE_BYTES}..={MAX_MESSAGE_BYTES} bytes",
                self.message_size
            ),
        )?;
        check(
            self.producers_per_topic >= 1,
            "producers_per_topic must be at least 1".into(),
        )?;
        check(
            self.topics.saturating_mul(self.producers_per_topic) <= MAX_CLIENTS
                && self.topics.saturating_mul(self.consumers_per_topic) <= MAX_CLIENTS,
            format!("more than {MAX_CLIENTS} producers or consumers"),
        )?;
        check(
            self.keys == KeyDistribution::None || self.key_space >= 1,
            "key_space must be at least 1".into(),
        )?;
        check(
            self.keys != KeyDistribution::Zipf || self.zipf_exponent > 0.0,
            "zipf_exponent must be positive".into(),
        )?;
        check(
            (self.payload == PayloadKind::File) == self.payload_file.is_some(),
            "payload_file is given exactly when payload = \"file\"".into(),
        )?;
        check(
            self.batch_bytes >= 1,
            "batch_bytes must be at least 1".into(),
        )?;
        check(
            self.buffer_bytes >= self.message_size * 2,
            "buffer_bytes must hold at least two messages".into(),
        )?;
        check(
            self.max_in_flight >= 1,
            "max_in_flight must be at least 1".into(),
        )?;
        check(!self.duration.is_zero(), "duration must be positive".into())?;
        check(
            self.backlog < self.duration,
            "backlog must be shorter than duration".into(),
        )?;
        check(
            self.replication_factor >= 1,
            "replication_factor must be at least 1".into(),
        )?;
        Ok(())
    }

    pub fn producers(&self) -> usize {
        self.topics * self.producers_per_topic
    }

    pub fn consumers(&self) -> usize {
        self.topics * self.consumers_per_topic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        name = "m"
        partitions_per_topic = 4
        message_size = 100
        rate = 1000
    "#;

    #[test]
    fn minimal_file_gets_defaults() {
        let w = Workload::parse(MINIMAL).unwrap();
        assert_eq!(w.topics, 1);
        assert_eq!(w.rate, Rate::PerSecond(1000.0));
        assert_eq!(w.acks, Acks(-1));
        assert_eq!(w.keys, KeyDistribution::None);
        assert_eq!(w.linger, Duration::from_millis(1));
        assert_eq!(w.backlog, Duration::ZERO);
    }

    #[test]
    fn every_field_parses() {
        let w = Workload::parse(
            r#"
            name = "full"
            topics = 2
            partitions_per_topic = 8
            message_size = 1024
            payload = "compressible"
            keys = "zipf"
            key_space = 500
            zipf_exponent = 0.9
            producers_per_topic = 30
            consumers_per_topic = 2
            rate = "max"
            acks = 1
            compression = "lz4"
            batch_bytes = 65536
            linger = "5ms"
            buffer_bytes = 1048576
            max_in_flight = 3
            duration = "2m"
            warmup = "10s"
            backlog = "30s"
            drain_timeout = "1m"
            replication_factor = 1
            topic_configs = { "retention.ms" = "60000" }
            "#,
        )
        .unwrap();
        assert_eq!(w.rate, Rate::Max);
        assert_eq!(w.acks, Acks(1));
        assert_eq!(w.compression, Compression::Lz4);
        assert_eq!(w.keys, KeyDistribution::Zipf);
        assert_eq!(w.duration, Duration::from_secs(120));
        assert_eq!(w.producers(), 60);
        assert_eq!(w.topic_configs["retention.ms"], "60000");
    }

    #[test]
    fn shipped_workloads_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let w = Workload::load(&path).unwrap_or_else(|e| panic!("{e}"));
            names.push(w.name);
        }
        for standard in ["1-topic-100-partitions-1kb", "1-topic-1-partition-100b"] {
            assert!(names.iter().any(|n| n == standard), "{names:?}");
        }
        let keyed = Workload::load(&dir.join("many-producers-keyed.toml")).unwrap();
        assert!(keyed.producers() >= 50 && keyed.keys != KeyDistribution::None);
    }

    #[test]
    fn bad_files_name_the_field() {
        let bad = |extra: &str, needle: &str| {
            let e = Workload::parse(&format!("{MINIMAL}\n{extra}")).unwrap_err();
            assert!(e.contains(needle), "{extra}: {e}");
        };
        bad("akcs = 1", "akcs");
        bad("acks = 2", "acks");
        bad("compression = \"brotli\"", "compression");
        bad("linger = \"soon\"", "duration");
        bad("keys = \"hashed\"", "keys");
        let tiny = MINIMAL.replace("message_size = 100", "message_size = 4");
        assert!(Workload::parse(&tiny).unwrap_err().contains("message_size"));
        let no_rate = MINIMAL.replace("rate = 1000", "rate = 0");
        assert!(Workload::parse(&no_rate).unwrap_err().contains("rate"));
        let file = format!("{MINIMAL}\npayload = \"file\"");
        assert!(Workload::parse(&file).unwrap_err().contains("payload_file"));
    }
}
