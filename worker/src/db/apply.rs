//! The one apply path (docs/design.md invariants 3, 4 and 6): a notification — or a
//! reconciliation result, which travels as the same [`Envelope`] — is applied in ONE
//! transaction, and every effect hangs off a unique key:
//!
//! 1. the audit row, `notifications.event_id`: a redelivered notification stops here
//!    ([`ApplyOutcome::Duplicate`], nothing written);
//! 2. the payment row, `(provider, merchant, out_trade_no)`, upserted and thereby
//!    locked: concurrent notifications of one order serialize on it;
//! 3. the ledger row, `transitions.transition_key`: a new notification of a transition
//!    already applied (a resend with a new id, `TRADE_FINISHED` after
//!    `TRADE_SUCCESS`, a reconciliation result) stops here
//!    ([`ApplyOutcome::DuplicateTransition`]; its audit row stays);
//! 4. the facts (amounts, timestamps, refunds), the state derived from them
//!    ([`super::state`], never backwards) and one outbox event, tied to the ledger row.
//!
//! READ COMMITTED is enough: the row lock of step 2 orders everything that touches
//! one payment, and every insert is guarded by its unique key.
//!
//! Every envelope walks the same three stages, in one direction: **lock** (steps 1–2:
//! [`rows::record_and_lock_payment`], or [`bulk::record_and_lock_payments`] for a
//! batch), **decide** ([`decide`]: a pure function of the locked row and the envelope
//! that returns the [`Effects`]; [`super::facts`] computes the payment's next facts)
//! and **write** ([`write`], or one statement for a batch's transitions in
//! [`super::bulk`]; the SQL is in [`super::rows`]).

use payhook_shared::config::Settings;
use payhook_shared::event::{
    Envelope, Kind, Provider, SCHEMA_VERSION, Source, Status, transition_key,
};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use super::bulk;
use super::cloudevents::{CloudEvent, Emitted, EventKind};
pub use super::error::ApplyError;
use super::facts::{self, Next};
use super::locked::Payment;
use super::rows;

/// The merchant's configured identity, checked against paid notifications. A field
/// left `None` is not checked (an order's registration can still name it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    /// Alipay `app_id`, WeChat `appid`.
    pub app_id: Option<String>,
    /// WeChat `mch_id` (the account configured in payhook; the service provider in
    /// partner mode).
    pub mch_id: Option<String>,
    /// Alipay `seller_id`.
    pub payee: Option<String>,
    /// `reconcile.strict`: a paid notification for an order nobody registered is
    /// quarantined until the provider confirms it in answer to a query.
    pub strict: bool,
}

impl Expectations {
    /// The identity configured for `merchant` of `provider`. A merchant missing from
    /// the configuration checks nothing but registrations: the receiver only
    /// publishes notifications of merchants whose keys it has, so this is a
    /// configuration skew between receiver and worker, not a forgery.
    pub fn from_settings(settings: &Settings, provider: Provider, merchant: &str) -> Self {
        let found = match provider {
            Provider::Alipay => settings.alipay.get(merchant).map(|app| Self {
                app_id: Some(app.app_id.clone()),
                mch_id: None,
                payee: app.seller_id.clone(),
                strict: false,
            }),
            Provider::WechatV2 => settings.wechat_v2.get(merchant).map(|m| Self {
                app_id: m.appid.clone(),
                mch_id: Some(m.mch_id.clone()),
                payee: None,
                strict: false,
            }),
            Provider::WechatV3 => settings.wechat_v3.get(merchant).map(|m| Self {
                app_id: m.appid.clone(),
                mch_id: Some(m.mch_id.clone()),
                payee: None,
                strict: false,
            }),
        };
        Self {
            strict: settings.reconcile.strict,
            ..found.unwrap_or_default()
        }
    }
}

/// What applying one envelope did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// A new transition: facts written, one event per routing key in the outbox.
    Applied { events: Vec<String> },
    /// This notification (`event_id`) was already processed: nothing written.
    Duplicate,
    /// A new notification of a transition already applied: audit row only.
    DuplicateTransition,
    /// A paid notification that does not match the order or the merchant: not
    /// applied as paid, payment flagged, `payment.quarantined` event.
    Quarantined { reason: String },
    /// No transition (pending, refund in progress, uninterpreted): audit row only.
    Recorded,
}

impl ApplyOutcome {
    /// The metric label, also stored in `notifications.outcome`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Applied { .. } => "applied",
            Self::Duplicate => "duplicate",
            Self::DuplicateTransition => "duplicate_transition",
            Self::Quarantined { .. } => "quarantined",
            Self::Recorded => "recorded",
        }
    }
}

/// Applies `envelope` exactly once (see the module documentation).
///
/// Round trips: a notification that names no payment is one statement; otherwise
/// `BEGIN`, audit row + payment lock (one statement), the transition with all its
/// effects (one statement), `COMMIT`.
pub async fn apply(
    pool: &PgPool,
    envelope: &Envelope,
    expect: &Expectations,
) -> Result<ApplyOutcome, ApplyError> {
    apply_emitting(pool, envelope, expect, &mut Vec::new()).await
}

/// [`apply`], and after a successful commit, appends the events it wrote to the outbox
/// to `emitted` (for the outbox dispatcher). Nothing is appended when it fails.
pub async fn apply_emitting(
    pool: &PgPool,
    envelope: &Envelope,
    expect: &Expectations,
    emitted: &mut Vec<Emitted>,
) -> Result<ApplyOutcome, ApplyError> {
    check(envelope)?;
    let mut written = Vec::new();
    if payment_of(envelope).is_none() {
        // One statement: it needs no transaction of its own (and writes no event).
        let mut conn = pool.acquire().await?;
        return apply_in(&mut conn, envelope, expect, &mut written).await;
    }
    let mut tx = pool.begin().await?;
    let outcome = apply_in(&mut tx, envelope, expect, &mut written).await?;
    if outcome == ApplyOutcome::Duplicate {
        // Nothing was written; dropping the transaction rolls it back without waiting.
        return Ok(outcome);
    }
    tx.commit().await?;
    emitted.append(&mut written);
    Ok(outcome)
}

/// Applies several envelopes in ONE transaction: the outcomes, in the order of
/// `items`, or the first error — then nothing of the batch was written (the caller
/// applies them one by one to find which one fails, and why).
///
/// Every envelope keeps its exactly-once guards; what the batch saves is round trips
/// and a WAL flush per envelope. Envelopes are applied in the order of the payment they
/// name, so that concurrent batches take the payments' row locks in one order and
/// cannot deadlock on them; envelopes of one payment keep their relative order.
///
/// When the envelopes name distinct payments, transitions and refunds (the common
/// case: different orders), the whole batch is `BEGIN`, two statements and `COMMIT`
/// ([`super::bulk`]); otherwise each envelope runs the statements of [`apply`] in turn,
/// so that a later one sees what an earlier one of the same payment wrote.
pub async fn apply_batch(
    pool: &PgPool,
    items: &[(&Envelope, &Expectations)],
) -> Result<Vec<ApplyOutcome>, ApplyError> {
    apply_batch_emitting(pool, items, &mut Vec::new()).await
}

/// [`apply_batch`], and after a successful commit, appends the events the batch wrote
/// to the outbox to `emitted` (for the outbox dispatcher). Nothing is appended when it
/// fails.
pub async fn apply_batch_emitting(
    pool: &PgPool,
    items: &[(&Envelope, &Expectations)],
    emitted: &mut Vec<Emitted>,
) -> Result<Vec<ApplyOutcome>, ApplyError> {
    for (envelope, _) in items {
        check(envelope)?;
    }
    let keys: Vec<_> = items
        .iter()
        .map(|(envelope, _)| lock_order(envelope))
        .collect();
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    let plans: Vec<Plan<'_>> = items
        .iter()
        .map(|(envelope, _)| Plan::of(envelope))
        .collect();
    if items.len() > 1 && bulk_eligible(items, &plans) {
        let mut tx = pool.begin_with(bulk::BEGIN).await?;
        let mut written = Vec::new();
        if let Some(outcomes) = apply_bulk(&mut tx, items, &plans, &order, &mut written).await? {
            tx.commit().await?;
            emitted.append(&mut written);
            return Ok(outcomes);
        }
        // A payment appeared meanwhile: what the bulk statements wrote is wrong for
        // it. Roll back and apply the batch envelope by envelope.
        tx.rollback().await?;
    }
    let mut tx = pool.begin().await?;
    let mut outcomes = vec![ApplyOutcome::Duplicate; items.len()];
    let mut written = Vec::new();
    for i in order {
        let (envelope, expect) = items[i];
        outcomes[i] = apply_in(&mut tx, envelope, expect, &mut written).await?;
    }
    tx.commit().await?;
    emitted.append(&mut written);
    Ok(outcomes)
}

/// Whether [`apply_batch`] applies `items` with one statement per step: every envelope
/// names a payment, and no two are the same notification or name the same payment,
/// transition or refund.
pub fn batch_is_bulk(items: &[(&Envelope, &Expectations)]) -> bool {
    let plans: Vec<Plan<'_>> = items
        .iter()
        .map(|(envelope, _)| Plan::of(envelope))
        .collect();
    bulk_eligible(items, &plans)
}

fn bulk_eligible(items: &[(&Envelope, &Expectations)], plans: &[Plan<'_>]) -> bool {
    let Some(payments) = items
        .iter()
        .zip(plans)
        .map(|((e, _), plan)| Some((e.provider.as_str(), e.merchant.as_str(), plan.out_trade_no?)))
        .collect::<Option<Vec<_>>>()
    else {
        return false;
    };
    let transitions = plans
        .iter()
        .map(|plan| plan.transition.as_ref().map(|(_, key)| key.as_str()));
    let refunds = items.iter().map(|(e, _)| {
        let refund = facts::is_refund(e.status) || e.status == Status::RefundProcessing;
        let number = rows::refund_number(e).filter(|_| refund)?;
        Some((e.provider.as_str(), e.merchant.as_str(), number.as_str()))
    });
    bulk::all_distinct(items.iter().map(|(e, _)| e.event_id.as_str()))
        && bulk::all_distinct(payments)
        && bulk::all_distinct(transitions.flatten())
        && bulk::all_distinct(refunds.flatten())
}

/// [`apply_batch`] for a batch that [`bulk_eligible`] accepted: step 1 for all, then
/// each envelope's decision, then step 2 for every transition at once. Quarantines
/// and refunds in progress (rare) run their own statements in between; they touch
/// only payments this transaction already locked, or create them (a payment
/// nobody knew: no other transaction holds it).
///
/// `None`: the batch cannot be applied this way after all (see
/// [`bulk::apply_transitions`]); the transaction must be rolled back.
async fn apply_bulk(
    conn: &mut PgConnection,
    items: &[(&Envelope, &Expectations)],
    plans: &[Plan<'_>],
    order: &[usize],
    emitted: &mut Vec<Emitted>,
) -> Result<Option<Vec<ApplyOutcome>>, ApplyError> {
    let recordings: Vec<_> = order
        .iter()
        .map(|&i| bulk::Recording {
            envelope: items[i].0,
            out_trade_no: plans[i].out_trade_no.unwrap_or_default(),
            outcome: plans[i].expected_label(),
        })
        .collect();
    let found = bulk::record_and_lock_payments(conn, &recordings).await?;
    let now = OffsetDateTime::now_utc();
    let mut outcomes = vec![ApplyOutcome::Duplicate; items.len()];
    // (input index, payment, new payment?, next facts, event) of each transition.
    let mut pending = Vec::new();
    for (&i, found) in order.iter().zip(found) {
        let (envelope, expect) = items[i];
        let plan = &plans[i];
        let out_trade_no = plan.out_trade_no.unwrap_or_default();
        let (payment, new_payment) = match found {
            // Already recorded: nothing written (the Duplicate already in place).
            bulk::Found::Recorded => continue,
            bulk::Found::Locked(payment) => (payment, false),
            bulk::Found::New(payment) => (payment, true),
        };
        let effects = decide(envelope, expect, plan, out_trade_no, &payment, now)?;
        let Effects::Transition { next, event } = effects else {
            // Its own statements need the payment row: a new one is created here.
            let payment = if new_payment {
                match rows::create_payment(conn, envelope, out_trade_no).await? {
                    Some(created) => created,
                    // Another transaction created it since this one looked: what was
                    // decided may be wrong for it. Start over envelope by envelope.
                    None => return Ok(None),
                }
            } else {
                payment
            };
            let outcome = write(conn, envelope, plan, &payment, effects, emitted).await?;
            if outcome.label() != plan.expected_label() {
                rows::set_outcome(conn, &envelope.event_id, outcome.label()).await?;
            }
            outcomes[i] = outcome;
            continue;
        };
        pending.push((i, payment, new_payment, next, event));
    }
    if pending.is_empty() {
        return Ok(Some(outcomes));
    }
    let transitions: Vec<_> = pending
        .iter()
        .map(|(i, payment, new_payment, next, event)| bulk::Pending {
            transition: rows::Transition {
                key: plans[*i].transition_key(),
                payment,
                envelope: items[*i].0,
                next,
                event,
            },
            new_payment: *new_payment,
        })
        .collect();
    let Some(applied) = bulk::apply_transitions(conn, &transitions).await? else {
        return Ok(None);
    };
    let was_applied: Vec<bool> = transitions
        .iter()
        .map(|p| applied.contains(p.transition.key))
        .collect();
    drop(transitions);
    for ((i, .., event), was_applied) in pending.into_iter().zip(was_applied) {
        outcomes[i] = if was_applied {
            let events = vec![event.routing_key.clone()];
            emitted.push(*event);
            ApplyOutcome::Applied { events }
        } else {
            ApplyOutcome::DuplicateTransition
        };
    }
    Ok(Some(outcomes))
}

/// The key [`apply_batch`] sorts on (stably, so envelopes of one payment keep their
/// order): the payment's unique key. Envelopes naming no payment come first, by
/// `event_id` (their audit rows are all they lock).
fn lock_order(envelope: &Envelope) -> (Option<(&str, &str, &str)>, &str) {
    match payment_of(envelope) {
        Some(no) => (
            Some((envelope.provider.as_str(), envelope.merchant.as_str(), no)),
            "",
        ),
        None => (None, envelope.event_id.as_str()),
    }
}

/// The apply path of one checked envelope on `conn`, inside the caller's transaction
/// (or alone, for an envelope that names no payment: one statement).
async fn apply_in(
    conn: &mut PgConnection,
    envelope: &Envelope,
    expect: &Expectations,
    emitted: &mut Vec<Emitted>,
) -> Result<ApplyOutcome, ApplyError> {
    let plan = Plan::of(envelope);
    let Some(out_trade_no) = plan.out_trade_no else {
        let recorded = ApplyOutcome::Recorded;
        return Ok(
            if rows::record_notification(&mut *conn, envelope, recorded.label()).await? {
                recorded
            } else {
                ApplyOutcome::Duplicate
            },
        );
    };
    let expected = plan.expected_label();
    // Lock: the audit row, then the payment row (created if needed) until commit.
    let Some(payment) =
        rows::record_and_lock_payment(conn, envelope, out_trade_no, expected).await?
    else {
        // Already recorded: nothing was written.
        return Ok(ApplyOutcome::Duplicate);
    };
    // Decide, from the locked row alone; then write what was decided.
    let effects = decide(
        envelope,
        expect,
        &plan,
        out_trade_no,
        &payment,
        OffsetDateTime::now_utc(),
    )?;
    let outcome = write(conn, envelope, &plan, &payment, effects, emitted).await?;
    if outcome.label() != expected {
        rows::set_outcome(conn, &envelope.event_id, outcome.label()).await?;
    }
    Ok(outcome)
}

/// What the envelope asks for, decided before touching the database.
pub(super) struct Plan<'a> {
    /// The payment it names; `None`: no payment, the audit row is all there is.
    out_trade_no: Option<&'a str>,
    /// The transition it makes, if any: the event kind and the ledger key.
    transition: Option<(EventKind, String)>,
}

impl<'a> Plan<'a> {
    pub(super) fn of(envelope: &'a Envelope) -> Self {
        let f = &envelope.fields;
        let out_trade_no = payment_of(envelope);
        let key = envelope
            .transition_key
            .clone()
            .or_else(|| transition_key(envelope.provider, &envelope.merchant, envelope.status, f));
        Self {
            out_trade_no,
            transition: EventKind::for_status(envelope.status).zip(key),
        }
    }

    /// The ledger key of the transition (empty when there is none).
    fn transition_key(&self) -> &str {
        self.transition.as_ref().map_or("", |(_, key)| key.as_str())
    }

    /// The outcome the audit row is inserted with: the one a new transition ends in
    /// (the common case), else `recorded`. Any other ending rewrites it.
    fn expected_label(&self) -> &'static str {
        match self.transition {
            Some(_) => ApplyOutcome::Applied { events: Vec::new() }.label(),
            None => ApplyOutcome::Recorded.label(),
        }
    }
}

/// The payment an envelope names (its `out_trade_no`), if it names one.
fn payment_of(envelope: &Envelope) -> Option<&str> {
    envelope
        .fields
        .out_trade_no
        .as_deref()
        .filter(|s| !s.is_empty() && envelope.kind != Kind::Other)
}

/// What can be refused before touching the database.
fn check(envelope: &Envelope) -> Result<(), ApplyError> {
    let permanent = |message: String| Err(ApplyError::Permanent(message));
    if envelope.schema_version != SCHEMA_VERSION {
        return permanent(format!(
            "envelope schema_version {} is not supported (this worker reads {SCHEMA_VERSION})",
            envelope.schema_version
        ));
    }
    if envelope.event_id.is_empty() {
        return permanent("empty event_id".into());
    }
    let f = &envelope.fields;
    let amounts = [
        ("total_amount", f.total_amount),
        ("paid_amount", f.paid_amount),
        ("refund_amount", f.refund_amount),
    ];
    if let Some((name, _)) = amounts.iter().find(|(_, v)| v.is_some_and(|v| v < 0)) {
        return permanent(format!("negative {name}"));
    }
    // The key is the exactly-once guard across merchants: it must be this one's.
    let prefix = format!("{}:{}:", envelope.provider, envelope.merchant);
    if let Some(key) = &envelope.transition_key
        && !key.starts_with(&prefix)
    {
        return permanent(
            "transition_key does not name the envelope's provider and merchant".into(),
        );
    }
    Ok(())
}

/// What a notification seen for the first time does to its locked payment: what
/// [`decide`] returns and [`write`] executes.
pub(super) enum Effects {
    /// A transition: the payment's next facts and the event announcing them.
    Transition { next: Next, event: Box<Emitted> },
    /// A paid notification that must not be applied as paid: a ledger row of its own
    /// (`<key>:QUARANTINED`, once), the payment marked, the event announcing it.
    Quarantine {
        key: String,
        reason: String,
        event: Box<Emitted>,
    },
    /// No transition: the audit row is all, plus the refund row of a refund in
    /// progress.
    Record { refund_in_progress: bool },
}

/// Decides the [`Effects`] of `envelope` on its locked `payment`: a pure function of
/// the two (and the clock reading `now` for the event's time), no database access.
pub(super) fn decide(
    envelope: &Envelope,
    expect: &Expectations,
    plan: &Plan<'_>,
    out_trade_no: &str,
    payment: &Payment,
    now: OffsetDateTime,
) -> Result<Effects, ApplyError> {
    let Some((kind, key)) = &plan.transition else {
        return Ok(Effects::Record {
            refund_in_progress: envelope.status == Status::RefundProcessing,
        });
    };
    if envelope.status == Status::Paid
        && let Some(reason) = mismatch(payment, envelope, expect)
    {
        let key = format!("{key}:QUARANTINED");
        let unchanged = Next::unchanged(payment);
        let data = facts::event_data(
            envelope,
            out_trade_no,
            &key,
            &payment.currency,
            &unchanged,
            Some(reason.clone()),
        );
        let event = CloudEvent::new(EventKind::PaymentQuarantined, data, now)
            .continuing(envelope.traceparent.as_deref());
        return Ok(Effects::Quarantine {
            key,
            reason,
            event: Box::new(emitted_of(&event)?),
        });
    }
    let next = facts::next_facts(payment, envelope)?;
    let data = facts::event_data(envelope, out_trade_no, key, &payment.currency, &next, None);
    let event = CloudEvent::new(*kind, data, now).continuing(envelope.traceparent.as_deref());
    Ok(Effects::Transition {
        next,
        event: Box::new(emitted_of(&event)?),
    })
}

/// Writes the [`Effects`] [`decide`] returned for `payment` (locked by this
/// transaction), once: every insert is guarded by its unique key, and a transition
/// another notification already applied ends here as
/// [`ApplyOutcome::DuplicateTransition`] with nothing else written.
async fn write(
    conn: &mut PgConnection,
    envelope: &Envelope,
    plan: &Plan<'_>,
    payment: &Payment,
    effects: Effects,
    emitted: &mut Vec<Emitted>,
) -> Result<ApplyOutcome, ApplyError> {
    match effects {
        Effects::Transition { next, event } => {
            let transition = rows::Transition {
                key: plan.transition_key(),
                payment,
                envelope,
                next: &next,
                event: &event,
            };
            if rows::apply_transition(conn, &transition).await?.is_none() {
                return Ok(ApplyOutcome::DuplicateTransition);
            }
            let events = vec![event.routing_key.clone()];
            emitted.push(*event);
            Ok(ApplyOutcome::Applied { events })
        }
        Effects::Quarantine { key, reason, event } => {
            let Some(transition_id) =
                rows::insert_transition(conn, &key, payment, "quarantine", envelope, payment.state)
                    .await?
            else {
                return Ok(ApplyOutcome::DuplicateTransition);
            };
            rows::mark_quarantined(conn, payment.id, &reason).await?;
            rows::insert_outbox(conn, transition_id, &event).await?;
            emitted.push(*event);
            tracing::warn!(
                alert = true,
                provider = %envelope.provider,
                merchant = %envelope.merchant,
                out_trade_no = plan.out_trade_no.unwrap_or_default(),
                event_id = %envelope.event_id,
                %reason,
                "paid notification quarantined: not applied as paid"
            );
            Ok(ApplyOutcome::Quarantined { reason })
        }
        Effects::Record { refund_in_progress } => {
            if refund_in_progress {
                rows::note_refund_in_progress(conn, payment.id, envelope).await?;
            }
            Ok(ApplyOutcome::Recorded)
        }
    }
}

/// Why a paid notification must not be applied as paid, if it must not.
fn mismatch(payment: &Payment, envelope: &Envelope, expect: &Expectations) -> Option<String> {
    let f = &envelope.fields;
    // Strict mode: an order nobody registered is doubtful until a query's answer (the
    // provider speaking for itself, source = reconcile) confirms the payment.
    if expect.strict && !payment.registered && envelope.source == Source::Notify {
        return Some("order not registered (strict mode): awaiting reconciliation".into());
    }
    if payment.registered {
        if let Some(expected) = payment.expected_amount {
            match f.total_amount {
                Some(total) if total == expected => {}
                Some(total) => return Some(format!("amount {total} != expected {expected}")),
                None => return Some(format!("amount missing, expected {expected}")),
            }
        }
        if f.currency != payment.currency {
            return Some(format!(
                "currency {} != expected {}",
                f.currency, payment.currency
            ));
        }
    }
    // The registration's identity wins over the merchant's configured one.
    let identities = [
        (
            "app_id",
            &f.app_id,
            &payment.expected_app_id,
            &expect.app_id,
        ),
        (
            "mch_id",
            &f.mch_id,
            &payment.expected_mch_id,
            &expect.mch_id,
        ),
        ("payee", &f.payee, &payment.expected_payee, &expect.payee),
    ];
    identities
        .into_iter()
        .find_map(|(name, got, registered, configured)| {
            let (got, want) = (got.as_ref()?, registered.as_ref().or(configured.as_ref())?);
            (got != want).then(|| format!("{name} {got} != expected {want}"))
        })
}

/// The event serialized once, as the outbox row and the publish both take it.
fn emitted_of(event: &CloudEvent) -> Result<Emitted, ApplyError> {
    Emitted::of(event).map_err(|e| ApplyError::Permanent(format!("event document: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_match_the_notifications_check_constraint() {
        let stored = [
            ApplyOutcome::Applied { events: vec![] },
            ApplyOutcome::DuplicateTransition,
            ApplyOutcome::Quarantined { reason: "r".into() },
            ApplyOutcome::Recorded,
        ];
        let labels: Vec<_> = stored.iter().map(ApplyOutcome::label).collect();
        assert_eq!(
            labels,
            ["applied", "duplicate_transition", "quarantined", "recorded"]
        );
    }
}
