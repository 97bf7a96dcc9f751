//! A connection's end as its requests see it: the connection holds a [`Closer`] while its
//! reader runs and drops it when the reader ends (the peer closed, a read failed or timed
//! out, a frame was refused, the shard is stopping); its requests hold [`Closed`] and a request
//! that only waits before answering (a parked Fetch) stops waiting then, since no one will
//! read its answer. As Kafka's broker, a connection whose peer closed its side is done.
//!
//! Owns: `Closer`, `Closed`, [`pair`]. Never: cancels a request that changes state (a Produce
//! runs to its end whatever the connection does); is fired by anything but the drop of the
//! `Closer`.

/// Held by the connection while it reads; dropping it tells every [`Closed`] of it.
pub struct Closer {
    // Nothing is ever sent: receivers see the channel disconnect when this is dropped.
    _fire: flume::Sender<()>,
}

/// A request's view of its connection's end. `Send`, so a wait on another shard can watch it.
#[derive(Clone)]
pub struct Closed {
    watch: flume::Receiver<()>,
}

/// A new connection's signal, not yet fired.
pub fn pair() -> (Closer, Closed) {
    let (tx, rx) = flume::bounded(1);
    (Closer { _fire: tx }, Closed { watch: rx })
}

impl Closed {
    pub fn is_closed(&self) -> bool {
        self.watch.is_disconnected()
    }

    /// Completes once the connection's reader has ended.
    pub async fn wait(&self) {
        let _ = self.watch.recv_async().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_when_the_closer_is_dropped_and_not_before() {
        let (closer, closed) = pair();
        let seen = closed.clone();
        assert!(!closed.is_closed());
        drop(closer);
        assert!(closed.is_closed() && seen.is_closed());
        // Waiting after the fact returns at once.
        futures_lite::future::block_on(seen.wait());
    }
}
