//! `payhook-receiver`: loads the configuration and serves until SIGTERM / Ctrl-C, or
//! checks the configuration (`check-config`).
//!
//! Exit codes: 0 ok; 1 the server failed while running; 2 invalid configuration (or
//! command line); 3 a backend unreachable (`check-config --connect`).

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use payhook_receiver::Application;
use payhook_shared::amqp::{ConnectError, Connector};
use payhook_shared::clock::SystemClock;
use payhook_shared::config::Settings;
use payhook_shared::merchants::Merchants;
use tokio_util::sync::CancellationToken;

/// payhook's receiver: the providers' notify endpoints. Reads PAYHOOK_CONFIG and
/// PAYHOOK__SECTION__KEY overrides.
#[derive(Debug, Parser)]
#[command(name = "payhook-receiver", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the notify endpoints (the default).
    Run,
    /// Check the configuration: load every key and certificate, print what was found
    /// (never secret material); exit 0 ok, 2 invalid, 3 broker unreachable.
    CheckConfig {
        /// Also connect to the broker (TLS included).
        #[arg(long)]
        connect: bool,
    },
}

use payhook_shared::exit::{INVALID, UNREACHABLE};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("payhook-receiver: {error}");
            return ExitCode::from(INVALID);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(settings).await,
        Command::CheckConfig { connect } => check(&settings, connect).await,
    }
}

async fn run(settings: Settings) -> ExitCode {
    let _otlp = match payhook_shared::telemetry::init_with(
        settings.log.format,
        &settings.log.filter,
        settings.log.otlp("payhook-receiver"),
    ) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("payhook-receiver: {error}");
            return ExitCode::from(INVALID);
        }
    };
    let app = match Application::build(&settings, Arc::new(SystemClock)) {
        Ok(app) => app,
        Err(error) => {
            eprintln!("payhook-receiver: {error:#}");
            return ExitCode::from(INVALID);
        }
    };
    tracing::info!(port = app.port(), "payhook receiver listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(payhook_shared::telemetry::on_shutdown_signal(
        shutdown.clone(),
    ));
    match app.run_until_stopped(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("payhook-receiver: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn check(settings: &Settings, connect: bool) -> ExitCode {
    let merchants = match Merchants::build(settings) {
        Ok(merchants) => merchants,
        Err(error) => {
            eprintln!("invalid: {error}");
            return ExitCode::from(INVALID);
        }
    };
    let signing_keys = match payhook_receiver::signing_keys::check(settings) {
        Ok(named) => named,
        Err(error) => {
            eprintln!("invalid: {error}");
            return ExitCode::from(INVALID);
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let keys = match payhook_shared::inventory::report(settings, now, false) {
        Ok(lines) => lines,
        Err(error) => {
            eprintln!("invalid: {error}");
            return ExitCode::from(INVALID);
        }
    };
    let connector = match Connector::from_settings(&settings.amqp) {
        Ok(connector) => connector,
        Err(error) => {
            eprintln!("invalid: {error}");
            return ExitCode::from(INVALID);
        }
    };
    if let Some(tls) = &settings.receiver.tls
        && let Err(error) = payhook_receiver::tls::server_config(tls)
    {
        eprintln!("invalid: {error}");
        return ExitCode::from(INVALID);
    }
    println!("configuration: valid");
    println!(
        "merchants: {} (alipay: {}; wechat_v2: {}; wechat_v3: {})",
        merchants.len(),
        names(settings.alipay.keys()),
        names(settings.wechat_v2.keys()),
        names(settings.wechat_v3.keys())
    );
    for line in &keys {
        println!("{line}");
    }
    if signing_keys.is_empty() {
        println!("signing keys: none (the receiver only verifies)");
    }
    for named in &signing_keys {
        println!(
            "signing keys: {} names {}, not readable here (for the worker)",
            named.field, named.source
        );
    }
    if !settings.wechat_v3.is_empty() {
        println!(
            "wechat_v3 platform certificates: configured ones, and those the worker publishes to {}.certificates",
            settings.amqp.prefix
        );
    }
    println!(
        "broker: {} (prefix {})",
        if connector.is_tls() {
            "amqps, TLS"
        } else {
            "amqp, plain"
        },
        settings.amqp.prefix
    );
    println!(
        "notify listener: {} ({})",
        settings.receiver.listen,
        if settings.receiver.tls.is_some() {
            "HTTPS"
        } else {
            "HTTP"
        }
    );
    if connect {
        match connector.connect("payhook-receiver-check").await {
            Ok(connection) => {
                println!("broker: connected");
                let _ = connection.close(200, "check done".into()).await;
            }
            Err(ConnectError::Misconfigured(error)) => {
                eprintln!("invalid: {error}");
                return ExitCode::from(INVALID);
            }
            Err(error) => {
                eprintln!("unreachable: {error}");
                return ExitCode::from(UNREACHABLE);
            }
        }
    }
    ExitCode::SUCCESS
}

fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = keys.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
