//! `payhook-worker`: consumes the work queue until SIGTERM, or checks the
//! configuration (`check-config`). Operator commands (parked messages, payment
//! history, orders, queue depths) are `payhook-admin`'s.
//!
//! Exit codes: 0 ok; 1 the worker failed while running; 2 invalid configuration (or
//! command line, or a TLS setting a backend refuses); 3 a backend unreachable
//! (`check-config --connect`: the broker or PostgreSQL; Redis unreachable is reported,
//! since the worker runs without it).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use payhook_shared::amqp::{ConnectError, Connector};
use payhook_shared::config::{ConfigError, Settings};
use payhook_shared::merchants::Merchants;
use payhook_worker::Worker;
use payhook_worker::dedup::ProbeFailure;
use tokio_util::sync::CancellationToken;

/// payhook's worker: applies notifications exactly once, publishes events,
/// reconciles, prunes. Reads PAYHOOK_CONFIG and PAYHOOK__SECTION__KEY overrides.
#[derive(Debug, Parser)]
#[command(name = "payhook-worker", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume the work queue (the default).
    Run,
    /// Check the configuration: load every key, certificate and token, print what was
    /// found (never secret material); exit 0 ok, 2 invalid, 3 a backend unreachable.
    CheckConfig {
        /// Also connect to the broker, PostgreSQL and Redis (TLS included).
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
            eprintln!("payhook-worker: {error}");
            return ExitCode::from(INVALID);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(settings).await,
        Command::CheckConfig { connect } => match check(&settings, connect).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure::Invalid(error)) => {
                eprintln!("invalid: {error}");
                ExitCode::from(INVALID)
            }
            Err(Failure::Unreachable(what)) => {
                eprintln!("unreachable: {what}");
                ExitCode::from(UNREACHABLE)
            }
        },
    }
}

async fn run(settings: Settings) -> ExitCode {
    let _otlp = match payhook_shared::telemetry::init_with(
        settings.log.format,
        &settings.log.filter,
        settings.log.otlp("payhook-worker"),
    ) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("payhook-worker: {error}");
            return ExitCode::from(INVALID);
        }
    };
    let worker = match Worker::build(&settings).await {
        Ok(worker) => worker,
        Err(error) => {
            eprintln!("payhook-worker: {error:#}");
            // A configuration mistake (a TLS refusal included) is named as such; an
            // unreachable database at start is an outage.
            return ExitCode::from(if error.downcast_ref::<ConfigError>().is_some() {
                INVALID
            } else {
                UNREACHABLE
            });
        }
    };
    tracing::info!(admin_port = worker.admin_port(), "payhook worker starting");
    let shutdown = CancellationToken::new();
    tokio::spawn(payhook_shared::telemetry::on_shutdown_signal(
        shutdown.clone(),
    ));
    match worker.run_until_stopped(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("payhook-worker: {error}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Invalid(String),
    Unreachable(String),
}

impl From<ConfigError> for Failure {
    fn from(error: ConfigError) -> Self {
        Self::Invalid(error.to_string())
    }
}

async fn check(settings: &Settings, connect: bool) -> Result<(), Failure> {
    let merchants = Merchants::build(settings)?;
    let connector = Connector::from_settings(&settings.amqp)?;
    let redis = payhook_worker::dedup::client(&settings.redis)?;
    let pool = payhook_worker::db::connect_lazy(&settings.postgres)
        .map_err(|e| Failure::Invalid(format!("postgres: {e}")))?;
    let tokens = payhook_worker::auth::Tokens::load(&settings.worker.admin_tokens)?;
    // Every key and certificate, the signing keys included (the queriers parse them
    // exactly as the worker will).
    let merchants_for_queries = payhook_shared::merchants::Merchants::build(settings)?;
    payhook_shared::query::Queriers::build(settings, &merchants_for_queries)?;
    let keys = payhook_shared::inventory::report(
        settings,
        time::OffsetDateTime::now_utc().unix_timestamp(),
        true,
    )?;
    let sslmode = {
        let url = settings
            .postgres
            .url
            .load()
            .map_err(|e| ConfigError::new("postgres.url", e))?;
        payhook_worker::db::effective_sslmode(
            &settings.postgres,
            secrecy::ExposeSecret::expose_secret(&url),
        )?
    };
    println!("configuration: valid");
    println!("merchants: {}", merchants.len());
    for line in &keys {
        println!("{line}");
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
        "postgres: sslmode {} (schema {})",
        sslmode.as_str(),
        settings.postgres.schema
    );
    println!(
        "redis: {}",
        if payhook_worker::dedup::is_tls(&redis) {
            "rediss, TLS"
        } else {
            "redis, plain"
        }
    );
    println!(
        "admin API tokens: {}",
        if tokens.is_empty() {
            "none (every route but /healthz, /readyz, /metrics answers 401)".to_owned()
        } else {
            format!("{tokens:?}")
        }
    );
    let r = &settings.retention;
    println!(
        "retention: {}",
        if r.enabled {
            format!(
                "notifications {} days, published events {} days, buyer redaction {}",
                r.notifications_days,
                r.published_events_days,
                if r.redact_buyer_after_days == 0 {
                    "off".to_owned()
                } else {
                    format!("after {} days", r.redact_buyer_after_days)
                }
            )
        } else {
            "off".into()
        }
    );
    if !connect {
        return Ok(());
    }
    match connector.connect("payhook-worker-check").await {
        Ok(connection) => {
            println!("broker: connected");
            let _ = connection.close(200, "check done".into()).await;
        }
        Err(ConnectError::Misconfigured(error)) => return Err(error.into()),
        Err(error) => return Err(Failure::Unreachable(error.to_string())),
    }
    match sqlx::query("SELECT 1").execute(&pool).await {
        Ok(_) => println!("postgres: connected"),
        Err(error) => {
            return Err(match payhook_worker::db::explain_tls(&error) {
                Some(mistake) => mistake.into(),
                None => Failure::Unreachable(format!("postgres: {error}")),
            });
        }
    }
    match payhook_worker::dedup::probe(&redis, Duration::from_millis(settings.redis.timeout_ms))
        .await
    {
        Ok(()) => println!("redis: connected"),
        Err(ProbeFailure::Mistake(mistake)) => return Err(mistake.into()),
        Err(ProbeFailure::Unreachable(why)) => {
            println!("redis: unreachable ({why}); the worker would run on the database alone");
        }
    }
    Ok(())
}
