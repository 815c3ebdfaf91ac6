//! Connecting to RabbitMQ, the one way every part does it (receiver, worker, replay,
//! payhook-admin): `amqp.url` with, for `amqps://`, the certificates of `amqp.tls`,
//! a deadline, and errors that tell a configuration mistake from an outage.

use std::time::Duration;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret as _, SecretString};
use thiserror::Error;

use crate::config::{AmqpSettings, BackendTls, ConfigError};
use crate::tls::ClientTls;

/// How long one connection attempt (TCP, TLS, AMQP handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection attempt failed.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// The configuration cannot work (an unknown CA, a refused client certificate, a
    /// plain port behind `amqps://`): retrying will not help.
    #[error(transparent)]
    Misconfigured(ConfigError),
    /// The broker refused or dropped the attempt (down, restarting, overloaded).
    #[error("broker connection failed: {0}")]
    Failed(#[source] lapin::Error),
    #[error("broker connection timed out after {0:?}")]
    TimedOut(Duration),
}

/// The broker's address and TLS settings, checked; [`Connector::connect`] opens a
/// connection.
#[derive(Clone)]
pub struct Connector {
    url: SecretString,
    tls: Option<ClientTls>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// From `[amqp]`: loads the URL and the certificates and checks that they fit
    /// together. Errors name the setting and never echo the URL (it holds a password).
    pub fn from_settings(settings: &AmqpSettings) -> Result<Self, ConfigError> {
        let url = settings
            .url
            .load()
            .map_err(|e| ConfigError::new("amqp.url", e))?;
        Self::new(url, &settings.tls)
    }

    /// A plain or TLS connector for `url` with the certificates of `tls`.
    pub fn new(url: SecretString, tls: &BackendTls) -> Result<Self, ConfigError> {
        let uri: AMQPUri = url.expose_secret().parse().map_err(|_| {
            ConfigError::new(
                "amqp.url",
                "not an AMQP URI (amqp[s]://user:password@host:port/vhost)",
            )
        })?;
        let secure = uri.scheme == lapin::uri::AMQPScheme::AMQPS;
        let tls = if secure {
            Some(ClientTls::load("amqp.tls", tls)?)
        } else if tls.is_set() {
            return Err(ConfigError::new(
                "amqp.tls",
                "certificates are set but amqp.url is not amqps://: they would be ignored",
            ));
        } else {
            None
        };
        Ok(Self { url, tls })
    }

    /// Whether connections use TLS (`amqps://`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Opens a connection named `name` (shown in the broker's connection list) within
    /// [`CONNECT_TIMEOUT`].
    pub async fn connect(&self, name: &str) -> Result<Connection, ConnectError> {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let attempt = async {
            match &self.tls {
                None => Connection::connect(self.url.expose_secret(), properties).await,
                Some(tls) => {
                    let runtime = lapin::runtime::default_runtime()?;
                    Connection::connect_with_config(
                        self.url.expose_secret(),
                        properties,
                        owned_config(tls),
                        runtime,
                    )
                    .await
                }
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Err(_elapsed) => Err(ConnectError::TimedOut(CONNECT_TIMEOUT)),
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(match crate::tls::explain("amqp.tls", &error) {
                Some(explained) if self.is_tls() => ConnectError::Misconfigured(explained),
                _ => ConnectError::Failed(error),
            }),
        }
    }
}

/// Why a confirmed publish did not end with the broker holding the message.
#[derive(Debug, Error)]
pub enum PublishError {
    #[error("no queue bound for the routing key: the broker returned the message")]
    Returned,
    #[error("the broker nacked the message")]
    Nacked,
    #[error("no publisher confirm within {0:?}")]
    TimedOut(Duration),
    #[error("channel error: {0}")]
    Channel(#[from] lapin::Error),
}

/// Publishes `data` persistent and mandatory on a confirm-mode `channel` and waits
/// for the broker's confirm, at most `deadline`. `Ok` means a durable queue (or
/// stream) holds the message.
pub async fn publish_confirmed(
    channel: &lapin::Channel,
    exchange: &str,
    routing_key: &str,
    data: &[u8],
    properties: lapin::BasicProperties,
    deadline: Duration,
) -> Result<(), PublishError> {
    let publish = async {
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                lapin::options::BasicPublishOptions {
                    mandatory: true,
                    ..lapin::options::BasicPublishOptions::default()
                },
                data,
                properties.with_delivery_mode(2),
            )
            .await?
            .await
    };
    match tokio::time::timeout(deadline, publish).await {
        Err(_elapsed) => Err(PublishError::TimedOut(deadline)),
        Ok(Err(error)) => Err(PublishError::Channel(error)),
        Ok(Ok(lapin::Confirmation::Ack(None))) => Ok(()),
        Ok(Ok(lapin::Confirmation::Ack(Some(_returned)))) => Err(PublishError::Returned),
        // Nacked, or a channel not in confirm mode: neither is a durable hand-over.
        Ok(Ok(lapin::Confirmation::Nack(_) | lapin::Confirmation::NotRequested)) => {
            Err(PublishError::Nacked)
        }
    }
}

/// How long a connection may take to close politely once its session ended.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One broker connection kept alive for a part of payhook — the receiver's publisher,
/// the worker's consumer, the stream readers: connect, run a session on the
/// connection until it ends, close it, and connect again with exponential back-off
/// (reset by every success) until shutdown.
#[derive(Debug, Clone)]
pub struct Supervisor {
    connector: Connector,
    name: String,
    reconnect: (Duration, Duration),
}

impl Supervisor {
    /// Connections named `name` (shown in the broker's connection list), attempts at
    /// least `reconnect.0` and at most `reconnect.1` apart while they fail.
    pub fn new(connector: Connector, name: &str, reconnect: (Duration, Duration)) -> Self {
        Self {
            connector,
            name: name.to_owned(),
            reconnect,
        }
    }

    /// Runs `session` on each connection until `cancel` fires. A session returns when
    /// its connection broke (`Err` says why) or when it saw `cancel`.
    ///
    /// Returns `Err` only for a TLS set-up the broker refuses before any connection
    /// succeeded: that mistake never heals, and the caller stops at start with the
    /// setting to fix. After a first success the same refusal (a server certificate
    /// replaced by one of another CA) is logged as an error and retried, since the
    /// process has been serving with this configuration.
    pub async fn run<E, F, Fut>(
        &self,
        cancel: &tokio_util::sync::CancellationToken,
        mut session: F,
    ) -> Result<(), ConfigError>
    where
        E: std::fmt::Display,
        F: FnMut(std::sync::Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
    {
        let (min, max) = self.reconnect;
        let connection_name = self.name.as_str();
        let mut backoff = min;
        let mut ever_connected = false;
        loop {
            let connected = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                connected = self.connector.connect(connection_name) => connected,
            };
            match connected {
                Ok(connection) => {
                    backoff = min;
                    ever_connected = true;
                    let connection = std::sync::Arc::new(connection);
                    let outcome = session(connection.clone()).await;
                    // Best effort: the connection may already be gone.
                    let _ = tokio::time::timeout(
                        CLOSE_TIMEOUT,
                        connection.close(200, "payhook closing".into()),
                    )
                    .await;
                    if cancel.is_cancelled() {
                        return Ok(());
                    }
                    match outcome {
                        Ok(()) => tracing::warn!(
                            connection = connection_name,
                            "broker session ended; reconnecting"
                        ),
                        Err(error) => tracing::warn!(
                            connection = connection_name,
                            %error,
                            "broker connection lost; reconnecting"
                        ),
                    }
                }
                Err(ConnectError::Misconfigured(error)) => {
                    tracing::error!(connection = connection_name, %error, "broker TLS refused");
                    if !ever_connected {
                        return Err(error);
                    }
                }
                Err(error) => {
                    tracing::warn!(connection = connection_name, %error, "broker connect failed");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(max);
        }
    }
}

impl Supervisor {
    /// Keeps a stream reader going (the certificate and rejected-sample readers): `read`
    /// on each connection until `cancel`. Its failures are logged under `stream`; a
    /// TLS set-up refused at start is logged too and ends the reader — the process's
    /// main connection reports it and stops the process.
    pub async fn follow_stream<E, F, Fut>(
        &self,
        stream: &str,
        cancel: &tokio_util::sync::CancellationToken,
        mut read: F,
    ) where
        E: std::fmt::Display,
        F: FnMut(std::sync::Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
    {
        let result = self
            .run(cancel, |connection| {
                let reading = read(connection);
                async move { reading.await.map_err(|e| format!("{stream} stream: {e}")) }
            })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, stream, "stream reader: broker TLS refused");
        }
    }
}

/// Deliveries in flight to a stream reader before it acknowledges (a stream consumer
/// needs credit).
pub const STREAM_PREFETCH: u16 = 64;

/// Reads the stream `queue` from its first message on `channel`: what the certificate
/// and rejected-sample readers do on every (re)connection. Reading a stream consumes
/// nothing; each delivery must still be acknowledged for credit.
pub async fn read_stream_from_start(
    channel: &lapin::Channel,
    queue: &str,
    consumer_tag_prefix: &str,
) -> lapin::Result<lapin::Consumer> {
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
    channel
        .basic_qos(STREAM_PREFETCH, lapin::options::BasicQosOptions::default())
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from("x-stream-offset"),
        AMQPValue::LongString(LongString::from("first")),
    );
    channel
        .basic_consume(
            queue.into(),
            format!("{consumer_tag_prefix}-{}", uuid::Uuid::new_v4().simple())
                .as_str()
                .into(),
            lapin::options::BasicConsumeOptions::default(),
            arguments,
        )
        .await
}

fn owned_config(tls: &ClientTls) -> OwnedTLSConfig {
    OwnedTLSConfig {
        identity: tls.identity.as_ref().map(|identity| OwnedIdentity::PKCS8 {
            pem: identity.cert_pem.clone().into_bytes(),
            key: identity.key_pem.expose_secret().as_bytes().to_vec(),
        }),
        cert_chain: tls.ca_pem.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Material;

    #[test]
    fn certificates_without_amqps_are_refused_and_the_url_is_not_echoed() {
        let tls = BackendTls {
            ca: Some(Material::Inline("x".into())),
            ..BackendTls::default()
        };
        let err = Connector::new(
            SecretString::from("amqp://u:hunter2@127.0.0.1:5672/%2f".to_owned()),
            &tls,
        )
        .expect_err("refused");
        assert_eq!(err.field, "amqp.tls");
        let err = Connector::new(
            SecretString::from("http://u:hunter2@host".to_owned()),
            &BackendTls::default(),
        )
        .expect_err("refused");
        assert_eq!(err.field, "amqp.url");
        assert!(!err.to_string().contains("hunter2"));
        let plain = Connector::new(
            SecretString::from("amqp://u:hunter2@127.0.0.1:5672/%2f".to_owned()),
            &BackendTls::default(),
        )
        .expect("plain");
        assert!(!plain.is_tls());
        assert!(!format!("{plain:?}").contains("hunter2"));
    }
}
