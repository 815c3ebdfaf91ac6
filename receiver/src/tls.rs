//! Serving HTTPS directly (rustls), for deployments without a TLS-terminating proxy:
//! the providers require an HTTPS notify_url.

use payhook_shared::config::{ConfigError, TlsSettings};
use rustls::ServerConfig;

/// Builds the rustls server configuration from PEM material.
pub fn server_config(settings: &TlsSettings) -> Result<ServerConfig, ConfigError> {
    let cert_pem = settings
        .cert
        .load()
        .map_err(|e| ConfigError::new("receiver.tls.cert", e))?;
    let key_pem = settings
        .key
        .load()
        .map_err(|e| ConfigError::new("receiver.tls.key", e))?;
    let certs = payhook_shared::tls::certificates(&cert_pem)
        .map_err(|e| ConfigError::new("receiver.tls.cert", e))?;
    let key = payhook_shared::tls::private_key(&key_pem)
        .map_err(|e| ConfigError::new("receiver.tls.key", e))?;
    ServerConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("receiver.tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::new("receiver.tls", e.to_string()))
}
