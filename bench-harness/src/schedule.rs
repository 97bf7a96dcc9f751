//! The open-loop rate scheduler: when each message is meant to be sent.
//!
//! Owns: the intended send time of message `i` of a producer (`start + phase + i / rate`),
//! how many messages are due at a given instant, and when the next one is.
//! Never: looks at when messages were actually sent. That is the point: a stalled broker
//! does not stall the schedule, so the time a message waited to be sent counts in its
//! latency (coordinated omission corrected, as wrk2 and OMB do).

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    interval_ns: f64,
    next_index: u64,
}

impl Schedule {
    /// `per_second` messages per second from `start` (already including this producer's
    /// phase offset).
    pub fn new(start: Instant, per_second: f64) -> Schedule {
        Schedule {
            start,
            interval_ns: 1e9 / per_second,
            next_index: 0,
        }
    }

    /// A phase offset spreading `count` producers of one rate evenly over one interval, so
    /// they do not all send at the same instant.
    pub fn phase(per_second: f64, producer: usize, count: usize) -> Duration {
        let interval_ns = 1e9 / per_second;
        Duration::from_nanos((interval_ns * producer as f64 / count.max(1) as f64) as u64)
    }

    /// The intended send time of message `index`.
    pub fn intended(&self, index: u64) -> Instant {
        self.start + Duration::from_nanos((self.interval_ns * index as f64) as u64)
    }

    /// When the next message is due.
    pub fn next_due(&self) -> Instant {
        self.intended(self.next_index)
    }

    /// The next message if it is due at `now`: its index and intended send time.
    pub fn take_due(&mut self, now: Instant) -> Option<(u64, Instant)> {
        let intended = self.next_due();
        if intended > now {
            return None;
        }
        let index = self.next_index;
        self.next_index += 1;
        Some((index, intended))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_follow_the_rate_not_the_sender() {
        let start = Instant::now();
        let mut s = Schedule::new(start, 1000.0);
        // Nothing is due before the start.
        assert!(s.take_due(start - Duration::from_millis(1)).is_none());
        assert_eq!(s.take_due(start).unwrap(), (0, start));
        assert!(s.take_due(start + Duration::from_micros(999)).is_none());
        // The sender stalls for 10 ms: the 10 messages it missed are all due at once, each
        // with its own intended time, so their latency counts the stall.
        let late = start + Duration::from_millis(10);
        let mut taken = Vec::new();
        while let Some((i, t)) = s.take_due(late) {
            taken.push((i, t.duration_since(start).as_micros()));
        }
        assert_eq!(taken.len(), 10);
        assert_eq!(taken[0], (1, 1000));
        assert_eq!(taken[9], (10, 10_000));
        assert_eq!(
            s.next_due().duration_since(start),
            Duration::from_millis(11)
        );
    }

    #[test]
    fn fractional_rates_do_not_drift() {
        let start = Instant::now();
        let s = Schedule::new(start, 3.0);
        // 3 per second: message 3 is exactly one second in, not 999 999 999 ns.
        let t = s.intended(3).duration_since(start);
        assert!(t >= Duration::from_millis(999) && t <= Duration::from_millis(1000));
        assert_eq!(s.intended(300).duration_since(start).as_secs(), 100);
    }

    #[test]
    fn phases_spread_producers_over_one_interval() {
        assert_eq!(Schedule::phase(1000.0, 0, 4), Duration::ZERO);
        assert_eq!(Schedule::phase(1000.0, 2, 4), Duration::from_micros(500));
        assert!(Schedule::phase(1000.0, 3, 4) < Duration::from_millis(1));
    }
}
