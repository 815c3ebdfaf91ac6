//! Why a notification was (or would be) refused, step by step: `payhook-admin
//! diagnose`, the admin API's `POST /diagnose` and the rejected-request samples run a
//! captured request through the verification code the receiver uses and explain each
//! step — parsing, charset, which key (by fingerprint or serial), the signed content's
//! length and SHA-256, the signature, decryption — and the first one that failed.
//!
//! The verdict is the receiver's own: the last step runs the very
//! `verify_notification` the receiver runs, so the explanation can never say "accepted"
//! about a request the receiver refuses. When the signature fails, the signature is
//! opened with the configured public key (RSA): a block that does not decode means the
//! provider signed with another key; a block that decodes carries the digest of what
//! was signed, and payhook compares it with the digests of the known alterations
//! (another charset, a parameter added on the way, a re-encoded body, a reformatted
//! JSON) before concluding that a field was changed.
//!
//! Nothing secret and never the whole body is in a diagnosis: fingerprints, serials,
//! lengths, digests, parameter names.

mod alipay;
mod wechat_v2;
mod wechat_v3;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::clock::Clock;
use crate::event::Provider;
use crate::merchants::{KeySlot, Merchants, Rejection};

/// A captured request to diagnose: the admin API's `POST /diagnose` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    pub provider: Provider,
    pub merchant: String,
    /// The body exactly as received, Base64.
    pub body_base64: String,
    /// The request's headers (WeChat Pay APIv3 needs its `Wechatpay-*` ones).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Judge timestamps as of this time (Unix seconds): when the request was received.
    /// Default: now.
    #[serde(default)]
    pub at: Option<i64>,
}

impl Captured {
    /// A request captured with `body` and `headers`, judged as of `at`.
    pub fn new(
        provider: Provider,
        merchant: &str,
        body: &[u8],
        headers: Vec<(String, String)>,
        at: Option<i64>,
    ) -> Self {
        use base64::Engine as _;
        Self {
            provider,
            merchant: merchant.to_owned(),
            body_base64: base64::engine::general_purpose::STANDARD.encode(body),
            headers,
            at,
        }
    }

    /// Diagnoses this request against `merchants`, judging time by `at` (or the clock).
    pub fn diagnose(&self, merchants: &Merchants, clock: &dyn Clock) -> Result<Diagnosis, String> {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD
            .decode(self.body_base64.trim())
            .map_err(|_| "body_base64 is not Base64".to_owned())?;
        let fixed;
        let clock = match self.at {
            Some(at) => {
                fixed = crate::clock::FixedClock::at_unix(at);
                &fixed as &dyn Clock
            }
            None => clock,
        };
        Ok(diagnose(
            merchants,
            self.provider,
            &self.merchant,
            &body,
            &self.headers,
            clock,
        ))
    }
}

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    /// Not what caused the refusal, but worth knowing (an expired certificate that
    /// still verifies).
    Warning,
    Failed,
}

/// One step of the verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// `form`, `charset`, `sign`, `key`, `certificate`, `sign_content`, `signature`,
    /// `body`, `headers`, `timestamp`, `decrypt`, `normalize`, …
    pub step: String,
    pub outcome: Outcome,
    pub detail: String,
}

/// A captured request, explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub provider: Provider,
    pub merchant: String,
    pub body_bytes: usize,
    pub body_sha256: String,
    pub steps: Vec<Step>,
    /// The first failed step; `None` when the request verifies.
    pub failed_step: Option<String>,
    /// `accepted`, or the receiver's refusal reason (the `reason` label of
    /// `payhook_verify_failures_total`).
    pub verdict: String,
    /// What the receiver answers the provider, and what the provider does next.
    pub answer: String,
}

impl Diagnosis {
    /// Whether the receiver would accept the request.
    pub fn accepted(&self) -> bool {
        self.verdict == "accepted"
    }
}

/// Collects the steps of one diagnosis.
#[derive(Debug, Default)]
pub(crate) struct Steps(Vec<Step>);

impl Steps {
    pub(crate) fn passed(&mut self, step: &str, detail: impl Into<String>) {
        self.push(step, Outcome::Passed, detail);
    }

    pub(crate) fn warning(&mut self, step: &str, detail: impl Into<String>) {
        self.push(step, Outcome::Warning, detail);
    }

    pub(crate) fn failed(&mut self, step: &str, detail: impl Into<String>) {
        self.push(step, Outcome::Failed, detail);
    }

    fn push(&mut self, step: &str, outcome: Outcome, detail: impl Into<String>) {
        self.0.push(Step {
            step: step.to_owned(),
            outcome,
            detail: detail.into(),
        });
    }

    fn any_failed(&self) -> bool {
        self.0.iter().any(|s| s.outcome == Outcome::Failed)
    }
}

/// Runs a captured request for `merchant` of `provider` through verification and
/// explains it. `headers` are the request's headers (only WeChat Pay APIv3 uses them).
pub fn diagnose(
    merchants: &Merchants,
    provider: Provider,
    merchant: &str,
    body: &[u8],
    headers: &[(String, String)],
    clock: &dyn Clock,
) -> Diagnosis {
    let view = crate::wechat_v3::V3Headers::from_pairs(headers);
    // The verdict is the receiver's: the registry's verification, previous keys included.
    let verified = merchants.verify(provider, merchant, body, &view, clock);
    let slot = verified.as_ref().ok().map(|(_, slot)| *slot);
    let result: Result<(), Rejection> = verified.map(drop);
    let mut steps = Steps::default();
    if result == Err(Rejection::UnknownMerchant) {
        unknown(&mut steps, merchants, provider, merchant);
    } else {
        let previous = slot == Some(KeySlot::Previous);
        explain(
            merchants, provider, merchant, body, &view, clock, previous, &mut steps,
        );
        let setting = match provider {
            Provider::Alipay => "previous_alipay_public_key",
            Provider::WechatV2 => "previous_api_key",
            Provider::WechatV3 => "previous_api_v3_key",
        };
        if previous {
            steps.warning(
                "key_change",
                format!(
                    "verified with {provider}.{merchant}.{setting}: the provider still uses the previous key; remove it once \
                     payhook_verify_keys_total{{key=\"previous\"}} stays flat for a day"
                ),
            );
        } else if result.is_err() && has_previous(merchants, provider, merchant) {
            steps.warning(
                "key_change",
                format!("{provider}.{merchant}.{setting} does not verify it either"),
            );
        }
    }
    let verdict = match &result {
        Ok(()) => "accepted".to_owned(),
        Err(Rejection::Verify(error)) => {
            // The explanation found nothing wrong but the receiver's code refuses:
            // say what it said (normalization, a missing business field, …).
            if !steps.any_failed() {
                steps.failed("normalize", error.to_string());
            }
            error.reason().to_owned()
        }
        Err(Rejection::UnknownMerchant) => "unknown_merchant".to_owned(),
    };
    if result.is_ok() && !steps.any_failed() {
        steps.passed(
            "verdict",
            "the receiver accepts this request (signature, decryption and fields)",
        );
    }
    let failed_step = steps
        .0
        .iter()
        .find(|s| s.outcome == Outcome::Failed)
        .map(|s| s.step.clone());
    Diagnosis {
        provider,
        merchant: merchant.chars().take(64).collect(),
        body_bytes: body.len(),
        body_sha256: hex::encode(Sha256::digest(body)),
        answer: answer(provider, &result),
        steps: steps.0,
        failed_step,
        verdict,
    }
}

/// Explains with the merchant's current key, or its previous one when that is the
/// one that verified.
#[allow(clippy::too_many_arguments)]
fn explain(
    merchants: &Merchants,
    provider: Provider,
    merchant: &str,
    body: &[u8],
    view: &crate::wechat_v3::V3Headers<'_>,
    clock: &dyn Clock,
    previous: bool,
    steps: &mut Steps,
) {
    let now = clock.now().unix_timestamp();
    let p = &merchants.previous;
    match provider {
        Provider::Alipay => {
            let app = if previous {
                p.alipay.get(merchant)
            } else {
                merchants.alipay.get(merchant)
            };
            if let Some(app) = app {
                alipay::explain(app, merchants, merchant, body, now, steps);
            }
        }
        Provider::WechatV2 => {
            let m = if previous {
                p.wechat_v2.get(merchant)
            } else {
                merchants.wechat_v2.get(merchant)
            };
            if let Some(m) = m {
                wechat_v2::explain(m, body, steps);
            }
        }
        Provider::WechatV3 => {
            let m = if previous {
                p.wechat_v3.get(merchant)
            } else {
                merchants.wechat_v3.get(merchant)
            };
            if let Some(m) = m {
                wechat_v3::explain(m, merchants, merchant, view, body, clock, steps);
            }
        }
    }
}

fn has_previous(merchants: &Merchants, provider: Provider, merchant: &str) -> bool {
    let p = &merchants.previous;
    match provider {
        Provider::Alipay => p.alipay.contains_key(merchant),
        Provider::WechatV2 => p.wechat_v2.contains_key(merchant),
        Provider::WechatV3 => p.wechat_v3.contains_key(merchant),
    }
}

fn unknown(steps: &mut Steps, merchants: &Merchants, provider: Provider, merchant: &str) {
    let mut known: Vec<&String> = match provider {
        Provider::Alipay => merchants.alipay.keys().collect(),
        Provider::WechatV2 => merchants.wechat_v2.keys().collect(),
        Provider::WechatV3 => merchants.wechat_v3.keys().collect(),
    };
    known.sort();
    steps.failed(
        "merchant",
        format!(
            "no {provider} merchant named {:?} is configured (configured: {}); the notify_url's last path segment names the merchant",
            merchant.chars().take(64).collect::<String>(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            }
        ),
    );
}

/// The receiver's answer for this result, and what the provider does with it.
fn answer(provider: Provider, result: &Result<(), Rejection>) -> String {
    let status = match result {
        Ok(()) => 200,
        Err(Rejection::UnknownMerchant) => 404,
        Err(Rejection::Verify(error)) => error.http_status(),
    };
    match (provider, result) {
        (Provider::Alipay, Ok(())) => {
            "HTTP 200 `success` once the broker confirms: Alipay stops resending".into()
        }
        (Provider::WechatV2, Ok(())) => {
            "HTTP 200 <return_code>SUCCESS</return_code> once the broker confirms: WeChat stops resending".into()
        }
        (Provider::WechatV3, Ok(())) => {
            "HTTP 204 once the broker confirms: WeChat stops resending".into()
        }
        (Provider::Alipay, Err(_)) => format!(
            "HTTP {status} `fail`: nothing is published; Alipay resends (about 8 times over 25 hours)"
        ),
        (Provider::WechatV2, Err(_)) => format!(
            "HTTP {status} <return_code>FAIL</return_code>: nothing is published; WeChat resends (15 times over about 24 hours)"
        ),
        (Provider::WechatV3, Err(_)) => format!(
            "HTTP {status} {{\"code\":\"FAIL\"}}: nothing is published; WeChat resends (15 times over about 24 hours)"
        ),
    }
}

/// Length and SHA-256 of signed content, for comparing with what a provider's SDK
/// logs or computes.
pub(crate) fn describe_content(content: &[u8]) -> String {
    format!(
        "{} bytes, sha256 {}",
        content.len(),
        hex::encode(Sha256::digest(content))
    )
}

pub(crate) use crate::inventory::date;

/// Text for people: the steps one per line, then the verdict and the answer.
impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} notification for merchant {}: {} bytes, sha256 {}",
            self.provider, self.merchant, self.body_bytes, self.body_sha256
        )?;
        for step in &self.steps {
            let mark = match step.outcome {
                Outcome::Passed => "ok  ",
                Outcome::Warning => "warn",
                Outcome::Failed => "FAIL",
            };
            writeln!(f, "  [{mark}] {:<13} {}", step.step, step.detail)?;
        }
        match &self.failed_step {
            Some(step) => writeln!(
                f,
                "verdict: refused ({}), first failing step: {step}",
                self.verdict
            )?,
            None => writeln!(f, "verdict: {}", self.verdict)?,
        }
        writeln!(f, "answer:  {}", self.answer)
    }
}

#[cfg(test)]
mod tests;
