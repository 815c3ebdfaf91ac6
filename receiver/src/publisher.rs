//! Publishing verified notifications to RabbitMQ with publisher confirms.
//!
//! A supervisor task owns the connection: it connects, declares the ingress topology,
//! opens `amqp.publisher_channels` confirm-mode channels and hands them out as one
//! [`Link`]. When the connection fails (error event, closed channel, failed publish)
//! the link is withdrawn at once — publishes fail fast with
//! [`PublishError::Unavailable`] so the provider gets its failure answer and resends —
//! and the supervisor reconnects with exponential back-off.
//!
//! Many publishes are in flight at once: each awaits only its own confirm, there is no
//! lock around a publish. The only shared state on the hot path is a read of the
//! current link.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionStatus, Event};
use payhook_shared::amqp::{self, Connector, Supervisor};
use payhook_shared::event::Envelope;
use payhook_shared::topology::{self, Names, QueuePolicy};
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// Room for an envelope's fields besides the raw body (ids, normalized fields, the
/// verified headers, JSON escaping). A larger envelope only grows the buffer.
const ENVELOPE_OVERHEAD: usize = 1536;

/// Why a notification could not be durably handed to the broker.
#[derive(Debug, Error)]
pub enum PublishError {
    #[error("broker not connected")]
    Unavailable,
    #[error("message returned by the broker: no queue bound for its routing key")]
    Returned,
    #[error("message nacked by the broker")]
    Nacked,
    #[error("no publisher confirm before the ack deadline")]
    Timeout,
    #[error("channel error: {0}")]
    Channel(lapin::Error),
    #[error("envelope serialization: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// The one confirmed-publish vocabulary (`payhook_shared::amqp`), in the receiver's
/// labels.
impl From<amqp::PublishError> for PublishError {
    fn from(error: amqp::PublishError) -> Self {
        match error {
            amqp::PublishError::Returned => Self::Returned,
            amqp::PublishError::Nacked => Self::Nacked,
            amqp::PublishError::TimedOut(_) => Self::Timeout,
            amqp::PublishError::Channel(e) => Self::Channel(e),
        }
    }
}

impl PublishError {
    fn label(&self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Returned => "returned",
            Self::Nacked => "nacked",
            Self::Timeout => "timeout",
            Self::Channel(_) => "channel_error",
            Self::Serialize(_) => "serialize",
        }
    }
}

/// Connection settings of the publisher.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub connector: Connector,
    pub names: Names,
    pub policy: QueuePolicy,
    pub channels: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

/// One live connection and its confirm-mode channels.
#[derive(Debug)]
struct Link {
    /// The connection's status (the supervisor owns the connection).
    status: ConnectionStatus,
    channels: Vec<Channel>,
    /// Set by the broker's `connection.blocked` (resource alarm): publishes would hang.
    blocked: AtomicBool,
}

impl Link {
    fn healthy(&self) -> bool {
        self.status.connected() && self.channels.iter().all(|c| c.status().connected())
    }
}

#[derive(Debug)]
struct Inner {
    config: PublisherConfig,
    link: RwLock<Option<Arc<Link>>>,
    /// Wakes the supervisor when a publish saw the link fail.
    wake: tokio::sync::Notify,
    next_channel: AtomicUsize,
    metrics: Metrics,
    /// Set when the first connection failed for a reason configuration causes (an
    /// unknown CA, a refused client certificate): the receiver stops with it.
    misconfigured: std::sync::OnceLock<String>,
    failed: CancellationToken,
}

/// Cheap to clone; all clones share the connection.
#[derive(Debug, Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl Publisher {
    /// Starts the connection supervisor on `tracker`; it stops when `cancel` fires.
    pub fn start(
        config: PublisherConfig,
        metrics: Metrics,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let inner = Arc::new(Inner {
            config,
            link: RwLock::new(None),
            wake: tokio::sync::Notify::new(),
            next_channel: AtomicUsize::new(0),
            metrics,
            misconfigured: std::sync::OnceLock::new(),
            failed: CancellationToken::new(),
        });
        tracker.spawn(supervise(inner.clone(), cancel));
        Self { inner }
    }

    /// Completes when the supervisor gave up for good: the broker's first connection
    /// failed for a configuration reason ([`Publisher::misconfigured`] says which).
    pub async fn failed(&self) {
        self.inner.failed.cancelled().await;
    }

    /// The configuration mistake that stopped the supervisor, naming the setting.
    pub fn misconfigured(&self) -> Option<&str> {
        self.inner.misconfigured.get().map(String::as_str)
    }

    /// Whether a publish would be attempted now (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        self.current()
            .is_some_and(|l| l.healthy() && !l.blocked.load(Ordering::Relaxed))
    }

    /// Waits until the publisher is ready or `timeout` passes.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_ready() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.is_ready()
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.inner.link.read().ok().and_then(|guard| guard.clone())
    }

    /// Publishes `envelope` persistent and mandatory and waits for the broker's confirm
    /// until `deadline`. `Ok` means a durable queue holds the message.
    pub async fn publish(
        &self,
        envelope: &Envelope,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        let started = Instant::now();
        let result = self.publish_inner(envelope, deadline).await;
        let label = match &result {
            Ok(()) => "ack",
            Err(e) => e.label(),
        };
        self.inner
            .metrics
            .confirm_latency(label, started.elapsed().as_secs_f64());
        result
    }

    async fn publish_inner(
        &self,
        envelope: &Envelope,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        let link = self.current().ok_or(PublishError::Unavailable)?;
        if link.blocked.load(Ordering::Relaxed) {
            return Err(PublishError::Unavailable);
        }
        let index = self.inner.next_channel.fetch_add(1, Ordering::Relaxed) % link.channels.len();
        let channel = &link.channels[index];
        // Sized for the raw body plus the envelope's own fields, so that serialising
        // does not grow (reallocate and copy) the buffer several times.
        let raw = &envelope.raw;
        let mut payload = Vec::with_capacity(
            raw.body.as_ref().map_or(0, String::len)
                + raw.body_base64.as_ref().map_or(0, String::len)
                + ENVELOPE_OVERHEAD,
        );
        serde_json::to_writer(&mut payload, envelope)?;
        let properties =
            payhook_shared::topology::envelope_properties(envelope, "payhook-receiver");
        let sent = payhook_shared::amqp::publish_confirmed(
            channel,
            &self.inner.config.names.notifications,
            &envelope.routing_key(),
            &payload,
            properties,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await;
        sent.map_err(|error| {
            if matches!(error, amqp::PublishError::Channel(_)) {
                // The channel or connection is broken: let the supervisor replace it.
                self.inner.wake.notify_one();
            }
            PublishError::from(error)
        })
    }
}

impl Publisher {
    /// Appends a refused request's sample to the rejected stream, waiting for the
    /// confirm until `deadline`. Diagnostics only: it never counts as an ack.
    pub async fn publish_sample(
        &self,
        sample: &payhook_shared::rejected::Sample,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        let link = self.current().ok_or(PublishError::Unavailable)?;
        if link.blocked.load(Ordering::Relaxed) {
            return Err(PublishError::Unavailable);
        }
        let index = self.inner.next_channel.fetch_add(1, Ordering::Relaxed) % link.channels.len();
        let payload = serde_json::to_vec(sample)?;
        let properties = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_type(payhook_shared::rejected::SAMPLE_TYPE.into())
            .with_app_id("payhook-receiver".into())
            .with_message_id(sample.id.as_str().into());
        payhook_shared::amqp::publish_confirmed(
            &link.channels[index],
            "",
            &self.inner.config.names.rejected,
            &payload,
            properties,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await
        .map_err(PublishError::from)
    }
}

/// Why a link ended or could not be set up.
#[derive(Debug, Error)]
enum LinkError {
    #[error("broker session set-up failed: {0}")]
    Setup(#[from] lapin::Error),
    #[error("broker connection lost")]
    Lost,
}

/// Opens the confirm-mode channels on `connection` (the first declares the topology).
async fn open_link(config: &PublisherConfig, connection: &Connection) -> Result<Link, LinkError> {
    let mut channels = Vec::with_capacity(config.channels);
    for i in 0..config.channels {
        let channel = connection.create_channel().await?;
        if i == 0 {
            topology::declare_ingress(&channel, &config.names, &config.policy).await?;
            topology::declare_rejected(&channel, &config.names).await?;
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channels.push(channel);
    }
    Ok(Link {
        status: connection.status().clone(),
        channels,
        blocked: AtomicBool::new(false),
    })
}

/// Keeps the link up (the shared supervisor's back-off) until `cancel`. A TLS set-up
/// the broker refuses before any connection succeeded stops the receiver with the
/// setting to fix.
async fn supervise(inner: Arc<Inner>, cancel: CancellationToken) {
    let config = &inner.config;
    let supervisor = Supervisor::new(
        config.connector.clone(),
        "payhook-receiver",
        (config.reconnect_min, config.reconnect_max),
    );
    let result = supervisor
        .run(&cancel, |connection| {
            let (inner, cancel) = (&inner, &cancel);
            async move {
                let link = Arc::new(open_link(&inner.config, &connection).await?);
                let events = connection.events_listener();
                set_link(inner, Some(link.clone()));
                inner.metrics.broker_connected();
                tracing::info!(channels = link.channels.len(), "broker connected");
                let stopping = watch_link(inner, &link, events, cancel).await;
                set_link(inner, None);
                if stopping {
                    tracing::info!("broker connection closed");
                    Ok(())
                } else {
                    Err(LinkError::Lost)
                }
            }
        })
        .await;
    set_link(&inner, None);
    if let Err(error) = result {
        let _ = inner.misconfigured.set(error.to_string());
        inner.failed.cancel();
    }
}

/// Waits until the link breaks (returns `false`) or shutdown is asked (returns `true`).
async fn watch_link(
    inner: &Inner,
    link: &Link,
    events: impl futures::Stream<Item = Event> + Send,
    cancel: &CancellationToken,
) -> bool {
    let mut events = std::pin::pin!(events);
    // A periodic check catches failures that raise no event (a channel closed by the
    // broker, a silently dead socket once heartbeats notice).
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return true,
            () = inner.wake.notified() => {}
            _ = tick.tick() => {}
            event = events.next() => match event {
                Some(Event::Error(error)) => {
                    tracing::warn!(%error, "broker connection error");
                    return false;
                }
                Some(Event::ConnectionBlocked(reason)) => {
                    tracing::warn!(%reason, "broker blocked publishing");
                    link.blocked.store(true, Ordering::Relaxed);
                    inner.metrics.set_broker_up(false);
                }
                Some(Event::ConnectionUnblocked) => {
                    tracing::info!("broker unblocked publishing");
                    link.blocked.store(false, Ordering::Relaxed);
                    inner.metrics.set_broker_up(true);
                }
                Some(_) => {}
                None => return false,
            },
        }
        if !link.healthy() {
            return false;
        }
    }
}

fn set_link(inner: &Inner, link: Option<Arc<Link>>) {
    let up = link.is_some();
    if let Ok(mut guard) = inner.link.write() {
        *guard = link;
    }
    inner.metrics.set_broker_up(up);
}
