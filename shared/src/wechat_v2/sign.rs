//! The APIv2 signature: MD5 or HMAC-SHA256 over the sorted, non-empty parameters
//! followed by `&key=<APIv2 key>`, in upper-case hex.

use hmac::{KeyInit as _, Mac as _};
use md5::{Digest as _, Md5};
use secrecy::zeroize::Zeroizing;
use sha2::Sha256;

use crate::crypto::ct_eq;
use crate::error::VerifyError;

/// The name of the signature field, never part of the signed content.
const SIGN_FIELD: &str = "sign";

/// The signature algorithm named by a notification's `sign_type` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignType {
    /// `MD5`, also what an absent `sign_type` means.
    Md5,
    /// `HMAC-SHA256`, keyed with the APIv2 key.
    HmacSha256,
}

impl SignType {
    /// The value WeChat puts in `sign_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::HmacSha256 => "HMAC-SHA256",
        }
    }

    /// The algorithm a notification asks for: its `sign_type` field, MD5 when absent
    /// (or empty, which the sign rule treats as absent).
    ///
    /// # Errors
    /// [`VerifyError::UnsupportedAlgorithm`] for any other value. The value is matched
    /// exactly, as WeChat's own SDKs do.
    pub fn from_field(sign_type: Option<&str>) -> Result<Self, VerifyError> {
        match sign_type {
            None | Some("") | Some("MD5") => Ok(Self::Md5),
            Some("HMAC-SHA256") => Ok(Self::HmacSha256),
            // The value is attacker-controlled and ends up in logs: keep it short.
            Some(other) => Err(VerifyError::UnsupportedAlgorithm(
                other.chars().take(32).collect(),
            )),
        }
    }
}

/// Computes the APIv2 signature of `params` (upper-case hex).
///
/// The content is every parameter with a non-empty value except `sign`, sorted by key
/// (byte order), joined as `k=v&…`, followed by `&key=<api_key>`. `sign_type`, when
/// present, is part of the content like any other field. MD5 hashes that content;
/// HMAC-SHA256 authenticates the same content (key suffix included) with the API key.
pub fn sign(params: &[(String, String)], api_key: &str, sign_type: SignType) -> String {
    let mut included: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, v)| k != SIGN_FIELD && !v.is_empty())
        .collect();
    included.sort_unstable_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));

    // The content ends with the key: wipe it when done. Sized up front so that no
    // reallocation leaves an unwiped copy behind.
    let len = included
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum::<usize>();
    let mut content = Zeroizing::new(String::with_capacity(len + "key=".len() + api_key.len()));
    for (k, v) in included {
        content.push_str(k);
        content.push('=');
        content.push_str(v);
        content.push('&');
    }
    content.push_str("key=");
    content.push_str(api_key);

    match sign_type {
        SignType::Md5 => hex::encode_upper(Md5::digest(content.as_bytes())),
        SignType::HmacSha256 => {
            // HMAC accepts keys of any length (long ones are hashed first); this
            // constructor cannot fail, the `Result` only comes from the generic trait.
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(api_key.as_bytes())
                .expect("HMAC accepts keys of any length");
            mac.update(content.as_bytes());
            hex::encode_upper(mac.finalize().into_bytes())
        }
    }
}

/// Checks `received` (the notification's `sign`) against the signature of `params`,
/// in constant time. Hex case is not significant.
pub(crate) fn verify_sign(
    params: &[(String, String)],
    api_key: &str,
    sign_type: SignType,
    received: &str,
) -> Result<(), VerifyError> {
    let expected = sign(params, api_key, sign_type);
    if ct_eq(
        expected.as_bytes(),
        received.to_ascii_uppercase().as_bytes(),
    ) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        source: String,
        params: std::collections::BTreeMap<String, String>,
        key: String,
        md5: String,
        hmac_sha256: String,
    }

    fn vector() -> Vector {
        let text = include_str!("vectors/wechat_v2_sign.json");
        serde_json::from_str(text).expect("vector parses")
    }

    fn params(v: &Vector) -> Vec<(String, String)> {
        v.params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn official_vector_signs_with_md5() {
        let v = vector();
        assert!(!v.source.is_empty());
        assert_eq!(sign(&params(&v), &v.key, SignType::Md5), v.md5);
    }

    #[test]
    fn official_vector_signs_with_hmac_sha256() {
        let v = vector();
        assert_eq!(
            sign(&params(&v), &v.key, SignType::HmacSha256),
            v.hmac_sha256
        );
    }

    #[test]
    fn sign_field_and_empty_values_are_not_signed() {
        let v = vector();
        let mut extended = params(&v);
        extended.push(("sign".into(), "ANYTHING".into()));
        extended.push(("attach".into(), String::new()));
        assert_eq!(sign(&extended, &v.key, SignType::Md5), v.md5);
    }

    #[test]
    fn parameter_order_does_not_matter() {
        let v = vector();
        let mut reversed = params(&v);
        reversed.reverse();
        assert_eq!(sign(&reversed, &v.key, SignType::Md5), v.md5);
    }

    #[test]
    fn lower_case_received_signature_verifies() {
        let v = vector();
        let lower = v.md5.to_ascii_lowercase();
        assert_eq!(
            verify_sign(&params(&v), &v.key, SignType::Md5, &lower),
            Ok(())
        );
    }

    #[test]
    fn sign_type_field_values() {
        assert_eq!(SignType::from_field(None), Ok(SignType::Md5));
        assert_eq!(SignType::from_field(Some("MD5")), Ok(SignType::Md5));
        assert_eq!(
            SignType::from_field(Some("HMAC-SHA256")),
            Ok(SignType::HmacSha256)
        );
        assert_eq!(
            SignType::from_field(Some("SHA1")),
            Err(VerifyError::UnsupportedAlgorithm("SHA1".into()))
        );
    }
}
