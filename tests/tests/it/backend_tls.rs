//! TLS to the backends against real servers with TLS on, started privately on free
//! ports with certificates generated at test time (`payhook_testkit::pki`): a RabbitMQ
//! node with an AMQPS listener, a PostgreSQL cluster that accepts `hostssl` only, a
//! Redis on `--tls-port` only — each requiring a client certificate. The shared
//! servers are not touched.
//!
//! Each test checks the working configuration and every refusal a mistake causes: an
//! unknown CA, a host name the certificate does not give, a missing or foreign client
//! certificate, a plain port behind a TLS URL. Each refusal names the setting to fix.

use payhook_testkit::harness::unique;
use std::sync::Arc;
use std::time::Duration;

use payhook_chaos::services::{PrivatePostgres, PrivateRabbit, PrivateRedis};
use payhook_shared::amqp::{ConnectError, Connector};
use payhook_shared::clock::SystemClock;
use payhook_shared::config::{BackendTls, Material, PostgresSettings, Secret, SslMode};
use payhook_shared::topology::Names;
use payhook_testkit::harness::{
    EventsTap, Providers, TestBroker, TestReceiver, post, test_settings,
};
use payhook_testkit::pki::{Pair, TestPki};
use payhook_testkit::worker::{TestWorker, worker_settings};
use payhook_worker::db;
use payhook_worker::dedup::{self, Claim, Dedup};
use secrecy::SecretString;

const WAIT: Duration = Duration::from_secs(30);
/// Connection attempts allowed for a refusal of the client certificate to arrive as
/// the server's alert rather than as a reset.
const ATTEMPTS: usize = 20;

fn tls(ca: Option<&str>, client: Option<&Pair>) -> BackendTls {
    BackendTls {
        ca: ca.map(|pem| Material::Inline(pem.to_owned())),
        cert: client.map(|pair| Material::Inline(pair.cert_pem.clone())),
        key: client.map(|pair| Secret::inline(pair.key_pem.clone())),
    }
}

// ---------------------------------------------------------------------------------
// PostgreSQL

fn postgres_settings(port: u16, host: &str, mode: SslMode, tls: BackendTls) -> PostgresSettings {
    PostgresSettings {
        url: Secret::inline(format!("postgres://postgres@{host}:{port}/postgres")),
        sslmode: Some(mode),
        tls,
        schema: format!("tls_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        max_connections: 2,
        acquire_timeout_ms: 5_000,
    }
}

/// The configuration mistake a failed connection is explained as, if any, and the
/// error's full text.
async fn postgres_refusal(settings: &PostgresSettings) -> (Option<String>, String) {
    let error = db::connect(settings)
        .await
        .map(drop)
        .expect_err("the connection is refused");
    (db::explain_tls(&error).map(|e| e.field), error.to_string())
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_and_presents_the_client_certificate() {
    let pki = TestPki::generate();
    let pg = PrivatePostgres::start_tls(&pki, true).expect("private PostgreSQL with TLS");
    let port = pg.port;
    let good = tls(Some(&pki.ca_pem), Some(&pki.client));

    // verify-full with the CA and a client certificate: connected, migrated, over TLS,
    // with the client certificate the server saw.
    let settings = postgres_settings(port, "localhost", SslMode::VerifyFull, good.clone());
    let pool = db::connect(&settings).await.expect("verify-full connects");
    let (ssl, client_dn): (bool, Option<String>) =
        sqlx::query_as("SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("pg_stat_ssl");
    assert!(ssl, "the session is encrypted");
    assert!(
        client_dn.is_some_and(|dn| dn.contains("postgres")),
        "the server saw the client certificate"
    );
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(&settings.schema)
    .fetch_one(&pool)
    .await
    .expect("tables");
    assert!(tables > 0, "the migrations ran over TLS");
    pool.close().await;

    // verify-ca: the certificate must chain to the CA.
    let settings = postgres_settings(port, "localhost", SslMode::VerifyCa, good.clone());
    db::connect(&settings)
        .await
        .expect("verify-ca connects")
        .close()
        .await;
    let settings = postgres_settings(
        port,
        "localhost",
        SslMode::VerifyCa,
        tls(Some(&pki.other_ca_pem), Some(&pki.client)),
    );
    assert_eq!(
        postgres_refusal(&settings).await.0.as_deref(),
        Some("postgres.tls.ca")
    );

    // The URL's sslmode applies when postgres.sslmode is unset.
    let mut settings = postgres_settings(port, "localhost", SslMode::VerifyFull, good.clone());
    settings.sslmode = None;
    settings.url = Secret::inline(format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full"
    ));
    db::connect(&settings)
        .await
        .expect("sslmode from the URL")
        .close()
        .await;

    // Refusals, each naming its setting.
    let cases = [
        (
            postgres_settings(
                port,
                "localhost",
                SslMode::VerifyFull,
                tls(None, Some(&pki.client)),
            ),
            "postgres.tls.ca",
            "no CA: the test CA is not among the system's roots",
        ),
        (
            postgres_settings(
                port,
                "localhost",
                SslMode::VerifyFull,
                tls(Some(&pki.other_ca_pem), Some(&pki.client)),
            ),
            "postgres.tls.ca",
            "the wrong CA",
        ),
        (
            postgres_settings(port, "127.0.0.1", SslMode::VerifyFull, good.clone()),
            "postgres.url",
            "a host the certificate does not name",
        ),
        (
            postgres_settings(
                port,
                "localhost",
                SslMode::VerifyFull,
                tls(Some(&pki.ca_pem), Some(&pki.foreign_client)),
            ),
            "postgres.tls.cert",
            "a client certificate of another CA",
        ),
    ];
    for (settings, field, what) in cases {
        // See the broker's test: a refused client certificate may arrive as a reset.
        let mut refusal = postgres_refusal(&settings).await;
        for _ in 1..ATTEMPTS {
            if refusal.0.is_some() || !field.ends_with(".cert") {
                break;
            }
            refusal = postgres_refusal(&settings).await;
        }
        let (explained, text) = refusal;
        assert_eq!(explained.as_deref(), Some(field), "{what}: {text}");
    }

    // No client certificate: the server's own refusal says what it wants.
    let settings = postgres_settings(
        port,
        "localhost",
        SslMode::VerifyFull,
        tls(Some(&pki.ca_pem), None),
    );
    let (_, text) = postgres_refusal(&settings).await;
    assert!(text.contains("certificate"), "{text}");

    // Plain text is refused by a server that accepts TLS only.
    let settings = postgres_settings(port, "localhost", SslMode::Disable, BackendTls::default());
    let (explained, text) = postgres_refusal(&settings).await;
    assert!(explained.is_none(), "not a TLS failure: {text}");
    assert!(text.contains("no encryption"), "{text}");

    // Certificates with sslmode disable: a configuration error, before connecting.
    let settings = postgres_settings(port, "localhost", SslMode::Disable, good);
    let error = db::connect_lazy(&settings).expect_err("refused");
    assert!(error.to_string().contains("postgres.tls"), "{error}");
}

// ---------------------------------------------------------------------------------
// Redis

fn redis_settings(url: String, tls: BackendTls) -> payhook_shared::config::RedisSettings {
    payhook_shared::config::RedisSettings {
        url: Secret::inline(url),
        tls,
        prefix: unique("t"),
        timeout_ms: 2_000,
    }
}

#[tokio::test]
async fn redis_over_tls_verifies_the_server_and_presents_the_client_certificate() {
    let pki = TestPki::generate();
    let redis = PrivateRedis::start_tls(&pki, true).expect("private Redis with TLS");
    let url = redis.url();
    assert!(url.starts_with("rediss://localhost:"), "{url}");
    let good = tls(Some(&pki.ca_pem), Some(&pki.client));

    let settings = redis_settings(url.clone(), good.clone());
    let client = dedup::client(&settings).expect("client builds");
    assert!(
        dedup::tls_mistake(&client, Duration::from_secs(2))
            .await
            .is_none(),
        "no mistake to report"
    );
    let dedup = Dedup::start(
        Ok(client),
        &settings.prefix,
        Duration::from_secs(30),
        Duration::from_secs(3600),
        Duration::from_secs(2),
    )
    .await;
    assert!(!dedup.is_degraded(), "dedup works over TLS");
    let event = unique("evt");
    let Claim::Acquired(token) = dedup.claim(&event).await else {
        panic!("a fresh event is claimed over TLS");
    };
    dedup.mark_done(token).await;
    assert!(matches!(dedup.claim(&event).await, Claim::AlreadyDone));

    let port = url.rsplit(':').next().expect("port").to_owned();
    let cases = [
        (
            url.clone(),
            tls(None, Some(&pki.client)),
            "redis.tls.ca",
            "no CA",
        ),
        (
            url.clone(),
            tls(Some(&pki.other_ca_pem), Some(&pki.client)),
            "redis.tls.ca",
            "the wrong CA",
        ),
        (
            format!("rediss://127.0.0.1:{port}"),
            good.clone(),
            "redis.url",
            "a host the certificate does not name",
        ),
        (
            url.clone(),
            tls(Some(&pki.ca_pem), None),
            "redis.tls.cert",
            "no client certificate",
        ),
        (
            url.clone(),
            tls(Some(&pki.ca_pem), Some(&pki.foreign_client)),
            "redis.tls.cert",
            "a client certificate of another CA",
        ),
    ];
    for (url, tls, field, what) in cases {
        let client = dedup::client(&redis_settings(url, tls)).expect("client builds");
        // See the broker's test: a refused client certificate may arrive as a reset.
        let mut mistake = None;
        for _ in 0..ATTEMPTS {
            mistake = dedup::tls_mistake(&client, Duration::from_secs(2)).await;
            if mistake.is_some() || !field.ends_with(".cert") {
                break;
            }
        }
        assert_eq!(mistake.map(|m| m.field).as_deref(), Some(field), "{what}");
    }

    // Certificates on a plain URL, and an unparsable URL: refused before connecting,
    // without echoing the URL.
    let error = dedup::client(&redis_settings(format!("redis://localhost:{port}"), good))
        .expect_err("refused");
    assert_eq!(error.field, "redis.tls");
    let error = dedup::client(&redis_settings(
        "redis://:hunter2@localhost:notaport".into(),
        BackendTls::default(),
    ))
    .expect_err("refused");
    assert_eq!(error.field, "redis.url");
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

// ---------------------------------------------------------------------------------
// RabbitMQ, and the whole pipeline over TLS

fn connector(url: &str, tls: &BackendTls) -> Connector {
    Connector::new(SecretString::from(url.to_owned()), tls).expect("connector")
}

async fn amqp_refusal(url: &str, tls: &BackendTls) -> ConnectError {
    connector(url, tls)
        .connect("payhook-test")
        .await
        .map(drop)
        .expect_err("the connection is refused")
}

#[tokio::test]
async fn the_pipeline_runs_over_tls_to_rabbitmq_postgres_and_redis() {
    let pki = TestPki::generate();
    let rabbit = PrivateRabbit::start_tls(&pki, true).expect("private RabbitMQ with TLS");
    let pg = PrivatePostgres::start_tls(&pki, true).expect("private PostgreSQL with TLS");
    let redis = PrivateRedis::start_tls(&pki, true).expect("private Redis with TLS");
    let amqps = rabbit.amqps_url().expect("TLS listener");
    let tls_port = rabbit.tls_port.expect("TLS port");
    let good = tls(Some(&pki.ca_pem), Some(&pki.client));

    // Broker refusals, each naming its setting.
    let cases = [
        (
            amqps.clone(),
            tls(None, Some(&pki.client)),
            "amqp.tls.ca",
            "no CA",
        ),
        (
            amqps.clone(),
            tls(Some(&pki.other_ca_pem), Some(&pki.client)),
            "amqp.tls.ca",
            "the wrong CA",
        ),
        (
            format!("amqps://guest:guest@127.0.0.1:{tls_port}/%2f"),
            good.clone(),
            "amqp.url",
            "a host the certificate does not name",
        ),
        (
            amqps.clone(),
            tls(Some(&pki.ca_pem), None),
            "amqp.tls.cert",
            "no client certificate",
        ),
        (
            amqps.clone(),
            tls(Some(&pki.ca_pem), Some(&pki.foreign_client)),
            "amqp.tls.cert",
            "a client certificate of another CA",
        ),
        (
            format!("amqps://guest:guest@localhost:{}/%2f", rabbit.port),
            good.clone(),
            "amqp.url",
            "amqps:// to the plain AMQP port",
        ),
    ];
    for (url, tls, field, what) in cases {
        // A refused client certificate can reach the client as a reset instead of the
        // server's alert (TLS 1.3: the server checks it after the client's handshake
        // ended, and may close before the alert is read): a few attempts.
        let mut explained = None;
        for _ in 0..ATTEMPTS {
            match amqp_refusal(&url, &tls).await {
                ConnectError::Misconfigured(error) => {
                    explained = Some(error.field);
                    break;
                }
                ConnectError::Failed(error) if field.ends_with(".cert") => {
                    assert!(error.is_io_error(), "{what}: {error}");
                }
                other => panic!("{what}: not explained as a mistake: {other}"),
            }
        }
        assert_eq!(explained.as_deref(), Some(field), "{what}");
    }

    // The settings of a receiver and a worker that use TLS everywhere.
    let providers = Providers::new();
    let mut receiver_settings = test_settings();
    providers.register(&mut receiver_settings);
    receiver_settings.amqp.url = Secret::inline(amqps.clone());
    receiver_settings.amqp.tls = good.clone();
    let mut settings = worker_settings(
        &receiver_settings,
        postgres_settings(pg.port, "localhost", SslMode::VerifyFull, good.clone()),
    );
    settings.redis.url = Secret::inline(redis.url());
    settings.redis.tls = good.clone();

    // A receiver whose broker CA is wrong stops at start, naming the setting.
    let mut wrong = receiver_settings.clone();
    wrong.amqp.tls = tls(Some(&pki.other_ca_pem), Some(&pki.client));
    let app = payhook_receiver::Application::build(&wrong, Arc::new(SystemClock))
        .expect("builds: the broker is reached later");
    let stopped = tokio::time::timeout(
        WAIT,
        app.run_until_stopped(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("the receiver stops by itself");
    let error = stopped.expect_err("with an error");
    assert!(error.to_string().contains("amqp.tls.ca"), "{error}");

    // A worker whose PostgreSQL or Redis CA is wrong does not start.
    for (section, mistake) in ["postgres", "redis", "amqp"].into_iter().zip([
        {
            let mut s = settings.clone();
            s.postgres.tls = tls(Some(&pki.other_ca_pem), Some(&pki.client));
            s
        },
        {
            let mut s = settings.clone();
            s.redis.tls = tls(Some(&pki.other_ca_pem), Some(&pki.client));
            s
        },
        {
            let mut s = settings.clone();
            s.amqp.tls = tls(Some(&pki.other_ca_pem), Some(&pki.client));
            s
        },
    ]) {
        let error = match payhook_worker::Worker::build(&mistake).await {
            Err(error) => error.to_string(),
            Ok(worker) => tokio::time::timeout(
                WAIT,
                worker.run_until_stopped(tokio_util::sync::CancellationToken::new()),
            )
            .await
            .expect("the worker stops by itself")
            .expect_err("with an error")
            .to_string(),
        };
        assert!(
            error.contains(&format!("{section}.tls.ca")),
            "{section}: {error}"
        );
    }

    // Everything right: a notification goes receiver → RabbitMQ → worker → PostgreSQL
    // and Redis → events, every hop over TLS.
    let receiver = TestReceiver::spawn(receiver_settings.clone(), Arc::new(SystemClock)).await;
    let worker = TestWorker::spawn(&settings).await;
    assert!(
        !worker.shared.dedup.is_degraded(),
        "dedup reaches Redis over TLS"
    );
    let names = Names::new(&receiver_settings.amqp.prefix);
    let tap_connection = connector(&amqps, &good)
        .connect("payhook-test-tap")
        .await
        .expect("tap connects over TLS");
    let tap = EventsTap::bind_on(TestBroker::on(tap_connection).await, &names).await;

    let order = unique("o");
    let answer = post(
        &reqwest::Client::new(),
        &receiver.url("/notify/alipay/m1"),
        "application/x-www-form-urlencoded",
        &[],
        providers.alipay.payment(&order, 100, &unique("n")),
    )
    .await;
    assert_eq!(answer.body, "success", "acked after the confirm over TLS");

    let events = tap.wait_for(1, WAIT).await;
    assert_eq!(
        events.len(),
        1,
        "the payment's event reached the events exchange"
    );
    assert_eq!(events[0].routing_key, "payment.succeeded.alipay");
    assert_eq!(events[0].cloud_event["subject"], order.as_str());
    let state: String = sqlx::query_scalar("SELECT state FROM payments WHERE out_trade_no = $1")
        .bind(&order)
        .fetch_one(&worker.shared.pool)
        .await
        .expect("payment row");
    assert_eq!(state, "PAID");
    assert!(!worker.shared.dedup.is_degraded());

    worker.stop().await;
    receiver.stop().await;
    tap.close().await;
}
