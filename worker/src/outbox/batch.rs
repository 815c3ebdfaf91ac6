//! One relay round: claim a batch of unpublished rows, publish them all, await all
//! confirms, mark the confirmed rows published, commit.
//!
//! The row locks taken by `FOR UPDATE SKIP LOCKED` are what keeps replicas apart, so
//! the transaction stays open across the publishes; the confirm timeout bounds how
//! long that can be.

use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;
use uuid::Uuid;

use super::{CONFIRM_TIMEOUT, CONTENT_TYPE, OutboxRelay, RelayError};

/// The payload is taken as the stored JSONB's text (valid JSON, published as is); the
/// CloudEvents `type` and `time` are extracted by the database for the AMQP properties.
const CLAIM: &str = "\
    SELECT id, event_id, routing_key, payload::text AS payload, \
           payload->>'type' AS ce_type, payload->>'time' AS ce_time, \
           EXTRACT(EPOCH FROM created_at)::bigint AS created_epoch \
    FROM outbox \
    WHERE published_at IS NULL \
    ORDER BY id \
    LIMIT $1 \
    FOR UPDATE SKIP LOCKED";

/// `clock_timestamp()`, not `now()`: `now()` is the start of the transaction, before
/// the publish happened.
const MARK: &str = "UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1)";

/// A claimed row, as the relay needs it.
#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    id: i64,
    event_id: Uuid,
    routing_key: String,
    payload: String,
    ce_type: Option<String>,
    ce_time: Option<String>,
    created_epoch: i64,
}

impl Claimed {
    fn properties(&self) -> BasicProperties {
        // The CloudEvents `time` when it parses, else when the row was written.
        let timestamp = self
            .ce_time
            .as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .map_or(self.created_epoch, OffsetDateTime::unix_timestamp);
        let properties = BasicProperties::default()
            .with_delivery_mode(2) // persistent: survives a broker restart in a durable queue
            .with_content_type(CONTENT_TYPE.into())
            // Consumers deduplicate on this (= the CloudEvents id).
            .with_message_id(self.event_id.to_string().into())
            .with_timestamp(u64::try_from(timestamp).unwrap_or(0))
            .with_app_id("payhook-worker".into());
        match &self.ce_type {
            Some(ce_type) => properties.with_type(ce_type.as_str().into()),
            None => properties,
        }
    }
}

/// What the broker said about one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked,
    /// Unroutable: no queue bound for the routing key (mandatory publish).
    Returned,
    Nacked,
    /// The channel failed before the confirm arrived.
    Failed,
    /// No confirm before the deadline.
    TimedOut,
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Round {
    /// Rows taken (locked) this round.
    pub claimed: usize,
    /// Rows confirmed by the broker and marked published.
    pub published: usize,
}

impl OutboxRelay {
    /// Publishes one batch; returns how many rows were published (confirmed and
    /// marked). Rows the broker returned or nacked stay unpublished and are not an
    /// error. A channel failure or a missing confirm is an error — the rows confirmed
    /// before it are still marked — and the channel should be replaced.
    ///
    /// Puts `channel` in confirm mode if it is not.
    pub async fn relay_once(&self, channel: &Channel) -> Result<usize, RelayError> {
        self.round(channel).await.map(|round| round.published)
    }

    pub(super) async fn round(&self, channel: &Channel) -> Result<Round, RelayError> {
        // Checked before claiming anything: an idle relay on a dead channel learns of it
        // without taking row locks.
        if !channel.status().connected() {
            return Err(RelayError::ChannelClosed);
        }
        if !channel.status().confirm() {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
        }
        let mut tx = self.pool.begin().await?;
        let rows: Vec<Claimed> = sqlx::query_as(CLAIM)
            .bind(i64::from(self.config.batch))
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Round {
                claimed: 0,
                published: 0,
            });
        }
        let (outcomes, channel_error) = self.publish(channel, &rows).await;
        let published: Vec<i64> = rows
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| **outcome == Outcome::Acked)
            .map(|(row, _)| row.id)
            .collect();
        if !published.is_empty() {
            sqlx::query(MARK).bind(&published).execute(&mut *tx).await?;
        }
        // If this commit fails after the confirms, the rows are sent again next round:
        // the at-least-once half of the contract.
        tx.commit().await?;
        report(&rows, &outcomes, published.len());
        match channel_error {
            Some(error) => Err(error),
            None => Ok(Round {
                claimed: rows.len(),
                published: published.len(),
            }),
        }
    }

    /// Publishes every row (in order), then awaits every confirm, all within
    /// [`CONFIRM_TIMEOUT`]. Returns one outcome per row — rows never sent because the
    /// channel failed first count as `Failed` — and the channel error, if any.
    async fn publish(
        &self,
        channel: &Channel,
        rows: &[Claimed],
    ) -> (Vec<Outcome>, Option<RelayError>) {
        let exchange = ShortString::from(self.config.exchange.as_str());
        // mandatory: an event no queue receives comes back instead of vanishing.
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        // One deadline for the whole round: writing a publish can stall too (a broker
        // that blocked publishers stops reading the socket).
        let deadline = Instant::now() + CONFIRM_TIMEOUT;
        let mut confirms = Vec::with_capacity(rows.len());
        let mut error = None;
        for row in rows {
            let sent = channel.basic_publish(
                exchange.clone(),
                row.routing_key.as_str().into(),
                options,
                row.payload.as_bytes(),
                row.properties(),
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
        let mut outcomes = Vec::with_capacity(rows.len());
        for result in confirmed {
            outcomes.push(match result {
                Ok(Ok(Confirmation::Ack(None))) => Outcome::Acked,
                Ok(Ok(Confirmation::Ack(Some(_)))) => Outcome::Returned,
                Ok(Ok(Confirmation::Nack(_))) => Outcome::Nacked,
                // Confirm mode was selected above; anything else is not a confirm.
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
        outcomes.resize(rows.len(), Outcome::Failed);
        (outcomes, error)
    }
}

/// One log line per round with failures (not one per row: an unroutable row is retried
/// every round and would flood the log).
fn report(rows: &[Claimed], outcomes: &[Outcome], published: usize) {
    let count = |wanted: Outcome| outcomes.iter().filter(|o| **o == wanted).count();
    let first_failed = rows
        .iter()
        .zip(outcomes)
        .find(|(_, outcome)| **outcome != Outcome::Acked);
    match first_failed {
        None => tracing::debug!(published, "outbox batch published"),
        Some((row, _)) => tracing::warn!(
            published,
            returned = count(Outcome::Returned),
            nacked = count(Outcome::Nacked),
            failed = count(Outcome::Failed),
            timed_out = count(Outcome::TimedOut),
            first_event_id = %row.event_id,
            first_routing_key = %row.routing_key,
            "outbox events left unpublished; retrying next round"
        ),
    }
}
