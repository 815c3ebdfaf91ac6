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

/// An RSA public key parsed once at start-up, ready for verification.
///
/// Verification runs on `ring` (about three times faster than `rsa` 0.10 here:
/// 41 µs against 136 µs per 2048-bit signature), which accepts 2048- to 8192-bit
/// moduli; a smaller key (old Alipay `RSA` apps used 1024 bits) falls back to the
/// `rsa` crate. Both are constant-time for what verification touches (public data).
#[derive(Clone)]
pub struct RsaPublicKey {
    key: rsa::PublicKey,
    /// PKCS#1 `RSAPublicKey` DER for `ring`, when the modulus is 2048–8192 bits.
    ring_der: Option<Box<[u8]>>,
}

impl RsaPublicKey {
    /// The modulus length in bits.
    pub fn bits(&self) -> usize {
        use rsa::traits::PublicKeyParts as _;
        self.key.size() * 8
    }

    /// The underlying `rsa` key (for encoding it, e.g. in test tooling).
    pub fn as_rsa(&self) -> &rsa::PublicKey {
        &self.key
    }

    /// SHA-256 of the key's SubjectPublicKeyInfo DER, hex: what
    /// `openssl pkey -pubin -outform DER | sha256sum` prints.
    pub fn fingerprint(&self) -> String {
        use rsa::pkcs8::EncodePublicKey as _;
        use sha2::Digest as _;
        self.key
            .to_public_key_der()
            .map(|der| hex::encode(sha2::Sha256::digest(der.as_bytes())))
            .unwrap_or_default()
    }
}

impl From<rsa::PublicKey> for RsaPublicKey {
    fn from(key: rsa::PublicKey) -> Self {
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        use rsa::traits::PublicKeyParts as _;
        let bits = key.size() * 8;
        let ring_der = (2048..=8192)
            .contains(&bits)
            .then(|| key.to_pkcs1_der().ok())
            .flatten()
            .map(|der| der.as_bytes().into());
        Self { key, ring_der }
    }
}

impl PartialEq for RsaPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for RsaPublicKey {}

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RSA-{}", self.bits())
    }
}

/// Verifies a standard-Base64 PKCS#1 v1.5 signature over `message`.
///
/// A signature that is not Base64 (e.g. WeChat's `WECHATPAY/SIGNTEST/` probe) is a
/// [`VerifyError::SignatureEncoding`], never a panic.
pub fn verify_rsa(
    key: &RsaPublicKey,
    hash: RsaHash,
    message: &[u8],
    signature_b64: &str,
) -> Result<(), VerifyError> {
    let raw = STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| VerifyError::SignatureEncoding)?;
    if let Some(der) = &key.ring_der {
        let algorithm: &dyn ring::signature::VerificationAlgorithm = match hash {
            RsaHash::Sha1 => &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            RsaHash::Sha256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        };
        return ring::signature::UnparsedPublicKey::new(algorithm, &der[..])
            .verify(message, &raw)
            .map_err(|_| VerifyError::BadSignature);
    }
    let signature = Signature::try_from(raw.as_slice()).map_err(|_| VerifyError::BadSignature)?;
    let result = match hash {
        RsaHash::Sha1 => {
            VerifyingKey::<sha1::Sha1>::new(key.key.clone()).verify(message, &signature)
        }
        RsaHash::Sha256 => {
            VerifyingKey::<sha2::Sha256>::new(key.key.clone()).verify(message, &signature)
        }
    };
    result.map_err(|_| VerifyError::BadSignature)
}

/// Parses an RSA public key given as PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`) or as the
/// bare Base64 SubjectPublicKeyInfo Alipay hands out (`MIIBIjAN…`, no armour).
pub fn parse_public_key(text: &str) -> Result<RsaPublicKey, KeyError> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        let block = pem::parse(text).map_err(|e| KeyError::PublicKey(e.to_string()))?;
        return match block.tag() {
            "PUBLIC KEY" => PublicKey::from_public_key_der(block.contents())
                .map(RsaPublicKey::from)
                .map_err(|e| KeyError::PublicKey(e.to_string())),
            "RSA PUBLIC KEY" => PublicKey::from_pkcs1_der(block.contents())
                .map(RsaPublicKey::from)
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
        .map(RsaPublicKey::from)
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

/// An RSA private key for signing requests to the providers' query APIs
/// (SHA256withRSA, PKCS#1 v1.5).
///
/// Signing runs on `ring`, not on the `rsa` crate: `rsa` carries RUSTSEC-2023-0071
/// (Marvin: a timing side channel on private-key operations), `ring`'s private-key
/// operation is constant-time and blinded. `ring` accepts 2048- to 4096-bit keys, the
/// sizes Alipay and WeChat Pay issue. The key never appears in `Debug` output.
pub struct RsaSigningKey {
    pair: ring::signature::RsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl RsaSigningKey {
    /// Parses a PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) PEM key, or bare
    /// Base64 PKCS#8 / PKCS#1 DER (the form Alipay's key tool exports).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let err = |e: &dyn std::fmt::Display| KeyError::PrivateKey(e.to_string());
        let text = text.trim();
        let der = if text.starts_with("-----BEGIN") {
            let block = pem::parse(text).map_err(|e| err(&e))?;
            match block.tag() {
                "PRIVATE KEY" | "RSA PRIVATE KEY" => block.into_contents(),
                other => {
                    return Err(KeyError::PrivateKey(format!(
                        "unexpected PEM label {other:?}"
                    )));
                }
            }
        } else {
            let compact: String = text.split_whitespace().collect();
            STANDARD.decode(compact).map_err(|e| err(&e))?
        };
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der)
            .or_else(|_| ring::signature::RsaKeyPair::from_der(&der))
            .map_err(|e| err(&e))?;
        Ok(Self {
            pair,
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// The public half (to compare or fingerprint; it is not secret).
    pub fn public_key(&self) -> Result<RsaPublicKey, KeyError> {
        use rsa::pkcs1::DecodeRsaPublicKey as _;
        rsa::PublicKey::from_pkcs1_der(self.pair.public().as_ref())
            .map(RsaPublicKey::from)
            .map_err(|e| KeyError::PrivateKey(e.to_string()))
    }

    /// A PKCS#8 DER key (test tooling that holds `rsa` keys).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = ring::signature::RsaKeyPair::from_pkcs8(der)
            .map_err(|e| KeyError::PrivateKey(e.to_string()))?;
        Ok(Self {
            pair,
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// The Base64 SHA256withRSA signature of `message`.
    pub fn sign_sha256_b64(&self, message: &[u8]) -> Result<String, KeyError> {
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &self.rng,
                message,
                &mut signature,
            )
            .map_err(|_| KeyError::PrivateKey("signing failed".into()))?;
        Ok(STANDARD.encode(signature))
    }
}

impl std::fmt::Debug for RsaSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSA-{} private key",
            self.pair.public().modulus_len() * 8
        )
    }
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
pub fn public_key_of_certificate(cert: &Certificate) -> Result<RsaPublicKey, KeyError> {
    let spki = cert.tbs_certificate().subject_public_key_info();
    let der = spki
        .to_der()
        .map_err(|e| KeyError::Certificate(e.to_string()))?;
    PublicKey::from_public_key_der(&der)
        .map(RsaPublicKey::from)
        .map_err(|e| KeyError::Certificate(format!("not an RSA key: {e}")))
}

/// What a PKCS#1 v1.5 signature holds once opened with a public key. For
/// diagnostics only (verification never needs it): it tells "signed with another
/// key" apart from "signed with this key over other content".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// No PKCS#1 v1.5 signature block comes out: the signature was made with
    /// another key.
    OtherKey,
    /// Made with this key, over `digest` computed with `hash`.
    Digest { hash: RsaHash, digest: Vec<u8> },
    /// Made with this key, over a digest algorithm payhook does not accept.
    OtherDigest,
}

/// DER prefix of a PKCS#1 v1.5 `DigestInfo` for SHA-256 (RFC 8017 §9.2, note 1).
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
/// DER prefix of a PKCS#1 v1.5 `DigestInfo` for SHA-1.
const SHA1_DIGEST_INFO: &[u8] = &[
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];

/// Opens a standard-Base64 signature with `key` (the RSA public operation, RFC 8017
/// RSAVP1) and reads the PKCS#1 v1.5 block: which key and which digest made it.
pub fn recover_rsa(key: &RsaPublicKey, signature_b64: &str) -> Result<Recovered, VerifyError> {
    use rsa::traits::PublicKeyParts as _;
    let raw = STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| VerifyError::SignatureEncoding)?;
    let size = key.key.size();
    if raw.len() != size {
        return Ok(Recovered::OtherKey);
    }
    let Ok(s) = rsa::BoxedUint::from_be_slice(&raw, key.key.n_bits_precision()) else {
        return Ok(Recovered::OtherKey);
    };
    if s >= *key.key.n().as_ref() {
        return Ok(Recovered::OtherKey);
    }
    let Ok(m) = rsa::hazmat::rsa_encrypt(&key.key, &s) else {
        return Ok(Recovered::OtherKey);
    };
    let bytes = m.to_be_bytes();
    let mut em = vec![0u8; size];
    let significant = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let bytes = &bytes[significant..];
    if bytes.len() > size {
        return Ok(Recovered::OtherKey);
    }
    em[size - bytes.len()..].copy_from_slice(bytes);
    // EM = 00 01 FF..FF 00 DigestInfo, with at least eight FF bytes.
    if em.len() < 11 || em[0] != 0 || em[1] != 1 {
        return Ok(Recovered::OtherKey);
    }
    let Some(separator) = em[2..].iter().position(|&b| b != 0xff).map(|at| at + 2) else {
        return Ok(Recovered::OtherKey);
    };
    if separator < 10 || em[separator] != 0 {
        return Ok(Recovered::OtherKey);
    }
    let info = &em[separator + 1..];
    for (hash, prefix, len) in [
        (RsaHash::Sha256, SHA256_DIGEST_INFO, 32),
        (RsaHash::Sha1, SHA1_DIGEST_INFO, 20),
    ] {
        if info.len() == prefix.len() + len && info.starts_with(prefix) {
            return Ok(Recovered::Digest {
                hash,
                digest: info[prefix.len()..].to_vec(),
            });
        }
    }
    Ok(Recovered::OtherDigest)
}

/// The digest of `message` under `hash`.
pub fn digest(hash: RsaHash, message: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    match hash {
        RsaHash::Sha1 => sha1::Sha1::digest(message).to_vec(),
        RsaHash::Sha256 => sha2::Sha256::digest(message).to_vec(),
    }
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

    /// Both verification paths — `ring` for 2048-bit keys, `rsa` for the 1024-bit keys
    /// of old `sign_type=RSA` apps — accept a good signature under either digest and
    /// refuse a tampered message, a signature from another key and the wrong digest.
    #[test]
    fn ring_and_fallback_paths_agree() {
        use rsa::pkcs1v15::SigningKey;
        use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
        let mut rng = rand::rng();
        for bits in [1024, 2048] {
            let private = rsa::PrivateKey::new(&mut rng, bits).expect("key generates");
            let other = rsa::PrivateKey::new(&mut rng, bits).expect("key generates");
            let public = RsaPublicKey::from(private.to_public_key());
            assert_eq!(public.bits(), bits);
            assert_eq!(public.ring_der.is_some(), bits >= 2048, "{bits}-bit path");
            let b64 = |sig: Vec<u8>| STANDARD.encode(sig);
            let sha256 = |key: &rsa::PrivateKey, rng: &mut _| {
                b64(SigningKey::<sha2::Sha256>::new(key.clone())
                    .sign_with_rng(rng, b"message")
                    .to_vec())
            };
            let sha1 = b64(SigningKey::<sha1::Sha1>::new(private.clone())
                .sign_with_rng(&mut rng, b"message")
                .to_vec());
            let good = sha256(&private, &mut rng);
            let foreign = sha256(&other, &mut rng);
            assert_eq!(
                verify_rsa(&public, RsaHash::Sha256, b"message", &good),
                Ok(())
            );
            assert_eq!(
                verify_rsa(&public, RsaHash::Sha1, b"message", &sha1),
                Ok(())
            );
            for (hash, message, sig) in [
                (RsaHash::Sha256, &b"messagf"[..], &good),
                (RsaHash::Sha256, &b"message"[..], &foreign),
                (RsaHash::Sha1, &b"message"[..], &good),
                (RsaHash::Sha256, &b"message"[..], &sha1),
            ] {
                assert_eq!(
                    verify_rsa(&public, hash, message, sig),
                    Err(VerifyError::BadSignature),
                    "{bits}-bit {hash:?}"
                );
            }
        }
    }

    /// What `ring` signs, the `rsa` verifier accepts (the providers verify with Java's
    /// SHA256withRSA, i.e. plain PKCS#1 v1.5): PKCS#8 PEM, PKCS#1 PEM and bare Base64.
    #[test]
    fn ring_signatures_verify_and_the_key_stays_out_of_debug() {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::pkcs8::EncodePrivateKey as _;
        let private = rsa::PrivateKey::new(&mut rand::rng(), 2048).expect("key generates");
        let public = RsaPublicKey::from(private.to_public_key());
        let pkcs8 = private.to_pkcs8_pem(Default::default()).expect("pkcs8");
        let pkcs1 = private.to_pkcs1_pem(Default::default()).expect("pkcs1");
        let bare: String = pkcs8.lines().filter(|l| !l.starts_with("-----")).collect();
        for text in [pkcs8.as_str(), pkcs1.as_str(), bare.as_str()] {
            let key = RsaSigningKey::parse(text).expect("signing key parses");
            assert_eq!(format!("{key:?}"), "RSA-2048 private key");
            let sig = key.sign_sha256_b64(b"GET\n/v3/x\n").expect("signs");
            assert_eq!(
                verify_rsa(&public, RsaHash::Sha256, b"GET\n/v3/x\n", &sig),
                Ok(())
            );
        }
        assert!(
            RsaSigningKey::parse("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----")
                .is_err()
        );
        assert!(RsaSigningKey::parse("not base64 at all!").is_err());
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
