//! The merchant registry: configuration turned into ready-to-use verifiers, once at
//! start-up. Key material is parsed here, so a bad key fails the start with a message
//! naming the field, never a request.

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::ExposeSecret as _;

use crate::alipay::{AlipayApp, AlipayKeys};
use crate::clock::Clock;
use crate::config::{ConfigError, Material, Settings};
use crate::error::VerifyError;
use crate::event::Provider;
use crate::event::VerifiedNotification;
use crate::inventory::{CertificateInfo, Configured};
use crate::wechat_v2::V2Merchant;
use crate::wechat_v3::V3Headers;
use crate::wechat_v3::{PlatformKeys, V3Merchant};

/// Every configured merchant, by provider and name.
#[derive(Debug, Default, Clone)]
pub struct Merchants {
    pub alipay: HashMap<String, Arc<AlipayApp>>,
    pub wechat_v2: HashMap<String, Arc<V2Merchant>>,
    pub wechat_v3: HashMap<String, Arc<V3Merchant>>,
    /// The certificates of the verification settings (Alipay `alipay_cert`, WeChat V3
    /// `platform_certs`), described for the expiry metrics.
    pub certificates: Vec<Configured>,
    /// The merchants with a `previous_…` key, as verifiers holding that key instead:
    /// tried when the current key does not verify, during a key change.
    pub previous: Previous,
}

/// Which of a merchant's keys verified a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySlot {
    /// The key of the main setting (`alipay_public_key`, `api_key`, `api_v3_key`; and
    /// every certificate of `alipay_cert` / the platform keys, chosen by serial).
    Current,
    /// The `previous_…` key of a key change.
    Previous,
}

impl KeySlot {
    pub const ALL: [Self; 2] = [Self::Current, Self::Previous];

    /// The `key` label of `payhook_verify_keys_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Previous => "previous",
        }
    }
}

/// Why a request is not a verified notification.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No merchant of that provider has the name in the notify URL.
    UnknownMerchant,
    Verify(VerifyError),
}

impl From<VerifyError> for Rejection {
    fn from(error: VerifyError) -> Self {
        Self::Verify(error)
    }
}

/// The same merchants with their previous key (`previous_alipay_public_key`,
/// `previous_api_key`, `previous_api_v3_key`), for those that have one.
#[derive(Debug, Default, Clone)]
pub struct Previous {
    pub alipay: HashMap<String, Arc<AlipayApp>>,
    pub wechat_v2: HashMap<String, Arc<V2Merchant>>,
    pub wechat_v3: HashMap<String, Arc<V3Merchant>>,
}

fn load(field: &str, material: &Material) -> Result<String, ConfigError> {
    material.load().map_err(|m| ConfigError::new(field, m))
}

impl Merchants {
    /// Parses every merchant's keys.
    pub fn build(settings: &Settings) -> Result<Self, ConfigError> {
        let mut out = Self::default();
        for (name, app) in &settings.alipay {
            let field = |f: &str| format!("alipay.{name}.{f}");
            if app.previous_alipay_public_key.is_some() && app.alipay_public_key.is_none() {
                return Err(ConfigError::new(
                    field("previous_alipay_public_key"),
                    "applies to public-key mode; in certificate mode put the old and the new certificate in alipay_cert",
                ));
            }
            let keys = match (&app.alipay_public_key, &app.alipay_cert) {
                (Some(pk), _) => {
                    let text = load(&field("alipay_public_key"), pk)?;
                    AlipayKeys::from_public_key(&text)
                        .map_err(|e| ConfigError::new(field("alipay_public_key"), e.to_string()))?
                }
                (None, Some(cert)) => {
                    let text = load(&field("alipay_cert"), cert)?;
                    out.describe(Provider::Alipay, name, field("alipay_cert"), &text);
                    AlipayKeys::from_certificates(&text)
                        .map_err(|e| ConfigError::new(field("alipay_cert"), e.to_string()))?
                }
                (None, None) => {
                    return Err(ConfigError::new(
                        field("alipay_public_key"),
                        "no key configured",
                    ));
                }
            };
            if let Some(previous) = &app.previous_alipay_public_key {
                let setting = field("previous_alipay_public_key");
                let text = load(&setting, previous)?;
                let keys = AlipayKeys::from_public_key(&text)
                    .map_err(|e| ConfigError::new(setting, e.to_string()))?;
                out.previous.alipay.insert(
                    name.clone(),
                    Arc::new(AlipayApp {
                        app_id: app.app_id.clone(),
                        keys,
                    }),
                );
            }
            out.alipay.insert(
                name.clone(),
                Arc::new(AlipayApp {
                    app_id: app.app_id.clone(),
                    keys,
                }),
            );
        }
        for (name, m) in &settings.wechat_v2 {
            let api_key = m
                .api_key
                .load()
                .map_err(|e| ConfigError::new(format!("wechat_v2.{name}.api_key"), e))?;
            if api_key.expose_secret().is_empty() {
                return Err(ConfigError::new(
                    format!("wechat_v2.{name}.api_key"),
                    "is empty",
                ));
            }
            if let Some(previous) = &m.previous_api_key {
                let setting = format!("wechat_v2.{name}.previous_api_key");
                let previous = previous
                    .load()
                    .map_err(|e| ConfigError::new(setting.clone(), e))?;
                if previous.expose_secret().is_empty() {
                    return Err(ConfigError::new(setting, "is empty"));
                }
                out.previous.wechat_v2.insert(
                    name.clone(),
                    Arc::new(V2Merchant {
                        mch_id: m.mch_id.clone(),
                        api_key: previous,
                    }),
                );
            }
            out.wechat_v2.insert(
                name.clone(),
                Arc::new(V2Merchant {
                    mch_id: m.mch_id.clone(),
                    api_key,
                }),
            );
        }
        for (name, m) in &settings.wechat_v3 {
            let field = |f: &str| format!("wechat_v3.{name}.{f}");
            let api_v3_key = m
                .api_v3_key
                .load()
                .map_err(|e| ConfigError::new(field("api_v3_key"), e))?;
            if api_v3_key.expose_secret().len() != 32 {
                return Err(ConfigError::new(
                    field("api_v3_key"),
                    "must be exactly 32 bytes (AES-256-GCM key)",
                ));
            }
            let mut keys = PlatformKeys::new();
            for (i, cert) in m.platform_certs.iter().enumerate() {
                let f = format!("{}[{i}]", field("platform_certs"));
                let pem = load(&f, cert)?;
                out.describe(Provider::WechatV3, name, f.clone(), &pem);
                keys.add_certificate_pem(&pem)
                    .map_err(|e| ConfigError::new(f, e.to_string()))?;
            }
            if let (Some(id), Some(key)) = (&m.public_key_id, &m.public_key) {
                let text = load(&field("public_key"), key)?;
                keys.add_public_key(id, &text)
                    .map_err(|e| ConfigError::new(field("public_key"), e.to_string()))?;
            }
            if let Some(previous) = &m.previous_api_v3_key {
                let setting = field("previous_api_v3_key");
                let previous = previous
                    .load()
                    .map_err(|e| ConfigError::new(setting.clone(), e))?;
                if previous.expose_secret().len() != 32 {
                    return Err(ConfigError::new(
                        setting,
                        "must be exactly 32 bytes (AES-256-GCM key)",
                    ));
                }
                // The same platform keys (a clone shares the downloaded set).
                out.previous.wechat_v3.insert(
                    name.clone(),
                    Arc::new(V3Merchant {
                        mch_id: m.mch_id.clone(),
                        api_v3_key: previous,
                        keys: keys.clone(),
                    }),
                );
            }
            out.wechat_v3.insert(
                name.clone(),
                Arc::new(V3Merchant {
                    mch_id: m.mch_id.clone(),
                    api_v3_key,
                    keys,
                }),
            );
        }
        Ok(out)
    }

    /// Records the certificates of one setting (a bundle that does not parse is the
    /// key parsing's to refuse, naming the setting).
    fn describe(&mut self, provider: Provider, merchant: &str, setting: String, pem: &str) {
        for certificate in CertificateInfo::of_pem(pem).unwrap_or_default() {
            self.certificates.push(Configured {
                provider,
                merchant: merchant.to_owned(),
                setting: setting.clone(),
                certificate,
            });
        }
    }

    /// Verifies a notification for `merchant` of `provider`: with the current key, then,
    /// when the merchant has a previous key and the failure is one that key could
    /// explain (an Alipay public-key signature, an APIv2 signature or refund
    /// decryption, an APIv3 decryption), with the previous one. The one place where a
    /// request's bytes turn into trust; `headers` matter to WeChat Pay APIv3 only.
    pub fn verify(
        &self,
        provider: Provider,
        merchant: &str,
        body: &[u8],
        headers: &V3Headers<'_>,
        clock: &dyn Clock,
    ) -> Result<(VerifiedNotification, KeySlot), Rejection> {
        match provider {
            Provider::Alipay => {
                let app = self
                    .alipay
                    .get(merchant)
                    .ok_or(Rejection::UnknownMerchant)?;
                retry_previous(
                    crate::alipay::verify_notification(app, body),
                    self.previous.alipay.get(merchant),
                    |e| matches!(e, VerifyError::BadSignature),
                    |previous| crate::alipay::verify_notification(previous, body),
                )
            }
            Provider::WechatV2 => {
                let m = self
                    .wechat_v2
                    .get(merchant)
                    .ok_or(Rejection::UnknownMerchant)?;
                retry_previous(
                    crate::wechat_v2::verify_notification(m, body),
                    self.previous.wechat_v2.get(merchant),
                    |e| matches!(e, VerifyError::BadSignature | VerifyError::Decrypt),
                    |previous| crate::wechat_v2::verify_notification(previous, body),
                )
            }
            Provider::WechatV3 => {
                let m = self
                    .wechat_v3
                    .get(merchant)
                    .ok_or(Rejection::UnknownMerchant)?;
                retry_previous(
                    crate::wechat_v3::verify_notification(m, headers, body, clock),
                    self.previous.wechat_v3.get(merchant),
                    |e| matches!(e, VerifyError::Decrypt),
                    |previous| {
                        crate::wechat_v3::verify_notification(previous, headers, body, clock)
                    },
                )
            }
        }
    }

    /// Number of configured merchants across providers.
    pub fn len(&self) -> usize {
        self.alipay.len() + self.wechat_v2.len() + self.wechat_v3.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `current`, or — when it failed in a way `previous` could fix — `previous`'s result;
/// the current key's error when both fail.
fn retry_previous<M>(
    current: Result<VerifiedNotification, VerifyError>,
    previous: Option<&Arc<M>>,
    fixable: impl Fn(&VerifyError) -> bool,
    with_previous: impl FnOnce(&M) -> Result<VerifiedNotification, VerifyError>,
) -> Result<(VerifiedNotification, KeySlot), Rejection> {
    match (current, previous) {
        (Ok(verified), _) => Ok((verified, KeySlot::Current)),
        (Err(error), Some(previous)) if fixable(&error) => match with_previous(previous) {
            Ok(verified) => Ok((verified, KeySlot::Previous)),
            Err(_) => Err(error.into()),
        },
        (Err(error), _) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alipay::testkit::{self, OTHER, PROVIDER};
    use crate::clock::FixedClock;

    fn verify(merchants: &Merchants, body: &[u8]) -> Result<KeySlot, Rejection> {
        merchants
            .verify(
                Provider::Alipay,
                "shop",
                body,
                &V3Headers::default(),
                &FixedClock::at_unix(0),
            )
            .map(|(_, slot)| slot)
    }

    #[test]
    fn the_previous_key_verifies_what_the_current_one_does_not() {
        let mut merchants = Merchants::default();
        merchants
            .alipay
            .insert("shop".into(), Arc::new(testkit::app(OTHER)));
        let by_provider = testkit::form_body(&testkit::sign(&testkit::payment(), PROVIDER));
        let by_other = testkit::form_body(&testkit::sign(&testkit::payment(), OTHER));
        assert_eq!(
            verify(&merchants, &by_provider),
            Err(Rejection::Verify(VerifyError::BadSignature))
        );
        merchants
            .previous
            .alipay
            .insert("shop".into(), Arc::new(testkit::app(PROVIDER)));
        assert_eq!(verify(&merchants, &by_provider), Ok(KeySlot::Previous));
        assert_eq!(verify(&merchants, &by_other), Ok(KeySlot::Current));
        // Only a signature failure tries the previous key.
        assert!(matches!(
            verify(&merchants, b"sign=a&sign=b"),
            Err(Rejection::Verify(VerifyError::Malformed(_)))
        ));
        assert_eq!(
            merchants
                .verify(
                    Provider::Alipay,
                    "other",
                    &by_provider,
                    &V3Headers::default(),
                    &FixedClock::at_unix(0)
                )
                .map(drop),
            Err(Rejection::UnknownMerchant)
        );
    }

    #[test]
    fn a_previous_key_is_checked_like_the_current_one() {
        use rsa::pkcs8::EncodePublicKey as _;
        let pem = testkit::public_key(PROVIDER)
            .as_rsa()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .expect("pem");
        let settings = crate::config::Settings::from_toml(&format!(
            "[wechat_v3.m]\nmch_id = \"1\"\napi_v3_key = \"0123456789abcdef0123456789abcdef\"\nprevious_api_v3_key = \"short\"\npublic_key_id = \"PUB_KEY_ID_1\"\npublic_key = '''\n{pem}'''\n",
        ))
        .expect("settings");
        let error = Merchants::build(&settings).expect_err("31 bytes short");
        assert_eq!(error.field, "wechat_v3.m.previous_api_v3_key");
        let settings = crate::config::Settings::from_toml(
            "[alipay.shop]\napp_id = \"1\"\nalipay_cert = \"x\"\nprevious_alipay_public_key = \"y\"\n",
        )
        .expect("settings");
        let error = Merchants::build(&settings).expect_err("certificate mode");
        assert_eq!(error.field, "alipay.shop.previous_alipay_public_key");
    }
}
