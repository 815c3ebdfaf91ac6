//! The worker end to end, all real: signer → receiver → RabbitMQ → worker → Redis and
//! PostgreSQL → events exchange. Each test owns its broker prefix, database schema and
//! Redis prefix.

use payhook_testkit::harness::unique;
use std::sync::Arc;
use std::time::Duration;

use payhook_shared::clock::SystemClock;
use payhook_shared::config::{Secret, Settings};
use payhook_testkit::db::TestDb;
use payhook_testkit::harness::{
    Answer, EventsTap, Providers, TestBroker, TestReceiver, broker_addr, eventually_async, post,
    test_settings,
};
use payhook_testkit::proxy::Proxy;
use payhook_testkit::worker::{TEST_ADMIN_TOKEN, TestWorker, redis_url, worker_settings};
use sqlx::PgPool;

const FORM: &str = "application/x-www-form-urlencoded";
const QUIET: Duration = Duration::from_secs(20);

struct Stack {
    providers: Providers,
    receiver: TestReceiver,
    receiver_settings: Settings,
    db: TestDb,
    broker: TestBroker,
    tap: EventsTap,
    client: reqwest::Client,
}

async fn stack() -> Stack {
    let providers = Providers::new();
    let mut receiver_settings = test_settings();
    providers.register(&mut receiver_settings);
    let receiver = TestReceiver::spawn(receiver_settings.clone(), Arc::new(SystemClock)).await;
    let tap = EventsTap::bind(&receiver.names).await;
    Stack {
        providers,
        receiver,
        receiver_settings,
        db: TestDb::new().await,
        broker: TestBroker::connect().await,
        tap,
        client: reqwest::Client::new(),
    }
}

impl Stack {
    fn worker_settings(&self) -> Settings {
        worker_settings(&self.receiver_settings, self.db.settings.clone())
    }

    fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    async fn alipay(&self, body: Vec<u8>) -> Answer {
        post(
            &self.client,
            &self.receiver.url("/notify/alipay/m1"),
            FORM,
            &[],
            body,
        )
        .await
    }

    /// Sends a new Alipay payment notification (100 fen, a fresh notify id) for
    /// `order` and asserts the provider's success answer.
    async fn pay(&self, order: &str) {
        let answer = self
            .alipay(self.providers.alipay.payment(order, 100, &unique("n")))
            .await;
        assert_eq!(answer.body, "success", "the receiver acks the payment");
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(self.pool())
            .await
            .expect("count query")
    }

    /// Waits until every notification was processed and every event relayed.
    async fn quiesce(&self, notifications: i64) {
        let ok = eventually_async(QUIET, || async {
            self.count("SELECT count(*) FROM notifications").await >= notifications
                && self
                    .count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                    .await
                    == 0
                && self.broker.depth(&self.receiver.names.work).await == 0
        })
        .await;
        assert!(ok, "pipeline did not settle within {QUIET:?}");
    }

    /// Waits until exactly one message is parked, takes it, and returns its park
    /// reason.
    async fn parked_reason(&self) -> Option<String> {
        let parked = &self.receiver.names.parked;
        let one = eventually_async(QUIET, || async { self.broker.depth(parked).await == 1 }).await;
        assert!(one, "one message parked within {QUIET:?}");
        let messages = self.broker.drain_raw(parked).await;
        assert_eq!(messages.len(), 1, "one parked message");
        payhook_worker::retry::string_header(&messages[0].1, payhook_worker::retry::PARK_REASON)
    }

    async fn state(&self, out_trade_no: &str) -> String {
        sqlx::query_scalar::<_, String>("SELECT state FROM payments WHERE out_trade_no = $1")
            .bind(out_trade_no)
            .fetch_one(self.pool())
            .await
            .expect("payment row")
    }
}

#[tokio::test]
async fn duplicate_storm_through_the_receiver_applies_once_with_four_consumers() {
    let s = stack().await;
    let settings = s.worker_settings();
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(TestWorker::spawn(&settings).await);
    }
    let order = unique("o");
    let body = s.providers.alipay.payment(&order, 8888, &unique("n"));
    let sends = (0..50).map(|_| s.alipay(body.clone()));
    let answers = futures::future::join_all(sends).await;
    assert!(
        answers.iter().all(|a| a.body == "success"),
        "every copy is acked by the receiver"
    );

    let processed = eventually_async(QUIET, || async {
        let total: f64 = workers
            .iter()
            .map(|w| {
                ["applied", "duplicate", "duplicate_transition"]
                    .iter()
                    .map(|o| w.metric(&format!("payhook_worker_events_total{{outcome=\"{o}\"}}")))
                    .sum::<f64>()
            })
            .sum();
        total >= 50.0
    })
    .await;
    assert!(processed, "all 50 copies consumed");
    s.quiesce(1).await;

    assert_eq!(
        s.count("SELECT count(*) FROM transitions").await,
        1,
        "one transition"
    );
    assert_eq!(
        s.count("SELECT count(*) FROM notifications").await,
        1,
        "one notification identity"
    );
    assert_eq!(s.state(&order).await, "PAID");
    let events = s.tap.wait_for(1, QUIET).await;
    assert_eq!(events.len(), 1, "one downstream event: {events:?}");
    assert_eq!(events[0].routing_key, "payment.succeeded.alipay");
    assert_eq!(events[0].cloud_event["subject"], order.as_str());
    let applied: f64 = workers
        .iter()
        .map(|w| w.metric("payhook_worker_events_total{outcome=\"applied\"}"))
        .sum();
    assert_eq!(applied, 1.0);
    for w in workers {
        w.stop().await;
    }
}

#[tokio::test]
async fn redelivery_after_commit_before_ack_has_no_second_effect() {
    let s = stack().await;
    let worker = TestWorker::spawn(&s.worker_settings()).await;
    let order = unique("o");
    s.pay(&order).await;
    s.quiesce(1).await;
    assert_eq!(s.tap.wait_for(1, QUIET).await.len(), 1);

    // Replay the exact message the worker already committed, as the broker does when a
    // worker dies between commit and ack — and forget the Redis mark, as a crash before
    // mark_done would.
    let (data, _) = sqlx::query_as::<_, (serde_json::Value, String)>(
        "SELECT envelope, event_id FROM notifications LIMIT 1",
    )
    .fetch_one(s.pool())
    .await
    .expect("notification row");
    let bytes = serde_json::to_vec(&data).expect("envelope bytes");
    let mut redis = redis::Client::open(redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", s.worker_settings().redis.prefix))
        .query_async(&mut redis)
        .await
        .expect("keys");
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut redis)
        .await
        .unwrap_or(());
    s.broker
        .publish_raw(
            &s.receiver.names.work,
            &bytes,
            lapin::BasicProperties::default(),
        )
        .await;

    let probe = &worker;
    assert!(
        eventually_async(QUIET, || async {
            probe.metric("payhook_worker_events_total{outcome=\"duplicate\"}") >= 1.0
        })
        .await,
        "the redelivery is recognised as a duplicate"
    );
    assert_eq!(s.count("SELECT count(*) FROM transitions").await, 1);
    assert_eq!(s.count("SELECT count(*) FROM outbox").await, 1);
    assert!(s.tap.take().await.is_empty(), "no second downstream event");
    worker.stop().await;
}

#[tokio::test]
async fn killed_worker_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let s = stack().await;
    let proxy = Proxy::start(broker_addr()).await;
    let mut doomed_settings = s.worker_settings();
    doomed_settings.amqp.url = Secret::inline(proxy.amqp_url());
    let doomed = TestWorker::spawn(&doomed_settings).await;

    let orders: Vec<String> = (0..40).map(|_| unique("o")).collect();
    for order in &orders {
        let body = s.providers.alipay.payment(order, 100, &unique("n"));
        assert_eq!(s.alipay(body).await.body, "success");
    }
    // Let it get going, then kill it where it stands and cut its broker connection.
    assert!(
        eventually_async(QUIET, || async {
            s.count("SELECT count(*) FROM transitions").await >= 5
        })
        .await
    );
    doomed.abort();
    proxy.cut();

    let survivor = TestWorker::spawn(&s.worker_settings()).await;
    s.quiesce(40).await;
    assert_eq!(s.count("SELECT count(*) FROM transitions").await, 40);
    assert_eq!(
        s.count("SELECT count(*) FROM payments WHERE state = 'PAID'")
            .await,
        40
    );
    assert_eq!(
        s.count("SELECT count(*) FROM outbox").await,
        40,
        "one event per transition"
    );
    let events = s.tap.wait_for(40, QUIET).await;
    let mut ids: Vec<String> = events
        .iter()
        .map(|e| e.cloud_event["id"].to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        40,
        "every transition's event delivered (consumers dedup on id)"
    );
    survivor.stop().await;
}

/// A TCP proxy in front of the test database, and settings that go through it.
async fn proxied_postgres(s: &Stack) -> (Proxy, Settings) {
    let mut settings = s.worker_settings();
    let proxy = Proxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let url = format!("postgres://postgres@{}/test", proxy.addr);
    settings.postgres.url = Secret::inline(url);
    settings.postgres.acquire_timeout_ms = 500;
    (proxy, settings)
}

#[tokio::test]
async fn postgres_outage_is_retried_through_the_tiers_and_applied_once_back() {
    let s = stack().await;
    let (proxy, settings) = proxied_postgres(&s).await;
    let worker = TestWorker::spawn(&settings).await;
    proxy.cut();
    let order = unique("o");
    s.pay(&order).await;
    let probe = &worker;
    assert!(
        eventually_async(QUIET, || async {
            probe.metric("payhook_worker_events_total{outcome=\"retried\"}") >= 1.0
        })
        .await,
        "sent to a retry tier while the database is away"
    );
    proxy.restore();
    s.quiesce(1).await;
    assert_eq!(s.state(&order).await, "PAID");
    assert_eq!(s.count("SELECT count(*) FROM transitions").await, 1);
    assert_eq!(
        worker.metric("payhook_worker_events_total{outcome=\"parked\"}"),
        0.0
    );
    assert_eq!(s.tap.wait_for(1, QUIET).await.len(), 1);
    worker.stop().await;
}

#[tokio::test]
async fn unknown_schema_version_is_parked_at_once_with_its_reason() {
    let s = stack().await;
    let worker = TestWorker::spawn(&s.worker_settings()).await;
    let poison = serde_json::json!({"schema_version": 99, "event_id": "x"});
    s.broker
        .publish_raw(
            &s.receiver.names.work,
            poison.to_string().as_bytes(),
            lapin::BasicProperties::default(),
        )
        .await;
    assert_eq!(
        s.parked_reason().await.as_deref(),
        Some("unknown_schema_version")
    );
    assert_eq!(
        worker.metric("payhook_worker_events_total{outcome=\"parked\"}"),
        1.0
    );
    worker.stop().await;
}

#[tokio::test]
async fn exhausted_retries_park_the_message_and_replay_applies_it_after_the_fix() {
    let s = stack().await;
    let (proxy, mut settings) = proxied_postgres(&s).await;
    settings.worker.retry_delays_ms = vec![100, 100];
    let worker = TestWorker::spawn(&settings).await;
    proxy.cut();
    let order = unique("o");
    s.pay(&order).await;
    let parked = eventually_async(QUIET, || async {
        s.broker.depth(&s.receiver.names.parked).await == 1
    })
    .await;
    assert!(parked, "parked after the last tier");
    assert!(worker.metric("payhook_worker_events_total{outcome=\"retried\"}") >= 2.0);

    // The fix: the database is back. Replay through the admin API.
    proxy.restore();
    let report: serde_json::Value = s
        .client
        .post(format!(
            "{}/parked/replay?reason=retries_exhausted",
            worker.admin_url
        ))
        .bearer_auth(TEST_ADMIN_TOKEN)
        .send()
        .await
        .expect("replay answers")
        .json()
        .await
        .expect("report");
    assert_eq!(report["replayed"], 1);
    s.quiesce(1).await;
    assert_eq!(s.state(&order).await, "PAID");
    assert_eq!(s.broker.depth(&s.receiver.names.parked).await, 0);
    assert_eq!(s.tap.wait_for(1, QUIET).await.len(), 1);
    worker.stop().await;
}

#[tokio::test]
async fn redis_outage_mid_run_keeps_exactly_once() {
    let s = stack().await;
    let redis_proxy = Proxy::start("127.0.0.1:6379".parse().expect("addr")).await;
    let mut settings = s.worker_settings();
    settings.redis.url = Secret::inline(format!("redis://{}", redis_proxy.addr));
    let worker = TestWorker::spawn(&settings).await;

    let (a, b) = (unique("o"), unique("o"));
    let body_a = s.providers.alipay.payment(&a, 100, &unique("n"));
    assert_eq!(s.alipay(body_a.clone()).await.body, "success");
    s.quiesce(1).await;

    redis_proxy.cut();
    let body_b = s.providers.alipay.payment(&b, 200, &unique("n"));
    for body in [body_a.clone(), body_b.clone(), body_b.clone(), body_a] {
        assert_eq!(s.alipay(body).await.body, "success");
    }
    let probe = &worker;
    assert!(
        eventually_async(QUIET, || async {
            let m =
                |o: &str| probe.metric(&format!("payhook_worker_events_total{{outcome=\"{o}\"}}"));
            m("applied") + m("duplicate") >= 5.0
        })
        .await,
        "all five deliveries processed with Redis away"
    );
    s.quiesce(2).await;
    assert_eq!(worker.metric("payhook_redis_fallback_active"), 1.0);
    assert_eq!(s.count("SELECT count(*) FROM transitions").await, 2);
    let events = s.tap.wait_for(2, QUIET).await;
    assert_eq!(events.len(), 2, "{events:?}");
    worker.stop().await;
}

#[tokio::test]
async fn amount_mismatch_with_a_registered_order_is_quarantined_without_payment_succeeded() {
    let s = stack().await;
    let worker = TestWorker::spawn(&s.worker_settings()).await;
    let order = unique("o");
    let registered = s
        .client
        .post(format!("{}/orders", worker.admin_url))
        .bearer_auth(TEST_ADMIN_TOKEN)
        .json(&serde_json::json!({
            "provider": "alipay", "merchant": "m1", "out_trade_no": order,
            "amount": 8888, "currency": "CNY"
        }))
        .send()
        .await
        .expect("register answers");
    assert_eq!(registered.status().as_u16(), 201);

    s.pay(&order).await;
    s.quiesce(1).await;
    assert_eq!(s.state(&order).await, "PENDING", "not applied as paid");
    assert_eq!(
        worker.metric("payhook_worker_events_total{outcome=\"quarantined\"}"),
        1.0
    );
    let events = s.tap.wait_for(1, QUIET).await;
    let keys: Vec<&str> = events.iter().map(|e| e.routing_key.as_str()).collect();
    assert_eq!(keys, vec!["payment.quarantined.alipay"]);
    worker.stop().await;
}

#[tokio::test]
async fn worker_reconnects_after_losing_the_broker_and_resumes_consuming() {
    let s = stack().await;
    let proxy = Proxy::start(broker_addr()).await;
    let mut settings = s.worker_settings();
    settings.amqp.url = Secret::inline(proxy.amqp_url());
    let worker = TestWorker::spawn(&settings).await;
    let first = unique("o");
    s.pay(&first).await;
    s.quiesce(1).await;

    proxy.cut();
    let shared = worker.shared.clone();
    assert!(
        payhook_testkit::harness::eventually(QUIET, || !shared.broker_up()).await,
        "outage noticed"
    );
    // Notifications keep arriving at the receiver (its own broker link is fine).
    let second = unique("o");
    s.pay(&second).await;
    proxy.restore();
    assert!(
        payhook_testkit::harness::eventually(QUIET, || shared.broker_up()).await,
        "reconnected without a restart"
    );
    s.quiesce(2).await;
    assert_eq!(s.state(&second).await, "PAID");
    assert_eq!(s.tap.wait_for(2, QUIET).await.len(), 2);
    worker.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_an_envelope_is_parked_as_bad_envelope() {
    let s = stack().await;
    let worker = TestWorker::spawn(&s.worker_settings()).await;
    s.broker
        .publish_raw(
            &s.receiver.names.work,
            b"{\"schema_version\":1,\"junk\":true}",
            lapin::BasicProperties::default(),
        )
        .await;
    assert_eq!(s.parked_reason().await.as_deref(), Some("bad_envelope"));
    worker.stop().await;
}

#[tokio::test]
async fn messages_that_arrive_together_are_applied_in_batches_and_a_bad_one_is_parked_alone() {
    let s = stack().await;
    let work = s.receiver.names.work.clone();
    // The poison: a genuine envelope made impossible to apply (a negative amount), so
    // that the batch holding it fails and its messages are applied one by one.
    let body = s.providers.alipay.payment(&unique("o"), 100, &unique("n"));
    assert_eq!(s.alipay(body).await.body, "success");
    let mut taken = s.broker.drain_raw(&work).await;
    assert_eq!(taken.len(), 1, "the receiver published one envelope");
    let (data, properties) = taken.remove(0);
    let mut poison: serde_json::Value = serde_json::from_slice(&data).expect("an envelope");
    poison["fields"]["total_amount"] = (-1).into();
    let poison = serde_json::to_vec(&poison).expect("json");

    // Forty genuine notifications and the poison, all queued before a worker runs, so
    // that they arrive together.
    let orders: Vec<String> = (0..40).map(|_| unique("o")).collect();
    for (i, order) in orders.iter().enumerate() {
        if i == 20 {
            s.broker
                .publish_raw(&work, &poison, properties.clone())
                .await;
        }
        let body = s
            .providers
            .alipay
            .payment(order, 100 + i as i64, &unique("n"));
        assert_eq!(s.alipay(body).await.body, "success");
    }
    let mut settings = s.worker_settings();
    settings.worker.concurrency = 16;
    settings.worker.batch_max = 8;
    settings.worker.prefetch = 64;
    let worker = TestWorker::spawn(&settings).await;

    let parked = eventually_async(QUIET, || async {
        s.broker.depth(&s.receiver.names.parked).await == 1
    })
    .await;
    assert!(parked, "the poison is parked");
    s.quiesce(40).await;
    assert_eq!(s.count("SELECT count(*) FROM transitions").await, 40);
    for order in &orders {
        assert_eq!(s.state(order).await, "PAID", "{order}");
    }
    let events = s.tap.wait_for(40, QUIET).await;
    let subjects: std::collections::HashSet<String> = events
        .iter()
        .map(|e| {
            e.cloud_event["subject"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(events.len(), 40, "one event per order");
    assert_eq!(subjects.len(), 40, "one event per order");
    assert_eq!(s.parked_reason().await.as_deref(), Some("permanent_error"));
    assert_eq!(
        worker.metric("payhook_worker_events_total{outcome=\"applied\"}"),
        40.0
    );
    // The messages went to the database in batches: fewer transactions than the 41
    // messages (each message alone would be 41 transactions of one).
    let batches = worker.metric("payhook_worker_batch_size_count");
    let batched = worker.metric("payhook_worker_batch_size_sum");
    assert!(batched >= 40.0, "{batched} messages in batches");
    assert!(
        (1.0..41.0).contains(&batches),
        "{batches} transactions for {batched} messages"
    );
    worker.stop().await;
}

/// With a linger, messages that arrive one after another (each sent when the previous
/// one was acknowledged, to a worker already waiting) still share a batch, which
/// without one would be a batch each; and a full batch does not wait out the linger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linger_gathers_messages_that_arrive_one_after_another_into_one_batch() {
    let s = stack().await;
    let mut settings = s.worker_settings();
    settings.worker.concurrency = 16;
    settings.worker.batch_max = 4;
    // Far longer than four sends take, and than the test's deadline for the batch: a
    // batch of 4 is applied because it is full, not because the linger ran out.
    settings.worker.batch_linger_ms = 600_000;
    let worker = TestWorker::spawn(&settings).await;

    let orders: Vec<String> = (0..4).map(|_| unique("o")).collect();
    for (i, order) in orders.iter().enumerate() {
        let body = s
            .providers
            .alipay
            .payment(order, 100 + i as i64, &unique("n"));
        assert_eq!(s.alipay(body).await.body, "success");
    }

    s.quiesce(4).await;
    for order in &orders {
        assert_eq!(s.state(order).await, "PAID", "{order}");
    }
    assert_eq!(worker.metric("payhook_worker_batch_size_count"), 1.0);
    assert_eq!(worker.metric("payhook_worker_batch_size_sum"), 4.0);
    worker.stop().await;
}

#[tokio::test]
async fn an_event_committed_but_never_dispatched_is_published_once_by_the_relay_sweep() {
    let s = stack().await;
    let order = unique("o");
    s.pay(&order).await;
    // A worker that committed this notification and died before its dispatcher
    // published the event: the transaction applied here, with nobody to hand it to.
    let work = &s.receiver.names.work;
    assert!(eventually_async(QUIET, || async { s.broker.depth(work).await == 1 }).await);
    let messages = s.broker.drain_raw(work).await;
    assert_eq!(messages.len(), 1);
    let envelope: payhook_shared::event::Envelope =
        serde_json::from_slice(&messages[0].0).expect("an envelope");
    let outcome = payhook_worker::db::apply(
        s.pool(),
        &envelope,
        &payhook_worker::db::Expectations::default(),
    )
    .await
    .expect("applied");
    assert!(matches!(
        outcome,
        payhook_worker::db::ApplyOutcome::Applied { .. }
    ));
    assert_eq!(
        s.count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await,
        1
    );

    // The next worker's relay finds the row once it is older than the sweep delay
    // (5 s in the test settings).
    let worker = TestWorker::spawn(&s.worker_settings()).await;
    let events = s.tap.wait_for(1, QUIET).await;

    assert_eq!(events.len(), 1, "the event went out");
    assert_eq!(events[0].cloud_event["subject"], order.as_str());
    assert_eq!(events[0].routing_key, "payment.succeeded.alipay");
    s.quiesce(1).await;
    assert_eq!(worker.metric("payhook_outbox_dispatched_total"), 0.0);
    assert!(s.tap.take().await.is_empty(), "and only once");
    worker.stop().await;
}

/// A collector stand-in: accepts OTLP/HTTP protobuf on `/v1/traces` and keeps the spans
/// (decoded with the OpenTelemetry protocol's own definitions).
async fn collector() -> (
    String,
    Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    use prost::Message as _;
    type Spans = std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>;
    let spans: Arc<Spans> = Arc::default();
    let held = web::Data::from(spans.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let server = HttpServer::new(move || {
        App::new().app_data(held.clone()).route(
            "/v1/traces",
            web::post().to(|spans: web::Data<Spans>, body: web::Bytes| async move {
                use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return HttpResponse::BadRequest().finish();
                };
                let mut held = spans.lock().expect("spans");
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        held.extend(scope.spans);
                    }
                }
                HttpResponse::Ok()
                    .content_type("application/x-protobuf")
                    .finish()
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    tokio::spawn(server);
    (url, spans)
}

/// With `log.otlp_endpoint` set, the receiver's and the worker's spans are exported in
/// the notification's trace — the worker's a child of the receiver's — and the
/// CloudEvent continues the same trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_in_the_notifications_trace() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (url, spans) = collector().await;
    // This test process's subscriber (nextest runs each test in its own process).
    let guard = payhook_shared::telemetry::init_with(
        payhook_shared::telemetry::LogFormat::Json,
        "info",
        Some(payhook_shared::telemetry::Otlp {
            endpoint: url,
            service: "payhook-test",
        }),
    )
    .expect("otlp")
    .expect("a guard");
    let s = stack().await;
    let worker = TestWorker::spawn(&s.worker_settings()).await;
    let order = unique("o");
    let answer = post(
        &s.client,
        &s.receiver.url("/notify/alipay/m1"),
        FORM,
        &[(
            "traceparent".to_owned(),
            format!("00-{TRACE}-00f067aa0ba902b7-01"),
        )],
        s.providers.alipay.payment(&order, 100, &unique("n")),
    )
    .await;
    assert_eq!(answer.body, "success");
    let events = s.tap.wait_for(1, QUIET).await;
    assert_eq!(events.len(), 1);
    let traceparent = events[0].cloud_event["traceparent"]
        .as_str()
        .expect("traceparent on the event")
        .to_owned();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE}-")),
        "{traceparent}"
    );
    worker.stop().await;
    drop(guard); // flushes the batch exporter

    let held = spans.lock().expect("spans").clone();
    let named = |name: &str| {
        held.iter()
            .find(|span| span.name == name && hex::encode(&span.trace_id) == TRACE)
            .unwrap_or_else(|| {
                panic!(
                    "a {name} span in the trace; got {:?}",
                    held.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
    };
    let notification = named("notification");
    let apply = named("apply");
    assert_eq!(
        hex::encode(&notification.parent_span_id),
        "00f067aa0ba902b7",
        "the receiver's span continues the caller's"
    );
    assert_eq!(
        apply.parent_span_id, notification.span_id,
        "the worker's span hangs under the receiver's"
    );
}
