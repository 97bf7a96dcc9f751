//! Sessions through the protocol state machine, on a group of one driven by hand: open,
//! ephemeral ownership, keep-alive, expiry through a committed transaction, clean close,
//! re-attach with the password, and re-arming by a new leader.

use crate::meta::Epochs;
use crate::store::Recovered;
use crate::tree::DataTree;
use crate::txn::{OpResult, TreeError, Txn, TxnResult, WriteOp};
use crate::types::{ClientId, NodeId, RequestId, SessionId};
use crate::zab::{
    ClientError, ClientOp, ClientRequest, Config, DiskOp, Input, Node, Output, Response,
};

fn node_with(tree: DataTree) -> Node {
    let cfg = Config::new(NodeId(1), vec![NodeId(1)]);
    let recovered = Recovered {
        epochs: Epochs::default(),
        tree,
        log: vec![],
    };
    let mut n = Node::new(cfg, recovered);
    let mut out = vec![];
    n.start(&mut out);
    finish(&mut n, out);
    assert!(n.is_serving());
    n
}

/// Completes every fsync the outputs ask for (a perfect disk); returns all replies.
fn finish(n: &mut Node, mut out: Vec<Output>) -> Vec<Result<Response, ClientError>> {
    let mut replies = vec![];
    while !out.is_empty() {
        let mut next = vec![];
        for o in out {
            match o {
                Output::Disk(DiskOp::Sync {
                    generation,
                    through,
                }) => n.step(
                    Input::Synced {
                        generation,
                        through,
                    },
                    &mut next,
                ),
                Output::Reply(r) => replies.push(r.result),
                _ => {}
            }
        }
        out = next;
    }
    replies
}

fn ask(n: &mut Node, client: u64, op: ClientOp) -> Result<Response, ClientError> {
    let mut out = vec![];
    let req = ClientRequest {
        client: ClientId(client),
        request: RequestId(1),
        op,
    };
    n.step(Input::Client(req), &mut out);
    let mut replies = finish(n, out);
    assert_eq!(replies.len(), 1, "{replies:?}");
    replies.remove(0)
}

fn ticks(n: &mut Node, count: u32) {
    for _ in 0..count {
        let mut out = vec![];
        n.step(Input::Tick, &mut out);
        finish(n, out);
    }
}

fn open(n: &mut Node, client: u64, timeout_ticks: u64) -> (SessionId, u64, u32) {
    let op = ClientOp::CreateSession {
        timeout_ticks,
        password: 0xabc0 + client,
    };
    match ask(n, client, op) {
        Ok(Response::Session {
            session,
            password,
            timeout_ticks,
        }) => (session, password, timeout_ticks),
        other => panic!("{other:?}"),
    }
}

fn ephemeral(path: &str, owner: SessionId) -> ClientOp {
    ClientOp::Write(Txn::Write(WriteOp::Create {
        path: path.into(),
        data: vec![],
        sequential: false,
        ephemeral_owner: Some(owner),
    }))
}

#[test]
fn timeouts_are_negotiated_and_ephemerals_belong_to_their_session() {
    let mut n = node_with(DataTree::new());
    let cfg = Config::new(NodeId(1), vec![NodeId(1)]);
    let (_, _, t) = open(&mut n, 1, 1);
    assert_eq!(t, cfg.min_session_timeout_ticks);
    let (s2, _, t) = open(&mut n, 2, 1_000_000);
    assert_eq!(t, cfg.max_session_timeout_ticks);
    // Client 1 may not create a node owned by client 2's session, nor send session txns.
    assert!(matches!(
        ask(&mut n, 1, ephemeral("/x", s2)),
        Err(ClientError::NotPermitted { .. })
    ));
    let forged = ClientOp::Write(Txn::CloseSession {
        session: s2,
        expired: false,
    });
    assert!(matches!(
        ask(&mut n, 1, forged),
        Err(ClientError::NotPermitted { .. })
    ));
    // A connection without a session may not create ephemerals at all.
    assert!(matches!(
        ask(&mut n, 3, ephemeral("/x", s2)),
        Err(ClientError::NotPermitted { .. })
    ));
    assert!(matches!(
        ask(&mut n, 2, ephemeral("/x", s2)),
        Ok(Response::Txn(TxnResult::Write(OpResult::Created { .. })))
    ));
    assert_eq!(
        n.tree().get("/x").unwrap().1.ephemeral_owner,
        Some(s2),
        "owned by its session"
    );
}

#[test]
fn a_silent_session_expires_through_a_commit_and_a_pinging_one_does_not() {
    let mut n = node_with(DataTree::new());
    let (quiet, _, t) = open(&mut n, 1, 30);
    let (busy, _, _) = open(&mut n, 2, 30);
    ask(&mut n, 1, ephemeral("/q", quiet)).unwrap();
    ask(&mut n, 2, ephemeral("/b", busy)).unwrap();
    for _ in 0..(t + 10) {
        ticks(&mut n, 1);
        assert!(matches!(
            ask(&mut n, 2, ClientOp::Ping),
            Ok(Response::Pong { .. })
        ));
    }
    assert_eq!(
        n.tree().exists("/q").unwrap(),
        None,
        "expired with its session"
    );
    assert!(n.tree().session(quiet).is_none());
    assert!(n.tree().exists("/b").unwrap().is_some());
    // The expired session's connection learns it.
    assert_eq!(
        ask(&mut n, 1, ClientOp::Ping),
        Err(ClientError::SessionExpired)
    );
    assert!(matches!(
        ask(&mut n, 1, ephemeral("/q2", quiet)),
        Err(ClientError::Txn(e)) if e.error == TreeError::NoSession
    ));
}

#[test]
fn a_clean_close_deletes_ephemerals_at_once_and_reattach_needs_the_password() {
    let mut n = node_with(DataTree::new());
    let (s, password, _) = open(&mut n, 1, 100);
    ask(&mut n, 1, ephemeral("/e", s)).unwrap();
    // Moving: client 1's connection is gone, client 5 attaches the session.
    let mut out = vec![];
    n.step(
        Input::ClientGone {
            client: ClientId(1),
        },
        &mut out,
    );
    let wrong = ClientOp::AttachSession {
        session: s,
        password: password ^ 1,
    };
    assert_eq!(ask(&mut n, 5, wrong), Err(ClientError::BadSessionPassword));
    let right = ClientOp::AttachSession {
        session: s,
        password,
    };
    assert!(matches!(ask(&mut n, 5, right), Ok(Response::Session { session, .. }) if session == s));
    assert!(matches!(
        ask(&mut n, 5, ClientOp::CloseSession),
        Ok(Response::Txn(TxnResult::SessionClosed { ref deleted })) if deleted == &["/e".to_string()]
    ));
    assert_eq!(n.tree().exists("/e").unwrap(), None);
    assert_eq!(
        ask(&mut n, 5, ClientOp::CloseSession),
        Err(ClientError::SessionExpired)
    );
}

#[test]
fn a_new_leader_gives_every_session_a_fresh_timeout() {
    let mut n = node_with(DataTree::new());
    let (s, _, t) = open(&mut n, 1, 40);
    ask(&mut n, 1, ephemeral("/e", s)).unwrap();
    // Silent for most of the timeout, then the leader "restarts" from its state.
    ticks(&mut n, t - 5);
    let mut tree = n.tree().clone();
    // Recovery replays onto a tree: keep the state, start a new node (a new leadership).
    tree = DataTree::from_parts(
        tree.applied(),
        tree.iter()
            .map(|(p, nd)| (p.to_string(), nd.data.clone(), nd.stat)),
        tree.sessions(),
    )
    .unwrap();
    let mut n = node_with(tree);
    ticks(&mut n, t - 5);
    assert!(
        n.tree().exists("/e").unwrap().is_some(),
        "the old leader's clock does not carry over"
    );
    ticks(&mut n, 10);
    assert_eq!(
        n.tree().exists("/e").unwrap(),
        None,
        "expired on the new clock"
    );
}
