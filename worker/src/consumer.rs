//! Consuming the work queue: dedup claim → one database transaction → ack.
//!
//! Bounded on two axes: the broker hands out at most `prefetch` unacked messages
//! (basic.qos) and at most `concurrency` are processed at once. A message is acked only
//! after its transaction committed (or after its retry/park copy was confirmed), so a
//! crash at any point redelivers it and the apply path's unique keys make the second
//! run a no-op.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions};
use lapin::types::FieldTable;
use payhook_shared::event::{Envelope, Provider, SCHEMA_VERSION};
use payhook_shared::topology::Names;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::db::apply::{self, ApplyError, ApplyOutcome, Expectations};
use crate::dedup::{Claim, Dedup};
use crate::metrics::{EventOutcome, Metrics};
use crate::retry::{self, ParkReason, Rescheduled};

/// Everything one message needs, shared by all in-flight messages.
#[derive(Debug)]
pub struct Processor {
    pub pool: PgPool,
    pub dedup: Dedup,
    /// The configured identity of each merchant (for quarantine checks).
    pub expectations: HashMap<(Provider, String), Expectations>,
    pub names: Names,
    pub retry_delays_ms: Vec<u32>,
    pub metrics: Metrics,
    /// Wakes the outbox relay after a commit that wrote events.
    pub outbox_notify: Arc<Notify>,
}

/// How the message left this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    Ack,
    /// Not handled (e.g. the retry copy was not confirmed): give it back to the queue.
    Requeue,
}

impl Processor {
    /// Processes one delivery and returns what to tell the broker.
    async fn process(&self, delivery: &Delivery, publish: &Channel) -> Disposition {
        // The version first: a future version may not have this version's shape.
        #[derive(serde::Deserialize)]
        struct Versioned {
            schema_version: u32,
        }
        match serde_json::from_slice::<Versioned>(&delivery.data) {
            Ok(v) if v.schema_version == SCHEMA_VERSION => {}
            Ok(v) => {
                let detail = format!("schema_version {}", v.schema_version);
                return self
                    .park(delivery, publish, ParkReason::UnknownSchemaVersion, &detail)
                    .await;
            }
            Err(error) => {
                let detail = format!("not an envelope: {error}");
                return self
                    .park(delivery, publish, ParkReason::BadEnvelope, &detail)
                    .await;
            }
        }
        let envelope: Envelope = match serde_json::from_slice(&delivery.data) {
            Ok(envelope) => envelope,
            Err(error) => {
                let detail = format!("not an envelope: {error}");
                return self
                    .park(delivery, publish, ParkReason::BadEnvelope, &detail)
                    .await;
            }
        };
        let span = tracing::info_span!(
            "apply",
            event_id = %envelope.event_id,
            request_id = %envelope.request_id,
            provider = %envelope.provider,
            attempts = retry::attempts(&delivery.properties),
        );
        async {
            let claim = self.dedup.claim(&envelope.event_id).await;
            self.metrics
                .redis_fallback_active
                .set(i64::from(self.dedup.is_degraded()));
            let token = match claim {
                Claim::AlreadyDone => {
                    tracing::debug!("duplicate (redis)");
                    self.metrics.event(EventOutcome::Duplicate);
                    return Disposition::Ack;
                }
                Claim::Acquired(token) => Some(token),
                // In progress elsewhere, or Redis away: the database decides alone.
                Claim::InProgress | Claim::Unavailable => None,
            };
            let expect = self
                .expectations
                .get(&(envelope.provider, envelope.merchant.clone()))
                .cloned()
                .unwrap_or_default();
            match apply::apply(&self.pool, &envelope, &expect).await {
                Ok(outcome) => {
                    match token {
                        Some(token) => self.dedup.mark_done(token).await,
                        None => self.dedup.mark_done_unclaimed(&envelope.event_id).await,
                    }
                    self.record(&envelope, &outcome);
                    Disposition::Ack
                }
                Err(ApplyError::Transient(error)) => {
                    if let Some(token) = token {
                        self.dedup.release(token).await;
                    }
                    tracing::warn!(%error, "transient failure; retrying later");
                    self.reschedule(delivery, publish, &error.to_string()).await
                }
                Err(ApplyError::Permanent(detail)) => {
                    if let Some(token) = token {
                        self.dedup.release(token).await;
                    }
                    self.park(delivery, publish, ParkReason::Permanent, &detail)
                        .await
                }
            }
        }
        .instrument(span)
        .await
    }

    fn record(&self, envelope: &Envelope, outcome: &ApplyOutcome) {
        let event = match outcome {
            ApplyOutcome::Applied { events } => {
                if !events.is_empty() {
                    self.outbox_notify.notify_one();
                }
                tracing::info!(events = ?events, "applied");
                let latency = time::OffsetDateTime::now_utc() - envelope.received_at;
                self.metrics.notify_to_applied(
                    envelope.provider.as_str(),
                    latency.as_seconds_f64().max(0.0),
                );
                EventOutcome::Applied
            }
            ApplyOutcome::Duplicate => EventOutcome::Duplicate,
            ApplyOutcome::DuplicateTransition => EventOutcome::DuplicateTransition,
            ApplyOutcome::Quarantined { reason } => {
                self.outbox_notify.notify_one();
                tracing::warn!(alert = true, %reason, "payment quarantined");
                EventOutcome::Quarantined
            }
            ApplyOutcome::Recorded => EventOutcome::Recorded,
        };
        self.metrics.event(event);
    }

    async fn reschedule(&self, delivery: &Delivery, publish: &Channel, error: &str) -> Disposition {
        let result = retry::retry_or_park(
            publish,
            &self.names,
            &self.retry_delays_ms,
            &delivery.data,
            &delivery.properties,
            error,
        )
        .await;
        match result {
            Ok(Rescheduled::Retry(tier)) => {
                tracing::info!(tier = tier + 1, "sent to retry tier");
                self.metrics.event(EventOutcome::Retried);
                Disposition::Ack
            }
            Ok(Rescheduled::Parked) => {
                tracing::error!(
                    alert = true,
                    reason = ParkReason::RetriesExhausted.as_str(),
                    "parked"
                );
                self.metrics.event(EventOutcome::Parked);
                Disposition::Ack
            }
            Err(error) => {
                tracing::warn!(%error, "retry copy not confirmed; requeueing the original");
                Disposition::Requeue
            }
        }
    }

    async fn park(
        &self,
        delivery: &Delivery,
        publish: &Channel,
        reason: ParkReason,
        detail: &str,
    ) -> Disposition {
        match retry::park(
            publish,
            &self.names,
            &delivery.data,
            &delivery.properties,
            reason,
            detail,
        )
        .await
        {
            Ok(()) => {
                tracing::error!(alert = true, reason = reason.as_str(), detail, "parked");
                self.metrics.event(EventOutcome::Parked);
                Disposition::Ack
            }
            Err(error) => {
                tracing::warn!(%error, "park copy not confirmed; requeueing the original");
                Disposition::Requeue
            }
        }
    }
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumeConfig {
    pub prefetch: u16,
    pub concurrency: usize,
    pub consumer_tag: String,
}

/// Consumes until `cancel` fires (then: cancel the consumer, finish in-flight messages,
/// return `Ok`) or the channel fails (returns the error; in-flight messages finish or
/// are redelivered by the broker).
pub async fn consume(
    processor: Arc<Processor>,
    consume_channel: Channel,
    publish_channel: Channel,
    config: &ConsumeConfig,
    cancel: CancellationToken,
) -> Result<(), lapin::Error> {
    consume_channel
        .basic_qos(config.prefetch, lapin::options::BasicQosOptions::default())
        .await?;
    let mut consumer = consume_channel
        .basic_consume(
            processor.names.work.as_str().into(),
            config.consumer_tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let tracker = TaskTracker::new();
    let publish_channel = Arc::new(publish_channel);
    let result = loop {
        let next = tokio::select! {
            () = cancel.cancelled() => break Ok(()),
            next = consumer.next() => next,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => break Err(error),
            None => break Ok(()),
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break Ok(());
        };
        let processor = processor.clone();
        let publish = publish_channel.clone();
        tracker.spawn(async move {
            processor.metrics.in_flight.inc();
            let disposition = processor.process(&delivery, &publish).await;
            let acked = match disposition {
                Disposition::Ack => delivery.ack(BasicAckOptions::default()).await,
                Disposition::Requeue => {
                    delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await
                }
            };
            if let Err(error) = acked {
                // The broker will redeliver; the apply path makes that harmless.
                tracing::warn!(%error, "ack failed; message will be redelivered");
            }
            processor.metrics.in_flight.dec();
            drop(permit);
        });
    };
    // Stop receiving, then let in-flight messages finish (bounded).
    let _ = consume_channel
        .basic_cancel(
            config.consumer_tag.as_str().into(),
            BasicCancelOptions::default(),
        )
        .await;
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(30), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("in-flight messages did not finish in 30 s; the broker will redeliver them");
    }
    result
}
