//! The parking queue as an operator sees it: listing parked messages, and replaying
//! them back to the work queue (all, or filtered by provider and park reason). Used by
//! `payhook-admin parked …` and `POST /parked/replay`.
//!
//! Both walk the parking queue once (as many messages as it held at the start): each
//! message is taken with `basic.get`, a copy is published — to the work queue when it
//! is replayed, to the back of the parking queue otherwise — and the original is acked
//! only after the broker confirmed the copy. A crash mid-way therefore loses nothing (a
//! message may then be in both queues, and the worker's dedup makes the replayed copy
//! harmless).
//!
//! Why listing moves messages instead of getting them and requeueing: a requeue counts
//! as a redelivery, and quorum queues (RabbitMQ ≥ 4.0 sets a delivery limit of 20 on
//! every quorum queue) drop a message redelivered too often. A confirmed copy starts
//! afresh, so listing is safe however often an operator looks. After a full walk the
//! messages are in their original order. Run one walk at a time.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use payhook_shared::event::Envelope;
use payhook_shared::topology::Names;
use serde::{Deserialize, Serialize};

use crate::retry::{self, HopError};

/// Which parked messages to replay (all when both are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ReplayFilter {
    pub provider: Option<String>,
    pub reason: Option<String>,
}

impl ReplayFilter {
    /// `provider=…, reason=…` (or `all`), for the audit trail.
    pub fn describe(&self) -> String {
        match (&self.provider, &self.reason) {
            (None, None) => "parked: all".into(),
            (provider, reason) => format!(
                "parked: provider={}, reason={}",
                provider.as_deref().unwrap_or("*"),
                reason.as_deref().unwrap_or("*")
            ),
        }
    }

    pub fn matches(&self, message: &ParkedMessage) -> bool {
        let reason_ok = self
            .reason
            .as_deref()
            .is_none_or(|wanted| message.reason == wanted);
        let provider_ok = self
            .provider
            .as_deref()
            .is_none_or(|wanted| message.provider.as_deref() == Some(wanted));
        reason_ok && provider_ok
    }
}

/// What a walk did. A dry run replays nothing: `matched` says what it would replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayReport {
    /// Messages the filter selected.
    pub matched: u32,
    /// Messages moved to the work queue.
    pub replayed: u32,
    /// Messages left parked.
    pub kept: u32,
    pub dry_run: bool,
}

/// A parked message, summarized for a person: why it was parked, how often it was
/// tried, and what it is about. Never the raw notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedMessage {
    pub message_id: Option<String>,
    /// `bad_envelope`, `unknown_schema_version`, `permanent_error`,
    /// `retries_exhausted`, or `delivery_limit` (dead-lettered by the work queue after
    /// too many redeliveries, e.g. a worker crash loop).
    pub reason: String,
    pub attempts: u32,
    pub first_error: Option<String>,
    pub last_error: Option<String>,
    pub first_failed_at: Option<String>,
    pub parked_at: Option<String>,
    pub provider: Option<String>,
    pub merchant: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub out_trade_no: Option<String>,
    pub out_refund_no: Option<String>,
    /// Total (payment) or refund amount in fen.
    pub amount: Option<i64>,
    pub source: Option<String>,
    pub received_at: Option<String>,
    pub request_id: Option<String>,
    pub bytes: usize,
}

impl ParkedMessage {
    pub fn from_delivery(data: &[u8], properties: &BasicProperties) -> Self {
        let envelope = serde_json::from_slice::<Envelope>(data).ok();
        let text = |name: &str| retry::string_header(properties, name);
        let reason = text(retry::PARK_REASON)
            .or_else(|| text("x-first-death-reason"))
            .unwrap_or_else(|| "unknown".to_owned());
        let field = |f: fn(&Envelope) -> Option<String>| envelope.as_ref().and_then(f);
        Self {
            message_id: properties.message_id().as_ref().map(|s| s.to_string()),
            reason,
            attempts: retry::attempts(properties),
            first_error: text(retry::FIRST_ERROR),
            last_error: text(retry::LAST_ERROR),
            first_failed_at: text(retry::FIRST_FAILED_AT),
            parked_at: text(retry::PARKED_AT),
            provider: field(|e| Some(e.provider.as_str().to_owned())),
            merchant: field(|e| Some(e.merchant.clone())),
            kind: field(|e| Some(e.kind.as_str().to_owned())),
            status: field(|e| Some(e.status.as_str().to_owned())),
            out_trade_no: field(|e| e.fields.out_trade_no.clone()),
            out_refund_no: field(|e| e.fields.out_refund_no.clone()),
            amount: envelope
                .as_ref()
                .and_then(|e| e.fields.refund_amount.or(e.fields.total_amount)),
            source: field(|e| {
                Some(match e.source {
                    payhook_shared::event::Source::Notify => "notify".to_owned(),
                    payhook_shared::event::Source::Reconcile => "reconcile".to_owned(),
                })
            }),
            received_at: field(|e| {
                e.received_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .ok()
            }),
            request_id: field(|e| Some(e.request_id.clone())),
            bytes: data.len(),
        }
    }
}

/// Headers for a fresh start: the retry count and park markers are cleared (the old
/// errors stay for the record under `x-payhook-replayed-*`).
fn replay_properties(properties: &BasicProperties) -> BasicProperties {
    let inner = properties
        .headers()
        .clone()
        .unwrap_or_default()
        .inner()
        .clone();
    let mut fresh = FieldTable::default();
    for (k, v) in inner {
        let key = k.as_str();
        if key == retry::ATTEMPTS
            || key.starts_with("x-death")
            || key.starts_with("x-first-death")
            || key.starts_with("x-last-death")
        {
            continue;
        }
        if key == retry::PARK_REASON {
            fresh.insert("x-payhook-replayed-park-reason".into(), v);
            continue;
        }
        fresh.insert(k, v);
    }
    fresh.insert("x-payhook-replayed".into(), AMQPValue::Boolean(true));
    properties.clone().with_headers(fresh)
}

/// What to do with each message of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk<'a> {
    /// Keep everything (listing).
    List,
    /// Replay what the filter selects; with `dry_run`, only count it.
    Replay {
        filter: &'a ReplayFilter,
        dry_run: bool,
    },
}

/// The number of messages in the parking queue.
pub async fn depth(channel: &Channel, names: &Names) -> Result<u32, lapin::Error> {
    Ok(channel
        .queue_declare(
            names.parked.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count())
}

/// Walks the parking queue once; `seen` is called for every message with its summary,
/// whether it was (or, in a dry run, would be) replayed, and the walk's progress
/// (`done`, `total`). `channel` must be in confirm mode.
pub async fn walk_parked(
    channel: &Channel,
    names: &Names,
    walk: Walk<'_>,
    mut seen: impl FnMut(&ParkedMessage, bool, u32, u32),
) -> Result<ReplayReport, HopError> {
    let total = depth(channel, names).await?;
    let (filter, dry_run) = match walk {
        Walk::List => (None, true),
        Walk::Replay { filter, dry_run } => (Some(filter), dry_run),
    };
    let mut report = ReplayReport {
        dry_run,
        ..ReplayReport::default()
    };
    for done in 1..=total {
        let Some(message) = channel
            .basic_get(
                names.parked.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?
        else {
            break;
        };
        let delivery = message.delivery;
        let summary = ParkedMessage::from_delivery(&delivery.data, &delivery.properties);
        let matched = filter.is_some_and(|f| f.matches(&summary));
        let replay = matched && !dry_run;
        let (queue, properties) = if replay {
            (names.work.as_str(), replay_properties(&delivery.properties))
        } else {
            (names.parked.as_str(), delivery.properties.clone())
        };
        if let Err(error) =
            retry::publish_confirmed(channel, queue, &delivery.data, properties).await
        {
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
            return Err(error);
        }
        delivery.ack(BasicAckOptions::default()).await?;
        report.matched += u32::from(matched);
        if replay {
            report.replayed += 1;
        } else {
            report.kept += 1;
        }
        seen(&summary, matched, done, total);
    }
    if report.replayed > 0 {
        tracing::info!(
            replayed = report.replayed,
            kept = report.kept,
            "parked messages replayed"
        );
    }
    Ok(report)
}

/// Replays what `filter` selects (see [`walk_parked`]).
pub async fn replay_parked(
    channel: &Channel,
    names: &Names,
    filter: &ReplayFilter,
) -> Result<ReplayReport, HopError> {
    walk_parked(
        channel,
        names,
        Walk::Replay {
            filter,
            dry_run: false,
        },
        |_, _, _, _| {},
    )
    .await
}

/// `parked replay`'s answer (`payhook-admin parked replay`, `POST /parked/replay`): the
/// counts and the messages the filter selected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayAnswer {
    #[serde(flatten)]
    pub report: ReplayReport,
    pub messages: Vec<ParkedMessage>,
}

/// One queue's counts, or `None` when it is not declared (the worker never ran with
/// this prefix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepth {
    pub queue: String,
    pub messages: Option<u32>,
    pub consumers: Option<u32>,
}

/// Message and consumer counts of every payhook queue: the work queue, the
/// `retry_tiers` retry queues, the parking queue and the unrouted events' queue.
pub async fn queue_depths(
    connection: &lapin::Connection,
    names: &Names,
    retry_tiers: usize,
) -> Result<Vec<QueueDepth>, lapin::Error> {
    let mut queues = vec![names.work.clone()];
    queues.extend((0..retry_tiers).map(|i| names.retry(i)));
    queues.push(names.parked.clone());
    queues.push(names.events_unrouted.clone());
    let mut depths = Vec::with_capacity(queues.len());
    let mut channel = connection.create_channel().await?;
    for queue in queues {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
        {
            Ok(q) => depths.push(QueueDepth {
                queue,
                messages: Some(q.message_count()),
                consumers: Some(q.consumer_count()),
            }),
            Err(_) => {
                // A passive declare of a missing queue closes the channel (404).
                depths.push(QueueDepth {
                    queue,
                    messages: None,
                    consumers: None,
                });
                channel = connection.create_channel().await?;
            }
        }
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(depths)
}

/// Lists the parked messages `filter` selects (one walk, see the module's docs).
pub async fn list_parked(
    channel: &Channel,
    names: &Names,
    filter: &ReplayFilter,
    mut progress: impl FnMut(u32, u32),
) -> Result<Vec<ParkedMessage>, HopError> {
    let mut listed = Vec::new();
    walk_parked(channel, names, Walk::List, |m, _, done, total| {
        progress(done, total);
        if filter.matches(m) {
            listed.push(m.clone());
        }
    })
    .await?;
    Ok(listed)
}

/// Replays (or, with `dry_run`, counts) the parked messages `filter` selects.
pub async fn replay_selected(
    channel: &Channel,
    names: &Names,
    filter: &ReplayFilter,
    dry_run: bool,
    mut progress: impl FnMut(u32, u32),
) -> Result<ReplayAnswer, HopError> {
    let mut messages = Vec::new();
    let walk = Walk::Replay { filter, dry_run };
    let report = walk_parked(channel, names, walk, |m, matched, done, total| {
        progress(done, total);
        if matched {
            messages.push(m.clone());
        }
    })
    .await?;
    Ok(ReplayAnswer { report, messages })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{LongString, ShortString};

    fn with_headers(pairs: &[(&str, &str)]) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (k, v) in pairs {
            headers.insert(
                ShortString::from(*k),
                AMQPValue::LongString(LongString::from(*v)),
            );
        }
        BasicProperties::default()
            .with_message_id("alipay:m1:n1".into())
            .with_headers(headers)
    }

    #[test]
    fn a_message_that_is_not_an_envelope_is_summarized_from_its_headers() {
        let properties = with_headers(&[
            (retry::PARK_REASON, "bad_envelope"),
            (retry::LAST_ERROR, "expected value at line 1"),
        ]);
        let message = ParkedMessage::from_delivery(b"not json", &properties);
        assert_eq!(message.reason, "bad_envelope");
        assert_eq!(message.message_id.as_deref(), Some("alipay:m1:n1"));
        assert_eq!(
            message.last_error.as_deref(),
            Some("expected value at line 1")
        );
        assert_eq!(message.provider, None);
        assert_eq!(message.bytes, 8);
    }

    #[test]
    fn a_message_dead_lettered_by_the_delivery_limit_says_so() {
        let properties = with_headers(&[("x-first-death-reason", "delivery_limit")]);
        let message = ParkedMessage::from_delivery(b"{}", &properties);
        assert_eq!(message.reason, "delivery_limit");
        let filter = ReplayFilter {
            provider: None,
            reason: Some("delivery_limit".into()),
        };
        assert!(filter.matches(&message));
    }

    #[test]
    fn a_provider_filter_never_selects_a_message_without_an_envelope() {
        let message = ParkedMessage::from_delivery(b"junk", &with_headers(&[]));
        assert_eq!(message.reason, "unknown");
        let filter = ReplayFilter {
            provider: Some("alipay".into()),
            reason: None,
        };
        assert!(!filter.matches(&message));
        assert!(ReplayFilter::default().matches(&message));
    }

    #[test]
    fn a_replayed_copy_starts_afresh_but_keeps_its_history() {
        let mut properties = with_headers(&[
            (retry::PARK_REASON, "retries_exhausted"),
            (retry::FIRST_ERROR, "deadlock"),
            ("x-first-death-reason", "expired"),
        ]);
        let mut headers = properties.headers().clone().expect("headers set above");
        headers.insert(retry::ATTEMPTS.into(), AMQPValue::LongUInt(6));
        properties = properties.with_headers(headers);
        let fresh = replay_properties(&properties);
        assert_eq!(retry::attempts(&fresh), 0);
        assert_eq!(retry::string_header(&fresh, retry::PARK_REASON), None);
        assert_eq!(retry::string_header(&fresh, "x-first-death-reason"), None);
        assert_eq!(
            retry::string_header(&fresh, "x-payhook-replayed-park-reason").as_deref(),
            Some("retries_exhausted")
        );
        assert_eq!(
            retry::string_header(&fresh, retry::FIRST_ERROR).as_deref(),
            Some("deadlock")
        );
    }
}
