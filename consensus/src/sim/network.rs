//! A simulated network between nodes: per-connection sequence numbers over a lossy medium.
//!
//! Owns fault injection (drop, duplicate, delay, reorder, partition) and turns it into what
//! TCP gives the protocol: a connection delivers in order without duplicates, or breaks.
//! A duplicate (old sequence number) is discarded; a gap (a dropped or overtaken message)
//! breaks the connection, and both ends are told [`crate::zab::Input::PeerDown`].

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;

use crate::types::NodeId;

/// Fault probabilities for one run.
#[derive(Debug, Clone, Copy)]
pub struct NetFaults {
    pub drop: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub min_delay_us: u64,
    pub max_delay_us: u64,
}

#[derive(Debug, Default, Clone)]
struct Direction {
    next_send: u64,
    expected: u64,
    last_delivery_us: u64,
}

#[derive(Debug, Default, Clone)]
struct Link {
    generation: u64,
    dirs: [Direction; 2],
}

/// A packet to deliver at `at_us`.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    pub at_us: u64,
    pub generation: u64,
    pub seq: u64,
}

/// What a delivery attempt means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    Deliver,
    Discard,
    /// The connection broke; tell both ends.
    Broken,
}

#[derive(Debug)]
pub struct Network {
    faults: NetFaults,
    links: BTreeMap<(NodeId, NodeId), Link>,
    /// Pairs that cannot talk (either direction).
    cut: BTreeSet<(NodeId, NodeId)>,
}

fn key(a: NodeId, b: NodeId) -> ((NodeId, NodeId), usize) {
    if a < b { ((a, b), 0) } else { ((b, a), 1) }
}

impl Network {
    pub fn new(faults: NetFaults) -> Network {
        Network {
            faults,
            links: BTreeMap::new(),
            cut: BTreeSet::new(),
        }
    }

    pub fn partition(&mut self, side: &[NodeId], all: &[NodeId]) {
        self.cut.clear();
        for a in side {
            for b in all.iter().filter(|b| !side.contains(b)) {
                self.cut.insert(key(*a, *b).0);
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn is_cut(&self, a: NodeId, b: NodeId) -> bool {
        self.cut.contains(&key(a, b).0)
    }

    /// Breaks every connection of `node` (its process died).
    pub fn reset_node(&mut self, node: NodeId) {
        for ((a, b), link) in self.links.iter_mut() {
            if *a == node || *b == node {
                link.generation += 1;
                link.dirs = Default::default();
            }
        }
    }

    /// Sends from `a` to `b` at `now_us`; returns the packets the medium will deliver
    /// (none, one, or a duplicate pair).
    pub fn send(&mut self, rng: &mut impl Rng, now_us: u64, a: NodeId, b: NodeId) -> Vec<Packet> {
        let (k, d) = key(a, b);
        let cut = self.cut.contains(&k);
        let f = self.faults;
        let link = self.links.entry(k).or_default();
        let dir = &mut link.dirs[d];
        let seq = dir.next_send;
        dir.next_send += 1;
        if cut || rng.random_bool(f.drop) {
            return vec![];
        }
        let copies = if rng.random_bool(f.duplicate) { 2 } else { 1 };
        let mut out = Vec::with_capacity(copies);
        for _ in 0..copies {
            let delay = rng.random_range(f.min_delay_us..=f.max_delay_us);
            let mut at = now_us + delay;
            if !rng.random_bool(f.reorder) {
                // Normally FIFO: never before the previous packet on this direction.
                at = at.max(dir.last_delivery_us);
                dir.last_delivery_us = at;
            }
            out.push(Packet {
                at_us: at,
                generation: link.generation,
                seq,
            });
        }
        out
    }

    /// A packet from `a` reaches `b`.
    pub fn arrive(&mut self, a: NodeId, b: NodeId, p: Packet) -> Arrival {
        let (k, d) = key(a, b);
        let Some(link) = self.links.get_mut(&k) else {
            return Arrival::Discard;
        };
        if p.generation != link.generation {
            return Arrival::Discard;
        }
        let dir = &mut link.dirs[d];
        if p.seq < dir.expected {
            return Arrival::Discard;
        }
        if p.seq > dir.expected {
            link.generation += 1;
            link.dirs = Default::default();
            return Arrival::Broken;
        }
        dir.expected += 1;
        Arrival::Deliver
    }
}
