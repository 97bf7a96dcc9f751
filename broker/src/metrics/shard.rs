//! One shard's counters: requests by API and outcome, network bytes, produce and fetch
//! latency. Plain fields in a `RefCell` on the shard (`Shard::metrics`), written by that
//! shard's tasks only and read by the snapshot job the metrics endpoint sends through the
//! mesh.
//!
//! Never: is touched from another thread; holds a borrow across an await (every update is
//! one short borrow).

use std::collections::HashMap;
use std::time::Duration;

use corebus_wire::kafka_protocol::messages::ApiKey;

use super::histogram::LatencyHistogram;

/// How a request ended, for the `error` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestOutcome {
    /// Answered; the Kafka error code the response reports (0 for NONE).
    Code(i16),
    /// Not answered by design (Produce with acks=0).
    NoResponse,
    /// The broker closed the connection instead of answering (an API or version not
    /// advertised, a response that could not be encoded).
    Closed,
}

#[derive(Debug, Clone, Default)]
pub struct ShardMetrics {
    /// Requests handled, by (API key, outcome).
    pub(crate) requests: HashMap<(i16, RequestOutcome), u64>,
    /// Frames that did not decode (the connection was closed).
    pub malformed_requests: u64,
    /// Times the broker's consensus session expired and was renewed (shard 0 only).
    pub consensus_session_renewals: u64,
    /// Bytes read from client sockets.
    pub received_bytes: u64,
    /// Bytes written to client sockets.
    pub sent_bytes: u64,
    /// Connections accepted (and admitted under `max.connections`).
    pub connections_accepted: u64,
    /// Connections closed at accept because `max.connections` were open on the node.
    pub connections_refused_node: u64,
    /// Connections closed at accept because their address held `max.connections.per.ip`.
    pub connections_refused_address: u64,
    /// Connections closed after `connections.max.idle.ms` with nothing in flight.
    pub idle_connections_closed: u64,
    /// Connections closed because a frame did not arrive within `corebus.request.read.timeout.ms`.
    pub request_read_timeouts: u64,
    /// Fetches answered at once instead of waiting for data because the shard already held
    /// `corebus.shard.max.parked.fetches` waiting.
    pub fetches_not_parked: u64,
    /// Fetch partition reads skipped for a round because no fetch memory came free in time
    /// (`corebus.shard.fetch.memory.budget.bytes`); the fetch answers with what it has.
    pub fetch_reads_deferred: u64,
    /// Time from a Produce request's decoding to its response (acks wait included).
    pub produce_latency: LatencyHistogram,
    /// Time from a Fetch request's decoding to its response (long-poll wait included).
    pub fetch_latency: LatencyHistogram,
}

impl ShardMetrics {
    /// Counts one handled request of API `api_key`; `latency` feeds the histogram of that API
    /// when it has one.
    pub fn record_request(&mut self, api_key: i16, outcome: RequestOutcome, latency: Duration) {
        *self.requests.entry((api_key, outcome)).or_default() += 1;
        if api_key == ApiKey::Produce as i16 {
            self.produce_latency.observe(latency);
        } else if api_key == ApiKey::Fetch as i16 {
            self.fetch_latency.observe(latency);
        }
    }

    /// Every (API key, outcome, count), sorted, for a snapshot.
    pub fn requests(&self) -> Vec<(i16, RequestOutcome, u64)> {
        let mut all: Vec<_> = self
            .requests
            .iter()
            .map(|(&(a, o), &n)| (a, o, n))
            .collect();
        all.sort_unstable();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_api_and_outcome() {
        let mut m = ShardMetrics::default();
        let ms = Duration::from_millis(1);
        m.record_request(0, RequestOutcome::Code(0), ms);
        m.record_request(0, RequestOutcome::Code(0), ms);
        m.record_request(0, RequestOutcome::Code(3), ms);
        m.record_request(1, RequestOutcome::Code(0), ms);
        m.record_request(18, RequestOutcome::Closed, ms);
        assert_eq!(
            m.requests(),
            vec![
                (0, RequestOutcome::Code(0), 2),
                (0, RequestOutcome::Code(3), 1),
                (1, RequestOutcome::Code(0), 1),
                (18, RequestOutcome::Closed, 1),
            ]
        );
        assert_eq!(m.produce_latency.count(), 3);
        assert_eq!(m.fetch_latency.count(), 1);
    }
}
