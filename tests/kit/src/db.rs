//! A private PostgreSQL schema per test on the shared test database: created and
//! migrated by the worker's own [`payhook_worker::db::connect`], dropped on `Drop` —
//! also when the test panicked.

use std::time::Duration;

use payhook_shared::config::{PostgresSettings, Secret};
use sqlx::{Connection as _, PgConnection, PgPool};

/// The test database (`PAYHOOK_TEST_DATABASE_URL`, default the local `test` database).
pub fn database_url() -> String {
    std::env::var("PAYHOOK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh, migrated schema `t_<random>` and a pool whose connections use it.
#[derive(Debug)]
pub struct TestDb {
    pub settings: PostgresSettings,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        let schema = format!("t_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let settings = PostgresSettings {
            url: Secret::inline(with_application_name(&database_url(), &schema)),
            sslmode: None,
            tls: Default::default(),
            schema,
            max_connections: 8,
            // Generous: parallel test binaries share one server.
            acquire_timeout_ms: 15_000,
        };
        let pool = payhook_worker::db::connect(&settings)
            .await
            .expect("test database reachable and migrations apply");
        Self { settings, pool }
    }

    pub fn schema(&self) -> &str {
        &self.settings.schema
    }
}

/// Tags the test's connections with its schema name, so that cleanup can end the
/// ones a panicking test left inside a transaction (they would block the DROP).
fn with_application_name(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={schema}")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_schema_blocking(database_url(), self.settings.schema.clone());
    }
}

/// Drops `schema` (and ends the connections tagged with its name, which a panicking
/// test may have left inside a transaction). For `Drop`, which cannot await while the
/// test's runtime may be a single thread blocked right here: a fresh connection on a
/// private runtime in a thread.
pub fn drop_schema_blocking(url: String, schema: String) {
    crate::harness::block_on_detached(move || async move {
        let connect = PgConnection::connect(&url);
        let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(5), connect).await else {
            return;
        };
        let _ = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&schema)
        .execute(&mut conn)
        .await;
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    });
}
