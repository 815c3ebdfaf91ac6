//! The chaos suite: the simulator drives a steady load of orders (payments, partial
//! and full refunds, duplicates, reordering) through a real receiver process →
//! RabbitMQ → a real worker process → Redis/PostgreSQL while one fault (or several)
//! is injected; then waits for quiescence and accounts for every notification against
//! the simulator's truth. `payhook-chaos` (and `scripts/chaos`) runs the scenarios and
//! prints the table; `tests/tests/it/chaos.rs` runs a CI-sized subset.
//!
//! # Layout
//!
//! - [`services`]: private Redis / PostgreSQL / RabbitMQ instances (on free ports, in
//!   temp dirs) for the scenarios that stop a service — the shared servers on the
//!   standard ports are never stopped.
//! - [`process`]: the receiver and the worker as processes (`kill -9` is real).
//! - `blackhole`: a proxy whose link to the broker can be frozen (a silent
//!   partition); [`payhook_testkit::proxy::Proxy`] is the one that cuts connections.
//! - `load`: the steady load of orders.
//! - `broker`: queue depths, the events tap and the parked queue, for the checks.
//! - `account`: what the database, the broker and the tap say, against the truth.
//!
//! # What is measured
//!
//! - **sent / acked**: distinct notifications the simulator sent, and those the
//!   receiver acked (the provider's success answer), from the simulator's delivery
//!   records.
//! - **applied**: acked notifications recorded by the worker (PostgreSQL
//!   `notifications`, one row per notification id, matched per transition key).
//! - **lost**: acked notifications not recorded (must be 0).
//! - **dup**: double applications: transitions the truth does not have, orders whose
//!   refunded amount exceeds the truth, transitions with more than one outbox row, and
//!   transitions announced under more than one CloudEvents id (must be 0). The same
//!   CloudEvents id seen twice is *not* a duplicate: docs/design.md allows the relay to
//!   resend a row after a crash between the broker's confirm and the row's update
//!   (consumers deduplicate on the id); it is counted as "resent".
//! - **wrong**: orders whose final state or refunded amount differs from the truth,
//!   plus transitions of the truth missing from the ledger.
//! - **events**: distinct CloudEvents ids on a tap bound to `<prefix>.events` with
//!   `#`, and transitions without one (must be 0).
//! - **retry / work**: messages left in the retry tiers and the work queue (must be 0).
//! - **parked**: two unreadable messages are published into the work queue on
//!   purpose; exactly those two must be parked (`bad_envelope`), nothing else.
//! - **recover**: from the end of the (last) fault until every transition the truth
//!   held at that moment is in the ledger.

mod blackhole;
pub mod broker;
pub mod db;
mod load;
pub mod process;
pub mod services;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use payhook_shared::topology::Names;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use blackhole::FreezingProxy;
use broker::{BrokerView, TapEvent};
use db::ChaosDb;
pub use load::Load;
use payhook_sim::keys_dir::KeysDir;
use payhook_sim::{FaultRates, Simulator};
use payhook_testkit::harness::TopologyCleanup;
use payhook_testkit::proxy::Proxy;
use payhook_testkit::truth;
use process::{Component, Launcher, PayhookProcess};
use services::{PrivatePostgres, PrivateRabbit, PrivateRedis, free_port};

/// Unreadable messages published on purpose: they, and only they, must be parked.
pub const POISON: usize = 2;

/// The retry tiers of the generated configuration.
const RETRY_TIERS: usize = 5;

/// One fault scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// No fault: the control row.
    Baseline,
    /// `kill -9` of the receiver under load (requests in flight), restarted at once;
    /// three times.
    ReceiverKill,
    /// `kill -9` of the worker at random moments under load, restarted at once; five
    /// times.
    WorkerKill,
    /// A private RabbitMQ node stopped (`rabbitmqctl stop`) and started again.
    RabbitmqRestart,
    /// A private RabbitMQ node stopped for 10 s (beyond the 3 s ack deadline), then
    /// started again.
    RabbitmqOutage,
    /// A private Redis killed (`kill -9`, every dedup key lost) for 3 s, restarted.
    RedisRestart,
    /// A private PostgreSQL stopped (`pg_ctl stop -m immediate`) for 3 s, restarted.
    PostgresRestart,
    /// A private PostgreSQL down for 45 s, longer than the retry tiers (18.5 s; a
    /// failing attempt waits 50 ms for a connection in this scenario):
    /// messages are parked (`retries_exhausted`), by design; once the database is
    /// back, an operator's replay (`POST /parked/replay?reason=retries_exhausted`)
    /// brings them back and they are applied once.
    PostgresOutage,
    /// The TCP proxy between payhook (receiver and worker) and the broker cut for 6 s:
    /// live connections dropped, new ones refused.
    BrokerPartition,
    /// The link between payhook and the broker frozen for 8 s (beyond the ack
    /// deadline): connections stay open but nothing moves, as when packets are
    /// dropped; then the held bytes flow again.
    BrokerBlackhole,
    /// All of the above in one run, overlapping, on a fully private stack.
    Combined,
}

impl Scenario {
    pub const ALL: [Self; 11] = [
        Self::Baseline,
        Self::ReceiverKill,
        Self::WorkerKill,
        Self::RabbitmqRestart,
        Self::RabbitmqOutage,
        Self::RedisRestart,
        Self::PostgresRestart,
        Self::PostgresOutage,
        Self::BrokerPartition,
        Self::BrokerBlackhole,
        Self::Combined,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::ReceiverKill => "receiver-kill",
            Self::WorkerKill => "worker-kill",
            Self::RabbitmqRestart => "rabbitmq-restart",
            Self::RabbitmqOutage => "rabbitmq-outage",
            Self::RedisRestart => "redis-restart",
            Self::PostgresRestart => "postgres-restart",
            Self::PostgresOutage => "postgres-outage",
            Self::BrokerPartition => "broker-partition",
            Self::BrokerBlackhole => "broker-blackhole",
            Self::Combined => "combined",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    fn private_rabbit(self) -> bool {
        matches!(
            self,
            Self::RabbitmqRestart | Self::RabbitmqOutage | Self::Combined
        )
    }
    fn private_redis(self) -> bool {
        matches!(self, Self::RedisRestart | Self::Combined)
    }
    fn private_postgres(self) -> bool {
        matches!(
            self,
            Self::PostgresRestart | Self::PostgresOutage | Self::Combined
        )
    }
    fn proxy(self) -> bool {
        matches!(self, Self::BrokerPartition | Self::Combined)
    }
}

/// How to run scenarios.
#[derive(Debug, Clone)]
pub struct Options {
    /// Orders per scenario.
    pub orders: usize,
    /// Orders per second.
    pub rate: f64,
    pub seed: u64,
    /// Provider time → real time for the resend schedules.
    pub time_scale: f64,
    pub launcher: Launcher,
    /// The simulator's keys (generated on first use).
    pub keys_dir: PathBuf,
    /// Longest wait for quiescence after the load.
    pub quiesce_timeout: Duration,
    /// Keep each run's directory (config, logs) even when it passed.
    pub keep: bool,
}

/// One line of the table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub scenario: String,
    /// What was injected, e.g. `3× kill -9`.
    pub faults: String,
    pub orders: usize,
    pub sent: usize,
    pub requests: usize,
    pub acked: usize,
    pub applied: usize,
    pub duplicates: usize,
    pub lost: usize,
    pub wrong: usize,
    pub transitions: usize,
    pub events_distinct: usize,
    pub events_resent: usize,
    pub events_missing: usize,
    pub retry_left: u32,
    pub work_left: u32,
    pub parked: usize,
    pub parked_unexpected: usize,
    /// Requests that got no answer (cut mid-request, refused while down).
    pub unanswered: usize,
    /// Requests answered with something else than the provider's success answer
    /// (503 while the broker was away, …), `unanswered` included.
    pub not_acked: usize,
    pub recover: Option<Duration>,
    pub total: Duration,
    pub converged: bool,
    pub notes: Vec<String>,
    /// Where config and logs are (kept when the scenario failed).
    pub dir: Option<PathBuf>,
}

impl Row {
    /// 0 lost, 0 double-applied, the truth reached, queues empty, only the poison
    /// parked.
    pub fn passed(&self) -> bool {
        self.converged
            && self.lost == 0
            && self.duplicates == 0
            && self.wrong == 0
            && self.events_missing == 0
            && self.retry_left == 0
            && self.work_left == 0
            && self.parked == POISON
            && self.parked_unexpected == 0
    }
}

/// The table, as printed by `payhook-chaos` (Markdown).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | faults | orders | sent | acked | applied | dup applied | lost | wrong | events (resent) | missing events | retry/work left | parked | requests (not acked / no answer) | recover | total | result |"
    );
    let _ = writeln!(
        out,
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {}/{} | {}{} | {} ({} / {}) | {} | {:.1} s | {} |",
            r.scenario,
            r.faults,
            r.orders,
            r.sent,
            r.acked,
            r.applied,
            r.duplicates,
            r.lost,
            r.wrong,
            r.events_distinct,
            r.events_resent,
            r.events_missing,
            r.retry_left,
            r.work_left,
            r.parked,
            if r.parked_unexpected > 0 {
                format!(" ({} unexpected)", r.parked_unexpected)
            } else {
                String::new()
            },
            r.requests,
            r.not_acked,
            r.unanswered,
            r.recover
                .map_or_else(|| "—".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
            r.total.as_secs_f64(),
            if r.passed() { "ok" } else { "FAIL" },
        );
    }
    out
}

/// Everything one scenario runs on. Field order is drop order: processes first,
/// the services they use last.
struct Env {
    names: Names,
    /// The worker's admin listener, `http://127.0.0.1:<port>`.
    admin_url: String,
    /// The broker, not through any proxy.
    amqp_direct: String,
    receiver: PayhookProcess,
    worker: PayhookProcess,
    sim: Simulator,
    view: BrokerView,
    db: ChaosDb,
    proxy: Option<Proxy>,
    freezer: Option<FreezingProxy>,
    _topology: TopologyCleanup,
    rabbit: Option<PrivateRabbit>,
    redis: Option<PrivateRedis>,
    pg: Option<PrivatePostgres>,
}

/// The settings file of one run (TEST ONLY keys: the simulator's).
#[allow(clippy::too_many_arguments)]
fn write_config(
    path: &Path,
    keys: &KeysDir,
    receiver_port: u16,
    admin_port: u16,
    amqp: &str,
    prefix: &str,
    redis: &str,
    postgres: &str,
    schema: &str,
    sim_base: &str,
    acquire_timeout_ms: u64,
) -> anyhow::Result<()> {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let token = q(payhook_testkit::worker::TEST_ADMIN_TOKEN);
    let text = format!(
        r#"# TEST ONLY — written by payhook-chaos for one scenario.
[receiver]
listen = "127.0.0.1:{receiver_port}"
workers = 1

[worker]
admin_listen = "127.0.0.1:{admin_port}"
prefetch = 16
concurrency = 4
# Long enough in total (18.5 s) to outlast the database outages of the scenarios:
# beyond the last tier a message is parked, by design (replayed by a person).
retry_delays_ms = [500, 1000, 2000, 5000, 10000]
claim_ttl_ms = 5000
outbox_poll_ms = 100
# A killed worker's committed events are swept after 2 s (a resend is allowed).
outbox_sweep_after_ms = 2000

[[worker.admin_tokens]]
name = "chaos"
scope = "operate"
token = {token}

[amqp]
url = {amqp}
prefix = {prefix}
reconnect_min_ms = 50
reconnect_max_ms = 1000

[redis]
url = {redis}
prefix = {prefix}

[postgres]
url = {postgres}
schema = {schema}
max_connections = 8
acquire_timeout_ms = {acquire_timeout_ms}

[log]
format = "json"
filter = "info"

[reconcile]
# The load is settled by notifications alone: what is lost must show.
enabled = false
alipay_gateway = {gateway}
wechat_base = {sim}

{snippet}"#,
        amqp = q(amqp),
        prefix = q(prefix),
        redis = q(redis),
        postgres = q(postgres),
        schema = q(schema),
        gateway = q(&format!("{sim_base}/gateway.do")),
        sim = q(sim_base),
        snippet = keys.payhook_snippet()?,
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

async fn setup(scenario: Scenario, options: &Options, dir: &Path) -> anyhow::Result<Env> {
    let keys = KeysDir::load_or_generate(&options.keys_dir)?;
    let prefix = format!("chaos-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let names = Names::new(&prefix);
    let topology = TopologyCleanup(names.clone());
    let (rabbit, redis, pg) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let rabbit = scenario
            .private_rabbit()
            .then(PrivateRabbit::start)
            .transpose()?;
        let redis = scenario
            .private_redis()
            .then(PrivateRedis::start)
            .transpose()?;
        let pg = scenario
            .private_postgres()
            .then(PrivatePostgres::start)
            .transpose()?;
        Ok((rabbit, redis, pg))
    })?;
    let amqp_direct = rabbit
        .as_ref()
        .map_or_else(payhook_testkit::harness::amqp_url, PrivateRabbit::url);
    let redis_url = redis
        .as_ref()
        .map_or_else(payhook_testkit::worker::redis_url, PrivateRedis::url);
    let pg_url = pg
        .as_ref()
        .map_or_else(payhook_testkit::db::database_url, PrivatePostgres::url);
    let proxy = if scenario.proxy() {
        let upstream = rabbit
            .as_ref()
            .map_or_else(payhook_testkit::harness::broker_addr, PrivateRabbit::addr);
        Some(Proxy::start(upstream).await)
    } else {
        None
    };
    let freezer = if scenario == Scenario::BrokerBlackhole {
        let upstream = rabbit
            .as_ref()
            .map_or_else(payhook_testkit::harness::broker_addr, PrivateRabbit::addr);
        Some(FreezingProxy::start(upstream).await?)
    } else {
        None
    };
    let amqp_payhook = match (&proxy, &freezer) {
        (Some(proxy), _) => proxy.amqp_url(),
        (None, Some(freezer)) => freezer.amqp_url(),
        (None, None) => amqp_direct.clone(),
    };
    let db = ChaosDb::new(&pg_url).await?;
    let mut view = BrokerView::new(&amqp_direct, &names);
    view.bind_tap().await?;

    let receiver_port = free_port()?;
    let admin_port = free_port()?;
    let mut sim_config = keys.sim_config();
    sim_config.notify_base = Some(format!("http://127.0.0.1:{receiver_port}"));
    sim_config.time_scale = options.time_scale;
    sim_config.seed = options.seed;
    sim_config.fault_rates = FaultRates {
        duplicate: 0.1,
        reorder: 0.1,
        ..FaultRates::default()
    };
    let sim = Simulator::start(sim_config).await?;
    let config = dir.join("payhook.toml");
    write_config(
        &config,
        &keys,
        receiver_port,
        admin_port,
        &amqp_payhook,
        &prefix,
        &redis_url,
        &db.tagged_url,
        &db.settings.schema,
        &sim.base_url(),
        // A failing attempt waits this long for a connection: short in the long
        // outage, so that messages do go through every tier and get parked.
        if scenario == Scenario::PostgresOutage {
            50
        } else {
            3000
        },
    )?;
    let worker = PayhookProcess::start(
        Component::Worker,
        &options.launcher,
        &config,
        &dir.join("worker.log"),
        format!("http://127.0.0.1:{admin_port}/readyz"),
    )
    .await?;
    // The receiver's share of the configuration: without the worker's signing keys,
    // which it refuses to hold.
    let receiver_config = dir.join("receiver.toml");
    std::fs::write(
        &receiver_config,
        std::fs::read_to_string(&config)?
            .lines()
            .filter(|line| {
                !line.starts_with("app_private_key ") && !line.starts_with("merchant_private_key ")
            })
            .map(|line| format!("{line}\n"))
            .collect::<String>(),
    )?;
    let receiver = PayhookProcess::start(
        Component::Receiver,
        &options.launcher,
        &receiver_config,
        &dir.join("receiver.log"),
        format!("http://127.0.0.1:{receiver_port}/readyz"),
    )
    .await?;
    view.publish_poison(POISON).await?;
    Ok(Env {
        names,
        admin_url: format!("http://127.0.0.1:{admin_port}"),
        amqp_direct,
        receiver,
        worker,
        sim,
        view,
        db,
        proxy,
        freezer,
        _topology: topology,
        rabbit,
        redis,
        pg,
    })
}

/// The parts faults act on.
struct Faulty<'a> {
    receiver: &'a mut PayhookProcess,
    worker: &'a mut PayhookProcess,
    rabbit: Option<&'a PrivateRabbit>,
    redis: Option<&'a PrivateRedis>,
    pg: Option<&'a PrivatePostgres>,
    proxy: Option<&'a Proxy>,
    freezer: Option<&'a FreezingProxy>,
    admin_url: &'a str,
    amqp_direct: &'a str,
    names: &'a Names,
    log: Vec<String>,
    /// When the last fault ended (the service back, the link restored).
    healed: Option<Instant>,
}

const READY: Duration = Duration::from_secs(60);

impl Faulty<'_> {
    async fn kill_receiver(&mut self) -> anyhow::Result<()> {
        self.receiver.kill9();
        self.receiver.spawn()?;
        self.receiver.wait_ready(READY).await
    }

    async fn kill_worker(&mut self) -> anyhow::Result<()> {
        self.worker.kill9();
        self.worker.spawn()?;
        self.worker.wait_ready(READY).await
    }

    async fn rabbit_down(&mut self, hold: Duration) -> anyhow::Result<Duration> {
        let rabbit = self.rabbit.context("no private RabbitMQ")?;
        let started = Instant::now();
        tokio::task::block_in_place(|| rabbit.stop())?;
        tokio::time::sleep(hold).await;
        tokio::task::block_in_place(|| rabbit.up())?;
        Ok(started.elapsed())
    }

    async fn redis_down(&mut self, hold: Duration) -> anyhow::Result<()> {
        let redis = self.redis.context("no private Redis")?;
        tokio::task::block_in_place(|| redis.crash())?;
        tokio::time::sleep(hold).await;
        tokio::task::block_in_place(|| redis.up())
    }

    async fn postgres_down(&mut self, hold: Duration) -> anyhow::Result<()> {
        let pg = self.pg.context("no private PostgreSQL")?;
        tokio::task::block_in_place(|| pg.crash())?;
        tokio::time::sleep(hold).await;
        tokio::task::block_in_place(|| pg.up())
    }

    /// What an operator does once the cause is fixed: waits until nothing is left in
    /// the retry tiers, then replays the messages parked as `retries_exhausted`;
    /// returns how many were replayed.
    async fn replay_exhausted(&mut self) -> anyhow::Result<u64> {
        let mut view = BrokerView::new(self.amqp_direct, self.names);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut left = 0;
            for tier in 0..RETRY_TIERS {
                left += view.depth(&self.names.retry(tier)).await?;
            }
            if left == 0 {
                break;
            }
            if Instant::now() >= deadline {
                bail!("{left} messages still in the retry tiers after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        view.close().await;
        let report: serde_json::Value = reqwest::Client::new()
            .post(format!(
                "{}/parked/replay?reason=retries_exhausted",
                self.admin_url
            ))
            .bearer_auth(payhook_testkit::worker::TEST_ADMIN_TOKEN)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(report["replayed"].as_u64().unwrap_or(0))
    }

    async fn partition(&mut self, hold: Duration) -> anyhow::Result<()> {
        let proxy = self.proxy.context("no proxy")?;
        proxy.cut();
        tokio::time::sleep(hold).await;
        proxy.restore();
        Ok(())
    }
}

/// Sleeps until `fraction` of `span` after `start`.
async fn at(start: Instant, span: Duration, fraction: f64) {
    let when = start + span.mul_f64(fraction);
    tokio::time::sleep_until(tokio::time::Instant::from_std(when)).await;
}

/// Injects the scenario's faults while the load runs; returns when the last one is
/// healed.
async fn inject(
    scenario: Scenario,
    f: &mut Faulty<'_>,
    start: Instant,
    span: Duration,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x00c0_ffee);
    match scenario {
        Scenario::Baseline => f.log.push("none".into()),
        Scenario::ReceiverKill => {
            for k in 0..3 {
                at(
                    start,
                    span,
                    0.2 + 0.25 * f64::from(k) + rng.random_range(0.0..0.1),
                )
                .await;
                f.kill_receiver().await?;
            }
            f.log.push("3× receiver kill -9".into());
        }
        Scenario::WorkerKill => {
            for k in 0..5 {
                at(
                    start,
                    span,
                    0.1 + 0.16 * f64::from(k) + rng.random_range(0.0..0.1),
                )
                .await;
                f.kill_worker().await?;
            }
            f.log.push("5× worker kill -9".into());
        }
        Scenario::RabbitmqRestart => {
            at(start, span, 0.3).await;
            let down = f.rabbit_down(Duration::ZERO).await?;
            f.log.push(format!(
                "RabbitMQ restart ({:.1} s down)",
                down.as_secs_f64()
            ));
        }
        Scenario::RabbitmqOutage => {
            at(start, span, 0.2).await;
            let down = f.rabbit_down(Duration::from_secs(10)).await?;
            f.log
                .push(format!("RabbitMQ down {:.1} s", down.as_secs_f64()));
        }
        Scenario::RedisRestart => {
            at(start, span, 0.3).await;
            f.redis_down(Duration::from_secs(3)).await?;
            f.log.push("Redis kill -9, 3 s down".into());
        }
        Scenario::PostgresRestart => {
            at(start, span, 0.3).await;
            f.postgres_down(Duration::from_secs(3)).await?;
            f.log.push("PostgreSQL crash stop, 3 s down".into());
        }
        Scenario::PostgresOutage => {
            at(start, span, 0.3).await;
            f.postgres_down(Duration::from_secs(45)).await?;
            f.healed = Some(Instant::now());
            let replayed = f.replay_exhausted().await?;
            f.log.push(format!(
                "PostgreSQL crash stop, 45 s down; {replayed} parked messages replayed"
            ));
        }
        Scenario::BrokerPartition => {
            at(start, span, 0.3).await;
            f.partition(Duration::from_secs(6)).await?;
            f.log.push("broker partition 6 s".into());
        }
        Scenario::BrokerBlackhole => {
            at(start, span, 0.3).await;
            let freezer = f.freezer.context("no freezing proxy")?;
            freezer.freeze();
            tokio::time::sleep(Duration::from_secs(8)).await;
            freezer.thaw();
            f.log.push("broker link frozen 8 s".into());
        }
        Scenario::Combined => {
            at(start, span, 0.1).await;
            f.kill_worker().await?;
            at(start, span, 0.2).await;
            f.partition(Duration::from_secs(4)).await?;
            at(start, span, 0.35).await;
            let redis = f.redis_down(Duration::from_secs(2));
            let receiver = async {
                tokio::time::sleep(Duration::from_millis(700)).await;
            };
            let ((), r) = tokio::join!(receiver, redis);
            r?;
            f.kill_receiver().await?;
            at(start, span, 0.5).await;
            f.postgres_down(Duration::from_secs(2)).await?;
            f.kill_worker().await?;
            at(start, span, 0.65).await;
            let down = f.rabbit_down(Duration::from_secs(1)).await?;
            at(start, span, 0.85).await;
            f.kill_worker().await?;
            f.kill_receiver().await?;
            f.log.push(format!(
                "worker kill, partition 4 s, Redis 2 s, receiver kill, PostgreSQL 2 s, worker kill, RabbitMQ {:.1} s, worker + receiver kill",
                down.as_secs_f64()
            ));
        }
    }
    Ok(())
}

/// Waits until the transitions of `keys` are all in the ledger.
async fn applied_all(pool: &sqlx::PgPool, keys: &BTreeSet<String>, within: Duration) -> bool {
    payhook_testkit::harness::eventually_async(within, || async {
        match ledger(pool).await {
            Ok(ledger) => keys.is_subset(&ledger),
            Err(_) => false,
        }
    })
    .await
}

async fn ledger(pool: &sqlx::PgPool) -> sqlx::Result<BTreeSet<String>> {
    let keys: Vec<String> = sqlx::query_scalar("SELECT transition_key FROM transitions")
        .fetch_all(pool)
        .await?;
    Ok(keys.into_iter().collect())
}

/// Runs one scenario from scratch and accounts for it.
pub async fn run(scenario: Scenario, options: &Options) -> anyhow::Result<Row> {
    let started = Instant::now();
    let dir = services::temp_dir(&format!("run-{}", scenario.name()))?;
    let result = run_in(scenario, options, &dir, started).await;
    match result {
        Ok(mut row) => {
            if row.passed() && !options.keep {
                let _ = std::fs::remove_dir_all(&dir);
            } else {
                row.dir = Some(dir);
            }
            Ok(row)
        }
        Err(e) => Err(e.context(format!(
            "scenario {} (config and logs kept in {})",
            scenario.name(),
            dir.display()
        ))),
    }
}

async fn run_in(
    scenario: Scenario,
    options: &Options,
    dir: &Path,
    started: Instant,
) -> anyhow::Result<Row> {
    // A free port can be taken by someone else between our probe and the process's
    // bind: one more try with new ports before giving up.
    let mut env = match setup(scenario, options, dir).await {
        Ok(env) => env,
        Err(first) => {
            eprintln!(
                "chaos: {} setup failed, retrying once: {first:#}",
                scenario.name()
            );
            setup(scenario, options, dir).await?
        }
    };
    let load = Load {
        orders: options.orders,
        rate: options.rate,
        seed: options.seed,
        prefix: format!("{}-{}", scenario.name(), options.seed),
    };
    let span = load.duration();
    let load_start = Instant::now();
    let mut faulty = Faulty {
        receiver: &mut env.receiver,
        worker: &mut env.worker,
        rabbit: env.rabbit.as_ref(),
        redis: env.redis.as_ref(),
        pg: env.pg.as_ref(),
        proxy: env.proxy.as_ref(),
        freezer: env.freezer.as_ref(),
        admin_url: &env.admin_url,
        amqp_direct: &env.amqp_direct,
        names: &env.names,
        log: Vec::new(),
        healed: None,
    };
    let sim = &env.sim;
    let pool = &env.db.pool;
    let quiesce = options.quiesce_timeout;
    let faults_then_recovery = async {
        inject(scenario, &mut faulty, load_start, span, options.seed).await?;
        let healed = faulty.healed.unwrap_or_else(Instant::now);
        let keys = truth::truth_transitions(&sim.orders());
        let recovered = applied_all(pool, &keys, quiesce)
            .await
            .then(|| healed.elapsed());
        anyhow::Ok(recovered)
    };
    let (driven, recovered) = tokio::join!(load::drive(sim, &load), faults_then_recovery);
    driven?;
    let recover = recovered?;
    let faults = faulty.log.join("; ");

    let mut notes = Vec::new();
    // The processes must not have died on their own.
    for p in [&mut env.receiver, &mut env.worker] {
        if !p.alive() {
            notes.push(format!(
                "a {} process exited on its own",
                p.component().name()
            ));
            p.spawn()?;
            p.wait_ready(READY).await?;
        }
    }

    // Quiescence: deliveries over, the ledger at the truth, queues drained, outbox
    // relayed, every transition's event on the tap.
    let mut events: Vec<TapEvent> = Vec::new();
    let deadline = Instant::now() + quiesce;
    let converged = loop {
        if let Ok(taken) = env.view.take_events().await {
            events.extend(taken);
        }
        if quiet(&env, &mut events).await.unwrap_or(false) {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if let Ok(taken) = env.view.take_events().await {
        events.extend(taken);
    }
    let mut row = account(&mut env, &events).await?;
    row.scenario = scenario.name().to_owned();
    row.faults = faults;
    row.orders = options.orders;
    row.recover = recover;
    row.converged = converged;
    row.notes.extend(notes);
    if !converged {
        row.notes.push(format!(
            "not quiescent within {quiesce:?}: {:?}",
            env.sim.summary()
        ));
    }
    row.total = started.elapsed();
    if !row.passed() && env.pg.is_none() {
        env.db.keep = true;
        row.notes.push(format!(
            "database schema {} kept for a post-mortem",
            env.db.settings.schema
        ));
    }

    env.receiver.terminate(Duration::from_secs(10));
    env.worker.terminate(Duration::from_secs(20));
    let Env { sim, view, .. } = env;
    sim.stop().await;
    view.close().await;
    Ok(row)
}

/// Whether the run is quiescent (see [`run`]).
async fn quiet(env: &Env, events: &mut [TapEvent]) -> anyhow::Result<bool> {
    if env.sim.summary().in_flight > 0 {
        return Ok(false);
    }
    let orders = env.sim.orders();
    let expected = truth::orders_states(&orders);
    let actual = truth::payhook_states(&env.db.pool).await?;
    if expected != actual {
        return Ok(false);
    }
    let ledger = ledger(&env.db.pool).await?;
    if !truth::truth_transitions(&orders).is_subset(&ledger) {
        return Ok(false);
    }
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&env.db.pool)
            .await?;
    if unpublished > 0 {
        return Ok(false);
    }
    let announced: BTreeSet<&str> = events.iter().map(|e| e.transition_key.as_str()).collect();
    Ok(ledger.iter().all(|k| announced.contains(k.as_str())))
}

/// The accounting of a quiescent (or timed-out) run.
async fn account(env: &mut Env, events: &[TapEvent]) -> anyhow::Result<Row> {
    let pool = &env.db.pool;
    let merchant = env.sim.merchant().to_owned();
    let orders = env.sim.orders();
    let notifications = env.sim.notifications();
    let mut row = Row::default();

    // Delivery, from the simulator's records; per transition key.
    let mut acked_by_key: BTreeMap<String, usize> = BTreeMap::new();
    for n in &notifications {
        if !n.attempts.is_empty() {
            row.sent += 1;
        }
        row.requests += n.sent();
        row.unanswered += n.attempts.iter().filter(|a| a.status.is_none()).count();
        row.not_acked += n.attempts.iter().filter(|a| !a.acked).count();
        if n.acked {
            row.acked += 1;
            *acked_by_key
                .entry(truth::notification_transition(n, &merchant))
                .or_default() += 1;
        }
    }
    // What the worker recorded: one row per notification id.
    let recorded: Vec<(String, i64)> = sqlx::query_as(
        "SELECT transition_key, count(*) FROM notifications \
         WHERE source = 'notify' AND transition_key IS NOT NULL GROUP BY transition_key",
    )
    .fetch_all(pool)
    .await?;
    let recorded: BTreeMap<String, usize> = recorded
        .into_iter()
        .map(|(k, n)| (k, usize::try_from(n).unwrap_or(0)))
        .collect();
    for (key, acked) in &acked_by_key {
        let stored = recorded.get(key).copied().unwrap_or(0);
        row.applied += stored.min(*acked);
        row.lost += acked.saturating_sub(stored);
    }

    // The ledger against the truth.
    let expected_keys = truth::truth_transitions(&orders);
    let ledger = ledger(pool).await?;
    row.transitions = ledger.len();
    let missing: Vec<&String> = expected_keys.difference(&ledger).collect();
    let unexpected: Vec<&String> = ledger.difference(&expected_keys).collect();
    let expected = truth::orders_states(&orders);
    let actual = truth::payhook_states(pool).await?;
    let differing = truth::differing(&expected, &actual);
    let over_refunded = differing
        .iter()
        .filter(|(_, t, p)| p.is_some_and(|p| p.1 > t.1))
        .count();
    row.wrong = differing.len() + missing.len();
    if !differing.is_empty() {
        row.notes.push(format!(
            "{} orders differ from the truth (key, truth, payhook), e.g. {:?}",
            differing.len(),
            &differing[..differing.len().min(5)]
        ));
    }
    if !missing.is_empty() {
        row.notes.push(format!(
            "{} transitions missing, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    if !unexpected.is_empty() {
        row.notes.push(format!(
            "{} transitions not in the truth, e.g. {:?}",
            unexpected.len(),
            &unexpected[..unexpected.len().min(5)]
        ));
    }

    // Events: one CloudEvents id per transition; the same id again is a resend.
    let several_rows = truth::transitions_with_several_events(pool).await?;
    let mut ids_by_key: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in events {
        ids_by_key
            .entry(e.transition_key.as_str())
            .or_default()
            .insert(e.id.as_str());
    }
    let distinct: usize = ids_by_key.values().map(BTreeSet::len).sum();
    row.events_distinct = distinct;
    row.events_resent = events.len() - distinct;
    let extra_ids: usize = ids_by_key.values().map(|ids| ids.len() - 1).sum();
    row.events_missing = ledger
        .iter()
        .filter(|k| !ids_by_key.contains_key(k.as_str()))
        .count();
    if extra_ids > 0 {
        row.notes.push(format!(
            "{extra_ids} transitions announced under several ids"
        ));
    }
    row.duplicates =
        unexpected.len() + over_refunded + usize::try_from(several_rows).unwrap_or(0) + extra_ids;

    // Queues: nothing left to retry or to consume; only the poison parked.
    let names = env.names.clone();
    row.work_left = env.view.depth(&names.work).await?;
    for tier in 0..RETRY_TIERS {
        row.retry_left += env.view.depth(&names.retry(tier)).await?;
    }
    let parked = env.view.take_parked().await?;
    row.parked = parked.len();
    row.parked_unexpected = parked.iter().filter(|r| *r != "bad_envelope").count()
        + parked.len().saturating_sub(POISON);
    if row.parked_unexpected > 0 {
        row.notes.push(format!("parked: {parked:?}"));
    }
    Ok(row)
}
