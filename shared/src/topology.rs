//! RabbitMQ names and their idempotent declaration (docs/design.md, "RabbitMQ topology").
//!
//! Every name carries a configurable prefix so tests and tenants share one broker.
//! Declarations are idempotent: the receiver and the worker both declare what they
//! use at start-up, with the *same* arguments (a mismatch would be a
//! `PRECONDITION_FAILED` channel error), which is why all arguments are built here.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::event::Envelope;

/// The names of every exchange and queue, derived from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub prefix: String,
    /// Topic exchange the receiver publishes verified notifications to.
    pub notifications: String,
    /// Quorum queue the worker consumes.
    pub work: String,
    /// Quorum queue where unprocessable messages wait for a person.
    pub parked: String,
    /// Topic exchange for downstream subscribers.
    pub events: String,
    /// Alternate exchange and queue of `events`: what no subscriber's binding matched.
    pub events_unrouted: String,
    /// Stream of WeChat V3 platform certificate sets, worker → receivers.
    pub certificates: String,
    /// Stream of refused requests' samples, receivers → workers (never work).
    pub rejected: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            notifications: format!("{prefix}.notifications"),
            work: format!("{prefix}.work"),
            parked: format!("{prefix}.parked"),
            events: format!("{prefix}.events"),
            events_unrouted: format!("{prefix}.events.unrouted"),
            certificates: format!("{prefix}.certificates"),
            rejected: format!("{prefix}.rejected"),
        }
    }

    /// The retry tier queue `index` (0-based).
    pub fn retry(&self, index: usize) -> String {
        format!("{}.retry.{}", self.prefix, index + 1)
    }
}

/// Broker-side policy knobs shared by everyone who declares the work queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Quorum-queue `x-delivery-limit`: a message redelivered more often than this
    /// (crash loops) is dead-lettered to the parking queue instead of looping forever.
    pub delivery_limit: u32,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        Self { delivery_limit: 20 }
    }
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn args(pairs: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in pairs {
        table.insert(ShortString::from(k), v);
    }
    table
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

async fn declare_topic(channel: &Channel, name: &str) -> lapin::Result<()> {
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

async fn declare_parked(channel: &Channel, names: &Names) -> lapin::Result<()> {
    channel
        .queue_declare(
            names.parked.as_str().into(),
            durable_queue(),
            args(vec![("x-queue-type", long("quorum"))]),
        )
        .await
        .map(drop)
}

/// The events exchange, with an alternate exchange so that an event no subscriber's
/// binding matches is kept (in `<prefix>.events.unrouted`) instead of being returned:
/// the outbox relay publishes with `mandatory`, and a returned event would stay
/// unpublished forever.
pub async fn declare_events(channel: &Channel, names: &Names) -> lapin::Result<()> {
    channel
        .exchange_declare(
            names.events_unrouted.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            names.events_unrouted.as_str().into(),
            durable_queue(),
            args(vec![("x-queue-type", long("quorum"))]),
        )
        .await?;
    channel
        .queue_bind(
            names.events_unrouted.as_str().into(),
            names.events_unrouted.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            names.events.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            args(vec![("alternate-exchange", long(&names.events_unrouted))]),
        )
        .await
}

/// Declares what the receiver needs: the notifications exchange, the work queue bound
/// to it (so a publish is routable and confirmed only once a queue holds it) and the
/// parking queue the work queue dead-letters to.
pub async fn declare_ingress(
    channel: &Channel,
    names: &Names,
    policy: &QueuePolicy,
) -> lapin::Result<()> {
    declare_topic(channel, &names.notifications).await?;
    declare_parked(channel, names).await?;
    let work_args = args(vec![
        // Replicated, durable, fsynced before the publisher confirm.
        ("x-queue-type", long("quorum")),
        (
            "x-delivery-limit",
            AMQPValue::LongUInt(policy.delivery_limit),
        ),
        // Messages over the delivery limit go to the parking queue…
        ("x-dead-letter-exchange", long("")),
        ("x-dead-letter-routing-key", long(&names.parked)),
        // …with at-least-once dead-lettering (RabbitMQ ≥ 3.10), which requires
        // reject-publish overflow: nothing is dropped on the way to parking.
        ("x-dead-letter-strategy", long("at-least-once")),
        ("x-overflow", long("reject-publish")),
    ]);
    channel
        .queue_declare(names.work.as_str().into(), durable_queue(), work_args)
        .await?;
    channel
        .queue_bind(
            names.work.as_str().into(),
            names.notifications.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Declares the full topology: ingress, retry tiers (TTL queues dead-lettering back to
/// the work queue) and the events exchange. Used by the worker.
pub async fn declare_all(
    channel: &Channel,
    names: &Names,
    policy: &QueuePolicy,
    retry_delays_ms: &[u32],
) -> lapin::Result<()> {
    declare_ingress(channel, names, policy).await?;
    declare_events(channel, names).await?;
    for (i, delay) in retry_delays_ms.iter().enumerate() {
        let retry_args = args(vec![
            ("x-queue-type", long("quorum")),
            ("x-message-ttl", AMQPValue::LongUInt(*delay)),
            ("x-dead-letter-exchange", long("")),
            ("x-dead-letter-routing-key", long(&names.work)),
            ("x-dead-letter-strategy", long("at-least-once")),
            ("x-overflow", long("reject-publish")),
        ]);
        channel
            .queue_declare(names.retry(i).as_str().into(), durable_queue(), retry_args)
            .await?;
    }
    Ok(())
}

/// Size the certificates stream is trimmed to (whole segments, oldest first). A set is
/// a few kilobytes and each worker republishes every merchant's set at each refresh,
/// so what is trimmed has long been superseded.
pub const CERTIFICATES_STREAM_MAX_BYTES: u32 = 64 * 1024 * 1024;
/// Segment size of the certificates stream (retention removes whole segments).
pub const CERTIFICATES_STREAM_SEGMENT_BYTES: u32 = 4 * 1024 * 1024;

/// Declares the certificates stream (the worker publishes to it through the default
/// exchange; receivers read it from the start). A stream, not a queue: reading does
/// not consume, so every receiver — one started long after the last rotation
/// included — reads every set.
pub async fn declare_certificates(channel: &Channel, names: &Names) -> lapin::Result<()> {
    channel
        .queue_declare(
            names.certificates.as_str().into(),
            durable_queue(),
            args(vec![
                ("x-queue-type", long("stream")),
                (
                    "x-max-length-bytes",
                    AMQPValue::LongLongInt(i64::from(CERTIFICATES_STREAM_MAX_BYTES)),
                ),
                (
                    "x-stream-max-segment-size-bytes",
                    AMQPValue::LongUInt(CERTIFICATES_STREAM_SEGMENT_BYTES),
                ),
            ]),
        )
        .await
        .map(drop)
}

/// Size the rejected-samples stream is trimmed to (whole segments, oldest first).
pub const REJECTED_STREAM_MAX_BYTES: u32 = 16 * 1024 * 1024;
/// Segment size of the rejected-samples stream.
pub const REJECTED_STREAM_SEGMENT_BYTES: u32 = 1024 * 1024;
/// Age after which rejected samples are trimmed.
pub const REJECTED_STREAM_MAX_AGE: &str = "7D";

/// Declares the stream of refused requests' samples (`crate::rejected`): receivers
/// append, workers read; capped by size and age, consumed by nothing as work.
pub async fn declare_rejected(channel: &Channel, names: &Names) -> lapin::Result<()> {
    channel
        .queue_declare(
            names.rejected.as_str().into(),
            durable_queue(),
            args(vec![
                ("x-queue-type", long("stream")),
                (
                    "x-max-length-bytes",
                    AMQPValue::LongLongInt(i64::from(REJECTED_STREAM_MAX_BYTES)),
                ),
                (
                    "x-stream-max-segment-size-bytes",
                    AMQPValue::LongUInt(REJECTED_STREAM_SEGMENT_BYTES),
                ),
                ("x-max-age", long(REJECTED_STREAM_MAX_AGE)),
            ]),
        )
        .await
        .map(drop)
}

/// The AMQP properties of an envelope on the notifications exchange, the same for the
/// receiver and the reconciler (`app_id` says which): persistent, JSON, `message_id` =
/// the dedup identity, the request id as correlation id and header.
pub fn envelope_properties(envelope: &Envelope, app_id: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    let mut put = |k: &str, v: &str| {
        headers.insert(
            ShortString::from(k),
            AMQPValue::LongString(LongString::from(v)),
        );
    };
    put("request_id", &envelope.request_id);
    if let Some(traceparent) = &envelope.traceparent {
        put("traceparent", traceparent);
    }
    put("provider", envelope.provider.as_str());
    put("merchant", &envelope.merchant);
    put("kind", envelope.kind.as_str());
    headers.insert(
        ShortString::from("schema_version"),
        AMQPValue::LongUInt(envelope.schema_version),
    );
    BasicProperties::default()
        .with_delivery_mode(2) // persistent
        .with_content_type("application/json".into())
        .with_message_id(envelope.event_id.as_str().into())
        .with_correlation_id(envelope.request_id.as_str().into())
        .with_timestamp(u64::try_from(envelope.received_at.unix_timestamp()).unwrap_or(0))
        .with_app_id(app_id.into())
        .with_type(envelope.kind.as_str().into())
        .with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_the_prefix() {
        let n = Names::new("t1");
        assert_eq!(n.notifications, "t1.notifications");
        assert_eq!(n.work, "t1.work");
        assert_eq!(n.parked, "t1.parked");
        assert_eq!(n.events, "t1.events");
        assert_eq!(n.retry(0), "t1.retry.1");
        assert_eq!(n.certificates, "t1.certificates");
        assert_eq!(n.rejected, "t1.rejected");
    }
}
