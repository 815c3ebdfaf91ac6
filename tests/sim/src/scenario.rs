//! A seeded scenario of orders for `payhook-sim run`: orders spread over the
//! providers, most paid, some refunded (partially, some fully), some closed unpaid,
//! some Alipay trades finished. The same seed gives the same scenario.

use payhook_shared::event::Provider;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use super::{SimError, Simulator};

/// What to play.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub orders: usize,
    /// Providers, used in turn.
    pub providers: Vec<Provider>,
    /// Prefix of the `out_trade_no`s (make it unique per run against one database).
    pub order_prefix: String,
    /// Share of paid orders refunded (a third; half of those then refund the rest).
    pub refund_rate: f64,
    /// Share of orders closed unpaid instead of paid.
    pub close_rate: f64,
    /// Share of paid Alipay orders that end with `TRADE_FINISHED`.
    pub finish_rate: f64,
    pub seed: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            orders: 10,
            providers: Provider::ALL.to_vec(),
            order_prefix: "sim".into(),
            refund_rate: 0.3,
            close_rate: 0.1,
            finish_rate: 0.1,
            seed: 0,
        }
    }
}

/// Plays `scenario` on `sim` (notifications then deliver in the background).
pub fn play(sim: &Simulator, scenario: &Scenario) -> Result<(), SimError> {
    let mut rng = StdRng::seed_from_u64(scenario.seed);
    for i in 0..scenario.orders {
        let Some(&provider) = scenario.providers.get(i % scenario.providers.len().max(1)) else {
            return Ok(());
        };
        let order = format!("{}-{i:05}", scenario.order_prefix);
        let amount = rng.random_range(1..=100_000);
        sim.create_order(provider, &order, amount)?;
        if rng.random_bool(scenario.close_rate.clamp(0.0, 1.0)) {
            sim.close(provider, &order)?;
            continue;
        }
        sim.pay(provider, &order)?;
        if amount >= 3 && rng.random_bool(scenario.refund_rate.clamp(0.0, 1.0)) {
            sim.refund(provider, &order, &format!("{order}-r1"), amount / 3)?;
            if rng.random_bool(0.5) {
                sim.refund(
                    provider,
                    &order,
                    &format!("{order}-r2"),
                    amount - amount / 3,
                )?;
            }
        }
        let open = sim
            .order(provider, &order)
            .is_some_and(|o| o.state != super::OrderState::Refunded);
        if provider == Provider::Alipay
            && open
            && rng.random_bool(scenario.finish_rate.clamp(0.0, 1.0))
        {
            sim.finish(&order)?;
        }
    }
    Ok(())
}
