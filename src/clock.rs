//! Where the engine reads the time. Grace periods, expiry, usage hours,
//! the staleness bound of a shared store and plugin backoff all ask the
//! store's clock, so that an application's tests (and keyward's) can move
//! time by hand instead of sleeping.
//!
//! A clock tells two times: the wall clock (`now`: expiry, grace, usage
//! hours) and a monotonic one (`monotonic`: how long since something
//! happened, such as the last confirmed sync). Stepping the wall clock back
//! (NTP, an operator) moves `now` but never `monotonic`, so it cannot turn
//! off the staleness bound.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::time::Timestamp;

/// A source of the current time for a store ([`Options::clock`](crate::Options::clock)).
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, on the wall clock.
    fn now(&self) -> Timestamp;

    /// Time since a fixed instant of this process, never going back. The
    /// default reads the system's monotonic clock.
    fn monotonic(&self) -> Duration {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed()
    }
}

/// The system's wall clock: the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to: for tests of grace periods,
/// expiry, backoff and staleness. [`advance`](ManualClock::advance) moves
/// both its times; [`set`](ManualClock::set) moves the wall clock only, as
/// a step of the system clock would.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use keyward::{Clock, ManualClock, Timestamp};
///
/// let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(1_000)));
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now().unix_millis(), 3_000);
/// ```
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicI64,
    monotonic_ms: AtomicU64,
}

impl ManualClock {
    /// A clock standing at `start`.
    #[must_use]
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            ms: AtomicI64::new(start.unix_millis()),
            monotonic_ms: AtomicU64::new(0),
        }
    }

    /// A clock standing at the system's current time.
    #[must_use]
    pub fn starting_now() -> Self {
        Self::new(Timestamp::now())
    }

    /// Moves the clock forward by `by` (the wall clock and the monotonic one).
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.ms.fetch_add(ms, Ordering::AcqRel);
        self.monotonic_ms
            .fetch_add(ms.unsigned_abs(), Ordering::AcqRel);
    }

    /// Puts the wall clock at `to` (forward or back); the monotonic clock
    /// does not move.
    pub fn set(&self, to: Timestamp) {
        self.ms.store(to.unix_millis(), Ordering::Release);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.ms.load(Ordering::Acquire))
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.monotonic_ms.load(Ordering::Acquire))
    }
}
