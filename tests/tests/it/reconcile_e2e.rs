//! Reconciliation end to end: the simulator plays Alipay and WeChat Pay V3 (notifying
//! and answering queries), against a real receiver, RabbitMQ, worker (with its
//! reconciler), Redis and PostgreSQL. Dropped notifications are found by queries; the
//! database ends where the providers' truth is, with one transition and one downstream
//! event per business change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use payhook_shared::clock::SystemClock;
use payhook_shared::config::Settings;
use payhook_shared::event::Provider;
use payhook_sim::client::register_query_credentials;
use payhook_sim::{Faults, SimConfig, Simulator, api, result};
use payhook_testkit::db::TestDb;
use payhook_testkit::harness::{EventsTap, TestReceiver, eventually_async, test_settings};
use payhook_testkit::truth;
use payhook_testkit::worker::{TestWorker, worker_settings};
use payhook_worker::db::{self, NewOrder};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

/// A receiver, a simulator delivering to it, and a worker reconciling against it.
struct Stack {
    sim: Simulator,
    receiver: TestReceiver,
    worker: TestWorker,
    db: TestDb,
    events: EventsTap,
}

/// Worker settings that make the reconciler quick: first query 1 s after registration,
/// then every 1–2 s.
fn reconciling(settings: &Settings, db: &TestDb, sim: &Simulator) -> Settings {
    let mut w = worker_settings(settings, db.settings.clone());
    register_query_credentials(&mut w);
    let r = &mut w.reconcile;
    r.pending_after_secs = 1;
    r.interval_min_secs = 1;
    r.interval_max_secs = 2;
    r.sweep_interval_ms = 200;
    r.batch = 100;
    r.timeout_ms = 2000;
    r.backoff_ms = 50;
    r.alipay_gateway = format!("{}/gateway.do", sim.base_url());
    r.wechat_base = sim.base_url();
    w
}

async fn stack(config: SimConfig) -> Stack {
    stack_with(config, |_| {}).await
}

async fn stack_with(mut config: SimConfig, worker: impl FnOnce(&mut Settings)) -> Stack {
    let mut settings = test_settings();
    config.providers.register(&mut settings);
    let receiver = TestReceiver::spawn(settings.clone(), Arc::new(SystemClock)).await;
    config.notify_base = Some(receiver.base_url.clone());
    let sim = Simulator::start(config).await.expect("simulator starts");
    let db = TestDb::new().await;
    let events = EventsTap::bind(&receiver.names).await;
    let mut worker_settings = reconciling(&settings, &db, &sim);
    worker(&mut worker_settings);
    let worker = TestWorker::spawn(&worker_settings).await;
    Stack {
        sim,
        receiver,
        worker,
        db,
        events,
    }
}

fn new_order(provider: Provider, no: &str, amount: i64, expires_in: Option<Duration>) -> NewOrder {
    let expires_at = expires_in.map(|d| {
        (time::OffsetDateTime::now_utc() + d)
            .format(&time::format_description::well_known::Rfc3339)
            .expect("formats")
    });
    serde_json::from_value(serde_json::json!({
        "provider": provider.as_str(), "merchant": "m1", "out_trade_no": no,
        "amount": amount, "expires_at": expires_at,
    }))
    .expect("order literal")
}

/// (provider, out_trade_no) → (state, refunded fen) in payhook's database.
async fn payhook_states(db: &TestDb) -> truth::States {
    truth::payhook_states(&db.pool).await.expect("payments")
}

#[tokio::test]
async fn two_hundred_orders_with_drops_duplicates_and_reordering_reach_the_truth_once() {
    // Payments, closes and refunds alike: any notification may be lost.
    let started = Instant::now();
    let config = SimConfig {
        time_scale: 0.0005,
        seed: 42,
        ..SimConfig::default()
    };
    let s = stack(config).await;
    let mut rng = StdRng::seed_from_u64(42);
    let mut dropped = 0;
    // Every notification's own faults: 20 % dropped, 10 % duplicated, and (payments)
    // 10 % held back until after the order's refund.
    let mut faults = |rng: &mut StdRng| {
        let drop = rng.random_bool(0.2);
        dropped += usize::from(drop);
        Faults {
            drop,
            duplicate: rng.random_bool(0.1),
            reorder: rng.random_bool(0.1),
            ..Faults::default()
        }
    };
    for i in 0..200 {
        let provider = if i % 2 == 0 {
            Provider::Alipay
        } else {
            Provider::WechatV3
        };
        let no = format!("e2e-{i}");
        let total = 1000 + i64::from(i) * 7;
        s.sim.create_order(provider, &no, total).expect("creates");
        db::register(&s.db.pool, &new_order(provider, &no, total, None))
            .await
            .expect("registers");
        s.sim
            .set_order_faults(provider, &no, faults(&mut rng))
            .expect("order exists");
        if rng.random_bool(0.1) {
            s.sim.close(provider, &no).expect("closes");
            continue;
        }
        s.sim.pay(provider, &no).expect("pays");
        let refunds: &[(&str, i64)] = match rng.random_range(0..4) {
            0 => &[("r1", total / 4)],
            1 => &[("r1", total / 4), ("r2", total - total / 4)],
            _ => &[],
        };
        for (suffix, amount) in refunds {
            // The merchant registers the refund it asks the provider for.
            let out_refund_no = format!("{no}-{suffix}");
            let refund: db::NewRefund = serde_json::from_value(serde_json::json!({
                "provider": provider.as_str(), "merchant": "m1", "out_trade_no": no,
                "out_refund_no": out_refund_no, "amount": amount,
            }))
            .expect("refund literal");
            db::register_refund(&s.db.pool, &refund)
                .await
                .expect("registers the refund");
            s.sim
                .set_order_faults(provider, &no, faults(&mut rng))
                .expect("order exists");
            s.sim
                .refund(provider, &no, &out_refund_no, *amount)
                .expect("refunds");
        }
    }
    assert!(dropped >= 20, "the run drops notifications: {dropped}");
    assert!(
        s.sim.settle(Duration::from_secs(60)).await,
        "{:?}",
        s.sim.summary()
    );

    let expected = truth::truth_states(&s.sim);
    assert_eq!(expected.len(), 200);
    let converged = eventually_async(Duration::from_secs(60), || async {
        payhook_states(&s.db).await == expected
    })
    .await;
    let actual = payhook_states(&s.db).await;
    let differing = truth::differing(&expected, &actual);
    assert!(
        converged,
        "orders differing from the truth (key, truth, payhook): {differing:?}"
    );

    // One transition per business change, one event per transition, none twice.
    let dup_events = truth::transitions_with_several_events(&s.db.pool)
        .await
        .expect("counts");
    assert_eq!(dup_events, 0);
    let paid_orders = expected
        .values()
        .filter(|(state, _)| state != "PENDING" && state != "CLOSED")
        .count();
    let succeeded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE routing_key LIKE 'payment.succeeded.%'",
    )
    .fetch_one(&s.db.pool)
    .await
    .expect("counts");
    assert_eq!(
        succeeded as usize, paid_orders,
        "one payment.succeeded per paid order"
    );
    let transitions: i64 = sqlx::query_scalar("SELECT count(*) FROM transitions")
        .fetch_one(&s.db.pool)
        .await
        .expect("counts");
    let events = s
        .events
        .wait_for(transitions as usize, Duration::from_secs(20))
        .await;
    assert_eq!(
        events.len() as i64,
        transitions,
        "every transition's event arrived"
    );
    let mut ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e.cloud_event["id"].as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "no CloudEvent twice");
    let reconciled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM transitions WHERE source = 'reconcile'")
            .fetch_one(&s.db.pool)
            .await
            .expect("counts");
    assert!(
        reconciled > 0,
        "dropped notifications were found by queries"
    );

    let stats = s.sim.query_stats();
    let queries: u64 = stats.served.values().sum();
    println!(
        "200-order scenario: {:.1} s, {dropped} notifications dropped, \
         {reconciled} transitions applied from queries, {queries} queries {:?}",
        started.elapsed().as_secs_f64(),
        stats.served
    );
    s.worker.stop().await;
    s.receiver.stop().await;
}

#[tokio::test]
async fn unopened_order_is_not_created_until_it_expires_then_closed_and_unpaid_close_is_found() {
    let s = stack(SimConfig::default()).await;
    // Never opened at the provider: `ACQ.TRADE_NOT_EXIST` / `ORDER_NOT_EXIST`.
    for provider in [Provider::Alipay, Provider::WechatV3] {
        let no = format!("unopened-{}", provider.as_str());
        db::register(
            &s.db.pool,
            &new_order(provider, &no, 500, Some(Duration::from_secs(4))),
        )
        .await
        .expect("registers");
    }
    // Opened, never paid, closed by the provider; Alipay's close notification dropped
    // (WeChat does not notify closes at all).
    for provider in [Provider::Alipay, Provider::WechatV3] {
        let no = format!("closed-{}", provider.as_str());
        s.sim.create_order(provider, &no, 700).expect("creates");
        db::register(&s.db.pool, &new_order(provider, &no, 700, None))
            .await
            .expect("registers");
        s.sim
            .set_order_faults(provider, &no, Faults::dropped())
            .expect("order exists");
        s.sim.close(provider, &no).expect("closes");
    }
    let state = |no: &'static str| {
        let pool = s.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT state FROM payments WHERE out_trade_no = $1")
                .bind(no)
                .fetch_one(&pool)
                .await
                .expect("payment")
        }
    };
    // Not created yet is not a close: still pending after the first answers.
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            s.sim
                .queries_served(api::ALIPAY_TRADE_QUERY, result::NOT_FOUND)
                >= 1
                && s.sim
                    .queries_served(api::WECHAT_V3_TRANSACTION, result::NOT_FOUND)
                    >= 1
        })
        .await,
        "{:?}",
        s.sim.query_stats()
    );
    assert_eq!(state("unopened-alipay").await, "PENDING");
    assert_eq!(state("unopened-wechat_v3").await, "PENDING");
    for no in [
        "closed-alipay",
        "closed-wechat_v3",
        "unopened-alipay",
        "unopened-wechat_v3",
    ] {
        assert!(
            eventually_async(Duration::from_secs(20), || async {
                state(no).await == "CLOSED"
            })
            .await,
            "{no} is {}",
            state(no).await
        );
    }
    let closed = s.events.wait_for(4, Duration::from_secs(10)).await;
    let mut keys: Vec<&str> = closed.iter().map(|e| e.routing_key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "payment.closed.alipay",
            "payment.closed.alipay",
            "payment.closed.wechat_v3",
            "payment.closed.wechat_v3"
        ]
    );
    s.worker.stop().await;
    s.receiver.stop().await;
}

#[tokio::test]
async fn query_answers_with_a_bad_signature_are_counted_and_never_applied() {
    let s = stack(SimConfig::default()).await;
    for provider in [Provider::Alipay, Provider::WechatV3] {
        let no = format!("forged-{}", provider.as_str());
        s.sim.create_order(provider, &no, 900).expect("creates");
        db::register(&s.db.pool, &new_order(provider, &no, 900, None))
            .await
            .expect("registers");
        s.sim
            .set_order_faults(provider, &no, Faults::dropped())
            .expect("order exists");
    }
    // Paid at the provider, notification lost; the first 6 answers are forged.
    s.sim.corrupt_next_query_responses(6);
    s.sim.pay(Provider::Alipay, "forged-alipay").expect("pays");
    s.sim
        .pay(Provider::WechatV3, "forged-wechat_v3")
        .expect("pays");
    let metric = |provider: &str| {
        let text = s.worker.shared.metrics.render();
        payhook_testkit::harness::metric_value(
            &text,
            &format!(
                "payhook_reconcile_queries_total{{provider=\"{provider}\",result=\"bad_signature\"}}"
            ),
        )
    };
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            metric("alipay") >= 1.0 && metric("wechat_v3") >= 1.0
        })
        .await,
        "bad answers counted: alipay {} wechat_v3 {}",
        metric("alipay"),
        metric("wechat_v3")
    );
    // Once the provider answers honestly again, the payment is applied, once.
    assert!(
        eventually_async(Duration::from_secs(30), || async {
            payhook_states(&s.db)
                .await
                .values()
                .all(|(state, _)| state == "PAID")
        })
        .await,
        "{:?}",
        payhook_states(&s.db).await
    );
    let reconciled: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, source FROM transitions ORDER BY event_id")
            .fetch_all(&s.db.pool)
            .await
            .expect("transitions");
    assert_eq!(
        reconciled,
        [
            (
                "alipay:m1:reconcile:PAID:forged-alipay".into(),
                "reconcile".into()
            ),
            (
                "wechat_v3:m1:reconcile:PAID:forged-wechat_v3".into(),
                "reconcile".into()
            ),
        ]
    );
    assert!(s.sim.query_stats().bad_signatures_sent >= 2);
    s.worker.stop().await;
    s.receiver.stop().await;
}

/// A platform certificate rotation handed over by the worker: the worker holds the
/// merchant private key and refreshes `/v3/certificates` every second; two receivers
/// behind a load balancer hold no signing key and learn the new certificate from the
/// worker's stream. A third receiver started after the rotation knows the new
/// certificate before it reports ready, and serves notifications signed with it alone.
#[tokio::test]
async fn platform_certificate_rotation_reaches_receivers_without_keys_through_the_worker() {
    use payhook_testkit::harness::{Providers, without_signing_keys};
    use payhook_testkit::proxy::Proxy;

    // WeChat V3 in certificate mode: the receivers trust the configured certificate
    // and whatever the worker publishes.
    let mut config = SimConfig::new(Providers::with_v3_certificate());
    config.time_scale = 0.001;
    config.cert_overlap = Duration::from_secs(2_000); // 2 s real
    config.cert_retire_after = Duration::from_secs(600_000);
    // The worker must know the simulator's address before the simulator knows the
    // receivers': reserve the simulator's port first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    config.listen = format!("127.0.0.1:{port}").parse().expect("address");
    let mut settings = test_settings();
    config.providers.register(&mut settings);
    settings.reconcile.wechat_base = format!("http://127.0.0.1:{port}");
    settings.reconcile.certificates_refresh_secs = 1;
    // The receivers' configuration: no signing key at all.
    let receiving = without_signing_keys(settings.clone());
    assert!(
        receiving
            .wechat_v3
            .values()
            .all(|m| m.merchant_private_key.is_none())
            && receiving
                .alipay
                .values()
                .all(|a| a.app_private_key.is_none())
    );
    let db = TestDb::new().await;
    let mut working = worker_settings(&settings, db.settings.clone());
    register_query_credentials(&mut working);
    let worker = TestWorker::spawn(&working).await;
    let first = TestReceiver::spawn(receiving.clone(), Arc::new(SystemClock)).await;
    let second = TestReceiver::spawn(receiving.clone(), Arc::new(SystemClock)).await;
    let addr = |r: &TestReceiver| -> std::net::SocketAddr {
        r.base_url
            .trim_start_matches("http://")
            .parse()
            .expect("receiver address")
    };
    let balancer = Proxy::balance(vec![addr(&first), addr(&second)]).await;
    config.notify_base = Some(format!("http://{}", balancer.addr));
    let sim = Simulator::start(config).await.expect("simulator starts");
    let applied =
        |r: &TestReceiver| r.metric("payhook_receiver_certificate_sets_total{result=\"applied\"}");
    let refused =
        |r: &TestReceiver| r.metric("payhook_receiver_certificate_sets_total{result=\"refused\"}");
    // The worker's first download reaches both receivers.
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            applied(&first) >= 1.0 && applied(&second) >= 1.0
        })
        .await,
        "the worker's certificate set did not reach both receivers"
    );

    let pay = |phase: &str, n: usize| {
        for i in 0..n {
            let no = format!("rot-{phase}-{i}");
            sim.create_order(Provider::WechatV3, &no, 100)
                .expect("creates");
            sim.pay(Provider::WechatV3, &no).expect("pays");
        }
    };
    let old_serial = sim.wechat_signing_serial();
    pay("before", 10);
    let new_serial = sim.rotate_wechat_platform_cert().await;
    assert_ne!(new_serial, old_serial);
    pay("overlap", 10);
    assert!(
        eventually_async(Duration::from_secs(15), || async {
            sim.wechat_signing_serial() == new_serial
        })
        .await,
        "the simulator switches to the new certificate"
    );
    pay("after", 10);
    let verify_failures = |r: &TestReceiver| {
        r.metrics
            .render()
            .lines()
            .filter(|l| l.contains("verify_failures") && !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        sim.settle(Duration::from_secs(30)).await,
        "{:?}\nfirst: {}\nsecond: {}",
        sim.summary(),
        verify_failures(&first),
        verify_failures(&second)
    );

    // A receiver started now, after the rotation, has read the new certificate by the
    // time it is ready, and alone serves notifications signed only with it.
    let late = TestReceiver::spawn(receiving, Arc::new(SystemClock)).await;
    assert!(
        applied(&late) >= 1.0,
        "ready before reading the worker's certificate set"
    );
    let notifications_before = sim.summary().notifications;
    balancer.set_upstreams(vec![addr(&late)]);
    balancer.cut();
    balancer.restore();
    pay("late", 10);
    assert!(
        sim.settle(Duration::from_secs(30)).await,
        "{:?}\nlate: {}",
        sim.summary(),
        verify_failures(&late)
    );
    let summary = sim.summary();
    assert_eq!(summary.acked, summary.notifications, "{summary:?}");
    assert!(summary.notifications >= notifications_before + 10);
    assert!(
        late.metric("payhook_notifications_total{provider=\"wechat_v3\",outcome=\"acked\"}")
            >= 10.0,
        "the late receiver served the last notifications"
    );
    for r in [&first, &second, &late] {
        assert_eq!(refused(r), 0.0);
    }
    // What the late receiver exports: the merchant's notifications, and the expiry of
    // the certificates it got from the worker (the new one among them).
    let per_merchant =
        late.metric("payhook_merchant_notifications_total{provider=\"wechat_v3\",merchant=\"m1\"}");
    assert!(
        per_merchant >= 10.0,
        "{per_merchant}: {}",
        late.metrics
            .render()
            .lines()
            .filter(|l| l.contains("notifications_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let exposition = late.metrics.render();
    assert!(
        exposition.lines().any(|l| {
            l.starts_with("payhook_certificate_expiry_timestamp_seconds{")
                && l.contains("source=\"downloaded\"")
                // Serials compare as numbers: case and leading zeros aside.
                && l.to_uppercase().contains(&format!(
                    "SERIAL=\"{}\"",
                    new_serial.to_uppercase().trim_start_matches('0')
                ))
        }),
        "{exposition}"
    );
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            let states = payhook_states(&db).await;
            states.len() == 40 && states.values().all(|(state, _)| state == "PAID")
        })
        .await,
        "{:?}",
        payhook_states(&db).await
    );
    late.stop().await;
    second.stop().await;
    first.stop().await;
    worker.stop().await;
}

/// A receiver whose configuration holds a signing key it can read refuses to start,
/// naming the setting and not the key.
#[tokio::test]
async fn a_receiver_refuses_a_signing_key_it_could_read() {
    let mut settings = test_settings();
    payhook_testkit::harness::Providers::new().register(&mut settings);
    register_query_credentials(&mut settings);
    let error = payhook_receiver::Application::build(&settings, Arc::new(SystemClock))
        .expect_err("a receiver holding a signing key must not start");
    let message = format!("{error:#}");
    assert!(
        message.contains("alipay.m1.app_private_key")
            || message.contains("wechat_v3.m1.merchant_private_key"),
        "{message}"
    );
    assert!(!message.contains("PRIVATE KEY"), "{message}");
}

/// Two registered refunds of one order; the first one's notification is lost, the
/// second's arrives. The refund query finds the first; the order ends fully refunded
/// with one event per refund.
async fn registered_refund_with_a_lost_notification(provider: Provider) {
    let s = stack(SimConfig::default()).await;
    let p = provider.as_str();
    s.sim.create_order(provider, "rq-1", 1000).expect("creates");
    db::register(&s.db.pool, &new_order(provider, "rq-1", 1000, None))
        .await
        .expect("registers");
    s.sim.pay(provider, "rq-1").expect("pays");
    let refund = |no: &str, amount: i64| -> db::NewRefund {
        serde_json::from_value(serde_json::json!({
            "provider": p, "merchant": "m1", "out_trade_no": "rq-1",
            "out_refund_no": no, "amount": amount,
        }))
        .expect("refund literal")
    };
    // The merchant asks WeChat for two refunds and tells payhook; the first refund's
    // notification is lost, the second's arrives.
    for (no, amount) in [("rq-1-a", 300), ("rq-1-b", 700)] {
        assert_eq!(
            db::register_refund(&s.db.pool, &refund(no, amount))
                .await
                .expect("registers"),
            db::Registered::Created
        );
    }
    assert_eq!(
        db::register_refund(&s.db.pool, &refund("rq-1-a", 300))
            .await
            .expect("registers"),
        db::Registered::AlreadyRegistered
    );
    s.sim
        .set_order_faults(provider, "rq-1", Faults::dropped())
        .expect("order exists");
    s.sim
        .refund(provider, "rq-1", "rq-1-a", 300)
        .expect("refunds");
    s.sim.clear_order_faults(provider, "rq-1");
    s.sim
        .refund(provider, "rq-1", "rq-1-b", 700)
        .expect("refunds");

    assert!(
        eventually_async(Duration::from_secs(20), || async {
            payhook_states(&s.db).await.get(&(p.into(), "rq-1".into()))
                == Some(&("REFUNDED".into(), 1000))
                && sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM refunds WHERE status = 'REFUND_SUCCEEDED'",
                )
                .fetch_one(&s.db.pool)
                .await
                .expect("counts")
                    == 2
        })
        .await,
        "{:?} {:?}",
        payhook_states(&s.db).await,
        s.sim.query_stats()
    );
    let refunds: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT r.out_refund_no, r.status, t.source FROM refunds r \
         JOIN transitions t ON t.transition_key LIKE '%:refund:' || r.out_refund_no || ':%' \
         ORDER BY r.out_refund_no",
    )
    .fetch_all(&s.db.pool)
    .await
    .expect("refunds");
    assert_eq!(
        refunds,
        [
            (
                "rq-1-a".into(),
                "REFUND_SUCCEEDED".into(),
                "reconcile".into()
            ),
            ("rq-1-b".into(), "REFUND_SUCCEEDED".into(), "notify".into()),
        ]
    );
    let refund_api = match provider {
        Provider::Alipay => api::ALIPAY_REFUND_QUERY,
        _ => api::WECHAT_V3_REFUND,
    };
    assert!(s.sim.queries_served(refund_api, result::OK) >= 1);
    let refund_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE routing_key LIKE 'refund.succeeded.%'",
    )
    .fetch_one(&s.db.pool)
    .await
    .expect("counts");
    assert_eq!(refund_events, 2, "one event per refund");
    s.worker.stop().await;
    s.receiver.stop().await;
}

#[tokio::test]
async fn a_registered_wechat_refund_whose_notification_is_lost_is_found_by_a_refund_query() {
    registered_refund_with_a_lost_notification(Provider::WechatV3).await;
}

#[tokio::test]
async fn a_registered_alipay_refund_whose_notification_is_lost_is_found_without_double_counting() {
    registered_refund_with_a_lost_notification(Provider::Alipay).await;
}

#[tokio::test]
async fn wechat_v2_orders_are_reconciled_with_orderquery() {
    let s = stack(SimConfig::default()).await;
    let provider = Provider::WechatV2;
    // Paid, notification lost.
    s.sim
        .create_order(provider, "v2-paid", 1200)
        .expect("creates");
    db::register(&s.db.pool, &new_order(provider, "v2-paid", 1200, None))
        .await
        .expect("registers");
    s.sim
        .set_order_faults(provider, "v2-paid", Faults::dropped())
        .expect("order exists");
    s.sim.pay(provider, "v2-paid").expect("pays");
    // Never opened, expires.
    db::register(
        &s.db.pool,
        &new_order(provider, "v2-unopened", 500, Some(Duration::from_secs(2))),
    )
    .await
    .expect("registers");
    let expected: BTreeMap<(String, String), (String, i64)> = [
        (("wechat_v2".into(), "v2-paid".into()), ("PAID".into(), 0)),
        (
            ("wechat_v2".into(), "v2-unopened".into()),
            ("CLOSED".into(), 0),
        ),
    ]
    .into();
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            payhook_states(&s.db).await == expected
        })
        .await,
        "{:?} {:?}",
        payhook_states(&s.db).await,
        s.sim.query_stats()
    );
    assert!(s.sim.queries_served(api::WECHAT_V2_ORDERQUERY, result::OK) >= 1);
    assert!(
        s.sim
            .queries_served(api::WECHAT_V2_ORDERQUERY, result::NOT_FOUND)
            >= 1
    );
    assert_eq!(s.sim.rejected_request_signatures(), 0);
    s.worker.stop().await;
    s.receiver.stop().await;
}

#[tokio::test]
async fn strict_mode_holds_an_unregistered_payment_until_the_provider_confirms_it() {
    let s = stack_with(SimConfig::default(), |w| w.reconcile.strict = true).await;
    // Nobody registered this order; its notification arrives and verifies.
    s.sim
        .create_order(Provider::WechatV3, "strict-1", 2000)
        .expect("creates");
    s.sim.pay(Provider::WechatV3, "strict-1").expect("pays");
    let events = s.events.wait_for(2, Duration::from_secs(20)).await;
    let keys: Vec<&str> = events.iter().map(|e| e.routing_key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "payment.quarantined.wechat_v3",
            "payment.succeeded.wechat_v3"
        ],
        "quarantined first, paid once the query confirmed it"
    );
    let transitions: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, source FROM transitions ORDER BY id")
            .fetch_all(&s.db.pool)
            .await
            .expect("transitions");
    let expected: Vec<(String, String)> = vec![
        ("quarantine".into(), "notify".into()),
        ("payment".into(), "reconcile".into()),
    ];
    assert_eq!(transitions, expected);
    assert_eq!(
        payhook_states(&s.db)
            .await
            .get(&("wechat_v3".into(), "strict-1".into())),
        Some(&("PAID".into(), 0))
    );
    s.worker.stop().await;
    s.receiver.stop().await;
}

#[tokio::test]
async fn a_late_real_notification_after_the_query_is_a_duplicate_transition() {
    let s = stack(SimConfig::default()).await; // time scale 1: delays are real seconds
    for provider in [Provider::Alipay, Provider::WechatV3] {
        let no = format!("late-{}", provider.as_str());
        s.sim.create_order(provider, &no, 1500).expect("creates");
        db::register(&s.db.pool, &new_order(provider, &no, 1500, None))
            .await
            .expect("registers");
        // The notification is held back 4 s; the reconciler asks after ~1 s.
        s.sim
            .set_order_faults(
                provider,
                &no,
                Faults {
                    delay: Duration::from_secs(4),
                    ..Faults::default()
                },
            )
            .expect("order exists");
        s.sim.pay(provider, &no).expect("pays");
    }
    let outcomes = || async {
        sqlx::query_as::<_, (String, String)>(
            "SELECT source, outcome FROM notifications ORDER BY source, event_id",
        )
        .fetch_all(&s.db.pool)
        .await
        .expect("notifications")
    };
    let expected: Vec<(String, String)> = vec![
        ("notify".into(), "duplicate_transition".into()),
        ("notify".into(), "duplicate_transition".into()),
        ("reconcile".into(), "applied".into()),
        ("reconcile".into(), "applied".into()),
    ];
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            outcomes().await == expected
        })
        .await,
        "{:?}",
        outcomes().await
    );
    let succeeded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE routing_key LIKE 'payment.succeeded.%'",
    )
    .fetch_one(&s.db.pool)
    .await
    .expect("counts");
    assert_eq!(succeeded, 2, "one event per payment, not two");
    assert!(
        s.sim.settle(Duration::from_secs(10)).await,
        "the late notifications were acked"
    );
    s.worker.stop().await;
    s.receiver.stop().await;
}

/// From outside, over HTTP only: the order is registered through payhook's admin API,
/// created and paid at the provider through the simulator's control API with the
/// notification withheld; the reconciler finds the payment, and exactly one
/// `payment.succeeded` is published.
#[tokio::test]
async fn an_order_paid_through_the_simulators_control_api_without_a_notification_is_reconciled() {
    use payhook_sim::server::control;
    let s = stack(SimConfig::default()).await;
    let http = reqwest::Client::new();
    let sim = s.sim.base_url();
    let order = format!("ctl-{}", uuid::Uuid::new_v4().simple());
    let token = payhook_testkit::worker::TEST_ADMIN_TOKEN;

    let registered = http
        .post(format!("{}/orders", s.worker.admin_url))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "provider": "alipay", "merchant": "m1", "out_trade_no": order, "amount": 8_888,
        }))
        .send()
        .await
        .expect("admin API answers");
    assert_eq!(registered.status().as_u16(), 201);

    let created = http
        .post(format!("{sim}/_sim/orders"))
        .json(&control::NewOrder {
            provider: Provider::Alipay,
            out_trade_no: order.clone(),
            amount_fen: 8_888,
        })
        .send()
        .await
        .expect("control API answers");
    assert_eq!(created.status().as_u16(), 201);
    let paid: control::Answer = http
        .post(format!("{sim}/_sim/orders/alipay/{order}/pay"))
        .json(&control::Delivery {
            notify: control::Notify::Withhold,
            delay_secs: 0,
        })
        .send()
        .await
        .expect("control API answers")
        .json()
        .await
        .expect("an answer");
    assert_eq!(paid.order["state"], "PAID", "{:?}", paid.order);
    let notification = paid.notification.expect("a notification was recorded");
    assert!(
        s.sim
            .notification(&notification)
            .is_some_and(|n| n.faults.contains(&"drop")),
        "withheld"
    );
    // A second payment of the same order is refused by the provider, as Alipay would.
    let again = http
        .post(format!("{sim}/_sim/orders/alipay/{order}/pay"))
        .send()
        .await
        .expect("control API answers");
    assert_eq!(again.status().as_u16(), 409);
    let unknown = http
        .get(format!("{sim}/_sim/orders/alipay/nope"))
        .send()
        .await
        .expect("control API answers");
    assert_eq!(unknown.status().as_u16(), 404);

    let reconciled = eventually_async(Duration::from_secs(20), || async {
        let history = http
            .get(format!("{}/payments/alipay/m1/{order}", s.worker.admin_url))
            .bearer_auth(token)
            .send()
            .await;
        match history {
            Ok(answer) if answer.status().is_success() => answer
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|h| h["payment"]["state"] == "PAID"),
            _ => false,
        }
    })
    .await;
    assert!(reconciled, "paid in payhook through a query");
    let events = s.events.wait_for(1, Duration::from_secs(10)).await;
    let succeeded: Vec<_> = events
        .iter()
        .filter(|e| e.cloud_event["subject"] == order.as_str())
        .collect();
    assert_eq!(succeeded.len(), 1, "{events:?}");
    assert_eq!(succeeded[0].routing_key, "payment.succeeded.alipay");
    assert_eq!(succeeded[0].cloud_event["data"]["source"], "reconcile");
    s.worker.stop().await;
    s.receiver.stop().await;
}
