//! The Alipay public key(s) of an app, parsed once at start-up.
//!
//! Public-key mode: one key (bare Base64 SubjectPublicKeyInfo as Alipay hands it out,
//! or PEM). Certificate mode: the contents of `alipayCertPublicKey_RSA2.crt` — one
//! or more certificates (a chain, or old and new certificates during a rotation),
//! each RSA one indexed by its Alipay SN; a message naming an SN
//! (`alipay_cert_sn`) is verified with that certificate's key, one naming none with
//! the first certificate's.

use std::collections::HashMap;
use std::fmt;

use crate::crypto::RsaPublicKey as PublicKey;

use super::{cert_sn, clip};
use crate::crypto::{parse_certificates, parse_public_key, public_key_of_certificate};
use crate::error::{KeyError, VerifyError};

/// How an app's Alipay signatures are verified.
#[derive(Clone)]
pub enum AlipayKeys {
    /// Public-key mode.
    PublicKey(PublicKey),
    /// Certificate mode: keys by certificate SN, and the SN used when a message names
    /// none (the first certificate of the configured file).
    Certificates {
        by_sn: HashMap<String, PublicKey>,
        default_sn: String,
    },
}

impl AlipayKeys {
    /// Public-key mode from bare Base64 SPKI (`MIIBIjAN…`) or PEM.
    pub fn from_public_key(text: &str) -> Result<Self, KeyError> {
        parse_public_key(text).map(Self::PublicKey)
    }

    /// Certificate mode from `alipayCertPublicKey_RSA2.crt` (PEM, one or more
    /// certificates). The first certificate must be RSA: it is the Alipay public key
    /// certificate. Other non-RSA certificates are skipped.
    pub fn from_certificates(alipay_cert_pem: &str) -> Result<Self, KeyError> {
        let certs = parse_certificates(alipay_cert_pem)?;
        let (first, rest) = certs
            .split_first()
            .ok_or_else(|| KeyError::Certificate("no certificate".into()))?;
        let key = public_key_of_certificate(first).map_err(|e| {
            KeyError::Certificate(format!("the first (Alipay public key) certificate: {e}"))
        })?;
        let default_sn = cert_sn(first);
        let mut by_sn = HashMap::from([(default_sn.clone(), key)]);
        // The chain's CA certificates, or the other certificate during a rotation. A
        // non-RSA one cannot have made Alipay's RSA signatures: skip it.
        for cert in rest {
            if let Ok(key) = public_key_of_certificate(cert) {
                by_sn.entry(cert_sn(cert)).or_insert(key);
            }
        }
        Ok(Self::Certificates { by_sn, default_sn })
    }

    /// The key that verifies a message naming `alipay_cert_sn` (or none). In
    /// public-key mode the SN is ignored: there is one key.
    pub fn key_for(&self, alipay_cert_sn: Option<&str>) -> Result<&PublicKey, VerifyError> {
        match self {
            Self::PublicKey(key) => Ok(key),
            Self::Certificates { by_sn, default_sn } => {
                let sn = alipay_cert_sn.unwrap_or(default_sn);
                by_sn
                    .get(sn)
                    .ok_or_else(|| VerifyError::UnknownKey(clip(sn)))
            }
        }
    }
}

/// Public keys are not secret, but their moduli are noise in a log: print the shape.
impl fmt::Debug for AlipayKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = |key: &PublicKey| format!("RSA-{}", key.bits());
        match self {
            Self::PublicKey(key) => f.debug_tuple("PublicKey").field(&bits(key)).finish(),
            Self::Certificates { by_sn, default_sn } => {
                let mut sns: Vec<&String> = by_sn.keys().collect();
                sns.sort();
                f.debug_struct("Certificates")
                    .field("sns", &sns)
                    .field("default_sn", default_sn)
                    .finish()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str = include_str!("vectors/alipay_cert_sn.json");
    const NODE_VECTOR: &str = include_str!("vectors/alipay_notify_trade_success.json");

    fn vector_field(json: &str, field: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(json).expect("vector file");
        v[field].as_str().expect("string field").to_owned()
    }

    #[test]
    fn certificate_mode_indexes_every_rsa_certificate_and_defaults_to_the_first() {
        let keys = AlipayKeys::from_certificates(&vector_field(VECTOR, "alipay_public_cert_pem"))
            .expect("vector chain");
        let leaf_sn = vector_field(VECTOR, "expected_alipay_cert_sn");
        let AlipayKeys::Certificates { by_sn, default_sn } = &keys else {
            panic!("certificate mode expected");
        };
        assert_eq!(default_sn, &leaf_sn);
        assert_eq!(by_sn.len(), 2, "leaf and its issuing CA");
        assert!(std::ptr::eq(
            keys.key_for(None).expect("default"),
            &by_sn[&leaf_sn]
        ));
        assert!(keys.key_for(Some(&leaf_sn)).is_ok());
        assert_eq!(
            keys.key_for(Some("0123")),
            Err(VerifyError::UnknownKey("0123".into()))
        );
    }

    #[test]
    fn certificate_mode_needs_an_rsa_first_certificate() {
        // The root bundle starts with an SM2 certificate.
        let err = AlipayKeys::from_certificates(&vector_field(VECTOR, "root_cert_pem"))
            .expect_err("SM2 first");
        assert!(matches!(err, KeyError::Certificate(_)));
    }

    #[test]
    fn public_key_mode_accepts_bare_base64_and_pem() {
        let b64 = vector_field(NODE_VECTOR, "alipay_public_key_b64_spki");
        let bare = AlipayKeys::from_public_key(&b64).expect("bare SPKI");
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
        let armoured = AlipayKeys::from_public_key(&pem).expect("PEM");
        assert_eq!(
            bare.key_for(None).ok(),
            armoured.key_for(Some("ignored")).ok()
        );
        assert!(AlipayKeys::from_public_key("MIIB-not-base64").is_err());
    }

    #[test]
    fn debug_prints_no_key_material() {
        let b64 = vector_field(NODE_VECTOR, "alipay_public_key_b64_spki");
        let keys = AlipayKeys::from_public_key(&b64).expect("bare SPKI");
        assert_eq!(format!("{keys:?}"), r#"PublicKey("RSA-2048")"#);
        let certs = AlipayKeys::from_certificates(&vector_field(VECTOR, "alipay_public_cert_pem"))
            .expect("vector chain");
        let text = format!("{certs:?}");
        assert!(
            text.contains("05d88faef76d723019c5c14d3ecd014a") && text.len() < 200,
            "{text}"
        );
    }
}
