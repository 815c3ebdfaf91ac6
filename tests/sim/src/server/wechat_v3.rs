//! WeChat Pay APIv3 queries. Requests must carry a valid
//! `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=…,nonce_str=…,signature=…,
//! timestamp=…,serial_no=…` (merchant key, `METHOD\nPATH?QUERY\nts\nnonce\nbody\n`,
//! ±300 s); every response, errors included, is signed with the current platform
//! key in `Wechatpay-*` headers, as notifications are.

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use payhook_shared::crypto::{RsaHash, verify_rsa};
use payhook_shared::event::Provider;
use payhook_shared::wechat_v3::{
    HEADER_SIGNATURE, RESOURCE_ALGORITHM, SIGNATURE_TYPE, TIMESTAMP_WINDOW_SECS, encrypt_resource,
};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Shared, api, result};
use crate::book::OrderState;
use crate::notify::corrupt;
use crate::signer::wechat_v3::random_ascii;

#[derive(Debug, Deserialize)]
pub(super) struct MchQuery {
    mchid: Option<String>,
}

pub(super) async fn transaction(
    inner: Shared,
    req: HttpRequest,
    path: Path<String>,
    query: Query<MchQuery>,
    body: Bytes,
) -> HttpResponse {
    if let Some(response) = refusal(&inner, api::WECHAT_V3_TRANSACTION, &req, &body) {
        return response;
    }
    let v3 = &inner.providers.wechat_v3;
    if query.mchid.as_deref() != Some(v3.mch_id.as_str()) {
        inner.count(api::WECHAT_V3_TRANSACTION, result::BAD_REQUEST);
        return signed(
            &inner,
            StatusCode::BAD_REQUEST,
            &json!({"code": "PARAM_ERROR", "message": "mchid 与商户号不一致"}),
        );
    }
    let order = inner.lock().book.order(Provider::WechatV3, &path).cloned();
    let Some(order) = order else {
        inner.count(api::WECHAT_V3_TRANSACTION, result::NOT_FOUND);
        return signed(
            &inner,
            StatusCode::NOT_FOUND,
            &json!({"code": "ORDER_NOT_EXIST", "message": "订单不存在"}),
        );
    };
    let (state, desc) = match order.state {
        OrderState::Pending => ("NOTPAY", "订单未支付"),
        OrderState::Paid => ("SUCCESS", "支付成功"),
        OrderState::PartiallyRefunded | OrderState::Refunded => ("REFUND", "转入退款"),
        OrderState::Closed => ("CLOSED", "订单已关闭"),
    };
    let mut value = json!({
        "appid": v3.appid,
        "mchid": v3.mch_id,
        "out_trade_no": order.out_trade_no,
        "trade_type": "JSAPI",
        "trade_state": state,
        "trade_state_desc": desc,
        "bank_type": "OTHERS",
        "attach": "",
        "payer": { "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" },
        "amount": { "total": order.total_fen, "currency": "CNY", "payer_currency": "CNY" },
    });
    if let (Some(paid_at), Some(transaction_id)) = (order.paid_at, &order.provider_trade_no) {
        value["transaction_id"] = transaction_id.clone().into();
        value["success_time"] = rfc3339(paid_at).into();
        value["amount"]["payer_total"] = order.total_fen.into();
    }
    inner.count(api::WECHAT_V3_TRANSACTION, result::OK);
    signed(&inner, StatusCode::OK, &value)
}

pub(super) async fn refund(
    inner: Shared,
    req: HttpRequest,
    path: Path<String>,
    body: Bytes,
) -> HttpResponse {
    if let Some(response) = refusal(&inner, api::WECHAT_V3_REFUND, &req, &body) {
        return response;
    }
    let found = inner
        .lock()
        .book
        .refund(Provider::WechatV3, &path)
        .map(|(order, refund)| (order.clone(), refund.clone()));
    let Some((order, refund)) = found else {
        inner.count(api::WECHAT_V3_REFUND, result::NOT_FOUND);
        return signed(
            &inner,
            StatusCode::NOT_FOUND,
            &json!({"code": "RESOURCE_NOT_EXISTS", "message": "退款单不存在"}),
        );
    };
    let value = json!({
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": order.provider_trade_no,
        "out_trade_no": order.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "success_time": rfc3339(refund.created_at),
        "create_time": rfc3339(refund.created_at),
        "status": "SUCCESS",
        "funds_account": "AVAILABLE",
        "amount": {
            "total": order.total_fen,
            "refund": refund.amount_fen,
            "payer_total": order.total_fen,
            "payer_refund": refund.amount_fen,
            "settlement_refund": refund.amount_fen,
            "settlement_total": order.total_fen,
            "discount_refund": 0,
            "currency": "CNY",
        },
    });
    inner.count(api::WECHAT_V3_REFUND, result::OK);
    signed(&inner, StatusCode::OK, &value)
}

#[derive(Debug, Deserialize)]
pub(super) struct BillQuery {
    bill_date: Option<String>,
    bill_type: Option<String>,
    tar_type: Option<String>,
}

/// `GET /v3/bill/tradebill?bill_date=YYYY-MM-DD&bill_type=ALL[&tar_type=GZIP]`: the
/// bill's `download_url` with its SHA-1, or `NO_STATEMENT_EXIST` for a day not over
/// yet or without trades.
pub(super) async fn tradebill(
    inner: Shared,
    req: HttpRequest,
    query: Query<BillQuery>,
    body: Bytes,
) -> HttpResponse {
    if let Some(response) = refusal(&inner, api::WECHAT_V3_TRADEBILL, &req, &body) {
        return response;
    }
    let day = query.bill_date.as_deref().and_then(crate::bills::parse_day);
    let gzip = match query.tar_type.as_deref() {
        None => false,
        Some("GZIP") => true,
        Some(_) => return bill_param_error(&inner, "tar_type 只能是 GZIP"),
    };
    let (Some(day), Some("ALL")) = (day, query.bill_type.as_deref()) else {
        return bill_param_error(&inner, "bill_date 或 bill_type 格式错误");
    };
    let records = inner.bill(Provider::WechatV3, day);
    if !crate::bills::generated(day, inner.now()) || records.is_empty() {
        inner.count(api::WECHAT_V3_TRADEBILL, result::NO_BILL);
        return signed(
            &inner,
            StatusCode::BAD_REQUEST,
            &json!({"code": "NO_STATEMENT_EXIST", "message": "要下载的账单不存在"}),
        );
    }
    let v3 = &inner.providers.wechat_v3;
    let mut text = Vec::new();
    if payhook_shared::bills::wechat::write(&mut text, (&v3.appid, &v3.mch_id), records).is_err() {
        return bill_param_error(&inner, "账单生成失败");
    }
    let file = if gzip { gzipped(&text) } else { text };
    let hash = {
        use sha1::Digest as _;
        hex::encode(sha1::Sha1::digest(&file))
    };
    let url = inner.offer_bill_file("/v3/billdownload/file", file);
    inner.count(api::WECHAT_V3_TRADEBILL, result::OK);
    signed(
        &inner,
        StatusCode::OK,
        &json!({"hash_type": "SHA1", "hash_value": hash, "download_url": url}),
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct DownloadQuery {
    token: Option<String>,
}

/// `GET /v3/billdownload/file?token=…` (a signed request): the bill file, unsigned (its
/// SHA-1 came with the `download_url`).
pub(super) async fn bill_download(
    inner: Shared,
    req: HttpRequest,
    query: Query<DownloadQuery>,
    body: Bytes,
) -> HttpResponse {
    if let Some(response) = refusal(&inner, api::WECHAT_V3_BILL_DOWNLOAD, &req, &body) {
        return response;
    }
    let Some(file) = query.token.as_deref().and_then(|t| inner.bill_file(t)) else {
        inner.count(api::WECHAT_V3_BILL_DOWNLOAD, result::NOT_FOUND);
        return signed(
            &inner,
            StatusCode::NOT_FOUND,
            &json!({"code": "RESOURCE_NOT_EXISTS", "message": "下载链接无效"}),
        );
    };
    inner.count(api::WECHAT_V3_BILL_DOWNLOAD, result::OK);
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(file)
}

fn bill_param_error(inner: &Shared, message: &str) -> HttpResponse {
    inner.count(api::WECHAT_V3_TRADEBILL, result::BAD_REQUEST);
    signed(
        inner,
        StatusCode::BAD_REQUEST,
        &json!({"code": "PARAM_ERROR", "message": message}),
    )
}

/// `bytes` gzip-compressed (`tar_type=GZIP`).
pub(super) fn gzipped(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

pub(super) async fn certificates(inner: Shared, req: HttpRequest, body: Bytes) -> HttpResponse {
    if let Some(response) = refusal(&inner, api::WECHAT_V3_CERTIFICATES, &req, &body) {
        return response;
    }
    let key = inner.providers.wechat_v3.api_v3_key.clone();
    let data: Vec<Value> = inner
        .platform()
        .listed()
        .into_iter()
        .filter_map(|entry| {
            let pem = entry.certificate_pem.as_ref()?;
            let nonce = random_ascii(12);
            Some(json!({
                "serial_no": entry.signer.serial,
                "effective_time": rfc3339(entry.effective_time),
                "expire_time": rfc3339(entry.expire_time),
                "encrypt_certificate": {
                    "algorithm": RESOURCE_ALGORITHM,
                    "nonce": nonce,
                    "associated_data": "certificate",
                    "ciphertext": encrypt_resource(key.as_bytes(), &nonce, "certificate", pem.as_bytes()),
                },
            }))
        })
        .collect();
    inner.count(api::WECHAT_V3_CERTIFICATES, result::OK);
    signed(&inner, StatusCode::OK, &json!({ "data": data }))
}

/// Checks the request's `Authorization`: `None` if it verifies, else the (signed)
/// 401 to answer.
fn refusal(inner: &Shared, api_name: &str, req: &HttpRequest, body: &[u8]) -> Option<HttpResponse> {
    let message = check_authorization(inner, req, body).err()?;
    inner.count(api_name, result::BAD_SIGNATURE);
    Some(signed(
        inner,
        StatusCode::UNAUTHORIZED,
        &json!({"code": "SIGN_ERROR", "message": message}),
    ))
}

fn check_authorization(inner: &Shared, req: &HttpRequest, body: &[u8]) -> Result<(), String> {
    let header = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("缺少 Authorization")?;
    let fields = header
        .strip_prefix(SIGNATURE_TYPE)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or("Authorization 认证类型错误")?;
    let fields = parse_fields(fields);
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or(format!("Authorization 缺少 {name}"))
    };
    let (mchid, nonce, signature, timestamp, serial) = (
        field("mchid")?,
        field("nonce_str")?,
        field("signature")?,
        field("timestamp")?,
        field("serial_no")?,
    );
    if mchid != inner.providers.wechat_v3.mch_id {
        return Err("商户号不匹配".into());
    }
    let ts: i64 = timestamp.parse().map_err(|_| "timestamp 格式错误")?;
    if (inner.clock.now().unix_timestamp() - ts).abs() > TIMESTAMP_WINDOW_SECS {
        return Err("请求时间戳已过期".into());
    }
    let key = inner
        .wechat_merchant_keys
        .iter()
        .find(|(s, _)| s.eq_ignore_ascii_case(serial))
        .map(|(_, key)| key)
        .ok_or("商户证书序列号有误")?;
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.path().to_owned(), |pq| pq.as_str().to_owned());
    let mut message = format!("{}\n{target}\n{timestamp}\n{nonce}\n", req.method()).into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    verify_rsa(key, RsaHash::Sha256, &message, signature)
        .map_err(|_| "签名错误，请检查后再试".to_owned())
}

/// `k="v",k2="v2"` → pairs (values without their quotes).
fn parse_fields(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|part| {
            let (k, v) = part.trim().split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

/// A JSON response signed like a notification by the current platform key.
fn signed(inner: &Shared, status: StatusCode, value: &Value) -> HttpResponse {
    let body = value.to_string();
    let platform = inner.platform().current().clone();
    let mut headers = platform.headers(OffsetDateTime::now_utc().unix_timestamp(), body.as_bytes());
    if inner.take_bad_response() {
        for (name, value) in &mut headers {
            if name.eq_ignore_ascii_case(HEADER_SIGNATURE) {
                *value = corrupt(value);
            }
        }
    }
    let mut response = HttpResponse::build(status);
    response.content_type("application/json");
    for (name, value) in headers {
        response.insert_header((name, value));
    }
    response.body(body)
}

fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::macros::offset!(+8));
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::parse_fields;

    #[test]
    fn authorization_fields_are_split_and_unquoted() {
        let fields =
            parse_fields(r#"mchid="1900",nonce_str="abc", signature="a+b/c==",timestamp="1""#);
        assert_eq!(fields[0], ("mchid".into(), "1900".into()));
        assert_eq!(fields[2], ("signature".into(), "a+b/c==".into()));
        assert_eq!(fields.len(), 4);
    }
}
