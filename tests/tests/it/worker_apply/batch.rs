//! Batches: several envelopes in one transaction (`worker.batch_max`), the bulk path and its fallbacks, each ending as it ends applied alone.

use super::*;

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
    let cumulative = changed(&refunded(Provider::Alipay, &o[10], &o[10], 200), |e| {
        e.fields.refund_amount_cumulative = true;
    });
    let wrong_app = changed(&paid(Provider::Alipay, &o[11], 100), |e| {
        e.fields.app_id = Some("2021000000000999".into());
    });
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
    let waits = payhook_testkit::harness::eventually_async(Duration::from_secs(20), || async {
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
