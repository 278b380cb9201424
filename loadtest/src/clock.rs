//! The run's one clock: every timestamp in the load generator is nanoseconds since a
//! single origin `Instant` shared by all workers, so a send time stamped on one core can
//! be compared with a receive time read on another.

use std::time::{Duration, Instant};

/// Nanoseconds since the run's origin; fits a message header as a plain `u64`.
pub type Nanos = u64;

/// The shared origin. `Copy`, so every worker and task carries its own.
#[derive(Clone, Copy, Debug)]
pub struct RunClock {
    /// The moment the run started; all `Nanos` count from here.
    origin: Instant,
}

impl RunClock {
    /// Starts the clock now.
    pub fn start() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// Nanoseconds elapsed since the origin.
    pub fn now(&self) -> Nanos {
        duration_nanos(self.origin.elapsed())
    }

    /// The std `Instant` for a point on this clock (for sleeping until it).
    pub fn instant_at(&self, at: Nanos) -> Instant {
        self.origin + Duration::from_nanos(at)
    }

    /// Sleeps the current task until `at` (no-op when it is already past).
    pub async fn sleep_until(&self, at: Nanos) {
        let deadline = monoio::time::Instant::from_std(self.instant_at(at));
        monoio::time::sleep_until(deadline).await;
    }
}

/// A duration as `Nanos`, saturating (a run is never 584 years long).
pub fn duration_nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Microseconds between two points, for histograms (which record µs like the relay).
pub fn micros_between(earlier: Nanos, later: Nanos) -> u64 {
    later.saturating_sub(earlier) / 1_000
}
