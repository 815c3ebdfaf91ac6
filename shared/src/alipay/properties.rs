//! Properties of the sign-content rule and the notification decoder, over generated
//! parameter maps: what Alipay signs (any extra field, any value, any encoding Java's
//! `URLEncoder` or a proxy may produce) verifies, any one changed signed value does
//! not, and no body makes the decoder panic.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use super::testkit::{self, PROVIDER};
use super::{SignType, form, sign_content_v1, verify_notification};
use crate::error::VerifyError;

/// Field names Alipay might add (lower-case ASCII and `_`), never the unsigned ones.
fn field_name() -> impl Strategy<Value = String> {
    "[a-z][a-z_]{0,15}".prop_filter("a signed field", |name| {
        !matches!(name.as_str(), "sign" | "sign_type" | "alipay_cert_sn")
    })
}

/// Values with the characters that broke SDKs: separators, `%`, `+`, spaces, CJK,
/// emoji, and empty values (which the V1 rule drops).
fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        4 => "[a-zA-Z0-9 &=%+.,:;/?#\\[\\]{}\"'~*_-]{0,24}",
        2 => "[\\u{4e00}-\\u{9fa5}a-z0-9%+ ]{1,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(16).collect()),
    ]
}

/// A realistic payment notification with extra generated fields added.
fn notification() -> impl Strategy<Value = Vec<(String, String)>> {
    btree_map(field_name(), field_value(), 0..8).prop_map(|extra| {
        let mut params = testkit::payment();
        for (key, value) in extra {
            if params.iter().all(|(k, _)| *k != key) {
                params.push((key, value));
            }
        }
        params
    })
}

/// The V1 rule written out plainly: drop the unsigned fields and empty values, sort
/// by name, join `k=v` with `&`.
fn model_content(params: &[(String, String)]) -> String {
    let mut kept: Vec<_> = params
        .iter()
        .filter(|(k, v)| {
            !v.is_empty() && !matches!(k.as_str(), "sign" | "sign_type" | "alipay_cert_sn")
        })
        .collect();
    kept.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    kept.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Re-encodes a form body the way other encoders do: lower-case hex escapes, and
/// `%20` instead of `+` for spaces. Both decode to the same bytes.
fn reencode(body: &[u8], lower_hex: bool, space_as_pct: bool) -> Vec<u8> {
    let text = String::from_utf8(body.to_vec()).expect("form bodies are ASCII");
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '%' if lower_hex => {
                out.push('%');
                for _ in 0..2 {
                    out.extend(chars.next().map(|h| h.to_ascii_lowercase()));
                }
            }
            '+' if space_as_pct => out.push_str("%20"),
            other => out.push(other),
        }
    }
    out.into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn sign_content_is_the_sorted_non_empty_signed_fields(params in notification()) {
        prop_assert_eq!(sign_content_v1(&params), model_content(&params));
    }

    #[test]
    fn whatever_alipay_signs_verifies_in_any_encoding(
        params in notification(),
        lower_hex in any::<bool>(),
        space_as_pct in any::<bool>(),
    ) {
        let body = testkit::form_body(&testkit::sign(&params, PROVIDER));
        let body = reencode(&body, lower_hex, space_as_pct);
        let verified = verify_notification(&testkit::app(PROVIDER), &body);
        prop_assert!(verified.is_ok(), "{:?}", verified.err());
        // The decoder gives back exactly what was signed, in order.
        let decoded = form::decode(&body).expect("decodes");
        let without_sign: Vec<_> = decoded.into_iter().filter(|(k, _)| k != "sign").collect();
        prop_assert_eq!(without_sign, params);
    }

    #[test]
    fn any_changed_signed_value_is_a_bad_signature(
        params in notification(),
        pick in any::<prop::sample::Index>(),
        suffix in "[a-z0-9 %+&=]{1,4}",
    ) {
        let mut signed = testkit::sign(&params, PROVIDER);
        let candidates: Vec<usize> = signed
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| !matches!(k.as_str(), "sign" | "sign_type" | "charset"))
            .map(|(i, _)| i)
            .collect();
        let i = candidates[pick.index(candidates.len())];
        signed[i].1.push_str(&suffix);
        let result = verify_notification(&testkit::app(PROVIDER), &testkit::form_body(&signed));
        prop_assert!(
            matches!(result, Err(VerifyError::BadSignature)),
            "changing {} gave {:?}", signed[i].0, result.map(|v| v.notification_id().to_owned())
        );
    }

    #[test]
    fn the_sign_type_named_is_the_one_checked(params in notification()) {
        // Signed with SHA1 (RSA) but declared RSA2: refused; declared RSA: accepted.
        let mut params = params;
        for (k, v) in &mut params {
            if k == "sign_type" {
                *v = SignType::Rsa.as_str().to_owned();
            }
        }
        let signed = testkit::sign(&params, PROVIDER);
        let app = testkit::app(PROVIDER);
        prop_assert!(verify_notification(&app, &testkit::form_body(&signed)).is_ok());
        let relabelled: Vec<_> = signed
            .into_iter()
            .map(|(k, v)| if k == "sign_type" { (k, "RSA2".to_owned()) } else { (k, v) })
            .collect();
        prop_assert!(matches!(
            verify_notification(&app, &testkit::form_body(&relabelled)),
            Err(VerifyError::BadSignature)
        ));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// An outsider controls every byte of the body: the decoder and the verifier
    /// answer with a value or an error, never a panic.
    #[test]
    fn no_body_makes_the_decoder_panic(body in vec(any::<u8>(), 0..256)) {
        let _ = form::decode(&body);
        let _ = verify_notification(&testkit::app(PROVIDER), &body);
    }

    #[test]
    fn form_shaped_garbage_never_panics(body in "[a-z_=&%+0-9A-F]{0,128}(charset=(gbk|GBK|utf-8|gb18030|latin1)?)?") {
        let _ = form::decode(body.as_bytes());
        let _ = verify_notification(&testkit::app(PROVIDER), body.as_bytes());
    }
}
