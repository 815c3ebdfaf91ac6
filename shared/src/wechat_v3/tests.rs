//! Notification-level specifications (signature, envelope, decryption and
//! normalization together). Lower-level cases sit next to their code.

use secrecy::SecretString;
use serde_json::json;

use super::test_support::{VectorSigner, envelope, merchant, vector};
use super::*;
use crate::clock::FixedClock;
use crate::error::VerifyError;
use crate::event::{Kind, Provider, Status, VerifiedNotification};

const KEY: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";

fn verify(body: &[u8]) -> Result<VerifiedNotification, VerifyError> {
    verify_with(&merchant(KEY), body)
}

fn verify_with(m: &V3Merchant, body: &[u8]) -> Result<VerifiedNotification, VerifyError> {
    let s = VectorSigner::new();
    let h = s.headers(s.ts, body);
    verify_notification(m, &h.view(), body, &FixedClock::at_unix(s.ts))
}

fn transaction(resource: serde_json::Value) -> Vec<u8> {
    envelope(
        "tx-1",
        "TRANSACTION.SUCCESS",
        resource.to_string().as_bytes(),
        KEY,
        "transaction",
    )
}

fn direct_transaction(trade_state: &str) -> serde_json::Value {
    json!({
        "appid": "wxd678efh567hg6787", "mchid": "1230000109",
        "out_trade_no": "1217752501201407033233368018",
        "transaction_id": "1217752501201407033233368018",
        "trade_type": "JSAPI", "trade_state": trade_state, "trade_state_desc": "支付成功",
        "bank_type": "CMC", "attach": "", "success_time": "2018-06-08T10:34:56+08:00",
        "payer": { "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" },
        "amount": { "total": 100, "payer_total": 90, "currency": "CNY", "payer_currency": "CNY" },
        "promotion_detail": [{ "coupon_id": "109519", "amount": 10 }]
    })
}

#[test]
fn sdk_vector_notification_is_accepted_as_other() {
    let v = vector();
    let m = V3Merchant {
        mch_id: "1234567890".into(),
        api_v3_key: SecretString::from(v.apiv3_key.as_str()),
        keys: v.keys(),
    };
    let clock = FixedClock::at_unix(1_624_523_846);
    let n = verify_notification(&m, &v.headers(), v.body.as_bytes(), &clock).expect("verifies");
    assert_eq!(n.provider(), Provider::WechatV3);
    assert_eq!(n.notification_id(), "3119dfba-e649-5eec-ab1e-3412bc4d2e17");
    assert_eq!((n.kind(), n.status()), (Kind::Other, Status::Other));
    let f = n.fields();
    assert_eq!(f.event_type.as_deref(), Some("PAYSCORE.USER_OPEN_SERVICE"));
    assert_eq!(f.mch_id.as_deref(), Some("1234567890"));
    assert_eq!(
        f.app_id.as_deref(),
        Some("054aa7d7a2a54ab5898df65bd96f001c")
    );
    assert_eq!(f.event_time.as_deref(), Some("2021-06-24T16:37:26+08:00"));
    assert_eq!(n.raw().body.as_deref(), Some(v.body.as_str()));
}

#[test]
fn raw_record_keeps_the_verified_headers() {
    let n = verify(&transaction(direct_transaction("SUCCESS"))).expect("verifies");
    let names: Vec<&str> = n.raw().headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            HEADER_TIMESTAMP,
            HEADER_NONCE,
            HEADER_SERIAL,
            HEADER_SIGNATURE,
            HEADER_SIGNATURE_TYPE
        ]
    );
}

#[test]
fn successful_transaction_is_a_paid_payment() {
    let n = verify(&transaction(direct_transaction("SUCCESS"))).expect("verifies");
    assert_eq!(n.notification_id(), "tx-1");
    assert_eq!((n.kind(), n.status()), (Kind::Payment, Status::Paid));
    let f = n.fields();
    assert_eq!(
        f.out_trade_no.as_deref(),
        Some("1217752501201407033233368018")
    );
    assert_eq!(
        f.provider_trade_no.as_deref(),
        Some("1217752501201407033233368018")
    );
    assert_eq!(f.provider_status, "SUCCESS");
    assert_eq!(f.event_type.as_deref(), Some("TRANSACTION.SUCCESS"));
    assert_eq!(
        (f.total_amount, f.paid_amount, f.refund_amount),
        (Some(100), Some(90), None)
    );
    assert_eq!(f.currency, "CNY");
    assert_eq!(f.app_id.as_deref(), Some("wxd678efh567hg6787"));
    assert_eq!(f.mch_id.as_deref(), Some("1230000109"));
    assert_eq!(f.payee.as_deref(), Some("1230000109"));
    assert_eq!(f.payer.as_deref(), Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"));
    assert_eq!(f.event_time.as_deref(), Some("2018-06-08T10:34:56+08:00"));
}

#[test]
fn trade_states_map_to_kind_and_status() {
    let cases = [
        ("SUCCESS", Kind::Payment, Status::Paid),
        ("REFUND", Kind::Payment, Status::Paid),
        ("NOTPAY", Kind::Payment, Status::Pending),
        ("USERPAYING", Kind::Payment, Status::Pending),
        ("CLOSED", Kind::Close, Status::Closed),
        ("REVOKED", Kind::Close, Status::Closed),
        ("PAYERROR", Kind::Payment, Status::Failed),
        ("SOMETHING_NEW", Kind::Payment, Status::Other),
    ];
    for (state, kind, status) in cases {
        let n = verify(&transaction(direct_transaction(state))).expect("verifies");
        assert_eq!((n.kind(), n.status()), (kind, status), "{state}");
        assert_eq!(n.fields().provider_status, state);
    }
}

#[test]
fn partner_mode_transaction_names_the_service_provider_and_sub_merchant() {
    let resource = json!({
        "sp_appid": "wx8888888888888888", "sp_mchid": "1230000109",
        "sub_appid": "wxd678efh567hg6999", "sub_mchid": "1900000109",
        "out_trade_no": "o-1", "transaction_id": "t-1", "trade_state": "SUCCESS",
        "payer": { "sp_openid": "sp-open", "sub_openid": "sub-open" },
        "amount": { "total": 1, "payer_total": 1 }
    });
    let n = verify(&transaction(resource)).expect("verifies");
    let f = n.fields();
    assert_eq!(f.mch_id.as_deref(), Some("1230000109"));
    assert_eq!(f.app_id.as_deref(), Some("wx8888888888888888"));
    assert_eq!(f.payee.as_deref(), Some("1900000109"));
    assert_eq!(f.payer.as_deref(), Some("sp-open"));
    assert_eq!(f.currency, "CNY", "absent currency means CNY");
}

#[test]
fn transaction_for_another_merchant_is_refused() {
    let mut resource = direct_transaction("SUCCESS");
    resource["mchid"] = json!("1999999999");
    assert_eq!(
        verify(&transaction(resource)),
        Err(VerifyError::MerchantMismatch("mchid"))
    );
}

#[test]
fn transaction_without_out_trade_no_is_refused() {
    let mut resource = direct_transaction("SUCCESS");
    resource
        .as_object_mut()
        .expect("object")
        .remove("out_trade_no");
    assert_eq!(
        verify(&transaction(resource)),
        Err(VerifyError::MissingField("out_trade_no"))
    );
}

#[test]
fn combined_payment_is_published_uninterpreted() {
    let resource = json!({
        "combine_appid": "wxd678efh567hg6787", "combine_mchid": "1230000109",
        "combine_out_trade_no": "c-1", "sub_orders": [{ "mchid": "1900000109" }]
    });
    let n = verify(&transaction(resource)).expect("verifies");
    assert_eq!((n.kind(), n.status()), (Kind::Other, Status::Other));
    assert_eq!(n.fields().mch_id.as_deref(), Some("1230000109"));
    assert_eq!(n.fields().provider_status, "TRANSACTION.SUCCESS");
}

#[test]
fn fractional_or_negative_amounts_are_refused() {
    let mut resource = direct_transaction("SUCCESS");
    resource["amount"]["total"] = json!(1.5);
    assert!(matches!(
        verify(&transaction(resource)),
        Err(VerifyError::Malformed(_))
    ));
    let mut resource = direct_transaction("SUCCESS");
    resource["amount"]["payer_total"] = json!(-1);
    assert_eq!(
        verify(&transaction(resource)),
        Err(VerifyError::Amount("amount.payer_total"))
    );
}

fn refund(event_type: &str, refund_status: Option<&str>) -> Vec<u8> {
    let mut resource = json!({
        "mchid": "1230000109", "out_trade_no": "o-1", "transaction_id": "t-1",
        "out_refund_no": "r-1", "refund_id": "50000000382019052709732678859",
        "success_time": "2018-06-08T10:34:56+08:00",
        "user_received_account": "招商银行信用卡0403",
        "amount": { "total": 999, "refund": 300, "payer_total": 999, "payer_refund": 300 }
    });
    if let Some(status) = refund_status {
        resource["refund_status"] = json!(status);
    }
    envelope(
        "rf-1",
        event_type,
        resource.to_string().as_bytes(),
        KEY,
        "refund",
    )
}

#[test]
fn refund_success_is_a_succeeded_refund_of_this_amount() {
    let n = verify(&refund("REFUND.SUCCESS", Some("SUCCESS"))).expect("verifies");
    assert_eq!(
        (n.kind(), n.status()),
        (Kind::Refund, Status::RefundSucceeded)
    );
    let f = n.fields();
    assert_eq!(f.out_refund_no.as_deref(), Some("r-1"));
    assert_eq!(
        f.provider_refund_no.as_deref(),
        Some("50000000382019052709732678859")
    );
    assert_eq!(f.out_trade_no.as_deref(), Some("o-1"));
    assert_eq!((f.refund_amount, f.total_amount), (Some(300), Some(999)));
    assert!(!f.refund_amount_cumulative);
    assert_eq!(f.provider_status, "SUCCESS");
}

#[test]
fn refund_status_wins_and_event_type_is_the_fallback() {
    let cases = [
        ("REFUND.ABNORMAL", Some("ABNORMAL"), Status::RefundAbnormal),
        ("REFUND.CLOSED", Some("CLOSED"), Status::RefundClosed),
        ("REFUND.CLOSED", None, Status::RefundClosed),
        ("REFUND.ABNORMAL", None, Status::RefundAbnormal),
        ("REFUND.SUCCESS", None, Status::RefundSucceeded),
    ];
    for (event_type, refund_status, status) in cases {
        let n = verify(&refund(event_type, refund_status)).expect("verifies");
        assert_eq!(
            (n.kind(), n.status()),
            (Kind::Refund, status),
            "{event_type} {refund_status:?}"
        );
    }
}

#[test]
fn unknown_event_type_with_non_json_resource_is_other() {
    let body = envelope("x-1", "MARKETING.SOMETHING", b"not json at all", KEY, "");
    let n = verify(&body).expect("verifies");
    assert_eq!((n.kind(), n.status()), (Kind::Other, Status::Other));
    assert_eq!(
        n.fields().event_type.as_deref(),
        Some("MARKETING.SOMETHING")
    );
    assert_eq!(n.fields().mch_id, None);
}

#[test]
fn empty_associated_data_is_accepted() {
    let resource = direct_transaction("SUCCESS").to_string();
    let body = envelope("tx-2", "TRANSACTION.SUCCESS", resource.as_bytes(), KEY, "");
    assert!(verify(&body).is_ok());
}

#[test]
fn resource_encrypted_with_another_key_fails_to_decrypt() {
    let resource = direct_transaction("SUCCESS").to_string();
    let other = "b7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
    let body = envelope(
        "tx-3",
        "TRANSACTION.SUCCESS",
        resource.as_bytes(),
        other,
        "transaction",
    );
    assert_eq!(verify(&body), Err(VerifyError::Decrypt));
}

#[test]
fn truncated_resource_ciphertext_fails_to_decrypt() {
    let mut body: serde_json::Value =
        serde_json::from_slice(&transaction(direct_transaction("SUCCESS"))).expect("JSON");
    let ct = body["resource"]["ciphertext"]
        .as_str()
        .expect("ciphertext")
        .to_owned();
    body["resource"]["ciphertext"] = json!(ct[..ct.len() - 8]);
    assert_eq!(
        verify(body.to_string().as_bytes()),
        Err(VerifyError::Decrypt)
    );
}

#[test]
fn resource_algorithm_other_than_aes_256_gcm_is_unsupported() {
    let mut body: serde_json::Value =
        serde_json::from_slice(&transaction(direct_transaction("SUCCESS"))).expect("JSON");
    body["resource"]["algorithm"] = json!("AEAD_SM4_GCM");
    assert_eq!(
        verify(body.to_string().as_bytes()),
        Err(VerifyError::UnsupportedAlgorithm("AEAD_SM4_GCM".into()))
    );
}

#[test]
fn non_json_body_with_a_valid_signature_is_malformed() {
    for body in [&b"success"[..], b"[]", b"{\"id\":", &[0xff, 0xfe]] {
        assert!(
            matches!(verify(body), Err(VerifyError::Malformed(_))),
            "{body:?}"
        );
    }
}

#[test]
fn envelope_without_id_event_type_or_resource_is_refused() {
    let full: serde_json::Value =
        serde_json::from_slice(&transaction(direct_transaction("SUCCESS"))).expect("JSON");
    for (field, error) in [
        ("id", VerifyError::MissingField("id")),
        ("event_type", VerifyError::MissingField("event_type")),
        ("resource", VerifyError::MissingField("resource")),
    ] {
        let mut body = full.clone();
        body.as_object_mut().expect("object").remove(field);
        assert_eq!(verify(body.to_string().as_bytes()), Err(error));
    }
}

#[test]
fn bad_signature_is_refused_before_the_body_is_parsed() {
    let s = VectorSigner::new();
    let signed = transaction(direct_transaction("SUCCESS"));
    let h = s.headers(s.ts, &signed);
    let result = verify_notification(
        &merchant(KEY),
        &h.view(),
        b"not json",
        &FixedClock::at_unix(s.ts),
    );
    assert_eq!(result, Err(VerifyError::BadSignature));
}

#[test]
fn malformed_errors_do_not_quote_the_payload() {
    let mut resource = direct_transaction("SUCCESS");
    resource["out_trade_no"] = json!(["SECRET-ORDER"]);
    let err = verify(&transaction(resource)).expect_err("refused");
    assert!(matches!(err, VerifyError::Malformed(_)));
    assert!(!err.to_string().contains("SECRET"), "{err}");
}

#[test]
fn fail_body_is_wechat_json() {
    let body: serde_json::Value = serde_json::from_str(&fail_body("签名错误 \"x\"")).expect("JSON");
    assert_eq!(body, json!({ "code": "FAIL", "message": "签名错误 \"x\"" }));
}

#[test]
fn merchant_debug_redacts_the_api_v3_key() {
    let shown = format!("{:?}", merchant(KEY));
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("D7CE59D1F522D701"));
}

#[test]
fn api_v3_key_must_be_32_printable_ascii_bytes() {
    assert_eq!(validate_api_v3_key(&SecretString::from(KEY)), Ok(()));
    for bad in [
        "testMchAPIv3Key0",
        "a7cde1ZJB1kG2e7VfTs3jQzaWizur8G ",
        "密钥密钥密钥密钥密钥a7",
    ] {
        let err = validate_api_v3_key(&SecretString::from(bad)).expect_err(bad);
        assert!(!err.to_string().contains(bad));
    }
}
