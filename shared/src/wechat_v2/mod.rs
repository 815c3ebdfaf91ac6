//! WeChat Pay APIv2: the legacy XML notifications (docs/protocols.md §2).
//!
//! # Layout
//!
//! - [`xml`](parse_xml): the safe reader for the flat `<xml><k>v</k>…</xml>` dialect
//!   (no DOCTYPE, no entities, no nesting, no duplicate keys).
//! - [`sign`](sign()): the MD5 / HMAC-SHA256 signature over the sorted parameters.
//! - [`refund`](decrypt_req_info): the AES-256-ECB `req_info` of refund notifications.
//! - [`notify`](verify_notification): the one entry point the receiver calls —
//!   body bytes in, [`VerifiedNotification`](crate::event::VerifiedNotification) out.
//! - [`orderquery`]: the reconciler's order query and what a verified answer means.
//! - This file: the merchant's credentials and the answers WeChat expects.
//!
//! Everything is a pure function of the body and the merchant's key; the receiver
//! caps the body size before calling in.

mod fields;
mod notify;
pub mod orderquery;
mod refund;
mod sign;
mod xml;

use secrecy::SecretString;

pub use notify::{PAYMENT_EVENT_TYPE, verify_notification};
pub use refund::{
    REFUND_EVENT_TYPE, aes256_ecb_decrypt, aes256_ecb_encrypt, decrypt_req_info, encrypt_req_info,
};
pub use sign::{SignType, sign};
pub use xml::parse_xml;

/// One APIv2 merchant's credentials.
///
/// `Debug` is safe to log: [`SecretString`] prints as redacted.
#[derive(Debug, Clone)]
pub struct V2Merchant {
    /// The merchant id (`mch_id`) WeChat assigned.
    pub mch_id: String,
    /// The APIv2 key (32 characters, set in the merchant platform): signs payment
    /// notifications and, through its MD5, encrypts refund notifications.
    pub api_key: SecretString,
}

/// The answer that tells WeChat a notification was received (HTTP 200, `text/xml`).
pub const SUCCESS_ANSWER: &str = "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";

/// The answer that tells WeChat to resend: `FAIL` with `message` as `return_msg`.
///
/// The message is wrapped in CDATA with any `]]>` split across sections, so no text
/// can end the section early and inject markup. Keep it short and free of secrets:
/// WeChat shows it in the merchant platform.
pub fn fail_answer(message: &str) -> String {
    format!(
        "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg>{}</return_msg></xml>",
        xml::cdata(message)
    )
}

#[cfg(test)]
mod tests;
