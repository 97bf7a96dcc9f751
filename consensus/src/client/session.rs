//! The client's side of a session: opening it on the first connection, re-attaching it on
//! every later one, and the heartbeat that keeps it alive and moves it off a silent node.
//!
//! Owns the session state machine of one [`super::Client`] (wanted, live, expired, closed)
//! and its timing, as ZooKeeper's client does it: after a third of the timeout without a
//! request sent, ping; after two thirds without an answer (or a node that cannot serve),
//! give up the connection and move to the next node, where the session is re-attached after a
//! `sync` (so a lagging node is never asked about a session it has not applied yet). The
//! group then still has a third of the timeout, less the follower's ping interval, to hear
//! from the session again. Never decides expiry: only the group does, and the client learns
//! it from a refused re-attach or ping.

use std::rc::Weak;
use std::time::{Duration, Instant};

use tracing::debug;

use super::connection::Connection;
use super::{Error, Inner};
use crate::proto::client::{ReplyResult, RequestOp, SessionRequest};
use crate::types::{SessionId, Zxid};
use crate::zab::{ClientError, ClientOp, Response};

/// How often the heartbeat task looks whether a session that is gone was renewed.
const SESSION_GONE_POLL_MS: u64 = 100;

/// A session as the client holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionHandle {
    pub id: SessionId,
    pub password: u64,
    /// The timeout the group granted (it may differ from the one asked).
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionState {
    /// Configured without a session.
    Off,
    /// To be opened on the next connection.
    Wanted {
        timeout_ms: u64,
    },
    Live(SessionHandle),
    Expired(SessionId),
    Closed(SessionId),
}

/// Why a new connection could not be set up for the session.
pub(super) enum Refused {
    /// This node cannot help now; try the next.
    Retry(String),
    /// The session is gone; nothing will help.
    Fatal(Error),
}

/// Sets a fresh connection up before anything else is sent on it: opens or re-attaches the
/// session, then re-registers the watches with the events missed since the last zxid seen.
pub(super) async fn establish(
    inner: &Inner,
    conn: &Connection,
    deadline: Instant,
) -> Result<(), Refused> {
    let synced = open_or_attach(inner, conn, deadline).await?;
    let (since, watches) = {
        let w = inner.watches.borrow();
        (w.last_zxid(), w.registered())
    };
    if !synced && since > Zxid::ZERO {
        // A node behind what this client saw would show it older data than it has seen (and
        // report changes it has not applied as missing): ZooKeeper refuses such a node; a
        // sync brings it up first.
        match ask(conn, RequestOp::Node(ClientOp::Sync), deadline).await? {
            ReplyResult::Ok(Response::Synced { .. }) => {}
            other => return Err(refused(inner, other)),
        }
    }
    if watches.is_empty() {
        conn.set_watching();
        return Ok(());
    }
    let op = RequestOp::Node(ClientOp::SetWatches { since, watches });
    // Frames from here on carry events of the re-registered watches.
    conn.set_watching();
    match ask(conn, op, deadline).await? {
        ReplyResult::Ok(Response::Watching) => Ok(()),
        other => Err(refused(inner, other)),
    }
}

/// The session step of [`establish`]; says whether it synced the node.
async fn open_or_attach(
    inner: &Inner,
    conn: &Connection,
    deadline: Instant,
) -> Result<bool, Refused> {
    let state = inner.state.borrow().session;
    match state {
        SessionState::Off => Ok(false),
        SessionState::Wanted { timeout_ms } => {
            let op = RequestOp::Session(SessionRequest::Create { timeout_ms });
            match ask(conn, op, deadline).await? {
                ReplyResult::Session {
                    session,
                    password,
                    timeout_ms,
                } => {
                    let handle = SessionHandle {
                        id: session,
                        password,
                        timeout_ms,
                    };
                    debug!(server = %conn.server, session = session.0, timeout_ms, "consensus session opened");
                    inner.state.borrow_mut().session = SessionState::Live(handle);
                    Ok(false)
                }
                other => Err(refused(inner, other)),
            }
        }
        SessionState::Live(h) => {
            match ask(conn, RequestOp::Node(ClientOp::Sync), deadline).await? {
                ReplyResult::Ok(Response::Synced { .. }) => {}
                other => return Err(refused(inner, other)),
            }
            let op = RequestOp::Session(SessionRequest::Attach {
                session: h.id,
                password: h.password,
            });
            match ask(conn, op, deadline).await? {
                ReplyResult::Session { .. } => {
                    debug!(server = %conn.server, session = h.id.0, "consensus session re-attached");
                    Ok(true)
                }
                other => Err(refused(inner, other)),
            }
        }
        SessionState::Expired(id) | SessionState::Closed(id) => {
            Err(Refused::Fatal(Error::SessionExpired { session: Some(id) }))
        }
    }
}

fn refused(inner: &Inner, reply: ReplyResult) -> Refused {
    match reply {
        ReplyResult::Err(ClientError::SessionExpired | ClientError::BadSessionPassword) => {
            Refused::Fatal(inner.mark_expired(None))
        }
        ReplyResult::Err(ClientError::NotReady) => Refused::Retry("not ready".into()),
        ReplyResult::Err(ClientError::ConnectionLoss) => Refused::Retry("lost its leader".into()),
        other => Refused::Retry(format!("unexpected reply {other:?}")),
    }
}

async fn ask(conn: &Connection, op: RequestOp, deadline: Instant) -> Result<ReplyResult, Refused> {
    let rx = conn
        .send(op)
        .map_err(|e| Refused::Retry(format!("send failed: {e}")))?;
    match super::connection::reply_by(&rx, deadline).await {
        Some(Ok(r)) => Ok(r),
        Some(Err(_)) => Err(Refused::Retry("connection lost".into())),
        None => Err(Refused::Retry("no answer".into())),
    }
}

impl Inner {
    pub(super) fn session_id(&self) -> Option<SessionId> {
        match self.state.borrow().session {
            SessionState::Live(h) => Some(h.id),
            _ => None,
        }
    }

    /// The group refused the session a request was sent under (`sent_under`; `None`: the
    /// current one): remember it and say so. A refusal of an older session, arriving after
    /// [`super::Client::renew_session`] opened a new one, leaves the new one alone.
    pub(super) fn mark_expired(&self, sent_under: Option<SessionId>) -> Error {
        let mut st = self.state.borrow_mut();
        let id = match st.session {
            SessionState::Live(h) if sent_under.is_some_and(|s| s != h.id) => {
                return Error::SessionExpired {
                    session: sent_under,
                };
            }
            SessionState::Live(h) => Some(h.id),
            SessionState::Expired(id) | SessionState::Closed(id) => Some(id),
            _ => None,
        };
        if let Some(id) = id {
            if matches!(st.session, SessionState::Live(_)) {
                tracing::warn!(session = id.0, "consensus session expired");
            }
            st.session = SessionState::Expired(id);
        }
        Error::SessionExpired { session: id }
    }

    /// Refuses to connect for a session that is gone.
    pub(super) fn session_usable(&self) -> Result<(), Error> {
        match self.state.borrow().session {
            SessionState::Expired(id) | SessionState::Closed(id) => {
                Err(Error::SessionExpired { session: Some(id) })
            }
            _ => Ok(()),
        }
    }

    /// The live session, connecting (and so opening it) first if needed.
    pub(super) async fn live_session(&self) -> Result<SessionHandle, Error> {
        let state = self.state.borrow().session;
        match state {
            SessionState::Live(h) => return Ok(h),
            SessionState::Off => return Err(Error::NoSession),
            SessionState::Expired(id) | SessionState::Closed(id) => {
                return Err(Error::SessionExpired { session: Some(id) });
            }
            SessionState::Wanted { .. } => {}
        }
        let deadline = Instant::now() + Duration::from_millis(self.cfg.request_timeout_ms);
        let mut last = String::from("no attempt");
        self.connection(deadline, &mut last).await?;
        let state = self.state.borrow().session;
        match state {
            SessionState::Live(h) => Ok(h),
            _ => Err(self.mark_expired(None)),
        }
    }
}

/// Keeps the session alive until the client is dropped (idle while the session is gone, until
/// `Client::renew_session` opens another): pings after a
/// third of the timeout without a request, moves to another node after two thirds without
/// an answer, and reconnects (re-attaching the session) without waiting for the application.
pub(super) async fn heartbeat(inner: Weak<Inner>) {
    let mut ping: Option<Ping> = None;
    loop {
        // Hold the client only while working, so dropping it ends this task.
        let pause = match inner.upgrade() {
            Some(inner) => match beat(&inner, &mut ping).await {
                Some(pause) => pause,
                None => return,
            },
            None => return,
        };
        glommio::timer::sleep(pause).await;
    }
}

/// A ping in flight: the session it was sent for, and where its reply arrives.
type Ping = (SessionId, flume::Receiver<ReplyResult>);

/// One heartbeat step; `None` when the client holds no session at all.
async fn beat(inner: &Inner, ping: &mut Option<Ping>) -> Option<Duration> {
    let state = inner.state.borrow().session;
    let (session, timeout) = match state {
        SessionState::Live(h) => (h.id, Duration::from_millis(h.timeout_ms.max(3))),
        SessionState::Wanted { .. } => return Some(Duration::from_millis(10)),
        // Idle, not ended: `Client::renew_session` may start a new session, which this task
        // then keeps alive (one heartbeat task per client, whatever the session).
        SessionState::Expired(_) | SessionState::Closed(_) => {
            *ping = None;
            return Some(Duration::from_millis(SESSION_GONE_POLL_MS));
        }
        SessionState::Off => return None,
    };
    let check = (timeout / 12).max(Duration::from_millis(1));
    let conn = inner.current();
    if ping
        .as_ref()
        .is_some_and(|(sent_for, _)| *sent_for != session)
    {
        // Sent for a session since replaced: its answer says nothing about this one.
        *ping = None;
    }
    if let Some((_, rx)) = ping.as_ref() {
        match rx.try_recv() {
            Ok(ReplyResult::Err(ClientError::SessionExpired | ClientError::BadSessionPassword)) => {
                inner.mark_expired(Some(session));
                *ping = None;
                return Some(Duration::from_millis(SESSION_GONE_POLL_MS));
            }
            Ok(ReplyResult::Err(_)) => {
                // A node that cannot serve cannot keep the session alive: move.
                *ping = None;
                if let Some(c) = &conn {
                    debug!(server = %c.server, "consensus node cannot serve; moving the session");
                    inner.drop_connection(c);
                }
                return Some(Duration::ZERO);
            }
            Ok(_) | Err(flume::TryRecvError::Disconnected) => *ping = None,
            Err(flume::TryRecvError::Empty) => {}
        }
    }
    match conn {
        Some(c) => {
            if c.last_heard().elapsed() >= timeout * 2 / 3 {
                debug!(server = %c.server, "no answer for two thirds of the session timeout; moving");
                *ping = None;
                inner.drop_connection(&c);
                return Some(Duration::ZERO);
            }
            if ping.is_none() && c.last_sent().elapsed() >= timeout / 3 {
                *ping = c
                    .send(RequestOp::Session(SessionRequest::Ping))
                    .ok()
                    .map(|rx| (session, rx));
            }
        }
        None => {
            *ping = None;
            let deadline = Instant::now() + timeout;
            let mut last = String::from("no attempt");
            if let Err(Error::SessionExpired { .. }) = inner.connection(deadline, &mut last).await {
                return Some(Duration::from_millis(SESSION_GONE_POLL_MS));
            }
        }
    }
    Some(check)
}
