//! WeChat Pay APIv2 as WeChat plays it: signed payment notifications and encrypted
//! refund notifications (docs/protocols.md §2).
//!
//! The signing and encryption here are written independently of
//! `payhook_shared::wechat_v2` on purpose: a test double that reused the verifier's
//! code would agree with it even when both are wrong. Both sides are pinned to the
//! official vectors, and the tests below prove they agree with each other.

use std::fmt;

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ecb::cipher::block_padding::Pkcs7;
use ecb::cipher::{BlockModeEncrypt as _, KeyInit as _};
use hmac::Mac as _;
use md5::{Digest as _, Md5};
use payhook_shared::wechat_v2::{SignType, V2Merchant};
use rand::RngExt as _;
use rand::distr::{Alphanumeric, SampleString as _};
use secrecy::SecretString;
use sha2::Sha256;
use time::{OffsetDateTime, UtcOffset};

/// One merchant as WeChat sees it: its ids and its APIv2 key.
#[derive(Clone)]
pub struct V2Signer {
    pub appid: String,
    pub mch_id: String,
    /// 32 random alphanumeric characters, generated per signer (never a committed key).
    pub api_key: String,
}

impl fmt::Debug for V2Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V2Signer")
            .field("appid", &self.appid)
            .field("mch_id", &self.mch_id)
            .field("api_key", &"[REDACTED]")
            .finish()
    }
}

impl V2Signer {
    /// A merchant `mch_id` with a random appid and a fresh random APIv2 key.
    pub fn new(mch_id: &str) -> Self {
        let mut rng = rand::rng();
        Self {
            appid: format!(
                "wx{}",
                Alphanumeric.sample_string(&mut rng, 16).to_lowercase()
            ),
            mch_id: mch_id.to_owned(),
            api_key: Alphanumeric.sample_string(&mut rng, 32),
        }
    }

    /// The credentials payhook must be configured with to accept this signer's
    /// notifications.
    pub fn merchant(&self) -> V2Merchant {
        V2Merchant {
            mch_id: self.mch_id.clone(),
            api_key: SecretString::from(self.api_key.clone()),
        }
    }

    /// The unsigned fields of a successful payment notification, in WeChat's usual
    /// order, for tests that change a field before signing with [`Self::signed`].
    pub fn payment_params(
        &self,
        out_trade_no: &str,
        total_fen: i64,
        transaction_id: &str,
    ) -> Vec<(String, String)> {
        let mut rng = rand::rng();
        pairs(&[
            ("appid", &self.appid),
            ("bank_type", "OTHERS"),
            ("cash_fee", &total_fen.to_string()),
            ("fee_type", "CNY"),
            ("is_subscribe", "N"),
            ("mch_id", &self.mch_id),
            ("nonce_str", &Alphanumeric.sample_string(&mut rng, 32)),
            (
                "openid",
                &format!("o{}", Alphanumeric.sample_string(&mut rng, 27)),
            ),
            ("out_trade_no", out_trade_no),
            ("result_code", "SUCCESS"),
            ("return_code", "SUCCESS"),
            ("time_end", &beijing_now("")),
            ("total_fee", &total_fen.to_string()),
            ("trade_type", "JSAPI"),
            ("transaction_id", transaction_id),
        ])
    }

    /// A signed payment notification body (`result_code=SUCCESS`).
    pub fn payment(
        &self,
        out_trade_no: &str,
        total_fen: i64,
        transaction_id: &str,
        sign_type: SignType,
    ) -> Vec<u8> {
        self.signed(
            self.payment_params(out_trade_no, total_fen, transaction_id),
            sign_type,
        )
    }

    /// Signs `params` and renders the body. As WeChat does, `sign_type` is added (and
    /// signed) only for HMAC-SHA256; its absence means MD5.
    pub fn signed(&self, mut params: Vec<(String, String)>, sign_type: SignType) -> Vec<u8> {
        if sign_type == SignType::HmacSha256 {
            params.push(("sign_type".into(), sign_type.as_str().into()));
        }
        let signature = sign(&params, &self.api_key, sign_type);
        params.push(("sign".into(), signature));
        Self::xml(&params)
    }

    /// A refund notification body: the refund's fields in a `<root>` document,
    /// encrypted into `req_info` with this merchant's key. `refund_status` is
    /// `SUCCESS`, `CHANGE` or `REFUNDCLOSE` (anything else is sent as given).
    pub fn refund(
        &self,
        out_trade_no: &str,
        out_refund_no: &str,
        total_fen: i64,
        refund_fen: i64,
        refund_status: &str,
    ) -> Vec<u8> {
        let refund = V2Refund {
            out_trade_no,
            out_refund_no,
            transaction_id: &format!("4200{}", digits(24)),
            refund_id: &format!("5000{}", digits(25)),
            total_fen,
            refund_fen,
            refund_status,
        };
        Self::xml(&self.refund_params(&refund))
    }

    /// The outer fields of a refund notification for `refund` (ids given by the
    /// caller, so that they agree with the caller's records), `req_info` encrypted.
    pub fn refund_params(&self, refund: &V2Refund<'_>) -> Vec<(String, String)> {
        let mut inner = pairs(&[
            ("out_refund_no", refund.out_refund_no),
            ("out_trade_no", refund.out_trade_no),
            ("refund_account", "REFUND_SOURCE_RECHARGE_FUNDS"),
            ("refund_fee", &refund.refund_fen.to_string()),
            ("refund_id", refund.refund_id),
            ("refund_recv_accout", "支付用户零钱"),
            ("refund_request_source", "API"),
            ("refund_status", refund.refund_status),
            ("settlement_refund_fee", &refund.refund_fen.to_string()),
            ("settlement_total_fee", &refund.total_fen.to_string()),
            ("total_fee", &refund.total_fen.to_string()),
            ("transaction_id", refund.transaction_id),
        ]);
        if refund.refund_status == "SUCCESS" {
            inner.push(("success_time".into(), beijing_now("-")));
        }
        let plaintext = render("root", &inner);
        self.refund_envelope_params(&encrypt_req_info(&plaintext, &self.api_key))
    }

    /// The outer refund notification around an already encrypted (or deliberately
    /// broken) `req_info`.
    pub fn refund_envelope(&self, req_info: &str) -> Vec<u8> {
        Self::xml(&self.refund_envelope_params(req_info))
    }

    /// The fields of [`Self::refund_envelope`].
    pub fn refund_envelope_params(&self, req_info: &str) -> Vec<(String, String)> {
        let nonce = Alphanumeric.sample_string(&mut rand::rng(), 32);
        pairs(&[
            ("return_code", "SUCCESS"),
            ("appid", &self.appid),
            ("mch_id", &self.mch_id),
            ("nonce_str", &nonce),
            ("req_info", req_info),
        ])
    }

    /// Renders `<xml>…</xml>` the way WeChat does: integers as plain text, everything
    /// else in CDATA.
    pub fn xml(params: &[(String, String)]) -> Vec<u8> {
        render("xml", params)
    }
}

/// One refund as a refund notification describes it.
#[derive(Debug, Clone, Copy)]
pub struct V2Refund<'a> {
    pub out_trade_no: &'a str,
    pub out_refund_no: &'a str,
    pub transaction_id: &'a str,
    pub refund_id: &'a str,
    pub total_fen: i64,
    pub refund_fen: i64,
    /// `SUCCESS`, `CHANGE` or `REFUNDCLOSE`.
    pub refund_status: &'a str,
}

/// The APIv2 signature, computed independently of the verifier (see the module doc).
pub fn sign(params: &[(String, String)], api_key: &str, sign_type: SignType) -> String {
    let mut kept: Vec<_> = params
        .iter()
        .filter(|(k, v)| k != "sign" && !v.is_empty())
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    let mut content: String = kept.iter().map(|(k, v)| format!("{k}={v}&")).collect();
    content.push_str(&format!("key={api_key}"));
    match sign_type {
        SignType::Md5 => hex::encode_upper(Md5::digest(content.as_bytes())),
        SignType::HmacSha256 => {
            let mut mac = <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(api_key.as_bytes())
                .expect("HMAC takes keys of any length");
            mac.update(content.as_bytes());
            hex::encode_upper(mac.finalize().into_bytes())
        }
    }
}

/// `req_info` as WeChat builds it: Base64(AES-256-ECB-PKCS#7(plaintext)) under the
/// 32 ASCII characters of the lower-case hex MD5 of the API key.
pub fn encrypt_req_info(plaintext: &[u8], api_key: &str) -> String {
    let key_hex = hex::encode(Md5::digest(api_key.as_bytes()));
    let key: [u8; 32] = key_hex
        .as_bytes()
        .try_into()
        .expect("hex MD5 is 32 characters");
    STANDARD.encode(aes256_ecb(&key, plaintext))
}

fn aes256_ecb(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    ecb::Encryptor::<Aes256>::new(key.into()).encrypt_padded_vec::<Pkcs7>(plaintext)
}

fn render(root: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("<{root}>");
    for (k, v) in params {
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("<{k}>{v}</{k}>"));
        } else {
            // A `]]>` in the value is split across two sections.
            let v = v.replace("]]>", "]]]]><![CDATA[>");
            out.push_str(&format!("<{k}><![CDATA[{v}]]></{k}>"));
        }
    }
    out.push_str(&format!("</{root}>"));
    out.into_bytes()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn digits(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// Now in Beijing time: `yyyyMMddHHmmss` (payments, `sep = ""`) or
/// `yyyy-MM-dd HH:mm:ss` (refunds, `sep = "-"`).
fn beijing_now(sep: &str) -> String {
    let offset = UtcOffset::from_hms(8, 0, 0).expect("+08:00 is a valid offset");
    let t = OffsetDateTime::now_utc().to_offset(offset);
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s) = (t.hour(), t.minute(), t.second());
    if sep.is_empty() {
        format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}")
    } else {
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use payhook_shared::error::VerifyError;
    use payhook_shared::event::{Kind, Status};
    use payhook_shared::wechat_v2::verify_notification;

    use super::*;

    #[test]
    fn signer_matches_the_official_sign_vector() {
        #[derive(serde::Deserialize)]
        struct Vector {
            source: String,
            params: std::collections::BTreeMap<String, String>,
            key: String,
            md5: String,
            hmac_sha256: String,
        }
        let v: Vector = serde_json::from_str(include_str!(
            "../../../../shared/src/wechat_v2/vectors/wechat_v2_sign.json"
        ))
        .expect("vector parses");
        assert!(!v.source.is_empty());
        let params: Vec<_> = v.params.into_iter().collect();
        assert_eq!(sign(&params, &v.key, SignType::Md5), v.md5);
        assert_eq!(sign(&params, &v.key, SignType::HmacSha256), v.hmac_sha256);
    }

    #[test]
    fn signer_matches_the_aes256_ecb_vector() {
        #[derive(serde::Deserialize)]
        struct Vector {
            source: String,
            key: String,
            plaintext: String,
            ciphertext_b64: String,
        }
        let v: Vector = serde_json::from_str(include_str!(
            "../../../../shared/src/wechat_v2/vectors/wechat_v2_aes256ecb.json"
        ))
        .expect("vector parses");
        assert!(!v.source.is_empty());
        let key: [u8; 32] = v.key.as_bytes().try_into().expect("32-byte key");
        assert_eq!(
            STANDARD.encode(aes256_ecb(&key, v.plaintext.as_bytes())),
            v.ciphertext_b64
        );
    }

    #[test]
    fn md5_payment_from_the_signer_verifies() {
        let signer = V2Signer::new("1900000109");
        let body = signer.payment(
            "order-1",
            8888,
            "4200000001202401010000000001",
            SignType::Md5,
        );
        let n = verify_notification(&signer.merchant(), &body).expect("verifies");
        assert_eq!((n.kind(), n.status()), (Kind::Payment, Status::Paid));
        assert_eq!(n.notification_id(), "4200000001202401010000000001:SUCCESS");
        assert_eq!(n.fields().total_amount, Some(8888));
        assert_eq!(n.fields().out_trade_no.as_deref(), Some("order-1"));
        assert_eq!(n.fields().mch_id.as_deref(), Some("1900000109"));
        assert_eq!(n.fields().app_id.as_deref(), Some(signer.appid.as_str()));
    }

    #[test]
    fn hmac_sha256_payment_from_the_signer_verifies() {
        let signer = V2Signer::new("1900000109");
        let body = signer.payment(
            "order-2",
            1,
            "4200000001202401010000000002",
            SignType::HmacSha256,
        );
        let n = verify_notification(&signer.merchant(), &body).expect("verifies");
        assert_eq!(n.status(), Status::Paid);
    }

    #[test]
    fn refunds_from_the_signer_verify() {
        let signer = V2Signer::new("1900000109");
        for (status, expected) in [
            ("SUCCESS", Status::RefundSucceeded),
            ("REFUNDCLOSE", Status::RefundClosed),
            ("CHANGE", Status::RefundAbnormal),
        ] {
            let body = signer.refund("order-3", "refund-3", 10000, 2500, status);
            let n = verify_notification(&signer.merchant(), &body).expect("verifies");
            assert_eq!((n.kind(), n.status()), (Kind::Refund, expected));
            assert_eq!(n.notification_id(), format!("refund-3:{status}"));
            assert_eq!(n.fields().refund_amount, Some(2500));
            assert_eq!(n.fields().total_amount, Some(10000));
        }
    }

    #[test]
    fn another_merchants_key_does_not_verify() {
        let signer = V2Signer::new("1900000109");
        let other = V2Signer::new("1900000109");
        let payment = signer.payment("o", 1, "4200000001202401010000000003", SignType::Md5);
        assert_eq!(
            verify_notification(&other.merchant(), &payment),
            Err(VerifyError::BadSignature)
        );
        let refund = signer.refund("o", "r", 1, 1, "SUCCESS");
        assert_eq!(
            verify_notification(&other.merchant(), &refund),
            Err(VerifyError::Decrypt)
        );
    }

    #[test]
    fn signer_debug_does_not_show_the_key() {
        let signer = V2Signer::new("1900000109");
        assert!(!format!("{signer:?}").contains(&signer.api_key));
    }
}
