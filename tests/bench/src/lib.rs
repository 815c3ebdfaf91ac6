//! Load-generation pieces shared by the benchmark binaries (`bench-receiver`,
//! `bench-peer`, `bench-pipeline`): the HTTP client, open- and closed-loop drivers,
//! latency statistics, a no-ack drain consumer and CPU readings from `/proc`.
//!
//! Latencies are recorded in µs in [`hdrhistogram`] histograms (1 µs .. 120 s, three
//! significant digits) and printed in ms with three decimals.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use hdrhistogram::Histogram;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use payhook_shared::event::Provider;
use payhook_shared::{alipay, wechat_v2};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use payhook_testkit::harness;

pub mod http1;

/// The number of cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// An empty latency histogram (µs, 1 µs .. 120 s, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

/// `d` in whole µs, at least 1 (the histogram's lowest value).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// µs as ms with three decimals.
pub fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// Sleeps the calling thread until `t` (returns at once when `t` has passed).
pub fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// A short description of a transport error with its innermost cause.
pub fn transport_error(e: &reqwest::Error) -> String {
    let class = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    // The innermost cause (e.g. "connection closed before message completed").
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("transport error ({class}): {cause}")
}

/// Posts a notification with the reqwest client; `Ok` only for `provider`'s success
/// answer ([`provider_answer`]).
pub async fn post_notification(
    client: &reqwest::Client,
    url: &reqwest::Url,
    headers: reqwest::header::HeaderMap,
    body: impl Into<reqwest::Body>,
    provider: Provider,
) -> Result<(), String> {
    let response = client
        .post(url.clone())
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| transport_error(&e))?;
    let status = response.status().as_u16();
    let answer = response.bytes().await.map_err(|e| transport_error(&e))?;
    provider_answer(provider, status, &answer)
}

/// `Ok` only for `provider`'s success answer (Alipay `success`, WeChat Pay APIv2's
/// `SUCCESS` XML, APIv3's 204); otherwise the status and the start of the body.
pub fn provider_answer(provider: Provider, status: u16, body: &[u8]) -> Result<(), String> {
    let ok = match provider {
        Provider::Alipay => status == 200 && body == alipay::SUCCESS_ANSWER.as_bytes(),
        Provider::WechatV2 => status == 200 && body == wechat_v2::SUCCESS_ANSWER.as_bytes(),
        Provider::WechatV3 => status == 204,
    };
    if ok {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(100)]).into_owned();
        Err(format!("HTTP {status} {text}"))
    }
}

/// The load generator's HTTP/1.1 keep-alive client, at most `max_idle` idle
/// connections per host.
pub fn client(max_idle: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(max_idle)
        // Below actix-web's (and the Node peer's) 5 s keep-alive: never reuse a
        // connection the server may be closing at that very moment (a client-side race,
        // not an answer).
        .pool_idle_timeout(Duration::from_secs(4))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

// ---------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------

/// Measured outcomes of one phase (or one closed-loop connection), per kind of
/// request (`labels[k]` names kind `k`).
#[derive(Debug)]
pub struct Stats {
    pub labels: Vec<&'static str>,
    /// Latency per kind (µs): from the scheduled send time (open loop) or the send
    /// (closed loop).
    pub latency: Vec<Histogram<u64>>,
    /// Open loop only: from the actual send, i.e. without the queueing at the client.
    pub service: Histogram<u64>,
    pub ok: Vec<u64>,
    pub errors: Vec<u64>,
    pub error_kinds: BTreeMap<String, u64>,
    /// Latency (µs, 2 significant digits) per second of the measured window.
    pub timeline: Vec<Histogram<u64>>,
}

impl Stats {
    pub fn new(labels: &[&'static str]) -> Self {
        Self {
            labels: labels.to_vec(),
            latency: labels.iter().map(|_| histogram()).collect(),
            service: histogram(),
            ok: vec![0; labels.len()],
            errors: vec![0; labels.len()],
            error_kinds: BTreeMap::new(),
            timeline: Vec::new(),
        }
    }

    /// Records one request of kind `k`; `second`: the second of the measured window
    /// it belongs to.
    pub fn record(
        &mut self,
        k: usize,
        second: usize,
        latency: Duration,
        service: Duration,
        r: Result<(), String>,
    ) {
        self.latency[k].saturating_record(micros(latency));
        self.service.saturating_record(micros(service));
        while self.timeline.len() <= second {
            self.timeline
                .push(Histogram::new_with_bounds(1, 120_000_000, 2).expect("histogram bounds"));
        }
        self.timeline[second].saturating_record(micros(latency));
        match r {
            Ok(()) => self.ok[k] += 1,
            Err(e) => {
                self.errors[k] += 1;
                *self
                    .error_kinds
                    .entry(format!("{}: {e}", self.labels[k]))
                    .or_insert(0) += 1;
            }
        }
    }

    pub fn merge(&mut self, other: &Self) {
        for k in 0..self.labels.len() {
            self.latency[k]
                .add(&other.latency[k])
                .expect("same histogram bounds");
            self.ok[k] += other.ok[k];
            self.errors[k] += other.errors[k];
        }
        self.service.add(&other.service).expect("same bounds");
        for (i, h) in other.timeline.iter().enumerate() {
            if self.timeline.len() <= i {
                self.timeline.push(h.clone());
            } else {
                self.timeline[i].add(h).expect("same bounds");
            }
        }
        for (e, n) in &other.error_kinds {
            *self.error_kinds.entry(e.clone()).or_insert(0) += n;
        }
    }

    /// All kinds in one histogram, with the ok and error totals.
    pub fn total(&self) -> (Histogram<u64>, u64, u64) {
        let mut all = histogram();
        for h in &self.latency {
            all.add(h).expect("same bounds");
        }
        (all, self.ok.iter().sum(), self.errors.iter().sum())
    }
}

// ---------------------------------------------------------------------------------
// Load drivers
// ---------------------------------------------------------------------------------

/// The time line of one phase: unmeasured warm-up, then the measured window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub measure_start: Instant,
    pub measure_end: Instant,
}

impl Window {
    /// Starts in 100 ms, measures `duration` s after `warmup` s.
    pub fn new(warmup: u64, duration: u64) -> Self {
        let start = Instant::now() + Duration::from_millis(100);
        let measure_start = start + Duration::from_secs(warmup);
        Self {
            start,
            measure_start,
            measure_end: measure_start + Duration::from_secs(duration),
        }
    }

    /// The second of the measured window `t` falls in.
    fn second(&self, t: Instant) -> usize {
        usize::try_from(t.saturating_duration_since(self.measure_start).as_secs()).unwrap_or(0)
    }
}

/// Where a load driver gets its HTTP connections from.
///
/// The reqwest client pools connections itself (taking one is a cheap clone of the
/// client); the lean [`crate::http1`] client is one connection per value, kept in a
/// pool here.
pub trait Connections: Send + Sync + 'static {
    type Conn: Send + 'static;
    /// A connection for one request (a new one when none is free).
    fn take(&self) -> Self::Conn;
    /// Gives a connection back after its request.
    fn give(&self, conn: Self::Conn);
}

impl Connections for reqwest::Client {
    type Conn = reqwest::Client;
    fn take(&self) -> reqwest::Client {
        self.clone()
    }
    fn give(&self, _conn: reqwest::Client) {}
}

/// Lean HTTP/1.1 connections to one address, reused most recently used first.
#[derive(Debug)]
pub struct Http1Pool {
    addr: std::net::SocketAddr,
    idle: Mutex<Vec<crate::http1::Conn>>,
}

impl Http1Pool {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }
}

impl Connections for Http1Pool {
    type Conn = crate::http1::Conn;
    fn take(&self) -> crate::http1::Conn {
        self.idle
            .lock()
            .expect("pool lock")
            .pop()
            .unwrap_or_else(|| crate::http1::Conn::new(self.addr))
    }
    fn give(&self, conn: crate::http1::Conn) {
        self.idle.lock().expect("pool lock").push(conn);
    }
}

/// `sender(client, i)` sends request number `i` with `client` and tells its kind (an
/// index into `labels`) and whether it was a success.
///
/// Open loop: request `i` is due at `start + i / rate`; a dedicated pacer thread
/// submits it at that time whatever happened to earlier requests, and its latency is
/// counted from the due time (no coordinated omission). At most `connections`
/// requests are in flight (one per keep-alive connection); a request waiting for a
/// free connection is still charged from its due time. `observe` runs on the calling
/// thread while the load runs (e.g. CPU snapshots at the window's edges).
pub fn open_loop<S, F, R>(
    rt: &tokio::runtime::Runtime,
    window: Window,
    rate: u64,
    connections: usize,
    labels: &[&'static str],
    sender: Arc<S>,
    observe: impl FnOnce() -> R,
) -> (Stats, R)
where
    S: Fn(reqwest::Client, u64) -> F + Send + Sync + 'static,
    F: Future<Output = (usize, Result<(), String>)> + Send + 'static,
{
    open_loop_with(
        rt,
        window,
        rate,
        connections,
        labels,
        Arc::new(client(connections)),
        Arc::new(move |c: reqwest::Client, i| handing_back(c.clone(), sender(c, i))),
        observe,
    )
}

/// A reqwest send as the `_with` drivers want it: the (shared, cloned) client comes
/// back with the kind and the outcome.
async fn handing_back<F>(
    client: reqwest::Client,
    sent: F,
) -> (reqwest::Client, usize, Result<(), String>)
where
    F: Future<Output = (usize, Result<(), String>)>,
{
    let (kind, result) = sent.await;
    (client, kind, result)
}

/// [`open_loop`] over any [`Connections`]: `sender(conn, i)` sends request `i` on
/// `conn` and gives the connection back with the kind and the outcome.
#[allow(clippy::too_many_arguments)]
pub fn open_loop_with<P, S, F, R>(
    rt: &tokio::runtime::Runtime,
    window: Window,
    rate: u64,
    connections: usize,
    labels: &[&'static str],
    pool: Arc<P>,
    sender: Arc<S>,
    observe: impl FnOnce() -> R,
) -> (Stats, R)
where
    P: Connections,
    S: Fn(P::Conn, u64) -> F + Send + Sync + 'static,
    F: Future<Output = (P::Conn, usize, Result<(), String>)> + Send + 'static,
{
    let stats = Arc::new(Mutex::new(Stats::new(labels)));
    let slots = Arc::new(Semaphore::new(connections));
    let tracker = TaskTracker::new();
    let total = (rate as f64 * (window.measure_end - window.start).as_secs_f64()) as u64;
    let period_ns = 1e9 / rate as f64;
    let handle = rt.handle().clone();
    let pacer = {
        let (stats, slots, tracker) = (stats.clone(), slots.clone(), tracker.clone());
        std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || {
                for i in 0..total {
                    let due = window.start + Duration::from_nanos((i as f64 * period_ns) as u64);
                    sleep_until(due);
                    let measured = due >= window.measure_start;
                    let (stats, slots, pool, sender) =
                        (stats.clone(), slots.clone(), pool.clone(), sender.clone());
                    tracker.spawn_on(
                        async move {
                            let Ok(_slot) = slots.acquire().await else {
                                return;
                            };
                            let conn = pool.take();
                            let sent = Instant::now();
                            let (conn, k, r) = sender(conn, i).await;
                            let done = Instant::now();
                            pool.give(conn);
                            if measured {
                                stats.lock().expect("stats lock").record(
                                    k,
                                    window.second(due),
                                    done - due,
                                    done - sent,
                                    r,
                                );
                            }
                        },
                        &handle,
                    );
                }
            })
            .expect("pacer thread")
    };
    let observed = observe();
    pacer.join().expect("pacer");
    tracker.close();
    rt.block_on(tracker.wait());
    let stats = Arc::into_inner(stats)
        .expect("all requests finished")
        .into_inner()
        .expect("stats lock");
    (stats, observed)
}

/// Closed loop: `concurrency` loops (one HTTP client each, so exactly one keep-alive
/// connection per loop), each sending its next request when the previous one was
/// answered. Requests sent inside the measured window are recorded.
pub fn closed_loop<S, F, R>(
    rt: &tokio::runtime::Runtime,
    window: Window,
    concurrency: usize,
    labels: &[&'static str],
    sender: Arc<S>,
    observe: impl FnOnce() -> R,
) -> (Stats, R)
where
    S: Fn(reqwest::Client, u64) -> F + Send + Sync + 'static,
    F: Future<Output = (usize, Result<(), String>)> + Send + 'static,
{
    closed_loop_with(
        rt,
        window,
        concurrency,
        labels,
        || client(1),
        Arc::new(move |c: reqwest::Client, i| handing_back(c.clone(), sender(c, i))),
        observe,
    )
}

/// [`closed_loop`] with any client: `connect()` makes each loop's own connection
/// (or client), and `sender(conn, i)` sends request `i` on it and gives it back with
/// the kind and the outcome.
pub fn closed_loop_with<C, S, F, R>(
    rt: &tokio::runtime::Runtime,
    window: Window,
    concurrency: usize,
    labels: &[&'static str],
    connect: impl Fn() -> C,
    sender: Arc<S>,
    observe: impl FnOnce() -> R,
) -> (Stats, R)
where
    C: Send + 'static,
    S: Fn(C, u64) -> F + Send + Sync + 'static,
    F: Future<Output = (C, usize, Result<(), String>)> + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for _ in 0..concurrency {
        let (next, sender, labels) = (next.clone(), sender.clone(), labels.to_vec());
        let mut conn = Some(connect());
        loops.push(rt.spawn(async move {
            let mut stats = Stats::new(&labels);
            tokio::time::sleep_until(window.start.into()).await;
            while let Some(c) = conn.take() {
                let sent = Instant::now();
                if sent >= window.measure_end {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let (c, k, r) = sender(c, i).await;
                let done = Instant::now();
                conn = Some(c);
                if sent >= window.measure_start {
                    stats.record(k, window.second(sent), done - sent, done - sent, r);
                }
            }
            stats
        }));
    }
    let observed = observe();
    let mut stats = Stats::new(labels);
    for l in loops {
        let s = rt.block_on(l).expect("closed loop task");
        stats.merge(&s);
    }
    (stats, observed)
}

// ---------------------------------------------------------------------------------
// Drain consumer
// ---------------------------------------------------------------------------------

/// Consumes `queue` with `no_ack` on its own thread and connection (as the worker
/// consumes the work queue in production), counting messages into `count` until
/// `stop` is set.
pub fn start_drain(
    queue: String,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("drain runtime");
            rt.block_on(async move {
                let conn = Connection::connect(
                    &harness::amqp_url(),
                    ConnectionProperties::default().with_connection_name("bench-drain".into()),
                )
                .await
                .expect("drain connection");
                let ch = conn.create_channel().await.expect("drain channel");
                // Ignored by the broker for a no-ack consumer; kept for a manual-ack swap.
                ch.basic_qos(1000, BasicQosOptions::default())
                    .await
                    .expect("basic.qos");
                let mut consumer = ch
                    .basic_consume(
                        queue.as_str().into(),
                        "bench-drain".into(),
                        BasicConsumeOptions {
                            no_ack: true,
                            ..BasicConsumeOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .expect("basic.consume");
                // One timer for the whole run (checking `stop` every 200 ms), not one
                // per message: a per-message timeout cost the drain a timer insertion
                // and removal for every delivery.
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tokio::select! {
                        biased;
                        delivery = consumer.next() => match delivery {
                            Some(Ok(_delivery)) => {
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(Err(e)) => {
                                eprintln!("drain consumer error: {e}");
                                break;
                            }
                            None => break,
                        },
                        _ = tick.tick() => {}
                    }
                }
                let _ = conn.close(200, "bench done".into()).await;
            });
        })
        .expect("drain thread")
}

// ---------------------------------------------------------------------------------
// CPU readings (Linux /proc)
// ---------------------------------------------------------------------------------

pub fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The first field of a `schedstat` file: ns of CPU.
pub fn schedstat_ns(path: &str) -> Option<u64> {
    read(path)?.split_whitespace().next()?.parse().ok()
}

/// `(tid, comm, CPU ns)` of every thread of `pid` (`"self"` for this process).
pub fn threads_of(pid: &str) -> Vec<(u32, String, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = read(&format!("/proc/{pid}/task/{tid}/comm"))?
            .trim()
            .to_owned();
        let ns = schedstat_ns(&format!("/proc/{pid}/task/{tid}/schedstat"))?;
        Some((tid, comm, ns))
    })
    .collect()
}

/// CPU ns of all threads of the processes `pids` (those still alive).
pub fn cpu_ns_of(pids: &[u32]) -> u64 {
    pids.iter()
        .flat_map(|p| threads_of(&p.to_string()))
        .map(|t| t.2)
        .sum()
}

/// The processes whose parent is `pid` (e.g. the workers of a Node cluster).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name().to_str()?.to_owned();
        let child: u32 = name.parse().ok()?;
        let stat = read(&format!("/proc/{child}/stat"))?;
        // `pid (comm) state ppid …`; comm may contain spaces or parentheses.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == pid).then_some(child)
    })
    .collect()
}

/// The pid of the RabbitMQ node (`beam.smp`), if one runs on this machine.
pub fn broker_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let name = e.file_name().to_str()?.to_owned();
        name.parse::<u32>().ok()?;
        (read(&format!("/proc/{name}/comm"))?.trim() == "beam.smp").then_some(name)
    })
}

/// Jiffies of the whole machine from `/proc/stat`: (busy, total).
pub fn system_jiffies() -> Option<(u64, u64)> {
    let s = read("/proc/stat")?;
    let line = s.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// Whole-machine busy % between two [`system_jiffies`] readings (100 % = one core).
pub fn machine_busy_pct(before: (u64, u64), after: (u64, u64)) -> f64 {
    (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64 * 100.0 * cores() as f64
}

/// CPU time of the calling thread (ns), from `/proc/thread-self/schedstat`: robust to
/// other processes competing for the cores, unlike wall-clock time.
pub fn thread_cpu_ns() -> u64 {
    schedstat_ns("/proc/thread-self/schedstat").unwrap_or(0)
}

/// The CPU's model name from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    read("/proc/cpuinfo")
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_merge_and_total() {
        let mut a = Stats::new(&["x", "y"]);
        a.record(
            0,
            0,
            Duration::from_millis(2),
            Duration::from_millis(1),
            Ok(()),
        );
        let mut b = Stats::new(&["x", "y"]);
        b.record(
            1,
            2,
            Duration::from_millis(4),
            Duration::from_millis(4),
            Err("HTTP 503".into()),
        );
        a.merge(&b);
        let (all, ok, err) = a.total();
        assert_eq!((all.len(), ok, err), (2, 1, 1));
        assert_eq!(a.timeline.len(), 3);
        assert_eq!(a.error_kinds.get("y: HTTP 503"), Some(&1));
        assert_eq!(ms(1500), "1.500");
    }

    #[test]
    fn children_of_finds_a_child_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        assert!(children_of(std::process::id()).contains(&child.id()));
        let _ = child.kill();
        let _ = child.wait();
    }
}
