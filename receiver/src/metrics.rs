//! The receiver's Prometheus metrics. One registry per [`crate::Application`] (not a
//! global), so tests running several receivers in one process see their own figures.
//!
//! Labels are low-cardinality by construction: provider, outcome and reason come from
//! fixed lists; merchant names from URLs never become labels.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use payhook_shared::error::VerifyError;
use payhook_shared::event::Provider;
use payhook_shared::merchants::KeySlot;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Published, confirmed, success answered.
    Acked,
    /// Failed verification (see `payhook_verify_failures_total`).
    Rejected,
    /// The route names a merchant that is not configured.
    UnknownMerchant,
    /// The source address is not in the provider's allowlist.
    Forbidden,
    /// Body over `receiver.max_body_bytes`.
    TooLarge,
    /// Wrong content type.
    UnsupportedMediaType,
    /// The body did not arrive within `receiver.request_timeout_ms`.
    BodyTimeout,
    /// Shed: too many requests in flight.
    Shed,
    /// The broker is not connected.
    BrokerUnavailable,
    /// Published but not confirmed: returned (unroutable), nacked, or no confirm in time.
    PublishFailed,
}

impl Outcome {
    pub const ALL: [Outcome; 10] = [
        Self::Acked,
        Self::Rejected,
        Self::UnknownMerchant,
        Self::Forbidden,
        Self::TooLarge,
        Self::UnsupportedMediaType,
        Self::BodyTimeout,
        Self::Shed,
        Self::BrokerUnavailable,
        Self::PublishFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acked => "acked",
            Self::Rejected => "rejected",
            Self::UnknownMerchant => "unknown_merchant",
            Self::Forbidden => "forbidden",
            Self::TooLarge => "too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BodyTimeout => "body_timeout",
            Self::Shed => "shed",
            Self::BrokerUnavailable => "broker_unavailable",
            Self::PublishFailed => "publish_failed",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderOutcome {
    provider: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderReason {
    provider: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublishResult {
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct MerchantLabel {
    provider: String,
    merchant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct MerchantKeyLabel {
    provider: String,
    merchant: String,
    key: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct CertificateLabel {
    provider: String,
    merchant: String,
    serial: String,
    /// `configured`, `downloaded` (from the worker) or `receiver_tls`.
    source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct SetResult {
    result: String,
}

/// What became of a refused request's sample (see `crate::rejected`).
pub const REJECTED_SAMPLE_RESULTS: [&str; 3] = ["published", "skipped", "failed"];

/// What a receiver did with a certificate set read from the broker
/// (see `crate::certificates`).
pub const CERTIFICATE_SET_RESULTS: [&str; 4] = ["applied", "stale", "refused", "not_configured"];

fn latency_histogram() -> Histogram {
    // 0.25 ms … ~4 s: the ack deadline is 3 s, the interesting part is < 10 ms.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// All receiver metrics, cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    notifications: Family<ProviderOutcome, Counter>,
    verify_failures: Family<ProviderReason, Counter>,
    ack_latency: Family<ProviderLabel, Histogram, fn() -> Histogram>,
    confirm_latency: Family<PublishResult, Histogram, fn() -> Histogram>,
    broker_up: Gauge,
    in_flight: Gauge,
    broker_reconnects: Counter,
    certificate_sets: Family<SetResult, Counter>,
    rejected_samples: Family<SetResult, Counter>,
    merchant_acked: Family<MerchantLabel, Counter>,
    verify_keys: Family<MerchantKeyLabel, Counter>,
    merchant_last: Family<MerchantLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    certificate_expiry: Family<CertificateLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The per-request series, looked up once: a counter or histogram handle shares
    /// its value with the family's series, so the hot path neither builds label
    /// strings nor locks the family.
    hot: Arc<Hot>,
}

/// Handles of the series every request touches (see [`Metrics::hot`]).
#[derive(Debug)]
struct Hot {
    /// `notifications[provider][outcome]`, indexed like [`Provider::ALL`] and
    /// [`Outcome::ALL`].
    notifications: [[Counter; Outcome::ALL.len()]; Provider::ALL.len()],
    /// `ack_latency[provider]`, looked up on first use (the series themselves are
    /// created at zero by `pre_register`).
    ack_latency: [OnceLock<Histogram>; Provider::ALL.len()],
    /// `confirm_latency{result="ack"}`, likewise.
    confirm_ack: OnceLock<Histogram>,
    /// The serials of each merchant's downloaded certificates with an expiry series.
    downloaded: std::sync::Mutex<HashMap<String, Vec<String>>>,
    /// The configured merchants' series, by provider (indexed like [`Provider::ALL`])
    /// and name.
    merchants: OnceLock<[HashMap<String, MerchantHandles>; Provider::ALL.len()]>,
}

/// A configured merchant's series.
#[derive(Debug)]
struct MerchantHandles {
    acked: Counter,
    /// `payhook_verify_keys_total`, indexed like [`KeySlot::ALL`].
    keys: [Counter; 2],
    last: Gauge<f64, std::sync::atomic::AtomicU64>,
}

fn provider_index(provider: Provider) -> usize {
    match provider {
        Provider::Alipay => 0,
        Provider::WechatV2 => 1,
        Provider::WechatV3 => 2,
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("payhook");
        let notifications = Family::<ProviderOutcome, Counter>::default();
        let verify_failures = Family::<ProviderReason, Counter>::default();
        let ack_latency: Family<ProviderLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let confirm_latency: Family<PublishResult, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let broker_up = Gauge::default();
        let in_flight = Gauge::default();
        let broker_reconnects = Counter::default();
        let certificate_sets = Family::<SetResult, Counter>::default();
        let rejected_samples = Family::<SetResult, Counter>::default();
        let merchant_acked = Family::<MerchantLabel, Counter>::default();
        let verify_keys = Family::<MerchantKeyLabel, Counter>::default();
        registry.register(
            "verify_keys",
            "Notifications verified, by provider, configured merchant and key (current; \
             previous: the previous_… key of a key change — when it stays flat for longer \
             than the providers resend, about a day, the previous key can go)",
            verify_keys.clone(),
        );
        let merchant_last =
            Family::<MerchantLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let certificate_expiry =
            Family::<CertificateLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "merchant_notifications",
            "Notifications acked, by provider and configured merchant",
            merchant_acked.clone(),
        );
        registry.register(
            "last_notification_timestamp_seconds",
            "When the newest notification of a provider and merchant was acked (Unix \
             seconds; 0: none since start)",
            merchant_last.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When a certificate the receiver trusts or serves expires (Unix seconds), by \
             provider, merchant, serial and source (configured, downloaded, receiver_tls)",
            certificate_expiry.clone(),
        );
        registry.register_collector(Box::new(payhook_shared::process::ProcessCollector));
        for result in CERTIFICATE_SET_RESULTS {
            let _ = certificate_sets.get_or_create(&SetResult {
                result: result.into(),
            });
        }
        for result in REJECTED_SAMPLE_RESULTS {
            let _ = rejected_samples.get_or_create(&SetResult {
                result: result.into(),
            });
        }
        registry.register(
            "receiver_rejected_samples",
            "Samples of refused notifications, by result (published to the rejected \
             stream; skipped: one of the same provider, merchant and reason was taken \
             within receiver.rejected_sample_interval_ms; failed: the broker did not take it)",
            rejected_samples.clone(),
        );
        registry.register(
            "receiver_certificate_sets",
            "WeChat V3 platform certificate sets read from the worker, by result \
             (applied; stale: older than the one held; refused: does not open with the \
             APIv3 key or names another mch_id; not_configured: merchant unknown here)",
            certificate_sets.clone(),
        );
        registry.register(
            "notifications",
            "Notifications received, by provider and outcome",
            notifications.clone(),
        );
        registry.register(
            "verify_failures",
            "Notifications refused by verification, by provider and reason",
            verify_failures.clone(),
        );
        registry.register(
            "ack_latency_seconds",
            "Time from request start to the provider's success answer",
            ack_latency.clone(),
        );
        registry.register(
            "confirm_latency_seconds",
            "Time from publish to the broker's publisher confirm, by result",
            confirm_latency.clone(),
        );
        registry.register(
            "broker_up",
            "1 when the receiver holds a live broker connection",
            broker_up.clone(),
        );
        registry.register(
            "receiver_in_flight",
            "Requests being handled",
            in_flight.clone(),
        );
        registry.register(
            "broker_connects",
            "Broker connections established (first connect and every reconnect)",
            broker_reconnects.clone(),
        );
        let hot = Arc::new(Hot {
            notifications: Provider::ALL.map(|provider| {
                Outcome::ALL.map(|outcome| {
                    notifications
                        .get_or_create(&ProviderOutcome {
                            provider: provider.as_str().into(),
                            outcome: outcome.as_str().into(),
                        })
                        .clone()
                })
            }),
            ack_latency: Default::default(),
            confirm_ack: OnceLock::new(),
            downloaded: Default::default(),
            merchants: OnceLock::new(),
        });
        let metrics = Self {
            registry: Arc::new(registry),
            notifications,
            verify_failures,
            ack_latency,
            confirm_latency,
            broker_up,
            in_flight,
            broker_reconnects,
            certificate_sets,
            rejected_samples,
            merchant_acked,
            verify_keys,
            merchant_last,
            certificate_expiry,
            hot,
        };
        metrics.pre_register();
        metrics
    }

    /// Creates every label combination at zero so that dashboards and alert rules see
    /// the series before the first event (rate() over a missing series is empty).
    fn pre_register(&self) {
        for provider in Provider::ALL {
            for outcome in Outcome::ALL {
                let _ = self.notifications.get_or_create(&ProviderOutcome {
                    provider: provider.as_str().into(),
                    outcome: outcome.as_str().into(),
                });
            }
            for reason in VerifyError::REASONS {
                let _ = self.verify_failures.get_or_create(&ProviderReason {
                    provider: provider.as_str().into(),
                    reason: (*reason).into(),
                });
            }
            let _ = self.ack_latency.get_or_create(&ProviderLabel {
                provider: provider.as_str().into(),
            });
        }
        for result in CONFIRM_RESULTS {
            let _ = self.confirm_latency.get_or_create(&PublishResult {
                result: result.into(),
            });
        }
    }

    pub fn notification(&self, provider: Provider, outcome: Outcome) {
        self.hot.notifications[provider_index(provider)][outcome as usize].inc();
    }

    pub fn verify_failure(&self, provider: Provider, reason: &'static str) {
        self.verify_failures
            .get_or_create(&ProviderReason {
                provider: provider.as_str().into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn ack_latency(&self, provider: Provider, seconds: f64) {
        self.hot.ack_latency[provider_index(provider)]
            .get_or_init(|| {
                self.ack_latency
                    .get_or_create(&ProviderLabel {
                        provider: provider.as_str().into(),
                    })
                    .clone()
            })
            .observe(seconds);
    }

    pub fn confirm_latency(&self, result: &'static str, seconds: f64) {
        if result == "ack" {
            self.hot
                .confirm_ack
                .get_or_init(|| {
                    self.confirm_latency
                        .get_or_create(&PublishResult {
                            result: "ack".into(),
                        })
                        .clone()
                })
                .observe(seconds);
            return;
        }
        self.confirm_latency
            .get_or_create(&PublishResult {
                result: result.into(),
            })
            .observe(seconds);
    }

    pub fn set_broker_up(&self, up: bool) {
        self.broker_up.set(i64::from(up));
    }

    /// Creates the per-merchant series of a configured merchant at zero.
    /// Creates the per-merchant series of the configured merchants at zero and keeps
    /// their handles for the hot path. Called once, at start; later calls change
    /// nothing.
    pub fn merchants<'a>(&self, merchants: impl IntoIterator<Item = (Provider, &'a str)>) {
        let mut maps: [HashMap<String, MerchantHandles>; Provider::ALL.len()] = Default::default();
        for (provider, merchant) in merchants {
            let label = MerchantLabel {
                provider: provider.as_str().into(),
                merchant: merchant.into(),
            };
            maps[provider_index(provider)].insert(
                merchant.to_owned(),
                MerchantHandles {
                    keys: KeySlot::ALL.map(|slot| {
                        self.verify_keys
                            .get_or_create(&MerchantKeyLabel {
                                provider: provider.as_str().into(),
                                merchant: merchant.into(),
                                key: slot.as_str().into(),
                            })
                            .clone()
                    }),
                    acked: self.merchant_acked.get_or_create(&label).clone(),
                    last: self.merchant_last.get_or_create(&label).clone(),
                },
            );
        }
        let _ = self.hot.merchants.set(maps);
    }

    /// A notification of a configured merchant was acked at `unix_seconds`: a map
    /// lookup by name, no label built, no lock taken. Names not configured are not
    /// counted (they never get this far).
    pub fn merchant_acked(&self, provider: Provider, merchant: &str, unix_seconds: f64) {
        if let Some(handles) = self
            .hot
            .merchants
            .get()
            .and_then(|maps| maps[provider_index(provider)].get(merchant))
        {
            handles.acked.inc();
            handles.last.set(unix_seconds);
        }
    }

    /// A configured merchant's notification verified with the key in `slot`.
    pub fn key_verified(&self, provider: Provider, merchant: &str, slot: KeySlot) {
        if let Some(handles) = self
            .hot
            .merchants
            .get()
            .and_then(|maps| maps[provider_index(provider)].get(merchant))
        {
            handles.keys[slot as usize].inc();
        }
    }

    /// Exports a certificate's expiry.
    pub fn certificate_expiry(
        &self,
        provider: &str,
        merchant: &str,
        serial: &str,
        source: &str,
        not_after: i64,
    ) {
        self.certificate_expiry
            .get_or_create(&CertificateLabel {
                provider: provider.into(),
                merchant: merchant.into(),
                serial: serial.into(),
                source: source.into(),
            })
            .set(not_after as f64);
    }

    /// Replaces the downloaded certificates' expiries of a merchant.
    pub fn downloaded_certificates(&self, merchant: &str, certificates: &[(String, i64)]) {
        // prometheus-client cannot list a family's series: remove by the serials held.
        let mut held = match self.hot.downloaded.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for serial in held.remove(merchant).unwrap_or_default() {
            self.certificate_expiry.remove(&CertificateLabel {
                provider: Provider::WechatV3.as_str().into(),
                merchant: merchant.into(),
                serial,
                source: "downloaded".into(),
            });
        }
        for (serial, not_after) in certificates {
            self.certificate_expiry(
                Provider::WechatV3.as_str(),
                merchant,
                serial,
                "downloaded",
                *not_after,
            );
        }
        held.insert(
            merchant.to_owned(),
            certificates.iter().map(|(s, _)| s.clone()).collect(),
        );
    }

    pub fn certificate_set(&self, result: &str) {
        self.certificate_sets
            .get_or_create(&SetResult {
                result: result.into(),
            })
            .inc();
    }

    pub fn rejected_sample(&self, result: &str) {
        self.rejected_samples
            .get_or_create(&SetResult {
                result: result.into(),
            })
            .inc();
    }

    pub fn broker_connected(&self) {
        self.broker_reconnects.inc();
    }

    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Every `result` of `payhook_confirm_latency_seconds`: `ack` and the publisher's
/// failure labels.
pub const CONFIRM_RESULTS: [&str; 7] = [
    "ack",
    "unavailable",
    "returned",
    "nacked",
    "timeout",
    "channel_error",
    "serialize",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_series_exist_at_zero_from_start() {
        let text = Metrics::new().render();
        for provider in Provider::ALL {
            let line = format!(
                "payhook_ack_latency_seconds_count{{provider=\"{}\"}} 0",
                provider.as_str()
            );
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
        for result in CONFIRM_RESULTS {
            let line = format!("payhook_confirm_latency_seconds_count{{result=\"{result}\"}} 0");
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
    }

    #[test]
    fn merchant_series_start_at_zero_and_downloaded_expiries_are_replaced_whole() {
        let metrics = Metrics::new();
        metrics.merchants([(Provider::Alipay, "shop")]);
        let text = metrics.render();
        for line in [
            "payhook_merchant_notifications_total{provider=\"alipay\",merchant=\"shop\"} 0",
            "payhook_last_notification_timestamp_seconds{provider=\"alipay\",merchant=\"shop\"} 0.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        metrics.merchant_acked(Provider::Alipay, "shop", 1_700_000_000.5);
        let text = metrics.render();
        assert!(text.contains(
            "payhook_merchant_notifications_total{provider=\"alipay\",merchant=\"shop\"} 1"
        ));
        assert!(text.contains("payhook_last_notification_timestamp_seconds{provider=\"alipay\",merchant=\"shop\"} 1700000000.5"));

        let expiry = |serial: &str| {
            format!(
                "payhook_certificate_expiry_timestamp_seconds{{provider=\"wechat_v3\",merchant=\"main\",serial=\"{serial}\",source=\"downloaded\"}}"
            )
        };
        metrics.downloaded_certificates("main", &[("OLD".into(), 100), ("NEW".into(), 200)]);
        let text = metrics.render();
        assert!(text.contains(&format!("{} 100", expiry("OLD"))), "{text}");
        assert!(text.contains(&format!("{} 200", expiry("NEW"))), "{text}");
        // The old certificate retired: its series goes.
        metrics.downloaded_certificates("main", &[("NEW".into(), 200)]);
        let text = metrics.render();
        assert!(!text.contains(&expiry("OLD")), "{text}");
        assert!(text.contains(&format!("{} 200", expiry("NEW"))), "{text}");
        assert!(
            text.contains("payhook_process_resident_memory_bytes"),
            "{text}"
        );
    }

    #[test]
    fn hot_handles_are_indexed_like_the_lists() {
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, i, "{outcome:?}");
        }
        for (i, provider) in Provider::ALL.into_iter().enumerate() {
            assert_eq!(provider_index(provider), i, "{provider:?}");
        }
    }

    #[test]
    fn hot_handles_count_into_the_exposed_series() {
        let m = Metrics::new();
        m.notification(Provider::WechatV2, Outcome::Shed);
        m.notification(Provider::WechatV2, Outcome::Shed);
        m.notification(Provider::Alipay, Outcome::Acked);
        m.ack_latency(Provider::WechatV3, 0.003);
        m.confirm_latency("ack", 0.002);
        m.confirm_latency("nacked", 0.001);
        let text = m.render();
        for line in [
            "payhook_notifications_total{provider=\"wechat_v2\",outcome=\"shed\"} 2",
            "payhook_notifications_total{provider=\"alipay\",outcome=\"acked\"} 1",
            "payhook_notifications_total{provider=\"alipay\",outcome=\"shed\"} 0",
            "payhook_ack_latency_seconds_count{provider=\"wechat_v3\"} 1",
            "payhook_confirm_latency_seconds_count{result=\"ack\"} 1",
            "payhook_confirm_latency_seconds_count{result=\"nacked\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // A provider with no observation yet: its series is there, at zero (issue 16:
        // it used to appear only with its first observation).
        assert!(
            text.lines()
                .any(|l| l == "payhook_ack_latency_seconds_count{provider=\"alipay\"} 0")
        );
    }
}
