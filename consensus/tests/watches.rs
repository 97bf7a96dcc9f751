//! Watches over real TCP: one-shot and persistent watches fire once per change, in zxid
//! order, before the data that fired them can be read; a client that moves re-registers
//! them and is told what it missed.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{on_executor, start_group, start_one, with_one_killed};
use corebus_consensus::client::{Client, ClientConfig, CreateMode};
use corebus_consensus::watch::{EventType, WatchEvent};

async fn next_event(events: &flume::Receiver<WatchEvent>) -> WatchEvent {
    let got = futures_lite::future::or(async { events.recv_async().await.ok() }, async {
        glommio::timer::sleep(Duration::from_secs(10)).await;
        None
    })
    .await;
    got.expect("an event within 10 s")
}

fn kind_path(e: &WatchEvent) -> (EventType, &str) {
    (e.kind, e.path.as_str())
}

#[test]
fn watches_fire_once_in_order_and_before_the_data_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, node) = start_one(dir.path());
    on_executor(async move || {
        let w = Client::new(ClientConfig::new(vec![addr])).unwrap();
        let writer = Client::new(ClientConfig::new(vec![addr])).unwrap();
        let events = w.events();
        writer
            .create("/a", b"1", CreateMode::Persistent)
            .await
            .unwrap();
        writer
            .create("/r", b"", CreateMode::Persistent)
            .await
            .unwrap();
        assert_eq!(w.get_watch("/a").await.unwrap().0, b"1");
        assert_eq!(w.exists_watch("/c").await.unwrap(), None);
        w.children_watch("/").await.unwrap();
        w.add_watch("/r", true).await.unwrap();

        // Data change: told once, and before the new data can be read on that connection.
        writer.set("/a", b"2", None).await.unwrap();
        w.sync().await.unwrap();
        assert_eq!(w.get("/a").await.unwrap().0, b"2");
        let e = events.try_recv().expect("the event came before the data");
        assert_eq!(kind_path(&e), (EventType::NodeDataChanged, "/a"));
        writer.set("/a", b"3", None).await.unwrap();
        w.sync().await.unwrap();
        assert!(events.try_recv().is_err(), "one-shot: no second event");

        // Creation: the exists watch and the child watch of the root, in change order.
        writer
            .create("/c", b"", CreateMode::Persistent)
            .await
            .unwrap();
        let e1 = next_event(&events).await;
        let e2 = next_event(&events).await;
        assert_eq!(kind_path(&e1), (EventType::NodeCreated, "/c"));
        assert_eq!(kind_path(&e2), (EventType::NodeChildrenChanged, "/"));

        // A recursive watch sees every change below it, in zxid order, and stays.
        writer
            .create("/r/x", b"", CreateMode::Persistent)
            .await
            .unwrap();
        writer.set("/r/x", b"v", None).await.unwrap();
        writer.delete("/r/x", None).await.unwrap();
        writer
            .create("/r/y", b"", CreateMode::Persistent)
            .await
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(next_event(&events).await);
        }
        let kinds: Vec<_> = got.iter().map(kind_path).collect();
        assert_eq!(
            kinds,
            vec![
                (EventType::NodeCreated, "/r/x"),
                (EventType::NodeDataChanged, "/r/x"),
                (EventType::NodeDeleted, "/r/x"),
                (EventType::NodeCreated, "/r/y"),
            ]
        );
        assert!(got.windows(2).all(|p| p[0].zxid < p[1].zxid));
        w.sync().await.unwrap();
        assert!(events.try_recv().is_err(), "nothing more");
    });
    node.stop().unwrap();
}

#[test]
fn a_moved_client_is_told_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let (members, nodes) = start_group(3, dir.path());
    let addrs: Vec<SocketAddr> = members.values().copied().collect();
    with_one_killed(nodes, async move |killer| {
        {
            let w = Client::new(ClientConfig::new(addrs.clone())).unwrap();
            let events = w.events();
            w.create("/m", b"0", CreateMode::Persistent).await.unwrap();
            w.create("/p", b"", CreateMode::Persistent).await.unwrap();
            w.get_watch("/m").await.unwrap();
            w.add_watch("/p", true).await.unwrap();
            w.exists_watch("/late").await.unwrap();
            let victim = w.server().unwrap();
            let others: Vec<SocketAddr> = addrs.iter().copied().filter(|a| *a != victim).collect();
            let mut cfg = ClientConfig::new(others);
            cfg.request_timeout_ms = 30_000;
            let writer = Client::new(cfg).unwrap();
            killer.kill(victim).await;
            // Changes while the watcher is away.
            writer.set("/m", b"1", None).await.unwrap();
            writer.set("/m", b"2", None).await.unwrap();
            writer
                .create("/late", b"", CreateMode::Persistent)
                .await
                .unwrap();
            // The watcher's next request moves it; it re-registers and hears of each missed
            // one-shot change once.
            w.sync().await.unwrap();
            assert_ne!(w.server().unwrap(), victim);
            let mut got: Vec<(EventType, String)> = Vec::new();
            for _ in 0..2 {
                let e = next_event(&events).await;
                got.push((e.kind, e.path));
            }
            got.sort_by(|a, b| a.1.cmp(&b.1));
            assert_eq!(
                got,
                vec![
                    (EventType::NodeCreated, "/late".to_string()),
                    (EventType::NodeDataChanged, "/m".to_string()),
                ]
            );
            // The persistent watch was set again on the new node.
            writer
                .create("/p/after", b"", CreateMode::Persistent)
                .await
                .unwrap();
            let e = next_event(&events).await;
            assert_eq!(kind_path(&e), (EventType::NodeCreated, "/p/after"));
            writer.set("/m", b"3", None).await.unwrap();
            w.sync().await.unwrap();
            assert!(events.try_recv().is_err(), "the data watch was consumed");
        }
    });
}

#[test]
fn a_client_that_stops_reading_is_disconnected_not_buffered_for_and_comes_back() {
    use corebus_consensus::txn::WriteOp;
    use std::time::Instant;

    let dir = tempfile::tempdir().unwrap();
    let (addr, node) = start_one(dir.path());
    let (armed_tx, armed_rx) = flume::bounded::<()>(1);
    let (wake_tx, wake_rx) = flume::bounded::<()>(1);
    // A client with a recursive watch whose thread then stops: nothing reads its socket.
    let slow = std::thread::spawn(move || {
        on_executor(async move || {
            let c = Client::new(ClientConfig::new(vec![addr])).unwrap();
            c.create("/flood", b"", CreateMode::Persistent)
                .await
                .unwrap();
            c.add_watch("/flood", true).await.unwrap();
            armed_tx.send(()).unwrap();
            // Blocks this executor's only thread on purpose.
            wake_rx.recv_timeout(Duration::from_secs(300)).unwrap();
            // Back: the client reconnects (its stream was closed) and works.
            c.sync().await.unwrap();
            c.exists("/flood").await.unwrap().is_some()
        })
    });
    armed_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    // Another client changes what it watches, a thousand nodes per commit, until the node
    // says it let the slow one go (past the kernel's socket buffers and the reply queue).
    let batches = on_executor(async move || {
        let w = Client::new(ClientConfig::new(vec![addr])).unwrap();
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut batch = 0u32;
        loop {
            let ops = (0..1000)
                .map(|i| WriteOp::Create {
                    path: format!("/flood/{batch}-{i}"),
                    data: Vec::new(),
                    sequential: false,
                    ephemeral_owner: None,
                })
                .collect();
            w.multi(ops).await.unwrap();
            batch += 1;
            if w.status().await.unwrap().slow_clients_dropped >= 1 {
                return batch;
            }
            assert!(
                Instant::now() < deadline,
                "after {batch} batches the slow client is still being buffered for"
            );
        }
    });
    println!("the slow client was let go after {batches} x 1000 events");
    wake_tx.send(()).unwrap();
    assert!(slow.join().unwrap(), "the slow client works again");
    node.stop().unwrap();
}
