//! Arrival in any order: one effect and one event per business transition, duplicates stopped, a refund before its payment, a close and a late payment.

use super::*;

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
    let refund = changed(
        &refunded(Provider::WechatV3, &order, &format!("{order}-a"), 4000),
        |e| e.fields.total_amount = Some(10000),
    );

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
