//! Publishing the outbox: committed `outbox` rows to the events exchange.
//!
//! The apply path writes each downstream event (a CloudEvents 1.0 JSON document) into
//! the `outbox` table in the same transaction as the transition it announces, so the
//! database and the events never disagree (docs/design.md, invariant 6). This module owns
//! the other half: publishing them to `<prefix>.events` with publisher confirms, and
//! marking the confirmed ones `published_at`. Two parts do it:
//!
//! - the [`Dispatcher`] publishes what a transaction wrote right after its commit,
//!   from memory (the apply path hands the events over), and marks the confirmed
//!   ones every 50 ms in one `UPDATE`: the fast path, no read of the table;
//! - the [`OutboxRelay`] sweeps the table for rows left unpublished longer than the
//!   sweep delay (`worker.outbox_sweep_after_ms`) — whatever the dispatcher could not
//!   publish, or a crashed process never did — and publishes them. It never takes a
//!   younger row, so the two do not publish one row twice in the normal case.
//!
//! # Layout
//!
//! - this file: [`OutboxRelay`], its loop ([`OutboxRelay::run`]), the lag query.
//! - `batch.rs`: one relay round — claim rows, publish, await confirms, mark, commit.
//! - `dispatch.rs`: the [`Dispatcher`] and its [`DispatchHandle`].
//! - `publish.rs`: publishing a burst with confirms (both use it).
//!
//! # Guarantees
//!
//! - **At least once to the exchange.** A row is marked published only after the
//!   broker confirmed it (routed to at least one queue: publishes are `mandatory`),
//!   and the mark commits after the confirm. A crash, a lost database connection or a
//!   failed commit between the confirm and the `UPDATE` leaves the row unpublished,
//!   and the relay sends it again. **Consumers deduplicate on the CloudEvents `id`**
//!   (also the AMQP `message_id`).
//! - **A nack, a return (no queue bound for the routing key), a channel error or a
//!   missing confirm leaves the row unpublished**; the relay sends it once it is older
//!   than the sweep delay, and on later rounds until it is confirmed.
//! - **Replicas publish concurrently without duplicates in the normal case**: a
//!   dispatcher publishes only its own process's commits, and only for half the sweep
//!   delay after the commit; each relay round claims rows older than the delay with
//!   `FOR UPDATE SKIP LOCKED` and holds the locks until the mark commits, so two relays
//!   never hold the same row at once.
//! - **Ordering**: the dispatcher publishes on one channel in the order the
//!   transactions handed their events over (commit order, except that two
//!   transactions committing at the same moment may hand over in either order); a
//!   relay round publishes in `id` order. There is no global order across replicas,
//!   nor after a failure (a returned row is resent after later rows went out).
//!   Consumers that care about order use the event's `time` and the payment's
//!   monotonic state.
//!
//! # Operating it
//!
//! - Published rows stay in the table for audit. A retention job deleting rows
//!   published longer ago than the audit horizon is future work.
//! - Because publishes are mandatory, an event whose routing key no queue binds stays
//!   unpublished and is retried every round. Rows are taken in `id` order, so once a
//!   whole batch of such rows sits at the head of the table, later rows wait behind
//!   them: bind a catch-all queue (or an alternate exchange) to the events exchange in
//!   production, and alert on [`OutboxRelay::lag`].

mod batch;
mod dispatch;
mod publish;

pub use dispatch::{DispatchHandle, Dispatcher};

use std::sync::Arc;
use std::time::Duration;

use lapin::Channel;
use sqlx::PgPool;
use thiserror::Error;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The AMQP `content_type` of a structured-mode CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// How long a round may take to publish its batch and receive the broker's confirms
/// before it gives up on the channel. Confirms normally take milliseconds; this bounds
/// how long a round holds its row locks when the broker stalls (e.g. a resource alarm
/// blocking publishers).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// First wait after a database failure; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How the relay publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// The events topic exchange (`Names::events`).
    pub exchange: String,
    /// Rows per round (one transaction, one burst of publishes).
    pub batch: u32,
    /// How long the relay idles when nothing notifies it (rows written by another
    /// replica, or a notify lost to a crash).
    pub poll: Duration,
    /// The relay takes only rows older than this: younger ones are the dispatcher's
    /// (`worker.outbox_sweep_after_ms`). Zero: every unpublished row.
    pub sweep_after: Duration,
}

/// Why a relay round failed. Rows not confirmed in a failed round stay unpublished.
#[derive(Debug, Error)]
pub enum RelayError {
    #[error("outbox database operation failed")]
    Database(#[from] sqlx::Error),
    #[error("broker channel operation failed")]
    Channel(#[from] lapin::Error),
    #[error("broker channel is not open")]
    ChannelClosed,
    #[error("publishing and confirming the batch took longer than {0:?}")]
    ConfirmTimeout(Duration),
}

impl RelayError {
    /// Whether the channel is unusable and should be replaced (as opposed to a
    /// database failure, after which the same channel can be used again).
    pub fn is_broker(&self) -> bool {
        !matches!(self, Self::Database(_))
    }
}

/// Relays outbox rows to the events exchange. See the module documentation for its
/// guarantees.
#[derive(Debug)]
pub struct OutboxRelay {
    pool: PgPool,
    config: RelayConfig,
    wake: Arc<Notify>,
}

impl OutboxRelay {
    pub fn new(pool: PgPool, config: RelayConfig) -> Self {
        Self {
            pool,
            config,
            wake: Arc::new(Notify::new()),
        }
    }

    /// A `notify_one()` on this starts a round at once instead of at the next poll
    /// (tests use it; the apply path hands its events to the [`Dispatcher`] instead).
    /// A notify while the relay is busy is remembered (one permit), never lost.
    pub fn notifier(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The relay's configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Unpublished rows and the age in seconds of the oldest one (`None` when there is
    /// none), for the outbox lag metrics.
    pub async fn lag(pool: &PgPool) -> Result<(i64, Option<f64>), sqlx::Error> {
        sqlx::query_as(
            "SELECT count(*), \
                    EXTRACT(EPOCH FROM now() - min(created_at))::float8 \
             FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(pool)
        .await
    }

    /// Relays on `channel` until `cancel` fires (`Ok`) or the channel fails (`Err`
    /// with a broker error: the supervisor replaces the channel — or the connection —
    /// and calls `run` again).
    ///
    /// Rounds run back to back while they come back full (and publish something), then
    /// the relay idles until notified ([`OutboxRelay::notifier`]), the poll interval,
    /// or cancel. Database failures are logged and retried on the same channel with
    /// back-off; they never end the relay. A round in progress when `cancel` fires is finished (bounded by
    /// [`CONFIRM_TIMEOUT`]). The channel is put in confirm mode if it is not; the
    /// caller keeps ownership of closing it.
    pub async fn run(&self, channel: Channel, cancel: CancellationToken) -> Result<(), RelayError> {
        let full = usize::try_from(self.config.batch).unwrap_or(usize::MAX);
        let mut backoff = BACKOFF_MIN;
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let idle = match self.round(&channel).await {
                // Go again at once while there is more to take — unless nothing went
                // out, so rows the broker keeps refusing are retried once per poll, not
                // in a hot loop.
                Ok(round) => {
                    backoff = BACKOFF_MIN;
                    round.claimed < full || round.published == 0
                }
                Err(error) if error.is_broker() => return Err(error),
                Err(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "outbox relay round failed; retrying"
                    );
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            if idle {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(self.config.poll) => {}
                }
            }
        }
    }
}
