//! The Redis dedup fast path (invariant 3): two-phase claims against a real Redis, and
//! the bounded, self-healing fallback when Redis is unreachable or hangs.
//!
//! Redis is shared with other test runs: every test works under its own key prefix
//! (`t-<uuid>`), whose keys are deleted when the test ends, passed or failed.

use payhook_testkit::harness::unique;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use payhook_testkit::proxy::Proxy;
use payhook_worker::dedup::{Claim, Dedup};
use secrecy::SecretString;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const CLAIM_TTL: Duration = Duration::from_secs(10);
const SHORT_CLAIM_TTL: Duration = Duration::from_millis(200);
const DONE_TTL: Duration = Duration::from_secs(600);
const TIMEOUT: Duration = Duration::from_millis(250);
/// Scheduling slack on a loaded test machine, on top of the per-call timeout.
const MARGIN: Duration = Duration::from_millis(500);

fn redis_url() -> String {
    std::env::var("PAYHOOK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// This test's own key prefix on the shared Redis; its keys are deleted on drop.
struct Space {
    prefix: String,
    client: redis::Client,
}

impl Space {
    fn new() -> Self {
        Self {
            prefix: unique("t"),
            client: redis::Client::open(redis_url()).expect("PAYHOOK_TEST_REDIS_URL parses"),
        }
    }

    async fn dedup(&self, claim_ttl: Duration) -> Dedup {
        self.dedup_at(&redis_url(), claim_ttl).await
    }

    async fn dedup_at(&self, url: &str, claim_ttl: Duration) -> Dedup {
        let url = SecretString::from(url.to_owned());
        Dedup::connect(&url, &self.prefix, claim_ttl, DONE_TTL, TIMEOUT).await
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.client
            .get_multiplexed_async_connection()
            .await
            .expect("test Redis reachable")
    }

    async fn value(&self, key: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.redis().await)
            .await
            .expect("GET")
    }

    async fn pttl(&self, key: &str) -> i64 {
        redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut self.redis().await)
            .await
            .expect("PTTL")
    }

    /// The address of the test Redis, for proxies in front of it.
    async fn upstream(&self) -> SocketAddr {
        let redis::ConnectionAddr::Tcp(host, port) = self.client.get_connection_info().addr()
        else {
            panic!("the test Redis is reached over plain TCP");
        };
        tokio::net::lookup_host((host.as_str(), *port))
            .await
            .expect("resolve the test Redis")
            .next()
            .expect("an address")
    }
}

impl Drop for Space {
    fn drop(&mut self) {
        // Synchronous, so it also runs when an assertion failed mid-test.
        let Ok(mut con) = self.client.get_connection() else {
            return;
        };
        let pattern = format!("{}:*", self.prefix);
        let mut cursor = 0_u64;
        loop {
            let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut con)
            else {
                return;
            };
            if !keys.is_empty() {
                let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut con);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

/// `url` with its `host:port` replaced by `addr` (keeps credentials and database).
fn via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("URL has a scheme");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority
        .rsplit_once('@')
        .map(|(userinfo, _)| format!("{userinfo}@"))
        .unwrap_or_default();
    format!("{scheme}://{userinfo}{addr}{tail}")
}

/// A local port nobody listens on.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

/// Polls `condition` until it holds or `within` has passed.
async fn eventually(within: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A proxy whose connections can be made to hang — open, but never answered — as in a
/// network partition without resets. Connections opened after [`Hanging::resume`] are
/// forwarded again; the hung ones stay hung.
struct Hanging {
    addr: SocketAddr,
    /// Cancelled to hang everything opened so far; replaced on resume.
    generation: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Hanging {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let generation = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (generation2, stop2) = (generation.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop2.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let hang = generation2.lock().expect("lock").clone();
                let stop = stop2.clone();
                tokio::spawn(async move {
                    if !hang.is_cancelled() {
                        let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            () = hang.cancelled() => {}
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                        }
                    }
                    // Hung: hold the socket open, silent, until the proxy stops.
                    stop.cancelled().await;
                    drop(inbound);
                });
            }
        });
        Self {
            addr,
            generation,
            stop,
        }
    }

    fn hang(&self) {
        self.generation.lock().expect("lock").cancel();
    }

    fn resume(&self) {
        *self.generation.lock().expect("lock") = CancellationToken::new();
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn a_second_claim_while_the_first_is_held_is_in_progress() {
    let space = Space::new();
    let dedup = space.dedup(CLAIM_TTL).await;
    let id = unique("evt");

    let first = dedup.claim(&id).await;
    assert!(matches!(first, Claim::Acquired(_)), "{first:?}");
    assert_eq!(dedup.claim(&id).await, Claim::InProgress);
    let other_worker = space.dedup(CLAIM_TTL).await;
    assert_eq!(other_worker.claim(&id).await, Claim::InProgress);
    assert!(!dedup.is_degraded());
}

#[tokio::test]
async fn a_claim_after_mark_done_is_already_done_for_the_done_ttl() {
    let space = Space::new();
    let dedup = space.dedup(CLAIM_TTL).await;
    let id = unique("evt");

    let Claim::Acquired(token) = dedup.claim(&id).await else {
        panic!("first claim acquires");
    };
    dedup.mark_done(token).await;

    assert_eq!(dedup.claim(&id).await, Claim::AlreadyDone);
    let key = dedup.key(&id);
    assert_eq!(space.value(&key).await.as_deref(), Some("done"));
    let pttl = space.pttl(&key).await;
    let done_ttl = i64::try_from(DONE_TTL.as_millis()).expect("fits");
    let claim_ttl = i64::try_from(CLAIM_TTL.as_millis()).expect("fits");
    assert!(pttl > claim_ttl, "done outlives a claim: PTTL {pttl} ms");
    assert!(
        pttl > done_ttl - 5_000 && pttl <= done_ttl,
        "PTTL {pttl} ms ≈ done TTL {done_ttl} ms"
    );
}

#[tokio::test]
async fn release_lets_the_next_claim_acquire() {
    let space = Space::new();
    let dedup = space.dedup(CLAIM_TTL).await;
    let id = unique("evt");

    let Claim::Acquired(token) = dedup.claim(&id).await else {
        panic!("first claim acquires");
    };
    dedup.release(token).await;

    let retry = dedup.claim(&id).await;
    assert!(matches!(retry, Claim::Acquired(_)), "{retry:?}");
}

/// Worker A's claim expires during a slow apply and worker B claims; A's failure must
/// not free B's claim.
#[tokio::test]
async fn release_does_not_delete_another_owners_claim() {
    let space = Space::new();
    let a = space.dedup(SHORT_CLAIM_TTL).await;
    let b = space.dedup(CLAIM_TTL).await;
    let id = unique("evt");

    let Claim::Acquired(stale) = a.claim(&id).await else {
        panic!("A acquires");
    };
    let mut b_token = None;
    assert!(
        eventually(Duration::from_secs(5), async || {
            match b.claim(&id).await {
                Claim::Acquired(token) => {
                    b_token = Some(token);
                    true
                }
                _ => false,
            }
        })
        .await,
        "A's claim expires and B acquires"
    );
    let b_owner = space.value(&b.key(&id)).await;

    a.release(stale).await;

    assert_eq!(
        space.value(&b.key(&id)).await,
        b_owner,
        "B's claim untouched"
    );
    assert_eq!(a.claim(&id).await, Claim::InProgress);
    assert!(b_token.is_some());
}

/// The database committed A's apply, so `done` is the truth even over B's claim.
#[tokio::test]
async fn mark_done_wins_over_another_owners_claim() {
    let space = Space::new();
    let a = space.dedup(SHORT_CLAIM_TTL).await;
    let b = space.dedup(CLAIM_TTL).await;
    let id = unique("evt");

    let Claim::Acquired(stale) = a.claim(&id).await else {
        panic!("A acquires");
    };
    assert!(
        eventually(Duration::from_secs(5), async || matches!(
            b.claim(&id).await,
            Claim::Acquired(_)
        ))
        .await,
        "A's claim expires and B acquires"
    );

    a.mark_done(stale).await;

    assert_eq!(b.claim(&id).await, Claim::AlreadyDone);
}

#[tokio::test]
async fn an_expired_claim_frees_the_key() {
    let space = Space::new();
    let crashed = space.dedup(SHORT_CLAIM_TTL).await;
    let redelivery = space.dedup(CLAIM_TTL).await;
    let id = unique("evt");

    let Claim::Acquired(_abandoned) = crashed.claim(&id).await else {
        panic!("first claim acquires");
    };
    let pttl = space.pttl(&crashed.key(&id)).await;
    assert!(
        (1..=200).contains(&pttl),
        "claim TTL applied: PTTL {pttl} ms"
    );
    assert_eq!(redelivery.claim(&id).await, Claim::InProgress);

    assert!(
        eventually(Duration::from_secs(5), async || matches!(
            redelivery.claim(&id).await,
            Claim::Acquired(_)
        ))
        .await,
        "the abandoned claim expires"
    );
}

/// After a commit made through the database alone, a claim held elsewhere is replaced
/// by `done`, and that worker's release leaves `done` in place.
#[tokio::test]
async fn mark_done_unclaimed_marks_done_and_survives_the_holders_release() {
    let space = Space::new();
    let holder = space.dedup(CLAIM_TTL).await;
    let other = space.dedup(CLAIM_TTL).await;
    let id = unique("evt");

    let Claim::Acquired(token) = holder.claim(&id).await else {
        panic!("holder acquires");
    };
    assert_eq!(other.claim(&id).await, Claim::InProgress);
    other.mark_done_unclaimed(&id).await;
    holder.release(token).await;

    assert_eq!(other.claim(&id).await, Claim::AlreadyDone);
    assert_eq!(space.value(&other.key(&id)).await.as_deref(), Some("done"));
    let pttl = space.pttl(&other.key(&id)).await;
    assert!(pttl > i64::try_from(CLAIM_TTL.as_millis()).expect("fits"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_claims_acquire_exactly_once() {
    let space = Space::new();
    // Five "workers", ten tasks each, all released at once.
    let mut workers = Vec::new();
    for _ in 0..5 {
        workers.push(space.dedup(CLAIM_TTL).await);
    }
    let id = unique("evt");
    let start = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (dedup, id, start) = (workers[i % 5].clone(), id.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                dedup.claim(&id).await
            })
        })
        .collect();
    let mut acquired = 0;
    let mut in_progress = 0;
    for task in tasks {
        match task.await.expect("task") {
            Claim::Acquired(_) => acquired += 1,
            Claim::InProgress => in_progress += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((acquired, in_progress), (1, 49));
}

#[tokio::test]
async fn unreachable_redis_gives_unavailable_within_the_timeout() {
    let space = Space::new();
    let url = format!("redis://{}", closed_port());

    let started = Instant::now();
    let dedup = space.dedup_at(&url, CLAIM_TTL).await;
    assert!(started.elapsed() < TIMEOUT + MARGIN, "connect is bounded");
    assert!(dedup.is_degraded());

    let id = unique("evt");
    let started = Instant::now();
    assert_eq!(dedup.claim(&id).await, Claim::Unavailable);
    assert!(started.elapsed() < TIMEOUT + MARGIN, "claim is bounded");
    let started = Instant::now();
    assert!(!dedup.ping().await);
    dedup.mark_done_unclaimed(&id).await;
    assert!(
        started.elapsed() < 2 * (TIMEOUT + MARGIN),
        "ping and writes are bounded"
    );
    assert!(dedup.is_degraded());
}

/// The worse outage: connections open but nothing ever answers.
#[tokio::test]
async fn a_redis_that_never_answers_costs_at_most_the_timeout() {
    let space = Space::new();
    let proxy = Hanging::start(space.upstream().await).await;
    proxy.hang();
    let url = via(&redis_url(), proxy.addr);

    let started = Instant::now();
    let dedup = space.dedup_at(&url, CLAIM_TTL).await;
    assert!(started.elapsed() < TIMEOUT + MARGIN, "connect is bounded");
    assert!(dedup.is_degraded());

    // `ping` always goes to Redis, even while degraded.
    let started = Instant::now();
    assert!(!dedup.ping().await);
    assert!(
        started.elapsed() < TIMEOUT + MARGIN,
        "a real call is bounded"
    );
    let started = Instant::now();
    assert_eq!(dedup.claim(&unique("evt")).await, Claim::Unavailable);
    assert!(started.elapsed() < TIMEOUT + MARGIN, "claim is bounded");
}

/// While degraded, at most one call per probe interval waits on Redis; the others answer
/// at once, so an outage does not slow every message down by the timeout.
#[tokio::test]
async fn while_degraded_claims_answer_at_once() {
    let space = Space::new();
    let proxy = Hanging::start(space.upstream().await).await;
    proxy.hang();
    let dedup = space
        .dedup_at(&via(&redis_url(), proxy.addr), CLAIM_TTL)
        .await;
    assert!(dedup.is_degraded());

    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(dedup.claim(&unique("evt")).await, Claim::Unavailable);
    }
    let took = started.elapsed();
    assert!(took < TIMEOUT + MARGIN, "20 claims took {took:?}");
}

#[tokio::test]
async fn dedup_recovers_when_redis_comes_back() {
    let space = Space::new();
    let proxy = Proxy::start(space.upstream().await).await;
    let dedup = space
        .dedup_at(&via(&redis_url(), proxy.addr), CLAIM_TTL)
        .await;
    assert!(!dedup.is_degraded());

    proxy.cut();
    let started = Instant::now();
    assert_eq!(dedup.claim(&unique("evt")).await, Claim::Unavailable);
    assert!(started.elapsed() < TIMEOUT + MARGIN);
    assert!(dedup.is_degraded());

    proxy.restore();
    assert!(
        eventually(Duration::from_secs(10), async || matches!(
            dedup.claim(&unique("evt")).await,
            Claim::Acquired(_)
        ))
        .await,
        "claims are acquired again once Redis is back"
    );
    assert!(!dedup.is_degraded());
}

/// A connection that hangs forever is not waited on for ever: the next probe uses a
/// fresh connection.
#[tokio::test]
async fn dedup_recovers_from_a_connection_that_hangs_forever() {
    let space = Space::new();
    let proxy = Hanging::start(space.upstream().await).await;
    let dedup = space
        .dedup_at(&via(&redis_url(), proxy.addr), CLAIM_TTL)
        .await;
    assert!(!dedup.is_degraded());

    proxy.hang();
    let started = Instant::now();
    assert_eq!(dedup.claim(&unique("evt")).await, Claim::Unavailable);
    assert!(started.elapsed() < TIMEOUT + MARGIN);
    assert!(dedup.is_degraded());

    proxy.resume();
    assert!(
        eventually(Duration::from_secs(10), async || matches!(
            dedup.claim(&unique("evt")).await,
            Claim::Acquired(_)
        ))
        .await,
        "a fresh connection replaces the hung one"
    );
    assert!(!dedup.is_degraded());
}

#[tokio::test]
async fn an_unusable_url_disables_dedup_without_revealing_it() {
    let secret_url = SecretString::from("redis://:hunter2@127.0.0.1:notaport".to_owned());
    let error = Dedup::check_url(&secret_url).expect_err("refused");
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(chain.contains("redis.url"), "{chain}");
    assert!(!chain.contains("hunter2"), "{chain}");

    let space = Space::new();
    let started = Instant::now();
    let dedup = Dedup::connect(&secret_url, &space.prefix, CLAIM_TTL, DONE_TTL, TIMEOUT).await;
    assert!(started.elapsed() < TIMEOUT);
    assert!(dedup.is_degraded());
    assert_eq!(dedup.claim(&unique("evt")).await, Claim::Unavailable);
    assert!(!format!("{dedup:?}").contains("hunter2"));

    let unreachable_with_password = format!("redis://:hunter2@{}", closed_port());
    let dedup = space.dedup_at(&unreachable_with_password, CLAIM_TTL).await;
    assert!(!format!("{dedup:?}").contains("hunter2"));
}
