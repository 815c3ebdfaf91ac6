//! Test keys, generated at test time. Nothing here is ever committed or logged.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use payhook_shared::crypto::RsaSigningKey;
use rsa::PrivateKey;
use rsa::pkcs8::EncodePrivateKey as _;

/// Number of distinct cached test keys. By convention: 0 Alipay, 1 WeChat platform,
/// 2 and 3 "other" keys (rotation, forgers), 4 the Alipay app key and 5 the WeChat
/// merchant API key (the payhook side of query requests, see [`crate`]).
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

/// `key` as a `ring` signing key, made once per key and kept for the process.
///
/// The signers sign SHA256withRSA (Alipay `RSA2`, WeChat Pay APIv3) with it: PKCS#1
/// v1.5 signatures are deterministic, so `ring` gives the same bytes as the `rsa` crate
/// (a unit test below checks it) in a fraction of the time, which is most of the time
/// a load generator spends pre-signing notifications.
pub fn ring_key(key: &'static PrivateKey) -> &'static RsaSigningKey {
    static CACHE: OnceLock<Mutex<HashMap<usize, &'static RsaSigningKey>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Mutex::default)
        .lock()
        .expect("ring key cache lock");
    // Keyed by address: the keys are `'static`, so an address names one key for good.
    let address = std::ptr::from_ref(key) as usize;
    if let Some(made) = cache.get(&address) {
        return made;
    }
    let der = key.to_pkcs8_der().expect("PKCS#8 encoding of a test key");
    let made: &'static RsaSigningKey = Box::leak(Box::new(
        RsaSigningKey::from_pkcs8_der(der.as_bytes()).expect("ring accepts the test key"),
    ));
    cache.insert(address, made);
    made
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use rsa::pkcs1v15::SigningKey;
    use rsa::signature::{SignatureEncoding as _, Signer as _};

    use super::*;

    #[test]
    fn ring_signs_the_same_bytes_as_the_rsa_crate() {
        let key = rsa_key(0);
        let message = b"gmt_create=2026-12-03 21:00:00&out_trade_no=order-1&total_amount=88.88";
        let by_rsa = STANDARD.encode(
            SigningKey::<sha2::Sha256>::new(key.clone())
                .sign(message)
                .to_bytes(),
        );
        let by_ring = ring_key(key).sign_sha256_b64(message).expect("ring signs");
        assert_eq!(by_ring, by_rsa);
        assert!(
            std::ptr::eq(ring_key(key), ring_key(key)),
            "made once per key"
        );
        assert_ne!(
            ring_key(rsa_key(1))
                .sign_sha256_b64(message)
                .expect("ring signs"),
            by_ring,
            "another key, another signature"
        );
    }
}
