//! The SQL of a batch applied as a whole (see [`super::apply::apply_batch`]): the two
//! statements of the apply path, each written once for every envelope of the batch
//! (`unnest` of one array per column), so a batch of any size costs `BEGIN`, two
//! statements and `COMMIT`. The guards are those of [`super::rows`], row by row: the
//! audit row's `event_id`, the payment's row lock (or, for a payment that does not
//! exist yet, its unique key), the ledger's `transition_key`, and the outbox row tied to
//! the ledger row.
//!
//! Two differences from the one-envelope path, both to write less: an existing payment
//! is locked with `SELECT … FOR UPDATE` rather than touched by an upsert (its
//! `updated_at` moves only when its facts do), and a payment that does not exist yet is
//! inserted once, in step 2, with its final facts (one row version instead of a
//! `PENDING` insert and a non-HOT update).
//!
//! A batch goes this way only when no two of its envelopes name the same payment, the
//! same transition or the same refund, and no two are the same notification
//! (`apply::bulk_eligible`): then no row of one statement depends on another row of the
//! same statement, which a statement cannot see (and `ON CONFLICT DO UPDATE` refuses to
//! touch one row twice).

use std::collections::HashSet;

use payhook_shared::event::Envelope;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::error::ApplyError;
use super::facts::{is_refund, source_label, status_label};
use super::locked::Payment;
use super::rows::{Transition, refund_number};

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

/// What step 1 found for one envelope.
pub(super) enum Found {
    /// The notification was already recorded: nothing was written for it.
    Recorded,
    /// The payment exists; this transaction holds its row lock.
    Locked(Payment),
    /// No payment row yet: what a new one would hold (`id` 0). Step 2 inserts it with
    /// its final facts, in one write, instead of inserting it `PENDING` and updating it.
    New(Payment),
}

/// The row [`record_and_lock_payments`] returns for each newly recorded notification:
/// which input it answers (1-based, the `unnest … WITH ORDINALITY` position), whether
/// its payment exists, and the payment (or a new one's defaults).
#[derive(sqlx::FromRow)]
struct Row {
    ord: i64,
    exists: bool,
    #[sqlx(flatten)]
    payment: Payment,
}

/// Step 1 ([`record_and_lock_payments`]). What it answers for a payment that does not
/// exist yet is the table's defaults (migrations): `PENDING`, not registered, nothing
/// refunded, the notification's currency.
pub(super) const RECORD_AND_LOCK: &str = "
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
            SELECT i.ord, p.id, p.state, p.registered, p.expected_amount, p.currency,
                p.expected_app_id, p.expected_mch_id, p.expected_payee, p.total_amount,
                p.paid_amount, p.refunded_amount, p.provider_trade_no, p.paid_at,
                p.closed_at
            FROM i JOIN n ON n.event_id = i.event_id
                JOIN payments p ON p.provider = i.provider AND p.merchant = i.merchant
                    AND p.out_trade_no = i.payment_no
            ORDER BY i.ord
            FOR UPDATE OF p
        )
        SELECT i.ord, p.id IS NOT NULL AS exists, COALESCE(p.id, 0) AS id,
            COALESCE(p.state, 'PENDING') AS state, COALESCE(p.registered, FALSE) AS registered,
            p.expected_amount, COALESCE(p.currency, i.currency) AS currency,
            p.expected_app_id, p.expected_mch_id, p.expected_payee, p.total_amount,
            p.paid_amount, COALESCE(p.refunded_amount, 0) AS refunded_amount,
            p.provider_trade_no, p.paid_at, p.closed_at
        FROM i JOIN n ON n.event_id = i.event_id LEFT JOIN p ON p.ord = i.ord";

/// Step 1 for every envelope at once: inserts the audit rows (`ON CONFLICT (event_id)
/// DO NOTHING`) and, for those that were new, locks their existing payments
/// (`FOR UPDATE`, in the order given: the caller's lock order). A payment that does not
/// exist yet is not written here (see [`Found::New`]). The answer is in the order given.
pub(super) async fn record_and_lock_payments(
    conn: &mut PgConnection,
    items: &[Recording<'_>],
) -> Result<Vec<Found>, sqlx::Error> {
    let envelopes = || items.iter().map(|r| r.envelope);
    let texts = |f: fn(&Envelope) -> &str| envelopes().map(f).collect::<Vec<_>>();
    let rows: Vec<Row> = sqlx::query_as(RECORD_AND_LOCK)
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
    let mut found: Vec<Found> = items.iter().map(|_| Found::Recorded).collect();
    for row in rows {
        let slot = usize::try_from(row.ord - 1)
            .ok()
            .and_then(|i| found.get_mut(i))
            .ok_or_else(|| sqlx::Error::Protocol(format!("unexpected ordinal {}", row.ord)))?;
        *slot = if row.exists {
            Found::Locked(row.payment)
        } else {
            Found::New(row.payment)
        };
    }
    Ok(found)
}

/// One transition of step 2; `new_payment`: the payment does not exist yet
/// ([`Found::New`]), and is inserted with the transition's facts.
pub(super) struct Pending<'a> {
    pub(super) transition: Transition<'a>,
    pub(super) new_payment: bool,
}

/// Step 2 ([`apply_transitions`]).
pub(super) const APPLY_TRANSITIONS: &str = concat!(
    "WITH i AS (
            SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[],
                $5::text[], $6::text[], $7::text[], $8::text[], $9::int8[], $10::int8[],
                $11::int8[], $12::text[], $13::timestamptz[], $14::timestamptz[],
                $15::uuid[], $16::text[], $17::text[], $18::bool[], $19::text[],
                $20::text[], $21::text[], $22::int8[], $23::bool[], $24::text[],
                $25::text[], $26::text[], $27::bool[])
                WITH ORDINALITY AS i(key, payment_id, kind, status, from_state, to_state,
                    event_id, source, total_amount, paid_amount, refunded_amount,
                    provider_trade_no, paid_at, closed_at, outbox_id, routing_key,
                    payload, refund, provider, merchant, out_refund_no, refund_amount,
                    refund_cumulative, provider_refund_no, payment_no, currency,
                    new_payment, ord)
        ), np AS (
            INSERT INTO payments (provider, merchant, out_trade_no, currency, state,
                total_amount, paid_amount, refunded_amount, provider_trade_no, paid_at,
                closed_at)
            SELECT provider, merchant, payment_no, currency, to_state, total_amount,
                paid_amount, refunded_amount, provider_trade_no, paid_at, closed_at
            FROM i WHERE new_payment ORDER BY ord
            ON CONFLICT (provider, merchant, out_trade_no) DO NOTHING
            RETURNING id, provider, merchant, out_trade_no
        ), j AS (
            SELECT i.*, CASE WHEN i.new_payment THEN np.id ELSE i.payment_id END AS pid
            FROM i LEFT JOIN np ON i.new_payment AND np.provider = i.provider
                AND np.merchant = i.merchant AND np.out_trade_no = i.payment_no
        ), t AS (
            INSERT INTO transitions (transition_key, payment_id, kind, status, from_state,
                to_state, event_id, source)
            SELECT key, pid, kind, status, from_state, to_state, event_id, source
            FROM j WHERE pid IS NOT NULL ORDER BY ord
            ON CONFLICT (transition_key) DO NOTHING
            RETURNING id, transition_key
        ), p AS (
            UPDATE payments SET state = i.to_state, total_amount = i.total_amount,
                paid_amount = i.paid_amount, refunded_amount = i.refunded_amount,
                provider_trade_no = i.provider_trade_no, paid_at = i.paid_at,
                closed_at = i.closed_at, updated_at = now()
            FROM i JOIN t ON t.transition_key = i.key
            WHERE payments.id = i.payment_id AND NOT i.new_payment
        ), o AS (
            INSERT INTO outbox (event_id, transition_id, routing_key, payload)
            SELECT j.outbox_id, t.id, j.routing_key, j.payload::json
            FROM j JOIN t ON t.transition_key = j.key ORDER BY j.ord
        ), r AS (
            INSERT INTO refunds (payment_id, provider, merchant, out_refund_no, status,
                amount, amount_cumulative, provider_refund_no)
            SELECT j.pid, j.provider, j.merchant, j.out_refund_no, j.status,
                j.refund_amount, j.refund_cumulative, j.provider_refund_no
            FROM j JOIN t ON t.transition_key = j.key
            WHERE j.refund ORDER BY j.ord ",
    refund_transition_conflict!(),
    "), d AS (
            UPDATE notifications SET outcome = 'duplicate_transition'
            FROM j WHERE notifications.event_id = j.event_id AND j.pid IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM t WHERE t.transition_key = j.key)
        )
        SELECT j.key, j.new_payment, j.pid IS NOT NULL AS has_payment,
            t.id IS NOT NULL AS applied
        FROM j LEFT JOIN t ON t.transition_key = j.key"
);

/// Step 2 for every transition at once, as `rows::apply_transition` does for one: the
/// new payments with their facts (`np`), the ledger rows (`t`), and for each one that
/// was new, the existing payment's new facts (`p`), its outbox event (`o`) and, for a
/// refund, the refund row (`r`); the audit row of every transition that was already
/// applied gets its outcome (`d`). Returns the keys of the transitions applied now.
///
/// `None`: a payment this batch found missing in step 1 exists now (another
/// transaction created it since; the unique key made this one wait for it), or a new
/// payment's transition was already applied. Then what this statement wrote is wrong
/// for that payment: the caller rolls the transaction back and applies the batch the
/// other way.
pub(super) async fn apply_transitions(
    conn: &mut PgConnection,
    items: &[Pending<'_>],
) -> Result<Option<HashSet<String>>, ApplyError> {
    let ts = || items.iter().map(|p| &p.transition);
    let envelopes = || ts().map(|t| t.envelope);
    let texts = |f: fn(&Envelope) -> &str| envelopes().map(f).collect::<Vec<_>>();
    let refunds = || envelopes().map(|e| is_refund(e.status).then_some(e));
    let rows: Vec<(String, bool, bool, bool)> = sqlx::query_as(APPLY_TRANSITIONS)
        .bind(ts().map(|t| t.key).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|p| (!p.new_payment).then_some(p.transition.payment.id))
                .collect::<Vec<_>>(),
        )
        .bind(texts(|e| e.kind.as_str()))
        .bind(texts(|e| status_label(e.status)))
        .bind(ts().map(|t| t.payment.state.as_str()).collect::<Vec<_>>())
        .bind(ts().map(|t| t.next.state.as_str()).collect::<Vec<_>>())
        .bind(texts(|e| &e.event_id))
        .bind(texts(source_label))
        .bind(ts().map(|t| t.next.total_amount).collect::<Vec<_>>())
        .bind(ts().map(|t| t.next.paid_amount).collect::<Vec<_>>())
        .bind(ts().map(|t| t.next.refunded_amount).collect::<Vec<_>>())
        .bind(
            ts().map(|t| t.next.provider_trade_no.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            ts().map(|t| t.next.paid_at)
                .collect::<Vec<Option<OffsetDateTime>>>(),
        )
        .bind(
            ts().map(|t| t.next.closed_at)
                .collect::<Vec<Option<OffsetDateTime>>>(),
        )
        .bind(ts().map(|t| t.event.event_id).collect::<Vec<Uuid>>())
        .bind(
            ts().map(|t| t.event.routing_key.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(ts().map(|t| t.event.payload.as_str()).collect::<Vec<_>>())
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
        .bind(
            envelopes()
                .map(|e| e.fields.out_trade_no.as_deref().unwrap_or_default())
                .collect::<Vec<_>>(),
        )
        .bind(texts(|e| &e.fields.currency))
        .bind(items.iter().map(|p| p.new_payment).collect::<Vec<_>>())
        .fetch_all(conn)
        .await?;
    let mut applied = HashSet::new();
    for (key, new_payment, has_payment, was_applied) in rows {
        if !has_payment || (new_payment && !was_applied) {
            return Ok(None);
        }
        if was_applied {
            applied.insert(key);
        }
    }
    Ok(Some(applied))
}
