//! The consensus wire protocol: length-prefixed rkyv frames between peers and between clients
//! and nodes, the handshake that opens every connection, and the client request and reply
//! shapes.
//!
//! Owns message shapes and their encoding only; never a socket policy (reconnects, routing,
//! timeouts live in [`crate::runtime`] and [`crate::client`]). Peers speak
//! [`crate::zab::PeerMessage`] itself, so the protocol types have one definition.
//!
//! A connection starts with one [`Hello`] frame from the side that dialled; everything after it
//! is [`crate::zab::PeerMessage`] (peer to peer, one direction per connection) or
//! [`client::Request`] / [`client::Reply`] (client and node).

pub mod client;
pub mod frame;

use crate::types::NodeId;

/// Bumped on any change to a frame's shape; a peer or client with another version is refused.
/// Version 2: sessions (requests, replies, `Touch`, the session table in a SNAP's tree).
/// Version 3: `NodeStatus` carries the leader's view of its followers and the tick.
pub const PROTOCOL_VERSION: u16 = 3;

/// The first frame of a connection: who is calling.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Hello {
    /// A member of the group; the connection carries its messages to us.
    Peer { version: u16, from: NodeId },
    /// A client; requests follow, replies go back on the same connection.
    Client { version: u16 },
}
