//! WeChat Pay APIv2 `POST /pay/orderquery`: XML request signed with the API key
//! (MD5, or HMAC-SHA256 when `sign_type` says so); the answer is signed the same way.

use actix_web::HttpResponse;
use actix_web::web::Bytes;
use payhook_shared::crypto::ct_eq;
use payhook_shared::event::Provider;
use payhook_shared::wechat_v2::{SignType, parse_xml};

use super::{Shared, api, result};
use crate::book::OrderState;
use crate::notify::corrupt;
use crate::signer::wechat_v2::{V2Signer, sign};
use crate::signer::wechat_v3::random_ascii;

pub(super) async fn orderquery(inner: Shared, body: Bytes) -> HttpResponse {
    let v2 = &inner.providers.wechat_v2;
    let Ok(params) = parse_xml(&body) else {
        inner.count(api::WECHAT_V2_ORDERQUERY, result::BAD_REQUEST);
        return fail("XML格式错误");
    };
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let Ok(sign_type) = SignType::from_field(Some(field("sign_type")).filter(|s| !s.is_empty()))
    else {
        inner.count(api::WECHAT_V2_ORDERQUERY, result::BAD_REQUEST);
        return fail("签名类型错误");
    };
    let expected = sign(&params, &v2.api_key, sign_type);
    if !ct_eq(expected.as_bytes(), field("sign").as_bytes()) {
        inner.count(api::WECHAT_V2_ORDERQUERY, result::BAD_SIGNATURE);
        return fail("签名错误");
    }
    if field("mch_id") != v2.mch_id || field("appid") != v2.appid {
        inner.count(api::WECHAT_V2_ORDERQUERY, result::BAD_REQUEST);
        return fail("mch_id 或 appid 错误");
    }
    let order = inner
        .lock()
        .book
        .order(Provider::WechatV2, field("out_trade_no"))
        .cloned();
    let mut out: Vec<(String, String)> = [
        ("return_code", "SUCCESS"),
        ("return_msg", "OK"),
        ("appid", v2.appid.as_str()),
        ("mch_id", v2.mch_id.as_str()),
        ("nonce_str", random_ascii(32).as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut push = |k: &str, v: String| out.push((k.to_owned(), v));
    let outcome = match order {
        None => {
            push("result_code", "FAIL".into());
            push("err_code", "ORDERNOTEXIST".into());
            push("err_code_des", "订单不存在".into());
            result::NOT_FOUND
        }
        Some(order) => {
            let state = match order.state {
                OrderState::Pending => "NOTPAY",
                OrderState::Paid => "SUCCESS",
                OrderState::PartiallyRefunded | OrderState::Refunded => "REFUND",
                OrderState::Closed => "CLOSED",
            };
            push("result_code", "SUCCESS".into());
            push("out_trade_no", order.out_trade_no.clone());
            push("trade_state", state.into());
            push("trade_state_desc", state.into());
            push("total_fee", order.total_fen.to_string());
            push("fee_type", "CNY".into());
            if let Some(transaction_id) = &order.provider_trade_no {
                push("transaction_id", transaction_id.clone());
                push("cash_fee", order.total_fen.to_string());
                push("trade_type", "JSAPI".into());
                push("bank_type", "OTHERS".into());
            }
            result::OK
        }
    };
    if sign_type == SignType::HmacSha256 {
        out.push(("sign_type".into(), sign_type.as_str().into()));
    }
    let mut signature = sign(&out, &v2.api_key, sign_type);
    if inner.take_bad_response() {
        signature = corrupt(&signature);
    }
    out.push(("sign".into(), signature));
    inner.count(api::WECHAT_V2_ORDERQUERY, outcome);
    xml(V2Signer::xml(&out))
}

/// `POST /pay/downloadbill` (`bill_date=YYYYMMDD`, `bill_type=ALL`, optionally
/// `tar_type=GZIP`), signed like `orderquery`: the bill as text (or gzip), or an XML
/// error — `No Bill Exist` (`error_code` 20002) for a day not over yet or without trades.
pub(super) async fn downloadbill(inner: Shared, body: Bytes) -> HttpResponse {
    let v2 = &inner.providers.wechat_v2;
    let name = api::WECHAT_V2_DOWNLOADBILL;
    let Ok(params) = parse_xml(&body) else {
        inner.count(name, result::BAD_REQUEST);
        return fail("XML格式错误");
    };
    let field = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    };
    let Ok(sign_type) = SignType::from_field(Some(field("sign_type")).filter(|s| !s.is_empty()))
    else {
        inner.count(name, result::BAD_REQUEST);
        return fail("签名类型错误");
    };
    let expected = sign(&params, &v2.api_key, sign_type);
    if !ct_eq(expected.as_bytes(), field("sign").as_bytes()) {
        inner.count(name, result::BAD_SIGNATURE);
        return fail("签名错误");
    }
    if field("mch_id") != v2.mch_id || field("appid") != v2.appid {
        inner.count(name, result::BAD_REQUEST);
        return fail("mch_id 或 appid 错误");
    }
    let gzip = match field("tar_type") {
        "" => false,
        "GZIP" => true,
        _ => {
            inner.count(name, result::BAD_REQUEST);
            return fail("tar_type 错误");
        }
    };
    let day = crate::bills::parse_day(field("bill_date")).filter(|_| field("bill_date").len() == 8);
    let (Some(day), "ALL") = (day, field("bill_type")) else {
        inner.count(name, result::BAD_REQUEST);
        return fail("bill_date 或 bill_type 错误");
    };
    let records = inner.bill(Provider::WechatV2, day);
    if !crate::bills::generated(day, inner.now()) || records.is_empty() {
        inner.count(name, result::NO_BILL);
        return xml(V2Signer::xml(&[
            ("return_code".to_owned(), "FAIL".to_owned()),
            ("return_msg".to_owned(), "No Bill Exist".to_owned()),
            ("error_code".to_owned(), "20002".to_owned()),
        ]));
    }
    let mut text = Vec::new();
    if payhook_shared::bills::wechat::write(&mut text, (&v2.appid, &v2.mch_id), records).is_err() {
        return fail("账单生成失败");
    }
    inner.count(name, result::OK);
    if gzip {
        HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(super::wechat_v3::gzipped(&text))
    } else {
        HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(text)
    }
}

/// `return_code=FAIL`, unsigned (as WeChat answers a bad request).
fn fail(message: &str) -> HttpResponse {
    xml(payhook_shared::wechat_v2::fail_answer(message).into_bytes())
}

fn xml(body: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/xml; charset=utf-8")
        .body(body)
}
