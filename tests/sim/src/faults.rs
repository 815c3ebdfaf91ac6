//! Fault injection: what can go wrong with one notification, chosen per order or
//! drawn from rates with the simulator's seeded RNG (same seed, same operations in
//! the same order → same faults).

use std::time::Duration;

use rand::RngExt as _;
use rand::rngs::StdRng;

/// The faults of one notification. `Faults::default()` is a clean delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Never delivered (only a query finds the change).
    pub drop: bool,
    /// The first attempt is sent twice at once (as from two provider servers).
    pub duplicate: bool,
    /// Payment notifications only: held back until the order's next notification has
    /// been sent once (so the refund arrives first), or at most [`REORDER_HOLD`].
    pub reorder: bool,
    /// Wait this long (unscaled provider time) before the first attempt.
    pub delay: Duration,
    /// The first N attempts carry a corrupted signature (payhook must refuse them;
    /// the resend schedule then delivers a good one).
    pub corrupt_attempts: u32,
    /// WeChat V3: a `WECHATPAY/SIGNTEST/` probe is sent before the notification.
    pub sign_test_probe: bool,
    /// WeChat V3: the first N attempts are signed with a timestamp 10 min old.
    pub stale_attempts: u32,
    /// Alipay: the notification is declared and encoded in GBK.
    pub gbk: bool,
}

/// The longest a reordered payment is held back (unscaled provider time).
pub const REORDER_HOLD: Duration = Duration::from_secs(10 * 60);

impl Faults {
    /// A notification that is never delivered.
    pub fn dropped() -> Self {
        Self {
            drop: true,
            ..Self::default()
        }
    }

    /// The names of the faults set, for the truth and the summary.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.drop, "drop"),
            (self.duplicate, "duplicate"),
            (self.reorder, "reorder"),
            (!self.delay.is_zero(), "delay"),
            (self.corrupt_attempts > 0, "corrupt_signature"),
            (self.sign_test_probe, "sign_test_probe"),
            (self.stale_attempts > 0, "stale_timestamp"),
            (self.gbk, "gbk"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// Probabilities (0..=1) of each fault for every new notification that has no
/// per-order faults. `FaultRates::default()` injects nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    pub drop: f64,
    pub duplicate: f64,
    /// Applies to payments of orders that will be refunded (see [`Faults::reorder`]).
    pub reorder: f64,
    pub delay: f64,
    /// Largest drawn delay (unscaled); delays are uniform in `0..=max_delay`.
    pub max_delay: Duration,
    pub corrupt: f64,
    pub sign_test_probe: f64,
    pub stale_timestamp: f64,
    pub gbk: f64,
}

impl FaultRates {
    /// Draws the faults of one notification. Every rate is drawn, in a fixed order,
    /// whatever the provider, so that the sequence stays reproducible.
    pub(crate) fn draw(&self, rng: &mut StdRng) -> Faults {
        let mut hit = |p: f64| rng.random_bool(p.clamp(0.0, 1.0));
        let drop = hit(self.drop);
        let duplicate = hit(self.duplicate);
        let reorder = hit(self.reorder);
        let delayed = hit(self.delay);
        let corrupt = hit(self.corrupt);
        let sign_test_probe = hit(self.sign_test_probe);
        let stale = hit(self.stale_timestamp);
        let gbk = hit(self.gbk);
        let max_ms = u64::try_from(self.max_delay.as_millis()).unwrap_or(u64::MAX);
        let delay_ms = rng.random_range(0..=max_ms);
        Faults {
            drop,
            duplicate,
            reorder,
            delay: if delayed {
                Duration::from_millis(delay_ms)
            } else {
                Duration::ZERO
            },
            corrupt_attempts: u32::from(corrupt),
            sign_test_probe,
            stale_attempts: u32::from(stale),
            gbk,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let rates = FaultRates {
            drop: 0.3,
            duplicate: 0.3,
            delay: 0.5,
            max_delay: Duration::from_secs(60),
            corrupt: 0.2,
            ..FaultRates::default()
        };
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50).map(|_| rates.draw(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert!(draw(7).iter().any(|f| f.drop) && draw(7).iter().any(|f| !f.drop));
    }

    #[test]
    fn no_rates_no_faults() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_eq!(FaultRates::default().draw(&mut rng), Faults::default());
        }
    }
}
