//! The scenario's database: a fresh schema (`chaos_<random>`) on the shared server or
//! on a private cluster, migrated by the worker's own code, dropped on `Drop`.

use payhook_shared::config::{PostgresSettings, Secret};
use sqlx::PgPool;

#[derive(Debug)]
pub struct ChaosDb {
    pub settings: PostgresSettings,
    pub pool: PgPool,
    /// The database URL without the application name (for cleanup).
    url: String,
    /// The URL payhook's processes use, tagged with the schema (for cleanup).
    pub tagged_url: String,
    /// Leave the schema for a post-mortem (a failed scenario).
    pub keep: bool,
}

impl ChaosDb {
    pub async fn new(url: &str) -> anyhow::Result<Self> {
        let schema = format!("chaos_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let separator = if url.contains('?') { '&' } else { '?' };
        let tagged_url = format!("{url}{separator}application_name={schema}");
        let settings = PostgresSettings {
            url: Secret::inline(tagged_url.clone()),
            sslmode: None,
            tls: Default::default(),
            schema,
            max_connections: 8,
            acquire_timeout_ms: 5_000,
        };
        let pool = payhook_worker::db::connect(&settings).await?;
        Ok(Self {
            settings,
            pool,
            url: url.to_owned(),
            tagged_url,
            keep: false,
        })
    }
}

impl Drop for ChaosDb {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        payhook_testkit::db::drop_schema_blocking(self.url.clone(), self.settings.schema.clone());
    }
}
