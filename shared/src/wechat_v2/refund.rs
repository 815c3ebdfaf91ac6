//! Refund notifications: the `req_info` envelope (AES-256-ECB, PKCS#7) and its
//! normalization.
//!
//! A refund notification carries no signature. Its only authentication is that
//! `req_info` decrypts, with valid padding, into a well-formed `<root>` document under
//! a key derived from our APIv2 key. ECB has no integrity of its own: someone holding
//! several genuine `req_info` values of the same merchant could splice their 16-byte
//! blocks. That is WeChat's design, not ours to fix; refund state should therefore be
//! confirmed by reconciliation before money moves on it.

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ecb::cipher::block_padding::Pkcs7;
use ecb::cipher::{BlockModeDecrypt as _, BlockModeEncrypt as _, KeyInit as _};
use secrecy::zeroize::Zeroizing;

use super::fields::{DEFAULT_CURRENCY, Fields, Normalization, parse_fen};
use crate::crypto::md5_hex;
use crate::error::VerifyError;
use crate::event::{Kind, Normalized, Status};

/// The `event_type` recorded for refund notifications (APIv2 has none of its own).
pub const REFUND_EVENT_TYPE: &str = "refund.notify";

/// Decrypts a refund notification's `req_info` with the merchant's APIv2 key.
///
/// The AES-256 key is the lower-case hex MD5 of the API key, used as 32 ASCII bytes.
///
/// # Errors
/// [`VerifyError::Decrypt`] when the text is not standard Base64, not a whole number
/// of blocks, or its padding is invalid (almost always: the wrong key).
pub fn decrypt_req_info(req_info_b64: &str, api_key: &str) -> Result<Vec<u8>, VerifyError> {
    let ciphertext = STANDARD
        .decode(req_info_b64)
        .map_err(|_| VerifyError::Decrypt)?;
    aes256_ecb_decrypt(&derive_key(api_key), &ciphertext)
}

/// The inverse of [`decrypt_req_info`], for the test signer and the simulator.
pub fn encrypt_req_info(plaintext: &[u8], api_key: &str) -> String {
    STANDARD.encode(aes256_ecb_encrypt(&derive_key(api_key), plaintext))
}

/// AES-256-ECB decryption with PKCS#7 unpadding.
///
/// # Errors
/// [`VerifyError::Decrypt`] for an empty or partial-block input or invalid padding.
pub fn aes256_ecb_decrypt(key: &[u8; 32], ciphertext: &[u8]) -> Result<Vec<u8>, VerifyError> {
    ecb::Decryptor::<Aes256>::new(key.into())
        .decrypt_padded_vec::<Pkcs7>(ciphertext)
        .map_err(|_| VerifyError::Decrypt)
}

/// AES-256-ECB encryption with PKCS#7 padding.
pub fn aes256_ecb_encrypt(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    ecb::Encryptor::<Aes256>::new(key.into()).encrypt_padded_vec::<Pkcs7>(plaintext)
}

/// The `req_info` key: `md5_hex(api_key)`, whose 32 ASCII characters are the 32 key bytes.
fn derive_key(api_key: &str) -> Zeroizing<[u8; 32]> {
    let hex = Zeroizing::new(md5_hex(api_key.as_bytes()));
    let mut key = Zeroizing::new([0u8; 32]);
    // MD5 is 16 bytes, so its hex is always exactly 32 ASCII characters.
    key.copy_from_slice(hex.as_bytes());
    key
}

/// Normalizes a refund notification from its decrypted `<root>` fields (`inner`) and
/// its outer, unencrypted fields (`outer`: only `appid` and `mch_id` are read; they
/// are not covered by the encryption, and the worker checks `mch_id` against the
/// configuration).
pub(crate) fn normalize(
    inner: &Fields<'_>,
    outer: &Fields<'_>,
) -> Result<Normalization, VerifyError> {
    let out_refund_no = inner.require("out_refund_no")?;
    let refund_status = inner.require("refund_status")?;
    let status = match refund_status {
        "SUCCESS" => Status::RefundSucceeded,
        "REFUNDCLOSE" => Status::RefundClosed,
        "CHANGE" => Status::RefundAbnormal,
        _ => Status::Other,
    };
    let refund_amount = parse_fen(inner, "refund_fee")?;
    if status == Status::RefundSucceeded && refund_amount.is_none() {
        // A successful refund without its amount cannot be booked.
        return Err(VerifyError::MissingField("refund_fee"));
    }
    let fields = Normalized {
        out_trade_no: inner.get("out_trade_no").map(str::to_owned),
        provider_trade_no: inner.get("transaction_id").map(str::to_owned),
        provider_status: refund_status.to_owned(),
        event_type: Some(REFUND_EVENT_TYPE.to_owned()),
        total_amount: parse_fen(inner, "total_fee")?,
        paid_amount: None,
        refund_amount,
        // WeChat's refund_fee is the amount of this refund, not a running total.
        refund_amount_cumulative: false,
        currency: DEFAULT_CURRENCY.to_owned(),
        out_refund_no: Some(out_refund_no.to_owned()),
        provider_refund_no: inner.get("refund_id").map(str::to_owned),
        app_id: outer.get("appid").map(str::to_owned),
        mch_id: outer.get("mch_id").map(str::to_owned),
        payee: None,
        payer: None,
        event_time: inner.get("success_time").map(str::to_owned),
    };
    Ok(Normalization {
        notification_id: format!("{out_refund_no}:{refund_status}"),
        kind: Kind::Refund,
        status,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        source: String,
        key: String,
        plaintext: String,
        ciphertext_b64: String,
    }

    fn vector() -> Vector {
        let text = include_str!("vectors/wechat_v2_aes256ecb.json");
        serde_json::from_str(text).expect("vector parses")
    }

    fn raw_key(v: &Vector) -> [u8; 32] {
        v.key.as_bytes().try_into().expect("vector key is 32 bytes")
    }

    #[test]
    fn aes256_ecb_vector_decrypts() {
        let v = vector();
        assert!(!v.source.is_empty());
        let ciphertext = STANDARD.decode(&v.ciphertext_b64).expect("vector base64");
        assert_eq!(
            aes256_ecb_decrypt(&raw_key(&v), &ciphertext),
            Ok(v.plaintext.into_bytes())
        );
    }

    #[test]
    fn aes256_ecb_vector_encrypts() {
        let v = vector();
        assert_eq!(
            STANDARD.encode(aes256_ecb_encrypt(&raw_key(&v), v.plaintext.as_bytes())),
            v.ciphertext_b64
        );
    }

    #[test]
    fn req_info_round_trips_with_the_derived_key() {
        let b64 = encrypt_req_info(b"<root><a>1</a></root>", "k");
        assert_eq!(
            decrypt_req_info(&b64, "k"),
            Ok(b"<root><a>1</a></root>".to_vec())
        );
    }

    #[test]
    fn derived_key_is_the_hex_md5_of_the_api_key() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e, used as ASCII.
        assert_eq!(&*derive_key(""), b"d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn empty_or_partial_ciphertext_is_a_decrypt_error() {
        let key = [7u8; 32];
        assert_eq!(aes256_ecb_decrypt(&key, &[]), Err(VerifyError::Decrypt));
        assert_eq!(
            aes256_ecb_decrypt(&key, &[0u8; 15]),
            Err(VerifyError::Decrypt)
        );
    }
}
