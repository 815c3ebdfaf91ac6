//! Starting the worker as production does, isolated per test: its own database
//! schema, Redis key prefix and (shared with the test's receiver) broker prefix.

use std::time::Duration;

use payhook_shared::config::{Secret, Settings};
use payhook_worker::Worker;
use payhook_worker::startup::Shared;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::harness::eventually;

/// The bearer token (scope `operate`, name `test-operator`) every test worker accepts
/// on its admin API. TEST ONLY.
pub const TEST_ADMIN_TOKEN: &str = "test-only-operate-token-0123456789abcdef";

/// The Redis tests use (`PAYHOOK_TEST_REDIS_URL`, default the local server).
pub fn redis_url() -> String {
    std::env::var("PAYHOOK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Worker settings next to a test receiver's: same broker prefix and merchants, the
/// given database settings, the same prefix for Redis keys, short retry tiers, port 0.
pub fn worker_settings(
    receiver: &Settings,
    postgres: payhook_shared::config::PostgresSettings,
) -> Settings {
    let mut settings = receiver.clone();
    settings.worker.admin_listen = "127.0.0.1:0".parse().expect("literal address");
    settings.worker.retry_delays_ms = vec![200, 400, 800];
    settings.worker.concurrency = 4;
    settings.worker.prefetch = 16;
    settings.worker.outbox_poll_ms = 100;
    // Events a test's worker did not publish itself (killed, broker away) are swept
    // after 5 s instead of 30.
    settings.worker.outbox_sweep_after_ms = 5000;
    settings.postgres = postgres;
    settings.worker.admin_tokens = vec![payhook_shared::config::AdminToken {
        name: "test-operator".into(),
        scope: payhook_shared::config::AdminScope::Operate,
        token: Secret::inline(TEST_ADMIN_TOKEN),
    }];
    settings.redis.url = Secret::inline(redis_url());
    // The receiver's (unique) prefix: the test's cleanup deletes `<prefix>:*` keys.
    settings.redis.prefix = receiver.amqp.prefix.clone();
    settings
}

/// A receiver on the shared broker with the test merchants, a fresh database schema,
/// and the settings of a worker beside them (not started: tests adjust, then spawn).
#[derive(Debug)]
pub struct TestStack {
    pub providers: crate::harness::Providers,
    pub receiver: crate::harness::TestReceiver,
    pub db: crate::db::TestDb,
    /// [`worker_settings`] for this receiver and database.
    pub settings: Settings,
}

impl TestStack {
    pub async fn start() -> Self {
        let providers = crate::harness::Providers::new();
        let mut receiver_settings = crate::harness::test_settings();
        providers.register(&mut receiver_settings);
        let receiver = crate::harness::TestReceiver::spawn(
            receiver_settings.clone(),
            std::sync::Arc::new(payhook_shared::clock::SystemClock),
        )
        .await;
        let db = crate::db::TestDb::new().await;
        let settings = worker_settings(&receiver_settings, db.settings.clone());
        Self {
            providers,
            receiver,
            db,
            settings,
        }
    }
}

/// A worker running in this process.
#[derive(Debug)]
pub struct TestWorker {
    pub admin_url: String,
    pub shared: actix_web::web::Data<Shared>,
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestWorker {
    /// Builds and starts the worker, then waits (bounded) until it consumes.
    pub async fn spawn(settings: &Settings) -> Self {
        let worker = Worker::build(settings).await.expect("worker builds");
        let admin_url = format!("http://127.0.0.1:{}", worker.admin_port());
        let shared = worker.shared_handle();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker.run_until_stopped(shutdown.clone()));
        let probe = shared.clone();
        assert!(
            eventually(Duration::from_secs(10), || probe.broker_up()).await,
            "worker did not connect to the broker within 10 s"
        );
        Self {
            admin_url,
            shared,
            shutdown,
            task: Some(task),
        }
    }

    /// Stops gracefully and waits.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(40), task).await;
        }
    }

    /// Kills the worker's task where it stands (no graceful drain): what a crash does
    /// to in-flight messages, as far as one process can tell.
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    pub fn metric(&self, sample: &str) -> f64 {
        crate::harness::metric_value(&self.shared.metrics.render(), sample)
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
