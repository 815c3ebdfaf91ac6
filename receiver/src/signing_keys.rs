//! The receiver holds no signing key (least privilege, docs/design.md "Platform
//! certificates").
//!
//! The receiver faces the internet and only verifies: provider public keys and
//! certificates, the APIv2 key (HMAC: the same key verifies and signs — APIv2 cannot
//! do better) and the APIv3 key (decryption). The keys that sign requests to the
//! providers — Alipay's `app_private_key`, WeChat's `merchant_private_key`, which can
//! also sign refunds — belong to the worker alone.
//!
//! One configuration file usually serves both parts, so a signing key *named* by the
//! configuration is fine as long as the receiver cannot reach it: a `{ file }` not
//! mounted in the receiver's container, a `{ env }` variable not set in its
//! environment. A key the receiver could read — written in the file itself, a file it
//! can open, a variable it has — stops the start: a warning would leave the key where
//! an attacker who breaks into the receiver finds it, and nothing in the receiver
//! would ever use it.

use payhook_shared::config::{ConfigError, Material, Settings};

/// What the receiver's configuration says about one signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The setting, e.g. `wechat_v3.main.merchant_private_key`.
    pub field: String,
    /// Where it points (a file path or a variable name; never the key).
    pub source: String,
}

/// Refuses a configuration whose signing keys the receiver could read; otherwise
/// returns those it names without being able to read them (for the start-up log).
pub fn check(settings: &Settings) -> Result<Vec<Named>, ConfigError> {
    let mut named = Vec::new();
    let alipay = settings.alipay.iter().filter_map(|(name, app)| {
        app.app_private_key
            .as_ref()
            .map(|key| (format!("alipay.{name}.app_private_key"), &key.0))
    });
    let wechat = settings.wechat_v3.iter().filter_map(|(name, m)| {
        m.merchant_private_key
            .as_ref()
            .map(|key| (format!("wechat_v3.{name}.merchant_private_key"), &key.0))
    });
    for (field, material) in alipay.chain(wechat) {
        let (reachable, source) = match material {
            Material::Inline(_) => (true, "the configuration itself".to_owned()),
            Material::File { file } => (
                std::fs::File::open(file).is_ok(),
                format!("file {}", file.display()),
            ),
            Material::Env { env } => (
                std::env::var_os(env).is_some(),
                format!("environment variable {env}"),
            ),
        };
        if reachable {
            return Err(ConfigError::new(
                field,
                format!(
                    "a signing private key, readable by the receiver ({source}): the \
                     receiver signs nothing and must not hold it. Give it to the worker \
                     only (a file not mounted in the receiver, a variable not set in its \
                     environment), or remove it from the receiver's configuration"
                ),
            ));
        }
        named.push(Named { field, source });
    }
    Ok(named)
}

#[cfg(test)]
mod tests {
    use payhook_shared::config::Secret;

    use super::*;

    fn settings(toml: &str) -> Settings {
        Settings::from_toml(toml).expect("settings")
    }

    const V3: &str = "[wechat_v3.main]\nmch_id = \"1\"\napi_v3_key = \"0123456789abcdef0123456789abcdef\"\npublic_key_id = \"PUB_KEY_ID_01\"\npublic_key = \"MIIB\"\n";

    #[test]
    fn no_signing_key_is_fine() {
        assert!(check(&settings(V3)).expect("accepted").is_empty());
    }

    #[test]
    fn an_inline_key_is_refused_without_echoing_it() {
        let mut s = settings(V3);
        if let Some(m) = s.wechat_v3.get_mut("main") {
            m.merchant_private_key = Some(Secret::inline("-----BEGIN PRIVATE KEY-----hunter2"));
        }
        let error = check(&s).expect_err("refused");
        assert_eq!(error.field, "wechat_v3.main.merchant_private_key");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn a_key_the_receiver_can_read_is_refused_and_one_it_cannot_is_listed() {
        let dir = std::env::temp_dir().join(format!("payhook-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let present = dir.join("present.pem");
        std::fs::write(&present, "key").expect("writes");
        let absent = dir.join("absent.pem");
        let with_file = |path: &std::path::Path| {
            settings(&format!(
                "[alipay.shop]\napp_id = \"1\"\nalipay_public_key = \"x\"\napp_private_key = {{ file = {:?} }}\n",
                path.display().to_string()
            ))
        };
        let error = check(&with_file(&present)).expect_err("refused");
        assert_eq!(error.field, "alipay.shop.app_private_key");
        let named = check(&with_file(&absent)).expect("accepted");
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].field, "alipay.shop.app_private_key");
        let _ = std::fs::remove_dir_all(&dir);
        // A variable that is not set.
        let unset = settings(&format!(
            "{V3}merchant_private_key = {{ env = \"PAYHOOK_TEST_UNSET_SIGNING_KEY_{}\" }}\n",
            std::process::id()
        ));
        assert_eq!(check(&unset).expect("accepted").len(), 1);
    }
}
