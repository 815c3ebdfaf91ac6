//! `bench-receiver`: the committed, reproducible load test of the payhook receiver.
//!
//! It starts a receiver exactly as production does ([`payhook_receiver::Application`]
//! through the test harness: real HTTP listener on `127.0.0.1:0`, real RabbitMQ with
//! publisher confirms to the quorum queue `<prefix>.work`, a fresh name prefix, the
//! three test merchants), pre-signs a pool of distinct notifications per provider
//! kind, and drives the receiver over HTTP/1.1 keep-alive connections:
//!
//! - **fixed** — open loop at `--rate` requests/s; each request has a scheduled send
//!   time and its latency is measured from that time (no coordinated omission: a
//!   stalled receiver is charged for every request that should have been sent);
//! - **saturation** — closed loop, `--concurrency` connections each sending the next
//!   request as soon as the previous answer arrived.
//!
//! A request counts as a success only when the answer is the provider's success
//! answer (Alipay `200 success`, WeChat APIv2 `200 <xml>…SUCCESS…`, APIv3 `204`);
//! anything else is an error and reported by kind. A background consumer drains the
//! work queue with auto-ack (what the worker does in production) so the broker's queue
//! does not grow without bound. The topology is deleted at the end.
//!
//! Each phase also reports where the CPU went (per thread group of this process, the
//! RabbitMQ node and the whole machine, from `/proc`) and the receiver's own view of
//! the window (its `/metrics` histograms), so a missed target can be attributed.
//! Diagnostic phases isolate the parts: `verify` (CPU of verification and envelope
//! serialization per kind), `broker` (the receiver's publisher alone) and `http`
//! (`GET /healthz`: the HTTP stack and the load generator alone). See BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release -p payhook-bench --bin bench-receiver -- --help
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use payhook_bench::http1;
use payhook_bench::{
    self as bench, Stats, Window, broker_pid, cores, cpu_model, histogram, ms, sleep_until,
    start_drain, system_jiffies, thread_cpu_ns, threads_of, transport_error,
};
use payhook_shared::clock::SystemClock;
use payhook_shared::error::VerifyError;
use payhook_shared::event::{Envelope, Provider, Source, VerifiedNotification};
use payhook_shared::wechat_v2::SignType as V2SignType;
use payhook_shared::wechat_v3::V3Headers;
use payhook_shared::{alipay, wechat_v2, wechat_v3};
use payhook_testkit::harness::{self, Providers, TestReceiver};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

const USAGE: &str = "\
bench-receiver: load test of the payhook receiver against the real RabbitMQ

USAGE:
    cargo run --release -p payhook-bench --bin bench-receiver -- [OPTIONS]

OPTIONS:
    --phase <PHASE>                   fixed | saturation | both           [both]
                                      diagnostics: verify (CPU per kind, in
                                      process, one thread), broker (the
                                      receiver's publisher alone, closed loop,
                                      --concurrency), http (GET /healthz,
                                      closed loop: the HTTP ceiling)
    --rate <N>                        fixed phase: requests/s, open loop [1000]
    --duration-secs <N>               measured seconds per phase         [20]
    --warmup-secs <N>                 unmeasured seconds before each phase [3]
    --concurrency <N>                 saturation: closed-loop connections [64]
    --connections <N>                 fixed: max connections (in flight) [64]
    --providers <LIST>                all | alipay | wechat_v2 | wechat_v3, or a
                                      comma list                         [all]
    --workers <N>                     receiver.workers (0 = all cores)   [0]
    --channels <N>                    amqp.publisher_channels            [4]
    --pool <N>                        distinct pre-signed bodies per kind [1000]
    --client-threads <N>              load generator runtime threads     [cores]
    --client <CLIENT>                 the load generator's HTTP client:  [raw]
                                      raw (lean HTTP/1.1 over tokio TCP,
                                      pre-serialised requests) | reqwest
    --log                             install the production JSON logger (info) on
                                      stdout, as the deployed receiver does
    --timeline                        also print latency per second of each phase
    --report <FILE>                   also write the markdown report to FILE
    -h, --help                        this text

The broker is PAYHOOK_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f).
";

// ---------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhaseSel {
    Fixed,
    Saturation,
    Both,
    Verify,
    Broker,
    Http,
}

/// The load generator's HTTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientSel {
    /// `payhook_bench::http1`: pre-serialised requests on plain tokio TCP streams.
    Raw,
    /// reqwest 0.12 (the client of the first two rounds).
    Reqwest,
}

impl ClientSel {
    fn describe(self) -> &'static str {
        match self {
            Self::Raw => {
                "HTTP/1.1 keep-alive, lean client (payhook_bench::http1: pre-serialised \
                 requests on tokio TCP streams; status line, Content-Length and body checked)"
            }
            Self::Reqwest => "HTTP/1.1 keep-alive, reqwest 0.12",
        }
    }
}

#[derive(Debug, Clone)]
struct Options {
    phase: PhaseSel,
    rate: u64,
    duration: u64,
    warmup: u64,
    concurrency: usize,
    connections: usize,
    providers: Vec<Provider>,
    providers_label: String,
    workers: usize,
    channels: usize,
    pool: usize,
    client_threads: usize,
    client: ClientSel,
    log: bool,
    timeline: bool,
    report: Option<PathBuf>,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        phase: PhaseSel::Both,
        rate: 1000,
        duration: 20,
        warmup: 3,
        concurrency: 64,
        connections: 64,
        providers: vec![Provider::Alipay, Provider::WechatV2, Provider::WechatV3],
        providers_label: "all".into(),
        workers: 0,
        channels: 4,
        pool: 1000,
        client_threads: cores(),
        client: ClientSel::Raw,
        log: false,
        timeline: false,
        report: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let flag = |name: &str| -> Result<(), String> {
            if inline.is_some() {
                Err(format!("{name} takes no value"))
            } else {
                Ok(())
            }
        };
        match name.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--log" => {
                flag("--log")?;
                o.log = true;
                continue;
            }
            "--timeline" => {
                flag("--timeline")?;
                o.timeline = true;
                continue;
            }
            _ => {}
        }
        const TAKES_VALUE: [&str; 13] = [
            "--phase",
            "--rate",
            "--duration-secs",
            "--warmup-secs",
            "--concurrency",
            "--connections",
            "--workers",
            "--channels",
            "--pool",
            "--client-threads",
            "--client",
            "--report",
            "--providers",
        ];
        if !TAKES_VALUE.contains(&name.as_str()) {
            return Err(format!("unknown option {name:?} (see --help)"));
        }
        let value = match inline {
            Some(v) => v,
            None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        let number = |v: &str| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: not a number: {v:?}"))
        };
        match name.as_str() {
            "--phase" => {
                o.phase = match value.as_str() {
                    "fixed" => PhaseSel::Fixed,
                    "saturation" => PhaseSel::Saturation,
                    "both" => PhaseSel::Both,
                    "verify" => PhaseSel::Verify,
                    "broker" => PhaseSel::Broker,
                    "http" => PhaseSel::Http,
                    other => return Err(format!("--phase: unknown phase {other:?}")),
                }
            }
            "--rate" => o.rate = number(&value)?.max(1),
            "--duration-secs" => o.duration = number(&value)?.max(1),
            "--warmup-secs" => o.warmup = number(&value)?,
            "--concurrency" => o.concurrency = usize::try_from(number(&value)?.max(1)).unwrap_or(1),
            "--connections" => o.connections = usize::try_from(number(&value)?.max(1)).unwrap_or(1),
            "--workers" => o.workers = usize::try_from(number(&value)?).unwrap_or(0),
            "--channels" => o.channels = usize::try_from(number(&value)?.max(1)).unwrap_or(1),
            "--pool" => o.pool = usize::try_from(number(&value)?.max(1)).unwrap_or(1),
            "--client-threads" => {
                o.client_threads = usize::try_from(number(&value)?.max(1)).unwrap_or(1);
            }
            "--client" => {
                o.client = match value.as_str() {
                    "raw" => ClientSel::Raw,
                    "reqwest" => ClientSel::Reqwest,
                    other => return Err(format!("--client: unknown client {other:?}")),
                }
            }
            "--report" => o.report = Some(PathBuf::from(value)),
            "--providers" => {
                let mut list = Vec::new();
                for part in value.split(',').map(str::trim) {
                    match part {
                        "all" => {
                            list.extend([Provider::Alipay, Provider::WechatV2, Provider::WechatV3])
                        }
                        "alipay" => list.push(Provider::Alipay),
                        "wechat_v2" => list.push(Provider::WechatV2),
                        "wechat_v3" => list.push(Provider::WechatV3),
                        other => return Err(format!("--providers: unknown provider {other:?}")),
                    }
                }
                list.dedup();
                if list.is_empty() {
                    return Err("--providers: empty".into());
                }
                o.providers = list;
                o.providers_label = value;
            }
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    if o.providers.contains(&Provider::WechatV3) && o.warmup + o.duration > 270 {
        return Err(
            "APIv3 notifications are signed before each phase and must stay within the \
             ±300 s window: keep --warmup-secs + --duration-secs ≤ 270"
                .into(),
        );
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------
// Notification kinds and the pre-signed pool
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AlipayPayment,
    AlipayRefund,
    V2Payment,
    V2Refund,
    V3Transaction,
    V3Refund,
}

const KINDS: [Kind; 6] = [
    Kind::AlipayPayment,
    Kind::AlipayRefund,
    Kind::V2Payment,
    Kind::V2Refund,
    Kind::V3Transaction,
    Kind::V3Refund,
];

/// The kinds' labels, indexed like [`KINDS`] (the [`Stats`] rows).
const LABELS: [&str; 6] = [
    Kind::AlipayPayment.label(),
    Kind::AlipayRefund.label(),
    Kind::V2Payment.label(),
    Kind::V2Refund.label(),
    Kind::V3Transaction.label(),
    Kind::V3Refund.label(),
];

impl Kind {
    fn index(self) -> usize {
        self as usize
    }

    fn provider(self) -> Provider {
        match self {
            Self::AlipayPayment | Self::AlipayRefund => Provider::Alipay,
            Self::V2Payment | Self::V2Refund => Provider::WechatV2,
            Self::V3Transaction | Self::V3Refund => Provider::WechatV3,
        }
    }

    const fn label(self) -> &'static str {
        match self {
            Self::AlipayPayment => "alipay payment (RSA2)",
            Self::AlipayRefund => "alipay refund (RSA2)",
            Self::V2Payment => "wechat v2 payment (MD5)",
            Self::V2Refund => "wechat v2 refund (AES-ECB req_info)",
            Self::V3Transaction => "wechat v3 transaction (RSA + AES-GCM)",
            Self::V3Refund => "wechat v3 refund (RSA + AES-GCM)",
        }
    }

    fn path(self) -> &'static str {
        match self.provider() {
            Provider::Alipay => "/notify/alipay/m1",
            Provider::WechatV2 => "/notify/wechat/v2/m1",
            Provider::WechatV3 => "/notify/wechat/v3/m1",
        }
    }

    fn content_type(self) -> &'static str {
        match self.provider() {
            Provider::Alipay => "application/x-www-form-urlencoded; charset=utf-8",
            Provider::WechatV2 => "text/xml",
            Provider::WechatV3 => "application/json",
        }
    }
}

/// One ready-to-send request.
struct Entry {
    url: reqwest::Url,
    headers: HeaderMap,
    body: &'static [u8],
    /// The same request serialised for the lean client (head and body).
    request: Vec<u8>,
}

/// The HTTP/1.1 request the lean client sends for `entry`: the same method, path,
/// headers and body as the reqwest client's.
fn request_bytes(host: &str, kind: Kind, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.to_str().expect("ASCII header value")))
        .collect();
    http1::request_bytes("POST", host, kind.path(), &headers, body)
}

/// Pre-signed requests: `entries[kind index]` holds `pool` distinct bodies.
struct Pool {
    kinds: Vec<Kind>,
    entries: Vec<Vec<Entry>>,
    v3_signed_at: Instant,
    /// The receiver's address (the lean client's connections).
    addr: SocketAddr,
}

impl Pool {
    /// The `i`-th request of a run: round-robin over the kinds, cycling the bodies.
    fn pick(&self, i: u64) -> (Kind, &Entry) {
        let k = self.kinds.len() as u64;
        let kind = self.kinds[(i % k) as usize];
        let list = &self.entries[kind.index()];
        let entry = &list[((i / k) % list.len() as u64) as usize];
        (kind, entry)
    }
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

/// A body for `kind` number `i`, with ids unique to this run.
fn make_body(p: &Providers, run: &str, kind: Kind, i: usize) -> Vec<u8> {
    let order = format!("bench-{run}-{}-{i}", kind.index());
    let id = format!("n-{run}-{}-{i}", kind.index());
    match kind {
        Kind::AlipayPayment => p.alipay.payment(&order, 8_888, &id),
        Kind::AlipayRefund => {
            p.alipay
                .refund(&order, 10_000, 3_000, &format!("r-{run}-{i}"), &id, false)
        }
        Kind::V2Payment => {
            p.wechat_v2
                .payment(&order, 8_888, &format!("4200{run}{i:010}"), V2SignType::Md5)
        }
        Kind::V2Refund => {
            p.wechat_v2
                .refund(&order, &format!("r-{run}-{i}"), 10_000, 3_000, "SUCCESS")
        }
        Kind::V3Transaction => p.wechat_v3.transaction(&id, &order, 8_888, "SUCCESS"),
        Kind::V3Refund => p.wechat_v3.refund(
            &id,
            &order,
            &format!("r-{run}-{i}"),
            10_000,
            3_000,
            "SUCCESS",
        ),
    }
}

/// Builds the pool on every core (RSA signing is slow), before any measurement.
fn build_pool(p: &Providers, kinds: &[Kind], size: usize, base: &str) -> Pool {
    let addr = base
        .strip_prefix("http://")
        .and_then(|h| h.parse().ok())
        .expect("receiver address");
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let jobs: Vec<(Kind, usize)> = kinds
        .iter()
        .flat_map(|&k| (0..size).map(move |i| (k, i)))
        .collect();
    let threads = cores();
    let ts = unix_now();
    let mut made: Vec<(Kind, usize, Vec<u8>, HeaderMap)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let jobs = &jobs;
                s.spawn(move || {
                    jobs.iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|&(kind, i)| {
                            let body = make_body(p, run, kind, i);
                            let extra = if kind.provider() == Provider::WechatV3 {
                                p.wechat_v3.headers(ts, &body)
                            } else {
                                Vec::new()
                            };
                            let headers = headers_for(kind, &extra);
                            (kind, i, body, headers)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("pool thread"))
            .collect()
    });
    made.sort_by_key(|(k, i, _, _)| (k.index(), *i));
    let host = base.strip_prefix("http://").expect("http base URL");
    let mut entries: Vec<Vec<Entry>> = (0..KINDS.len()).map(|_| Vec::new()).collect();
    for (kind, _, body, headers) in made {
        let url = reqwest::Url::parse(&format!("{base}{}", kind.path())).expect("receiver URL");
        let request = request_bytes(host, kind, &headers, &body);
        entries[kind.index()].push(Entry {
            url,
            headers,
            request,
            // The pool lives for the whole run; leaking it makes every send a zero-copy
            // `Body::from(&'static [u8])`.
            body: Vec::leak(body),
        });
    }
    Pool {
        kinds: kinds.to_vec(),
        entries,
        v3_signed_at: Instant::now(),
        addr,
    }
}

/// Re-signs the APIv3 headers with the current time (each phase must fit in ±300 s).
fn resign_v3(p: &Providers, pool: &mut Pool) {
    let ts = unix_now();
    let threads = cores();
    for kind in [Kind::V3Transaction, Kind::V3Refund] {
        let list = &mut pool.entries[kind.index()];
        if list.is_empty() {
            continue;
        }
        let chunk = list.len().div_ceil(threads);
        std::thread::scope(|s| {
            for part in list.chunks_mut(chunk) {
                s.spawn(move || {
                    for entry in part {
                        entry.headers = headers_for(kind, &p.wechat_v3.headers(ts, entry.body));
                        let host = entry.url.authority().to_owned();
                        entry.request = request_bytes(&host, kind, &entry.headers, entry.body);
                    }
                });
            }
        });
    }
    pool.v3_signed_at = Instant::now();
}

// ---------------------------------------------------------------------------------
// Sending and recording
// ---------------------------------------------------------------------------------

/// Sends one notification; `Ok` only for the provider's success answer.
async fn send(client: &reqwest::Client, kind: Kind, entry: &Entry) -> Result<(), String> {
    bench::post_notification(
        client,
        &entry.url,
        entry.headers.clone(),
        entry.body,
        kind.provider(),
    )
    .await
}

/// [`send`] with the lean client: the same request, the same check of the answer.
async fn send_raw(conn: &mut http1::Conn, kind: Kind, entry: &Entry) -> Result<(), String> {
    let answer = conn.send(&entry.request).await?;
    check(kind, answer.status, answer.body)
}

/// `Ok` only for the provider's success answer.
fn check(kind: Kind, status: u16, body: &[u8]) -> Result<(), String> {
    bench::provider_answer(kind.provider(), status, body)
}

// ---------------------------------------------------------------------------------
// CPU accounting (Linux /proc): where the two cores went during the measured window
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct CpuSnapshot {
    /// Nanoseconds of CPU per thread group of this process.
    groups: BTreeMap<&'static str, u64>,
    /// Nanoseconds of CPU of the RabbitMQ node (all its threads), if readable.
    broker: Option<u64>,
    /// Jiffies of the whole machine: (busy, total).
    system: Option<(u64, u64)>,
}

/// Thread ids of the receiver's own lapin I/O thread (the drain consumer has another).
#[derive(Debug, Default, Clone)]
struct ThreadRoles {
    receiver_lapin: HashSet<u32>,
}

fn group_of(comm: &str, tid: u32, roles: &ThreadRoles) -> &'static str {
    if comm.starts_with("actix-server") {
        "receiver: actix HTTP workers"
    } else if comm.starts_with("receiver-rt") {
        "receiver: tokio runtime (publisher)"
    } else if comm.starts_with("lapin-io-loop") {
        if roles.receiver_lapin.contains(&tid) {
            "receiver: lapin I/O thread"
        } else {
            "drain consumer"
        }
    } else if comm.starts_with("loadgen") || comm.starts_with("pacer") {
        "load generator"
    } else if comm.starts_with("drain") {
        "drain consumer"
    } else {
        "other (bench main, setup)"
    }
}

fn cpu_snapshot(roles: &ThreadRoles, broker: Option<&str>) -> CpuSnapshot {
    let mut groups = BTreeMap::new();
    for (tid, comm, ns) in threads_of("self") {
        *groups.entry(group_of(&comm, tid, roles)).or_insert(0) += ns;
    }
    let broker = broker.and_then(|pid| {
        let threads = threads_of(pid);
        (!threads.is_empty()).then(|| threads.iter().map(|t| t.2).sum())
    });
    let system = system_jiffies();
    CpuSnapshot {
        groups,
        broker,
        system,
    }
}

fn lapin_threads() -> HashSet<u32> {
    threads_of("self")
        .into_iter()
        .filter(|(_, comm, _)| comm.starts_with("lapin-io-loop"))
        .map(|(tid, _, _)| tid)
        .collect()
}

// ---------------------------------------------------------------------------------
// The receiver's own view (its /metrics), to split client and server latency
// ---------------------------------------------------------------------------------

/// Bucket bounds of the receiver's latency histograms (seconds) that the report shows.
const LE_BOUNDS: [&str; 7] = [
    "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064",
];

#[derive(Debug, Clone, Copy, Default)]
struct ServerSnapshot {
    acked: f64,
    /// Confirms (result `ack`) slower than 128 ms / 512 ms.
    confirms_over_128ms: f64,
    confirms_over_512ms: f64,
    /// Cumulative counts at [`LE_BOUNDS`]: publish→confirm (`ack`), and request
    /// start→success answer summed over the providers.
    confirm_le: [f64; LE_BOUNDS.len()],
    ack_le: [f64; LE_BOUNDS.len()],
    confirm_sum: f64,
    confirm_count: f64,
    ack_sum: f64,
    ack_count: f64,
}

fn server_snapshot(receiver: &TestReceiver) -> ServerSnapshot {
    let text = receiver.metrics.render();
    let m = |s: &str| harness::metric_value(&text, s);
    let confirm_count = m("payhook_confirm_latency_seconds_count{result=\"ack\"}");
    let bucket = |le: &str| {
        m(&format!(
            "payhook_confirm_latency_seconds_bucket{{le=\"{le}\",result=\"ack\"}}"
        ))
    };
    let mut s = ServerSnapshot {
        confirm_sum: m("payhook_confirm_latency_seconds_sum{result=\"ack\"}"),
        confirm_count,
        confirms_over_128ms: confirm_count - bucket("0.128"),
        confirms_over_512ms: confirm_count - bucket("0.512"),
        ..ServerSnapshot::default()
    };
    for (i, le) in LE_BOUNDS.iter().enumerate() {
        s.confirm_le[i] = bucket(le);
        s.ack_le[i] = ["alipay", "wechat_v2", "wechat_v3"]
            .iter()
            .map(|p| {
                m(&format!(
                    "payhook_ack_latency_seconds_bucket{{le=\"{le}\",provider=\"{p}\"}}"
                ))
            })
            .sum();
    }
    for p in ["alipay", "wechat_v2", "wechat_v3"] {
        s.acked += m(&format!(
            "payhook_notifications_total{{provider=\"{p}\",outcome=\"acked\"}}"
        ));
        s.ack_sum += m(&format!(
            "payhook_ack_latency_seconds_sum{{provider=\"{p}\"}}"
        ));
        s.ack_count += m(&format!(
            "payhook_ack_latency_seconds_count{{provider=\"{p}\"}}"
        ));
    }
    s
}

// ---------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------

struct PhaseResult {
    title: String,
    window: Duration,
    stats: Stats,
    cpu: (CpuSnapshot, CpuSnapshot),
    server: (ServerSnapshot, ServerSnapshot),
    drained: (u64, u64),
    open_loop: bool,
    kinds: Vec<Kind>,
    /// Per-kind rows make sense (not for GET /healthz).
    per_kind: bool,
}

struct Ctx<'a> {
    client_rt: &'a tokio::runtime::Runtime,
    receiver: &'a TestReceiver,
    roles: &'a ThreadRoles,
    broker_pid: Option<&'a str>,
    drained: &'a AtomicU64,
}

impl Ctx<'_> {
    /// Sleeps until `measure_start`, snapshots, sleeps until `measure_end`, snapshots.
    fn observe(
        &self,
        measure_start: Instant,
        measure_end: Instant,
    ) -> (
        (CpuSnapshot, CpuSnapshot),
        (ServerSnapshot, ServerSnapshot),
        (u64, u64),
    ) {
        sleep_until(measure_start);
        let c0 = cpu_snapshot(self.roles, self.broker_pid);
        let s0 = server_snapshot(self.receiver);
        let d0 = self.drained.load(Ordering::Relaxed);
        sleep_until(measure_end);
        let c1 = cpu_snapshot(self.roles, self.broker_pid);
        let s1 = server_snapshot(self.receiver);
        let d1 = self.drained.load(Ordering::Relaxed);
        ((c0, c1), (s0, s1), (d0, d1))
    }
}

/// Open loop at `--rate` ([`bench::open_loop`]): latency from each request's due
/// time, at most `--connections` in flight.
fn run_fixed(ctx: &Ctx<'_>, pool: &Arc<Pool>, o: &Options) -> PhaseResult {
    let window = Window::new(o.warmup, o.duration);
    let observe = || ctx.observe(window.measure_start, window.measure_end);
    let (stats, (cpu, server, drained)) = match o.client {
        ClientSel::Reqwest => {
            let pool = pool.clone();
            let sender = move |client: reqwest::Client, i: u64| {
                let pool = pool.clone();
                async move {
                    let (kind, entry) = pool.pick(i);
                    (kind.index(), send(&client, kind, entry).await)
                }
            };
            bench::open_loop(
                ctx.client_rt,
                window,
                o.rate,
                o.connections,
                &LABELS,
                Arc::new(sender),
                observe,
            )
        }
        ClientSel::Raw => {
            let connections = Arc::new(bench::Http1Pool::new(pool.addr));
            let pool = pool.clone();
            let sender = move |mut conn: http1::Conn, i: u64| {
                let pool = pool.clone();
                async move {
                    let (kind, entry) = pool.pick(i);
                    let r = send_raw(&mut conn, kind, entry).await;
                    (conn, kind.index(), r)
                }
            };
            bench::open_loop_with(
                ctx.client_rt,
                window,
                o.rate,
                o.connections,
                &LABELS,
                connections,
                Arc::new(sender),
                observe,
            )
        }
    };
    PhaseResult {
        title: format!(
            "fixed rate {} req/s, open loop, {} s measured after {} s warm-up, ≤ {} connections",
            o.rate, o.duration, o.warmup, o.connections
        ),
        window: window.measure_end - window.measure_start,
        stats,
        cpu,
        server,
        drained,
        open_loop: true,
        kinds: pool.kinds.clone(),
        per_kind: true,
    }
}

/// What a closed loop sends.
#[derive(Clone)]
enum Target {
    /// The notification pool over HTTP (the saturation phase).
    Notify,
    /// `GET /healthz` over HTTP: the HTTP stack alone.
    Healthz(reqwest::Url),
    /// The receiver's publisher alone, with envelopes verified beforehand.
    Publish(
        payhook_receiver::publisher::Publisher,
        Arc<Vec<(Kind, Envelope)>>,
    ),
}

async fn healthz(client: &reqwest::Client, url: &reqwest::Url) -> Result<(), String> {
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| transport_error(&e))?;
    let status = response.status().as_u16();
    response.bytes().await.map_err(|e| transport_error(&e))?;
    if status == 200 {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// The broker phase's request: publish envelope `i` and wait for its confirm.
async fn publish(
    publisher: &payhook_receiver::publisher::Publisher,
    envelopes: &[(Kind, Envelope)],
    i: u64,
) -> (Kind, Result<(), String>) {
    let (kind, envelope) = &envelopes[(i % envelopes.len() as u64) as usize];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let r = publisher
        .publish(envelope, deadline)
        .await
        .map_err(|e| format!("publish: {e}"));
    (*kind, r)
}

/// Closed loop ([`bench::closed_loop`]): `--concurrency` connections, each sending
/// its next request when the previous one was answered.
fn run_closed(ctx: &Ctx<'_>, pool: &Arc<Pool>, o: &Options, target: &Target) -> PhaseResult {
    let window = Window::new(o.warmup, o.duration);
    let observe = || ctx.observe(window.measure_start, window.measure_end);
    let (stats, (cpu, server, drained)) = match o.client {
        ClientSel::Reqwest => {
            let (pool, target) = (pool.clone(), target.clone());
            let sender = move |client: reqwest::Client, i: u64| {
                let (pool, target) = (pool.clone(), target.clone());
                async move {
                    let (kind, r) = match &target {
                        Target::Notify => {
                            let (kind, entry) = pool.pick(i);
                            (kind, send(&client, kind, entry).await)
                        }
                        Target::Healthz(url) => (pool.pick(i).0, healthz(&client, url).await),
                        Target::Publish(publisher, envelopes) => {
                            publish(publisher, envelopes, i).await
                        }
                    };
                    (kind.index(), r)
                }
            };
            bench::closed_loop(
                ctx.client_rt,
                window,
                o.concurrency,
                &LABELS,
                Arc::new(sender),
                observe,
            )
        }
        ClientSel::Raw => {
            let addr = pool.addr;
            let healthz_request = match target {
                Target::Healthz(url) => {
                    http1::request_bytes("GET", url.authority(), url.path(), &[], b"")
                }
                _ => Vec::new(),
            };
            let healthz_request: Arc<[u8]> = healthz_request.into();
            let (pool, target) = (pool.clone(), target.clone());
            let sender = move |mut conn: http1::Conn, i: u64| {
                let (pool, target, healthz_request) =
                    (pool.clone(), target.clone(), healthz_request.clone());
                async move {
                    let (kind, r) = match &target {
                        Target::Notify => {
                            let (kind, entry) = pool.pick(i);
                            (kind, send_raw(&mut conn, kind, entry).await)
                        }
                        Target::Healthz(_) => {
                            let r = match conn.send(&healthz_request).await {
                                Ok(a) if a.status == 200 => Ok(()),
                                Ok(a) => Err(format!("HTTP {}", a.status)),
                                Err(e) => Err(e),
                            };
                            (pool.pick(i).0, r)
                        }
                        Target::Publish(publisher, envelopes) => {
                            publish(publisher, envelopes, i).await
                        }
                    };
                    (conn, kind.index(), r)
                }
            };
            bench::closed_loop_with(
                ctx.client_rt,
                window,
                o.concurrency,
                &LABELS,
                || http1::Conn::new(addr),
                Arc::new(sender),
                observe,
            )
        }
    };
    let what = match target {
        Target::Notify => "saturation, closed loop over HTTP",
        Target::Healthz(_) => {
            "diagnostic: GET /healthz, closed loop over HTTP (no verify, no broker)"
        }
        Target::Publish(..) => {
            "diagnostic: the receiver's publisher alone (pre-verified envelopes, publish + \
             confirm, no HTTP), closed loop"
        }
    };
    PhaseResult {
        title: format!(
            "{what}, {} concurrent, {} s measured after {} s warm-up",
            o.concurrency, o.duration, o.warmup
        ),
        window: window.measure_end - window.measure_start,
        stats,
        cpu,
        server,
        drained,
        open_loop: false,
        kinds: pool.kinds.clone(),
        per_kind: !matches!(target, Target::Healthz(_)),
    }
}

/// The merchants' verification configuration, as the receiver builds it.
struct Verifiers {
    alipay: alipay::AlipayApp,
    wechat_v2: wechat_v2::V2Merchant,
    wechat_v3: wechat_v3::V3Merchant,
}

impl Verifiers {
    fn new(p: &Providers) -> Self {
        Self {
            alipay: p.alipay.app(),
            wechat_v2: p.wechat_v2.merchant(),
            wechat_v3: p.wechat_v3.merchant(),
        }
    }

    /// What `routes::verify` does for one request.
    fn verify(&self, kind: Kind, entry: &Entry) -> Result<VerifiedNotification, VerifyError> {
        match kind.provider() {
            Provider::Alipay => alipay::verify_notification(&self.alipay, entry.body),
            Provider::WechatV2 => wechat_v2::verify_notification(&self.wechat_v2, entry.body),
            Provider::WechatV3 => {
                let header = |name: &str| entry.headers.get(name).and_then(|v| v.to_str().ok());
                let headers = V3Headers {
                    timestamp: header("Wechatpay-Timestamp"),
                    nonce: header("Wechatpay-Nonce"),
                    signature: header("Wechatpay-Signature"),
                    serial: header("Wechatpay-Serial"),
                    signature_type: header("Wechatpay-Signature-Type"),
                };
                wechat_v3::verify_notification(&self.wechat_v3, &headers, entry.body, &SystemClock)
            }
        }
    }
}

fn envelope_of(verified: VerifiedNotification) -> Envelope {
    Envelope::from_verified(
        verified,
        Providers::MERCHANT,
        Source::Notify,
        time::OffsetDateTime::now_utc(),
        uuid::Uuid::now_v7().to_string(),
    )
}

/// The publish diagnostic's input: one verified envelope per pool entry, round-robin.
fn envelopes(pool: &Pool, v: &Verifiers) -> Vec<(Kind, Envelope)> {
    let n = pool.kinds.len() * pool.entries[pool.kinds[0].index()].len();
    (0..n as u64)
        .map(|i| {
            let (kind, entry) = pool.pick(i);
            let verified = v.verify(kind, entry).expect("pool entries verify");
            (kind, envelope_of(verified))
        })
        .collect()
}

/// CPU per request of the receiver's pure steps, on one thread, no I/O: provider
/// verification, then envelope construction + JSON serialization (the publish payload).
fn run_verify(pool: &Pool, v: &Verifiers) -> String {
    const PASSES: usize = 4;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## diagnostic: CPU per notification, one thread, in process (no HTTP, no broker)\n"
    );
    let _ = writeln!(
        out,
        "Thread CPU time (not wall time) over {PASSES} passes of the distinct bodies.\n"
    );
    let _ = writeln!(
        out,
        "| kind | ops | verify µs/op | envelope + JSON µs/op | payload bytes | \
         verify-only ops/s per core |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for &kind in &pool.kinds {
        let entries = &pool.entries[kind.index()];
        // Warm the caches first.
        for e in entries.iter().take(50) {
            let _ = v.verify(kind, e);
        }
        let (mut verify_ns, mut envelope_ns, mut bytes, mut ops) = (0u64, 0u64, 0usize, 0u64);
        for _ in 0..PASSES {
            let t0 = thread_cpu_ns();
            let verified: Vec<VerifiedNotification> = entries
                .iter()
                .map(|e| v.verify(kind, e).expect("pool entries verify"))
                .collect();
            let t1 = thread_cpu_ns();
            for n in verified {
                let payload = serde_json::to_vec(&envelope_of(n)).expect("envelope serializes");
                bytes += payload.len();
                ops += 1;
            }
            let t2 = thread_cpu_ns();
            verify_ns += t1 - t0;
            envelope_ns += t2 - t1;
        }
        let per = |ns: u64| ns as f64 / ops as f64 / 1000.0;
        let _ = writeln!(
            out,
            "| {} | {ops} | {:.1} | {:.1} | {} | {:.0} |",
            kind.label(),
            per(verify_ns),
            per(envelope_ns),
            bytes / ops as usize,
            1e6 / per(verify_ns),
        );
    }
    out
}

// ---------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------

fn row(out: &mut String, label: &str, h: &Histogram<u64>, ok: u64, err: u64, secs: f64) {
    let n = ok + err;
    let q = |x: f64| {
        if h.is_empty() {
            "-".to_owned()
        } else {
            ms(h.value_at_quantile(x))
        }
    };
    let _ = writeln!(
        out,
        "| {label} | {n} | {ok} | {err} | {:.1} | {} | {} | {} | {} | {} |",
        ok as f64 / secs,
        q(0.50),
        q(0.90),
        q(0.99),
        q(0.999),
        if h.is_empty() {
            "-".into()
        } else {
            ms(h.max())
        },
    );
}

fn render_phase(out: &mut String, r: &PhaseResult, timeline: bool) {
    let secs = r.window.as_secs_f64();
    let s = &r.stats;
    let _ = writeln!(out, "\n## {}\n", r.title);
    let basis = if r.open_loop {
        "latency = answer time − scheduled send time (includes any wait for a connection)"
    } else {
        "latency = answer time − send time"
    };
    let _ = writeln!(
        out,
        "{basis}; ok/s = provider success answers per second of the measured window.\n"
    );
    let _ = writeln!(
        out,
        "| kind | requests | ok | errors | ok/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut all = histogram();
    let (mut ok, mut err) = (0, 0);
    for &kind in &r.kinds {
        let k = kind.index();
        all.add(&s.latency[k]).expect("same bounds");
        ok += s.ok[k];
        err += s.errors[k];
    }
    row(out, "**all**", &all, ok, err, secs);
    if r.per_kind {
        for &kind in &r.kinds {
            let k = kind.index();
            row(out, kind.label(), &s.latency[k], s.ok[k], s.errors[k], secs);
        }
    }
    if r.open_loop && !s.service.is_empty() {
        let h = &s.service;
        let _ = writeln!(
            out,
            "\nService time (answer − actual send, excludes client-side scheduling): \
             p50 {} / p90 {} / p99 {} / p99.9 {} / max {} ms.",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
        );
    }
    if timeline {
        let _ = writeln!(out, "\nPer second of the window:\n");
        let _ = writeln!(out, "| second | requests | p50 ms | p99 ms | max ms |");
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
        for (i, h) in s.timeline.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {i} | {} | {} | {} | {} |",
                h.len(),
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max())
            );
        }
    }
    if s.error_kinds.is_empty() {
        let _ = writeln!(out, "\nErrors: none.");
    } else {
        let _ = writeln!(out, "\nErrors:");
        for (e, n) in &s.error_kinds {
            let _ = writeln!(out, "- {n} × {e}");
        }
    }
    let (s0, s1) = r.server;
    let acked = s1.acked - s0.acked;
    let confirm_n = s1.confirm_count - s0.confirm_count;
    let ack_n = s1.ack_count - s0.ack_count;
    let _ = writeln!(
        out,
        "\nReceiver's own metrics over the window: {acked} acked; mean publish→confirm \
         {:.3} ms; mean request start→success answer {:.3} ms.",
        if confirm_n > 0.0 {
            (s1.confirm_sum - s0.confirm_sum) / confirm_n * 1000.0
        } else {
            f64::NAN
        },
        if ack_n > 0.0 {
            (s1.ack_sum - s0.ack_sum) / ack_n * 1000.0
        } else {
            f64::NAN
        },
    );
    let _ = writeln!(
        out,
        "Publisher confirms slower than 128 ms: {}; slower than 512 ms: {}.",
        (s1.confirms_over_128ms - s0.confirms_over_128ms),
        (s1.confirms_over_512ms - s0.confirms_over_512ms),
    );
    let dist = |le1: &[f64], le0: &[f64], n: f64| -> String {
        LE_BOUNDS
            .iter()
            .zip(le1.iter().zip(le0))
            .map(|(b, (x1, x0))| {
                let ms = b.parse::<f64>().unwrap_or(0.0) * 1000.0;
                format!("≤{ms} ms {:.2} %", (x1 - x0) / n * 100.0)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if confirm_n > 0.0 {
        let _ = writeln!(
            out,
            "Receiver histogram, publish→confirm: {}.",
            dist(&s1.confirm_le, &s0.confirm_le, confirm_n)
        );
    }
    if ack_n > 0.0 {
        let _ = writeln!(
            out,
            "Receiver histogram, request start→success answer: {}.",
            dist(&s1.ack_le, &s0.ack_le, ack_n)
        );
    }
    let drained = r.drained.1 - r.drained.0;
    let _ = writeln!(
        out,
        "Drain consumer took {drained} messages off `<prefix>.work` in the window \
         ({:.1}/s).",
        drained as f64 / secs
    );
    let (c0, c1) = &r.cpu;
    let _ = writeln!(
        out,
        "\nCPU during the window (100 % = one core; {} cores):\n",
        cores()
    );
    let _ = writeln!(out, "| consumer | CPU % | CPU µs per ok request |");
    let _ = writeln!(out, "|---|---:|---:|");
    let pct = |ns: u64| ns as f64 / r.window.as_nanos() as f64 * 100.0;
    let per_ok = |ns: u64| {
        if ok == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}", ns as f64 / ok as f64 / 1000.0)
        }
    };
    let mut ours = 0;
    for (g, ns1) in &c1.groups {
        let ns = ns1.saturating_sub(c0.groups.get(g).copied().unwrap_or(0));
        ours += ns;
        let _ = writeln!(out, "| {g} | {:.1} | {} |", pct(ns), per_ok(ns));
    }
    let _ = writeln!(
        out,
        "| *bench process total* | {:.1} | {} |",
        pct(ours),
        per_ok(ours)
    );
    let mut accounted = ours;
    if let (Some(b0), Some(b1)) = (c0.broker, c1.broker) {
        let ns = b1.saturating_sub(b0);
        accounted += ns;
        let _ = writeln!(
            out,
            "| RabbitMQ (beam.smp, all threads) | {:.1} | {} |",
            pct(ns),
            per_ok(ns)
        );
    }
    if let (Some((b0, t0)), Some((b1, t1))) = (c0.system, c1.system) {
        let busy = (b1 - b0) as f64 / (t1 - t0).max(1) as f64 * 100.0 * cores() as f64;
        let _ = writeln!(out, "| *whole machine busy* | {busy:.1} | |");
        let rest = busy - pct(accounted);
        let _ = writeln!(
            out,
            "| *rest (kernel, softirq, other processes)* | {rest:.1} | |"
        );
    }
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
    let receiver_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores())
        .thread_name("receiver-rt")
        .enable_all()
        .build()
        .expect("receiver runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .expect("load generator runtime");

    let providers = Providers::new();
    let mut settings = harness::test_settings();
    settings.receiver.workers = o.workers;
    settings.amqp.publisher_channels = o.channels;
    providers.register(&mut settings);
    let prefix = settings.amqp.prefix.clone();
    let (workers, max_in_flight, ack_deadline) = (
        if o.workers == 0 { cores() } else { o.workers },
        settings.receiver.max_in_flight,
        settings.receiver.ack_deadline_ms,
    );

    let lapin_before = lapin_threads();
    let receiver = receiver_rt.block_on(TestReceiver::spawn(settings, Arc::new(SystemClock)));
    let roles = ThreadRoles {
        receiver_lapin: lapin_threads().difference(&lapin_before).copied().collect(),
    };
    let drained = Arc::new(AtomicU64::new(0));
    let stop_drain = Arc::new(AtomicBool::new(false));
    start_drain(
        receiver.names.work.clone(),
        drained.clone(),
        stop_drain.clone(),
    );

    let kinds: Vec<Kind> = KINDS
        .into_iter()
        .filter(|k| o.providers.contains(&k.provider()))
        .collect();
    eprintln!(
        "pre-signing {} bodies × {} kinds on {} threads …",
        o.pool,
        kinds.len(),
        cores()
    );
    let signing = Instant::now();
    let mut pool = build_pool(&providers, &kinds, o.pool, &receiver.base_url);
    let signing = signing.elapsed();
    eprintln!("pool ready in {:.1} s", signing.as_secs_f64());

    let broker_pid = broker_pid();
    let ctx = Ctx {
        client_rt: &client_rt,
        receiver: &receiver,
        roles: &roles,
        broker_pid: broker_pid.as_deref(),
        drained: &drained,
    };
    let mut results = Vec::new();
    let mut diagnostics = String::new();
    let verifiers = Verifiers::new(&providers);
    let phases: &[PhaseSel] = match o.phase {
        PhaseSel::Both => &[PhaseSel::Fixed, PhaseSel::Saturation],
        PhaseSel::Fixed => &[PhaseSel::Fixed],
        PhaseSel::Saturation => &[PhaseSel::Saturation],
        PhaseSel::Verify => &[PhaseSel::Verify],
        PhaseSel::Broker => &[PhaseSel::Broker],
        PhaseSel::Http => &[PhaseSel::Http],
    };
    for &phase in phases {
        // Re-sign the APIv3 headers so the whole phase is inside the ±300 s window.
        if kinds.iter().any(|k| k.provider() == Provider::WechatV3)
            && pool.v3_signed_at.elapsed() > Duration::from_secs(20)
        {
            resign_v3(&providers, &mut pool);
        }
        let shared = Arc::new(pool);
        eprintln!("running {phase:?} phase …");
        match phase {
            PhaseSel::Fixed => results.push(run_fixed(&ctx, &shared, &o)),
            PhaseSel::Saturation => results.push(run_closed(&ctx, &shared, &o, &Target::Notify)),
            PhaseSel::Http => {
                let url = reqwest::Url::parse(&receiver.url("/healthz")).expect("URL");
                results.push(run_closed(&ctx, &shared, &o, &Target::Healthz(url)));
            }
            PhaseSel::Broker => {
                let target = Target::Publish(
                    receiver.publisher.clone(),
                    Arc::new(envelopes(&shared, &verifiers)),
                );
                results.push(run_closed(&ctx, &shared, &o, &target));
            }
            PhaseSel::Verify => diagnostics.push_str(&run_verify(&shared, &verifiers)),
            PhaseSel::Both => unreachable!("expanded above"),
        }
        pool = Arc::try_unwrap(shared)
            .ok()
            .expect("every request of the phase has finished");
        // Let the drain consumer catch up between phases: every confirmed publish is a
        // message on the work queue (the broker phase publishes without HTTP).
        let confirmed = server_snapshot(&receiver).confirm_count as u64;
        let wait_until = Instant::now() + Duration::from_secs(30);
        while drained.load(Ordering::Relaxed) < confirmed && Instant::now() < wait_until {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    let final_confirmed = server_snapshot(&receiver).confirm_count as u64;
    let final_drained = drained.load(Ordering::Relaxed);

    let mut out = String::new();
    let _ = writeln!(out, "# payhook receiver benchmark\n");
    let _ = writeln!(
        out,
        "- machine: {} cores, {}; the load generator, the receiver and RabbitMQ all \
         run on this machine",
        cores(),
        cpu_model()
    );
    let _ = writeln!(
        out,
        "- receiver: payhook_receiver::Application (production start-up), workers = {} \
         (actix HTTP threads), publisher runtime {} threads, amqp.publisher_channels = {}, \
         max_in_flight = {max_in_flight}, ack_deadline_ms = {ack_deadline}, logging {}",
        workers,
        cores(),
        o.channels,
        if o.log {
            "JSON info (production)"
        } else {
            "off"
        }
    );
    let _ = writeln!(
        out,
        "- broker: {} — persistent mandatory publishes with publisher confirms to the \
         quorum queue `{prefix}.work`",
        harness::amqp_url().split('@').next_back().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "- work queue drained during the run by a separate no-ack consumer (as the \
         worker would consume it in production): {final_drained} of the \
         {final_confirmed} confirmed messages consumed by the end"
    );
    let _ = writeln!(
        out,
        "- load: {}, {} client runtime threads; providers = {}; \
         round-robin over {} kinds; {} distinct pre-signed bodies per kind (signed in \
         {:.1} s before measuring; APIv3 headers re-signed before each phase)",
        o.client.describe(),
        o.client_threads,
        o.providers_label,
        kinds.len(),
        o.pool,
        signing.as_secs_f64()
    );
    for r in &results {
        render_phase(&mut out, r, o.timeline);
    }
    out.push_str(&diagnostics);
    print!("{out}");
    if let Some(path) = &o.report
        && let Err(e) = std::fs::write(path, &out)
    {
        eprintln!("cannot write {}: {e}", path.display());
    }

    stop_drain.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    // Stops the receiver and deletes the topology (TopologyCleanup on drop).
    receiver_rt.block_on(receiver.stop());
    drop(client_rt);
    drop(receiver_rt);
}
