//! Starting payhook the way production does, against the real services, isolated per
//! test: a fresh name prefix on the shared broker, port 0, cleanup on drop.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use payhook_receiver::Application;
use payhook_shared::clock::Clock;
use payhook_shared::config::{Secret, Settings};
use payhook_shared::event::Envelope;
use payhook_shared::topology::Names;
pub use payhook_sim::Providers;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The broker tests use (`PAYHOOK_TEST_AMQP_URL`, default the local guest account).
pub fn amqp_url() -> String {
    std::env::var("PAYHOOK_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A name prefix no other test (or test run) uses.
pub fn unique_prefix() -> String {
    unique("t-")
}

/// `tag` followed by 12 random hex digits: a name no other test (or earlier run)
/// uses — order numbers, broker prefixes, merchants. Short enough for the providers'
/// 32-character order numbers.
pub fn unique(tag: &str) -> String {
    format!("{tag}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Settings for a test receiver: defaults, port 0, one HTTP worker, a fresh prefix on
/// the test broker, quick reconnects. Tests add merchants and tweak before spawning.
pub fn test_settings() -> Settings {
    let mut settings = Settings::from_toml("").expect("embedded defaults are valid");
    settings.receiver.listen = "127.0.0.1:0".parse().expect("literal address");
    settings.receiver.workers = 1;
    settings.amqp.url = Secret::inline(amqp_url());
    settings.amqp.prefix = unique_prefix();
    settings.amqp.reconnect_min_ms = 50;
    settings.amqp.reconnect_max_ms = 500;
    settings
}

/// A receiver running in this process.
#[derive(Debug)]
pub struct TestReceiver {
    pub base_url: String,
    pub names: Names,
    pub shutdown: CancellationToken,
    pub metrics: payhook_receiver::metrics::Metrics,
    pub publisher: payhook_receiver::publisher::Publisher,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _cleanup: TopologyCleanup,
}

impl TestReceiver {
    /// Builds and starts the receiver, then waits (bounded) for its broker link.
    pub async fn spawn(settings: Settings, clock: Arc<dyn Clock>) -> Self {
        Self::spawn_inner(settings, clock, true).await
    }

    /// Like [`TestReceiver::spawn`] without waiting for the broker (outage tests).
    pub async fn spawn_without_broker(settings: Settings, clock: Arc<dyn Clock>) -> Self {
        Self::spawn_inner(settings, clock, false).await
    }

    async fn spawn_inner(settings: Settings, clock: Arc<dyn Clock>, wait: bool) -> Self {
        // As deployed: the worker's signing keys are not given to the receiver (which
        // refuses to start with one it can read).
        let settings = without_signing_keys(settings);
        let app = Application::build(&settings, clock).expect("receiver builds");
        let base_url = format!("http://127.0.0.1:{}", app.port());
        let names = Names::new(&settings.amqp.prefix);
        let metrics = app.metrics().clone();
        let publisher = app.publisher().clone();
        let certificates = app.certificates().clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        if wait {
            assert!(
                publisher.wait_ready(Duration::from_secs(10)).await,
                "receiver did not connect to the broker within 10 s"
            );
            assert!(
                eventually(Duration::from_secs(10), || certificates.caught_up()).await,
                "receiver did not read the certificate stream within 10 s"
            );
        }
        Self {
            base_url,
            _cleanup: TopologyCleanup(names.clone()),
            names,
            shutdown,
            metrics,
            publisher,
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Stops the receiver gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }

    /// The value of one metric sample, e.g.
    /// `payhook_notifications_total{provider="alipay",outcome="acked"}`.
    pub fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics.render(), sample)
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Reads one sample from a Prometheus text exposition (0 when absent).
pub fn metric_value(exposition: &str, sample: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| {
            line.strip_prefix(sample)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Runs `cleanup` to completion from a `Drop`, which cannot await and may run while the
/// test's own runtime is a single thread blocked right there (or already gone): on a
/// private current-thread runtime in a thread of its own, joined before returning.
/// Failures are ignored: cleanup is best effort.
pub fn block_on_detached<F>(cleanup: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(cleanup());
    })
    .join();
}

/// Deletes a test's queues and exchanges when dropped — also when the test panicked.
/// `settings` without the worker's signing keys (Alipay `app_private_key`, WeChat V3
/// `merchant_private_key`): the receiver's share of a configuration.
pub fn without_signing_keys(mut settings: Settings) -> Settings {
    for app in settings.alipay.values_mut() {
        app.app_private_key = None;
    }
    for merchant in settings.wechat_v3.values_mut() {
        merchant.merchant_private_key = None;
    }
    settings
}

#[derive(Debug)]
pub struct TopologyCleanup(pub Names);

impl Drop for TopologyCleanup {
    fn drop(&mut self) {
        let names = self.0.clone();
        block_on_detached(move || async move {
            let Ok(Ok(conn)) = tokio::time::timeout(
                Duration::from_secs(5),
                Connection::connect(&amqp_url(), ConnectionProperties::default()),
            )
            .await
            else {
                return;
            };
            if let Ok(ch) = conn.create_channel().await {
                let mut queues = vec![
                    names.work.clone(),
                    names.parked.clone(),
                    names.events_unrouted.clone(),
                    names.certificates.clone(),
                    names.rejected.clone(),
                    format!("{}.tap", names.prefix),
                ];
                queues.extend((0..8).map(|i| names.retry(i)));
                for q in queues {
                    let _ = ch
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
                for x in [&names.notifications, &names.events, &names.events_unrouted] {
                    let _ = ch
                        .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                }
            }
            let _ = conn.close(200, "cleanup".into()).await;
            delete_redis_keys(&names.prefix).await;
        });
    }
}

/// Deletes the Redis keys `<prefix>:*` a test's worker left (dedup marks live 72 h).
async fn delete_redis_keys(prefix: &str) {
    let Ok(client) = redis::Client::open(crate::worker::redis_url()) else {
        return;
    };
    let Ok(Ok(mut conn)) = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return;
    };
    let mut cursor: u64 = 0;
    loop {
        let reply: Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await;
        let Ok((next, keys)) = reply else { return };
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// A direct view of the broker for assertions.
#[derive(Debug)]
pub struct TestBroker {
    connection: Connection,
    channel: lapin::Channel,
}

/// One message taken from a queue.
#[derive(Debug)]
pub struct Taken {
    pub envelope: Envelope,
    pub properties: lapin::BasicProperties,
}

impl TestBroker {
    pub async fn connect() -> Self {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("test broker connection");
        Self::on(connection).await
    }

    /// A view through `connection` (another broker than the shared one: a private
    /// node, a TLS connection).
    pub async fn on(connection: Connection) -> Self {
        let channel = connection.create_channel().await.expect("test channel");
        Self {
            connection,
            channel,
        }
    }

    /// A new channel on the test connection.
    pub async fn channel(&self) -> lapin::Channel {
        self.connection
            .create_channel()
            .await
            .expect("test channel")
    }

    /// Messages currently ready in `queue`.
    pub async fn depth(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists")
            .message_count()
    }

    /// Takes (and acks) every message in `queue` now.
    pub async fn drain(&self, queue: &str) -> Vec<Taken> {
        let mut out = Vec::new();
        loop {
            let got = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            let Some(message) = got else { break };
            let envelope =
                serde_json::from_slice(&message.delivery.data).expect("work queue holds envelopes");
            out.push(Taken {
                envelope,
                properties: message.delivery.properties.clone(),
            });
        }
        out
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// What the receiver answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub request_id: Option<String>,
}

/// Posts a notification the way a provider does.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Answer {
    let mut request = client
        .post(url)
        .header("Content-Type", content_type)
        .body(body);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = request.send().await.expect("receiver answers");
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Answer {
        status,
        body: response.text().await.expect("answer body"),
        request_id,
    }
}

/// The broker's `host:port`, from [`amqp_url`] (for proxies in front of it).
pub fn broker_addr() -> std::net::SocketAddr {
    let url = amqp_url();
    let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let host_port = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, rest)| rest);
    let host_port = host_port.split('/').next().unwrap_or("127.0.0.1:5672");
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5672")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| "127.0.0.1:5672".parse().expect("literal address"))
}

/// Awaits `condition` until `within` passes; returns whether it became true. Tests use
/// this instead of sleeping for an effect.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl TestBroker {
    /// Deletes a queue (to make publishes unroutable).
    pub async fn delete_queue(&self, queue: &str) {
        self.channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .expect("queue.delete");
    }
}

/// Like [`eventually`] for conditions that need to await (database, broker).
pub async fn eventually_async<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A queue bound to the events exchange with `#`: what a downstream subscriber sees.
#[derive(Debug)]
pub struct EventsTap {
    broker: TestBroker,
    queue: String,
}

/// One downstream event.
#[derive(Debug, Clone)]
pub struct Event {
    pub routing_key: String,
    pub cloud_event: serde_json::Value,
}

impl EventsTap {
    pub async fn bind(names: &Names) -> Self {
        Self::bind_on(TestBroker::connect().await, names).await
    }

    /// [`EventsTap::bind`] through `broker`.
    pub async fn bind_on(broker: TestBroker, names: &Names) -> Self {
        payhook_shared::topology::declare_events(&broker.channel, names)
            .await
            .expect("events exchange");
        let queue = format!("{}.tap", names.prefix);
        broker
            .channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("tap queue");
        broker
            .channel
            .queue_bind(
                queue.as_str().into(),
                names.events.as_str().into(),
                "#".into(),
                lapin::options::QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("tap binding");
        Self { broker, queue }
    }

    /// Takes every event delivered so far.
    pub async fn take(&self) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            let got = self
                .broker
                .channel
                .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            let Some(message) = got else { break };
            out.push(Event {
                routing_key: message.delivery.routing_key.as_str().to_owned(),
                cloud_event: serde_json::from_slice(&message.delivery.data)
                    .expect("CloudEvents JSON"),
            });
        }
        out
    }

    /// Events until at least `count` arrived or `within` passed.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + within;
        let mut all = Vec::new();
        while all.len() < count && tokio::time::Instant::now() < deadline {
            all.extend(self.take().await);
            if all.len() < count {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        all
    }

    pub async fn close(self) {
        let _ = self
            .broker
            .channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        self.broker.close().await;
    }
}

impl TestBroker {
    /// Publishes raw bytes to a queue through the default exchange (confirm not needed:
    /// tests then await the effect).
    pub async fn publish_raw(&self, queue: &str, data: &[u8], properties: lapin::BasicProperties) {
        self.channel
            .basic_publish(
                "".into(),
                queue.into(),
                lapin::options::BasicPublishOptions::default(),
                data,
                properties.with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// Takes every message of a queue with its properties (raw bytes).
    pub async fn drain_raw(&self, queue: &str) -> Vec<(Vec<u8>, lapin::BasicProperties)> {
        let mut out = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            out.push((
                message.delivery.data.clone(),
                message.delivery.properties.clone(),
            ));
        }
        out
    }
}
