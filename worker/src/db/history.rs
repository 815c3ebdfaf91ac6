//! Everything payhook knows about one payment, for the admin API and for tests: the
//! payment row, its transitions in the order they were applied, its refunds, the
//! notifications that named it and the events announced.

use payhook_shared::event::Provider;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::state::PaymentState;

/// One payment's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentHistory {
    pub payment: PaymentRecord,
    /// In the order they were applied.
    pub transitions: Vec<TransitionRecord>,
    pub refunds: Vec<RefundRecord>,
    /// In the order they were recorded.
    pub notifications: Vec<NotificationRecord>,
    /// Outbox rows, in relay order.
    pub events: Vec<EventRecord>,
    /// What retention removed: notifications recorded and events published before
    /// these times are gone (`null`: nothing was pruned yet); buyer identifiers of
    /// notifications recorded before `redacted_before` are redacted.
    pub retention: RetentionNote,
}

/// How far retention went (see [`PaymentHistory::retention`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RetentionNote {
    #[serde(with = "time::serde::rfc3339::option")]
    pub notifications_pruned_before: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub events_pruned_before: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub redacted_before: Option<OffsetDateTime>,
}

/// A `payments` row. Amounts in fen.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct PaymentRecord {
    pub id: i64,
    pub provider: String,
    pub merchant: String,
    pub out_trade_no: String,
    #[sqlx(try_from = "String")]
    pub state: PaymentState,
    pub registered: bool,
    pub expected_amount: Option<i64>,
    pub currency: String,
    pub expected_app_id: Option<String>,
    pub expected_mch_id: Option<String>,
    pub expected_payee: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub total_amount: Option<i64>,
    pub paid_amount: Option<i64>,
    pub refunded_amount: i64,
    pub provider_trade_no: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub paid_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    pub quarantined: bool,
    pub quarantine_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A ledger row.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct TransitionRecord {
    pub id: i64,
    pub transition_key: String,
    /// `payment`, `refund`, `close` or `quarantine`.
    pub kind: String,
    pub status: String,
    #[sqlx(try_from = "String")]
    pub from_state: PaymentState,
    #[sqlx(try_from = "String")]
    pub to_state: PaymentState,
    pub event_id: String,
    pub source: String,
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
}

/// A `refunds` row.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct RefundRecord {
    pub out_refund_no: String,
    pub status: String,
    pub amount: Option<i64>,
    pub amount_cumulative: bool,
    pub provider_refund_no: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A notification that named the payment (its raw body stays in the database).
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct NotificationRecord {
    pub event_id: String,
    pub kind: String,
    pub status: String,
    pub source: String,
    /// `applied`, `duplicate_transition`, `quarantined` or `recorded`.
    pub outcome: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

/// An outbox row: the CloudEvent and whether it was relayed.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct EventRecord {
    pub event_id: Uuid,
    pub routing_key: String,
    pub payload: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub published_at: Option<OffsetDateTime>,
}

/// The history of `(provider, merchant, out_trade_no)`, `None` if payhook never heard
/// of it. One snapshot: read in a REPEATABLE READ transaction.
pub async fn payment_history(
    pool: &PgPool,
    provider: Provider,
    merchant: &str,
    out_trade_no: &str,
) -> Result<Option<PaymentHistory>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let payment: Option<PaymentRecord> = sqlx::query_as(
        "SELECT id, provider, merchant, out_trade_no, state, registered, expected_amount,
                currency, expected_app_id, expected_mch_id, expected_payee, expires_at,
                total_amount, paid_amount, refunded_amount, provider_trade_no, paid_at,
                closed_at, quarantined, quarantine_reason, created_at, updated_at
         FROM payments WHERE provider = $1 AND merchant = $2 AND out_trade_no = $3",
    )
    .bind(provider.as_str())
    .bind(merchant)
    .bind(out_trade_no)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(payment) = payment else {
        return Ok(None);
    };
    let transitions = sqlx::query_as(
        "SELECT id, transition_key, kind, status, from_state, to_state, event_id, source,
                applied_at
         FROM transitions WHERE payment_id = $1 ORDER BY id",
    )
    .bind(payment.id)
    .fetch_all(&mut *tx)
    .await?;
    let refunds = sqlx::query_as(
        "SELECT out_refund_no, status, amount, amount_cumulative, provider_refund_no,
                updated_at
         FROM refunds WHERE payment_id = $1 ORDER BY id",
    )
    .bind(payment.id)
    .fetch_all(&mut *tx)
    .await?;
    let notifications = sqlx::query_as(
        "SELECT event_id, kind, status, source, outcome, received_at, recorded_at
         FROM notifications
         WHERE provider = $1 AND merchant = $2 AND out_trade_no = $3
         ORDER BY recorded_at, event_id",
    )
    .bind(provider.as_str())
    .bind(merchant)
    .bind(out_trade_no)
    .fetch_all(&mut *tx)
    .await?;
    let events = sqlx::query_as(
        "SELECT o.event_id, o.routing_key, o.payload, o.created_at, o.published_at
         FROM outbox o JOIN transitions t ON t.id = o.transition_id
         WHERE t.payment_id = $1 ORDER BY o.id",
    )
    .bind(payment.id)
    .fetch_all(&mut *tx)
    .await?;
    let horizons: Vec<(String, OffsetDateTime)> =
        sqlx::query_as("SELECT what, before FROM retention_state")
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    let horizon = |what: &str| {
        horizons
            .iter()
            .find(|(name, _)| name == what)
            .map(|(_, before)| *before)
    };
    let retention = RetentionNote {
        notifications_pruned_before: horizon("notifications"),
        events_pruned_before: horizon("events"),
        redacted_before: horizon("redaction"),
    };
    Ok(Some(PaymentHistory {
        payment,
        transitions,
        refunds,
        notifications,
        events,
        retention,
    }))
}

/// The payments payhook heard of most recently (newest first), optionally only those in
/// one state: what an operator watches while notifications arrive. Ordered by id, which
/// the primary key serves: indexing `updated_at` would cost every payment update its
/// HOT update.
pub async fn recent_payments(
    pool: &PgPool,
    limit: i64,
    state: Option<PaymentState>,
) -> Result<Vec<PaymentRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, provider, merchant, out_trade_no, state, registered, expected_amount,
                currency, expected_app_id, expected_mch_id, expected_payee, expires_at,
                total_amount, paid_amount, refunded_amount, provider_trade_no, paid_at,
                closed_at, quarantined, quarantine_reason, created_at, updated_at
         FROM payments WHERE $2::text IS NULL OR state = $2
         ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .bind(state.map(PaymentState::as_str))
    .fetch_all(pool)
    .await
}
