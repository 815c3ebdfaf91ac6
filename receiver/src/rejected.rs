//! Samples of refused notifications (`payhook_shared::rejected`): at most one per
//! provider, merchant and reason per interval, appended to the rejected stream in the
//! background — the provider's answer never waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use payhook_shared::clock::Clock;
use payhook_shared::error::VerifyError;
use payhook_shared::event::Provider;
use payhook_shared::rejected::Sample;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::publisher::Publisher;

/// How long a sample may wait for the broker's confirm.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(5);

/// What a sample is taken per: provider, merchant, refusal reason.
type Kind = (Provider, String, &'static str);

/// Keeps samples of refused requests. Cheap to clone.
#[derive(Clone)]
pub struct Sampler {
    interval: Option<Duration>,
    /// When the last sample of each (provider, merchant, reason) was taken. Bounded:
    /// only configured merchants reach verification.
    last: Arc<Mutex<HashMap<Kind, Instant>>>,
    publisher: Publisher,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// `interval` zero: no samples.
    pub fn new(
        interval: Duration,
        publisher: Publisher,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Self {
        Self {
            interval: (!interval.is_zero()).then_some(interval),
            last: Arc::new(Mutex::new(HashMap::new())),
            publisher,
            clock,
            metrics,
        }
    }

    /// Offers a refused request of a configured merchant; taken when no sample of the
    /// same provider, merchant and reason was taken within the interval.
    pub fn offer(
        &self,
        provider: Provider,
        merchant: &str,
        error: &VerifyError,
        request_id: &str,
        headers: &actix_web::http::header::HeaderMap,
        body: &[u8],
    ) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        {
            let mut last = match self.last.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let key = (provider, merchant.to_owned(), error.reason());
            if last
                .get(&key)
                .is_some_and(|&taken| now.duration_since(taken) < interval)
            {
                self.metrics.rejected_sample("skipped");
                return;
            }
            last.insert(key, now);
        }
        // Only now, for a sample taken: the headers it keeps.
        let headers = payhook_shared::rejected::KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = headers.get(*name)?.to_str().ok()?;
                Some(((*name).to_owned(), value.to_owned()))
            })
            .collect();
        let sample = Sample::new(
            self.clock.now().unix_timestamp(),
            provider,
            merchant,
            error.reason(),
            &error.to_string(),
            request_id,
            headers,
            body,
        );
        let publisher = self.publisher.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            match publisher
                .publish_sample(&sample, Instant::now() + PUBLISH_DEADLINE)
                .await
            {
                Ok(()) => metrics.rejected_sample("published"),
                Err(error) => {
                    tracing::debug!(%error, "rejected sample not kept");
                    metrics.rejected_sample("failed");
                }
            }
        });
    }
}
