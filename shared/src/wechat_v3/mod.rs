//! WeChat Pay APIv3 (JSON) notifications — docs/protocols.md §3.
//!
//! # Layout
//!
//! - [`keys`]: the platform keys of a merchant (certificates and `PUB_KEY_ID_…`
//!   public keys, several at once), looked up by `Wechatpay-Serial`.
//! - [`signature`]: the `Wechatpay-Signature` check over the raw body and the
//!   timestamp window; also used for API responses.
//! - [`resource`]: AES-GCM decryption of the encrypted `resource`.
//! - [`api`]: the reconciler's query calls: `Authorization` header, and what a
//!   verified transaction / refund / certificates answer means.
//! - [`relay`]: certificate sets the worker downloads, as the receivers get them.
//! - `notify` / `normalize`: a notification end to end, and the mapping of the
//!   decrypted transaction / refund onto [`crate::event::Normalized`].

pub mod api;
pub mod keys;
mod normalize;
mod notify;
pub mod relay;
pub mod resource;
pub mod signature;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

use secrecy::{ExposeSecret as _, SecretString};

use crate::error::KeyError;

pub use keys::{PUBLIC_KEY_ID_PREFIX, PlatformKeys, certificate_serial};
pub use notify::verify_notification;
pub use resource::{RESOURCE_ALGORITHM, decrypt_resource, encrypt_resource};
pub use signature::{
    HEADER_NONCE, HEADER_SERIAL, HEADER_SIGNATURE, HEADER_SIGNATURE_TYPE, HEADER_TIMESTAMP,
    SIGNATURE_TYPE, TIMESTAMP_WINDOW_SECS, V3Headers, verify_signature,
};

/// Length in bytes of an APIv3 key (it is used as an AES-256 key as is).
pub const API_V3_KEY_LEN: usize = 32;

/// One configured APIv3 merchant: what is needed to trust its notifications.
/// `Debug` shows the key as redacted.
#[derive(Debug, Clone)]
pub struct V3Merchant {
    /// The merchant id (`mchid`; the service provider's `sp_mchid` in partner mode).
    /// A payment or refund notification naming another merchant is refused.
    pub mch_id: String,
    /// The APIv3 key (32 ASCII characters), the AES-256-GCM key of every resource.
    pub api_v3_key: SecretString,
    /// Platform certificates and public keys.
    pub keys: PlatformKeys,
}

/// Checks an APIv3 key from configuration: 32 bytes, printable ASCII. Call at load
/// time, so a mistyped key fails start-up instead of every notification.
pub fn validate_api_v3_key(key: &SecretString) -> Result<(), KeyError> {
    let key = key.expose_secret();
    if key.len() != API_V3_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        // Only the length is reported: the key itself never goes into an error.
        return Err(KeyError::Invalid(format!(
            "APIv3 key must be {API_V3_KEY_LEN} printable ASCII characters (got {} bytes)",
            key.len()
        )));
    }
    Ok(())
}

/// The failure body WeChat expects with a 4xx/5xx answer:
/// `{"code":"FAIL","message":"…"}`. (Success is the HTTP status alone.)
pub fn fail_body(message: &str) -> String {
    serde_json::json!({ "code": "FAIL", "message": message }).to_string()
}
