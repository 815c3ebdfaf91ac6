//! The control API: what a person or a test does *at the provider* — create an order,
//! the buyer pays, the merchant refunds or closes it — with the notification
//! delivered, duplicated, delayed or withheld. Under `/_sim/`, beside the provider APIs
//! the simulator plays; `payhook-sim order|pay|refund|close|finish` are its client.
//!
//! Amounts are integer fen. Answers are JSON: the order as the provider now sees it,
//! and the id of the notification the operation produced (`null` when none: WeChat
//! does not notify closes).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use payhook_shared::event::Provider;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Shared;
use crate::book::OrderTruth;
use crate::{Faults, Inner, SimError};

/// What happens to the notification an operation produces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notify {
    /// Delivered at once, resent on the provider's schedule until acked.
    #[default]
    Deliver,
    /// Never delivered: only a query finds the change (payhook's reconciler must).
    Withhold,
    /// The first attempt is sent twice at once.
    Duplicate,
}

/// `POST /_sim/orders`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewOrder {
    pub provider: Provider,
    pub out_trade_no: String,
    pub amount_fen: i64,
}

/// The body of `pay`, `close` and `finish` (all optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delivery {
    #[serde(default)]
    pub notify: Notify,
    /// Wait this long (provider time, scaled like the resend schedule) first.
    #[serde(default)]
    pub delay_secs: u64,
}

/// The body of `refund`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refund {
    pub out_refund_no: String,
    pub amount_fen: i64,
    #[serde(flatten)]
    pub delivery: Delivery,
}

/// An operation's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub order: serde_json::Value,
    pub notification: Option<String>,
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/_sim/orders", web::post().to(create))
        .route(
            "/_sim/orders/{provider}/{out_trade_no}",
            web::get().to(show),
        )
        .route(
            "/_sim/orders/{provider}/{out_trade_no}/pay",
            web::post().to(pay),
        )
        .route(
            "/_sim/orders/{provider}/{out_trade_no}/refund",
            web::post().to(refund),
        )
        .route(
            "/_sim/orders/{provider}/{out_trade_no}/close",
            web::post().to(close),
        )
        .route(
            "/_sim/orders/{provider}/{out_trade_no}/finish",
            web::post().to(finish),
        )
        .route(
            "/_sim/bills/{provider}/{date}/tweaks",
            web::post().to(tweak),
        )
        .route("/_sim/clock", web::post().to(clock));
}

/// `POST /_sim/bills/{provider}/{YYYY-MM-DD}/tweaks` with a [`BillTweak`]: a
/// difference in that day's bill.
async fn tweak(
    inner: web::Data<Arc<Inner>>,
    path: web::Path<(String, String)>,
    body: web::Json<crate::bills::BillTweak>,
) -> HttpResponse {
    let (provider_name, date) = path.into_inner();
    let Some(provider) = provider(&provider_name) else {
        return unknown_provider(&provider_name);
    };
    let Some(day) = crate::bills::parse_day(&date) else {
        return HttpResponse::BadRequest().json(json!({"error": "the date is YYYY-MM-DD"}));
    };
    inner.tweak_bill(provider, day, body.into_inner());
    HttpResponse::NoContent().finish()
}

/// The body of `POST /_sim/clock`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Clock {
    /// Added to the wall clock for the payments and refunds made from now on
    /// (`-86400`: they happen yesterday, whose bill is available).
    pub book_offset_secs: i64,
}

async fn clock(inner: web::Data<Arc<Inner>>, body: web::Json<Clock>) -> HttpResponse {
    inner.set_book_offset(time::Duration::seconds(body.book_offset_secs));
    HttpResponse::NoContent().finish()
}

fn provider(text: &str) -> Option<Provider> {
    match text {
        "alipay" => Some(Provider::Alipay),
        "wechat_v2" => Some(Provider::WechatV2),
        "wechat_v3" => Some(Provider::WechatV3),
        _ => None,
    }
}

fn unknown_provider(text: &str) -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "error": format!("unknown provider {text:?} (alipay, wechat_v2, wechat_v3)")
    }))
}

fn error(error: &SimError) -> HttpResponse {
    let body = json!({ "error": error.to_string() });
    match error {
        SimError::UnknownOrder(_) => HttpResponse::NotFound().json(body),
        SimError::Refused(_) => HttpResponse::Conflict().json(body),
        _ => HttpResponse::InternalServerError().json(body),
    }
}

fn order_json(inner: &Inner, provider: Provider, out_trade_no: &str) -> serde_json::Value {
    inner
        .order(provider, out_trade_no)
        .map_or(serde_json::Value::Null, |o: OrderTruth| {
            serde_json::to_value(o).unwrap_or_default()
        })
}

/// Runs `operation` with the notification faults `delivery` asks for, then answers
/// with the order and the notification id.
fn operate(
    inner: &Arc<Inner>,
    provider: Provider,
    out_trade_no: &str,
    delivery: &Delivery,
    operation: impl FnOnce() -> Result<Option<String>, SimError>,
) -> HttpResponse {
    let faults = Faults {
        drop: delivery.notify == Notify::Withhold,
        duplicate: delivery.notify == Notify::Duplicate,
        delay: Duration::from_secs(delivery.delay_secs),
        ..Faults::default()
    };
    if let Err(e) = inner.set_order_faults(provider, out_trade_no, faults) {
        return error(&e);
    }
    let result = operation();
    inner.clear_order_faults(provider, out_trade_no);
    match result {
        Ok(notification) => HttpResponse::Ok().json(Answer {
            order: order_json(inner, provider, out_trade_no),
            notification,
        }),
        Err(e) => error(&e),
    }
}

async fn create(inner: Shared, order: web::Json<NewOrder>) -> HttpResponse {
    if order.amount_fen <= 0 {
        return HttpResponse::BadRequest().json(json!({"error": "amount_fen must be positive"}));
    }
    match inner.create_order(order.provider, &order.out_trade_no, order.amount_fen) {
        Ok(()) => HttpResponse::Created().json(Answer {
            order: order_json(&inner, order.provider, &order.out_trade_no),
            notification: None,
        }),
        Err(e) => error(&e),
    }
}

async fn show(inner: Shared, path: web::Path<(String, String)>) -> HttpResponse {
    let (p, out_trade_no) = path.into_inner();
    let Some(provider) = provider(&p) else {
        return unknown_provider(&p);
    };
    match inner.order(provider, &out_trade_no) {
        Some(order) => HttpResponse::Ok().json(order),
        None => error(&SimError::UnknownOrder(out_trade_no)),
    }
}

/// `pay`, `close`, `finish`: the order's operation with an optional [`Delivery`].
fn act(
    inner: &Arc<Inner>,
    path: web::Path<(String, String)>,
    body: Option<web::Json<Delivery>>,
    operation: impl FnOnce(&Arc<Inner>, Provider, &str) -> Result<Option<String>, SimError>,
) -> HttpResponse {
    let (p, no) = path.into_inner();
    let Some(provider) = provider(&p) else {
        return unknown_provider(&p);
    };
    let delivery = body.map(web::Json::into_inner).unwrap_or_default();
    operate(inner, provider, &no, &delivery, || {
        operation(inner, provider, &no)
    })
}

async fn pay(
    inner: Shared,
    path: web::Path<(String, String)>,
    body: Option<web::Json<Delivery>>,
) -> HttpResponse {
    act(&inner, path, body, |inner, provider, no| {
        inner.pay(provider, no)
    })
}

async fn refund(
    inner: Shared,
    path: web::Path<(String, String)>,
    body: web::Json<Refund>,
) -> HttpResponse {
    let (p, no) = path.into_inner();
    let Some(provider) = provider(&p) else {
        return unknown_provider(&p);
    };
    let r = body.into_inner();
    if r.amount_fen <= 0 {
        return HttpResponse::BadRequest().json(json!({"error": "amount_fen must be positive"}));
    }
    operate(&inner, provider, &no, &r.delivery, || {
        inner.refund(provider, &no, &r.out_refund_no, r.amount_fen)
    })
}

async fn close(
    inner: Shared,
    path: web::Path<(String, String)>,
    body: Option<web::Json<Delivery>>,
) -> HttpResponse {
    act(&inner, path, body, |inner, provider, no| {
        inner.close(provider, no)
    })
}

async fn finish(
    inner: Shared,
    path: web::Path<(String, String)>,
    body: Option<web::Json<Delivery>>,
) -> HttpResponse {
    if matches!(provider(&path.0), Some(p) if p != Provider::Alipay) {
        return HttpResponse::BadRequest()
            .json(json!({"error": "only Alipay trades finish (TRADE_FINISHED)"}));
    }
    act(&inner, path, body, |inner, _, no| inner.finish(no))
}
