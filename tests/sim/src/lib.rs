//! The provider simulator: Alipay, WeChat Pay V2 and V3 played at once, for tests and
//! for people (the `payhook-sim` binary).
//!
//! # Layout
//!
//! - [`book`]: the order book — the truth (orders, refunds, every notification and
//!   its delivery attempts) that tests compare payhook's database against.
//! - `ops`: the state changes (create, pay, refund, close, finish), each recording the
//!   notification it produces and starting its delivery.
//! - `notify`: notifications built exactly as the providers build them (signed and
//!   encrypted by [`crate::signer`]), rendered per attempt with their faults.
//! - `delivery` + [`schedule`]: delivery to payhook's notify URLs on the providers'
//!   real resend schedules, shrunk by a time scale.
//! - [`faults`]: what can go wrong, per order or drawn from rates by a seeded RNG.
//! - `server`: the query APIs (Alipay gateway, WeChat V3 and V2), checking request
//!   signatures and signing responses as the providers do; counters and a hook that
//!   spoils the signature of the next responses.
//! - `platform`: WeChat platform certificates and their rotation with overlap.
//! - [`client`]: the payhook side of a query (request signing), for tests.
//! - [`keys_dir`]: keys kept in a directory and the payhook config snippet (CLI).
//!
//! One merchant per provider (the signers of [`Providers`]), named
//! [`SimConfig::merchant`] in the notify URLs (`/notify/alipay/{merchant}`, …).
//!
//! ```no_run
//! # async fn example() -> Result<(), payhook_sim::SimError> {
//! use payhook_shared::event::Provider;
//! use payhook_sim::{SimConfig, Simulator};
//!
//! let mut config = SimConfig::default();
//! // Before starting: config.providers.register(&mut receiver_settings);
//! config.notify_base = Some("http://127.0.0.1:8080".into());
//! config.time_scale = 0.001;
//! let sim = Simulator::start(config).await?;
//! sim.create_order(Provider::Alipay, "order-1", 8_888)?;
//! let id = sim.pay(Provider::Alipay, "order-1")?.expect("payments are notified");
//! sim.refund(Provider::Alipay, "order-1", "refund-1", 1_000)?;
//! // Queries: {sim.base_url()}/gateway.do, /v3/…, /pay/orderquery.
//! let acked = sim.notification(&id).is_some_and(|n| n.acked);
//! # let _ = acked;
//! # Ok(())
//! # }
//! ```

pub mod bills;
pub mod book;
pub mod client;
mod delivery;
pub mod faults;
pub mod keys;
pub mod keys_dir;
mod notify;
pub mod oneshot;
mod ops;
mod platform;
mod providers;
pub mod scenario;
pub mod schedule;
pub mod server;
pub mod signer;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use payhook_shared::clock::{Clock, SystemClock};
use payhook_shared::crypto::{RsaPublicKey, parse_public_key};
use payhook_shared::event::Provider;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use book::{Attempt, NotificationKind, NotificationTruth, OrderState, OrderTruth, RefundTruth};
pub use delivery::is_ack;
pub use faults::{FaultRates, Faults};
pub use notify::{NotifyRequest, SIGN_TEST_PREFIX};
pub use providers::Providers;
pub use schedule::TimeScale;
pub use server::{QueryStats, api, result};

use crate::signer::alipay::AlipaySigner;
use crate::signer::wechat_v3::public_key_pem;
use book::Book;
use platform::Platform;

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("no such order: {0}")]
    UnknownOrder(String),
    /// The provider would refuse this (refund above the paid amount, pay twice, …).
    #[error("refused: {0}")]
    Refused(String),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error("bad key material: {0}")]
    Key(String),
}

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The provider-side signers and merchant ids (keys, API keys).
    pub providers: Providers,
    /// The merchant name in payhook's notify URLs (`m1`).
    pub merchant: String,
    /// payhook's receiver, e.g. `http://127.0.0.1:8080`; notifications go to
    /// `{base}/notify/alipay/{merchant}` etc. `None`: nothing is delivered (every
    /// notification counts as dropped) — a query-only simulator.
    pub notify_base: Option<String>,
    /// Where the query API listens (`127.0.0.1:0` for tests).
    pub listen: SocketAddr,
    /// Provider time → real time (`0.001`: Alipay's 4 min resend after 240 ms).
    pub time_scale: f64,
    /// Seed of the RNG drawing faults and ids.
    pub seed: u64,
    /// Faults of notifications whose order has no faults of its own.
    pub fault_rates: FaultRates,
    /// The app's public key (PEM or bare Base64), checking gateway request signatures.
    pub alipay_app_public_key: Option<String>,
    /// Certificate mode: responses carry `alipay_cert_sn`, requests must carry
    /// `app_cert_sn` and `alipay_root_cert_sn`.
    pub alipay_cert_mode: bool,
    /// The merchant API public keys (PEM) by certificate serial, checking V3
    /// `Authorization` headers.
    pub wechat_merchant_keys: Vec<(String, String)>,
    /// Provider time between a platform certificate rotation and signing with the
    /// new certificate.
    pub cert_overlap: Duration,
    /// Provider time the old certificate stays listed after the switch.
    pub cert_retire_after: Duration,
    /// How long one delivery request may take (WeChat gives 5 s).
    pub request_timeout: Duration,
    /// The clock that checks V3 request timestamps.
    pub clock: Arc<dyn Clock>,
}

/// The serial of the test merchant API certificate ([`keys::WECHAT_MERCHANT_SLOT`]).
pub const TEST_MERCHANT_SERIAL: &str = "5A1B0C2D3E4F5A6B7C8D9E0F1A2B3C4D5E6F7A8B";

impl SimConfig {
    /// A simulator for `providers`, trusting the test query keys
    /// ([`keys::ALIPAY_APP_SLOT`], [`keys::WECHAT_MERCHANT_SLOT`] under
    /// [`TEST_MERCHANT_SERIAL`]), real time, no faults, listening on port 0.
    pub fn new(providers: Providers) -> Self {
        Self {
            providers,
            merchant: Providers::MERCHANT.to_owned(),
            notify_base: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            time_scale: 1.0,
            seed: 0,
            fault_rates: FaultRates::default(),
            alipay_app_public_key: Some(public_key_pem(keys::rsa_key(keys::ALIPAY_APP_SLOT))),
            alipay_cert_mode: false,
            wechat_merchant_keys: vec![(
                TEST_MERCHANT_SERIAL.to_owned(),
                public_key_pem(keys::rsa_key(keys::WECHAT_MERCHANT_SLOT)),
            )],
            cert_overlap: Duration::from_secs(5 * 24 * 3600),
            cert_retire_after: Duration::from_secs(5 * 24 * 3600),
            request_timeout: Duration::from_secs(5),
            clock: Arc::new(SystemClock),
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::new(Providers::new())
    }
}

/// A running simulator. Cheap to clone; stops when [`Simulator::stop`] is called or
/// the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
    _guard: Arc<StopOnDrop>,
}

#[derive(Debug)]
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// State shared by the API, the deliveries and the handle.
impl Inner {
    /// An order's truth, as the provider now sees it.
    pub(crate) fn order(&self, provider: Provider, out_trade_no: &str) -> Option<OrderTruth> {
        self.lock().book.order(provider, out_trade_no).cloned()
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    merchant: String,
    notify_base: Option<String>,
    scale: TimeScale,
    client: reqwest::Client,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    providers: Providers,
    alipay_gbk: AlipaySigner,
    alipay_cert_mode: bool,
    alipay_app_key: Option<RsaPublicKey>,
    wechat_merchant_keys: Vec<(String, RsaPublicKey)>,
    clock: Arc<dyn Clock>,
    cert_overlap: Duration,
    cert_retire_after: Duration,
    state: Mutex<State>,
    platform: Mutex<Platform>,
    stats: Mutex<QueryStats>,
    bad_responses: AtomicU32,
    port: u16,
}

#[derive(Debug)]
struct State {
    book: Book,
    rng: StdRng,
    rates: FaultRates,
    order_faults: HashMap<(u8, String), Faults>,
    signals: HashMap<(u8, String), watch::Sender<u32>>,
    /// Added to the wall clock for the times the book records (paid, refunded):
    /// negative to play a past day, whose bill is then available.
    book_offset: time::Duration,
    /// Differences put into days' bills.
    bill_tweaks: HashMap<(u8, time::Date), Vec<bills::BillTweak>>,
    /// Bill files served by token (APIv3 `download_url`, Alipay's ZIP URL).
    bill_files: HashMap<String, Vec<u8>>,
}

/// Delivery totals, for the CLI summary and quick assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub orders: usize,
    /// Orders by final state (`PAID`, …).
    pub by_state: BTreeMap<String, usize>,
    pub notifications: usize,
    /// HTTP requests sent (resends, duplicates, probes included).
    pub requests: usize,
    pub acked: usize,
    /// Attempts after a notification's first (not counting duplicates and probes).
    pub resends: usize,
    pub dropped: usize,
    pub gave_up: usize,
    /// Notifications still being delivered.
    pub in_flight: usize,
    /// Notifications that carried each fault.
    pub faults: BTreeMap<String, usize>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn platform(&self) -> MutexGuard<'_, Platform> {
        self.platform.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> MutexGuard<'_, QueryStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn bill(
        &self,
        provider: Provider,
        day: time::Date,
    ) -> Vec<payhook_shared::bills::BillRecord> {
        let state = self.lock();
        let tweaks = state
            .bill_tweaks
            .get(&(book::key(provider), day))
            .map_or(&[][..], Vec::as_slice);
        bills::records(&state.book, provider, day, tweaks)
    }

    pub(crate) fn set_book_offset(&self, offset: time::Duration) {
        self.lock().book_offset = offset;
    }

    pub(crate) fn tweak_bill(&self, provider: Provider, day: time::Date, tweak: bills::BillTweak) {
        self.lock()
            .bill_tweaks
            .entry((book::key(provider), day))
            .or_default()
            .push(tweak);
    }

    /// Keeps a bill file for download; returns its URL.
    pub(crate) fn offer_bill_file(&self, path: &str, bytes: Vec<u8>) -> String {
        let token = uuid::Uuid::new_v4().simple().to_string();
        self.lock().bill_files.insert(token.clone(), bytes);
        format!("http://127.0.0.1:{}{path}?token={token}", self.port)
    }

    pub(crate) fn bill_file(&self, token: &str) -> Option<Vec<u8>> {
        self.lock().bill_files.get(token).cloned()
    }

    pub(crate) fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// Consumes one "spoil the next response signature" token.
    fn take_bad_response(&self) -> bool {
        let taken = self
            .bad_responses
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if taken {
            self.stats().bad_signatures_sent += 1;
        }
        taken
    }
}

impl Simulator {
    /// Binds the query API (`config.listen`, port 0 in tests) and starts serving.
    pub async fn start(config: SimConfig) -> Result<Self, SimError> {
        let listener = std::net::TcpListener::bind(config.listen)?;
        let port = listener.local_addr()?.port();
        let alipay_app_key = config
            .alipay_app_public_key
            .as_deref()
            .map(parse_public_key)
            .transpose()
            .map_err(|e| SimError::Key(format!("alipay_app_public_key: {e}")))?;
        let wechat_merchant_keys = config
            .wechat_merchant_keys
            .iter()
            .map(|(serial, pem)| {
                parse_public_key(pem)
                    .map(|key| (serial.clone(), key))
                    .map_err(|e| SimError::Key(format!("wechat merchant key {serial}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| SimError::Key(format!("HTTP client: {e}")))?;
        let shutdown = CancellationToken::new();
        let inner = Arc::new(Inner {
            merchant: config.merchant,
            notify_base: config.notify_base,
            scale: TimeScale(config.time_scale),
            client,
            shutdown: shutdown.clone(),
            tracker: TaskTracker::new(),
            alipay_gbk: config.providers.alipay.clone().gbk(),
            platform: Mutex::new(Platform::new(config.providers.wechat_v3.clone())),
            providers: config.providers,
            alipay_cert_mode: config.alipay_cert_mode,
            alipay_app_key,
            wechat_merchant_keys,
            clock: config.clock,
            cert_overlap: config.cert_overlap,
            cert_retire_after: config.cert_retire_after,
            state: Mutex::new(State {
                book: Book::default(),
                rng: StdRng::seed_from_u64(config.seed),
                rates: config.fault_rates,
                order_faults: HashMap::new(),
                signals: HashMap::new(),
                book_offset: time::Duration::ZERO,
                bill_tweaks: HashMap::new(),
                bill_files: HashMap::new(),
            }),
            stats: Mutex::new(QueryStats::default()),
            bad_responses: AtomicU32::new(0),
            port,
        });
        server::spawn(Arc::clone(&inner), listener)?;
        Ok(Self {
            inner,
            _guard: Arc::new(StopOnDrop(shutdown)),
        })
    }

    /// `http://127.0.0.1:{port}`: the base URL of every query API.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.port)
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// The provider-side signers (initial keys, ids and API keys): register them in
    /// payhook's settings with [`Providers::register`].
    pub fn providers(&self) -> &Providers {
        &self.inner.providers
    }

    /// The merchant name in the notify URLs.
    pub fn merchant(&self) -> &str {
        &self.inner.merchant
    }

    /// One order's truth.
    pub fn order(&self, provider: Provider, out_trade_no: &str) -> Option<OrderTruth> {
        self.inner.order(provider, out_trade_no)
    }

    /// Every order's truth.
    pub fn orders(&self) -> Vec<OrderTruth> {
        self.inner.lock().book.orders.values().cloned().collect()
    }

    /// One notification's truth (by Alipay `notify_id`, V3 `id`, or the V2 id returned).
    pub fn notification(&self, id: &str) -> Option<NotificationTruth> {
        self.inner.lock().book.notifications.get(id).cloned()
    }

    /// Every notification, oldest first.
    pub fn notifications(&self) -> Vec<NotificationTruth> {
        let state = self.inner.lock();
        state
            .book
            .order_of_notifications
            .iter()
            .filter_map(|id| state.book.notifications.get(id).cloned())
            .collect()
    }

    /// Totals over orders and notifications.
    pub fn summary(&self) -> Summary {
        let state = self.inner.lock();
        let mut s = Summary {
            orders: state.book.orders.len(),
            notifications: state.book.notifications.len(),
            ..Summary::default()
        };
        for order in state.book.orders.values() {
            *s.by_state
                .entry(order.state.as_str().to_owned())
                .or_default() += 1;
        }
        for n in state.book.notifications.values() {
            s.requests += n.sent();
            let real = n
                .attempts
                .iter()
                .filter(|a| !matches!(a.fault, Some("duplicate" | "sign_test_probe")))
                .count();
            s.resends += real.saturating_sub(1);
            s.acked += usize::from(n.acked);
            s.dropped += usize::from(n.dropped);
            s.gave_up += usize::from(n.gave_up);
            s.in_flight += usize::from(!n.settled());
            for fault in &n.faults {
                *s.faults.entry((*fault).to_owned()).or_default() += 1;
            }
        }
        s
    }

    /// Waits until every notification is acked, dropped or given up; `false` if that
    /// did not happen `within`.
    pub async fn settle(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.summary().in_flight > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The trades and refunds `provider`'s bill of `day` (China Standard Time)
    /// states, tweaks applied: what a bill download serves.
    pub fn bill(
        &self,
        provider: Provider,
        day: time::Date,
    ) -> Vec<payhook_shared::bills::BillRecord> {
        self.inner.bill(provider, day)
    }

    /// Records the times of the payments and refunds made from now on `offset` away
    /// from the wall clock (negative: they happen on a past day, whose bill the
    /// providers have already generated).
    pub fn set_book_offset(&self, offset: time::Duration) {
        self.inner.set_book_offset(offset);
    }

    /// Puts a difference into `provider`'s bill of `day`.
    pub fn tweak_bill(&self, provider: Provider, day: time::Date, tweak: bills::BillTweak) {
        self.inner.tweak_bill(provider, day, tweak);
    }

    /// Query counters.
    pub fn query_stats(&self) -> QueryStats {
        self.inner.stats().clone()
    }

    /// Queries of `api` ([`api`]) answered with `result` ([`result`]).
    pub fn queries_served(&self, api: &str, result: &str) -> u64 {
        self.inner.stats().served(api, result)
    }

    /// Query requests refused for their signature (any API).
    pub fn rejected_request_signatures(&self) -> u64 {
        self.inner.stats().rejected_signatures
    }

    /// The next `n` query responses (any API) carry a bad signature.
    pub fn corrupt_next_query_responses(&self, n: u32) {
        self.inner.bad_responses.fetch_add(n, Ordering::SeqCst);
    }

    /// Rotates the WeChat platform certificate: a new key and certificate (new
    /// serial, returned) listed by `/v3/certificates` at once; notifications and
    /// responses are signed with it after [`SimConfig::cert_overlap`] (scaled); the
    /// old one stays listed [`SimConfig::cert_retire_after`] (scaled) longer.
    pub async fn rotate_wechat_platform_cert(&self) -> String {
        let serial = {
            let mut state = self.inner.lock();
            format!("{:040X}", state.rng.random::<u128>())
        };
        // Key generation takes a while: off the async threads. Rotations are rare and
        // the signers want `'static` keys, so the key lives as long as the process.
        let key = tokio::task::spawn_blocking(keys::generate_rsa_key)
            .await
            .expect("key generation does not panic");
        let key: &'static rsa::PrivateKey = Box::leak(Box::new(key));
        let overlap = self.inner.scale.apply(self.inner.cert_overlap);
        let retire = self.inner.scale.apply(self.inner.cert_retire_after);
        self.inner.platform().rotate(key, &serial, overlap, retire);
        serial
    }

    /// The `Wechatpay-Serial` notifications and responses are signed with now.
    pub fn wechat_signing_serial(&self) -> String {
        self.inner.platform().current().serial.clone()
    }

    /// The serials `/v3/certificates` lists now.
    pub fn wechat_listed_serials(&self) -> Vec<String> {
        self.inner
            .platform()
            .listed()
            .iter()
            .map(|e| e.signer.serial.clone())
            .collect()
    }

    /// Stops serving and delivering; waits for the deliveries to notice.
    pub async fn stop(self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.tracker.wait()).await;
    }
}

#[cfg(test)]
mod tests;
