//! The order in which one connection's requests take effect: Kafka's broker handles a
//! connection's requests one at a time (it stops reading the socket until the response is
//! sent), and clients rely on it (a DeleteRecords followed by a ListOffsets on one connection
//! must see the new log start). Here requests are read ahead and pipelined, so each one waits
//! for its predecessor's [`Turn`] before it starts, and passes its own on once its effects are
//! applied: at its end for most APIs, and for Produce once every append is in its log, so that
//! waiting for durability (acks=all) still overlaps with the requests after it.
//!
//! Owns that hand-over only. Never: orders responses (the connection's writer does); lets a
//! request start before the one read before it passed its turn on; loses a turn (a dropped
//! [`Turn`] passes itself on, so a request that fails or is cancelled cannot stall the ones
//! after it).

use std::rc::Rc;

use glommio::sync::Semaphore;

/// One connection's sequence of requests that run handlers.
#[derive(Default)]
pub struct Order {
    /// The turn the next request waits for: the last one's.
    last: Option<Rc<Semaphore>>,
}

/// What a request waits for before it starts: the turn of the request read before it.
pub struct Wait(Option<Rc<Semaphore>>);

impl Wait {
    /// Returns once the request before this one passed its turn on.
    pub async fn done(self) {
        if let Some(s) = self.0 {
            // The semaphore is never closed; an error could only mean that, so go on.
            let _ = s.acquire(1).await;
        }
    }
}

/// A request's permission for the next request of its connection to start.
pub struct Turn {
    next: Option<Rc<Semaphore>>,
}

impl Order {
    /// The place of the next request that runs a handler: what it waits for, and the turn it
    /// passes on. Requests answered without a handler (a version fallback, a close) take no
    /// place, so the request after them waits for the one before them.
    pub fn place(&mut self) -> (Wait, Turn) {
        let mine = Rc::new(Semaphore::new(0));
        let before = self.last.replace(mine.clone());
        (Wait(before), Turn { next: Some(mine) })
    }
}

impl Turn {
    /// This request's effects are applied: the next request may start.
    pub fn pass(&mut self) {
        if let Some(s) = self.next.take() {
            s.signal(1);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.pass();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn requests_start_in_order_and_a_dropped_turn_passes_itself_on() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                let log = Rc::new(RefCell::new(Vec::new()));
                let mut order = Order::default();
                let mut tasks = Vec::new();
                for i in 0..4u32 {
                    let (wait, mut turn) = order.place();
                    let log = log.clone();
                    tasks.push(glommio::spawn_local(async move {
                        wait.done().await;
                        log.borrow_mut().push(format!("start {i}"));
                        // Later requests are slower to reach their effect: without the
                        // turns, they would start (and log) out of order.
                        glommio::timer::sleep(std::time::Duration::from_millis(
                            u64::from(4 - i) * 5,
                        ))
                        .await;
                        log.borrow_mut().push(format!("effect {i}"));
                        if i % 2 == 0 {
                            turn.pass();
                            log.borrow_mut().push(format!("after {i}"));
                        }
                        // Odd requests drop their turn at the end instead.
                    }));
                }
                for t in tasks {
                    t.await;
                }
                let log = log.borrow();
                for i in 0..4 {
                    let start = log.iter().position(|l| l == &format!("start {i}")).unwrap();
                    let effect = log
                        .iter()
                        .position(|l| l == &format!("effect {i}"))
                        .unwrap();
                    assert!(start < effect);
                    if i > 0 {
                        let before = log
                            .iter()
                            .position(|l| l == &format!("effect {}", i - 1))
                            .unwrap();
                        assert!(before < start, "{log:?}");
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
