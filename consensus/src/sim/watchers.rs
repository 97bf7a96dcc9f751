//! Simulated watchers: each keeps a one-shot watch on one of the workload's keys, re-setting
//! it after every event, reads the key now and then without a watch, and moves to another
//! node (re-registering with the zxid it last saw) when its node restarts or stops
//! answering.
//!
//! Owns the watcher's state and its checks, which are the issue's: a watch fires once per
//! registered change (never twice, never without a watch), events come in zxid order and
//! after the state the watch was set on, and no read shows a change before the event for it
//! arrived (the node must send the event first on the connection).

use crate::types::{ClientId, RequestId, Zxid};
use crate::watch::{EventType, WatchEvent, WatchKind};
use crate::zab::{ClientError, ClientOp, ClientReply, Response};

/// Watchers' ids start here, apart from the workload's and the session clients'. Each
/// connection of a watcher is a client of its own (as a real node numbers connections):
/// the low 16 bits say which watcher, the bits above them which of its connections.
pub const WATCH_CLIENT_BASE: u64 = 2 << 20;
const WATCHER_BITS: u64 = 16;

/// The watcher a connection's client id belongs to.
pub fn watcher_of(client: ClientId) -> usize {
    ((client.0 - WATCH_CLIENT_BASE) & ((1 << WATCHER_BITS) - 1)) as usize
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// `exists` that sets the watch.
    Set,
    Sync,
    Rewatch,
    /// `exists` without a watch.
    Peek,
}

/// What a read of the key showed: whether it exists, and its last change.
type Seen = Option<Zxid>;

#[derive(Debug)]
pub struct Watcher {
    index: u64,
    /// Connections opened so far (the current one is the last).
    connections: u64,
    pub path: String,
    /// The node it talks to and that node's incarnation when it connected.
    pub node: usize,
    pub incarnation: u64,
    /// The state the current watch was set on, and the kind the node set.
    watch: Option<(Seen, WatchKind)>,
    /// The watch must be re-registered on the current node before anything else.
    moved: bool,
    /// The connection broke: the world must pick another node before the next request.
    pub relocate: bool,
    last_zxid: Zxid,
    last_event: Zxid,
    pending: Option<(RequestId, u64, Asked)>,
    next_request: u64,
    pub events: u32,
    pub problems: Vec<String>,
}

fn seen_of(r: &Response) -> Option<Seen> {
    match r {
        Response::Exists(stat) => Some(stat.map(|s| s.mzxid.max(s.czxid))),
        _ => None,
    }
}

impl Watcher {
    pub fn new(index: usize, node: usize, incarnation: u64, path: String) -> Watcher {
        Watcher {
            index: index as u64,
            connections: 0,
            path,
            node,
            incarnation,
            watch: None,
            moved: false,
            relocate: false,
            last_zxid: Zxid::ZERO,
            last_event: Zxid::ZERO,
            pending: None,
            next_request: 0,
            events: 0,
            problems: Vec::new(),
        }
    }

    /// The client id of the current connection.
    pub fn id(&self) -> ClientId {
        ClientId(WATCH_CLIENT_BASE + (self.connections << WATCHER_BITS) + self.index)
    }

    /// A new connection (to `node`).
    pub fn reconnect(&mut self, node: usize, incarnation: u64) {
        self.connections += 1;
        self.node = node;
        self.incarnation = incarnation;
    }

    /// The connection is gone (its node restarted, or it stopped answering): move.
    pub fn broke(&mut self) {
        self.pending = None;
        self.moved = true;
        self.relocate = true;
    }

    pub fn wake(
        &mut self,
        now_us: u64,
        patience_us: u64,
        peek: bool,
    ) -> Option<(RequestId, ClientOp)> {
        if let Some((_, sent, _)) = self.pending {
            if now_us.saturating_sub(sent) < patience_us {
                return None;
            }
            self.broke();
        }
        // A new connection first syncs, so the node is not behind what this client saw.
        let (asked, op) = if self.moved {
            (Asked::Sync, ClientOp::Sync)
        } else if self.watch.is_none() {
            let op = ClientOp::Watch {
                path: self.path.clone(),
                kind: WatchKind::Exist,
            };
            (Asked::Set, op)
        } else if peek {
            let op = ClientOp::Exists {
                path: self.path.clone(),
            };
            (Asked::Peek, op)
        } else {
            return None;
        };
        Some(self.send(now_us, asked, op))
    }

    fn send(&mut self, now_us: u64, asked: Asked, op: ClientOp) -> (RequestId, ClientOp) {
        self.next_request += 1;
        let request = RequestId(self.next_request);
        self.pending = Some((request, now_us, asked));
        (request, op)
    }

    pub fn on_event(&mut self, event: WatchEvent) {
        self.last_zxid = self.last_zxid.max(event.zxid);
        let Some((set_on, _)) = self.watch.take() else {
            self.problems.push(format!(
                "{}: event {event:?} without a watch set (fired twice?)",
                self.path
            ));
            return;
        };
        self.events += 1;
        if event.path != self.path {
            self.problems
                .push(format!("{}: event for another path: {event:?}", self.path));
        }
        if event.zxid <= self.last_event || set_on.is_some_and(|z| event.zxid <= z) {
            self.problems.push(format!(
                "{}: event {event:?} not after the watched state {set_on:?} / last event {}",
                self.path, self.last_event
            ));
        }
        let fits = matches!(
            (event.kind, set_on),
            (EventType::NodeCreated, None)
                | (EventType::NodeDataChanged | EventType::NodeDeleted, Some(_))
        );
        if !fits {
            self.problems.push(format!(
                "{}: event {event:?} does not fit the watched state {set_on:?}",
                self.path
            ));
        }
        self.last_event = event.zxid;
    }

    /// A reply; a follow-up (the re-registration after the sync) comes back to send now.
    pub fn on_reply(&mut self, now_us: u64, reply: ClientReply) -> Option<(RequestId, ClientOp)> {
        let (request, _, asked) = self.pending?;
        if reply.request != request {
            return None;
        }
        self.pending = None;
        // Only a connection holding the watches vouches for the events up to its stamp: a
        // new one before its re-registration does not (the real client found that way).
        if !self.moved || asked == Asked::Rewatch {
            self.last_zxid = self.last_zxid.max(reply.zxid);
        }
        match (asked, reply.result) {
            (_, Err(ClientError::NotReady | ClientError::ConnectionLoss)) => self.broke(),
            (Asked::Set, Ok(r)) => {
                if let Some(seen) = seen_of(&r) {
                    let kind = if seen.is_some() {
                        WatchKind::Data
                    } else {
                        WatchKind::Exist
                    };
                    self.watch = Some((seen, kind));
                }
            }
            (Asked::Sync, Ok(Response::Synced { .. })) => {
                if let Some((_, kind)) = self.watch {
                    let op = ClientOp::SetWatches {
                        since: self.last_zxid,
                        watches: vec![(kind, self.path.clone())],
                    };
                    return Some(self.send(now_us, Asked::Rewatch, op));
                }
                self.moved = false;
            }
            (Asked::Rewatch, Ok(Response::Watching)) => self.moved = false,
            (Asked::Peek, Ok(r)) => {
                // With the watch still set, the key must look as it did when it was set: a
                // change would have sent the event first.
                if let (Some(seen), Some((set_on, _))) = (seen_of(&r), self.watch)
                    && seen != set_on
                {
                    self.problems.push(format!(
                        "{}: read shows {seen:?} but the watch set on {set_on:?} has not fired",
                        self.path
                    ));
                }
            }
            (_, _) => self.broke(),
        }
        None
    }
}
