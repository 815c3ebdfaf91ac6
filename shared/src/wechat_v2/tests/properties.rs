//! Properties of the APIv2 XML reader and signatures over generated notifications:
//! values read back verbatim whatever they contain, whatever WeChat signs verifies
//! under either sign type, any one changed value does not, and no body — nor any
//! `req_info` — makes the verifier panic.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use super::super::xml::cdata;
use super::*;

fn field_name() -> impl Strategy<Value = String> {
    "[a-z][a-z_0-9]{0,15}".prop_filter("a signed field", |name| {
        !matches!(name.as_str(), "sign" | "sign_type" | "req_info" | "xml")
    })
}

/// Text XML 1.0 can carry (no C0 controls but tab/newline), with markup characters,
/// `]]>`, CJK and the empty value (dropped from the sign content).
fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        4 => "[a-zA-Z0-9 <>&'\"=/\\]\\[!?;:.,_-]{0,24}",
        2 => "[\\u{4e00}-\\u{9fa5}a-z0-9\\]> ]{1,12}",
        1 => Just("a]]>b".to_owned()),
    ]
}

fn notification() -> impl Strategy<Value = Vec<(String, String)>> {
    btree_map(field_name(), field_value(), 0..8).prop_map(|extra| {
        let mut params = payment_params();
        for (key, value) in extra {
            if params.iter().all(|(k, _)| *k != key) {
                params.push((key, value));
            }
        }
        params
    })
}

/// `<xml>` with every value escaped as CDATA (split around `]]>`).
fn escaped_body(params: &[(String, String)]) -> Vec<u8> {
    let mut out = String::from("<xml>");
    for (k, v) in params {
        out.push_str(&format!("<{k}>{}</{k}>", cdata(v)));
    }
    out.push_str("</xml>");
    out.into_bytes()
}

fn sign_type() -> impl Strategy<Value = SignType> {
    prop_oneof![Just(SignType::Md5), Just(SignType::HmacSha256)]
}

/// `params` signed as WeChat does (see `signed`), CDATA-escaped.
fn signed_escaped(mut params: Vec<(String, String)>, sign_type: SignType) -> Vec<u8> {
    if sign_type == SignType::HmacSha256 {
        params.push(("sign_type".into(), sign_type.as_str().into()));
    }
    let signature = sign(&params, KEY, sign_type);
    params.push(("sign".into(), signature));
    escaped_body(&params)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn values_read_back_verbatim(params in notification()) {
        prop_assert_eq!(parse_xml(&escaped_body(&params)), Ok(params));
    }

    #[test]
    fn whatever_wechat_signs_verifies(params in notification(), sign_type in sign_type()) {
        let body = signed_escaped(params, sign_type);
        let verified = verify_notification(&merchant(KEY), &body);
        prop_assert!(verified.is_ok(), "{:?}", verified.err());
    }

    #[test]
    fn any_changed_value_is_a_bad_signature(
        params in notification(),
        sign_type in sign_type(),
        pick in any::<prop::sample::Index>(),
        suffix in "[a-z0-9 <&]{1,3}",
    ) {
        // Change a signed value after signing (never `return_code`, which is read
        // before the signature, nor the sign type itself).
        let body = signed_escaped(params, sign_type);
        let mut fields = parse_xml(&body).expect("parses");
        let candidates: Vec<usize> = fields
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| !matches!(k.as_str(), "sign" | "sign_type" | "return_code"))
            .map(|(i, _)| i)
            .collect();
        let i = candidates[pick.index(candidates.len())];
        fields[i].1.push_str(&suffix);
        let result = verify_notification(&merchant(KEY), &escaped_body(&fields));
        prop_assert!(
            matches!(result, Err(VerifyError::BadSignature)),
            "changing {} gave {:?}", fields[i].0, result.map(|v| v.notification_id().to_owned())
        );
    }

    #[test]
    fn another_key_never_verifies(params in notification(), sign_type in sign_type()) {
        let body = signed_escaped(params, sign_type);
        prop_assert!(matches!(
            verify_notification(&merchant(OTHER_KEY), &body),
            Err(VerifyError::BadSignature)
        ));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_body_makes_the_verifier_panic(body in vec(any::<u8>(), 0..256)) {
        let _ = parse_xml(&body);
        let _ = verify_notification(&merchant(KEY), &body);
    }

    #[test]
    fn xml_shaped_garbage_never_panics(body in "(<\\??[a-z_!\\[]{0,8}[ =\"'a-z]{0,6}/?>|<!\\[CDATA\\[|\\]\\]>|&[a-z#0-9]{0,5};?|[a-z0-9 ]{0,6}){0,24}") {
        let _ = verify_notification(&merchant(KEY), body.as_bytes());
    }

    /// Any `req_info` — not Base64, a wrong length, the wrong key, random blocks — is
    /// refused with an error, never a panic.
    #[test]
    fn no_req_info_makes_the_refund_path_panic(
        req_info in prop_oneof![
            "[A-Za-z0-9+/=]{0,96}",
            vec(any::<u8>(), 0..96).prop_map(|b| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(b)
            }),
        ],
    ) {
        prop_assert!(verify_notification(&merchant(KEY), &refund_body_with(&req_info)).is_err());
    }
}
