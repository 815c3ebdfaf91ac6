//! Serving HTTPS directly (rustls), for deployments without a TLS-terminating proxy:
//! the providers require an HTTPS notify_url.

use payhook_shared::config::{ConfigError, TlsSettings};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::ExposeSecret as _;

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
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new("receiver.tls.cert", e.to_string()))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            "receiver.tls.cert",
            "no CERTIFICATE in PEM",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.expose_secret().as_bytes()).map_err(|e| {
        ConfigError::new(
            "receiver.tls.key",
            match e {
                rustls::pki_types::pem::Error::NoItemsFound => "no private key in PEM".into(),
                other => other.to_string(),
            },
        )
    })?;
    ServerConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("receiver.tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::new("receiver.tls", e.to_string()))
}
