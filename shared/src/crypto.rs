//! The cryptographic steps the providers share: RSA PKCS#1 v1.5 verification over
//! SHA-1/SHA-256, key and certificate parsing, MD5 hex, constant-time comparison.
//!
//! Keys are parsed once at start-up (configuration) and reused for every request.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest as _, Md5};
use rsa::PublicKey;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::Verifier as _;
use spki::DecodePublicKey as _;
use subtle::ConstantTimeEq as _;
use x509_cert::Certificate;
use x509_cert::der::{Decode as _, Encode as _};

use crate::error::{KeyError, VerifyError};

/// The digest of an RSA PKCS#1 v1.5 signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaHash {
    /// SHA1withRSA: Alipay's legacy `sign_type=RSA`.
    Sha1,
    /// SHA256withRSA: Alipay `RSA2`, WeChat Pay APIv3.
    Sha256,
}

/// Verifies a standard-Base64 PKCS#1 v1.5 signature over `message`.
///
/// A signature that is not Base64 (e.g. WeChat's `WECHATPAY/SIGNTEST/` probe) is a
/// [`VerifyError::SignatureEncoding`], never a panic.
pub fn verify_rsa(
    key: &PublicKey,
    hash: RsaHash,
    message: &[u8],
    signature_b64: &str,
) -> Result<(), VerifyError> {
    let raw = STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| VerifyError::SignatureEncoding)?;
    let signature = Signature::try_from(raw.as_slice()).map_err(|_| VerifyError::BadSignature)?;
    let result = match hash {
        RsaHash::Sha1 => VerifyingKey::<sha1::Sha1>::new(key.clone()).verify(message, &signature),
        RsaHash::Sha256 => {
            VerifyingKey::<sha2::Sha256>::new(key.clone()).verify(message, &signature)
        }
    };
    result.map_err(|_| VerifyError::BadSignature)
}

/// Parses an RSA public key given as PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`) or as the
/// bare Base64 SubjectPublicKeyInfo Alipay hands out (`MIIBIjAN…`, no armour).
pub fn parse_public_key(text: &str) -> Result<PublicKey, KeyError> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        let block = pem::parse(text).map_err(|e| KeyError::PublicKey(e.to_string()))?;
        return match block.tag() {
            "PUBLIC KEY" => PublicKey::from_public_key_der(block.contents())
                .map_err(|e| KeyError::PublicKey(e.to_string())),
            "RSA PUBLIC KEY" => PublicKey::from_pkcs1_der(block.contents())
                .map_err(|e| KeyError::PublicKey(e.to_string())),
            "CERTIFICATE" => public_key_of_certificate(&parse_certificate_der(block.contents())?),
            other => Err(KeyError::PublicKey(format!(
                "unexpected PEM label {other:?}"
            ))),
        };
    }
    let compact: String = text.split_whitespace().collect();
    let der = STANDARD
        .decode(compact)
        .map_err(|e| KeyError::PublicKey(format!("base64: {e}")))?;
    PublicKey::from_public_key_der(&der)
        .or_else(|_| PublicKey::from_pkcs1_der(&der))
        .map_err(|e| KeyError::PublicKey(e.to_string()))
}

/// Parses a PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) PEM private key, or
/// bare Base64 PKCS#8 DER (the form Alipay's key tool exports).
pub fn parse_private_key(text: &str) -> Result<rsa::PrivateKey, KeyError> {
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    let text = text.trim();
    let err = |e: &dyn std::fmt::Display| KeyError::PrivateKey(e.to_string());
    if text.starts_with("-----BEGIN") {
        let block = pem::parse(text).map_err(|e| err(&e))?;
        return match block.tag() {
            "PRIVATE KEY" => rsa::PrivateKey::from_pkcs8_der(block.contents()).map_err(|e| err(&e)),
            "RSA PRIVATE KEY" => {
                rsa::PrivateKey::from_pkcs1_der(block.contents()).map_err(|e| err(&e))
            }
            other => Err(KeyError::PrivateKey(format!(
                "unexpected PEM label {other:?}"
            ))),
        };
    }
    let compact: String = text.split_whitespace().collect();
    let der = STANDARD.decode(compact).map_err(|e| err(&e))?;
    rsa::PrivateKey::from_pkcs8_der(&der)
        .or_else(|_| rsa::PrivateKey::from_pkcs1_der(&der))
        .map_err(|e| err(&e))
}

/// Parses every `CERTIFICATE` block of a PEM bundle. Tolerates the 76-column lines
/// and blank lines found in the providers' files.
pub fn parse_certificates(pem_text: &str) -> Result<Vec<Certificate>, KeyError> {
    let blocks = pem::parse_many(pem_text).map_err(|e| KeyError::Certificate(e.to_string()))?;
    let certs: Vec<Certificate> = blocks
        .iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| parse_certificate_der(b.contents()))
        .collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err(KeyError::Certificate("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// Parses one DER certificate.
pub fn parse_certificate_der(der: &[u8]) -> Result<Certificate, KeyError> {
    Certificate::from_der(der).map_err(|e| KeyError::Certificate(e.to_string()))
}

/// The RSA public key of a certificate (error if the certificate is not RSA).
pub fn public_key_of_certificate(cert: &Certificate) -> Result<PublicKey, KeyError> {
    let spki = cert.tbs_certificate().subject_public_key_info();
    let der = spki
        .to_der()
        .map_err(|e| KeyError::Certificate(e.to_string()))?;
    PublicKey::from_public_key_der(&der)
        .map_err(|e| KeyError::Certificate(format!("not an RSA key: {e}")))
}

/// Lower-case hex MD5 (Alipay certificate SN, WeChat V2 refund key derivation).
pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// Compares two byte strings in constant time (for equal lengths).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_signature_is_an_encoding_error_not_a_panic() {
        let key = rsa::PrivateKey::from_pkcs8_der(&[]).err();
        assert!(key.is_some());
        let spki = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqObrdC7hrgAVM98tK0nv3hSQRGGKT4lBsQjHiGjeYZjOPIPHR5knm2jnnz/YGIXIofVHkA/tAlBAd5DrY7YpvI4tP5EONLtZKC2ghBMx7McI2wRD0xiqzxOQr1FuhZGJ8/AUokBzJrzY+aGX2xcOrxFYRlFilvVLTXg4LWjR1tdPkO6+i7wQZAIVMClPkwVRZEbaERRHlKqTzv2gGv5rDU8gRoe1LeaN+6BlbTqHWkQcNCUNrA8C6l17XAXGKDsm/9TFWwO8EPHHHCaQdjtV5/FdcWIt+L8SR1ss7EXTjYDFtxcKVv9rEoY1lX8T4mX+GbXfZHraG5NCF1+XioL5JwIDAQAB";
        let pk = parse_public_key(spki).expect("vector key parses");
        assert_eq!(
            verify_rsa(&pk, RsaHash::Sha256, b"x", "WECHATPAY/SIGNTEST/abc"),
            Err(VerifyError::SignatureEncoding)
        );
        assert_eq!(
            verify_rsa(&pk, RsaHash::Sha256, b"x", "AAAA"),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"ABC", b"ABC"));
        assert!(!ct_eq(b"ABC", b"ABD"));
        assert!(!ct_eq(b"ABC", b"AB"));
    }

    #[test]
    fn md5_hex_is_lowercase() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
