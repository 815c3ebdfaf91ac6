//! The WeChat Pay APIv3 provider side: notifications signed with a platform key and
//! carrying a resource encrypted with the merchant's APIv3 key, exactly as WeChat
//! sends them (docs/protocols.md §3), plus self-signed platform certificates for
//! certificate-mode and rotation tests.
//!
//! Keys come from [`crate::keys`] (generated per process); the APIv3 key is random
//! per signer. Nothing here is ever printed: `Debug` redacts the APIv3 key.

use std::fmt;
use std::str::FromStr as _;
use std::time::Duration;

use payhook_shared::wechat_v3::{
    self, HEADER_NONCE, HEADER_SERIAL, HEADER_SIGNATURE, HEADER_SIGNATURE_TYPE, HEADER_TIMESTAMP,
    PUBLIC_KEY_ID_PREFIX, PlatformKeys, SIGNATURE_TYPE, V3Merchant,
};
use rand::RngExt as _;
use rand::distr::Alphanumeric;
use rsa::pkcs1v15::{Signature, SigningKey};
use rsa::{PrivateKey, PublicKey};
use serde_json::{Value, json};
use sha2::Sha256;
use spki::EncodePublicKey as _;
use spki::der::pem::LineEnding;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_cert::TbsCertificate;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder as _, CertificateBuilder};
use x509_cert::der::EncodePem as _;
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfo, SubjectPublicKeyInfoRef};
use x509_cert::time::Validity;

use crate::keys;

/// Header WeChat adds to every request; not signed, useful for tracing.
pub const HEADER_REQUEST_ID: &str = "Request-ID";

/// The platform (WeChat) side of one APIv3 merchant.
#[derive(Clone)]
pub struct V3Signer {
    key: &'static PrivateKey,
    /// The `Wechatpay-Serial` this signer announces: a `PUB_KEY_ID_…` (default) or a
    /// certificate serial in hex.
    pub serial: String,
    /// The merchant the notifications are for (`mchid`).
    pub mch_id: String,
    /// The app the transactions name (`appid`).
    pub appid: String,
    /// The merchant's APIv3 key: 32 random ASCII letters and digits, per signer.
    pub api_v3_key: String,
}

impl fmt::Debug for V3Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V3Signer")
            .field("serial", &self.serial)
            .field("mch_id", &self.mch_id)
            .field("appid", &self.appid)
            .field("api_v3_key", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl V3Signer {
    /// A signer in public-key mode with the platform key [`keys::rsa_key`]`(1)`.
    pub fn new(mch_id: &str) -> Self {
        Self::with_key(
            keys::rsa_key(1),
            &format!("{PUBLIC_KEY_ID_PREFIX}0114{mch_id}0000000000"),
            mch_id,
        )
    }

    /// A signer announcing `serial` for `key`: a certificate serial in hex
    /// (certificate mode, see [`Self::certificate_pem`]) or a `PUB_KEY_ID_…`.
    pub fn with_key(key: &'static PrivateKey, serial: &str, mch_id: &str) -> Self {
        Self {
            key,
            serial: serial.to_owned(),
            mch_id: mch_id.to_owned(),
            appid: "wxd678efh567hg6787".to_owned(),
            api_v3_key: random_ascii(wechat_v3::API_V3_KEY_LEN),
        }
    }

    /// The same merchant (same APIv3 key) signed by another platform key: the
    /// certificate-rotation overlap, or a public-key migration.
    pub fn rotated(&self, key: &'static PrivateKey, serial: &str) -> Self {
        Self {
            key,
            serial: serial.to_owned(),
            mch_id: self.mch_id.clone(),
            appid: self.appid.clone(),
            api_v3_key: self.api_v3_key.clone(),
        }
    }

    /// The platform public key as `PUBLIC KEY` PEM (public-key mode configuration).
    pub fn public_key_pem(&self) -> String {
        public_key_pem(self.key)
    }

    /// A self-signed platform certificate for this key with [`Self::serial`], which
    /// must then be hex.
    pub fn certificate_pem(&self) -> String {
        self_signed_certificate_pem(self.key, &self.serial)
    }

    /// The platform keys a merchant would configure to trust this signer: the
    /// public key under a `PUB_KEY_ID_…`, or a certificate with a hex serial.
    pub fn platform_keys(&self) -> PlatformKeys {
        let mut keys = PlatformKeys::new();
        if self.serial.starts_with(PUBLIC_KEY_ID_PREFIX) {
            keys.add_public_key(&self.serial, &self.public_key_pem())
                .expect("own public key");
        } else {
            keys.add_certificate_pem(&self.certificate_pem())
                .expect("own certificate");
        }
        keys
    }

    /// The merchant configuration that trusts this signer.
    pub fn merchant(&self) -> V3Merchant {
        V3Merchant {
            mch_id: self.mch_id.clone(),
            api_v3_key: self.api_v3_key.as_str().into(),
            keys: self.platform_keys(),
        }
    }

    /// Base64 SHA256withRSA over `ts\nnonce\nbody\n`.
    pub fn sign(&self, ts: i64, nonce: &str, body: &[u8]) -> String {
        let message = [format!("{ts}\n{nonce}\n").as_bytes(), body, b"\n"].concat();
        keys::ring_key(self.key)
            .sign_sha256_b64(&message)
            .expect("ring signs")
    }

    /// The headers WeChat sends with `body` signed at `ts`: `Wechatpay-Timestamp`,
    /// `-Nonce`, `-Serial`, `-Signature`, `-Signature-Type` and `Request-ID`.
    pub fn headers(&self, ts: i64, body: &[u8]) -> Vec<(String, String)> {
        let nonce = random_ascii(32);
        [
            (HEADER_TIMESTAMP, ts.to_string()),
            (HEADER_SIGNATURE, self.sign(ts, &nonce, body)),
            (HEADER_NONCE, nonce),
            (HEADER_SERIAL, self.serial.clone()),
            (HEADER_SIGNATURE_TYPE, SIGNATURE_TYPE.to_owned()),
            (
                HEADER_REQUEST_ID,
                uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// A notification envelope of `event_type` whose resource is `resource`
    /// encrypted with the APIv3 key (`associated_data` = `original_type`, as WeChat
    /// does for transactions and refunds).
    pub fn notification(
        &self,
        id: &str,
        event_type: &str,
        original_type: &str,
        resource: &[u8],
    ) -> Vec<u8> {
        let nonce = random_ascii(12);
        let ciphertext = wechat_v3::encrypt_resource(
            self.api_v3_key.as_bytes(),
            &nonce,
            original_type,
            resource,
        );
        json!({
            "id": id,
            "create_time": now_beijing(),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "通知",
            "resource": {
                "original_type": original_type,
                "algorithm": wechat_v3::RESOURCE_ALGORITHM,
                "ciphertext": ciphertext,
                "associated_data": original_type,
                "nonce": nonce,
            }
        })
        .to_string()
        .into_bytes()
    }

    /// The decrypted transaction payload (direct mode), for tests that tweak it
    /// before passing it to [`Self::notification`].
    pub fn transaction_resource(
        &self,
        out_trade_no: &str,
        total_fen: i64,
        trade_state: &str,
    ) -> Value {
        let paid = matches!(trade_state, "SUCCESS" | "REFUND");
        let mut resource = json!({
            "appid": self.appid, "mchid": self.mch_id,
            "out_trade_no": out_trade_no,
            "transaction_id": format!("4200{}", random_digits(24)),
            "trade_type": "JSAPI", "trade_state": trade_state, "trade_state_desc": trade_state,
            "bank_type": "OTHERS", "attach": "",
            "payer": { "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" },
            "amount": { "total": total_fen, "payer_total": if paid { total_fen } else { 0 },
                        "currency": "CNY", "payer_currency": "CNY" }
        });
        if paid {
            resource["success_time"] = json!(now_beijing());
        }
        resource
    }

    /// A `TRANSACTION.<trade_state>` notification (WeChat itself only notifies
    /// `SUCCESS`; other states exercise the mapping).
    pub fn transaction(
        &self,
        id: &str,
        out_trade_no: &str,
        total_fen: i64,
        trade_state: &str,
    ) -> Vec<u8> {
        let resource = self.transaction_resource(out_trade_no, total_fen, trade_state);
        let event_type = format!("TRANSACTION.{trade_state}");
        self.notification(
            id,
            &event_type,
            "transaction",
            resource.to_string().as_bytes(),
        )
    }

    /// A `REFUND.<refund_status>` notification for one refund of `refund_fen`.
    pub fn refund(
        &self,
        id: &str,
        out_trade_no: &str,
        out_refund_no: &str,
        total_fen: i64,
        refund_fen: i64,
        refund_status: &str,
    ) -> Vec<u8> {
        let resource = self.refund_resource(
            out_trade_no,
            out_refund_no,
            total_fen,
            refund_fen,
            refund_status,
        );
        let event_type = format!("REFUND.{refund_status}");
        self.notification(id, &event_type, "refund", resource.to_string().as_bytes())
    }

    /// The decrypted refund payload, with random `transaction_id` and `refund_id`,
    /// for tests (and the simulator) that set their own before passing it to
    /// [`Self::notification`].
    pub fn refund_resource(
        &self,
        out_trade_no: &str,
        out_refund_no: &str,
        total_fen: i64,
        refund_fen: i64,
        refund_status: &str,
    ) -> Value {
        let mut resource = json!({
            "mchid": self.mch_id,
            "out_trade_no": out_trade_no,
            "transaction_id": format!("4200{}", random_digits(24)),
            "out_refund_no": out_refund_no,
            "refund_id": format!("5030{}", random_digits(25)),
            "refund_status": refund_status,
            "user_received_account": "支付用户零钱",
            "amount": { "total": total_fen, "refund": refund_fen,
                        "payer_total": total_fen, "payer_refund": refund_fen }
        });
        if refund_status == "SUCCESS" {
            resource["success_time"] = json!(now_beijing());
        }
        resource
    }

    /// The platform private key (the simulator signs its API responses with it).
    pub fn private_key(&self) -> &'static PrivateKey {
        self.key
    }
}

/// `key`'s public half as `PUBLIC KEY` PEM.
pub fn public_key_pem(key: &PrivateKey) -> String {
    PublicKey::from(key)
        .to_public_key_pem(LineEnding::LF)
        .expect("PEM encoding")
}

/// A self-signed X.509 certificate for `key` with serial number `serial_hex`
/// (WeChat's `Wechatpay-Serial` form), valid from now for a year, as PEM.
/// Real platform certificates are issued by the Tenpay CA; payhook does not check
/// the chain (the serial pins the key), so a self-signed one is equivalent here.
pub fn self_signed_certificate_pem(key: &PrivateKey, serial_hex: &str) -> String {
    let serial_bytes = hex::decode(serial_hex).expect("certificate serial must be hex");
    let serial = SerialNumber::new(&serial_bytes).expect("serial of at most 20 bytes");
    let subject = Name::from_str("CN=Tenpay.com Root CA,OU=Tenpay.com CA Center,O=Tenpay.com,C=CN")
        .expect("subject name");
    let validity = Validity::from_now(Duration::from_secs(365 * 24 * 3600)).expect("validity");
    let spki = SubjectPublicKeyInfo::from_key(&PublicKey::from(key)).expect("public key info");
    let signer = SigningKey::<Sha256>::new(key.clone());
    CertificateBuilder::new(SelfSigned(subject), serial, validity, spki)
        .expect("certificate builder")
        .build::<_, Signature>(&signer)
        .expect("certificate signs")
        .to_pem(LineEnding::LF)
        .expect("certificate PEM")
}

/// A minimal self-signed profile: no extensions (WeChat's verification only uses
/// the serial and the key).
struct SelfSigned(Name);

impl BuilderProfile for SelfSigned {
    fn get_issuer(&self, subject: &Name) -> Name {
        subject.clone()
    }

    fn get_subject(&self) -> Name {
        self.0.clone()
    }

    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(Vec::new())
    }
}

pub fn random_ascii(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn random_digits(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// Now in WeChat's format: RFC 3339, whole seconds, Beijing time.
pub fn now_beijing() -> String {
    let now = OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8));
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&Rfc3339)
        .expect("RFC 3339 formatting")
}

#[cfg(test)]
mod tests {
    use payhook_shared::clock::FixedClock;
    use payhook_shared::error::VerifyError;
    use payhook_shared::event::{Kind, Status, VerifiedNotification};
    use payhook_shared::wechat_v3::{V3Headers, certificate_serial, verify_notification};

    use super::*;

    const TS: i64 = 1_716_182_975;

    fn verify(
        m: &V3Merchant,
        signer: &V3Signer,
        body: &[u8],
    ) -> Result<VerifiedNotification, VerifyError> {
        let headers = signer.headers(TS, body);
        verify_notification(
            m,
            &V3Headers::from_pairs(&headers),
            body,
            &FixedClock::at_unix(TS),
        )
    }

    #[test]
    fn signed_transaction_verifies_as_a_paid_payment() {
        let s = V3Signer::new("1230000109");
        let body = s.transaction("evt-1", "order-1", 8_888, "SUCCESS");
        let n = verify(&s.merchant(), &s, &body).expect("verifies");
        assert_eq!(n.notification_id(), "evt-1");
        assert_eq!((n.kind(), n.status()), (Kind::Payment, Status::Paid));
        let f = n.fields();
        assert_eq!(f.out_trade_no.as_deref(), Some("order-1"));
        assert_eq!((f.total_amount, f.paid_amount), (Some(8_888), Some(8_888)));
        assert_eq!(f.mch_id.as_deref(), Some("1230000109"));
        assert_eq!(f.app_id.as_deref(), Some("wxd678efh567hg6787"));
        assert!(
            f.provider_trade_no
                .as_deref()
                .is_some_and(|t| t.starts_with("4200"))
        );
    }

    #[test]
    fn signed_closed_transaction_is_a_close() {
        let s = V3Signer::new("1230000109");
        let body = s.transaction("evt-2", "order-2", 100, "CLOSED");
        let n = verify(&s.merchant(), &s, &body).expect("verifies");
        assert_eq!((n.kind(), n.status()), (Kind::Close, Status::Closed));
        assert_eq!(n.fields().paid_amount, Some(0));
    }

    #[test]
    fn signed_refund_verifies_as_a_refund_of_this_amount() {
        let s = V3Signer::new("1230000109");
        for (status, expected) in [
            ("SUCCESS", Status::RefundSucceeded),
            ("ABNORMAL", Status::RefundAbnormal),
            ("CLOSED", Status::RefundClosed),
        ] {
            let body = s.refund("evt-r", "order-1", "refund-1", 8_888, 1_000, status);
            let n = verify(&s.merchant(), &s, &body).expect("verifies");
            assert_eq!((n.kind(), n.status()), (Kind::Refund, expected), "{status}");
            let f = n.fields();
            assert_eq!(f.out_refund_no.as_deref(), Some("refund-1"));
            assert_eq!(
                (f.refund_amount, f.total_amount),
                (Some(1_000), Some(8_888))
            );
            assert!(!f.refund_amount_cumulative);
        }
    }

    #[test]
    fn headers_carry_every_wechat_header() {
        let s = V3Signer::new("1230000109");
        let headers = s.headers(TS, b"{}");
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        for name in [
            HEADER_TIMESTAMP,
            HEADER_NONCE,
            HEADER_SERIAL,
            HEADER_SIGNATURE,
            HEADER_SIGNATURE_TYPE,
            HEADER_REQUEST_ID,
        ] {
            assert!(names.contains(&name), "{name}");
        }
        let view = V3Headers::from_pairs(&headers);
        assert_eq!(view.serial, Some(s.serial.as_str()));
        assert_eq!(view.timestamp, Some("1716182975"));
        assert_eq!(view.signature_type, Some(SIGNATURE_TYPE));
    }

    #[test]
    fn old_and_new_certificates_both_verify_during_rotation() {
        let old = V3Signer::with_key(
            keys::rsa_key(1),
            "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
            "1230000109",
        );
        let new = old.rotated(keys::rsa_key(2), "7132D72A03E93CDDF8C03BBD1F37EEDF204D1C5A");
        let mut merchant = old.merchant();
        merchant.keys.merge(new.platform_keys());
        assert_eq!(merchant.keys.len(), 2);
        for signer in [&old, &new] {
            let body = signer.transaction("evt", "order", 1, "SUCCESS");
            assert!(
                verify(&merchant, signer, &body).is_ok(),
                "{}",
                signer.serial
            );
        }
    }

    #[test]
    fn public_key_id_and_certificate_are_accepted_side_by_side() {
        let cert = V3Signer::with_key(keys::rsa_key(2), "0ABCDEF0123456789A", "1230000109");
        let public = cert.rotated(keys::rsa_key(1), "PUB_KEY_ID_01141230000109000000000000");
        let mut merchant = cert.merchant();
        merchant.keys.merge(public.platform_keys());
        for signer in [&cert, &public] {
            let body = signer.transaction("evt", "order", 1, "SUCCESS");
            assert!(
                verify(&merchant, signer, &body).is_ok(),
                "{}",
                signer.serial
            );
        }
    }

    #[test]
    fn signature_from_the_wrong_platform_key_is_refused() {
        let s = V3Signer::new("1230000109");
        let impostor = s.rotated(keys::rsa_key(3), &s.serial);
        let body = impostor.transaction("evt", "order", 1, "SUCCESS");
        assert_eq!(
            verify(&s.merchant(), &impostor, &body).err(),
            Some(VerifyError::BadSignature)
        );
    }

    #[test]
    fn self_signed_certificate_has_the_requested_serial() {
        for serial in [
            "D7CE59D1F522D701",
            "0ABCDEF0123456789A",
            "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        ] {
            let pem = self_signed_certificate_pem(keys::rsa_key(1), serial);
            let certs = payhook_shared::crypto::parse_certificates(&pem).expect("parses");
            assert_eq!(certificate_serial(&certs[0]), serial);
            let mut keys = PlatformKeys::new();
            assert_eq!(keys.add_certificate_pem(&pem).as_deref(), Ok(serial));
        }
    }

    #[test]
    fn api_v3_key_is_random_32_ascii_and_never_printed() {
        let a = V3Signer::new("1");
        let b = V3Signer::new("1");
        assert_eq!(a.api_v3_key.len(), 32);
        assert!(a.api_v3_key.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.api_v3_key, b.api_v3_key);
        assert!(!format!("{a:?}").contains(&a.api_v3_key));
        assert!(!format!("{:?}", a.merchant()).contains(&a.api_v3_key));
    }
}
