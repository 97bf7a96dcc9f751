//! Simulated clients: each issues a bounded sequence of writes (create, set, compare-and-set,
//! delete, multi, sequential create) one at a time to some node, and records what it saw.
//!
//! Owns the recorded history per key in the form the checker wants: `NotReady` means not
//! executed (dropped from the history); a lost connection or a timeout means unknown outcome.
//! Never interprets results beyond recording them.

use std::collections::BTreeSet;

use rand::Rng;

use super::linearizability::{Kind, MAX_OPS_PER_KEY, Op, Outcome};
use crate::txn::{OpResult, Txn, TxnResult, WriteOp};
use crate::types::{ClientId, RequestId, Zxid};
use crate::zab::{ClientError, ClientOp, ClientReply, ClientRequest, Response};

pub const KEYS: usize = 3;

fn key_path(k: usize) -> String {
    format!("/k{k}")
}

#[derive(Debug, Clone)]
enum Shape {
    Single {
        key: usize,
        kind: Kind,
    },
    Multi {
        keys: [usize; 2],
        expected: [Option<u32>; 2],
    },
    Sequential,
    Sync,
}

#[derive(Debug, Clone)]
struct Pending {
    request: RequestId,
    invoke_us: u64,
    shape: Shape,
}

#[derive(Debug)]
pub struct Client {
    pub id: ClientId,
    /// Index of the node it talks to.
    pub node: usize,
    next_request: u64,
    ops_left: u32,
    pending: Option<Pending>,
    known_version: [Option<u32>; KEYS],
    tag: u64,
    /// The newest zxid among this client's acknowledged writes: a later sync must reach it
    /// (read-your-writes across nodes).
    own_write: Zxid,
}

/// What all clients observed.
#[derive(Debug, Default)]
pub struct Observed {
    pub per_key: [Vec<Op>; KEYS],
    pub sequential_paths: BTreeSet<String>,
    pub problems: Vec<String>,
    pub acknowledged_writes: usize,
    pub unknown_writes: usize,
}

impl Client {
    pub fn new(index: usize, node: usize, ops: u32) -> Client {
        Client {
            id: ClientId(index as u64),
            node,
            next_request: 0,
            ops_left: ops,
            pending: None,
            known_version: [None; KEYS],
            tag: (index as u64) << 32,
            own_write: Zxid::ZERO,
        }
    }

    pub fn busy(&self) -> bool {
        self.pending.is_some()
    }

    pub fn done(&self) -> bool {
        self.ops_left == 0 && self.pending.is_none()
    }

    fn version_guess(&self, rng: &mut impl Rng, key: usize) -> Option<u32> {
        if rng.random_bool(0.2) {
            return None;
        }
        Some(self.known_version[key].unwrap_or_else(|| rng.random_range(0..3)))
    }

    /// The next request, or `None` when this client is finished.
    pub fn next(
        &mut self,
        rng: &mut impl Rng,
        now_us: u64,
        seen: &Observed,
    ) -> Option<ClientRequest> {
        if self.ops_left == 0 || self.pending.is_some() {
            return None;
        }
        self.ops_left -= 1;
        self.tag += 1;
        let data = self.tag.to_le_bytes().to_vec();
        // Keep each key's history within the checker's bound.
        let open: Vec<usize> = (0..KEYS)
            .filter(|&k| seen.per_key[k].len() + 2 < MAX_OPS_PER_KEY)
            .collect();
        let key = if open.is_empty() {
            None
        } else {
            Some(open[rng.random_range(0..open.len())])
        };
        let roll = rng.random_range(0..100);
        let (shape, op) = match key {
            None => (Shape::Sequential, None),
            Some(_) if roll >= 92 => (Shape::Sync, Some(ClientOp::Sync)),
            Some(_) if roll >= 82 => (Shape::Sequential, None),
            Some(k) if roll >= 67 && open.len() >= 2 => {
                let other = open[(open.iter().position(|&o| o == k).unwrap_or(0) + 1) % open.len()];
                let keys = [k, other];
                let expected = [self.version_guess(rng, k), self.version_guess(rng, other)];
                let ops = keys
                    .iter()
                    .zip(expected)
                    .map(|(&k, e)| WriteOp::SetData {
                        path: key_path(k),
                        data: data.clone(),
                        expected_version: e,
                    })
                    .collect();
                (
                    Shape::Multi { keys, expected },
                    Some(ClientOp::Write(Txn::Multi(ops))),
                )
            }
            Some(k) if roll >= 50 => {
                let kind = Kind::Create;
                let op = WriteOp::Create {
                    path: key_path(k),
                    data,
                    sequential: false,
                    ephemeral_owner: None,
                };
                (
                    Shape::Single { key: k, kind },
                    Some(ClientOp::Write(Txn::Write(op))),
                )
            }
            Some(k) if roll >= 40 => {
                let expected = self.version_guess(rng, k);
                let op = WriteOp::Delete {
                    path: key_path(k),
                    expected_version: expected,
                };
                (
                    Shape::Single {
                        key: k,
                        kind: Kind::Delete { expected },
                    },
                    Some(ClientOp::Write(Txn::Write(op))),
                )
            }
            Some(k) => {
                let expected = self.version_guess(rng, k);
                let op = WriteOp::SetData {
                    path: key_path(k),
                    data,
                    expected_version: expected,
                };
                (
                    Shape::Single {
                        key: k,
                        kind: Kind::Set { expected },
                    },
                    Some(ClientOp::Write(Txn::Write(op))),
                )
            }
        };
        let op = op.unwrap_or_else(|| {
            let create = WriteOp::Create {
                path: "/s-".into(),
                data: vec![],
                sequential: true,
                ephemeral_owner: None,
            };
            ClientOp::Write(Txn::Write(create))
        });
        self.next_request += 1;
        let request = RequestId(self.next_request);
        self.pending = Some(Pending {
            request,
            invoke_us: now_us,
            shape,
        });
        Some(ClientRequest {
            client: self.id,
            request,
            op,
        })
    }

    /// Records an operation whose outcome is unknown (lost connection or timeout).
    pub fn give_up(&mut self, request: RequestId, seen: &mut Observed) -> bool {
        let Some(p) = self.pending.take_if(|p| p.request == request) else {
            return false;
        };
        let unknown = |kind, invoke_us| Op {
            kind,
            invoke_us,
            complete_us: u64::MAX,
            outcome: Outcome::Unknown,
        };
        match p.shape {
            Shape::Single { key, kind } => seen.per_key[key].push(unknown(kind, p.invoke_us)),
            Shape::Multi { keys, expected } => {
                for (k, e) in keys.iter().zip(expected) {
                    seen.per_key[*k].push(unknown(Kind::Set { expected: e }, p.invoke_us));
                }
            }
            Shape::Sequential | Shape::Sync => {}
        }
        self.known_version = [None; KEYS];
        seen.unknown_writes += 1;
        true
    }

    /// Handles a reply; returns whether the client should move to another node.
    pub fn on_reply(&mut self, now_us: u64, reply: ClientReply, seen: &mut Observed) -> bool {
        let matches = self
            .pending
            .as_ref()
            .is_some_and(|p| p.request == reply.request);
        if !matches {
            return false;
        }
        let result = match reply.result {
            Err(ClientError::NotReady) => {
                // Not executed: nothing to record; the op is given back.
                self.pending = None;
                self.ops_left += 1;
                return true;
            }
            Err(ClientError::ConnectionLoss) => {
                self.give_up(reply.request, seen);
                return true;
            }
            other => other,
        };
        let Some(p) = self.pending.take() else {
            return false;
        };
        let done = |kind, outcome| Op {
            kind,
            invoke_us: p.invoke_us,
            complete_us: now_us,
            outcome,
        };
        match (p.shape, result) {
            (Shape::Single { key, kind }, Ok(Response::Txn(TxnResult::Write(r)))) => {
                let version = match r {
                    OpResult::Set { stat } => Some(stat.version),
                    _ => None,
                };
                self.known_version[key] = match r {
                    OpResult::Created { .. } => Some(0),
                    OpResult::Set { stat } => Some(stat.version),
                    _ => None,
                };
                if let OpResult::Created { stat, .. } | OpResult::Set { stat } = &r {
                    self.own_write = self.own_write.max(stat.mzxid);
                }
                seen.per_key[key].push(done(kind, Outcome::Ok { version }));
                seen.acknowledged_writes += 1;
            }
            (Shape::Single { key, kind }, Err(ClientError::Txn(e))) => {
                self.known_version[key] = None;
                seen.per_key[key].push(done(kind, Outcome::Failed(e.error)));
            }
            (Shape::Multi { keys, expected }, Ok(Response::Txn(TxnResult::Multi(results)))) => {
                for ((k, e), r) in keys.iter().zip(expected).zip(results) {
                    let version = match r {
                        OpResult::Set { stat } => Some(stat.version),
                        _ => None,
                    };
                    self.known_version[*k] = version;
                    if let OpResult::Set { stat } = &r {
                        self.own_write = self.own_write.max(stat.mzxid);
                    }
                    seen.per_key[*k].push(done(Kind::Set { expected: e }, Outcome::Ok { version }));
                }
                seen.acknowledged_writes += 1;
            }
            // A failed multi changed nothing, but which key made it fail is not a per-key fact.
            (Shape::Multi { keys, .. }, Err(ClientError::Txn(_))) => {
                for k in keys {
                    self.known_version[k] = None;
                }
            }
            (
                Shape::Sequential,
                Ok(Response::Txn(TxnResult::Write(OpResult::Created { path, .. }))),
            ) => {
                if !seen.sequential_paths.insert(path.clone()) {
                    seen.problems
                        .push(format!("sequential path {path} handed out twice"));
                }
                seen.acknowledged_writes += 1;
            }
            (Shape::Sync, Ok(Response::Synced { through })) => {
                if through < self.own_write {
                    seen.problems.push(format!(
                        "client {} synced through {through} but its own write {} was acknowledged before",
                        self.id.0, self.own_write
                    ));
                }
            }
            (shape, r) => seen
                .problems
                .push(format!("reply {r:?} does not fit request {shape:?}")),
        }
        false
    }
}
