//! Keys kept in a directory for the CLI: generated on the first run, loaded on the
//! next ones, plus the payhook configuration snippet (`payhook-merchants.toml`) that
//! trusts them, so a user can point payhook at the simulator.
//!
//! Everything here is TEST ONLY material: the simulator's own stand-ins for Alipay's
//! and WeChat's keys and the merchant's credentials. Nothing is committed; the files
//! are written `0600`.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use payhook_shared::crypto::parse_private_key;
use rand::RngExt as _;
use rsa::PrivateKey;
use rsa::pkcs8::EncodePrivateKey as _;
use serde::{Deserialize, Serialize};
use spki::der::pem::LineEnding;

use super::SimConfig;
use crate::Providers;
use crate::keys::generate_rsa_key;
use crate::signer::alipay::AlipaySigner;
use crate::signer::wechat_v2::V2Signer;
use crate::signer::wechat_v3::{V3Signer, public_key_pem, random_ascii};

/// The file with every key and id.
pub const KEYS_FILE: &str = "sim-keys.json";
/// The payhook configuration snippet.
pub const SNIPPET_FILE: &str = "payhook-merchants.toml";
const APP_KEY_FILE: &str = "alipay_app_private_key.pem";
const MERCHANT_KEY_FILE: &str = "wechat_merchant_private_key.pem";

#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    warning: String,
    alipay_app_id: String,
    alipay_seller_id: String,
    alipay_private_key: String,
    alipay_app_private_key: String,
    wechat_platform_private_key: String,
    wechat_platform_serial: String,
    wechat_v3_mch_id: String,
    wechat_v3_appid: String,
    wechat_api_v3_key: String,
    wechat_merchant_private_key: String,
    wechat_merchant_serial: String,
    wechat_v2_mch_id: String,
    wechat_v2_appid: String,
    wechat_v2_api_key: String,
}

/// The simulator's providers and the merchant's query keys, from a directory.
pub struct KeysDir {
    pub dir: PathBuf,
    pub providers: Providers,
    /// The payhook side: the Alipay app key and the WeChat merchant API key.
    pub alipay_app_key: &'static PrivateKey,
    pub wechat_merchant_key: &'static PrivateKey,
    pub wechat_merchant_serial: String,
}

impl fmt::Debug for KeysDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysDir")
            .field("dir", &self.dir)
            .field("providers", &self.providers)
            .field("wechat_merchant_serial", &self.wechat_merchant_serial)
            .finish_non_exhaustive()
    }
}

fn pem(key: &PrivateKey) -> anyhow::Result<String> {
    Ok(key.to_pkcs8_pem(LineEnding::LF)?.to_string())
}

/// Keys live as long as the process: the signers want `'static` keys, and a CLI
/// loads them once.
fn leak(text: &str, what: &str) -> anyhow::Result<&'static PrivateKey> {
    let key = parse_private_key(text).with_context(|| format!("{what} in {KEYS_FILE}"))?;
    Ok(Box::leak(Box::new(key)))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

impl KeysDir {
    /// Loads `dir/sim-keys.json`, or generates fresh TEST ONLY keys and ids into it
    /// (creating `dir`); (re)writes `payhook-merchants.toml` either way.
    pub fn load_or_generate(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join(KEYS_FILE);
        let stored = if file.exists() {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?
        } else {
            let stored = Self::generate()?;
            write_private(&file, &serde_json::to_string_pretty(&stored)?)?;
            stored
        };
        let alipay = AlipaySigner::with_key(
            leak(&stored.alipay_private_key, "alipay_private_key")?,
            &stored.alipay_app_id,
            &stored.alipay_seller_id,
        );
        let mut wechat_v3 = V3Signer::with_key(
            leak(
                &stored.wechat_platform_private_key,
                "wechat_platform_private_key",
            )?,
            &stored.wechat_platform_serial,
            &stored.wechat_v3_mch_id,
        );
        wechat_v3.appid = stored.wechat_v3_appid.clone();
        wechat_v3.api_v3_key = stored.wechat_api_v3_key.clone();
        let wechat_v2 = V2Signer {
            appid: stored.wechat_v2_appid.clone(),
            mch_id: stored.wechat_v2_mch_id.clone(),
            api_key: stored.wechat_v2_api_key.clone(),
        };
        let keys = Self {
            dir: dir.to_owned(),
            providers: Providers {
                alipay,
                wechat_v2,
                wechat_v3,
            },
            alipay_app_key: leak(&stored.alipay_app_private_key, "alipay_app_private_key")?,
            wechat_merchant_key: leak(
                &stored.wechat_merchant_private_key,
                "wechat_merchant_private_key",
            )?,
            wechat_merchant_serial: stored.wechat_merchant_serial.clone(),
        };
        write_private(&dir.join(APP_KEY_FILE), &stored.alipay_app_private_key)?;
        write_private(
            &dir.join(MERCHANT_KEY_FILE),
            &stored.wechat_merchant_private_key,
        )?;
        write_private(&dir.join(SNIPPET_FILE), &keys.payhook_snippet()?)?;
        Ok(keys)
    }

    fn generate() -> anyhow::Result<Stored> {
        let digits = |n: usize| -> String {
            let mut rng = rand::rng();
            (0..n)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect()
        };
        let v3_mch_id = format!("19{}", digits(8));
        // 40 hex digits, like a merchant API certificate serial.
        let merchant_serial = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
        .to_uppercase();
        let v2 = V2Signer::new(&format!("18{}", digits(8)));
        Ok(Stored {
            warning: "TEST ONLY: generated by payhook-sim; not provider keys".into(),
            alipay_app_id: format!("2021{}", digits(12)),
            alipay_seller_id: format!("2088{}", digits(12)),
            alipay_private_key: pem(&generate_rsa_key())?,
            alipay_app_private_key: pem(&generate_rsa_key())?,
            wechat_platform_private_key: pem(&generate_rsa_key())?,
            wechat_platform_serial: format!("PUB_KEY_ID_0114{v3_mch_id}{}", digits(10)),
            wechat_v3_appid: format!("wx{}", random_ascii(16).to_lowercase()),
            wechat_v3_mch_id: v3_mch_id,
            wechat_api_v3_key: random_ascii(32),
            wechat_merchant_private_key: pem(&generate_rsa_key())?,
            wechat_merchant_serial: merchant_serial,
            wechat_v2_mch_id: v2.mch_id,
            wechat_v2_appid: v2.appid,
            wechat_v2_api_key: v2.api_key,
        })
    }

    /// A simulator configuration with these providers, trusting these query keys.
    pub fn sim_config(&self) -> SimConfig {
        let mut config = SimConfig::new(self.providers.clone());
        config.alipay_app_public_key = Some(public_key_pem(self.alipay_app_key));
        config.wechat_merchant_keys = vec![(
            self.wechat_merchant_serial.clone(),
            public_key_pem(self.wechat_merchant_key),
        )];
        config
    }

    /// The `[alipay.m1]`, `[wechat_v2.m1]`, `[wechat_v3.m1]` sections payhook needs
    /// to trust the simulator and to query it (private keys by file path).
    pub fn payhook_snippet(&self) -> anyhow::Result<String> {
        let p = &self.providers;
        let m = Providers::MERCHANT;
        let path = |file: &str| -> anyhow::Result<String> {
            let full = std::path::absolute(self.dir.join(file))?;
            Ok(toml_string(&full.to_string_lossy()))
        };
        Ok(format!(
            r#"# TEST ONLY — generated by payhook-sim for its simulated providers.
# These are NOT Alipay's or WeChat Pay's keys: never use this file in production.
# Merge these sections into payhook's configuration (PAYHOOK_CONFIG).
# To let the worker reconcile against `payhook-sim serve --listen ADDR`, also set:
#   [reconcile]
#   alipay_gateway = "http://ADDR/gateway.do"
#   wechat_base = "http://ADDR"

[alipay.{m}]
app_id = {app_id}
seller_id = {seller_id}
alipay_public_key = {alipay_public_key}
app_private_key = {{ file = {app_key} }}

[wechat_v2.{m}]
mch_id = {v2_mch_id}
appid = {v2_appid}
api_key = {v2_api_key}

[wechat_v3.{m}]
mch_id = {v3_mch_id}
appid = {v3_appid}
api_v3_key = {api_v3_key}
public_key_id = {public_key_id}
public_key = '''
{public_key}'''
merchant_private_key = {{ file = {merchant_key} }}
merchant_serial = {merchant_serial}
"#,
            app_id = toml_string(&p.alipay.app_id),
            seller_id = toml_string(&p.alipay.seller_id),
            alipay_public_key = toml_string(&p.alipay.public_key_b64()),
            app_key = path(APP_KEY_FILE)?,
            v2_mch_id = toml_string(&p.wechat_v2.mch_id),
            v2_appid = toml_string(&p.wechat_v2.appid),
            v2_api_key = toml_string(&p.wechat_v2.api_key),
            v3_mch_id = toml_string(&p.wechat_v3.mch_id),
            v3_appid = toml_string(&p.wechat_v3.appid),
            api_v3_key = toml_string(&p.wechat_v3.api_v3_key),
            public_key_id = toml_string(&p.wechat_v3.serial),
            public_key = p.wechat_v3.public_key_pem(),
            merchant_key = path(MERCHANT_KEY_FILE)?,
            merchant_serial = toml_string(&self.wechat_merchant_serial),
        ))
    }
}

/// A TOML basic string (JSON string syntax is valid TOML for these values).
fn toml_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

#[cfg(test)]
mod tests {
    use payhook_shared::config::Settings;
    use payhook_shared::merchants::Merchants;

    use super::*;

    #[test]
    fn keys_are_generated_once_and_the_snippet_configures_payhook() {
        let dir = std::env::temp_dir().join(format!("payhook-sim-{}", uuid::Uuid::new_v4()));
        let first = KeysDir::load_or_generate(&dir).expect("generated");
        let again = KeysDir::load_or_generate(&dir).expect("loaded");
        assert_eq!(
            first.providers.alipay.public_key_b64(),
            again.providers.alipay.public_key_b64()
        );
        assert_eq!(
            first.providers.wechat_v2.api_key,
            again.providers.wechat_v2.api_key
        );

        let snippet = std::fs::read_to_string(dir.join(SNIPPET_FILE)).expect("snippet");
        assert!(snippet.starts_with("# TEST ONLY"));
        let settings = Settings::from_toml(&snippet).expect("payhook accepts the snippet");
        Merchants::build(&settings).expect("every key parses");
        let v3 = &settings.wechat_v3[Providers::MERCHANT];
        assert_eq!(
            v3.merchant_serial.as_deref(),
            Some(first.wechat_merchant_serial.as_str())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
