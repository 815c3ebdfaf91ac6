//! The payhook side of a query — request signing exactly as the contract in
//! docs/protocols.md §1 and §3 says — so tests can call the simulator directly, and the
//! credentials a worker needs to call it ([`register_query_credentials`]).

use payhook_shared::alipay::gateway;
use payhook_shared::config::{Secret, Settings};
use payhook_shared::crypto::RsaSigningKey;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use rsa::PrivateKey;
use rsa::pkcs8::EncodePrivateKey as _;
use spki::der::pem::LineEnding;

use super::{Simulator, TEST_MERCHANT_SERIAL};
use crate::Providers;
use crate::keys;
use crate::signer::wechat_v2::{V2Signer, sign};
use crate::signer::wechat_v3::random_ascii;

/// The signed gateway parameters of one Alipay call, signed by payhook's own request
/// signer ([`payhook_shared::alipay::gateway::signed_request`]) with `app_key`.
pub fn alipay_request(
    app_id: &str,
    app_key: &PrivateKey,
    method: &str,
    biz_content: &str,
    timestamp: &str,
    cert_sns: Option<&AlipayCertSns>,
) -> Vec<(String, String)> {
    gateway::signed_request(
        app_id,
        method,
        biz_content,
        timestamp,
        cert_sns,
        &signing_key(app_key),
    )
    .expect("request signs")
}

/// The certificate SNs an app sends in certificate mode.
pub use payhook_shared::alipay::gateway::CertSns as AlipayCertSns;

/// payhook's request signing key for a test key.
fn signing_key(key: &PrivateKey) -> RsaSigningKey {
    let der = key.to_pkcs8_der().expect("PKCS#8 encoding");
    RsaSigningKey::from_pkcs8_der(der.as_bytes()).expect("ring accepts the test key")
}

/// `k=v&…`, UTF-8 percent-encoded.
pub fn form_encode(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The V3 `Authorization` header value for one request, built by payhook's own
/// ([`payhook_shared::wechat_v3::api::authorization`]) with `key`.
#[expect(clippy::too_many_arguments, reason = "the fields of the header")]
pub fn wechat_v3_authorization(
    mchid: &str,
    serial: &str,
    key: &PrivateKey,
    method: &str,
    path_and_query: &str,
    body: &str,
    timestamp: i64,
    nonce: &str,
) -> String {
    payhook_shared::wechat_v3::api::authorization(
        mchid,
        serial,
        &signing_key(key),
        method,
        path_and_query,
        body,
        timestamp,
        nonce,
    )
    .expect("request signs")
}

/// A V2 `orderquery` body, MD5-signed with the merchant's API key.
pub fn wechat_v2_orderquery(merchant: &V2Signer, out_trade_no: &str) -> Vec<u8> {
    let mut params: Vec<(String, String)> = vec![
        ("appid".into(), merchant.appid.clone()),
        ("mch_id".into(), merchant.mch_id.clone()),
        ("out_trade_no".into(), out_trade_no.to_owned()),
        ("nonce_str".into(), random_ascii(32)),
    ];
    let signature = sign(
        &params,
        &merchant.api_key,
        payhook_shared::wechat_v2::SignType::Md5,
    );
    params.push(("sign".into(), signature));
    V2Signer::xml(&params)
}

/// A V2 `downloadbill` body (`bill_type=ALL`), MD5-signed with the merchant's API key.
pub fn wechat_v2_downloadbill(
    merchant: &V2Signer,
    bill_date: &str,
    tar_type: Option<&str>,
) -> Vec<u8> {
    let mut params: Vec<(String, String)> = vec![
        ("appid".into(), merchant.appid.clone()),
        ("mch_id".into(), merchant.mch_id.clone()),
        ("bill_date".into(), bill_date.to_owned()),
        ("bill_type".into(), "ALL".into()),
        ("nonce_str".into(), random_ascii(32)),
    ];
    if let Some(tar_type) = tar_type {
        params.push(("tar_type".into(), tar_type.to_owned()));
    }
    let signature = sign(
        &params,
        &merchant.api_key,
        payhook_shared::wechat_v2::SignType::Md5,
    );
    params.push(("sign".into(), signature));
    V2Signer::xml(&params)
}

/// Adds the query credentials of the test keys to the merchants of
/// [`Providers::register`]: the Alipay app private key
/// ([`keys::ALIPAY_APP_SLOT`]) and the WeChat merchant private key
/// ([`keys::WECHAT_MERCHANT_SLOT`], serial [`TEST_MERCHANT_SERIAL`]).
pub fn register_query_credentials(settings: &mut Settings) {
    let pem = |slot: usize| {
        keys::rsa_key(slot)
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 encoding")
            .to_string()
    };
    if let Some(app) = settings.alipay.get_mut(Providers::MERCHANT) {
        app.app_private_key = Some(Secret::inline(pem(keys::ALIPAY_APP_SLOT)));
    }
    if let Some(merchant) = settings.wechat_v3.get_mut(Providers::MERCHANT) {
        merchant.merchant_private_key = Some(Secret::inline(pem(keys::WECHAT_MERCHANT_SLOT)));
        merchant.merchant_serial = Some(TEST_MERCHANT_SERIAL.to_owned());
    }
}

/// An HTTP answer, as received.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Calls a simulator's query APIs as payhook would, with the test keys.
#[derive(Debug, Clone)]
pub struct QueryClient {
    http: reqwest::Client,
    base_url: String,
    alipay_app_id: String,
    wechat_mchid: String,
    wechat_v2: V2Signer,
    /// The Alipay app key requests are signed with (tests swap it to forge).
    pub alipay_app_key: &'static PrivateKey,
    /// The WeChat merchant key requests are signed with.
    pub wechat_key: &'static PrivateKey,
    pub wechat_serial: String,
    /// Certificate mode: the SNs sent with every Alipay call.
    pub alipay_cert_sns: Option<AlipayCertSns>,
}

impl QueryClient {
    pub fn new(sim: &Simulator) -> Self {
        let p = sim.providers();
        Self {
            http: reqwest::Client::new(),
            base_url: sim.base_url(),
            alipay_app_id: p.alipay.app_id.clone(),
            wechat_mchid: p.wechat_v3.mch_id.clone(),
            wechat_v2: p.wechat_v2.clone(),
            alipay_app_key: keys::rsa_key(keys::ALIPAY_APP_SLOT),
            wechat_key: keys::rsa_key(keys::WECHAT_MERCHANT_SLOT),
            wechat_serial: TEST_MERCHANT_SERIAL.to_owned(),
            alipay_cert_sns: None,
        }
    }

    /// `POST /gateway.do` for `method` with `biz_content` (JSON text).
    pub async fn alipay(&self, method: &str, biz_content: &str) -> RawAnswer {
        let timestamp = crate::signer::alipay::beijing_now();
        let params = alipay_request(
            &self.alipay_app_id,
            self.alipay_app_key,
            method,
            biz_content,
            &timestamp,
            self.alipay_cert_sns.as_ref(),
        );
        let request = self
            .http
            .post(format!("{}/gateway.do", self.base_url))
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(form_encode(&params));
        answer(request).await
    }

    /// A signed V3 `GET` of `path_and_query` (e.g. `/v3/certificates`) at `timestamp`.
    pub async fn wechat_v3_get_at(&self, path_and_query: &str, timestamp: i64) -> RawAnswer {
        let authorization = wechat_v3_authorization(
            &self.wechat_mchid,
            &self.wechat_serial,
            self.wechat_key,
            "GET",
            path_and_query,
            "",
            timestamp,
            &random_ascii(32),
        );
        let request = self
            .http
            .get(format!("{}{path_and_query}", self.base_url))
            .header("Authorization", authorization)
            .header("Accept", "application/json");
        answer(request).await
    }

    /// A signed V3 `GET` now.
    pub async fn wechat_v3_get(&self, path_and_query: &str) -> RawAnswer {
        self.wechat_v3_get_at(
            path_and_query,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
        .await
    }

    /// `POST /pay/orderquery`.
    pub async fn wechat_v2_orderquery(&self, out_trade_no: &str) -> RawAnswer {
        let request = self
            .http
            .post(format!("{}/pay/orderquery", self.base_url))
            .header("Content-Type", "text/xml")
            .body(wechat_v2_orderquery(&self.wechat_v2, out_trade_no));
        answer(request).await
    }
}

impl QueryClient {
    /// A signed V3 `GET` of a full URL the API handed out (a bill's `download_url`);
    /// the status and the body's bytes.
    pub async fn wechat_v3_download(&self, url: &str) -> (u16, Vec<u8>) {
        let path_and_query = url.strip_prefix(&self.base_url).unwrap_or(url);
        let authorization = wechat_v3_authorization(
            &self.wechat_mchid,
            &self.wechat_serial,
            self.wechat_key,
            "GET",
            path_and_query,
            "",
            time::OffsetDateTime::now_utc().unix_timestamp(),
            &random_ascii(32),
        );
        bytes(self.http.get(url).header("Authorization", authorization)).await
    }

    /// `POST /pay/downloadbill` for `bill_date` (`YYYYMMDD`); the status and the
    /// body's bytes (the bill, gzip'd with `tar_type` `GZIP`, or an XML error).
    pub async fn wechat_v2_downloadbill(
        &self,
        bill_date: &str,
        tar_type: Option<&str>,
    ) -> (u16, Vec<u8>) {
        let request = self
            .http
            .post(format!("{}/pay/downloadbill", self.base_url))
            .header("Content-Type", "text/xml")
            .body(wechat_v2_downloadbill(&self.wechat_v2, bill_date, tar_type));
        bytes(request).await
    }

    /// A plain `GET` (Alipay's `bill_download_url`); the status and the body's bytes.
    pub async fn fetch(&self, url: &str) -> (u16, Vec<u8>) {
        bytes(self.http.get(url)).await
    }
}

async fn bytes(request: reqwest::RequestBuilder) -> (u16, Vec<u8>) {
    let response = request.send().await.expect("simulator answers");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("answer body");
    (status, body.to_vec())
}

async fn answer(request: reqwest::RequestBuilder) -> RawAnswer {
    let response = request.send().await.expect("simulator answers");
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    RawAnswer {
        status,
        headers,
        body: response.text().await.expect("answer body"),
    }
}
