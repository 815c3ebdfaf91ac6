//! A view of the scenario's broker for the checks: queue depths, the events tap, the
//! parked messages. Reconnects by itself (the broker may just have restarted).

use std::time::Duration;

use anyhow::Context as _;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use payhook_shared::topology::Names;

/// One downstream event seen on the tap.
#[derive(Debug, Clone)]
pub struct TapEvent {
    pub routing_key: String,
    /// The CloudEvents `id`.
    pub id: String,
    /// `data.transition_key`.
    pub transition_key: String,
}

#[derive(Debug)]
pub struct BrokerView {
    url: String,
    names: Names,
    tap: String,
    link: Option<(Connection, Channel)>,
}

impl BrokerView {
    pub fn new(url: &str, names: &Names) -> Self {
        Self {
            url: url.to_owned(),
            names: names.clone(),
            tap: format!("{}.tap", names.prefix),
            link: None,
        }
    }

    async fn channel(&mut self) -> anyhow::Result<&Channel> {
        let stale = self
            .link
            .as_ref()
            .is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected());
        if stale {
            self.link = None;
            let connection = tokio::time::timeout(
                Duration::from_secs(5),
                Connection::connect(&self.url, ConnectionProperties::default()),
            )
            .await
            .context("broker connection timed out")??;
            let channel = connection.create_channel().await?;
            self.link = Some((connection, channel));
        }
        Ok(&self.link.as_ref().context("connected")?.1)
    }

    /// Declares the events exchange and a durable tap queue bound to it with `#`
    /// (before the worker starts, so no event is missed).
    pub async fn bind_tap(&mut self) -> anyhow::Result<()> {
        let names = self.names.clone();
        let tap = self.tap.clone();
        let ch = self.channel().await?;
        payhook_shared::topology::declare_events(ch, &names).await?;
        ch.queue_declare(
            tap.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
        ch.queue_bind(
            tap.as_str().into(),
            names.events.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Ok(())
    }

    /// Ready messages in `queue` (0 when it does not exist).
    pub async fn depth(&mut self, queue: &str) -> anyhow::Result<u32> {
        let ch = self.channel().await?;
        match ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
        {
            Ok(q) => Ok(q.message_count()),
            Err(_) => {
                // A passive declare of a missing queue closes the channel.
                self.link = None;
                Ok(0)
            }
        }
    }

    /// Takes every event on the tap now.
    pub async fn take_events(&mut self) -> anyhow::Result<Vec<TapEvent>> {
        let tap = self.tap.clone();
        let ch = self.channel().await?;
        let mut out = Vec::new();
        while let Some(message) = ch
            .basic_get(tap.as_str().into(), BasicGetOptions { no_ack: true })
            .await?
        {
            let json: serde_json::Value =
                serde_json::from_slice(&message.delivery.data).unwrap_or_default();
            out.push(TapEvent {
                routing_key: message.delivery.routing_key.as_str().to_owned(),
                id: json["id"].as_str().unwrap_or_default().to_owned(),
                transition_key: json["data"]["transition_key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        Ok(out)
    }

    /// Publishes `count` messages no worker can read into the work queue (they must
    /// be parked as `bad_envelope`, and nothing else may be).
    pub async fn publish_poison(&mut self, count: usize) -> anyhow::Result<()> {
        let work = self.names.work.clone();
        let ch = self.channel().await?;
        ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await?;
        for i in 0..count {
            ch.basic_publish(
                "".into(),
                work.as_str().into(),
                BasicPublishOptions::default(),
                format!("chaos poison {i}: not an envelope").as_bytes(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(format!("chaos-poison-{i}").into()),
            )
            .await?
            .await?;
        }
        // confirm_select is per channel: start afresh for the plain gets.
        self.link = None;
        Ok(())
    }

    /// The park reasons of the parked messages (taken off the queue).
    pub async fn take_parked(&mut self) -> anyhow::Result<Vec<String>> {
        let parked = self.names.parked.clone();
        let ch = self.channel().await?;
        let mut out = Vec::new();
        while let Some(message) = ch
            .basic_get(parked.as_str().into(), BasicGetOptions { no_ack: true })
            .await?
        {
            let reason = message
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| {
                    h.inner()
                        .iter()
                        .find(|(k, _)| k.as_str() == "x-payhook-park-reason")
                        .map(|(_, v)| v.clone())
                })
                .map_or_else(
                    || "(none: dead-lettered by the broker)".to_owned(),
                    |v| match v {
                        AMQPValue::LongString(s) => s.to_string(),
                        AMQPValue::ShortString(s) => s.as_str().to_owned(),
                        other => format!("{other:?}"),
                    },
                );
            out.push(reason);
        }
        Ok(out)
    }

    pub async fn close(mut self) {
        if let Some((c, _)) = self.link.take() {
            let _ = c.close(200, "done".into()).await;
        }
    }
}
