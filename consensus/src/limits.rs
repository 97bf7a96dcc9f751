//! Every limit of the consensus crate, named once with its unit.
//!
//! Owns constants only. Protocol timing is in ticks (the runtime decides what a tick is) and
//! lives in [`crate::zab::Config`], not here.

/// Largest data a tree node holds (ZooKeeper's jute.maxbuffer default).
pub const MAX_NODE_DATA_BYTES: usize = 1024 * 1024;
/// Longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Most operations in one `multi`.
pub const MAX_MULTI_OPS: usize = 1024;
/// Largest encoded transaction in the log (a full multi of big nodes is refused earlier).
pub const MAX_TXN_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// A log segment rolls once it reaches this size.
pub const DEFAULT_LOG_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest snapshot file accepted on recovery.
pub const MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

// The runtime (TCP, timers, disk thread).

/// Largest peer frame. A SYNC carries a leader's retained log (and possibly a snapshot of the
/// whole tree), so this is generous; a frame past it is refused and the connection closed.
pub const MAX_PEER_FRAME_BYTES: usize = 512 * 1024 * 1024;
/// Largest client frame: the largest transaction plus its envelope.
pub const MAX_CLIENT_FRAME_BYTES: usize = MAX_TXN_RECORD_BYTES + 64 * 1024;
/// Messages queued for one peer connection; past it the connection is reset (the peer is
/// told by the break, as TCP would) rather than the node's memory growing without bound.
pub const PEER_QUEUE_MESSAGES: usize = 16 * 1024;
/// Protocol events (peer messages, peer breaks, ticks) queued for the node's driver; a
/// peer's reader waits when it is full, which back-pressures its socket. Separate from the
/// client queue, so a backlog of client requests never delays a heartbeat or an ACK.
pub const PROTOCOL_QUEUE_EVENTS: usize = 16 * 1024;
/// Disk operations the driver may queue ahead of the disk thread. Past it the driver waits
/// (backpressure from a disk far behind, instead of memory growing with it); generous so that
/// an ordinary fdatasync stall never holds up a ping or a vote.
pub const DISK_QUEUE_OPS: usize = 64 * 1024;
/// Client events (requests, connections opened and closed) queued for the driver; client
/// readers wait when it is full.
pub const CLIENT_QUEUE_EVENTS: usize = 64 * 1024;
/// Events of one kind the driver takes in a row while the other kind waits: protocol events
/// go first, but client requests are never starved by a stream of peer messages.
pub const DRIVER_BURST_EVENTS: usize = 256;
/// One driver step (an event and its outputs) taking longer than this is logged as a warning:
/// the node heard nothing else meanwhile, and 50 ticks of it cost the leader its quorum.
pub const SLOW_DRIVER_STEP_WARN_MS: u64 = 50;
/// Requests one client connection may have outstanding; its socket is not read past it.
pub const MAX_INFLIGHT_REQUESTS_PER_CLIENT: usize = 1024;
/// Replies and watch events queued for one client connection. Replies to requests are bounded
/// by [`MAX_INFLIGHT_REQUESTS_PER_CLIENT`], but watch events are not (a recursive watch fires
/// for every change below it): a client that lets more than this pile up (it does not read its
/// socket) is disconnected rather than buffered for. Its session lives on: it reconnects,
/// re-arms its watches and is told what it missed, as a client that moved.
pub const MAX_QUEUED_REPLIES_PER_CLIENT: usize = MAX_INFLIGHT_REQUESTS_PER_CLIENT + 16 * 1024;
/// Client connections one node serves at once; more are refused at accept.
pub const MAX_CLIENT_CONNECTIONS: usize = 4096;
/// First wait before redialling a peer; doubles per failure up to the maximum.
pub const PEER_RECONNECT_BACKOFF_MIN_MS: u64 = 20;
pub const PEER_RECONNECT_BACKOFF_MAX_MS: u64 = 1_000;
/// Dialling a peer gives up after this and counts as a failure.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// A dialler that connected must send its hello within this, or the connection is closed.
pub const HELLO_TIMEOUT_MS: u64 = 5_000;
/// Default length of one protocol tick (the zab timings are in ticks; see `zab::Config::new`).
pub const DEFAULT_TICK_MS: u64 = 10;
/// Bytes a connection's reader buffers from its socket.
pub const SOCKET_READ_BUFFER_BYTES: usize = 64 * 1024;

// Sessions.

/// Bounds of a session's timeout, in leader ping intervals (`zab::Config::ping_interval_ticks`).
/// ZooKeeper clamps to 2 and 20 of its `tickTime` (2 s by default: 4 s to 40 s), its quorum
/// heartbeat period. The heartbeat period here is the ping interval (10 ticks of 10 ms by
/// default), twenty times shorter, so 20 of them would cap sessions at 2 s: shorter than a
/// scheduling stall on a loaded machine, and far below what Kafka operators run brokers with
/// (`zookeeper.session.timeout.ms` 18 s, KRaft's `broker.session.timeout.ms` 9 s). The upper
/// bound is therefore 600 intervals (60 s by default); the lower stays at 2 (200 ms).
pub const MIN_SESSION_TIMEOUT_PING_INTERVALS: u32 = 2;
pub const MAX_SESSION_TIMEOUT_PING_INTERVALS: u32 = 600;
/// Live sessions the group holds at once; more `CreateSession`s are refused.
pub const MAX_SESSIONS: usize = 64 * 1024;

// Watches.

/// Watches one client connection may hold on a node; more are refused.
pub const MAX_WATCHES_PER_CONNECTION: usize = 64 * 1024;
/// Watches one re-registration (after a move) may carry.
pub const MAX_REWATCH_PATHS: usize = MAX_WATCHES_PER_CONNECTION;
