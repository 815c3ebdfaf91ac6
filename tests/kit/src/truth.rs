//! Comparing payhook's database with the simulator's truth (the order book): each
//! order's state and refunded amount, the business transitions the truth implies, and
//! the transition every notification asserts. Used by the end-to-end tests and the
//! chaos suite.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgPool;

use payhook_sim::{NotificationKind, NotificationTruth, OrderTruth, Simulator};

/// `(provider, out_trade_no)` → `(state, refunded fen)`.
pub type States = BTreeMap<(String, String), (String, i64)>;

/// Every payment row of payhook's database, as [`States`].
pub async fn payhook_states(pool: &PgPool) -> sqlx::Result<States> {
    let rows: Vec<(String, String, String, i64)> =
        sqlx::query_as("SELECT provider, out_trade_no, state, refunded_amount FROM payments")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(p, no, state, refunded)| ((p, no), (state, refunded)))
        .collect())
}

/// Every order of the simulator, as [`States`].
pub fn truth_states(sim: &Simulator) -> States {
    orders_states(&sim.orders())
}

/// Some orders, as [`States`].
pub fn orders_states(orders: &[OrderTruth]) -> States {
    orders
        .iter()
        .map(|o| {
            (
                (o.provider.as_str().to_owned(), o.out_trade_no.clone()),
                (o.state.as_str().to_owned(), o.refunded_fen),
            )
        })
        .collect()
}

/// One order payhook disagrees about: `(key, truth, payhook)`.
pub type Difference<'a> = (
    &'a (String, String),
    &'a (String, i64),
    Option<&'a (String, i64)>,
);

/// The entries of `expected` that `actual` does not hold.
pub fn differing<'a>(expected: &'a States, actual: &'a States) -> Vec<Difference<'a>> {
    expected
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(*v))
        .map(|(k, v)| (k, v, actual.get(k)))
        .collect()
}

/// The business transitions an order's truth implies, as payhook's transition keys
/// (`<provider>:<merchant>:payment:<no>:PAID`, `…:CLOSED`,
/// `…:refund:<out_refund_no>:REFUND_SUCCEEDED`).
pub fn order_transitions(order: &OrderTruth) -> Vec<String> {
    let prefix = format!("{}:{}", order.provider.as_str(), order.merchant);
    let mut keys = Vec::new();
    if order.paid_at.is_some() {
        keys.push(format!("{prefix}:payment:{}:PAID", order.out_trade_no));
    }
    if order.state == payhook_sim::OrderState::Closed {
        keys.push(format!("{prefix}:payment:{}:CLOSED", order.out_trade_no));
    }
    for r in &order.refunds {
        keys.push(format!(
            "{prefix}:refund:{}:REFUND_SUCCEEDED",
            r.out_refund_no
        ));
    }
    keys
}

/// Every transition the truth implies.
pub fn truth_transitions(orders: &[OrderTruth]) -> BTreeSet<String> {
    orders.iter().flat_map(order_transitions).collect()
}

/// The transition key a notification asserts (`merchant` is the notify URL's).
pub fn notification_transition(n: &NotificationTruth, merchant: &str) -> String {
    let prefix = format!("{}:{merchant}", n.provider.as_str());
    match n.kind {
        NotificationKind::Payment | NotificationKind::Finished => {
            format!("{prefix}:payment:{}:PAID", n.out_trade_no)
        }
        NotificationKind::Close => format!("{prefix}:payment:{}:CLOSED", n.out_trade_no),
        NotificationKind::Refund => format!(
            "{prefix}:refund:{}:REFUND_SUCCEEDED",
            n.out_refund_no.as_deref().unwrap_or(&n.out_trade_no)
        ),
    }
}

/// Transitions announced by more than one outbox row (must be 0: one event each).
pub async fn transitions_with_several_events(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT transition_id FROM outbox GROUP BY transition_id \
         HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
}
