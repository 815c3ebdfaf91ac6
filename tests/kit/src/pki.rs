//! Certificates generated at test time for the private TLS servers: a CA, a server
//! certificate for `localhost` (not for `127.0.0.1`, so that a name mismatch can be
//! shown), a client certificate, and a second, unrelated CA. Nothing is committed.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// One certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The test PKI.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca_pem: String,
    /// A CA that signed nothing here: trusting it alone must fail.
    pub other_ca_pem: String,
    /// For `localhost`, signed by the CA.
    pub server: Pair,
    /// Common name `postgres`, signed by the CA (client authentication).
    pub client: Pair,
    /// Common name `postgres`, signed by the other CA.
    pub foreign_client: Pair,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert")
}

fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, names: &[&str], common_name: &str) -> Pair {
    let key = KeyPair::generate().expect("leaf key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("leaf params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let cert = params.signed_by(&key, issuer).expect("leaf cert");
    Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl TestPki {
    pub fn generate() -> Self {
        let authority = ca("payhook test CA");
        let other = ca("payhook unrelated CA");
        Self {
            ca_pem: authority.pem(),
            other_ca_pem: other.pem(),
            server: leaf(&authority, &["localhost"], "localhost"),
            client: leaf(&authority, &[], "postgres"),
            foreign_client: leaf(&other, &[], "postgres"),
        }
    }

    /// Writes `ca.pem`, `server.pem` and `server.key` (mode 0600) into `dir` for a
    /// server to read; returns their paths.
    pub fn write_server_files(&self, dir: &Path) -> std::io::Result<ServerFiles> {
        use std::os::unix::fs::PermissionsExt as _;
        let files = ServerFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&files.ca, &self.ca_pem)?;
        std::fs::write(&files.cert, &self.server.cert_pem)?;
        std::fs::write(&files.key, &self.server.key_pem)?;
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600))?;
        Ok(files)
    }
}

/// Where a server finds its TLS files.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}
