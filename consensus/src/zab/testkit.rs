//! Helpers for the protocol's unit tests: drive a [`Node`] by hand and read what it sent.

use crate::meta::Epochs;
use crate::store::Recovered;
use crate::tree::DataTree;
use crate::types::NodeId;
use crate::zab::{Config, Fault, Input, Node, Output, PeerMessage};

/// A fresh node `id` of the group `members`, with nothing on disk.
pub fn fresh_node(id: u64, members: &[u64], fault: Fault) -> Node {
    let mut cfg = Config::new(NodeId(id), members.iter().map(|m| NodeId(*m)).collect());
    cfg.fault = fault;
    let recovered = Recovered {
        epochs: Epochs::default(),
        tree: DataTree::new(),
        log: vec![],
    };
    Node::new(cfg, recovered)
}

/// Delivers `msg` from `from`; returns the outputs.
pub fn peer(node: &mut Node, from: u64, msg: PeerMessage) -> Vec<Output> {
    let mut out = vec![];
    node.step(
        Input::Peer {
            from: NodeId(from),
            msg,
        },
        &mut out,
    );
    out
}

/// The messages sent (to `to` only, if given).
pub fn sent(out: &[Output], to: Option<u64>) -> Vec<&PeerMessage> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to: t, msg } if to.is_none_or(|to| *t == NodeId(to)) => Some(msg),
            _ => None,
        })
        .collect()
}
