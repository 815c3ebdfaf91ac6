//! Redaction of buyer identifiers in a stored notification envelope (the JSON the
//! worker keeps in `notifications.envelope`), for `retention.redact_buyer_after_days`.
//!
//! What goes: the normalized `payer`; in the raw body, Alipay's `buyer_id`,
//! `buyer_logon_id` and `buyer_open_id` values, WeChat Pay APIv2's `openid` and
//! `sub_openid` elements, and an APIv3 notification's encrypted `resource.ciphertext`
//! (it decrypts to the payer's openid with a key payhook holds); a body kept as Base64
//! (not UTF-8, e.g. a GBK Alipay form) is dropped whole. Everything else — amounts,
//! order numbers, statuses, the provider's trade number — stays, so the payment's
//! history still reads. A redacted notification no longer verifies: its signature
//! covered what was removed.

use serde_json::Value;

/// What a removed value is replaced with.
pub const REDACTED: &str = "REDACTED";

const ALIPAY_BUYER_FIELDS: [&str; 3] = ["buyer_id", "buyer_logon_id", "buyer_open_id"];
const WECHAT_V2_BUYER_ELEMENTS: [&str; 2] = ["openid", "sub_openid"];

/// Redacts `envelope` (JSON text). `None` when it is not an envelope's JSON object.
pub fn redact_envelope(envelope: &str) -> Option<String> {
    let mut value: Value = serde_json::from_str(envelope).ok()?;
    let object = value.as_object_mut()?;
    let provider = object.get("provider")?.as_str()?.to_owned();
    if let Some(fields) = object.get_mut("fields").and_then(Value::as_object_mut) {
        fields.remove("payer");
    }
    if let Some(raw) = object.get_mut("raw").and_then(Value::as_object_mut) {
        if raw.remove("body_base64").is_some() {
            raw.insert("body_base64_redacted".into(), Value::Bool(true));
        }
        if let Some(Value::String(body)) = raw.get_mut("body") {
            *body = match provider.as_str() {
                "alipay" => redact_form(body),
                "wechat_v2" => redact_xml(body),
                "wechat_v3" => redact_v3(body),
                _ => return None,
            };
        }
    }
    serde_json::to_string(&value).ok()
}

/// `a=1&buyer_id=2088…&…` → `a=1&buyer_id=REDACTED&…` (keys compared after decoding
/// nothing: Alipay's field names are plain ASCII).
fn redact_form(body: &str) -> String {
    body.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if ALIPAY_BUYER_FIELDS.contains(&key) => format!("{key}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `<openid><![CDATA[o…]]></openid>` → `<openid>REDACTED</openid>`, every occurrence.
fn redact_xml(body: &str) -> String {
    let mut out = body.to_owned();
    for name in WECHAT_V2_BUYER_ELEMENTS {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let mut from = 0;
        while let Some(start) = out[from..].find(&open).map(|i| from + i + open.len()) {
            let Some(end) = out[start..].find(&close).map(|i| start + i) else {
                break;
            };
            out.replace_range(start..end, REDACTED);
            from = start + REDACTED.len() + close.len();
        }
    }
    out
}

/// An APIv3 body: `resource.ciphertext` replaced; a body that is not such JSON is
/// replaced whole.
fn redact_v3(body: &str) -> String {
    let Ok(mut value) = serde_json::from_str::<Value>(body) else {
        return REDACTED.to_owned();
    };
    if let Some(resource) = value.get_mut("resource").and_then(Value::as_object_mut) {
        resource.insert("ciphertext".into(), Value::String(REDACTED.into()));
    }
    serde_json::to_string(&value).unwrap_or_else(|_| REDACTED.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(provider: &str, body: &str) -> String {
        serde_json::json!({
            "provider": provider,
            "fields": {"out_trade_no": "O1", "payer": "buyer-secret", "total_amount": 100},
            "raw": {"body": body, "headers": [["wechatpay-serial", "S"]]}
        })
        .to_string()
    }

    fn body_of(redacted: &str) -> String {
        let value: Value = serde_json::from_str(redacted).expect("json");
        assert!(value["fields"].get("payer").is_none());
        assert_eq!(value["fields"]["out_trade_no"], "O1");
        assert_eq!(value["fields"]["total_amount"], 100);
        value["raw"]["body"].as_str().expect("body").to_owned()
    }

    #[test]
    fn alipay_buyer_fields_go_and_the_rest_stays() {
        let body = "buyer_id=2088102&out_trade_no=O1&buyer_logon_id=a%40b.com&total_amount=1.00&buyer_open_id=xyz";
        let redacted = redact_envelope(&envelope("alipay", body)).expect("redacted");
        assert_eq!(
            body_of(&redacted),
            "buyer_id=REDACTED&out_trade_no=O1&buyer_logon_id=REDACTED&total_amount=1.00&buyer_open_id=REDACTED"
        );
        assert!(!redacted.contains("buyer-secret"));
    }

    #[test]
    fn wechat_v2_openids_go() {
        let body = "<xml><openid><![CDATA[oUpF8uMuAJO]]></openid><sub_openid>o2</sub_openid><total_fee>1</total_fee></xml>";
        let redacted = redact_envelope(&envelope("wechat_v2", body)).expect("redacted");
        assert_eq!(
            body_of(&redacted),
            "<xml><openid>REDACTED</openid><sub_openid>REDACTED</sub_openid><total_fee>1</total_fee></xml>"
        );
    }

    #[test]
    fn wechat_v3_ciphertext_goes() {
        let body = r#"{"id":"e1","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"c2VjcmV0","nonce":"n"}}"#;
        let redacted = redact_envelope(&envelope("wechat_v3", body)).expect("redacted");
        let inner: Value = serde_json::from_str(&body_of(&redacted)).expect("json body");
        assert_eq!(inner["resource"]["ciphertext"], REDACTED);
        assert_eq!(inner["resource"]["nonce"], "n");
        assert_eq!(inner["id"], "e1");
    }

    #[test]
    fn a_base64_body_is_dropped_and_garbage_is_refused() {
        let env = serde_json::json!({
            "provider": "alipay", "fields": {}, "raw": {"body_base64": "AAEC"}
        })
        .to_string();
        let redacted = redact_envelope(&env).expect("redacted");
        assert!(!redacted.contains("AAEC"));
        assert!(redact_envelope("not json").is_none());
        assert!(redact_envelope("[1]").is_none());
    }
}
