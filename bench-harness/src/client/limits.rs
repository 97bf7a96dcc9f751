//! The client's limits, each named once with its unit.
//!
//! Never: read from the environment; the workload file overrides the ones it names.

/// Requests a connection may have sent and not yet seen answered (Kafka's producer default
/// `max.in.flight.requests.per.connection`).
pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION: usize = 5;

/// Largest response frame accepted, in bytes (a Fetch answers at most
/// [`FETCH_MAX_BYTES`] of records plus headers; anything larger is a broken peer).
pub const MAX_RESPONSE_FRAME_BYTES: usize = 128 * 1024 * 1024;

/// `fetch.max.bytes` sent by the consumer (Kafka's default, 50 MiB).
pub const FETCH_MAX_BYTES: i32 = 50 * 1024 * 1024;

/// `max.partition.fetch.bytes` sent by the consumer (Kafka's default, 1 MiB).
pub const FETCH_PARTITION_MAX_BYTES: i32 = 1024 * 1024;

/// `fetch.max.wait.ms` sent by the consumer (Kafka's default is 500; less keeps the
/// end-to-end latency of a sparse stream from being the long-poll's length).
pub const FETCH_MAX_WAIT_MS: i32 = 100;

/// Largest Produce request the producer builds from its ready batches, in bytes (Kafka's
/// `max.request.size` is 1 MiB per request; brokers accept far more, and fewer larger
/// requests keep the harness's own cost down).
pub const MAX_PRODUCE_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// `request.timeout.ms`: how long a request may wait for its answer before the connection is
/// declared dead, in milliseconds (Kafka's default).
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;

/// How long connecting to a broker may take, in milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;

/// The Produce request's `timeout_ms` (Kafka's producer `request.timeout.ms`).
pub const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// Largest decompressed batch the consumer reads, in bytes.
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Record bytes all the producers of one harness executor may hold appended but not yet
/// acknowledged, in bytes (each producer's own `buffer.memory` applies too; a workload whose
/// `buffer_bytes` is larger raises this to it). Kafka's bound is per producer process; one
/// executor runs hundreds of producers, and 1,000 producers x 32 MiB let the generators run
/// gigabytes ahead of the broker, starving their own sockets for seconds.
pub const MAX_EXECUTOR_BUFFERED_BYTES: usize = 64 * 1024 * 1024;
