//! The dispatcher: publishes the events a transaction wrote to the outbox right after
//! that transaction committed, from memory, so an event goes out within a publish and
//! its confirm of the commit instead of waiting for a relay round to read it back.
//!
//! The outbox stays the source of truth. The apply path hands the dispatcher the
//! events it committed ([`DispatchHandle::hand_over`]); a round takes everything
//! handed over so far and publishes it with confirms, and the confirmed rows of the
//! rounds of the last 50 ms are marked `published_at` in one `UPDATE`. Whatever the dispatcher does not publish — its
//! queue was full, the hand-over waited too long, the broker returned or nacked an
//! event, the channel failed, the process died — is still an unpublished row, and the
//! relay's sweep publishes it once it is older than the sweep delay
//! (`worker.outbox_sweep_after_ms`). The relay never takes a row younger than that, so
//! the two do not publish the same row in the normal case.
//!
//! The mark commits with `synchronous_commit = off`: a mark lost to a crash leaves a
//! published row unpublished, and the sweep publishes it again — a duplicate the
//! at-least-once contract allows (consumers deduplicate on the CloudEvents `id`).

use std::time::Duration;

use lapin::Channel;
use lapin::options::ConfirmSelectOptions;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::RelayError;
use super::publish::{self, Outcome, Outgoing};
use crate::db::cloudevents::Emitted;
use crate::metrics::Metrics;

/// How many hand-overs (one per committed transaction) may wait for the dispatcher;
/// beyond that the apply path does not wait, it leaves the events to the relay.
const QUEUE: usize = 4096;

/// The most events one round publishes.
const ROUND_MAX: usize = 1024;

/// How long confirmed events may wait to be marked, so that one `UPDATE` marks the
/// rounds of that interval together (a mark is not on any event's path: it only keeps
/// the relay from sending the row again, which it would do only after the sweep
/// delay).
const MARK_EVERY: Duration = Duration::from_millis(50);

/// Marked at once when this many confirmed events wait.
const MARK_MAX: usize = 2048;

/// The mark's transaction: its commit need not wait for the WAL flush (see the module
/// documentation).
const BEGIN_MARK: &str = "BEGIN; SET LOCAL synchronous_commit = off";

/// Marks the confirmed events. `published_at IS NULL`: a row the relay swept meanwhile
/// keeps its first mark.
const MARK: &str = "UPDATE outbox SET published_at = clock_timestamp() \
                    WHERE event_id = ANY($1) AND published_at IS NULL";

/// The events of one committed transaction, and when they were handed over.
#[derive(Debug)]
struct HandOver {
    events: Vec<Emitted>,
    at: Instant,
}

/// How the apply path gives committed events to the dispatcher. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DispatchHandle {
    sender: mpsc::Sender<HandOver>,
    metrics: Metrics,
}

impl DispatchHandle {
    /// Hands over the events of a transaction that committed. Never waits: when the
    /// dispatcher is behind by more than its queue, the events are left to the relay
    /// (they are committed rows; nothing is lost).
    pub fn hand_over(&self, events: Vec<Emitted>) {
        if events.is_empty() {
            return;
        }
        let count = events.len() as u64;
        let hand_over = HandOver {
            events,
            at: Instant::now(),
        };
        if self.sender.try_send(hand_over).is_err() {
            self.metrics.outbox_left_to_relay.inc_by(count);
            tracing::debug!(count, "outbox dispatcher busy; events left to the relay");
        }
    }
}

/// Publishes committed events right after their commit. See the module documentation.
#[derive(Debug)]
pub struct Dispatcher {
    pool: PgPool,
    exchange: String,
    /// A hand-over older than this is left to the relay: the relay may take its rows
    /// soon (half the sweep delay keeps the two apart).
    fresh_for: Duration,
    handle: DispatchHandle,
    receiver: Mutex<mpsc::Receiver<HandOver>>,
}

impl Dispatcher {
    /// A dispatcher publishing to `exchange`, for a relay that sweeps rows older than
    /// `sweep_after`.
    pub fn new(pool: PgPool, exchange: String, sweep_after: Duration, metrics: Metrics) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        Self {
            pool,
            exchange,
            fresh_for: sweep_after / 2,
            handle: DispatchHandle { sender, metrics },
            receiver: Mutex::new(receiver),
        }
    }

    /// Where the apply path hands committed events over.
    pub fn handle(&self) -> DispatchHandle {
        self.handle.clone()
    }

    /// Dispatches on `channel` (in confirm mode) until `cancel` fires — then it
    /// publishes what was handed over until then and returns `Ok` — or the channel
    /// fails (`Err` with a broker error; the events of the failed round are left to
    /// the relay, the ones still queued go out on the next channel). Events confirmed
    /// before it returns are marked before it returns. Database failures
    /// of the mark are logged and never end the dispatcher.
    ///
    /// Puts `channel` in confirm mode if it is not.
    pub async fn run(&self, channel: Channel, cancel: CancellationToken) -> Result<(), RelayError> {
        if !channel.status().confirm() {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
        }
        // One run at a time owns the queue (a new broker session waits for the last).
        let mut receiver = self.receiver.lock().await;
        let mut marks = Marks::default();
        let result = loop {
            let mark_due = marks.due();
            let first = tokio::select! {
                () = cancel.cancelled() => None,
                first = receiver.recv() => first,
                () = tokio::time::sleep_until(mark_due), if !marks.ids.is_empty() => {
                    self.mark(&mut marks).await;
                    continue;
                }
            };
            let stopping = first.is_none();
            let mut events = Vec::new();
            if let Some(first) = first {
                self.take(first, &mut events);
            }
            while events.len() < ROUND_MAX {
                match receiver.try_recv() {
                    Ok(more) => self.take(more, &mut events),
                    Err(_) => break,
                }
            }
            let round = if events.is_empty() {
                Ok(())
            } else {
                self.round(&channel, events, &mut marks.ids).await
            };
            if round.is_err() || stopping {
                break round;
            }
            if marks.ids.len() >= MARK_MAX || Instant::now() >= marks.due() {
                self.mark(&mut marks).await;
            }
        };
        // What was confirmed is marked before the dispatcher goes (a failed channel
        // does not undo the confirms it delivered).
        self.mark(&mut marks).await;
        result
    }

    /// Adds a hand-over's events to the round, unless it is stale.
    fn take(&self, hand_over: HandOver, events: &mut Vec<Emitted>) {
        if hand_over.at.elapsed() > self.fresh_for {
            self.handle
                .metrics
                .outbox_left_to_relay
                .inc_by(hand_over.events.len() as u64);
            return;
        }
        events.extend(hand_over.events);
    }

    /// Publishes `events`, awaits their confirms, adds the confirmed ones to `marks`.
    async fn round(
        &self,
        channel: &Channel,
        events: Vec<Emitted>,
        marks: &mut Vec<Uuid>,
    ) -> Result<(), RelayError> {
        let outgoing = events
            .iter()
            .map(|event| Outgoing {
                routing_key: &event.routing_key,
                payload: event.payload.as_bytes(),
                properties: publish::properties(
                    event.event_id,
                    Some(&event.event_type),
                    event.timestamp,
                ),
            })
            .collect();
        let (outcomes, channel_error) = publish::publish(channel, &self.exchange, outgoing).await;
        let confirmed: Vec<Uuid> = events
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| **outcome == Outcome::Acked)
            .map(|(event, _)| event.event_id)
            .collect();
        let left = events.len() - confirmed.len();
        let metrics = &self.handle.metrics;
        metrics.outbox_dispatched.inc_by(confirmed.len() as u64);
        metrics.outbox_left_to_relay.inc_by(left as u64);
        if left > 0 {
            let first = events
                .iter()
                .zip(&outcomes)
                .find(|(_, outcome)| **outcome != Outcome::Acked);
            if let Some((event, outcome)) = first {
                tracing::warn!(
                    left,
                    first_event_id = %event.event_id,
                    first_routing_key = %event.routing_key,
                    first_outcome = ?outcome,
                    "outbox events not published by the dispatcher; the relay will retry them"
                );
            }
        }
        marks.extend(confirmed);
        match channel_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Marks the confirmed events that wait, in one `UPDATE`.
    async fn mark(&self, marks: &mut Marks) {
        marks.since = Instant::now();
        if marks.ids.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut marks.ids);
        let marked = async {
            let mut tx = self.pool.begin_with(BEGIN_MARK).await?;
            sqlx::query(MARK).bind(&ids).execute(&mut *tx).await?;
            tx.commit().await
        };
        if let Err(error) = marked.await {
            // Published but not marked: the relay sends them again after the sweep
            // delay (a duplicate, which consumers drop by `id`).
            tracing::warn!(%error, count = ids.len(), "marking dispatched outbox events failed");
        }
    }
}

/// Confirmed events not yet marked, and when the last mark ran.
#[derive(Debug)]
struct Marks {
    ids: Vec<Uuid>,
    since: Instant,
}

impl Default for Marks {
    fn default() -> Self {
        Self {
            ids: Vec::new(),
            since: Instant::now(),
        }
    }
}

impl Marks {
    /// When the waiting ids must be marked.
    fn due(&self) -> Instant {
        self.since + MARK_EVERY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Emitted {
        Emitted {
            event_id: Uuid::now_v7(),
            routing_key: "payment.succeeded.alipay".into(),
            payload: "{}".into(),
            event_type: "payhook.payment.succeeded".into(),
            timestamp: 0,
        }
    }

    /// A dispatcher whose pool never connects (these tests touch no database).
    fn dispatcher(sweep_after: Duration) -> (Dispatcher, Metrics) {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("a lazy pool");
        let metrics = Metrics::new();
        let dispatcher = Dispatcher::new(pool, "x".into(), sweep_after, metrics.clone());
        (dispatcher, metrics)
    }

    #[tokio::test]
    async fn a_full_queue_leaves_events_to_the_relay_without_waiting() {
        let (dispatcher, metrics) = dispatcher(Duration::from_secs(30));
        let handle = dispatcher.handle();
        for _ in 0..QUEUE {
            handle.hand_over(vec![event()]);
        }
        assert_eq!(metrics.outbox_left_to_relay.get(), 0);

        handle.hand_over(vec![event(), event()]);

        assert_eq!(metrics.outbox_left_to_relay.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hand_over_older_than_half_the_sweep_delay_is_left_to_the_relay() {
        let (dispatcher, metrics) = dispatcher(Duration::from_secs(30));
        let handle = dispatcher.handle();
        handle.hand_over(vec![event()]);
        tokio::time::advance(Duration::from_secs(15)).await;
        handle.hand_over(vec![event(), event()]);
        tokio::time::advance(Duration::from_millis(1)).await;

        let mut receiver = dispatcher.receiver.lock().await;
        let mut taken = Vec::new();
        while let Ok(hand_over) = receiver.try_recv() {
            dispatcher.take(hand_over, &mut taken);
        }

        assert_eq!(taken.len(), 2, "the fresh hand-over is published");
        assert_eq!(
            metrics.outbox_left_to_relay.get(),
            1,
            "the stale one is not"
        );
    }

    #[test]
    fn empty_hand_overs_are_not_queued() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _guard = runtime.enter();
        let (dispatcher, _) = dispatcher(Duration::from_secs(30));
        dispatcher.handle().hand_over(Vec::new());
        assert!(
            dispatcher
                .receiver
                .try_lock()
                .expect("free")
                .try_recv()
                .is_err()
        );
    }
}
