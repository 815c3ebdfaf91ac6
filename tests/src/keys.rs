//! Test keys, generated at test time. Nothing here is ever committed or logged.

use std::sync::OnceLock;

use rsa::PrivateKey;

/// Number of distinct cached test keys. By convention: 0 Alipay, 1 WeChat platform,
/// 2 and 3 "other" keys (rotation, forgers), 4 the Alipay app key and 5 the WeChat
/// merchant API key (the payhook side of query requests, see [`crate::sim`]).
pub const SLOTS: usize = 6;

/// The slot of the Alipay *app* key (payhook signs its gateway requests with it).
pub const ALIPAY_APP_SLOT: usize = 4;
/// The slot of the WeChat *merchant* API key (payhook signs its APIv3 requests with it).
pub const WECHAT_MERCHANT_SLOT: usize = 5;

static KEYS: [OnceLock<PrivateKey>; SLOTS] = [
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
];

/// A 2048-bit RSA key generated once per process for `slot` (0..SLOTS). Different
/// slots give different keys, e.g. the "provider" key and a "wrong" key.
pub fn rsa_key(slot: usize) -> &'static PrivateKey {
    KEYS[slot].get_or_init(generate_rsa_key)
}

/// A fresh 2048-bit RSA key (not cached).
pub fn generate_rsa_key() -> PrivateKey {
    let mut rng = rand::rng();
    PrivateKey::new(&mut rng, 2048).expect("RSA key generation")
}
