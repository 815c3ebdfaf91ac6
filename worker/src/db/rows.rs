//! The SQL of the apply path. Each insert is guarded by its table's unique key; callers
//! hold the transaction (see [`super::apply`]). The common path is two statements —
//! [`record_and_lock_payment`] and [`apply_transition`] — each folding several writes
//! into data-modifying CTEs, because every statement is a round trip to the database.

use payhook_shared::event::Envelope;
use sqlx::postgres::PgArguments;
use sqlx::{PgConnection, PgExecutor, Postgres};

use super::cloudevents::Emitted;
use super::error::ApplyError;
use super::facts::{Next, is_refund, source_label, status_label};
use super::locked::Payment;
use super::state::PaymentState;

/// The audit row's insert. `ON CONFLICT DO NOTHING` on `event_id` is the dedup guard:
/// `RETURNING` yields no row for a notification already recorded. The outcome is
/// written with the row (`$11`), the one the caller expects; only an apply that ends
/// otherwise rewrites it ([`set_outcome`]), so the common path writes the row once.
/// (A macro so that [`record_and_lock_payment`] can embed it with `concat!`.)
macro_rules! insert_notification {
    () => {
        "INSERT INTO notifications (event_id, provider, merchant, kind, status, source,
             out_trade_no, transition_key, request_id, received_at, outcome, envelope)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::json)
         ON CONFLICT (event_id) DO NOTHING
         RETURNING 1"
    };
}

/// The envelope as the audit row stores it (`notifications.envelope`, json).
pub(super) fn envelope_json(envelope: &Envelope) -> Result<String, sqlx::Error> {
    serde_json::to_string(envelope).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Binds `$1`–`$12` of `insert_notification!()`.
fn bind_notification<'q, O>(
    query: sqlx::query::QueryAs<'q, Postgres, O, PgArguments>,
    envelope: &'q Envelope,
    outcome: &'static str,
) -> Result<sqlx::query::QueryAs<'q, Postgres, O, PgArguments>, sqlx::Error> {
    let document = envelope_json(envelope)?;
    Ok(query
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
        .bind(outcome)
        .bind(document))
}

/// Inserts the audit row of a notification that names no payment, with its final
/// `outcome`; `false` when this notification was already recorded. One statement,
/// so it needs no transaction of its own.
pub(super) async fn record_notification(
    db: impl PgExecutor<'_>,
    envelope: &Envelope,
    outcome: &'static str,
) -> Result<bool, sqlx::Error> {
    let query = sqlx::query_as::<_, (i32,)>(insert_notification!());
    let inserted = bind_notification(query, envelope, outcome)?
        .fetch_optional(db)
        .await?;
    Ok(inserted.is_some())
}

/// Rewrites the audit row's outcome when the apply ended otherwise than expected
/// when the row was inserted (a duplicate transition, a quarantine).
pub(super) async fn set_outcome(
    conn: &mut PgConnection,
    event_id: &str,
    outcome: &'static str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE notifications SET outcome = $2 WHERE event_id = $1")
        .bind(event_id)
        .bind(outcome)
        .execute(conn)
        .await?;
    Ok(())
}

/// Creates a payment row from `$source` (provider, merchant, out_trade_no, currency) if
/// it does not exist, and returns it locked either way: the upsert takes the row lock.
macro_rules! upsert_payment {
    ($source:expr) => {
        concat!(
            "INSERT INTO payments (provider, merchant, out_trade_no, currency) ",
            $source,
            " ON CONFLICT (provider, merchant, out_trade_no) DO UPDATE SET updated_at = now()
             RETURNING id, state, registered, expected_amount, currency, expected_app_id,
                       expected_mch_id, expected_payee, total_amount, paid_amount,
                       refunded_amount, provider_trade_no, paid_at, closed_at"
        )
    };
}

/// In one statement: inserts the audit row (with `outcome`, as [`record_notification`])
/// and, only if it was new, creates the payment row if needed and locks it until the
/// transaction ends — the upsert takes the row lock, so concurrent notifications of one
/// order queue here. `None` when this notification was already recorded: nothing was
/// written.
pub(super) async fn record_and_lock_payment(
    conn: &mut PgConnection,
    envelope: &Envelope,
    out_trade_no: &str,
    outcome: &'static str,
) -> Result<Option<Payment>, sqlx::Error> {
    // The payment upsert reads the audit insert's RETURNING, so it runs only when the
    // notification is new (a duplicate leaves the payment row untouched and unlocked).
    const SQL: &str = concat!(
        "WITH n AS (",
        insert_notification!(),
        ") ",
        upsert_payment!("SELECT $2, $3, $13, $14 FROM n")
    );
    bind_notification(sqlx::query_as(SQL), envelope, outcome)?
        .bind(out_trade_no)
        .bind(&envelope.fields.currency)
        .fetch_optional(conn)
        .await
}

/// Creates the payment row and thereby locks it, for an envelope whose audit row is
/// already written (the batch path's payment nobody knew). `None` when another
/// transaction created it meanwhile: nothing was written.
pub(super) async fn create_payment(
    conn: &mut PgConnection,
    envelope: &Envelope,
    out_trade_no: &str,
) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO payments (provider, merchant, out_trade_no, currency)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (provider, merchant, out_trade_no) DO NOTHING
         RETURNING id, state, registered, expected_amount, currency, expected_app_id,
                   expected_mch_id, expected_payee, total_amount, paid_amount,
                   refunded_amount, provider_trade_no, paid_at, closed_at",
    )
    .bind(envelope.provider.as_str())
    .bind(&envelope.merchant)
    .bind(out_trade_no)
    .bind(&envelope.fields.currency)
    .fetch_optional(conn)
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

/// How a refund transition updates an existing refund row. A terminal status
/// (succeeded, closed) is never overwritten: a late `ABNORMAL` does not undo a success.
macro_rules! refund_transition_conflict {
    () => {
        "ON CONFLICT (provider, merchant, out_refund_no) DO UPDATE SET
             status = CASE WHEN refunds.status IN ('REFUND_SUCCEEDED', 'REFUND_CLOSED')
                           THEN refunds.status ELSE EXCLUDED.status END,
             amount = COALESCE(EXCLUDED.amount, refunds.amount),
             amount_cumulative = CASE WHEN EXCLUDED.amount IS NULL
                           THEN refunds.amount_cumulative ELSE EXCLUDED.amount_cumulative END,
             provider_refund_no = COALESCE(refunds.provider_refund_no,
                                           EXCLUDED.provider_refund_no),
             updated_at = now()"
    };
}

/// A transition and all its effects, in one statement keyed on the ledger insert:
/// the ledger row (`t`, `ON CONFLICT (transition_key) DO NOTHING`), and only if that
/// returned a row, the payment's new facts (`p`), the outbox event tied to the ledger
/// row (`o`) and, for a refund transition, the refund row (`r`). Data-modifying CTEs
/// all run to completion whether or not the final `SELECT` reads them, and each one
/// after `t` reads `t`: a transition already applied writes nothing.
macro_rules! apply_transition_sql {
    ($refund:expr) => {
        concat!(
            "WITH t AS (
                 INSERT INTO transitions (transition_key, payment_id, kind, status,
                     from_state, to_state, event_id, source)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (transition_key) DO NOTHING
                 RETURNING id
             ), p AS (
                 UPDATE payments SET state = $9, total_amount = $10, paid_amount = $11,
                     refunded_amount = $12, provider_trade_no = $13, paid_at = $14,
                     closed_at = $15, updated_at = now()
                 WHERE id = $2 AND EXISTS (SELECT 1 FROM t)
             ), o AS (
                 INSERT INTO outbox (event_id, transition_id, routing_key, payload)
                 SELECT $16, t.id, $17, $18::json FROM t
             )",
            $refund,
            " SELECT id FROM t"
        )
    };
}

/// What [`apply_transition`] writes.
pub(super) struct Transition<'a> {
    pub(super) key: &'a str,
    pub(super) payment: &'a Payment,
    pub(super) envelope: &'a Envelope,
    pub(super) next: &'a Next,
    /// The event, serialized once: the row gets these bytes and so does the publish.
    pub(super) event: &'a Emitted,
}

/// Applies a transition (see `apply_transition_sql!`); returns the ledger row's id,
/// `None` when the transition was already applied (then nothing was written).
pub(super) async fn apply_transition(
    conn: &mut PgConnection,
    t: &Transition<'_>,
) -> Result<Option<i64>, ApplyError> {
    const PLAIN: &str = apply_transition_sql!("");
    const WITH_REFUND: &str = apply_transition_sql!(concat!(
        ", r AS (
             INSERT INTO refunds (payment_id, provider, merchant, out_refund_no, status,
                 amount, amount_cumulative, provider_refund_no)
             SELECT $2, $19, $20, $21, $4, $22, $23, $24 FROM t ",
        refund_transition_conflict!(),
        ")"
    ));
    let envelope = t.envelope;
    let refund = is_refund(envelope.status);
    let query = sqlx::query_scalar(if refund { WITH_REFUND } else { PLAIN })
        .bind(t.key)
        .bind(t.payment.id)
        .bind(envelope.kind.as_str())
        .bind(status_label(envelope.status))
        .bind(t.payment.state.as_str())
        .bind(t.next.state.as_str())
        .bind(&envelope.event_id)
        .bind(source_label(envelope))
        .bind(t.next.state.as_str())
        .bind(t.next.total_amount)
        .bind(t.next.paid_amount)
        .bind(t.next.refunded_amount)
        .bind(&t.next.provider_trade_no)
        .bind(t.next.paid_at)
        .bind(t.next.closed_at)
        .bind(t.event.event_id)
        .bind(&t.event.routing_key)
        .bind(&t.event.payload);
    let query = if refund {
        let f = &envelope.fields;
        query
            .bind(envelope.provider.as_str())
            .bind(&envelope.merchant)
            .bind(refund_number(envelope))
            .bind(f.refund_amount)
            .bind(f.refund_amount_cumulative)
            .bind(&f.provider_refund_no)
    } else {
        query
    };
    Ok(query.fetch_optional(conn).await?)
}

/// Alipay full refunds may come without out_biz_no: the trade is the refund (the
/// same rule as the transition key).
pub(super) fn refund_number(envelope: &Envelope) -> Option<&String> {
    let f = &envelope.fields;
    f.out_refund_no.as_ref().or(f.out_trade_no.as_ref())
}

/// A refund in progress has no transition; its row is created if it is the first
/// word about that refund, and never overwrites a later status.
pub(super) async fn note_refund_in_progress(
    conn: &mut PgConnection,
    payment_id: i64,
    envelope: &Envelope,
) -> Result<(), sqlx::Error> {
    let f = &envelope.fields;
    sqlx::query(
        "INSERT INTO refunds (payment_id, provider, merchant, out_refund_no, status, amount,
             amount_cumulative, provider_refund_no)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (provider, merchant, out_refund_no) DO NOTHING",
    )
    .bind(payment_id)
    .bind(envelope.provider.as_str())
    .bind(&envelope.merchant)
    .bind(refund_number(envelope))
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
    event: &Emitted,
) -> Result<(), ApplyError> {
    sqlx::query(
        "INSERT INTO outbox (event_id, transition_id, routing_key, payload)
         VALUES ($1, $2, $3, $4::json)",
    )
    .bind(event.event_id)
    .bind(transition_id)
    .bind(&event.routing_key)
    .bind(&event.payload)
    .execute(conn)
    .await?;
    Ok(())
}
