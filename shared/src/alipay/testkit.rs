//! Unit-test helpers: the provider side in miniature — keys generated at test time
//! (never committed), a realistic notification, V1 signing and form encoding as
//! Alipay does them. The full simulator for integration tests is the tests crate's
//! `signer::alipay`, which this crate cannot depend on.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use rsa::{Generate as _, PrivateKey};

use super::form::Charset;
use super::{AlipayApp, AlipayKeys, SignType, sign_content_v1};

/// The key slot playing Alipay.
pub(crate) const PROVIDER: usize = 0;
/// Another key (a wrong key, or an old certificate).
pub(crate) const OTHER: usize = 1;

pub(crate) fn private_key(slot: usize) -> &'static PrivateKey {
    static KEYS: [OnceLock<PrivateKey>; 2] = [OnceLock::new(), OnceLock::new()];
    KEYS[slot].get_or_init(PrivateKey::generate)
}

pub(crate) fn public_key(slot: usize) -> crate::crypto::RsaPublicKey {
    private_key(slot).to_public_key().into()
}

/// An app in public-key mode trusting the key of `slot`.
pub(crate) fn app(slot: usize) -> AlipayApp {
    AlipayApp {
        app_id: "2021000000000001".into(),
        keys: AlipayKeys::PublicKey(public_key(slot)),
    }
}

/// An unsigned `TRADE_SUCCESS` notification with the usual fields.
pub(crate) fn payment() -> Vec<(String, String)> {
    [
        ("gmt_create", "2024-05-20 10:00:00"),
        ("charset", "utf-8"),
        ("seller_email", "shop@example.com"),
        ("subject", "测试商品"),
        ("buyer_id", "2088102177846880"),
        ("invoice_amount", "88.88"),
        ("notify_id", "2024052000222100001000000000000001"),
        (
            "fund_bill_list",
            r#"[{"amount":"88.88","fundChannel":"ALIPAYACCOUNT"}]"#,
        ),
        ("notify_type", "trade_status_sync"),
        ("trade_status", "TRADE_SUCCESS"),
        ("receipt_amount", "88.88"),
        ("buyer_pay_amount", "88.88"),
        ("app_id", "2021000000000001"),
        ("sign_type", "RSA2"),
        ("seller_id", "2088721000000001"),
        ("gmt_payment", "2024-05-20 10:00:05"),
        ("notify_time", "2024-05-20 10:00:06"),
        ("version", "1.0"),
        ("out_trade_no", "order-1"),
        ("total_amount", "88.88"),
        ("trade_no", "2024052022001400001000000001"),
        ("auth_app_id", "2021000000000001"),
        ("buyer_logon_id", "abc***@example.com"),
        ("point_amount", "0.00"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn declared<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn charset(params: &[(String, String)]) -> Charset {
    declared(params, "charset").map_or(Charset::Utf8, |c| {
        Charset::from_label(c).expect("test charset is supported")
    })
}

/// A Base64 PKCS#1 v1.5 signature over `message` with the key of `slot`.
pub(crate) fn signature(slot: usize, sign_type: SignType, message: &[u8]) -> String {
    let key = private_key(slot).clone();
    let bytes = match sign_type {
        SignType::Rsa2 => SigningKey::<sha2::Sha256>::new(key).sign(message).to_vec(),
        SignType::Rsa => SigningKey::<sha1::Sha1>::new(key).sign(message).to_vec(),
    };
    STANDARD.encode(bytes)
}

/// `params` with `sign` set as Alipay computes it: V1 content, encoded in the declared
/// charset, signed per the declared `sign_type`.
pub(crate) fn sign(params: &[(String, String)], slot: usize) -> Vec<(String, String)> {
    let sign_type = SignType::from_param(declared(params, "sign_type").unwrap_or("RSA2"))
        .expect("test sign type is supported");
    let content = charset(params)
        .encode(&sign_content_v1(params))
        .expect("encodable content");
    let sign = signature(slot, sign_type, &content);
    let mut out: Vec<_> = params
        .iter()
        .filter(|(k, _)| k != "sign")
        .cloned()
        .collect();
    out.push(("sign".into(), sign));
    out
}

/// A form body as Alipay (Java's `URLEncoder`) writes it, in the declared charset.
pub(crate) fn form_body(params: &[(String, String)]) -> Vec<u8> {
    let charset = charset(params);
    let encode = |text: &str| {
        let mut out = String::new();
        for &b in &charset.encode(text).expect("encodable text") {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                    out.push(char::from(b));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    let pairs: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    pairs.join("&").into_bytes()
}
