//! The worker's apply path against the real PostgreSQL (docs/design.md invariants 3, 4
//! and 6): exactly one effect and one event per business transition, in any order of
//! arrival, with mismatches quarantined. Every test owns a schema ([`TestDb`]).
//!
//! The Alipay and WeChat V3 sequences are built by the provider simulators and go
//! through the real verification path; the other tests build envelopes directly.
//!
//! This module holds the helpers; the tests are in one module per theme.

mod batch;
mod concurrency;
mod errors;
mod expectations;
mod ordering;
mod records;
mod register;

use payhook_shared::alipay;
use payhook_shared::clock::SystemClock;
use payhook_shared::config::{PostgresSettings, Secret, Settings};
use payhook_shared::event::{
    Envelope, EnvelopeData, Kind, Normalized, Provider, RawNotification, SCHEMA_VERSION, Source,
    Status, transition_key,
};
use payhook_shared::wechat_v3::{self, V3Headers};
use payhook_sim::signer::alipay::AlipaySigner;
use payhook_testkit::db::TestDb;
use payhook_testkit::harness::Providers;
use payhook_testkit::harness::unique;
use payhook_worker::db::history::PaymentHistory;
use payhook_worker::db::{
    self, ApplyError, ApplyOutcome, Expectations, NewOrder, PaymentState, Registered,
};
use std::time::Duration;

use time::OffsetDateTime;

const MERCHANT: &str = Providers::MERCHANT;

/// An envelope as the receiver would publish it, with `fields` as normalized.
fn envelope(provider: Provider, kind: Kind, status: Status, fields: Normalized) -> Envelope {
    Envelope::from_data(EnvelopeData {
        schema_version: SCHEMA_VERSION,
        event_id: format!("{provider}:{MERCHANT}:{}", unique("n")),
        transition_key: transition_key(provider, MERCHANT, status, &fields),
        provider,
        merchant: MERCHANT.into(),
        kind,
        status,
        source: Source::Notify,
        received_at: OffsetDateTime::now_utc(),
        request_id: unique("req"),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        fields,
        raw: RawNotification {
            body: Some("built by the test".into()),
            body_base64: None,
            headers: vec![],
        },
    })
}

pub(crate) fn paid(provider: Provider, order: &str, total: i64) -> Envelope {
    let fields = Normalized {
        out_trade_no: Some(order.into()),
        provider_trade_no: Some(format!("T{order}")),
        provider_status: "SUCCESS".into(),
        total_amount: Some(total),
        paid_amount: Some(total),
        currency: "CNY".into(),
        ..Normalized::default()
    };
    envelope(provider, Kind::Payment, Status::Paid, fields)
}

pub(crate) fn refunded(provider: Provider, order: &str, refund_no: &str, amount: i64) -> Envelope {
    let fields = Normalized {
        out_trade_no: Some(order.into()),
        provider_status: "SUCCESS".into(),
        refund_amount: Some(amount),
        out_refund_no: Some(refund_no.into()),
        currency: "CNY".into(),
        ..Normalized::default()
    };
    envelope(provider, Kind::Refund, Status::RefundSucceeded, fields)
}

pub(crate) fn closed(provider: Provider, order: &str) -> Envelope {
    let fields = Normalized {
        out_trade_no: Some(order.into()),
        provider_status: "CLOSED".into(),
        currency: "CNY".into(),
        ..Normalized::default()
    };
    envelope(provider, Kind::Close, Status::Closed, fields)
}

/// The same notification content under a new notification id (a provider resend
/// or a reconciliation result).
fn resent(original: &Envelope) -> Envelope {
    changed(original, |e| {
        e.event_id = format!("{}:{MERCHANT}:{}", e.provider, unique("n"));
    })
}

/// `original` with `change` made to its content.
fn changed(original: &Envelope, change: impl FnOnce(&mut EnvelopeData)) -> Envelope {
    let mut data = original.clone().into_data();
    change(&mut data);
    Envelope::from_data(data)
}

pub(crate) async fn apply(db: &TestDb, envelope: &Envelope) -> ApplyOutcome {
    apply_expecting(db, envelope, &Expectations::default()).await
}

async fn apply_expecting(db: &TestDb, envelope: &Envelope, expect: &Expectations) -> ApplyOutcome {
    db::apply(&db.pool, envelope, expect)
        .await
        .expect("applies")
}

async fn history(db: &TestDb, provider: Provider, order: &str) -> PaymentHistory {
    db::payment_history(&db.pool, provider, MERCHANT, order)
        .await
        .expect("history query")
        .expect("the payment exists")
}

/// The routing keys in the payment's outbox, sorted.
fn event_keys(history: &PaymentHistory) -> Vec<String> {
    let mut keys: Vec<String> = history
        .events
        .iter()
        .map(|e| e.routing_key.clone())
        .collect();
    keys.sort();
    keys
}

fn applied(key: &str) -> ApplyOutcome {
    ApplyOutcome::Applied {
        events: vec![key.to_owned()],
    }
}

/// Every ordering of `0..n` (n! of them).
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for rest in permutations(n - 1) {
        for at in 0..=rest.len() {
            let mut p = rest.clone();
            p.insert(at, n - 1);
            out.push(p);
        }
    }
    out
}

async fn outbox_rows(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&db.pool)
        .await
        .expect("count outbox")
}

fn new_order(provider: Provider, order: &str, amount: i64) -> NewOrder {
    NewOrder {
        provider,
        merchant: MERCHANT.into(),
        out_trade_no: order.into(),
        amount,
        currency: "CNY".into(),
        expires_at: None,
        app_id: None,
        mch_id: None,
        payee: None,
    }
}
