//! What a configuration's keys and certificates are, for people and for alerts:
//! certificates with their serial, subject, validity and SHA-256 fingerprint, public
//! keys with their fingerprint — never secret material. `check-config` prints it; the
//! receiver exports each certificate's expiry (`payhook_certificate_expiry_timestamp_seconds`)
//! from what the merchant registry recorded while parsing the keys.

use std::fmt;

use sha2::{Digest as _, Sha256};
use x509_cert::Certificate;
use x509_cert::der::Encode as _;

use crate::config::{ConfigError, Material, Settings};
use crate::crypto::parse_certificates;
use crate::error::KeyError;
use crate::event::Provider;

/// One certificate, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Serial, upper-case hex as WeChat writes it (Alipay SNs are derived from it).
    pub serial: String,
    pub subject: String,
    /// The SN Alipay names the certificate by (`alipay_cert_sn`): MD5 of issuer and
    /// decimal serial.
    pub alipay_sn: String,
    /// Validity, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the DER certificate, hex.
    pub sha256: String,
}

impl CertificateInfo {
    pub fn of(cert: &Certificate) -> Self {
        let tbs = cert.tbs_certificate();
        let validity = tbs.validity();
        let unix = |t: x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
        };
        Self {
            serial: crate::wechat_v3::certificate_serial(cert),
            subject: tbs.subject().to_string(),
            alipay_sn: crate::alipay::cert_sn(cert),
            not_before: unix(validity.not_before),
            not_after: unix(validity.not_after),
            sha256: cert
                .to_der()
                .map(|der| hex::encode(Sha256::digest(der)))
                .unwrap_or_default(),
        }
    }

    /// Every certificate of a PEM bundle.
    pub fn of_pem(pem: &str) -> Result<Vec<Self>, KeyError> {
        Ok(parse_certificates(pem)?.iter().map(Self::of).collect())
    }

    /// Whether `now` (Unix seconds) is inside the validity.
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

impl fmt::Display for CertificateInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "serial {}, {}, valid {} to {}, sha256 {}",
            self.serial,
            self.subject,
            date(self.not_before),
            date(self.not_after),
            &self.sha256
        )
    }
}

/// A date for people, from Unix seconds.
pub(crate) fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_or_else(|_| unix.to_string(), |d| d.date().to_string())
}

/// A configured certificate: whose, from which setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    pub provider: Provider,
    pub merchant: String,
    /// The setting, e.g. `alipay.shop.alipay_cert`.
    pub setting: String,
    pub certificate: CertificateInfo,
}

/// SHA-256 of a public key's SubjectPublicKeyInfo (PEM or bare Base64), hex — the
/// fingerprint `openssl pkey -pubin -outform DER | sha256sum` prints.
pub fn public_key_fingerprint(key_text: &str) -> Result<String, KeyError> {
    Ok(crate::crypto::parse_public_key(key_text)?.fingerprint())
}

/// What `check-config` prints about the merchants' keys and certificates, one line per
/// setting — fingerprints, serials, validity; never secret material — or the first
/// known mistake, naming the setting: a certificate expired or not yet valid at `now`;
/// an Alipay public key that is the app's own (the key uploaded to Alipay, pasted
/// where Alipay's belongs: the most common cause of "signature verification failed").
/// `signing`: also the worker's signing keys (their public halves).
pub fn report(settings: &Settings, now: i64, signing: bool) -> Result<Vec<String>, ConfigError> {
    let mut lines = Vec::new();
    // Lists a setting's certificates; returns how many are valid now. One out of its
    // validity is a warning (an old certificate kept through a rotation's overlap is
    // normal); the caller decides when none valid is a mistake.
    let load = |setting: &str, material: &Material| {
        material.load().map_err(|e| ConfigError::new(setting, e))
    };
    let certificates = |setting: &str, pem: &str, lines: &mut Vec<String>| {
        let mut valid = 0;
        for info in
            CertificateInfo::of_pem(pem).map_err(|e| ConfigError::new(setting, e.to_string()))?
        {
            if info.valid_at(now) {
                valid += 1;
                lines.push(format!("{setting}: {info}"));
            } else {
                let when = if now < info.not_before {
                    "is not valid yet"
                } else {
                    "has expired"
                };
                lines.push(format!("WARNING {setting}: the certificate {when}: {info}"));
            }
        }
        Ok::<usize, ConfigError>(valid)
    };
    for (name, app) in &settings.alipay {
        let field = |f: &str| format!("alipay.{name}.{f}");
        let mut alipay_key = None;
        if let Some(key) = &app.alipay_public_key {
            let text = key
                .load()
                .map_err(|e| ConfigError::new(field("alipay_public_key"), e))?;
            let key = crate::crypto::parse_public_key(&text)
                .map_err(|e| ConfigError::new(field("alipay_public_key"), e.to_string()))?;
            lines.push(format!(
                "{}: RSA-{} public key, sha256 {}",
                field("alipay_public_key"),
                key.bits(),
                key.fingerprint()
            ));
            alipay_key = Some(key);
        }
        let mut previous_key = None;
        if let Some(key) = &app.previous_alipay_public_key {
            let setting = field("previous_alipay_public_key");
            let text = key.load().map_err(|e| ConfigError::new(&setting, e))?;
            let key = crate::crypto::parse_public_key(&text)
                .map_err(|e| ConfigError::new(&setting, e.to_string()))?;
            lines.push(format!(
                "{setting}: RSA-{} public key, sha256 {} (tried when alipay_public_key does not verify)",
                key.bits(),
                key.fingerprint()
            ));
            previous_key = Some(key);
        }
        let mut alipay_key_setting = field("alipay_public_key");
        if let Some(cert) = &app.alipay_cert {
            // Alipay's certificate is only configured (nothing downloads it): without a
            // valid one, no notification of this app verifies as it should.
            if certificates(
                &field("alipay_cert"),
                &load(&field("alipay_cert"), cert)?,
                &mut lines,
            )? == 0
            {
                return Err(ConfigError::new(
                    field("alipay_cert"),
                    "no certificate in it is valid now (expired or not yet valid): get the \
                     current one from the Alipay open platform console",
                ));
            }
            if alipay_key.is_none() {
                // Certificate mode: Alipay's key is the first certificate's.
                let pem = cert
                    .load()
                    .map_err(|e| ConfigError::new(field("alipay_cert"), e))?;
                alipay_key = parse_certificates(&pem)
                    .ok()
                    .and_then(|certs| certs.first().cloned())
                    .and_then(|c| crate::crypto::public_key_of_certificate(&c).ok());
                alipay_key_setting = field("alipay_cert");
            }
        }
        if signing {
            if let Some(cert) = &app.app_cert
                && certificates(
                    &field("app_cert"),
                    &load(&field("app_cert"), cert)?,
                    &mut lines,
                )? == 0
            {
                return Err(ConfigError::new(
                    field("app_cert"),
                    "the app certificate is not valid now: Alipay refuses queries signed \
                     under it",
                ));
            }
            if let Some(cert) = &app.alipay_root_cert {
                let pem = cert
                    .load()
                    .map_err(|e| ConfigError::new(field("alipay_root_cert"), e))?;
                let roots = parse_certificates(&pem)
                    .map_err(|e| ConfigError::new(field("alipay_root_cert"), e.to_string()))?;
                lines.push(format!(
                    "{}: {} certificate(s), root SN {}",
                    field("alipay_root_cert"),
                    roots.len(),
                    crate::alipay::root_cert_sn(&pem).unwrap_or_else(|_| "none".into())
                ));
                // Alipay's certificate chains up to one of these roots; a sandbox file
                // next to a production one (or another app's) does not.
                if let Some(alipay_cert) = &app.alipay_cert {
                    let chain = alipay_cert
                        .load()
                        .ok()
                        .and_then(|pem| parse_certificates(&pem).ok())
                        .unwrap_or_default();
                    let subjects: Vec<String> = roots
                        .iter()
                        .map(|c| c.tbs_certificate().subject().to_string())
                        .collect();
                    let chained = chain
                        .iter()
                        .any(|c| subjects.contains(&c.tbs_certificate().issuer().to_string()));
                    if !chain.is_empty() && !chained {
                        lines.push(format!(
                            "WARNING {}: no certificate in it was issued by a certificate of {} \
                             (sandbox and production files mixed, or another app's?): Alipay \
                             refuses queries whose alipay_root_cert_sn it does not expect",
                            field("alipay_cert"),
                            field("alipay_root_cert")
                        ));
                    }
                }
            }
            if let Some(secret) = &app.app_private_key {
                let text = secret
                    .load()
                    .map_err(|e| ConfigError::new(field("app_private_key"), e))?;
                let own = crate::crypto::RsaSigningKey::parse(
                    secrecy::ExposeSecret::expose_secret(&text),
                )
                .and_then(|k| k.public_key())
                .map_err(|e| ConfigError::new(field("app_private_key"), e.to_string()))?;
                if previous_key.as_ref() == Some(&own) {
                    return Err(ConfigError::new(
                        field("previous_alipay_public_key"),
                        "this is the app's own public key (the one uploaded to Alipay), not \
                         Alipay's: copy the \"Alipay public key\" (支付宝公钥) from the open \
                         platform console",
                    ));
                }
                // The app certificate must hold the app key's public half: a certificate
                // of another app (or environment) makes every query fail.
                if let Some(cert) = &app.app_cert {
                    let pem = cert
                        .load()
                        .map_err(|e| ConfigError::new(field("app_cert"), e))?;
                    let certified = parse_certificates(&pem)
                        .ok()
                        .and_then(|certs| certs.first().cloned())
                        .and_then(|c| crate::crypto::public_key_of_certificate(&c).ok());
                    if certified.is_some_and(|key| key != own) {
                        return Err(ConfigError::new(
                            field("app_cert"),
                            "its public key is not app_private_key's: the certificate of another \
                             app or environment (download appCertPublicKey_<app_id>.crt again)",
                        ));
                    }
                }
                if alipay_key.as_ref() == Some(&own) {
                    return Err(ConfigError::new(
                        alipay_key_setting,
                        "this is the app's own public key (the one uploaded to Alipay), not \
                         Alipay's: copy the \"Alipay public key\" (支付宝公钥) from the open \
                         platform console",
                    ));
                }
                lines.push(format!(
                    "{}: RSA-{} private key, its public key's sha256 {}",
                    field("app_private_key"),
                    own.bits(),
                    own.fingerprint()
                ));
            }
        }
    }
    for (name, m) in &settings.wechat_v2 {
        let field = format!("wechat_v2.{name}.api_key");
        let key = m.api_key.load().map_err(|e| ConfigError::new(&field, e))?;
        let length = secrecy::ExposeSecret::expose_secret(&key).chars().count();
        // WeChat's APIv2 keys are 32 characters; the length is all that is printed.
        if length != 32 {
            return Err(ConfigError::new(
                field,
                format!("is {length} characters; WeChat Pay APIv2 keys are 32"),
            ));
        }
        lines.push(format!("{field}: 32 characters"));
        if let Some(previous) = &m.previous_api_key {
            let field = format!("wechat_v2.{name}.previous_api_key");
            let key = previous.load().map_err(|e| ConfigError::new(&field, e))?;
            let length = secrecy::ExposeSecret::expose_secret(&key).chars().count();
            if length != 32 {
                return Err(ConfigError::new(
                    field,
                    format!("is {length} characters; WeChat Pay APIv2 keys are 32"),
                ));
            }
            lines.push(format!(
                "{field}: 32 characters (tried when api_key does not verify)"
            ));
        }
    }
    // Platform certificates are per merchant: one serial under two mch_ids is a mistake.
    let mut platform_serials: std::collections::HashMap<String, (String, String)> =
        std::collections::HashMap::new();
    for (name, m) in &settings.wechat_v3 {
        let field = |f: &str| format!("wechat_v3.{name}.{f}");
        // The WeChat Pay keys this merchant trusts, by fingerprint (platform
        // certificates' and the public key), to compare with its own signing key.
        let mut trusted: Vec<(String, String)> = Vec::new();
        for (i, cert) in m.platform_certs.iter().enumerate() {
            let setting = format!("{}[{i}]", field("platform_certs"));
            let pem = load(&setting, cert)?;
            certificates(&setting, &pem, &mut lines)?;
            for c in parse_certificates(&pem).unwrap_or_default() {
                if let Ok(key) = crate::crypto::public_key_of_certificate(&c) {
                    trusted.push((setting.clone(), key.fingerprint()));
                }
            }
            for info in CertificateInfo::of_pem(&pem).unwrap_or_default() {
                if let Some(mistake) = merchant_certificate(&info, &m.mch_id) {
                    return Err(ConfigError::new(setting, mistake));
                }
                if let Some((other, other_mch)) = platform_serials.get(&info.serial)
                    && other_mch != &m.mch_id
                {
                    return Err(ConfigError::new(
                        setting,
                        format!(
                            "platform certificate {} is also configured in {other} (mch_id \
                             {other_mch}); WeChat issues each merchant its own: one of them is \
                             another merchant's",
                            info.serial
                        ),
                    ));
                }
                platform_serials.insert(info.serial.clone(), (setting.clone(), m.mch_id.clone()));
            }
        }
        if let (Some(id), Some(key)) = (&m.public_key_id, &m.public_key) {
            let text = key
                .load()
                .map_err(|e| ConfigError::new(field("public_key"), e))?;
            let fingerprint = public_key_fingerprint(&text)
                .map_err(|e| ConfigError::new(field("public_key"), e.to_string()))?;
            lines.push(format!(
                "{} ({id}): sha256 {fingerprint}",
                field("public_key")
            ));
            // Like platform certificates, WeChat Pay public keys are per merchant.
            for (what, value) in [
                ("public_key_id", id.clone()),
                ("public_key", fingerprint.clone()),
            ] {
                if let Some((other, other_mch)) = platform_serials.get(&value)
                    && other_mch != &m.mch_id
                {
                    return Err(ConfigError::new(
                        field(what),
                        format!(
                            "is also configured for {other} (mch_id {other_mch}); WeChat Pay \
                             issues each merchant its own public key: one of them is another \
                             merchant's"
                        ),
                    ));
                }
                platform_serials.insert(value, (field(what), m.mch_id.clone()));
            }
            trusted.push((field("public_key"), fingerprint));
        }
        if signing && let Some(secret) = &m.merchant_private_key {
            let text = secret
                .load()
                .map_err(|e| ConfigError::new(field("merchant_private_key"), e))?;
            let own =
                crate::crypto::RsaSigningKey::parse(secrecy::ExposeSecret::expose_secret(&text))
                    .and_then(|k| k.public_key())
                    .map_err(|e| ConfigError::new(field("merchant_private_key"), e.to_string()))?;
            if let Some((setting, _)) = trusted.iter().find(|(_, f)| *f == own.fingerprint()) {
                return Err(ConfigError::new(
                    setting.clone(),
                    "holds the merchant's own API key (merchant_private_key's public half), \
                     not WeChat Pay's: download the platform certificates or the WeChat Pay \
                     public key (微信支付公钥) from the merchant platform",
                ));
            }
            lines.push(format!(
                "{}: RSA-{} private key (serial {}), its public key's sha256 {}",
                field("merchant_private_key"),
                own.bits(),
                m.merchant_serial.as_deref().unwrap_or("not set"),
                own.fingerprint()
            ));
        }
    }
    Ok(lines)
}

/// A merchant API certificate (`apiclient_cert.pem`: its subject's CN is a merchant
/// number) configured where WeChat's platform certificate belongs: the mistake, named.
fn merchant_certificate(info: &CertificateInfo, mch_id: &str) -> Option<String> {
    let cn = info
        .subject
        .split(',')
        .find_map(|part| part.trim().strip_prefix("CN="))?;
    if cn.is_empty() || !cn.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(if cn == mch_id {
        format!(
            "certificate {} is this merchant's own API certificate (apiclient_cert.pem, CN={cn}), \
             not a WeChat Pay platform certificate: download the platform certificates \
             (the worker does it with merchant_private_key) or use public-key mode",
            info.serial
        )
    } else {
        format!(
            "certificate {} is the API certificate of merchant {cn}, not a platform certificate \
             of merchant {mch_id}",
            info.serial
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_described_by_serial_validity_and_fingerprint() {
        let vector: serde_json::Value =
            serde_json::from_str(include_str!("wechat_v3/vectors/wechat_v3_notify.json"))
                .expect("vector");
        let pem = vector["platform_certificate_pem"]
            .as_str()
            .or_else(|| vector["certificate_pem"].as_str())
            .expect("a certificate in the vector");
        let infos = CertificateInfo::of_pem(pem).expect("parses");
        assert_eq!(infos.len(), 1);
        let info = &infos[0];
        assert!(!info.serial.is_empty());
        assert!(info.not_before < info.not_after);
        assert_eq!(info.sha256.len(), 64);
        assert!(info.valid_at(info.not_before) && !info.valid_at(info.not_after + 1));
        assert!(info.to_string().contains(&info.serial));
    }

    fn vector(field: &str) -> String {
        let vector: serde_json::Value =
            serde_json::from_str(include_str!("wechat_v3/vectors/wechat_v3_notify.json"))
                .expect("vector");
        vector[field].as_str().expect(field).to_owned()
    }

    fn with(toml: &str) -> Settings {
        Settings::from_toml(toml).expect("settings")
    }

    /// 2026-01-01, inside the vector certificate's validity (2021-04-27 to 2031-04-25).
    const NOW: i64 = 1_767_225_600;

    #[test]
    fn the_report_describes_each_setting_and_catches_the_known_mistakes() {
        let cert = vector("platform_certificate_pem");
        let key = vector("platform_private_key_pem_pkcs8");
        let v3 = with(&format!(
            "[wechat_v3.main]\nmch_id = \"1\"\napi_v3_key = \"0123456789abcdef0123456789abcdef\"\nplatform_certs = ['''\n{cert}''']\n"
        ));
        let lines = report(&v3, NOW, false).expect("valid");
        assert!(
            lines.iter().any(|l| l
                .starts_with("wechat_v3.main.platform_certs[0]: serial D7CE59D1F522D701")
                && l.contains("to 2031-04-25")),
            "{lines:?}"
        );
        // A WeChat platform certificate out of its validity is a warning (one kept
        // through a rotation's overlap; the worker downloads the current ones).
        let lines = report(&v3, 1_950_000_000, false).expect("a warning");
        assert!(
            lines.iter().any(
                |l| l.starts_with("WARNING wechat_v3.main.platform_certs[0]")
                    && l.contains("has expired")
            ),
            "{lines:?}"
        );
        let lines = report(&v3, 1_600_000_000, false).expect("a warning");
        assert!(
            lines.iter().any(|l| l.contains("not valid yet")),
            "{lines:?}"
        );
        // Alipay's certificate is only configured: none valid is a mistake.
        let alipay = with(&format!(
            "[alipay.shop]\napp_id = \"1\"\nalipay_cert = '''\n{cert}'''\n"
        ));
        assert!(report(&alipay, NOW, false).is_ok());
        let error = report(&alipay, 1_950_000_000, false).expect_err("expired");
        assert_eq!(error.field, "alipay.shop.alipay_cert");
        assert!(
            error.message.contains("no certificate in it is valid"),
            "{error}"
        );

        // Alipay's certificate is the app's own: the app private key's public half.
        let own = with(&format!(
            "[alipay.shop]\napp_id = \"1\"\nalipay_cert = '''\n{cert}'''\napp_private_key = '''\n{key}'''\n"
        ));
        assert!(
            report(&own, NOW, false).is_ok(),
            "the receiver holds no app key"
        );
        let error = report(&own, NOW, true).expect_err("the app's own key");
        assert_eq!(error.field, "alipay.shop.alipay_cert");
        assert!(error.message.contains("app's own public key"), "{error}");
        assert!(!error.to_string().contains("PRIVATE"), "{error}");

        // An APIv2 key of the wrong length; only the length is said.
        let v2 = with("[wechat_v2.legacy]\nmch_id = \"1\"\napi_key = \"sixteen-chars-ok\"\n");
        let error = report(&v2, NOW, false).expect_err("short key");
        assert_eq!(error.field, "wechat_v2.legacy.api_key");
        assert!(!error.to_string().contains("sixteen"), "{error}");
    }

    #[test]
    fn wechat_certificates_of_a_merchant_are_refused_where_platform_ones_belong() {
        let info = |subject: &str| CertificateInfo {
            serial: "5157F09EFDC096DE15EBE81A47057A7232F1B8E1".into(),
            subject: subject.into(),
            alipay_sn: String::new(),
            not_before: 0,
            not_after: 1,
            sha256: String::new(),
        };
        let own = merchant_certificate(&info("CN=1900009191,OU=Shop,O=WeChat"), "1900009191")
            .expect("own API certificate");
        assert!(own.contains("own API certificate"), "{own}");
        let other = merchant_certificate(&info("CN=1900000109,O=x"), "1900009191")
            .expect("another merchant's");
        assert!(other.contains("merchant 1900000109"), "{other}");
        assert_eq!(
            merchant_certificate(&info("CN=Tenpay.com Root CA"), "1"),
            None
        );

        // One platform certificate under two merchants.
        let cert = vector("platform_certificate_pem");
        let key = "0123456789abcdef0123456789abcdef";
        let two = with(&format!(
            "[wechat_v3.a]\nmch_id = \"1\"\napi_v3_key = \"{key}\"\nplatform_certs = ['''\n{cert}''']\n\
             [wechat_v3.b]\nmch_id = \"2\"\napi_v3_key = \"{key}\"\nplatform_certs = ['''\n{cert}''']\n"
        ));
        let error = report(&two, NOW, false).expect_err("shared serial");
        assert_eq!(error.field, "wechat_v3.b.platform_certs[0]");
        assert!(
            error.message.contains("wechat_v3.a.platform_certs[0]"),
            "{error}"
        );
    }

    #[test]
    fn alipay_certificate_files_that_do_not_belong_together_are_named() {
        let sn: serde_json::Value =
            serde_json::from_str(include_str!("alipay/vectors/alipay_cert_sn.json"))
                .expect("vector");
        let text = |f: &str| sn[f].as_str().expect(f).to_owned();
        // The SDK vector pairs a sandbox Alipay certificate with the production roots.
        let mixed = with(&format!(
            "[alipay.shop]\napp_id = \"1\"\nalipay_cert = '''\n{}'''\nalipay_root_cert = '''\n{}'''\n",
            text("alipay_public_cert_pem"),
            text("root_cert_pem")
        ));
        let lines = report(&mixed, 1_700_000_000, true).expect("a warning, not an error");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("WARNING alipay.shop.alipay_cert")
                    && l.contains("sandbox and production")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("root SN {}", text("expected_alipay_root_cert_sn")))),
            "{lines:?}"
        );

        // An app certificate that does not hold the app key's public half.
        use rsa::pkcs8::EncodePrivateKey as _;
        let other = crate::alipay::testkit::private_key(crate::alipay::testkit::OTHER)
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .expect("pem")
            .to_string();
        let cert = vector("platform_certificate_pem");
        let own_key = vector("platform_private_key_pem_pkcs8");
        let right = with(&format!(
            "[alipay.shop]\napp_id = \"1\"\napp_cert = '''\n{cert}'''\napp_private_key = '''\n{own_key}'''\nalipay_public_key = \"{}\"\n",
            alipay_public_key_b64()
        ));
        assert!(report(&right, NOW, true).is_ok());
        let wrong = with(&format!(
            "[alipay.shop]\napp_id = \"1\"\napp_cert = '''\n{cert}'''\napp_private_key = '''\n{other}'''\nalipay_public_key = \"{}\"\n",
            alipay_public_key_b64()
        ));
        let error = report(&wrong, NOW, true).expect_err("another app's certificate");
        assert_eq!(error.field, "alipay.shop.app_cert");
    }

    fn alipay_public_key_b64() -> String {
        use base64::Engine as _;
        use rsa::pkcs8::EncodePublicKey as _;
        let key = crate::alipay::testkit::public_key(crate::alipay::testkit::PROVIDER);
        base64::engine::general_purpose::STANDARD
            .encode(key.as_rsa().to_public_key_der().expect("der").as_bytes())
    }

    #[test]
    fn previous_keys_are_described_and_checked() {
        let v2 = with(
            "[wechat_v2.legacy]\nmch_id = \"1\"\napi_key = \"0123456789abcdef0123456789abcdef\"\nprevious_api_key = \"short\"\n",
        );
        let error = report(&v2, NOW, false).expect_err("short previous key");
        assert_eq!(error.field, "wechat_v2.legacy.previous_api_key");
        let alipay = with(&format!(
            "[alipay.shop]\napp_id = \"1\"\nalipay_public_key = \"{0}\"\nprevious_alipay_public_key = \"{0}\"\n",
            alipay_public_key_b64()
        ));
        let lines = report(&alipay, NOW, false).expect("valid");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("alipay.shop.previous_alipay_public_key: RSA-")),
            "{lines:?}"
        );
    }

    #[test]
    fn a_public_key_fingerprint_is_the_same_in_pem_and_base64() {
        let b64 = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqObrdC7hrgAVM98tK0nv3hSQRGGKT4lBsQjHiGjeYZjOPIPHR5knm2jnnz/YGIXIofVHkA/tAlBAd5DrY7YpvI4tP5EONLtZKC2ghBMx7McI2wRD0xiqzxOQr1FuhZGJ8/AUokBzJrzY+aGX2xcOrxFYRlFilvVLTXg4LWjR1tdPkO6+i7wQZAIVMClPkwVRZEbaERRHlKqTzv2gGv5rDU8gRoe1LeaN+6BlbTqHWkQcNCUNrA8C6l17XAXGKDsm/9TFWwO8EPHHHCaQdjtV5/FdcWIt+L8SR1ss7EXTjYDFtxcKVv9rEoY1lX8T4mX+GbXfZHraG5NCF1+XioL5JwIDAQAB";
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
        let fingerprint = public_key_fingerprint(b64).expect("fingerprint");
        assert_eq!(fingerprint.len(), 64);
        assert_eq!(
            public_key_fingerprint(&pem).expect("fingerprint"),
            fingerprint
        );
        assert!(public_key_fingerprint("not a key").is_err());
    }
}
