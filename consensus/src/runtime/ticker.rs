//! The tick timer: tells the driver how many protocol ticks have elapsed.
//!
//! Owns the wall clock. Counts ticks from a monotonic start, so a stalled executor catches up
//! with one event carrying several ticks (timeouts measure real time); never feeds more ticks
//! than have elapsed. A wake-up late by more than [`STALL_WARN_MS`] is logged: the whole
//! executor was held up (a task that did not yield, a descheduled thread), which is what
//! makes peers look silent.

use std::time::{Duration, Instant};

use tracing::warn;

use super::driver::Event;

/// A timer wake-up this late is worth a warning.
const STALL_WARN_MS: u128 = 250;

pub(crate) async fn run(tick: Duration, events: flume::Sender<Event>) {
    let start = Instant::now();
    let mut fed: u128 = 0;
    loop {
        let slept = Instant::now();
        glommio::timer::sleep(tick).await;
        let late = slept.elapsed().saturating_sub(tick).as_millis();
        if late >= STALL_WARN_MS {
            warn!(
                late_ms = late as u64,
                "consensus: the executor was held up (timer woke late)"
            );
        }
        let due = start.elapsed().as_nanos() / tick.as_nanos().max(1);
        let n = due.saturating_sub(fed).min(u128::from(u32::MAX)) as u32;
        if n == 0 {
            continue;
        }
        fed = due;
        let sending = Instant::now();
        if events.send_async(Event::Ticks(n)).await.is_err() {
            return;
        }
        let waited = sending.elapsed().as_millis();
        if waited >= STALL_WARN_MS {
            warn!(
                waited_ms = waited as u64,
                "consensus: the protocol queue was full for the timer"
            );
        }
    }
}
