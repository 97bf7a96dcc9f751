//! Helpers shared by several handlers: error codes, name checks, string conversion.
//!
//! Never: decides an API's semantics (each handler file does).

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::protocol::StrBytes;

/// The wire value of `e`.
pub fn code(e: ResponseError) -> i16 {
    e.code()
}

/// A protocol string from a Rust one.
pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
