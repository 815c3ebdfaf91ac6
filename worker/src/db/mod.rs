//! PostgreSQL: the source of truth for "exactly one effect per business transition".
//!
//! # Layout
//!
//! - [`connect`] / [`MIGRATOR`]: the pool (every connection's `search_path` is the
//!   configured schema) and the migrations in `worker/migrations/`.
//! - [`apply`]: the one apply path — notification audit, payment state machine,
//!   transition ledger, refunds and outbox, in one transaction; `facts` computes a
//!   payment's next facts, `rows` holds the SQL that writes them.
//! - [`state`]: the monotonic payment state machine (pure).
//! - [`cloudevents`]: the downstream event documents written to the outbox.
//! - [`orders`]: order registration (expected amount and identities).
//! - [`history`]: everything known about one payment, for the admin API.

// First, so that its SQL macros are in scope for `bulk`.
#[macro_use]
mod rows;

pub mod apply;
pub mod audit;
mod bulk;
pub mod cloudevents;
mod error;
mod facts;
pub mod history;
mod locked;
pub mod orders;
pub mod refunds;
pub mod state;

use std::str::FromStr as _;
use std::time::Duration;

use payhook_shared::config::{ConfigError, PostgresSettings, SslMode};
use payhook_shared::tls::ClientTls;
use secrecy::ExposeSecret as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Connection as _, PgPool};

pub use apply::{
    ApplyError, ApplyOutcome, Expectations, apply, apply_batch, apply_batch_emitting,
    apply_emitting,
};

/// How a bulk batch's transaction begins, and its two statements: for the test that
/// checks how PostgreSQL plans them.
#[doc(hidden)]
pub fn bulk_statements() -> (&'static str, [&'static str; 2]) {
    (
        bulk::BEGIN,
        [bulk::RECORD_AND_LOCK, bulk::APPLY_TRANSITIONS],
    )
}
pub use history::{PaymentHistory, payment_history};
pub use orders::{NewOrder, Registered, register};
pub use refunds::{NewRefund, register_refund};
pub use state::PaymentState;

/// A pooled connection idle at least this long is pinged before it is handed out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// The schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects, creates `settings.schema` if missing and runs the migrations in it.
///
/// Fails when the database cannot be reached within `acquire_timeout_ms`.
pub async fn connect(settings: &PostgresSettings) -> Result<PgPool, sqlx::Error> {
    let pool = connect_lazy(settings)?;
    create_schema(&pool, &settings.schema).await?;
    // sqlx serializes concurrent migrators with an advisory lock (per database), so
    // replicas starting together apply each migration once.
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// The pool without touching the database: connections are opened on first use.
/// (For tools and tests that must not migrate, or start before the database.)
pub fn connect_lazy(settings: &PostgresSettings) -> Result<PgPool, sqlx::Error> {
    check_schema_name(&settings.schema)?;
    let url = settings
        .url
        .load()
        .map_err(|e| config_error(format!("postgres.url: {e}")))?;
    // The URL parser's errors never echo the URL (it may carry a password).
    let options = PgConnectOptions::from_str(url.expose_secret())?
        // Unqualified names — payhook's tables and sqlx's `_sqlx_migrations` — resolve
        // in the configured schema, so several deployments (or tests) share a database.
        .options([("search_path", settings.schema.as_str())]);
    let options = with_tls(options, settings, url.expose_secret())
        .map_err(|e| sqlx::Error::Configuration(Box::new(e)))?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        // sqlx pings every connection it hands out by default: one more round trip per
        // transaction. Only a connection that sat idle is pinged (a server restart or
        // an idle-connection killer may have closed it); one in steady use that broke
        // fails its statement instead, which the apply path treats as transient
        // (retry tier) and the relay retries.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// Whether a database error is worth retrying later: the connection, the pool, the
/// server's resources or a lost concurrency race — not the data.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| transient_sqlstate(&code)),
        _ => false,
    }
}

/// SQLSTATEs that say "not now" rather than "never".
fn transient_sqlstate(code: &str) -> bool {
    matches!(
        code,
        "40001" // serialization_failure
            | "40P01" // deadlock_detected
            | "55P03" // lock_not_available
            | "57014" // query_canceled (statement_timeout)
            | "57P01" // admin_shutdown
            | "57P02" // crash_shutdown
            | "57P03" // cannot_connect_now (starting up, in recovery)
            | "25006" // read_only_sql_transaction: a failover left us on a standby
    ) || code.starts_with("08") // connection_exception
        || code.starts_with("53") // insufficient_resources (too_many_connections, disk_full)
        || code.starts_with("58") // system_error (I/O)
}

async fn create_schema(pool: &PgPool, schema: &str) -> Result<(), sqlx::Error> {
    let sql = format!(
        "CREATE SCHEMA IF NOT EXISTS \"{}\"",
        schema.replace('"', "\"\"")
    );
    match sqlx::query(&sql).execute(pool).await {
        Ok(_) => Ok(()),
        // Two replicas creating it at the same instant: IF NOT EXISTS is not atomic
        // in PostgreSQL, the loser gets a unique violation on pg_namespace.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The configuration already restricts the name; `connect` can also be called with
/// hand-made settings, and the name ends up in SQL and in a startup option.
fn check_schema_name(schema: &str) -> Result<(), sqlx::Error> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(config_error(format!(
            "postgres.schema {schema:?}: use lower-case letters, digits or '_'"
        )))
    }
}

/// The TLS mode in force: `postgres.sslmode`, else the URL's `sslmode`, else
/// `disable` (not libpq's `prefer`, which falls back to plain text without a word).
pub fn effective_sslmode(settings: &PostgresSettings, url: &str) -> Result<SslMode, ConfigError> {
    if let Some(mode) = settings.sslmode {
        return Ok(mode);
    }
    let query = url.split_once('?').map_or("", |(_, query)| query);
    for pair in query.split('&') {
        if let Some((key, value)) = pair.split_once('=')
            && (key == "sslmode" || key == "ssl-mode")
        {
            return SslMode::parse(value).ok_or_else(|| {
                ConfigError::new(
                    "postgres.url",
                    "sslmode must be disable, prefer, require, verify-ca or verify-full",
                )
            });
        }
    }
    Ok(SslMode::Disable)
}

fn with_tls(
    options: PgConnectOptions,
    settings: &PostgresSettings,
    url: &str,
) -> Result<PgConnectOptions, ConfigError> {
    let mode = effective_sslmode(settings, url)?;
    if mode == SslMode::Disable {
        if settings.tls.is_set() {
            return Err(ConfigError::new(
                "postgres.tls",
                "certificates are set but sslmode is disable: set postgres.sslmode (verify-full)",
            ));
        }
        return Ok(options.ssl_mode(PgSslMode::Disable));
    }
    let tls = ClientTls::load("postgres.tls", &settings.tls)?;
    let mut options = options.ssl_mode(match mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require => PgSslMode::Require,
        SslMode::VerifyCa => PgSslMode::VerifyCa,
        SslMode::VerifyFull => PgSslMode::VerifyFull,
    });
    if let Some(ca) = &tls.ca_pem {
        options = options.ssl_root_cert_from_pem(ca.clone().into_bytes());
    }
    if let Some(identity) = &tls.identity {
        options = options
            .ssl_client_cert_from_pem(identity.cert_pem.as_bytes())
            .ssl_client_key_from_pem(identity.key_pem.expose_secret().as_bytes());
    }
    Ok(options)
}

/// A database error explained as a configuration mistake when TLS caused it (an
/// unknown CA, a refused client certificate), naming the setting.
pub fn explain_tls(error: &sqlx::Error) -> Option<ConfigError> {
    payhook_shared::tls::explain("postgres.tls", error)
}

fn config_error(message: String) -> sqlx::Error {
    sqlx::Error::Configuration(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_races_and_outages_are_transient_bad_data_is_not() {
        for code in ["40001", "40P01", "55P03", "57P01", "53300", "08006"] {
            assert!(transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "22P02", "23514", "42P01"] {
            assert!(!transient_sqlstate(code), "{code}");
        }
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::PoolClosed));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
    }

    #[test]
    fn schema_names_are_checked_before_they_reach_sql() {
        assert!(check_schema_name("payhook_1").is_ok());
        for bad in ["", "Public", "a\"b", "a b", "x;drop"] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }
}
