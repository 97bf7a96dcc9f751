//! What the real-runtime tests share: addresses, an executor per test step, node start-up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use corebus_consensus::runtime::{ConsensusNode, RuntimeConfig};
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
