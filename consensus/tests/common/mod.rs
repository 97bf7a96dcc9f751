//! What the real-runtime tests share: addresses, an executor per test step, node start-up.
// Each test binary uses a part of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use corebus_consensus::runtime::{ConsensusNode, RuntimeConfig, StartError};
use corebus_consensus::types::NodeId;
use glommio::{LocalExecutorBuilder, Placement};

pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn on_executor<T: Send + 'static>(f: impl AsyncFnOnce() -> T + Send + 'static) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move { f().await })
        .unwrap()
        .join()
        .unwrap()
}

pub fn start(id: u64, members: &BTreeMap<NodeId, SocketAddr>, dir: &Path) -> ConsensusNode {
    let cfg = RuntimeConfig::new(
        NodeId(id),
        members.clone(),
        members[&NodeId(id)],
        dir.join(format!("n{id}")),
    );
    ConsensusNode::start(cfg).unwrap()
}

/// Tries at starting a group on fresh addresses.
const GROUP_START_ATTEMPTS: u32 = 5;

/// A group of `count` nodes on free addresses, all started. An address `free_addr` chose can
/// be taken before its node binds it (by another test running at the same time, or by an
/// outgoing connection of the group's first nodes): the group then starts over on fresh
/// addresses with empty directories.
pub fn start_group(
    count: u64,
    dir: &Path,
) -> (BTreeMap<NodeId, SocketAddr>, BTreeMap<u64, ConsensusNode>) {
    for attempt in 1..=GROUP_START_ATTEMPTS {
        let members: BTreeMap<NodeId, SocketAddr> =
            (1..=count).map(|i| (NodeId(i), free_addr())).collect();
        let mut nodes = BTreeMap::new();
        let mut taken = false;
        for i in 1..=count {
            let cfg = RuntimeConfig::new(
                NodeId(i),
                members.clone(),
                members[&NodeId(i)],
                dir.join(format!("n{i}")),
            );
            match ConsensusNode::start(cfg) {
                Ok(node) => {
                    nodes.insert(i, node);
                }
                Err(StartError::Bind { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse
                        && attempt < GROUP_START_ATTEMPTS =>
                {
                    taken = true;
                    break;
                }
                Err(e) => panic!("cannot start consensus node {i}: {e}"),
            }
        }
        if !taken {
            return (members, nodes);
        }
        for (_, node) in nodes {
            let _ = node.stop();
        }
        for i in 1..=count {
            let _ = std::fs::remove_dir_all(dir.join(format!("n{i}")));
        }
    }
    unreachable!("the last attempt panics on its error")
}

/// Lets a test running on its own executor stop one node of the group by its address.
pub struct Killer {
    ask: flume::Sender<SocketAddr>,
    done: flume::Receiver<()>,
}

impl Killer {
    /// Returns once the node at `addr` is stopped.
    pub async fn kill(&self, addr: SocketAddr) {
        self.ask.send_async(addr).await.unwrap();
        self.done.recv_async().await.unwrap();
    }
}

/// Runs `test` on an executor thread of its own, stopping the one node it names; stops
/// the others when it is done.
pub fn with_one_killed(
    mut nodes: BTreeMap<u64, ConsensusNode>,
    test: impl AsyncFnOnce(Killer) + Send + 'static,
) {
    let (ask, asked) = flume::bounded::<SocketAddr>(1);
    let (done_tx, done) = flume::bounded::<()>(1);
    let tester =
        std::thread::spawn(move || on_executor(async move || test(Killer { ask, done }).await));
    if let Ok(victim) = asked.recv() {
        let id = *nodes
            .iter()
            .find(|(_, n)| n.local_addr() == victim)
            .expect("the victim is a member")
            .0;
        nodes.remove(&id).unwrap().stop().unwrap();
        done_tx.send(()).unwrap();
    }
    tester.join().unwrap();
    for (_, n) in nodes {
        n.stop().unwrap();
    }
}

/// A group of one, serving.
pub fn start_one(dir: &Path) -> (SocketAddr, ConsensusNode) {
    let addr = free_addr();
    let members = BTreeMap::from([(NodeId(1), addr)]);
    let node = start(1, &members, dir);
    assert!(
        node.wait_serving(std::time::Duration::from_secs(10)),
        "a group of one elects itself"
    );
    (addr, node)
}
