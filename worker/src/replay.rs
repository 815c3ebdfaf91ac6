//! Replaying parked messages back to the work queue, all or filtered by provider and
//! park reason. Used by `payhook-worker replay-parked` and `POST /parked/replay`.
//!
//! The parking queue is walked once (as many messages as it held at the start): a
//! matching message is published to the work queue, a non-matching one back to the
//! parking queue; each original is acked only after its copy was confirmed, so a crash
//! mid-way loses nothing (a message may then be in both queues: the worker's dedup
//! makes the replayed copy harmless).

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use payhook_shared::event::Envelope;
use payhook_shared::topology::Names;
use serde::{Deserialize, Serialize};

use crate::retry::{self, HopError};

/// Which parked messages to replay (all when both are `None`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReplayFilter {
    pub provider: Option<String>,
    pub reason: Option<String>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    pub replayed: u32,
    pub kept: u32,
}

fn matches(filter: &ReplayFilter, data: &[u8], properties: &BasicProperties) -> bool {
    let reason_ok = filter.reason.as_deref().is_none_or(|wanted| {
        retry::string_header(properties, retry::PARK_REASON).as_deref() == Some(wanted)
    });
    let provider_ok = filter.provider.as_deref().is_none_or(|wanted| {
        serde_json::from_slice::<Envelope>(data).is_ok_and(|e| e.provider.as_str() == wanted)
    });
    reason_ok && provider_ok
}

/// Headers for a fresh start: the retry count and park markers are cleared (the old
/// errors stay for the record under `x-payhook-replayed-*`).
fn replay_properties(properties: &BasicProperties) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    let inner = headers.inner().clone();
    let mut fresh = FieldTable::default();
    for (k, v) in inner {
        let key = k.as_str();
        if key == retry::ATTEMPTS
            || key.starts_with("x-death")
            || key.starts_with("x-first-death")
            || key.starts_with("x-last-death")
        {
            continue;
        }
        if key == retry::PARK_REASON {
            fresh.insert("x-payhook-replayed-park-reason".into(), v);
            continue;
        }
        fresh.insert(k, v);
    }
    headers = fresh;
    headers.insert("x-payhook-replayed".into(), AMQPValue::Boolean(true));
    properties.clone().with_headers(headers)
}

/// Walks the parking queue once. `channel` must be in confirm mode.
pub async fn replay_parked(
    channel: &Channel,
    names: &Names,
    filter: &ReplayFilter,
) -> Result<ReplayReport, HopError> {
    let depth = channel
        .queue_declare(
            names.parked.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count();
    let mut report = ReplayReport::default();
    for _ in 0..depth {
        let Some(message) = channel
            .basic_get(
                names.parked.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?
        else {
            break;
        };
        let delivery = message.delivery;
        let (queue, properties, replayed) = if matches(filter, &delivery.data, &delivery.properties)
        {
            (
                names.work.as_str(),
                replay_properties(&delivery.properties),
                true,
            )
        } else {
            (names.parked.as_str(), delivery.properties.clone(), false)
        };
        match retry::publish_confirmed(channel, queue, &delivery.data, properties).await {
            Ok(()) => {
                delivery.ack(BasicAckOptions::default()).await?;
                if replayed {
                    report.replayed += 1;
                } else {
                    report.kept += 1;
                }
            }
            Err(error) => {
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
                return Err(error);
            }
        }
    }
    tracing::info!(
        replayed = report.replayed,
        kept = report.kept,
        "parked messages replayed"
    );
    Ok(report)
}
