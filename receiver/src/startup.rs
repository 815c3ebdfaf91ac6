//! Building and running the receiver. Production (`main.rs`) and tests start it the
//! same way: [`Application::build`] binds the listener (port 0 in tests) and starts
//! the broker supervisor; [`Application::run_until_stopped`] serves until the injected
//! shutdown token fires, then drains.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use payhook_shared::amqp::Connector;
use payhook_shared::clock::Clock;
use payhook_shared::config::Settings;
use payhook_shared::event::Provider;
use payhook_shared::merchants::Merchants;
use payhook_shared::topology::{Names, QueuePolicy};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::certificates::{Certificates, FollowerConfig};
use crate::edge::Edge;
use crate::metrics::Metrics;
use crate::publisher::{Publisher, PublisherConfig};
use crate::routes::{self, AppState, Limits};

/// How long in-flight requests get to finish after shutdown is asked.
const DRAIN: Duration = Duration::from_secs(10);

/// A bound, not yet running receiver.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds `settings.receiver.listen`, parses every merchant key and starts the
    /// broker connection supervisor. Fails with a message naming the bad setting.
    pub fn build(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        for named in crate::signing_keys::check(settings)? {
            tracing::info!(setting = %named.field, source = %named.source, "a signing key named by the configuration is not readable here, as it should be: the worker uses it");
        }
        let merchants = Merchants::build(settings)?;
        let metrics = Metrics::new();
        metrics.merchants(
            (merchants
                .alipay
                .keys()
                .map(|n| (Provider::Alipay, n.as_str())))
            .chain(
                merchants
                    .wechat_v2
                    .keys()
                    .map(|n| (Provider::WechatV2, n.as_str())),
            )
            .chain(
                merchants
                    .wechat_v3
                    .keys()
                    .map(|n| (Provider::WechatV3, n.as_str())),
            ),
        );
        for c in &merchants.certificates {
            metrics.certificate_expiry(
                c.provider.as_str(),
                &c.merchant,
                &c.certificate.serial,
                "configured",
                c.certificate.not_after,
            );
        }
        if let Some(tls) = &settings.receiver.tls
            && let Ok(pem) = tls.cert.load()
            && let Ok(described) = payhook_shared::inventory::CertificateInfo::of_pem(&pem)
        {
            // The first is the receiver's own; the rest is its chain.
            if let Some(own) = described.first() {
                metrics.certificate_expiry("-", "-", &own.serial, "receiver_tls", own.not_after);
            }
        }
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let amqp = &settings.amqp;
        let publisher = Publisher::start(
            PublisherConfig {
                connector: Connector::from_settings(amqp)?,
                names: Names::new(&amqp.prefix),
                policy: QueuePolicy {
                    delivery_limit: amqp.delivery_limit,
                },
                channels: amqp.publisher_channels,
                reconnect_min: Duration::from_millis(amqp.reconnect_min_ms),
                reconnect_max: Duration::from_millis(amqp.reconnect_max_ms),
            },
            metrics.clone(),
            cancel.clone(),
            &tracker,
        );
        let certificates = Certificates::start(
            FollowerConfig {
                connector: Connector::from_settings(amqp)?,
                names: Names::new(&amqp.prefix),
                reconnect_min: Duration::from_millis(amqp.reconnect_min_ms),
                reconnect_max: Duration::from_millis(amqp.reconnect_max_ms),
            },
            &merchants.wechat_v3,
            &merchants.previous.wechat_v3,
            metrics.clone(),
            cancel.clone(),
            &tracker,
        );
        let r = &settings.receiver;
        let rejected = crate::rejected::Sampler::new(
            Duration::from_millis(r.rejected_sample_interval_ms),
            publisher.clone(),
            clock.clone(),
            metrics.clone(),
        );
        let state = web::Data::new(AppState {
            merchants,
            rejected,
            publisher,
            certificates,
            metrics,
            clock,
            edge: Edge::new(r.trusted_proxies.clone(), r.allowlist.clone()),
            limits: Limits {
                max_body_bytes: r.max_body_bytes,
                ack_deadline: Duration::from_millis(r.ack_deadline_ms),
                body_timeout: Duration::from_millis(r.request_timeout_ms),
            },
            in_flight: Semaphore::new(r.max_in_flight),
        });

        let listener = TcpListener::bind(r.listen)
            .with_context(|| format!("receiver.listen: cannot bind {}", r.listen))?;
        let port = listener.local_addr()?.port();
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .configure(routes::configure)
        })
        // Signals are handled by the caller, which owns the shutdown token.
        .disable_signals()
        .shutdown_timeout(DRAIN.as_secs())
        // Time to receive the request head; the body has its own timeout in the handler.
        .client_request_timeout(Duration::from_millis(r.request_timeout_ms))
        .client_disconnect_timeout(Duration::from_secs(1))
        .backlog(2048);
        if r.workers > 0 {
            server = server.workers(r.workers);
        }
        let server = match &r.tls {
            Some(tls) => server.listen_rustls_0_23(listener, crate::tls::server_config(tls)?)?,
            None => server.listen(listener)?,
        }
        .run();
        Ok(Self {
            port,
            server,
            state,
            cancel,
            tracker,
        })
    }

    /// The bound port (useful with `listen = "127.0.0.1:0"`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker publisher (tests wait for readiness through it).
    pub fn publisher(&self) -> &Publisher {
        &self.state.publisher
    }

    /// The WeChat V3 platform certificates read from the worker (tests wait for them
    /// to catch up, as `/readyz` does).
    pub fn certificates(&self) -> &Certificates {
        &self.state.certificates
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Serves until `shutdown` fires, then stops accepting, lets in-flight requests
    /// finish (bounded), and closes the broker connection.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let handle = self.server.handle();
        let publisher = self.state.publisher.clone();
        let stopper = tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => tracing::info!("shutdown requested: draining"),
                () = publisher.failed() => tracing::error!("stopping: the broker connection cannot work with this configuration"),
            }
            handle.stop(true).await;
        });
        let result = self.server.await;
        stopper.abort();
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        tracing::info!("receiver stopped");
        match self.state.publisher.misconfigured() {
            Some(error) => Err(std::io::Error::other(error.to_owned())),
            None => result,
        }
    }
}
