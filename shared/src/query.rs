//! The reconciler's HTTP clients for the providers' query APIs: request signing with
//! the merchant's private key, answer verification ([`crate::alipay::gateway`],
//! [`crate::wechat_v3::api`]), timeouts, and retries with backoff for transport
//! failures. Base URLs come from configuration (production, sandbox, the simulator).
//!
//! Only merchants configured with a private key can be queried: an Alipay app with
//! `app_private_key`, a WeChat V3 merchant with `merchant_private_key` and
//! `merchant_serial`; a WeChat V2 merchant with its `appid` (the API key signs). [`Queriers::build`] parses those keys once, at start-up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt as _;
use secrecy::ExposeSecret as _;

use crate::alipay::gateway::{self, CertSns, RefundAnswer, TradeQuery};
use crate::alipay::{AlipayApp, cert_sn, root_cert_sn};
use crate::clock::Clock;
use crate::config::{ConfigError, ReconcileSettings, Settings};
use crate::crypto::{RsaSigningKey, parse_certificates};
use crate::error::AnswerError;
use crate::merchants::Merchants;
use crate::wechat_v2::V2Merchant;
use crate::wechat_v2::orderquery::{self, OrderQuery};
use crate::wechat_v3::api::{self, RefundQuery, TransactionQuery};
use crate::wechat_v3::{PlatformKeys, V3Headers, V3Merchant};

/// What can go wrong with a query.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No usable answer after every attempt (connect, timeout, HTTP 5xx / 429).
    #[error("transport: {0}")]
    Transport(String),
    /// An answer came but cannot be used: unverified (never trusted) or a provider error.
    #[error(transparent)]
    Answer(#[from] AnswerError),
}

impl QueryError {
    /// A short, bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Transport(_) => "transport_error",
            Self::Answer(a) => a.label(),
        }
    }
}

/// An Alipay app that can be queried.
#[derive(Debug, Clone)]
pub struct AlipayQuerier {
    pub app: Arc<AlipayApp>,
    key: Arc<RsaSigningKey>,
    cert_sns: Option<CertSns>,
}

/// A WeChat Pay APIv3 merchant that can be queried.
#[derive(Debug, Clone)]
pub struct V3Querier {
    pub merchant: Arc<V3Merchant>,
    key: Arc<RsaSigningKey>,
    serial: String,
}

impl V3Querier {
    /// The same merchant trusting `keys` for answers (after a certificate refresh).
    pub fn with_keys(&self, keys: PlatformKeys) -> Self {
        let mut merchant = (*self.merchant).clone();
        merchant.keys = keys;
        Self {
            merchant: Arc::new(merchant),
            key: self.key.clone(),
            serial: self.serial.clone(),
        }
    }

    /// The same merchant opening certificates with `api_v3_key` (its previous key,
    /// during a key change); the platform keys are shared.
    pub fn with_api_v3_key(&self, api_v3_key: secrecy::SecretString) -> Self {
        let mut merchant = (*self.merchant).clone();
        merchant.api_v3_key = api_v3_key;
        Self {
            merchant: Arc::new(merchant),
            key: self.key.clone(),
            serial: self.serial.clone(),
        }
    }
}

/// A WeChat Pay APIv2 merchant that can be queried (its `appid` is configured; the API
/// key signs the request).
#[derive(Debug, Clone)]
pub struct V2Querier {
    pub merchant: Arc<V2Merchant>,
    appid: String,
}

/// Every queryable merchant, by configured name.
#[derive(Debug, Clone, Default)]
pub struct Queriers {
    pub alipay: HashMap<String, AlipayQuerier>,
    pub wechat_v2: HashMap<String, V2Querier>,
    pub wechat_v3: HashMap<String, V3Querier>,
}

impl Queriers {
    /// Parses the private keys of the merchants that have one.
    pub fn build(settings: &Settings, merchants: &Merchants) -> Result<Self, ConfigError> {
        let mut out = Self::default();
        for (name, app) in &settings.alipay {
            let Some(secret) = &app.app_private_key else {
                continue;
            };
            let field = |f: &str| format!("alipay.{name}.{f}");
            let text = secret
                .load()
                .map_err(|e| ConfigError::new(field("app_private_key"), e))?;
            let key = RsaSigningKey::parse(text.expose_secret())
                .map_err(|e| ConfigError::new(field("app_private_key"), e.to_string()))?;
            let cert_sns = match (&app.app_cert, &app.alipay_root_cert) {
                (Some(app_cert), Some(root)) => {
                    let app_pem = app_cert
                        .load()
                        .map_err(|e| ConfigError::new(field("app_cert"), e))?;
                    let first = parse_certificates(&app_pem)
                        .map_err(|e| ConfigError::new(field("app_cert"), e.to_string()))?;
                    let root_pem = root
                        .load()
                        .map_err(|e| ConfigError::new(field("alipay_root_cert"), e))?;
                    Some(CertSns {
                        app_cert_sn: cert_sn(&first[0]),
                        alipay_root_cert_sn: root_cert_sn(&root_pem).map_err(|e| {
                            ConfigError::new(field("alipay_root_cert"), e.to_string())
                        })?,
                    })
                }
                (None, None) => None,
                _ => {
                    return Err(ConfigError::new(
                        field("app_cert"),
                        "certificate mode queries need both app_cert and alipay_root_cert",
                    ));
                }
            };
            let Some(parsed) = merchants.alipay.get(name) else {
                continue;
            };
            out.alipay.insert(
                name.clone(),
                AlipayQuerier {
                    app: parsed.clone(),
                    key: Arc::new(key),
                    cert_sns,
                },
            );
        }
        for (name, m) in &settings.wechat_v2 {
            if let (Some(appid), Some(parsed)) = (&m.appid, merchants.wechat_v2.get(name)) {
                out.wechat_v2.insert(
                    name.clone(),
                    V2Querier {
                        merchant: parsed.clone(),
                        appid: appid.clone(),
                    },
                );
            }
        }
        for (name, m) in &settings.wechat_v3 {
            let field = |f: &str| format!("wechat_v3.{name}.{f}");
            let (secret, serial) = match (&m.merchant_private_key, &m.merchant_serial) {
                (Some(secret), Some(serial)) => (secret, serial),
                (None, None) => continue,
                _ => {
                    return Err(ConfigError::new(
                        field("merchant_serial"),
                        "queries need both merchant_private_key and merchant_serial",
                    ));
                }
            };
            let text = secret
                .load()
                .map_err(|e| ConfigError::new(field("merchant_private_key"), e))?;
            let key = RsaSigningKey::parse(text.expose_secret())
                .map_err(|e| ConfigError::new(field("merchant_private_key"), e.to_string()))?;
            let Some(parsed) = merchants.wechat_v3.get(name) else {
                continue;
            };
            out.wechat_v3.insert(
                name.clone(),
                V3Querier {
                    merchant: parsed.clone(),
                    key: Arc::new(key),
                    serial: serial.clone(),
                },
            );
        }
        Ok(out)
    }
}

/// An HTTP answer, kept whole for verification.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn v3_headers(&self) -> V3Headers<'_> {
        let get = |name: &str| self.headers.get(name).and_then(|v| v.to_str().ok());
        V3Headers {
            timestamp: get(crate::wechat_v3::HEADER_TIMESTAMP),
            nonce: get(crate::wechat_v3::HEADER_NONCE),
            signature: get(crate::wechat_v3::HEADER_SIGNATURE),
            serial: get(crate::wechat_v3::HEADER_SERIAL),
            signature_type: get(crate::wechat_v3::HEADER_SIGNATURE_TYPE),
        }
    }
}

/// The query client: one connection pool, shared by every merchant.
#[derive(Clone)]
pub struct QueryClient {
    http: reqwest::Client,
    alipay_gateway: String,
    wechat_base: String,
    attempts: u32,
    backoff: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for QueryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryClient")
            .field("alipay_gateway", &self.alipay_gateway)
            .field("wechat_base", &self.wechat_base)
            .finish_non_exhaustive()
    }
}

impl QueryClient {
    pub fn new(settings: &ReconcileSettings, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.timeout_ms))
            .user_agent(concat!("payhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::new("reconcile", e.to_string()))?;
        Ok(Self {
            http,
            alipay_gateway: settings.alipay_gateway.clone(),
            wechat_base: settings.wechat_base.trim_end_matches('/').to_owned(),
            attempts: settings.attempts.max(1),
            backoff: Duration::from_millis(settings.backoff_ms),
            clock,
        })
    }

    /// Sends what `build` makes, again after a transport failure, an HTTP 5xx or a 429,
    /// with exponential backoff and jitter; anything else is the answer.
    async fn send(
        &self,
        build: impl Fn() -> Result<reqwest::RequestBuilder, QueryError>,
    ) -> Result<Answer, QueryError> {
        let mut delay = self.backoff;
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            match build()?.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    match response.bytes().await {
                        Ok(body) if status < 500 && status != 429 => {
                            return Ok(Answer {
                                status,
                                headers,
                                body: body.to_vec(),
                            });
                        }
                        Ok(_) => last = format!("HTTP {status}"),
                        Err(e) => last = format!("reading the answer: {}", without_url(&e)),
                    }
                }
                Err(e) => last = without_url(&e),
            }
            if attempt < self.attempts {
                let jitter = rand::rng().random_range(0..=delay.as_millis() as u64 / 2);
                tokio::time::sleep(delay + Duration::from_millis(jitter)).await;
                delay *= 2;
            }
        }
        Err(QueryError::Transport(last))
    }

    /// A signed gateway call of `method`; the raw answer body.
    async fn alipay_call(
        &self,
        q: &AlipayQuerier,
        method: &str,
        biz: &str,
    ) -> Result<String, QueryError> {
        let answer = self
            .send(|| {
                // Signed per attempt: the timestamp is part of the signature.
                let signing =
                    |e: crate::error::KeyError| QueryError::Transport(format!("signing: {e}"));
                let timestamp = gateway::timestamp(self.clock.now()).map_err(signing)?;
                let form = gateway::signed_request(
                    &q.app.app_id,
                    method,
                    biz,
                    &timestamp,
                    q.cert_sns.as_ref(),
                    &q.key,
                )
                .map_err(signing)?;
                Ok(self.http.post(&self.alipay_gateway).form(&form))
            })
            .await?;
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    }

    /// `alipay.trade.query` for one order.
    pub async fn alipay_trade_query(
        &self,
        q: &AlipayQuerier,
        out_trade_no: &str,
    ) -> Result<TradeQuery, QueryError> {
        let biz = gateway::trade_query_biz_content(out_trade_no);
        let body = self.alipay_call(q, gateway::TRADE_QUERY, &biz).await?;
        Ok(gateway::interpret_trade_query(&q.app, out_trade_no, &body)?)
    }

    /// `alipay.trade.fastpay.refund.query` for one refund request; see
    /// [`gateway::interpret_refund_query`] for `refunded_before_fen`.
    pub async fn alipay_refund_query(
        &self,
        q: &AlipayQuerier,
        out_trade_no: &str,
        out_request_no: &str,
        refunded_before_fen: i64,
    ) -> Result<RefundAnswer, QueryError> {
        let biz = gateway::refund_query_biz_content(out_trade_no, out_request_no);
        let body = self.alipay_call(q, gateway::REFUND_QUERY, &biz).await?;
        Ok(gateway::interpret_refund_query(
            &q.app,
            out_trade_no,
            out_request_no,
            refunded_before_fen,
            &body,
        )?)
    }

    /// WeChat Pay APIv2 `POST /pay/orderquery` for one order.
    pub async fn wechat_v2_orderquery(
        &self,
        q: &V2Querier,
        out_trade_no: &str,
    ) -> Result<OrderQuery, QueryError> {
        let url = format!("{}{}", self.wechat_base, orderquery::ORDERQUERY_PATH);
        let answer = self
            .send(|| {
                let nonce = uuid::Uuid::new_v4().simple().to_string();
                let body =
                    orderquery::orderquery_request(&q.appid, &q.merchant, out_trade_no, &nonce);
                Ok(self
                    .http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
                    .body(body))
            })
            .await?;
        Ok(orderquery::interpret_orderquery(
            &q.merchant,
            out_trade_no,
            &answer.body,
        )?)
    }

    /// A signed APIv3 `GET`.
    async fn v3_get(&self, q: &V3Querier, path: &str) -> Result<Answer, QueryError> {
        self.send(|| {
            let timestamp = self.clock.now().unix_timestamp();
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            let authorization = api::authorization(
                &q.merchant.mch_id,
                &q.serial,
                &q.key,
                "GET",
                path,
                "",
                timestamp,
                &nonce,
            )
            .map_err(|e| QueryError::Transport(format!("signing: {e}")))?;
            Ok(self
                .http
                .get(format!("{}{path}", self.wechat_base))
                .header(reqwest::header::AUTHORIZATION, authorization)
                .header(reqwest::header::ACCEPT, "application/json"))
        })
        .await
    }

    /// `GET /v3/pay/transactions/out-trade-no/{out_trade_no}`.
    pub async fn wechat_transaction(
        &self,
        q: &V3Querier,
        out_trade_no: &str,
    ) -> Result<TransactionQuery, QueryError> {
        let path = api::transaction_path(out_trade_no, &q.merchant.mch_id);
        let a = self.v3_get(q, &path).await?;
        Ok(api::interpret_transaction(
            &q.merchant,
            out_trade_no,
            a.status,
            &a.v3_headers(),
            &a.body,
            self.clock.as_ref(),
        )?)
    }

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`.
    pub async fn wechat_refund(
        &self,
        q: &V3Querier,
        out_refund_no: &str,
    ) -> Result<RefundQuery, QueryError> {
        let path = api::refund_path(out_refund_no);
        let a = self.v3_get(q, &path).await?;
        Ok(api::interpret_refund(
            &q.merchant,
            out_refund_no,
            a.status,
            &a.v3_headers(),
            &a.body,
            self.clock.as_ref(),
        )?)
    }

    /// `GET /v3/certificates`: the platform certificates WeChat lists now.
    pub async fn wechat_certificates(
        &self,
        q: &V3Querier,
    ) -> Result<api::CertificateDownload, QueryError> {
        let a = self.v3_get(q, api::CERTIFICATES_PATH).await?;
        Ok(api::interpret_certificates(
            &q.merchant,
            a.status,
            &a.v3_headers(),
            &a.body,
            self.clock.as_ref(),
        )?)
    }
}

/// A downloaded bill: a file in the directory the caller named, removed when dropped.
#[derive(Debug)]
pub struct BillFile {
    path: std::path::PathBuf,
    gzip: bool,
    /// SHA-256 of the file as downloaded, hex (recorded with the run).
    pub sha256: String,
}

impl BillFile {
    /// The bill's text, decompressed when the download was gzip'd.
    pub fn reader(&self) -> std::io::Result<Box<dyn std::io::BufRead + Send>> {
        let file = std::fs::File::open(&self.path)?;
        Ok(if self.gzip {
            Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(file)))
        } else {
            Box::new(std::io::BufReader::new(file))
        })
    }
}

impl Drop for BillFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a bill download gave.
#[derive(Debug)]
pub enum BillDownload {
    File(BillFile),
    /// The provider has no bill for the day (yet): a normal answer, retried later.
    NoBill(String),
}

/// Bill files larger than this are refused (a million-line bill is ~200 MiB of text,
/// a fifth of that gzip'd).
pub const BILL_MAX_BYTES: u64 = 1 << 30;

impl QueryClient {
    /// WeChat Pay APIv3: the `ALL` trade bill of `day`, downloaded gzip'd into `dir`
    /// (streamed, never whole in memory) and checked against the SHA-1 the signed
    /// answer gave. The download is a signed `GET` sent to `reconcile.wechat_base`
    /// only: a `download_url` on another host is refused.
    pub async fn wechat_tradebill(
        &self,
        q: &V3Querier,
        day: time::Date,
        dir: &std::path::Path,
    ) -> Result<BillDownload, QueryError> {
        let a = self.v3_get(q, &api::tradebill_path(day)).await?;
        let ready = api::interpret_tradebill(
            &q.merchant,
            a.status,
            &a.v3_headers(),
            &a.body,
            self.clock.as_ref(),
        )?;
        let (url, sha1) = match ready {
            api::TradeBill::NotReady(code) => return Ok(BillDownload::NoBill(code)),
            api::TradeBill::Ready { download_url, sha1 } => (download_url, sha1),
        };
        let path = url
            .strip_prefix(&self.wechat_base)
            .filter(|rest| rest.starts_with('/'))
            .ok_or_else(|| {
                QueryError::Transport("download_url is not on reconcile.wechat_base".into())
            })?
            .to_owned();
        let timestamp = self.clock.now().unix_timestamp();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let authorization = api::authorization(
            &q.merchant.mch_id,
            &q.serial,
            &q.key,
            "GET",
            &path,
            "",
            timestamp,
            &nonce,
        )
        .map_err(|e| QueryError::Transport(format!("signing: {e}")))?;
        let request = self
            .http
            .get(format!("{}{path}", self.wechat_base))
            .header(reqwest::header::AUTHORIZATION, authorization);
        let (file, digest) = fetch_to_file(request, dir, true).await?;
        if digest != sha1 {
            return Err(QueryError::Transport(
                "bill download: the file's SHA-1 is not the one the answer gave".into(),
            ));
        }
        Ok(BillDownload::File(file))
    }
}

impl QueryClient {
    /// WeChat Pay APIv2 `downloadbill`: the `ALL` bill of `day`, gzip'd, streamed into
    /// `dir`. The answer is the file, or an (unsigned) XML error: `No Bill Exist` is no
    /// bill (yet); any other error fails.
    pub async fn wechat_v2_downloadbill(
        &self,
        q: &V2Querier,
        day: time::Date,
        dir: &std::path::Path,
    ) -> Result<BillDownload, QueryError> {
        let bill_date = format!(
            "{:04}{:02}{:02}",
            day.year(),
            u8::from(day.month()),
            day.day()
        );
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let body = orderquery::downloadbill_request(&q.appid, &q.merchant, &bill_date, &nonce);
        let request = self
            .http
            .post(format!(
                "{}{}",
                self.wechat_base,
                orderquery::DOWNLOADBILL_PATH
            ))
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .body(body);
        let (file, _) = fetch_to_file(request, dir, true).await?;
        // A gzip file starts 1f 8b; an error is a short XML document.
        let mut head = [0_u8; 2];
        let is_gzip = std::io::Read::read_exact(
            &mut std::fs::File::open(&file.path)
                .map_err(|e| QueryError::Transport(format!("bill file: {e}")))?,
            &mut head,
        )
        .is_ok()
            && head == [0x1f, 0x8b];
        if is_gzip {
            return Ok(BillDownload::File(file));
        }
        let text = std::fs::read(&file.path)
            .map_err(|e| QueryError::Transport(format!("bill file: {e}")))?;
        let fields = crate::wechat_v2::parse_xml(&text).map_err(|_| {
            QueryError::Transport("downloadbill: neither a gzip'd bill nor an XML answer".into())
        })?;
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v.as_str())
        };
        if field("return_msg").eq_ignore_ascii_case("No Bill Exist") {
            return Ok(BillDownload::NoBill("No Bill Exist".into()));
        }
        Err(QueryError::Transport(format!(
            "downloadbill refused: {} {} {}",
            field("return_code"),
            field("error_code"),
            field("return_msg")
        )))
    }
}

impl QueryClient {
    /// Alipay: the trade bill of `day` — its URL asked with a signed
    /// `alipay.data.dataservice.bill.downloadurl.query`, the ZIP streamed into `dir`,
    /// and the detail CSV (`…_业务明细.csv`, not the summary) extracted beside it.
    pub async fn alipay_bill(
        &self,
        q: &AlipayQuerier,
        day: time::Date,
        dir: &std::path::Path,
    ) -> Result<BillDownload, QueryError> {
        let biz = gateway::bill_url_biz_content(day);
        let body = self.alipay_call(q, gateway::BILL_URL_QUERY, &biz).await?;
        let url = match gateway::interpret_bill_url(&q.app, &body)? {
            gateway::BillUrl::NotReady(code) => return Ok(BillDownload::NoBill(code)),
            gateway::BillUrl::Ready(url) => url,
        };
        let (zip, _) = fetch_to_file(self.http.get(&url), dir, false).await?;
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || detail_csv(&zip, &dir))
            .await
            .map_err(|e| QueryError::Transport(format!("bill unzip: {e}")))?
            .map(BillDownload::File)
    }
}

/// The detail CSV of an Alipay bill ZIP, extracted into `dir` (at most
/// [`BILL_MAX_BYTES`] inflated). Entry names may be GBK without the UTF-8 flag: the
/// detail is the entry whose name ends in `业务明细.csv` in either encoding and is not
/// the summary.
fn detail_csv(zip: &BillFile, dir: &std::path::Path) -> Result<BillFile, QueryError> {
    use std::io::{Read as _, Write as _};
    let fail = |what: &str| QueryError::Transport(format!("bill unzip: {what}"));
    let file = std::fs::File::open(&zip.path).map_err(|e| fail(&e.to_string()))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|_| fail("not a ZIP file"))?;
    let name_of = |raw: &[u8]| -> String {
        match std::str::from_utf8(raw) {
            Ok(text) => text.to_owned(),
            Err(_) => encoding_rs::GBK
                .decode_without_bom_handling(raw)
                .0
                .into_owned(),
        }
    };
    let index = (0..archive.len())
        .find(|&i| {
            archive.by_index_raw(i).is_ok_and(|entry| {
                let name = name_of(entry.name_raw());
                name.ends_with("业务明细.csv") && !name.contains("汇总")
            })
        })
        .ok_or_else(|| fail("no detail CSV in the ZIP"))?;
    let mut entry = archive
        .by_index(index)
        .map_err(|_| fail("unreadable entry"))?;
    let path = dir.join(format!(
        "payhook-bill-{}.csv",
        uuid::Uuid::new_v4().simple()
    ));
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(&path).map_err(|e| fail(&e.to_string()))?);
    // The run records the ZIP's hash: what was downloaded.
    let detail = BillFile {
        path,
        gzip: false,
        sha256: zip.sha256.clone(),
    };
    let (mut buffer, mut size) = (vec![0_u8; 64 * 1024], 0_u64);
    loop {
        let read = entry.read(&mut buffer).map_err(|_| fail("corrupt entry"))?;
        if read == 0 {
            break;
        }
        size += read as u64;
        if size > BILL_MAX_BYTES {
            return Err(fail("the detail CSV inflates beyond the limit"));
        }
        out.write_all(&buffer[..read])
            .map_err(|e| fail(&e.to_string()))?;
    }
    out.flush().map_err(|e| fail(&e.to_string()))?;
    Ok(detail)
}

/// Sends `request` and streams a successful answer's body into a new file in `dir`
/// (see [`download`]); any other status is a failure.
async fn fetch_to_file(
    request: reqwest::RequestBuilder,
    dir: &std::path::Path,
    gzip: bool,
) -> Result<(BillFile, String), QueryError> {
    let response = request
        .send()
        .await
        .map_err(|e| QueryError::Transport(without_url(&e)))?;
    if !response.status().is_success() {
        return Err(QueryError::Transport(format!(
            "bill download: HTTP {}",
            response.status().as_u16()
        )));
    }
    download(response, dir, gzip).await
}

/// Streams `response` into a new file in `dir`, hashing it (SHA-256 kept, SHA-1
/// returned) and refusing more than [`BILL_MAX_BYTES`].
async fn download(
    mut response: reqwest::Response,
    dir: &std::path::Path,
    gzip: bool,
) -> Result<(BillFile, String), QueryError> {
    use sha1::Digest as _;
    use std::io::Write as _;
    let io = |e: std::io::Error| QueryError::Transport(format!("bill file: {e}"));
    let path = dir.join(format!("payhook-bill-{}", uuid::Uuid::new_v4().simple()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
    // From here on the file is removed with `file` if anything fails.
    let mut file = BillFile {
        path,
        gzip,
        sha256: String::new(),
    };
    let (mut sha1, mut sha256, mut size) = (sha1::Sha1::new(), sha2::Sha256::new(), 0_u64);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| QueryError::Transport(without_url(&e)))?
    {
        size += chunk.len() as u64;
        if size > BILL_MAX_BYTES {
            return Err(QueryError::Transport(format!(
                "bill download: larger than {BILL_MAX_BYTES} bytes"
            )));
        }
        sha1.update(&chunk);
        sha256.update(&chunk);
        out.write_all(&chunk).map_err(io)?;
    }
    out.flush().map_err(io)?;
    file.sha256 = hex::encode(sha256.finalize());
    Ok((file, hex::encode(sha1.finalize())))
}

/// A reqwest error without its URL (which carries an order number in the path).
fn without_url(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    };
    let detail = e
        .source()
        .map_or_else(|| "failed".to_owned(), ToString::to_string);
    format!("{kind}: {detail}")
}
