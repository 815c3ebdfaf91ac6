//! WeChat Pay APIv2 `POST /pay/orderquery`, for the reconciler: the signed XML request
//! and what a verified answer means.
//!
//! The request carries `appid, mch_id, out_trade_no, nonce_str` and an MD5 `sign` with
//! the API key. The answer is signed the same way over all its fields; an answer whose
//! signature does not check out is never used. `return_code=FAIL` (a bad request) is
//! unsigned and only reported. `result_code=FAIL` with `err_code=ORDERNOTEXIST` means
//! the order was never opened.

use secrecy::ExposeSecret as _;

use super::fields::{DEFAULT_CURRENCY, Fields, parse_fen};
use super::sign::{SignType, sign, verify_sign};
use super::xml::cdata;
use super::{V2Merchant, parse_xml};
use crate::alipay::gateway::never_opened;
use crate::error::{AnswerError, VerifyError};
use crate::event::{
    Kind, Normalized, PaymentAnswer, Provider, RawNotification, Status, VerifiedNotification,
};

/// The path of the order query under the API base URL.
pub const ORDERQUERY_PATH: &str = "/pay/orderquery";

/// The signed XML body of an order query.
pub fn orderquery_request(
    appid: &str,
    merchant: &V2Merchant,
    out_trade_no: &str,
    nonce: &str,
) -> Vec<u8> {
    signed_request(
        merchant,
        &[
            ("appid", appid),
            ("mch_id", merchant.mch_id.as_str()),
            ("out_trade_no", out_trade_no),
            ("nonce_str", nonce),
        ],
    )
}

/// `POST /pay/downloadbill`: the whole day's trade bill.
pub const DOWNLOADBILL_PATH: &str = "/pay/downloadbill";

/// The `downloadbill` request body for `bill_date` (`YYYYMMDD`, China Standard Time):
/// every trade and refund (`bill_type=ALL`), gzip'd, MD5-signed with the API key.
pub fn downloadbill_request(
    appid: &str,
    merchant: &V2Merchant,
    bill_date: &str,
    nonce: &str,
) -> Vec<u8> {
    signed_request(
        merchant,
        &[
            ("appid", appid),
            ("mch_id", merchant.mch_id.as_str()),
            ("bill_date", bill_date),
            ("bill_type", "ALL"),
            ("tar_type", "GZIP"),
            ("nonce_str", nonce),
        ],
    )
}

/// `fields` and their MD5 `sign`, as APIv2 XML.
fn signed_request(merchant: &V2Merchant, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut params: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let signature = sign(&params, merchant.api_key.expose_secret(), SignType::Md5);
    params.push(("sign".into(), signature));
    let mut xml = String::from("<xml>");
    for (k, v) in &params {
        xml.push_str(&format!("<{k}>{}</{k}>", cdata(v)));
    }
    xml.push_str("</xml>");
    xml.into_bytes()
}

/// What a verified answer says: see [`PaymentAnswer`].
pub type OrderQuery = PaymentAnswer;

/// Verifies and interprets an order query answer for `out_trade_no`.
pub fn interpret_orderquery(
    merchant: &V2Merchant,
    out_trade_no: &str,
    body: &[u8],
) -> Result<OrderQuery, AnswerError> {
    let params = parse_xml(body)?;
    let f = Fields::new(&params);
    if f.require("return_code")? != "SUCCESS" {
        return Err(AnswerError::Provider {
            code: "FAIL".into(),
            sub_code: "return_code".into(),
        });
    }
    let received = f.require("sign")?;
    let sign_type = SignType::from_field(f.get("sign_type"))?;
    verify_sign(
        &params,
        merchant.api_key.expose_secret(),
        sign_type,
        received,
    )?;
    if f.get("mch_id") != Some(merchant.mch_id.as_str()) {
        return Err(VerifyError::Malformed("answer names another mch_id".into()).into());
    }
    let raw = || RawNotification::new(body, vec![]);
    if f.require("result_code")? != "SUCCESS" {
        let err_code = f.get("err_code").unwrap_or_default();
        if err_code == "ORDERNOTEXIST" {
            return Ok(OrderQuery::NotCreated(Box::new(never_opened(
                Provider::WechatV2,
                out_trade_no,
                err_code,
                raw(),
            ))));
        }
        return Err(AnswerError::Provider {
            code: "FAIL".into(),
            sub_code: err_code.chars().take(64).collect(),
        });
    }
    if f.get("out_trade_no") != Some(out_trade_no) {
        return Err(VerifyError::Malformed("answer names another out_trade_no".into()).into());
    }
    let trade_state = f.require("trade_state")?;
    let (kind, status) = match trade_state {
        // REFUND: paid, then (partly) refunded; refunds have their own transitions.
        "SUCCESS" | "REFUND" => (Kind::Payment, Status::Paid),
        "NOTPAY" | "USERPAYING" => (Kind::Payment, Status::Pending),
        "CLOSED" | "REVOKED" => (Kind::Close, Status::Closed),
        "PAYERROR" => (Kind::Payment, Status::Failed),
        _ => (Kind::Payment, Status::Other),
    };
    let fields = Normalized {
        out_trade_no: Some(out_trade_no.to_owned()),
        provider_trade_no: f.get("transaction_id").map(str::to_owned),
        provider_status: trade_state.to_owned(),
        event_type: Some("pay.orderquery".to_owned()),
        total_amount: parse_fen(&f, "total_fee")?,
        paid_amount: parse_fen(&f, "cash_fee")?,
        currency: f.get("fee_type").unwrap_or(DEFAULT_CURRENCY).to_owned(),
        app_id: f.get("appid").map(str::to_owned),
        mch_id: f.get("mch_id").map(str::to_owned),
        payer: f.get("openid").map(str::to_owned),
        event_time: f.get("time_end").map(str::to_owned),
        ..Normalized::default()
    };
    Ok(OrderQuery::Found(Box::new(VerifiedNotification::new(
        Provider::WechatV2,
        format!("reconcile:{}:{out_trade_no}", status.as_str()),
        kind,
        status,
        fields,
        raw(),
    ))))
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

    fn merchant() -> V2Merchant {
        V2Merchant {
            mch_id: "1900000109".into(),
            api_key: SecretString::from(KEY),
        }
    }

    /// An answer signed as WeChat signs it.
    fn answer(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut params: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        params.push(("sign".into(), sign(&params, KEY, SignType::Md5)));
        let mut xml = String::from("<xml>");
        for (k, v) in &params {
            xml.push_str(&format!("<{k}>{}</{k}>", cdata(v)));
        }
        xml.push_str("</xml>");
        xml.into_bytes()
    }

    fn found(trade_state: &str) -> VerifiedNotification {
        let body = answer(&[
            ("return_code", "SUCCESS"),
            ("appid", "wx1"),
            ("mch_id", "1900000109"),
            ("nonce_str", "n"),
            ("result_code", "SUCCESS"),
            ("out_trade_no", "o-1"),
            ("trade_state", trade_state),
            ("total_fee", "888"),
            ("cash_fee", "888"),
            ("transaction_id", "4200"),
        ]);
        match interpret_orderquery(&merchant(), "o-1", &body) {
            Ok(OrderQuery::Found(n)) => *n,
            other => panic!("expected an order, got {other:?}"),
        }
    }

    #[test]
    fn the_request_is_signed_xml_that_reads_back() {
        let body = orderquery_request("wx1", &merchant(), "o-1", "nonce");
        let params = parse_xml(&body).expect("request is XML");
        let f = Fields::new(&params);
        assert_eq!(f.get("out_trade_no"), Some("o-1"));
        assert_eq!(
            verify_sign(&params, KEY, SignType::Md5, f.get("sign").expect("sign")),
            Ok(())
        );
    }

    #[test]
    fn trade_states_map_like_notifications() {
        let paid = found("SUCCESS");
        assert_eq!((paid.kind(), paid.status()), (Kind::Payment, Status::Paid));
        assert_eq!(paid.notification_id(), "reconcile:PAID:o-1");
        assert_eq!(paid.fields().total_amount, Some(888));
        assert_eq!(found("REFUND").status(), Status::Paid);
        assert_eq!(found("NOTPAY").status(), Status::Pending);
        assert_eq!(found("CLOSED").status(), Status::Closed);
        assert_eq!(found("PAYERROR").status(), Status::Failed);
    }

    #[test]
    fn order_not_exist_is_not_created_and_forgeries_are_refused() {
        let missing = answer(&[
            ("return_code", "SUCCESS"),
            ("mch_id", "1900000109"),
            ("result_code", "FAIL"),
            ("err_code", "ORDERNOTEXIST"),
        ]);
        assert!(matches!(
            interpret_orderquery(&merchant(), "o-1", &missing),
            Ok(OrderQuery::NotCreated(_))
        ));
        let forged = String::from_utf8(answer(&[
            ("return_code", "SUCCESS"),
            ("mch_id", "1900000109"),
            ("result_code", "SUCCESS"),
            ("out_trade_no", "o-1"),
            ("trade_state", "NOTPAY"),
        ]))
        .expect("utf-8")
        .replace("NOTPAY", "SUCCESS");
        let err = interpret_orderquery(&merchant(), "o-1", forged.as_bytes()).expect_err("forged");
        assert_eq!(err.label(), "bad_signature");
        let unsigned = b"<xml><return_code>FAIL</return_code><return_msg>bad</return_msg></xml>";
        assert_eq!(
            interpret_orderquery(&merchant(), "o-1", unsigned)
                .expect_err("fail")
                .label(),
            "provider_error"
        );
    }
}
