//! `payhook-admin`: the operator's command line. See `payhook-admin --help` and
//! [`payhook_worker::cli`].

use clap::Parser as _;
use payhook_shared::config::Settings;
use payhook_worker::cli::{self, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    // Through the admin API the worker's configuration is not needed (nor, often,
    // readable): only the URL and the token.
    let settings = if cli.api_url().is_some() {
        Settings::from_toml("")?
    } else {
        Settings::load()?
    };
    // lapin logs a channel closed by a passive declare of a missing queue as an error;
    // `queues` expects that and says `missing`. Real failures come back as errors.
    payhook_shared::telemetry::init_cli("warn,lapin::channel=off");
    let stdout = std::io::stdout();
    match cli::run(cli, &settings, &mut stdout.lock()).await {
        // The diagnosis is printed; the status says the receiver refuses the request.
        Err(error) if error.is::<cli::Refused>() => {
            Ok(std::process::ExitCode::from(cli::DIAGNOSE_REFUSED))
        }
        Err(error) => Err(error),
        Ok(()) => Ok(std::process::ExitCode::SUCCESS),
    }
}
