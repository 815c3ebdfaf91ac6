//! What Alipay signs: the sign-content rules and the sign types.
//!
//! - **V1** (notifications): every parameter except `sign`, `sign_type` and
//!   `alipay_cert_sn`, empty values dropped, sorted by name (byte order), `k=v` joined
//!   with `&`. A trade notification verifies only with V1 (trap 4).
//! - **V2** (requests to the gateway, application-gateway messages): the same, but
//!   `sign_type` and `alipay_cert_sn` stay in.
//!
//! The rule is applied to the parameters *as bytes in the notification's charset*,
//! so one implementation serves text (the signer, tests) and the received bytes.

use super::clip;
use crate::crypto::RsaHash;
use crate::error::VerifyError;

/// The parameters V1 leaves out: the signature, its type, and the SN naming the key.
const UNSIGNED_V1: &[&[u8]] = &[b"sign", b"sign_type", b"alipay_cert_sn"];
/// The parameters V2 leaves out: only the signature itself.
const UNSIGNED_V2: &[&[u8]] = &[b"sign"];

/// Alipay's `sign_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignType {
    /// `RSA2`: SHA256withRSA, PKCS#1 v1.5.
    Rsa2,
    /// `RSA`: SHA1withRSA, PKCS#1 v1.5 (legacy apps).
    Rsa,
}

impl SignType {
    /// The sign type a `sign_type` value names (exact, as Alipay sends it).
    pub fn from_param(value: &str) -> Result<Self, VerifyError> {
        match value {
            "RSA2" => Ok(Self::Rsa2),
            "RSA" => Ok(Self::Rsa),
            other => Err(VerifyError::UnsupportedAlgorithm(clip(other))),
        }
    }

    /// The `sign_type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rsa2 => "RSA2",
            Self::Rsa => "RSA",
        }
    }

    /// The digest of the PKCS#1 v1.5 signature.
    pub fn hash(self) -> RsaHash {
        match self {
            Self::Rsa2 => RsaHash::Sha256,
            Self::Rsa => RsaHash::Sha1,
        }
    }
}

/// The V1 sign content of notification parameters given as text.
pub fn sign_content_v1(params: &[(String, String)]) -> String {
    join_text(params, UNSIGNED_V1)
}

/// The V2 sign content (requests: `sign_type` is signed too).
pub fn sign_content_v2(params: &[(String, String)]) -> String {
    join_text(params, UNSIGNED_V2)
}

/// The V1 sign content of received parameters, as the bytes Alipay signed.
pub(crate) fn sign_content_v1_bytes<'a>(
    params: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (key, value)) in signed(params, UNSIGNED_V1).into_iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(key);
        out.push(b'=');
        out.extend_from_slice(value);
    }
    out
}

fn join_text(params: &[(String, String)], unsigned: &[&[u8]]) -> String {
    let pairs = params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let mut out = String::new();
    for (i, (key, value)) in signed(pairs, unsigned).into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// The parameters a rule signs, sorted by name in byte order (which, for UTF-8, is
/// also code-point order; Alipay's parameter names are ASCII anyway).
fn signed<'a, T: AsRef<[u8]> + ?Sized + 'a>(
    params: impl IntoIterator<Item = (&'a T, &'a T)>,
    unsigned: &[&[u8]],
) -> Vec<(&'a T, &'a T)> {
    let mut kept: Vec<_> = params
        .into_iter()
        .filter(|(key, value)| !value.as_ref().is_empty() && !unsigned.contains(&key.as_ref()))
        .collect();
    kept.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn v1_drops_the_signature_its_type_and_the_cert_sn() {
        let p = params(&[
            ("sign", "xx"),
            ("sign_type", "RSA2"),
            ("alipay_cert_sn", "abc"),
            ("a", "1"),
        ]);
        assert_eq!(sign_content_v1(&p), "a=1");
    }

    #[test]
    fn v1_drops_empty_values_and_sorts_by_name() {
        let p = params(&[
            ("b", "2"),
            ("empty", ""),
            ("a_b", "3"),
            ("a", "1"),
            ("B", "0"),
        ]);
        assert_eq!(sign_content_v1(&p), "B=0&a=1&a_b=3&b=2");
    }

    #[test]
    fn v1_keeps_values_verbatim() {
        let p = params(&[("passback_params", "a%3Db+c"), ("subject", "语雀 & co")]);
        assert_eq!(
            sign_content_v1(&p),
            "passback_params=a%3Db+c&subject=语雀 & co"
        );
    }

    #[test]
    fn v2_keeps_the_sign_type() {
        let p = params(&[
            ("sign", "xx"),
            ("sign_type", "RSA2"),
            ("app_id", "1"),
            ("x", ""),
        ]);
        assert_eq!(sign_content_v2(&p), "app_id=1&sign_type=RSA2");
    }

    #[test]
    fn text_and_byte_rules_agree() {
        let p = params(&[("z", "语"), ("sign", "s"), ("a", ""), ("m", "1")]);
        let bytes = sign_content_v1_bytes(p.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
        assert_eq!(bytes, sign_content_v1(&p).into_bytes());
    }

    #[test]
    fn sign_types_map_to_digests() {
        assert_eq!(
            SignType::from_param("RSA2").map(SignType::hash),
            Ok(RsaHash::Sha256)
        );
        assert_eq!(
            SignType::from_param("RSA").map(SignType::hash),
            Ok(RsaHash::Sha1)
        );
        assert_eq!(
            SignType::from_param("rsa2"),
            Err(VerifyError::UnsupportedAlgorithm("rsa2".into()))
        );
        assert_eq!(
            SignType::from_param("SM2"),
            Err(VerifyError::UnsupportedAlgorithm("SM2".into()))
        );
    }
}
