//! The payment's facts after a transition — amounts, timestamps, the derived state —
//! and the event that announces it. Pure: computed from the locked row and the
//! envelope, written by [`super::rows`].

use payhook_shared::event::{Envelope, Source, Status};
use time::OffsetDateTime;

use super::cloudevents::EventData;
use super::error::ApplyError;
use super::locked::Payment;
use super::state::{Facts, PaymentState};

/// The payment's facts and state after the envelope's transition.
#[derive(Debug, Clone)]
pub(super) struct Next {
    pub(super) state: PaymentState,
    pub(super) total_amount: Option<i64>,
    pub(super) paid_amount: Option<i64>,
    pub(super) refunded_amount: i64,
    pub(super) provider_trade_no: Option<String>,
    pub(super) paid_at: Option<OffsetDateTime>,
    pub(super) closed_at: Option<OffsetDateTime>,
}

impl Next {
    pub(super) fn unchanged(p: &Payment) -> Self {
        Self {
            state: p.state,
            total_amount: p.total_amount,
            paid_amount: p.paid_amount,
            refunded_amount: p.refunded_amount,
            provider_trade_no: p.provider_trade_no.clone(),
            paid_at: p.paid_at,
            closed_at: p.closed_at,
        }
    }
}

/// The facts `envelope`'s transition adds to the locked row `p`, and the state they
/// lead to (never below `p.state`).
pub(super) fn next_facts(p: &Payment, envelope: &Envelope) -> Result<Next, ApplyError> {
    let f = &envelope.fields;
    let at = event_time(envelope);
    let mut next = Next::unchanged(p);
    match envelope.status {
        Status::Paid => {
            next.paid_at = p.paid_at.or(Some(at));
            next.paid_amount = f.paid_amount.or(p.paid_amount);
            next.total_amount = f.total_amount.or(p.total_amount);
            next.provider_trade_no = f.provider_trade_no.clone().or(next.provider_trade_no);
        }
        // A close never undoes a payment: `Closed` ranks below `Paid`, so a payment
        // that lands after the close (the buyer paid just before it; money moved)
        // still makes the order PAID, and a close after a payment changes nothing.
        Status::Closed => next.closed_at = p.closed_at.or(Some(at)),
        Status::RefundSucceeded | Status::RefundClosed | Status::RefundAbnormal => {
            // Refund notifications describe the trade too; fill what is missing.
            next.total_amount = p.total_amount.or(f.total_amount);
            next.provider_trade_no = next.provider_trade_no.or(f.provider_trade_no.clone());
            if envelope.status == Status::RefundSucceeded
                && let Some(amount) = f.refund_amount
            {
                next.refunded_amount = if f.refund_amount_cumulative {
                    // Alipay `refund_fee` is the trade's running total: the highest
                    // one seen is the truth, in whatever order they arrive.
                    p.refunded_amount.max(amount)
                } else {
                    // WeChat: this refund only, counted once because the transition
                    // (its out_refund_no) is new.
                    p.refunded_amount
                        .checked_add(amount)
                        .ok_or_else(|| ApplyError::Permanent("refunded amount overflows".into()))?
                };
            }
        }
        // Failed: recorded and announced, no fact changes.
        _ => {}
    }
    let facts = Facts {
        paid: next.paid_at.is_some()
            || envelope.status == Status::RefundSucceeded
            || next.refunded_amount > 0,
        closed: next.closed_at.is_some(),
        total_amount: next.total_amount,
        refunded_amount: next.refunded_amount,
    };
    next.state = p.state.advance(&facts);
    Ok(next)
}

/// The `data` of the event announcing the transition.
pub(super) fn event_data(
    envelope: &Envelope,
    out_trade_no: &str,
    transition_key: &str,
    currency: &str,
    next: &Next,
    quarantine_reason: Option<String>,
) -> EventData {
    let f = &envelope.fields;
    let refund = is_refund(envelope.status);
    EventData {
        provider: envelope.provider,
        merchant: envelope.merchant.clone(),
        out_trade_no: out_trade_no.to_owned(),
        out_refund_no: f.out_refund_no.clone().filter(|_| refund),
        provider_trade_no: next.provider_trade_no.clone(),
        state: next.state.as_str().to_owned(),
        total_amount: next.total_amount,
        paid_amount: next.paid_amount,
        refund_amount: f.refund_amount.filter(|_| refund),
        refund_amount_cumulative: refund && f.refund_amount_cumulative,
        refunded_amount: next.refunded_amount,
        currency: currency.to_owned(),
        transition_key: transition_key.to_owned(),
        event_id: envelope.event_id.clone(),
        source: envelope.source,
        quarantine_reason,
    }
}

pub(super) fn is_refund(status: Status) -> bool {
    matches!(
        status,
        Status::RefundSucceeded | Status::RefundClosed | Status::RefundAbnormal
    )
}

/// The envelope status as stored (`PAID`, `REFUND_SUCCEEDED`, …).
pub(super) fn status_label(status: Status) -> &'static str {
    status.as_str()
}

pub(super) fn source_label(envelope: &Envelope) -> &'static str {
    match envelope.source {
        Source::Notify => "notify",
        Source::Reconcile => "reconcile",
    }
}

/// When the provider says it happened, else when we heard of it.
fn event_time(envelope: &Envelope) -> OffsetDateTime {
    envelope
        .fields
        .event_time
        .as_deref()
        .and_then(parse_provider_time)
        .unwrap_or(envelope.received_at)
}

/// WeChat V3 times are RFC 3339; Alipay (`2024-05-20 10:00:05[.123]`) and WeChat V2
/// (`20240520100005`, or the refund's `2024-05-20 10:00:05`) give Beijing time.
fn parse_provider_time(text: &str) -> Option<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::{format_description, offset};
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(at);
    }
    let local = [
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"),
        format_description!("[year][month][day][hour][minute][second]"),
    ];
    local
        .iter()
        .find_map(|format| time::PrimitiveDateTime::parse(text, format).ok())
        .map(|at| at.assume_offset(offset!(+8)))
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_times_are_read_in_their_zones() {
        let utc = |s: &str| parse_provider_time(s).map(|t| t.unix_timestamp());
        // 2024-05-20 02:00:05 UTC
        let expected = Some(1_716_170_405);
        assert_eq!(utc("2024-05-20T10:00:05+08:00"), expected);
        assert_eq!(utc("2024-05-20 10:00:05"), expected);
        assert_eq!(utc("2024-05-20 10:00:05.123"), expected);
        assert_eq!(utc("20240520100005"), expected);
        assert_eq!(utc("yesterday"), None);
    }
}
