//! Sessions over real TCP and real files: an ephemeral node lives exactly as long as its
//! session (heartbeats keep it, a close or an expiry removes it), and a session survives the
//! death of the node it is connected to.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{on_executor, start_group, start_one, with_one_killed};
use corebus_consensus::client::{Client, ClientConfig, CreateMode, Error};

fn session_client(servers: Vec<SocketAddr>, timeout_ms: u64) -> Client {
    let mut cfg = ClientConfig::new(servers);
    cfg.session_timeout_ms = Some(timeout_ms);
    Client::new(cfg).unwrap()
}

/// Waits until `path` is gone as `observer` sees it; returns how long that took.
async fn until_gone(observer: &Client, path: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        observer.sync().await.unwrap();
        if observer.exists(path).await.unwrap().is_none() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{path} still there after {limit:?}"
        );
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn an_ephemeral_lives_as_long_as_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, node) = start_one(dir.path());
    on_executor(async move || {
        let observer = Client::new(ClientConfig::new(vec![addr])).unwrap();
        observer
            .create("/q", b"", CreateMode::Persistent)
            .await
            .unwrap();
        // A timeout outside the group's bounds (200 ms to 60 s) is clamped.
        let s = session_client(vec![addr], 600_000);
        let handle = s.open_session().await.unwrap();
        assert_eq!(handle.timeout_ms, 60_000);
        let s = session_client(vec![addr], 500);
        s.create("/e", b"mine", CreateMode::Ephemeral)
            .await
            .unwrap();
        let seq = s
            .create("/q/n-", b"", CreateMode::EphemeralSequential)
            .await
            .unwrap();
        assert_eq!(seq, "/q/n-0000000000");
        let id = s.session().unwrap().id;
        let stat = observer.exists("/e").await.unwrap().unwrap();
        assert_eq!(stat.ephemeral_owner, Some(id));
        // Idle for three timeouts: the heartbeat alone keeps the session.
        glommio::timer::sleep(Duration::from_millis(1_500)).await;
        assert!(observer.exists("/e").await.unwrap().is_some());
        // Ephemeral nodes take no children; a client without a session makes none.
        assert!(matches!(
            s.create("/e/x", b"", CreateMode::Persistent).await,
            Err(Error::Tree { .. })
        ));
        assert_eq!(
            observer.create("/o", b"", CreateMode::Ephemeral).await,
            Err(Error::NoSession)
        );
        // A clean close removes them at once.
        s.close_session().await.unwrap();
        assert_eq!(observer.exists("/e").await.unwrap(), None);
        assert_eq!(observer.children("/q").await.unwrap(), Vec::<String>::new());
        assert!(matches!(
            s.create("/e", b"", CreateMode::Ephemeral).await,
            Err(Error::SessionExpired { .. })
        ));

        // A client that dies (dropped: nothing more is sent) loses its node within the
        // bound: timeout + one ping interval (100 ms) + a tick + a commit.
        let d = session_client(vec![addr], 300);
        d.create("/d", b"", CreateMode::Ephemeral).await.unwrap();
        let dead_at = Instant::now();
        drop(d);
        let gone = until_gone(&observer, "/d", Duration::from_secs(10)).await;
        eprintln!(
            "ephemeral of a dead client (timeout 300 ms) gone after {} ms",
            gone.as_millis()
        );
        // The timeout counts from the session's last heartbeat, which can be up to one ping
        // interval (100 ms) and a tick before the drop: never sooner than that.
        assert!(
            dead_at.elapsed() >= Duration::from_millis(300 - 100 - 10),
            "not before the timeout"
        );
        assert!(
            gone < Duration::from_millis(300 + 100 + 10 + 1_000),
            "{gone:?}"
        );

        // A client paused past its timeout (a stalled process) is told its session expired.
        let p = session_client(vec![addr], 300);
        p.create("/p", b"", CreateMode::Ephemeral).await.unwrap();
        std::thread::sleep(Duration::from_millis(1_500));
        until_gone(&observer, "/p", Duration::from_secs(10)).await;
        assert!(matches!(
            p.create("/p", b"", CreateMode::Ephemeral).await,
            Err(Error::SessionExpired { .. })
        ));
        assert!(matches!(
            p.get("/").await,
            Err(Error::SessionExpired { .. })
        ));
        // Renewed, the same client holds a new session: its old ephemeral stays gone, new
        // ones belong to the new session, and its watches still fire.
        let old = p.session();
        assert_eq!(old, None);
        assert!(p.exists_watch("/w").await.is_err());
        let renewed = p.renew_session().await.unwrap();
        assert_eq!(p.session(), Some(renewed));
        assert_eq!(p.exists("/p").await.unwrap(), None);
        assert!(p.exists_watch("/w").await.unwrap().is_none());
        p.create("/p", b"again", CreateMode::Ephemeral)
            .await
            .unwrap();
        let stat = observer.exists("/p").await.unwrap().unwrap();
        assert_eq!(stat.ephemeral_owner, Some(renewed.id));
        observer
            .create("/w", b"", CreateMode::Persistent)
            .await
            .unwrap();
        let event = glommio::timer::timeout(Duration::from_secs(10), async {
            Ok(p.events().recv_async().await.unwrap())
        })
        .await
        .unwrap();
        assert_eq!(event.path, "/w");
        // The heartbeat keeps the renewed session alive past its timeout.
        glommio::timer::sleep(Duration::from_millis(1_000)).await;
        assert!(observer.exists("/p").await.unwrap().is_some());
        // A live session is left as it is.
        assert_eq!(p.renew_session().await.unwrap(), renewed);
        p.close_session().await.unwrap();
        assert_eq!(observer.exists("/p").await.unwrap(), None);
        // A closed session can be renewed too.
        let again = p.renew_session().await.unwrap();
        assert_ne!(again.id, renewed.id);
    });
    node.stop().unwrap();
}

#[test]
fn a_session_moves_off_a_dead_node_and_its_ephemeral_never_disappears() {
    let dir = tempfile::tempdir().unwrap();
    let (members, nodes) = start_group(3, dir.path());
    let a: Vec<SocketAddr> = members.values().copied().collect();
    with_one_killed(nodes, async move |killer| {
        {
            let s = session_client(a.clone(), 2_000);
            s.create("/e", b"", CreateMode::Ephemeral).await.unwrap();
            let id = s.session().unwrap().id;
            let victim = s.server().unwrap();
            let others: Vec<SocketAddr> = a.iter().copied().filter(|x| *x != victim).collect();
            let mut cfg = ClientConfig::new(others);
            cfg.request_timeout_ms = 30_000;
            let observer = Client::new(cfg).unwrap();
            assert!(observer.exists("/e").await.unwrap().is_some());
            killer.kill(victim).await;
            // Three timeouts after the node died: the node is there at every look.
            let start = Instant::now();
            let mut looks = 0;
            while start.elapsed() < Duration::from_secs(6) {
                let stat = observer.exists("/e").await.unwrap();
                assert!(stat.is_some(), "ephemeral gone after {:?}", start.elapsed());
                looks += 1;
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            assert!(looks > 10);
            let now = s.server().expect("reconnected");
            assert_ne!(now, victim, "moved to another node");
            assert_eq!(s.session().unwrap().id, id, "the same session");
            s.create("/e2", b"", CreateMode::Ephemeral).await.unwrap();
            s.close_session().await.unwrap();
            observer.sync().await.unwrap();
            assert_eq!(observer.exists("/e").await.unwrap(), None);
            assert_eq!(observer.exists("/e2").await.unwrap(), None);
        }
    });
}
