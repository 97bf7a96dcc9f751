//! The scrape answer: every shard's snapshot and the node-wide gauges, encoded in the
//! OpenMetrics text format (which Prometheus reads; `Content-Type` [`CONTENT_TYPE`]) by the
//! `prometheus-client` crate's encoder, through its `Collector` interface, so no metric type
//! of that crate (they are atomics) is ever touched on the data path.
//!
//! Names follow Prometheus conventions: a `corebus_` prefix, the unit in the name
//! (`_seconds`, `_bytes`), `_total` on counters (the encoder adds it), one `shard` label on
//! everything a shard counts (sum over it for the node).
//!
//! Owns: [`NodeMetrics`], [`encode`]. Never: asks the shards anything (see `snapshot`).

use std::fmt;

use corebus_consensus::zab::RoleName;
use corebus_wire::error_code::ErrorCode;
use corebus_wire::kafka_protocol::messages::ApiKey;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::histogram::LatencyHistogram;
use super::shard::RequestOutcome;
use super::snapshot::ShardSnapshot;

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The consensus role of this process, when it has one.
#[derive(Debug, Clone, Copy)]
pub struct ConsensusView {
    pub role: RoleName,
    pub serving: bool,
    /// 64-bit zxids (epoch in the high half).
    pub last_zxid: u64,
    pub committed_zxid: u64,
    /// Live consensus sessions (brokers and other clients holding ephemeral nodes).
    pub sessions: u64,
}

/// Everything one scrape reports.
#[derive(Debug, Clone, Default)]
pub struct NodeMetrics {
    pub ready: bool,
    /// Every shard, in order; `None` for one that did not answer the scrape.
    pub shards: Vec<(u16, Option<ShardSnapshot>)>,
    /// Client connections open on the node.
    pub connections_open: u64,
    pub consensus: Option<ConsensusView>,
}

/// Encodes `metrics` as OpenMetrics text (ending in `# EOF`).
pub fn encode(metrics: NodeMetrics) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(metrics));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

type Labels = Vec<(&'static str, String)>;

fn shard_label(shard: u16) -> Labels {
    vec![("shard", shard.to_string())]
}

/// The `api` label: Kafka's API name (`Produce`, `Fetch`, ...).
fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(()) => format!("api_{key}"),
    }
}

/// The `error` label: Kafka's name for the code (`NONE`, `UNKNOWN_TOPIC_OR_PARTITION`, ...),
/// or `NO_RESPONSE` / `CLOSED`.
fn outcome_name(outcome: RequestOutcome) -> String {
    match outcome {
        RequestOutcome::Code(code) => ErrorCode::from_code(code).name().to_string(),
        RequestOutcome::NoResponse => "NO_RESPONSE".to_string(),
        RequestOutcome::Closed => "CLOSED".to_string(),
    }
}

/// One family: a descriptor, then one sample set per label set.
struct Family<'a, 'b> {
    encoder: &'a mut DescriptorEncoder<'b>,
}

impl Family<'_, '_> {
    fn counters(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        samples: impl IntoIterator<Item = (Labels, u64)>,
    ) -> fmt::Result {
        let mut m = self
            .encoder
            .encode_descriptor(name, help, unit, MetricType::Counter)?;
        for (labels, value) in samples {
            ConstCounter::new(value).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn gauges(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        samples: impl IntoIterator<Item = (Labels, i64)>,
    ) -> fmt::Result {
        let mut m = self
            .encoder
            .encode_descriptor(name, help, unit, MetricType::Gauge)?;
        for (labels, value) in samples {
            ConstGauge::new(value).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A family of one unlabelled gauge.
    fn gauge(&mut self, name: &str, help: &str, value: i64) -> fmt::Result {
        let m = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(value).encode(m)
    }

    fn histograms<'h>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, &'h LatencyHistogram)>,
    ) -> fmt::Result {
        let mut m = self.encoder.encode_descriptor(
            name,
            help,
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, h) in samples {
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                h.sum_seconds(),
                h.count(),
                &h.buckets(),
                None,
            )?;
        }
        Ok(())
    }
}

impl Collector for NodeMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let mut f = Family {
            encoder: &mut encoder,
        };
        let answered: Vec<&ShardSnapshot> =
            self.shards.iter().filter_map(|(_, s)| s.as_ref()).collect();
        let per_shard = |get: fn(&ShardSnapshot) -> u64| {
            answered
                .iter()
                .map(move |s| (shard_label(s.shard), get(s)))
                .collect::<Vec<_>>()
        };
        let gauge_per_shard = |get: fn(&ShardSnapshot) -> u64| {
            answered
                .iter()
                .map(move |s| {
                    (
                        shard_label(s.shard),
                        i64::try_from(get(s)).unwrap_or(i64::MAX),
                    )
                })
                .collect::<Vec<_>>()
        };

        f.gauge(
            "corebus_ready",
            "1 when every shard serves and the metadata is loaded (what /ready answers 200 to).",
            i64::from(self.ready),
        )?;
        f.gauges(
            "corebus_shard_up",
            "1 when the shard answered this scrape, 0 when it did not within the timeout.",
            None,
            self.shards
                .iter()
                .map(|(id, s)| (shard_label(*id), i64::from(s.is_some()))),
        )?;
        f.counters(
            "corebus_requests",
            "Kafka requests handled, by shard, API and the error code of the response \
             (NONE; the request-level code, else the first topic or partition code; \
             NO_RESPONSE for acks=0 produce; CLOSED when the connection was closed instead).",
            None,
            answered.iter().flat_map(|s| {
                s.counters.requests().into_iter().map(|(api, outcome, n)| {
                    (
                        vec![
                            ("shard", s.shard.to_string()),
                            ("api", api_name(api)),
                            ("error", outcome_name(outcome)),
                        ],
                        n,
                    )
                })
            }),
        )?;
        f.counters(
            "corebus_malformed_requests",
            "Request frames that did not decode (the connection was closed).",
            None,
            per_shard(|s| s.counters.malformed_requests),
        )?;
        f.counters(
            "corebus_consensus_session_expiries",
            "Times this broker's consensus session expired; each is followed by a new session \
             and a new registration.",
            None,
            per_shard(|s| s.counters.consensus_session_renewals),
        )?;
        f.counters(
            "corebus_network_received",
            "Bytes read from client connections.",
            Some(&Unit::Bytes),
            per_shard(|s| s.counters.received_bytes),
        )?;
        f.counters(
            "corebus_network_sent",
            "Bytes written to client connections.",
            Some(&Unit::Bytes),
            per_shard(|s| s.counters.sent_bytes),
        )?;
        f.counters(
            "corebus_connections_accepted",
            "Client connections accepted by the shard.",
            None,
            per_shard(|s| s.counters.connections_accepted),
        )?;
        f.counters(
            "corebus_connections_refused",
            "Client connections closed at accept, by reason: max.connections reached on the \
             node (node) or max.connections.per.ip reached for the client's address (address).",
            None,
            answered
                .iter()
                .flat_map(|s| {
                    [
                        ("node", s.counters.connections_refused_node),
                        ("address", s.counters.connections_refused_address),
                    ]
                    .map(|(reason, n)| {
                        (
                            vec![
                                ("shard", s.shard.to_string()),
                                ("reason", reason.to_string()),
                            ],
                            n,
                        )
                    })
                })
                .collect::<Vec<_>>(),
        )?;
        f.counters(
            "corebus_idle_connections_closed",
            "Client connections closed after connections.max.idle.ms with no request in flight.",
            None,
            per_shard(|s| s.counters.idle_connections_closed),
        )?;
        f.counters(
            "corebus_request_read_timeouts",
            "Client connections closed because a request frame did not arrive within \
             corebus.request.read.timeout.ms.",
            None,
            per_shard(|s| s.counters.request_read_timeouts),
        )?;
        f.counters(
            "corebus_fetches_not_parked",
            "Fetches answered at once instead of waiting for data because the shard already \
             held corebus.shard.max.parked.fetches waiting.",
            None,
            per_shard(|s| s.counters.fetches_not_parked),
        )?;
        f.counters(
            "corebus_fetch_reads_deferred",
            "Fetch partition reads skipped for a round because no fetch memory came free in \
             time (corebus.shard.fetch.memory.budget.bytes); the fetch answers with what it has.",
            None,
            per_shard(|s| s.counters.fetch_reads_deferred),
        )?;
        f.gauge(
            "corebus_connections_open",
            "Client connections open on the node (bounded by max.connections).",
            i64::try_from(self.connections_open).unwrap_or(i64::MAX),
        )?;
        f.histograms(
            "corebus_produce_latency",
            "Time from a Produce request's decoding to its response, acks wait included.",
            answered
                .iter()
                .map(|s| (shard_label(s.shard), &s.counters.produce_latency)),
        )?;
        f.histograms(
            "corebus_fetch_latency",
            "Time from a Fetch request's decoding to its response, long-poll wait included.",
            answered
                .iter()
                .map(|s| (shard_label(s.shard), &s.counters.fetch_latency)),
        )?;
        f.histograms(
            "corebus_storage_fsync_latency",
            "Latency of the group commit's fdatasync of one partition's segment.",
            answered
                .iter()
                .map(|s| (shard_label(s.shard), &s.fsync_latency)),
        )?;
        f.gauges(
            "corebus_partitions",
            "Partitions whose log is open on the shard.",
            None,
            gauge_per_shard(|s| s.partitions),
        )?;
        f.gauges(
            "corebus_log_size",
            "Bytes of record batches on disk in the shard's partitions.",
            Some(&Unit::Bytes),
            gauge_per_shard(|s| s.log_size_bytes),
        )?;
        f.gauges(
            "corebus_produce_memory_in_use",
            "Produce data in flight on the shard (backpressure past the budget).",
            Some(&Unit::Bytes),
            gauge_per_shard(|s| s.produce_memory_in_use_bytes),
        )?;
        f.gauges(
            "corebus_produce_memory_budget",
            "The shard's produce memory budget (corebus.shard.produce.memory.budget.bytes).",
            Some(&Unit::Bytes),
            gauge_per_shard(|s| s.produce_memory_budget_bytes),
        )?;
        f.gauges(
            "corebus_request_memory_in_use",
            "Request frames being read or run on the shard, counted from their size prefix \
             (backpressure past the pool).",
            Some(&Unit::Bytes),
            gauge_per_shard(|s| s.request_memory_in_use_bytes),
        )?;
        f.gauges(
            "corebus_request_memory_pool",
            "The shard's request memory pool (corebus.shard.request.memory.pool.bytes).",
            Some(&Unit::Bytes),
            gauge_per_shard(|s| s.request_memory_pool_bytes),
        )?;
        f.gauges(
            "corebus_fetch_memory_in_use",
            "Fetch reads (read buffers and their copies) in flight on the shard (reads wait \
             past the budget).",
            Some(&Unit::Bytes),
            gauge_per_shard(|s| s.fetch_memory_in_use_bytes),
        )?;
        f.gauges(
            "corebus_fetch_memory_budget",
            "The shard's fetch memory budget (corebus.shard.fetch.memory.budget.bytes).",
            Some(&Unit::Bytes),
            gauge_per_shard(|s| s.fetch_memory_budget_bytes),
        )?;
        f.gauges(
            "corebus_parked_fetches",
            "Fetches of the shard's connections waiting for data (bounded by \
             corebus.shard.max.parked.fetches).",
            None,
            gauge_per_shard(|s| s.parked_fetches),
        )?;
        f.gauges(
            "corebus_fetch_waits",
            "Waits on the shard's partitions for parked fetches (one per parked fetch of any \
             shard whose partitions include some of this shard's); each ends when its fetch \
             stops waiting.",
            None,
            gauge_per_shard(|s| s.fetch_waits),
        )?;
        f.gauges(
            "corebus_batch_cache",
            "Bytes of record batches held in the shard's batch cache.",
            Some(&Unit::Bytes),
            gauge_per_shard(|s| s.batch_cache_bytes),
        )?;
        f.gauges(
            "corebus_open_segment_files",
            "Segment and index files the shard's fd cache holds open.",
            None,
            gauge_per_shard(|s| s.open_files),
        )?;
        f.counters(
            "corebus_segment_files_closed_for_limit",
            "Segment and index files the shard closed to stay within its open-file budget \
             (corebus.shard.max.open.files); a steady rise means files are reopened per write.",
            None,
            per_shard(|s| s.files_closed_for_limit),
        )?;
        if let Some(c) = self.consensus {
            let roles = [
                ("looking", RoleName::Looking),
                ("following", RoleName::Following),
                ("leading", RoleName::Leading),
            ];
            f.gauges(
                "corebus_consensus_role",
                "This node's consensus role: 1 for the current one (looking, following, leading).",
                None,
                roles
                    .iter()
                    .map(|(name, r)| (vec![("role", name.to_string())], i64::from(*r == c.role))),
            )?;
            f.gauge(
                "corebus_consensus_serving",
                "1 when this node's consensus role serves requests (it is in a quorum).",
                i64::from(c.serving),
            )?;
            let zxid = |z: u64| i64::try_from(z).unwrap_or(i64::MAX);
            f.gauge(
                "corebus_consensus_last_zxid",
                "The last zxid in this node's consensus log (64-bit: epoch << 32 | counter).",
                zxid(c.last_zxid),
            )?;
            f.gauge(
                "corebus_consensus_committed_zxid",
                "The last zxid this node knows to be committed (64-bit: epoch << 32 | counter).",
                zxid(c.committed_zxid),
            )?;
            f.gauge(
                "corebus_consensus_sessions",
                "Live consensus sessions in this node's copy of the tree.",
                i64::try_from(c.sessions).unwrap_or(i64::MAX),
            )?;
            f.gauge(
                "corebus_consensus_epoch",
                "The epoch of this node's last zxid.",
                i64::from((c.last_zxid >> 32) as u32),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::shard::ShardMetrics;
    use std::time::Duration;

    #[test]
    fn encodes_counters_histograms_and_eof() {
        let mut counters = ShardMetrics {
            requests: [
                ((0, RequestOutcome::Code(0)), 2),
                ((0, RequestOutcome::Code(3)), 1),
            ]
            .into(),
            received_bytes: 100,
            ..ShardMetrics::default()
        };
        counters.produce_latency.observe(Duration::from_millis(2));
        let s = ShardSnapshot {
            shard: 0,
            counters,
            ..ShardSnapshot::default()
        };
        let text = encode(NodeMetrics {
            ready: true,
            shards: vec![(0, Some(s)), (1, None)],
            connections_open: 1,
            consensus: None,
        })
        .unwrap();
        assert!(
            text.contains(r#"corebus_requests_total{shard="0",api="Produce",error="NONE"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"error="UNKNOWN_TOPIC_OR_PARTITION"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"corebus_network_received_bytes_total{shard="0"} 100"#),
            "{text}"
        );
        assert!(text.contains(r#"corebus_shard_up{shard="1"} 0"#), "{text}");
        assert!(
            text.contains(r#"corebus_produce_latency_seconds_bucket{le="0.0025",shard="0"} 1"#)
                || text
                    .contains(r#"corebus_produce_latency_seconds_bucket{shard="0",le="0.0025"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"corebus_produce_latency_seconds_count{shard="0"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
