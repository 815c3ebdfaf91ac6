//! `payhook-receiver`: loads the configuration, serves until SIGTERM / Ctrl-C.

use std::sync::Arc;

use payhook_receiver::Application;
use payhook_shared::clock::SystemClock;
use payhook_shared::config::Settings;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    payhook_shared::telemetry::init(settings.log.format, &settings.log.filter);
    let app = Application::build(&settings, Arc::new(SystemClock))?;
    tracing::info!(port = app.port(), "payhook receiver listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(payhook_shared::telemetry::on_shutdown_signal(
        shutdown.clone(),
    ));
    app.run_until_stopped(shutdown).await?;
    Ok(())
}
