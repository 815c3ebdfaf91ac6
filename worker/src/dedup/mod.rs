//! Redis dedup: a two-phase claim per notification identity (`event_id`) that lets the
//! worker skip most duplicates without a database transaction.
//!
//! # Only a fast path
//!
//! Providers resend and RabbitMQ redelivers, so most duplicates arrive while the first
//! copy is being applied or shortly after. Redis answers "someone has this" or "this
//! is done" in well under a millisecond. But Redis can lose keys (restart without
//! persistence, eviction, failover to a lagging replica), a `done` marker can fail to
//! be written after a commit, and a claim can expire during a slow apply. So nothing
//! here is trusted for correctness: the **database** guarantees exactly one effect per
//! transition (a unique key per transition in the ledger and a state machine that never
//! moves backwards). A wrong or missing answer from Redis costs a database round trip,
//! never a lost or doubled effect.
//!
//! # Protocol
//!
//! [`Dedup::claim`] writes `<prefix>:dedup:<event_id>` = a fresh owner token (UUID)
//! with the claim TTL, only if the key is free. Then the caller applies in one
//! transaction and, after the commit, calls [`Dedup::mark_done`] (the key becomes
//! `done` for the done TTL, longer than the providers' resend horizon), or on failure
//! [`Dedup::release`] (the key is deleted if it still holds our token, so the retry is
//! not blocked).
//!
//! What the caller may conclude from a [`Claim`]:
//!
//! - [`Claim::AlreadyDone`]: ack without touching the database. `done` is written
//!   only after a commit, so this is never wrong, only sometimes missing.
//! - [`Claim::InProgress`]: **not** a duplicate: the holder may still fail and release.
//!   Applying anyway is safe (the database rejects the second effect); dropping is not.
//! - [`Claim::Unavailable`]: Redis did not answer; the database decides alone.
//!
//! # Failure cases
//!
//! - *Redis down at start or later*: [`Dedup::connect`] still returns; every call
//!   answers within the per-call timeout ([`Claim::Unavailable`], writes skipped) and
//!   [`Dedup::is_degraded`] is true. While degraded, one call per second is let through
//!   to Redis (see `health`) on a fresh connection, the others fail at once, so an
//!   outage does not cost every message the timeout. The first answer ends it.
//! - *A reply lost after the server applied the command* (timeout): a claim may be left
//!   holding a token nobody has; it expires after the claim TTL, and until then the
//!   duplicates see [`Claim::InProgress`] and go to the database.
//! - *Worker crash between claim and commit*: same — the claim expires, the redelivery
//!   claims again.
//! - *Apply slower than the claim TTL*: a second worker may claim and apply at the same
//!   time; the database's unique key lets exactly one through. `mark_done` writes
//!   `done` whatever the key holds, because the database has committed.
//! - *`done` lost or never written*: the next duplicate reaches the database, which
//!   answers "already applied".
//!
//! Degraded mode is logged on entering (warn) and leaving (info), never per call, and
//! never with the URL, which may carry a password.

mod health;
mod scripts;

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use payhook_shared::config::{ConfigError, RedisSettings};
use payhook_shared::tls::ClientTls;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, RedisResult};
use redis::{ClientTlsConfig, IntoConnectionInfo as _, TlsCertificates};
use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;

use health::Health;
use scripts::{
    CLAIM_ACQUIRED, CLAIM_DONE, CLAIM_HELD, DONE, DONE_WAS_DONE, DONE_WAS_FREE, DONE_WAS_OTHER,
    DONE_WAS_OURS, Scripts,
};

/// While degraded, at most one call per this interval goes to Redis.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The Redis fast path for deduplication; cheap to clone (clones share one connection
/// and one health state).
#[derive(Clone)]
pub struct Dedup {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` when the URL did not parse: permanently degraded, the database decides.
    connection: Option<Connection>,
    prefix: String,
    claim_ttl_ms: u64,
    done_ttl_ms: u64,
    timeout: Duration,
    scripts: Scripts,
    health: Health,
}

/// The outcome of [`Dedup::claim`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Claim {
    /// This worker holds the claim until the claim TTL; finish with
    /// [`Dedup::mark_done`] after the commit or [`Dedup::release`] on failure.
    Acquired(ClaimToken),
    /// Applied and committed before: ack without applying.
    AlreadyDone,
    /// Another worker (or a crashed one, until its claim expires) holds it. Not a
    /// duplicate: apply through the database (safe) or retry later, never drop.
    InProgress,
    /// Redis failed or did not answer within the timeout, or is being skipped while
    /// degraded; the database decides alone.
    Unavailable,
}

/// Proof of an acquired claim; consumed by [`Dedup::mark_done`] or [`Dedup::release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "finish the claim with mark_done or release, or it blocks the fast path until it expires"]
pub struct ClaimToken {
    event_id: String,
    owner: String,
}

impl ClaimToken {
    pub fn event_id(&self) -> &str {
        &self.event_id
    }
}

/// `redis.url` cannot be used (unparsable, unsupported scheme, TLS not compiled in).
#[derive(Debug, Error)]
#[error("redis.url is not a usable Redis URL")]
pub struct InvalidRedisUrl(#[source] RedisError);

/// The Redis client of `[redis]`: `redis.url`, and for `rediss://` the certificates
/// of `redis.tls` (the configured CA is trusted besides the system's roots, as for the
/// other backends). Errors name the setting and never echo the URL.
pub fn client(settings: &RedisSettings) -> Result<Client, ConfigError> {
    let url = settings
        .url
        .load()
        .map_err(|e| ConfigError::new("redis.url", e))?;
    let unusable = |_| {
        ConfigError::new(
            "redis.url",
            "not a usable Redis URL (redis://[:password@]host:port[/db] or rediss://…)",
        )
    };
    let info = url
        .expose_secret()
        .into_connection_info()
        .map_err(unusable)?;
    if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
        if settings.tls.is_set() {
            return Err(ConfigError::new(
                "redis.tls",
                "certificates are set but redis.url is not rediss://: they would be ignored",
            ));
        }
        return Client::open(info).map_err(unusable);
    }
    let tls = ClientTls::load("redis.tls", &settings.tls)?;
    let certificates = TlsCertificates {
        client_tls: tls.identity.as_ref().map(|identity| ClientTlsConfig {
            client_cert: identity.cert_pem.clone().into_bytes(),
            client_key: identity.key_pem.expose_secret().as_bytes().to_vec(),
        }),
        root_cert: tls.ca_with_system_roots_pem().map(String::into_bytes),
    };
    Client::build_with_tls(info, certificates)
        .map_err(|e| ConfigError::new("redis.tls", format!("cannot be used: {:?}", e.kind())))
}

/// Why [`probe`] got no `PONG`.
#[derive(Debug)]
pub enum ProbeFailure {
    /// The TLS handshake failed because of the configuration (an unknown CA, a
    /// refused client certificate…): the setting to fix.
    Mistake(ConfigError),
    /// No answer (down, refused, timed out): an outage, not a mistake.
    Unreachable(String),
}

/// One connection and `PING` within `timeout` (at least 2 s).
pub async fn probe(client: &Client, timeout: Duration) -> Result<(), ProbeFailure> {
    let attempt = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    };
    let timeout = timeout.max(Duration::from_secs(2));
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(match payhook_shared::tls::explain("redis.tls", &error) {
            Some(mistake) => ProbeFailure::Mistake(mistake),
            None => ProbeFailure::Unreachable(error.to_string()),
        }),
        Err(_) => Err(ProbeFailure::Unreachable(format!(
            "no answer within {timeout:?}"
        ))),
    }
}

/// For a `rediss://` client, the configuration mistake [`probe`] finds, if any; `None`
/// for a plain client (nothing to probe) and for an unreachable Redis.
pub async fn tls_mistake(client: &Client, timeout: Duration) -> Option<ConfigError> {
    if !is_tls(client) {
        return None;
    }
    match probe(client, timeout).await {
        Err(ProbeFailure::Mistake(mistake)) => Some(mistake),
        _ => None,
    }
}

/// Whether `client` speaks TLS (`rediss://`).
pub fn is_tls(client: &Client) -> bool {
    matches!(
        client.get_connection_info().addr(),
        redis::ConnectionAddr::TcpTls { .. }
    )
}

/// Why a call did not get an answer.
#[derive(Debug, Error)]
enum Failure {
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("redis.url is not a usable Redis URL")]
    Misconfigured,
}

impl Dedup {
    /// Checks `redis.url` without connecting, for start-up validation.
    pub fn check_url(url: &SecretString) -> Result<(), InvalidRedisUrl> {
        Client::open(url.expose_secret())
            .map(drop)
            .map_err(InvalidRedisUrl)
    }

    /// Prepares the connection and pings once, taking at most `timeout`. Never fails:
    /// an unreachable Redis starts degraded and is probed again as calls come; an
    /// unusable URL is logged and leaves dedup permanently degraded (the worker builds
    /// its client with [`client`] first, which fails at start instead).
    ///
    /// TTLs below one millisecond are raised to one.
    pub async fn connect(
        url: &SecretString,
        prefix: &str,
        claim_ttl: Duration,
        done_ttl: Duration,
        timeout: Duration,
    ) -> Self {
        Self::start(
            Client::open(url.expose_secret()),
            prefix,
            claim_ttl,
            done_ttl,
            timeout,
        )
        .await
    }

    /// [`Dedup::connect`] with a client already built (plain or TLS).
    pub async fn start(
        client: RedisResult<Client>,
        prefix: &str,
        claim_ttl: Duration,
        done_ttl: Duration,
        timeout: Duration,
    ) -> Self {
        let (connection, unusable) =
            match client.and_then(|client| Connection::new(client, timeout)) {
                Ok(connection) => (Some(connection), None),
                Err(error) => (None, Some(error)),
            };
        let dedup = Self {
            inner: Arc::new(Inner {
                connection,
                prefix: prefix.to_owned(),
                claim_ttl_ms: millis(claim_ttl),
                done_ttl_ms: millis(done_ttl),
                timeout,
                scripts: Scripts::new(),
                health: Health::new(Instant::now(), PROBE_INTERVAL),
            }),
        };
        match unusable {
            None => {
                dedup.ping().await;
            }
            Some(cause) => {
                dedup.inner.health.failed(Instant::now());
                tracing::error!(
                    %cause,
                    "redis.url is not a usable Redis URL: dedup disabled, the database decides alone"
                );
            }
        }
        dedup
    }

    /// The Redis key of `event_id`: `<prefix>:dedup:<event_id>`.
    pub fn key(&self, event_id: &str) -> String {
        format!("{}:dedup:{event_id}", self.inner.prefix)
    }

    /// Claims `event_id` for this worker unless it is done or held by another.
    pub async fn claim(&self, event_id: &str) -> Claim {
        let key = self.key(event_id);
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let inner = &self.inner;
        let answer = self
            .guarded("claim", async |con| {
                inner
                    .scripts
                    .claim
                    .key(&key)
                    .arg(&owner)
                    .arg(inner.claim_ttl_ms)
                    .invoke_async::<i64>(con)
                    .await
            })
            .await;
        match answer {
            Some(CLAIM_ACQUIRED) => Claim::Acquired(ClaimToken {
                event_id: event_id.to_owned(),
                owner,
            }),
            Some(CLAIM_DONE) => Claim::AlreadyDone,
            Some(CLAIM_HELD) => Claim::InProgress,
            // Our own script returns nothing else; if it ever did, not claiming is safe.
            Some(_) => Claim::InProgress,
            None => Claim::Unavailable,
        }
    }

    /// After the commit: marks the claim's event done for the done TTL, whatever the
    /// key holds by now (the database has the effect). Failures are swallowed: a
    /// missing marker only sends the next duplicate to the database.
    pub async fn mark_done(&self, token: ClaimToken) {
        let key = self.key(&token.event_id);
        let inner = &self.inner;
        let found = self
            .guarded("mark_done", async |con| {
                inner
                    .scripts
                    .mark_done
                    .key(&key)
                    .arg(&token.owner)
                    .arg(inner.done_ttl_ms)
                    .invoke_async::<i64>(con)
                    .await
            })
            .await;
        let found = match found {
            Some(DONE_WAS_OURS) => return,
            Some(DONE_WAS_FREE) => "nothing",
            Some(DONE_WAS_DONE) => "done",
            Some(DONE_WAS_OTHER) => "another claim",
            Some(_) => "an unknown answer",
            None => {
                tracing::debug!(
                    event_id = %token.event_id,
                    "done marker not written; a duplicate will be settled by the database"
                );
                return;
            }
        };
        tracing::debug!(
            event_id = %token.event_id,
            found,
            "the claim expired before the commit; a longer worker.claim_ttl_ms avoids parallel applies"
        );
    }

    /// On failure: deletes the claim if it is still ours, so a retry is not blocked
    /// until the claim TTL. Never deletes another worker's claim or a `done` marker.
    pub async fn release(&self, token: ClaimToken) {
        let key = self.key(&token.event_id);
        let inner = &self.inner;
        let released = self
            .guarded("release", async |con| {
                inner
                    .scripts
                    .release
                    .key(&key)
                    .arg(&token.owner)
                    .invoke_async::<i64>(con)
                    .await
            })
            .await;
        if released.is_none() {
            tracing::debug!(
                event_id = %token.event_id,
                "claim not released; it expires after worker.claim_ttl_ms"
            );
        }
    }

    /// After a commit made without holding the claim ([`Claim::InProgress`] or
    /// [`Claim::Unavailable`]): best-effort `done` marker for the done TTL.
    pub async fn mark_done_unclaimed(&self, event_id: &str) {
        let key = self.key(event_id);
        let done_ttl_ms = self.inner.done_ttl_ms;
        let written = self
            .guarded("mark_done", async |con| {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(DONE)
                    .arg("PX")
                    .arg(done_ttl_ms)
                    .query_async::<()>(con)
                    .await
            })
            .await;
        if written.is_none() {
            tracing::debug!(
                event_id,
                "done marker not written; a duplicate will be settled by the database"
            );
        }
    }

    /// True while the last call to Redis failed: the worker relies on the database alone.
    pub fn is_degraded(&self) -> bool {
        self.inner.health.is_degraded()
    }

    /// Whether Redis answers `PING` within the timeout. Always asks, even while
    /// degraded (a readiness check is a probe), and updates [`Dedup::is_degraded`].
    pub async fn ping(&self) -> bool {
        self.attempt("ping", async |con| {
            redis::cmd("PING").query_async::<String>(con).await
        })
        .await
        .is_some()
    }

    /// [`Dedup::attempt`] if the health state admits a call now, else `None` at once.
    async fn guarded<T>(
        &self,
        operation: &'static str,
        call: impl AsyncFnOnce(&mut ConnectionManager) -> RedisResult<T>,
    ) -> Option<T> {
        if self.inner.health.admit(Instant::now()) {
            self.attempt(operation, call).await
        } else {
            None
        }
    }

    /// One call, bounded by the timeout; records the outcome and logs transitions.
    async fn attempt<T>(
        &self,
        operation: &'static str,
        call: impl AsyncFnOnce(&mut ConnectionManager) -> RedisResult<T>,
    ) -> Option<T> {
        let inner = &self.inner;
        let Some(connection) = &inner.connection else {
            self.record_failure(operation, &Failure::Misconfigured);
            return None;
        };
        let (generation, mut manager) = connection.current();
        // The manager has its own connection and response timeouts, but waiting for a
        // reconnection in progress is bounded only here.
        let outcome = match tokio::time::timeout(inner.timeout, call(&mut manager)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(Failure::Redis(error)),
            Err(_) => Err(Failure::TimedOut(inner.timeout)),
        };
        match outcome {
            Ok(value) => {
                if inner.health.succeeded() {
                    tracing::info!(operation, "Redis answers again: dedup fast path restored");
                }
                Some(value)
            }
            Err(failure) => {
                // The manager reconnects by itself only after I/O errors; a connection
                // that hangs, or a failed handshake, would stay broken. Start afresh.
                connection.replace(generation, inner.timeout);
                self.record_failure(operation, &failure);
                None
            }
        }
    }

    fn record_failure(&self, operation: &'static str, failure: &Failure) {
        if self.inner.health.failed(Instant::now()) {
            tracing::warn!(
                operation,
                error = %failure,
                "Redis unavailable: dedup falls back to the database until it answers again"
            );
        }
    }
}

impl fmt::Debug for Dedup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the client: its connection info names the host.
        f.debug_struct("Dedup")
            .field("prefix", &self.inner.prefix)
            .field("claim_ttl_ms", &self.inner.claim_ttl_ms)
            .field("done_ttl_ms", &self.inner.done_ttl_ms)
            .field("timeout", &self.inner.timeout)
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

/// The client (to start afresh) and the current connection manager with its generation.
#[derive(Clone)]
struct Connection {
    client: Client,
    current: Arc<RwLock<(u64, ConnectionManager)>>,
}

impl Connection {
    fn new(client: Client, timeout: Duration) -> RedisResult<Self> {
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config(timeout))?;
        Ok(Self {
            client,
            current: Arc::new(RwLock::new((0, manager))),
        })
    }

    fn current(&self) -> (u64, ConnectionManager) {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the manager with a fresh (lazy) one, unless a newer one than the failed
    /// call's `generation` is already in place.
    fn replace(&self, generation: u64, timeout: Duration) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.0 != generation {
            return;
        }
        // Creating a lazy manager does no I/O; it fails only on options we do not use.
        if let Ok(fresh) =
            ConnectionManager::new_lazy_with_config(self.client.clone(), config(timeout))
        {
            *current = (generation + 1, fresh);
        }
    }
}

fn config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        // One attempt per connection. Retrying is the probes' job (a fresh manager at
        // most once per PROBE_INTERVAL), and an attempt that fails at once reports why
        // ("Connection refused", "WRONGPASS") instead of running into our timeout.
        .set_number_of_retries(0)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
