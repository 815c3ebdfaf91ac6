//! `bench-pipeline`: the committed, reproducible end-to-end benchmark of payhook —
//! notification over HTTP → receiver → RabbitMQ → worker (Redis claim, one PostgreSQL
//! transaction, ack) → outbox relay → CloudEvent on `<prefix>.events` → a subscriber.
//!
//! It starts, in this process and through the production code paths, a receiver
//! ([`payhook_receiver::Application`] via the test harness) and `--workers` workers
//! ([`payhook_worker::Worker`] via [`TestWorker`]) against the real RabbitMQ, Redis and
//! PostgreSQL (a private schema, dropped at the end; a fresh broker prefix and Redis
//! key prefix, deleted at the end), plus a subscriber: a lapin consumer on a durable
//! queue bound with `#` to the events exchange. Before each phase it pre-generates the
//! phase's notifications — every one a NEW order (distinct `out_trade_no` and notify
//! id), so each is exactly one new transition and one downstream event — signed as the
//! providers sign them. Then it measures, per notification, the time from the HTTP send
//! to the arrival of its CloudEvent at the subscriber (matched on `subject` =
//! `out_trade_no`):
//!
//! - **fixed** — open loop at `--rate` notifications/s; latency from each
//!   notification's *scheduled* send time (no coordinated omission);
//! - **saturation** — closed loop with `--concurrency` loops. By default each loop
//!   sends its next notification when the previous one's downstream event arrived
//!   (`--closed-on event`: at most C notifications anywhere in the pipeline, so the
//!   rate is what the whole pipeline sustains, with no hidden backlog); with
//!   `--closed-on http` a loop goes on as soon as the receiver answered (the receiver
//!   outruns the worker and a backlog builds: an overload test).
//!
//! Throughput is downstream events received per second of the measured window. After
//! each phase the benchmark waits for the backlog to drain and checks it: work queue
//! empty, no unpublished outbox row, one event per acknowledged notification, no
//! duplicate CloudEvents `id`, no order with two different events.
//!
//! ```sh
//! cargo run --release -p payhook-bench --bin bench-pipeline -- --help
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use hdrhistogram::Histogram;
use lapin::options::{
    BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use payhook_bench::http1;
use payhook_bench::{
    Connections as _, Http1Pool, cores, post_notification, provider_answer, read, schedstat_ns,
    sleep_until, threads_of,
};
use payhook_shared::clock::SystemClock;
use payhook_shared::config::Settings;
use payhook_shared::event::Provider;
use payhook_shared::topology::Names;
use payhook_shared::wechat_v2::SignType as V2SignType;
use payhook_testkit::db::TestDb;
use payhook_testkit::harness::{self, Providers, TestBroker, TestReceiver};
use payhook_testkit::worker::{TestWorker, worker_settings};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio_util::task::TaskTracker;

const USAGE: &str = "\
bench-pipeline: end-to-end benchmark of payhook (receiver → RabbitMQ → worker →
PostgreSQL → outbox relay → downstream CloudEvent), all on this machine

USAGE:
    cargo run --release -p payhook-bench --bin bench-pipeline -- [OPTIONS]

OPTIONS:
    --phase <PHASE>                   fixed | saturation | both           [both]
    --rate <N>                        fixed phase: notifications/s, open loop [1000]
    --duration-secs <N>               measured seconds per phase         [20]
    --warmup-secs <N>                 unmeasured seconds before each phase [3]
    --concurrency <N>                 saturation: closed loops           [64]
    --closed-on <event|http>          saturation: a loop sends its next
                                      notification when the previous one's
                                      downstream event arrived (event), or
                                      when the receiver answered (http:
                                      overload, a backlog builds)        [event]
    --saturation-count <N>            notifications pre-generated for the
                                      saturation phase (each a new order)
                                      [3000 × (warmup + duration)]
    --connections <N>                 fixed: max HTTP requests in flight [64]
    --providers <LIST>                alipay | wechat_v3 | wechat_v2 | all, or a
                                      comma list                [alipay,wechat_v3]
    --workers <N>                     worker instances                   [1]
    --worker-concurrency <N>          worker.concurrency                 [64]
    --prefetch <N>                    worker.prefetch                    [128]
    --batch-max <N>                   worker.batch_max (1 = a transaction
                                      per message)                       [8]
    --batch-linger-ms <N>             worker.batch_linger_ms (0 = only what
                                      is ready at once)                  [2]
    --pg-connections <N>              postgres.max_connections per worker [16]
    --outbox-batch <N>                worker.outbox_batch                [200]
    --outbox-poll-ms <N>              worker.outbox_poll_ms              [500]
    --worker-threads <N>              worker tokio runtime threads       [cores]
    --receiver-workers <N>            receiver.workers (0 = all cores)   [0]
    --channels <N>                    amqp.publisher_channels            [4]
    --client-threads <N>              load generator runtime threads     [cores]
    --client <raw|reqwest>            load generator HTTP client: the lean
                                      keep-alive client or reqwest        [raw]
    --drain-secs <N>                  max wait after a phase for every
                                      acknowledged notification's event  [120]
    --log                             install the production JSON logger (info) on
                                      stdout, as the deployed services do
    --report <FILE>                   also write the markdown report to FILE
    --prune-every-secs <N>            soak: fixed phase runs the worker's retention
                                      pass every N s (0 = never)       [0]
    --prune-keep-secs <N>             soak: what those passes keep (notifications,
                                      published events), in seconds      [60]
    -h, --help                        this text

Services: PAYHOOK_TEST_AMQP_URL, PAYHOOK_TEST_REDIS_URL, PAYHOOK_TEST_DATABASE_URL
(defaults: the local RabbitMQ guest account, redis://127.0.0.1:6379,
postgres://postgres@127.0.0.1:5432/test).
";

// ---------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhaseSel {
    Fixed,
    Saturation,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClosedOn {
    Event,
    Http,
}

/// The load generator's HTTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientSel {
    /// [`http1::Conn`]: the request pre-serialised, one connection per loop (a quarter
    /// of reqwest's CPU per request, measured in BENCHMARKS.md, third round).
    Raw,
    Reqwest,
}

#[derive(Debug, Clone)]
struct Options {
    phase: PhaseSel,
    rate: u64,
    duration: u64,
    warmup: u64,
    concurrency: usize,
    closed_on: ClosedOn,
    saturation_count: Option<usize>,
    connections: usize,
    kinds: Vec<Kind>,
    providers_label: String,
    workers: usize,
    worker_concurrency: usize,
    batch_max: usize,
    batch_linger_ms: u64,
    prefetch: u16,
    pg_connections: u32,
    outbox_batch: u32,
    outbox_poll_ms: u64,
    worker_threads: usize,
    receiver_workers: usize,
    channels: usize,
    client_threads: usize,
    client: ClientSel,
    drain_secs: u64,
    log: bool,
    report: Option<PathBuf>,
    /// Soak: a retention pass every this many seconds during the fixed phase (0: none).
    prune_every: u64,
    /// Soak: the short retention those passes apply (notifications and published events).
    prune_keep: u64,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        phase: PhaseSel::Both,
        rate: 1000,
        duration: 20,
        warmup: 3,
        concurrency: 64,
        closed_on: ClosedOn::Event,
        saturation_count: None,
        connections: 64,
        kinds: vec![Kind::AlipayPayment, Kind::V3Transaction],
        providers_label: "alipay,wechat_v3".into(),
        workers: 1,
        worker_concurrency: 64,
        batch_max: 8,
        batch_linger_ms: 2,
        prefetch: 128,
        pg_connections: 16,
        outbox_batch: 200,
        outbox_poll_ms: 500,
        worker_threads: cores(),
        receiver_workers: 0,
        channels: 4,
        client_threads: cores(),
        client: ClientSel::Raw,
        drain_secs: 120,
        log: false,
        report: None,
        prune_every: 0,
        prune_keep: 60,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        match name.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--log" => {
                if inline.is_some() {
                    return Err("--log takes no value".into());
                }
                o.log = true;
                continue;
            }
            _ => {}
        }
        let value = match inline {
            Some(v) => v,
            None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        let number = |v: &str| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: not a number: {v:?}"))
        };
        let count = |v: &str| -> Result<usize, String> {
            Ok(usize::try_from(number(v)?.max(1)).unwrap_or(1))
        };
        match name.as_str() {
            "--phase" => {
                o.phase = match value.as_str() {
                    "fixed" => PhaseSel::Fixed,
                    "saturation" => PhaseSel::Saturation,
                    "both" => PhaseSel::Both,
                    other => return Err(format!("--phase: unknown phase {other:?}")),
                }
            }
            "--closed-on" => {
                o.closed_on = match value.as_str() {
                    "event" => ClosedOn::Event,
                    "http" => ClosedOn::Http,
                    other => return Err(format!("--closed-on: event or http, not {other:?}")),
                }
            }
            "--rate" => o.rate = number(&value)?.max(1),
            "--duration-secs" => o.duration = number(&value)?.max(1),
            "--warmup-secs" => o.warmup = number(&value)?,
            "--concurrency" => o.concurrency = count(&value)?,
            "--saturation-count" => o.saturation_count = Some(count(&value)?),
            "--connections" => o.connections = count(&value)?,
            "--workers" => o.workers = count(&value)?,
            "--worker-concurrency" => o.worker_concurrency = count(&value)?,
            "--batch-max" => o.batch_max = count(&value)?,
            "--batch-linger-ms" => o.batch_linger_ms = number(&value)?,
            "--prefetch" => o.prefetch = u16::try_from(count(&value)?).unwrap_or(u16::MAX),
            "--pg-connections" => {
                o.pg_connections = u32::try_from(count(&value)?).unwrap_or(u32::MAX);
            }
            "--outbox-batch" => o.outbox_batch = u32::try_from(count(&value)?).unwrap_or(1),
            "--outbox-poll-ms" => o.outbox_poll_ms = number(&value)?.max(1),
            "--worker-threads" => o.worker_threads = count(&value)?,
            "--receiver-workers" => {
                o.receiver_workers = usize::try_from(number(&value)?)
                    .map_err(|_| "--receiver-workers: too large".to_owned())?
            }
            "--channels" => o.channels = count(&value)?,
            "--client-threads" => o.client_threads = count(&value)?,
            "--client" => {
                o.client = match value.as_str() {
                    "raw" => ClientSel::Raw,
                    "reqwest" => ClientSel::Reqwest,
                    other => return Err(format!("--client: raw or reqwest, not {other:?}")),
                }
            }
            "--drain-secs" => o.drain_secs = number(&value)?.max(1),
            "--report" => o.report = Some(PathBuf::from(value)),
            "--prune-every-secs" => o.prune_every = number(&value)?,
            "--prune-keep-secs" => o.prune_keep = number(&value)?.max(1),
            "--providers" => {
                let mut list = Vec::new();
                for part in value.split(',').map(str::trim) {
                    match part {
                        "all" => list.extend(KINDS),
                        "alipay" => list.push(Kind::AlipayPayment),
                        "wechat_v3" => list.push(Kind::V3Transaction),
                        "wechat_v2" => list.push(Kind::V2Payment),
                        other => return Err(format!("--providers: unknown provider {other:?}")),
                    }
                }
                let mut seen = HashSet::new();
                list.retain(|k| seen.insert(*k));
                if list.is_empty() {
                    return Err("--providers: empty".into());
                }
                o.kinds = list;
                o.providers_label = value;
            }
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------
// Notification kinds and pre-generation
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    AlipayPayment,
    V3Transaction,
    V2Payment,
}

const KINDS: [Kind; 3] = [Kind::AlipayPayment, Kind::V3Transaction, Kind::V2Payment];

impl Kind {
    fn index(self) -> usize {
        self as usize
    }

    fn provider(self) -> Provider {
        match self {
            Self::AlipayPayment => Provider::Alipay,
            Self::V3Transaction => Provider::WechatV3,
            Self::V2Payment => Provider::WechatV2,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::AlipayPayment => "alipay payment (RSA2)",
            Self::V3Transaction => "wechat v3 transaction (RSA + AES-GCM)",
            Self::V2Payment => "wechat v2 payment (MD5)",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::AlipayPayment => "/notify/alipay/m1",
            Self::V3Transaction => "/notify/wechat/v3/m1",
            Self::V2Payment => "/notify/wechat/v2/m1",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::AlipayPayment => "application/x-www-form-urlencoded; charset=utf-8",
            Self::V3Transaction => "application/json",
            Self::V2Payment => "text/xml",
        }
    }
}

/// One ready-to-send notification (taken, i.e. sent, exactly once), in the form the
/// phase's client sends.
enum Request {
    /// For reqwest: headers and body.
    Parts { headers: HeaderMap, body: Vec<u8> },
    /// For the lean client: the whole request, head and body, as reqwest writes it.
    Raw(Vec<u8>),
}

/// The notifications of one phase, global indices `range`; notification `i` is of kind
/// `kinds[i % kinds.len()]` and names the order `pl-<run>-<i>`.
struct Batch {
    range: Range<usize>,
    kinds: Vec<Kind>,
    urls: Vec<reqwest::Url>,
    requests: Vec<Mutex<Option<Request>>>,
    /// When the APIv3 headers were signed (their timestamp must stay within ±300 s).
    signed_at: Instant,
    took: Duration,
}

impl Batch {
    fn kind(&self, i: usize) -> Kind {
        self.kinds[i % self.kinds.len()]
    }

    /// Takes notification `i` (global index) for sending.
    fn take(&self, i: usize) -> Option<(Kind, &reqwest::Url, Request)> {
        let request = self.requests[i - self.range.start]
            .lock()
            .expect("request lock")
            .take()?;
        let kind = self.kind(i);
        Some((kind, &self.urls[kind.index()], request))
    }
}

fn order_of(run: &str, i: usize) -> String {
    format!("pl-{run}-{i}")
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn headers_for(kind: Kind, extra: &[(String, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind.content_type()));
    for (name, value) in extra {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("signer header name"),
            HeaderValue::from_str(value).expect("signer header value"),
        );
    }
    headers
}

/// Notification `i`: a new order `pl-<run>-<i>`, paid, with a notify id unique to it;
/// serialised whole for the lean client when `raw_host` (the `Host` header) is given.
fn make_request(
    p: &Providers,
    run: &str,
    kind: Kind,
    i: usize,
    ts: i64,
    raw_host: Option<&str>,
) -> Request {
    let order = order_of(run, i);
    let id = format!("n-{run}-{i}");
    let body = match kind {
        Kind::AlipayPayment => p.alipay.payment(&order, 8_888, &id),
        Kind::V3Transaction => p.wechat_v3.transaction(&id, &order, 8_888, "SUCCESS"),
        Kind::V2Payment => {
            p.wechat_v2
                .payment(&order, 8_888, &format!("4200{run}{i:012}"), V2SignType::Md5)
        }
    };
    let extra = if kind == Kind::V3Transaction {
        p.wechat_v3.headers(ts, &body)
    } else {
        Vec::new()
    };
    let headers = headers_for(kind, &extra);
    match raw_host {
        Some(host) => {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.to_str().expect("ASCII header")))
                .collect();
            Request::Raw(http1::request_bytes(
                "POST",
                host,
                kind.path(),
                &headers,
                &body,
            ))
        }
        None => Request::Parts { headers, body },
    }
}

/// Signs the phase's notifications on every core, before anything is measured.
fn generate(
    p: &Providers,
    run: &str,
    kinds: &[Kind],
    range: Range<usize>,
    base: &str,
    client: ClientSel,
) -> Batch {
    let started = Instant::now();
    let ts = unix_now();
    let raw_host = match client {
        ClientSel::Raw => Some(base.strip_prefix("http://").expect("http base URL")),
        ClientSel::Reqwest => None,
    };
    let threads = cores();
    let len = range.len();
    let chunk = len.div_ceil(threads).max(1);
    let parts: Vec<Vec<Request>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let from = range.start + (t * chunk).min(len);
                let to = range.start + ((t + 1) * chunk).min(len);
                s.spawn(move || {
                    (from..to)
                        .map(|i| make_request(p, run, kinds[i % kinds.len()], i, ts, raw_host))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("generator thread"))
            .collect()
    });
    let requests = parts
        .into_iter()
        .flatten()
        .map(|r| Mutex::new(Some(r)))
        .collect();
    let urls = KINDS
        .iter()
        .map(|k| reqwest::Url::parse(&format!("{base}{}", k.path())).expect("receiver URL"))
        .collect();
    Batch {
        range,
        kinds: kinds.to_vec(),
        urls,
        requests,
        signed_at: started,
        took: started.elapsed(),
    }
}

// ---------------------------------------------------------------------------------
// Per-notification timeline
// ---------------------------------------------------------------------------------

/// The benchmark's time base: nanoseconds since `base` (0 = not yet), and the wall
/// clock at `base` to compare with database timestamps.
struct Clock {
    base: Instant,
    base_unix: f64,
}

impl Clock {
    fn new() -> Self {
        let base = Instant::now();
        let base_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        Self { base, base_unix }
    }

    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn now(&self) -> u64 {
        self.ns(Instant::now())
    }

    fn unix(&self, ns: u64) -> f64 {
        self.base_unix + ns as f64 / 1e9
    }
}

const OK: u8 = 1;
const FAILED: u8 = 2;

/// What happened to one notification (all times: [`Clock`] nanoseconds, 0 = never).
#[derive(Default)]
struct Slot {
    /// Scheduled send time (open loop) or send time (closed loop).
    due: AtomicU64,
    sent: AtomicU64,
    answered: AtomicU64,
    /// [`OK`] = the provider's success answer, [`FAILED`] = anything else.
    answer: AtomicU8,
    /// First arrival of its downstream event at the subscriber.
    event: AtomicU64,
    /// Downstream events received for this order (1 expected).
    events: AtomicU32,
    /// Low 64 bits of the first event's CloudEvents id.
    first_id: AtomicU64,
    /// Closed loop (`--closed-on event`) waiting for it: loop index + 1.
    owner: AtomicU32,
}

// ---------------------------------------------------------------------------------
// The subscriber: a lapin consumer on a durable queue bound `#` to the events exchange
// ---------------------------------------------------------------------------------

struct Tap {
    prefix: String,
    clock: Arc<Clock>,
    slots: Arc<Vec<Slot>>,
    wakers: Vec<Notify>,
    received: AtomicU64,
    duplicate_ids: AtomicU64,
    /// Orders that received events with two different CloudEvents ids: a second effect.
    double_effects: AtomicU64,
    foreign: AtomicU64,
    stop: AtomicBool,
}

#[derive(serde::Deserialize)]
struct CloudEventHead<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    subject: Option<std::borrow::Cow<'a, str>>,
}

impl Tap {
    fn handle(&self, data: &[u8], seen: &mut HashSet<u128>) {
        let now = self.clock.now();
        self.received.fetch_add(1, Ordering::Relaxed);
        let Ok(head) = serde_json::from_slice::<CloudEventHead<'_>>(data) else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let id = uuid::Uuid::parse_str(&head.id).map_or(0, |u| u.as_u128());
        if !seen.insert(id) {
            self.duplicate_ids.fetch_add(1, Ordering::Relaxed);
        }
        let index = head
            .subject
            .as_deref()
            .and_then(|s| s.strip_prefix(self.prefix.as_str()))
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&i| i < self.slots.len());
        let Some(i) = index else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let slot = &self.slots[i];
        let low = id as u64;
        if slot.events.fetch_add(1, Ordering::AcqRel) == 0 {
            slot.first_id.store(low, Ordering::Relaxed);
            slot.event.store(now, Ordering::Release);
            let owner = slot.owner.load(Ordering::Acquire);
            if owner > 0 {
                self.wakers[owner as usize - 1].notify_one();
            }
        } else if slot.first_id.load(Ordering::Relaxed) != low {
            self.double_effects.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the subscriber on its own thread and runtime; returns once it consumes.
fn start_tap(tap: Arc<Tap>, names: Names) -> std::thread::JoinHandle<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("tap".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tap runtime");
            rt.block_on(async move {
                let conn = Connection::connect(
                    &harness::amqp_url(),
                    ConnectionProperties::default().with_connection_name("bench-tap".into()),
                )
                .await
                .expect("tap connection");
                let ch = conn.create_channel().await.expect("tap channel");
                payhook_shared::topology::declare_events(&ch, &names)
                    .await
                    .expect("events exchange");
                // What a downstream subscriber declares: a durable queue (same name as
                // harness::EventsTap, so the topology cleanup deletes it).
                let queue = format!("{}.tap", names.prefix);
                ch.queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("tap queue");
                ch.queue_bind(
                    queue.as_str().into(),
                    names.events.as_str().into(),
                    "#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("tap binding");
                let mut consumer = ch
                    .basic_consume(
                        queue.as_str().into(),
                        "bench-tap".into(),
                        BasicConsumeOptions {
                            no_ack: true,
                            ..BasicConsumeOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .expect("basic.consume");
                let _ = ready_tx.send(());
                let mut seen = HashSet::new();
                while !tap.stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                        Ok(Some(Ok(delivery))) => tap.handle(&delivery.data, &mut seen),
                        Ok(Some(Err(e))) => {
                            eprintln!("subscriber error: {e}");
                            break;
                        }
                        Ok(None) => break,
                        Err(_idle) => {}
                    }
                }
                let _ = ch
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
                let _ = conn.close(200, "bench done".into()).await;
            });
        })
        .expect("tap thread");
    ready_rx
        .recv_timeout(Duration::from_secs(15))
        .expect("subscriber ready within 15 s");
    handle
}

// ---------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------

/// One HTTP connection of the load generator (reqwest's is a handle on its pool).
enum Http {
    Reqwest(reqwest::Client),
    Raw(http1::Conn),
}

/// Where the open loop's requests get their connections.
#[derive(Clone)]
enum Conns {
    Reqwest(reqwest::Client),
    Raw(Arc<Http1Pool>),
}

impl Conns {
    fn new(client: ClientSel, base: &str, max_idle: usize) -> Self {
        match client {
            ClientSel::Reqwest => Self::Reqwest(payhook_bench::client(max_idle)),
            ClientSel::Raw => Self::Raw(Arc::new(Http1Pool::new(receiver_addr(base)))),
        }
    }

    /// One loop's own connection.
    fn single(client: ClientSel, base: &str) -> Http {
        Self::new(client, base, 1).take()
    }

    fn take(&self) -> Http {
        match self {
            Self::Reqwest(c) => Http::Reqwest(c.clone()),
            Self::Raw(pool) => Http::Raw(pool.take()),
        }
    }

    fn give(&self, http: Http) {
        if let (Self::Raw(pool), Http::Raw(conn)) = (self, http) {
            pool.give(conn);
        }
    }
}

/// The receiver's socket address, from its `http://host:port` base URL.
fn receiver_addr(base: &str) -> std::net::SocketAddr {
    base.strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .expect("receiver base URL http://<ip>:<port>")
}

/// Sends one notification; `Ok` only for the provider's success answer.
async fn send(
    http: &mut Http,
    kind: Kind,
    url: &reqwest::Url,
    request: Request,
) -> Result<(), String> {
    match (http, request) {
        (Http::Reqwest(client), Request::Parts { headers, body }) => {
            post_notification(client, url, headers, body, kind.provider()).await
        }
        (Http::Raw(conn), Request::Raw(bytes)) => {
            let answer = conn.send(&bytes).await?;
            check(kind, answer.status, answer.body)
        }
        _ => Err("request generated for the other client".into()),
    }
}

/// `Ok` only for the provider's success answer.
fn check(kind: Kind, status: u16, body: &[u8]) -> Result<(), String> {
    provider_answer(kind.provider(), status, body)
}

/// Sends notification `i` and records its answer in its slot.
async fn send_one(
    http: &mut Http,
    batch: &Batch,
    slots: &[Slot],
    clock: &Clock,
    i: usize,
    errors: &Mutex<BTreeMap<String, u64>>,
) -> bool {
    let slot = &slots[i];
    let Some((kind, url, request)) = batch.take(i) else {
        return false;
    };
    slot.sent.store(clock.now(), Ordering::Relaxed);
    let r = send(http, kind, url, request).await;
    slot.answered.store(clock.now(), Ordering::Relaxed);
    match r {
        Ok(()) => {
            slot.answer.store(OK, Ordering::Release);
            true
        }
        Err(e) => {
            slot.answer.store(FAILED, Ordering::Release);
            *errors
                .lock()
                .expect("errors lock")
                .entry(format!("{}: {e}", kind.label()))
                .or_insert(0) += 1;
            false
        }
    }
}

// ---------------------------------------------------------------------------------
// CPU accounting (Linux /proc): where the two cores went during the measured window
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct CpuSnapshot {
    /// Nanoseconds of CPU per thread group of this process and per service.
    groups: BTreeMap<String, u64>,
    /// Jiffies of the whole machine: (busy, iowait, steal, total); busy excludes steal.
    system: Option<(u64, u64, u64, u64)>,
}

/// Pids of the processes named `comm` (e.g. every PostgreSQL backend).
fn pids_named(comm: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name().to_str()?.to_owned();
        name.parse::<u32>().ok()?;
        (read(&format!("/proc/{name}/comm"))?.trim() == comm).then_some(name)
    })
    .collect()
}

/// Thread ids whose role can only be told by when they appeared (lapin's I/O threads
/// and actix's HTTP workers of the receiver, the worker and the subscriber).
#[derive(Debug, Default)]
struct Roles {
    by_tid: BTreeMap<u32, &'static str>,
}

impl Roles {
    fn tids() -> HashSet<u32> {
        threads_of("self").into_iter().map(|t| t.0).collect()
    }

    /// Names the threads that appeared since `before`.
    fn claim(&mut self, before: &HashSet<u32>, lapin: &'static str, actix: &'static str) {
        for (tid, comm, _) in threads_of("self") {
            if before.contains(&tid) || self.by_tid.contains_key(&tid) {
                continue;
            }
            if comm.starts_with("lapin-io-loop") {
                self.by_tid.insert(tid, lapin);
            } else if comm.starts_with("actix") {
                self.by_tid.insert(tid, actix);
            }
        }
    }

    fn group(&self, tid: u32, comm: &str) -> &'static str {
        if let Some(role) = self.by_tid.get(&tid) {
            return role;
        }
        if comm.starts_with("receiver-rt") {
            "receiver: tokio runtime (publisher)"
        } else if comm.starts_with("worker-rt") {
            "worker: tokio runtime (consumer, apply, relay)"
        } else if comm.starts_with("loadgen") || comm.starts_with("pacer") {
            "load generator (HTTP client)"
        } else if comm.starts_with("tap") {
            "subscriber (events consumer)"
        } else {
            "other (bench main, setup)"
        }
    }
}

/// What each PostgreSQL process is, by pid: this run's backends (their
/// `application_name` is the test schema), the server's own processes by type, and
/// other clients' backends.
async fn pg_roles(pool: &PgPool, schema: &str) -> BTreeMap<String, String> {
    let rows: Vec<(i32, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT pid, application_name, backend_type FROM pg_stat_activity")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    rows.into_iter()
        .map(|(pid, app, kind)| {
            let kind = kind.unwrap_or_default();
            let label = if app.as_deref() == Some(schema) {
                "PostgreSQL: this run's backends (worker pool, bench checks)".to_owned()
            } else if kind == "client backend" {
                "PostgreSQL: other clients' backends".to_owned()
            } else {
                format!("PostgreSQL: {kind}")
            };
            (pid.to_string(), label)
        })
        .collect()
}

fn cpu_snapshot(roles: &Roles, pg: &BTreeMap<String, String>) -> CpuSnapshot {
    let mut groups = BTreeMap::new();
    for (tid, comm, ns) in threads_of("self") {
        *groups
            .entry(format!("bench: {}", roles.group(tid, &comm)))
            .or_insert(0) += ns;
    }
    for pid in pids_named("postgres") {
        let ns = schedstat_ns(&format!("/proc/{pid}/schedstat")).unwrap_or(0);
        let label = pg
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| "PostgreSQL: postmaster and others".to_owned());
        *groups.entry(format!("svc: {label}")).or_insert(0) += ns;
    }
    for (comm, label) in [
        ("beam.smp", "RabbitMQ (beam.smp)"),
        ("redis-server", "Redis"),
    ] {
        let ns: u64 = pids_named(comm)
            .iter()
            .flat_map(|pid| threads_of(pid))
            .map(|t| t.2)
            .sum();
        if ns > 0 {
            groups.insert(format!("svc: {label}"), ns);
        }
    }
    let system = read("/proc/stat").and_then(|s| {
        let line = s.lines().next()?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = *v.get(3)?;
        let iowait = *v.get(4)?;
        // Time the hypervisor gave this VM's vCPUs to someone else.
        let steal = *v.get(7)?;
        Some((total - idle - iowait - steal, iowait, steal, total))
    });
    CpuSnapshot { groups, system }
}

// ---------------------------------------------------------------------------------
// Services' own counters
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct PgSnapshot {
    commits: i64,
    wal_records: i64,
    wal_bytes: i64,
    wal_syncs: i64,
}

async fn pg_snapshot(pool: &PgPool) -> PgSnapshot {
    let row: Result<(i64, i64, i64, i64), _> = sqlx::query_as(
        "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
                wal_records, wal_bytes::bigint, wal_sync
         FROM pg_stat_wal",
    )
    .fetch_one(pool)
    .await;
    match row {
        Ok((commits, wal_records, wal_bytes, wal_syncs)) => PgSnapshot {
            commits,
            wal_records,
            wal_bytes,
            wal_syncs,
        },
        Err(e) => {
            eprintln!("pg_stat_wal not readable: {e}");
            PgSnapshot::default()
        }
    }
}

/// The worker outcomes we report, summed over the workers.
const OUTCOMES: [&str; 6] = [
    "applied",
    "duplicate",
    "duplicate_transition",
    "retried",
    "parked",
    "quarantined",
];

#[derive(Debug, Clone, Default)]
struct WorkerSnapshot {
    outcomes: [f64; OUTCOMES.len()],
    applied_latency_sum: f64,
    applied_latency_count: f64,
    receiver_acked: f64,
}

fn worker_snapshot(workers: &[TestWorker], receiver: &TestReceiver) -> WorkerSnapshot {
    let mut s = WorkerSnapshot::default();
    for w in workers {
        let text = w.shared.metrics.render();
        let m = |name: &str| harness::metric_value(&text, name);
        for (k, o) in OUTCOMES.iter().enumerate() {
            s.outcomes[k] += m(&format!("payhook_worker_events_total{{outcome=\"{o}\"}}"));
        }
        for p in ["alipay", "wechat_v2", "wechat_v3"] {
            s.applied_latency_sum += m(&format!(
                "payhook_notify_to_applied_seconds_sum{{provider=\"{p}\"}}"
            ));
            s.applied_latency_count += m(&format!(
                "payhook_notify_to_applied_seconds_count{{provider=\"{p}\"}}"
            ));
        }
    }
    let text = receiver.metrics.render();
    for p in ["alipay", "wechat_v2", "wechat_v3"] {
        s.receiver_acked += harness::metric_value(
            &text,
            &format!("payhook_notifications_total{{provider=\"{p}\",outcome=\"acked\"}}"),
        );
    }
    s
}

// ---------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------

struct Ctx<'a> {
    o: &'a Options,
    run: &'a str,
    clock: &'a Arc<Clock>,
    slots: &'a Arc<Vec<Slot>>,
    tap: &'a Arc<Tap>,
    roles: &'a Roles,
    client_rt: &'a tokio::runtime::Runtime,
    worker_rt: &'a tokio::runtime::Runtime,
    receiver: &'a TestReceiver,
    workers: &'a [TestWorker],
    db: &'a TestDb,
    broker: &'a TestBroker,
}

/// Everything observed during one phase's measured window.
struct Window {
    start: Instant,
    end: Instant,
    cpu: (CpuSnapshot, CpuSnapshot),
    pg: (PgSnapshot, PgSnapshot),
    worker: (WorkerSnapshot, WorkerSnapshot),
}

impl Ctx<'_> {
    fn snapshot(&self) -> (CpuSnapshot, PgSnapshot, WorkerSnapshot) {
        let (pg, pg_roles) = self.worker_rt.block_on(async {
            (
                pg_snapshot(&self.db.pool).await,
                pg_roles(&self.db.pool, self.db.schema()).await,
            )
        });
        let cpu = cpu_snapshot(self.roles, &pg_roles);
        let worker = worker_snapshot(self.workers, self.receiver);
        (cpu, pg, worker)
    }

    /// Sleeps until `start`, snapshots, sleeps until `end`, snapshots.
    fn observe(&self, start: Instant, end: Instant) -> Window {
        sleep_until(start);
        let (c0, p0, w0) = self.snapshot();
        sleep_until(end);
        let (c1, p1, w1) = self.snapshot();
        Window {
            start,
            end,
            cpu: (c0, c1),
            pg: (p0, p1),
            worker: (w0, w1),
        }
    }
}

struct Outcome {
    title: String,
    batch_range: Range<usize>,
    generated_in: Duration,
    open_loop: bool,
    window: Window,
    errors: BTreeMap<String, u64>,
    /// Closed loops that ran out of pre-generated notifications before the end.
    exhausted: bool,
    /// Closed loops (event mode) that gave up waiting for an event.
    event_timeouts: u64,
    /// Retention passes run during the phase (`--prune-every-secs`).
    prunes: Vec<PruneSample>,
}

/// One retention pass of a soak run.
struct PruneSample {
    start_ns: u64,
    end_ns: u64,
    report: Result<payhook_worker::retention::PassReport, String>,
    /// `pg_total_relation_size` of notifications and outbox after the pass, bytes.
    notifications_bytes: i64,
    outbox_bytes: i64,
    /// Rows in notifications and outbox after the pass.
    notifications_rows: i64,
    outbox_rows: i64,
}

/// Runs a retention pass every `--prune-every-secs` until `end`, with a retention of
/// `--prune-keep-secs` (the pass is run as of a shifted `now`: the configured days
/// minus the short retention).
fn start_pruner(
    ctx: &Ctx<'_>,
    until: Instant,
) -> Option<tokio::task::JoinHandle<Vec<PruneSample>>> {
    let o = ctx.o;
    if o.prune_every == 0 {
        return None;
    }
    let settings = payhook_shared::config::RetentionSettings {
        enabled: true,
        notifications_days: 3,
        published_events_days: 3,
        redact_buyer_after_days: 0,
        interval_secs: o.prune_every,
        batch: 1000,
    };
    let shift = time::Duration::days(3) - time::Duration::seconds(o.prune_keep as i64);
    let pool = ctx.db.pool.clone();
    let pruner = payhook_worker::retention::Retention::new(
        pool.clone(),
        settings,
        payhook_worker::metrics::Metrics::new(),
    );
    let clock = ctx.clock.clone();
    let every = Duration::from_secs(o.prune_every);
    Some(ctx.worker_rt.spawn(async move {
        // Deleted rows' space is reused once vacuumed. Where the server runs without
        // autovacuum (some test machines do), the soak vacuums the two tables after
        // each pass, as autovacuum would; the report says so.
        let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|_| "on".into());
        let vacuum = autovacuum != "on";
        let mut samples = Vec::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let mut next = Instant::now() + every;
        while next < until {
            tokio::time::sleep_until(next.into()).await;
            next += every;
            let start_ns = clock.now();
            let report = pruner
                .pass(time::OffsetDateTime::now_utc() + shift, &stop)
                .await
                .map_err(|e| e.to_string());
            let end_ns = clock.now();
            if vacuum {
                let _ = sqlx::query("VACUUM notifications, outbox")
                    .execute(&pool)
                    .await;
            }
            let size = |table: &'static str| {
                let pool = pool.clone();
                async move {
                    sqlx::query_scalar::<_, i64>("SELECT pg_total_relation_size($1::regclass)")
                        .bind(table)
                        .fetch_one(&pool)
                        .await
                        .unwrap_or(-1)
                }
            };
            let rows = |sql: &'static str| {
                let pool = pool.clone();
                async move {
                    sqlx::query_scalar::<_, i64>(sql)
                        .fetch_one(&pool)
                        .await
                        .unwrap_or(-1)
                }
            };
            samples.push(PruneSample {
                start_ns,
                end_ns,
                report,
                notifications_bytes: size("notifications").await,
                outbox_bytes: size("outbox").await,
                notifications_rows: rows("SELECT count(*) FROM notifications").await,
                outbox_rows: rows("SELECT count(*) FROM outbox").await,
            });
        }
        samples
    }))
}

/// Open loop: notification `i` is due at `start + i / rate`; the pacer thread submits
/// it at that time whatever happened to earlier ones; its latency counts from the due
/// time. At most `connections` requests are in flight; one waiting for a connection is
/// still charged from its due time.
fn run_fixed(ctx: &Ctx<'_>, batch: Batch) -> Outcome {
    let o = ctx.o;
    let batch = Arc::new(batch);
    let conns = Conns::new(o.client, &ctx.receiver.base_url, o.connections);
    let slots_sem = Arc::new(Semaphore::new(o.connections));
    let errors = Arc::new(Mutex::new(BTreeMap::new()));
    let tracker = TaskTracker::new();
    let start = Instant::now() + Duration::from_millis(100);
    let measure_start = start + Duration::from_secs(o.warmup);
    let measure_end = measure_start + Duration::from_secs(o.duration);
    let period_ns = 1e9 / o.rate as f64;
    let handle = ctx.client_rt.handle().clone();
    let pacer = {
        let (batch, slots, clock, errors, tracker, sem) = (
            batch.clone(),
            ctx.slots.clone(),
            ctx.clock.clone(),
            errors.clone(),
            tracker.clone(),
            slots_sem.clone(),
        );
        std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || {
                for (n, i) in batch.range.clone().enumerate() {
                    let due = start + Duration::from_nanos((n as f64 * period_ns) as u64);
                    sleep_until(due);
                    slots[i].due.store(clock.ns(due), Ordering::Relaxed);
                    let (batch, slots, clock, errors, sem, conns) = (
                        batch.clone(),
                        slots.clone(),
                        clock.clone(),
                        errors.clone(),
                        sem.clone(),
                        conns.clone(),
                    );
                    tracker.spawn_on(
                        async move {
                            let Ok(_permit) = sem.acquire().await else {
                                return;
                            };
                            let mut http = conns.take();
                            send_one(&mut http, &batch, &slots, &clock, i, &errors).await;
                            conns.give(http);
                        },
                        &handle,
                    );
                }
            })
            .expect("pacer thread")
    };
    let pruner = start_pruner(ctx, measure_end);
    let window = ctx.observe(measure_start, measure_end);
    pacer.join().expect("pacer");
    let prunes = pruner
        .map(|task| ctx.worker_rt.block_on(task).unwrap_or_default())
        .unwrap_or_default();
    tracker.close();
    ctx.client_rt.block_on(tracker.wait());
    let errors = errors.lock().expect("errors lock").clone();
    Outcome {
        title: format!(
            "fixed rate {} notifications/s, open loop, {} s measured after {} s warm-up, \
             ≤ {} HTTP requests in flight",
            o.rate, o.duration, o.warmup, o.connections
        ),
        batch_range: batch.range.clone(),
        generated_in: batch.took,
        open_loop: true,
        window,
        errors,
        exhausted: false,
        event_timeouts: 0,
        prunes,
    }
}

/// Closed loop: `concurrency` loops, one keep-alive connection each. In `event` mode a
/// loop waits for its notification's downstream event before sending the next one.
fn run_closed(ctx: &Ctx<'_>, batch: Batch) -> Outcome {
    let o = ctx.o;
    let batch = Arc::new(batch);
    let errors = Arc::new(Mutex::new(BTreeMap::new()));
    let start = Instant::now() + Duration::from_millis(100);
    let measure_start = start + Duration::from_secs(o.warmup);
    let measure_end = measure_start + Duration::from_secs(o.duration);
    let next = Arc::new(AtomicU64::new(batch.range.start as u64));
    let exhausted = Arc::new(AtomicBool::new(false));
    let timeouts = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for j in 0..o.concurrency {
        let (batch, next, slots, clock, tap, errors, exhausted, timeouts) = (
            batch.clone(),
            next.clone(),
            ctx.slots.clone(),
            ctx.clock.clone(),
            ctx.tap.clone(),
            errors.clone(),
            exhausted.clone(),
            timeouts.clone(),
        );
        let wait_event = o.closed_on == ClosedOn::Event;
        let mut http = Conns::single(o.client, &ctx.receiver.base_url);
        loops.push(ctx.client_rt.spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let owner = u32::try_from(j + 1).expect("loop count fits u32");
            loop {
                let now = Instant::now();
                if now >= measure_end {
                    break;
                }
                let i = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap_or(usize::MAX);
                if i >= batch.range.end {
                    exhausted.store(true, Ordering::Relaxed);
                    break;
                }
                let slot = &slots[i];
                slot.due.store(clock.ns(now), Ordering::Relaxed);
                if wait_event {
                    slot.owner.store(owner, Ordering::Release);
                }
                let ok = send_one(&mut http, &batch, &slots, &clock, i, &errors).await;
                if wait_event && ok {
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                    let waker = &tap.wakers[j];
                    while slot.event.load(Ordering::Acquire) == 0 {
                        if tokio::time::timeout_at(deadline, waker.notified())
                            .await
                            .is_err()
                        {
                            timeouts.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
        }));
    }
    let window = ctx.observe(measure_start, measure_end);
    for l in loops {
        ctx.client_rt.block_on(l).expect("closed loop task");
    }
    let errors = errors.lock().expect("errors lock").clone();
    let what = match o.closed_on {
        ClosedOn::Event => {
            "saturation, closed loop end to end (next notification when the previous one's \
             event arrived)"
        }
        ClosedOn::Http => {
            "overload, closed loop on the HTTP answer (next notification when the receiver \
             answered; the worker's backlog grows)"
        }
    };
    Outcome {
        title: format!(
            "{what}, {} loops, {} s measured after {} s warm-up",
            o.concurrency, o.duration, o.warmup
        ),
        batch_range: batch.range.clone(),
        generated_in: batch.took,
        open_loop: false,
        window,
        errors,
        exhausted: exhausted.load(Ordering::Relaxed),
        event_timeouts: timeouts.load(Ordering::Relaxed),
        prunes: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------
// After a phase: drain, check, break the latency down
// ---------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Checks {
    /// Time from the end of sending until the last acknowledged notification's event.
    drained_after: Option<Duration>,
    acked: u64,
    failed: u64,
    with_event: u64,
    /// Acknowledged, but no event within `--drain-secs`.
    lost: u64,
    /// Answered with a failure, yet an event came (allowed: stored but unconfirmed).
    event_despite_failure: u64,
    orders_with_several_events: u64,
    work_depth: u32,
    tap_depth: u32,
    parked_depth: u32,
    unrouted_depth: u32,
    outbox_unpublished: i64,
    notifications_rows: i64,
    outbox_rows: i64,
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

fn drain_and_check(ctx: &Ctx<'_>, range: &Range<usize>, sending_ended: Instant) -> Checks {
    let slots = &ctx.slots[range.clone()];
    let deadline = Instant::now() + Duration::from_secs(ctx.o.drain_secs);
    let pending = || {
        slots
            .iter()
            .filter(|s| {
                s.answer.load(Ordering::Acquire) == OK && s.event.load(Ordering::Acquire) == 0
            })
            .count()
    };
    while pending() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = Checks::default();
    let mut last_event = 0;
    for s in slots {
        let answer = s.answer.load(Ordering::Acquire);
        let event = s.event.load(Ordering::Acquire);
        match answer {
            OK => c.acked += 1,
            FAILED => c.failed += 1,
            _ => {}
        }
        if event > 0 {
            c.with_event += 1;
            last_event = last_event.max(event);
            if answer == FAILED {
                c.event_despite_failure += 1;
            }
        } else if answer == OK {
            c.lost += 1;
        }
        if s.events.load(Ordering::Relaxed) > 1 {
            c.orders_with_several_events += 1;
        }
    }
    if c.lost == 0 && last_event > 0 {
        let end = ctx.clock.ns(sending_ended);
        c.drained_after = Some(Duration::from_nanos(last_event.saturating_sub(end)));
    }
    let names = &ctx.receiver.names;
    let pool = &ctx.db.pool;
    ctx.worker_rt.block_on(async {
        // The relay marks rows after their confirms; give it a moment to settle.
        let _ = harness::eventually_async(Duration::from_secs(15), || async {
            count(
                pool,
                "SELECT count(*) FROM outbox WHERE published_at IS NULL",
            )
            .await
                == 0
                && ctx.broker.depth(&names.work).await == 0
        })
        .await;
        c.work_depth = ctx.broker.depth(&names.work).await;
        c.tap_depth = ctx.broker.depth(&format!("{}.tap", names.prefix)).await;
        c.parked_depth = ctx.broker.depth(&names.parked).await;
        c.unrouted_depth = ctx.broker.depth(&names.events_unrouted).await;
        c.outbox_unpublished = count(
            pool,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        )
        .await;
        c.notifications_rows = count(pool, "SELECT count(*) FROM notifications").await;
        c.outbox_rows = count(pool, "SELECT count(*) FROM outbox").await;
    });
    c
}

/// Per notification, from the database's own timestamps (same machine, same clock):
/// `received_at` (the receiver verified it), the worker transaction's start
/// (`notifications.recorded_at` = `now()`), and `outbox.published_at` (the relay's
/// mark, after the broker confirmed the event).
struct Stamps {
    received: f64,
    tx_start: f64,
    published: f64,
}

fn db_stamps(ctx: &Ctx<'_>, range: &Range<usize>) -> Vec<Option<Stamps>> {
    let rows: Vec<(String, f64, f64, Option<f64>)> = ctx
        .worker_rt
        .block_on(
            sqlx::query_as(
                "SELECT n.out_trade_no,
                        EXTRACT(EPOCH FROM n.received_at)::float8,
                        EXTRACT(EPOCH FROM n.recorded_at)::float8,
                        EXTRACT(EPOCH FROM o.published_at)::float8
                 FROM notifications n
                 JOIN transitions t ON t.event_id = n.event_id
                 JOIN outbox o ON o.transition_id = t.id
                 WHERE n.out_trade_no LIKE $1",
            )
            .bind(format!("pl-{}-%", ctx.run))
            .fetch_all(&ctx.db.pool),
        )
        .unwrap_or_else(|e| {
            eprintln!("stage query failed: {e}");
            Vec::new()
        });
    let mut out: Vec<Option<Stamps>> = range.clone().map(|_| None).collect();
    let prefix = format!("pl-{}-", ctx.run);
    for (order, received, tx_start, published) in rows {
        let Some(i) = order
            .strip_prefix(prefix.as_str())
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        if let (true, Some(published)) = (range.contains(&i), published) {
            out[i - range.start] = Some(Stamps {
                received,
                tx_start,
                published,
            });
        }
    }
    out
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs .. 300 s, 3 significant digits.
    Histogram::new_with_bounds(1, 300_000_000, 3).expect("histogram bounds")
}

fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record((ns / 1000).max(1));
}

fn record_secs(h: &mut Histogram<u64>, secs: f64) {
    h.saturating_record((secs * 1e6).max(1.0) as u64);
}

/// The measured notifications' latencies.
struct Latencies {
    /// due → event, per kind (index = Kind::index) and all.
    e2e: Vec<Histogram<u64>>,
    e2e_all: Histogram<u64>,
    http: Histogram<u64>,
    answer_to_event: Histogram<u64>,
    measured: Vec<u64>,
    measured_ok: Vec<u64>,
    measured_failed: Vec<u64>,
    measured_events: Vec<u64>,
    /// Events that arrived inside the window (whenever their notification was sent).
    events_in_window: u64,
    answers_ok_in_window: u64,
    /// Events per whole second of the window.
    per_second: Vec<u64>,
    stages: Vec<(&'static str, Histogram<u64>)>,
}

fn latencies(ctx: &Ctx<'_>, out: &Outcome, batch_kinds: &[Kind]) -> Latencies {
    let range = &out.batch_range;
    let slots = &ctx.slots[range.clone()];
    let ws = ctx.clock.ns(out.window.start);
    let we = ctx.clock.ns(out.window.end);
    let seconds = usize::try_from(ctx.o.duration).unwrap_or(1);
    let mut l = Latencies {
        e2e: KINDS.iter().map(|_| histogram()).collect(),
        e2e_all: histogram(),
        http: histogram(),
        answer_to_event: histogram(),
        measured: vec![0; KINDS.len()],
        measured_ok: vec![0; KINDS.len()],
        measured_failed: vec![0; KINDS.len()],
        measured_events: vec![0; KINDS.len()],
        events_in_window: 0,
        answers_ok_in_window: 0,
        per_second: vec![0; seconds],
        stages: Vec::new(),
    };
    let stamps = db_stamps(ctx, range);
    let mut stage = [histogram(), histogram(), histogram(), histogram()];
    for (n, s) in slots.iter().enumerate() {
        let kind = batch_kinds[(range.start + n) % batch_kinds.len()];
        let k = kind.index();
        let due = s.due.load(Ordering::Relaxed);
        let sent = s.sent.load(Ordering::Relaxed);
        let answered = s.answered.load(Ordering::Relaxed);
        let answer = s.answer.load(Ordering::Relaxed);
        let event = s.event.load(Ordering::Relaxed);
        if event >= ws && event < we {
            l.events_in_window += 1;
            let sec = usize::try_from((event - ws) / 1_000_000_000).unwrap_or(0);
            if let Some(b) = l.per_second.get_mut(sec) {
                *b += 1;
            }
        }
        if answer == OK && answered >= ws && answered < we {
            l.answers_ok_in_window += 1;
        }
        // Measured: scheduled (open loop) or sent (closed loop) inside the window.
        if due == 0 || due < ws || due >= we {
            continue;
        }
        l.measured[k] += 1;
        match answer {
            OK => l.measured_ok[k] += 1,
            _ => l.measured_failed[k] += 1,
        }
        if answered > 0 {
            record_ns(&mut l.http, answered.saturating_sub(due));
        }
        if event > 0 {
            l.measured_events[k] += 1;
            record_ns(&mut l.e2e[k], event.saturating_sub(due));
            record_ns(&mut l.e2e_all, event.saturating_sub(due));
            if answered > 0 {
                record_ns(&mut l.answer_to_event, event.saturating_sub(answered));
            }
            if let Some(st) = &stamps[n] {
                let sent_unix = ctx.clock.unix(sent.max(due));
                let event_unix = ctx.clock.unix(event);
                record_secs(&mut stage[0], st.received - sent_unix);
                record_secs(&mut stage[1], st.tx_start - st.received);
                record_secs(&mut stage[2], st.published - st.tx_start);
                record_secs(&mut stage[3], event_unix - st.published);
            }
        }
    }
    l.stages = vec![
        (
            "HTTP send → receiver verified it (`received_at`)",
            stage[0].clone(),
        ),
        (
            "receiver verified → worker transaction start (publish + confirm, queue, \
             Redis claim, pool)",
            stage[1].clone(),
        ),
        (
            "worker transaction start → outbox row marked published (apply, commit, \
             Redis done, ack, relay round incl. confirm)",
            stage[2].clone(),
        ),
        (
            "relay marked published → subscriber received (≤ 0 counted as 0: the event \
             can arrive before the relay's UPDATE)",
            stage[3].clone(),
        ),
    ];
    l
}

// ---------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

/// The soak's retention passes: each pass's work and the tables' sizes after it, and
/// the latency of notifications scheduled while a pass ran against the others.
fn render_prunes(out: &mut String, ctx: &Ctx<'_>, r: &Outcome) {
    if r.prunes.is_empty() {
        return;
    }
    let ws = ctx.clock.ns(r.window.start);
    let we = ctx.clock.ns(r.window.end);
    let (mut during, mut outside) = (histogram(), histogram());
    for s in &ctx.slots[r.batch_range.clone()] {
        let due = s.due.load(Ordering::Relaxed);
        let event = s.event.load(Ordering::Relaxed);
        if due < ws || due >= we || event == 0 {
            continue;
        }
        let pruning = r.prunes.iter().any(|p| due >= p.start_ns && due < p.end_ns);
        record_ns(
            if pruning { &mut during } else { &mut outside },
            event.saturating_sub(due),
        );
    }
    let _ = writeln!(
        out,
        "Soak: a retention pass every {} s keeping {} s of notifications and published \
         events (the worker's `Retention::pass`, batches of 1,000); when the server's \
         autovacuum is off, `VACUUM notifications, outbox` after each pass (as autovacuum \
         would), outside the pass's measured time.\n",
        ctx.o.prune_every, ctx.o.prune_keep
    );
    let _ = writeln!(
        out,
        "| notifications scheduled | count | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for (label, h) in [("while a pass ran", &during), ("between passes", &outside)] {
        let [p50, p90, p99, p999, max] = quantiles(h);
        let _ = writeln!(
            out,
            "| {label} | {} | {p50} | {p90} | {p99} | {p999} | {max} |",
            h.len()
        );
    }
    let _ = writeln!(
        out,
        "\n| pass at s | took ms | notifications deleted | events deleted | notifications rows | outbox rows | notifications MB | outbox MB |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let base = ctx.clock.ns(r.window.start);
    for p in &r.prunes {
        let at = (p.start_ns as f64 - base as f64) / 1e9;
        let took = (p.end_ns - p.start_ns) as f64 / 1e6;
        let (n, e) = match &p.report {
            Ok(report) => (
                report.notifications_deleted.to_string(),
                report.events_deleted.to_string(),
            ),
            Err(error) => (format!("error: {error}"), "-".into()),
        };
        let _ = writeln!(
            out,
            "| {at:.0} | {took:.1} | {n} | {e} | {} | {} | {:.1} | {:.1} |",
            p.notifications_rows,
            p.outbox_rows,
            p.notifications_bytes as f64 / 1e6,
            p.outbox_bytes as f64 / 1e6
        );
    }
    let _ = writeln!(out);
}

fn quantiles(h: &Histogram<u64>) -> [String; 5] {
    if h.is_empty() {
        return std::array::from_fn(|_| "-".to_owned());
    }
    [
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
    ]
}

#[expect(clippy::too_many_arguments, reason = "one table row")]
fn row(
    out: &mut String,
    label: &str,
    n: u64,
    ok: u64,
    failed: u64,
    events: u64,
    per_sec: f64,
    h: &Histogram<u64>,
) {
    let [p50, p90, p99, p999, max] = quantiles(h);
    let _ = writeln!(
        out,
        "| {label} | {n} | {ok} | {failed} | {events} | {} | {p50} | {p90} | {p99} \
         | {p999} | {max} |",
        if per_sec.is_nan() {
            "".to_owned()
        } else {
            format!("{per_sec:.0}")
        }
    );
}

fn render_phase(out: &mut String, ctx: &Ctx<'_>, r: &Outcome, kinds: &[Kind]) {
    // Drain first: the latencies need every event that is still coming.
    let checks = drain_and_check(ctx, &r.batch_range, r.window.end);
    let l = latencies(ctx, r, kinds);
    let secs = (r.window.end - r.window.start).as_secs_f64();
    let _ = writeln!(out, "\n### {}\n", r.title);
    render_prunes(out, ctx, r);
    let _ = writeln!(
        out,
        "{} notifications pre-generated (signed) in {:.1} s before the phase, each a new \
         order. Latency = arrival of the notification's CloudEvent at the subscriber − {}. \
         Rows: notifications {} inside the measured window.\n",
        r.batch_range.len(),
        r.generated_in.as_secs_f64(),
        if r.open_loop {
            "its scheduled send time (open loop: includes any wait for a connection)"
        } else {
            "its send time"
        },
        if r.open_loop { "scheduled" } else { "sent" },
    );
    let _ = writeln!(
        out,
        "| kind | notifications | provider success answers | failure answers | \
         events | events/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let total = |v: &[u64]| v.iter().sum::<u64>();
    row(
        out,
        "**all**",
        total(&l.measured),
        total(&l.measured_ok),
        total(&l.measured_failed),
        total(&l.measured_events),
        l.events_in_window as f64 / secs,
        &l.e2e_all,
    );
    if kinds.len() > 1 {
        for &kind in kinds {
            let k = kind.index();
            row(
                out,
                kind.label(),
                l.measured[k],
                l.measured_ok[k],
                l.measured_failed[k],
                l.measured_events[k],
                f64::NAN,
                &l.e2e[k],
            );
        }
    }
    let _ = writeln!(
        out,
        "\n**Throughput**: {} downstream events received inside the {:.0} s window = \
         **{:.0} events/s** end to end{} (the receiver answered {:.0} success/s in the same \
         window).",
        l.events_in_window,
        secs,
        l.events_in_window as f64 / secs,
        if r.exhausted {
            ", **not a limit: the loops ran out of notifications** (see the warning)"
        } else {
            ""
        },
        l.answers_ok_in_window as f64 / secs,
    );
    if !l.per_second.is_empty() {
        let mut sorted = l.per_second.clone();
        sorted.sort_unstable();
        let _ = writeln!(
            out,
            "Events per second of the window: min {} / median {} / max {}.",
            sorted[0],
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1]
        );
    }
    if r.exhausted {
        let warning = "the pre-generated notifications ran out before the end of the \
                       window: the loops stopped early and the machine idled for the rest \
                       of it, so the throughput and the CPU busy figures are understated — \
                       rerun with a larger `--saturation-count`";
        eprintln!("warning: {warning}");
        let _ = writeln!(out, "\n**Warning**: {warning}.");
    }
    if r.event_timeouts > 0 {
        let _ = writeln!(
            out,
            "\n**Warning**: {} loops gave up waiting 30 s for an event.",
            r.event_timeouts
        );
    }
    let [h50, h90, h99, h999, hmax] = quantiles(&l.http);
    let [a50, a90, a99, a999, amax] = quantiles(&l.answer_to_event);
    let _ = writeln!(
        out,
        "\n| part of the latency | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {} → provider answer (receiver: verify, publish, confirm) | {h50} | {h90} | \
         {h99} | {h999} | {hmax} |",
        if r.open_loop { "scheduled" } else { "sent" }
    );
    let _ = writeln!(
        out,
        "| provider answer → event at the subscriber (worker, relay) | {a50} | {a90} | \
         {a99} | {a999} | {amax} |"
    );
    for (label, h) in &l.stages {
        let [p50, p90, p99, p999, max] = quantiles(h);
        let _ = writeln!(
            out,
            "| *db clock:* {label} | {p50} | {p90} | {p99} | {p999} | {max} |"
        );
    }
    if r.errors.is_empty() {
        let _ = writeln!(out, "\nHTTP errors: none.");
    } else {
        let _ = writeln!(out, "\nHTTP errors (whole phase):");
        for (e, n) in &r.errors {
            let _ = writeln!(out, "- {n} × {e}");
        }
    }

    let tap = ctx.tap;
    let _ = writeln!(out, "\nBacklog and exactly-once checks after the phase:\n");
    let _ = writeln!(
        out,
        "- acknowledged notifications {} (failure answers {}); with their event {}; \
         acknowledged without an event after {} s: **{}**; events despite a failure \
         answer: {}",
        checks.acked,
        checks.failed,
        checks.with_event,
        ctx.o.drain_secs,
        checks.lost,
        checks.event_despite_failure
    );
    let _ = writeln!(
        out,
        "- backlog drained {} after the last send",
        checks.drained_after.map_or_else(
            || "— not completely".to_owned(),
            |d| format!("{:.2} s", d.as_secs_f64())
        )
    );
    let _ = writeln!(
        out,
        "- work queue depth {}, parked {}, subscriber queue {}, unrouted {}; outbox \
         unpublished rows {}",
        checks.work_depth,
        checks.parked_depth,
        checks.tap_depth,
        checks.unrouted_depth,
        checks.outbox_unpublished
    );
    let _ = writeln!(
        out,
        "- database (cumulative over the run): {} notification rows, {} outbox rows; \
         subscriber: {} events received in total",
        checks.notifications_rows,
        checks.outbox_rows,
        tap.received.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "- orders with more than one event: {}; duplicate CloudEvents ids (cumulative): \
         {}; orders with two different events (double effect, cumulative): {}; foreign \
         events: {}",
        checks.orders_with_several_events,
        tap.duplicate_ids.load(Ordering::Relaxed),
        tap.double_effects.load(Ordering::Relaxed),
        tap.foreign.load(Ordering::Relaxed)
    );

    let (w0, w1) = &r.window.worker;
    let delta = |k: usize| w1.outcomes[k] - w0.outcomes[k];
    let outcomes: Vec<String> = OUTCOMES
        .iter()
        .enumerate()
        .map(|(k, o)| format!("{o} {}", delta(k)))
        .collect();
    let applied_n = w1.applied_latency_count - w0.applied_latency_count;
    let _ = writeln!(
        out,
        "\nServices' own metrics over the window: receiver acked {}; worker outcomes: {}; \
         worker mean `received_at` → commit {:.1} ms.",
        w1.receiver_acked - w0.receiver_acked,
        outcomes.join(", "),
        if applied_n > 0.0 {
            (w1.applied_latency_sum - w0.applied_latency_sum) / applied_n * 1000.0
        } else {
            f64::NAN
        }
    );
    let (p0, p1) = r.window.pg;
    let commits = p1.commits - p0.commits;
    let syncs = p1.wal_syncs - p0.wal_syncs;
    let events = l.events_in_window.max(1) as f64;
    let _ = writeln!(
        out,
        "PostgreSQL over the window (whole server): {commits} commits ({:.2} per event), \
         {syncs} WAL fsyncs ({:.2} per commit: group commit), {:.1} WAL records and {:.1} \
         kB of WAL per event.",
        commits as f64 / events,
        if commits > 0 {
            syncs as f64 / commits as f64
        } else {
            f64::NAN
        },
        (p1.wal_records - p0.wal_records) as f64 / events,
        (p1.wal_bytes - p0.wal_bytes) as f64 / events / 1024.0,
    );

    let (c0, c1) = &r.window.cpu;
    let window_ns = (r.window.end - r.window.start).as_nanos() as f64;
    let _ = writeln!(
        out,
        "\nCPU during the window (100 % = one core; {} cores):\n",
        cores()
    );
    let _ = writeln!(out, "| consumer | CPU % | CPU µs per event |");
    let _ = writeln!(out, "|---|---:|---:|");
    let mut accounted = 0;
    for (g, ns1) in &c1.groups {
        let ns = ns1.saturating_sub(c0.groups.get(g).copied().unwrap_or(0));
        accounted += ns;
        let _ = writeln!(
            out,
            "| {g} | {:.1} | {:.0} |",
            ns as f64 / window_ns * 100.0,
            ns as f64 / events / 1000.0
        );
    }
    let _ = writeln!(
        out,
        "| *accounted* | {:.1} | {:.0} |",
        accounted as f64 / window_ns * 100.0,
        accounted as f64 / events / 1000.0
    );
    if let (Some((b0, i0, s0, t0)), Some((b1, i1, s1, t1))) = (c0.system, c1.system) {
        let jiffies = (t1 - t0).max(1) as f64;
        let busy = (b1 - b0) as f64 / jiffies * 100.0 * cores() as f64;
        let iowait = (i1 - i0) as f64 / jiffies * 100.0 * cores() as f64;
        let steal = (s1 - s0) as f64 / jiffies * 100.0 * cores() as f64;
        let _ = writeln!(out, "| *whole machine busy* | {busy:.1} | |");
        let _ = writeln!(
            out,
            "| *rest (kernel, softirq, other processes)* | {:.1} | |",
            busy - accounted as f64 / window_ns * 100.0
        );
        let _ = writeln!(out, "| *iowait (idle waiting on disk)* | {iowait:.1} | |");
        let _ = writeln!(
            out,
            "| *steal (vCPU time the hypervisor gave to other guests)* | {steal:.1} | |"
        );
    }
}

fn cpu_model() -> String {
    read("/proc/cpuinfo")
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn loadavg() -> String {
    read("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------

fn main() {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if o.log {
        payhook_shared::telemetry::init(payhook_shared::telemetry::LogFormat::Json, "info");
    }
    let load_at_start = loadavg();
    let receiver_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores())
        .thread_name("receiver-rt")
        .enable_all()
        .build()
        .expect("receiver runtime");
    let worker_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.worker_threads)
        .thread_name("worker-rt")
        .enable_all()
        .build()
        .expect("worker runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .expect("load generator runtime");

    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let providers = Providers::new();
    let mut settings = harness::test_settings();
    settings.receiver.workers = o.receiver_workers;
    settings.amqp.publisher_channels = o.channels;
    providers.register(&mut settings);

    let mut roles = Roles::default();
    let before = Roles::tids();
    let receiver =
        receiver_rt.block_on(TestReceiver::spawn(settings.clone(), Arc::new(SystemClock)));
    roles.claim(
        &before,
        "receiver: lapin I/O thread",
        "receiver: actix HTTP workers",
    );

    // Phase sizes: global indices [0, fixed) then [fixed, fixed + saturation).
    let run_fixed_phase = matches!(o.phase, PhaseSel::Fixed | PhaseSel::Both);
    let run_saturation = matches!(o.phase, PhaseSel::Saturation | PhaseSel::Both);
    let fixed_n = if run_fixed_phase {
        usize::try_from(o.rate * (o.warmup + o.duration)).expect("fits")
    } else {
        0
    };
    let saturation_n = if run_saturation {
        o.saturation_count
            .unwrap_or_else(|| usize::try_from(3000 * (o.warmup + o.duration)).expect("fits"))
    } else {
        0
    };
    let clock = Arc::new(Clock::new());
    let slots: Arc<Vec<Slot>> = Arc::new(
        (0..fixed_n + saturation_n)
            .map(|_| Slot::default())
            .collect(),
    );
    let tap = Arc::new(Tap {
        prefix: format!("pl-{run}-"),
        clock: clock.clone(),
        slots: slots.clone(),
        wakers: (0..o.concurrency).map(|_| Notify::new()).collect(),
        received: AtomicU64::new(0),
        duplicate_ids: AtomicU64::new(0),
        double_effects: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let before = Roles::tids();
    let tap_thread = start_tap(tap.clone(), receiver.names.clone());
    roles.claim(
        &before,
        "subscriber: lapin I/O thread",
        "other (bench main, setup)",
    );

    let db = worker_rt.block_on(TestDb::new());
    let defaults = Settings::from_toml("").expect("embedded defaults are valid");
    let mut ws = worker_settings(&settings, db.settings.clone());
    // Production values for what worker_settings shortens for tests.
    ws.worker.retry_delays_ms = defaults.worker.retry_delays_ms.clone();
    ws.postgres.acquire_timeout_ms = defaults.postgres.acquire_timeout_ms;
    ws.worker.concurrency = o.worker_concurrency;
    ws.worker.batch_max = o.batch_max;
    ws.worker.batch_linger_ms = o.batch_linger_ms;
    ws.worker.prefetch = o.prefetch;
    ws.worker.outbox_batch = o.outbox_batch;
    ws.worker.outbox_poll_ms = o.outbox_poll_ms;
    ws.postgres.max_connections = o.pg_connections;
    let before = Roles::tids();
    let workers: Vec<TestWorker> = worker_rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..o.workers {
            v.push(TestWorker::spawn(&ws).await);
        }
        v
    });
    roles.claim(
        &before,
        "worker: lapin I/O thread",
        "worker: admin listener (actix)",
    );
    let broker = worker_rt.block_on(TestBroker::connect());

    let ctx = Ctx {
        o: &o,
        run: &run,
        clock: &clock,
        slots: &slots,
        tap: &tap,
        roles: &roles,
        client_rt: &client_rt,
        worker_rt: &worker_rt,
        receiver: &receiver,
        workers: &workers,
        db: &db,
        broker: &broker,
    };

    let mut body = String::new();
    let mut phases = Vec::new();
    if run_fixed_phase {
        phases.push((PhaseSel::Fixed, 0..fixed_n));
    }
    if run_saturation {
        phases.push((PhaseSel::Saturation, fixed_n..fixed_n + saturation_n));
    }
    for (phase, range) in phases {
        eprintln!(
            "pre-generating {} notifications for the {phase:?} phase on {} threads …",
            range.len(),
            cores()
        );
        let batch = generate(
            &providers,
            &run,
            &o.kinds,
            range,
            &receiver.base_url,
            o.client,
        );
        eprintln!("generated in {:.1} s", batch.took.as_secs_f64());
        if o.kinds.contains(&Kind::V3Transaction)
            && batch.signed_at.elapsed().as_secs() + o.warmup + o.duration + 10 > 290
        {
            eprintln!(
                "error: APIv3 notifications must be sent within ±300 s of their signature; \
                 generation took too long — lower --saturation-count or --duration-secs"
            );
            std::process::exit(2);
        }
        // Let the machine settle after the signing burst.
        std::thread::sleep(Duration::from_secs(2));
        eprintln!("running {phase:?} phase …");
        let outcome = match phase {
            PhaseSel::Fixed => run_fixed(&ctx, batch),
            _ => run_closed(&ctx, batch),
        };
        eprintln!("draining and checking …");
        render_phase(&mut body, &ctx, &outcome, &o.kinds);
        // Let the relay and the broker settle between phases.
        std::thread::sleep(Duration::from_secs(2));
    }

    let mut out = String::new();
    let _ = writeln!(out, "## payhook pipeline benchmark\n");
    let _ = writeln!(
        out,
        "- machine: {} cores, {}; load average at start {load_at_start}; the load \
         generator, receiver, worker(s), subscriber, RabbitMQ, PostgreSQL and Redis all \
         run on this machine",
        cores(),
        cpu_model()
    );
    let _ = writeln!(
        out,
        "- receiver: production start-up (`payhook_receiver::Application`), \
         receiver.workers = {} (0 = cores), publisher runtime {} threads, \
         amqp.publisher_channels = {}",
        o.receiver_workers,
        cores(),
        o.channels
    );
    let _ = writeln!(
        out,
        "- worker: {} × `payhook_worker::Worker` on one tokio runtime of {} threads; \
         worker.concurrency = {}, worker.batch_max = {}, worker.batch_linger_ms = {}, worker.prefetch = {}, \
         postgres.max_connections = {} (per worker), worker.outbox_batch = {}, \
         worker.outbox_poll_ms = {}; logging {}",
        o.workers,
        o.worker_threads,
        o.worker_concurrency,
        o.batch_max,
        o.batch_linger_ms,
        o.prefetch,
        o.pg_connections,
        o.outbox_batch,
        o.outbox_poll_ms,
        if o.log {
            "JSON info (production)"
        } else {
            "off"
        }
    );
    let _ = writeln!(
        out,
        "- services: RabbitMQ {} (work queue: quorum), PostgreSQL 127.0.0.1:5432 schema \
         `{}` (synchronous_commit as configured on the server), Redis; subscriber: one \
         lapin consumer (no-ack) on a durable classic queue bound `#` to `{}`",
        harness::amqp_url().split('@').next_back().unwrap_or("?"),
        db.schema(),
        receiver.names.events
    );
    let _ = writeln!(
        out,
        "- load: HTTP/1.1 keep-alive ({}), {} client threads; providers = {} \
         (round-robin); every notification a new order paid once",
        match o.client {
            ClientSel::Raw => "lean client",
            ClientSel::Reqwest => "reqwest",
        },
        o.client_threads,
        o.providers_label
    );
    out.push_str(&body);
    let _ = writeln!(out, "\nLoad average at the end: {}.", loadavg());
    print!("{out}");
    if let Some(path) = &o.report
        && let Err(e) = std::fs::write(path, &out)
    {
        eprintln!("cannot write {}: {e}", path.display());
    }

    tap.stop.store(true, Ordering::Relaxed);
    let _ = tap_thread.join();
    worker_rt.block_on(async {
        for w in workers {
            w.stop().await;
        }
        broker.close().await;
    });
    // Stops the receiver and deletes the topology and Redis keys (TopologyCleanup).
    receiver_rt.block_on(receiver.stop());
    // Drops the schema.
    drop(db);
    drop(client_rt);
    drop(worker_rt);
    drop(receiver_rt);
}
