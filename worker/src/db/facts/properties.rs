//! The state machine over generated payment histories, through the apply path's pure
//! [`decide`]: whatever order the distinct transitions of one payment arrive in, the
//! payment ends in the same state with the same amounts, and no step lowers its state
//! (docs/design.md invariant 4).

use payhook_shared::event::{
    Envelope, EnvelopeData, Kind, Normalized, Provider, RawNotification, SCHEMA_VERSION, Source,
    Status,
};
use proptest::collection::vec;
use proptest::prelude::*;
use time::OffsetDateTime;

use super::super::apply::{Effects, Expectations, Plan, decide};
use super::super::locked::Payment;
use super::super::state::PaymentState;

/// One payment's history: its total, how it was refunded, and which notifications
/// exist. Every transition is distinct (the ledger's unique key lets each through once).
#[derive(Debug, Clone)]
struct History {
    provider: Provider,
    total: i64,
    /// Each refund's own amount, in the order the merchant made them.
    refunds: Vec<i64>,
    /// Whether the payment notification exists (a refund alone also proves payment).
    paid: bool,
    /// Whether a close notification exists (Alipay closes a fully refunded trade; a
    /// close may also race a late payment).
    closed: bool,
}

fn history() -> impl Strategy<Value = History> {
    (
        prop_oneof![
            Just(Provider::Alipay),
            Just(Provider::WechatV2),
            Just(Provider::WechatV3)
        ],
        1_i64..=10_000_000,
        vec(1_u32..=100, 0..5),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(provider, total, weights, paid, closed)| {
            // Split at most the total into refunds of at least 1 fen each, in
            // proportion to the weights; sometimes exactly the total (full refund).
            let mut refunds = Vec::new();
            let full = weights.first().is_some_and(|w| w % 2 == 0);
            let budget = if full { total } else { total / 2 };
            let sum: i64 = weights.iter().map(|&w| i64::from(w)).sum();
            let mut left = budget;
            for (i, &w) in weights.iter().enumerate() {
                let share = if i + 1 == weights.len() {
                    left
                } else {
                    (budget * i64::from(w) / sum.max(1)).min(left)
                };
                if share >= 1 {
                    refunds.push(share);
                    left -= share;
                }
            }
            History {
                provider,
                total,
                refunds,
                paid: paid || !closed,
                closed,
            }
        })
}

fn envelope(provider: Provider, status: Status, fields: Normalized, n: usize) -> Envelope {
    let kind = match status {
        Status::Paid => Kind::Payment,
        Status::Closed => Kind::Close,
        _ => Kind::Refund,
    };
    Envelope::from_data(EnvelopeData {
        schema_version: SCHEMA_VERSION,
        event_id: format!("{}:m1:notification-{n}", provider.as_str()),
        transition_key: Some(format!("transition-{n}")),
        provider,
        merchant: "m1".into(),
        kind,
        status,
        source: Source::Notify,
        received_at: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(n as i64),
        request_id: format!("request-{n}"),
        traceparent: None,
        fields: Normalized {
            out_trade_no: Some("order-1".into()),
            currency: "CNY".into(),
            ..fields
        },
        raw: RawNotification {
            body: None,
            body_base64: None,
            headers: Vec::new(),
        },
    })
}

/// The notifications the history produces: Alipay's refund notifications carry the
/// trade's running total, WeChat's each refund's own amount.
fn notifications(h: &History) -> Vec<Envelope> {
    let mut out = Vec::new();
    if h.paid {
        let fields = Normalized {
            total_amount: Some(h.total),
            paid_amount: Some(h.total),
            provider_trade_no: Some("trade-1".into()),
            ..Normalized::default()
        };
        out.push(envelope(h.provider, Status::Paid, fields, out.len()));
    }
    let cumulative = h.provider == Provider::Alipay;
    let mut running = 0;
    for (i, &amount) in h.refunds.iter().enumerate() {
        running += amount;
        let fields = Normalized {
            total_amount: Some(h.total),
            refund_amount: Some(if cumulative { running } else { amount }),
            refund_amount_cumulative: cumulative,
            out_refund_no: Some(format!("refund-{i}")),
            ..Normalized::default()
        };
        out.push(envelope(
            h.provider,
            Status::RefundSucceeded,
            fields,
            out.len(),
        ));
    }
    if h.closed {
        out.push(envelope(
            h.provider,
            Status::Closed,
            Normalized::default(),
            out.len(),
        ));
    }
    out
}

fn new_payment() -> Payment {
    Payment {
        id: 1,
        state: PaymentState::Pending,
        registered: false,
        expected_amount: None,
        currency: "CNY".into(),
        expected_app_id: None,
        expected_mch_id: None,
        expected_payee: None,
        total_amount: None,
        paid_amount: None,
        refunded_amount: 0,
        provider_trade_no: None,
        paid_at: None,
        closed_at: None,
    }
}

/// Applies the notifications in the given order as the apply path does (decided from
/// the locked row, the facts written back), checking that each is a transition and
/// that no step lowers the state.
fn replay(order: &[Envelope]) -> Result<Payment, TestCaseError> {
    let mut p = new_payment();
    for envelope in order {
        let plan = Plan::of(envelope);
        let effects = decide(
            envelope,
            &Expectations::default(),
            &plan,
            "order-1",
            &p,
            OffsetDateTime::UNIX_EPOCH,
        )
        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let Effects::Transition { next, .. } = effects else {
            return Err(TestCaseError::fail(format!(
                "{:?} decided as no transition",
                envelope.status
            )));
        };
        prop_assert!(
            next.state >= p.state,
            "{:?} lowered {:?}",
            envelope.status,
            p.state
        );
        p.state = next.state;
        p.total_amount = next.total_amount;
        p.paid_amount = next.paid_amount;
        p.refunded_amount = next.refunded_amount;
        p.provider_trade_no = next.provider_trade_no;
        p.paid_at = next.paid_at;
        p.closed_at = next.closed_at;
    }
    Ok(p)
}

/// The end state a person would read off the history.
fn expected_state(h: &History) -> PaymentState {
    let refunded: i64 = h.refunds.iter().sum();
    if refunded == h.total {
        PaymentState::Refunded
    } else if refunded > 0 {
        PaymentState::PartiallyRefunded
    } else if h.paid {
        PaymentState::Paid
    } else {
        PaymentState::Closed
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_arrival_order_ends_in_the_same_state_and_amounts(
        (h, order) in history().prop_flat_map(|h| {
            let n = notifications(&h).len();
            (Just(h), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        })
    ) {
        let all = notifications(&h);
        let shuffled: Vec<Envelope> = order.iter().map(|&i| all[i].clone()).collect();
        let end = replay(&shuffled)?;
        let refunded: i64 = h.refunds.iter().sum();
        prop_assert_eq!(end.state, expected_state(&h));
        prop_assert_eq!(end.refunded_amount, refunded);
        prop_assert_eq!(end.total_amount, Some(h.total).filter(|_| h.paid || !h.refunds.is_empty()));
        prop_assert_eq!(end.paid_at.is_some(), h.paid);
        prop_assert_eq!(end.closed_at.is_some(), h.closed);
        // The order they were sent in gives the same end.
        let in_order = replay(&all)?;
        prop_assert_eq!(in_order.state, end.state);
        prop_assert_eq!(in_order.refunded_amount, end.refunded_amount);
    }

    /// Alipay's running totals may also arrive more than once under different
    /// transitions (a `TRADE_SUCCESS` resend carrying `refund_fee`): the highest one
    /// seen is the truth, so repeats never add.
    #[test]
    fn alipay_running_totals_never_add_up_twice(
        (h, order) in history()
            .prop_filter("alipay with refunds", |h| h.provider == Provider::Alipay && !h.refunds.is_empty())
            .prop_flat_map(|h| {
                let n = notifications(&h).len();
                (Just(h), vec(0..n, 1..12))
            })
    ) {
        let all = notifications(&h);
        let mut repeated = all.clone();
        repeated.extend(order.iter().map(|&i| all[i].clone()));
        let end = replay(&repeated)?;
        prop_assert_eq!(end.refunded_amount, h.refunds.iter().sum::<i64>());
        prop_assert_eq!(end.state, expected_state(&h));
    }
}
