//! Alipay: asynchronous payment notifications (`notify_url`, classic gateway) and the
//! signed responses of query calls (docs/protocols.md §1).
//!
//! # Layout
//!
//! - [`form`]: the `application/x-www-form-urlencoded` body, decoded exactly once in
//!   the charset the notification declares, with the decoded bytes kept for the
//!   signature check.
//! - `sign`: the "V1" sign content of notifications (and the request rule, V2), and
//!   the sign types (`RSA2`, legacy `RSA`).
//! - `keys` / `cert` / `dn`: the Alipay public key of an app — a bare key or Alipay's
//!   certificates indexed by certificate SN, computed exactly as Alipay's Java SDK does.
//! - `notify`: [`verify_notification`], the one entry point the receiver calls: body
//!   bytes in, [`VerifiedNotification`](crate::event::VerifiedNotification) out.
//! - `normalize`: what a verified notification means (payment, refund, close).
//! - `response`: [`verify_response`] for the reconciler's query calls.
//! - [`gateway`]: the reconciler's signed gateway requests and what a verified answer
//!   means (`alipay.trade.query`).
//!
//! Everything is a pure function of the body and the app's keys; the receiver caps
//! the body size before calling in. Business checks that need our own records
//! (`app_id`, `seller_id`, amount) belong to the worker, which quarantines mismatches.

mod cert;
mod dn;
pub mod form;
pub mod gateway;
mod keys;
mod normalize;
mod notify;
#[cfg(test)]
mod properties;
mod response;
mod sign;
#[cfg(test)]
pub(crate) mod testkit;

pub use cert::{cert_sn, root_cert_sn};
pub use keys::AlipayKeys;
pub use notify::verify_notification;
pub use response::verify_response;
pub(crate) use sign::sign_content_v1_bytes;
pub use sign::{SignType, sign_content_v1, sign_content_v2};

/// The answer Alipay expects for a notification that was received: exactly these 7
/// bytes with HTTP 200. Anything else makes Alipay resend (about 8 times over ~25 h).
pub const SUCCESS_ANSWER: &str = "success";

/// The conventional answer for a notification that was refused (any body but
/// [`SUCCESS_ANSWER`] works); Alipay resends it later.
pub const FAIL_ANSWER: &str = "fail";

/// One configured Alipay application.
#[derive(Debug, Clone)]
pub struct AlipayApp {
    /// Our `app_id`. Not checked against the notification here: a verified
    /// notification for another app is quarantined by the worker, not refused.
    pub app_id: String,
    /// The Alipay public key(s) notifications of this app are signed with.
    pub keys: AlipayKeys,
}

/// At most this many characters of a provider-supplied value go into an error
/// message: enough to recognise it, too little to flood a log line.
const ECHO_LIMIT: usize = 64;

/// Provider-supplied text, clipped for inclusion in an error message.
fn clip(text: &str) -> String {
    match text.char_indices().nth(ECHO_LIMIT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_echoes_of_provider_text_are_clipped() {
        assert_eq!(clip("RSA3"), "RSA3");
        let long = "x".repeat(500);
        assert_eq!(clip(&long).chars().count(), ECHO_LIMIT + 1);
    }
}
