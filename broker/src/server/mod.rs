//! The network front: the exclusive listen-address check (`listener`), the accept loop of each
//! shard (here), the per-connection request pipeline (`connection`), the order in which
//! its requests take effect (`order`) and the signal its requests see when it ends
//! (`closing`).
//!
//! Never: handles a Kafka API itself (handlers do); moves a connection between shards (a
//! connection stays on the shard that accepted it).

pub mod admission;
pub mod closing;
pub mod connection;
pub mod gather;
pub mod listener;
pub mod order;
pub mod pieces;
pub mod split;

use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpListener;
use tracing::{Instrument, debug, info_span, warn};

use crate::shard::Shard;

/// Pause after an accept error (out of file descriptors, say) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 100;

/// Accepts connections on this shard's listener until shutdown.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shard.shutdown.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                continue;
            }
        };
        let peer = match stream.peer_addr() {
            Ok(p) => p,
            Err(_) => continue, // already gone
        };
        match shard.connections.admit(peer.ip()) {
            Ok(()) => {}
            Err(admission::Refused::Node { max }) => {
                shard.count(|m| m.connections_refused_node += 1);
                warn!(%peer, max, "max.connections reached; closing the new connection");
                continue;
            }
            Err(admission::Refused::Address { max }) => {
                // Per connection at debug only: a client retrying in a loop would flood the
                // log; the counter shows it.
                shard.count(|m| m.connections_refused_address += 1);
                debug!(%peer, max, "max.connections.per.ip reached for this address; closing the new connection");
                continue;
            }
        }
        shard.count(|m| m.connections_accepted += 1);
        let span = info_span!("conn", %peer, shard = shard.id.0);
        let s = shard.clone();
        let spawned = shard.tasks.spawn(
            async move {
                connection::serve_connection(s.clone(), stream, peer).await;
                s.connections.release(peer.ip());
            }
            .instrument(span),
        );
        match spawned {
            Ok(task) => {
                task.detach();
            }
            Err(_) => {
                // The gate is closing: shutdown won the race with this accept.
                shard.connections.release(peer.ip());
                return;
            }
        }
    }
}
