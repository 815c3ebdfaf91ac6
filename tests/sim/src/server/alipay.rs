//! `POST /gateway.do`: `alipay.trade.query` and `alipay.trade.fastpay.refund.query`.
//!
//! The request is checked with the app public key over the "V2" sign content (all
//! parameters but `sign`, `sign_type` included, empty dropped, sorted). A response
//! node is serialised once, signed as that exact text with the Alipay key, and
//! spliced into the outer object — never re-serialised (docs/protocols.md §1).

use actix_web::HttpResponse;
use actix_web::web::Bytes;
use payhook_shared::alipay::{SignType, form, sign_content_v2};
use payhook_shared::crypto::{RsaHash, verify_rsa};
use payhook_shared::money::format_yuan;
use serde_json::{Value, json};

use super::{Shared, api, result};
use crate::book::{OrderState, OrderTruth};
use crate::notify::corrupt;
use crate::signer::alipay::trade_no;

pub(super) async fn gateway(inner: Shared, body: Bytes) -> HttpResponse {
    let Ok(params) = form::decode(&body) else {
        inner.count(api::ALIPAY_OTHER, result::BAD_REQUEST);
        return unsigned(
            "error_response",
            &error(
                "40002",
                "Invalid Arguments",
                "isv.invalid-parameter",
                "参数无效",
            ),
        );
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let method = param("method").to_owned();
    let node = format!("{}_response", method.replace('.', "_"));
    let api_name = match method.as_str() {
        api::ALIPAY_TRADE_QUERY => api::ALIPAY_TRADE_QUERY,
        api::ALIPAY_REFUND_QUERY => api::ALIPAY_REFUND_QUERY,
        api::ALIPAY_BILL_URL => api::ALIPAY_BILL_URL,
        _ => api::ALIPAY_OTHER,
    };

    let verified = param("sign_type") == SignType::Rsa2.as_str()
        && inner.alipay_app_key.as_ref().is_some_and(|key| {
            verify_rsa(
                key,
                RsaHash::Sha256,
                sign_content_v2(&params).as_bytes(),
                param("sign"),
            )
            .is_ok()
        });
    if !verified {
        inner.count(api_name, result::BAD_SIGNATURE);
        return unsigned(
            &node,
            &error(
                "40002",
                "Invalid Arguments",
                "isv.invalid-signature",
                "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配",
            ),
        );
    }
    let app_id = &inner.providers.alipay.app_id;
    let cert_ok = !inner.alipay_cert_mode
        || (!param("app_cert_sn").is_empty() && !param("alipay_root_cert_sn").is_empty());
    let biz: Option<Value> = serde_json::from_str(param("biz_content")).ok();
    let (Some(biz), true, true, true) = (
        biz,
        param("app_id") == app_id,
        cert_ok,
        param("format").eq_ignore_ascii_case("JSON")
            && param("charset").eq_ignore_ascii_case("utf-8"),
    ) else {
        inner.count(api_name, result::BAD_REQUEST);
        return unsigned(
            &node,
            &error(
                "40002",
                "Invalid Arguments",
                "isv.invalid-parameter",
                "参数无效",
            ),
        );
    };
    let biz_str = |name: &str| {
        biz.get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let out_trade_no = biz_str("out_trade_no");
    let order = inner
        .lock()
        .book
        .order(payhook_shared::event::Provider::Alipay, &out_trade_no)
        .cloned();

    let (value, outcome) = match api_name {
        api::ALIPAY_TRADE_QUERY => match order {
            Some(order) => (trade(&order), result::OK),
            None => {
                let mut value = error(
                    "40004",
                    "Business Failed",
                    "ACQ.TRADE_NOT_EXIST",
                    "交易不存在",
                );
                value["out_trade_no"] = out_trade_no.into();
                value["buyer_pay_amount"] = "0.00".into();
                (value, result::NOT_FOUND)
            }
        },
        api::ALIPAY_REFUND_QUERY => {
            let out_request_no = biz_str("out_request_no");
            refund(order.as_ref(), &out_trade_no, &out_request_no)
        }
        api::ALIPAY_BILL_URL => bill_url(&inner, &biz_str("bill_type"), &biz_str("bill_date")),
        _ => (
            error(
                "40004",
                "Business Failed",
                "isv.invalid-method",
                "不存在的方法名",
            ),
            result::BAD_REQUEST,
        ),
    };
    inner.count(api_name, outcome);
    signed(&inner, &node, &value)
}

/// `alipay.data.dataservice.bill.downloadurl.query`: the URL of the day's ZIP, or
/// `isp.bill_not_exist` before the day is over. A day without trades has a bill with
/// no lines.
fn bill_url(inner: &Shared, bill_type: &str, bill_date: &str) -> (Value, &'static str) {
    let day = crate::bills::parse_day(bill_date).filter(|_| bill_date.len() == 10);
    let (Some(day), "trade") = (day, bill_type) else {
        return (
            error(
                "40002",
                "Invalid Arguments",
                "isv.invalid-parameter",
                "参数无效",
            ),
            result::BAD_REQUEST,
        );
    };
    if !crate::bills::generated(day, inner.now()) {
        return (
            error(
                "40004",
                "Business Failed",
                "isp.bill_not_exist",
                "账单不存在",
            ),
            result::NO_BILL,
        );
    }
    let records = inner.bill(payhook_shared::event::Provider::Alipay, day);
    match bill_zip(&inner.providers.alipay.seller_id, day, records) {
        Ok(zip) => {
            let url = inner.offer_bill_file("/_sim/billfile/alipay", zip);
            (
                json!({"code": "10000", "msg": "Success", "bill_download_url": url}),
                result::OK,
            )
        }
        Err(_) => (
            error(
                "20000",
                "Service Currently Unavailable",
                "isp.unknown-error",
                "系统繁忙",
            ),
            result::BAD_REQUEST,
        ),
    }
}

/// The ZIP Alipay serves: the detail CSV and its summary CSV (GBK).
fn bill_zip(
    account: &str,
    day: time::Date,
    records: Vec<payhook_shared::bills::BillRecord>,
) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let date = format!(
        "{:04}{:02}{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    );
    let dashed = format!(
        "{:04}-{:02}-{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    );
    let mut detail = Vec::new();
    let totals = payhook_shared::bills::alipay::write(&mut detail, account, &dashed, records)?;
    let summary_text = format!(
        "#支付宝业务汇总查询\r\n#账号：[{account}]\r\n#起始日期：[{dashed} 00:00:00]   终止日期：[{dashed} 23:59:59]\r\n门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）\r\n合计,,{},{},{},{}\r\n#导出时间：[{dashed} 09:00:00]\r\n",
        totals.payments,
        totals.refunds,
        payhook_shared::money::format_yuan(totals.payment_fen),
        payhook_shared::money::format_yuan(totals.payment_fen - totals.refund_fen),
    );
    let (summary, _, _) = encoding_rs::GBK.encode(&summary_text);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file(format!("{account}_{date}_业务明细.csv"), options)
        .map_err(std::io::Error::other)?;
    zip.write_all(&detail)?;
    zip.start_file(format!("{account}_{date}_业务明细(汇总).csv"), options)
        .map_err(std::io::Error::other)?;
    zip.write_all(&summary)?;
    Ok(zip.finish().map_err(std::io::Error::other)?.into_inner())
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct DownloadQuery {
    token: Option<String>,
}

/// The GET behind `bill_download_url` (no signature, as Alipay's: the URL is the
/// secret, valid for a short while).
pub(super) async fn bill_download(
    inner: Shared,
    query: actix_web::web::Query<DownloadQuery>,
) -> HttpResponse {
    match query.token.as_deref().and_then(|t| inner.bill_file(t)) {
        Some(zip) => {
            inner.count(api::ALIPAY_BILL_DOWNLOAD, result::OK);
            HttpResponse::Ok().content_type("application/zip").body(zip)
        }
        None => {
            inner.count(api::ALIPAY_BILL_DOWNLOAD, result::NOT_FOUND);
            HttpResponse::NotFound().finish()
        }
    }
}

fn error(code: &str, msg: &str, sub_code: &str, sub_msg: &str) -> Value {
    json!({ "code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg })
}

fn trade(order: &OrderTruth) -> Value {
    let status = match order.state {
        OrderState::Pending => "WAIT_BUYER_PAY",
        OrderState::Refunded | OrderState::Closed => "TRADE_CLOSED",
        OrderState::Paid | OrderState::PartiallyRefunded if order.finished => "TRADE_FINISHED",
        OrderState::Paid | OrderState::PartiallyRefunded => "TRADE_SUCCESS",
    };
    let total = format_yuan(order.total_fen);
    let mut value = json!({
        "code": "10000",
        "msg": "Success",
        "trade_no": trade_no(&order.out_trade_no),
        "out_trade_no": order.out_trade_no,
        "buyer_logon_id": "abc***@example.com",
        "trade_status": status,
        "total_amount": total,
        "buyer_pay_amount": if order.paid_at.is_some() { total.clone() } else { "0.00".into() },
        "invoice_amount": if order.paid_at.is_some() { total.clone() } else { "0.00".into() },
        "receipt_amount": if order.paid_at.is_some() { total.clone() } else { "0.00".into() },
        "point_amount": "0.00",
        "buyer_user_id": "2088102177846880",
    });
    if let Some(paid_at) = order.paid_at {
        value["send_pay_date"] = beijing(paid_at).into();
    }
    value
}

fn refund(
    order: Option<&OrderTruth>,
    out_trade_no: &str,
    out_request_no: &str,
) -> (Value, &'static str) {
    let found = order.and_then(|o| {
        o.refunds
            .iter()
            .find(|r| r.out_refund_no == out_request_no)
            .map(|r| (o, r))
    });
    match found {
        Some((order, r)) => (
            json!({
                "code": "10000",
                "msg": "Success",
                "trade_no": trade_no(&order.out_trade_no),
                "out_trade_no": order.out_trade_no,
                "out_request_no": r.out_refund_no,
                "total_amount": format_yuan(order.total_fen),
                "refund_amount": format_yuan(r.amount_fen),
                "refund_status": "REFUND_SUCCESS",
                "gmt_refund_pay": beijing(r.created_at),
            }),
            result::OK,
        ),
        // No such refund: success without `refund_status` ("not refunded").
        None => (
            json!({
                "code": "10000",
                "msg": "Success",
                "out_trade_no": out_trade_no,
                "out_request_no": out_request_no,
            }),
            result::NOT_FOUND,
        ),
    }
}

fn beijing(at: time::OffsetDateTime) -> String {
    at.to_offset(time::macros::offset!(+8))
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap_or_default()
}

/// `{"<node>":<value>}` without a signature (signature failures, as Alipay does).
fn unsigned(node: &str, value: &Value) -> HttpResponse {
    let body = format!("{{\"{node}\":{value}}}");
    json_response(body)
}

/// The node text signed as emitted, spliced next to its `sign`.
fn signed(inner: &Shared, node: &str, value: &Value) -> HttpResponse {
    let text = value.to_string();
    let mut sign = inner
        .providers
        .alipay
        .signature(SignType::Rsa2, text.as_bytes());
    if inner.take_bad_response() {
        sign = corrupt(&sign);
    }
    let cert_sn = if inner.alipay_cert_mode {
        format!(
            ",\"alipay_cert_sn\":\"{}\"",
            inner.providers.alipay.cert_sn()
        )
    } else {
        String::new()
    };
    json_response(format!(
        "{{\"{node}\":{text},\"sign\":\"{sign}\"{cert_sn}}}"
    ))
}

fn json_response(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json;charset=utf-8")
        .body(body)
}
