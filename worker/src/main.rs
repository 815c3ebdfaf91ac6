//! `payhook-worker`: consumes the work queue (default), or runs an admin command.
//!
//! ```text
//! payhook-worker                         # run the worker
//! payhook-worker replay-parked [--provider P] [--reason R]
//! ```

use payhook_shared::config::Settings;
use payhook_worker::Worker;
use payhook_worker::replay::ReplayFilter;
use tokio_util::sync::CancellationToken;

fn usage() -> anyhow::Error {
    anyhow::anyhow!("usage: payhook-worker [replay-parked [--provider P] [--reason R]]")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    payhook_shared::telemetry::init(settings.log.format, &settings.log.filter);
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None => {
            let worker = Worker::build(&settings).await?;
            tracing::info!(admin_port = worker.admin_port(), "payhook worker starting");
            let shutdown = CancellationToken::new();
            tokio::spawn(payhook_shared::telemetry::on_shutdown_signal(
                shutdown.clone(),
            ));
            worker.run_until_stopped(shutdown).await?;
        }
        Some("replay-parked") => {
            let mut filter = ReplayFilter::default();
            while let Some(flag) = args.next() {
                let value = args.next().ok_or_else(usage)?;
                match flag.as_str() {
                    "--provider" => filter.provider = Some(value),
                    "--reason" => filter.reason = Some(value),
                    _ => return Err(usage()),
                }
            }
            let worker = Worker::build(&settings).await?;
            let report = worker.shared().replay_parked(&filter).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Some(_) => return Err(usage()),
    }
    Ok(())
}
