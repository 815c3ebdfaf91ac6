//! Calls to the WeChat Pay APIv3 made by the reconciler (docs/protocols.md §3, "Queries"
//! and "Platform certificates"): the `Authorization` header of a request, and what a
//! verified answer means.
//!
//! Every answer — 200 or 4xx — is signed like a notification (`Wechatpay-*` headers
//! over `timestamp\nnonce\nbody\n`); an answer that does not verify is never trusted,
//! whatever its status: an unsigned 200 is a forgery.
//!
//! A verified transaction or refund answer becomes a [`VerifiedNotification`] with the
//! notification id `reconcile:<status>:<out_trade_no | out_refund_no>`, so it takes the
//! notification's apply path and shares its transition key.

use serde::Deserialize;
use x509_cert::Certificate;

use super::keys::lookup_form;
use super::normalize::normalize;
use super::{PlatformKeys, V3Headers, V3Merchant, certificate_serial, decrypt_resource};
use crate::alipay::gateway::never_opened;
use crate::clock::Clock;
use crate::crypto::{RsaSigningKey, parse_certificates};
use crate::error::{AnswerError, KeyError, VerifyError};
use crate::event::{PaymentAnswer, RawNotification, VerifiedNotification};
use secrecy::ExposeSecret as _;

/// The `Authorization` scheme.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// Path of the transaction query by merchant order number (append `?mchid=…`).
pub fn transaction_path(out_trade_no: &str, mch_id: &str) -> String {
    format!(
        "/v3/pay/transactions/out-trade-no/{}?mchid={}",
        encode_segment(out_trade_no),
        encode_segment(mch_id)
    )
}

/// Path of the refund query by merchant refund number.
pub fn refund_path(out_refund_no: &str) -> String {
    format!(
        "/v3/refund/domestic/refunds/{}",
        encode_segment(out_refund_no)
    )
}

/// Path of the platform certificate download.
pub const CERTIFICATES_PATH: &str = "/v3/certificates";

/// Percent-encodes what is not an RFC 3986 unreserved character (order numbers are
/// `[0-9A-Za-z_-|*]` by WeChat's rules, so this rarely changes anything).
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Authorization` header of a request: `signature` = SHA256withRSA by the
/// merchant private key over `METHOD\nPATH?QUERY\ntimestamp\nnonce\nbody\n`.
#[allow(clippy::too_many_arguments)]
pub fn authorization(
    mch_id: &str,
    merchant_serial: &str,
    key: &RsaSigningKey,
    method: &str,
    path_and_query: &str,
    body: &str,
    timestamp: i64,
    nonce: &str,
) -> Result<String, KeyError> {
    let message = format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body}\n");
    let signature = key.sign_sha256_b64(message.as_bytes())?;
    Ok(format!(
        r#"{AUTH_SCHEME} mchid="{mch_id}",nonce_str="{nonce}",signature="{signature}",timestamp="{timestamp}",serial_no="{merchant_serial}""#
    ))
}

/// What a verified answer says: see [`PaymentAnswer`].
pub type TransactionQuery = PaymentAnswer;

/// What a verified refund answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundQuery {
    /// 404 `RESOURCE_NOT_EXISTS`: no such refund.
    NotFound,
    /// The refund as a notification would have described it.
    Found(Box<VerifiedNotification>),
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: Option<String>,
}

/// Verifies the answer's signature, then splits success from a (signed) error.
fn verified<'b>(
    keys: &PlatformKeys,
    status: u16,
    headers: &V3Headers<'_>,
    body: &'b [u8],
    clock: &dyn Clock,
) -> Result<Result<&'b [u8], String>, AnswerError> {
    super::verify_signature(keys, headers, body, clock)?;
    if (200..300).contains(&status) {
        return Ok(Ok(body));
    }
    let code = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|e| e.code)
        .unwrap_or_default();
    Ok(Err(code))
}

fn provider_error(status: u16, code: String) -> AnswerError {
    AnswerError::Provider {
        code: status.to_string(),
        sub_code: code,
    }
}

/// Verifies and interprets the answer to [`transaction_path`] for `out_trade_no`.
pub fn interpret_transaction(
    merchant: &V3Merchant,
    out_trade_no: &str,
    status: u16,
    headers: &V3Headers<'_>,
    body: &[u8],
    clock: &dyn Clock,
) -> Result<TransactionQuery, AnswerError> {
    let plaintext = match verified(&merchant.keys, status, headers, body, clock)? {
        Ok(body) => body,
        Err(code) if status == 404 && code == "ORDER_NOT_EXIST" => {
            return Ok(TransactionQuery::NotCreated(Box::new(never_opened(
                crate::event::Provider::WechatV3,
                out_trade_no,
                "ORDER_NOT_EXIST",
                RawNotification::new(body, headers.to_pairs()),
            ))));
        }
        Err(code) => return Err(provider_error(status, code)),
    };
    // The answer is the transaction resource of a notification, unencrypted.
    let n = normalize("TRANSACTION.QUERY", None, plaintext, &merchant.mch_id)?;
    if n.fields.out_trade_no.as_deref() != Some(out_trade_no) {
        return Err(VerifyError::Malformed("answer names another out_trade_no".into()).into());
    }
    Ok(TransactionQuery::Found(reconciled(
        n,
        out_trade_no,
        headers,
        body,
    )))
}

/// A verified answer as the notification it stands for: id
/// `reconcile:<status>:<order or refund number>`, the answer kept as the raw record.
fn reconciled(
    n: super::normalize::Normalization,
    number: &str,
    headers: &V3Headers<'_>,
    body: &[u8],
) -> Box<VerifiedNotification> {
    Box::new(VerifiedNotification::new(
        crate::event::Provider::WechatV3,
        format!("reconcile:{}:{number}", n.status.as_str()),
        n.kind,
        n.status,
        n.fields,
        RawNotification::new(body, headers.to_pairs()),
    ))
}

/// Verifies and interprets the answer to [`refund_path`] for `out_refund_no`.
pub fn interpret_refund(
    merchant: &V3Merchant,
    out_refund_no: &str,
    status: u16,
    headers: &V3Headers<'_>,
    body: &[u8],
    clock: &dyn Clock,
) -> Result<RefundQuery, AnswerError> {
    let plaintext = match verified(&merchant.keys, status, headers, body, clock)? {
        Ok(body) => body,
        Err(code) if status == 404 && code == "RESOURCE_NOT_EXISTS" => {
            return Ok(RefundQuery::NotFound);
        }
        Err(code) => return Err(provider_error(status, code)),
    };
    // The query names the refund state `status`; a notification's resource names it
    // `refund_status`, with the event type as the fallback the normalizer reads.
    #[derive(Deserialize)]
    struct Status {
        status: Option<String>,
    }
    let state = serde_json::from_slice::<Status>(plaintext)
        .map_err(|e| super::normalize::json_error("refund answer", &e))?
        .status
        .unwrap_or_default();
    let n = normalize(
        &format!("REFUND.{state}"),
        None,
        plaintext,
        &merchant.mch_id,
    )?;
    if n.fields.out_refund_no.as_deref() != Some(out_refund_no) {
        return Err(VerifyError::Malformed("answer names another out_refund_no".into()).into());
    }
    Ok(RefundQuery::Found(reconciled(
        n,
        out_refund_no,
        headers,
        body,
    )))
}

#[derive(Debug, Deserialize)]
struct CertificateList {
    data: Vec<SealedCertificate>,
}

/// One entry of a `/v3/certificates` answer as WeChat sends it: the serial and the
/// certificate sealed with the merchant's APIv3 key. The worker hands these on to
/// the receivers unopened (see [`super::relay`]), so the broker never carries the key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct SealedCertificate {
    pub serial_no: String,
    pub encrypt_certificate: Sealed,
}

/// AEAD-sealed certificate text (`AEAD_AES_256_GCM`, like a notification's resource).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Sealed {
    pub algorithm: String,
    pub nonce: String,
    #[serde(default)]
    pub associated_data: String,
    pub ciphertext: String,
}

/// A checked `/v3/certificates` answer: the platform keys it lists, and the entries
/// as received (sealed), for the receivers.
#[derive(Debug, Clone)]
pub struct CertificateDownload {
    pub keys: PlatformKeys,
    pub sealed: Vec<SealedCertificate>,
}

/// Opens sealed certificate entries with the APIv3 key and returns their keys.
///
/// Each certificate is AES-256-GCM-sealed with the APIv3 key, which only WeChat and
/// the merchant hold: a certificate that opens is authentic. A listed serial that does
/// not match its certificate is refused; nothing is returned unless every entry opens.
pub fn open_certificates(
    api_v3_key: &secrecy::SecretString,
    entries: &[SealedCertificate],
) -> Result<PlatformKeys, VerifyError> {
    open_and_describe(api_v3_key, entries).map(|(keys, _)| keys)
}

/// Like [`open_certificates`], with a description of each certificate (serial,
/// validity) for the expiry metrics.
pub fn open_and_describe(
    api_v3_key: &secrecy::SecretString,
    entries: &[SealedCertificate],
) -> Result<(PlatformKeys, Vec<crate::inventory::CertificateInfo>), VerifyError> {
    let mut keys = PlatformKeys::new();
    let mut described = Vec::new();
    for entry in entries {
        let e = &entry.encrypt_certificate;
        if e.algorithm != super::RESOURCE_ALGORITHM {
            return Err(VerifyError::UnsupportedAlgorithm(
                e.algorithm.chars().take(32).collect(),
            ));
        }
        let pem = decrypt_resource(
            api_v3_key.expose_secret().as_bytes(),
            &e.nonce,
            &e.associated_data,
            &e.ciphertext,
        )?;
        let pem = String::from_utf8(pem)
            .map_err(|_| VerifyError::Malformed("certificate is not PEM text".into()))?;
        let certs: Vec<Certificate> =
            parse_certificates(&pem).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        for cert in &certs {
            // Serials compare as numbers (case and leading zeros do not matter).
            if lookup_form(&certificate_serial(cert)) != lookup_form(&entry.serial_no) {
                return Err(VerifyError::Malformed(
                    "serial_no does not match its certificate".into(),
                ));
            }
            keys.add_certificate(cert)
                .map_err(|e| VerifyError::Malformed(e.to_string()))?;
            described.push(crate::inventory::CertificateInfo::of(cert));
        }
    }
    Ok((keys, described))
}

/// `GET /v3/bill/tradebill` for `day` (China Standard Time): every trade and refund
/// (`bill_type=ALL`), gzip'd.
pub fn tradebill_path(day: time::Date) -> String {
    format!("/v3/bill/tradebill?bill_date={day}&bill_type=ALL&tar_type=GZIP")
}

/// What a verified `tradebill` answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradeBill {
    /// The file's (signed-download) URL and its SHA-1, hex.
    Ready { download_url: String, sha1: String },
    /// No bill (yet): `NO_STATEMENT_EXIST` — not generated, or no trades that day.
    NotReady(String),
}

/// Verifies and interprets the answer to [`tradebill_path`].
pub fn interpret_tradebill(
    merchant: &V3Merchant,
    status: u16,
    headers: &V3Headers<'_>,
    body: &[u8],
    clock: &dyn Clock,
) -> Result<TradeBill, AnswerError> {
    #[derive(Deserialize)]
    struct Ready {
        hash_type: String,
        hash_value: String,
        download_url: String,
    }
    match verified(&merchant.keys, status, headers, body, clock)? {
        Ok(body) => {
            let ready: Ready = serde_json::from_slice(body).map_err(|_| {
                VerifyError::Malformed("tradebill answer without its fields".into())
            })?;
            if !ready.hash_type.eq_ignore_ascii_case("SHA1") {
                return Err(
                    VerifyError::Malformed("tradebill hash_type is not SHA1".into()).into(),
                );
            }
            Ok(TradeBill::Ready {
                download_url: ready.download_url,
                sha1: ready.hash_value.to_ascii_lowercase(),
            })
        }
        Err(code) if status == 400 && code == "NO_STATEMENT_EXIST" => Ok(TradeBill::NotReady(code)),
        Err(code) => Err(provider_error(status, code)),
    }
}

/// Decrypts and checks the answer to [`CERTIFICATES_PATH`], returning the platform
/// keys it lists (to be merged with the configured ones) and the sealed entries.
///
/// The certificates must open with the APIv3 key ([`open_certificates`]). The
/// answer's own signature must verify with a key already trusted or with one of the
/// certificates it carries (the first download, or a rotation signed with the new
/// certificate).
pub fn interpret_certificates(
    merchant: &V3Merchant,
    status: u16,
    headers: &V3Headers<'_>,
    body: &[u8],
    clock: &dyn Clock,
) -> Result<CertificateDownload, AnswerError> {
    if !(200..300).contains(&status) {
        return match verified(&merchant.keys, status, headers, body, clock)? {
            Ok(_) => Err(provider_error(status, String::new())),
            Err(code) => Err(provider_error(status, code)),
        };
    }
    let list: CertificateList = serde_json::from_slice(body)
        .map_err(|e| super::normalize::json_error("certificates answer", &e))?;
    let downloaded = open_certificates(&merchant.api_v3_key, &list.data)?;
    let mut acceptable = merchant.keys.clone();
    acceptable.merge(downloaded.clone());
    super::verify_signature(&acceptable, headers, body, clock)?;
    Ok(CertificateDownload {
        keys: downloaded,
        sealed: list.data,
    })
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::clock::FixedClock;
    use crate::event::{Kind, Status};
    use crate::wechat_v3::encrypt_resource;
    use crate::wechat_v3::test_support::{VectorSigner, merchant, vector};

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    /// Runs `check` on `body` answered with `status`, signed by the vector's platform key.
    fn signed<T>(
        status: u16,
        body: &str,
        check: impl FnOnce(u16, &V3Headers<'_>, &[u8], &dyn Clock) -> T,
    ) -> T {
        let signer = VectorSigner::new();
        let headers = signer.headers(signer.ts, body.as_bytes());
        check(
            status,
            &headers.view(),
            body.as_bytes(),
            &FixedClock::at_unix(signer.ts),
        )
    }

    fn transaction(state: &str, out_trade_no: &str) -> String {
        serde_json::json!({
            "appid": "wxd678efh567hg6787", "mchid": "1230000109", "out_trade_no": out_trade_no,
            "transaction_id": "4200000001", "trade_type": "NATIVE", "trade_state": state,
            "success_time": "2024-05-20T13:29:35+08:00", "payer": {"openid": "o1"},
            "amount": {"total": 8888, "payer_total": 8888, "currency": "CNY", "payer_currency": "CNY"}
        })
        .to_string()
    }

    #[test]
    fn authorization_is_verifiable_with_the_merchant_public_key() {
        use rsa::pkcs8::EncodePrivateKey as _;
        let private = rsa::PrivateKey::new(&mut rand::rng(), 2048).expect("key");
        let key = RsaSigningKey::parse(&private.to_pkcs8_pem(Default::default()).expect("pem"))
            .expect("signing key");
        let path = transaction_path("order 1", "1230000109");
        assert_eq!(
            path,
            "/v3/pay/transactions/out-trade-no/order%201?mchid=1230000109"
        );
        let header = authorization(
            "1230000109",
            "5157F09EFDC096DE15EBE81A47057A72",
            &key,
            "GET",
            &path,
            "",
            1_716_182_975,
            "n0nce",
        )
        .expect("signs");
        assert!(header.starts_with(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1230000109\",nonce_str=\"n0nce\",signature=\""
        ));
        assert!(
            header.ends_with(
                ",timestamp=\"1716182975\",serial_no=\"5157F09EFDC096DE15EBE81A47057A72\""
            )
        );
        let signature = header
            .split("signature=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("signature");
        let public = crate::crypto::RsaPublicKey::from(private.to_public_key());
        let message = format!("GET\n{path}\n1716182975\nn0nce\n\n");
        assert_eq!(
            crate::crypto::verify_rsa(
                &public,
                crate::crypto::RsaHash::Sha256,
                message.as_bytes(),
                signature
            ),
            Ok(())
        );
    }

    #[test]
    fn verified_transaction_answers_map_like_notifications() {
        let m = merchant(KEY);
        let found = |state: &str| match signed(200, &transaction(state, "o-1"), |s, h, b, c| {
            interpret_transaction(&m, "o-1", s, h, b, c)
        }) {
            Ok(TransactionQuery::Found(n)) => *n,
            other => panic!("expected a transaction, got {other:?}"),
        };
        let paid = found("SUCCESS");
        assert_eq!((paid.kind(), paid.status()), (Kind::Payment, Status::Paid));
        assert_eq!(paid.notification_id(), "reconcile:PAID:o-1");
        assert_eq!(paid.fields().total_amount, Some(8888));
        assert!(
            !paid.raw().headers.is_empty(),
            "the verified headers are kept"
        );
        assert_eq!(found("REFUND").status(), Status::Paid);
        assert_eq!(found("NOTPAY").status(), Status::Pending);
        assert_eq!(found("CLOSED").status(), Status::Closed);
        assert_eq!(found("CLOSED").notification_id(), "reconcile:CLOSED:o-1");
    }

    #[test]
    fn unknown_order_is_not_created_yet_and_other_errors_are_provider_errors() {
        let m = merchant(KEY);
        let missing = r#"{"code":"ORDER_NOT_EXIST","message":"订单不存在"}"#;
        let answer = signed(404, missing, |s, h, b, c| {
            interpret_transaction(&m, "o-1", s, h, b, c)
        });
        let Ok(TransactionQuery::NotCreated(close)) = answer else {
            panic!("expected not created, got {answer:?}");
        };
        assert_eq!(close.status(), Status::Closed);
        assert_eq!(close.notification_id(), "reconcile:CLOSED:o-1");
        let sign_error = r#"{"code":"SIGN_ERROR","message":"签名错误"}"#;
        assert_eq!(
            signed(401, sign_error, |s, h, b, c| interpret_transaction(
                &m, "o-1", s, h, b, c
            )),
            Err(AnswerError::Provider {
                code: "401".into(),
                sub_code: "SIGN_ERROR".into()
            })
        );
    }

    #[test]
    fn unsigned_tampered_or_foreign_answers_are_never_trusted() {
        let m = merchant(KEY);
        let body = transaction("SUCCESS", "o-1");
        let signer = VectorSigner::new();
        let clock = FixedClock::at_unix(signer.ts);
        let headers = signer.headers(signer.ts, body.as_bytes());
        let tampered = body.replace("8888", "1");
        let err =
            interpret_transaction(&m, "o-1", 200, &headers.view(), tampered.as_bytes(), &clock)
                .expect_err("tampered");
        assert_eq!(err.label(), "bad_signature");
        let none = V3Headers::default();
        assert!(interpret_transaction(&m, "o-1", 200, &none, body.as_bytes(), &clock).is_err());
        // A 404 without a signature is not "not created".
        let missing = r#"{"code":"ORDER_NOT_EXIST","message":"x"}"#;
        assert!(interpret_transaction(&m, "o-1", 404, &none, missing.as_bytes(), &clock).is_err());
        // Correctly signed, but about another order.
        assert!(matches!(
            signed(200, &body, |s, h, b, c| interpret_transaction(
                &m, "o-2", s, h, b, c
            )),
            Err(AnswerError::Unverified(VerifyError::Malformed(_)))
        ));
    }

    #[test]
    fn refund_answers_read_the_status_field() {
        let m = merchant(KEY);
        let refund = |status: &str| {
            serde_json::json!({
                "refund_id": "50000000382019052709732678859", "out_refund_no": "r-1",
                "transaction_id": "4200000001", "out_trade_no": "o-1", "status": status,
                "success_time": "2024-05-20T13:29:35+08:00", "create_time": "2024-05-20T13:29:35+08:00",
                "amount": {"total": 8888, "refund": 1000, "payer_total": 8888, "payer_refund": 1000, "currency": "CNY"}
            })
            .to_string()
        };
        let found = |status: &str| match signed(200, &refund(status), |s, h, b, c| {
            interpret_refund(&m, "r-1", s, h, b, c)
        }) {
            Ok(RefundQuery::Found(n)) => *n,
            other => panic!("expected a refund, got {other:?}"),
        };
        let ok = found("SUCCESS");
        assert_eq!(
            (ok.kind(), ok.status()),
            (Kind::Refund, Status::RefundSucceeded)
        );
        assert_eq!(ok.notification_id(), "reconcile:REFUND_SUCCEEDED:r-1");
        assert_eq!(ok.fields().refund_amount, Some(1000));
        assert!(!ok.fields().refund_amount_cumulative);
        assert_eq!(found("PROCESSING").status(), Status::RefundProcessing);
        assert_eq!(found("CLOSED").status(), Status::RefundClosed);
        let missing = r#"{"code":"RESOURCE_NOT_EXISTS","message":"退款单不存在"}"#;
        assert_eq!(
            signed(404, missing, |s, h, b, c| interpret_refund(
                &m, "r-1", s, h, b, c
            )),
            Ok(RefundQuery::NotFound)
        );
    }

    fn certificates_body(serial: &str, api_v3_key: &str) -> String {
        let v = vector();
        let nonce = "0123456789ab";
        serde_json::json!({"data": [{
            "serial_no": serial,
            "effective_time": "2024-01-01T00:00:00+08:00",
            "expire_time": "2029-01-01T00:00:00+08:00",
            "encrypt_certificate": {
                "algorithm": "AEAD_AES_256_GCM", "nonce": nonce, "associated_data": "certificate",
                "ciphertext": encrypt_resource(api_v3_key.as_bytes(), nonce, "certificate", v.certificate_pem.as_bytes()),
            }
        }]})
        .to_string()
    }

    #[test]
    fn certificates_open_with_the_api_v3_key_and_bootstrap_an_empty_trust_store() {
        let v = vector();
        let empty = V3Merchant {
            mch_id: "1230000109".into(),
            api_v3_key: SecretString::from(KEY),
            keys: PlatformKeys::new(),
        };
        let body = certificates_body(&v.serial, KEY);
        let download = signed(200, &body, |s, h, b, c| {
            interpret_certificates(&empty, s, h, b, c)
        })
        .expect("certificates are accepted");
        assert_eq!(download.keys.len(), 1);
        assert!(download.keys.get(&v.serial).is_some());
        // The sealed entries, handed on as received, open again with the same key
        // (a receiver) and with no other.
        assert_eq!(download.sealed.len(), 1);
        let reopened = open_certificates(&SecretString::from(KEY), &download.sealed)
            .expect("the sealed entries reopen");
        assert_eq!(reopened.serials(), download.keys.serials());
        assert!(
            open_certificates(
                &SecretString::from("ffffffffffffffffffffffffffffffff"),
                &download.sealed
            )
            .is_err()
        );

        // Sealed with another APIv3 key: not authentic.
        let foreign = certificates_body(&v.serial, "ffffffffffffffffffffffffffffffff");
        assert!(
            signed(200, &foreign, |s, h, b, c| interpret_certificates(
                &empty, s, h, b, c
            ))
            .is_err()
        );
        // The same serial zero-padded and in lower case is the same certificate.
        let padded = certificates_body(&format!("00{}", v.serial.to_lowercase()), KEY);
        assert_eq!(
            signed(200, &padded, |s, h, b, c| interpret_certificates(
                &empty, s, h, b, c
            ))
            .expect("padded serial")
            .keys
            .len(),
            1
        );
        // A serial that is not the certificate's.
        let mislabelled = certificates_body("0123ABCD", KEY);
        assert!(
            signed(200, &mislabelled, |s, h, b, c| interpret_certificates(
                &empty, s, h, b, c
            ))
            .is_err()
        );
        // Unsigned.
        let clock = FixedClock::at_unix(VectorSigner::new().ts);
        assert!(
            interpret_certificates(&empty, 200, &V3Headers::default(), body.as_bytes(), &clock)
                .is_err()
        );
    }
}
