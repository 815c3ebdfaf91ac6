//! What apply records: the payment's history, the outbox's CloudEvents, pending and uninterpreted notifications, the audit rows, the migrated schema.

use super::*;

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
