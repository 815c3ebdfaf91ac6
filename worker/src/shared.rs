//! The state the admin handlers and the broker supervisor share: built by
//! [`crate::startup`], read by [`crate::admin`] (neither imports the other for it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use payhook_shared::amqp::Connector;
use payhook_shared::topology::Names;
use sqlx::PgPool;

use crate::dedup::Dedup;
use crate::metrics::Metrics;
use crate::outbox::OutboxRelay;
use crate::parked::{self, ReplayFilter};

/// State shared by the admin handlers and the supervisor.
#[derive(Debug)]
pub struct Shared {
    pub pool: PgPool,
    pub dedup: Dedup,
    pub metrics: Metrics,
    pub names: Names,
    /// The merchants' verification keys (WeChat V3: the downloaded platform
    /// certificates too), for `POST /diagnose`.
    pub merchants: payhook_shared::merchants::Merchants,
    /// Samples of refused notifications, read from the rejected stream.
    pub rejected: crate::rejected::Samples,
    pub(crate) amqp: Connector,
    pub(crate) broker_up: AtomicBool,
    /// Number of retry tiers (`worker.retry_delays_ms`).
    pub(crate) retry_tiers: usize,
}

impl Shared {
    pub fn broker_up(&self) -> bool {
        self.broker_up.load(Ordering::Relaxed)
    }

    pub(crate) fn set_broker_up(&self, up: bool) {
        self.broker_up.store(up, Ordering::Relaxed);
        self.metrics.broker_up.set(i64::from(up));
    }

    pub async fn postgres_up(&self) -> bool {
        let probe = sqlx::query("SELECT 1").execute(&self.pool);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), probe).await,
            Ok(Ok(_))
        )
    }

    /// Updates the gauges that are read from the database (outbox lag).
    pub async fn refresh_gauges(&self) {
        if let Ok(Ok((pending, oldest))) =
            tokio::time::timeout(Duration::from_secs(1), OutboxRelay::lag(&self.pool)).await
        {
            self.metrics.outbox_pending.set(pending);
            self.metrics
                .outbox_oldest_seconds
                .set(oldest.unwrap_or(0.0));
        }
        self.metrics
            .redis_fallback_active
            .set(i64::from(self.dedup.is_degraded()));
    }

    /// Runs `f` on a confirm-mode channel of a short-lived connection of its own (an
    /// operator's request: never on the consumer's connection).
    async fn on_operator_channel<T, F>(&self, name: &str, f: F) -> anyhow::Result<T>
    where
        F: AsyncFnOnce(&lapin::Connection, &lapin::Channel) -> anyhow::Result<T>,
    {
        let connection = self.amqp.connect(name).await?;
        let result = async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            f(&connection, &channel).await
        }
        .await;
        let _ = connection.close(200, "done".into()).await;
        result
    }

    /// Replays (or, with `dry_run`, counts) the parked messages `filter` selects.
    pub async fn replay_parked(
        &self,
        filter: &ReplayFilter,
        dry_run: bool,
    ) -> anyhow::Result<parked::ReplayAnswer> {
        self.on_operator_channel("payhook-replay", async |_, channel| {
            Ok(parked::replay_selected(channel, &self.names, filter, dry_run, |_, _| {}).await?)
        })
        .await
    }

    /// The parked messages `filter` selects.
    pub async fn list_parked(
        &self,
        filter: &ReplayFilter,
    ) -> anyhow::Result<Vec<parked::ParkedMessage>> {
        self.on_operator_channel("payhook-parked-list", async |_, channel| {
            Ok(parked::list_parked(channel, &self.names, filter, |_, _| {}).await?)
        })
        .await
    }

    /// Message and consumer counts of every payhook queue.
    pub async fn queue_depths(&self) -> anyhow::Result<Vec<parked::QueueDepth>> {
        self.on_operator_channel("payhook-queues", async |connection, _| {
            Ok(parked::queue_depths(connection, &self.names, self.retry_tiers).await?)
        })
        .await
    }
}
