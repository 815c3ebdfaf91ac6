//! Calls to the Alipay open-API gateway made by the reconciler: the signed request
//! form, and what a verified answer means (docs/protocols.md §1, "Queries").
//!
//! - Request: `app_id, method, format=JSON, charset=utf-8, sign_type=RSA2,
//!   timestamp, version=1.0, biz_content` (+ `app_cert_sn, alipay_root_cert_sn` in
//!   certificate mode), signed with the app private key over every parameter but
//!   `sign` — `sign_type` included (the "V2" rule), empty values dropped, sorted.
//! - Answer: the `<method>_response` node is trusted only once its signature checks
//!   out ([`verify_response`]); `code 10000` means the call worked, the business state
//!   is `trade_status`. `40004 / ACQ.TRADE_NOT_EXIST` means "not created yet".
//!
//! A verified `alipay.trade.query` answer becomes a [`VerifiedNotification`] with the
//! notification id `reconcile:<status>:<out_trade_no>`, so that it takes the same
//! apply path as a notification, and a later notification of the same transition is
//! a duplicate transition, not a second effect.

use serde::Deserialize;
use time::OffsetDateTime;
use time::macros::{format_description, offset};

use super::{AlipayApp, SignType, sign_content_v2, verify_response};
use crate::crypto::RsaSigningKey;
use crate::error::{AnswerError as QueryAnswerError, KeyError, VerifyError};
use crate::event::{
    Kind, Normalized, PaymentAnswer, Provider, RawNotification, Status, VerifiedNotification,
};
use crate::money::parse_yuan;

/// `alipay.trade.query`.
pub const TRADE_QUERY: &str = "alipay.trade.query";
/// The response node of [`TRADE_QUERY`].
pub const TRADE_QUERY_NODE: &str = "alipay_trade_query_response";
/// `alipay.trade.fastpay.refund.query`.
pub const REFUND_QUERY: &str = "alipay.trade.fastpay.refund.query";
/// The response node of [`REFUND_QUERY`].
pub const REFUND_QUERY_NODE: &str = "alipay_trade_fastpay_refund_query_response";
/// `refund_status` of a refund that went through.
pub const REFUND_SUCCESS: &str = "REFUND_SUCCESS";
/// `code` of a call that worked.
pub const CODE_SUCCESS: &str = "10000";
/// `sub_code` of an order the buyer never opened: "not created yet".
pub const TRADE_NOT_EXIST: &str = "ACQ.TRADE_NOT_EXIST";

/// Certificate-mode request fields (`app_cert_sn`, `alipay_root_cert_sn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSns {
    pub app_cert_sn: String,
    pub alipay_root_cert_sn: String,
}

/// A gateway `timestamp`: Beijing time, `yyyy-MM-dd HH:mm:ss`.
pub fn timestamp(now: OffsetDateTime) -> Result<String, KeyError> {
    now.to_offset(offset!(+8))
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .map_err(|e| KeyError::Invalid(format!("timestamp: {e}")))
}

/// The signed form of a gateway call, ready to be POSTed
/// (`application/x-www-form-urlencoded;charset=utf-8`). `timestamp` is
/// [`timestamp`]`(now)`.
pub fn signed_request(
    app_id: &str,
    method: &str,
    biz_content: &str,
    timestamp: &str,
    cert_sns: Option<&CertSns>,
    key: &RsaSigningKey,
) -> Result<Vec<(String, String)>, KeyError> {
    let mut params: Vec<(String, String)> = [
        ("app_id", app_id),
        ("method", method),
        ("format", "JSON"),
        ("charset", "utf-8"),
        ("sign_type", SignType::Rsa2.as_str()),
        ("timestamp", timestamp),
        ("version", "1.0"),
        ("biz_content", biz_content),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Some(sns) = cert_sns {
        params.push(("app_cert_sn".into(), sns.app_cert_sn.clone()));
        params.push((
            "alipay_root_cert_sn".into(),
            sns.alipay_root_cert_sn.clone(),
        ));
    }
    let sign = key.sign_sha256_b64(sign_content_v2(&params).as_bytes())?;
    params.push(("sign".into(), sign));
    Ok(params)
}

/// The `biz_content` of `alipay.trade.query` for one order.
pub fn trade_query_biz_content(out_trade_no: &str) -> String {
    serde_json::json!({ "out_trade_no": out_trade_no }).to_string()
}

/// The `node` of a gateway answer, once its signature checked out, parsed.
fn verified_node<T: serde::de::DeserializeOwned>(
    app: &AlipayApp,
    body: &str,
    node: &str,
) -> Result<T, VerifyError> {
    let raw = verify_response(&app.keys, SignType::Rsa2, body, node)?;
    serde_json::from_str(raw).map_err(|e| VerifyError::Malformed(format!("{node}: {e}")))
}

/// A decimal-yuan field of an answer in fen (absent or empty: `None`).
fn yuan(key: &'static str, value: &Option<String>) -> Result<Option<i64>, VerifyError> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(|v| parse_yuan(v).map_err(|_| VerifyError::Amount(key)))
        .transpose()
}

/// The method that answers the URL of a day's bill.
pub const BILL_URL_QUERY: &str = "alipay.data.dataservice.bill.downloadurl.query";
const BILL_URL_NODE: &str = "alipay_data_dataservice_bill_downloadurl_query_response";
/// The sub-code of a bill not generated (yet).
pub const BILL_NOT_EXIST: &str = "isp.bill_not_exist";

/// The `biz_content` of [`BILL_URL_QUERY`]: the trade bill of `day` (China Standard
/// Time).
pub fn bill_url_biz_content(day: time::Date) -> String {
    serde_json::json!({ "bill_type": "trade", "bill_date": day.to_string() }).to_string()
}

/// What a verified [`BILL_URL_QUERY`] answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillUrl {
    /// Where the day's ZIP is (a short-lived URL).
    Ready(String),
    /// No bill (yet): [`BILL_NOT_EXIST`].
    NotReady(String),
}

/// Verifies and interprets the answer to [`BILL_URL_QUERY`].
pub fn interpret_bill_url(app: &AlipayApp, body: &str) -> Result<BillUrl, QueryAnswerError> {
    #[derive(serde::Deserialize)]
    struct Node {
        code: Option<String>,
        sub_code: Option<String>,
        bill_download_url: Option<String>,
    }
    let node: Node = verified_node(app, body, BILL_URL_NODE)?;
    let code = node.code.unwrap_or_default();
    let sub_code = node.sub_code.unwrap_or_default();
    if code != CODE_SUCCESS {
        if sub_code == BILL_NOT_EXIST {
            return Ok(BillUrl::NotReady(sub_code));
        }
        return Err(QueryAnswerError::Provider { code, sub_code });
    }
    node.bill_download_url
        .filter(|url| url.starts_with("https://") || url.starts_with("http://"))
        .map(BillUrl::Ready)
        .ok_or_else(|| VerifyError::Malformed("bill answer without an http(s) URL".into()).into())
}

/// The `biz_content` of `alipay.trade.fastpay.refund.query` for one refund request.
pub fn refund_query_biz_content(out_trade_no: &str, out_request_no: &str) -> String {
    serde_json::json!({ "out_trade_no": out_trade_no, "out_request_no": out_request_no })
        .to_string()
}

/// What a verified `alipay.trade.fastpay.refund.query` answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundAnswer {
    /// No such refund (yet), or not through: `code 10000` alone does not mean refunded
    /// (docs/protocols.md trap 12). `ACQ.TRADE_NOT_EXIST` counts as not refunded too.
    NotRefunded,
    /// `refund_status = REFUND_SUCCESS`: the refund as a notification would state it.
    Refunded(Box<VerifiedNotification>),
}

#[derive(Debug, Deserialize)]
struct RefundNode {
    code: Option<String>,
    sub_code: Option<String>,
    out_trade_no: Option<String>,
    trade_no: Option<String>,
    out_request_no: Option<String>,
    refund_status: Option<String>,
    refund_amount: Option<String>,
    total_amount: Option<String>,
    gmt_refund_pay: Option<String>,
}

/// Verifies and interprets an `alipay.trade.fastpay.refund.query` answer.
///
/// Alipay's refund *notifications* carry the trade's cumulative `refund_fee`; this
/// answer carries only *this* refund's `refund_amount`. So that both can be applied in
/// any order, the refund is stated the notifications' way: cumulative, as
/// `refunded_before_fen` (what the trade's other refunds refunded, as the caller learnt
/// from Alipay's answers about them) plus this refund. If the caller does not know
/// every refund of the trade this is a lower bound of the running total; payhook keeps
/// the highest running total it has seen, so a refund is never counted twice.
pub fn interpret_refund_query(
    app: &AlipayApp,
    out_trade_no: &str,
    out_request_no: &str,
    refunded_before_fen: i64,
    body: &str,
) -> Result<RefundAnswer, QueryAnswerError> {
    let node: RefundNode = verified_node(app, body, REFUND_QUERY_NODE)?;
    let code = node.code.clone().unwrap_or_default();
    let sub_code = node.sub_code.clone().unwrap_or_default();
    if code != CODE_SUCCESS {
        if sub_code == TRADE_NOT_EXIST {
            return Ok(RefundAnswer::NotRefunded);
        }
        return Err(QueryAnswerError::Provider { code, sub_code });
    }
    if node.refund_status.as_deref() != Some(REFUND_SUCCESS) {
        return Ok(RefundAnswer::NotRefunded);
    }
    let names_other = |named: &Option<String>, ours: &str| {
        named.as_deref().is_some_and(|n| !n.is_empty() && n != ours)
    };
    if names_other(&node.out_trade_no, out_trade_no)
        || names_other(&node.out_request_no, out_request_no)
    {
        return Err(VerifyError::Malformed("answer names another refund".into()).into());
    }
    let this_refund = yuan("refund_amount", &node.refund_amount)?
        .ok_or(VerifyError::MissingField("refund_amount"))?;
    let cumulative = this_refund
        .checked_add(refunded_before_fen.max(0))
        .ok_or(VerifyError::Amount("refund_amount"))?;
    let fields = Normalized {
        out_trade_no: Some(out_trade_no.to_owned()),
        provider_trade_no: node.trade_no.filter(|s| !s.is_empty()),
        provider_status: REFUND_SUCCESS.to_owned(),
        event_type: Some(REFUND_QUERY.to_owned()),
        total_amount: yuan("total_amount", &node.total_amount)?,
        refund_amount: Some(cumulative),
        refund_amount_cumulative: true,
        currency: "CNY".to_owned(),
        out_refund_no: Some(out_request_no.to_owned()),
        app_id: Some(app.app_id.clone()),
        event_time: node.gmt_refund_pay.filter(|s| !s.is_empty()),
        ..Normalized::default()
    };
    Ok(RefundAnswer::Refunded(Box::new(VerifiedNotification::new(
        Provider::Alipay,
        format!("reconcile:REFUND_SUCCEEDED:{out_request_no}"),
        Kind::Refund,
        Status::RefundSucceeded,
        fields,
        RawNotification::new(body.as_bytes(), vec![]),
    ))))
}

/// What a verified answer says: see [`PaymentAnswer`].
pub type TradeQuery = PaymentAnswer;

#[derive(Debug, Deserialize)]
struct TradeNode {
    code: Option<String>,
    sub_code: Option<String>,
    out_trade_no: Option<String>,
    trade_no: Option<String>,
    trade_status: Option<String>,
    total_amount: Option<String>,
    buyer_pay_amount: Option<String>,
    receipt_amount: Option<String>,
    send_pay_date: Option<String>,
    buyer_user_id: Option<String>,
    buyer_open_id: Option<String>,
}

/// Verifies and interprets an `alipay.trade.query` answer for `out_trade_no`.
///
/// `TRADE_CLOSED` is ambiguous here as in notifications: an unpaid order closed on
/// timeout, *or* a paid one refunded in full. The query does not carry the refund, so
/// a closed trade that shows it was paid (`send_pay_date`, or a buyer amount above
/// zero) is reported as **paid**: the payment is a fact; the refund comes with its own
/// notification or refund query. Reporting it as closed would be wrong, because a close
/// never undoes a payment.
pub fn interpret_trade_query(
    app: &AlipayApp,
    out_trade_no: &str,
    body: &str,
) -> Result<TradeQuery, QueryAnswerError> {
    let node: TradeNode = verified_node(app, body, TRADE_QUERY_NODE)?;
    let code = node.code.clone().unwrap_or_default();
    let sub_code = node.sub_code.clone().unwrap_or_default();
    if code != CODE_SUCCESS {
        if sub_code == TRADE_NOT_EXIST {
            return Ok(TradeQuery::NotCreated(Box::new(never_opened(
                Provider::Alipay,
                out_trade_no,
                TRADE_NOT_EXIST,
                RawNotification::new(body.as_bytes(), vec![]),
            ))));
        }
        return Err(QueryAnswerError::Provider { code, sub_code });
    }
    let answered = node.out_trade_no.as_deref().filter(|s| !s.is_empty());
    if answered.is_some_and(|no| no != out_trade_no) {
        return Err(VerifyError::Malformed("answer names another out_trade_no".into()).into());
    }
    let total_amount = yuan("total_amount", &node.total_amount)?;
    let paid_amount = match yuan("buyer_pay_amount", &node.buyer_pay_amount)? {
        Some(fen) => Some(fen),
        None => yuan("receipt_amount", &node.receipt_amount)?,
    };
    let send_pay_date = node.send_pay_date.clone().filter(|s| !s.is_empty());
    let status_text = node.trade_status.clone().unwrap_or_default();
    let was_paid = send_pay_date.is_some() || paid_amount.is_some_and(|fen| fen > 0);
    let (kind, status) = match status_text.as_str() {
        "TRADE_SUCCESS" | "TRADE_FINISHED" => (Kind::Payment, Status::Paid),
        "TRADE_CLOSED" if was_paid => (Kind::Payment, Status::Paid),
        "TRADE_CLOSED" => (Kind::Close, Status::Closed),
        "WAIT_BUYER_PAY" => (Kind::Payment, Status::Pending),
        _ => (Kind::Other, Status::Other),
    };
    let fields = Normalized {
        out_trade_no: Some(out_trade_no.to_owned()),
        provider_trade_no: node.trade_no.filter(|s| !s.is_empty()),
        provider_status: status_text,
        event_type: Some(TRADE_QUERY.to_owned()),
        total_amount,
        paid_amount: paid_amount.filter(|_| status == Status::Paid),
        currency: "CNY".to_owned(),
        // Signed by Alipay in answer to a call made with our app id.
        app_id: Some(app.app_id.clone()),
        payer: node.buyer_user_id.or(node.buyer_open_id),
        event_time: send_pay_date.filter(|_| status == Status::Paid),
        ..Normalized::default()
    };
    let id = format!("reconcile:{}:{out_trade_no}", status.as_str());
    Ok(TradeQuery::Found(Box::new(VerifiedNotification::new(
        Provider::Alipay,
        id,
        kind,
        status,
        fields,
        RawNotification::new(body.as_bytes(), vec![]),
    ))))
}

/// The close of an order the provider says does not exist (a verified answer).
pub(crate) fn never_opened(
    provider: Provider,
    out_trade_no: &str,
    provider_status: &str,
    raw: RawNotification,
) -> VerifiedNotification {
    let fields = Normalized {
        out_trade_no: Some(out_trade_no.to_owned()),
        provider_status: provider_status.to_owned(),
        event_type: Some("reconcile.not_created".to_owned()),
        currency: "CNY".to_owned(),
        ..Normalized::default()
    };
    VerifiedNotification::new(
        provider,
        format!("reconcile:CLOSED:{out_trade_no}"),
        Kind::Close,
        Status::Closed,
        fields,
        raw,
    )
}

#[cfg(test)]
mod tests {
    use rsa::pkcs8::EncodePrivateKey as _;
    use rsa::signature::{SignatureEncoding as _, Signer as _};

    use super::*;
    use crate::alipay::testkit;
    use crate::crypto::{RsaHash, RsaPublicKey, verify_rsa};

    /// An answer signed by the provider key of the test kit, as the gateway signs it.
    fn answer(node: &str) -> String {
        let key = testkit::private_key(testkit::PROVIDER).clone();
        let sig = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key).sign(node.as_bytes());
        let sign = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sig.to_vec());
        format!(r#"{{"{TRADE_QUERY_NODE}":{node},"sign":"{sign}"}}"#)
    }

    fn query(node: &str) -> Result<TradeQuery, QueryAnswerError> {
        interpret_trade_query(&testkit::app(testkit::PROVIDER), "order-1", &answer(node))
    }

    fn found(node: &str) -> VerifiedNotification {
        match query(node).expect("answer is usable") {
            TradeQuery::Found(n) => *n,
            other => panic!("expected a trade, got {other:?}"),
        }
    }

    #[test]
    fn request_is_signed_over_every_parameter_but_sign_with_beijing_time() {
        let private = rsa::PrivateKey::new(&mut rand::rng(), 2048).expect("key");
        let pem = private.to_pkcs8_pem(Default::default()).expect("pem");
        let key = RsaSigningKey::parse(&pem).expect("signing key");
        let now = OffsetDateTime::from_unix_timestamp(1_716_170_400).expect("time"); // 2024-05-20 02:00:00Z
        let sns = CertSns {
            app_cert_sn: "appsn".into(),
            alipay_root_cert_sn: "rootsn".into(),
        };
        let biz = trade_query_biz_content("order-1");
        let ts = timestamp(now).expect("formats");
        let params = signed_request("2021", TRADE_QUERY, &biz, &ts, Some(&sns), &key)
            .expect("request signs");
        let get = |k: &str| {
            params
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("timestamp"), Some("2024-05-20 10:00:00"));
        assert_eq!(get("sign_type"), Some("RSA2"));
        assert_eq!(get("biz_content"), Some(r#"{"out_trade_no":"order-1"}"#));
        assert_eq!(get("app_cert_sn"), Some("appsn"));
        let unsigned: Vec<_> = params
            .iter()
            .filter(|(k, _)| k != "sign")
            .cloned()
            .collect();
        let content = sign_content_v2(&unsigned);
        assert!(content.contains("sign_type=RSA2"), "{content}");
        let public = RsaPublicKey::from(private.to_public_key());
        assert_eq!(
            verify_rsa(
                &public,
                RsaHash::Sha256,
                content.as_bytes(),
                get("sign").expect("signed")
            ),
            Ok(())
        );
    }

    #[test]
    fn paid_trade_is_a_paid_payment_with_a_reconcile_id() {
        let n = found(
            r#"{"code":"10000","msg":"Success","out_trade_no":"order-1","trade_no":"2024x","trade_status":"TRADE_SUCCESS","total_amount":"88.88","buyer_pay_amount":"88.88","send_pay_date":"2024-05-20 10:00:05","buyer_user_id":"2088"}"#,
        );
        assert_eq!((n.kind(), n.status()), (Kind::Payment, Status::Paid));
        assert_eq!(n.notification_id(), "reconcile:PAID:order-1");
        let f = n.fields();
        assert_eq!(f.total_amount, Some(8888));
        assert_eq!(f.paid_amount, Some(8888));
        assert_eq!(f.provider_trade_no.as_deref(), Some("2024x"));
        assert_eq!(f.app_id.as_deref(), Some("2021000000000001"));
        assert_eq!(f.event_time.as_deref(), Some("2024-05-20 10:00:05"));
    }

    #[test]
    fn trade_states_map_like_notifications() {
        let state = |status: &str, extra: &str| {
            let n = found(&format!(
                r#"{{"code":"10000","msg":"Success","out_trade_no":"order-1","trade_status":"{status}","total_amount":"1.00"{extra}}}"#
            ));
            (n.kind(), n.status())
        };
        assert_eq!(
            state("WAIT_BUYER_PAY", ""),
            (Kind::Payment, Status::Pending)
        );
        assert_eq!(state("TRADE_FINISHED", ""), (Kind::Payment, Status::Paid));
        assert_eq!(state("TRADE_CLOSED", ""), (Kind::Close, Status::Closed));
        // Closed after a full refund: the payment happened.
        assert_eq!(
            state("TRADE_CLOSED", r#","send_pay_date":"2024-05-20 10:00:05""#),
            (Kind::Payment, Status::Paid)
        );
        assert_eq!(state("SOMETHING_NEW", ""), (Kind::Other, Status::Other));
    }

    fn refund_answer(node: &str) -> String {
        answer(node).replace(TRADE_QUERY_NODE, REFUND_QUERY_NODE)
    }

    #[test]
    fn refund_success_is_stated_cumulatively_from_what_is_known() {
        let app = testkit::app(testkit::PROVIDER);
        let body = refund_answer(
            r#"{"code":"10000","msg":"Success","out_trade_no":"order-1","trade_no":"2024x","out_request_no":"r-1","refund_status":"REFUND_SUCCESS","refund_amount":"3.00","total_amount":"10.00"}"#,
        );
        let Ok(RefundAnswer::Refunded(n)) =
            interpret_refund_query(&app, "order-1", "r-1", 700, &body)
        else {
            panic!("expected a refund");
        };
        assert_eq!(
            (n.kind(), n.status()),
            (Kind::Refund, Status::RefundSucceeded)
        );
        assert_eq!(n.notification_id(), "reconcile:REFUND_SUCCEEDED:r-1");
        let f = n.fields();
        assert_eq!(
            (f.refund_amount, f.refund_amount_cumulative),
            (Some(1000), true)
        );
        assert_eq!(f.out_refund_no.as_deref(), Some("r-1"));
        assert_eq!(f.total_amount, Some(1000));
        // About another refund: refused.
        assert!(interpret_refund_query(&app, "order-1", "r-2", 0, &body).is_err());
    }

    #[test]
    fn code_10000_without_refund_success_is_not_refunded() {
        let app = testkit::app(testkit::PROVIDER);
        for node in [
            r#"{"code":"10000","msg":"Success","out_trade_no":"order-1","out_request_no":"r-1"}"#,
            r#"{"code":"10000","msg":"Success","refund_status":"REFUND_PROCESSING"}"#,
            r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST"}"#,
        ] {
            assert_eq!(
                interpret_refund_query(&app, "order-1", "r-1", 0, &refund_answer(node)),
                Ok(RefundAnswer::NotRefunded),
                "{node}"
            );
        }
        let tampered = refund_answer(
            r#"{"code":"10000","out_request_no":"r-1","refund_status":"REFUND_SUCCESS","refund_amount":"3.00"}"#,
        )
        .replace("3.00", "9.00");
        assert!(matches!(
            interpret_refund_query(&app, "order-1", "r-1", 0, &tampered),
            Err(QueryAnswerError::Unverified(_))
        ));
    }

    #[test]
    fn trade_not_exist_is_not_created_yet() {
        let answer = query(
            r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"交易不存在"}"#,
        );
        let Ok(TradeQuery::NotCreated(close)) = answer else {
            panic!("expected not created, got {answer:?}");
        };
        assert_eq!(
            (close.kind(), close.status()),
            (Kind::Close, Status::Closed)
        );
        assert_eq!(close.notification_id(), "reconcile:CLOSED:order-1");
        assert_eq!(close.fields().provider_status, "ACQ.TRADE_NOT_EXIST");
    }

    #[test]
    fn other_business_errors_are_provider_errors() {
        let answer =
            query(r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR"}"#);
        assert!(
            matches!(answer, Err(QueryAnswerError::Provider { ref sub_code, .. }) if sub_code == "ACQ.SYSTEM_ERROR")
        );
    }

    #[test]
    fn tampered_or_foreign_answers_are_never_trusted() {
        let good = answer(
            r#"{"code":"10000","out_trade_no":"order-1","trade_status":"TRADE_SUCCESS","total_amount":"88.88"}"#,
        );
        let tampered = good.replace("88.88", "0.01");
        let app = testkit::app(testkit::PROVIDER);
        let err = interpret_trade_query(&app, "order-1", &tampered).expect_err("tampered");
        assert_eq!(err.label(), "bad_signature");
        let other_key = testkit::app(testkit::OTHER);
        assert!(matches!(
            interpret_trade_query(&other_key, "order-1", &good),
            Err(QueryAnswerError::Unverified(_))
        ));
        // An answer about another order, even correctly signed, is refused.
        assert!(matches!(
            interpret_trade_query(&app, "order-2", &good),
            Err(QueryAnswerError::Unverified(VerifyError::Malformed(_)))
        ));
        let unsigned = r#"{"alipay_trade_query_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-signature"}}"#;
        assert!(matches!(
            interpret_trade_query(&app, "order-1", unsigned),
            Err(QueryAnswerError::Unverified(VerifyError::MissingField(
                "sign"
            )))
        ));
    }
}
