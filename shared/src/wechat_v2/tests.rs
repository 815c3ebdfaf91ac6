//! Behaviour of the APIv2 entry points, end to end from body bytes.

use secrecy::SecretString;

use super::*;
use crate::error::VerifyError;
use crate::event::{Kind, Provider, Status};

const KEY: &str = "8934e7d15453e97507ef794cf7b0519d";
const OTHER_KEY: &str = "0123456789abcdef0123456789abcdef";

fn merchant(key: &str) -> V2Merchant {
    V2Merchant {
        mch_id: "10000100".into(),
        api_key: SecretString::from(key),
    }
}

fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `<xml>` with every value in CDATA, as WeChat sends it.
fn xml_body(params: &[(String, String)]) -> Vec<u8> {
    let mut out = String::from("<xml>");
    for (k, v) in params {
        out.push_str(&format!("<{k}><![CDATA[{v}]]></{k}>"));
    }
    out.push_str("</xml>");
    out.into_bytes()
}

/// The fields of WeChat's documented payment notification example.
fn payment_params() -> Vec<(String, String)> {
    owned(&[
        ("appid", "wx2421b1c4370ec43b"),
        ("attach", "支付测试"),
        ("bank_type", "CFT"),
        ("cash_fee", "90"),
        ("fee_type", "CNY"),
        ("is_subscribe", "Y"),
        ("mch_id", "10000100"),
        ("nonce_str", "5d2b6c2a8db53831f7eda20af46e531c"),
        ("openid", "oUpF8uMEb4qRXf22hE3X68TekukE"),
        ("out_trade_no", "1409811653"),
        ("result_code", "SUCCESS"),
        ("return_code", "SUCCESS"),
        ("time_end", "20140903131540"),
        ("total_fee", "100"),
        ("coupon_fee", "10"),
        ("coupon_count", "1"),
        ("coupon_fee_0", "10"),
        ("trade_type", "JSAPI"),
        ("transaction_id", "1004400740201409030005092168"),
    ])
}

/// Signs `params` as WeChat does: `sign_type` (if not MD5) is added first and signed.
fn signed(mut params: Vec<(String, String)>, key: &str, sign_type: SignType) -> Vec<u8> {
    if sign_type == SignType::HmacSha256 {
        params.push(("sign_type".into(), sign_type.as_str().into()));
    }
    let signature = sign(&params, key, sign_type);
    params.push(("sign".into(), signature));
    xml_body(&params)
}

fn set(params: &mut [(String, String)], key: &str, value: &str) {
    for (k, v) in params.iter_mut() {
        if k == key {
            *v = value.to_owned();
        }
    }
}

fn refund_body(status: &str, key: &str) -> Vec<u8> {
    let inner = format!(
        "<root><out_refund_no><![CDATA[131811191610442717309]]></out_refund_no>\
         <out_trade_no><![CDATA[1409811653]]></out_trade_no>\
         <refund_account><![CDATA[REFUND_SOURCE_RECHARGE_FUNDS]]></refund_account>\
         <refund_fee><![CDATA[3960]]></refund_fee>\
         <refund_id><![CDATA[50000408942018111907145868882]]></refund_id>\
         <refund_recv_accout><![CDATA[支付用户零钱]]></refund_recv_accout>\
         <refund_request_source><![CDATA[API]]></refund_request_source>\
         <refund_status><![CDATA[{status}]]></refund_status>\
         <settlement_refund_fee><![CDATA[3960]]></settlement_refund_fee>\
         <settlement_total_fee><![CDATA[10000]]></settlement_total_fee>\
         {success_time}\
         <total_fee><![CDATA[10000]]></total_fee>\
         <transaction_id><![CDATA[1004400740201409030005092168]]></transaction_id></root>",
        success_time = if status == "SUCCESS" {
            "<success_time><![CDATA[2018-11-19 16:24:13]]></success_time>"
        } else {
            ""
        },
    );
    refund_body_with(&encrypt_req_info(inner.as_bytes(), key))
}

fn refund_body_with(req_info: &str) -> Vec<u8> {
    xml_body(&owned(&[
        ("return_code", "SUCCESS"),
        ("appid", "wx2421b1c4370ec43b"),
        ("mch_id", "10000100"),
        ("nonce_str", "TeqClE3i0mvn3DrK"),
        ("req_info", req_info),
    ]))
}

// ---- payment notifications ----

#[test]
fn md5_payment_notification_verifies_and_normalizes() {
    let body = signed(payment_params(), KEY, SignType::Md5);
    let n = verify_notification(&merchant(KEY), &body).expect("verifies");
    assert_eq!(n.provider(), Provider::WechatV2);
    assert_eq!(n.notification_id(), "1004400740201409030005092168:SUCCESS");
    assert_eq!((n.kind(), n.status()), (Kind::Payment, Status::Paid));
    let f = n.fields();
    assert_eq!(f.out_trade_no.as_deref(), Some("1409811653"));
    assert_eq!(
        f.provider_trade_no.as_deref(),
        Some("1004400740201409030005092168")
    );
    assert_eq!(f.provider_status, "SUCCESS");
    assert_eq!(f.event_type.as_deref(), Some(PAYMENT_EVENT_TYPE));
    assert_eq!((f.total_amount, f.paid_amount), (Some(100), Some(90)));
    assert_eq!(f.currency, "CNY");
    assert_eq!(f.app_id.as_deref(), Some("wx2421b1c4370ec43b"));
    assert_eq!(f.mch_id.as_deref(), Some("10000100"));
    assert_eq!(f.payer.as_deref(), Some("oUpF8uMEb4qRXf22hE3X68TekukE"));
    assert_eq!(f.event_time.as_deref(), Some("20140903131540"));
    assert_eq!(
        n.raw().body.as_deref().map(str::as_bytes),
        Some(body.as_slice())
    );
}

#[test]
fn hmac_sha256_payment_notification_verifies() {
    let body = signed(payment_params(), KEY, SignType::HmacSha256);
    let n = verify_notification(&merchant(KEY), &body).expect("verifies");
    assert_eq!(n.status(), Status::Paid);
}

#[test]
fn sign_type_follows_the_notification() {
    // Declares HMAC-SHA256 but carries an MD5 signature (over the same content).
    let mut params = payment_params();
    params.push(("sign_type".into(), "HMAC-SHA256".into()));
    let md5 = sign(&params, KEY, SignType::Md5);
    params.push(("sign".into(), md5));
    let result = verify_notification(&merchant(KEY), &xml_body(&params));
    assert_eq!(result, Err(VerifyError::BadSignature));
}

#[test]
fn absent_sign_type_means_md5() {
    let mut params = payment_params();
    let hmac = sign(&params, KEY, SignType::HmacSha256);
    params.push(("sign".into(), hmac));
    let result = verify_notification(&merchant(KEY), &xml_body(&params));
    assert_eq!(result, Err(VerifyError::BadSignature));
}

#[test]
fn unsupported_sign_type_is_refused() {
    let mut params = payment_params();
    params.push(("sign_type".into(), "SHA1".into()));
    let signature = sign(&params, KEY, SignType::Md5);
    params.push(("sign".into(), signature));
    let result = verify_notification(&merchant(KEY), &xml_body(&params));
    assert_eq!(
        result,
        Err(VerifyError::UnsupportedAlgorithm("SHA1".into()))
    );
}

#[test]
fn tampered_field_is_a_bad_signature() {
    let body = String::from_utf8(signed(payment_params(), KEY, SignType::Md5)).expect("utf-8");
    let forged = body.replace("<total_fee><![CDATA[100]]>", "<total_fee><![CDATA[1]]>");
    assert_ne!(forged, body);
    let result = verify_notification(&merchant(KEY), forged.as_bytes());
    assert_eq!(result, Err(VerifyError::BadSignature));
}

#[test]
fn wrong_key_is_a_bad_signature() {
    let body = signed(payment_params(), OTHER_KEY, SignType::Md5);
    assert_eq!(
        verify_notification(&merchant(KEY), &body),
        Err(VerifyError::BadSignature)
    );
    let body = signed(payment_params(), OTHER_KEY, SignType::HmacSha256);
    assert_eq!(
        verify_notification(&merchant(KEY), &body),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn empty_value_is_dropped_from_sign_content() {
    // Signed without `device_info`; the notification then carries it empty.
    let mut params = payment_params();
    let signature = sign(&params, KEY, SignType::Md5);
    params.push(("device_info".into(), String::new()));
    params.push(("sign".into(), signature));
    assert!(verify_notification(&merchant(KEY), &xml_body(&params)).is_ok());
}

#[test]
fn unknown_extra_field_is_tolerated_and_signed() {
    let mut params = payment_params();
    params.push(("promotion_detail_new".into(), "{\"x\":1}".into()));
    let body = signed(params.clone(), KEY, SignType::Md5);
    assert!(verify_notification(&merchant(KEY), &body).is_ok());

    // ... and it is covered by the signature: adding it after signing breaks it.
    let mut late = payment_params();
    let signature = sign(&late, KEY, SignType::Md5);
    late.push(("promotion_detail_new".into(), "{\"x\":1}".into()));
    late.push(("sign".into(), signature));
    let result = verify_notification(&merchant(KEY), &xml_body(&late));
    assert_eq!(result, Err(VerifyError::BadSignature));
}

#[test]
fn lower_case_sign_verifies() {
    let mut params = payment_params();
    let signature = sign(&params, KEY, SignType::Md5).to_ascii_lowercase();
    params.push(("sign".into(), signature));
    assert!(verify_notification(&merchant(KEY), &xml_body(&params)).is_ok());
}

#[test]
fn missing_sign_is_a_missing_field() {
    let body = xml_body(&payment_params());
    let result = verify_notification(&merchant(KEY), &body);
    assert_eq!(result, Err(VerifyError::MissingField("sign")));
}

#[test]
fn return_code_fail_is_a_provider_failure() {
    let body = xml_body(&owned(&[
        ("return_code", "FAIL"),
        ("return_msg", "签名失败"),
    ]));
    let result = verify_notification(&merchant(KEY), &body);
    assert_eq!(result, Err(VerifyError::ProviderFailure));
}

#[test]
fn failed_payment_without_transaction_id_is_identified_by_out_trade_no() {
    let mut params: Vec<_> = payment_params()
        .into_iter()
        .filter(|(k, _)| k != "transaction_id")
        .collect();
    set(&mut params, "result_code", "FAIL");
    params.push(("err_code".into(), "ORDERPAID".into()));
    let n =
        verify_notification(&merchant(KEY), &signed(params, KEY, SignType::Md5)).expect("verifies");
    assert_eq!(n.notification_id(), "1409811653:FAIL");
    assert_eq!((n.kind(), n.status()), (Kind::Payment, Status::Failed));
    assert_eq!(n.fields().provider_trade_no, None);
}

#[test]
fn paid_without_transaction_id_is_a_missing_field() {
    let params: Vec<_> = payment_params()
        .into_iter()
        .filter(|(k, _)| k != "transaction_id")
        .collect();
    let result = verify_notification(&merchant(KEY), &signed(params, KEY, SignType::Md5));
    assert_eq!(result, Err(VerifyError::MissingField("transaction_id")));
}

#[test]
fn non_integer_total_fee_is_an_amount_error() {
    let mut params = payment_params();
    set(&mut params, "total_fee", "1.00");
    let result = verify_notification(&merchant(KEY), &signed(params, KEY, SignType::Md5));
    assert_eq!(result, Err(VerifyError::Amount("total_fee")));
}

#[test]
fn fee_type_absent_means_cny() {
    let params: Vec<_> = payment_params()
        .into_iter()
        .filter(|(k, _)| k != "fee_type")
        .collect();
    let n =
        verify_notification(&merchant(KEY), &signed(params, KEY, SignType::Md5)).expect("verifies");
    assert_eq!(n.fields().currency, "CNY");
}

// ---- refund notifications ----

#[test]
fn successful_refund_decrypts_and_normalizes() {
    let n = verify_notification(&merchant(KEY), &refund_body("SUCCESS", KEY)).expect("verifies");
    assert_eq!(n.provider(), Provider::WechatV2);
    assert_eq!(n.notification_id(), "131811191610442717309:SUCCESS");
    assert_eq!(
        (n.kind(), n.status()),
        (Kind::Refund, Status::RefundSucceeded)
    );
    let f = n.fields();
    assert_eq!(f.out_refund_no.as_deref(), Some("131811191610442717309"));
    assert_eq!(
        f.provider_refund_no.as_deref(),
        Some("50000408942018111907145868882")
    );
    assert_eq!(f.out_trade_no.as_deref(), Some("1409811653"));
    assert_eq!(
        f.provider_trade_no.as_deref(),
        Some("1004400740201409030005092168")
    );
    assert_eq!((f.refund_amount, f.total_amount), (Some(3960), Some(10000)));
    assert!(!f.refund_amount_cumulative);
    assert_eq!(f.provider_status, "SUCCESS");
    assert_eq!(f.event_type.as_deref(), Some(REFUND_EVENT_TYPE));
    assert_eq!(f.event_time.as_deref(), Some("2018-11-19 16:24:13"));
    assert_eq!(f.app_id.as_deref(), Some("wx2421b1c4370ec43b"));
    assert_eq!(f.mch_id.as_deref(), Some("10000100"));
    assert_eq!(f.currency, "CNY");
}

#[test]
fn closed_refund_normalizes_to_refund_closed() {
    let n =
        verify_notification(&merchant(KEY), &refund_body("REFUNDCLOSE", KEY)).expect("verifies");
    assert_eq!(n.notification_id(), "131811191610442717309:REFUNDCLOSE");
    assert_eq!((n.kind(), n.status()), (Kind::Refund, Status::RefundClosed));
    assert_eq!(n.fields().event_time, None);
}

#[test]
fn changed_refund_normalizes_to_refund_abnormal() {
    let n = verify_notification(&merchant(KEY), &refund_body("CHANGE", KEY)).expect("verifies");
    assert_eq!(n.notification_id(), "131811191610442717309:CHANGE");
    assert_eq!(
        (n.kind(), n.status()),
        (Kind::Refund, Status::RefundAbnormal)
    );
}

#[test]
fn refund_with_wrong_key_is_a_decrypt_error() {
    let result = verify_notification(&merchant(KEY), &refund_body("SUCCESS", OTHER_KEY));
    assert_eq!(result, Err(VerifyError::Decrypt));
}

#[test]
fn truncated_req_info_is_a_decrypt_error() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let inner =
        b"<root><out_refund_no>1</out_refund_no><refund_status>SUCCESS</refund_status></root>";
    let full = STANDARD
        .decode(encrypt_req_info(inner, KEY))
        .expect("base64");
    for cut in [full.len() - 1, full.len() - 16, 0] {
        let body = refund_body_with(&STANDARD.encode(&full[..cut]));
        let result = verify_notification(&merchant(KEY), &body);
        assert_eq!(result, Err(VerifyError::Decrypt), "cut at {cut}");
    }
}

#[test]
fn not_base64_req_info_is_a_decrypt_error() {
    let result = verify_notification(&merchant(KEY), &refund_body_with("not base64!"));
    assert_eq!(result, Err(VerifyError::Decrypt));
}

#[test]
fn req_info_that_is_not_xml_is_a_decrypt_error() {
    let body = refund_body_with(&encrypt_req_info(b"out_refund_no=1", KEY));
    assert_eq!(
        verify_notification(&merchant(KEY), &body),
        Err(VerifyError::Decrypt)
    );
}

#[test]
fn refund_return_code_fail_is_a_provider_failure() {
    let body = xml_body(&owned(&[("return_code", "FAIL"), ("req_info", "AAAA")]));
    let result = verify_notification(&merchant(KEY), &body);
    assert_eq!(result, Err(VerifyError::ProviderFailure));
}

// ---- hostile or broken bodies ----

#[test]
fn xxe_is_refused_before_anything_is_read() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><return_code>SUCCESS</return_code><attach>&xxe;</attach></xml>"#;
    assert_eq!(
        verify_notification(&merchant(KEY), body),
        Err(VerifyError::XmlDoctype)
    );
}

#[test]
fn billion_laughs_is_refused_without_expansion() {
    let mut body = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE xml [\n<!ENTITY l0 \"lol\">\n");
    for i in 1..10 {
        let refs = format!("&l{};", i - 1).repeat(10);
        body.push_str(&format!("<!ENTITY l{i} \"{refs}\">\n"));
    }
    body.push_str("]>\n<xml><return_code>SUCCESS</return_code><attach>&l9;</attach></xml>");
    assert_eq!(
        verify_notification(&merchant(KEY), body.as_bytes()),
        Err(VerifyError::XmlDoctype)
    );
}

#[test]
fn nested_element_is_malformed() {
    let body = b"<xml><return_code>SUCCESS</return_code><attach><a>1</a></attach></xml>";
    assert!(matches!(
        verify_notification(&merchant(KEY), body),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn duplicate_field_is_malformed() {
    let mut params = payment_params();
    params.push(("total_fee".into(), "1".into()));
    let body = signed(params, KEY, SignType::Md5);
    assert!(matches!(
        verify_notification(&merchant(KEY), &body),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn non_xml_body_is_malformed() {
    for body in [
        &b"return_code=SUCCESS&sign=x"[..],
        b"{\"return_code\":\"SUCCESS\"}",
        b"",
    ] {
        assert!(matches!(
            verify_notification(&merchant(KEY), body),
            Err(VerifyError::Malformed(_))
        ));
    }
}

// ---- answers and credentials ----

#[test]
fn success_answer_reads_back_as_success() {
    let pairs = parse_xml(SUCCESS_ANSWER.as_bytes()).expect("valid XML");
    assert_eq!(
        pairs,
        owned(&[("return_code", "SUCCESS"), ("return_msg", "OK")])
    );
}

#[test]
fn fail_answer_escapes_cdata_terminators() {
    let message = "bad]]></return_msg><return_code>SUCCESS</return_code><x>]]>";
    let answer = fail_answer(message);
    let pairs = parse_xml(answer.as_bytes()).expect("still valid XML");
    assert_eq!(
        pairs,
        owned(&[("return_code", "FAIL"), ("return_msg", message)])
    );
}

#[test]
fn merchant_debug_does_not_show_the_key() {
    let shown = format!("{:?}", merchant(KEY));
    assert!(shown.contains("10000100"));
    assert!(!shown.contains(KEY));
}

mod properties;
