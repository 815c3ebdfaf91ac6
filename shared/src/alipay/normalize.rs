//! What a verified Alipay notification means, in payhook's terms.
//!
//! `trade_status` alone is ambiguous (docs/protocols.md §1, trap 11):
//!
//! | `trade_status`   | `refund_fee` > 0 | meaning                           |
//! |------------------|------------------|-----------------------------------|
//! | `TRADE_SUCCESS`  | no               | payment, paid                     |
//! | `TRADE_SUCCESS`  | yes              | partial refund (cumulative fee)   |
//! | `TRADE_FINISHED` | either           | payment, paid (no longer refundable) |
//! | `TRADE_CLOSED`   | yes              | full refund (cumulative fee)      |
//! | `TRADE_CLOSED`   | no               | closed unpaid                     |
//! | `WAIT_BUYER_PAY` | —                | payment pending                   |
//! | anything else    | —                | other (published as such)         |
//!
//! `refund_fee` "0.00" counts as no refund. Amounts are decimal yuan, parsed exactly
//! into fen. Empty parameters are treated as absent.

use super::form::Form;
use crate::error::VerifyError;
use crate::event::{Kind, Normalized, Provider, RawNotification, Status, VerifiedNotification};
use crate::money::parse_yuan;

/// Builds the [`VerifiedNotification`] of a notification whose signature checked out.
pub(super) fn normalize(form: &Form, body: &[u8]) -> Result<VerifiedNotification, VerifyError> {
    let field = |key: &str| form.get(key).filter(|v| !v.is_empty());
    let text = |key: &str| field(key).map(str::to_owned);
    let amount = |key: &'static str| {
        field(key)
            .map(|v| parse_yuan(v).map_err(|_| VerifyError::Amount(key)))
            .transpose()
    };

    let notify_id = field("notify_id").ok_or(VerifyError::MissingField("notify_id"))?;
    let trade_status = field("trade_status");
    let refund_fee = amount("refund_fee")?.filter(|&fen| fen > 0);
    let (kind, status) = classify(trade_status, refund_fee.is_some());
    if kind != Kind::Other && field("out_trade_no").is_none() {
        return Err(VerifyError::MissingField("out_trade_no"));
    }

    let is_refund = kind == Kind::Refund;
    let event_time = match (kind, status) {
        (Kind::Refund, _) => field("gmt_refund"),
        (Kind::Close, _) => field("gmt_close"),
        (Kind::Payment, Status::Pending) => field("gmt_create"),
        (Kind::Payment, _) => field("gmt_payment"),
        _ => None,
    }
    .or_else(|| field("notify_time"));

    let fields = Normalized {
        out_trade_no: text("out_trade_no"),
        provider_trade_no: text("trade_no"),
        provider_status: trade_status.unwrap_or_default().to_owned(),
        event_type: text("notify_type"),
        total_amount: amount("total_amount")?,
        paid_amount: match amount("buyer_pay_amount")? {
            Some(fen) => Some(fen),
            None => amount("receipt_amount")?,
        },
        refund_amount: if is_refund { refund_fee } else { None },
        refund_amount_cumulative: is_refund,
        currency: "CNY".to_owned(),
        out_refund_no: if is_refund { text("out_biz_no") } else { None },
        provider_refund_no: None,
        app_id: text("app_id"),
        mch_id: None,
        payee: text("seller_id"),
        // Apps created since 2023 get `buyer_open_id` instead of `buyer_id`.
        payer: text("buyer_id").or_else(|| text("buyer_open_id")),
        event_time: event_time.map(str::to_owned),
    };
    Ok(VerifiedNotification::new(
        Provider::Alipay,
        notify_id.to_owned(),
        kind,
        status,
        fields,
        RawNotification::new(body, vec![]),
    ))
}

fn classify(trade_status: Option<&str>, refunded: bool) -> (Kind, Status) {
    match (trade_status, refunded) {
        (Some("TRADE_SUCCESS"), false) | (Some("TRADE_FINISHED"), _) => {
            (Kind::Payment, Status::Paid)
        }
        (Some("TRADE_SUCCESS" | "TRADE_CLOSED"), true) => (Kind::Refund, Status::RefundSucceeded),
        (Some("TRADE_CLOSED"), false) => (Kind::Close, Status::Closed),
        (Some("WAIT_BUYER_PAY"), _) => (Kind::Payment, Status::Pending),
        _ => (Kind::Other, Status::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Normalizes a body given as `k=v` pairs (signature checks are `notify`'s tests).
    fn normalized(pairs: &[(&str, &str)]) -> Result<VerifiedNotification, VerifyError> {
        let body = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let form = Form::parse(body.as_bytes()).expect("test body decodes");
        normalize(&form, body.as_bytes())
    }

    const BASE: &[(&str, &str)] = &[
        ("notify_id", "n1"),
        ("notify_type", "trade_status_sync"),
        ("notify_time", "2024-05-20+10:00:06"),
        ("app_id", "2021000000000001"),
        ("seller_id", "2088721000000001"),
        ("buyer_id", "2088102177846880"),
        ("out_trade_no", "order-1"),
        ("trade_no", "2024052022001"),
        ("total_amount", "88.88"),
        ("gmt_create", "2024-05-20+09:59:00"),
    ];

    fn base_with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<_> = BASE
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .copied()
            .collect();
        out.extend_from_slice(extra);
        out
    }

    fn kind_status(extra: &[(&'static str, &'static str)]) -> (Kind, Status) {
        let n = normalized(&base_with(extra)).expect("normalizes");
        (n.kind(), n.status())
    }

    #[test]
    fn trade_success_is_a_paid_payment() {
        let n = normalized(&base_with(&[
            ("trade_status", "TRADE_SUCCESS"),
            ("buyer_pay_amount", "80.00"),
            ("receipt_amount", "88.88"),
            ("gmt_payment", "2024-05-20+10:00:05"),
        ]))
        .expect("normalizes");
        assert_eq!((n.kind(), n.status()), (Kind::Payment, Status::Paid));
        assert_eq!(n.notification_id(), "n1");
        let f = n.fields();
        assert_eq!(f.provider_status, "TRADE_SUCCESS");
        assert_eq!(f.event_type.as_deref(), Some("trade_status_sync"));
        assert_eq!(f.out_trade_no.as_deref(), Some("order-1"));
        assert_eq!(f.provider_trade_no.as_deref(), Some("2024052022001"));
        assert_eq!((f.total_amount, f.paid_amount), (Some(8888), Some(8000)));
        assert_eq!((f.refund_amount, f.refund_amount_cumulative), (None, false));
        assert_eq!(f.currency, "CNY");
        assert_eq!(f.app_id.as_deref(), Some("2021000000000001"));
        assert_eq!(f.payee.as_deref(), Some("2088721000000001"));
        assert_eq!(f.payer.as_deref(), Some("2088102177846880"));
        assert_eq!(f.event_time.as_deref(), Some("2024-05-20 10:00:05"));
        assert_eq!(
            n.raw()
                .body
                .as_deref()
                .map(|b| b.starts_with("notify_id=n1&")),
            Some(true)
        );
    }

    #[test]
    fn trade_success_with_refund_fee_is_a_cumulative_partial_refund() {
        let n = normalized(&base_with(&[
            ("trade_status", "TRADE_SUCCESS"),
            ("refund_fee", "10.00"),
            ("out_biz_no", "refund-1"),
            ("gmt_refund", "2024-05-21+08:00:00.123"),
        ]))
        .expect("normalizes");
        assert_eq!(
            (n.kind(), n.status()),
            (Kind::Refund, Status::RefundSucceeded)
        );
        let f = n.fields();
        assert_eq!(
            (f.refund_amount, f.refund_amount_cumulative),
            (Some(1000), true)
        );
        assert_eq!(f.out_refund_no.as_deref(), Some("refund-1"));
        assert_eq!(f.event_time.as_deref(), Some("2024-05-21 08:00:00.123"));
    }

    #[test]
    fn zero_refund_fee_is_no_refund() {
        let paid = kind_status(&[("trade_status", "TRADE_SUCCESS"), ("refund_fee", "0.00")]);
        assert_eq!(paid, (Kind::Payment, Status::Paid));
        let closed = kind_status(&[("trade_status", "TRADE_CLOSED"), ("refund_fee", "0.00")]);
        assert_eq!(closed, (Kind::Close, Status::Closed));
    }

    #[test]
    fn trade_closed_with_refund_fee_is_a_full_refund() {
        let n = normalized(&base_with(&[
            ("trade_status", "TRADE_CLOSED"),
            ("refund_fee", "88.88"),
            ("gmt_refund", "2024-05-21+08:00:00.123"),
            ("gmt_close", "2024-05-21+08:00:01"),
        ]))
        .expect("normalizes");
        assert_eq!(
            (n.kind(), n.status()),
            (Kind::Refund, Status::RefundSucceeded)
        );
        let f = n.fields();
        assert_eq!(
            (f.refund_amount, f.refund_amount_cumulative),
            (Some(8888), true)
        );
        // No out_biz_no: the trade itself identifies the refund (see transition_key).
        assert_eq!(f.out_refund_no, None);
        assert_eq!(f.event_time.as_deref(), Some("2024-05-21 08:00:00.123"));
    }

    #[test]
    fn trade_closed_without_refund_is_a_close() {
        let n = normalized(&base_with(&[
            ("trade_status", "TRADE_CLOSED"),
            ("gmt_close", "2024-05-20+10:30:00"),
        ]))
        .expect("normalizes");
        assert_eq!((n.kind(), n.status()), (Kind::Close, Status::Closed));
        assert_eq!(
            n.fields().event_time.as_deref(),
            Some("2024-05-20 10:30:00")
        );
    }

    #[test]
    fn trade_finished_is_paid_even_after_refunds() {
        assert_eq!(
            kind_status(&[("trade_status", "TRADE_FINISHED")]),
            (Kind::Payment, Status::Paid)
        );
        let n = normalized(&base_with(&[
            ("trade_status", "TRADE_FINISHED"),
            ("refund_fee", "1.00"),
        ]))
        .expect("normalizes");
        assert_eq!((n.kind(), n.status()), (Kind::Payment, Status::Paid));
        assert_eq!(n.fields().refund_amount, None);
    }

    #[test]
    fn wait_buyer_pay_is_pending() {
        let n = normalized(&base_with(&[("trade_status", "WAIT_BUYER_PAY")])).expect("normalizes");
        assert_eq!((n.kind(), n.status()), (Kind::Payment, Status::Pending));
        assert_eq!(
            n.fields().event_time.as_deref(),
            Some("2024-05-20 09:59:00")
        );
    }

    #[test]
    fn unknown_statuses_are_other_and_need_no_order() {
        let pairs: Vec<_> = base_with(&[("trade_status", "SOMETHING_NEW")])
            .into_iter()
            .filter(|(k, _)| *k != "out_trade_no")
            .collect();
        let n = normalized(&pairs).expect("normalizes");
        assert_eq!((n.kind(), n.status()), (Kind::Other, Status::Other));
        assert_eq!(
            n.fields().event_time.as_deref(),
            Some("2024-05-20 10:00:06")
        );
        let no_status = normalized(&[("notify_id", "n2")]).expect("normalizes");
        assert_eq!(
            (
                no_status.kind(),
                no_status.fields().provider_status.as_str()
            ),
            (Kind::Other, "")
        );
    }

    #[test]
    fn payments_refunds_and_closes_need_out_trade_no() {
        for status in ["TRADE_SUCCESS", "TRADE_CLOSED", "WAIT_BUYER_PAY"] {
            let pairs: Vec<_> = base_with(&[("trade_status", status), ("out_trade_no", "")]);
            assert_eq!(
                normalized(&pairs).err(),
                Some(VerifyError::MissingField("out_trade_no"))
            );
        }
    }

    #[test]
    fn notify_id_is_required() {
        let pairs = base_with(&[("trade_status", "TRADE_SUCCESS"), ("notify_id", "")]);
        assert_eq!(
            normalized(&pairs).err(),
            Some(VerifyError::MissingField("notify_id"))
        );
    }

    #[test]
    fn amounts_are_exact_decimal_yuan() {
        let paid = |total: &'static str| {
            normalized(&base_with(&[
                ("trade_status", "TRADE_SUCCESS"),
                ("total_amount", total),
            ]))
        };
        assert_eq!(paid("0.01").expect("valid").fields().total_amount, Some(1));
        assert_eq!(paid("0.1").expect("valid").fields().total_amount, Some(10));
        assert_eq!(
            paid("100").expect("valid").fields().total_amount,
            Some(10000)
        );
        for bad in [
            "1.001",
            "-1.00",
            "1e2",
            "NaN",
            "1%2C00",
            "99999999999999999999",
        ] {
            assert_eq!(
                paid(bad).err(),
                Some(VerifyError::Amount("total_amount")),
                "{bad}"
            );
        }
        let bad_refund = base_with(&[("trade_status", "TRADE_SUCCESS"), ("refund_fee", "0.001")]);
        assert_eq!(
            normalized(&bad_refund).err(),
            Some(VerifyError::Amount("refund_fee"))
        );
    }

    #[test]
    fn paid_amount_falls_back_to_receipt_amount() {
        let n = normalized(&base_with(&[
            ("trade_status", "TRADE_SUCCESS"),
            ("receipt_amount", "88.00"),
        ]))
        .expect("normalizes");
        assert_eq!(n.fields().paid_amount, Some(8800));
    }

    #[test]
    fn buyer_open_id_is_the_payer_when_buyer_id_is_absent() {
        let pairs: Vec<_> =
            base_with(&[("trade_status", "TRADE_SUCCESS"), ("buyer_open_id", "074a")])
                .into_iter()
                .filter(|(k, _)| *k != "buyer_id")
                .collect();
        assert_eq!(
            normalized(&pairs)
                .expect("normalizes")
                .fields()
                .payer
                .as_deref(),
            Some("074a")
        );
    }
}
