//! Human output of `payhook-admin`: tables for lists, sections for a history, a
//! progress bar on stderr for queue walks.

use std::io::{self, Write};

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use time::OffsetDateTime;

use super::{Outcome, QueueDepth, ReplayAnswer};
use crate::db::history::{PaymentHistory, PaymentRecord};
use crate::parked::ParkedMessage;

/// Fen as yuan text: `8888` → `88.88`.
fn money_text(fen: i64) -> String {
    payhook_shared::money::format_yuan(fen)
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    table
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn fen(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_owned(), money_text)
}

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn queues(out: &mut impl Write, depths: &[QueueDepth]) -> io::Result<()> {
    let mut t = table(&["queue", "messages", "consumers"]);
    for d in depths {
        t.add_row(vec![
            d.queue.clone(),
            d.messages
                .map_or_else(|| "missing".to_owned(), |n| n.to_string()),
            opt(d.consumers),
        ]);
    }
    writeln!(out, "{t}")
}

fn parked_table(out: &mut impl Write, messages: &[ParkedMessage]) -> io::Result<()> {
    let mut t = table(&[
        "message id",
        "reason",
        "attempts",
        "provider",
        "merchant",
        "order",
        "kind/status",
        "amount",
        "parked at",
        "last error",
    ]);
    for m in messages {
        t.add_row(vec![
            opt(m.message_id.as_deref()),
            m.reason.clone(),
            m.attempts.to_string(),
            opt(m.provider.as_deref()),
            opt(m.merchant.as_deref()),
            opt(m.out_refund_no.as_deref().or(m.out_trade_no.as_deref())),
            format!("{}/{}", opt(m.kind.as_deref()), opt(m.status.as_deref())),
            fen(m.amount),
            opt(m.parked_at.as_deref()),
            opt(m.last_error.as_deref().map(|e| shorten(e, 60))),
        ]);
    }
    writeln!(out, "{t}")
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

pub fn parked(out: &mut impl Write, messages: &[ParkedMessage]) -> io::Result<()> {
    if messages.is_empty() {
        return writeln!(out, "no parked messages");
    }
    parked_table(out, messages)?;
    writeln!(out, "{} parked message(s)", messages.len())
}

pub fn replay(out: &mut impl Write, answer: &ReplayAnswer) -> io::Result<()> {
    let r = &answer.report;
    if !answer.messages.is_empty() {
        parked_table(out, &answer.messages)?;
    }
    if r.dry_run {
        writeln!(
            out,
            "dry run: {} message(s) would be replayed, {} would stay parked",
            r.matched,
            r.kept - r.matched
        )
    } else {
        writeln!(
            out,
            "replayed {} message(s) to the work queue, {} stay parked",
            r.replayed, r.kept
        )
    }
}

pub fn payments(out: &mut impl Write, rows: &[PaymentRecord]) -> io::Result<()> {
    let mut t = table(&[
        "provider",
        "merchant",
        "out_trade_no",
        "state",
        "total",
        "refunded",
        "registered",
        "quarantined",
        "updated",
    ]);
    for p in rows {
        t.add_row(vec![
            p.provider.clone(),
            p.merchant.clone(),
            p.out_trade_no.clone(),
            p.state.as_str().to_owned(),
            fen(p.total_amount.or(p.expected_amount)),
            money_text(p.refunded_amount),
            yes_no(p.registered),
            if p.quarantined {
                opt(p.quarantine_reason.as_deref())
            } else {
                "no".to_owned()
            },
            rfc3339(p.updated_at),
        ]);
    }
    writeln!(out, "{t}")
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

pub fn history(out: &mut impl Write, h: &PaymentHistory) -> io::Result<()> {
    let p = &h.payment;
    writeln!(
        out,
        "{} {} {}: {}",
        p.provider,
        p.merchant,
        p.out_trade_no,
        p.state.as_str()
    )?;
    writeln!(
        out,
        "  total {} {}, paid {}, refunded {}, provider trade {}",
        fen(p.total_amount.or(p.expected_amount)),
        p.currency,
        fen(p.paid_amount),
        money_text(p.refunded_amount),
        opt(p.provider_trade_no.as_deref())
    )?;
    writeln!(
        out,
        "  registered {}, quarantined {}, created {}, updated {}",
        yes_no(p.registered),
        if p.quarantined {
            opt(p.quarantine_reason.as_deref())
        } else {
            "no".to_owned()
        },
        rfc3339(p.created_at),
        rfc3339(p.updated_at)
    )?;
    writeln!(out, "\ntransitions")?;
    let mut t = table(&["applied", "kind", "status", "from → to", "source", "key"]);
    for tr in &h.transitions {
        t.add_row(vec![
            rfc3339(tr.applied_at),
            tr.kind.clone(),
            tr.status.clone(),
            format!("{} → {}", tr.from_state.as_str(), tr.to_state.as_str()),
            tr.source.clone(),
            tr.transition_key.clone(),
        ]);
    }
    writeln!(out, "{t}")?;
    if !h.refunds.is_empty() {
        writeln!(out, "\nrefunds")?;
        let mut t = table(&["out_refund_no", "status", "amount", "updated"]);
        for r in &h.refunds {
            t.add_row(vec![
                r.out_refund_no.clone(),
                r.status.clone(),
                fen(r.amount),
                rfc3339(r.updated_at),
            ]);
        }
        writeln!(out, "{t}")?;
    }
    writeln!(out, "\nnotifications")?;
    let mut t = table(&["received", "kind", "status", "source", "outcome", "id"]);
    for n in &h.notifications {
        t.add_row(vec![
            rfc3339(n.received_at),
            n.kind.clone(),
            n.status.clone(),
            n.source.clone(),
            n.outcome.clone(),
            n.event_id.clone(),
        ]);
    }
    writeln!(out, "{t}")?;
    writeln!(out, "\nevents")?;
    let mut t = table(&["created", "routing key", "published", "id"]);
    for e in &h.events {
        t.add_row(vec![
            rfc3339(e.created_at),
            e.routing_key.clone(),
            e.published_at.map_or_else(|| "not yet".to_owned(), rfc3339),
            e.event_id.to_string(),
        ]);
    }
    writeln!(out, "{t}")?;
    let r = &h.retention;
    for (what, before) in [
        ("notifications recorded", r.notifications_pruned_before),
        ("events published", r.events_pruned_before),
    ] {
        if let Some(before) = before {
            writeln!(
                out,
                "retention: {what} before {} were pruned",
                rfc3339(before)
            )?;
        }
    }
    if let Some(before) = r.redacted_before {
        writeln!(
            out,
            "retention: buyer identifiers of notifications recorded before {} are redacted",
            rfc3339(before)
        )?;
    }
    Ok(())
}

pub fn outcome(out: &mut impl Write, o: &Outcome) -> io::Result<()> {
    writeln!(out, "{}", o.status.replace('_', " "))
}

/// A progress bar for a queue walk: drawn on stderr when it is a terminal and the
/// output is for people, hidden otherwise.
pub struct Progress(ProgressBar);

pub fn progress(json: bool) -> Progress {
    let bar = ProgressBar::with_draw_target(
        None,
        if json {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{spinner} walking the parking queue {bar:30} {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Progress(bar)
}

impl Progress {
    pub fn update(&self, done: u32, total: u32) {
        self.0.set_length(u64::from(total));
        self.0.set_position(u64::from(done));
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

pub fn audit(out: &mut impl Write, records: &[crate::db::audit::AuditRecord]) -> io::Result<()> {
    let mut t = table(&["at", "actor", "action", "target", "result"]);
    for r in records {
        t.add_row([
            rfc3339(r.at),
            r.actor.clone(),
            r.action.clone(),
            r.target.clone(),
            r.result.clone(),
        ]);
    }
    writeln!(out, "{t}")
}

pub fn rejected(
    out: &mut impl Write,
    samples: &[payhook_shared::rejected::Summary],
) -> io::Result<()> {
    if samples.is_empty() {
        return writeln!(out, "no refused notification sampled");
    }
    let mut t = table(&[
        "refused at",
        "provider",
        "merchant",
        "reason",
        "bytes",
        "id",
    ]);
    for s in samples {
        t.add_row(vec![
            unix(s.received_at),
            s.provider.as_str().to_owned(),
            s.merchant.clone(),
            s.reason.clone(),
            s.body_bytes.to_string(),
            s.id.clone(),
        ]);
    }
    writeln!(out, "{t}")?;
    writeln!(out, "{} sample(s)", samples.len())
}

pub fn rejected_sample(
    out: &mut impl Write,
    d: &payhook_shared::rejected::Described,
) -> io::Result<()> {
    let s = &d.summary;
    writeln!(out, "sample      {}", s.id)?;
    writeln!(out, "refused at  {}", unix(s.received_at))?;
    writeln!(
        out,
        "provider    {}  merchant {}",
        s.provider.as_str(),
        s.merchant
    )?;
    writeln!(out, "reason      {}: {}", s.reason, s.error)?;
    writeln!(out, "request id  {}", s.request_id)?;
    writeln!(
        out,
        "body        {} bytes, sha256 {}",
        s.body_bytes, s.body_sha256
    )?;
    writeln!(out, "headers     {}", d.header_names.join(", "))?;
    writeln!(out, "fields      {}", d.field_names.join(", "))?;
    writeln!(
        out,
        "(payhook-admin rejected diagnose {} explains it)",
        s.id
    )
}

/// Unix seconds as RFC 3339.
fn unix(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs).map_or_else(|_| secs.to_string(), rfc3339)
}
