//! Concurrent notifications and refunds of one payment: applied exactly once, refunds adding up under the payment's row lock.

use super::*;

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
