//! The runtime and the client over real TCP and real files, in one process: a node of one,
//! and a group of three that loses its leader.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{free_addr, on_executor, start, start_group};
use corebus_consensus::client::{Client, ClientConfig, CreateMode, Error};
use corebus_consensus::txn::{TreeError, WriteOp};
use corebus_consensus::types::NodeId;

#[test]
fn a_node_of_one_serves_every_operation() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let members = BTreeMap::from([(NodeId(1), addr)]);
    let node = start(1, &members, dir.path());
    assert!(
        node.wait_serving(Duration::from_secs(10)),
        "a group of one elects itself"
    );
    on_executor(async move || {
        let c = Client::new(ClientConfig::new(vec![addr])).unwrap();
        assert_eq!(
            c.create("/a", b"one", CreateMode::Persistent)
                .await
                .unwrap(),
            "/a"
        );
        let seq = c
            .create("/a/s-", b"", CreateMode::Sequential)
            .await
            .unwrap();
        assert_eq!(seq, "/a/s-0000000000");
        let (data, stat) = c.get("/a").await.unwrap();
        assert_eq!((data.as_slice(), stat.version), (&b"one"[..], 0));
        // Compare-and-set: the right version wins once, the stale one is refused.
        assert_eq!(c.set("/a", b"two", Some(0)).await.unwrap().version, 1);
        let stale = c.set("/a", b"three", Some(0)).await;
        assert_eq!(
            stale,
            Err(Error::Tree {
                index: 0,
                error: TreeError::BadVersion
            })
        );
        assert_eq!(
            c.create("/a", b"", CreateMode::Persistent).await,
            Err(Error::Tree {
                index: 0,
                error: TreeError::NodeExists
            })
        );
        assert_eq!(
            c.children("/a").await.unwrap(),
            vec!["s-0000000000".to_string()]
        );
        // A multi that fails at op 1 applies nothing.
        let bad = c
            .multi(vec![
                WriteOp::Create {
                    path: "/b".into(),
                    data: vec![],
                    sequential: false,
                    ephemeral_owner: None,
                },
                WriteOp::Check {
                    path: "/a".into(),
                    expected_version: Some(9),
                },
            ])
            .await;
        assert_eq!(
            bad,
            Err(Error::Tree {
                index: 1,
                error: TreeError::BadVersion
            })
        );
        assert_eq!(c.exists("/b").await.unwrap(), None);
        let ok = c
            .multi(vec![
                WriteOp::Create {
                    path: "/b".into(),
                    data: vec![],
                    sequential: false,
                    ephemeral_owner: None,
                },
                WriteOp::Delete {
                    path: "/a/s-0000000000".into(),
                    expected_version: None,
                },
            ])
            .await
            .unwrap();
        assert_eq!(ok.len(), 2);
        assert!(c.exists("/b").await.unwrap().is_some());
        assert_eq!(
            c.delete("/a", Some(0)).await,
            Err(Error::Tree {
                index: 0,
                error: TreeError::BadVersion
            })
        );
        c.delete("/a", Some(1)).await.unwrap();
        assert!(c.sync().await.unwrap().counter > 0);
        assert_eq!(
            c.get("/a").await,
            Err(Error::Tree {
                index: 0,
                error: TreeError::NoNode
            })
        );
    });
    node.stop().unwrap();

    // Restarted, it has the same tree.
    let node = start(1, &members, dir.path());
    assert!(node.wait_serving(Duration::from_secs(10)));
    on_executor(async move || {
        let c = Client::new(ClientConfig::new(vec![addr])).unwrap();
        assert!(c.exists("/b").await.unwrap().is_some());
        assert_eq!(c.exists("/a").await.unwrap(), None);
    });
    node.stop().unwrap();
}

#[test]
fn a_group_of_three_survives_its_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (members, mut nodes) = start_group(3, dir.path());
    let addrs: Vec<SocketAddr> = members.values().copied().collect();
    let a = addrs.clone();
    on_executor(async move || {
        let c = Client::new(ClientConfig::new(a)).unwrap();
        for i in 0..50 {
            c.create(&format!("/k{i}"), b"v", CreateMode::Persistent)
                .await
                .unwrap();
        }
    });
    let leader = *nodes
        .iter()
        .find(|(_, n)| n.observed().role() == corebus_consensus::zab::RoleName::Leading)
        .expect("a leader")
        .0;
    nodes.remove(&leader).unwrap().stop().unwrap();
    let a = addrs.clone();
    on_executor(async move || {
        let c = Client::new(ClientConfig::new(a)).unwrap();
        for i in 50..100 {
            let path = format!("/k{i}");
            loop {
                match c.create(&path, b"v", CreateMode::Persistent).await {
                    Ok(_)
                    | Err(Error::Tree {
                        error: TreeError::NodeExists,
                        ..
                    }) => break,
                    Err(Error::ConnectionLoss { .. } | Error::Timeout { .. }) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    });
    nodes.insert(leader, start(leader, &members, dir.path()));
    // The old leader catches up: every node reaches the same tree.
    let statuses = on_executor(async move || {
        for _ in 0..500 {
            let mut got = Vec::new();
            for &addr in &addrs {
                let mut cfg = ClientConfig::new(vec![addr]);
                cfg.request_timeout_ms = 2_000;
                let c = Client::new(cfg).unwrap();
                if let Ok(s) = c.status().await {
                    got.push(s);
                }
            }
            if got.len() == 3
                && got
                    .iter()
                    .all(|s| s.serving && s.tree_digest == got[0].tree_digest)
            {
                return got;
            }
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        panic!("the group did not converge");
    });
    assert!(statuses.iter().all(|s| s.tree_nodes == 101), "{statuses:?}");
    for (_, n) in nodes {
        n.stop().unwrap();
    }
}
