//! The SQL of a batch applied as a whole (see [`super::apply::apply_batch`]): the two
//! statements of the apply path, each written once for every envelope of the batch
//! (`unnest` of one array per column), so a batch of any size costs `BEGIN`, two
//! statements and `COMMIT`. The guards are those of [`super::rows`], row by row: the
//! audit row's `event_id`, the payment's unique key (upserted, hence locked), the
//! ledger's `transition_key`, and the outbox row tied to the ledger row.
//!
//! A batch goes this way only when no two of its envelopes name the same payment, the
//! same transition or the same refund, and no two are the same notification
//! (`apply::bulk_eligible`): then no row of one statement
//! depends on another row of the same statement, which a statement cannot see (and
//! `ON CONFLICT DO UPDATE` refuses to touch one row twice).

use std::collections::HashSet;

use payhook_shared::event::Envelope;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::apply::ApplyError;
use super::facts::{is_refund, source_label, status_label};
use super::rows::{Payment, Transition, refund_number};

/// How a bulk transaction begins (one round trip): the statements below join their
/// arrays to `payments` and `notifications` by key. PostgreSQL makes a prepared
/// statement's generic plan once and keeps it until the table's statistics change; a
/// plan made while a table is small (a new schema; any table before its first
/// `ANALYZE`) is a sequential scan with a hash join, and stays one as the table grows
/// (measured: every batch scanned the whole `payments` table). With sequential scans
/// priced out while these statements are planned, their plans probe the unique
/// indexes whatever the tables' sizes. (`SET LOCAL`: the setting ends with the
/// transaction; a statement with no index to use still scans.)
pub(super) const BEGIN: &str = "BEGIN; SET LOCAL enable_seqscan = off";

/// One envelope's share of [`record_and_lock_payments`].
pub(super) struct Recording<'a> {
    pub(super) envelope: &'a Envelope,
    pub(super) out_trade_no: &'a str,
    /// The outcome the audit row is written with (as in `rows::record_and_lock_payment`).
    pub(super) outcome: &'static str,
}

/// Whether no two of `items` are equal.
pub(super) fn all_distinct<T: Eq + std::hash::Hash>(items: impl IntoIterator<Item = T>) -> bool {
    let mut seen = HashSet::new();
    items.into_iter().all(|item| seen.insert(item))
}

/// The row [`record_and_lock_payments`] returns: which input it answers (1-based, the
/// `unnest … WITH ORDINALITY` position) and the locked payment.
#[derive(sqlx::FromRow)]
struct Locked {
    ord: i64,
    #[sqlx(flatten)]
    payment: Payment,
}

/// Step 1 for every envelope at once: inserts the audit rows (`ON CONFLICT (event_id)
/// DO NOTHING`) and, for those that were new, upserts and thereby locks their payments,
/// in the order given (the caller's lock order). The answer is in the order given:
/// `None` for a notification already recorded (nothing was written for it).
pub(super) async fn record_and_lock_payments(
    conn: &mut PgConnection,
    items: &[Recording<'_>],
) -> Result<Vec<Option<Payment>>, sqlx::Error> {
    const SQL: &str = "
        WITH i AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                $10::timestamptz[], $11::text[], $12::text[], $13::text[], $14::text[])
                WITH ORDINALITY AS i(event_id, provider, merchant, kind, status, source,
                    out_trade_no, transition_key, request_id, received_at, outcome,
                    envelope, payment_no, currency, ord)
        ), n AS (
            INSERT INTO notifications (event_id, provider, merchant, kind, status, source,
                out_trade_no, transition_key, request_id, received_at, outcome, envelope)
            SELECT event_id, provider, merchant, kind, status, source, out_trade_no,
                transition_key, request_id, received_at, outcome, envelope::json
            FROM i ORDER BY ord
            ON CONFLICT (event_id) DO NOTHING
            RETURNING event_id
        ), p AS (
            INSERT INTO payments (provider, merchant, out_trade_no, currency)
            SELECT i.provider, i.merchant, i.payment_no, i.currency
            FROM i JOIN n ON n.event_id = i.event_id ORDER BY i.ord
            ON CONFLICT (provider, merchant, out_trade_no) DO UPDATE SET updated_at = now()
            RETURNING id, provider, merchant, out_trade_no, state, registered,
                expected_amount, currency, expected_app_id, expected_mch_id,
                expected_payee, total_amount, paid_amount, refunded_amount,
                provider_trade_no, paid_at, closed_at
        )
        SELECT i.ord, p.id, p.state, p.registered, p.expected_amount, p.currency,
            p.expected_app_id, p.expected_mch_id, p.expected_payee, p.total_amount,
            p.paid_amount, p.refunded_amount, p.provider_trade_no, p.paid_at, p.closed_at
        FROM p JOIN i ON i.provider = p.provider AND i.merchant = p.merchant
            AND i.payment_no = p.out_trade_no";
    let envelopes = || items.iter().map(|r| r.envelope);
    let texts = |f: fn(&Envelope) -> &str| envelopes().map(f).collect::<Vec<_>>();
    let rows: Vec<Locked> = sqlx::query_as(SQL)
        .bind(texts(|e| &e.event_id))
        .bind(texts(|e| e.provider.as_str()))
        .bind(texts(|e| &e.merchant))
        .bind(texts(|e| e.kind.as_str()))
        .bind(texts(|e| status_label(e.status)))
        .bind(texts(source_label))
        .bind(
            envelopes()
                .map(|e| e.fields.out_trade_no.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            envelopes()
                .map(|e| e.transition_key.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(texts(|e| &e.request_id))
        .bind(envelopes().map(|e| e.received_at).collect::<Vec<_>>())
        .bind(items.iter().map(|r| r.outcome).collect::<Vec<_>>())
        .bind(
            envelopes()
                .map(super::rows::envelope_json)
                .collect::<Result<Vec<_>, _>>()?,
        )
        .bind(items.iter().map(|r| r.out_trade_no).collect::<Vec<_>>())
        .bind(texts(|e| &e.fields.currency))
        .fetch_all(conn)
        .await?;
    let mut locked: Vec<Option<Payment>> = items.iter().map(|_| None).collect();
    for row in rows {
        let slot = usize::try_from(row.ord - 1)
            .ok()
            .and_then(|i| locked.get_mut(i))
            .ok_or_else(|| sqlx::Error::Protocol(format!("unexpected ordinal {}", row.ord)))?;
        *slot = Some(row.payment);
    }
    Ok(locked)
}

/// Step 2 for every transition at once, as `rows::apply_transition` does for one: the
/// ledger rows (`t`), and for each one that was new, the payment's new facts (`p`), its
/// outbox event (`o`) and, for a refund, the refund row (`r`); the audit row of every
/// transition that was already applied gets its outcome (`d`). Returns the keys of the
/// transitions applied now.
pub(super) async fn apply_transitions(
    conn: &mut PgConnection,
    items: &[Transition<'_>],
) -> Result<HashSet<String>, ApplyError> {
    const SQL: &str = concat!(
        "WITH i AS (
            SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[],
                $5::text[], $6::text[], $7::text[], $8::text[], $9::int8[], $10::int8[],
                $11::int8[], $12::text[], $13::timestamptz[], $14::timestamptz[],
                $15::uuid[], $16::text[], $17::text[], $18::bool[], $19::text[],
                $20::text[], $21::text[], $22::int8[], $23::bool[], $24::text[])
                WITH ORDINALITY AS i(key, payment_id, kind, status, from_state, to_state,
                    event_id, source, total_amount, paid_amount, refunded_amount,
                    provider_trade_no, paid_at, closed_at, outbox_id, routing_key,
                    payload, refund, provider, merchant, out_refund_no, refund_amount,
                    refund_cumulative, provider_refund_no, ord)
        ), t AS (
            INSERT INTO transitions (transition_key, payment_id, kind, status, from_state,
                to_state, event_id, source)
            SELECT key, payment_id, kind, status, from_state, to_state, event_id, source
            FROM i ORDER BY ord
            ON CONFLICT (transition_key) DO NOTHING
            RETURNING id, transition_key
        ), p AS (
            UPDATE payments SET state = i.to_state, total_amount = i.total_amount,
                paid_amount = i.paid_amount, refunded_amount = i.refunded_amount,
                provider_trade_no = i.provider_trade_no, paid_at = i.paid_at,
                closed_at = i.closed_at, updated_at = now()
            FROM i JOIN t ON t.transition_key = i.key
            WHERE payments.id = i.payment_id
        ), o AS (
            INSERT INTO outbox (event_id, transition_id, routing_key, payload)
            SELECT i.outbox_id, t.id, i.routing_key, i.payload::json
            FROM i JOIN t ON t.transition_key = i.key ORDER BY i.ord
        ), r AS (
            INSERT INTO refunds (payment_id, provider, merchant, out_refund_no, status,
                amount, amount_cumulative, provider_refund_no)
            SELECT i.payment_id, i.provider, i.merchant, i.out_refund_no, i.status,
                i.refund_amount, i.refund_cumulative, i.provider_refund_no
            FROM i JOIN t ON t.transition_key = i.key
            WHERE i.refund ORDER BY i.ord ",
        refund_transition_conflict!(),
        "), d AS (
            UPDATE notifications SET outcome = 'duplicate_transition'
            FROM i WHERE notifications.event_id = i.event_id
                AND NOT EXISTS (SELECT 1 FROM t WHERE t.transition_key = i.key)
        )
        SELECT transition_key FROM t"
    );
    let payloads = items
        .iter()
        .map(|t| t.event.to_json())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApplyError::Permanent(format!("event document: {e}")))?;
    let envelopes = || items.iter().map(|t| t.envelope);
    let texts = |f: fn(&Envelope) -> &str| envelopes().map(f).collect::<Vec<_>>();
    let refunds = || {
        items
            .iter()
            .map(|t| is_refund(t.envelope.status).then_some(t.envelope))
    };
    let keys: Vec<String> = sqlx::query_scalar(SQL)
        .bind(items.iter().map(|t| t.key).collect::<Vec<_>>())
        .bind(items.iter().map(|t| t.payment.id).collect::<Vec<_>>())
        .bind(texts(|e| e.kind.as_str()))
        .bind(texts(|e| status_label(e.status)))
        .bind(
            items
                .iter()
                .map(|t| t.payment.state.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|t| t.next.state.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(texts(|e| &e.event_id))
        .bind(texts(source_label))
        .bind(
            items
                .iter()
                .map(|t| t.next.total_amount)
                .collect::<Vec<_>>(),
        )
        .bind(items.iter().map(|t| t.next.paid_amount).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|t| t.next.refunded_amount)
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|t| t.next.provider_trade_no.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|t| t.next.paid_at)
                .collect::<Vec<Option<OffsetDateTime>>>(),
        )
        .bind(
            items
                .iter()
                .map(|t| t.next.closed_at)
                .collect::<Vec<Option<OffsetDateTime>>>(),
        )
        .bind(items.iter().map(|t| t.event.id).collect::<Vec<Uuid>>())
        .bind(
            items
                .iter()
                .map(|t| t.event.routing_key())
                .collect::<Vec<_>>(),
        )
        .bind(payloads)
        .bind(refunds().map(|r| r.is_some()).collect::<Vec<_>>())
        .bind(texts(|e| e.provider.as_str()))
        .bind(texts(|e| &e.merchant))
        .bind(
            refunds()
                .map(|r| r.and_then(refund_number).map(String::as_str))
                .collect::<Vec<_>>(),
        )
        .bind(
            refunds()
                .map(|r| r.and_then(|e| e.fields.refund_amount))
                .collect::<Vec<_>>(),
        )
        .bind(
            refunds()
                .map(|r| r.is_some_and(|e| e.fields.refund_amount_cumulative))
                .collect::<Vec<_>>(),
        )
        .bind(
            refunds()
                .map(|r| r.and_then(|e| e.fields.provider_refund_no.as_deref()))
                .collect::<Vec<_>>(),
        )
        .fetch_all(conn)
        .await?;
    Ok(keys.into_iter().collect())
}
