//! WeChat Pay V3 platform certificate refresh (docs/design.md, "Platform
//! certificates").
//!
//! Every `reconcile.certificates_refresh_secs`, each V3 merchant configured with a
//! merchant private key downloads `/v3/certificates` (signed request; the answer's
//! signature checked and every certificate opened with the APIv3 key). The result
//! replaces the merchant's downloaded key set here — the reconciler verifies query
//! answers with it — and goes, still sealed, to the `<prefix>.certificates` stream,
//! where every receiver reads it: the receivers hold no signing key. A failed download
//! or publication keeps the previous set and is retried within a minute.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::{BasicProperties, Channel, Connection};
use payhook_shared::amqp::{Connector, publish_confirmed};
use payhook_shared::query::{QueryClient, V3Querier};
use payhook_shared::topology::{self, Names};
use payhook_shared::wechat_v3::relay::{CertificateSet, SET_TYPE};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// How long a publication may wait for the broker's confirm.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);

/// The refreshers of every queryable V3 merchant.
pub struct Refresher {
    client: QueryClient,
    /// Each merchant's querier, and the same with its previous APIv3 key, if any.
    merchants: Vec<(String, V3Querier, Option<V3Querier>)>,
    period: Duration,
    relay: Arc<Relay>,
    metrics: Metrics,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("merchants", &self.merchants.len())
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl Refresher {
    /// A refresher for `merchants` (none: `None`).
    pub fn new(
        merchants: Vec<(String, V3Querier, Option<V3Querier>)>,
        client: QueryClient,
        period: Duration,
        connector: Connector,
        names: Names,
        metrics: Metrics,
    ) -> Option<Self> {
        if merchants.is_empty() {
            return None;
        }
        for (name, _, _) in &merchants {
            metrics.certificate_merchant(name);
        }
        Some(Self {
            client,
            merchants,
            period,
            relay: Arc::new(Relay {
                connector,
                names,
                link: Mutex::new(None),
            }),
            metrics,
        })
    }

    /// Refreshes every merchant until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        let tracker = TaskTracker::new();
        for (name, querier, previous) in self.merchants {
            tracker.spawn(refresh(
                name,
                querier,
                previous,
                self.client.clone(),
                self.period,
                self.relay.clone(),
                self.metrics.clone(),
                stop.clone(),
            ));
        }
        tracker.close();
        tracker.wait().await;
        self.relay.close().await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn refresh(
    name: String,
    querier: V3Querier,
    previous: Option<V3Querier>,
    client: QueryClient,
    period: Duration,
    relay: Arc<Relay>,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let retry = period.min(Duration::from_secs(60));
    loop {
        // During an APIv3 key change WeChat seals with whichever key is in force there.
        let mut downloaded = client.wechat_certificates(&querier).await;
        if downloaded.is_err()
            && let Some(previous) = &previous
            && let Ok(download) = client.wechat_certificates(previous).await
        {
            tracing::info!(merchant = %name, "platform certificates opened with the previous APIv3 key");
            downloaded = Ok(download);
        }
        let wait = match downloaded {
            Ok(download) => {
                querier.merchant.keys.set_downloaded(&download.keys);
                let set = CertificateSet {
                    merchant: name.clone(),
                    mch_id: querier.merchant.mch_id.clone(),
                    fetched_at: time::OffsetDateTime::now_utc().unix_timestamp(),
                    certificates: download.sealed,
                };
                match relay.publish(&set).await {
                    Ok(()) => {
                        tracing::info!(merchant = %name, serials = ?download.keys.serials(), "platform certificates refreshed and handed to the receivers");
                        metrics.certificate_refresh(&name, "published");
                        period
                    }
                    Err(error) => {
                        tracing::warn!(merchant = %name, %error, "platform certificates downloaded but not handed to the receivers");
                        metrics.certificate_refresh(&name, "publish_failed");
                        retry
                    }
                }
            }
            Err(error) => {
                tracing::warn!(merchant = %name, %error, "platform certificate refresh failed");
                metrics.certificate_refresh(&name, "download_failed");
                retry
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The broker link of the refreshers: one connection, opened when first needed and
/// again after a failure (certificate sets are rare; they do not share the consumer's
/// connection, whose sessions come and go with the work queue).
struct Relay {
    connector: Connector,
    names: Names,
    link: Mutex<Option<(Connection, Channel)>>,
}

impl Relay {
    async fn publish(&self, set: &CertificateSet) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(set)?;
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_type(SET_TYPE.into())
            .with_app_id("payhook-worker".into());
        let mut link = self.link.lock().await;
        // A link that broke since the last publication fails once; the second attempt
        // opens a new one.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let channel = match link.as_ref() {
                Some((connection, channel))
                    if connection.status().connected() && channel.status().connected() =>
                {
                    channel.clone()
                }
                _ => {
                    let (connection, channel) = self.open().await?;
                    *link = Some((connection, channel.clone()));
                    channel
                }
            };
            match publish_confirmed(
                &channel,
                "",
                &self.names.certificates,
                &payload,
                properties.clone(),
                PUBLISH_DEADLINE,
            )
            .await
            {
                Ok(()) => return Ok(()),
                Err(error) if attempt >= 2 => return Err(error.into()),
                Err(_) => *link = None,
            }
        }
    }

    async fn open(&self) -> anyhow::Result<(Connection, Channel)> {
        let connection = self
            .connector
            .connect("payhook-worker-certificates")
            .await?;
        let channel = connection.create_channel().await?;
        topology::declare_certificates(&channel, &self.names).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok((connection, channel))
    }

    async fn close(&self) {
        if let Some((connection, _)) = self.link.lock().await.take() {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                connection.close(200, "payhook worker closing".into()),
            )
            .await;
        }
    }
}
