//! The query APIs, answering from the order book: the Alipay gateway, WeChat Pay V3
//! (transactions, refunds, certificates) and V2 (`orderquery`). Each checks the
//! caller's request signature like the provider does and signs its responses like
//! the provider does; both outcomes are counted.

mod alipay;
pub mod control;
mod wechat_v2;
mod wechat_v3;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use serde::Serialize;

use super::{Inner, SimError};

/// The API names used by the counters.
pub mod api {
    pub const ALIPAY_TRADE_QUERY: &str = "alipay.trade.query";
    pub const ALIPAY_REFUND_QUERY: &str = "alipay.trade.fastpay.refund.query";
    pub const ALIPAY_BILL_URL: &str = "alipay.data.dataservice.bill.downloadurl.query";
    /// The GET of the ZIP behind `bill_download_url`.
    pub const ALIPAY_BILL_DOWNLOAD: &str = "alipay.billdownload";
    /// Any other gateway method (answered with an error).
    pub const ALIPAY_OTHER: &str = "alipay.other";
    pub const WECHAT_V3_TRANSACTION: &str = "wechat_v3.transaction";
    pub const WECHAT_V3_REFUND: &str = "wechat_v3.refund";
    pub const WECHAT_V3_CERTIFICATES: &str = "wechat_v3.certificates";
    pub const WECHAT_V2_ORDERQUERY: &str = "wechat_v2.orderquery";
    pub const WECHAT_V3_TRADEBILL: &str = "wechat_v3.tradebill";
    pub const WECHAT_V3_BILL_DOWNLOAD: &str = "wechat_v3.billdownload";
    pub const WECHAT_V2_DOWNLOADBILL: &str = "wechat_v2.downloadbill";
}

/// The result names used by the counters.
pub mod result {
    /// Answered from the book (found).
    pub const OK: &str = "ok";
    /// Answered "no such order / refund" (Alipay `ACQ.TRADE_NOT_EXIST`, a refund
    /// query without `refund_status`, V3 404, V2 `ORDERNOTEXIST`).
    pub const NOT_FOUND: &str = "not_found";
    /// The request signature did not verify (or its timestamp was stale).
    pub const BAD_SIGNATURE: &str = "bad_signature";
    /// Malformed or for another app / merchant.
    pub const BAD_REQUEST: &str = "bad_request";
    /// A bill not generated yet, or of a day without trades.
    pub const NO_BILL: &str = "no_bill";
}

/// What the query APIs served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueryStats {
    /// Responses by `"{api} {result}"`.
    pub served: BTreeMap<String, u64>,
    /// Requests refused for their signature, all APIs.
    pub rejected_signatures: u64,
    /// Responses sent with a deliberately bad signature.
    pub bad_signatures_sent: u64,
}

impl QueryStats {
    pub fn served(&self, api: &str, result: &str) -> u64 {
        self.served
            .get(&format!("{api} {result}"))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn count(&mut self, api: &str, result: &str) {
        *self.served.entry(format!("{api} {result}")).or_default() += 1;
        if result == self::result::BAD_SIGNATURE {
            self.rejected_signatures += 1;
        }
    }
}

impl Inner {
    fn count(&self, api: &str, result: &str) {
        self.stats().count(api, result);
    }
}

type Shared = web::Data<Arc<Inner>>;

/// Starts the HTTP server on `listener`; it stops when the simulator's shutdown fires.
pub(crate) fn spawn(inner: Arc<Inner>, listener: TcpListener) -> Result<(), SimError> {
    let data = web::Data::new(Arc::clone(&inner));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(1 << 20))
            .route("/gateway.do", web::post().to(alipay::gateway))
            .route(
                "/_sim/billfile/alipay",
                web::get().to(alipay::bill_download),
            )
            .route(
                "/v3/pay/transactions/out-trade-no/{out_trade_no}",
                web::get().to(wechat_v3::transaction),
            )
            .route(
                "/v3/refund/domestic/refunds/{out_refund_no}",
                web::get().to(wechat_v3::refund),
            )
            .route("/v3/certificates", web::get().to(wechat_v3::certificates))
            .route("/pay/orderquery", web::post().to(wechat_v2::orderquery))
            .route("/v3/bill/tradebill", web::get().to(wechat_v3::tradebill))
            .route(
                "/v3/billdownload/file",
                web::get().to(wechat_v3::bill_download),
            )
            .route("/pay/downloadbill", web::post().to(wechat_v2::downloadbill))
            .configure(control::routes)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let shutdown = inner.shutdown.clone();
    tokio::spawn(server);
    tokio::spawn(async move {
        shutdown.cancelled().await;
        handle.stop(true).await;
    });
    Ok(())
}
