//! `bench-peer`: payhook's receiver against a conventional peer, in one go on this
//! machine (BENCHMARKS.md, "Peer comparison").
//!
//! The peer (`deploy/bench/peer-node`) is an Alipay notify endpoint written the way
//! the integration guides write one: Node.js `cluster` with one worker per core,
//! Express with `express.urlencoded()`, the official `alipay-sdk`'s
//! `checkNotifySignV2`, and `amqplib` with one confirm channel per worker, answering
//! `success` only in the publisher-confirm callback.
//!
//! The tool generates the Alipay test key at run time, declares the topology under a
//! fresh name prefix, starts both receivers as **separate processes** (payhook: this
//! binary re-executed as `serve-payhook`, which builds `payhook_receiver::Application`
//! as `payhook-receiver` does; the peer: `node server.js`, after `npm ci` when
//! `node_modules` is missing), checks that both verify (a tampered notification is
//! refused) and that the peer's success means a routed, confirmed message (an
//! unroutable publish is answered `fail`), then drives each with the **same**
//! pre-signed Alipay notifications (payment and partial refund, RSA2; only the URL
//! differs): closed loop at the same concurrency (saturation) and open loop at a fixed
//! rate. A no-ack consumer drains `<prefix>.work`; after every phase the number of
//! messages drained is compared with the number of `success` answers.
//!
//! ```sh
//! cargo run --release -p payhook-bench --bin bench-peer -- --help
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use payhook_bench::{
    self as bench, Stats, Window, broker_pid, children_of, cores, cpu_model, cpu_ns_of, ms, read,
    start_drain, system_jiffies, threads_of, transport_error,
};
use payhook_shared::clock::SystemClock;
use payhook_shared::config::{AlipaySettings, Material};
use payhook_shared::topology::{self, Names, QueuePolicy};
use payhook_sim::signer::alipay::AlipaySigner;
use payhook_testkit::harness::{self, TopologyCleanup};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "\
bench-peer: payhook's receiver against a conventional Node.js receiver (alipay-sdk +
amqplib confirm channel, cluster mode), same notifications, same RabbitMQ

USAGE:
    cargo run --release -p payhook-bench --bin bench-peer -- [OPTIONS]

OPTIONS:
    --phase <PHASE>          saturation | fixed | both                   [both]
    --rate <N>               fixed phase: notifications/s, open loop     [500]
    --duration-secs <N>      measured seconds per phase and receiver     [15]
    --warmup-secs <N>        unmeasured seconds before each              [3]
    --concurrency <N>        saturation: closed-loop connections         [64]
    --connections <N>        fixed: max connections (in flight)          [64]
    --pool <N>               distinct pre-signed bodies per kind         [1000]
    --workers <N>            payhook receiver.workers (0 = all cores)    [0]
    --peer-workers <N>       Node cluster workers (0 = all cores)        [0]
    --peer-first             drive the peer before payhook in each phase
    --peer-dir <DIR>         the peer                 [deploy/bench/peer-node]
    --node <PATH>            the node binary                             [node]
    --peer-verify <HOW>      sdk (the peer: alipay-sdk checkNotifySignV2) |
                             keyobject (diagnostic: one crypto.verify with a
                             cached key instead of the SDK call)         [sdk]
    --client-threads <N>     load generator runtime threads              [cores]
    --report <FILE>          also write the markdown report to FILE
    -h, --help               this text

Both receivers run as separate processes; logging per request is off for both.
The broker is PAYHOOK_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f).
";

const APP_ID: &str = "2021000117600001";
const SELLER_ID: &str = "2088102177000001";
const LABELS: [&str; 2] = ["alipay payment (RSA2)", "alipay refund (RSA2)"];
const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

// ---------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Saturation,
    Fixed,
}

#[derive(Debug, Clone)]
struct Options {
    phases: Vec<Phase>,
    rate: u64,
    duration: u64,
    warmup: u64,
    concurrency: usize,
    connections: usize,
    pool: usize,
    workers: usize,
    peer_workers: usize,
    peer_first: bool,
    peer_dir: PathBuf,
    node: String,
    peer_verify: String,
    client_threads: usize,
    report: Option<PathBuf>,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        phases: vec![Phase::Saturation, Phase::Fixed],
        rate: 500,
        duration: 15,
        warmup: 3,
        concurrency: 64,
        connections: 64,
        pool: 1000,
        workers: 0,
        peer_workers: 0,
        peer_first: false,
        peer_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/bench/peer-node"),
        node: "node".into(),
        peer_verify: "sdk".into(),
        client_threads: cores(),
        report: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (arg.as_str(), None),
        };
        match name {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--peer-first" => {
                o.peer_first = true;
                continue;
            }
            _ => {}
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value (see --help)"))?,
        };
        let number = |v: &str| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: not a number: {v:?}"))
        };
        let count = |v: &str| -> Result<usize, String> {
            usize::try_from(number(v)?).map_err(|_| format!("{name}: too large"))
        };
        match name {
            "--phase" => {
                o.phases = match value.as_str() {
                    "saturation" => vec![Phase::Saturation],
                    "fixed" => vec![Phase::Fixed],
                    "both" => vec![Phase::Saturation, Phase::Fixed],
                    other => return Err(format!("--phase: unknown phase {other:?}")),
                }
            }
            "--rate" => o.rate = number(&value)?.max(1),
            "--duration-secs" => o.duration = number(&value)?.max(1),
            "--warmup-secs" => o.warmup = number(&value)?,
            "--concurrency" => o.concurrency = count(&value)?.max(1),
            "--connections" => o.connections = count(&value)?.max(1),
            "--pool" => o.pool = count(&value)?.max(1),
            "--workers" => o.workers = count(&value)?,
            "--peer-workers" => o.peer_workers = count(&value)?,
            "--peer-dir" => o.peer_dir = PathBuf::from(value),
            "--node" => o.node = value,
            "--peer-verify" => {
                if !["sdk", "keyobject"].contains(&value.as_str()) {
                    return Err(format!("--peer-verify: unknown {value:?}"));
                }
                o.peer_verify = value;
            }
            "--client-threads" => o.client_threads = count(&value)?.max(1),
            "--report" => o.report = Some(PathBuf::from(value)),
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------
// The receivers under test
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Payhook,
    Peer,
}

impl Side {
    fn short(self) -> &'static str {
        match self {
            Self::Payhook => "payhook",
            Self::Peer => "peer",
        }
    }
}

/// A receiver running as a child process; stopped (and its children with it) on drop.
struct Server {
    side: Side,
    /// The notify URL the load is sent to.
    url: reqwest::Url,
    child: Child,
    /// The child and, for the Node cluster, its workers.
    pids: Vec<u32>,
}

impl Server {
    fn stop(&mut self) {
        // SIGTERM: payhook's child closes on stdin EOF as well; the Node primary stops
        // its workers (which also exit when the primary's IPC channel closes).
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads the child's stdout until a line starts with `marker` (returning the rest of
/// it), then keeps draining it in the background so the pipe never fills.
fn wait_ready(child: &mut Child, marker: &'static str, within: Duration) -> Result<String, String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix(marker)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(rest.trim().to_owned());
            } else if tx.is_some() {
                eprintln!("  | {line}");
            }
        }
    });
    match rx.recv_timeout(within) {
        Ok(rest) => Ok(rest),
        Err(_) => Err(format!("no {marker:?} line within {within:?}")),
    }
}

fn node_version(node: &str) -> String {
    Command::new(node)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

fn start_payhook(o: &Options, prefix: &str, public_key_b64: &str) -> Server {
    let exe = std::env::current_exe().expect("own executable");
    let mut child = Command::new(exe)
        .arg("serve-payhook")
        .env("BENCH_PEER_PREFIX", prefix)
        .env("BENCH_PEER_ALIPAY_PUBLIC_KEY", public_key_b64)
        .env("BENCH_PEER_WORKERS", o.workers.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("payhook child starts");
    let port = wait_ready(&mut child, "payhook ready on port", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("payhook: {e}"));
    let pid = child.id();
    Server {
        side: Side::Payhook,
        url: reqwest::Url::parse(&format!("http://127.0.0.1:{port}/notify/alipay/m1"))
            .expect("URL"),
        child,
        pids: vec![pid],
    }
}

fn start_peer(o: &Options, prefix: &str, public_key_b64: &str) -> Server {
    let dir = &o.peer_dir;
    assert!(
        dir.join("server.js").exists(),
        "no peer at {} (--peer-dir)",
        dir.display()
    );
    if !dir.join("node_modules").exists() {
        eprintln!(
            "installing the peer's packages: npm ci in {}",
            dir.display()
        );
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    let port = free_port();
    let workers = if o.peer_workers == 0 {
        cores()
    } else {
        o.peer_workers
    };
    let mut child = Command::new(&o.node)
        .arg("server.js")
        .current_dir(dir)
        .env("PEER_PORT", port.to_string())
        .env("PEER_WORKERS", workers.to_string())
        .env("ALIPAY_APP_ID", APP_ID)
        .env("ALIPAY_PUBLIC_KEY", public_key_b64)
        .env("AMQP_URL", harness::amqp_url())
        .env("PAYHOOK_PREFIX", prefix)
        .env("NODE_ENV", "production")
        .env("PEER_VERIFY", &o.peer_verify)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node starts (--node)");
    wait_ready(&mut child, "peer ready", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("peer: {e}"));
    let primary = child.id();
    let mut pids = vec![primary];
    pids.extend(children_of(primary));
    assert_eq!(pids.len(), workers + 1, "the Node primary and its workers");
    Server {
        side: Side::Peer,
        url: reqwest::Url::parse(&format!("http://127.0.0.1:{port}/notify/alipay")).expect("URL"),
        child,
        pids,
    }
}

/// `serve-payhook`: the payhook side as its own process. Builds
/// `payhook_receiver::Application` from the test defaults (`harness::test_settings`)
/// with the Alipay merchant `m1` trusting the given public key, on the given prefix,
/// on a multi-threaded tokio runtime with one thread per core (as `#[tokio::main]` in
/// `payhook-receiver`), logging off; serves until stdin closes or SIGTERM.
fn serve_payhook() {
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is required"));
    let mut settings = harness::test_settings();
    settings.amqp.prefix = env("BENCH_PEER_PREFIX");
    settings.receiver.workers = env("BENCH_PEER_WORKERS").parse().unwrap_or(0);
    settings.alipay.insert(
        "m1".into(),
        AlipaySettings {
            app_id: APP_ID.into(),
            alipay_public_key: Some(Material::Inline(env("BENCH_PEER_ALIPAY_PUBLIC_KEY"))),
            previous_alipay_public_key: None,
            alipay_cert: None,
            alipay_root_cert: None,
            app_cert: None,
            app_private_key: None,
            seller_id: Some(SELLER_ID.into()),
        },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores())
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let app = payhook_receiver::Application::build(&settings, Arc::new(SystemClock))
            .expect("receiver builds");
        let port = app.port();
        let publisher = app.publisher().clone();
        let shutdown = CancellationToken::new();
        tokio::spawn(payhook_shared::telemetry::on_shutdown_signal(
            shutdown.clone(),
        ));
        let on_eof = shutdown.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            on_eof.cancel();
        });
        let server = tokio::spawn(app.run_until_stopped(shutdown));
        assert!(
            publisher.wait_ready(Duration::from_secs(10)).await,
            "receiver did not connect to the broker within 10 s"
        );
        println!("payhook ready on port {port}");
        let _ = std::io::stdout().flush();
        let _ = server.await;
    });
}

// ---------------------------------------------------------------------------------
// The notifications
// ---------------------------------------------------------------------------------

/// `pool` payment and `pool` partial-refund notifications, each with its own order and
/// notify id, signed on every core before anything is measured.
fn build_pool(signer: &AlipaySigner, pool: usize) -> Arc<Vec<(usize, &'static [u8])>> {
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let threads = cores();
    let jobs: Vec<(usize, usize)> = (0..pool).flat_map(|i| [(0, i), (1, i)]).collect();
    let mut made: Vec<(usize, usize, Vec<u8>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let jobs = &jobs;
                s.spawn(move || {
                    jobs.iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|&(k, i)| {
                            let order = format!("peer-{run}-{k}-{i}");
                            let id = format!("n-{run}-{k}-{i}");
                            let body = if k == 0 {
                                signer.payment(&order, 8_888, &id)
                            } else {
                                signer.refund(
                                    &order,
                                    10_000,
                                    3_000,
                                    &format!("r-{run}-{i}"),
                                    &id,
                                    false,
                                )
                            };
                            (i, k, body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    });
    // Payment 0, refund 0, payment 1, …: both receivers get the same sequence.
    made.sort_by_key(|(i, k, _)| (*i, *k));
    Arc::new(
        made.into_iter()
            // Lives for the whole run: every send is a zero-copy `&'static` body.
            .map(|(_, k, body)| (k, &*Vec::leak(body)))
            .collect(),
    )
}

/// Posts one notification; `Ok` only for exactly `200` `success`.
async fn send(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: &'static [u8],
) -> Result<(), String> {
    let response = client
        .post(url.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static(FORM))
        .body(body)
        .send()
        .await
        .map_err(|e| transport_error(&e))?;
    let status = response.status().as_u16();
    let answer = response.bytes().await.map_err(|e| transport_error(&e))?;
    if status == 200 && answer.as_ref() == b"success" {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&answer[..answer.len().min(100)]).into_owned();
        Err(format!("HTTP {status} {text}"))
    }
}

// ---------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Cpu {
    /// CPU ns of the receiver under test (all its processes and threads).
    target: u64,
    /// CPU ns of the other receiver (idle during the window).
    idle_side: u64,
    /// CPU ns of this process: load generator and drain consumer.
    bench: u64,
    broker: Option<u64>,
    system: Option<(u64, u64)>,
}

struct Ctx<'a> {
    rt: &'a tokio::runtime::Runtime,
    broker_pid: Option<String>,
    drained: Arc<AtomicU64>,
    o: &'a Options,
    pool: Arc<Vec<(usize, &'static [u8])>>,
}

impl Ctx<'_> {
    fn cpu(&self, target: &Server, other: &Server) -> Cpu {
        Cpu {
            target: cpu_ns_of(&target.pids),
            idle_side: cpu_ns_of(&other.pids),
            bench: threads_of("self").iter().map(|t| t.2).sum(),
            broker: self
                .broker_pid
                .as_deref()
                .map(|p| threads_of(p).iter().map(|t| t.2).sum()),
            system: system_jiffies(),
        }
    }
}

struct Run {
    side: Side,
    phase: Phase,
    window: Duration,
    stats: Stats,
    cpu: (Cpu, Cpu),
    /// `success` answers over the whole phase, warm-up included.
    ok_all: u64,
    /// Other answers over the whole phase, warm-up included.
    failed_all: u64,
    /// Messages the drain consumer took off the work queue for this phase.
    drained: u64,
}

fn run(ctx: &Ctx<'_>, phase: Phase, target: &Server, other: &Server) -> Run {
    let window = Window::new(ctx.o.warmup, ctx.o.duration);
    let ok_all = Arc::new(AtomicU64::new(0));
    let failed_all = Arc::new(AtomicU64::new(0));
    let drained_before = ctx.drained.load(Ordering::Relaxed);
    let sender = {
        let (pool, url) = (ctx.pool.clone(), target.url.clone());
        let (ok_all, failed_all) = (ok_all.clone(), failed_all.clone());
        move |client: reqwest::Client, i: u64| {
            let (pool, url) = (pool.clone(), url.clone());
            let (ok_all, failed_all) = (ok_all.clone(), failed_all.clone());
            async move {
                let (k, body) = pool[(i % pool.len() as u64) as usize];
                let r = send(&client, &url, body).await;
                if r.is_ok() { &ok_all } else { &failed_all }.fetch_add(1, Ordering::Relaxed);
                (k, r)
            }
        }
    };
    let observe = || {
        bench::sleep_until(window.measure_start);
        let c0 = ctx.cpu(target, other);
        bench::sleep_until(window.measure_end);
        (c0, ctx.cpu(target, other))
    };
    let (stats, cpu) = match phase {
        Phase::Saturation => bench::closed_loop(
            ctx.rt,
            window,
            ctx.o.concurrency,
            &LABELS,
            Arc::new(sender),
            observe,
        ),
        Phase::Fixed => bench::open_loop(
            ctx.rt,
            window,
            ctx.o.rate,
            ctx.o.connections,
            &LABELS,
            Arc::new(sender),
            observe,
        ),
    };
    let (ok_all, failed_all) = (
        ok_all.load(Ordering::Relaxed),
        failed_all.load(Ordering::Relaxed),
    );
    // Every success answer must be a message on the work queue: wait for the drain.
    let until = Instant::now() + Duration::from_secs(30);
    while ctx.drained.load(Ordering::Relaxed) - drained_before < ok_all && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    // A failed answer after a late confirm may still have stored a message.
    std::thread::sleep(Duration::from_secs(1));
    Run {
        side: target.side,
        phase,
        window: window.measure_end - window.measure_start,
        stats,
        cpu,
        ok_all,
        failed_all,
        drained: ctx.drained.load(Ordering::Relaxed) - drained_before,
    }
}

// ---------------------------------------------------------------------------------
// Checks before measuring
// ---------------------------------------------------------------------------------

/// A signed payment notification with `total_amount` changed after signing.
fn tampered(signer: &AlipaySigner) -> Vec<u8> {
    let mut params = signer.payment_params("peer-tampered", 8_888, "n-tampered");
    for (k, v) in &mut params {
        if k == "total_amount" {
            *v = "0.01".into();
        }
    }
    AlipaySigner::form_body(&params)
}

fn answer(rt: &tokio::runtime::Runtime, url: &reqwest::Url, body: Vec<u8>) -> (u16, String) {
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(url.clone())
            .header(CONTENT_TYPE, FORM)
            .body(body)
            .send()
            .await
            .expect("receiver answers");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    })
}

// ---------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------

fn quantile(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        "-".into()
    } else {
        ms(h.value_at_quantile(q))
    }
}

struct Row {
    ok_s: f64,
    p50: u64,
    p99: u64,
}

fn summarize(r: &Run) -> Row {
    let (all, ok, _) = r.stats.total();
    Row {
        ok_s: ok as f64 / r.window.as_secs_f64(),
        p50: all.value_at_quantile(0.5),
        p99: all.value_at_quantile(0.99),
    }
}

fn render(out: &mut String, runs: &[Run]) {
    let _ = writeln!(
        out,
        "\n| phase | receiver | ok/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | \
         receiver CPU % (µs/ok) | RabbitMQ CPU % (µs/ok) | bench CPU % | machine busy % | rest % | \
         success answers / messages drained |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in runs {
        let (all, ok, err) = r.stats.total();
        let secs = r.window.as_secs_f64();
        let pct = |ns: u64| ns as f64 / r.window.as_nanos() as f64 * 100.0;
        let per_ok = |ns: u64| {
            if ok == 0 {
                f64::NAN
            } else {
                ns as f64 / ok as f64 / 1000.0
            }
        };
        let (c0, c1) = &r.cpu;
        let target = c1.target.saturating_sub(c0.target);
        let idle_side = c1.idle_side.saturating_sub(c0.idle_side);
        let own = c1.bench.saturating_sub(c0.bench);
        let broker = match (c0.broker, c1.broker) {
            (Some(b0), Some(b1)) => Some(b1.saturating_sub(b0)),
            _ => None,
        };
        let busy = match (c0.system, c1.system) {
            (Some(s0), Some(s1)) => Some(bench::machine_busy_pct(s0, s1)),
            _ => None,
        };
        let rest = busy.map(|b| b - pct(target + idle_side + own + broker.unwrap_or(0)));
        let phase = match r.phase {
            Phase::Saturation => "saturation",
            Phase::Fixed => "fixed",
        };
        let _ = writeln!(
            out,
            "| {phase} | {} | {:.1} | {} | {} | {} | {} | {} | {err} | {:.1} ({:.1}) | {} | {:.1} | {} | {} | {} / {} |",
            r.side.short(),
            ok as f64 / secs,
            quantile(&all, 0.5),
            quantile(&all, 0.9),
            quantile(&all, 0.99),
            quantile(&all, 0.999),
            if all.is_empty() {
                "-".into()
            } else {
                ms(all.max())
            },
            pct(target),
            per_ok(target),
            broker.map_or("-".into(), |b| format!("{:.1} ({:.1})", pct(b), per_ok(b))),
            pct(own),
            busy.map_or("-".into(), |b| format!("{b:.1}")),
            rest.map_or("-".into(), |x| format!("{x:.1}")),
            r.ok_all,
            r.drained,
        );
    }
    for r in runs {
        if !r.stats.error_kinds.is_empty() {
            let _ = writeln!(out, "\nErrors, {} {:?}:", r.side.short(), r.phase);
            for (e, n) in &r.stats.error_kinds {
                let _ = writeln!(out, "- {n} × {e}");
            }
        }
    }
    let _ = writeln!(out);
    for phase in [Phase::Saturation, Phase::Fixed] {
        let find = |side| runs.iter().find(|r| r.phase == phase && r.side == side);
        let (Some(p), Some(q)) = (find(Side::Payhook), find(Side::Peer)) else {
            continue;
        };
        let (a, b) = (summarize(p), summarize(q));
        let _ = writeln!(
            out,
            "- {}: payhook/peer throughput **{:.2}×** ({:.1} vs {:.1} ok/s); p99 payhook {} ms vs \
             peer {} ms ({}); p50 {} vs {} ms.",
            match phase {
                Phase::Saturation => "saturation",
                Phase::Fixed => "fixed rate",
            },
            a.ok_s / b.ok_s.max(f64::MIN_POSITIVE),
            a.ok_s,
            b.ok_s,
            ms(a.p99),
            ms(b.p99),
            if a.p99 < b.p99 {
                "payhook lower"
            } else {
                "payhook NOT lower"
            },
            ms(a.p50),
            ms(b.p50),
        );
    }
    let sat = |side| {
        runs.iter()
            .find(|r| r.phase == Phase::Saturation && r.side == side)
            .map(summarize)
    };
    if let (Some(a), Some(b)) = (sat(Side::Payhook), sat(Side::Peer)) {
        let fixed_p99 = |side| {
            runs.iter()
                .find(|r| r.phase == Phase::Fixed && r.side == side)
                .map(|r| summarize(r).p99)
        };
        let lower = a.p99 < b.p99
            && match (fixed_p99(Side::Payhook), fixed_p99(Side::Peer)) {
                (Some(x), Some(y)) => x < y,
                _ => true,
            };
        let ratio = a.ok_s / b.ok_s.max(f64::MIN_POSITIVE);
        let _ = writeln!(
            out,
            "- target (payhook ≥ 5× the peer's throughput at a lower p99): **{}** \
             (ratio {ratio:.2}, p99 lower in every phase: {lower})",
            if ratio >= 5.0 && lower {
                "met"
            } else {
                "not met"
            }
        );
    }
}

// ---------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve-payhook") {
        serve_payhook();
        return;
    }
    let o = match parse_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .expect("load generator runtime");
    let load_at_start = read("/proc/loadavg").unwrap_or_default();
    let started = time::OffsetDateTime::now_utc();

    // The Alipay key pair, generated now (never stored).
    let signer = AlipaySigner::new(APP_ID, SELLER_ID);
    let public_key = signer.public_key_b64();
    let names = Names::new(&harness::unique_prefix());
    // Deletes the run's exchanges and queues at the end, also after a panic.
    let _cleanup = TopologyCleanup(names.clone());

    let admin = rt.block_on(async {
        let conn = Connection::connect(
            &harness::amqp_url(),
            ConnectionProperties::default().with_connection_name("bench-peer-admin".into()),
        )
        .await
        .expect("broker connection (PAYHOOK_TEST_AMQP_URL)");
        let ch = conn.create_channel().await.expect("channel");
        // The exchange alone first: a publish to it is unroutable (see the check below).
        ch.exchange_declare(
            names.notifications.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exchange.declare");
        (conn, ch)
    });

    eprintln!(
        "pre-signing {} × 2 Alipay notifications on {} threads …",
        o.pool,
        cores()
    );
    let signing = Instant::now();
    let pool = build_pool(&signer, o.pool);
    let signing = signing.elapsed();

    eprintln!("starting the Node peer …");
    let peer = start_peer(&o, &names.prefix, &public_key);
    let mut checks = Vec::new();
    // Mandatory + confirm: with no queue bound, the peer must not answer success.
    let (status, text) = answer(&rt, &peer.url, pool[0].1.to_vec());
    assert!(
        text != "success",
        "the peer answered success for an unroutable message"
    );
    checks.push(format!(
        "peer, unroutable publish (no queue bound yet): HTTP {status} `{text}`"
    ));
    rt.block_on(topology::declare_ingress(
        &admin.1,
        &names,
        &QueuePolicy::default(),
    ))
    .expect("topology");

    eprintln!("starting payhook's receiver …");
    let payhook = start_payhook(&o, &names.prefix, &public_key);

    let drained = Arc::new(AtomicU64::new(0));
    let stop_drain = Arc::new(AtomicBool::new(false));
    let drain = start_drain(names.work.clone(), drained.clone(), stop_drain.clone());

    let forged = tampered(&signer);
    let valid = signer.payment("peer-check", 8_888, "n-check");
    for server in [&payhook, &peer] {
        let (status, text) = answer(&rt, &server.url, forged.clone());
        assert!(
            text != "success",
            "{} accepted a tampered notification",
            server.side.short()
        );
        checks.push(format!(
            "{}, tampered notification: HTTP {status} `{text}`",
            server.side.short()
        ));
        let (status, text) = answer(&rt, &server.url, valid.clone());
        assert!(
            status == 200 && text == "success",
            "{}: a valid notification was answered HTTP {status} {text:?}",
            server.side.short()
        );
        checks.push(format!(
            "{}, valid notification: HTTP {status} `{text}`",
            server.side.short()
        ));
    }
    let until = Instant::now() + Duration::from_secs(10);
    while drained.load(Ordering::Relaxed) < 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    checks.push(format!(
        "messages on `{}` after the checks: {} (expected 2: the two valid ones)",
        names.work,
        drained.load(Ordering::Relaxed)
    ));

    let ctx = Ctx {
        rt: &rt,
        broker_pid: broker_pid(),
        drained: drained.clone(),
        o: &o,
        pool,
    };
    let mut runs = Vec::new();
    for &phase in &o.phases {
        let order = if o.peer_first {
            [(&peer, &payhook), (&payhook, &peer)]
        } else {
            [(&payhook, &peer), (&peer, &payhook)]
        };
        for (target, other) in order {
            eprintln!("{phase:?}: {} …", target.side.short());
            runs.push(run(&ctx, phase, target, other));
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    let depth = rt.block_on(async {
        admin
            .1
            .queue_declare(
                names.work.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
    });
    stop_drain.store(true, Ordering::Relaxed);
    let _ = drain.join();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# payhook vs a conventional peer (Alipay notifications)\n"
    );
    let _ = writeln!(
        out,
        "- started {} UTC; load average at start: {}",
        started
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        load_at_start.trim()
    );
    let _ = writeln!(
        out,
        "- machine: {} cores, {}; load generator, both receivers and RabbitMQ on this machine",
        cores(),
        cpu_model()
    );
    let _ = writeln!(
        out,
        "- payhook: separate process (`bench-peer serve-payhook`: payhook_receiver::Application, \
         receiver.workers = {} (0 = cores), tokio {} threads, defaults otherwise), logging off",
        o.workers,
        cores()
    );
    let _ = writeln!(
        out,
        "- peer: `node server.js` in {} (node {}), {} cluster workers, Express + {} + amqplib \
         ConfirmChannel, no per-request logging",
        o.peer_dir
            .canonicalize()
            .unwrap_or_else(|_| o.peer_dir.clone())
            .display(),
        node_version(&o.node),
        if o.peer_workers == 0 {
            cores()
        } else {
            o.peer_workers
        },
        if o.peer_verify == "sdk" {
            "alipay-sdk checkNotifySignV2"
        } else {
            "**diagnostic**: one crypto.verify with a cached KeyObject instead of alipay-sdk"
        }
    );
    let _ = writeln!(
        out,
        "- load: the same {} pre-signed Alipay RSA2 notifications (payment and partial refund \
         alternating, signed in {:.1} s) for both, only the URL differs; HTTP/1.1 keep-alive; \
         saturation = closed loop, {} connections; fixed = open loop {} /s, ≤ {} connections \
         (latency from the scheduled send); {} s warm-up + {} s measured per receiver; {}",
        ctx.pool.len(),
        signing.as_secs_f64(),
        o.concurrency,
        o.rate,
        o.connections,
        o.warmup,
        o.duration,
        if o.peer_first {
            "peer first"
        } else {
            "payhook first"
        }
    );
    let _ = writeln!(
        out,
        "- broker: {} — both publish persistent + mandatory to `{}` and wait for the confirm; \
         quorum queue `{}` drained by a no-ack consumer; left in the queue at the end: {}",
        harness::amqp_url().split('@').next_back().unwrap_or("?"),
        names.notifications,
        names.work,
        depth.map_or_else(|e| format!("? ({e})"), |d| d.to_string())
    );
    let _ = writeln!(out, "\nChecks before measuring:\n");
    for c in &checks {
        let _ = writeln!(out, "- {c}");
    }
    render(&mut out, &runs);
    let mut mismatches = BTreeMap::new();
    for r in &runs {
        // Exactly one message per success; a failed answer may have stored one too.
        if r.drained < r.ok_all || r.drained > r.ok_all + r.failed_all {
            mismatches.insert(
                format!("{} {:?}", r.side.short(), r.phase),
                (r.ok_all, r.drained),
            );
        }
    }
    if mismatches.is_empty() {
        let _ = writeln!(
            out,
            "- every success answer was a message on the work queue (drained = successes, \
             warm-up included)"
        );
    } else {
        let _ = writeln!(
            out,
            "- **MISMATCH** between successes and messages: {mismatches:?}"
        );
    }
    print!("{out}");
    if let Some(path) = &o.report
        && let Err(e) = std::fs::write(path, &out)
    {
        eprintln!("cannot write {}: {e}", path.display());
    }
    drop(peer);
    drop(payhook);
    rt.block_on(async {
        let _ = admin.0.close(200, "bench done".into()).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_parse() {
        let o = parse_options(&args(
            "--phase fixed --rate=1000 --peer-first --concurrency 32",
        ))
        .expect("valid options");
        assert_eq!(o.phases, vec![Phase::Fixed]);
        assert_eq!((o.rate, o.concurrency, o.peer_first), (1000, 32, true));
        assert!(parse_options(&args("--phase nope")).is_err());
        assert!(parse_options(&args("--rate")).is_err());
    }

    #[test]
    fn the_peer_is_committed_next_to_its_lock_file() {
        let o = parse_options(&[]).expect("defaults");
        for file in ["server.js", "package.json", "package-lock.json"] {
            assert!(
                o.peer_dir.join(file).exists(),
                "{file} in {}",
                o.peer_dir.display()
            );
        }
    }
}
