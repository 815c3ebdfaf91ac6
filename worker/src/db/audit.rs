//! The audit trail of operate actions (`admin_audit`).

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::OffsetDateTime;

/// One audit record.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The token's name (`worker.admin_tokens`), or `payhook-admin:<user>`.
    pub actor: String,
    /// `register_order`, `register_refund`, `reconcile`, `replay_parked`.
    pub action: String,
    /// What it acted on, e.g. `alipay/m1/O1`.
    pub target: String,
    /// How it ended, e.g. `created`, `conflict: amount differs`, `error`.
    pub result: String,
}

/// Writes one record and logs it (target `audit`). A failed write is logged, never
/// hidden: the action already happened.
pub async fn record(pool: &PgPool, actor: &str, action: &str, target: &str, result: &str) {
    // Targets come from requests: no control characters in the log or the table
    // (PostgreSQL refuses NUL in text).
    let target = target.replace(char::is_control, "\u{fffd}");
    let result = result.replace(char::is_control, "\u{fffd}");
    let (target, result) = (target.as_str(), result.as_str());
    tracing::info!(target: "audit", actor, action, target, result, "operate action");
    let written = sqlx::query(
        "INSERT INTO admin_audit (actor, action, target, result) VALUES ($1, $2, $3, $4)",
    )
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(result)
    .execute(pool)
    .await;
    if let Err(error) = written {
        tracing::error!(%error, actor, action, target, result, "audit record not written");
    }
}

/// The newest `limit` records, newest first.
pub async fn recent(pool: &PgPool, limit: i64) -> Result<Vec<AuditRecord>, sqlx::Error> {
    sqlx::query_as::<_, AuditRecord>(
        "SELECT id, at, actor, action, target, result FROM admin_audit ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}
