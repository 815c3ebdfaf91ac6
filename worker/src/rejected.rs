//! The samples of refused notifications the receivers append to the rejected stream
//! (`payhook_shared::rejected`), held in memory for the admin API's `/rejected`
//! routes. Every worker reads the stream from its start (reading a stream consumes
//! nothing), so each replica answers with the same samples.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use lapin::options::BasicAckOptions;
use payhook_shared::amqp::{Connector, Supervisor};
use payhook_shared::event::Provider;
use payhook_shared::rejected::{SAMPLE_TYPE, Sample, Summary};
use payhook_shared::topology::{self, Names};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Samples kept per provider, merchant and reason (the newest).
pub const PER_KIND: usize = 20;
/// Memory the samples may hold, about.
pub const MAX_BYTES: usize = 32 * 1024 * 1024;

/// The samples held, oldest first. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    held: Arc<Mutex<Held>>,
}

#[derive(Debug, Default)]
struct Held {
    samples: VecDeque<Sample>,
    bytes: usize,
}

/// Which samples a listing shows.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    pub provider: Option<Provider>,
    pub merchant: Option<String>,
    pub reason: Option<String>,
    pub limit: Option<usize>,
}

impl Samples {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        match self.held.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Keeps `sample` (once: a re-read stream repeats them), dropping the oldest of its
    /// kind beyond [`PER_KIND`] and the oldest of all beyond [`MAX_BYTES`].
    pub fn insert(&self, sample: Sample) {
        let mut held = self.held();
        if held.samples.iter().any(|s| s.id == sample.id) {
            return;
        }
        let same_kind = |s: &Sample| {
            s.provider == sample.provider
                && s.merchant == sample.merchant
                && s.reason == sample.reason
        };
        if held.samples.iter().filter(|s| same_kind(s)).count() >= PER_KIND
            && let Some(at) = held.samples.iter().position(same_kind)
            && let Some(dropped) = held.samples.remove(at)
        {
            held.bytes -= dropped.weight();
        }
        held.bytes += sample.weight();
        held.samples.push_back(sample);
        while held.bytes > MAX_BYTES {
            match held.samples.pop_front() {
                Some(dropped) => held.bytes -= dropped.weight(),
                None => break,
            }
        }
    }

    /// The samples matching `filter`, newest first.
    pub fn list(&self, filter: &Filter) -> Vec<Summary> {
        let held = self.held();
        held.samples
            .iter()
            .rev()
            .filter(|s| filter.provider.is_none_or(|p| s.provider == p))
            .filter(|s| filter.merchant.as_ref().is_none_or(|m| &s.merchant == m))
            .filter(|s| filter.reason.as_ref().is_none_or(|r| &s.reason == r))
            .take(filter.limit.unwrap_or(50).clamp(1, 1000))
            .map(Sample::summary)
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Sample> {
        self.held().samples.iter().find(|s| s.id == id).cloned()
    }
}

/// Reads the rejected stream into `samples` until `cancel` fires, reconnecting with
/// back-off.
pub async fn follow(
    samples: Samples,
    connector: Connector,
    names: Names,
    reconnect: (Duration, Duration),
    cancel: CancellationToken,
) {
    Supervisor::new(connector, "payhook-worker-rejected", reconnect)
        .follow_stream("rejected", &cancel, |connection| {
            let (samples, names, cancel) = (samples.clone(), names.clone(), cancel.clone());
            async move {
                read(&samples, &names, &connection, &cancel)
                    .await
                    .map_err(|e| format!("{e:#}"))
            }
        })
        .await;
}

async fn read(
    samples: &Samples,
    names: &Names,
    connection: &lapin::Connection,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    topology::declare_rejected(&channel, names)
        .await
        .context("declaring the rejected stream")?;
    let mut consumer = payhook_shared::amqp::read_stream_from_start(
        &channel,
        &names.rejected,
        "payhook-worker-rejected",
    )
    .await?;
    loop {
        let delivery = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            delivery = consumer.next() => delivery,
        };
        let delivery = match delivery {
            None => anyhow::bail!("the broker ended the stream consumer"),
            Some(delivery) => delivery?,
        };
        let ours = delivery
            .properties
            .kind()
            .as_ref()
            .is_some_and(|k| k.as_str() == SAMPLE_TYPE);
        if ours {
            match serde_json::from_slice::<Sample>(&delivery.data) {
                Ok(sample) => samples.insert(sample),
                Err(error) => tracing::debug!(%error, "unreadable rejected sample ignored"),
            }
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(merchant: &str, reason: &str, body: &[u8]) -> Sample {
        Sample::new(
            1,
            Provider::Alipay,
            merchant,
            reason,
            "e",
            "r",
            vec![],
            body,
        )
    }

    #[test]
    fn the_newest_of_each_kind_are_kept_and_repeats_ignored() {
        let samples = Samples::default();
        let first = sample("m1", "bad_signature", b"a=1");
        samples.insert(first.clone());
        samples.insert(first.clone());
        for _ in 0..PER_KIND {
            samples.insert(sample("m1", "bad_signature", b"a=2"));
        }
        samples.insert(sample("m2", "malformed", b"x"));
        let all = samples.list(&Filter {
            limit: Some(1000),
            ..Filter::default()
        });
        assert_eq!(all.len(), PER_KIND + 1);
        assert!(
            samples.get(&first.id).is_none(),
            "the oldest of its kind went"
        );
        assert_eq!(all[0].merchant, "m2", "newest first");
        let m2 = samples.list(&Filter {
            merchant: Some("m2".into()),
            ..Filter::default()
        });
        assert_eq!(m2.len(), 1);
    }

    #[test]
    fn memory_is_capped() {
        let samples = Samples::default();
        let body = vec![b'x'; 1024 * 1024];
        for i in 0..64 {
            samples.insert(sample(&format!("m{i}"), "bad_signature", &body));
        }
        let held = samples.held();
        assert!(held.bytes <= MAX_BYTES, "{}", held.bytes);
        assert!(held.samples.len() < 64);
    }
}
