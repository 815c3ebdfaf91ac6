//! The Alipay provider side: asynchronous notifications signed with the "V1" rule and
//! form-encoded exactly as Alipay sends them (docs/protocols.md §1) — including GBK
//! notifications, the legacy `RSA` sign type, certificate mode, and the knobs to
//! break them (another key, a tampered field).
//!
//! Keys come from [`crate::keys`] (generated per process, never printed). The sign
//! content rule and the charsets are payhook's own ([`sign_content_v1`],
//! [`Charset`]): a simulator with a second implementation could only drift.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use payhook_shared::alipay::form::Charset;
use payhook_shared::alipay::{AlipayApp, AlipayKeys, SignType, cert_sn, sign_content_v1};
use payhook_shared::crypto::{md5_hex, parse_certificates};
use payhook_shared::money::format_yuan;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
use rsa::{PrivateKey, PublicKey};
use spki::EncodePublicKey as _;
use time::OffsetDateTime;
use time::macros::{format_description, offset};

use crate::keys;
use crate::signer::wechat_v3::self_signed_certificate_pem;

/// The Alipay side of one app: signs notifications for `app_id` / `seller_id`.
#[derive(Clone)]
pub struct AlipaySigner {
    key: &'static PrivateKey,
    /// The app the notifications are for.
    pub app_id: String,
    /// The merchant's Alipay account (`seller_id`, `2088…`).
    pub seller_id: String,
    /// The charset notifications declare and are encoded in (`utf-8` by default).
    pub charset: Charset,
    /// The sign type notifications declare (`RSA2` by default).
    pub sign_type: SignType,
    /// Certificate mode: the `alipay_cert_sn` added to every notification.
    pub alipay_cert_sn: Option<String>,
}

impl fmt::Debug for AlipaySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlipaySigner")
            .field("app_id", &self.app_id)
            .field("seller_id", &self.seller_id)
            .field("charset", &self.charset)
            .field("sign_type", &self.sign_type)
            .field("alipay_cert_sn", &self.alipay_cert_sn)
            .finish_non_exhaustive()
    }
}

impl AlipaySigner {
    /// A UTF-8, `RSA2`, public-key-mode signer with the key [`keys::rsa_key`]`(0)`.
    pub fn new(app_id: &str, seller_id: &str) -> Self {
        Self::with_key(keys::rsa_key(0), app_id, seller_id)
    }

    /// A UTF-8, `RSA2`, public-key-mode signer with `key` (e.g. loaded from a keys
    /// directory by the simulator).
    pub fn with_key(key: &'static PrivateKey, app_id: &str, seller_id: &str) -> Self {
        Self {
            key,
            app_id: app_id.to_owned(),
            seller_id: seller_id.to_owned(),
            charset: Charset::Utf8,
            sign_type: SignType::Rsa2,
            alipay_cert_sn: None,
        }
    }

    /// The same signer with the key of another slot: what a forger (or a
    /// misconfigured key) produces.
    pub fn with_key_slot(self, slot: usize) -> Self {
        Self {
            key: keys::rsa_key(slot),
            ..self
        }
    }

    /// The same signer declaring and encoding `GBK`.
    pub fn gbk(self) -> Self {
        Self {
            charset: Charset::Gbk,
            ..self
        }
    }

    /// The same signer with another sign type (`RSA` is SHA1withRSA).
    pub fn with_sign_type(self, sign_type: SignType) -> Self {
        Self { sign_type, ..self }
    }

    /// The same signer in certificate mode: every notification names the SN of
    /// [`Self::certificate_pem`].
    pub fn in_cert_mode(self) -> Self {
        let sn = self.cert_sn();
        Self {
            alipay_cert_sn: Some(sn),
            ..self
        }
    }

    /// The public key as Alipay hands it out: bare Base64 SubjectPublicKeyInfo.
    pub fn public_key_b64(&self) -> String {
        let der = PublicKey::from(self.key)
            .to_public_key_der()
            .expect("SPKI encoding");
        STANDARD.encode(der.as_bytes())
    }

    /// A self-signed certificate for the key (the stand-in for
    /// `alipayCertPublicKey_RSA2.crt`; payhook pins the key by SN, not by chain).
    pub fn certificate_pem(&self) -> String {
        // A serial derived from the key, so the same signer always has the same SN.
        let serial = &md5_hex(self.public_key_b64().as_bytes())[..16];
        self_signed_certificate_pem(self.key, &format!("1{}", &serial[1..]))
    }

    /// The Alipay SN of [`Self::certificate_pem`].
    pub fn cert_sn(&self) -> String {
        let certs = parse_certificates(&self.certificate_pem()).expect("own certificate parses");
        cert_sn(&certs[0])
    }

    /// The app configuration that trusts this signer, in its mode.
    pub fn app(&self) -> AlipayApp {
        let keys = if self.alipay_cert_sn.is_some() {
            AlipayKeys::from_certificates(&self.certificate_pem())
        } else {
            AlipayKeys::from_public_key(&self.public_key_b64())
        };
        AlipayApp {
            app_id: self.app_id.clone(),
            keys: keys.expect("own key parses"),
        }
    }

    /// `params` completed and signed as Alipay does: `charset` and `sign_type` added
    /// if absent (from the signer's settings), `alipay_cert_sn` in certificate mode,
    /// and `sign` computed with the V1 rule over the bytes in the declared charset.
    pub fn notification(&self, params: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| *k != "sign")
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let charset_label = match self.charset {
            Charset::Utf8 => "utf-8",
            Charset::Gbk => "GBK",
            Charset::Gb18030 => "gb18030",
        };
        let mut add = |key: &str, value: &str| {
            if !out.iter().any(|(k, _)| k == key) {
                out.push((key.to_owned(), value.to_owned()));
            }
        };
        add("charset", charset_label);
        add("sign_type", self.sign_type.as_str());
        if let Some(sn) = &self.alipay_cert_sn {
            add("alipay_cert_sn", sn);
        }
        let sign = self.sign(&out);
        out.push(("sign".to_owned(), sign));
        out
    }

    /// The `sign` of `params` (V1 content; charset and sign type as declared in them).
    pub fn sign(&self, params: &[(String, String)]) -> String {
        let sign_type = declared(params, "sign_type")
            .map_or(Ok(self.sign_type), SignType::from_param)
            .expect("a sign type payhook supports");
        let content = charset_of(params)
            .encode(&sign_content_v1(params))
            .expect("content encodable in the declared charset");
        self.signature(sign_type, &content)
    }

    /// A Base64 PKCS#1 v1.5 signature over raw bytes (RSA blinding on). `RSA2` is
    /// signed on `ring` ([`keys::ring_key`]); `ring` does not sign with SHA1, so `RSA`
    /// stays on the `rsa` crate.
    pub fn signature(&self, sign_type: SignType, message: &[u8]) -> String {
        match sign_type {
            SignType::Rsa2 => keys::ring_key(self.key)
                .sign_sha256_b64(message)
                .expect("ring signs"),
            SignType::Rsa => STANDARD.encode(
                SigningKey::<sha1::Sha1>::new(self.key.clone())
                    .sign_with_rng(&mut rand::rng(), message)
                    .to_vec(),
            ),
        }
    }

    /// The form body of `params` as Alipay (Java's `URLEncoder`) writes it, in the
    /// charset the params declare: letters, digits and `.-*_` as is, space as `+`,
    /// every other byte `%XX`.
    pub fn form_body(params: &[(String, String)]) -> Vec<u8> {
        let charset = charset_of(params);
        let encode = |text: &str| -> String {
            let bytes = charset
                .encode(text)
                .expect("text encodable in the declared charset");
            let mut out = String::with_capacity(bytes.len() * 3);
            for b in bytes {
                match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                        out.push(char::from(b));
                    }
                    b' ' => out.push('+'),
                    _ => out.push_str(&format!("%{b:02X}")),
                }
            }
            out
        };
        let pairs: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        pairs.join("&").into_bytes()
    }

    /// The signed params of a `TRADE_SUCCESS` payment notification.
    pub fn payment_params(
        &self,
        out_trade_no: &str,
        total_fen: i64,
        notify_id: &str,
    ) -> Vec<(String, String)> {
        let now = beijing_now();
        let total = format_yuan(total_fen);
        let mut params = self.trade_params(out_trade_no, &total, notify_id, &now);
        params.extend(paid_params(&total, &now));
        params.push(("trade_status", "TRADE_SUCCESS".into()));
        self.signed(params)
    }

    /// A signed `TRADE_SUCCESS` payment notification body.
    pub fn payment(&self, out_trade_no: &str, total_fen: i64, notify_id: &str) -> Vec<u8> {
        Self::form_body(&self.payment_params(out_trade_no, total_fen, notify_id))
    }

    /// The signed params of a refund notification: a partial refund re-sends
    /// `TRADE_SUCCESS`, a full one `TRADE_CLOSED`; both carry the cumulative
    /// `refund_fee`, `gmt_refund` and the refund request number `out_biz_no`.
    pub fn refund_params(
        &self,
        out_trade_no: &str,
        total_fen: i64,
        refund_fee_cumulative_fen: i64,
        out_biz_no: &str,
        notify_id: &str,
        full: bool,
    ) -> Vec<(String, String)> {
        let now = beijing_now();
        let total = format_yuan(total_fen);
        let mut params = self.trade_params(out_trade_no, &total, notify_id, &now);
        params.extend(paid_params(&total, &now));
        params.extend([
            (
                "trade_status",
                if full {
                    "TRADE_CLOSED"
                } else {
                    "TRADE_SUCCESS"
                }
                .to_owned(),
            ),
            ("refund_fee", format_yuan(refund_fee_cumulative_fen)),
            ("out_biz_no", out_biz_no.to_owned()),
            // gmt_refund carries milliseconds.
            ("gmt_refund", format!("{now}.123")),
        ]);
        if full {
            params.push(("gmt_close", now.clone()));
        }
        self.signed(params)
    }

    /// A signed refund notification body (see [`Self::refund_params`]).
    pub fn refund(
        &self,
        out_trade_no: &str,
        total_fen: i64,
        refund_fee_cumulative_fen: i64,
        out_biz_no: &str,
        notify_id: &str,
        full: bool,
    ) -> Vec<u8> {
        Self::form_body(&self.refund_params(
            out_trade_no,
            total_fen,
            refund_fee_cumulative_fen,
            out_biz_no,
            notify_id,
            full,
        ))
    }

    /// The signed params of a `TRADE_FINISHED` notification (the trade can no longer
    /// be refunded); after refunds it still carries the cumulative `refund_fee`.
    pub fn finished_params(
        &self,
        out_trade_no: &str,
        total_fen: i64,
        refund_fee_cumulative_fen: i64,
        notify_id: &str,
    ) -> Vec<(String, String)> {
        let now = beijing_now();
        let total = format_yuan(total_fen);
        let mut params = self.trade_params(out_trade_no, &total, notify_id, &now);
        params.extend(paid_params(&total, &now));
        params.push(("trade_status", "TRADE_FINISHED".into()));
        params.push(("gmt_close", now.clone()));
        if refund_fee_cumulative_fen > 0 {
            params.push(("refund_fee", format_yuan(refund_fee_cumulative_fen)));
        }
        self.signed(params)
    }

    /// The signed params of a `TRADE_CLOSED` notification for an order never paid.
    pub fn close_params(
        &self,
        out_trade_no: &str,
        total_fen: i64,
        notify_id: &str,
    ) -> Vec<(String, String)> {
        let now = beijing_now();
        let mut params = self.trade_params(out_trade_no, &format_yuan(total_fen), notify_id, &now);
        params.extend([
            ("trade_status", "TRADE_CLOSED".to_owned()),
            ("gmt_close", now),
        ]);
        self.signed(params)
    }

    /// A signed `TRADE_CLOSED` (unpaid) notification body.
    pub fn close(&self, out_trade_no: &str, total_fen: i64, notify_id: &str) -> Vec<u8> {
        Self::form_body(&self.close_params(out_trade_no, total_fen, notify_id))
    }

    /// The fields every trade notification carries.
    fn trade_params(
        &self,
        out_trade_no: &str,
        total: &str,
        notify_id: &str,
        now: &str,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("notify_time", now.to_owned()),
            ("notify_type", "trade_status_sync".to_owned()),
            ("notify_id", notify_id.to_owned()),
            ("app_id", self.app_id.clone()),
            ("auth_app_id", self.app_id.clone()),
            ("version", "1.0".to_owned()),
            ("trade_no", trade_no(out_trade_no)),
            ("out_trade_no", out_trade_no.to_owned()),
            ("buyer_id", "2088102177846880".to_owned()),
            ("buyer_logon_id", "abc***@example.com".to_owned()),
            ("seller_id", self.seller_id.clone()),
            ("seller_email", "shop@example.com".to_owned()),
            ("total_amount", total.to_owned()),
            ("subject", "测试商品 payhook".to_owned()),
            ("body", "A & B = 100% 真".to_owned()),
            ("gmt_create", now.to_owned()),
            // Signed in its URL-encoded form: decoding it twice would break the signature.
            (
                "passback_params",
                "merchant%3Dshop%26from%3Dtest".to_owned(),
            ),
        ]
    }

    fn signed(&self, params: Vec<(&'static str, String)>) -> Vec<(String, String)> {
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.notification(&pairs)
    }
}

/// The fields of a trade that has been paid.
fn paid_params(total: &str, now: &str) -> [(&'static str, String); 6] {
    [
        ("gmt_payment", now.to_owned()),
        ("receipt_amount", total.to_owned()),
        ("invoice_amount", total.to_owned()),
        ("buyer_pay_amount", total.to_owned()),
        ("point_amount", "0.00".to_owned()),
        (
            "fund_bill_list",
            format!(r#"[{{"amount":"{total}","fundChannel":"ALIPAYACCOUNT"}}]"#),
        ),
    ]
}

/// A 28-digit Alipay trade number, stable per `out_trade_no` so that the payment and
/// refund notifications of one order (and the simulator's query answers) agree.
pub fn trade_no(out_trade_no: &str) -> String {
    let digest = md5_hex(out_trade_no.as_bytes());
    let n = u64::from_str_radix(&digest[..15], 16).expect("hex digits") % 1_000_000_000_000_000;
    format!("2024052022001{n:015}")
}

fn declared<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn charset_of(params: &[(String, String)]) -> Charset {
    declared(params, "charset")
        .map_or(Ok(Charset::Utf8), Charset::from_label)
        .expect("a charset payhook supports")
}

/// Now in Alipay's format (`yyyy-MM-dd HH:mm:ss`, Beijing time).
pub fn beijing_now() -> String {
    OffsetDateTime::now_utc()
        .to_offset(offset!(+8))
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .expect("formatting a date")
}

#[cfg(test)]
mod tests {
    use payhook_shared::alipay::{form, verify_notification};
    use payhook_shared::error::VerifyError;
    use payhook_shared::event::{Kind, Status, VerifiedNotification};

    use super::*;

    fn signer() -> AlipaySigner {
        AlipaySigner::new("2021000000000001", "2088721000000001")
    }

    fn verify(signer: &AlipaySigner, body: &[u8]) -> Result<VerifiedNotification, VerifyError> {
        verify_notification(&signer.app(), body)
    }

    #[test]
    fn payment_verifies_as_paid() {
        let s = signer();
        let n = verify(&s, &s.payment("order-1", 8888, "n-pay")).expect("verifies");
        assert_eq!((n.kind(), n.status()), (Kind::Payment, Status::Paid));
        assert_eq!(n.notification_id(), "n-pay");
        let f = n.fields();
        assert_eq!(f.out_trade_no.as_deref(), Some("order-1"));
        assert_eq!((f.total_amount, f.paid_amount), (Some(8888), Some(8888)));
        assert_eq!(f.app_id.as_deref(), Some("2021000000000001"));
        assert_eq!(f.payee.as_deref(), Some("2088721000000001"));
    }

    #[test]
    fn partial_and_full_refunds_verify_as_cumulative_refunds() {
        let s = signer();
        let partial = s.refund("order-1", 8888, 1000, "refund-1", "n-r1", false);
        let n = verify(&s, &partial).expect("verifies");
        assert_eq!(
            (n.kind(), n.status()),
            (Kind::Refund, Status::RefundSucceeded)
        );
        assert_eq!(n.fields().refund_amount, Some(1000));
        assert_eq!(n.fields().out_refund_no.as_deref(), Some("refund-1"));
        assert_eq!(n.fields().provider_status, "TRADE_SUCCESS");

        let full = verify(
            &s,
            &s.refund("order-1", 8888, 8888, "refund-2", "n-r2", true),
        )
        .expect("verifies");
        assert_eq!(
            (full.kind(), full.fields().provider_status.as_str()),
            (Kind::Refund, "TRADE_CLOSED")
        );
        assert!(full.fields().refund_amount_cumulative);
        // Payment and refunds of one order name the same Alipay trade.
        let paid = verify(&s, &s.payment("order-1", 8888, "n-pay")).expect("verifies");
        assert_eq!(
            paid.fields().provider_trade_no,
            full.fields().provider_trade_no
        );
    }

    #[test]
    fn close_verifies_as_closed() {
        let s = signer();
        let n = verify(&s, &s.close("order-2", 100, "n-close")).expect("verifies");
        assert_eq!((n.kind(), n.status()), (Kind::Close, Status::Closed));
    }

    #[test]
    fn another_key_does_not_verify() {
        let trusted = signer();
        let forger = signer().with_key_slot(1);
        assert_eq!(
            verify(&trusted, &forger.payment("order-1", 1, "n1")).err(),
            Some(VerifyError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_amount_does_not_verify() {
        let s = signer();
        let mut params = s.payment_params("order-1", 100, "n1");
        for (k, v) in &mut params {
            if k == "total_amount" {
                *v = "0.01".into();
            }
        }
        let body = AlipaySigner::form_body(&params);
        assert_eq!(verify(&s, &body).err(), Some(VerifyError::BadSignature));
    }

    #[test]
    fn gbk_notifications_are_gbk_on_the_wire_and_verify() {
        let s = signer().gbk();
        let body = s.payment("order-1", 100, "n1");
        // 测 in GBK is B2 E2.
        assert!(String::from_utf8_lossy(&body).contains("subject=%B2%E2"));
        let decoded = form::decode(&body).expect("decodes");
        assert!(decoded.contains(&("subject".into(), "测试商品 payhook".into())));
        assert!(verify(&s, &body).is_ok());
    }

    #[test]
    fn legacy_rsa_sign_type_verifies() {
        let s = signer().with_sign_type(SignType::Rsa);
        let params = s.payment_params("order-1", 100, "n1");
        assert!(params.contains(&("sign_type".into(), "RSA".into())));
        assert!(verify(&s, &AlipaySigner::form_body(&params)).is_ok());
    }

    #[test]
    fn certificate_mode_names_the_certificate_sn() {
        let s = signer().in_cert_mode();
        let sn = s.cert_sn();
        assert_eq!(sn.len(), 32);
        let params = s.payment_params("order-1", 100, "n1");
        assert!(params.contains(&("alipay_cert_sn".into(), sn)));
        assert!(verify(&s, &AlipaySigner::form_body(&params)).is_ok());
    }

    #[test]
    fn passback_params_stay_url_encoded_after_one_decode() {
        let s = signer();
        let decoded = form::decode(&s.payment("order-1", 100, "n1")).expect("decodes");
        let passback = decoded
            .iter()
            .find(|(k, _)| k == "passback_params")
            .expect("present");
        assert_eq!(passback.1, "merchant%3Dshop%26from%3Dtest");
    }

    #[test]
    fn debug_shows_no_key() {
        let text = format!("{:?}", signer());
        assert!(
            text.starts_with("AlipaySigner { app_id: \"2021000000000001\""),
            "{text}"
        );
        assert!(!text.contains("key:"), "{text}");
    }
}
