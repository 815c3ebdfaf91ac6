//! A WeChat Pay APIv2 notification, explained. APIv2 signatures are keyed with the
//! merchant's secret (MD5 or HMAC-SHA256), so unlike RSA nothing tells a wrong key
//! from a changed field: the explanation says which it can rule out.

use secrecy::ExposeSecret as _;
use sha2::{Digest as _, Sha256};

use crate::wechat_v2::{SignType, V2Merchant, decrypt_req_info, parse_xml, sign};

use super::Steps;

pub(super) fn explain(m: &V2Merchant, body: &[u8], steps: &mut Steps) {
    let params = match parse_xml(body) {
        Ok(params) => {
            steps.passed("xml", format!("{} fields", params.len()));
            params
        }
        Err(error) => {
            steps.failed("xml", error.to_string());
            return;
        }
    };
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if get("return_code") != Some("SUCCESS") {
        steps.failed(
            "return_code",
            "return_code is not SUCCESS: WeChat reports a failed callback, with nothing to verify",
        );
        return;
    }
    let api_key = m.api_key.expose_secret();
    let key_text = format!("wechat_v2 api_key ({} characters)", api_key.chars().count());
    if let Some(req_info) = get("req_info") {
        match decrypt_req_info(req_info, api_key) {
            Ok(plaintext) if parse_xml(&plaintext).is_ok() => steps.passed(
                "decrypt",
                format!("refund notification: req_info decrypts with the {key_text}"),
            ),
            _ => steps.failed(
                "decrypt",
                format!(
                    "refund notification: req_info does not decrypt with the {key_text}: the APIv2 key differs from the \
                     one set in the merchant platform (it was reset?), or req_info was altered"
                ),
            ),
        }
        return;
    }
    let Some(received) = get("sign") else {
        steps.failed("sign", "no sign field");
        return;
    };
    let sign_type = match SignType::from_field(get("sign_type")) {
        Ok(sign_type) => sign_type,
        Err(error) => {
            steps.failed("sign", error.to_string());
            return;
        }
    };
    steps.passed(
        "sign",
        format!(
            "sign_type {}{}",
            sign_type.as_str(),
            if get("sign_type").is_none() {
                " (none given)"
            } else {
                ""
            }
        ),
    );
    let mut included: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, v)| k != "sign" && !v.is_empty())
        .collect();
    included.sort_unstable_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));
    let content: String = included.iter().map(|(k, v)| format!("{k}={v}&")).collect();
    steps.passed(
        "sign_content",
        format!(
            "{} fields signed; k=v&…& before the key: {} bytes, sha256 {}",
            included.len(),
            content.len(),
            hex::encode(Sha256::digest(content.as_bytes()))
        ),
    );
    let matches = |candidate: &[(String, String)], sign_type| {
        sign(candidate, api_key, sign_type).eq_ignore_ascii_case(received)
    };
    if matches(&params, sign_type) {
        steps.passed("signature", format!("matches with the {key_text}"));
        return;
    }
    let other = match sign_type {
        SignType::Md5 => SignType::HmacSha256,
        SignType::HmacSha256 => SignType::Md5,
    };
    if matches(&params, other) {
        steps.failed(
            "sign",
            format!(
                "signed with {} but sign_type says {}: sign_type was changed on the way",
                other.as_str(),
                sign_type.as_str()
            ),
        );
        return;
    }
    for (name, _) in params.iter().filter(|(k, v)| k != "sign" && !v.is_empty()) {
        let without: Vec<(String, String)> =
            params.iter().filter(|(k, _)| k != name).cloned().collect();
        if matches(&without, sign_type) {
            steps.failed(
                "body",
                format!(
                    "field {:?} was not in what WeChat signed: something between WeChat and payhook added it",
                    name.chars().take(64).collect::<String>()
                ),
            );
            return;
        }
    }
    let length_hint = if api_key.chars().count() == 32 {
        ""
    } else {
        " (APIv2 keys are 32 characters: this one is not)"
    };
    steps.failed(
        "signature",
        format!(
            "does not match with the {key_text}{length_hint}: either the key is not the merchant's current APIv2 key, \
             or a field was changed after WeChat signed it. APIv2 signatures are keyed with the secret itself, so \
             nothing in the signature tells which"
        ),
    );
}
