//! Bounded storage: the worker deletes raw notifications and published outbox rows
//! past their retention, and redacts buyer identifiers in stored notifications, in
//! small batches — one short transaction per statement, never a long lock — one pass
//! every `retention.interval_secs`. Payments, transitions, refunds and the audit trail
//! are kept.
//!
//! - Notifications go by `recorded_at` (indexed), oldest first. A deleted
//!   notification was also its dedup record; the providers stop resending within a
//!   day, and a resend after that still meets the transition ledger's unique keys.
//! - Outbox rows go by id from the lowest (ids follow time), published ones only; the
//!   walk stops at the first row created after the cutoff, so a pass reads only what
//!   it may delete plus one page.
//! - Redaction walks `recorded_at` from where the last pass stopped (kept in
//!   `retention_state`), so redacted rows are not read again.
//! - How far each went is recorded in `retention_state`; a payment's history says so.
//!
//! Several workers may prune at once: a transaction-scoped advisory lock lets one
//! statement run at a time, the others skip the step and try next pass.

use std::time::Duration;

use payhook_shared::config::RetentionSettings;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The advisory lock key of pruning (any fixed number payhook uses nowhere else).
const LOCK_KEY: i64 = 0x7061_7968_6f6f_6b01;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    pub notifications_deleted: u64,
    pub events_deleted: u64,
    pub notifications_redacted: u64,
}

/// The pruner (see the module documentation).
#[derive(Debug, Clone)]
pub struct Retention {
    pool: PgPool,
    settings: RetentionSettings,
    metrics: Metrics,
}

fn days(n: u32) -> time::Duration {
    time::Duration::days(i64::from(n))
}

impl Retention {
    pub fn new(pool: PgPool, settings: RetentionSettings, metrics: Metrics) -> Self {
        Self {
            pool,
            settings,
            metrics,
        }
    }

    /// Runs a pass every `interval_secs` until `shutdown` (the first one a minute after
    /// start, off the start-up's busy seconds).
    pub async fn run(self, shutdown: CancellationToken) {
        if !self.settings.enabled {
            return;
        }
        let mut wait =
            Duration::from_secs(60).min(Duration::from_secs(self.settings.interval_secs));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = Duration::from_secs(self.settings.interval_secs);
            match self.pass(OffsetDateTime::now_utc(), &shutdown).await {
                Ok(report) if report != PassReport::default() => {
                    tracing::info!(?report, "retention pass");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "retention pass failed; next pass retries"),
            }
        }
    }

    /// One pass as of `now`: every step until nothing is left or `stop` fires.
    pub async fn pass(
        &self,
        now: OffsetDateTime,
        stop: &CancellationToken,
    ) -> Result<PassReport, sqlx::Error> {
        let s = &self.settings;
        let mut report = PassReport::default();
        let batch = i64::from(s.batch);

        // A horizon is recorded only when its step ran to the end (not when another
        // worker held the lock or `stop` fired): the history must not claim more.
        let cutoff = now - days(s.notifications_days);
        let mut complete = false;
        loop {
            let Some(deleted) = self
                .locked(
                    sqlx::query(
                        "DELETE FROM notifications WHERE event_id IN (
                             SELECT event_id FROM notifications WHERE recorded_at < $1
                             ORDER BY recorded_at LIMIT $2)",
                    )
                    .bind(cutoff)
                    .bind(batch),
                )
                .await?
            else {
                break;
            };
            report.notifications_deleted += deleted;
            self.metrics.retention_deleted("notifications", deleted);
            if deleted < s.batch.into() {
                complete = true;
                break;
            }
            if stop.is_cancelled() {
                break;
            }
        }
        if complete {
            self.mark("notifications", cutoff).await?;
        }

        let cutoff = now - days(s.published_events_days);
        let mut after = 0_i64;
        let mut complete = false;
        loop {
            let page: Vec<(i64, OffsetDateTime, Option<OffsetDateTime>)> = sqlx::query_as(
                "SELECT id, created_at, published_at FROM outbox WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(batch)
            .fetch_all(&self.pool)
            .await?;
            let Some(&(last, _, _)) = page.last() else {
                complete = true;
                break;
            };
            let reached_now = page.iter().any(|(_, created, _)| *created >= cutoff);
            let old: Vec<i64> = page
                .iter()
                .filter(|(_, _, published)| published.is_some_and(|at| at < cutoff))
                .map(|(id, _, _)| *id)
                .collect();
            if !old.is_empty() {
                let Some(deleted) = self
                    .locked(
                        sqlx::query("DELETE FROM outbox WHERE id = ANY($1) AND published_at < $2")
                            .bind(&old)
                            .bind(cutoff),
                    )
                    .await?
                else {
                    break;
                };
                report.events_deleted += deleted;
                self.metrics.retention_deleted("outbox", deleted);
            }
            if reached_now || page.len() < s.batch as usize {
                complete = true;
                break;
            }
            if stop.is_cancelled() {
                break;
            }
            after = last;
        }
        if complete {
            self.mark("events", cutoff).await?;
        }

        if s.redact_buyer_after_days > 0 {
            report.notifications_redacted = self
                .redact(now - days(s.redact_buyer_after_days), batch, stop)
                .await?;
        }
        Ok(report)
    }

    /// Redacts notifications recorded before `cutoff`, from where the last pass
    /// stopped.
    async fn redact(
        &self,
        cutoff: OffsetDateTime,
        batch: i64,
        stop: &CancellationToken,
    ) -> Result<u64, sqlx::Error> {
        let mut from: OffsetDateTime =
            sqlx::query_scalar("SELECT before FROM retention_state WHERE what = 'redaction'")
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut redacted = 0;
        let mut complete = false;
        loop {
            let rows: Vec<(String, String, OffsetDateTime)> = sqlx::query_as(
                "SELECT event_id, envelope::text, recorded_at FROM notifications
                 WHERE recorded_at >= $1 AND recorded_at < $2 AND redacted_at IS NULL
                 ORDER BY recorded_at LIMIT $3",
            )
            .bind(from)
            .bind(cutoff)
            .bind(batch)
            .fetch_all(&self.pool)
            .await?;
            let Some(last) = rows.last().map(|row| row.2) else {
                complete = true;
                break;
            };
            let mut ids = Vec::with_capacity(rows.len());
            let mut envelopes = Vec::with_capacity(rows.len());
            for (event_id, envelope, _) in &rows {
                // An envelope that is not one (never written by payhook) is replaced
                // whole rather than kept unredacted.
                let redacted = payhook_shared::redact::redact_envelope(envelope)
                    .unwrap_or_else(|| "{\"redacted\":true}".to_owned());
                ids.push(event_id.clone());
                envelopes.push(redacted);
            }
            let Some(updated) = self
                .locked(
                    sqlx::query(
                        "UPDATE notifications n SET envelope = r.envelope::json, redacted_at = now()
                         FROM unnest($1::text[], $2::text[]) AS r(event_id, envelope)
                         WHERE n.event_id = r.event_id AND n.redacted_at IS NULL",
                    )
                    .bind(&ids)
                    .bind(&envelopes),
                )
                .await?
            else {
                break;
            };
            redacted += updated;
            self.metrics.retention_redacted(updated);
            from = last;
            if rows.len() < batch as usize {
                complete = true;
                break;
            }
            if stop.is_cancelled() {
                break;
            }
        }
        self.mark("redaction", if complete { cutoff } else { from })
            .await?;
        Ok(redacted)
    }

    /// Runs `statement` in its own transaction under the pruning lock; `None` when
    /// another worker holds the lock.
    async fn locked(
        &self,
        statement: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Option<u64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *tx)
            .await?;
        if !mine {
            return Ok(None);
        }
        let affected = statement.execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(Some(affected))
    }

    /// Records that everything before `before` of `what` is pruned (never moves back).
    async fn mark(&self, what: &str, before: OffsetDateTime) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO retention_state (what, before) VALUES ($1, $2)
             ON CONFLICT (what) DO UPDATE
             SET before = GREATEST(retention_state.before, EXCLUDED.before), updated_at = now()",
        )
        .bind(what)
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
