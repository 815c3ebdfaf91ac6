//! Many merchants: 60 per provider (180 in one configuration). Every notify URL routes
//! to its own merchant, every payment is applied under the merchant it came for, and
//! the per-merchant series exist from start — two per merchant, nothing per unknown
//! name. Start-up time and the size of `/metrics` are printed (README, "How far the
//! configuration scales").

use std::sync::Arc;
use std::time::{Duration, Instant};

use payhook_shared::clock::SystemClock;
use payhook_shared::wechat_v2::SignType;
use payhook_testkit::db::TestDb;
use payhook_testkit::harness::{
    Providers, TestReceiver, eventually_async, post, test_settings, unique_prefix,
};
use payhook_testkit::worker::{TestWorker, worker_settings};

const PER_PROVIDER: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_merchants_per_provider_route_apply_and_count_each_on_its_own() {
    let providers = Providers::new();
    let mut settings = test_settings();
    providers.register(&mut settings);
    let names: Vec<String> = (0..PER_PROVIDER).map(|i| format!("shop{i:03}")).collect();
    // The same keys under many names: routing and accounting are by the URL's name.
    let (alipay, v2, v3) = (
        settings.alipay.remove(Providers::MERCHANT).expect("alipay"),
        settings.wechat_v2.remove(Providers::MERCHANT).expect("v2"),
        settings.wechat_v3.remove(Providers::MERCHANT).expect("v3"),
    );
    for name in &names {
        settings.alipay.insert(name.clone(), alipay.clone());
        settings.wechat_v2.insert(name.clone(), v2.clone());
        settings.wechat_v3.insert(name.clone(), v3.clone());
    }

    let started = Instant::now();
    let receiver = TestReceiver::spawn(settings.clone(), Arc::new(SystemClock)).await;
    let receiver_start = started.elapsed();
    let db = TestDb::new().await;
    let started = Instant::now();
    let worker = TestWorker::spawn(&worker_settings(&settings, db.settings.clone())).await;
    let worker_start = started.elapsed();

    let client = reqwest::Client::new();
    let tag = unique_prefix();
    let order = |name: &str, provider: &str| format!("{tag}-{provider}-{name}");
    for name in &names {
        let answer = post(
            &client,
            &receiver.url(&format!("/notify/alipay/{name}")),
            "application/x-www-form-urlencoded",
            &[],
            providers
                .alipay
                .payment(&order(name, "a"), 100, &unique_prefix()),
        )
        .await;
        assert_eq!(answer.body, "success", "alipay {name}");
        let answer = post(
            &client,
            &receiver.url(&format!("/notify/wechat/v2/{name}")),
            "text/xml",
            &[],
            providers
                .wechat_v2
                .payment(&order(name, "2"), 100, &unique_prefix(), SignType::Md5),
        )
        .await;
        assert!(
            answer.body.contains("SUCCESS"),
            "wechat_v2 {name}: {}",
            answer.body
        );
        let body = providers.wechat_v3.transaction(
            &uuid::Uuid::new_v4().to_string(),
            &order(name, "3"),
            100,
            "SUCCESS",
        );
        let headers = providers
            .wechat_v3
            .headers(time::OffsetDateTime::now_utc().unix_timestamp(), &body);
        let answer = post(
            &client,
            &receiver.url(&format!("/notify/wechat/v3/{name}")),
            "application/json",
            &headers,
            body,
        )
        .await;
        assert_eq!(answer.status, 204, "wechat_v3 {name}: {}", answer.body);
    }
    // A name that is not configured is refused and gets no series of its own.
    let unknown = post(
        &client,
        &receiver.url("/notify/alipay/not-a-merchant"),
        "application/x-www-form-urlencoded",
        &[],
        providers.alipay.payment("x", 100, &unique_prefix()),
    )
    .await;
    assert_ne!(unknown.body, "success");

    // Each payment applied under the merchant whose URL it came to.
    let applied = eventually_async(Duration::from_secs(60), || async {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM payments WHERE state = 'PAID' AND out_trade_no LIKE $1 \
             AND out_trade_no = $2 || '-' || CASE provider WHEN 'alipay' THEN 'a' \
             WHEN 'wechat_v2' THEN '2' ELSE '3' END || '-' || merchant",
        )
        .bind(format!("{tag}-%"))
        .bind(&tag)
        .fetch_one(&db.pool)
        .await
        .unwrap_or(0);
        count == (3 * PER_PROVIDER) as i64
    })
    .await;
    assert!(applied, "every payment applied under its own merchant");

    let exposition = receiver.metrics.render();
    let per_merchant = |family: &str| exposition.lines().filter(|l| l.starts_with(family)).count();
    assert_eq!(
        per_merchant("payhook_merchant_notifications_total{"),
        3 * PER_PROVIDER
    );
    assert_eq!(
        per_merchant("payhook_last_notification_timestamp_seconds{"),
        3 * PER_PROVIDER
    );
    for name in &names {
        for provider in ["alipay", "wechat_v2", "wechat_v3"] {
            assert_eq!(
                receiver.metric(&format!(
                    "payhook_merchant_notifications_total{{provider=\"{provider}\",merchant=\"{name}\"}}"
                )),
                1.0,
                "{provider} {name}"
            );
        }
    }
    assert!(!exposition.contains("not-a-merchant"));
    let samples = exposition.lines().filter(|l| !l.starts_with('#')).count();
    eprintln!(
        "{} merchants: receiver ready in {:.0} ms, worker in {:.0} ms; receiver /metrics: \
         {samples} samples, {} bytes",
        3 * PER_PROVIDER,
        receiver_start.as_secs_f64() * 1000.0,
        worker_start.as_secs_f64() * 1000.0,
        exposition.len()
    );
    worker.stop().await;
    receiver.stop().await;
}
