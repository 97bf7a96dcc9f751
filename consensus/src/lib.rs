//! The consensus group: a ZAB replicated log and tree (ZooKeeper's data model), built as a pure
//! state machine driven by a runtime or by the deterministic simulator. It knows neither
//! Kafka nor the broker.
//!
//! - [`types`]: zxids, epochs, ids. [`txn`]: writes, transactions, results. [`tree`]: the tree.
//! - [`log`], [`snapshot`], [`meta`]: on-disk formats; [`store`]: the durable store over files.
//! - [`session`]: client sessions (record, timeout negotiation, the ephemeral-lifetime bound).
//! - [`watch`]: watches (one-shot and persistent) and the events a transaction fires.
//! - [`election`]: Fast Leader Election votes. [`zab`]: the protocol state machine.
//! - `sim` (tests, or feature `sim`): the seeded simulator and its checkers.
//!
//! # What is proven, and how
//!
//! `cargo test -p corebus-consensus` runs 1,000+ simulated seeds (3- and 5-node groups and a
//! group of one) with crashes, whole-group power loss, partitions, dropped, duplicated and
//! reordered packets and torn log tails, checking linearizability of writes and CAS per key,
//! one leader per epoch, one committed order applied by every node, trees equal to the replay
//! of the committed log, read-your-writes through `sync`, and convergence once faults stop.
//! Clients holding sessions run beside the workload: every ephemeral node has a live owner
//! and every live session its acknowledged ephemeral node, on every node; a client that dies
//! after the faults stop loses its session on every serving node within the bound documented
//! in [`session`]; a live client whose session was opened after the faults is never
//! expired. Watchers keep one-shot watches on the workload's keys across node restarts and
//! moves: each fires once per change, after the state it was set on, in zxid order, and no
//! read shows a change before its event arrived. Five deliberately broken variants
//! (`zab::Fault`: acknowledging before fsync, committing without a quorum, dropping
//! followers' session touches, never expiring, re-registering watches without the missed
//! events) must be caught. `scripts/sim` runs the long
//! sweep; a failing seed prints the command that replays it.
//!
//! # Guarantees, as ZooKeeper's
//!
//! Writes (and multi) are linearizable. Reads are served locally and are sequentially
//! consistent (every node applies one committed order). `sync` followed by a read on the same
//! node sees every write acknowledged before the sync started: the leader answers a sync only
//! after a quorum answered a ping it sent after the sync arrived (Raft's ReadIndex), which is
//! stronger than ZooKeeper, whose deposed-but-unaware leader can answer a sync stale (the
//! simulator found exactly that case before this rule).
//!
//! Sessions are replicated state: created, closed and expired by committed transactions, so
//! every node agrees on the live sessions and on each ephemeral node's owner; only the leader
//! decides an expiry, and a new leader gives every session a fresh timeout. An ephemeral
//! node outlives a dead client by at most timeout + a ping interval + a tick + a commit, plus
//! the election time if the leader changes meanwhile ([`session`]). Watches ([`watch`]) are
//! one-shot or persistent, per connection; a client hears of a change once, in zxid order, and
//! before any reply on that connection that shows it; after a move it re-registers them and
//! hears of the one-shot changes it missed (ZooKeeper's SetWatches).
//!
//! # The runtime that comes next (not built yet)
//!
//! A runtime owns one [`zab::Node`], a [`store::LogStore`] over real files, TCP connections to
//! the peers and the clients, and a tick timer; it executes outputs in order under the
//! contract in [`zab`] (epoch, truncate and snapshot writes durable before the next output;
//! `Sync` runs as a group-committed fdatasync whose completion is fed back as an input). Peer
//! and client frames are length-prefixed rkyv of [`zab::PeerMessage`] and the client
//! requests, with one limit on frame bytes. It runs on its own glommio executor: heartbeats
//! (pings, votes, ACKs) on a latency-sensitive task queue with more shares than the shards'
//! queues, and the fsync on a separate queue so a slow disk never delays a ping.

pub mod client;
pub mod election;
pub mod limits;
pub mod log;
pub mod meta;
pub mod proto;
pub mod runtime;
pub mod session;
pub mod snapshot;
pub mod store;
pub mod tree;
pub mod txn;
pub mod types;
pub mod watch;
pub mod zab;

#[cfg(any(test, feature = "sim"))]
pub mod sim;
