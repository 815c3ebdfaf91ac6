//! The clock, injected so that timestamp windows are testable without sleeping.

use std::fmt;

use time::OffsetDateTime;

/// A source of "now". Production uses [`SystemClock`]; tests use [`FixedClock`].
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> OffsetDateTime;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock frozen at one instant (unit tests, replaying SDK vectors).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub OffsetDateTime);

impl FixedClock {
    /// A clock at the given Unix time in seconds.
    pub fn at_unix(secs: i64) -> Self {
        Self(OffsetDateTime::from_unix_timestamp(secs).expect("valid unix timestamp"))
    }
}

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}
