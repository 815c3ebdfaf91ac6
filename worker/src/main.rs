//! `payhook-worker`: consumes the work queue until SIGTERM. Operator commands
//! (parked messages, payment history, orders, queue depths) are `payhook-admin`'s.

use payhook_shared::config::Settings;
use payhook_worker::Worker;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().len() > 1 {
        anyhow::bail!("payhook-worker takes no arguments; operator commands are payhook-admin's");
    }
    let settings = Settings::load()?;
    payhook_shared::telemetry::init(settings.log.format, &settings.log.filter);
    let worker = Worker::build(&settings).await?;
    tracing::info!(admin_port = worker.admin_port(), "payhook worker starting");
    let shutdown = CancellationToken::new();
    tokio::spawn(payhook_shared::telemetry::on_shutdown_signal(
        shutdown.clone(),
    ));
    worker.run_until_stopped(shutdown).await?;
    Ok(())
}
