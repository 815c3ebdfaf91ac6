//! The committed alert rules, live: a real Prometheus scrapes a real receiver and a
//! real worker and evaluates `deploy/prometheus/alerts.yml` while faults are injected.
//!
//! The rules' expressions, labels and thresholds are the committed ones; only their
//! windows and `for` durations are shortened by one table ([`COMPRESSED`]: minutes
//! become seconds, a day 20 s), so that a run takes a minute and a half. Prometheus
//! scrapes and evaluates every 500 ms. The run:
//!
//! 1. baseline — notifications flowing, everything up: no alert fires;
//! 2. notifications stopped — the provider goes quiet after a busy "day":
//!    `PayhookNotificationsStopped` for that provider and merchant;
//! 3. broker flapping, then cut — the receiver's path to RabbitMQ goes through a proxy
//!    that is cut and restored, then cut: `PayhookBrokerFlapping`, then
//!    `PayhookReceiverBrokerDown`;
//! 4. receiver killed: `PayhookTargetDown` and `PayhookReceiversAbsent`.
//!
//! What each fault took to fire is printed (RELIABILITY.md, "Alerts, live").
//! Prometheus comes from Debian's `prometheus` package (`scripts/test` unpacks it).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use payhook_shared::clock::SystemClock;
use payhook_shared::config::Secret;
use payhook_shared::event::Provider;
use payhook_sim::{SimConfig, Simulator};
use payhook_testkit::db::TestDb;
use payhook_testkit::harness::{TestReceiver, eventually_async, test_settings};
use payhook_testkit::proxy::Proxy;
use payhook_testkit::worker::{TestWorker, worker_settings};
use serde_json::Value;

/// The committed durations, and what they become in this run.
const COMPRESSED: &[(&str, &str)] = &[
    ("for: 1m", "for: 2s"),
    ("for: 2m", "for: 3s"),
    ("for: 5m", "for: 4s"),
    ("for: 10m", "for: 5s"),
    ("for: 15m", "for: 5s"),
    ("for: 30m", "for: 6s"),
    ("for: 1h", "for: 8s"),
    ("for: 2h", "for: 10s"),
    ("[5m]", "[4s]"),
    ("[15m]", "[6s]"),
    ("[1h]", "[10s]"),
    ("offset 1d", "offset 20s"),
];

/// The committed rules with [`COMPRESSED`] applied; fails if a duration is left that
/// the table does not know (a new rule must be added to it).
fn compressed_rules() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut rules =
        std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).expect("alerts.yml");
    for (committed, short) in COMPRESSED {
        rules = rules.replace(committed, short);
    }
    let left =
        regex_lite::Regex::new(r"for: \d+[mhd]|\[\d+[mhd]\]|offset \d+[mhd]").expect("regex");
    assert!(
        !left.is_match(&rules),
        "a duration COMPRESSED does not know: {:?}",
        left.find(&rules).map(|m| m.as_str())
    );
    rules
}

/// A private Prometheus on a free port, removed on drop.
struct Prometheus {
    child: Child,
    url: String,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Prometheus {
    async fn start(receiver: SocketAddr, worker: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "payhook-prometheus-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        std::fs::write(dir.join("rules.yml"), compressed_rules()).expect("rules");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 500ms, evaluation_interval: 500ms, scrape_timeout: 400ms}}\n\
                 rule_files: [rules.yml]\n\
                 scrape_configs:\n\
                 \x20 - job_name: payhook-receiver\n\
                 \x20   static_configs: [{{targets: [\"{receiver}\"]}}]\n\
                 \x20 - job_name: payhook-worker\n\
                 \x20   static_configs: [{{targets: [\"{worker}\"]}}]\n"
            ),
        )
        .expect("config");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("prometheus.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .unwrap_or_else(|e| {
                panic!("prometheus: {e} (scripts/test unpacks it from Debian's prometheus package)")
            });
        let prometheus = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            http: reqwest::Client::new(),
        };
        let ready = eventually_async(Duration::from_secs(20), || async {
            prometheus
                .http
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(
            ready,
            "prometheus did not start: see {}",
            prometheus.dir.display()
        );
        prometheus
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("prometheus answers")
            .json()
            .await
            .expect("prometheus JSON")
    }

    /// The firing alerts, as `name{label=value,…}` without `severity`.
    async fn firing(&self) -> BTreeSet<String> {
        let answer = self.get("/api/v1/alerts").await;
        answer["data"]["alerts"]
            .as_array()
            .map(|alerts| {
                alerts
                    .iter()
                    .filter(|a| a["state"] == "firing")
                    .map(|a| {
                        let labels = a["labels"].as_object().cloned().unwrap_or_default();
                        let name = labels
                            .get("alertname")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_owned();
                        let rest: Vec<String> = labels
                            .iter()
                            .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity"))
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                            .collect();
                        format!("{name}{{{}}}", rest.join(","))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether both targets have been scraped successfully.
    async fn both_up(&self) -> bool {
        let answer = self.get("/api/v1/query?query=up").await;
        answer["data"]["result"]
            .as_array()
            .is_some_and(|r| r.len() == 2 && r.iter().all(|s| s["value"][1].as_str() == Some("1")))
    }

    /// Waits until an alert whose text starts with `prefix` fires; how long it took.
    async fn fires(&self, prefix: &str, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.firing().await.iter().any(|a| a.starts_with(prefix)) {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .parse()
        .expect("a host:port URL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_alert_fires_under_its_fault_and_none_in_the_baseline() {
    // The receiver reaches RabbitMQ through a proxy the test cuts.
    let amqp: SocketAddr = "127.0.0.1:5672".parse().expect("address");
    let proxy = Proxy::start(amqp).await;
    let mut config = SimConfig::default();
    let mut settings = test_settings();
    config.providers.register(&mut settings);
    let mut receiving = settings.clone();
    receiving.amqp.url = Secret::inline(proxy.amqp_url());
    receiving.amqp.reconnect_min_ms = 50;
    receiving.amqp.reconnect_max_ms = 100;
    let receiver = TestReceiver::spawn(receiving, Arc::new(SystemClock)).await;
    let db = TestDb::new().await;
    let worker = TestWorker::spawn(&worker_settings(&settings, db.settings.clone())).await;
    config.notify_base = Some(receiver.base_url.clone());
    let sim = Arc::new(Simulator::start(config).await.expect("simulator starts"));
    let prometheus = Prometheus::start(addr(&receiver.base_url), addr(&worker.admin_url)).await;
    assert!(
        eventually_async(Duration::from_secs(20), || prometheus.both_up()).await,
        "prometheus scrapes the receiver and the worker"
    );
    // Prometheus evaluates rules from its start, before its first scrapes: the
    // absence alerts can be pending or firing for those first seconds. The baseline
    // starts once that has cleared.
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            prometheus.firing().await.is_empty()
        })
        .await,
        "alerts left from Prometheus' start: {:?}",
        prometheus.firing().await
    );

    // Traffic: an Alipay payment every 200 ms until told to stop.
    let flowing = Arc::new(AtomicBool::new(true));
    let traffic = {
        let (sim, flowing) = (sim.clone(), flowing.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while flowing.load(Ordering::Relaxed) {
                let no = format!("live-{n}");
                n += 1;
                if sim.create_order(Provider::Alipay, &no, 100).is_ok() {
                    let _ = sim.pay(Provider::Alipay, &no);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            n
        })
    };

    // 1. Baseline: 25 s of traffic (more than the stopped-notifications rule's
    // "yesterday", 20 s + its 10 s window) and nothing fires.
    let baseline_started = Instant::now();
    while baseline_started.elapsed() < Duration::from_secs(25) {
        let firing = prometheus.firing().await;
        assert!(firing.is_empty(), "baseline: {firing:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut report = vec![("baseline (25 s, traffic flowing)", "none".to_owned())];

    // 2. The notifications stop.
    flowing.store(false, Ordering::Relaxed);
    let sent = traffic.await.expect("traffic task");
    assert!(sent >= 100, "{sent} payments sent");
    let stopped = prometheus
        .fires(
            "PayhookNotificationsStopped{merchant=m1,provider=alipay}",
            Duration::from_secs(60),
        )
        .await;
    assert!(stopped.is_some(), "{:?}", prometheus.firing().await);
    report.push((
        "notifications stopped",
        format!("PayhookNotificationsStopped after {:.1} s", secs(stopped)),
    ));

    // 3. The receiver's broker connection flaps, then is cut.
    let flapping_started = Instant::now();
    let flapping = async {
        for _ in 0..8 {
            proxy.cut();
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.restore();
            let _ = receiver.publisher.wait_ready(Duration::from_secs(2)).await;
        }
    };
    flapping.await;
    let flapped = prometheus
        .fires("PayhookBrokerFlapping", Duration::from_secs(30))
        .await
        .map(|_| flapping_started.elapsed());
    assert!(flapped.is_some(), "{:?}", prometheus.firing().await);
    report.push((
        "broker connection cut and restored 8 times",
        format!("PayhookBrokerFlapping after {:.1} s", secs(flapped)),
    ));
    // Connected again: the short cuts of the flapping may have raised the broker-down
    // alert too; the cut is measured from a clear state.
    assert!(
        eventually_async(Duration::from_secs(30), || async {
            !prometheus
                .firing()
                .await
                .iter()
                .any(|a| a.starts_with("PayhookReceiverBrokerDown"))
        })
        .await,
        "the broker-down alert clears once connected"
    );
    proxy.cut();
    let down = prometheus
        .fires("PayhookReceiverBrokerDown", Duration::from_secs(30))
        .await;
    assert!(down.is_some(), "{:?}", prometheus.firing().await);
    report.push((
        "broker connection cut",
        format!("PayhookReceiverBrokerDown after {:.1} s", secs(down)),
    ));
    proxy.restore();

    // 4. The receiver is killed.
    let killed = Instant::now();
    receiver.stop().await;
    let target_down = prometheus
        .fires("PayhookTargetDown{instance=", Duration::from_secs(30))
        .await
        .map(|_| killed.elapsed());
    let absent = prometheus
        .fires("PayhookReceiversAbsent", Duration::from_secs(30))
        .await
        .map(|_| killed.elapsed());
    assert!(
        target_down.is_some() && absent.is_some(),
        "{:?}",
        prometheus.firing().await
    );
    report.push((
        "receiver killed",
        format!(
            "PayhookTargetDown after {:.1} s, PayhookReceiversAbsent after {:.1} s",
            secs(target_down),
            secs(absent)
        ),
    ));

    eprintln!("| fault | alerts fired (from the fault) |\n|---|---|");
    for (fault, fired) in &report {
        eprintln!("| {fault} | {fired} |");
    }
    worker.stop().await;
}

fn secs(took: Option<Duration>) -> f64 {
    took.map_or(f64::NAN, |d| d.as_secs_f64())
}
