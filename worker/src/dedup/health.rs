//! Whether Redis is usable, and how often to try it while it is not.
//!
//! While Redis answers, every call goes to it. After a failure we are *degraded*: the
//! worker relies on the database alone, and only one call per probe interval is let
//! through to find out whether Redis is back. Without this, every message would wait
//! the full per-call timeout during an outage — at 16 concurrent messages and a
//! 250 ms timeout, that caps the worker at 64 messages a second for no benefit.
//!
//! Time is passed in, so the rules are tested without a clock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct Health {
    degraded: AtomicBool,
    /// The instant `next_probe_ms` counts from.
    origin: Instant,
    /// While degraded, no call is admitted before this many ms after `origin`.
    next_probe_ms: AtomicU64,
    probe_interval_ms: u64,
}

impl Health {
    pub(super) fn new(origin: Instant, probe_interval: Duration) -> Self {
        Self {
            degraded: AtomicBool::new(false),
            origin,
            next_probe_ms: AtomicU64::new(0),
            probe_interval_ms: millis(probe_interval),
        }
    }

    pub(super) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Whether a call may go to Redis at `now`: always while healthy; while degraded,
    /// the first caller after each probe interval, and no one else.
    pub(super) fn admit(&self, now: Instant) -> bool {
        if !self.is_degraded() {
            return true;
        }
        let now_ms = self.since_origin(now);
        let next = self.next_probe_ms.load(Ordering::Acquire);
        // The compare-exchange elects one prober among concurrent callers.
        now_ms >= next
            && self
                .next_probe_ms
                .compare_exchange(
                    next,
                    now_ms + self.probe_interval_ms,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Records a successful call; true if it ends a degraded period.
    pub(super) fn succeeded(&self) -> bool {
        self.degraded.swap(false, Ordering::AcqRel)
    }

    /// Records a failed call at `now`; true if it starts a degraded period.
    pub(super) fn failed(&self, now: Instant) -> bool {
        self.next_probe_ms.store(
            self.since_origin(now) + self.probe_interval_ms,
            Ordering::Release,
        );
        !self.degraded.swap(true, Ordering::AcqRel)
    }

    fn since_origin(&self, now: Instant) -> u64 {
        millis(now.saturating_duration_since(self.origin))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(1);

    fn at(origin: Instant, ms: u64) -> Instant {
        origin + Duration::from_millis(ms)
    }

    #[test]
    fn healthy_admits_every_call() {
        let t0 = Instant::now();
        let health = Health::new(t0, INTERVAL);
        assert!(!health.is_degraded());
        assert!((0..100).all(|_| health.admit(t0)));
    }

    #[test]
    fn a_failure_degrades_once_and_a_success_recovers_once() {
        let t0 = Instant::now();
        let health = Health::new(t0, INTERVAL);
        assert!(health.failed(t0), "first failure is a transition");
        assert!(!health.failed(t0), "second failure is not");
        assert!(health.is_degraded());
        assert!(health.succeeded(), "first success is a transition");
        assert!(!health.succeeded(), "second success is not");
        assert!(!health.is_degraded());
    }

    #[test]
    fn degraded_admits_one_probe_per_interval() {
        let t0 = Instant::now();
        let health = Health::new(t0, INTERVAL);
        health.failed(t0);
        assert!(!health.admit(at(t0, 10)), "too early after the failure");
        assert!(!health.admit(at(t0, 999)));
        assert!(health.admit(at(t0, 1000)), "one probe after the interval");
        assert!(!health.admit(at(t0, 1000)), "and only one");
        assert!(!health.admit(at(t0, 1999)));
        assert!(health.admit(at(t0, 2000)));
    }

    #[test]
    fn a_failed_probe_restarts_the_interval() {
        let t0 = Instant::now();
        let health = Health::new(t0, INTERVAL);
        health.failed(t0);
        assert!(health.admit(at(t0, 1000)));
        // The probe took the whole timeout before failing.
        health.failed(at(t0, 1250));
        assert!(!health.admit(at(t0, 2000)));
        assert!(health.admit(at(t0, 2250)));
    }
}
