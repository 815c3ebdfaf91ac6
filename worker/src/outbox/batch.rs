//! One relay round: claim a batch of unpublished rows, publish them all, await all
//! confirms, mark the confirmed rows published, commit.
//!
//! The row locks taken by `FOR UPDATE SKIP LOCKED` are what keeps replicas apart, so
//! the transaction stays open across the publishes; the confirm timeout bounds how
//! long that can be.

use lapin::options::ConfirmSelectOptions;
use lapin::{BasicProperties, Channel};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::publish::{self, Outcome, Outgoing};
use super::{OutboxRelay, RelayError};

/// The payload is taken as the stored JSON's text (valid JSON, published as is); the
/// CloudEvents `type` and `time` are extracted by the database for the AMQP properties.
///
/// Only rows older than the sweep delay (`$2`, milliseconds) are taken: younger ones
/// are the dispatcher's, which publishes them right after their commit. The age is
/// measured against `clock_timestamp()`, not `now()` (the start of this transaction,
/// which may precede the commit of a row it sees).
const CLAIM: &str = "\
    SELECT id, event_id, routing_key, payload::text AS payload, \
           payload->>'type' AS ce_type, payload->>'time' AS ce_time, \
           EXTRACT(EPOCH FROM created_at)::bigint AS created_epoch \
    FROM outbox \
    WHERE published_at IS NULL \
      AND created_at <= clock_timestamp() - $2 * interval '1 millisecond' \
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
        publish::properties(self.event_id, self.ce_type.as_deref(), timestamp)
    }
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
            .bind(i64::try_from(self.config.sweep_after.as_millis()).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Round {
                claimed: 0,
                published: 0,
            });
        }
        let events = rows
            .iter()
            .map(|row| Outgoing {
                routing_key: &row.routing_key,
                payload: row.payload.as_bytes(),
                properties: row.properties(),
            })
            .collect();
        let (outcomes, channel_error) =
            publish::publish(channel, &self.config.exchange, events).await;
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
