//! The cleaner's I/O throttle: `log.cleaner.io.max.bytes.per.second`, read and write bytes
//! together, as Kafka's `Throttler` counts them.
//!
//! Owns: sleeping (a glommio timer, never a blocking sleep) when the bytes done since the
//! clean started are ahead of the allowed rate. Never: throttles the produce or fetch path.

use std::time::{Duration, Instant};

pub(crate) struct Throttle {
    bytes_per_second: f64,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    /// A throttle at `bytes_per_second` (infinite, NaN or non-positive: unlimited).
    pub(crate) fn new(bytes_per_second: f64) -> Throttle {
        Throttle {
            bytes_per_second,
            started: Instant::now(),
            bytes: 0,
        }
    }

    fn unlimited(&self) -> bool {
        !(self.bytes_per_second.is_finite() && self.bytes_per_second > 0.0)
    }

    /// How long to wait after `bytes` more at `elapsed` since the start.
    pub(crate) fn delay_after(&mut self, bytes: u64, elapsed: Duration) -> Duration {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.unlimited() {
            return Duration::ZERO;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_second);
        due.saturating_sub(elapsed)
    }

    /// Accounts `bytes` of cleaner I/O and sleeps if they came too fast.
    pub(crate) async fn account(&mut self, bytes: u64) {
        let wait = self.delay_after(bytes, self.started.elapsed());
        if !wait.is_zero() {
            glommio::timer::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_when_ahead_of_the_rate() {
        let mut t = Throttle::new(1_000_000.0);
        assert_eq!(
            t.delay_after(500_000, Duration::from_millis(100)),
            Duration::from_millis(400)
        );
        assert_eq!(
            t.delay_after(500_000, Duration::from_secs(2)),
            Duration::ZERO
        );
        let mut unlimited = Throttle::new(f64::MAX * 10.0);
        assert_eq!(
            unlimited.delay_after(u64::MAX, Duration::ZERO),
            Duration::ZERO
        );
    }
}
