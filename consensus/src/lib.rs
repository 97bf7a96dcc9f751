//! The consensus group: a ZAB replicated log and tree (ZooKeeper's data model), built as a pure
//! state machine driven by a runtime or by the deterministic simulator. It knows neither
//! Kafka nor the broker.
//!
//! - [`types`]: zxids, epochs, ids. [`txn`]: writes, transactions, results. [`tree`]: the tree.
//! - [`log`], [`snapshot`], [`meta`]: on-disk formats; [`store`]: the durable store over files.
//! - [`election`]: Fast Leader Election votes. [`zab`]: the protocol state machine.
//! - `sim` (tests, or feature `sim`): the seeded simulator and its checkers.

pub mod election;
pub mod limits;
pub mod log;
pub mod meta;
pub mod snapshot;
pub mod store;
pub mod tree;
pub mod txn;
pub mod types;
pub mod zab;

#[cfg(any(test, feature = "sim"))]
pub mod sim;
