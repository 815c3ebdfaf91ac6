//! The worker's Prometheus metrics (one registry per [`crate::Worker`]).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What happened to one message of the work queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// A new transition was applied.
    Applied,
    /// This notification was already processed (Redis or database said so).
    Duplicate,
    /// A new notification of a transition already applied.
    DuplicateTransition,
    /// A mismatch with the registered order or merchant: recorded, not applied.
    Quarantined,
    /// Recorded for audit, no transition (pending, other).
    Recorded,
    /// A transient failure: sent to a retry tier.
    Retried,
    /// Parked for a person.
    Parked,
}

impl EventOutcome {
    pub const ALL: [EventOutcome; 7] = [
        Self::Applied,
        Self::Duplicate,
        Self::DuplicateTransition,
        Self::Quarantined,
        Self::Recorded,
        Self::Retried,
        Self::Parked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::DuplicateTransition => "duplicate_transition",
            Self::Quarantined => "quarantined",
            Self::Recorded => "recorded",
            Self::Retried => "retried",
            Self::Parked => "parked",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabel {
    provider: String,
    result: String,
}

/// The reconciliation results the alerts name (`deploy/prometheus/alerts.yml`),
/// created at zero for every provider.
pub const ALERTED_RECONCILE_RESULTS: [&str; 3] =
    ["bad_signature", "provider_error", "transport_error"];

/// All worker metrics, cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    events: Family<OutcomeLabel, Counter>,
    notify_to_applied: Family<ProviderLabel, Histogram, fn() -> Histogram>,
    pub outbox_pending: Gauge,
    pub outbox_oldest_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Events the dispatcher published right after their commit.
    pub outbox_dispatched: Counter,
    /// Events the dispatcher left to the relay's sweep.
    pub outbox_left_to_relay: Counter,
    pub redis_fallback_active: Gauge,
    pub broker_up: Gauge,
    pub in_flight: Gauge,
    batch_size: Histogram,
    reconcile_queries: Family<QueryLabel, Counter>,
    /// Payments the reconciler is watching (registered or quarantined, still pending).
    pub reconcile_pending: Gauge,
    retention_deleted: Family<TableLabel, Counter>,
    retention_redacted: Counter,
    certificate_refreshes: Family<MerchantResultLabel, Counter>,
    certificate_expiry: Family<CertificateLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabel {
    provider: String,
    merchant: String,
    serial: String,
    /// `app_cert`: a certificate the worker signs its queries under.
    source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MerchantResultLabel {
    merchant: String,
    result: String,
}

/// Results of a WeChat V3 platform certificate refresh (see `crate::certificates`).
pub const CERTIFICATE_REFRESH_RESULTS: [&str; 3] =
    ["published", "download_failed", "publish_failed"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~65 s: notify → applied includes retries and broker queueing.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("payhook");
        let events = Family::<OutcomeLabel, Counter>::default();
        let notify_to_applied: Family<ProviderLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let outbox_pending = Gauge::default();
        let outbox_oldest_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let outbox_dispatched = Counter::default();
        let outbox_left_to_relay = Counter::default();
        let redis_fallback_active = Gauge::default();
        let broker_up = Gauge::default();
        let in_flight = Gauge::default();
        // 1 … 256 messages.
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        let reconcile_queries = Family::<QueryLabel, Counter>::default();
        let reconcile_pending = Gauge::default();
        let retention_deleted = Family::<TableLabel, Counter>::default();
        let retention_redacted = Counter::default();
        let certificate_refreshes = Family::<MerchantResultLabel, Counter>::default();
        let certificate_expiry =
            Family::<CertificateLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When a certificate the worker signs its queries under expires (Unix seconds), \
             by provider, merchant, serial and source (app_cert)",
            certificate_expiry.clone(),
        );
        registry.register_collector(Box::new(payhook_shared::process::ProcessCollector));
        registry.register(
            "certificate_refreshes",
            "WeChat V3 platform certificate refreshes, by merchant and result (published: \
             downloaded, checked and handed to the receivers; download_failed; \
             publish_failed)",
            certificate_refreshes.clone(),
        );
        registry.register(
            "retention_deleted_rows",
            "Rows deleted past their retention, by table (notifications, outbox)",
            retention_deleted.clone(),
        );
        registry.register(
            "retention_redacted_notifications",
            "Stored notifications whose buyer identifiers were redacted",
            retention_redacted.clone(),
        );
        registry.register(
            "reconcile_queries",
            "Reconciliation queries to the providers, by provider and result (paid, \
             closed, pending, not_created, published, bad_signature, provider_error, \
             transport_error, no_credentials, unsupported)",
            reconcile_queries.clone(),
        );
        registry.register(
            "reconcile_pending_orders",
            "Payments still pending that the reconciler watches (registered or quarantined)",
            reconcile_pending.clone(),
        );
        registry.register(
            "worker_events",
            "Work-queue messages processed, by outcome",
            events.clone(),
        );
        registry.register(
            "notify_to_applied_seconds",
            "Time from the receiver accepting a notification to its commit",
            notify_to_applied.clone(),
        );
        registry.register(
            "outbox_pending",
            "Outbox rows not yet published",
            outbox_pending.clone(),
        );
        registry.register(
            "outbox_oldest_pending_seconds",
            "Age of the oldest unpublished outbox row (outbox lag)",
            outbox_oldest_seconds.clone(),
        );
        registry.register(
            "outbox_dispatched",
            "Events published by the outbox dispatcher right after their commit",
            outbox_dispatched.clone(),
        );
        registry.register(
            "outbox_left_to_relay",
            "Events the outbox dispatcher did not publish (hand-off queue full or stale, \
             broker refusal, channel failure): the relay publishes them once they are \
             older than worker.outbox_sweep_after_ms",
            outbox_left_to_relay.clone(),
        );
        registry.register(
            "redis_fallback_active",
            "1 while Redis is unreachable and dedup relies on the database alone",
            redis_fallback_active.clone(),
        );
        registry.register(
            "worker_broker_up",
            "1 when the worker holds a live broker connection",
            broker_up.clone(),
        );
        registry.register(
            "worker_in_flight",
            "Messages being processed",
            in_flight.clone(),
        );
        registry.register(
            "worker_batch_size",
            "Messages applied together in one database transaction (1: a message alone)",
            batch_size.clone(),
        );
        let metrics = Self {
            registry: Arc::new(registry),
            events,
            notify_to_applied,
            outbox_pending,
            outbox_oldest_seconds,
            outbox_dispatched,
            outbox_left_to_relay,
            redis_fallback_active,
            broker_up,
            in_flight,
            batch_size,
            reconcile_queries,
            reconcile_pending,
            retention_deleted,
            retention_redacted,
            certificate_refreshes,
            certificate_expiry,
        };
        for table in ["notifications", "outbox"] {
            let _ = metrics.retention_deleted.get_or_create(&TableLabel {
                table: table.into(),
            });
        }
        for outcome in EventOutcome::ALL {
            let _ = metrics.events.get_or_create(&OutcomeLabel {
                outcome: outcome.as_str().into(),
            });
        }
        // Series the alerts and the dashboard read exist at zero from start: rate()
        // and increase() miss the first increments of a series born above zero.
        for provider in payhook_shared::event::Provider::ALL {
            let provider = provider.as_str();
            let _ = metrics.notify_to_applied.get_or_create(&ProviderLabel {
                provider: provider.into(),
            });
            for result in ALERTED_RECONCILE_RESULTS {
                let _ = metrics.reconcile_queries.get_or_create(&QueryLabel {
                    provider: provider.into(),
                    result: result.into(),
                });
            }
        }
        metrics
    }

    pub fn event(&self, outcome: EventOutcome) {
        self.events
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str().into(),
            })
            .inc();
    }

    pub fn reconcile_query(&self, provider: &str, result: &str) {
        self.reconcile_queries
            .get_or_create(&QueryLabel {
                provider: provider.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn notify_to_applied(&self, provider: &str, seconds: f64) {
        self.notify_to_applied
            .get_or_create(&ProviderLabel {
                provider: provider.into(),
            })
            .observe(seconds);
    }

    pub fn retention_deleted(&self, table: &str, rows: u64) {
        self.retention_deleted
            .get_or_create(&TableLabel {
                table: table.into(),
            })
            .inc_by(rows);
    }

    /// Exports when the certificates of the worker's signing settings expire (Alipay
    /// `app_cert`: Alipay refuses queries signed under an expired one).
    pub fn signing_certificates(&self, settings: &payhook_shared::config::Settings) {
        for (name, app) in &settings.alipay {
            let Some(pem) = app.app_cert.as_ref().and_then(|m| m.load().ok()) else {
                continue;
            };
            for info in payhook_shared::inventory::CertificateInfo::of_pem(&pem).unwrap_or_default()
            {
                self.certificate_expiry
                    .get_or_create(&CertificateLabel {
                        provider: "alipay".into(),
                        merchant: name.clone(),
                        serial: info.serial.clone(),
                        source: "app_cert".into(),
                    })
                    .set(info.not_after as f64);
            }
        }
    }

    /// Creates the certificate refresh series of `merchant` at zero.
    pub fn certificate_merchant(&self, merchant: &str) {
        for result in CERTIFICATE_REFRESH_RESULTS {
            let _ = self
                .certificate_refreshes
                .get_or_create(&MerchantResultLabel {
                    merchant: merchant.into(),
                    result: result.into(),
                });
        }
    }

    pub fn certificate_refresh(&self, merchant: &str, result: &str) {
        self.certificate_refreshes
            .get_or_create(&MerchantResultLabel {
                merchant: merchant.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn retention_redacted(&self, rows: u64) {
        self.retention_redacted.inc_by(rows);
    }

    /// A batch of `size` messages went to the database in one transaction.
    pub fn batch(&self, size: usize) {
        self.batch_size.observe(size as f64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerted_series_exist_at_zero_from_start() {
        let text = Metrics::new().render();
        for provider in payhook_shared::event::Provider::ALL {
            let provider = provider.as_str();
            let mut lines = vec![format!(
                "payhook_notify_to_applied_seconds_count{{provider=\"{provider}\"}} 0"
            )];
            for result in ALERTED_RECONCILE_RESULTS {
                lines.push(format!(
                    "payhook_reconcile_queries_total{{provider=\"{provider}\",result=\"{result}\"}} 0"
                ));
            }
            for line in lines {
                assert!(
                    text.lines().any(|l| l == line),
                    "missing {line:?} in\n{text}"
                );
            }
        }
        assert!(text.contains("payhook_retention_deleted_rows_total{table=\"notifications\"} 0"));
    }

    #[test]
    fn the_app_certificate_expiry_is_exported() {
        let vector: serde_json::Value = serde_json::from_str(include_str!(
            "../../shared/src/wechat_v3/vectors/wechat_v3_notify.json"
        ))
        .expect("vector");
        let pem = vector["platform_certificate_pem"].as_str().expect("pem");
        let settings = payhook_shared::config::Settings::from_toml(&format!(
            "[alipay.shop]\napp_id = \"1\"\nalipay_public_key = \"x\"\napp_cert = '''\n{pem}'''\n"
        ))
        .expect("settings");
        let metrics = Metrics::new();
        metrics.signing_certificates(&settings);
        let text = metrics.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("payhook_certificate_expiry_timestamp_seconds{"))
            .expect("an expiry series");
        assert!(
            line.contains("merchant=\"shop\"")
                && line.contains("serial=\"D7CE59D1F522D701\"")
                && line.contains("source=\"app_cert\""),
            "{line}"
        );
    }
}
