//! The outbox relay and dispatcher against the real PostgreSQL and RabbitMQ: every
//! committed outbox row reaches the events exchange as its CloudEvents document, once
//! per successful round, and a row the broker did not confirm stays unpublished for a
//! later round. The dispatcher publishes what is handed over at once; the relay sweeps
//! only rows older than its sweep delay.
//!
//! Each test gets its own PostgreSQL schema ([`TestDb`], migrated by the worker's own
//! `db::connect`) and its own exchange and queue names; [`TestDb`] and a [`Topology`]
//! guard drop them, also when a test panics.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use payhook_testkit::db::TestDb;
use payhook_testkit::harness::{amqp_url, unique_prefix};
use payhook_worker::db::cloudevents::Emitted;
use payhook_worker::metrics::Metrics;
use payhook_worker::outbox::{CONTENT_TYPE, Dispatcher, OutboxRelay, RelayConfig, RelayError};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const EVENT_TIME: &str = "2026-11-25T10:00:00Z";
/// How long a condition may take to become true before the test fails. Generous: it
/// is only reached when the behaviour is broken.
const WITHIN: Duration = Duration::from_secs(10);

/// One test's private world: a schema, an events exchange and a queue bound to it.
struct Ctx {
    db: TestDb,
    connection: Connection,
    /// A plain channel for setting up and inspecting the broker.
    channel: Channel,
    exchange: String,
    queue: String,
    topology: Topology,
}

/// Deletes the test's queues and exchanges when the test ends, passed or not.
struct Topology {
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        let queues = self.queues.clone();
        let exchanges = self.exchanges.clone();
        payhook_testkit::harness::block_on_detached(move || async move {
            delete_topology(&queues, &exchanges).await;
        });
    }
}

async fn delete_topology(queues: &[String], exchanges: &[String]) {
    let Ok(Ok(conn)) = tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(&amqp_url(), ConnectionProperties::default()),
    )
    .await
    else {
        return;
    };
    // A channel per deletion: one that fails (a queue the test never declared) closes
    // its channel and must not stop the others.
    for q in queues {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    for x in exchanges {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = conn.close(200, "cleanup".into()).await;
}

/// A message taken from the test queue.
#[derive(Debug)]
struct Got {
    routing_key: String,
    properties: BasicProperties,
    document: Value,
}

impl Got {
    fn message_id(&self) -> String {
        self.properties
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    }
}

impl Ctx {
    /// A fresh schema with the migration applied, and an events exchange whose test
    /// queue is bound with `binding` (`#` for everything).
    async fn start(binding: &str) -> Self {
        let prefix = unique_prefix();
        let exchange = format!("{prefix}.events");
        let queue = format!("{prefix}.events.all");
        let topology = Topology {
            queues: vec![queue.clone()],
            exchanges: vec![exchange.clone()],
        };
        let db = TestDb::new().await;

        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("broker connection");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare the events exchange");
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare the test queue");
        let ctx = Self {
            db,
            connection,
            channel,
            exchange,
            queue,
            topology,
        };
        ctx.bind(&ctx.queue, binding).await;
        ctx
    }

    async fn bind(&self, queue: &str, pattern: &str) {
        self.channel
            .queue_bind(
                queue.into(),
                self.exchange.as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
    }

    fn relay(&self, batch: u32, poll: Duration) -> OutboxRelay {
        OutboxRelay::new(
            self.db.pool.clone(),
            RelayConfig {
                exchange: self.exchange.clone(),
                batch,
                poll,
                sweep_after: Duration::ZERO,
            },
        )
    }

    /// A new channel for a relay (not in confirm mode: the relay selects it).
    async fn new_channel(&self) -> Channel {
        self.connection
            .create_channel()
            .await
            .expect("relay channel")
    }

    /// Inserts an outbox row as the apply path would; returns its CloudEvents id and
    /// document.
    async fn insert(&self, routing_key: &str) -> (Uuid, Value) {
        self.insert_aged(routing_key, 0).await
    }

    /// Like [`Ctx::insert`], written `age_secs` seconds ago.
    async fn insert_aged(&self, routing_key: &str, age_secs: i64) -> (Uuid, Value) {
        let id = Uuid::new_v4();
        let document = json!({
            "specversion": "1.0",
            "id": id,
            "source": "payhook/test",
            "type": format!("payhook.{routing_key}"),
            "subject": format!("O-{}", id.simple()),
            "time": EVENT_TIME,
            "datacontenttype": "application/json",
            "data": { "amount": 1234, "currency": "CNY", "note": "测试" },
        });
        sqlx::query(
            "INSERT INTO outbox (event_id, routing_key, payload, created_at) \
             VALUES ($1, $2, $3, now() - make_interval(secs => $4))",
        )
        .bind(id)
        .bind(routing_key)
        .bind(&document)
        .bind(age_secs as f64)
        .execute(&self.db.pool)
        .await
        .expect("insert outbox row");
        (id, document)
    }

    async fn unpublished(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&self.db.pool)
            .await
            .expect("count unpublished")
    }

    async fn is_published(&self, event_id: Uuid) -> bool {
        sqlx::query_scalar("SELECT published_at IS NOT NULL FROM outbox WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&self.db.pool)
            .await
            .expect("outbox row")
    }

    /// Takes every message now in `queue`, in queue order.
    async fn drain(&self, queue: &str) -> Vec<Got> {
        let mut out = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            let delivery = &message.delivery;
            out.push(Got {
                routing_key: delivery.routing_key.to_string(),
                properties: delivery.properties.clone(),
                document: serde_json::from_slice(&delivery.data).expect("a JSON document"),
            });
        }
        out
    }

    async fn drain_all(&self) -> Vec<Got> {
        self.drain(&self.queue).await
    }
}

/// Awaits `condition` until [`WITHIN`] passes; returns whether it became true.
async fn eventually<F, Fut>(mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn each_row_is_published_once_as_its_document_with_its_routing_key_and_id() {
    let ctx = Ctx::start("#").await;
    let rows = [
        ctx.insert("payment.succeeded.alipay").await,
        ctx.insert("refund.succeeded.wechat_v3").await,
        ctx.insert("payment.closed.wechat_v2").await,
    ];
    let channel = ctx.new_channel().await;

    let published = ctx
        .relay(10, Duration::from_secs(60))
        .relay_once(&channel)
        .await
        .expect("round");

    assert_eq!(published, 3);
    let got = ctx.drain_all().await;
    assert_eq!(got.len(), 3, "one message per row");
    let expected_timestamp =
        time::OffsetDateTime::parse(EVENT_TIME, &time::format_description::well_known::Rfc3339)
            .expect("literal time")
            .unix_timestamp();
    // In id order: one channel, one queue.
    for (message, (id, document)) in got.iter().zip(&rows) {
        assert_eq!(message.message_id(), id.to_string());
        assert_eq!(
            &message.document, document,
            "the stored document, unchanged"
        );
        let expected_key = document["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("payhook."))
            .expect("test type");
        assert_eq!(message.routing_key, expected_key);
        let p = &message.properties;
        assert_eq!(p.delivery_mode(), &Some(2), "persistent");
        assert_eq!(
            p.content_type()
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some(CONTENT_TYPE)
        );
        assert_eq!(
            p.kind().as_ref().map(ToString::to_string),
            document["type"].as_str().map(str::to_owned),
            "AMQP type = CloudEvents type"
        );
        assert_eq!(
            *p.timestamp(),
            Some(u64::try_from(expected_timestamp).expect("positive"))
        );
        assert!(ctx.is_published(*id).await, "published_at set");
    }
    assert_eq!(ctx.unpublished().await, 0);
}

#[tokio::test]
async fn a_second_round_publishes_nothing() {
    let ctx = Ctx::start("#").await;
    ctx.insert("payment.succeeded.alipay").await;
    let relay = ctx.relay(10, Duration::from_secs(60));
    let channel = ctx.new_channel().await;

    assert_eq!(relay.relay_once(&channel).await.expect("first round"), 1);
    assert_eq!(relay.relay_once(&channel).await.expect("second round"), 0);

    assert_eq!(ctx.drain_all().await.len(), 1);
}

#[tokio::test]
async fn an_unroutable_event_stays_unpublished_until_a_queue_binds_its_key() {
    let ctx = Ctx::start("payment.#").await;
    let (routable, _) = ctx.insert("payment.succeeded.alipay").await;
    let (unroutable, _) = ctx.insert("refund.succeeded.alipay").await;
    let relay = ctx.relay(10, Duration::from_secs(60));
    let channel = ctx.new_channel().await;

    assert_eq!(
        relay
            .relay_once(&channel)
            .await
            .expect("a return is no error"),
        1
    );
    assert!(ctx.is_published(routable).await);
    assert!(
        !ctx.is_published(unroutable).await,
        "returned: not published"
    );

    ctx.bind(&ctx.queue, "refund.#").await;
    assert_eq!(relay.relay_once(&channel).await.expect("round"), 1);
    assert!(ctx.is_published(unroutable).await);

    let ids: Vec<String> = ctx.drain_all().await.iter().map(Got::message_id).collect();
    assert_eq!(ids, [routable.to_string(), unroutable.to_string()]);
}

#[tokio::test]
async fn a_nacked_event_stays_unpublished_and_goes_out_in_a_later_round() {
    let mut ctx = Ctx::start("payment.#").await;
    // A queue that refuses every message: the broker nacks what is routed to it.
    let full = format!("{}.full", ctx.queue);
    ctx.topology.queues.push(full.clone());
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-max-length"), AMQPValue::LongInt(0));
    args.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString("reject-publish".into()),
    );
    ctx.channel
        .queue_declare(full.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .expect("declare the full queue");
    ctx.bind(&full, "close.#").await;
    let (id, _) = ctx.insert("close.closed.alipay").await;
    let relay = ctx.relay(10, Duration::from_secs(60));
    let channel = ctx.new_channel().await;

    let nacked = relay.relay_once(&channel).await;
    ctx.channel
        .queue_delete(full.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete the full queue");

    assert_eq!(nacked.expect("a nack is no error"), 0);
    assert!(!ctx.is_published(id).await, "nacked: not published");
    ctx.bind(&ctx.queue, "close.#").await;
    assert_eq!(relay.relay_once(&channel).await.expect("round"), 1);
    let ids: Vec<String> = ctx.drain_all().await.iter().map(Got::message_id).collect();
    assert_eq!(ids, [id.to_string()]);
}

#[tokio::test]
async fn a_closed_channel_fails_the_round_and_a_later_round_publishes_the_rows() {
    let ctx = Ctx::start("#").await;
    ctx.insert("payment.succeeded.alipay").await;
    ctx.insert("payment.succeeded.wechat_v3").await;
    let relay = ctx.relay(10, Duration::from_secs(60));
    let closed = ctx.new_channel().await;
    closed.close(200, "test".into()).await.expect("close");

    let failed = relay.relay_once(&closed).await;

    assert!(
        matches!(failed, Err(RelayError::ChannelClosed)),
        "{failed:?}"
    );
    assert_eq!(ctx.unpublished().await, 2);
    let channel = ctx.new_channel().await;
    assert_eq!(relay.relay_once(&channel).await.expect("round"), 2);
    assert_eq!(ctx.unpublished().await, 0);
    assert_eq!(ctx.drain_all().await.len(), 2);
}

#[tokio::test]
async fn a_channel_the_broker_closes_mid_batch_leaves_every_row_unpublished() {
    let ctx = Ctx::start("#").await;
    for _ in 0..5 {
        ctx.insert("payment.succeeded.alipay").await;
    }
    // Publishing to an exchange that does not exist: the broker closes the channel
    // (404) after the publishes were written, before any confirm.
    let broken = OutboxRelay::new(
        ctx.db.pool.clone(),
        RelayConfig {
            exchange: format!("{}.missing", ctx.exchange),
            batch: 10,
            poll: Duration::from_secs(60),
            sweep_after: Duration::ZERO,
        },
    );
    // A connection of its own: a publish the client wrote after the broker closed the
    // channel may make the broker close the whole connection (channel error), a race
    // this test is not about; the context's connection must survive for the checks.
    let doomed = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("broker connection");
    let channel = doomed.create_channel().await.expect("channel");

    let failed = broken.relay_once(&channel).await;

    assert!(matches!(failed, Err(RelayError::Channel(_))), "{failed:?}");
    assert!(failed.as_ref().is_err_and(RelayError::is_broker));
    assert_eq!(ctx.unpublished().await, 5);
    let channel = ctx.new_channel().await;
    let relay = ctx.relay(10, Duration::from_secs(60));
    assert_eq!(relay.relay_once(&channel).await.expect("round"), 5);
    assert_eq!(ctx.drain_all().await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_in_parallel_publish_each_of_200_rows_exactly_once() {
    let ctx = Ctx::start("#").await;
    let mut expected = Vec::with_capacity(200);
    for i in 0..200 {
        let key = if i % 2 == 0 {
            "payment.succeeded.alipay"
        } else {
            "refund.succeeded.wechat_v3"
        };
        expected.push(ctx.insert(key).await.0.to_string());
    }
    // Two replicas: separate pools, separate channels, small batches so they interleave.
    let replica = |pool: PgPool| {
        OutboxRelay::new(
            pool,
            RelayConfig {
                exchange: ctx.exchange.clone(),
                batch: 7,
                poll: Duration::from_secs(60),
                sweep_after: Duration::ZERO,
            },
        )
    };
    let (a, b) = (
        replica(ctx.db.pool.clone()),
        replica(payhook_worker::db::connect_lazy(&ctx.db.settings).expect("second pool")),
    );
    let (channel_a, channel_b) = (ctx.new_channel().await, ctx.new_channel().await);
    let drive = |relay: OutboxRelay, channel: Channel| async move {
        let mut total = 0;
        loop {
            match relay.relay_once(&channel).await.expect("round") {
                0 => return total,
                n => total += n,
            }
        }
    };

    let (total_a, total_b) = tokio::join!(
        tokio::spawn(drive(a, channel_a)),
        tokio::spawn(drive(b, channel_b))
    );
    let (total_a, total_b) = (total_a.expect("relay a"), total_b.expect("relay b"));

    assert_eq!(total_a + total_b, 200, "a: {total_a}, b: {total_b}");
    assert_eq!(ctx.unpublished().await, 0);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for message in ctx.drain_all().await {
        *counts.entry(message.message_id()).or_default() += 1;
    }
    assert_eq!(counts.len(), 200, "every row published");
    assert!(
        counts.values().all(|&n| n == 1),
        "duplicates: {:?}",
        counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    expected.sort();
    let mut seen: Vec<String> = counts.into_keys().collect();
    seen.sort();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_notify_wakes_the_idle_relay_at_once() {
    let ctx = Ctx::start("#").await;
    // A poll interval no test waits for: only the notify can wake the relay in time.
    let relay = std::sync::Arc::new(ctx.relay(10, Duration::from_secs(3600)));
    let notify = relay.notifier();
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let relay = relay.clone();
        let channel = ctx.new_channel().await;
        let cancel = cancel.clone();
        async move { relay.run(channel, cancel).await }
    });
    // Once the relay has published this row its batch came back short, so it idles.
    let (seed, _) = ctx.insert("payment.succeeded.alipay").await;
    notify.notify_one();
    assert!(eventually(|| ctx.is_published(seed)).await);

    let (id, _) = ctx.insert("payment.succeeded.wechat_v3").await;
    notify.notify_one();

    assert!(
        eventually(|| ctx.is_published(id)).await,
        "a notified relay publishes within {WITHIN:?}, not at the next poll"
    );
    cancel.cancel();
    let stopped = tokio::time::timeout(WITHIN, running)
        .await
        .expect("run returns promptly when cancelled")
        .expect("run did not panic");
    assert!(stopped.is_ok(), "{stopped:?}");
    assert_eq!(ctx.drain_all().await.len(), 2);
}

#[tokio::test]
async fn run_returns_a_broker_error_when_its_channel_closes_and_leaves_rows_unpublished() {
    let ctx = Ctx::start("#").await;
    let relay = std::sync::Arc::new(ctx.relay(10, Duration::from_secs(3600)));
    let notify = relay.notifier();
    let channel = ctx.new_channel().await;
    let running = tokio::spawn({
        let relay = relay.clone();
        let channel = channel.clone();
        async move { relay.run(channel, CancellationToken::new()).await }
    });

    channel.close(200, "test".into()).await.expect("close");
    ctx.insert("payment.succeeded.alipay").await;
    notify.notify_one();

    let ended = tokio::time::timeout(WITHIN, running)
        .await
        .expect("run returns when its channel is gone")
        .expect("run did not panic");
    assert!(
        ended.as_ref().is_err_and(RelayError::is_broker),
        "{ended:?}"
    );
    assert_eq!(ctx.unpublished().await, 1);
    // The supervisor's restart: a new channel, and the row goes out.
    let channel = ctx.new_channel().await;
    assert_eq!(relay.relay_once(&channel).await.expect("round"), 1);
}

#[tokio::test]
async fn lag_reports_unpublished_rows_and_the_age_of_the_oldest() {
    let ctx = Ctx::start("#").await;
    assert_eq!(
        OutboxRelay::lag(&ctx.db.pool).await.expect("lag"),
        (0, None)
    );
    ctx.insert_aged("payment.succeeded.alipay", 30).await;
    ctx.insert("payment.succeeded.alipay").await;

    let (count, oldest) = OutboxRelay::lag(&ctx.db.pool).await.expect("lag");

    assert_eq!(count, 2);
    let oldest = oldest.expect("an age when rows wait");
    assert!((30.0..60.0).contains(&oldest), "oldest: {oldest}");
    let channel = ctx.new_channel().await;
    ctx.relay(10, Duration::from_secs(60))
        .relay_once(&channel)
        .await
        .expect("round");
    assert_eq!(
        OutboxRelay::lag(&ctx.db.pool).await.expect("lag"),
        (0, None)
    );
}

#[tokio::test]
async fn the_relay_leaves_rows_younger_than_the_sweep_delay_to_the_dispatcher() {
    let ctx = Ctx::start("#").await;
    let (fresh, _) = ctx.insert("payment.succeeded.alipay").await;
    let (old, _) = ctx.insert_aged("payment.succeeded.wechat_v3", 120).await;
    let relay = OutboxRelay::new(
        ctx.db.pool.clone(),
        RelayConfig {
            exchange: ctx.exchange.clone(),
            batch: 10,
            poll: Duration::from_secs(60),
            sweep_after: Duration::from_secs(60),
        },
    );
    let channel = ctx.new_channel().await;

    assert_eq!(relay.relay_once(&channel).await.expect("round"), 1);

    assert!(
        ctx.is_published(old).await,
        "a row older than the delay is swept"
    );
    assert!(
        !ctx.is_published(fresh).await,
        "a younger one is left alone"
    );
    let got = ctx.drain_all().await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id(), old.to_string());
}

/// What the apply path hands the dispatcher for a row [`Ctx::insert`] wrote.
fn emitted(id: Uuid, document: &Value) -> Emitted {
    let event_type = document["type"].as_str().expect("test type").to_owned();
    Emitted {
        event_id: id,
        routing_key: event_type
            .strip_prefix("payhook.")
            .expect("test type")
            .to_owned(),
        payload: document.to_string(),
        event_type,
        timestamp: time::OffsetDateTime::parse(
            EVENT_TIME,
            &time::format_description::well_known::Rfc3339,
        )
        .expect("literal time")
        .unix_timestamp(),
    }
}

/// A dispatcher for the test's exchange (sweep delay one minute).
fn dispatcher(ctx: &Ctx, metrics: &Metrics) -> std::sync::Arc<Dispatcher> {
    std::sync::Arc::new(Dispatcher::new(
        ctx.db.pool.clone(),
        ctx.exchange.clone(),
        Duration::from_secs(60),
        metrics.clone(),
    ))
}

#[tokio::test]
async fn the_dispatcher_publishes_handed_over_events_at_once_and_marks_their_rows() {
    let ctx = Ctx::start("#").await;
    let metrics = Metrics::new();
    let dispatcher = dispatcher(&ctx, &metrics);
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let dispatcher = dispatcher.clone();
        let channel = ctx.new_channel().await;
        let cancel = cancel.clone();
        async move { dispatcher.run(channel, cancel).await }
    });
    let first = ctx.insert("payment.succeeded.alipay").await;
    let second = ctx.insert("refund.succeeded.wechat_v3").await;
    let alone = ctx.insert("payment.closed.wechat_v2").await;

    let handle = dispatcher.handle();
    handle.hand_over(vec![
        emitted(first.0, &first.1),
        emitted(second.0, &second.1),
    ]);
    handle.hand_over(vec![emitted(alone.0, &alone.1)]);

    // No relay runs: only the dispatcher can publish and mark them.
    assert!(
        eventually(|| async { ctx.unpublished().await == 0 }).await,
        "every handed-over row marked within {WITHIN:?}"
    );
    let got = ctx.drain_all().await;
    assert_eq!(got.len(), 3, "one message per event");
    for (message, (id, document)) in got.iter().zip([&first, &second, &alone]) {
        assert_eq!(message.message_id(), id.to_string(), "hand-over order");
        assert_eq!(&message.document, document);
        assert_eq!(
            Some(message.routing_key.as_str()),
            document["type"]
                .as_str()
                .and_then(|t| t.strip_prefix("payhook."))
        );
        let p = &message.properties;
        assert_eq!(p.delivery_mode(), &Some(2), "persistent");
        assert_eq!(
            p.kind().as_ref().map(ToString::to_string),
            document["type"].as_str().map(str::to_owned)
        );
    }
    assert_eq!(metrics.outbox_dispatched.get(), 3);
    assert_eq!(metrics.outbox_left_to_relay.get(), 0);
    cancel.cancel();
    let stopped = tokio::time::timeout(WITHIN, running)
        .await
        .expect("run returns promptly when cancelled")
        .expect("run did not panic");
    assert!(stopped.is_ok(), "{stopped:?}");
}

#[tokio::test]
async fn an_event_the_broker_returns_to_the_dispatcher_is_left_for_the_relay() {
    let ctx = Ctx::start("payment.#").await;
    let metrics = Metrics::new();
    let dispatcher = dispatcher(&ctx, &metrics);
    let routable = ctx.insert("payment.succeeded.alipay").await;
    let unroutable = ctx.insert("refund.succeeded.alipay").await;
    dispatcher.handle().hand_over(vec![
        emitted(routable.0, &routable.1),
        emitted(unroutable.0, &unroutable.1),
    ]);
    // Cancelled before it starts: it publishes what was handed over, then returns.
    let cancel = CancellationToken::new();
    cancel.cancel();

    let ran = dispatcher.run(ctx.new_channel().await, cancel).await;

    assert!(ran.is_ok(), "a return is no error: {ran:?}");
    assert!(ctx.is_published(routable.0).await);
    assert!(
        !ctx.is_published(unroutable.0).await,
        "returned: still unpublished"
    );
    assert_eq!(metrics.outbox_dispatched.get(), 1);
    assert_eq!(metrics.outbox_left_to_relay.get(), 1);
    // Once a queue binds its key, the relay's sweep publishes it.
    ctx.bind(&ctx.queue, "refund.#").await;
    let channel = ctx.new_channel().await;
    assert_eq!(
        ctx.relay(10, Duration::from_secs(60))
            .relay_once(&channel)
            .await
            .expect("round"),
        1
    );
    let ids: Vec<String> = ctx.drain_all().await.iter().map(Got::message_id).collect();
    assert_eq!(ids, [routable.0.to_string(), unroutable.0.to_string()]);
}

#[tokio::test]
async fn a_dispatcher_whose_channel_closed_returns_a_broker_error_and_the_relay_publishes_the_rows()
{
    let ctx = Ctx::start("#").await;
    let metrics = Metrics::new();
    let dispatcher = dispatcher(&ctx, &metrics);
    let channel = ctx.new_channel().await;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    channel.close(200, "test".into()).await.expect("close");
    let (id, document) = ctx.insert("payment.succeeded.alipay").await;
    dispatcher.handle().hand_over(vec![emitted(id, &document)]);

    let ran = tokio::time::timeout(WITHIN, dispatcher.run(channel, CancellationToken::new()))
        .await
        .expect("run returns when its channel is gone");

    assert!(ran.as_ref().is_err_and(RelayError::is_broker), "{ran:?}");
    assert!(!ctx.is_published(id).await);
    assert_eq!(metrics.outbox_left_to_relay.get(), 1);
    let channel = ctx.new_channel().await;
    assert_eq!(
        ctx.relay(10, Duration::from_secs(60))
            .relay_once(&channel)
            .await
            .expect("round"),
        1
    );
    assert_eq!(ctx.drain_all().await.len(), 1);
}
