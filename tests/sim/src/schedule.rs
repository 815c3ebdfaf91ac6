//! The providers' resend schedules and the time scale that makes a day of resends
//! last seconds.

use std::time::Duration;

use payhook_shared::event::Provider;

const MIN: u64 = 60;
const HOUR: u64 = 3600;

/// Alipay: after the first attempt, resends at these intervals (docs/protocols.md §1).
pub const ALIPAY: [Duration; 7] = secs([
    4 * MIN,
    10 * MIN,
    10 * MIN,
    HOUR,
    2 * HOUR,
    6 * HOUR,
    15 * HOUR,
]);

/// WeChat Pay (V2 and V3): after the first attempt, resends at these intervals
/// (24 h 4 min in all, docs/protocols.md §3).
pub const WECHAT: [Duration; 15] = secs([
    15,
    15,
    30,
    3 * MIN,
    10 * MIN,
    20 * MIN,
    30 * MIN,
    30 * MIN,
    30 * MIN,
    60 * MIN,
    3 * HOUR,
    3 * HOUR,
    3 * HOUR,
    6 * HOUR,
    6 * HOUR,
]);

const fn secs<const N: usize>(list: [u64; N]) -> [Duration; N] {
    let mut out = [Duration::ZERO; N];
    let mut i = 0;
    while i < N {
        out[i] = Duration::from_secs(list[i]);
        i += 1;
    }
    out
}

/// The intervals between attempts of `provider` (unscaled).
pub fn intervals(provider: Provider) -> &'static [Duration] {
    match provider {
        Provider::Alipay => &ALIPAY,
        Provider::WechatV2 | Provider::WechatV3 => &WECHAT,
    }
}

/// Provider time to real time: `0.001` makes Alipay's 4 min 240 ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeScale(pub f64);

impl TimeScale {
    pub fn apply(self, provider_time: Duration) -> Duration {
        if self.0.is_finite() && self.0 > 0.0 {
            provider_time.mul_f64(self.0)
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wechat_schedule_spans_24_hours_and_4_minutes() {
        let total: Duration = WECHAT.iter().sum();
        assert_eq!(total, Duration::from_secs(24 * HOUR + 4 * MIN));
        assert_eq!(ALIPAY.len() + 1, 8, "about 8 attempts in all");
    }

    #[test]
    fn time_scale_shrinks_provider_time() {
        assert_eq!(
            TimeScale(0.001).apply(ALIPAY[0]),
            Duration::from_millis(240)
        );
        assert_eq!(TimeScale(0.0).apply(ALIPAY[0]), Duration::ZERO);
    }
}
