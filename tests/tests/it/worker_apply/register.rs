//! Registering orders: created, already registered, conflicts and refusals.

use super::*;

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
