//! Publishing a burst of events with publisher confirms: what the relay's rounds and
//! the dispatcher's rounds share.

use futures::future::join_all;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::time::Instant;
use uuid::Uuid;

use super::{CONFIRM_TIMEOUT, CONTENT_TYPE, RelayError};

/// What the broker said about one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Acked,
    /// Unroutable: no queue bound for the routing key (mandatory publish).
    Returned,
    Nacked,
    /// The channel failed before the confirm arrived.
    Failed,
    /// No confirm before the deadline.
    TimedOut,
}

/// One event to publish.
pub(super) struct Outgoing<'a> {
    pub(super) routing_key: &'a str,
    pub(super) payload: &'a [u8],
    pub(super) properties: BasicProperties,
}

/// The AMQP properties of an event: persistent, `message_id` = the CloudEvents `id`
/// (consumers deduplicate on it), `type` = the CloudEvents `type`, `timestamp` = its
/// `time` (Unix seconds).
pub(super) fn properties(event_id: Uuid, ce_type: Option<&str>, timestamp: i64) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_delivery_mode(2) // persistent: survives a broker restart in a durable queue
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(event_id.to_string().into())
        .with_timestamp(u64::try_from(timestamp).unwrap_or(0))
        .with_app_id("payhook-worker".into());
    match ce_type {
        Some(ce_type) => properties.with_type(ce_type.into()),
        None => properties,
    }
}

/// Publishes every event (in order) to `exchange`, then awaits every confirm, all
/// within [`CONFIRM_TIMEOUT`]. Returns one outcome per event — events never sent
/// because the channel failed first count as `Failed` — and the channel error, if any.
/// The channel must be in confirm mode.
pub(super) async fn publish(
    channel: &Channel,
    exchange: &str,
    events: Vec<Outgoing<'_>>,
) -> (Vec<Outcome>, Option<RelayError>) {
    let count = events.len();
    let exchange = ShortString::from(exchange);
    // mandatory: an event no queue receives comes back instead of vanishing.
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    // One deadline for the whole burst: writing a publish can stall too (a broker
    // that blocked publishers stops reading the socket).
    let deadline = Instant::now() + CONFIRM_TIMEOUT;
    let mut confirms = Vec::with_capacity(count);
    let mut error = None;
    for event in events {
        let sent = channel.basic_publish(
            exchange.clone(),
            event.routing_key.into(),
            options,
            event.payload,
            event.properties,
        );
        match tokio::time::timeout_at(deadline, sent).await {
            Ok(Ok(confirm)) => confirms.push(confirm),
            Ok(Err(e)) => {
                error = Some(RelayError::Channel(e));
                break;
            }
            Err(_elapsed) => {
                error = Some(RelayError::ConfirmTimeout(CONFIRM_TIMEOUT));
                break;
            }
        }
    }
    let confirmed = join_all(
        confirms
            .into_iter()
            .map(|confirm| tokio::time::timeout_at(deadline, confirm)),
    )
    .await;
    let mut outcomes = Vec::with_capacity(count);
    for result in confirmed {
        outcomes.push(match result {
            Ok(Ok(Confirmation::Ack(None))) => Outcome::Acked,
            Ok(Ok(Confirmation::Ack(Some(_)))) => Outcome::Returned,
            Ok(Ok(Confirmation::Nack(_))) => Outcome::Nacked,
            // Confirm mode was selected; anything else is not a confirm.
            Ok(Ok(Confirmation::NotRequested)) => Outcome::Failed,
            Ok(Err(e)) => {
                error.get_or_insert(RelayError::Channel(e));
                Outcome::Failed
            }
            Err(_elapsed) => {
                error.get_or_insert(RelayError::ConfirmTimeout(CONFIRM_TIMEOUT));
                Outcome::TimedOut
            }
        });
    }
    outcomes.resize(count, Outcome::Failed);
    (outcomes, error)
}
