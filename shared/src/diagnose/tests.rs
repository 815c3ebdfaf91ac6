//! Each known cause of "signature verification failed" is named by its step.

use std::sync::Arc;

use secrecy::SecretString;
use spki::EncodePublicKey as _;

use super::*;
use crate::alipay::testkit::{self, OTHER, PROVIDER};
use crate::alipay::{AlipayApp, AlipayKeys, SignType, sign_content_v1};
use crate::clock::FixedClock;
use crate::inventory::{CertificateInfo, Configured};
use crate::wechat_v2::V2Merchant;
use crate::wechat_v3::test_support::{VectorSigner, vector};
use crate::wechat_v3::{PlatformKeys, V3Merchant};

const NOW: i64 = 1_716_170_406; // 2024-05-20, the test notifications' day

fn with(params: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut out: Vec<_> = params.iter().filter(|(k, _)| k != key).cloned().collect();
    out.push((key.to_owned(), value.to_owned()));
    out
}

fn alipay_merchants(app: AlipayApp) -> Merchants {
    let mut merchants = Merchants::default();
    merchants.alipay.insert("shop".into(), Arc::new(app));
    merchants
}

fn alipay(merchants: &Merchants, body: &[u8]) -> Diagnosis {
    diagnose(
        merchants,
        Provider::Alipay,
        "shop",
        body,
        &[],
        &FixedClock::at_unix(NOW),
    )
}

fn signed_payment() -> Vec<u8> {
    testkit::form_body(&testkit::sign(&testkit::payment(), PROVIDER))
}

fn certificate(serial: &str, alipay_sn: &str, not_after: i64) -> CertificateInfo {
    CertificateInfo {
        serial: serial.into(),
        subject: "CN=test".into(),
        alipay_sn: alipay_sn.into(),
        not_before: 0,
        not_after,
        sha256: "00".into(),
    }
}

#[track_caller]
fn assert_fails_at(d: &Diagnosis, step: &str, verdict: &str) {
    assert_eq!(
        (d.failed_step.as_deref(), d.verdict.as_str()),
        (Some(step), verdict),
        "{d}"
    );
    assert!(!d.accepted());
}

#[test]
fn a_good_alipay_notification_passes_every_step() {
    let d = alipay(&alipay_merchants(testkit::app(PROVIDER)), &signed_payment());
    assert!(d.accepted(), "{d}");
    assert_eq!(d.failed_step, None);
    let names: Vec<&str> = d.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        names,
        [
            "form",
            "charset",
            "sign",
            "key",
            "sign_content",
            "signature",
            "verdict"
        ]
    );
    assert!(d.answer.starts_with("HTTP 200 `success`"), "{}", d.answer);
    let fingerprint = testkit::public_key(PROVIDER).fingerprint();
    assert!(d.steps[3].detail.contains(&fingerprint), "{d}");
}

#[test]
fn alipay_wrong_key_is_named() {
    let d = alipay(&alipay_merchants(testkit::app(OTHER)), &signed_payment());
    assert_fails_at(&d, "key", "bad_signature");
    assert!(
        d.steps
            .iter()
            .any(|s| s.detail.contains("not made with this key")),
        "{d}"
    );
    assert!(d.answer.starts_with("HTTP 401 `fail`"), "{}", d.answer);
}

#[test]
fn alipay_tampered_field_is_named() {
    let signed = testkit::sign(&testkit::payment(), PROVIDER);
    let body = testkit::form_body(&with(&signed, "total_amount", "0.01"));
    let d = alipay(&alipay_merchants(testkit::app(PROVIDER)), &body);
    assert_fails_at(&d, "signature", "bad_signature");
    assert!(
        d.steps
            .iter()
            .any(|s| s.detail.contains("made with this key")),
        "{d}"
    );
}

#[test]
fn alipay_charset_mix_up_is_named() {
    // Declared GBK, sent as GBK, but signed over the UTF-8 bytes.
    let gbk = with(&testkit::payment(), "charset", "GBK");
    let sign = testkit::signature(PROVIDER, SignType::Rsa2, sign_content_v1(&gbk).as_bytes());
    let body = testkit::form_body(&with(&gbk, "sign", &sign));
    let d = alipay(&alipay_merchants(testkit::app(PROVIDER)), &body);
    assert_fails_at(&d, "charset", "bad_signature");
    assert!(
        d.steps.iter().any(|s| s.detail.contains("utf-8 bytes")),
        "{d}"
    );

    // Declared utf-8, values in GBK bytes: the form does not even decode.
    let utf8_declared = testkit::form_body(&testkit::sign(&gbk, PROVIDER));
    let text = String::from_utf8(utf8_declared).expect("ascii body");
    let body = text.replace("charset=GBK", "charset=utf-8");
    let d = alipay(&alipay_merchants(testkit::app(PROVIDER)), body.as_bytes());
    assert_fails_at(&d, "charset", "malformed");
}

#[test]
fn alipay_body_altered_by_a_proxy_is_named() {
    let mut body = signed_payment();
    body.extend_from_slice(b"&x_forwarded_by=edge-7");
    let d = alipay(&alipay_merchants(testkit::app(PROVIDER)), &body);
    assert_fails_at(&d, "body", "bad_signature");
    assert!(
        d.steps.iter().any(|s| s.detail.contains("x_forwarded_by")),
        "{d}"
    );

    // A proxy that decodes the body once more: '%2B' in the signature became '+', a space.
    let params = (0..200)
        .map(|i| {
            testkit::sign(
                &with(&testkit::payment(), "notify_id", &format!("n{i}")),
                PROVIDER,
            )
        })
        .find(|p| p.iter().any(|(k, v)| k == "sign" && v.contains('+')))
        .expect("a signature with '+'");
    let raw = String::from_utf8(testkit::form_body(&params))
        .expect("ascii")
        .replace("%2B", "+");
    let d = alipay(&alipay_merchants(testkit::app(PROVIDER)), raw.as_bytes());
    assert_fails_at(&d, "body", "signature_encoding");
}

#[test]
fn alipay_expired_certificate_is_named_before_the_unknown_sn() {
    let mut merchants = alipay_merchants(AlipayApp {
        app_id: "2021000000000001".into(),
        keys: AlipayKeys::Certificates {
            by_sn: std::collections::HashMap::from([(
                "sn-old".to_owned(),
                testkit::public_key(OTHER),
            )]),
            default_sn: "sn-old".into(),
        },
    });
    merchants.certificates.push(Configured {
        provider: Provider::Alipay,
        merchant: "shop".into(),
        setting: "alipay.shop.alipay_cert".into(),
        certificate: certificate("01", "sn-old", NOW - 86_400),
    });
    let signed = testkit::sign(&testkit::payment(), PROVIDER);
    let body = testkit::form_body(&with(&signed, "alipay_cert_sn", "sn-new"));
    let d = alipay(&merchants, &body);
    assert_fails_at(&d, "certificate", "unknown_key");
    assert!(
        d.steps
            .iter()
            .any(|s| s.detail.contains("expired on 2024-05-19")),
        "{d}"
    );
    // Without an SN the expired default certificate is tried, and did not sign it.
    let d = alipay(&merchants, &testkit::form_body(&signed));
    assert_fails_at(&d, "certificate", "bad_signature");
}

#[test]
fn alipay_sign_type_relabelled_is_named() {
    let params = testkit::sign(&with(&testkit::payment(), "sign_type", "RSA"), PROVIDER);
    let body = testkit::form_body(&with(&params, "sign_type", "RSA2"));
    let d = alipay(&alipay_merchants(testkit::app(PROVIDER)), &body);
    assert_fails_at(&d, "sign", "bad_signature");
}

#[test]
fn an_unknown_merchant_lists_the_configured_ones() {
    let merchants = alipay_merchants(testkit::app(PROVIDER));
    let d = diagnose(
        &merchants,
        Provider::Alipay,
        "shpo",
        &signed_payment(),
        &[],
        &FixedClock::at_unix(NOW),
    );
    assert_fails_at(&d, "merchant", "unknown_merchant");
    assert!(d.steps[0].detail.contains("shop"), "{d}");
    assert!(d.answer.starts_with("HTTP 404"), "{}", d.answer);
}

#[test]
fn a_diagnosis_shows_no_field_value() {
    let signed = testkit::sign(&testkit::payment(), PROVIDER);
    let body = testkit::form_body(&with(&signed, "total_amount", "0.01"));
    let d = alipay(&alipay_merchants(testkit::app(PROVIDER)), &body);
    let text = format!("{d}{}", serde_json::to_string(&d).expect("json"));
    for value in [
        "2088102177846880",
        "abc***@example.com",
        "order-1",
        "0.01",
        "测试商品",
    ] {
        assert!(!text.contains(value), "{value} in {text}");
    }
}

// ---- WeChat Pay APIv3 ----

fn v3_merchants(keys: PlatformKeys) -> Merchants {
    let mut merchants = Merchants::default();
    merchants.wechat_v3.insert(
        "mall".into(),
        Arc::new(V3Merchant {
            mch_id: "1230000109".into(),
            api_v3_key: SecretString::from(vector().apiv3_key.clone()),
            keys,
        }),
    );
    merchants
}

fn v3(merchants: &Merchants, headers: &[(String, String)], body: &[u8], now: i64) -> Diagnosis {
    diagnose(
        merchants,
        Provider::WechatV3,
        "mall",
        body,
        headers,
        &FixedClock::at_unix(now),
    )
}

fn signed_headers(signer: &VectorSigner, body: &[u8]) -> Vec<(String, String)> {
    let h = signer.headers(signer.ts, body);
    vec![
        ("Wechatpay-Timestamp".into(), h.timestamp),
        ("Wechatpay-Nonce".into(), h.nonce),
        ("Wechatpay-Signature".into(), h.signature),
        ("Wechatpay-Serial".into(), h.serial),
    ]
}

#[test]
fn the_v3_vector_passes_every_step() {
    let v = vector();
    let headers = v.headers().to_pairs();
    let ts: i64 = v.timestamp.parse().expect("ts");
    let d = v3(&v3_merchants(v.keys()), &headers, v.body.as_bytes(), ts);
    assert!(d.accepted(), "{d}");
    assert!(
        d.steps
            .iter()
            .any(|s| s.step == "decrypt" && s.outcome == Outcome::Passed)
    );
    assert!(d.answer.starts_with("HTTP 204"));
}

#[test]
fn v3_stale_timestamp_is_named() {
    let v = vector();
    let ts: i64 = v.timestamp.parse().expect("ts");
    let d = v3(
        &v3_merchants(v.keys()),
        &v.headers().to_pairs(),
        v.body.as_bytes(),
        ts + 900,
    );
    assert_fails_at(&d, "timestamp", "stale_timestamp");
    assert!(
        d.steps
            .iter()
            .any(|s| s.detail.contains("signed 900 s before")),
        "{d}"
    );
}

#[test]
fn v3_body_reformatted_by_a_proxy_is_named() {
    let v = vector();
    let signer = VectorSigner::new();
    let body = v.body.as_bytes();
    let headers = signed_headers(&signer, body);
    // A proxy that re-serializes JSON with spaces after ':' and ','.
    let spaced = String::from_utf8(body.to_vec())
        .expect("utf-8")
        .replace("\":", "\": ")
        .replace(",\"", ", \"");
    assert_ne!(spaced.as_bytes(), body);
    let d = v3(
        &v3_merchants(v.keys()),
        &headers,
        spaced.as_bytes(),
        signer.ts,
    );
    assert_fails_at(&d, "body", "bad_signature");
    assert!(
        d.steps.iter().any(|s| s.detail.contains("reformatted")),
        "{d}"
    );

    let mut newline = body.to_vec();
    newline.extend_from_slice(b"\r\n");
    let d = v3(&v3_merchants(v.keys()), &headers, &newline, signer.ts);
    assert_fails_at(&d, "body", "bad_signature");
}

#[test]
fn v3_tampered_body_is_named() {
    let v = vector();
    let signer = VectorSigner::new();
    let headers = signed_headers(&signer, v.body.as_bytes());
    let tampered = v.body.replace("USER_OPEN_SERVICE", "USER_CLOSE_SERVICE");
    assert_ne!(tampered, v.body);
    let d = v3(
        &v3_merchants(v.keys()),
        &headers,
        tampered.as_bytes(),
        signer.ts,
    );
    assert_fails_at(&d, "signature", "bad_signature");
}

#[test]
fn v3_wrong_key_under_the_serial_is_named() {
    let v = vector();
    let signer = VectorSigner::new();
    let headers = signed_headers(&signer, v.body.as_bytes());
    let mut keys = PlatformKeys::new();
    let other_pem = testkit::public_key(OTHER)
        .as_rsa()
        .to_public_key_pem(spki::der::pem::LineEnding::LF)
        .expect("pem");
    keys.add_public_key(&v.serial, &other_pem).expect("key");
    let d = v3(&v3_merchants(keys), &headers, v.body.as_bytes(), signer.ts);
    assert_fails_at(&d, "key", "bad_signature");
}

#[test]
fn v3_expired_certificate_is_named_before_the_unknown_serial() {
    let v = vector();
    let signer = VectorSigner::new().with_serial("5157F09EFDC096DE15EBE81A47057A7232F1B8E1");
    let headers = signed_headers(&signer, v.body.as_bytes());
    let mut merchants = v3_merchants(v.keys());
    merchants.certificates.push(Configured {
        provider: Provider::WechatV3,
        merchant: "mall".into(),
        setting: "wechat_v3.mall.platform_certs[0]".into(),
        certificate: certificate(&v.serial, "", signer.ts - 86_400),
    });
    let d = v3(&merchants, &headers, v.body.as_bytes(), signer.ts);
    assert_fails_at(&d, "certificate", "unknown_key");
}

#[test]
fn v3_wrong_api_v3_key_is_named() {
    let v = vector();
    let ts: i64 = v.timestamp.parse().expect("ts");
    let mut merchants = v3_merchants(v.keys());
    merchants.wechat_v3.insert(
        "mall".into(),
        Arc::new(V3Merchant {
            mch_id: "1230000109".into(),
            api_v3_key: SecretString::from("0".repeat(32)),
            keys: v.keys(),
        }),
    );
    let d = v3(&merchants, &v.headers().to_pairs(), v.body.as_bytes(), ts);
    assert_fails_at(&d, "decrypt", "decrypt");
}

#[test]
fn v3_missing_headers_are_named() {
    let v = vector();
    let ts: i64 = v.timestamp.parse().expect("ts");
    let d = v3(&v3_merchants(v.keys()), &[], v.body.as_bytes(), ts);
    assert_fails_at(&d, "headers", "missing_field");
}

// ---- WeChat Pay APIv2 ----

fn v2(key: &str, body: &[u8]) -> Diagnosis {
    let mut merchants = Merchants::default();
    merchants.wechat_v2.insert(
        "store".into(),
        Arc::new(V2Merchant {
            mch_id: "10000100".into(),
            api_key: SecretString::from(key.to_owned()),
        }),
    );
    diagnose(
        &merchants,
        Provider::WechatV2,
        "store",
        body,
        &[],
        &FixedClock::at_unix(NOW),
    )
}

fn v2_body(key: &str, sign_type: crate::wechat_v2::SignType, labelled: &str) -> Vec<u8> {
    let mut params: Vec<(String, String)> = [
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("appid", "wx2421b1c4370ec43b"),
        ("mch_id", "10000100"),
        ("out_trade_no", "order-1"),
        ("transaction_id", "1004400740201409030005092168"),
        ("total_fee", "8888"),
        ("time_end", "20240520100005"),
        ("sign_type", labelled),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let sign = crate::wechat_v2::sign(&params, key, sign_type);
    params.push(("sign".into(), sign));
    let inner: String = params
        .iter()
        .map(|(k, v)| format!("<{k}><![CDATA[{v}]]></{k}>"))
        .collect();
    format!("<xml>{inner}</xml>").into_bytes()
}

#[test]
fn v2_steps_name_the_sign_type_and_the_key() {
    use crate::wechat_v2::SignType::{HmacSha256, Md5};
    let key = "192006250b4c09247ec02edce69f6a2d";
    let d = v2(key, &v2_body(key, HmacSha256, "HMAC-SHA256"));
    assert!(d.accepted(), "{d}");

    let d = v2(key, &v2_body(key, Md5, "HMAC-SHA256"));
    assert_fails_at(&d, "sign", "bad_signature");

    let d = v2(
        "0".repeat(32).as_str(),
        &v2_body(key, HmacSha256, "HMAC-SHA256"),
    );
    assert_fails_at(&d, "signature", "bad_signature");
    let text = d.to_string();
    assert!(
        !text.contains(key) && !text.contains(&"0".repeat(32)),
        "{text}"
    );
}
