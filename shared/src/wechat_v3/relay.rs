//! WeChat Pay V3 platform certificates, from the worker to the receivers
//! (docs/design.md, "Platform certificates").
//!
//! The worker holds the merchant private keys that sign `/v3/certificates` requests;
//! the internet-facing receivers hold none. The worker downloads the certificate list,
//! checks it, and publishes each merchant's list — as WeChat sealed it, with the APIv3
//! key — to the `<prefix>.certificates` stream. Receivers read the stream from its
//! start when they connect and follow it; each opens the entries with its own APIv3
//! key. Neither the key nor anything secret crosses the broker: an entry that opens is
//! authentic, and someone who can only write to the broker cannot forge one.

use serde::{Deserialize, Serialize};

use super::api::{SealedCertificate, open_and_describe};
use super::{PlatformKeys, V3Merchant};
use crate::error::VerifyError;

/// AMQP `type` of a [`CertificateSet`] message.
pub const SET_TYPE: &str = "payhook.wechat_v3.certificates";

/// AMQP `type` of a receiver's catch-up marker (see [`Marker`]).
pub const MARKER_TYPE: &str = "payhook.certificates.marker";

/// One merchant's platform certificates as the worker last downloaded them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSet {
    /// The merchant's configured name (`wechat_v3.<name>`).
    pub merchant: String,
    pub mch_id: String,
    /// When the worker downloaded the list (Unix seconds); a receiver keeps the newest.
    pub fetched_at: i64,
    /// The entries of `/v3/certificates`, still sealed.
    pub certificates: Vec<SealedCertificate>,
}

impl CertificateSet {
    /// Opens the set with `merchant`'s APIv3 key. Refused when it names another
    /// `mch_id` or an entry does not open.
    pub fn open(&self, merchant: &V3Merchant) -> Result<PlatformKeys, VerifyError> {
        self.open_and_describe(merchant).map(|(keys, _)| keys)
    }

    /// Like [`CertificateSet::open`], with each certificate described (serial,
    /// validity).
    pub fn open_and_describe(
        &self,
        merchant: &V3Merchant,
    ) -> Result<(PlatformKeys, Vec<crate::inventory::CertificateInfo>), VerifyError> {
        if self.mch_id != merchant.mch_id {
            return Err(VerifyError::Malformed(
                "certificate set names another mch_id".into(),
            ));
        }
        open_and_describe(&merchant.api_v3_key, &self.certificates)
    }
}

/// A receiver publishes one of these into the stream when it starts reading, and
/// knows it has read everything published before once its own marker comes back
/// (the stream keeps order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    pub marker: String,
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::wechat_v3::api::Sealed;
    use crate::wechat_v3::encrypt_resource;
    use crate::wechat_v3::test_support::vector;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn set(mch_id: &str, key: &str) -> CertificateSet {
        let v = vector();
        let nonce = "0123456789ab";
        CertificateSet {
            merchant: "m1".into(),
            mch_id: mch_id.into(),
            fetched_at: 1_700_000_000,
            certificates: vec![SealedCertificate {
                serial_no: v.serial.clone(),
                encrypt_certificate: Sealed {
                    algorithm: "AEAD_AES_256_GCM".into(),
                    nonce: nonce.into(),
                    associated_data: "certificate".into(),
                    ciphertext: encrypt_resource(
                        key.as_bytes(),
                        nonce,
                        "certificate",
                        v.certificate_pem.as_bytes(),
                    ),
                },
            }],
        }
    }

    fn merchant() -> V3Merchant {
        V3Merchant {
            mch_id: "1230000109".into(),
            api_v3_key: SecretString::from(KEY),
            keys: PlatformKeys::new(),
        }
    }

    #[test]
    fn a_set_opens_with_the_merchants_key_and_survives_json() {
        let sent = set("1230000109", KEY);
        let json = serde_json::to_vec(&sent).expect("serializes");
        let received: CertificateSet = serde_json::from_slice(&json).expect("parses");
        assert_eq!(received, sent);
        let keys = received.open(&merchant()).expect("opens");
        assert_eq!(keys.serials(), vec![vector().serial.clone()]);
    }

    #[test]
    fn a_set_for_another_merchant_or_sealed_with_another_key_is_refused() {
        assert!(set("1900000001", KEY).open(&merchant()).is_err());
        assert!(
            set("1230000109", "ffffffffffffffffffffffffffffffff")
                .open(&merchant())
                .is_err()
        );
        // A marker is not a set.
        assert!(serde_json::from_str::<CertificateSet>(r#"{"marker":"x"}"#).is_err());
    }
}
