//! The worker's apply path against the real PostgreSQL (docs/design.md invariants 3, 4
//! and 6): exactly one effect and one event per business transition, in any order of
//! arrival, with mismatches quarantined. Every test owns a schema ([`TestDb`]).
//!
//! The Alipay and WeChat V3 sequences are built by the provider simulators and go
//! through the real verification path; the other tests build envelopes directly.

use payhook_shared::alipay;
use payhook_shared::clock::SystemClock;
use payhook_shared::config::{PostgresSettings, Secret, Settings};
use payhook_shared::event::{
    Envelope, Kind, Normalized, Provider, RawNotification, SCHEMA_VERSION, Source, Status,
    transition_key,
};
use payhook_shared::wechat_v3::{self, V3Headers};
use payhook_tests::db::TestDb;
use payhook_tests::harness::Providers;
use payhook_tests::signer::alipay::AlipaySigner;
use payhook_worker::db::history::PaymentHistory;
use payhook_worker::db::{
    self, ApplyError, ApplyOutcome, Expectations, NewOrder, PaymentState, Registered,
};
use std::time::Duration;

use time::OffsetDateTime;

const MERCHANT: &str = Providers::MERCHANT;

fn unique(tag: &str) -> String {
    format!("{tag}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// An envelope as the receiver would publish it, with `fields` as normalized.
fn envelope(provider: Provider, kind: Kind, status: Status, fields: Normalized) -> Envelope {
    Envelope {
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
    }
}

fn paid(provider: Provider, order: &str, total: i64) -> Envelope {
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

fn refunded(provider: Provider, order: &str, refund_no: &str, amount: i64) -> Envelope {
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

fn closed(provider: Provider, order: &str) -> Envelope {
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
    Envelope {
        event_id: format!("{}:{MERCHANT}:{}", original.provider, unique("n")),
        ..original.clone()
    }
}

async fn apply(db: &TestDb, envelope: &Envelope) -> ApplyOutcome {
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

#[tokio::test]
async fn same_notification_twice_is_applied_then_duplicate() {
    let db = TestDb::new().await;
    let order = unique("o");
    let notification = paid(Provider::WechatV3, &order, 100);

    let first = apply(&db, &notification).await;
    let second = apply(&db, &notification).await;

    assert_eq!(first, applied("payment.succeeded.wechat_v3"));
    assert_eq!(second, ApplyOutcome::Duplicate);
    let h = history(&db, Provider::WechatV3, &order).await;
    assert_eq!(h.transitions.len(), 1);
    assert_eq!(h.events.len(), 1);
    assert_eq!(h.notifications.len(), 1);
    assert_eq!(h.payment.state, PaymentState::Paid);
    assert_eq!(outbox_rows(&db).await, 1);
}

/// Alipay payment + partial refund + full refund + `TRADE_FINISHED`, as the simulator
/// signs them and the receiver verifies them.
struct AlipayTrade {
    payment: Vec<u8>,
    partial_refund: Vec<u8>,
    full_refund: Vec<u8>,
    finished: Vec<u8>,
}

impl AlipayTrade {
    fn new(signer: &AlipaySigner, order: &str) -> Self {
        let nid = || unique("notify");
        let mut finished = signer.payment_params(order, 10000, &nid());
        finished.retain(|(k, _)| k != "sign");
        for (k, v) in &mut finished {
            if k == "trade_status" {
                *v = "TRADE_FINISHED".into();
            }
        }
        let finished: Vec<(&str, &str)> = finished
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Self {
            payment: signer.payment(order, 10000, &nid()),
            partial_refund: signer.refund(
                order,
                10000,
                3000,
                &format!("{order}-r1"),
                &nid(),
                false,
            ),
            full_refund: signer.refund(order, 10000, 10000, &format!("{order}-r2"), &nid(), true),
            finished: AlipaySigner::form_body(&signer.notification(&finished)),
        }
    }

    fn bodies(&self) -> [&[u8]; 4] {
        [
            &self.payment,
            &self.partial_refund,
            &self.full_refund,
            &self.finished,
        ]
    }
}

fn verified_alipay(app: &alipay::AlipayApp, body: &[u8]) -> Envelope {
    let verified = alipay::verify_notification(app, body).expect("simulated notification verifies");
    Envelope::from_verified(
        verified,
        MERCHANT,
        Source::Notify,
        OffsetDateTime::now_utc(),
        unique("req"),
    )
}

#[tokio::test]
async fn alipay_sequences_in_every_order_end_refunded_with_one_event_per_transition() {
    let db = TestDb::new().await;
    let providers = Providers::new();
    let mut settings = Settings::from_toml("").expect("defaults");
    providers.register(&mut settings);
    let expect = Expectations::from_settings(&settings, Provider::Alipay, MERCHANT);
    let app = providers.alipay.app();

    for order_of_arrival in permutations(4) {
        let order = unique("ali");
        let trade = AlipayTrade::new(&providers.alipay, &order);
        let bodies = trade.bodies();
        let mut rank = PaymentState::Pending.rank();
        let mut applied_count = 0;
        for &i in &order_of_arrival {
            let envelope = verified_alipay(&app, bodies[i]);
            let outcome = apply_expecting(&db, &envelope, &expect).await;
            match outcome {
                ApplyOutcome::Applied { .. } => applied_count += 1,
                ApplyOutcome::DuplicateTransition => {}
                other => panic!("{order_of_arrival:?}: step {i} gave {other:?}"),
            }
            let state = history(&db, Provider::Alipay, &order).await.payment.state;
            assert!(
                state.rank() >= rank,
                "{order_of_arrival:?}: step {i} moved the state backwards to {state}"
            );
            rank = state.rank();
        }
        let h = history(&db, Provider::Alipay, &order).await;
        assert_eq!(
            h.payment.state,
            PaymentState::Refunded,
            "{order_of_arrival:?}"
        );
        assert_eq!(h.payment.refunded_amount, 10000, "{order_of_arrival:?}");
        assert_eq!(h.payment.total_amount, Some(10000));
        assert_eq!(applied_count, 3, "{order_of_arrival:?}");
        assert_eq!(
            event_keys(&h),
            [
                "payment.succeeded.alipay",
                "refund.succeeded.alipay",
                "refund.succeeded.alipay"
            ],
            "{order_of_arrival:?}"
        );
        assert_eq!(h.transitions.len(), 3);
        assert_eq!(h.notifications.len(), 4);
    }
}

/// A WeChat V3 notification signed by the simulator, verified as the receiver does.
fn verified_v3(providers: &Providers, body: &[u8]) -> Envelope {
    let signer = &providers.wechat_v3;
    let headers = signer.headers(OffsetDateTime::now_utc().unix_timestamp(), body);
    let verified = wechat_v3::verify_notification(
        &signer.merchant(),
        &V3Headers::from_pairs(&headers),
        body,
        &SystemClock,
    )
    .expect("simulated notification verifies");
    Envelope::from_verified(
        verified,
        MERCHANT,
        Source::Notify,
        OffsetDateTime::now_utc(),
        unique("req"),
    )
}

#[tokio::test]
async fn wechat_v3_payment_and_two_partial_refunds_end_refunded_in_any_order() {
    let db = TestDb::new().await;
    let providers = Providers::new();
    let signer = &providers.wechat_v3;
    let mut settings = Settings::from_toml("").expect("defaults");
    providers.register(&mut settings);
    let expect = Expectations::from_settings(&settings, Provider::WechatV3, MERCHANT);

    for order_of_arrival in permutations(3) {
        let order = unique("wx");
        let bodies = [
            signer.transaction(&unique("id"), &order, 10000, "SUCCESS"),
            signer.refund(
                &unique("id"),
                &order,
                &format!("{order}-a"),
                10000,
                4000,
                "SUCCESS",
            ),
            signer.refund(
                &unique("id"),
                &order,
                &format!("{order}-b"),
                10000,
                6000,
                "SUCCESS",
            ),
        ];
        let mut rank = PaymentState::Pending.rank();
        for &i in &order_of_arrival {
            let outcome = apply_expecting(&db, &verified_v3(&providers, &bodies[i]), &expect).await;
            assert!(
                matches!(outcome, ApplyOutcome::Applied { .. }),
                "{order_of_arrival:?}: step {i} gave {outcome:?}"
            );
            let state = history(&db, Provider::WechatV3, &order).await.payment.state;
            assert!(
                state.rank() >= rank,
                "{order_of_arrival:?}: backwards to {state}"
            );
            rank = state.rank();
        }
        let h = history(&db, Provider::WechatV3, &order).await;
        assert_eq!(
            h.payment.state,
            PaymentState::Refunded,
            "{order_of_arrival:?}"
        );
        assert_eq!(h.payment.refunded_amount, 10000);
        assert_eq!(
            event_keys(&h),
            [
                "payment.succeeded.wechat_v3",
                "refund.succeeded.wechat_v3",
                "refund.succeeded.wechat_v3"
            ]
        );
        assert_eq!(h.refunds.len(), 2);
    }
}

#[tokio::test]
async fn refund_before_its_payment_lands_and_the_payment_still_emits_succeeded_once() {
    let db = TestDb::new().await;
    let order = unique("o");
    let mut refund = refunded(Provider::WechatV3, &order, &format!("{order}-a"), 4000);
    refund.fields.total_amount = Some(10000);

    assert_eq!(
        apply(&db, &refund).await,
        applied("refund.succeeded.wechat_v3")
    );
    let early = history(&db, Provider::WechatV3, &order).await;
    assert_eq!(early.payment.state, PaymentState::PartiallyRefunded);
    assert_eq!(
        early.payment.paid_at, None,
        "the payment itself has not arrived"
    );

    let payment = paid(Provider::WechatV3, &order, 10000);
    assert_eq!(
        apply(&db, &payment).await,
        applied("payment.succeeded.wechat_v3")
    );
    assert_eq!(
        apply(&db, &resent(&payment)).await,
        ApplyOutcome::DuplicateTransition
    );

    let h = history(&db, Provider::WechatV3, &order).await;
    assert_eq!(h.payment.state, PaymentState::PartiallyRefunded);
    assert!(h.payment.paid_at.is_some());
    assert_eq!(h.payment.refunded_amount, 4000);
    assert_eq!(
        event_keys(&h),
        ["payment.succeeded.wechat_v3", "refund.succeeded.wechat_v3"]
    );
}

#[tokio::test]
async fn close_of_unpaid_order_is_closed_once_and_a_late_payment_still_lands() {
    let db = TestDb::new().await;
    let order = unique("o");
    let close = closed(Provider::Alipay, &order);

    assert_eq!(apply(&db, &close).await, applied("payment.closed.alipay"));
    assert_eq!(
        apply(&db, &resent(&close)).await,
        ApplyOutcome::DuplicateTransition
    );
    let h = history(&db, Provider::Alipay, &order).await;
    assert_eq!(h.payment.state, PaymentState::Closed);
    assert_eq!(event_keys(&h), ["payment.closed.alipay"]);

    // The buyer paid just before the close: money moved, so it is recorded (PAID).
    let late = paid(Provider::Alipay, &order, 100);
    assert_eq!(apply(&db, &late).await, applied("payment.succeeded.alipay"));
    let h = history(&db, Provider::Alipay, &order).await;
    assert_eq!(h.payment.state, PaymentState::Paid);
    assert!(h.payment.closed_at.is_some());
    assert_eq!(
        event_keys(&h),
        ["payment.closed.alipay", "payment.succeeded.alipay"]
    );
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

#[tokio::test]
async fn registered_amount_mismatch_is_quarantined_once_and_never_paid() {
    let db = TestDb::new().await;
    let order = unique("o");
    let registered = db::register(&db.pool, &new_order(Provider::Alipay, &order, 8888))
        .await
        .expect("registers");
    assert_eq!(registered, Registered::Created);
    let wrong = paid(Provider::Alipay, &order, 100);

    let outcome = apply(&db, &wrong).await;
    let again = apply(&db, &resent(&wrong)).await;

    assert_eq!(
        outcome,
        ApplyOutcome::Quarantined {
            reason: "amount 100 != expected 8888".into()
        }
    );
    assert_eq!(again, ApplyOutcome::DuplicateTransition);
    let h = history(&db, Provider::Alipay, &order).await;
    assert_eq!(h.payment.state, PaymentState::Pending);
    assert!(h.payment.quarantined);
    assert_eq!(
        h.payment.quarantine_reason.as_deref(),
        Some("amount 100 != expected 8888")
    );
    assert_eq!(h.payment.paid_at, None);
    assert_eq!(event_keys(&h), ["payment.quarantined.alipay"]);
    assert_eq!(
        h.events[0].payload["data"]["quarantine_reason"],
        "amount 100 != expected 8888"
    );
}

#[tokio::test]
async fn registered_matching_amount_is_applied() {
    let db = TestDb::new().await;
    let order = unique("o");
    db::register(&db.pool, &new_order(Provider::Alipay, &order, 8888))
        .await
        .expect("registers");

    let outcome = apply(&db, &paid(Provider::Alipay, &order, 8888)).await;

    assert_eq!(outcome, applied("payment.succeeded.alipay"));
    let h = history(&db, Provider::Alipay, &order).await;
    assert_eq!(h.payment.state, PaymentState::Paid);
    assert!(!h.payment.quarantined);
}

/// Applies a paid notification carrying `set` identities against `expect` and
/// returns the outcome and the payment's state.
async fn paid_with_identity(
    provider: Provider,
    set: impl FnOnce(&mut Normalized),
    expect: Expectations,
) -> (ApplyOutcome, PaymentState) {
    let db = TestDb::new().await;
    let order = unique("o");
    let mut envelope = paid(provider, &order, 100);
    set(&mut envelope.fields);
    let outcome = apply_expecting(&db, &envelope, &expect).await;
    let state = history(&db, provider, &order).await.payment.state;
    (outcome, state)
}

#[tokio::test]
async fn app_id_mismatch_is_quarantined() {
    let (outcome, state) = paid_with_identity(
        Provider::Alipay,
        |f| f.app_id = Some("2021000000000999".into()),
        Expectations {
            app_id: Some("2021000000000001".into()),
            ..Expectations::default()
        },
    )
    .await;
    assert_eq!(
        outcome,
        ApplyOutcome::Quarantined {
            reason: "app_id 2021000000000999 != expected 2021000000000001".into()
        }
    );
    assert_eq!(state, PaymentState::Pending);
}

#[tokio::test]
async fn mch_id_mismatch_is_quarantined() {
    let (outcome, state) = paid_with_identity(
        Provider::WechatV3,
        |f| f.mch_id = Some("1900000999".into()),
        Expectations {
            mch_id: Some("1900000110".into()),
            ..Expectations::default()
        },
    )
    .await;
    assert!(
        matches!(&outcome, ApplyOutcome::Quarantined { reason } if reason.starts_with("mch_id ")),
        "{outcome:?}"
    );
    assert_eq!(state, PaymentState::Pending);
}

#[tokio::test]
async fn payee_mismatch_is_quarantined() {
    let (outcome, state) = paid_with_identity(
        Provider::Alipay,
        |f| f.payee = Some("2088000000000999".into()),
        Expectations {
            payee: Some("2088102177000001".into()),
            ..Expectations::default()
        },
    )
    .await;
    assert!(
        matches!(&outcome, ApplyOutcome::Quarantined { reason } if reason.starts_with("payee ")),
        "{outcome:?}"
    );
    assert_eq!(state, PaymentState::Pending);
}

#[tokio::test]
async fn matching_identities_are_applied() {
    let (outcome, state) = paid_with_identity(
        Provider::WechatV3,
        |f| {
            f.app_id = Some("wx1".into());
            f.mch_id = Some("1900000110".into());
        },
        Expectations {
            app_id: Some("wx1".into()),
            mch_id: Some("1900000110".into()),
            payee: None,
            strict: false,
        },
    )
    .await;
    assert_eq!(outcome, applied("payment.succeeded.wechat_v3"));
    assert_eq!(state, PaymentState::Paid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_notifications_of_one_transition_apply_exactly_once() {
    let db = TestDb::new().await;
    let order = unique("o");
    let first = paid(Provider::WechatV3, &order, 100);
    let envelopes: Vec<Envelope> = (0..20).map(|_| resent(&first)).collect();

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(envelopes.len()));
    let tasks: Vec<_> = envelopes
        .into_iter()
        .map(|envelope| {
            let pool = db.pool.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                db::apply(&pool, &envelope, &Expectations::default()).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task").expect("applies"));
    }

    let applied_count = outcomes
        .iter()
        .filter(|o| matches!(o, ApplyOutcome::Applied { .. }))
        .count();
    let duplicates = outcomes
        .iter()
        .filter(|o| **o == ApplyOutcome::DuplicateTransition)
        .count();
    assert_eq!((applied_count, duplicates), (1, 19), "{outcomes:?}");
    let h = history(&db, Provider::WechatV3, &order).await;
    assert_eq!(h.transitions.len(), 1);
    assert_eq!(h.notifications.len(), 20);
    assert_eq!(outbox_rows(&db).await, 1);
}

/// The facts are read from the locked payment row: concurrent refunds of one payment
/// must add up, not overwrite each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refunds_of_one_payment_add_up() {
    let db = TestDb::new().await;
    let order = unique("o");
    apply(&db, &paid(Provider::WechatV3, &order, 10000)).await;
    let refunds: Vec<Envelope> = (0..10)
        .map(|i| refunded(Provider::WechatV3, &order, &format!("{order}-{i}"), 1000))
        .collect();

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(refunds.len()));
    let tasks: Vec<_> = refunds
        .into_iter()
        .map(|envelope| {
            let pool = db.pool.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                db::apply(&pool, &envelope, &Expectations::default()).await
            })
        })
        .collect();
    for task in tasks {
        let outcome = task.await.expect("task").expect("applies");
        assert_eq!(outcome, applied("refund.succeeded.wechat_v3"));
    }

    let h = history(&db, Provider::WechatV3, &order).await;
    assert_eq!(h.payment.refunded_amount, 10000);
    assert_eq!(h.payment.state, PaymentState::Refunded);
    assert_eq!(h.refunds.len(), 10);
}

#[tokio::test]
async fn register_is_created_then_already_registered_then_conflict() {
    let db = TestDb::new().await;
    let order = new_order(Provider::WechatV2, &unique("o"), 8888);

    let first = db::register(&db.pool, &order).await.expect("registers");
    let repeat = db::register(&db.pool, &order).await.expect("registers");
    let other = db::register(
        &db.pool,
        &NewOrder {
            amount: 9999,
            ..order.clone()
        },
    )
    .await
    .expect("registers");

    assert_eq!(first, Registered::Created);
    assert_eq!(repeat, Registered::AlreadyRegistered);
    assert_eq!(
        other,
        Registered::Conflict("already registered with another amount".into())
    );
}

#[tokio::test]
async fn register_conflicts_with_an_amount_a_notification_already_recorded() {
    let db = TestDb::new().await;
    let order = unique("o");
    apply(&db, &paid(Provider::Alipay, &order, 100)).await;

    let conflict = db::register(&db.pool, &new_order(Provider::Alipay, &order, 8888))
        .await
        .expect("registers");
    let same = db::register(&db.pool, &new_order(Provider::Alipay, &order, 100))
        .await
        .expect("registers");

    assert!(
        matches!(&conflict, Registered::Conflict(why) if why.contains("amount 100")),
        "{conflict:?}"
    );
    assert_eq!(
        same,
        Registered::Created,
        "attaches to the notified payment"
    );
    assert!(
        history(&db, Provider::Alipay, &order)
            .await
            .payment
            .registered
    );
}

#[tokio::test]
async fn register_refuses_invalid_orders() {
    let db = TestDb::new().await;
    let order = unique("o");
    for bad in [
        new_order(Provider::Alipay, &order, 0),
        new_order(Provider::Alipay, "", 100),
        NewOrder {
            currency: "yuan".into(),
            ..new_order(Provider::Alipay, &order, 100)
        },
    ] {
        let result = db::register(&db.pool, &bad)
            .await
            .expect("no database error");
        assert!(
            matches!(result, Registered::Invalid(_)),
            "{bad:?}: {result:?}"
        );
    }
}

#[tokio::test]
async fn unknown_schema_version_is_permanent() {
    let db = TestDb::new().await;
    let mut envelope = paid(Provider::Alipay, &unique("o"), 100);
    envelope.schema_version = SCHEMA_VERSION + 1;

    let result = db::apply(&db.pool, &envelope, &Expectations::default()).await;

    assert!(
        matches!(&result, Err(ApplyError::Permanent(why)) if why.contains("schema_version")),
        "{result:?}"
    );
    assert_eq!(outbox_rows(&db).await, 0);
}

#[tokio::test]
async fn negative_amount_is_permanent() {
    let db = TestDb::new().await;
    let envelope = paid(Provider::Alipay, &unique("o"), -1);

    let result = db::apply(&db.pool, &envelope, &Expectations::default()).await;

    assert!(
        matches!(result, Err(ApplyError::Permanent(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn unreachable_database_is_transient() {
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let settings = PostgresSettings {
        url: Secret::inline(format!("postgres://postgres@127.0.0.1:{port}/test")),
        sslmode: None,
        tls: Default::default(),
        schema: "unreachable".into(),
        max_connections: 2,
        acquire_timeout_ms: 300,
    };
    let connect = db::connect(&settings).await;
    assert!(
        matches!(&connect, Err(e) if db::is_transient(e)),
        "{connect:?}"
    );

    let pool = db::connect_lazy(&settings).expect("valid settings");
    let result = db::apply(
        &pool,
        &paid(Provider::Alipay, "o", 1),
        &Expectations::default(),
    )
    .await;

    assert!(
        matches!(result, Err(ApplyError::Transient(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn closed_pool_is_transient() {
    let db = TestDb::new().await;
    db.pool.close().await;

    let result = db::apply(
        &db.pool,
        &paid(Provider::Alipay, &unique("o"), 1),
        &Expectations::default(),
    )
    .await;

    assert!(
        matches!(result, Err(ApplyError::Transient(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn payment_history_returns_transitions_in_order() {
    let db = TestDb::new().await;
    let order = unique("o");
    let steps = [
        paid(Provider::WechatV3, &order, 10000),
        refunded(Provider::WechatV3, &order, &format!("{order}-a"), 3000),
        refunded(Provider::WechatV3, &order, &format!("{order}-b"), 7000),
    ];
    for step in &steps {
        apply(&db, step).await;
    }

    let h = history(&db, Provider::WechatV3, &order).await;

    let keys: Vec<&str> = h
        .transitions
        .iter()
        .map(|t| t.transition_key.as_str())
        .collect();
    let expected: Vec<&str> = steps
        .iter()
        .map(|s| s.transition_key.as_deref().expect("has a key"))
        .collect();
    assert_eq!(keys, expected);
    let chain: Vec<(PaymentState, PaymentState)> = h
        .transitions
        .iter()
        .map(|t| (t.from_state, t.to_state))
        .collect();
    assert_eq!(
        chain,
        [
            (PaymentState::Pending, PaymentState::Paid),
            (PaymentState::Paid, PaymentState::PartiallyRefunded),
            (PaymentState::PartiallyRefunded, PaymentState::Refunded),
        ]
    );
    assert_eq!(h.notifications.len(), 3);
    assert!(h.notifications.iter().all(|n| n.outcome == "applied"));
    let json = serde_json::to_value(&h).expect("history serializes");
    assert_eq!(json["payment"]["state"], "REFUNDED");
    let unknown = db::payment_history(&db.pool, Provider::WechatV3, MERCHANT, "nope")
        .await
        .expect("query");
    assert!(unknown.is_none());
}

#[tokio::test]
async fn outbox_rows_are_cloudevents_whose_id_is_the_row_event_id() {
    let db = TestDb::new().await;
    let order = unique("o");
    let notification = paid(Provider::Alipay, &order, 8888);
    apply(&db, &notification).await;

    let (event_id, routing_key, payload): (uuid::Uuid, String, serde_json::Value) =
        sqlx::query_as("SELECT event_id, routing_key, payload FROM outbox")
            .fetch_one(&db.pool)
            .await
            .expect("one outbox row");

    assert_eq!(routing_key, "payment.succeeded.alipay");
    assert_eq!(payload["specversion"], "1.0");
    assert_eq!(payload["id"], event_id.to_string());
    assert_eq!(payload["type"], "payhook.payment.succeeded");
    assert_eq!(payload["source"], format!("/payhook/alipay/{MERCHANT}"));
    assert_eq!(payload["subject"], order.as_str());
    assert_eq!(payload["datacontenttype"], "application/json");
    assert!(payload["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    // The notification's trace continues on the event, with the worker's own span.
    let traceparent = payload["traceparent"].as_str().expect("traceparent");
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
            && traceparent.ends_with("-01")
            && !traceparent.contains("00f067aa0ba902b7"),
        "{traceparent}"
    );
    let data = &payload["data"];
    assert_eq!(data["state"], "PAID");
    assert_eq!(data["total_amount"], 8888);
    assert_eq!(data["event_id"], notification.event_id.as_str());
    assert_eq!(
        data["transition_key"],
        notification.transition_key.as_deref().expect("key")
    );
    assert_eq!(data["source"], "notify");
}

#[tokio::test]
async fn pending_notification_records_a_pending_payment_without_transition() {
    let db = TestDb::new().await;
    let order = unique("o");
    let fields = Normalized {
        out_trade_no: Some(order.clone()),
        provider_status: "WAIT_BUYER_PAY".into(),
        currency: "CNY".into(),
        ..Normalized::default()
    };
    let pending = envelope(Provider::Alipay, Kind::Payment, Status::Pending, fields);

    assert_eq!(apply(&db, &pending).await, ApplyOutcome::Recorded);

    let h = history(&db, Provider::Alipay, &order).await;
    assert_eq!(h.payment.state, PaymentState::Pending);
    assert!(h.transitions.is_empty());
    assert!(h.events.is_empty());
    assert_eq!(h.notifications[0].outcome, "recorded");
}

/// The audit row is written once with the outcome the apply is expected to end in;
/// every other ending must still leave the outcome it returned in the row.
#[tokio::test]
async fn every_audit_row_stores_the_outcome_its_apply_returned() {
    let db = TestDb::new().await;
    let order = unique("o");
    let quarantined_order = unique("o");
    db::register(
        &db.pool,
        &new_order(Provider::Alipay, &quarantined_order, 8888),
    )
    .await
    .expect("registers");
    let payment = paid(Provider::Alipay, &order, 100);
    let pending = envelope(
        Provider::Alipay,
        Kind::Payment,
        Status::Pending,
        Normalized {
            out_trade_no: Some(order.clone()),
            provider_status: "WAIT_BUYER_PAY".into(),
            currency: "CNY".into(),
            ..Normalized::default()
        },
    );
    let wrong = paid(Provider::Alipay, &quarantined_order, 100);
    let notifications = [
        payment.clone(),
        resent(&payment),
        pending,
        refunded(Provider::Alipay, &order, &unique("r"), 10),
        wrong.clone(),
        resent(&wrong),
    ];

    let mut returned = Vec::new();
    for n in &notifications {
        returned.push(apply(&db, n).await.label().to_owned());
    }

    assert_eq!(
        returned,
        [
            "applied",
            "duplicate_transition",
            "recorded",
            "applied",
            "quarantined",
            "duplicate_transition"
        ]
    );
    for (n, label) in notifications.iter().zip(&returned) {
        let stored: String =
            sqlx::query_scalar("SELECT outcome FROM notifications WHERE event_id = $1")
                .bind(&n.event_id)
                .fetch_one(&db.pool)
                .await
                .expect("audit row");
        assert_eq!(&stored, label, "{}", n.event_id);
    }
}

/// A redelivered notification stops at its audit row: it neither waits for the
/// payment's row lock nor changes any row.
#[tokio::test]
async fn a_duplicate_notification_neither_locks_nor_writes() {
    let db = TestDb::new().await;
    let order = unique("o");
    let payment = paid(Provider::WechatV2, &order, 100);
    apply(&db, &payment).await;
    let snapshot = async || -> (String, i64, i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT xmin::text FROM payments),
                    (SELECT count(*) FROM notifications),
                    (SELECT count(*) FROM transitions),
                    (SELECT count(*) FROM outbox)",
        )
        .fetch_one(&db.pool)
        .await
        .expect("snapshot")
    };
    let before = snapshot().await;
    // Another transaction holds the payment's row lock for the whole duplicate apply.
    let mut holder = db.pool.begin().await.expect("begin");
    sqlx::query("SELECT id FROM payments FOR UPDATE")
        .execute(&mut *holder)
        .await
        .expect("lock the payment");

    let duplicate = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        db::apply(&db.pool, &payment, &Expectations::default()),
    )
    .await
    .expect("a duplicate must not wait for the payment lock")
    .expect("applies");

    assert_eq!(duplicate, ApplyOutcome::Duplicate);
    holder.rollback().await.expect("rollback");
    assert_eq!(snapshot().await, before);
}

#[tokio::test]
async fn uninterpreted_notification_is_recorded_for_audit_only() {
    let db = TestDb::new().await;
    let other = envelope(
        Provider::WechatV3,
        Kind::Other,
        Status::Other,
        Normalized {
            provider_status: String::new(),
            currency: "CNY".into(),
            ..Normalized::default()
        },
    );

    assert_eq!(apply(&db, &other).await, ApplyOutcome::Recorded);
    assert_eq!(apply(&db, &other).await, ApplyOutcome::Duplicate);

    let (audited, payments): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM notifications), (SELECT count(*) FROM payments)",
    )
    .fetch_one(&db.pool)
    .await
    .expect("counts");
    assert_eq!((audited, payments), (1, 0));
}

#[tokio::test]
async fn connecting_again_finds_the_schema_migrated() {
    let db = TestDb::new().await;

    let again = db::connect(&db.settings).await.expect("second connect");

    let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&again)
        .await
        .expect("migrations table in the test schema");
    assert_eq!(migrations, db::MIGRATOR.iter().count() as i64);
    let in_schema: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables
         WHERE table_schema = $1 AND table_name IN ('_sqlx_migrations', 'payments', 'outbox')",
    )
    .bind(db.schema())
    .fetch_one(&again)
    .await
    .expect("catalog query");
    assert_eq!(in_schema, 3);
}

// ---------------------------------------------------------------------------------
// Batches: several envelopes in one transaction (worker.batch_max)
// ---------------------------------------------------------------------------------

/// Applies `envelopes` as one batch with no merchant expectations.
async fn apply_batch(
    db: &TestDb,
    envelopes: &[&Envelope],
) -> Result<Vec<ApplyOutcome>, ApplyError> {
    let none = Expectations::default();
    let items: Vec<(&Envelope, &Expectations)> = envelopes.iter().map(|e| (*e, &none)).collect();
    db::apply_batch(&db.pool, &items).await
}

#[tokio::test]
async fn a_batch_applies_each_envelope_exactly_once_and_answers_in_its_order() {
    let db = TestDb::new().await;
    let (a, b) = (unique("o"), unique("o"));
    let pay_a = paid(Provider::Alipay, &a, 300);
    // A refund of `a` listed BEFORE its payment, the same notification twice, a resend
    // of an already applied transition, and another order's payment, all in one batch.
    let refund_a = refunded(Provider::Alipay, &a, &unique("r"), 100);
    let pay_b = paid(Provider::WechatV3, &b, 500);
    let pay_b_resent = resent(&pay_b);
    let batch = [&refund_a, &pay_b, &pay_a, &pay_b, &pay_b_resent];

    let outcomes = apply_batch(&db, &batch).await.expect("the batch applies");

    // Applied in payment order, answered in the batch's order: `pay_b` is applied by its
    // first occurrence; its second occurrence and its resend find it done.
    assert_eq!(outcomes[0], applied("refund.succeeded.alipay"));
    assert_eq!(outcomes[1], applied("payment.succeeded.wechat_v3"));
    assert_eq!(outcomes[2], applied("payment.succeeded.alipay"));
    assert_eq!(outcomes[3], ApplyOutcome::Duplicate);
    assert_eq!(outcomes[4], ApplyOutcome::DuplicateTransition);
    let history_a = history(&db, Provider::Alipay, &a).await;
    assert_eq!(history_a.payment.state, PaymentState::PartiallyRefunded);
    assert_eq!(history_a.payment.refunded_amount, 100);
    assert_eq!(
        event_keys(&history_a),
        ["payment.succeeded.alipay", "refund.succeeded.alipay"]
    );
    let history_b = history(&db, Provider::WechatV3, &b).await;
    assert_eq!(history_b.payment.state, PaymentState::Paid);
    assert_eq!(event_keys(&history_b), ["payment.succeeded.wechat_v3"]);
    assert_eq!(outbox_rows(&db).await, 3);

    // The same batch again: nothing new.
    let again = apply_batch(&db, &batch).await.expect("the batch applies");
    assert!(
        again.iter().all(|o| *o == ApplyOutcome::Duplicate),
        "{again:?}"
    );
    assert_eq!(outbox_rows(&db).await, 3);
}

#[tokio::test]
async fn a_batch_with_one_bad_envelope_writes_nothing() {
    let db = TestDb::new().await;
    let good = paid(Provider::Alipay, &unique("o"), 100);
    let bad = paid(Provider::Alipay, &unique("o"), -1);

    let result = apply_batch(&db, &[&good, &bad]).await;

    assert!(
        matches!(result, Err(ApplyError::Permanent(_))),
        "{result:?}"
    );
    assert_eq!(outbox_rows(&db).await, 0);
    let notifications: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&db.pool)
        .await
        .expect("count notifications");
    assert_eq!(notifications, 0, "the good envelope was not written either");
    // Alone, the good one applies (what the consumer does after a failed batch).
    assert_eq!(apply(&db, &good).await, applied("payment.succeeded.alipay"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_over_the_same_payments_neither_deadlock_nor_double_apply() {
    let db = TestDb::new().await;
    let orders: Vec<String> = (0..6).map(|_| unique("o")).collect();
    let notifications: Vec<Envelope> = orders
        .iter()
        .map(|o| paid(Provider::Alipay, o, 100))
        .collect();
    // Eight batches, each naming every order, each listing them in another order: unless
    // the batches take the payments' locks in one order, they deadlock.
    let mut tasks = Vec::new();
    for k in 0..8 {
        let db_pool = db.pool.clone();
        let mut mine: Vec<Envelope> = notifications.iter().map(resent).collect();
        let n = mine.len();
        mine.rotate_left(k % n);
        if k % 2 == 1 {
            mine.reverse();
        }
        tasks.push(tokio::spawn(async move {
            let none = Expectations::default();
            let items: Vec<(&Envelope, &Expectations)> = mine.iter().map(|e| (e, &none)).collect();
            db::apply_batch(&db_pool, &items).await
        }));
    }
    let mut applied_count = 0;
    for task in tasks {
        let outcomes = task
            .await
            .expect("task")
            .expect("no batch fails (no deadlock)");
        applied_count += outcomes
            .iter()
            .filter(|o| matches!(o, ApplyOutcome::Applied { .. }))
            .count();
    }
    assert_eq!(applied_count, orders.len(), "each payment applied once");
    assert_eq!(outbox_rows(&db).await, orders.len() as i64);
}

/// Every row the apply path writes, without generated ids and clock readings, sorted:
/// two schemas that applied the same envelopes compare equal.
async fn written(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('payment %s %s %s %s %s %s %s %s %s %s %s', provider, out_trade_no,
                state, registered, total_amount, paid_amount, refunded_amount,
                provider_trade_no, paid_at, quarantined, quarantine_reason)
         FROM payments
         UNION ALL
         SELECT format('transition %s %s %s %s %s %s %s', transition_key, kind, status,
                from_state, to_state, event_id, source)
         FROM transitions
         UNION ALL
         SELECT format('refund %s %s %s %s %s', out_refund_no, status, amount,
                amount_cumulative, provider_refund_no)
         FROM refunds
         UNION ALL
         SELECT format('notification %s %s %s', event_id, outcome, envelope->>'event_id')
         FROM notifications
         UNION ALL
         SELECT format('event %s %s %s', t.transition_key, o.routing_key, o.payload->'data')
         FROM outbox o JOIN transitions t ON t.id = o.transition_id
         ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("snapshot")
}

/// A batch of different orders takes the two-statement path (`bulk`): each of its
/// envelopes must end exactly as it ends applied alone — every outcome (applied,
/// duplicate, duplicate transition, quarantined, recorded), every row and every event.
#[tokio::test]
async fn a_batch_of_different_orders_writes_what_applying_them_one_by_one_writes() {
    let (bulk, alone) = (TestDb::new().await, TestDb::new().await);
    let o: Vec<String> = (0..12).map(|_| unique("o")).collect();
    let right = Expectations {
        app_id: Some("2021000000000001".into()),
        ..Expectations::default()
    };
    let none = Expectations::default();

    // What both schemas hold before the batch.
    let paid_before = paid(Provider::Alipay, &o[0], 300);
    let resend_of = paid(Provider::WechatV2, &o[1], 200);
    let seen = paid(Provider::WechatV3, &o[2], 100);
    let partly_refunded = paid(Provider::Alipay, &o[10], 500);
    for db in [&bulk, &alone] {
        for e in [&paid_before, &resend_of, &seen, &partly_refunded] {
            apply(db, e).await;
        }
        for (order, amount) in [(&o[4], 8888), (&o[5], 100)] {
            db::register(&db.pool, &new_order(Provider::Alipay, order, amount))
                .await
                .expect("registers");
        }
    }

    let pending = envelope(
        Provider::Alipay,
        Kind::Payment,
        Status::Pending,
        Normalized {
            out_trade_no: Some(o[6].clone()),
            provider_status: "WAIT_BUYER_PAY".into(),
            currency: "CNY".into(),
            ..Normalized::default()
        },
    );
    let refund_processing = envelope(
        Provider::WechatV3,
        Kind::Refund,
        Status::RefundProcessing,
        Normalized {
            out_trade_no: Some(o[7].clone()),
            out_refund_no: Some(unique("r")),
            refund_amount: Some(50),
            provider_status: "PROCESSING".into(),
            currency: "CNY".into(),
            ..Normalized::default()
        },
    );
    let mut cumulative = refunded(Provider::Alipay, &o[10], &o[10], 200);
    cumulative.fields.refund_amount_cumulative = true;
    let mut wrong_app = paid(Provider::Alipay, &o[11], 100);
    wrong_app.fields.app_id = Some("2021000000000999".into());
    let batch: Vec<(Envelope, &Expectations)> = vec![
        (refunded(Provider::Alipay, &o[0], &unique("r"), 100), &none),
        (resent(&resend_of), &none),
        (seen.clone(), &none),
        (paid(Provider::Alipay, &o[3], 700), &none),
        (paid(Provider::Alipay, &o[4], 100), &none),
        (paid(Provider::Alipay, &o[5], 100), &none),
        (pending, &none),
        (refund_processing, &none),
        (refunded(Provider::WechatV3, &o[8], &unique("r"), 40), &none),
        (closed(Provider::WechatV2, &o[9]), &none),
        (cumulative, &none),
        (wrong_app, &right),
    ];
    let items: Vec<(&Envelope, &Expectations)> = batch.iter().map(|(e, x)| (e, *x)).collect();
    assert!(
        db::apply::batch_is_bulk(&items),
        "the batch takes the bulk path"
    );

    let batched = db::apply_batch(&bulk.pool, &items)
        .await
        .expect("the batch applies");
    let mut one_by_one = Vec::new();
    for (envelope, expect) in &items {
        one_by_one.push(apply_expecting(&alone, envelope, expect).await);
    }

    assert_eq!(batched, one_by_one);
    let labels: Vec<&str> = batched.iter().map(ApplyOutcome::label).collect();
    assert_eq!(
        labels,
        [
            "applied",
            "duplicate_transition",
            "duplicate",
            "applied",
            "quarantined",
            "applied",
            "recorded",
            "recorded",
            "applied",
            "applied",
            "applied",
            "quarantined",
        ]
    );
    let rows = written(&bulk).await;
    assert_eq!(rows, written(&alone).await);
    assert!(
        rows.iter()
            .any(|r| r.starts_with("refund ") && r.contains(" REFUND_PROCESSING 50 ")),
        "the refund in progress has its row: {rows:#?}"
    );
    // Applied again, the batch finds every notification recorded.
    let again = db::apply_batch(&bulk.pool, &items)
        .await
        .expect("the batch applies");
    assert!(
        again.iter().all(|o| *o == ApplyOutcome::Duplicate),
        "{again:?}"
    );
    assert_eq!(written(&bulk).await, rows);
}

/// A batch naming one payment twice is not a bulk batch: its envelopes run in turn.
#[test]
fn a_batch_naming_one_payment_twice_is_not_bulk() {
    let order = unique("o");
    let none = Expectations::default();
    let (pay, refund) = (
        paid(Provider::Alipay, &order, 300),
        refunded(Provider::Alipay, &order, &unique("r"), 100),
    );
    let other = paid(Provider::Alipay, &unique("o"), 300);
    assert!(db::apply::batch_is_bulk(&[(&pay, &none), (&other, &none)]));
    assert!(!db::apply::batch_is_bulk(&[
        (&pay, &none),
        (&refund, &none)
    ]));
    assert!(!db::apply::batch_is_bulk(&[(&pay, &none), (&pay, &none)]));
}

/// The bulk path writes a payment nobody knew once, with its final facts. If another
/// transaction creates that payment between the batch's two statements, the batch
/// must not leave a payment without its transition: it starts over envelope by
/// envelope, and every envelope still ends applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_created_by_another_transaction_mid_batch_still_applies_once() {
    let db = TestDb::new().await;
    let (contested, other) = (unique("o"), unique("o"));
    let pay_contested = paid(Provider::Alipay, &contested, 100);
    let pay_other = paid(Provider::Alipay, &other, 200);

    // Another transaction holds a new, uncommitted row for the contested payment: the
    // batch's step 1 cannot see it, and its step 2's insert waits on it.
    let mut blocker = db.pool.begin().await.expect("begin");
    let blocker_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *blocker)
        .await
        .expect("pid");
    sqlx::query("INSERT INTO payments (provider, merchant, out_trade_no) VALUES ($1, $2, $3)")
        .bind(Provider::Alipay.as_str())
        .bind(MERCHANT)
        .bind(&contested)
        .execute(&mut *blocker)
        .await
        .expect("insert");

    let pool = db.pool.clone();
    let (a, b) = (pay_contested.clone(), pay_other.clone());
    let batch = tokio::spawn(async move {
        let none = Expectations::default();
        let items = [(&a, &none), (&b, &none)];
        assert!(db::apply::batch_is_bulk(&items));
        db::apply_batch(&pool, &items).await
    });
    let waits = payhook_tests::harness::eventually_async(Duration::from_secs(20), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(blocker_pid)
        .fetch_one(&db.pool)
        .await
        .expect("pg_stat_activity");
        waiting > 0
    })
    .await;
    assert!(
        waits,
        "the batch never waited on the other transaction's payment"
    );
    blocker.commit().await.expect("commit");

    let outcomes = batch.await.expect("task").expect("the batch applies");
    assert_eq!(
        outcomes,
        [
            applied("payment.succeeded.alipay"),
            applied("payment.succeeded.alipay")
        ]
    );
    for (order, amount) in [(&contested, 100), (&other, 200)] {
        let h = history(&db, Provider::Alipay, order).await;
        assert_eq!(h.payment.state, PaymentState::Paid, "{order}");
        assert_eq!(h.payment.paid_amount, Some(amount), "{order}");
        assert_eq!(h.transitions.len(), 1, "{order}");
        assert_eq!(event_keys(&h), ["payment.succeeded.alipay"], "{order}");
    }
    assert_eq!(outbox_rows(&db).await, 2);
}

/// The generic plans of the bulk statements, made on this schema's empty tables: the
/// plan PostgreSQL keeps for a prepared statement until the tables are analyzed.
async fn generic_plans(db: &TestDb, begin: &str) -> String {
    let (_, statements) = db::bulk_statements();
    let mut conn = db.pool.acquire().await.expect("connection");
    let mut plans = String::new();
    for sql in statements {
        let params = (1..=64)
            .take_while(|n| sql.contains(&format!("${n}::")))
            .count();
        sqlx::raw_sql(begin)
            .execute(&mut *conn)
            .await
            .expect("begin");
        let setup =
            format!("SET LOCAL plan_cache_mode = force_generic_plan; PREPARE bulk_step AS {sql}");
        sqlx::raw_sql(&setup)
            .execute(&mut *conn)
            .await
            .expect("prepare");
        let nulls = vec!["NULL"; params].join(", ");
        let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE bulk_step({nulls})"))
            .fetch_all(&mut *conn)
            .await
            .expect("explain");
        sqlx::raw_sql("ROLLBACK; DEALLOCATE bulk_step")
            .execute(&mut *conn)
            .await
            .expect("rollback");
        plans.push_str(&lines.join("\n"));
        plans.push('\n');
    }
    plans
}

/// A generic plan made while the tables are small is kept as they grow (and forever
/// where autovacuum is off). The bulk transaction's first statement makes those plans
/// probe the unique indexes; without it they scan whole tables.
#[tokio::test]
async fn the_bulk_statements_never_plan_a_table_scan_even_on_empty_tables() {
    let db = TestDb::new().await;
    let (begin, _) = db::bulk_statements();

    let guarded = generic_plans(&db, begin).await;
    let plain = generic_plans(&db, "BEGIN").await;

    assert!(
        guarded.contains("Index Scan using payments_pkey on payments"),
        "{guarded}"
    );
    assert!(
        !guarded.contains("Seq Scan"),
        "the bulk statements' plans scan a table:\n{guarded}"
    );
    assert!(
        plain.contains("Seq Scan"),
        "without the guard these plans no longer scan: is the guard still needed?\n{plain}"
    );
}
