//! The merchant registry: configuration turned into ready-to-use verifiers, once at
//! start-up. Key material is parsed here, so a bad key fails the start with a message
//! naming the field, never a request.

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::ExposeSecret as _;

use crate::alipay::{AlipayApp, AlipayKeys};
use crate::config::{ConfigError, Material, Settings};
use crate::event::Provider;
use crate::inventory::{CertificateInfo, Configured};
use crate::wechat_v2::V2Merchant;
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

    /// Number of configured merchants across providers.
    pub fn len(&self) -> usize {
        self.alipay.len() + self.wechat_v2.len() + self.wechat_v3.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
