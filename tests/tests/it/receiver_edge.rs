//! The receiver at its edges: broker outages and recovery, unroutable publishes,
//! allowlists behind proxies, load shedding and slow clients, TLS.

use payhook_testkit::harness::unique;
use std::sync::Arc;
use std::time::Duration;

use payhook_shared::clock::SystemClock;
use payhook_shared::config::{Material, Secret, TlsSettings};
use payhook_testkit::harness::{
    Providers, TestBroker, TestReceiver, broker_addr, eventually, post, test_settings,
};
use payhook_testkit::proxy::Proxy;
use tokio::io::AsyncWriteExt as _;

const FORM: &str = "application/x-www-form-urlencoded";

async fn readyz(client: &reqwest::Client, receiver: &TestReceiver) -> u16 {
    client
        .get(receiver.url("/readyz"))
        .send()
        .await
        .expect("readyz answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn unreachable_broker_gets_the_failure_answer_never_success() {
    let providers = Providers::new();
    let mut settings = test_settings();
    providers.register(&mut settings);
    // A port nobody listens on: bind one, then free it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    settings.amqp.url = Secret::inline(format!("amqp://guest:guest@{closed}/%2f"));
    let receiver = TestReceiver::spawn_without_broker(settings, Arc::new(SystemClock)).await;
    let client = reqwest::Client::new();

    let body = providers.alipay.payment(&unique("o"), 100, &unique("n"));
    let started = std::time::Instant::now();
    let answer = post(&client, &receiver.url("/notify/alipay/m1"), FORM, &[], body).await;
    assert_eq!((answer.status, answer.body.as_str()), (503, "fail"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fails fast, not at the ack deadline"
    );
    assert_eq!(readyz(&client, &receiver).await, 503);
    assert_eq!(
        receiver.metric(
            "payhook_notifications_total{provider=\"alipay\",outcome=\"broker_unavailable\"}"
        ),
        1.0
    );
    assert_eq!(receiver.metric("payhook_broker_up"), 0.0);
}

#[tokio::test]
async fn broker_partition_fails_fast_then_recovers_without_restart() {
    let providers = Providers::new();
    let proxy = Proxy::start(broker_addr()).await;
    let mut settings = test_settings();
    providers.register(&mut settings);
    settings.amqp.url = Secret::inline(proxy.amqp_url());
    let receiver = TestReceiver::spawn(settings, Arc::new(SystemClock)).await;
    let broker = TestBroker::connect().await;
    let client = reqwest::Client::new();
    let url = receiver.url("/notify/alipay/m1");
    let notify = || providers.alipay.payment(&unique("o"), 100, &unique("n"));

    assert_eq!(
        post(&client, &url, FORM, &[], notify()).await.body,
        "success"
    );
    assert_eq!(readyz(&client, &receiver).await, 200);

    proxy.cut();
    let publisher = receiver.publisher.clone();
    assert!(
        eventually(Duration::from_secs(5), || !publisher.is_ready()).await,
        "outage noticed"
    );
    let during = post(&client, &url, FORM, &[], notify()).await;
    assert_eq!(
        (during.status, during.body.as_str()),
        (503, "fail"),
        "never success while cut"
    );
    assert_eq!(readyz(&client, &receiver).await, 503);

    proxy.restore();
    assert!(
        eventually(Duration::from_secs(10), || publisher.is_ready()).await,
        "reconnected"
    );
    assert_eq!(
        post(&client, &url, FORM, &[], notify()).await.body,
        "success"
    );
    assert_eq!(readyz(&client, &receiver).await, 200);

    assert_eq!(
        broker.drain(&receiver.names.work).await.len(),
        2,
        "the two acked, not the refused"
    );
    assert!(receiver.metric("payhook_broker_connects_total") >= 2.0);
}

#[tokio::test]
async fn unroutable_publish_is_a_failure_not_an_ack() {
    let providers = Providers::new();
    let mut settings = test_settings();
    providers.register(&mut settings);
    let receiver = TestReceiver::spawn(settings, Arc::new(SystemClock)).await;
    let broker = TestBroker::connect().await;
    broker.delete_queue(&receiver.names.work).await;

    let client = reqwest::Client::new();
    let body = providers.alipay.payment(&unique("o"), 100, &unique("n"));
    let answer = post(&client, &receiver.url("/notify/alipay/m1"), FORM, &[], body).await;
    assert_eq!((answer.status, answer.body.as_str()), (503, "fail"));
    assert_eq!(
        receiver
            .metric("payhook_notifications_total{provider=\"alipay\",outcome=\"publish_failed\"}"),
        1.0
    );
}

#[tokio::test]
async fn allowlist_uses_forwarded_for_only_from_trusted_proxies() {
    let providers = Providers::new();
    let mut settings = test_settings();
    providers.register(&mut settings);
    settings.receiver.allowlist.alipay = vec!["10.1.0.0/16".parse().expect("cidr")];
    settings.receiver.trusted_proxies = vec!["127.0.0.1/32".parse().expect("cidr")];
    let receiver = TestReceiver::spawn(settings, Arc::new(SystemClock)).await;
    let client = reqwest::Client::new();
    let url = receiver.url("/notify/alipay/m1");
    let xff = |ip: &str| vec![("X-Forwarded-For".to_owned(), ip.to_owned())];
    let notify = || providers.alipay.payment(&unique("o"), 100, &unique("n"));

    // Via the trusted proxy (127.0.0.1) on behalf of an allowed address.
    assert_eq!(
        post(&client, &url, FORM, &xff("10.1.2.3"), notify())
            .await
            .body,
        "success"
    );
    // On behalf of an address outside the list.
    let refused = post(&client, &url, FORM, &xff("192.0.2.7"), notify()).await;
    assert_eq!((refused.status, refused.body.as_str()), (403, "fail"));
    // A spoofed left-most hop does not help: the right-most untrusted hop counts.
    let spoofed = post(&client, &url, FORM, &xff("10.1.2.3, 192.0.2.7"), notify()).await;
    assert_eq!(spoofed.status, 403);
    // Other providers have no list.
    let v3_body = providers
        .wechat_v3
        .transaction(&unique("id"), &unique("o"), 1, "SUCCESS");
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut headers = providers.wechat_v3.headers(ts, &v3_body);
    headers.extend(xff("192.0.2.7"));
    let v3 = post(
        &client,
        &receiver.url("/notify/wechat/v3/m1"),
        "application/json",
        &headers,
        v3_body,
    )
    .await;
    assert_eq!(v3.status, 204);
}

#[tokio::test]
async fn allowlist_ignores_forwarded_for_from_untrusted_peers() {
    let providers = Providers::new();
    let mut settings = test_settings();
    providers.register(&mut settings);
    settings.receiver.allowlist.alipay = vec!["10.1.0.0/16".parse().expect("cidr")];
    let receiver = TestReceiver::spawn(settings, Arc::new(SystemClock)).await;
    let client = reqwest::Client::new();
    let headers = vec![("X-Forwarded-For".to_owned(), "10.1.2.3".to_owned())];
    let body = providers.alipay.payment(&unique("o"), 100, &unique("n"));
    let answer = post(
        &client,
        &receiver.url("/notify/alipay/m1"),
        FORM,
        &headers,
        body,
    )
    .await;
    assert_eq!(answer.status, 403);
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_excess_load_is_shed_with_the_failure_answer() {
    let providers = Providers::new();
    let mut settings = test_settings();
    providers.register(&mut settings);
    settings.receiver.max_in_flight = 1;
    settings.receiver.request_timeout_ms = 800;
    let receiver = TestReceiver::spawn(settings, Arc::new(SystemClock)).await;
    let client = reqwest::Client::new();
    let url = receiver.url("/notify/alipay/m1");

    // A slowloris: headers promise 1000 bytes, 10 arrive.
    let addr = receiver.base_url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /notify/alipay/m1 HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {FORM}\r\nContent-Length: 1000\r\n\r\nnotify_id="
    );
    slow.write_all(head.as_bytes()).await.expect("write head");
    let metrics = receiver.metrics.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            payhook_testkit::harness::metric_value(&metrics.render(), "payhook_receiver_in_flight")
                == 1.0
        })
        .await,
        "the slow request holds the only slot"
    );

    let shed = post(
        &client,
        &url,
        FORM,
        &[],
        providers.alipay.payment(&unique("o"), 1, &unique("n")),
    )
    .await;
    assert_eq!(
        (shed.status, shed.body.as_str()),
        (503, "fail"),
        "shed at once, not queued"
    );

    // The slow client is cut off after request_timeout_ms and frees its slot.
    assert!(
        eventually(Duration::from_secs(5), || {
            payhook_testkit::harness::metric_value(&metrics.render(), "payhook_receiver_in_flight")
                == 0.0
        })
        .await,
        "slow request timed out"
    );
    let ok = post(
        &client,
        &url,
        FORM,
        &[],
        providers.alipay.payment(&unique("o"), 1, &unique("n")),
    )
    .await;
    assert_eq!(ok.body, "success");
    assert_eq!(
        receiver.metric("payhook_notifications_total{provider=\"alipay\",outcome=\"shed\"}"),
        1.0
    );
    assert_eq!(
        receiver
            .metric("payhook_notifications_total{provider=\"alipay\",outcome=\"body_timeout\"}"),
        1.0
    );
}

#[tokio::test]
async fn serves_https_directly_when_tls_is_configured() {
    let providers = Providers::new();
    let mut settings = test_settings();
    providers.register(&mut settings);
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("test certificate");
    let cert_pem = generated.cert.pem();
    settings.receiver.tls = Some(TlsSettings {
        cert: Material::Inline(cert_pem.clone()),
        key: Secret::inline(generated.signing_key.serialize_pem()),
    });
    let receiver = TestReceiver::spawn(settings, Arc::new(SystemClock)).await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem"))
        .build()
        .expect("tls client");
    let port = receiver.base_url.rsplit(':').next().expect("port");
    let url = format!("https://localhost:{port}/notify/alipay/m1");
    let body = providers.alipay.payment(&unique("o"), 100, &unique("n"));
    let answer = post(&client, &url, FORM, &[], body).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "success"));
}

#[tokio::test]
async fn graceful_shutdown_closes_the_broker_link() {
    let providers = Providers::new();
    let mut settings = test_settings();
    providers.register(&mut settings);
    let receiver = TestReceiver::spawn(settings, Arc::new(SystemClock)).await;
    let publisher = receiver.publisher.clone();
    assert!(publisher.is_ready());
    let stopped = tokio::time::timeout(Duration::from_secs(15), receiver.stop()).await;
    assert!(stopped.is_ok(), "stops within the drain bound");
    assert!(!publisher.is_ready(), "broker link closed on shutdown");
}
