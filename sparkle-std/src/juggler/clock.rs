//! Time, injected: the system clock in use, a hand-advanced one in tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Seconds since an arbitrary origin.
pub trait Clock: Send + Sync {
    /// Now, in seconds.
    fn now(&self) -> f64;
}

/// The monotonic system clock.
#[derive(Debug)]
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// A clock that moves only when told to (nanosecond resolution).
#[derive(Debug, Default)]
pub struct FakeClock(AtomicU64);

impl FakeClock {
    /// Moves time forward by `seconds`.
    pub fn advance(&self, seconds: f64) {
        self.0.fetch_add((seconds.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64 * 1e-9
    }
}
