//! The one tracing subscriber factory used by every binary.
//!
//! Logs are JSON lines by default (one object per event, with the current span's
//! fields, e.g. `request_id`), so they can be shipped as they are. Nothing logged by
//! payhook contains a key, a secret or a full notification body.

use tracing_subscriber::EnvFilter;

/// The log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Installs the global subscriber. `filter` uses the `RUST_LOG` syntax; the `RUST_LOG`
/// environment variable, when set, wins. Calling it twice is harmless (tests).
pub fn init(format: LogFormat, filter: &str) {
    let _ = init_with(format, filter, None);
}

/// Where spans are exported over OTLP/HTTP (protobuf), and as which service.
#[derive(Debug, Clone)]
pub struct Otlp {
    /// The collector's base URL, e.g. `http://otel-collector:4318` (`/v1/traces` is
    /// appended).
    pub endpoint: String,
    /// `service.name`: `payhook-receiver` or `payhook-worker`.
    pub service: &'static str,
}

/// Flushes and stops the OTLP exporter when dropped (keep it until the process ends).
#[derive(Debug)]
pub struct OtlpGuard {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Like [`init`], and with `otlp` every span is also exported over OTLP (continuing
/// the W3C trace the receiver starts or takes from the request, see
/// [`crate::trace::enter`]). Must run inside a Tokio runtime when `otlp` is given.
pub fn init_with(
    format: LogFormat,
    filter: &str,
    otlp: Option<Otlp>,
) -> Result<Option<OtlpGuard>, String> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let (otel, guard) = match otlp {
        None => (None, None),
        Some(otlp) => {
            let provider = otlp_provider(&otlp)?;
            let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, otlp.service);
            crate::trace::OTEL_ACTIVE.store(true, std::sync::atomic::Ordering::Relaxed);
            (
                Some(tracing_opentelemetry::layer().with_tracer(tracer)),
                Some(OtlpGuard { provider }),
            )
        }
    };
    let fmt = tracing_subscriber::fmt::layer().with_target(true);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _already_set = match format {
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt).try_init(),
    };
    Ok(guard)
}

fn otlp_provider(otlp: &Otlp) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, String> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let endpoint = format!("{}/v1/traces", otlp.endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpClient {
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(|e| format!("log.otlp_endpoint: {e}"))?,
            runtime: tokio::runtime::Handle::try_current()
                .map_err(|_| "log.otlp_endpoint: needs a Tokio runtime".to_owned())?,
        })
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("log.otlp_endpoint: {e}"))?;
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(otlp.service)
                .build(),
        )
        .build())
}

/// payhook's reqwest client as the OTLP exporter's HTTP client. The exporter's batch
/// processor runs on a thread of its own: each request runs on the process's Tokio
/// runtime, where reqwest needs to be.
#[derive(Debug)]
struct OtlpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let mut outgoing = self
            .client
            .request(parts.method, parts.uri.to_string())
            .body(body);
        for (name, value) in &parts.headers {
            outgoing = outgoing.header(name, value);
        }
        let exchange = async move {
            let answer = outgoing.send().await?;
            let mut response = http::Response::builder().status(answer.status().as_u16());
            for (name, value) in answer.headers() {
                response = response.header(name.as_str(), value.as_bytes());
            }
            let body = answer.bytes().await?;
            Ok::<_, opentelemetry_http::HttpError>(response.body(body)?)
        };
        self.runtime.spawn(exchange).await?
    }
}

/// The subscriber of command-line tools: human-readable lines on stderr (stdout is the
/// command's answer), `RUST_LOG` wins over `filter`.
pub fn init_cli(filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Cancels `token` on SIGTERM or Ctrl-C (the one shutdown signal of every binary).
pub async fn on_shutdown_signal(token: tokio_util::sync::CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
    token.cancel();
}
