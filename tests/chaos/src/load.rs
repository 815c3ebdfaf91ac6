//! The steady load: orders created and played one after another at a fixed rate,
//! over the three providers — most paid, some refunded partially, some fully, some
//! Alipay trades closed unpaid or finished — with the simulator's duplicate and
//! reorder faults. Only changes providers notify are played (WeChat does not notify
//! closes), so the whole truth must reach payhook through notifications alone.

use std::time::Duration;

use payhook_shared::event::Provider;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use payhook_sim::{OrderState, SimError, Simulator};

#[derive(Debug, Clone)]
pub struct Load {
    pub orders: usize,
    /// Orders per second.
    pub rate: f64,
    pub seed: u64,
    /// `out_trade_no` prefix (unique per run).
    pub prefix: String,
}

impl Load {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.orders as f64 / self.rate.max(0.001))
    }
}

/// Plays the load; returns when the last order was played (deliveries go on).
pub async fn drive(sim: &Simulator, load: &Load) -> Result<(), SimError> {
    let mut rng = StdRng::seed_from_u64(load.seed);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / load.rate.max(0.001)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..load.orders {
        ticker.tick().await;
        let provider = Provider::ALL[i % Provider::ALL.len()];
        play_order(sim, provider, &format!("{}-{i:05}", load.prefix), &mut rng)?;
    }
    Ok(())
}

fn play_order(
    sim: &Simulator,
    provider: Provider,
    no: &str,
    rng: &mut StdRng,
) -> Result<(), SimError> {
    let amount = rng.random_range(100..=100_000);
    sim.create_order(provider, no, amount)?;
    if provider == Provider::Alipay && rng.random_bool(0.1) {
        sim.close(provider, no)?;
        return Ok(());
    }
    sim.pay(provider, no)?;
    if rng.random_bool(0.4) {
        sim.refund(provider, no, &format!("{no}-r1"), amount / 3)?;
        if rng.random_bool(0.5) {
            sim.refund(provider, no, &format!("{no}-r2"), amount - amount / 3)?;
        }
    }
    let open = sim
        .order(provider, no)
        .is_some_and(|o| o.state != OrderState::Refunded);
    if provider == Provider::Alipay && open && rng.random_bool(0.15) {
        sim.finish(no)?;
    }
    Ok(())
}
