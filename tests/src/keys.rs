//! Test keys, generated at test time. Nothing here is ever committed or logged.

use std::sync::OnceLock;

use rsa::PrivateKey;

/// Number of distinct cached test keys.
pub const SLOTS: usize = 4;

static KEYS: [OnceLock<PrivateKey>; SLOTS] = [
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
];

/// A 2048-bit RSA key generated once per process for `slot` (0..SLOTS). Different
/// slots give different keys, e.g. the "provider" key and a "wrong" key.
pub fn rsa_key(slot: usize) -> &'static PrivateKey {
    KEYS[slot].get_or_init(|| {
        let mut rng = rand::rng();
        PrivateKey::new(&mut rng, 2048).expect("RSA key generation")
    })
}
