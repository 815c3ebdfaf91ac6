//! The simulator's notifications against payhook's own verifiers: proof that it
//! signs and encrypts exactly as payhook expects, and that each spoiled variant is
//! refused for the right reason.

use payhook_shared::clock::SystemClock;
use payhook_shared::error::VerifyError;
use payhook_shared::event::{Kind, Status, VerifiedNotification};
use payhook_shared::wechat_v3::V3Headers;
use payhook_shared::{alipay, wechat_v2, wechat_v3};

use super::book::{OrderState, OrderTruth, RefundTruth};
use super::notify::{self, Payload, Spoil};
use crate::Providers;

fn order(provider: payhook_shared::event::Provider, total: i64, refunded: i64) -> OrderTruth {
    OrderTruth {
        provider,
        merchant: "m1".into(),
        out_trade_no: "o-1".into(),
        total_fen: total,
        state: OrderState::Paid,
        provider_trade_no: Some("4200000000000000000000000001".into()),
        paid_at: Some(time::OffsetDateTime::now_utc()),
        refunded_fen: refunded,
        refunds: Vec::new(),
        finished: false,
        notifications: Vec::new(),
    }
}

fn refund(amount: i64, cumulative: i64) -> RefundTruth {
    RefundTruth {
        out_refund_no: "r-1".into(),
        refund_id: "50300000000000000000000000001".into(),
        amount_fen: amount,
        cumulative_fen: cumulative,
        created_at: time::OffsetDateTime::now_utc(),
    }
}

fn verify(
    p: &Providers,
    payload: &Payload,
    spoil: Spoil,
) -> Result<VerifiedNotification, VerifyError> {
    let request = payload.render(&p.wechat_v3, spoil);
    match payload.provider() {
        payhook_shared::event::Provider::Alipay => {
            alipay::verify_notification(&p.alipay.app(), &request.body)
        }
        payhook_shared::event::Provider::WechatV2 => {
            wechat_v2::verify_notification(&p.wechat_v2.merchant(), &request.body)
        }
        payhook_shared::event::Provider::WechatV3 => wechat_v3::verify_notification(
            &p.wechat_v3.merchant(),
            &V3Headers::from_pairs(&request.headers),
            &request.body,
            &SystemClock,
        ),
    }
}

#[test]
fn alipay_notifications_verify_with_their_meaning() {
    let p = Providers::new();
    let o = order(payhook_shared::event::Provider::Alipay, 10_000, 0);
    let paid = verify(
        &p,
        &notify::alipay_payment(&p.alipay, &o, "n1"),
        Spoil::default(),
    )
    .expect("payment verifies");
    assert_eq!((paid.kind(), paid.status()), (Kind::Payment, Status::Paid));
    assert_eq!(paid.notification_id(), "n1");

    let partial = verify(
        &p,
        &notify::alipay_refund(&p.alipay, &o, &refund(2_500, 2_500), "n2"),
        Spoil::default(),
    )
    .expect("partial refund verifies");
    assert_eq!(partial.kind(), Kind::Refund);
    assert_eq!(partial.fields().refund_amount, Some(2_500));
    assert!(partial.fields().refund_amount_cumulative);

    let full = verify(
        &p,
        &notify::alipay_refund(&p.alipay, &o, &refund(7_500, 10_000), "n3"),
        Spoil::default(),
    )
    .expect("full refund verifies");
    assert_eq!(full.kind(), Kind::Refund);
    assert_eq!(full.fields().refund_amount, Some(10_000));

    let closed = verify(
        &p,
        &notify::alipay_close(&p.alipay, &o, "n4"),
        Spoil::default(),
    )
    .expect("close verifies");
    assert_eq!(
        (closed.kind(), closed.status()),
        (Kind::Close, Status::Closed)
    );

    let finished = verify(
        &p,
        &notify::alipay_finished(&p.alipay, &o, "n5"),
        Spoil::default(),
    )
    .expect("finished verifies");
    assert_eq!(finished.status(), Status::Paid);
}

#[test]
fn alipay_gbk_notification_verifies_and_a_corrupt_one_does_not() {
    let p = Providers::new();
    let gbk = p.alipay.clone().gbk();
    let o = order(payhook_shared::event::Provider::Alipay, 8_888, 0);
    let payload = notify::alipay_payment(&gbk, &o, "n1");
    let request = payload.render(&p.wechat_v3, Spoil::default());
    assert!(request.content_type.ends_with("charset=GBK"));
    verify(&p, &payload, Spoil::default()).expect("GBK verifies");
    let corrupt = Spoil {
        corrupt: true,
        ..Spoil::default()
    };
    assert_eq!(
        verify(&p, &payload, corrupt).err(),
        Some(VerifyError::BadSignature)
    );
}

#[test]
fn wechat_v3_notifications_verify_and_spoiled_ones_fail_for_their_reason() {
    let p = Providers::new();
    let o = order(payhook_shared::event::Provider::WechatV3, 100, 0);
    let payment = notify::v3_transaction(&p.wechat_v3, &o, "EV-1");
    let n = verify(&p, &payment, Spoil::default()).expect("verifies");
    assert_eq!(
        (n.kind(), n.status(), n.notification_id()),
        (Kind::Payment, Status::Paid, "EV-1")
    );
    assert_eq!(
        n.fields().provider_trade_no.as_deref(),
        Some("4200000000000000000000000001"),
        "the order book's transaction id"
    );
    let r = verify(
        &p,
        &notify::v3_refund(&p.wechat_v3, &o, &refund(40, 40), "EV-2"),
        Spoil::default(),
    )
    .expect("refund verifies");
    assert_eq!(
        (r.kind(), r.fields().refund_amount),
        (Kind::Refund, Some(40))
    );

    let spoiled = |spoil| verify(&p, &payment, spoil).err();
    assert_eq!(
        spoiled(Spoil {
            corrupt: true,
            ..Spoil::default()
        }),
        Some(VerifyError::BadSignature)
    );
    assert_eq!(
        spoiled(Spoil {
            probe: true,
            ..Spoil::default()
        }),
        Some(VerifyError::SignatureEncoding)
    );
    assert!(matches!(
        spoiled(Spoil {
            stale: true,
            ..Spoil::default()
        }),
        Some(VerifyError::StaleTimestamp { .. })
    ));
}

#[test]
fn wechat_v2_notifications_verify_and_corrupt_ones_fail() {
    let p = Providers::new();
    let o = order(payhook_shared::event::Provider::WechatV2, 300, 0);
    let payment = notify::v2_payment(&p.wechat_v2, &o);
    let n = verify(&p, &payment, Spoil::default()).expect("payment verifies");
    assert_eq!(n.status(), Status::Paid);
    let refund_payload = notify::v2_refund(&p.wechat_v2, &o, &refund(100, 100));
    let r = verify(&p, &refund_payload, Spoil::default()).expect("refund verifies");
    assert_eq!(
        (r.kind(), r.fields().refund_amount),
        (Kind::Refund, Some(100))
    );

    let corrupt = Spoil {
        corrupt: true,
        ..Spoil::default()
    };
    assert_eq!(
        verify(&p, &payment, corrupt).err(),
        Some(VerifyError::BadSignature)
    );
    assert!(verify(&p, &refund_payload, corrupt).is_err());
}
