//! The fuzz targets' bodies, one function per parser an outsider can reach. The
//! libFuzzer binaries (`fuzz_targets/`) call them; the workspace test
//! `tests/tests/it/fuzz_corpus.rs` includes this file and replays the committed corpus
//! and every crash reproducer through them, so a fixed crash stays fixed.
//!
//! The keys that play the providers come from the WeChat Pay vector
//! (`shared/src/wechat_v3/vectors/wechat_v3_notify.json`, a published SDK test key — TEST
//! ONLY), so that the targets can sign whatever the fuzzer made and reach the code
//! behind the signature check.

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use payhook_shared::alipay::{self, AlipayApp, AlipayKeys, form, sign_content_v1};
use payhook_shared::clock::FixedClock;
use payhook_shared::config::Settings;
use payhook_shared::crypto::{RsaSigningKey, parse_certificates, public_key_of_certificate};
use payhook_shared::error::VerifyError;
use payhook_shared::merchants::Merchants;
use payhook_shared::wechat_v2::{self, SignType, V2Merchant, encrypt_req_info, parse_xml};
use payhook_shared::wechat_v3::{self, PlatformKeys, V3Headers, V3Merchant, encrypt_resource};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::SecretString;

const VECTOR: &str = include_str!("../../src/wechat_v3/vectors/wechat_v3_notify.json");

/// The WeChat Pay APIv2 key of the fuzz merchant (TEST ONLY).
const V2_KEY: &str = "8934e7d15453e97507ef794cf7b0519d";

/// The instant the V3 target's clock reads.
const NOW: i64 = 1_700_000_000;

struct Keys {
    signer: RsaSigningKey,
    serial: String,
    alipay: AlipayApp,
    v2: V2Merchant,
    v3: V3Merchant,
    apiv3_key: String,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let v: serde_json::Value = serde_json::from_str(VECTOR).expect("vector");
        let field = |name: &str| v[name].as_str().expect("vector field").to_owned();
        let cert_pem = field("platform_certificate_pem");
        let cert = parse_certificates(&cert_pem)
            .expect("certificate")
            .remove(0);
        let mut platform = PlatformKeys::new();
        let serial = platform
            .add_certificate_pem(&cert_pem)
            .expect("platform key");
        let apiv3_key = field("apiv3_key");
        Keys {
            signer: RsaSigningKey::parse(&field("platform_private_key_pem_pkcs8"))
                .expect("private key"),
            serial,
            alipay: AlipayApp {
                app_id: "2021000000000001".into(),
                keys: AlipayKeys::PublicKey(public_key_of_certificate(&cert).expect("key")),
            },
            v2: V2Merchant {
                mch_id: "10000100".into(),
                api_key: SecretString::from(V2_KEY),
            },
            v3: V3Merchant {
                mch_id: "1900000001".into(),
                api_v3_key: SecretString::from(apiv3_key.clone()),
                keys: platform,
            },
            apiv3_key,
        }
    })
}

/// A correctly signed input may be refused for what it says, never for its signature.
fn not_a_signature_failure<T>(result: Result<T, VerifyError>) {
    if let Err(e) = result {
        assert!(!matches!(e, VerifyError::BadSignature), "{e}");
    }
}

/// An Alipay notification body, as bytes from anyone: decoded and verified as is (the
/// signature check refuses it), then — when it decodes — signed with the provider's
/// key and verified again, which reaches normalization (amounts, statuses, times)
/// with every field the fuzzer made.
pub fn alipay_notify(body: &[u8]) {
    let keys = keys();
    let _ = alipay::verify_notification(&keys.alipay, body);
    let Ok(mut params) = form::decode(body) else {
        return;
    };
    params.retain(|(k, _)| !matches!(k.as_str(), "sign" | "sign_type" | "charset"));
    params.push(("sign_type".into(), "RSA2".into()));
    let content = sign_content_v1(&params);
    let sign = keys
        .signer
        .sign_sha256_b64(content.as_bytes())
        .expect("signs");
    params.push(("sign".into(), sign));
    let body: Vec<String> = params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect();
    not_a_signature_failure(alipay::verify_notification(
        &keys.alipay,
        body.join("&").as_bytes(),
    ));
}

fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

fn xml(params: &[(String, String)]) -> Vec<u8> {
    let mut out = String::from("<xml>");
    for (k, v) in params {
        out.push_str(&format!("<{k}>{}</{k}>", cdata(v)));
    }
    out.push_str("</xml>");
    out.into_bytes()
}

/// A WeChat Pay APIv2 notification body from anyone: parsed and verified as is; the
/// bytes encrypted as a refund's `req_info` (reaching the refund parser and
/// normalization behind decryption); and — when they parse — the fields signed with
/// the merchant's key (reaching payment normalization).
pub fn wechat_v2_notify(data: &[u8]) {
    let merchant = &keys().v2;
    let _ = wechat_v2::verify_notification(merchant, data);

    let refund = xml(&[
        ("return_code".into(), "SUCCESS".into()),
        ("appid".into(), "wx2421b1c4370ec43b".into()),
        ("mch_id".into(), "10000100".into()),
        ("req_info".into(), encrypt_req_info(data, V2_KEY)),
    ]);
    let _ = wechat_v2::verify_notification(merchant, &refund);

    let Ok(mut params) = parse_xml(data) else {
        return;
    };
    params.retain(|(k, _)| {
        !matches!(
            k.as_str(),
            "sign" | "sign_type" | "req_info" | "return_code"
        ) && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && k.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
    });
    // XML 1.0 reads a CR LF or a lone CR as LF, in CDATA too (so do the XML parsers
    // of WeChat's SDKs): sign the values as any reader of the body will see them.
    for (_, value) in &mut params {
        *value = value.replace("\r\n", "\n").replace('\r', "\n");
    }
    params.push(("return_code".into(), "SUCCESS".into()));
    let signature = wechat_v2::sign(&params, V2_KEY, SignType::Md5);
    params.push(("sign".into(), signature));
    not_a_signature_failure(wechat_v2::verify_notification(merchant, &xml(&params)));
}

#[derive(Debug, Arbitrary)]
struct V3Input<'a> {
    timestamp: Option<&'a str>,
    nonce: Option<&'a str>,
    signature: Option<&'a str>,
    serial: Option<&'a str>,
    signature_type: Option<&'a str>,
    body: &'a [u8],
    event_type: &'a str,
    resource_type: &'a str,
    plaintext: &'a [u8],
}

/// A WeChat Pay APIv3 notification from anyone: its `Wechatpay-*` headers and body
/// verified as they are; then the body signed with the platform key; then the
/// fuzzer's plaintext sealed as the resource of a well-formed signed envelope, which
/// reaches decryption and normalization of any resource.
pub fn wechat_v3_notify(data: &[u8]) {
    let Ok(input) = V3Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let keys = keys();
    let clock = FixedClock::at_unix(NOW);
    let headers = V3Headers {
        timestamp: input.timestamp,
        nonce: input.nonce,
        signature: input.signature,
        serial: input.serial,
        signature_type: input.signature_type,
    };
    let _ = wechat_v3::verify_notification(&keys.v3, &headers, input.body, &clock);

    let timestamp = NOW.to_string();
    let check = |body: &[u8]| {
        let mut message = format!("{timestamp}\nfuzz-nonce\n").into_bytes();
        message.extend_from_slice(body);
        message.push(b'\n');
        let signature = keys.signer.sign_sha256_b64(&message).expect("signs");
        let headers = V3Headers {
            timestamp: Some(&timestamp),
            nonce: Some("fuzz-nonce"),
            signature: Some(&signature),
            serial: Some(&keys.serial),
            signature_type: None,
        };
        not_a_signature_failure(wechat_v3::verify_notification(
            &keys.v3, &headers, body, &clock,
        ));
    };
    check(input.body);

    let ciphertext = encrypt_resource(
        keys.apiv3_key.as_bytes(),
        "fuzznonce123",
        "transaction",
        input.plaintext,
    );
    let envelope = serde_json::json!({
        "id": "EV-fuzz",
        "create_time": "2023-11-14T22:13:20+08:00",
        "resource_type": input.resource_type,
        "event_type": input.event_type,
        "summary": "fuzz",
        "resource": {
            "original_type": "transaction",
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ciphertext,
            "associated_data": "transaction",
            "nonce": "fuzznonce123",
        },
    });
    check(envelope.to_string().as_bytes());
}

/// Configuration text: loaded over the embedded defaults and, when it loads, every
/// merchant's keys parsed (what start-up does). A bad file is an error naming the
/// field, never a panic.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(settings) = Settings::from_toml(text) {
        let _ = Merchants::build(&settings);
    }
}

/// A WeChat Pay `ALL` trade bill (a download URL's content): every line a trade, a
/// refund, the summary or an error; the summary checked. Never a panic, whatever the
/// bytes.
pub fn wechat_bill(data: &[u8]) {
    let mut lines = 0_usize;
    let result = payhook_shared::bills::wechat::read(
        data,
        payhook_shared::event::Provider::WechatV3,
        |_| lines += 1,
    );
    if let Ok(totals) = result {
        assert_eq!(
            u64::try_from(lines).unwrap_or(u64::MAX),
            totals.payments + totals.refunds
        );
    }
}

/// An Alipay trade bill's detail CSV (GBK, a download URL's content), as
/// [`wechat_bill`].
pub fn alipay_bill(data: &[u8]) {
    let mut lines = 0_usize;
    if let Ok(totals) = payhook_shared::bills::alipay::read(data, |_| lines += 1) {
        assert_eq!(
            u64::try_from(lines).unwrap_or(u64::MAX),
            totals.payments + totals.refunds
        );
    }
}
