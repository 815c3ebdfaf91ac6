//! The reconciler's schedule against the real PostgreSQL and RabbitMQ: which payments
//! are due, that each is claimed by one sweeper at a time, that intervals grow, and
//! that "reconcile now" makes a payment due. (The provider side of the queries is
//! covered by the end-to-end tests with the simulator.)

use std::sync::Arc;

use lapin::options::ConfirmSelectOptions;
use payhook_shared::clock::SystemClock;
use payhook_shared::config::Settings;
use payhook_shared::event::Provider;
use payhook_testkit::db::TestDb;
use payhook_testkit::harness::{Providers, TestBroker, test_settings};
use payhook_worker::db::{self, NewOrder};
use payhook_worker::metrics::Metrics;
use payhook_worker::reconcile::{Reconciler, SweepReport, reconcile_now};

fn settings(db: &TestDb) -> Settings {
    let mut settings = test_settings();
    Providers::new().register(&mut settings);
    settings.postgres = db.settings.clone();
    settings.reconcile.pending_after_secs = 0;
    settings.reconcile.interval_min_secs = 60;
    settings.reconcile.interval_max_secs = 600;
    settings.reconcile.batch = 7;
    settings
}

fn order(provider: Provider, no: &str) -> NewOrder {
    serde_json::from_value(serde_json::json!({
        "provider": provider.as_str(), "merchant": Providers::MERCHANT,
        "out_trade_no": no, "amount": 100,
    }))
    .expect("order literal")
}

fn reconciler(settings: &Settings, db: &TestDb) -> Reconciler {
    Reconciler::build(
        settings,
        db.pool.clone(),
        Metrics::new(),
        Arc::new(SystemClock),
    )
    .expect("reconciler builds")
    .expect("reconcile is enabled")
}

async fn schedule(db: &TestDb, no: &str) -> (i32, Option<String>, f64) {
    sqlx::query_as(
        "SELECT reconcile_attempts, reconcile_last, \
         EXTRACT(EPOCH FROM (reconcile_next_at - now()))::float8 \
         FROM payments WHERE out_trade_no = $1",
    )
    .bind(no)
    .fetch_one(&db.pool)
    .await
    .expect("payment row")
}

#[tokio::test]
async fn due_payments_are_taken_once_per_interval_and_backed_off() {
    let db = TestDb::new().await;
    let settings = settings(&db);
    let broker = TestBroker::connect().await;
    let channel = broker.channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    // The test merchants have no private keys: every query is `no_credentials`, which
    // exercises the schedule without a provider.
    for no in ["r-1", "r-2"] {
        db::register(&db.pool, &order(Provider::Alipay, no))
            .await
            .expect("registers");
    }
    let r = reconciler(&settings, &db);
    let first = r.sweep_once(&channel).await.expect("sweeps");
    assert_eq!(
        first,
        SweepReport {
            taken: 2,
            published: 0
        }
    );
    let (attempts, last, next_in) = schedule(&db, "r-1").await;
    assert_eq!((attempts, last.as_deref()), (1, Some("no_credentials")));
    assert!(
        (55.0..=61.0).contains(&next_in),
        "first interval is the minimum: {next_in}"
    );

    // Not due again before its interval.
    assert_eq!(r.sweep_once(&channel).await.expect("sweeps").taken, 0);

    // Due again: the interval doubles.
    sqlx::query("UPDATE payments SET reconcile_next_at = now() WHERE out_trade_no = 'r-1'")
        .execute(&db.pool)
        .await
        .expect("backdates");
    assert_eq!(r.sweep_once(&channel).await.expect("sweeps").taken, 1);
    let (attempts, _, next_in) = schedule(&db, "r-1").await;
    assert_eq!(attempts, 2);
    assert!(
        (115.0..=121.0).contains(&next_in),
        "second interval doubles: {next_in}"
    );
    broker.close().await;
}

#[tokio::test]
async fn concurrent_sweepers_never_take_the_same_payment() {
    let db = TestDb::new().await;
    let settings = settings(&db);
    let broker = TestBroker::connect().await;
    let channel = broker.channel().await;
    for i in 0..40 {
        db::register(&db.pool, &order(Provider::WechatV3, &format!("c-{i}")))
            .await
            .expect("registers");
    }
    let (a, b) = (reconciler(&settings, &db), reconciler(&settings, &db));
    let mut taken = 0;
    for _ in 0..10 {
        let (x, y) = tokio::join!(a.sweep_once(&channel), b.sweep_once(&channel));
        taken += x.expect("sweeps").taken + y.expect("sweeps").taken;
    }
    assert_eq!(
        taken, 40,
        "each due payment is taken exactly once per interval"
    );
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT reconcile_attempts FROM payments")
        .fetch_all(&db.pool)
        .await
        .expect("rows");
    assert!(attempts.iter().all(|&n| n == 1), "{attempts:?}");
    broker.close().await;
}

#[tokio::test]
async fn settled_or_unwatched_payments_are_not_due_until_an_operator_asks() {
    let db = TestDb::new().await;
    let settings = settings(&db);
    let broker = TestBroker::connect().await;
    let channel = broker.channel().await;
    db::register(&db.pool, &order(Provider::Alipay, "paid-1"))
        .await
        .expect("registers");
    sqlx::query("UPDATE payments SET state = 'PAID' WHERE out_trade_no = 'paid-1'")
        .execute(&db.pool)
        .await
        .expect("settles");
    // An unregistered pending payment (created by a pending notification).
    sqlx::query(
        "INSERT INTO payments (provider, merchant, out_trade_no) VALUES ('alipay', $1, 'u-1')",
    )
    .bind(Providers::MERCHANT)
    .execute(&db.pool)
    .await
    .expect("inserts");
    let r = reconciler(&settings, &db);
    assert_eq!(r.sweep_once(&channel).await.expect("sweeps").taken, 0);

    assert!(
        !reconcile_now(&db.pool, Provider::Alipay, Providers::MERCHANT, "paid-1")
            .await
            .expect("updates"),
        "a settled payment is not reconciled"
    );
    assert!(
        reconcile_now(&db.pool, Provider::Alipay, Providers::MERCHANT, "u-1")
            .await
            .expect("updates")
    );
    assert_eq!(r.sweep_once(&channel).await.expect("sweeps").taken, 1);
    broker.close().await;
}

#[tokio::test]
async fn a_payment_known_only_from_its_refund_is_due() {
    let db = TestDb::new().await;
    let settings = settings(&db);
    let broker = TestBroker::connect().await;
    let channel = broker.channel().await;
    // What a refund notification arriving before its payment leaves behind.
    sqlx::query(
        "INSERT INTO payments (provider, merchant, out_trade_no, state, refunded_amount) \
         VALUES ('wechat_v3', $1, 'rf-1', 'REFUNDED', 100), \
                ('wechat_v3', $1, 'paid-then-refunded', 'REFUNDED', 100)",
    )
    .bind(Providers::MERCHANT)
    .execute(&db.pool)
    .await
    .expect("inserts");
    sqlx::query("UPDATE payments SET paid_at = now() WHERE out_trade_no = 'paid-then-refunded'")
        .execute(&db.pool)
        .await
        .expect("updates");
    let r = reconciler(&settings, &db);
    assert_eq!(r.sweep_once(&channel).await.expect("sweeps").taken, 1);
    let (attempts, _, _) = schedule(&db, "rf-1").await;
    assert_eq!(attempts, 1);
    broker.close().await;
}

#[tokio::test]
async fn refund_registration_is_idempotent_and_refuses_other_terms() {
    let db = TestDb::new().await;
    let refund = |order: &str, no: &str, amount: i64| -> db::NewRefund {
        serde_json::from_value(serde_json::json!({
            "provider": "wechat_v3", "merchant": Providers::MERCHANT, "out_trade_no": order,
            "out_refund_no": no, "amount": amount,
        }))
        .expect("refund literal")
    };
    let register = |r: db::NewRefund| {
        let pool = db.pool.clone();
        async move { db::register_refund(&pool, &r).await.expect("registers") }
    };
    // Before payhook has heard of the order: a pending payment row is created for it.
    assert_eq!(
        register(refund("o-1", "r-1", 100)).await,
        db::Registered::Created
    );
    assert_eq!(
        register(refund("o-1", "r-1", 100)).await,
        db::Registered::AlreadyRegistered
    );
    assert!(matches!(
        register(refund("o-1", "r-1", 101)).await,
        db::Registered::Conflict(_)
    ));
    assert!(matches!(
        register(refund("o-2", "r-1", 100)).await,
        db::Registered::Conflict(_)
    ));
    assert!(matches!(
        register(refund("o-1", "r-2", 0)).await,
        db::Registered::Invalid(_)
    ));
    let rows: Vec<(String, bool, Option<i64>)> = sqlx::query_as(
        "SELECT status, registered, expected_amount FROM refunds WHERE out_refund_no = 'r-1'",
    )
    .fetch_all(&db.pool)
    .await
    .expect("rows");
    assert_eq!(rows, [("REFUND_PROCESSING".into(), true, Some(100))]);
}
