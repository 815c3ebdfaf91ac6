//! The platform keys a V3 merchant trusts, looked up by the `Wechatpay-Serial` header.
//!
//! WeChat names the signing key in every notification: either a platform
//! certificate serial (hex) or a platform public-key id (`PUB_KEY_ID_…`). During a
//! certificate rotation WeChat signs with the old and the new certificate for days,
//! and a merchant migrating to public-key mode receives both kinds, so this holds
//! every configured key at once and never keeps "only the newest".

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::crypto::RsaPublicKey as PublicKey;
use x509_cert::Certificate;

use crate::crypto;
use crate::error::KeyError;

/// Prefix of WeChat platform public-key ids (public-key mode).
pub const PUBLIC_KEY_ID_PREFIX: &str = "PUB_KEY_ID_";

/// Lookup form of the serial (see [`lookup_form`]) → (serial as displayed, key).
type KeyMap = BTreeMap<String, (String, Arc<PublicKey>)>;

/// The platform keys of one merchant, by serial: the configured ones, plus the
/// certificates downloaded at run time from `/v3/certificates`
/// ([`PlatformKeys::set_downloaded`]).
///
/// The downloaded set is shared by every clone of a `PlatformKeys` (it is a handle):
/// the receiver's refresher replaces it while the request handlers read it.
#[derive(Clone, Default)]
pub struct PlatformKeys {
    keys: KeyMap,
    downloaded: Arc<RwLock<Arc<KeyMap>>>,
}

impl PlatformKeys {
    /// An empty key set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the platform certificate in `pem` (exactly one `CERTIFICATE` block) and
    /// returns its serial as WeChat writes it in `Wechatpay-Serial` (upper-case hex).
    pub fn add_certificate_pem(&mut self, pem: &str) -> Result<String, KeyError> {
        let mut certs = crypto::parse_certificates(pem)?;
        if certs.len() != 1 {
            return Err(KeyError::Certificate(format!(
                "expected one certificate, found {} (use add_certificates_pem for bundles)",
                certs.len()
            )));
        }
        let cert = certs.remove(0);
        self.add_certificate(&cert)
    }

    /// Adds every certificate of a PEM bundle (e.g. a saved `/v3/certificates`
    /// download) and returns their serials.
    pub fn add_certificates_pem(&mut self, pem: &str) -> Result<Vec<String>, KeyError> {
        let certs = crypto::parse_certificates(pem)?;
        // Parse every key before inserting any, so a bad bundle changes nothing.
        let entries = certs
            .iter()
            .map(|cert| {
                Ok((
                    certificate_serial(cert),
                    crypto::public_key_of_certificate(cert)?,
                ))
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        Ok(entries
            .into_iter()
            .map(|(serial, key)| self.insert(serial, key))
            .collect())
    }

    /// Adds one parsed certificate and returns its serial.
    pub fn add_certificate(&mut self, cert: &Certificate) -> Result<String, KeyError> {
        let key = crypto::public_key_of_certificate(cert)?;
        Ok(self.insert(certificate_serial(cert), key))
    }

    /// Adds a platform public key (public-key mode) under its id, e.g.
    /// `PUB_KEY_ID_0114…`. `key_text` is PEM or bare Base64 SubjectPublicKeyInfo.
    pub fn add_public_key(&mut self, key_id: &str, key_text: &str) -> Result<(), KeyError> {
        let key_id = key_id.trim();
        if key_id.is_empty() {
            return Err(KeyError::Invalid("empty public key id".into()));
        }
        let key = crypto::parse_public_key(key_text)?;
        self.insert(key_id.to_owned(), key);
        Ok(())
    }

    /// The key WeChat names with `serial` (the `Wechatpay-Serial` header value).
    /// Hex serials match regardless of case and of leading zeros.
    /// The configured key first, then a downloaded one.
    pub fn get(&self, serial: &str) -> Option<Arc<PublicKey>> {
        let lookup = lookup_form(serial);
        if let Some((_, key)) = self.keys.get(&lookup) {
            return Some(key.clone());
        }
        self.downloaded_map()
            .get(&lookup)
            .map(|(_, key)| key.clone())
    }

    /// Replaces the downloaded set with the keys of `fresh` (a `/v3/certificates`
    /// answer: WeChat lists every certificate valid now, old and new during a
    /// rotation). Visible to every clone of this `PlatformKeys` at once.
    pub fn set_downloaded(&self, fresh: &PlatformKeys) {
        let map = Arc::new(fresh.keys.clone());
        match self.downloaded.write() {
            Ok(mut guard) => *guard = map,
            Err(poisoned) => *poisoned.into_inner() = map,
        }
    }

    fn downloaded_map(&self) -> Arc<KeyMap> {
        match self.downloaded.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Every serial held, configured then downloaded, as displayed (for logs and the
    /// health endpoint).
    pub fn serials(&self) -> Vec<String> {
        let downloaded = self.downloaded_map();
        let mut out: Vec<String> = self
            .keys
            .values()
            .map(|(serial, _)| serial.clone())
            .collect();
        out.extend(
            downloaded
                .iter()
                .filter(|(lookup, _)| !self.keys.contains_key(*lookup))
                .map(|(_, (serial, _))| serial.clone()),
        );
        out
    }

    /// Adds every configured key of `other`; a serial present in both takes `other`'s
    /// key (the fresher download of the same certificate).
    pub fn merge(&mut self, other: PlatformKeys) {
        self.keys.extend(other.keys);
    }

    /// Number of keys held (configured and downloaded).
    pub fn len(&self) -> usize {
        self.serials().len()
    }

    /// Whether no key is held (every notification would be refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.downloaded_map().is_empty()
    }

    fn insert(&mut self, serial: String, key: PublicKey) -> String {
        self.keys
            .insert(lookup_form(&serial), (serial.clone(), Arc::new(key)));
        serial
    }
}

// Keys are public, but a Debug dump of moduli is noise: list the serials.
impl fmt::Debug for PlatformKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformKeys")
            .field("serials", &self.serials())
            .finish()
    }
}

/// The serial of a certificate the way WeChat sends it: upper-case hex of the
/// serial number's magnitude (the DER sign byte `00` removed).
pub fn certificate_serial(cert: &Certificate) -> String {
    let bytes = cert.tbs_certificate().serial_number().as_bytes();
    let first = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    hex::encode_upper(&bytes[first..])
}

/// The map key for a serial. Public-key ids are matched exactly. Hex serials are
/// upper-cased and stripped of leading zeros because the SDKs disagree on the form:
/// wechatpay-go prints the serial's bytes (`%X`, even length), wechatpay-java prints
/// `BigInteger.toString(16)` (drops a leading zero nibble), and configuration files
/// are often written in lower case.
pub(crate) fn lookup_form(serial: &str) -> String {
    let serial = serial.trim();
    if !serial.is_empty() && serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        let digits = serial.trim_start_matches('0');
        if digits.is_empty() {
            "0".to_owned()
        } else {
            digits.to_ascii_uppercase()
        }
    } else {
        serial.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str = include_str!("vectors/wechat_v3_notify.json");

    fn vector_cert_pem() -> String {
        let v: serde_json::Value = serde_json::from_str(VECTOR).expect("vector is JSON");
        v["platform_certificate_pem"]
            .as_str()
            .expect("certificate in vector")
            .to_owned()
    }

    #[test]
    fn certificate_serial_is_upper_case_hex_without_sign_byte() {
        let mut keys = PlatformKeys::new();
        // The DER serial is 00 D7 CE … (sign byte); WeChat sends D7CE59D1F522D701.
        assert_eq!(
            keys.add_certificate_pem(&vector_cert_pem()),
            Ok("D7CE59D1F522D701".into())
        );
        assert_eq!(keys.serials(), vec!["D7CE59D1F522D701".to_owned()]);
    }

    #[test]
    fn hex_serials_match_regardless_of_case_and_leading_zero() {
        let mut keys = PlatformKeys::new();
        keys.add_certificate_pem(&vector_cert_pem())
            .expect("vector certificate");
        for header in ["D7CE59D1F522D701", "d7ce59d1f522d701", "00D7CE59D1F522D701"] {
            assert!(keys.get(header).is_some(), "{header}");
        }
        assert!(keys.get("D7CE59D1F522D702").is_none());
    }

    #[test]
    fn public_key_ids_match_exactly() {
        let mut keys = PlatformKeys::new();
        let pem = vector_cert_pem();
        keys.add_public_key("PUB_KEY_ID_0114232134912410000000000000", &pem)
            .expect("key");
        assert!(
            keys.get("PUB_KEY_ID_0114232134912410000000000000")
                .is_some()
        );
        assert!(
            keys.get("PUB_KEY_ID_0114232134912410000000000001")
                .is_none()
        );
    }

    #[test]
    fn bundle_with_two_certificates_needs_the_bundle_method() {
        let pem = vector_cert_pem();
        let bundle = format!("{pem}\n{pem}\n");
        let mut keys = PlatformKeys::new();
        assert!(matches!(
            keys.add_certificate_pem(&bundle),
            Err(KeyError::Certificate(_))
        ));
        assert!(keys.is_empty());
        assert_eq!(keys.add_certificates_pem(&bundle).map(|s| s.len()), Ok(2));
        assert_eq!(keys.len(), 1, "the same certificate twice is one key");
    }

    #[test]
    fn downloaded_keys_are_shared_by_clones_and_replaced_whole() {
        let mut configured = PlatformKeys::new();
        configured
            .add_public_key("PUB_KEY_ID_1", &vector_cert_pem())
            .expect("key");
        let handler_copy = configured.clone();
        assert!(handler_copy.get("D7CE59D1F522D701").is_none());

        let mut download = PlatformKeys::new();
        download
            .add_certificate_pem(&vector_cert_pem())
            .expect("certificate");
        configured.set_downloaded(&download);
        // The clone a request handler holds sees the download at once.
        assert!(handler_copy.get("d7ce59d1f522d701").is_some());
        assert_eq!(handler_copy.len(), 2);
        assert_eq!(handler_copy.serials(), ["PUB_KEY_ID_1", "D7CE59D1F522D701"]);

        // A later download replaces the earlier one (expired certificates drop out);
        // configured keys stay.
        configured.set_downloaded(&PlatformKeys::new());
        assert!(handler_copy.get("D7CE59D1F522D701").is_none());
        assert!(handler_copy.get("PUB_KEY_ID_1").is_some());
    }

    #[test]
    fn merge_keeps_keys_of_both_sets() {
        let mut old = PlatformKeys::new();
        old.add_certificate_pem(&vector_cert_pem())
            .expect("certificate");
        let mut new = PlatformKeys::new();
        new.add_public_key("PUB_KEY_ID_1", &vector_cert_pem())
            .expect("key");
        old.merge(new);
        assert_eq!(old.len(), 2);
        assert!(old.get("D7CE59D1F522D701").is_some() && old.get("PUB_KEY_ID_1").is_some());
    }

    #[test]
    fn debug_lists_serials_only() {
        let mut keys = PlatformKeys::new();
        keys.add_certificate_pem(&vector_cert_pem())
            .expect("certificate");
        assert_eq!(
            format!("{keys:?}"),
            r#"PlatformKeys { serials: ["D7CE59D1F522D701"] }"#
        );
    }
}
