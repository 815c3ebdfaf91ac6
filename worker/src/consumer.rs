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
use futures::future::join_all;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions};
use lapin::types::FieldTable;
use payhook_shared::event::{Envelope, Provider, SCHEMA_VERSION};
use payhook_shared::topology::Names;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::db::apply::{self, ApplyError, ApplyOutcome, Expectations};
use crate::dedup::{Claim, ClaimToken, Dedup};
use crate::metrics::{EventOutcome, Metrics};
use crate::outbox::DispatchHandle;
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
    /// Where committed events go to be published at once (the outbox dispatcher).
    pub dispatch: DispatchHandle,
}

/// How the message left this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    Ack,
    /// Not handled (e.g. the retry copy was not confirmed): give it back to the queue.
    Requeue,
}

impl Processor {
    /// Reads the envelope of a delivery; a message that is not one (or of a schema
    /// version this worker does not read) is parked at once, and `Err` says what to
    /// tell the broker about it.
    async fn parse(&self, delivery: &Delivery, publish: &Channel) -> Result<Envelope, Disposition> {
        // The version first: a future version may not have this version's shape.
        #[derive(serde::Deserialize)]
        struct Versioned {
            schema_version: u32,
        }
        let (reason, detail) = match serde_json::from_slice::<Versioned>(&delivery.data) {
            Ok(v) if v.schema_version == SCHEMA_VERSION => {
                match serde_json::from_slice::<Envelope>(&delivery.data) {
                    Ok(envelope) => return Ok(envelope),
                    Err(error) => (ParkReason::BadEnvelope, format!("not an envelope: {error}")),
                }
            }
            Ok(v) => (
                ParkReason::UnknownSchemaVersion,
                format!("schema_version {}", v.schema_version),
            ),
            Err(error) => (ParkReason::BadEnvelope, format!("not an envelope: {error}")),
        };
        Err(self.park(delivery, publish, reason, &detail).await)
    }

    fn span(envelope: &Envelope, delivery: &Delivery) -> tracing::Span {
        let span = tracing::info_span!(
            "apply",
            event_id = %envelope.event_id,
            request_id = %envelope.request_id,
            trace_id = tracing::field::Empty,
            provider = %envelope.provider,
            attempts = retry::attempts(&delivery.properties),
        );
        // The worker's span in the notification's trace (exported with OTLP on).
        let trace = payhook_shared::trace::enter(&span, envelope.traceparent.as_deref());
        span.record("trace_id", trace.trace_id());
        span
    }

    /// The Redis claim: `Err` for a notification already applied (ack it, nothing to
    /// do), else the token to finish, if Redis gave one.
    async fn claim(&self, envelope: &Envelope) -> Result<Option<ClaimToken>, Disposition> {
        let claim = self.dedup.claim(&envelope.event_id).await;
        self.metrics
            .redis_fallback_active
            .set(i64::from(self.dedup.is_degraded()));
        match claim {
            Claim::AlreadyDone => {
                tracing::debug!("duplicate (redis)");
                self.metrics.event(EventOutcome::Duplicate);
                Err(Disposition::Ack)
            }
            Claim::Acquired(token) => Ok(Some(token)),
            // In progress elsewhere, or Redis away: the database decides alone.
            Claim::InProgress | Claim::Unavailable => Ok(None),
        }
    }

    fn expectations(&self, envelope: &Envelope) -> Expectations {
        self.expectations
            .get(&(envelope.provider, envelope.merchant.clone()))
            .cloned()
            .unwrap_or_default()
    }

    /// After the commit: the done marker, the metrics and the log line.
    async fn applied(
        &self,
        envelope: &Envelope,
        token: Option<ClaimToken>,
        outcome: &ApplyOutcome,
    ) {
        match token {
            Some(token) => self.dedup.mark_done(token).await,
            None => self.dedup.mark_done_unclaimed(&envelope.event_id).await,
        }
        self.record(envelope, outcome);
    }

    /// Processes one delivery and returns what to tell the broker.
    async fn process(&self, delivery: &Delivery, publish: &Channel) -> Disposition {
        let envelope = match self.parse(delivery, publish).await {
            Ok(envelope) => envelope,
            Err(disposition) => return disposition,
        };
        let span = Self::span(&envelope, delivery);
        async {
            let token = match self.claim(&envelope).await {
                Ok(token) => token,
                Err(disposition) => return disposition,
            };
            self.metrics.batch(1);
            self.apply_claimed(delivery, publish, &envelope, token)
                .await
        }
        .instrument(span)
        .await
    }

    /// The apply path of one claimed envelope in its own transaction, and what follows
    /// from its result: done marker and ack, or release and retry tier, or park.
    async fn apply_claimed(
        &self,
        delivery: &Delivery,
        publish: &Channel,
        envelope: &Envelope,
        token: Option<ClaimToken>,
    ) -> Disposition {
        let expect = self.expectations(envelope);
        let mut emitted = Vec::new();
        match apply::apply_emitting(&self.pool, envelope, &expect, &mut emitted).await {
            Ok(outcome) => {
                self.dispatch.hand_over(emitted);
                self.applied(envelope, token, &outcome).await;
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

    /// Processes the deliveries that were ready together, and returns what to tell the
    /// broker about each (in order). The claimed envelopes are applied in one
    /// transaction ([`apply::apply_batch`]); if that fails, each is applied on its own
    /// ([`Processor::apply_claimed`]), so a failure is classified, retried or parked
    /// per message exactly as without batching, and the others still apply.
    async fn process_batch(&self, deliveries: &[Delivery], publish: &Channel) -> Vec<Disposition> {
        if let [delivery] = deliveries {
            return vec![self.process(delivery, publish).await];
        }
        let mut dispositions = vec![Disposition::Ack; deliveries.len()];
        let parsed = join_all(deliveries.iter().map(|d| self.parse(d, publish))).await;
        let mut pending = Vec::with_capacity(deliveries.len());
        for (i, parsed) in parsed.into_iter().enumerate() {
            match parsed {
                Ok(envelope) => pending.push((i, envelope)),
                Err(disposition) => dispositions[i] = disposition,
            }
        }
        let claims = join_all(pending.iter().map(|(i, envelope)| {
            self.claim(envelope)
                .instrument(Self::span(envelope, &deliveries[*i]))
        }))
        .await;
        let mut claimed = Vec::with_capacity(pending.len());
        for ((i, envelope), claim) in pending.into_iter().zip(claims) {
            match claim {
                Ok(token) => claimed.push((i, envelope, token)),
                Err(disposition) => dispositions[i] = disposition,
            }
        }
        let expectations: Vec<Expectations> = claimed
            .iter()
            .map(|(_, e, _)| self.expectations(e))
            .collect();
        let items: Vec<(&Envelope, &Expectations)> = claimed
            .iter()
            .zip(&expectations)
            .map(|((_, envelope, _), expect)| (envelope, expect))
            .collect();
        if items.is_empty() {
            return dispositions;
        }
        let mut emitted = Vec::new();
        let result = apply::apply_batch_emitting(&self.pool, &items, &mut emitted).await;
        drop(items);
        self.metrics.batch(claimed.len());
        match result {
            Ok(outcomes) => {
                self.dispatch.hand_over(emitted);
                join_all(claimed.into_iter().zip(&outcomes).map(
                    |((i, envelope, token), outcome)| async move {
                        let span = Self::span(&envelope, &deliveries[i]);
                        self.applied(&envelope, token, outcome)
                            .instrument(span)
                            .await;
                    },
                ))
                .await;
            }
            Err(error) => {
                tracing::debug!(%error, size = claimed.len(), "batch not applied; applying its messages one by one");
                for (i, envelope, token) in claimed {
                    let span = Self::span(&envelope, &deliveries[i]);
                    dispositions[i] = self
                        .apply_claimed(&deliveries[i], publish, &envelope, token)
                        .instrument(span)
                        .await;
                }
            }
        }
        dispositions
    }

    fn record(&self, envelope: &Envelope, outcome: &ApplyOutcome) {
        let event = match outcome {
            ApplyOutcome::Applied { events } => {
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
    /// At most this many messages that arrived together are applied in one database
    /// transaction (1: each in its own); capped at `concurrency`.
    pub batch_max: usize,
    /// How long a batch waits for more messages after its first (zero: only what is
    /// ready at once).
    pub batch_linger: Duration,
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
    let consumer = consume_channel
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
    // What is ready at once (up to batch_max) is one batch; with a linger, also what
    // arrives within it after the batch's first message. Without one, a quiet queue
    // gets each message handled as soon as it arrives.
    let batch_max = config.batch_max.clamp(1, config.concurrency);
    let mut batches = if config.batch_linger.is_zero() || batch_max == 1 {
        consumer.ready_chunks(batch_max).boxed()
    } else {
        tokio_stream::StreamExt::chunks_timeout(consumer, batch_max, config.batch_linger).boxed()
    };
    let result = loop {
        let next = tokio::select! {
            () = cancel.cancelled() => break Ok(()),
            next = batches.next() => next,
        };
        let Some(next) = next else {
            break Ok(());
        };
        let mut deliveries = Vec::with_capacity(next.len());
        let mut failed = None;
        for item in next {
            match item {
                Ok(delivery) => deliveries.push(delivery),
                Err(error) => failed = Some(error),
            }
        }
        if let Some(error) = failed {
            // The channel is gone: these deliveries can no longer be acked and the
            // broker redelivers them.
            break Err(error);
        }
        let permits = u32::try_from(deliveries.len()).unwrap_or(u32::MAX);
        let Ok(permit) = slots.clone().acquire_many_owned(permits).await else {
            break Ok(());
        };
        let processor = processor.clone();
        let publish = publish_channel.clone();
        tracker.spawn(async move {
            let count = deliveries.len() as i64;
            processor.metrics.in_flight.inc_by(count);
            let dispositions = processor.process_batch(&deliveries, &publish).await;
            // All of the batch's acks at once: each awaits a round of the connection's
            // I/O thread, which one after another made a batch wait for each in turn
            // (measured: ~0.65 ms per ack under load) while holding its slots.
            let acked = join_all(deliveries.iter().zip(dispositions).map(
                |(delivery, disposition)| async move {
                    match disposition {
                        Disposition::Ack => delivery.ack(BasicAckOptions::default()).await,
                        Disposition::Requeue => {
                            delivery
                                .nack(BasicNackOptions {
                                    requeue: true,
                                    ..BasicNackOptions::default()
                                })
                                .await
                        }
                    }
                },
            ))
            .await;
            for error in acked.into_iter().filter_map(Result::err) {
                // The broker will redeliver; the apply path makes that harmless.
                tracing::warn!(%error, "ack failed; message will be redelivered");
            }
            processor.metrics.in_flight.dec_by(count);
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
