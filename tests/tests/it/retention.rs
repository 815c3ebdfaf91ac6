//! Bounded storage against the real pipeline: notifications and published events past
//! their retention are deleted, buyer identifiers redacted, in batches; payments and
//! the transition ledger stay; a payment's history says what was pruned; a second pass
//! finds nothing to do.

use payhook_testkit::harness::unique;
use std::time::Duration;

use payhook_testkit::harness::{eventually_async, post};
use payhook_testkit::worker::{TestStack, TestWorker};
use payhook_worker::metrics::Metrics;
use payhook_worker::retention::{PassReport, Retention};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

async fn count(pool: &PgPool, sql: &str, order: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(order)
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn notifications_of(pool: &PgPool, order: &str) -> i64 {
    count(
        pool,
        "SELECT count(*) FROM notifications WHERE out_trade_no = $1",
        order,
    )
    .await
}

#[tokio::test]
async fn old_notifications_and_published_events_are_pruned_and_buyers_redacted() {
    let TestStack {
        providers,
        receiver,
        db,
        mut settings,
        ..
    } = TestStack::start().await;
    settings.retention.enabled = false; // passes are run by the test
    let worker = TestWorker::spawn(&settings).await;
    let client = reqwest::Client::new();

    // Five payments: two to prune, one to redact, two to keep as they are.
    // One at a time: the outbox walk relies on ids growing with creation time (as they
    // do in production), and payments applied in one batch may be written in any order.
    let orders: Vec<String> = (0..5).map(|_| unique("o")).collect();
    let pool = &db.pool;
    for (i, order) in orders.iter().enumerate() {
        let answer = post(
            &client,
            &receiver.url("/notify/alipay/m1"),
            "application/x-www-form-urlencoded",
            &[],
            providers.alipay.payment(order, 100, &unique("n")),
        )
        .await;
        assert_eq!(answer.body, "success");
        let written = eventually_async(Duration::from_secs(20), || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
                .fetch_one(pool)
                .await
                .unwrap_or(0)
                == i as i64 + 1
        })
        .await;
        assert!(written, "payment {i} applied");
    }
    let settled = eventually_async(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
            .fetch_one(pool)
            .await
            .unwrap_or(0)
            == 5
    })
    .await;
    assert!(settled, "five payments applied and their events published");
    worker.stop().await;

    // Age them: orders 0 and 1 recorded 100 days ago and published 10 days ago;
    // order 2 recorded 40 days ago; order 3's event is old but still unpublished.
    for order in &orders[..2] {
        sqlx::query("UPDATE notifications SET recorded_at = now() - interval '100 days' WHERE out_trade_no = $1")
            .bind(order)
            .execute(pool)
            .await
            .expect("age");
        sqlx::query(
            "UPDATE outbox SET created_at = now() - interval '10 days', published_at = now() - interval '10 days'
             WHERE transition_id IN (SELECT t.id FROM transitions t JOIN payments p ON p.id = t.payment_id WHERE p.out_trade_no = $1)",
        )
        .bind(order)
        .execute(pool)
        .await
        .expect("age");
    }
    sqlx::query(
        "UPDATE notifications SET recorded_at = now() - interval '40 days' WHERE out_trade_no = $1",
    )
    .bind(&orders[2])
    .execute(pool)
    .await
    .expect("age");
    sqlx::query(
        "UPDATE outbox SET created_at = now() - interval '10 days', published_at = NULL
         WHERE transition_id IN (SELECT t.id FROM transitions t JOIN payments p ON p.id = t.payment_id WHERE p.out_trade_no = $1)",
    )
    .bind(&orders[3])
    .execute(pool)
    .await
    .expect("age");

    let mut retention = settings.retention.clone();
    retention.redact_buyer_after_days = 30;
    retention.batch = 1; // every step takes several batches
    let pruner = Retention::new(pool.clone(), retention, Metrics::new());
    let stop = CancellationToken::new();
    let report = pruner
        .pass(OffsetDateTime::now_utc(), &stop)
        .await
        .expect("pass");
    assert_eq!(
        report,
        PassReport {
            notifications_deleted: 2,
            events_deleted: 2,
            notifications_redacted: 1,
        }
    );

    for order in &orders[..2] {
        assert_eq!(notifications_of(pool, order).await, 0);
        assert_eq!(
            count(
                pool,
                "SELECT count(*) FROM payments WHERE out_trade_no = $1 AND state = 'PAID'",
                order
            )
            .await,
            1,
            "the payment stays"
        );
        assert_eq!(
            count(pool, "SELECT count(*) FROM transitions t JOIN payments p ON p.id = t.payment_id WHERE p.out_trade_no = $1", order).await,
            1,
            "the ledger stays"
        );
    }
    for order in &orders[2..] {
        assert_eq!(notifications_of(pool, order).await, 1);
    }
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
            .fetch_one(pool)
            .await
            .expect("count"),
        3,
        "the unpublished old event and the recent ones stay"
    );

    // The redacted notification: no buyer left, the facts kept.
    let (envelope, redacted): (String, bool) = sqlx::query_as(
        "SELECT envelope::text, redacted_at IS NOT NULL FROM notifications WHERE out_trade_no = $1",
    )
    .bind(&orders[2])
    .fetch_one(pool)
    .await
    .expect("row");
    assert!(redacted);
    assert!(!envelope.contains("2088102177846880"), "{envelope}");
    assert!(envelope.contains("buyer_id=REDACTED"), "{envelope}");
    assert!(envelope.contains(&orders[2]));
    let kept: String =
        sqlx::query_scalar("SELECT envelope::text FROM notifications WHERE out_trade_no = $1")
            .bind(&orders[4])
            .fetch_one(pool)
            .await
            .expect("row");
    assert!(
        kept.contains("2088102177846880"),
        "recent notifications keep their buyer"
    );

    // The history of a pruned payment reads, and says what was pruned.
    let history = payhook_worker::db::history::payment_history(
        pool,
        payhook_shared::event::Provider::Alipay,
        "m1",
        &orders[0],
    )
    .await
    .expect("history")
    .expect("the payment");
    assert!(history.notifications.is_empty());
    assert!(history.events.is_empty());
    assert_eq!(history.transitions.len(), 1);
    assert!(history.retention.notifications_pruned_before.is_some());
    assert!(history.retention.events_pruned_before.is_some());
    assert!(history.retention.redacted_before.is_some());

    // Nothing left to do.
    let again = pruner
        .pass(OffsetDateTime::now_utc(), &stop)
        .await
        .expect("pass");
    assert_eq!(again, PassReport::default());
    receiver.stop().await;
}

#[test]
fn retention_settings_are_checked() {
    let err = payhook_shared::config::Settings::from_toml("[retention]\nnotifications_days = 1")
        .expect_err("too short");
    assert_eq!(err.field, "retention.notifications_days");
    let err = payhook_shared::config::Settings::from_toml(
        "[retention]\nnotifications_days = 30\nredact_buyer_after_days = 30",
    )
    .expect_err("redaction after deletion");
    assert_eq!(err.field, "retention.redact_buyer_after_days");
}
