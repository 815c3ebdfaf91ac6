//! An Alipay notification, explained.

use crate::alipay::form::{Charset, Form};
use crate::alipay::{AlipayApp, AlipayKeys, SignType, sign_content_v1_bytes};
use crate::crypto::{Recovered, RsaHash, RsaPublicKey, digest, recover_rsa, verify_rsa};
use crate::error::VerifyError;
use crate::event::Provider;
use crate::merchants::Merchants;

use super::{Steps, date, describe_content};

/// The parameters the V1 sign content leaves out.
const UNSIGNED: &[&str] = &["sign", "sign_type", "alipay_cert_sn"];

pub(super) fn explain(
    app: &AlipayApp,
    merchants: &Merchants,
    merchant: &str,
    body: &[u8],
    now: i64,
    steps: &mut Steps,
) {
    let Some(form) = form(body, steps) else {
        return;
    };
    let present = |key| form.get(key).filter(|v| !v.is_empty());
    let Some(sign) = present("sign") else {
        steps.failed(
            "sign",
            "no sign parameter: this is not a signed Alipay notification",
        );
        return;
    };
    let sign_type = match present("sign_type").map(SignType::from_param) {
        Some(Ok(sign_type)) => sign_type,
        Some(Err(error)) => {
            steps.failed(
                "sign",
                format!("{error}: Alipay signs RSA2 (or RSA for old apps)"),
            );
            return;
        }
        None => {
            steps.failed("sign", "no sign_type parameter");
            return;
        }
    };
    if sign.contains(' ') {
        steps.failed(
            "body",
            "the signature holds spaces: its '+' characters arrived unescaped and were decoded as spaces — \
             something between Alipay and payhook decoded the body once too often (a proxy or a framework re-encoding it)",
        );
        return;
    }
    let signature_bytes =
        match base64::Engine::decode(&base64::engine::general_purpose::STANDARD, sign.trim()) {
            Ok(raw) => raw.len(),
            Err(_) => {
                steps.failed("sign", "the signature is not Base64");
                return;
            }
        };
    steps.passed(
        "sign",
        format!(
            "sign_type {} ({}), signature {signature_bytes} bytes",
            sign_type.as_str(),
            match sign_type.hash() {
                RsaHash::Sha256 => "SHA256withRSA",
                RsaHash::Sha1 => "SHA1withRSA",
            }
        ),
    );

    // Which key: public-key mode has one; certificate mode picks by alipay_cert_sn.
    let sn = present("alipay_cert_sn");
    let certificates: Vec<_> = merchants
        .certificates
        .iter()
        .filter(|c| c.provider == Provider::Alipay && c.merchant == merchant)
        .collect();
    let expired_text = |c: &crate::inventory::Configured| {
        if now > c.certificate.not_after {
            format!("expired on {}", date(c.certificate.not_after))
        } else {
            format!("not valid before {}", date(c.certificate.not_before))
        }
    };
    let (key, key_text, out_of_validity) = match (&app.keys, app.keys.key_for(sn)) {
        (AlipayKeys::PublicKey(_), Ok(key)) => (
            key,
            format!(
                "alipay.{merchant}.alipay_public_key, RSA-{}, fingerprint {}{}",
                key.bits(),
                key.fingerprint(),
                if sn.is_some() {
                    " (the notification names an alipay_cert_sn: Alipay is in certificate mode for this app — configure alipay_cert)"
                } else {
                    ""
                }
            ),
            None,
        ),
        (AlipayKeys::Certificates { default_sn, .. }, Ok(key)) => {
            let chosen = sn.unwrap_or(default_sn);
            let certificate = certificates
                .iter()
                .find(|c| c.certificate.alipay_sn == chosen);
            let stale = certificate
                .filter(|c| !c.certificate.valid_at(now))
                .map(|c| {
                    format!(
                        "certificate SN {chosen} ({}) {}",
                        c.setting,
                        expired_text(c)
                    )
                });
            (
                key,
                format!(
                    "alipay.{merchant}.alipay_cert, certificate SN {chosen} ({}), RSA-{}, fingerprint {}",
                    if sn.is_some() {
                        "named by the notification"
                    } else {
                        "none named: the first certificate"
                    },
                    key.bits(),
                    key.fingerprint()
                ),
                stale,
            )
        }
        (_, Err(_)) => {
            if let Some(stale) = certificates.iter().find(|c| !c.certificate.valid_at(now)) {
                steps.failed(
                    "certificate",
                    format!(
                        "the configured certificate SN {} ({}) is {}: Alipay signs with its renewed certificate — \
                         download alipayCertPublicKey_RSA2.crt and alipayRootCert.crt again",
                        stale.certificate.alipay_sn,
                        stale.setting,
                        expired_text(stale)
                    ),
                );
            }
            let known: Vec<&str> = certificates
                .iter()
                .map(|c| c.certificate.alipay_sn.as_str())
                .collect();
            steps.failed(
                "key",
                format!(
                    "the notification names alipay_cert_sn {}, which is not among the configured certificates ({}): \
                     Alipay renewed its public key certificate — download alipayCertPublicKey_RSA2.crt again",
                    sn.unwrap_or(""),
                    known.join(", ")
                ),
            );
            return;
        }
    };

    let content = sign_content_v1_bytes(form.signed_bytes());
    let signed_count = form
        .texts()
        .filter(|(k, v)| !v.is_empty() && !UNSIGNED.contains(k))
        .count();
    let content_text = format!(
        "{}; {signed_count} parameters signed",
        describe_content(&content)
    );

    match verify_rsa(key, sign_type.hash(), &content, sign) {
        Ok(()) => {
            steps.passed("key", key_text);
            if let Some(stale) = out_of_validity {
                steps.warning(
                    "certificate",
                    format!("{stale}; the signature still verifies with it, but renew it now"),
                );
            }
            steps.passed("sign_content", content_text);
            steps.passed("signature", "verifies with this key");
        }
        Err(_) => explain_failure(
            key,
            sign_type,
            sign,
            &form,
            key_text,
            content_text,
            out_of_validity,
            steps,
        ),
    }
}

/// Parses the form, or says why it does not parse (a charset mismatch included).
fn form(body: &[u8], steps: &mut Steps) -> Option<Form> {
    match Form::parse(body) {
        Ok(form) => {
            let declared = form.get("charset").filter(|c| !c.is_empty());
            steps.passed("form", format!("{} parameters", form.texts().count()));
            steps.passed(
                "charset",
                match declared {
                    Some(_) => format!("declared {}, every value decodes", form.charset().label()),
                    None => "none declared (utf-8), every value decodes".to_owned(),
                },
            );
            Some(form)
        }
        Err(VerifyError::Charset(label)) => {
            steps.failed(
                "charset",
                format!("charset {label:?} is not one Alipay uses (utf-8, GBK, gb2312, gb18030)"),
            );
            None
        }
        Err(error) => {
            if let Ok(declared) = Form::declared_charset(body) {
                for other in [Charset::Utf8, Charset::Gbk, Charset::Gb18030] {
                    if other != declared && Form::parse_as(body, other).is_ok() {
                        steps.failed(
                            "charset",
                            format!(
                                "the body declares {} but its values are {} bytes: the charset parameter does not \
                                 match the bytes (a proxy converted the body, or the app's charset differs)",
                                declared.label(),
                                other.label()
                            ),
                        );
                        return None;
                    }
                }
            }
            steps.failed("form", error.to_string());
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn explain_failure(
    key: &RsaPublicKey,
    sign_type: SignType,
    sign: &str,
    form: &Form,
    key_text: String,
    content_text: String,
    out_of_validity: Option<String>,
    steps: &mut Steps,
) {
    let recovered = recover_rsa(key, sign).unwrap_or(Recovered::OtherKey);
    let Recovered::Digest {
        hash,
        digest: signed,
    } = recovered
    else {
        if let Some(stale) = out_of_validity {
            steps.failed(
                "certificate",
                format!("{stale}: Alipay signs with its renewed certificate — download alipayCertPublicKey_RSA2.crt again"),
            );
        }
        let what = if recovered == Recovered::OtherDigest {
            "the signature was made with this key over a digest payhook does not accept".to_owned()
        } else {
            "the signature was not made with this key: Alipay signed with another one. Usual causes: the app's own \
             public key (the one uploaded to Alipay) configured where Alipay's public key belongs; the key of another \
             app, or of the sandbox; a renewed Alipay certificate"
                .to_owned()
        };
        steps.failed("key", format!("{key_text} — {what}"));
        steps.passed("sign_content", content_text);
        return;
    };
    steps.passed(
        "key",
        format!("{key_text} (the signature was made with this key)"),
    );
    if let Some(stale) = &out_of_validity {
        steps.warning("certificate", stale.clone());
    }
    if hash != sign_type.hash() {
        steps.failed(
            "sign",
            format!(
                "sign_type says {} but the signature was made with {}: sign_type was changed on the way",
                sign_type.as_str(),
                match hash {
                    RsaHash::Sha256 => "SHA-256 (RSA2)",
                    RsaHash::Sha1 => "SHA-1 (RSA)",
                }
            ),
        );
        return;
    }
    let matches = |candidate: &[u8]| digest(hash, candidate) == signed;
    steps.passed("sign_content", content_text);

    // The known alterations, cheapest first: each is a digest comparison.
    let texts: Vec<(&str, &str)> = form.texts().collect();
    for other in [Charset::Utf8, Charset::Gbk, Charset::Gb18030] {
        if other == form.charset() {
            continue;
        }
        if let Some(candidate) = encoded(&texts, other)
            && matches(&candidate)
        {
            steps.failed(
                "charset",
                format!(
                    "Alipay signed the {} bytes of these values, but the notification declares {}: the charset \
                     parameter and the bytes disagree (a proxy converted the body, or the app's charset setting differs)",
                    other.label(),
                    form.charset().label()
                ),
            );
            return;
        }
    }
    for (name, _) in texts
        .iter()
        .filter(|(k, v)| !v.is_empty() && !UNSIGNED.contains(k))
    {
        let without: Vec<(&str, &str)> = texts.iter().filter(|(k, _)| k != name).copied().collect();
        if encoded(&without, form.charset()).is_some_and(|c| matches(&c)) {
            steps.failed(
                "body",
                format!(
                    "parameter {:?} was not in what Alipay signed: something between Alipay and payhook added it \
                     (a proxy, a gateway, a framework); pass the body through unchanged",
                    name.chars().take(64).collect::<String>()
                ),
            );
            return;
        }
    }
    for (from, to, what) in [
        (' ', '+', "'+' characters became spaces"),
        ('+', ' ', "spaces became '+' characters"),
    ] {
        let swapped: Vec<(String, String)> = texts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.replace(from, &to.to_string())))
            .collect();
        let view: Vec<(&str, &str)> = swapped
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if encoded(&view, form.charset()).is_some_and(|c| matches(&c)) {
            steps.failed(
                "body",
                format!("the body was re-encoded on the way: {what} in the values; pass the body through unchanged"),
            );
            return;
        }
    }
    steps.failed(
        "signature",
        "the signature was made with this key, but over other content: a signed field was changed after Alipay \
         signed it (tampered), or the body was altered on the way in a way payhook cannot reconstruct",
    );
}

/// The V1 sign content of text parameters encoded in `charset`.
fn encoded(texts: &[(&str, &str)], charset: Charset) -> Option<Vec<u8>> {
    let bytes: Option<Vec<(Vec<u8>, Vec<u8>)>> = texts
        .iter()
        .map(|(k, v)| Some((charset.encode(k)?, charset.encode(v)?)))
        .collect();
    let bytes = bytes?;
    Some(sign_content_v1_bytes(
        bytes.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    ))
}
