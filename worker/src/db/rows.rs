//! The SQL of the apply path, one function per write. Each insert is guarded by its
//! table's unique key; callers hold the transaction (see [`super::apply`]).

use payhook_shared::event::Envelope;
use sqlx::PgConnection;
use sqlx::types::Json;
use time::OffsetDateTime;

use super::apply::ApplyError;
use super::cloudevents::CloudEvent;
use super::facts::{Next, source_label, status_label};
use super::state::PaymentState;

/// Inserts the audit row; `false` when this notification was already recorded.
pub(super) async fn record_notification(
    conn: &mut PgConnection,
    envelope: &Envelope,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO notifications (event_id, provider, merchant, kind, status, source,
             out_trade_no, transition_key, request_id, received_at, outcome, envelope)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'recorded', $11)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&envelope.event_id)
    .bind(envelope.provider.as_str())
    .bind(&envelope.merchant)
    .bind(envelope.kind.as_str())
    .bind(status_label(envelope.status))
    .bind(source_label(envelope))
    .bind(&envelope.fields.out_trade_no)
    .bind(&envelope.transition_key)
    .bind(&envelope.request_id)
    .bind(envelope.received_at)
    .bind(Json(envelope))
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The locked payment row, as the transaction found it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct Payment {
    pub(super) id: i64,
    #[sqlx(try_from = "String")]
    pub(super) state: PaymentState,
    pub(super) registered: bool,
    pub(super) expected_amount: Option<i64>,
    pub(super) currency: String,
    pub(super) expected_app_id: Option<String>,
    pub(super) expected_mch_id: Option<String>,
    pub(super) expected_payee: Option<String>,
    pub(super) total_amount: Option<i64>,
    pub(super) paid_amount: Option<i64>,
    pub(super) refunded_amount: i64,
    pub(super) provider_trade_no: Option<String>,
    pub(super) paid_at: Option<OffsetDateTime>,
    pub(super) closed_at: Option<OffsetDateTime>,
}

/// Creates the payment row if needed and locks it until the transaction ends: the
/// upsert takes the row lock, so concurrent notifications of one order queue here.
pub(super) async fn lock_payment(
    conn: &mut PgConnection,
    envelope: &Envelope,
    out_trade_no: &str,
) -> Result<Payment, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO payments (provider, merchant, out_trade_no, currency)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (provider, merchant, out_trade_no) DO UPDATE SET updated_at = now()
         RETURNING id, state, registered, expected_amount, currency, expected_app_id,
                   expected_mch_id, expected_payee, total_amount, paid_amount,
                   refunded_amount, provider_trade_no, paid_at, closed_at",
    )
    .bind(envelope.provider.as_str())
    .bind(&envelope.merchant)
    .bind(out_trade_no)
    .bind(&envelope.fields.currency)
    .fetch_one(conn)
    .await
}

/// The ledger row; `None` when the transition was already applied.
pub(super) async fn insert_transition(
    conn: &mut PgConnection,
    key: &str,
    payment: &Payment,
    kind: &str,
    envelope: &Envelope,
    to_state: PaymentState,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO transitions (transition_key, payment_id, kind, status, from_state,
             to_state, event_id, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (transition_key) DO NOTHING
         RETURNING id",
    )
    .bind(key)
    .bind(payment.id)
    .bind(kind)
    .bind(status_label(envelope.status))
    .bind(payment.state.as_str())
    .bind(to_state.as_str())
    .bind(&envelope.event_id)
    .bind(source_label(envelope))
    .fetch_optional(conn)
    .await
}

pub(super) async fn update_payment(
    conn: &mut PgConnection,
    id: i64,
    next: &Next,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payments SET state = $2, total_amount = $3, paid_amount = $4,
             refunded_amount = $5, provider_trade_no = $6, paid_at = $7, closed_at = $8,
             updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(next.state.as_str())
    .bind(next.total_amount)
    .bind(next.paid_amount)
    .bind(next.refunded_amount)
    .bind(&next.provider_trade_no)
    .bind(next.paid_at)
    .bind(next.closed_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Flags the payment for a person; its state is left as it was.
pub(super) async fn mark_quarantined(
    conn: &mut PgConnection,
    id: i64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payments SET quarantined = TRUE, quarantine_reason = $2, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// The refund row of a refund transition. A terminal status (succeeded, closed) is
/// never overwritten: a late `ABNORMAL` does not undo a success.
pub(super) async fn upsert_refund(
    conn: &mut PgConnection,
    payment_id: i64,
    envelope: &Envelope,
) -> Result<(), sqlx::Error> {
    refund_query(
        "ON CONFLICT (provider, merchant, out_refund_no) DO UPDATE SET
             status = CASE WHEN refunds.status IN ('REFUND_SUCCEEDED', 'REFUND_CLOSED')
                           THEN refunds.status ELSE EXCLUDED.status END,
             amount = COALESCE(EXCLUDED.amount, refunds.amount),
             amount_cumulative = CASE WHEN EXCLUDED.amount IS NULL
                           THEN refunds.amount_cumulative ELSE EXCLUDED.amount_cumulative END,
             provider_refund_no = COALESCE(refunds.provider_refund_no,
                                           EXCLUDED.provider_refund_no),
             updated_at = now()",
        conn,
        payment_id,
        envelope,
    )
    .await
}

/// A refund in progress has no transition; its row is created if it is the first
/// word about that refund, and never overwrites a later status.
pub(super) async fn note_refund_in_progress(
    conn: &mut PgConnection,
    payment_id: i64,
    envelope: &Envelope,
) -> Result<(), sqlx::Error> {
    refund_query(
        "ON CONFLICT (provider, merchant, out_refund_no) DO NOTHING",
        conn,
        payment_id,
        envelope,
    )
    .await
}

async fn refund_query(
    on_conflict: &str,
    conn: &mut PgConnection,
    payment_id: i64,
    envelope: &Envelope,
) -> Result<(), sqlx::Error> {
    let f = &envelope.fields;
    // Alipay full refunds may come without out_biz_no: the trade is the refund (the
    // same rule as the transition key).
    let out_refund_no = f.out_refund_no.as_ref().or(f.out_trade_no.as_ref());
    let sql = format!(
        "INSERT INTO refunds (payment_id, provider, merchant, out_refund_no, status, amount,
             amount_cumulative, provider_refund_no)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) {on_conflict}"
    );
    sqlx::query(&sql)
        .bind(payment_id)
        .bind(envelope.provider.as_str())
        .bind(&envelope.merchant)
        .bind(out_refund_no)
        .bind(status_label(envelope.status))
        .bind(f.refund_amount)
        .bind(f.refund_amount_cumulative)
        .bind(&f.provider_refund_no)
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn insert_outbox(
    conn: &mut PgConnection,
    transition_id: i64,
    event: &CloudEvent,
) -> Result<(), ApplyError> {
    let payload = event
        .to_json()
        .map_err(|e| ApplyError::Permanent(format!("event document: {e}")))?;
    sqlx::query(
        "INSERT INTO outbox (event_id, transition_id, routing_key, payload)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(event.id)
    .bind(transition_id)
    .bind(event.routing_key())
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(())
}
