//! The deterministic simulator: N nodes and clients over a simulated network and disk, with
//! crashes, restarts and partitions, in simulated time, all drawn from one seed.
//!
//! Faults: packets dropped, duplicated, delayed and reordered (a TCP-like sequencer turns
//! them into broken connections); partitions and heals; crashes with unsynced bytes lost and
//! the last write torn; whole-group power loss; process pauses (50-800 ms, missed ticks
//! delivered on resume); per-seed disk speed and protocol tuning (snapshot cadence, DIFF
//! retention, back-pressure, timeouts). `--trace` prints every input and output.
//!
//! Owns the event loop and the fault schedule. Every run is a pure function of
//! `(seed, SimOptions)`: a failing seed reproduces with
//! `cargo run -p corebus-consensus --features sim --bin consensus-sim -- --seed N`.
//! Checkers: [`invariants`] (one leader per epoch, one committed order, trees equal the
//! replay), [`linearizability`] (per-key histories of the clients' writes and CAS), plus
//! liveness after the faults stop (every node converges to the same committed history).

pub mod disk;
pub mod invariants;
pub mod linearizability;
pub mod network;
pub mod report;
pub mod sessions;
pub mod watchers;
pub mod workload;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use self::disk::SimFiles;
use self::invariants::Invariants;
use self::linearizability::Verdict;
use self::network::{Arrival, NetFaults, Network, Packet};
pub use self::report::{Coverage, Report, repro_command};
use self::sessions::{SESSION_CLIENT_BASE, SESSION_TIMEOUT_TICKS, SessionClient};
use self::watchers::{WATCH_CLIENT_BASE, Watcher, watcher_of};
use self::workload::{Client, KEYS, Observed};
use crate::store::LogStore;
use crate::types::{NodeId, RequestId};
use crate::zab::{
    ClientReply, ClientRequest, Config, DiskOp, Fault, Input, Node, Output, PeerMessage,
};

/// Log segments roll small in the simulator so rolling, purging and torn segments happen.
const SIM_SEGMENT_BYTES: u64 = 2048;
const TICK_US: u64 = 10_000;
const CLIENT_TIMEOUT_US: u64 = 1_500_000;

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub nodes: usize,
    pub clients: usize,
    /// Clients holding a session and an ephemeral node.
    pub session_clients: usize,
    /// Clients keeping a one-shot watch on a key.
    pub watchers: usize,
    pub ops_per_client: u32,
    /// Faults are injected during this much simulated time; then the network heals, every
    /// node restarts and the group must converge within `quiet_ms`.
    pub active_ms: u64,
    pub quiet_ms: u64,
    pub fault: Fault,
    /// Print every input and output to stderr (for replaying one seed).
    pub trace: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: 3,
            clients: 3,
            session_clients: 2,
            watchers: 2,
            ops_per_client: 20,
            active_ms: 3_000,
            quiet_ms: 3_000,
            fault: Fault::None,
            trace: false,
        }
    }
}

#[derive(Debug)]
enum WatcherFrame {
    Reply(ClientReply),
    Event(crate::watch::WatchEvent),
}

#[derive(Debug)]
enum Event {
    Tick {
        node: usize,
        incarnation: u64,
        /// When this tick was due; after a pause the node catches up on the missed ticks.
        due_us: u64,
    },
    Packet {
        from: usize,
        to: usize,
        packet: Packet,
        msg: PeerMessage,
    },
    PeerDown {
        node: usize,
        peer: usize,
        incarnation: u64,
    },
    SyncDone {
        node: usize,
        incarnation: u64,
        generation: u64,
        through: crate::types::Zxid,
    },
    ToNode {
        node: usize,
        req: ClientRequest,
    },
    ToClient {
        client: usize,
        reply: ClientReply,
    },
    ClientWake {
        client: usize,
    },
    ClientTimeout {
        client: usize,
        request: RequestId,
    },
    SessionWake {
        client: usize,
    },
    WatchWake {
        watcher: usize,
    },
    /// A frame from `node` (in that incarnation) to a watcher, in connection order.
    ToWatcher {
        watcher: usize,
        node: usize,
        incarnation: u64,
        frame: WatcherFrame,
    },
    /// A watcher's connection to `node` closed.
    Gone {
        node: usize,
        client: crate::types::ClientId,
    },
    /// A dead session client's session must be gone from every serving node by now.
    SessionGone {
        client: usize,
    },
    Restart {
        node: usize,
    },
    Heal,
    Chaos,
    EndOfFaults,
}

struct Slot {
    node: Option<Node>,
    store: Option<LogStore<SimFiles>>,
    /// The files while the node is down.
    down_files: Option<SimFiles>,
    incarnation: u64,
    /// The process is stalled (GC pause, swapped out, stopped VM) until then: it handles
    /// nothing, and what arrives meanwhile waits.
    paused_until_us: u64,
}

struct World {
    opts: SimOptions,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: std::collections::HashMap<u64, Event>,
    net: Network,
    ids: Vec<NodeId>,
    slots: Vec<Slot>,
    clients: Vec<Client>,
    sessions: Vec<SessionClient>,
    watchers: Vec<Watcher>,
    /// When the last frame to each watcher arrives: frames of one connection keep their order.
    watcher_fifo_us: Vec<u64>,
    /// When the faults stop (the session checks are about the quiet time after it).
    end_faults_us: u64,
    seen: Observed,
    inv: Invariants,
    faults_on: bool,
    /// Slowest fsync of this run (disks differ per seed).
    max_fsync_us: u64,
    tuning: Tuning,
    report: Report,
}

/// Protocol settings drawn per seed, so sweeps also cover snapshot cadence, DIFF-versus-SNAP
/// retention, back-pressure and timeouts (every node of a run shares them, as in production).
#[derive(Debug, Clone, Copy)]
struct Tuning {
    finalize_ticks: u32,
    sync_limit_ticks: u32,
    snapshot_every_txns: u64,
    retained_txns: usize,
    max_outstanding: u32,
}

impl Tuning {
    fn draw(rng: &mut impl Rng) -> Tuning {
        Tuning {
            finalize_ticks: rng.random_range(0..4),
            sync_limit_ticks: rng.random_range(8..25),
            snapshot_every_txns: rng.random_range(5..60),
            retained_txns: rng.random_range(0..20),
            max_outstanding: rng.random_range(2..100),
        }
    }

    fn config(&self, id: NodeId, members: Vec<NodeId>, fault: Fault) -> Config {
        let mut cfg = Config::new(id, members);
        cfg.election_resend_ticks = 10;
        cfg.election_finalize_ticks = self.finalize_ticks;
        cfg.init_limit_ticks = 2 * self.sync_limit_ticks;
        cfg.sync_limit_ticks = self.sync_limit_ticks;
        cfg.ping_interval_ticks = 3;
        cfg.snapshot_every_txns = self.snapshot_every_txns;
        cfg.retained_txns = self.retained_txns;
        cfg.max_outstanding_proposals = self.max_outstanding;
        cfg.fault = fault;
        cfg
    }
}

impl World {
    fn schedule(&mut self, at: u64, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, e);
    }

    fn violation(&mut self, v: String) {
        self.report.violations.push(v);
    }

    fn boot(&mut self, i: usize) {
        let files = self.slots[i].down_files.take().unwrap_or_default();
        let (store, recovered) = match LogStore::recover(files, SIM_SEGMENT_BYTES) {
            Ok(r) => r,
            Err(e) => {
                self.violation(format!("{} cannot recover: {e}", self.ids[i]));
                return;
            }
        };
        let id = self.ids[i];
        if store.cut_torn_tail() {
            self.report.coverage.torn_tails_cut += 1;
        }
        self.inv.reset(id, recovered.tree.applied(), true);
        let k = self.inv.applied_count(id);
        if let Some(problem) = self.inv.tree_matches(id, &recovered.tree, k) {
            self.violation(format!("after recovery: {problem}"));
        }
        let mut node = Node::new(
            self.tuning.config(id, self.ids.clone(), self.opts.fault),
            recovered,
        );
        let mut out = Vec::new();
        node.start(&mut out);
        if let Some(epoch) = node.leading_epoch() {
            // A group of one leads from its first step.
            self.inv.leading(id, epoch);
            self.report.coverage.leaders_established += 1;
        }
        let slot = &mut self.slots[i];
        slot.incarnation += 1;
        slot.node = Some(node);
        slot.store = Some(store);
        let incarnation = slot.incarnation;
        let offset = self.rng.random_range(0..TICK_US);
        self.schedule(
            self.now + offset,
            Event::Tick {
                node: i,
                incarnation,
                due_us: self.now + offset,
            },
        );
        self.outputs(i, out);
    }

    fn crash(&mut self, i: usize, power_loss: bool) {
        let slot = &mut self.slots[i];
        if slot.node.take().is_none() {
            return;
        }
        self.report.crashes += 1;
        let mut files = slot
            .store
            .take()
            .map(LogStore::into_files)
            .unwrap_or_default();
        files.crash(&mut self.rng, power_loss);
        self.slots[i].down_files = Some(files);
        self.net.reset_node(self.ids[i]);
        // A killed process's peers see a reset at once half of the time; else they time out.
        for p in 0..self.ids.len() {
            if p != i && self.rng.random_bool(0.5) {
                let incarnation = self.slots[p].incarnation;
                let at = self.now + 200;
                self.schedule(
                    at,
                    Event::PeerDown {
                        node: p,
                        peer: i,
                        incarnation,
                    },
                );
            }
        }
        let back = self.now + self.rng.random_range(100_000..1_500_000);
        self.schedule(back, Event::Restart { node: i });
    }

    fn step(&mut self, i: usize, input: Input) {
        let Some(node) = self.slots[i].node.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        let was_leading = node.leading_epoch();
        let traced = self.opts.trace.then(|| format!("{input:?}"));
        node.step(input, &mut out);
        if let Some(input) = traced
            && !(matches!(input.as_str(), "Tick") && out.is_empty())
        {
            let id = self.ids[i];
            eprintln!("{:>9} {id} {:?} <- {input}", self.now, node.role());
            for o in &out {
                let o = format!("{o:?}");
                eprintln!("{:>9} {id}    -> {}", self.now, &o[..o.len().min(300)]);
            }
        }
        if let Some(epoch) = node.leading_epoch() {
            self.inv.leading(self.ids[i], epoch);
            if was_leading != Some(epoch) {
                self.report.coverage.leaders_established += 1;
            }
        }
        self.outputs(i, out);
    }

    fn outputs(&mut self, i: usize, out: Vec<Output>) {
        let id = self.ids[i];
        for o in out {
            match o {
                Output::Send { to, msg } => {
                    let Some(j) = self.ids.iter().position(|x| *x == to) else {
                        continue;
                    };
                    let packets = self.net.send(&mut self.rng, self.now, id, to);
                    for packet in packets {
                        self.schedule(
                            packet.at_us,
                            Event::Packet {
                                from: i,
                                to: j,
                                packet,
                                msg: msg.clone(),
                            },
                        );
                    }
                }
                Output::Disk(op) => self.disk(i, op),
                Output::Reply(reply) if reply.client.0 >= WATCH_CLIENT_BASE => {
                    let w = watcher_of(reply.client);
                    self.send_to_watcher(w, i, WatcherFrame::Reply(reply));
                }
                Output::Event { client, event } if client.0 >= WATCH_CLIENT_BASE => {
                    let w = watcher_of(client);
                    self.send_to_watcher(w, i, WatcherFrame::Event(event));
                }
                Output::Reply(reply) => {
                    let client = reply.client.0 as usize;
                    let at = self.now + self.rng.random_range(100..500);
                    self.schedule(at, Event::ToClient { client, reply });
                }
                Output::Applied { entry } => self.inv.applied(id, &entry),
                Output::Installed { zxid } => {
                    self.report.coverage.snap_syncs += 1;
                    self.inv.reset(id, zxid, false);
                }
                // Only watchers set watches.
                Output::Event { .. } => {}
            }
        }
    }

    fn disk(&mut self, i: usize, op: DiskOp) {
        let Some(store) = self.slots[i].store.as_mut() else {
            return;
        };
        let result = match op {
            DiskOp::Append(entry) => store.append(&entry),
            DiskOp::Sync {
                generation,
                through,
            } => {
                let incarnation = self.slots[i].incarnation;
                let at = self.now + self.rng.random_range(50..self.max_fsync_us);
                self.schedule(
                    at,
                    Event::SyncDone {
                        node: i,
                        incarnation,
                        generation,
                        through,
                    },
                );
                Ok(())
            }
            DiskOp::Truncate { after } => {
                self.report.coverage.truncations += 1;
                store.truncate_after(after)
            }
            DiskOp::Snapshot(tree) => {
                self.report.coverage.snapshots_written += 1;
                store.write_snapshot(&tree)
            }
            DiskOp::ResetToSnapshot(tree) => store.reset_to_snapshot(&tree),
            DiskOp::SetEpochs(e) => store.set_epochs(e),
        };
        if let Err(e) = result {
            self.violation(format!("{}: store error {e}", self.ids[i]));
        }
    }

    fn client_go(&mut self, c: usize) {
        if !self.faults_on && self.now > self.opts.active_ms * 1000 {
            return;
        }
        let Some(req) = self.clients[c].next(&mut self.rng, self.now, &self.seen) else {
            return;
        };
        let node = self.clients[c].node;
        let at = self.now + self.rng.random_range(100..500);
        let request = req.request;
        self.schedule(at, Event::ToNode { node, req });
        self.schedule(
            self.now + CLIENT_TIMEOUT_US,
            Event::ClientTimeout { client: c, request },
        );
    }

    fn chaos(&mut self) {
        let n = self.ids.len();
        match self.rng.random_range(0..100) {
            0..30 => {
                let i = self.rng.random_range(0..n);
                self.crash(i, false);
            }
            30..50 if n > 1 => {
                let size = self.rng.random_range(1..n);
                let mut side: Vec<NodeId> = self.ids.clone();
                while side.len() > size {
                    let k = self.rng.random_range(0..side.len());
                    side.remove(k);
                }
                self.net.partition(&side, &self.ids);
                self.report.partitions += 1;
                let heal = self.now + self.rng.random_range(200_000..2_000_000);
                self.schedule(heal, Event::Heal);
            }
            50..60 => self.net.heal(),
            64..72 => {
                let i = self.rng.random_range(0..n);
                let pause = self.rng.random_range(50_000..800_000);
                self.slots[i].paused_until_us = self.now + pause;
                self.report.coverage.pauses += 1;
            }
            // Power loss of the whole group at once: only what was synced survives anywhere.
            60..64 => {
                self.report.coverage.power_losses += 1;
                for i in 0..n {
                    self.crash(i, true);
                }
            }
            _ => {}
        }
        let next = self.now + self.rng.random_range(50_000..400_000);
        self.schedule(next, Event::Chaos);
    }

    /// The node an event is for, if it is one a stalled process would not handle yet.
    fn target(e: &Event) -> Option<usize> {
        match e {
            Event::Tick { node, .. }
            | Event::PeerDown { node, .. }
            | Event::SyncDone { node, .. }
            | Event::Gone { node, .. }
            | Event::ToNode { node, .. } => Some(*node),
            Event::Packet { to, .. } => Some(*to),
            _ => None,
        }
    }

    fn handle(&mut self, e: Event) {
        if let Some(node) = Self::target(&e) {
            let until = self.slots[node].paused_until_us;
            if self.now < until {
                // Re-queued in arrival order (sequence numbers keep increasing).
                self.schedule(until, e);
                return;
            }
        }
        match e {
            Event::Tick {
                node,
                incarnation,
                due_us,
            } => {
                if self.slots[node].incarnation == incarnation && self.slots[node].node.is_some() {
                    let missed = (self.now - due_us) / TICK_US + 1;
                    for _ in 0..missed {
                        self.step(node, Input::Tick);
                    }
                    let due_us = due_us + missed * TICK_US;
                    self.schedule(
                        due_us,
                        Event::Tick {
                            node,
                            incarnation,
                            due_us,
                        },
                    );
                }
            }
            Event::Packet {
                from,
                to,
                packet,
                msg,
            } => {
                if self.slots[to].node.is_none() {
                    return;
                }
                match self.net.arrive(self.ids[from], self.ids[to], packet) {
                    Arrival::Deliver => self.step(
                        to,
                        Input::Peer {
                            from: self.ids[from],
                            msg,
                        },
                    ),
                    Arrival::Discard => {}
                    Arrival::Broken => {
                        self.report.coverage.connection_breaks += 1;
                        self.step(
                            to,
                            Input::PeerDown {
                                peer: self.ids[from],
                            },
                        );
                        self.step(from, Input::PeerDown { peer: self.ids[to] });
                    }
                }
            }
            Event::PeerDown {
                node,
                peer,
                incarnation,
            } => {
                if self.slots[node].incarnation == incarnation {
                    self.step(
                        node,
                        Input::PeerDown {
                            peer: self.ids[peer],
                        },
                    );
                }
            }
            Event::SyncDone {
                node,
                incarnation,
                generation,
                through,
            } => {
                if self.slots[node].incarnation != incarnation {
                    return;
                }
                if let Some(store) = self.slots[node].store.as_mut()
                    && let Err(e) = store.sync()
                {
                    self.violation(format!("sync failed: {e}"));
                }
                self.step(
                    node,
                    Input::Synced {
                        generation,
                        through,
                    },
                );
            }
            Event::ToNode { node, req } => self.step(node, Input::Client(req)),
            Event::ToClient { client, reply } if client as u64 >= SESSION_CLIENT_BASE => {
                self.session_reply(client - SESSION_CLIENT_BASE as usize, reply)
            }
            Event::ToClient { client, reply } => {
                let moved = self.clients[client].on_reply(self.now, reply, &mut self.seen);
                self.after_client(client, moved);
            }
            Event::SessionWake { client } => self.session_wake(client),
            Event::WatchWake { watcher } => self.watch_wake(watcher),
            Event::ToWatcher {
                watcher,
                node,
                incarnation,
                frame,
            } => self.watcher_frame(watcher, node, incarnation, frame),
            Event::Gone { node, client } => self.step(node, Input::ClientGone { client }),
            Event::SessionGone { client } => self.session_gone(client),
            Event::ClientTimeout { client, request } => {
                if self.clients[client].give_up(request, &mut self.seen) {
                    self.after_client(client, true);
                }
            }
            Event::ClientWake { client } => self.client_go(client),
            Event::Restart { node } => {
                if self.slots[node].node.is_none() {
                    self.boot(node);
                }
            }
            Event::Heal => self.net.heal(),
            Event::Chaos => {
                if self.faults_on {
                    self.chaos();
                }
            }
            Event::EndOfFaults => {
                self.faults_on = false;
                self.net = Network::new(NetFaults {
                    drop: 0.0,
                    duplicate: 0.0,
                    reorder: 0.0,
                    min_delay_us: 100,
                    max_delay_us: 2_000,
                });
                for i in 0..self.ids.len() {
                    if self.slots[i].node.is_none() {
                        self.boot(i);
                    } else {
                        // The new network has fresh connections: old ones are gone.
                        for p in 0..self.ids.len() {
                            if p != i {
                                self.step(i, Input::PeerDown { peer: self.ids[p] });
                            }
                        }
                    }
                }
            }
        }
    }

    fn send_to_watcher(&mut self, w: usize, node: usize, frame: WatcherFrame) {
        let at = (self.now + self.rng.random_range(100..500)).max(self.watcher_fifo_us[w] + 1);
        self.watcher_fifo_us[w] = at;
        let incarnation = self.slots[node].incarnation;
        let e = Event::ToWatcher {
            watcher: w,
            node,
            incarnation,
            frame,
        };
        self.schedule(at, e);
    }

    /// Closes a watcher's connection and opens one to a node drawn at random.
    fn watcher_move(&mut self, w: usize) {
        let old = self.watchers[w].node;
        let client = self.watchers[w].id();
        self.schedule(self.now + 100, Event::Gone { node: old, client });
        let node = self.rng.random_range(0..self.ids.len());
        let incarnation = self.slots[node].incarnation;
        self.watchers[w].reconnect(node, incarnation);
        self.report.coverage.watcher_moves += 1;
    }

    fn watch_wake(&mut self, w: usize) {
        let node = self.watchers[w].node;
        if self.slots[node].node.is_none()
            || self.slots[node].incarnation != self.watchers[w].incarnation
        {
            // A restarted node's connections are gone, and its watches with them.
            self.watchers[w].broke();
        }
        let peek = self.rng.random_bool(0.5);
        let send = self.watchers[w].wake(self.now, 500_000, peek);
        self.watcher_relocate(w);
        if let Some((request, op)) = send {
            self.watcher_send(w, request, op);
        }
        let at = self.now + self.rng.random_range(5_000..50_000);
        self.schedule(at, Event::WatchWake { watcher: w });
    }

    fn watcher_relocate(&mut self, w: usize) {
        if std::mem::take(&mut self.watchers[w].relocate) {
            self.watcher_move(w);
        }
    }

    fn watcher_send(&mut self, w: usize, request: RequestId, op: crate::zab::ClientOp) {
        let node = self.watchers[w].node;
        let req = ClientRequest {
            client: self.watchers[w].id(),
            request,
            op,
        };
        let at = self.now + self.rng.random_range(100..500);
        self.schedule(at, Event::ToNode { node, req });
    }

    fn watcher_frame(&mut self, w: usize, node: usize, incarnation: u64, frame: WatcherFrame) {
        let here = &self.watchers[w];
        if here.node != node || here.incarnation != incarnation {
            // From a connection it has left.
            return;
        }
        match frame {
            WatcherFrame::Event(e) => {
                self.report.coverage.watch_events += 1;
                self.watchers[w].on_event(e);
            }
            WatcherFrame::Reply(r) => {
                let follow = self.watchers[w].on_reply(self.now, r);
                self.watcher_relocate(w);
                if let Some((request, op)) = follow {
                    self.watcher_send(w, request, op);
                }
            }
        }
    }

    fn session_timeout_us(&self) -> u64 {
        u64::from(SESSION_TIMEOUT_TICKS) * TICK_US
    }

    /// The documented bound on a dead client's ephemeral lifetime ([`crate::session`]):
    /// timeout + a ping interval + a tick + a commit, plus, as the faults have just stopped
    /// and every node may be electing, the silence limit and the establishment limit.
    fn session_bound_us(&self) -> u64 {
        let ticks = u64::from(SESSION_TIMEOUT_TICKS) + 3 + 1;
        ticks * TICK_US + self.election_allowance_us() + 50_000 + self.max_fsync_us * 2
    }

    /// Time for the group to notice a lost leader and establish a new one (the silence
    /// limit, then at most the establishment limit, which is twice it here).
    fn election_allowance_us(&self) -> u64 {
        u64::from(self.tuning.sync_limit_ticks) * 3 * TICK_US
    }

    fn session_send(&mut self, c: usize, request: RequestId, op: crate::zab::ClientOp) {
        let node = self.sessions[c].node;
        let req = ClientRequest {
            client: self.sessions[c].id,
            request,
            op,
        };
        let at = self.now + self.rng.random_range(100..500);
        self.schedule(at, Event::ToNode { node, req });
    }

    fn session_wake(&mut self, c: usize) {
        let timeout_us = self.session_timeout_us();
        let s = &mut self.sessions[c];
        if s.dead {
            return;
        }
        if self.now >= s.dies_at_us {
            s.dead = true;
            let at = self.now + self.session_bound_us();
            self.schedule(at, Event::SessionGone { client: c });
            return;
        }
        let (moved, send) = s.wake(self.now, timeout_us);
        if moved {
            self.sessions[c].node = self.rng.random_range(0..self.ids.len());
        }
        if let Some((request, op)) = send {
            self.session_send(c, request, op);
        }
        let at = self.now + timeout_us / 6;
        self.schedule(at, Event::SessionWake { client: c });
    }

    fn session_reply(&mut self, c: usize, reply: ClientReply) {
        let (outcome, follow) = self.sessions[c].on_reply(self.now, reply);
        if outcome.moved {
            self.sessions[c].node = self.rng.random_range(0..self.ids.len());
        }
        // Once the faults have stopped and the group has had time to settle (re-elect, and
        // give every session a fresh timeout), a live client must keep its session.
        let settled = self.end_faults_us + self.session_bound_us() + self.session_timeout_us();
        // A session opened once the group had re-elected after the faults lives in quiet
        // time only.
        let quiet_from = self.end_faults_us + self.election_allowance_us();
        let quiet_session = self.sessions[c]
            .opened_at_us
            .is_some_and(|at| at > quiet_from);
        let cov = &mut self.report.coverage;
        cov.sessions_opened += u32::from(outcome.opened);
        cov.session_moves += u32::from(outcome.reattached);
        cov.expired_under_faults += u32::from(outcome.expired && self.now <= settled);
        if outcome.expired && !self.sessions[c].dead && (self.now > settled || quiet_session) {
            let path = self.sessions[c].path();
            self.violation(format!(
                "session client {path} expired at {} us although alive after the faults stopped",
                self.now
            ));
        }
        if let Some((request, op)) = follow {
            self.session_send(c, request, op);
        }
    }

    fn session_gone(&mut self, c: usize) {
        let Some(session) = self.sessions[c].session else {
            return;
        };
        self.report.coverage.dead_sessions_checked += 1;
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(node) = &slot.node
                && node.is_serving()
                && node.tree().session(session).is_some()
            {
                let v = format!(
                    "{}: the session of dead client {} still lives {} us after its death",
                    self.ids[i],
                    self.sessions[c].path(),
                    self.session_bound_us()
                );
                self.violation(v);
                return;
            }
        }
    }

    /// Every ephemeral node has a live owner, and every live session client's acknowledged
    /// ephemeral node exists while its session does.
    fn check_ephemerals(&mut self, i: usize) {
        let Some(node) = &self.slots[i].node else {
            return;
        };
        let tree = node.tree();
        let mut problems = Vec::new();
        for (path, n) in tree.iter() {
            if let Some(owner) = n.stat.ephemeral_owner
                && tree.session(owner).is_none()
            {
                problems.push(format!(
                    "{}: ephemeral {path} outlived its session",
                    self.ids[i]
                ));
            }
        }
        for s in &self.sessions {
            if let Some(session) = s.session
                && s.created
                && tree.session(session).is_some()
                && tree.exists(&s.path()).ok().flatten().is_none()
            {
                problems.push(format!(
                    "{}: session of {} alive without its ephemeral node",
                    self.ids[i],
                    s.path()
                ));
            }
        }
        self.report.violations.append(&mut problems);
    }

    fn after_client(&mut self, c: usize, moved: bool) {
        if moved {
            self.clients[c].node = self.rng.random_range(0..self.ids.len());
        }
        if !self.clients[c].busy() {
            // At least 1 ms between a reply and the next request keeps real-time order strict.
            let at = self.now + self.rng.random_range(1_000..20_000);
            self.schedule(at, Event::ClientWake { client: c });
        }
    }

    fn finish(&mut self) {
        let last = self.inv.committed().len();
        let mut converged = true;
        for i in 0..self.ids.len() {
            let id = self.ids[i];
            let Some(node) = self.slots[i].node.as_ref() else {
                converged = false;
                continue;
            };
            if !node.is_serving() || self.inv.applied_count(id) != last {
                converged = false;
            }
            if let Some(problem) =
                self.inv
                    .tree_matches(id, node.tree(), self.inv.applied_count(id))
            {
                self.report.violations.push(problem);
            }
            self.check_ephemerals(i);
        }
        // A client alive to the end holds its session on every node.
        for s in &self.sessions {
            if let Some(session) = s.session
                && !s.dead
                && !s.expired
                && converged
                && self.slots.iter().any(|slot| {
                    slot.node
                        .as_ref()
                        .is_some_and(|n| n.tree().session(session).is_none())
                })
            {
                self.report.violations.push(format!(
                    "live session client {} lost its session without being told",
                    s.path()
                ));
            }
        }
        if !converged {
            let states: Vec<String> = self
                .slots
                .iter()
                .zip(&self.ids)
                .map(|(s, id)| match &s.node {
                    Some(n) => format!(
                        "{id}: {:?} serving={} committed={} last={} applied#{}",
                        n.role(),
                        n.is_serving(),
                        n.committed(),
                        n.last_zxid(),
                        self.inv.applied_count(*id)
                    ),
                    None => format!("{id}: down"),
                })
                .collect();
            self.report.violations.push(format!(
                "no convergence {} ms after the faults stopped ({last} committed): {}",
                self.opts.quiet_ms,
                states.join("; ")
            ));
        }
        for k in 0..KEYS {
            match linearizability::check(&self.seen.per_key[k], None) {
                Verdict::Linearizable => {}
                Verdict::GaveUp => self.report.checker_gave_up += 1,
                Verdict::NotLinearizable => self.report.violations.push(format!(
                    "history of /k{k} is not linearizable: {:?}",
                    self.seen.per_key[k]
                )),
            }
        }
        for w in &mut self.watchers {
            self.report.violations.append(&mut w.problems);
        }
        self.report.violations.append(&mut self.seen.problems);
        self.report.violations.append(&mut self.inv.violations);
        self.report.committed = last;
        self.report.acknowledged_writes = self.seen.acknowledged_writes;
        self.report.unknown_writes = self.seen.unknown_writes;
    }
}

/// Runs one seeded simulation and reports what the checkers found.
pub fn run(seed: u64, opts: &SimOptions) -> Report {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let faults = NetFaults {
        drop: rng.random_range(0.0..0.02),
        duplicate: rng.random_range(0.0..0.02),
        reorder: rng.random_range(0.0..0.02),
        min_delay_us: 100,
        max_delay_us: rng.random_range(500..5_000),
    };
    let ids: Vec<NodeId> = (1..=opts.nodes as u64).map(NodeId).collect();
    let slots = ids
        .iter()
        .map(|_| Slot {
            node: None,
            store: None,
            down_files: None,
            incarnation: 0,
            paused_until_us: 0,
        })
        .collect();
    let clients = (0..opts.clients)
        .map(|c| Client::new(c, c % opts.nodes, opts.ops_per_client))
        .collect();
    let tuning = Tuning::draw(&mut rng);
    let end_faults_us = opts.active_ms * 1000;
    let sessions = (0..opts.session_clients)
        .map(|c| {
            // Even clients start under the faults; half of them die in the quiet time (their
            // bound is checked). Odd ones start in the quiet time and live to the end (they
            // must never be expired).
            let dies_at_us = if c % 2 == 0 && rng.random_bool(0.5) {
                end_faults_us + rng.random_range(500_000..1_000_000)
            } else {
                u64::MAX
            };
            SessionClient::new(c, c % opts.nodes, rng.random(), dies_at_us)
        })
        .collect();
    let watchers = (0..opts.watchers)
        .map(|k| Watcher::new(k, k % opts.nodes, 1, format!("/k{}", k % KEYS)))
        .collect();
    let mut w = World {
        opts: opts.clone(),
        rng,
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        events: std::collections::HashMap::new(),
        net: Network::new(faults),
        ids,
        slots,
        clients,
        sessions,
        watchers,
        watcher_fifo_us: vec![0; opts.watchers],
        end_faults_us,
        seen: Observed::default(),
        inv: Invariants::default(),
        faults_on: true,
        max_fsync_us: 0,
        tuning,
        report: Report {
            seed,
            ..Report::default()
        },
    };
    w.max_fsync_us = w.rng.random_range(1_000..20_000);
    for i in 0..opts.nodes {
        w.boot(i);
    }
    for c in 0..opts.clients {
        let at = w.rng.random_range(100_000..300_000);
        w.schedule(at, Event::ClientWake { client: c });
    }
    let end_faults = opts.active_ms * 1000;
    for k in 0..opts.watchers {
        let at = w.rng.random_range(100_000..300_000);
        w.schedule(at, Event::WatchWake { watcher: k });
    }
    for c in 0..opts.session_clients {
        let at = if c % 2 == 0 {
            w.rng.random_range(100_000..300_000)
        } else {
            end_faults + w.election_allowance_us() + w.rng.random_range(1_000..200_000)
        };
        w.schedule(at, Event::SessionWake { client: c });
    }
    let first_chaos = w.rng.random_range(100_000..500_000);
    w.schedule(first_chaos, Event::Chaos);
    w.schedule(end_faults, Event::EndOfFaults);
    let end = end_faults + opts.quiet_ms * 1000;
    while let Some(Reverse((at, seq))) = w.queue.pop() {
        if at > end {
            break;
        }
        w.now = at;
        let Some(e) = w.events.remove(&seq) else {
            continue;
        };
        w.report.events += 1;
        w.handle(e);
    }
    w.finish();
    w.report
}

#[cfg(test)]
mod tests;
