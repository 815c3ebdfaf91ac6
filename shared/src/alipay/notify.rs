//! Verification of an Alipay asynchronous notification: the body bytes in, a
//! [`VerifiedNotification`] or the reason for refusing it out.
//!
//! The signature is checked over the whole received parameter map (unknown fields
//! included — Alipay keeps adding some), as the bytes Alipay encoded in the declared
//! charset; only then is anything read from it.

use super::AlipayApp;
use super::form::Form;
use super::normalize::normalize;
use super::sign::{SignType, sign_content_v1_bytes};
use crate::crypto::verify_rsa;
use crate::error::VerifyError;
use crate::event::VerifiedNotification;

/// Verifies a notification body (`application/x-www-form-urlencoded`, as received)
/// with the app's Alipay key and normalizes it.
///
/// Does not compare `app_id` / `seller_id` / amounts with our records: that is the
/// worker's business check, and a verified mismatch is quarantined there.
pub fn verify_notification(
    app: &AlipayApp,
    body: &[u8],
) -> Result<VerifiedNotification, VerifyError> {
    let form = Form::parse(body)?;
    let present = |key| form.get(key).filter(|v| !v.is_empty());
    let sign = present("sign").ok_or(VerifyError::MissingField("sign"))?;
    let sign_type =
        SignType::from_param(present("sign_type").ok_or(VerifyError::MissingField("sign_type"))?)?;
    let key = app.keys.key_for(present("alipay_cert_sn"))?;
    let content = sign_content_v1_bytes(form.signed_bytes());
    verify_rsa(key, sign_type.hash(), &content, sign)?;
    normalize(&form, body)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::alipay::testkit::{self, OTHER, PROVIDER};
    use crate::alipay::{AlipayKeys, form, sign_content_v1};
    use crate::crypto::{RsaHash, parse_public_key};
    use crate::event::{Kind, Provider, Status};

    const VECTOR: &str = include_str!("vectors/alipay_notify_trade_success.json");

    /// The alipay-sdk-nodejs vector: its key and its params in file order.
    fn vector() -> (String, Vec<(String, String)>) {
        let v: serde_json::Value = serde_json::from_str(VECTOR).expect("vector file");
        let key = v["alipay_public_key_b64_spki"]
            .as_str()
            .expect("key")
            .to_owned();
        let params = v["params"]
            .as_object()
            .expect("params")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("string param").to_owned()))
            .collect();
        (key, params)
    }

    fn vector_app() -> AlipayApp {
        let (key, _) = vector();
        AlipayApp {
            app_id: "2019073166072302".into(),
            keys: AlipayKeys::from_public_key(&key).expect("vector key"),
        }
    }

    fn with(params: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
        let mut out: Vec<_> = params.iter().filter(|(k, _)| k != key).cloned().collect();
        out.push((key.to_owned(), value.to_owned()));
        out
    }

    #[test]
    fn sdk_vector_sign_content_verifies() {
        let (key, params) = vector();
        let sign = &params.iter().find(|(k, _)| k == "sign").expect("sign").1;
        let content = sign_content_v1(&params);
        assert!(
            content.starts_with("app_id=2019073166072302&auth_app_id="),
            "{content}"
        );
        assert!(!content.contains("sign_type"));
        let key = parse_public_key(&key).expect("vector key");
        assert_eq!(
            verify_rsa(&key, RsaHash::Sha256, content.as_bytes(), sign),
            Ok(())
        );
    }

    #[test]
    fn sdk_vector_verifies_end_to_end_from_a_form_body() {
        let (_, params) = vector();
        let body = testkit::form_body(&params);
        let verified = verify_notification(&vector_app(), &body).expect("verifies");
        assert_eq!(verified.provider(), Provider::Alipay);
        assert_eq!(
            verified.notification_id(),
            "2019081500222155624068450559358070"
        );
        assert_eq!(
            (verified.kind(), verified.status()),
            (Kind::Payment, Status::Paid)
        );
        let f = verified.fields();
        assert_eq!(f.out_trade_no.as_deref(), Some("20190815155618536-564-57"));
        assert_eq!(f.total_amount, Some(10));
        assert_eq!(
            verified.raw().body.as_deref().map(str::as_bytes),
            Some(&body[..])
        );
    }

    #[test]
    fn a_tampered_field_fails() {
        let (_, params) = vector();
        let body = testkit::form_body(&with(&params, "total_amount", "0.01"));
        assert_eq!(
            verify_notification(&vector_app(), &body),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn an_added_unknown_field_is_covered_by_the_signature() {
        let (_, params) = vector();
        let body = testkit::form_body(&with(&params, "new_field", "x"));
        assert_eq!(
            verify_notification(&vector_app(), &body),
            Err(VerifyError::BadSignature)
        );
        let signed = testkit::sign(&with(&params, "new_field", "x"), PROVIDER);
        assert!(verify_notification(&testkit::app(PROVIDER), &testkit::form_body(&signed)).is_ok());
    }

    #[test]
    fn another_key_fails() {
        let params = testkit::sign(&testkit::payment(), OTHER);
        let body = testkit::form_body(&params);
        assert_eq!(
            verify_notification(&testkit::app(PROVIDER), &body),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn empty_values_in_the_form_are_not_signed() {
        let (_, params) = vector();
        let body = testkit::form_body(&with(&params, "voucher_detail_list", ""));
        assert!(String::from_utf8_lossy(&body).ends_with("&voucher_detail_list="));
        assert!(verify_notification(&vector_app(), &body).is_ok());
    }

    #[test]
    fn literal_percent_and_plus_are_decoded_once() {
        let literal = "a%3Db+c 100%";
        let params = testkit::sign(
            &with(&testkit::payment(), "passback_params", literal),
            PROVIDER,
        );
        let body = testkit::form_body(&params);
        assert!(String::from_utf8_lossy(&body).contains("passback_params=a%253Db%2Bc+100%25&"));
        let decoded = form::decode(&body).expect("decodes");
        assert!(decoded.contains(&("passback_params".into(), literal.into())));
        assert!(verify_notification(&testkit::app(PROVIDER), &body).is_ok());

        // A verifier that decodes twice signs over "a=b c 100%" and must fail.
        let twice = with(&params, "passback_params", "a=b c 100%");
        let sign = &params.iter().find(|(k, _)| k == "sign").expect("sign").1;
        let key = testkit::app(PROVIDER).keys;
        let key = key.key_for(None).expect("key");
        let content = sign_content_v1(&twice);
        assert_eq!(
            verify_rsa(key, RsaHash::Sha256, content.as_bytes(), sign),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn plus_in_sign_must_arrive_as_percent_2b() {
        // Find a notification whose signature contains a '+' (most do).
        let params = (0..200)
            .map(|i| {
                testkit::sign(
                    &with(&testkit::payment(), "notify_id", &format!("n{i}")),
                    PROVIDER,
                )
            })
            .find(|p| p.iter().any(|(k, v)| k == "sign" && v.contains('+')))
            .expect("a signature with '+' within 200 tries");
        let body = testkit::form_body(&params);
        assert!(String::from_utf8_lossy(&body).contains("%2B"));
        assert!(verify_notification(&testkit::app(PROVIDER), &body).is_ok());

        // Sent raw, '+' is a space: the signature no longer decodes.
        let raw = String::from_utf8(body).expect("ascii").replace("%2B", "+");
        assert_eq!(
            verify_notification(&testkit::app(PROVIDER), raw.as_bytes()),
            Err(VerifyError::SignatureEncoding)
        );
    }

    #[test]
    fn gbk_notifications_verify_over_gbk_bytes() {
        let gbk = with(
            &with(&testkit::payment(), "charset", "GBK"),
            "subject",
            "测试商品",
        );
        let body = testkit::form_body(&testkit::sign(&gbk, PROVIDER));
        // 测 in GBK is B2 E2: the body carries GBK percent bytes.
        assert!(String::from_utf8_lossy(&body).contains("subject=%B2%E2"));
        assert!(verify_notification(&testkit::app(PROVIDER), &body).is_ok());

        // The same content signed over its UTF-8 bytes, in a GBK notification, fails.
        let utf8_bytes = sign_content_v1(&gbk).into_bytes();
        let sign = testkit::signature(PROVIDER, SignType::Rsa2, &utf8_bytes);
        let body = testkit::form_body(&with(&gbk, "sign", &sign));
        assert_eq!(
            verify_notification(&testkit::app(PROVIDER), &body),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn legacy_rsa_sign_type_uses_sha1() {
        let params = testkit::sign(&with(&testkit::payment(), "sign_type", "RSA"), PROVIDER);
        let body = testkit::form_body(&params);
        assert!(verify_notification(&testkit::app(PROVIDER), &body).is_ok());
        // Relabelled RSA2, the SHA-1 signature fails.
        let body = testkit::form_body(&with(&params, "sign_type", "RSA2"));
        assert_eq!(
            verify_notification(&testkit::app(PROVIDER), &body),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn unsupported_sign_type_is_refused() {
        let (_, params) = vector();
        let body = testkit::form_body(&with(&params, "sign_type", "SM2"));
        assert_eq!(
            verify_notification(&vector_app(), &body),
            Err(VerifyError::UnsupportedAlgorithm("SM2".into()))
        );
    }

    #[test]
    fn missing_sign_or_sign_type_is_refused() {
        let (_, params) = vector();
        let without = |key: &str| -> Vec<(String, String)> {
            params.iter().filter(|(k, _)| k != key).cloned().collect()
        };
        let app = vector_app();
        let body = testkit::form_body(&without("sign"));
        assert_eq!(
            verify_notification(&app, &body),
            Err(VerifyError::MissingField("sign"))
        );
        let body = testkit::form_body(&with(&params, "sign", ""));
        assert_eq!(
            verify_notification(&app, &body),
            Err(VerifyError::MissingField("sign"))
        );
        let body = testkit::form_body(&without("sign_type"));
        assert_eq!(
            verify_notification(&app, &body),
            Err(VerifyError::MissingField("sign_type"))
        );
    }

    #[test]
    fn cert_mode_selects_the_key_by_alipay_cert_sn() {
        let keys = AlipayKeys::Certificates {
            by_sn: HashMap::from([
                ("sn-old".to_owned(), testkit::public_key(OTHER)),
                ("sn-new".to_owned(), testkit::public_key(PROVIDER)),
            ]),
            default_sn: "sn-old".into(),
        };
        let app = AlipayApp {
            app_id: "2021000000000001".into(),
            keys,
        };
        let signed = testkit::sign(&testkit::payment(), PROVIDER);

        let body = testkit::form_body(&with(&signed, "alipay_cert_sn", "sn-new"));
        assert!(
            verify_notification(&app, &body).is_ok(),
            "alipay_cert_sn is not signed"
        );
        // Without an SN the default (here: another key) is used.
        let body = testkit::form_body(&signed);
        assert_eq!(
            verify_notification(&app, &body),
            Err(VerifyError::BadSignature)
        );
        let body = testkit::form_body(&with(&signed, "alipay_cert_sn", "sn-unknown"));
        assert_eq!(
            verify_notification(&app, &body),
            Err(VerifyError::UnknownKey("sn-unknown".into()))
        );
    }

    #[test]
    fn malformed_bodies_are_refused_before_any_crypto() {
        let app = vector_app();
        assert!(matches!(
            verify_notification(&app, b"sign=a&sign=b"),
            Err(VerifyError::Malformed(_))
        ));
        assert_eq!(
            verify_notification(&app, b"charset=big5&sign=x"),
            Err(VerifyError::Charset("big5".into()))
        );
        assert_eq!(
            verify_notification(&app, b""),
            Err(VerifyError::MissingField("sign"))
        );
    }

    #[test]
    fn a_verified_notification_still_needs_a_notify_id() {
        let params = testkit::sign(
            &testkit::payment()
                .into_iter()
                .filter(|(k, _)| k != "notify_id")
                .collect::<Vec<_>>(),
            PROVIDER,
        );
        assert_eq!(
            verify_notification(&testkit::app(PROVIDER), &testkit::form_body(&params)),
            Err(VerifyError::MissingField("notify_id"))
        );
    }
}
