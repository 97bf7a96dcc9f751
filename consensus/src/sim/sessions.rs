//! Simulated session clients: each opens a session at some node, creates its ephemeral
//! node, heartbeats after a third of the timeout, moves to another node (sync, then
//! re-attach with its password) after two thirds without an answer or on `NotReady`, and
//! may die (fall silent) at a chosen time.
//!
//! Owns the client's session state machine as the real client has it
//! ([`crate::client`]), and what it observed; the checks on it live in the world
//! ([`super`]): an ephemeral node exists exactly while its session does, a dead client's
//! session is gone within the documented bound, and a live client that can reach the group
//! is never expired once the faults have stopped.

use crate::txn::{OpResult, TreeError, Txn, TxnResult, WriteOp};
use crate::types::{ClientId, RequestId, SessionId};
use crate::zab::{ClientError, ClientOp, ClientReply, Response};

/// Session clients' ids start here, apart from the workload's.
pub const SESSION_CLIENT_BASE: u64 = 1 << 20;
/// The timeout the simulated clients ask for (within the group's bounds).
pub const SESSION_TIMEOUT_TICKS: u32 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Create,
    Sync,
    Attach,
    Ephemeral,
    Ping,
}

#[derive(Debug)]
pub struct SessionClient {
    pub id: ClientId,
    pub node: usize,
    password: u64,
    pub session: Option<SessionId>,
    attached: bool,
    /// The ephemeral create was acknowledged (or found done).
    pub created: bool,
    pub expired: bool,
    /// Falls silent at this time (never, if `u64::MAX`).
    pub dies_at_us: u64,
    pub dead: bool,
    /// When the group answered its session create.
    pub opened_at_us: Option<u64>,
    pending: Option<(RequestId, u64, Asked)>,
    next_request: u64,
    last_sent_us: u64,
}

/// What a reply did to the client.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Move to another node before the next request.
    pub moved: bool,
    /// The group said the session is gone.
    pub expired: bool,
    pub opened: bool,
    pub reattached: bool,
}

impl SessionClient {
    pub fn new(index: usize, node: usize, password: u64, dies_at_us: u64) -> SessionClient {
        SessionClient {
            id: ClientId(SESSION_CLIENT_BASE + index as u64),
            node,
            password,
            session: None,
            attached: false,
            created: false,
            expired: false,
            dies_at_us,
            dead: false,
            opened_at_us: None,
            pending: None,
            next_request: 0,
            last_sent_us: 0,
        }
    }

    pub fn path(&self) -> String {
        format!("/e{}", self.id.0 - SESSION_CLIENT_BASE)
    }

    /// The next request to send, if any; `moved` says the current node was given up first.
    pub fn wake(&mut self, now_us: u64, timeout_us: u64) -> (bool, Option<(RequestId, ClientOp)>) {
        let mut moved = false;
        if let Some((_, sent, _)) = self.pending {
            if now_us.saturating_sub(sent) < timeout_us * 2 / 3 {
                return (false, None);
            }
            // Two thirds of the timeout without an answer: this node is no good.
            self.pending = None;
            self.attached = false;
            moved = true;
        }
        if self.expired {
            return (moved, None);
        }
        let (asked, op) = match self.session {
            None => (
                Asked::Create,
                ClientOp::CreateSession {
                    timeout_ticks: u64::from(SESSION_TIMEOUT_TICKS),
                    password: self.password,
                },
            ),
            Some(_) if !self.attached => (Asked::Sync, ClientOp::Sync),
            Some(owner) if !self.created => (
                Asked::Ephemeral,
                ClientOp::Write(Txn::Write(WriteOp::Create {
                    path: self.path(),
                    data: vec![],
                    sequential: false,
                    ephemeral_owner: Some(owner),
                })),
            ),
            Some(_) if now_us.saturating_sub(self.last_sent_us) >= timeout_us / 3 => {
                (Asked::Ping, ClientOp::Ping)
            }
            Some(_) => return (moved, None),
        };
        (moved, Some(self.send(now_us, asked, op)))
    }

    fn send(&mut self, now_us: u64, asked: Asked, op: ClientOp) -> (RequestId, ClientOp) {
        self.next_request += 1;
        let request = RequestId(self.next_request);
        self.pending = Some((request, now_us, asked));
        self.last_sent_us = now_us;
        (request, op)
    }

    /// A reply; a follow-up request (the attach after a sync) comes back to send at once.
    pub fn on_reply(
        &mut self,
        now_us: u64,
        reply: ClientReply,
    ) -> (Outcome, Option<(RequestId, ClientOp)>) {
        let mut outcome = Outcome::default();
        let Some((request, _, asked)) = self.pending else {
            return (outcome, None);
        };
        if reply.request != request || self.dead {
            return (outcome, None);
        }
        self.pending = None;
        match (asked, reply.result) {
            (_, Err(ClientError::NotReady | ClientError::ConnectionLoss)) => {
                self.attached = false;
                outcome.moved = true;
            }
            (_, Err(ClientError::SessionExpired | ClientError::BadSessionPassword))
            | (
                Asked::Ephemeral,
                Err(ClientError::Txn(crate::txn::TxnError {
                    error: TreeError::NoSession,
                    ..
                })),
            ) => {
                self.expired = true;
                outcome.expired = true;
            }
            (Asked::Create, Ok(Response::Session { session, .. })) => {
                self.session = Some(session);
                self.attached = true;
                self.opened_at_us = Some(now_us);
                outcome.opened = true;
            }
            (Asked::Sync, Ok(Response::Synced { .. })) => {
                if let Some(session) = self.session {
                    let op = ClientOp::AttachSession {
                        session,
                        password: self.password,
                    };
                    return (outcome, Some(self.send(now_us, Asked::Attach, op)));
                }
            }
            (Asked::Attach, Ok(Response::Session { .. })) => {
                self.attached = true;
                outcome.reattached = true;
            }
            (Asked::Ephemeral, Ok(Response::Txn(TxnResult::Write(OpResult::Created { .. }))))
            | (
                Asked::Ephemeral,
                Err(ClientError::Txn(crate::txn::TxnError {
                    error: TreeError::NodeExists,
                    ..
                })),
            ) => self.created = true,
            (Asked::Ping, Ok(Response::Pong { .. })) => {}
            (_, other) => {
                // Anything else from this node: leave it.
                let _ = other;
                self.attached = false;
                outcome.moved = true;
            }
        }
        (outcome, None)
    }
}
