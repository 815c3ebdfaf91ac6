//! The encrypted `resource` of a notification (and of `/v3/certificates` entries):
//! AEAD_AES_256_GCM keyed by the merchant's APIv3 key.
//!
//! Production keys are 32 bytes (AES-256). The wechatpay-go SDK's test vector uses a
//! 16-byte key, which Go's `aes.NewCipher` silently turns into AES-128; the cipher is
//! chosen by key length so that vector stays usable. Key length is validated when the
//! configuration is loaded ([`super::validate_api_v3_key`]), not here.

use aes_gcm::aead::{Aead, KeyInit, Nonce, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::VerifyError;

/// The only `resource.algorithm` APIv3 uses.
pub const RESOURCE_ALGORITHM: &str = "AEAD_AES_256_GCM";

/// Length of the GCM tag appended to the ciphertext.
const TAG_LEN: usize = 16;

/// Decrypts `ciphertext_b64` = Base64(ciphertext ‖ 16-byte tag) with AES-GCM:
/// `key` 32 bytes (AES-256) or 16 bytes (AES-128), `nonce` 12 ASCII bytes, AAD =
/// `associated_data` (may be empty).
///
/// Every failure — bad Base64, truncated input, wrong key or AAD, tampering, bad
/// key or nonce length — is [`VerifyError::Decrypt`]: GCM gives no finer reason, and
/// a caller must not act on a partially authenticated plaintext anyway.
pub fn decrypt_resource(
    key: &[u8],
    nonce: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> Result<Vec<u8>, VerifyError> {
    let sealed = STANDARD
        .decode(ciphertext_b64.trim())
        .map_err(|_| VerifyError::Decrypt)?;
    if sealed.len() < TAG_LEN {
        return Err(VerifyError::Decrypt);
    }
    let payload = Payload {
        msg: &sealed,
        aad: associated_data.as_bytes(),
    };
    match key.len() {
        32 => open::<Aes256Gcm>(key, nonce.as_bytes(), payload),
        16 => open::<Aes128Gcm>(key, nonce.as_bytes(), payload),
        _ => Err(VerifyError::Decrypt),
    }
}

/// The inverse of [`decrypt_resource`], for the test signer and the provider
/// simulator: returns Base64(ciphertext ‖ tag). Production never encrypts.
///
/// # Panics
///
/// If `key` is not 16 or 32 bytes or `nonce` is not 12 bytes — a bug in the
/// calling test code, not a runtime condition.
pub fn encrypt_resource(
    key: &[u8],
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> String {
    let payload = Payload {
        msg: plaintext,
        aad: associated_data.as_bytes(),
    };
    let sealed = match key.len() {
        32 => seal::<Aes256Gcm>(key, nonce.as_bytes(), payload),
        16 => seal::<Aes128Gcm>(key, nonce.as_bytes(), payload),
        n => panic!("AES-GCM key must be 16 or 32 bytes, got {n}"),
    };
    STANDARD.encode(sealed)
}

fn open<C: Aead + KeyInit>(
    key: &[u8],
    nonce: &[u8],
    payload: Payload<'_, '_>,
) -> Result<Vec<u8>, VerifyError> {
    let cipher = C::new_from_slice(key).map_err(|_| VerifyError::Decrypt)?;
    let nonce = <&Nonce<C>>::try_from(nonce).map_err(|_| VerifyError::Decrypt)?;
    cipher
        .decrypt(nonce, payload)
        .map_err(|_| VerifyError::Decrypt)
}

fn seal<C: Aead + KeyInit>(key: &[u8], nonce: &[u8], payload: Payload<'_, '_>) -> Vec<u8> {
    let cipher = C::new_from_slice(key).expect("key length checked by the caller");
    let nonce = <&Nonce<C>>::try_from(nonce).expect("AES-GCM nonce must be 12 bytes");
    cipher
        .encrypt(nonce, payload)
        .expect("AES-GCM encrypts any resource-sized input")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat_v3::test_support::vector;

    const AES256: &str = include_str!("vectors/wechat_v3_aes256gcm.json");

    fn aes256_vector() -> serde_json::Value {
        serde_json::from_str(AES256).expect("vector is JSON")
    }

    fn field<'a>(v: &'a serde_json::Value, name: &str) -> &'a str {
        v[name].as_str().expect("string field in vector")
    }

    #[test]
    fn sdk_vector_resource_decrypts_with_its_16_byte_key() {
        let v = vector();
        let plaintext = decrypt_resource(
            v.apiv3_key.as_bytes(),
            &v.resource_nonce,
            &v.resource_associated_data,
            &v.resource_ciphertext,
        );
        assert_eq!(plaintext, Ok(v.expected_plaintext.clone().into_bytes()));
    }

    #[test]
    fn aes_256_gcm_vector_decrypts() {
        let v = aes256_vector();
        let plaintext = decrypt_resource(
            field(&v, "key").as_bytes(),
            field(&v, "nonce"),
            field(&v, "associated_data"),
            field(&v, "ciphertext_b64"),
        );
        assert_eq!(plaintext, Ok(field(&v, "plaintext").as_bytes().to_vec()));
    }

    #[test]
    fn encrypt_is_the_inverse_and_matches_the_vector() {
        let v = aes256_vector();
        let key = field(&v, "key").as_bytes();
        let sealed = encrypt_resource(
            key,
            field(&v, "nonce"),
            field(&v, "associated_data"),
            field(&v, "plaintext").as_bytes(),
        );
        assert_eq!(sealed, field(&v, "ciphertext_b64"));
        let aad_empty = encrypt_resource(key, "0123456789ab", "", b"{}");
        assert_eq!(
            decrypt_resource(key, "0123456789ab", "", &aad_empty),
            Ok(b"{}".to_vec())
        );
    }

    #[test]
    fn truncated_ciphertext_fails_to_decrypt() {
        let v = aes256_vector();
        let key = field(&v, "key").as_bytes();
        let full = STANDARD
            .decode(field(&v, "ciphertext_b64"))
            .expect("base64");
        for keep in [full.len() - 1, TAG_LEN, TAG_LEN - 1, 0] {
            let cut = STANDARD.encode(&full[..keep]);
            let result =
                decrypt_resource(key, field(&v, "nonce"), field(&v, "associated_data"), &cut);
            assert_eq!(result, Err(VerifyError::Decrypt), "kept {keep} bytes");
        }
    }

    #[test]
    fn wrong_key_wrong_aad_or_wrong_nonce_fails_to_decrypt() {
        let v = aes256_vector();
        let (key, nonce, aad) = (
            field(&v, "key"),
            field(&v, "nonce"),
            field(&v, "associated_data"),
        );
        let ct = field(&v, "ciphertext_b64");
        let other_key = "b7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
        assert_eq!(
            decrypt_resource(other_key.as_bytes(), nonce, aad, ct),
            Err(VerifyError::Decrypt)
        );
        assert_eq!(
            decrypt_resource(key.as_bytes(), nonce, "transaction", ct),
            Err(VerifyError::Decrypt)
        );
        assert_eq!(
            decrypt_resource(key.as_bytes(), "uluk4a9R25RX", aad, ct),
            Err(VerifyError::Decrypt)
        );
    }

    #[test]
    fn bad_lengths_and_bad_base64_fail_to_decrypt() {
        let v = aes256_vector();
        let (key, nonce, aad) = (
            field(&v, "key"),
            field(&v, "nonce"),
            field(&v, "associated_data"),
        );
        let ct = field(&v, "ciphertext_b64");
        assert_eq!(
            decrypt_resource(&key.as_bytes()[..24], nonce, aad, ct),
            Err(VerifyError::Decrypt)
        );
        assert_eq!(
            decrypt_resource(key.as_bytes(), "short", aad, ct),
            Err(VerifyError::Decrypt)
        );
        assert_eq!(
            decrypt_resource(key.as_bytes(), nonce, aad, "not base64!"),
            Err(VerifyError::Decrypt)
        );
    }
}
