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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _already_set = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
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
