//! Building and running the worker, the same way in production and in tests:
//! [`Worker::build`] connects PostgreSQL (and migrates), Redis (degraded if away) and
//! binds the admin listener; [`Worker::run_until_stopped`] supervises the broker
//! connection — consumer and outbox relay on it — until the shutdown token fires.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use lapin::Connection;
use lapin::options::ConfirmSelectOptions;
use payhook_shared::amqp::{Connector, Supervisor};
use payhook_shared::config::{ConfigError, Settings};
use payhook_shared::event::Provider;
use payhook_shared::topology::{self, Names, QueuePolicy};
use tokio_util::sync::CancellationToken;

use crate::consumer::{self, ConsumeConfig, Processor};
use crate::db::apply::Expectations;
use crate::dedup::Dedup;
use crate::metrics::Metrics;
use crate::outbox::{Dispatcher, OutboxRelay, RelayConfig};
use crate::reconcile::Reconciler;

pub use crate::shared::Shared;

/// A built, not yet running worker.
pub struct Worker {
    admin_port: u16,
    shared: web::Data<Shared>,
    server: Server,
    processor: Arc<Processor>,
    relay: OutboxRelay,
    dispatcher: Dispatcher,
    reconciler: Option<Arc<Reconciler>>,
    retention: crate::retention::Retention,
    certificates: Option<crate::certificates::Refresher>,
    consume: ConsumeConfig,
    policy: QueuePolicy,
    retry_delays_ms: Vec<u32>,
    reconnect: (Duration, Duration),
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("admin_port", &self.admin_port)
            .finish_non_exhaustive()
    }
}

/// The configured identity of every merchant, for the quarantine checks.
fn expectations(settings: &Settings) -> HashMap<(Provider, String), Expectations> {
    let mut map = HashMap::new();
    for name in settings.alipay.keys() {
        let key = (Provider::Alipay, name.clone());
        map.insert(
            key,
            Expectations::from_settings(settings, Provider::Alipay, name),
        );
    }
    for name in settings.wechat_v2.keys() {
        let key = (Provider::WechatV2, name.clone());
        map.insert(
            key,
            Expectations::from_settings(settings, Provider::WechatV2, name),
        );
    }
    for name in settings.wechat_v3.keys() {
        let key = (Provider::WechatV3, name.clone());
        map.insert(
            key,
            Expectations::from_settings(settings, Provider::WechatV3, name),
        );
    }
    map
}

impl Worker {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // Configuration first, so that a mistake stops the start before any connection.
        let amqp = Connector::from_settings(&settings.amqp)?;
        let tokens = crate::auth::Tokens::load(&settings.worker.admin_tokens)?;
        let redis_client = crate::dedup::client(&settings.redis)?;
        let pool = match crate::db::connect(&settings.postgres).await {
            Ok(pool) => pool,
            Err(error) => {
                return Err(match crate::db::explain_tls(&error) {
                    Some(mistake) => anyhow::Error::new(mistake),
                    None => anyhow::Error::new(error).context("postgres"),
                });
            }
        };
        let w = &settings.worker;
        let r = &settings.redis;
        // Redis' fallback is for outages: a TLS handshake that fails because of the
        // configuration stops the start instead of degrading dedup for good.
        if let Some(mistake) =
            crate::dedup::tls_mistake(&redis_client, Duration::from_millis(r.timeout_ms)).await
        {
            return Err(mistake.into());
        }
        let dedup = Dedup::start(
            Ok(redis_client),
            &r.prefix,
            Duration::from_millis(w.claim_ttl_ms),
            Duration::from_secs(w.done_ttl_secs),
            Duration::from_millis(r.timeout_ms),
        )
        .await;
        let metrics = Metrics::new();
        let names = Names::new(&settings.amqp.prefix);
        let relay = OutboxRelay::new(
            pool.clone(),
            RelayConfig {
                exchange: names.events.clone(),
                batch: w.outbox_batch,
                poll: Duration::from_millis(w.outbox_poll_ms),
                sweep_after: Duration::from_millis(w.outbox_sweep_after_ms),
            },
        );
        let dispatcher = Dispatcher::new(
            pool.clone(),
            names.events.clone(),
            Duration::from_millis(w.outbox_sweep_after_ms),
            metrics.clone(),
        );
        let processor = Arc::new(Processor {
            pool: pool.clone(),
            dedup: dedup.clone(),
            expectations: expectations(settings),
            names: names.clone(),
            retry_delays_ms: w.retry_delays_ms.clone(),
            metrics: metrics.clone(),
            dispatch: dispatcher.handle(),
        });
        let clock: Arc<dyn payhook_shared::clock::Clock> =
            Arc::new(payhook_shared::clock::SystemClock);
        // One set of queriers for the reconciler and the certificate refresher: the
        // platform certificates the refresher downloads verify the query answers.
        let merchants = payhook_shared::merchants::Merchants::build(settings)?;
        metrics.signing_certificates(settings);
        let queriers = payhook_shared::query::Queriers::build(settings, &merchants)?;
        let certificates = crate::certificates::Refresher::new(
            queriers
                .wechat_v3
                .iter()
                .map(|(name, querier)| {
                    let previous = merchants
                        .previous
                        .wechat_v3
                        .get(name)
                        .map(|p| querier.with_api_v3_key(p.api_v3_key.clone()));
                    (name.clone(), querier.clone(), previous)
                })
                .collect(),
            payhook_shared::query::QueryClient::new(&settings.reconcile, clock.clone())?,
            Duration::from_secs(settings.reconcile.certificates_refresh_secs),
            amqp.clone(),
            names.clone(),
            metrics.clone(),
        );
        let reconciler =
            Reconciler::build_with(settings, queriers, pool.clone(), metrics.clone(), clock)
                .context("reconcile")?
                .map(Arc::new);
        let shared = web::Data::new(Shared {
            pool,
            dedup,
            metrics,
            names,
            merchants,
            rejected: crate::rejected::Samples::default(),
            amqp,
            broker_up: AtomicBool::new(false),
            retry_tiers: w.retry_delays_ms.len(),
        });
        let listener = TcpListener::bind(w.admin_listen)
            .with_context(|| format!("worker.admin_listen: cannot bind {}", w.admin_listen))?;
        let admin_port = listener.local_addr()?.port();
        if tokens.is_empty() {
            tracing::warn!(
                "worker.admin_tokens is empty: the admin API answers 401 to everything but /healthz, /readyz and /metrics"
            );
        }
        let tokens = web::Data::new(tokens);
        let data = shared.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(tokens.clone())
                .wrap(actix_web::middleware::from_fn(crate::auth::guard))
                .configure(crate::admin::configure)
        })
        .disable_signals()
        .workers(1)
        .shutdown_timeout(5)
        .listen(listener)?
        .run();
        let retention = crate::retention::Retention::new(
            shared.pool.clone(),
            settings.retention.clone(),
            shared.metrics.clone(),
        );
        Ok(Self {
            admin_port,
            shared,
            server,
            processor,
            relay,
            dispatcher,
            reconciler,
            retention,
            certificates,
            consume: ConsumeConfig {
                prefetch: w.prefetch,
                concurrency: w.concurrency,
                batch_max: w.batch_max,
                batch_linger: Duration::from_millis(w.batch_linger_ms),
                consumer_tag: format!("payhook-worker-{}", uuid::Uuid::new_v4().simple()),
            },
            policy: QueuePolicy {
                delivery_limit: settings.amqp.delivery_limit,
            },
            retry_delays_ms: w.retry_delays_ms.clone(),
            reconnect: (
                Duration::from_millis(settings.amqp.reconnect_min_ms),
                Duration::from_millis(settings.amqp.reconnect_max_ms),
            ),
        })
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn shared_handle(&self) -> web::Data<Shared> {
        self.shared.clone()
    }

    /// Runs until `shutdown` fires: stops consuming, finishes in-flight messages, stops
    /// the relay, closes the broker connection, then the admin listener.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        let retention = tokio::spawn(self.retention.run(shutdown.clone()));
        let certificates_stop = shutdown.child_token();
        let certificates = self
            .certificates
            .map(|refresher| tokio::spawn(refresher.run(certificates_stop.clone())));
        let rejected = tokio::spawn(crate::rejected::follow(
            self.shared.rejected.clone(),
            self.shared.amqp.clone(),
            self.shared.names.clone(),
            self.reconnect,
            certificates_stop.clone(),
        ));
        let mistake = BrokerSession {
            shared: self.shared.clone(),
            processor: self.processor,
            background: Background {
                relay: self.relay,
                dispatcher: self.dispatcher,
                reconciler: self.reconciler,
            },
            consume: self.consume,
            policy: self.policy,
            retry_delays_ms: self.retry_delays_ms,
            reconnect: self.reconnect,
        }
        .supervise(shutdown)
        .await;
        retention.abort();
        // Stopped here too when the worker stops for a broker mistake.
        certificates_stop.cancel();
        if let Some(certificates) = certificates {
            let _ = tokio::time::timeout(Duration::from_secs(5), certificates).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), rejected).await;
        handle.stop(true).await;
        let served = match server.await {
            Ok(result) => result,
            Err(join) => Err(std::io::Error::other(join)),
        };
        match mistake {
            Some(error) => Err(std::io::Error::other(error)),
            None => served,
        }
    }
}

/// What runs beside the consumer on a broker connection.
struct Background {
    relay: OutboxRelay,
    dispatcher: Dispatcher,
    reconciler: Option<Arc<Reconciler>>,
}

/// The worker's life on the broker: what each connection needs, and the loop that
/// reconnects with back-off.
struct BrokerSession {
    shared: web::Data<Shared>,
    processor: Arc<Processor>,
    background: Background,
    consume: ConsumeConfig,
    policy: QueuePolicy,
    retry_delays_ms: Vec<u32>,
    /// Back-off bounds between connection attempts.
    reconnect: (Duration, Duration),
}

impl BrokerSession {
    /// Connects, runs a session, and reconnects until `shutdown`; `Some` for a broker
    /// mistake that stops the worker at start (TLS refused).
    async fn supervise(&self, shutdown: CancellationToken) -> Option<ConfigError> {
        let shared = &self.shared;
        let supervisor = Supervisor::new(shared.amqp.clone(), "payhook-worker", self.reconnect);
        let result = supervisor
            .run(&shutdown, |connection| {
                let shutdown = &shutdown;
                async move {
                    let outcome = self.session(&connection, shutdown).await;
                    shared.set_broker_up(false);
                    outcome
                }
            })
            .await;
        tracing::info!("worker stopped consuming");
        result.err()
    }

    /// One broker connection's life: topology, consumer and relay until one of them stops.
    async fn session(
        &self,
        connection: &Connection,
        shutdown: &CancellationToken,
    ) -> Result<(), lapin::Error> {
        let Self {
            shared,
            processor,
            background,
            consume,
            policy,
            retry_delays_ms,
            ..
        } = self;
        let setup = connection.create_channel().await?;
        topology::declare_all(&setup, &shared.names, policy, retry_delays_ms).await?;
        let consume_channel = connection.create_channel().await?;
        let publish_channel = connection.create_channel().await?;
        publish_channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let relay_channel = connection.create_channel().await?;
        relay_channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let dispatch_channel = connection.create_channel().await?;
        dispatch_channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        shared.set_broker_up(true);
        tracing::info!("broker connected; consuming");

        let session = shutdown.child_token();
        let consumer = consumer::consume(
            processor.clone(),
            consume_channel,
            publish_channel,
            consume,
            session.clone(),
        );
        let relay_session = session.clone();
        let reconcile_channel = match &background.reconciler {
            Some(_) => {
                let channel = connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                Some(channel)
            }
            None => None,
        };
        let relaying = async move {
            let relay = background.relay.run(relay_channel, relay_session.clone());
            match (&background.reconciler, reconcile_channel) {
                (Some(reconciler), Some(channel)) => {
                    let reconciling = reconciler.run(channel, relay_session.clone());
                    tokio::pin!(relay, reconciling);
                    tokio::select! {
                        result = &mut relay => result,
                        result = &mut reconciling => {
                            if let Err(error) = &result {
                                tracing::warn!(%error, "reconciler stopped");
                            }
                            relay_session.cancel();
                            relay.await
                        }
                    }
                }
                _ => relay.await,
            }
        };
        // The dispatcher stops after the consumer, so the events of the messages the
        // consumer finishes while stopping still go out from memory.
        let dispatch_stop = CancellationToken::new();
        let dispatching = background
            .dispatcher
            .run(dispatch_channel, dispatch_stop.clone());
        tokio::pin!(consumer, relaying, dispatching);
        tokio::select! {
            result = &mut consumer => {
                session.cancel();
                dispatch_stop.cancel();
                let _ = tokio::join!(&mut relaying, &mut dispatching);
                result
            }
            result = &mut relaying => {
                if let Err(error) = &result {
                    tracing::warn!(%error, "outbox relay stopped");
                }
                session.cancel();
                let result = consumer.await;
                dispatch_stop.cancel();
                let _ = dispatching.await;
                result
            }
            result = &mut dispatching => {
                if let Err(error) = &result {
                    tracing::warn!(%error, "outbox dispatcher stopped");
                }
                // What the consumer still hands over waits in the queue for the next
                // session's dispatcher (or, if it waits too long, for the relay).
                session.cancel();
                let result = consumer.await;
                let _ = relaying.await;
                result
            }
        }
    }
}
