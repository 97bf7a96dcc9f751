//! The tick timer: tells the driver how many protocol ticks have elapsed.
//!
//! Owns the wall clock. Counts ticks from a monotonic start, so a stalled executor catches up
//! with one event carrying several ticks (timeouts measure real time); never feeds more ticks
//! than have elapsed.

use std::time::{Duration, Instant};

use super::driver::Event;

pub(crate) async fn run(tick: Duration, events: flume::Sender<Event>) {
    let start = Instant::now();
    let mut fed: u128 = 0;
    loop {
        glommio::timer::sleep(tick).await;
        let due = start.elapsed().as_nanos() / tick.as_nanos().max(1);
        let n = due.saturating_sub(fed).min(u128::from(u32::MAX)) as u32;
        if n == 0 {
            continue;
        }
        fed = due;
        if events.send_async(Event::Ticks(n)).await.is_err() {
            return;
        }
    }
}
