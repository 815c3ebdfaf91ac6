//! Test helpers: the wechatpay-go vector, and a signer holding the vector's platform
//! private key so unit tests can sign arbitrary notifications with a known
//! certificate. (The provider simulator with test-time keys lives in the tests crate.)

use std::sync::OnceLock;

use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use secrecy::SecretString;
use serde::Deserialize;
use spki::EncodePublicKey as _;

use super::signature::V3Headers;
use super::{PlatformKeys, V3Merchant, encrypt_resource};
use crate::crypto;

pub(crate) const PUB_KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000";
const VECTOR_JSON: &str = include_str!("vectors/wechat_v3_notify.json");

/// `wechat_v3_notify.json`, parsed.
#[derive(Debug)]
pub(crate) struct Vector {
    pub body: String,
    pub timestamp: String,
    pub nonce: String,
    pub serial: String,
    pub signature: String,
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub apiv3_key: String,
    pub expected_plaintext: String,
    pub resource_nonce: String,
    pub resource_associated_data: String,
    pub resource_ciphertext: String,
}

impl Vector {
    pub fn headers(&'static self) -> V3Headers<'static> {
        V3Headers {
            timestamp: Some(&self.timestamp),
            nonce: Some(&self.nonce),
            signature: Some(&self.signature),
            serial: Some(&self.serial),
            signature_type: None,
        }
    }

    /// Platform keys holding the vector's certificate only.
    pub fn keys(&self) -> PlatformKeys {
        let mut keys = PlatformKeys::new();
        keys.add_certificate_pem(&self.certificate_pem)
            .expect("vector certificate");
        keys
    }
}

pub(crate) fn vector() -> &'static Vector {
    static VECTOR: OnceLock<Vector> = OnceLock::new();
    VECTOR.get_or_init(|| {
        #[derive(Deserialize)]
        struct File {
            headers: std::collections::BTreeMap<String, String>,
            body: String,
            platform_certificate_pem: String,
            platform_private_key_pem_pkcs8: String,
            apiv3_key: String,
            expected_plaintext: String,
        }
        let f: File = serde_json::from_str(VECTOR_JSON).expect("vector file");
        let body: serde_json::Value = serde_json::from_str(&f.body).expect("vector body");
        let resource = |name: &str| {
            body["resource"][name]
                .as_str()
                .expect("resource")
                .to_owned()
        };
        let header = |name: &str| f.headers.get(name).expect("vector header").clone();
        Vector {
            timestamp: header("Wechatpay-Timestamp"),
            nonce: header("Wechatpay-Nonce"),
            serial: header("Wechatpay-Serial"),
            signature: header("Wechatpay-Signature"),
            resource_nonce: resource("nonce"),
            resource_associated_data: resource("associated_data"),
            resource_ciphertext: resource("ciphertext"),
            body: f.body,
            certificate_pem: f.platform_certificate_pem,
            private_key_pem: f.platform_private_key_pem_pkcs8,
            apiv3_key: f.apiv3_key,
            expected_plaintext: f.expected_plaintext,
        }
    })
}

/// Headers produced by [`VectorSigner::headers`], owned.
#[derive(Debug)]
pub(crate) struct SignedHeaders {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
    pub serial: String,
}

impl SignedHeaders {
    pub fn view(&self) -> V3Headers<'_> {
        V3Headers {
            timestamp: Some(&self.timestamp),
            nonce: Some(&self.nonce),
            signature: Some(&self.signature),
            serial: Some(&self.serial),
            signature_type: Some(super::SIGNATURE_TYPE),
        }
    }
}

/// Signs like WeChat with the vector's platform key (certificate D7CE59D1F522D701).
#[derive(Debug)]
pub(crate) struct VectorSigner {
    key: rsa::PrivateKey,
    serial: String,
    /// The vector's time; tests pin the clock here.
    pub ts: i64,
}

impl VectorSigner {
    pub fn new() -> Self {
        let v = vector();
        Self {
            key: crypto::parse_private_key(&v.private_key_pem).expect("vector private key"),
            serial: v.serial.clone(),
            ts: v.timestamp.parse().expect("vector timestamp"),
        }
    }

    /// The same key announced under another serial (e.g. a `PUB_KEY_ID_…`).
    pub fn with_serial(mut self, serial: &str) -> Self {
        self.serial = serial.to_owned();
        self
    }

    pub fn keys(&self) -> PlatformKeys {
        vector().keys()
    }

    pub fn public_key_pem(&self) -> String {
        rsa::PublicKey::from(&self.key)
            .to_public_key_pem(spki::der::pem::LineEnding::LF)
            .expect("PEM encoding")
    }

    pub fn sign(&self, ts: i64, nonce: &str, body: &[u8]) -> String {
        use base64::Engine as _;
        let message = [format!("{ts}\n{nonce}\n").as_bytes(), body, b"\n"].concat();
        let signature = SigningKey::<sha2::Sha256>::new(self.key.clone()).sign(&message);
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    }

    pub fn headers(&self, ts: i64, body: &[u8]) -> SignedHeaders {
        let nonce = format!("nonce{ts}");
        SignedHeaders {
            signature: self.sign(ts, &nonce, body),
            timestamp: ts.to_string(),
            nonce,
            serial: self.serial.clone(),
        }
    }
}

/// A merchant `1230000109` trusting the vector certificate, with `api_v3_key`.
pub(crate) fn merchant(api_v3_key: &str) -> V3Merchant {
    V3Merchant {
        mch_id: "1230000109".into(),
        api_v3_key: SecretString::from(api_v3_key),
        keys: vector().keys(),
    }
}

/// A notification envelope around `resource`, encrypted with `key`.
pub(crate) fn envelope(
    id: &str,
    event_type: &str,
    resource: &[u8],
    key: &str,
    aad: &str,
) -> Vec<u8> {
    let nonce = "fdasflkja484";
    serde_json::json!({
        "id": id,
        "create_time": "2024-05-20T13:29:35+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "支付成功",
        "resource": {
            "original_type": "transaction",
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": encrypt_resource(key.as_bytes(), nonce, aad, resource),
            "associated_data": aad,
            "nonce": nonce,
        }
    })
    .to_string()
    .into_bytes()
}
