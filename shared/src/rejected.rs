//! Samples of refused notifications, so that `payhook-admin rejected list | show |
//! diagnose` works on what a provider really sent (README, "Admin CLI").
//!
//! A receiver that refuses a notification for a configured merchant (the signature, a
//! key, the timestamp, decryption, the body's format) keeps a sample: at most one per
//! provider, merchant and reason every `receiver.rejected_sample_interval_ms`, so a
//! flood costs nothing and every kind of failure is represented. It appends the sample
//! to the `<prefix>.rejected` stream, which is capped (size and age) and which nothing
//! consumes as work: a rejected request is never a notification. The workers read the
//! stream and keep the newest samples in memory for the admin API.
//!
//! The sample holds the exact body and the headers that verification reads: a
//! diagnosis needs every signed byte. Its listings print field names, sizes and
//! digests, never a value.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::diagnose::Captured;
use crate::event::Provider;

/// The AMQP `type` of a sample on the stream.
pub const SAMPLE_TYPE: &str = "payhook.rejected.v1";

/// The headers a sample keeps: what verification reads, and what identifies the
/// request. Never credentials or cookies.
pub const KEPT_HEADERS: &[&str] = &[
    "Content-Type",
    "User-Agent",
    "Request-ID",
    "Wechatpay-Timestamp",
    "Wechatpay-Nonce",
    "Wechatpay-Signature",
    "Wechatpay-Serial",
    "Wechatpay-Signature-Type",
];

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// UUIDv7: time-ordered.
    pub id: String,
    /// When the receiver refused it (Unix seconds).
    pub received_at: i64,
    pub provider: Provider,
    pub merchant: String,
    /// The refusal reason (`payhook_verify_failures_total`'s label).
    pub reason: String,
    /// The refusal's message (never secret).
    pub error: String,
    /// The receiver's request id (in its logs and the `X-Request-Id` answer header).
    pub request_id: String,
    /// The kept headers ([`KEPT_HEADERS`]).
    pub headers: Vec<(String, String)>,
    /// The body exactly as received, Base64.
    pub body_base64: String,
}

/// A sample without its body: what a listing shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub id: String,
    pub received_at: i64,
    pub provider: Provider,
    pub merchant: String,
    pub reason: String,
    pub error: String,
    pub request_id: String,
    pub body_bytes: usize,
    pub body_sha256: String,
}

/// One sample described for people: the summary, the headers' names, and the body's
/// field names (never their values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Described {
    #[serde(flatten)]
    pub summary: Summary,
    pub header_names: Vec<String>,
    /// Form parameters (Alipay), XML elements (WeChat APIv2) or top-level JSON keys
    /// (APIv3, sorted); empty when the body does not parse.
    pub field_names: Vec<String>,
}

impl Sample {
    /// A sample of a request refused now.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        received_at: i64,
        provider: Provider,
        merchant: &str,
        reason: &str,
        error: &str,
        request_id: &str,
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> Self {
        use base64::Engine as _;
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            received_at,
            provider,
            merchant: merchant.chars().take(64).collect(),
            reason: reason.to_owned(),
            error: error.chars().take(200).collect(),
            request_id: request_id.to_owned(),
            headers: headers
                .into_iter()
                .filter(|(name, _)| KEPT_HEADERS.iter().any(|k| k.eq_ignore_ascii_case(name)))
                .collect(),
            body_base64: base64::engine::general_purpose::STANDARD.encode(body),
        }
    }

    fn body(&self) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(&self.body_base64)
            .unwrap_or_default()
    }

    /// Approximate memory held, for the workers' cap.
    pub fn weight(&self) -> usize {
        self.body_base64.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + 256
    }

    pub fn summary(&self) -> Summary {
        let body = self.body();
        Summary {
            id: self.id.clone(),
            received_at: self.received_at,
            provider: self.provider,
            merchant: self.merchant.clone(),
            reason: self.reason.clone(),
            error: self.error.clone(),
            request_id: self.request_id.clone(),
            body_bytes: body.len(),
            body_sha256: hex::encode(Sha256::digest(&body)),
        }
    }

    pub fn describe(&self) -> Described {
        let body = self.body();
        Described {
            summary: self.summary(),
            header_names: self.headers.iter().map(|(k, _)| k.clone()).collect(),
            field_names: field_names(self.provider, &body),
        }
    }

    /// The request as `diagnose` takes it, judged as of when it was refused.
    pub fn captured(&self) -> Captured {
        Captured {
            provider: self.provider,
            merchant: self.merchant.clone(),
            body_base64: self.body_base64.clone(),
            headers: self.headers.clone(),
            at: Some(self.received_at),
        }
    }
}

/// The names of a body's fields, in order, at most 100.
fn field_names(provider: Provider, body: &[u8]) -> Vec<String> {
    let names: Vec<String> = match provider {
        Provider::Alipay => body
            .split(|&b| b == b'&')
            .filter(|s| !s.is_empty())
            .map(|segment| {
                let name = segment.split(|&b| b == b'=').next().unwrap_or_default();
                percent_encoding::percent_decode(name)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect(),
        Provider::WechatV2 => crate::wechat_v2::parse_xml(body)
            .map(|params| params.into_iter().map(|(k, _)| k).collect())
            .unwrap_or_default(),
        Provider::WechatV3 => {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
                .map(|map| map.keys().cloned().collect())
                .unwrap_or_default()
        }
    };
    names
        .into_iter()
        .take(100)
        .map(|n| n.chars().take(64).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_keeps_only_the_headers_verification_reads() {
        let sample = Sample::new(
            1,
            Provider::WechatV3,
            "m1",
            "bad_signature",
            "signature does not verify",
            "r1",
            vec![
                ("authorization".into(), "Bearer secret".into()),
                ("cookie".into(), "session=1".into()),
                ("wechatpay-serial".into(), "ABC".into()),
            ],
            br#"{"id":"1","resource":{"ciphertext":"x"}}"#,
        );
        assert_eq!(
            sample.headers,
            vec![("wechatpay-serial".into(), "ABC".into())]
        );
        let described = sample.describe();
        assert_eq!(described.field_names, ["id", "resource"]);
        let text = serde_json::to_string(&described).expect("json");
        assert!(
            !text.contains("ciphertext") && !text.contains("ABC"),
            "{text}"
        );
        assert_eq!(sample.captured().at, Some(1));
    }

    #[test]
    fn alipay_field_names_are_decoded_and_values_left_out() {
        let names = field_names(Provider::Alipay, b"a%5Fb=1&buyer_id=2088&&sign=x");
        assert_eq!(names, ["a_b", "buyer_id", "sign"]);
    }
}
