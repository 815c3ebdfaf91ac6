//! The settings tree: embedded defaults → TOML file (`PAYHOOK_CONFIG`) → environment
//! (`PAYHOOK__SECTION__KEY`), validated at load with messages that name the field.
//!
//! This module only reads and checks settings; turning merchant key material into
//! verifiers is [`crate::merchants`]' job.

mod material;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use ipnet::IpNet;
use serde::Deserialize;
use thiserror::Error;

pub use material::{Material, Secret};

use crate::telemetry::LogFormat;

/// The defaults, embedded so that payhook runs without a file; also the reference
/// documentation of every setting.
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

/// The environment variable naming the configuration file.
pub const CONFIG_PATH_ENV: &str = "PAYHOOK_CONFIG";

/// An invalid configuration; `field` is the dotted path of the offending setting.
#[derive(Debug, Error)]
#[error("invalid configuration at `{field}`: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Everything payhook reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub receiver: ReceiverSettings,
    pub amqp: AmqpSettings,
    pub worker: WorkerSettings,
    pub postgres: PostgresSettings,
    pub redis: RedisSettings,
    pub log: LogSettings,
    pub reconcile: ReconcileSettings,
    pub retention: RetentionSettings,
    #[serde(default)]
    pub alipay: BTreeMap<String, AlipaySettings>,
    #[serde(default)]
    pub wechat_v2: BTreeMap<String, WechatV2Settings>,
    #[serde(default)]
    pub wechat_v3: BTreeMap<String, WechatV3Settings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub ack_deadline_ms: u64,
    pub request_timeout_ms: u64,
    pub max_in_flight: usize,
    pub workers: usize,
    /// One sample of a refused notification per provider, merchant and reason per
    /// interval; 0 disables sampling.
    pub rejected_sample_interval_ms: u64,
    pub trusted_proxies: Vec<IpNet>,
    pub allowlist: Allowlist,
    #[serde(default)]
    pub tls: Option<TlsSettings>,
}

/// Source-IP allowlists per provider; empty means any source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowlist {
    pub alipay: Vec<IpNet>,
    pub wechat_v2: Vec<IpNet>,
    pub wechat_v3: Vec<IpNet>,
}

/// Serve HTTPS directly (for deployments without a TLS-terminating proxy).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert: Material,
    /// PEM private key.
    pub key: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    pub url: Secret,
    /// Certificates for `amqps://` (see [`BackendTls`]).
    #[serde(default)]
    pub tls: BackendTls,
    pub prefix: String,
    pub delivery_limit: u32,
    pub publisher_channels: usize,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

/// One bearer token of the worker's admin API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who holds it: shown in the audit records and logs (never the token).
    pub name: String,
    pub scope: AdminScope,
    /// The token itself (a secret: `{ env = … }` or `{ file = … }`), at least 32
    /// characters.
    pub token: Secret,
}

/// What a token may do; `operate` includes `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminScope {
    /// Payment history.
    Read,
    /// Register orders and refunds, reconcile now, replay parked messages.
    Operate,
}

impl AdminScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Operate => "operate",
        }
    }
}

/// TLS to a backend (RabbitMQ, PostgreSQL, Redis). Whether TLS is used is the URL's
/// choice (`amqps://`, `rediss://`) or `postgres.sslmode`'s; these are the certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTls {
    /// PEM CA certificates trusted for the server's certificate, in addition to the
    /// system's roots (a managed service's private CA).
    #[serde(default)]
    pub ca: Option<Material>,
    /// PEM client certificate chain (mutual TLS); goes with `key`.
    #[serde(default)]
    pub cert: Option<Material>,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key: Option<Secret>,
}

impl BackendTls {
    /// Whether anything is configured.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

/// PostgreSQL's `sslmode`, as libpq spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked.
    Prefer,
    /// TLS or nothing; the certificate is not checked (encryption, not authentication).
    Require,
    /// TLS; the certificate must chain to a trusted CA; the host name is not checked.
    VerifyCa,
    /// TLS; the certificate must chain to a trusted CA and name the host. Use this.
    VerifyFull,
}

impl SslMode {
    /// From libpq's spelling (`verify-full`), as in a URL's `sslmode=`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// The worker: consumption, retries, dedup and outbox relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub admin_listen: SocketAddr,
    /// Bearer tokens of the admin API (see [`AdminToken`]); none: every route but
    /// `/healthz`, `/readyz` and `/metrics` answers 401.
    #[serde(default)]
    pub admin_tokens: Vec<AdminToken>,
    pub prefetch: u16,
    pub concurrency: usize,
    pub batch_max: usize,
    pub batch_linger_ms: u64,
    pub retry_delays_ms: Vec<u32>,
    pub claim_ttl_ms: u64,
    pub done_ttl_secs: u64,
    pub outbox_batch: u32,
    pub outbox_poll_ms: u64,
    pub outbox_sweep_after_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    pub url: Secret,
    /// TLS mode; unset: the URL's `sslmode`, or `disable` when the URL has none.
    #[serde(default)]
    pub sslmode: Option<SslMode>,
    /// Certificates for `sslmode` other than `disable` (see [`BackendTls`]).
    #[serde(default)]
    pub tls: BackendTls,
    pub schema: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: Secret,
    /// Certificates for `rediss://` (see [`BackendTls`]).
    #[serde(default)]
    pub tls: BackendTls,
    pub prefix: String,
    pub timeout_ms: u64,
}

/// The reconciler (in the worker): see `[reconcile]` in the defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    pub enabled: bool,
    pub strict: bool,
    pub pending_after_secs: u64,
    pub interval_min_secs: u64,
    pub interval_max_secs: u64,
    pub give_up_after_secs: u64,
    pub sweep_interval_ms: u64,
    pub batch: u32,
    pub timeout_ms: u64,
    pub attempts: u32,
    pub backoff_ms: u64,
    pub alipay_gateway: String,
    pub wechat_base: String,
    pub certificates_refresh_secs: u64,
}

/// What the worker deletes, and when (see `[retention]` in the defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    pub enabled: bool,
    /// Raw notifications (`notifications`) are deleted this many days after they were
    /// recorded.
    pub notifications_days: u32,
    /// Published outbox rows are deleted this many days after their publication.
    pub published_events_days: u32,
    /// Buyer identifiers in stored notifications are redacted this many days after
    /// they were recorded; 0: never.
    pub redact_buyer_after_days: u32,
    /// How often a pass runs, and the rows each of its statements touches.
    pub interval_secs: u64,
    pub batch: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
    /// OTLP/HTTP collector base URL for span export; empty: no export.
    pub otlp_endpoint: String,
}

impl LogSettings {
    /// The OTLP export of `service`'s spans, when an endpoint is configured.
    pub fn otlp(&self, service: &'static str) -> Option<crate::telemetry::Otlp> {
        let endpoint = self.otlp_endpoint.trim();
        (!endpoint.is_empty()).then(|| crate::telemetry::Otlp {
            endpoint: endpoint.to_owned(),
            service,
        })
    }
}

/// An Alipay application (`/notify/alipay/{name}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlipaySettings {
    pub app_id: String,
    /// Public-key mode: the Alipay public key (bare Base64 SPKI or PEM).
    #[serde(default)]
    pub alipay_public_key: Option<Material>,
    /// Public-key mode, during a key change: the other key (the old one, or the new one
    /// configured ahead of the switch in Alipay's console). Tried when
    /// `alipay_public_key` does not verify; `payhook_verify_keys_total{key="previous"}`
    /// says when it can go.
    #[serde(default)]
    pub previous_alipay_public_key: Option<Material>,
    /// Certificate mode: `alipayCertPublicKey_RSA2.crt`.
    #[serde(default)]
    pub alipay_cert: Option<Material>,
    /// Certificate mode: `alipayRootCert.crt` (for query requests).
    #[serde(default)]
    pub alipay_root_cert: Option<Material>,
    /// Certificate mode: `appCertPublicKey.crt` (for query requests).
    #[serde(default)]
    pub app_cert: Option<Material>,
    /// The app private key (for query requests).
    #[serde(default)]
    pub app_private_key: Option<Secret>,
    /// The expected payee (`seller_id`), checked by the worker.
    #[serde(default)]
    pub seller_id: Option<String>,
}

/// A WeChat Pay APIv2 merchant (`/notify/wechat/v2/{name}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatV2Settings {
    pub mch_id: String,
    #[serde(default)]
    pub appid: Option<String>,
    /// The APIv2 key (signatures; its MD5 decrypts refund notifications).
    pub api_key: Secret,
    /// During a key reset: the other APIv2 key, tried when `api_key` does not verify
    /// (notifications only; queries are signed with `api_key`).
    #[serde(default)]
    pub previous_api_key: Option<Secret>,
}

/// A WeChat Pay APIv3 merchant (`/notify/wechat/v3/{name}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatV3Settings {
    pub mch_id: String,
    #[serde(default)]
    pub appid: Option<String>,
    /// The APIv3 key: exactly 32 bytes (AES-256-GCM).
    pub api_v3_key: Secret,
    /// During a key reset: the other APIv3 key, tried when `api_v3_key` does not
    /// decrypt (notifications and certificate sets).
    #[serde(default)]
    pub previous_api_v3_key: Option<Secret>,
    /// Platform certificates (PEM), several at once during rotation.
    #[serde(default)]
    pub platform_certs: Vec<Material>,
    /// WeChat Pay public-key mode: the key id (`PUB_KEY_ID_…`) and the key.
    #[serde(default)]
    pub public_key_id: Option<String>,
    #[serde(default)]
    pub public_key: Option<Material>,
    /// Merchant API private key and certificate serial (for query requests).
    #[serde(default)]
    pub merchant_private_key: Option<Secret>,
    #[serde(default)]
    pub merchant_serial: Option<String>,
}

impl Settings {
    /// Loads defaults, then the file named by `PAYHOOK_CONFIG` (if set), then the
    /// environment, and validates the result.
    pub fn load() -> Result<Self, ConfigError> {
        let path = std::env::var_os(CONFIG_PATH_ENV).map(PathBuf::from);
        Self::load_from(path.as_deref())
    }

    /// Like [`Settings::load`] with an explicit file.
    pub fn load_from(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS_TOML));
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError::new(
                    CONFIG_PATH_ENV,
                    format!("{} is not a readable file", path.display()),
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        Self::from_figment(figment.merge(Env::prefixed("PAYHOOK__").split("__")))
    }

    /// Defaults overlaid with a TOML string (tests, tools), without the environment.
    pub fn from_toml(overlay: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(DEFAULTS_TOML)).merge(Toml::string(overlay)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment.extract().map_err(|e| {
            let field = e.path.join(".");
            ConfigError::new(
                if field.is_empty() {
                    "<root>".into()
                } else {
                    field
                },
                e.kind.to_string(),
            )
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot: ranges, names, one-of choices.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.reconcile;
        positive("reconcile.interval_min_secs", c.interval_min_secs)?;
        positive("reconcile.sweep_interval_ms", c.sweep_interval_ms)?;
        positive("reconcile.batch", u64::from(c.batch))?;
        positive("reconcile.timeout_ms", c.timeout_ms)?;
        positive("reconcile.attempts", u64::from(c.attempts))?;
        positive(
            "reconcile.certificates_refresh_secs",
            c.certificates_refresh_secs,
        )?;
        if c.interval_max_secs < c.interval_min_secs {
            return Err(ConfigError::new(
                "reconcile.interval_max_secs",
                "must be at least reconcile.interval_min_secs",
            ));
        }
        for (field, url) in [
            ("reconcile.alipay_gateway", &c.alipay_gateway),
            ("reconcile.wechat_base", &c.wechat_base),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError::new(field, "must be an http(s) URL"));
            }
        }
        let r = &self.receiver;
        positive("receiver.max_body_bytes", r.max_body_bytes as u64)?;
        positive("receiver.ack_deadline_ms", r.ack_deadline_ms)?;
        positive("receiver.request_timeout_ms", r.request_timeout_ms)?;
        positive("receiver.max_in_flight", r.max_in_flight as u64)?;
        if r.ack_deadline_ms >= 5000 {
            return Err(ConfigError::new(
                "receiver.ack_deadline_ms",
                "must be below 5000: WeChat Pay abandons a request after 5 s",
            ));
        }
        let a = &self.amqp;
        if a.prefix.is_empty()
            || !a
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(ConfigError::new(
                "amqp.prefix",
                "use letters, digits, '.', '_' or '-'",
            ));
        }
        positive("amqp.publisher_channels", a.publisher_channels as u64)?;
        positive("amqp.delivery_limit", u64::from(a.delivery_limit))?;
        if a.reconnect_min_ms == 0 || a.reconnect_min_ms > a.reconnect_max_ms {
            return Err(ConfigError::new(
                "amqp.reconnect_min_ms",
                "must be positive and not above amqp.reconnect_max_ms",
            ));
        }
        let w = &self.worker;
        positive("worker.prefetch", u64::from(w.prefetch))?;
        positive("worker.concurrency", w.concurrency as u64)?;
        positive("worker.batch_max", w.batch_max as u64)?;
        positive("worker.claim_ttl_ms", w.claim_ttl_ms)?;
        positive("worker.outbox_batch", u64::from(w.outbox_batch))?;
        positive("worker.outbox_poll_ms", w.outbox_poll_ms)?;
        positive("worker.outbox_sweep_after_ms", w.outbox_sweep_after_ms)?;
        let mut token_names = std::collections::BTreeSet::new();
        for token in &w.admin_tokens {
            let ok = !token.name.is_empty()
                && token.name.len() <= 64
                && token
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
            if !ok {
                return Err(ConfigError::new(
                    "worker.admin_tokens.name",
                    "use letters, digits, '.', '_', '-' or '@' (at most 64)",
                ));
            }
            if !token_names.insert(token.name.as_str()) {
                return Err(ConfigError::new(
                    "worker.admin_tokens.name",
                    format!("{} is given twice", token.name),
                ));
            }
        }
        if w.retry_delays_ms.is_empty() || w.retry_delays_ms.contains(&0) {
            return Err(ConfigError::new(
                "worker.retry_delays_ms",
                "give at least one tier, each delay greater than 0",
            ));
        }
        if w.done_ttl_secs < 48 * 3600 {
            return Err(ConfigError::new(
                "worker.done_ttl_secs",
                "must cover the providers' resend horizon: at least 172800 (48 h)",
            ));
        }
        let schema_ok = !self.postgres.schema.is_empty()
            && self.postgres.schema.len() <= 63
            && self
                .postgres
                .schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !schema_ok {
            return Err(ConfigError::new(
                "postgres.schema",
                "use lower-case letters, digits or '_'",
            ));
        }
        positive(
            "postgres.max_connections",
            u64::from(self.postgres.max_connections),
        )?;
        positive(
            "postgres.acquire_timeout_ms",
            self.postgres.acquire_timeout_ms,
        )?;
        positive("redis.timeout_ms", self.redis.timeout_ms)?;
        let k = &self.retention;
        positive("retention.interval_secs", k.interval_secs)?;
        positive("retention.batch", u64::from(k.batch))?;
        positive(
            "retention.published_events_days",
            u64::from(k.published_events_days),
        )?;
        if k.notifications_days < 3 {
            return Err(ConfigError::new(
                "retention.notifications_days",
                "must be at least 3: the providers resend for about a day, and the stored notification is its dedup record",
            ));
        }
        if k.redact_buyer_after_days != 0 && k.redact_buyer_after_days >= k.notifications_days {
            return Err(ConfigError::new(
                "retention.redact_buyer_after_days",
                "must be below retention.notifications_days (or 0: never): the notifications are deleted first otherwise",
            ));
        }
        for (section, tls) in [
            ("amqp.tls", &self.amqp.tls),
            ("postgres.tls", &self.postgres.tls),
            ("redis.tls", &self.redis.tls),
        ] {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err(ConfigError::new(
                    format!("{section}.cert"),
                    "a client certificate and its key go together: set both cert and key, or neither",
                ));
            }
        }
        for (name, app) in &self.alipay {
            merchant_name("alipay", name)?;
            let field = |f: &str| format!("alipay.{name}.{f}");
            non_empty(&field("app_id"), &app.app_id)?;
            match (&app.alipay_public_key, &app.alipay_cert) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(ConfigError::new(
                        field("alipay_public_key"),
                        "set exactly one of alipay_public_key (public-key mode) or alipay_cert (certificate mode)",
                    ));
                }
            }
        }
        for (name, m) in &self.wechat_v2 {
            merchant_name("wechat_v2", name)?;
            non_empty(&format!("wechat_v2.{name}.mch_id"), &m.mch_id)?;
        }
        for (name, m) in &self.wechat_v3 {
            merchant_name("wechat_v3", name)?;
            non_empty(&format!("wechat_v3.{name}.mch_id"), &m.mch_id)?;
            if m.platform_certs.is_empty() && m.public_key.is_none() {
                return Err(ConfigError::new(
                    format!("wechat_v3.{name}.platform_certs"),
                    "set platform_certs and/or public_key_id + public_key",
                ));
            }
            if m.public_key.is_some() != m.public_key_id.is_some() {
                return Err(ConfigError::new(
                    format!("wechat_v3.{name}.public_key_id"),
                    "public_key_id and public_key go together",
                ));
            }
        }
        Ok(())
    }
}

fn positive(field: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::new(field, "must be greater than 0"))
    } else {
        Ok(())
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        Err(ConfigError::new(field, "must not be empty"))
    } else {
        Ok(())
    }
}

/// Merchant names appear in URLs, AMQP identities and metric labels: keep them tame.
fn merchant_name(provider: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            format!("{provider}.{name}"),
            "merchant names use letters, digits, '_' or '-' (at most 64)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_alone_are_valid() {
        let s = Settings::from_toml("").expect("defaults load");
        assert_eq!(s.amqp.prefix, "payhook");
        assert_eq!(s.receiver.ack_deadline_ms, 3000);
        assert!(s.alipay.is_empty());
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Settings::from_toml("[receiver]\nlisten_addr = \"x\"").expect_err("typo refused");
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn bad_value_names_the_field() {
        let err = Settings::from_toml("[receiver]\nmax_body_bytes = 0").expect_err("zero refused");
        assert_eq!(err.field, "receiver.max_body_bytes");
        let err = Settings::from_toml("[amqp]\nprefix = \"a b\"").expect_err("space refused");
        assert_eq!(err.field, "amqp.prefix");
        let err = Settings::from_toml("[receiver]\nack_deadline_ms = 6000").expect_err("too long");
        assert_eq!(err.field, "receiver.ack_deadline_ms");
    }

    #[test]
    fn alipay_needs_exactly_one_key_mode() {
        let err = Settings::from_toml("[alipay.shop]\napp_id = \"1\"").expect_err("no key");
        assert_eq!(err.field, "alipay.shop.alipay_public_key");
        let ok = Settings::from_toml(
            "[alipay.shop]\napp_id = \"1\"\nalipay_public_key = { env = \"ALIPAY_PK\" }",
        )
        .expect("env material accepted");
        assert!(matches!(
            ok.alipay["shop"].alipay_public_key,
            Some(Material::Env { .. })
        ));
    }

    #[test]
    fn the_documented_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/payhook.example.toml");
        let s = Settings::load_from(Some(&path)).expect("example config is valid");
        assert!(s.alipay.contains_key("shop"));
        assert!(s.wechat_v2.contains_key("legacy"));
        assert!(s.wechat_v3.contains_key("main"));
        assert!(
            matches!(s.amqp.url.0, Material::Env { .. }),
            "no password in the example"
        );
    }

    #[test]
    fn missing_config_file_is_named() {
        let err = Settings::load_from(Some(Path::new("/nonexistent/payhook.toml")))
            .expect_err("missing file refused");
        assert_eq!(err.field, CONFIG_PATH_ENV);
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s =
            Settings::from_toml("[wechat_v2.m]\nmch_id = \"1\"\napi_key = \"super-secret-value\"")
                .expect("valid");
        let printed = format!("{s:?}");
        assert!(!printed.contains("super-secret-value"), "{printed}");
        assert!(
            !printed.contains("guest:guest"),
            "broker password leaked: {printed}"
        );
    }
}
