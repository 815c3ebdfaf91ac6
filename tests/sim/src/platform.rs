//! WeChat Pay APIv3 platform keys, with certificate rotation as WeChat does it: a new
//! certificate is listed by `/v3/certificates` at once, signing switches to it after
//! an overlap, and the old one stays listed until it expires.

use std::time::Duration;

use rsa::PrivateKey;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::signer::wechat_v3::{V3Signer, self_signed_certificate_pem};

/// One platform key.
#[derive(Debug, Clone)]
pub(crate) struct PlatformEntry {
    pub signer: V3Signer,
    /// The certificate, `None` for a `PUB_KEY_ID_…` public key (never listed).
    pub certificate_pem: Option<String>,
    pub effective_time: OffsetDateTime,
    pub expire_time: OffsetDateTime,
    /// From when notifications and responses are signed with it.
    pub sign_from: Instant,
    /// Until when `/v3/certificates` lists it (`None`: for ever).
    pub listed_until: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Platform {
    entries: Vec<PlatformEntry>,
}

impl Platform {
    /// Starts with the merchant's configured platform signer.
    pub fn new(initial: V3Signer) -> Self {
        let certificate_pem = (!initial
            .serial
            .starts_with(payhook_shared::wechat_v3::PUBLIC_KEY_ID_PREFIX))
        .then(|| initial.certificate_pem());
        let now = OffsetDateTime::now_utc();
        Self {
            entries: vec![PlatformEntry {
                signer: initial,
                certificate_pem,
                effective_time: now,
                expire_time: now + Duration::from_secs(365 * 24 * 3600),
                sign_from: Instant::now(),
                listed_until: None,
            }],
        }
    }

    /// The signer of notifications and responses now: the newest one whose overlap
    /// has passed.
    pub fn current(&self) -> &V3Signer {
        let now = Instant::now();
        self.entries
            .iter()
            .rev()
            .find(|e| e.sign_from <= now)
            .map_or(&self.entries[0].signer, |e| &e.signer)
    }

    /// The certificates `/v3/certificates` lists now.
    pub fn listed(&self) -> Vec<&PlatformEntry> {
        let now = Instant::now();
        self.entries
            .iter()
            .filter(|e| e.certificate_pem.is_some())
            .filter(|e| e.listed_until.is_none_or(|until| until > now))
            .collect()
    }

    /// Adds a certificate for `key` with `serial` (hex); it signs after `overlap`,
    /// and the ones before it stay listed for `retire_after` more (real durations).
    pub fn rotate(
        &mut self,
        key: &'static PrivateKey,
        serial: &str,
        overlap: Duration,
        retire_after: Duration,
    ) {
        let now = Instant::now();
        let wall = OffsetDateTime::now_utc();
        let retire_at = now + overlap + retire_after;
        for entry in &mut self.entries {
            if entry.listed_until.is_none_or(|until| until > retire_at) {
                entry.listed_until = Some(retire_at);
                entry.expire_time = wall + overlap + retire_after;
            }
        }
        let signer = self.current().rotated(key, serial);
        self.entries.push(PlatformEntry {
            certificate_pem: Some(self_signed_certificate_pem(key, serial)),
            signer,
            effective_time: wall,
            expire_time: wall + Duration::from_secs(365 * 24 * 3600),
            sign_from: now + overlap,
            listed_until: None,
        });
    }
}
