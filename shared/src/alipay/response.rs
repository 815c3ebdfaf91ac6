//! Verification of the gateway's signed responses (the reconciler's
//! `alipay.trade.query`, `alipay.trade.fastpay.refund.query`, …).
//!
//! A response is `{"<method>_response": {…}, "sign": "…"[, "alipay_cert_sn": "…"]}`.
//! The signature covers the raw text of the `<method>_response` value *exactly as
//! received* — from its `{` to the matching `}`, escapes such as `\/` byte for byte —
//! never a re-serialisation. Gateway-level errors come as `error_response` instead,
//! signed or not; an unsigned one tells us nothing trustworthy.

use std::collections::HashMap;

use serde_json::value::RawValue;

use super::{AlipayKeys, SignType};
use crate::crypto::verify_rsa;
use crate::error::VerifyError;

/// Verifies a response body and returns the raw JSON text of its verified node: the
/// `node` (`"alipay_trade_query_response"`), or `error_response` when the gateway
/// answered with a signed error. The caller parses `code` / `sub_code` from it.
///
/// Like Alipay's Java SDK, if the raw text contains `\/` and does not verify, the text
/// with `\/` unescaped to `/` is tried too (some gateways signed it unescaped).
pub fn verify_response<'a>(
    keys: &AlipayKeys,
    sign_type: SignType,
    body: &'a str,
    node: &str,
) -> Result<&'a str, VerifyError> {
    let top: HashMap<String, &'a RawValue> = serde_json::from_str(body)
        .map_err(|e| VerifyError::Malformed(format!("response is not a JSON object: {e}")))?;
    let raw = top
        .get(node)
        .or_else(|| top.get("error_response"))
        .map(|value| value.get())
        .ok_or_else(|| VerifyError::Malformed(format!("response has no {}", super::clip(node))))?;
    let string = |key: &'static str| -> Result<Option<String>, VerifyError> {
        top.get(key)
            .map(|value| serde_json::from_str::<String>(value.get()))
            .transpose()
            .map_err(|_| VerifyError::Malformed(format!("{key} is not a string")))
    };
    let sign = string("sign")?
        .filter(|s| !s.is_empty())
        .ok_or(VerifyError::MissingField("sign"))?;
    let key = keys.key_for(
        string("alipay_cert_sn")?
            .as_deref()
            .filter(|s| !s.is_empty()),
    )?;

    match verify_rsa(key, sign_type.hash(), raw.as_bytes(), &sign) {
        Err(VerifyError::BadSignature) if raw.contains("\\/") => {
            let unescaped = raw.replace("\\/", "/");
            verify_rsa(key, sign_type.hash(), unescaped.as_bytes(), &sign)?;
        }
        other => other?,
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alipay::testkit::{self, PROVIDER};

    const VECTOR: &str = include_str!("vectors/alipay_response_sign.json");

    fn vector() -> (AlipayKeys, String, String) {
        let v: serde_json::Value = serde_json::from_str(VECTOR).expect("vector file");
        let field = |name: &str| v[name].as_str().expect("string field").to_owned();
        let keys =
            AlipayKeys::from_public_key(&field("alipay_public_key_pem")).expect("vector key");
        (keys, field("raw_response"), field("response_node_key"))
    }

    #[test]
    fn sdk_vector_response_verifies_over_the_raw_node_text() {
        let (keys, body, node) = vector();
        let raw = verify_response(&keys, SignType::Rsa2, &body, &node).expect("verifies");
        assert!(
            raw.starts_with(r#"{"code":"10000","msg":"Success""#),
            "{raw}"
        );
    }

    #[test]
    fn a_tampered_response_fails() {
        let (keys, body, node) = vector();
        let tampered = body.replace("\"10000\"", "\"10001\"");
        assert_eq!(
            verify_response(&keys, SignType::Rsa2, &tampered, &node),
            Err(VerifyError::BadSignature)
        );
        // Re-serialised (whitespace added), the same JSON no longer verifies.
        let reformatted = body.replace("\"code\":", "\"code\": ");
        assert_eq!(
            verify_response(&keys, SignType::Rsa2, &reformatted, &node),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn escapes_are_verified_byte_for_byte() {
        let node = r#"{"code":"10000","msg":"Success","url":"https:\/\/x.example\/a"}"#;
        let sign = testkit::signature(PROVIDER, SignType::Rsa2, node.as_bytes());
        let body = format!(r#"{{"alipay_trade_query_response":{node},"sign":"{sign}"}}"#);
        let keys = testkit::app(PROVIDER).keys;
        let raw = verify_response(&keys, SignType::Rsa2, &body, "alipay_trade_query_response");
        assert_eq!(raw, Ok(node));
    }

    #[test]
    fn text_signed_unescaped_is_accepted_like_the_java_sdk() {
        let node = r#"{"code":"10000","url":"https:\/\/x.example"}"#;
        let sign = testkit::signature(
            PROVIDER,
            SignType::Rsa2,
            node.replace("\\/", "/").as_bytes(),
        );
        let body = format!(r#"{{"alipay_trade_query_response":{node},"sign":"{sign}"}}"#);
        let keys = testkit::app(PROVIDER).keys;
        let raw = verify_response(&keys, SignType::Rsa2, &body, "alipay_trade_query_response");
        assert_eq!(raw, Ok(node));
    }

    #[test]
    fn unsigned_error_responses_are_not_trusted() {
        let (keys, _, node) = vector();
        let body = r#"{"error_response":{"code":"40002","msg":"Invalid Arguments"}}"#;
        assert_eq!(
            verify_response(&keys, SignType::Rsa2, body, &node),
            Err(VerifyError::MissingField("sign"))
        );
        assert!(matches!(
            verify_response(&keys, SignType::Rsa2, "[1]", &node),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            verify_response(&keys, SignType::Rsa2, r#"{"sign":"x"}"#, &node),
            Err(VerifyError::Malformed(_))
        ));
    }
}
