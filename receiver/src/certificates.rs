//! WeChat Pay V3 platform certificate refresh: every
//! `reconcile.certificates_refresh_secs`, each V3 merchant configured with a merchant
//! private key downloads `/v3/certificates` (decrypted with the APIv3 key, the answer's
//! signature checked) and the result replaces the merchant's downloaded key set, which
//! the notify handlers consult after the configured keys. WeChat lists old and new
//! certificates during a rotation, so both verify through the overlap; a failed
//! download keeps the previous set and is retried within a minute.

use std::sync::Arc;
use std::time::Duration;

use payhook_shared::clock::Clock;
use payhook_shared::config::Settings;
use payhook_shared::merchants::Merchants;
use payhook_shared::query::{Queriers, QueryClient, V3Querier};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Starts one refresher per queryable V3 merchant (none when no merchant has a key).
pub fn start(
    settings: &Settings,
    merchants: &Merchants,
    clock: Arc<dyn Clock>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<usize> {
    let queriers = Queriers::build(settings, merchants)?;
    if queriers.wechat_v3.is_empty() {
        return Ok(0);
    }
    let client = QueryClient::new(&settings.reconcile, clock)?;
    let period = Duration::from_secs(settings.reconcile.certificates_refresh_secs);
    let count = queriers.wechat_v3.len();
    for (name, querier) in queriers.wechat_v3 {
        tracker.spawn(refresh(
            name,
            querier,
            client.clone(),
            period,
            cancel.clone(),
        ));
    }
    Ok(count)
}

async fn refresh(
    name: String,
    querier: V3Querier,
    client: QueryClient,
    period: Duration,
    cancel: CancellationToken,
) {
    let retry = period.min(Duration::from_secs(60));
    loop {
        let wait = match client.wechat_certificates(&querier).await {
            Ok(keys) => {
                tracing::info!(merchant = %name, serials = ?keys.serials(), "platform certificates refreshed");
                querier.merchant.keys.set_downloaded(&keys);
                period
            }
            Err(error) => {
                tracing::warn!(merchant = %name, %error, "platform certificate refresh failed");
                retry
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
