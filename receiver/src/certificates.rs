//! WeChat Pay V3 platform certificates from the worker (docs/design.md, "Platform
//! certificates").
//!
//! The receiver holds no signing key, so it cannot download `/v3/certificates`
//! itself: the worker does, and publishes each merchant's list — sealed with the APIv3
//! key, as WeChat sent it — to the `<prefix>.certificates` stream. This follower reads
//! the stream from its first message whenever it connects and then follows it. Each
//! set opens with the merchant's APIv3 key (held here: notifications need it) and
//! replaces the merchant's downloaded keys; the newest download wins.
//!
//! Caught up: on connecting, the follower appends a marker of its own to the stream
//! and reads until the marker comes back (a stream keeps order), so it has then seen
//! every set published before. The receiver reports ready only after that, so a
//! receiver started after a rotation never serves without the new certificate. After
//! that, a new set reaches every receiver as fast as the broker delivers it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection};
use payhook_shared::amqp::{Connector, Supervisor, publish_confirmed};
use payhook_shared::topology::{self, Names};
use payhook_shared::wechat_v3::V3Merchant;
use payhook_shared::wechat_v3::relay::{CertificateSet, MARKER_TYPE, Marker, SET_TYPE};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// How the follower reaches the broker.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    pub connector: Connector,
    pub names: Names,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

/// The receiver's view of the certificate stream. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Certificates {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    merchants: HashMap<String, Arc<V3Merchant>>,
    /// The merchants with a `previous_api_v3_key`, holding that key: a set sealed
    /// with it (WeChat before the key change took effect) still opens.
    previous: HashMap<String, Arc<V3Merchant>>,
    /// The `fetched_at` of the set applied per merchant.
    applied: std::sync::Mutex<HashMap<String, i64>>,
    caught_up: AtomicBool,
    metrics: Metrics,
}

impl Certificates {
    /// Follows the stream for `merchants` on `tracker` until `cancel` fires. With no
    /// V3 merchant there is nothing to follow, and the receiver is caught up at once.
    pub fn start(
        config: FollowerConfig,
        merchants: &HashMap<String, Arc<V3Merchant>>,
        previous: &HashMap<String, Arc<V3Merchant>>,
        metrics: Metrics,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let state = Arc::new(State {
            merchants: merchants.clone(),
            previous: previous.clone(),
            applied: std::sync::Mutex::new(HashMap::new()),
            caught_up: AtomicBool::new(merchants.is_empty()),
            metrics,
        });
        if !merchants.is_empty() {
            tracker.spawn(follow(state.clone(), config, cancel));
        }
        Self { state }
    }

    /// Whether every set published before this receiver connected has been read.
    /// Stays true across reconnections (the keys are kept).
    pub fn caught_up(&self) -> bool {
        self.state.caught_up.load(Ordering::Acquire)
    }
}

async fn follow(state: Arc<State>, config: FollowerConfig, cancel: CancellationToken) {
    // On a lost stream the keys held stay in use; they were read before.
    Supervisor::new(
        config.connector.clone(),
        "payhook-receiver-certificates",
        (config.reconnect_min, config.reconnect_max),
    )
    .follow_stream("certificates", &cancel, |connection| {
        let (state, names, cancel) = (state.clone(), config.names.clone(), cancel.clone());
        async move {
            read(&state, &names, &connection, &cancel)
                .await
                .map_err(|e| format!("{e:#}"))
        }
    })
    .await;
}

/// Reads the stream from its start until `cancel` fires (`Ok`) or the connection
/// fails.
async fn read(
    state: &State,
    names: &Names,
    connection: &Connection,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    topology::declare_certificates(&channel, names)
        .await
        .context("declaring the certificates stream")?;
    let mut consumer = payhook_shared::amqp::read_stream_from_start(
        &channel,
        &names.certificates,
        "payhook-receiver",
    )
    .await?;
    let marker = Marker {
        marker: uuid::Uuid::new_v4().simple().to_string(),
    };
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    publish_confirmed(
        &publisher,
        "",
        &names.certificates,
        &serde_json::to_vec(&marker)?,
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_type(MARKER_TYPE.into())
            .with_app_id("payhook-receiver".into()),
        Duration::from_secs(10),
    )
    .await
    .context("appending the catch-up marker")?;
    loop {
        let delivery = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            delivery = consumer.next() => delivery,
        };
        let delivery = match delivery {
            None => anyhow::bail!("the broker ended the stream consumer"),
            Some(delivery) => delivery?,
        };
        let kind = delivery
            .properties
            .kind()
            .as_ref()
            .map(|k| k.as_str().to_owned());
        match kind.as_deref() {
            Some(SET_TYPE) => state.apply(&delivery.data),
            Some(MARKER_TYPE) => {
                let ours =
                    serde_json::from_slice::<Marker>(&delivery.data).is_ok_and(|m| m == marker);
                if ours && !state.caught_up.swap(true, Ordering::AcqRel) {
                    tracing::info!("platform certificates caught up with the worker's");
                }
            }
            // Another kind of message: not ours to read.
            _ => {}
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
}

impl State {
    fn apply(&self, data: &[u8]) {
        let set: CertificateSet = match serde_json::from_slice(data) {
            Ok(set) => set,
            Err(error) => {
                tracing::warn!(%error, "unreadable certificate set ignored");
                self.metrics.certificate_set("refused");
                return;
            }
        };
        let Some(merchant) = self.merchants.get(&set.merchant) else {
            // Another tenant's merchant on a shared prefix, or one removed here.
            tracing::debug!(merchant = %set.merchant, "certificate set for a merchant not configured here");
            self.metrics.certificate_set("not_configured");
            return;
        };
        let mut applied = match self.applied.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if applied
            .get(&set.merchant)
            .is_some_and(|&held| held > set.fetched_at)
        {
            self.metrics.certificate_set("stale");
            return;
        }
        let opened = set.open_and_describe(merchant).or_else(|error| {
            match self.previous.get(&set.merchant) {
                Some(previous) => set.open_and_describe(previous),
                None => Err(error),
            }
        });
        match opened {
            Ok((keys, described)) => {
                merchant.keys.set_downloaded(&keys);
                let expiries: Vec<(String, i64)> = described
                    .iter()
                    .map(|c| (c.serial.clone(), c.not_after))
                    .collect();
                self.metrics
                    .downloaded_certificates(&set.merchant, &expiries);
                applied.insert(set.merchant.clone(), set.fetched_at);
                tracing::info!(merchant = %set.merchant, serials = ?keys.serials(), fetched_at = set.fetched_at, "platform certificates updated from the worker");
                self.metrics.certificate_set("applied");
            }
            Err(error) => {
                tracing::warn!(merchant = %set.merchant, %error, "certificate set refused");
                self.metrics.certificate_set("refused");
            }
        }
    }
}
