//! TLS to the backends (RabbitMQ, PostgreSQL, Redis): the configured certificates,
//! loaded and checked at start, and a plain explanation of a handshake that failed.
//!
//! Every backend trusts the system's roots plus the configured `ca`, checks the
//! server's name against the host of its URL (PostgreSQL: with `sslmode =
//! "verify-full"`), and presents the client certificate when one is configured.
//! A failure that configuration causes — an unknown CA, a name mismatch, a refused or
//! missing client certificate, a plain port behind a TLS URL — is told apart from an
//! outage by [`explain`], so that start-up stops with the setting to fix instead of
//! retrying for ever or degrading silently.

use std::error::Error as StdError;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, RootCertStore};
use secrecy::{ExposeSecret as _, SecretString};

use crate::config::{BackendTls, ConfigError};

/// The certificates of one backend's TLS, loaded and parsed.
#[derive(Clone)]
pub struct ClientTls {
    /// The configured CA bundle (PEM), already known to parse.
    pub ca_pem: Option<String>,
    /// The client certificate chain (PEM) and its key, already known to match.
    pub identity: Option<Identity>,
}

/// A client certificate chain and its private key, both PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: SecretString,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Loads `settings` (the `section`, e.g. `"amqp.tls"`) and checks every piece: the
    /// CA bundle and the certificate parse, the key parses and belongs to the
    /// certificate. Errors name the setting, never the content.
    pub fn load(section: &'static str, settings: &BackendTls) -> Result<Self, ConfigError> {
        let field = |name: &str| format!("{section}.{name}");
        let ca_pem = match &settings.ca {
            None => None,
            Some(material) => {
                let pem = material
                    .load()
                    .map_err(|e| ConfigError::new(field("ca"), e))?;
                certificates(&pem).map_err(|e| ConfigError::new(field("ca"), e))?;
                Some(pem)
            }
        };
        let identity = match (&settings.cert, &settings.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert_pem = cert
                    .load()
                    .map_err(|e| ConfigError::new(field("cert"), e))?;
                let key_pem = key.load().map_err(|e| ConfigError::new(field("key"), e))?;
                let chain =
                    certificates(&cert_pem).map_err(|e| ConfigError::new(field("cert"), e))?;
                let private =
                    private_key(&key_pem).map_err(|e| ConfigError::new(field("key"), e))?;
                check_pair(chain, private).map_err(|e| ConfigError::new(field("key"), e))?;
                Some(Identity { cert_pem, key_pem })
            }
            _ => {
                return Err(ConfigError::new(
                    field("cert"),
                    "a client certificate and its key go together: set both cert and key, or neither",
                ));
            }
        };
        Ok(Self { ca_pem, identity })
    }

    /// The configured CA bundle followed by the system's roots, as one PEM bundle: for
    /// clients whose own CA setting replaces the system's roots instead of adding to
    /// them (redis-rs), so that every backend trusts the same set.
    pub fn ca_with_system_roots_pem(&self) -> Option<String> {
        let configured = self.ca_pem.as_ref()?;
        let mut bundle = configured.clone();
        if !bundle.ends_with('\n') {
            bundle.push('\n');
        }
        for root in rustls_native_certs::load_native_certs().certs {
            bundle.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", root.to_vec())));
        }
        Some(bundle)
    }
}

/// Every certificate of a PEM text; an error when there is none or one is malformed.
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE in the PEM text".into());
    }
    Ok(certs)
}

/// The private key of a PEM text (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(pem: &SecretString) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.expose_secret().as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no private key in the PEM text".into(),
        other => format!("not a PEM private key: {other}"),
    })
}

/// Builds a client configuration with the pair: rustls refuses a key that does not
/// belong to the certificate.
fn check_pair(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<(), String> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(chain, key)
        .map(drop)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                "the key does not belong to the certificate in cert".to_owned()
            }
            other => format!("the certificate and key cannot be used: {other}"),
        })
}

/// What went wrong in a TLS handshake with a backend, when configuration caused it:
/// the setting to look at (e.g. `amqp.tls.ca`) and a sentence saying why. `None` when
/// `error` carries no TLS failure (refused, timed out, reset: an outage).
pub fn explain(section: &str, error: &(dyn StdError + 'static)) -> Option<ConfigError> {
    let tls = find_tls_error(error)?;
    let base = section.trim_end_matches(".tls");
    let url = format!("{base}.url");
    let (field, message) = match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => (
                format!("{section}.ca"),
                "the server's certificate is not signed by a trusted CA: set it to the CA that signed the server's certificate".to_owned(),
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => (
                url,
                "the server's certificate does not name the host in the URL: connect by the name the certificate gives".to_owned(),
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                url,
                "the server's certificate has expired".to_owned(),
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                url,
                "the server's certificate is not valid yet (check the clocks)".to_owned(),
            ),
            other => (
                format!("{section}.ca"),
                format!("the server's certificate was refused: {other:?}"),
            ),
        },
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied),
        ) => (
            format!("{section}.cert"),
            format!(
                "the server refused the client certificate, or wants one ({alert:?}): set cert and key to a certificate its CA signed"
            ),
        ),
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => (
            url,
            "the server did not answer in TLS: is the port its TLS port?".to_owned(),
        ),
        other => (url, format!("TLS handshake failed: {other}")),
    };
    Some(ConfigError::new(field, message))
}

/// The first rustls error in `error`'s chain, looking inside `io::Error`s too (whose
/// `source()` skips the error they wrap).
fn find_tls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = find_tls_error(inner)
        {
            return Some(tls);
        }
        // redis-rs hands out its wrapped error as the `Arc` itself.
        if let Some(shared) = e.downcast_ref::<Arc<dyn StdError + Send + Sync>>()
            && let Some(tls) = find_tls_error(&**shared)
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Material, Secret};

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["client".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_and_a_ca_load() {
        let (cert, key) = pair();
        let tls = ClientTls::load(
            "amqp.tls",
            &BackendTls {
                ca: Some(Material::Inline(cert.clone())),
                cert: Some(Material::Inline(cert)),
                key: Some(Secret::inline(key)),
            },
        )
        .expect("loads");
        assert_eq!(
            certificates(tls.ca_pem.as_deref().expect("a CA"))
                .expect("parses")
                .len(),
            1
        );
        assert!(tls.identity.is_some());
        assert!(!format!("{tls:?}").contains("PRIVATE"));
    }

    #[test]
    fn each_bad_piece_is_named() {
        let (cert, key) = pair();
        let (_, other_key) = pair();
        let cases = [
            (
                BackendTls {
                    ca: Some(Material::Inline("garbage".into())),
                    ..BackendTls::default()
                },
                "redis.tls.ca",
            ),
            (
                BackendTls {
                    cert: Some(Material::Inline(cert.clone())),
                    ..BackendTls::default()
                },
                "redis.tls.cert",
            ),
            (
                BackendTls {
                    cert: Some(Material::Inline(cert.clone())),
                    key: Some(Secret::inline("not a key")),
                    ..BackendTls::default()
                },
                "redis.tls.key",
            ),
            (
                BackendTls {
                    cert: Some(Material::Inline(cert)),
                    key: Some(Secret::inline(other_key.clone())),
                    ..BackendTls::default()
                },
                "redis.tls.key",
            ),
        ];
        for (settings, field) in cases {
            let err = ClientTls::load("redis.tls", &settings).expect_err("refused");
            assert_eq!(err.field, field, "{err}");
            assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
        }
        assert!(!key.is_empty());
    }

    #[test]
    fn a_tls_error_inside_io_errors_is_explained_and_an_outage_is_not() {
        let unknown = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let wrapped: Arc<dyn StdError + Send + Sync> = Arc::new(std::io::Error::other(unknown));
        let err = explain("amqp.tls", &wrapped).expect("explained");
        assert_eq!(err.field, "amqp.tls.ca");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(explain("amqp.tls", &refused).is_none());
        let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert_eq!(
            explain("postgres.tls", &alert).expect("explained").field,
            "postgres.tls.cert"
        );
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert_eq!(
            explain("redis.tls", &name).expect("explained").field,
            "redis.url"
        );
    }
}
