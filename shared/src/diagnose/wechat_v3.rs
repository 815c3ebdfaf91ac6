//! A WeChat Pay APIv3 notification, explained.

use secrecy::ExposeSecret as _;

use crate::clock::Clock;
use crate::crypto::{Recovered, RsaHash, digest, recover_rsa, verify_rsa};
use crate::event::Provider;
use crate::merchants::Merchants;
use crate::wechat_v3::signature::{
    HEADER_NONCE, HEADER_SERIAL, HEADER_SIGNATURE, HEADER_TIMESTAMP, SIGNATURE_TYPE,
    TIMESTAMP_WINDOW_SECS,
};
use crate::wechat_v3::{PUBLIC_KEY_ID_PREFIX, V3Headers, V3Merchant, decrypt_resource};

use super::{Steps, date, describe_content};

pub(super) fn explain(
    m: &V3Merchant,
    merchants: &Merchants,
    merchant: &str,
    headers: &V3Headers<'_>,
    body: &[u8],
    clock: &dyn Clock,
    steps: &mut Steps,
) {
    let missing: Vec<&str> = [
        (HEADER_TIMESTAMP, headers.timestamp),
        (HEADER_NONCE, headers.nonce),
        (HEADER_SIGNATURE, headers.signature),
        (HEADER_SERIAL, headers.serial),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_none_or(str::is_empty))
    .map(|(name, _)| name)
    .collect();
    let (Some(timestamp), Some(nonce), Some(signature), Some(serial)) = (
        headers.timestamp,
        headers.nonce,
        headers.signature,
        headers.serial,
    ) else {
        steps.failed(
            "headers",
            format!(
                "missing {}: pass the request's headers with --header (a proxy that drops Wechatpay-* headers fails every notification)",
                missing.join(", ")
            ),
        );
        return;
    };
    if !missing.is_empty() {
        steps.failed("headers", format!("empty {}", missing.join(", ")));
        return;
    }
    if let Some(kind) = headers.signature_type
        && kind != SIGNATURE_TYPE
    {
        steps.failed(
            "headers",
            format!("Wechatpay-Signature-Type is {kind:?}, payhook verifies {SIGNATURE_TYPE}"),
        );
        return;
    }
    if signature.starts_with("WECHATPAY/SIGNTEST/") {
        steps.failed(
            "signature",
            "a WeChat signature probe (WECHATPAY/SIGNTEST/…): WeChat checks that the merchant refuses bad signatures; refusing it is right",
        );
        return;
    }
    steps.passed(
        "headers",
        format!("serial {serial}, nonce {} characters", nonce.len()),
    );

    let now = clock.now().unix_timestamp();
    match timestamp.parse::<i64>() {
        Ok(signed_at) if timestamp.bytes().all(|b| b.is_ascii_digit()) => {
            let skew = now.saturating_sub(signed_at);
            if skew.abs() > TIMESTAMP_WINDOW_SECS {
                steps.failed(
                    "timestamp",
                    format!(
                        "signed {skew} s {} now, outside the ±{TIMESTAMP_WINDOW_SECS} s window: a replayed request, a \
                         resend held back by a queueing proxy, or this host's clock is off (check NTP)",
                        if skew >= 0 { "before" } else { "after" }
                    ),
                );
            } else {
                steps.passed(
                    "timestamp",
                    format!("signed {skew} s before now (window ±{TIMESTAMP_WINDOW_SECS} s)"),
                );
            }
        }
        _ => steps.failed("timestamp", "Wechatpay-Timestamp is not Unix seconds"),
    }

    let certificates: Vec<_> = merchants
        .certificates
        .iter()
        .filter(|c| c.provider == Provider::WechatV3 && c.merchant == merchant)
        .collect();
    let lookup = crate::wechat_v3::keys::lookup_form;
    let configured = certificates
        .iter()
        .find(|c| lookup(&c.certificate.serial) == lookup(serial));
    let Some(key) = m.keys.get(serial) else {
        if let Some(stale) = certificates.iter().find(|c| !c.certificate.valid_at(now)) {
            steps.failed(
                "certificate",
                format!(
                    "the configured platform certificate {} ({}) expired on {}: WeChat signs with its new certificate, \
                     which the worker downloads (see payhook_certificate_refreshes_total)",
                    stale.certificate.serial,
                    stale.setting,
                    date(stale.certificate.not_after)
                ),
            );
        }
        steps.failed(
            "key",
            format!(
                "Wechatpay-Serial {serial} is neither configured nor among the downloaded platform certificates (known: {}). \
                 A new platform certificate reaches the receivers through the worker's refresh; a merchant in public-key \
                 mode configures public_key_id and public_key",
                m.keys.serials().join(", ")
            ),
        );
        return;
    };
    let key_text = match configured {
        Some(c) => format!(
            "{} (serial {}), RSA-{}, fingerprint {}",
            c.setting,
            c.certificate.serial,
            key.bits(),
            key.fingerprint()
        ),
        None if serial.starts_with(PUBLIC_KEY_ID_PREFIX) => format!(
            "wechat_v3.{merchant}.public_key ({serial}), RSA-{}, fingerprint {}",
            key.bits(),
            key.fingerprint()
        ),
        None => format!(
            "platform certificate {serial} downloaded from WeChat, RSA-{}, fingerprint {}",
            key.bits(),
            key.fingerprint()
        ),
    };
    let stale = configured
        .filter(|c| !c.certificate.valid_at(now))
        .map(|c| format!("{} expired on {}", c.setting, date(c.certificate.not_after)));

    let mut message = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    for part in [timestamp.as_bytes(), nonce.as_bytes(), body] {
        message.extend_from_slice(part);
        message.push(b'\n');
    }
    let message_text = format!(
        "timestamp\\nnonce\\nbody\\n: {}",
        describe_content(&message)
    );
    match verify_rsa(&key, RsaHash::Sha256, &message, signature) {
        Ok(()) => {
            steps.passed("key", key_text);
            if let Some(stale) = stale {
                steps.warning("certificate", stale);
            }
            steps.passed("sign_content", message_text);
            steps.passed("signature", "verifies with this key");
        }
        Err(_) => match recover_rsa(&key, signature) {
            Err(_) => steps.failed("signature", "Wechatpay-Signature is not Base64"),
            Ok(Recovered::Digest { digest: signed, .. }) => {
                steps.passed(
                    "key",
                    format!("{key_text} (the signature was made with this key)"),
                );
                if let Some(stale) = stale {
                    steps.warning("certificate", stale);
                }
                steps.passed("sign_content", message_text);
                explain_altered(timestamp, nonce, body, &signed, steps);
            }
            Ok(_) => {
                if let Some(stale) = stale {
                    steps.failed("certificate", stale);
                }
                steps.failed(
                    "key",
                    format!(
                        "{key_text} — the signature was not made with this key: the key configured under this serial \
                         is not WeChat's platform key for this merchant (another merchant's, or the merchant's own API \
                         certificate configured as a platform certificate)"
                    ),
                );
            }
        },
    }

    decrypt(m, body, steps);
}

/// Made with the right key over other bytes: a reformatted body, or a tampered one.
fn explain_altered(timestamp: &str, nonce: &str, body: &[u8], signed: &[u8], steps: &mut Steps) {
    let matches = |candidate: &[u8]| {
        let mut message = Vec::with_capacity(candidate.len() + 64);
        for part in [timestamp.as_bytes(), nonce.as_bytes(), candidate] {
            message.extend_from_slice(part);
            message.push(b'\n');
        }
        digest(RsaHash::Sha256, &message) == signed
    };
    let trimmed = body.trim_ascii_end();
    let candidates: [(&str, Vec<u8>); 4] = [
        (
            "a trailing line break or spaces were added",
            trimmed.to_vec(),
        ),
        ("a trailing line break was removed", [body, b"\n"].concat()),
        (
            "line breaks were changed to CRLF",
            String::from_utf8_lossy(body)
                .replace("\r\n", "\n")
                .into_bytes(),
        ),
        (
            "the JSON was reformatted (whitespace added)",
            compact_json(body),
        ),
    ];
    for (what, candidate) in candidates {
        if candidate != body && matches(&candidate) {
            steps.failed(
                "body",
                format!(
                    "the body was altered on the way: {what}. WeChat signs the exact bytes: make every proxy pass the body through unchanged"
                ),
            );
            return;
        }
    }
    steps.failed(
        "signature",
        "the signature was made with this key, but over other content: the body or a signed header (timestamp, \
         nonce) was changed after WeChat signed it (tampered), or altered on the way in a way payhook cannot reconstruct",
    );
}

/// The JSON with every whitespace outside strings removed (WeChat sends compact JSON).
fn compact_json(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if !b.is_ascii_whitespace() {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
    out
}

/// Whether the resource decrypts with the APIv3 key (it authenticates it too).
fn decrypt(m: &V3Merchant, body: &[u8], steps: &mut Steps) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        steps.failed("body", "the body is not JSON");
        return;
    };
    let resource = &value["resource"];
    let field = |name: &str| resource[name].as_str().unwrap_or("");
    if field("ciphertext").is_empty() || field("nonce").is_empty() {
        steps.failed(
            "decrypt",
            "no resource.ciphertext / resource.nonce in the body",
        );
        return;
    }
    match decrypt_resource(
        m.api_v3_key.expose_secret().as_bytes(),
        field("nonce"),
        field("associated_data"),
        field("ciphertext"),
    ) {
        Ok(plaintext) => steps.passed(
            "decrypt",
            format!("resource decrypts with the APIv3 key ({} bytes)", plaintext.len()),
        ),
        Err(_) => steps.failed(
            "decrypt",
            "resource does not decrypt with the configured api_v3_key: the key differs from the one set in the \
             merchant platform (it was reset?), or the ciphertext was altered",
        ),
    }
}
