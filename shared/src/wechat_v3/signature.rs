//! The `Wechatpay-Signature` check shared by notifications and API responses.
//!
//! WeChat signs `timestamp\nnonce\nbody\n` over the body bytes exactly as sent, with
//! SHA256withRSA (PKCS#1 v1.5), and names the key in `Wechatpay-Serial`. Nothing here
//! parses the body: authenticity is settled before any JSON is read.

use crate::clock::Clock;
use crate::crypto::{self, RsaHash};
use crate::error::VerifyError;

use super::keys::PlatformKeys;

/// Header carrying the Unix time (seconds) the message was signed at.
pub const HEADER_TIMESTAMP: &str = "Wechatpay-Timestamp";
/// Header carrying the signer's random nonce.
pub const HEADER_NONCE: &str = "Wechatpay-Nonce";
/// Header carrying the Base64 signature.
pub const HEADER_SIGNATURE: &str = "Wechatpay-Signature";
/// Header naming the key: certificate serial (hex) or `PUB_KEY_ID_…`.
pub const HEADER_SERIAL: &str = "Wechatpay-Serial";
/// Header naming the signature algorithm; optional, but if present must be [`SIGNATURE_TYPE`].
pub const HEADER_SIGNATURE_TYPE: &str = "Wechatpay-Signature-Type";
/// The only signature algorithm APIv3 uses.
pub const SIGNATURE_TYPE: &str = "WECHATPAY2-SHA256-RSA2048";

/// Largest accepted `|now − Wechatpay-Timestamp|`, in seconds (replay window).
pub const TIMESTAMP_WINDOW_SECS: i64 = 300;

/// Attacker-controlled header text is cut to this length before it goes into an
/// error (and from there into logs).
const MAX_ECHO_CHARS: usize = 64;

/// The signature headers of a notification or API response, as received. The caller
/// extracts them from its web framework; `None` means absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V3Headers<'a> {
    /// `Wechatpay-Timestamp`.
    pub timestamp: Option<&'a str>,
    /// `Wechatpay-Nonce`.
    pub nonce: Option<&'a str>,
    /// `Wechatpay-Signature`.
    pub signature: Option<&'a str>,
    /// `Wechatpay-Serial`.
    pub serial: Option<&'a str>,
    /// `Wechatpay-Signature-Type`.
    pub signature_type: Option<&'a str>,
}

impl<'a> V3Headers<'a> {
    /// Picks the signature headers out of `(name, value)` pairs; names match
    /// case-insensitively, as HTTP header names do.
    pub fn from_pairs<N, V>(pairs: &'a [(N, V)]) -> Self
    where
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let find = |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| n.as_ref().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_ref())
        };
        Self {
            timestamp: find(HEADER_TIMESTAMP),
            nonce: find(HEADER_NONCE),
            signature: find(HEADER_SIGNATURE),
            serial: find(HEADER_SERIAL),
            signature_type: find(HEADER_SIGNATURE_TYPE),
        }
    }

    /// The headers that are present, as `(name, value)` pairs, for the audit record.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        [
            (HEADER_TIMESTAMP, self.timestamp),
            (HEADER_NONCE, self.nonce),
            (HEADER_SERIAL, self.serial),
            (HEADER_SIGNATURE, self.signature),
            (HEADER_SIGNATURE_TYPE, self.signature_type),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name.to_owned(), v.to_owned())))
        .collect()
    }
}

/// Verifies the WeChat Pay APIv3 signature of `body` (a notification or an API
/// response): required headers, algorithm, timestamp window, key by serial, then
/// SHA256withRSA over `timestamp\nnonce\nbody\n` with the raw body bytes.
///
/// Signature probes (`WECHATPAY/SIGNTEST/…`) fail like any bad signature.
pub fn verify_signature(
    keys: &PlatformKeys,
    headers: &V3Headers<'_>,
    body: &[u8],
    clock: &dyn Clock,
) -> Result<(), VerifyError> {
    let timestamp = required(headers.timestamp, HEADER_TIMESTAMP)?;
    let nonce = required(headers.nonce, HEADER_NONCE)?;
    let signature = required(headers.signature, HEADER_SIGNATURE)?;
    let serial = required(headers.serial, HEADER_SERIAL)?;
    if let Some(kind) = headers.signature_type
        && kind != SIGNATURE_TYPE
    {
        return Err(VerifyError::UnsupportedAlgorithm(echo(kind)));
    }

    check_timestamp(timestamp, clock)?;
    let key = keys
        .get(serial)
        .ok_or_else(|| VerifyError::UnknownKey(echo(serial)))?;

    let mut message = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    for part in [timestamp.as_bytes(), nonce.as_bytes(), body] {
        message.extend_from_slice(part);
        message.push(b'\n');
    }
    crypto::verify_rsa(&key, RsaHash::Sha256, &message, signature)
}

fn required<'a>(value: Option<&'a str>, name: &'static str) -> Result<&'a str, VerifyError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(VerifyError::MissingField(name))
}

/// Accepts only plain decimal seconds (no sign, no fraction) within the window.
fn check_timestamp(timestamp: &str, clock: &dyn Clock) -> Result<(), VerifyError> {
    let malformed = || VerifyError::Malformed(format!("{HEADER_TIMESTAMP} is not Unix seconds"));
    if !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let signed_at: i64 = timestamp.parse().map_err(|_| malformed())?;
    let skew_secs = clock.now().unix_timestamp().saturating_sub(signed_at);
    if skew_secs.unsigned_abs() > TIMESTAMP_WINDOW_SECS.unsigned_abs() {
        return Err(VerifyError::StaleTimestamp { skew_secs });
    }
    Ok(())
}

fn echo(text: &str) -> String {
    text.chars().take(MAX_ECHO_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::wechat_v3::test_support::{PUB_KEY_ID, VectorSigner, vector};

    #[test]
    fn sdk_vector_signature_verifies_at_its_timestamp() {
        let v = vector();
        let clock = FixedClock::at_unix(1_624_523_846);
        assert_eq!(
            verify_signature(&v.keys(), &v.headers(), v.body.as_bytes(), &clock),
            Ok(())
        );
    }

    #[test]
    fn timestamps_within_300_seconds_either_way_are_accepted() {
        let s = VectorSigner::new();
        let body = br#"{"id":"1"}"#;
        for now in [s.ts - 300, s.ts + 300] {
            let h = s.headers(s.ts, body);
            let result = verify_signature(&s.keys(), &h.view(), body, &FixedClock::at_unix(now));
            assert_eq!(result, Ok(()), "now = ts {:+}", now - s.ts);
        }
    }

    #[test]
    fn stale_timestamp_is_rejected() {
        let s = VectorSigner::new();
        let body = br#"{"id":"1"}"#;
        let h = s.headers(s.ts - 301, body);
        let result = verify_signature(&s.keys(), &h.view(), body, &FixedClock::at_unix(s.ts));
        assert_eq!(result, Err(VerifyError::StaleTimestamp { skew_secs: 301 }));
    }

    #[test]
    fn future_timestamp_is_rejected() {
        let s = VectorSigner::new();
        let body = br#"{"id":"1"}"#;
        let h = s.headers(s.ts + 301, body);
        let result = verify_signature(&s.keys(), &h.view(), body, &FixedClock::at_unix(s.ts));
        assert_eq!(result, Err(VerifyError::StaleTimestamp { skew_secs: -301 }));
    }

    #[test]
    fn non_numeric_timestamp_is_malformed() {
        let v = vector();
        let clock = FixedClock::at_unix(1_624_523_846);
        for ts in [
            "+1624523846",
            "1624523846.0",
            " 1624523846",
            "abc",
            "99999999999999999999",
        ] {
            let mut h = v.headers();
            h.timestamp = Some(ts);
            let result = verify_signature(&v.keys(), &h, v.body.as_bytes(), &clock);
            assert!(
                matches!(result, Err(VerifyError::Malformed(_))),
                "{ts:?}: {result:?}"
            );
        }
    }

    #[test]
    fn each_missing_header_is_named() {
        let v = vector();
        let clock = FixedClock::at_unix(1_624_523_846);
        for name in [
            HEADER_TIMESTAMP,
            HEADER_NONCE,
            HEADER_SIGNATURE,
            HEADER_SERIAL,
        ] {
            // Absent and empty are the same thing.
            for value in [None, Some("")] {
                let mut h = v.headers();
                match name {
                    HEADER_TIMESTAMP => h.timestamp = value,
                    HEADER_NONCE => h.nonce = value,
                    HEADER_SIGNATURE => h.signature = value,
                    _ => h.serial = value,
                }
                let result = verify_signature(&v.keys(), &h, v.body.as_bytes(), &clock);
                assert_eq!(
                    result,
                    Err(VerifyError::MissingField(name)),
                    "{name} = {value:?}"
                );
            }
        }
    }

    #[test]
    fn signature_type_other_than_rsa2048_is_unsupported() {
        let v = vector();
        let clock = FixedClock::at_unix(1_624_523_846);
        let mut h = v.headers();
        h.signature_type = Some(SIGNATURE_TYPE);
        assert_eq!(
            verify_signature(&v.keys(), &h, v.body.as_bytes(), &clock),
            Ok(())
        );
        h.signature_type = Some("WECHATPAY2-SM2-WITH-SM3");
        assert_eq!(
            verify_signature(&v.keys(), &h, v.body.as_bytes(), &clock),
            Err(VerifyError::UnsupportedAlgorithm(
                "WECHATPAY2-SM2-WITH-SM3".into()
            ))
        );
    }

    #[test]
    fn signtest_probe_is_rejected_without_panic() {
        let v = vector();
        let clock = FixedClock::at_unix(1_624_523_846);
        // One probe that is not Base64 at all, one that happens to decode.
        for probe in ["WECHATPAY/SIGNTEST/ZXhhbXBsZQ==", "WECHATPAY/SIGNTEST/abcd"] {
            let mut h = v.headers();
            h.signature = Some(probe);
            let result = verify_signature(&v.keys(), &h, v.body.as_bytes(), &clock);
            assert!(
                matches!(
                    result,
                    Err(VerifyError::SignatureEncoding | VerifyError::BadSignature)
                ),
                "{probe}: {result:?}"
            );
        }
    }

    #[test]
    fn unknown_serial_is_named_in_the_error() {
        let v = vector();
        let clock = FixedClock::at_unix(1_624_523_846);
        let mut h = v.headers();
        h.serial = Some("5157F09EFDC096DE15EBE81A47057A7232F1B8E1");
        assert_eq!(
            verify_signature(&v.keys(), &h, v.body.as_bytes(), &clock),
            Err(VerifyError::UnknownKey(
                "5157F09EFDC096DE15EBE81A47057A7232F1B8E1".into()
            ))
        );
    }

    #[test]
    fn unknown_serial_echo_is_bounded() {
        let v = vector();
        let clock = FixedClock::at_unix(1_624_523_846);
        let long = "X".repeat(10_000);
        let mut h = v.headers();
        h.serial = Some(&long);
        let result = verify_signature(&v.keys(), &h, v.body.as_bytes(), &clock);
        assert_eq!(
            result,
            Err(VerifyError::UnknownKey("X".repeat(MAX_ECHO_CHARS)))
        );
    }

    #[test]
    fn one_tampered_body_byte_fails() {
        let v = vector();
        let clock = FixedClock::at_unix(1_624_523_846);
        let mut body = v.body.clone().into_bytes();
        let at = body.len() / 2;
        body[at] ^= 0x01;
        assert_eq!(
            verify_signature(&v.keys(), &v.headers(), &body, &clock),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn reserialised_body_fails() {
        // Trap 6: a framework that parses and re-serialises JSON breaks the signature.
        let v = vector();
        let clock = FixedClock::at_unix(1_624_523_846);
        let value: serde_json::Value = serde_json::from_str(&v.body).expect("JSON body");
        let reserialised = serde_json::to_vec_pretty(&value).expect("serializes");
        assert_eq!(
            verify_signature(&v.keys(), &v.headers(), &reserialised, &clock),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn lower_case_configured_serial_matches_upper_case_header() {
        let s = VectorSigner::new();
        let mut keys = PlatformKeys::new();
        keys.add_public_key("d7ce59d1f522d701", &s.public_key_pem())
            .expect("key");
        let body = br#"{"id":"1"}"#;
        let h = s.headers(s.ts, body);
        assert_eq!(h.view().serial, Some("D7CE59D1F522D701"));
        assert_eq!(
            verify_signature(&keys, &h.view(), body, &FixedClock::at_unix(s.ts)),
            Ok(())
        );
    }

    #[test]
    fn older_certificate_still_verifies_after_a_newer_one_is_added() {
        // The vector certificate is the "old" one; a second, unrelated RSA certificate
        // (Alipay's, from the fixtures) plays the newly downloaded one.
        let s = VectorSigner::new();
        let mut keys = s.keys();
        let newer = second_rsa_certificate();
        let newer_serial = keys
            .add_certificate_pem(&newer)
            .expect("second certificate");
        assert_eq!(keys.len(), 2);
        assert!(keys.get(&newer_serial).is_some());
        let body = br#"{"id":"1"}"#;
        let h = s.headers(s.ts, body);
        assert_eq!(
            verify_signature(&keys, &h.view(), body, &FixedClock::at_unix(s.ts)),
            Ok(())
        );
    }

    #[test]
    fn public_key_id_is_accepted_alongside_certificates() {
        let s = VectorSigner::new().with_serial(PUB_KEY_ID);
        let mut keys = vector().keys();
        keys.add_public_key(PUB_KEY_ID, &s.public_key_pem())
            .expect("public key");
        let body = br#"{"id":"1"}"#;
        let h = s.headers(s.ts, body);
        assert_eq!(h.view().serial, Some(PUB_KEY_ID));
        assert_eq!(
            verify_signature(&keys, &h.view(), body, &FixedClock::at_unix(s.ts)),
            Ok(())
        );
        // The certificate still verifies the SDK's own notification.
        let v = vector();
        let clock = FixedClock::at_unix(1_624_523_846);
        assert_eq!(
            verify_signature(&keys, &v.headers(), v.body.as_bytes(), &clock),
            Ok(())
        );
    }

    #[test]
    fn signature_by_another_key_under_a_known_serial_fails() {
        let s = VectorSigner::new();
        let mut keys = PlatformKeys::new();
        // Register a different certificate's key under the vector serial.
        keys.add_public_key("D7CE59D1F522D701", &second_rsa_certificate())
            .expect("key");
        let body = br#"{"id":"1"}"#;
        let h = s.headers(s.ts, body);
        assert_eq!(
            verify_signature(&keys, &h.view(), body, &FixedClock::at_unix(s.ts)),
            Err(VerifyError::BadSignature)
        );
    }

    fn second_rsa_certificate() -> String {
        const ALIPAY: &str = include_str!("../alipay/vectors/alipay_cert_sn.json");
        let v: serde_json::Value = serde_json::from_str(ALIPAY).expect("vector is JSON");
        find_rsa_certificate(&v).expect("an RSA certificate in the Alipay vector")
    }

    fn find_rsa_certificate(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::String(s) if s.contains("BEGIN CERTIFICATE") => {
                let certs = crypto::parse_certificates(s).ok()?;
                certs.iter().find_map(|c| {
                    crypto::public_key_of_certificate(c).ok()?;
                    let der = x509_cert::der::Encode::to_der(c).ok()?;
                    Some(pem::encode(&pem::Pem::new("CERTIFICATE", der)))
                })
            }
            serde_json::Value::Array(a) => a.iter().find_map(find_rsa_certificate),
            serde_json::Value::Object(o) => o.values().find_map(find_rsa_certificate),
            _ => None,
        }
    }
}
