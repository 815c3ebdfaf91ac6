//! Registered orders and merchant identities: a mismatch is quarantined once and never paid; a match is applied.

use super::*;

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
    let envelope = changed(&paid(provider, &order, 100), |e| set(&mut e.fields));
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
