//! What can go wrong talking to a broker, in the terms a caller acts on.

use corebus_wire::kafka_protocol::messages::ApiKey;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    // The reason as text: glommio's error already carries its io::Error in its message, and a
    // `source` would print it twice in an error chain.
    #[error("connecting to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("connection to {address} lost: {reason}")]
    ConnectionLost { address: String, reason: String },
    #[error(
        "{address} speaks no version of {api_key:?} this client knows (broker {broker_min}..={broker_max})"
    )]
    NoCommonVersion {
        address: String,
        api_key: ApiKey,
        broker_min: i16,
        broker_max: i16,
    },
    #[error("{address} does not support {api_key:?}")]
    Unsupported { address: String, api_key: ApiKey },
    #[error("protocol: {0}")]
    Wire(#[from] corebus_wire::WireError),
    #[error("{address} answered correlation id {got}, expected {expected}")]
    CorrelationMismatch {
        address: String,
        got: i32,
        expected: i32,
    },
    #[error("{address}: {api_key:?} got no answer within {timeout_ms} ms")]
    Timeout {
        address: String,
        api_key: ApiKey,
        timeout_ms: u64,
    },
    #[error("{address} answered {api_key:?} with a {got:?} body")]
    WrongResponse {
        address: String,
        api_key: ApiKey,
        got: String,
    },
    #[error("{what}: Kafka error {code}")]
    Kafka { what: String, code: i16 },
    #[error("metadata: {0}")]
    Metadata(String),
}
