//! Notifications as each provider sends them, built from the order book at the
//! moment of the state change (so a refund carries the cumulative amount of then),
//! and rendered per attempt: WeChat re-signs every resend with a fresh timestamp,
//! and the faults of an attempt (corrupt signature, stale timestamp, probe) are
//! applied here.

use payhook_shared::event::Provider;
use payhook_shared::wechat_v2::SignType as V2SignType;

use super::book::{OrderTruth, RefundTruth};
use crate::signer::alipay::AlipaySigner;
use crate::signer::wechat_v2::{self as v2, V2Refund, V2Signer};
use crate::signer::wechat_v3::{V3Signer, random_ascii};

/// The prefix of WeChat's deliberate signature probes.
pub const SIGN_TEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// A notification's content, fixed when the state changed.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    /// The signed form parameters (charset as declared in them).
    Alipay { params: Vec<(String, String)> },
    /// The XML fields; `authenticator` is the field a corruption breaks (`sign` for
    /// payments, the encrypted `req_info` for refunds).
    WechatV2 {
        params: Vec<(String, String)>,
        authenticator: &'static str,
    },
    /// The JSON envelope (resource already encrypted); headers are signed per attempt.
    WechatV3 { body: Vec<u8> },
}

/// One HTTP request to the notify URL.
#[derive(Debug, Clone)]
pub struct NotifyRequest {
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// How one attempt is to be spoiled.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Spoil {
    pub corrupt: bool,
    pub stale: bool,
    pub probe: bool,
}

impl Payload {
    pub fn provider(&self) -> Provider {
        match self {
            Self::Alipay { .. } => Provider::Alipay,
            Self::WechatV2 { .. } => Provider::WechatV2,
            Self::WechatV3 { .. } => Provider::WechatV3,
        }
    }

    /// The request of one attempt, V3 headers signed by `platform` now.
    pub fn render(&self, platform: &V3Signer, spoil: Spoil) -> NotifyRequest {
        match self {
            Self::Alipay { params } => {
                let mut params = params.clone();
                if spoil.corrupt {
                    corrupt_field(&mut params, "sign");
                }
                let charset = params
                    .iter()
                    .find(|(k, _)| k == "charset")
                    .map_or("utf-8", |(_, v)| v.as_str())
                    .to_owned();
                NotifyRequest {
                    content_type: format!("application/x-www-form-urlencoded; charset={charset}"),
                    headers: Vec::new(),
                    body: AlipaySigner::form_body(&params),
                }
            }
            Self::WechatV2 {
                params,
                authenticator,
            } => {
                let mut params = params.clone();
                if spoil.corrupt {
                    corrupt_field(&mut params, authenticator);
                }
                NotifyRequest {
                    content_type: "text/xml".into(),
                    headers: Vec::new(),
                    body: V2Signer::xml(&params),
                }
            }
            Self::WechatV3 { body } => {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let ts = if spoil.stale { now - 600 } else { now };
                let mut headers = platform.headers(ts, body);
                if spoil.corrupt || spoil.probe {
                    for (name, value) in &mut headers {
                        if name.eq_ignore_ascii_case(payhook_shared::wechat_v3::HEADER_SIGNATURE) {
                            if spoil.probe {
                                *value = format!("{SIGN_TEST_PREFIX}{}", random_ascii(300));
                            } else {
                                *value = corrupt(value);
                            }
                        }
                    }
                }
                NotifyRequest {
                    content_type: "application/json".into(),
                    headers,
                    body: body.clone(),
                }
            }
        }
    }
}

/// Changes one character in the middle of `value`, keeping its alphabet (Base64 or
/// hex), so that it still parses but no longer verifies (or decrypts).
pub(crate) fn corrupt(value: &str) -> String {
    let mut chars: Vec<char> = value.chars().collect();
    if chars.is_empty() {
        return "AAAA".into();
    }
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

fn corrupt_field(params: &mut [(String, String)], field: &str) {
    for (k, v) in params.iter_mut() {
        if k == field {
            *v = corrupt(v);
        }
    }
}

/// Alipay `TRADE_SUCCESS` for a payment.
pub(crate) fn alipay_payment(signer: &AlipaySigner, order: &OrderTruth, id: &str) -> Payload {
    Payload::Alipay {
        params: signer.payment_params(&order.out_trade_no, order.total_fen, id),
    }
}

/// Alipay refund: `TRADE_SUCCESS` with the cumulative `refund_fee` (partial) or
/// `TRADE_CLOSED` with `refund_fee` (full).
pub(crate) fn alipay_refund(
    signer: &AlipaySigner,
    order: &OrderTruth,
    refund: &RefundTruth,
    id: &str,
) -> Payload {
    Payload::Alipay {
        params: signer.refund_params(
            &order.out_trade_no,
            order.total_fen,
            refund.cumulative_fen,
            &refund.out_refund_no,
            id,
            refund.cumulative_fen == order.total_fen,
        ),
    }
}

/// Alipay `TRADE_CLOSED` without `refund_fee` (unpaid timeout close).
pub(crate) fn alipay_close(signer: &AlipaySigner, order: &OrderTruth, id: &str) -> Payload {
    Payload::Alipay {
        params: signer.close_params(&order.out_trade_no, order.total_fen, id),
    }
}

/// Alipay `TRADE_FINISHED`.
pub(crate) fn alipay_finished(signer: &AlipaySigner, order: &OrderTruth, id: &str) -> Payload {
    Payload::Alipay {
        params: signer.finished_params(
            &order.out_trade_no,
            order.total_fen,
            order.refunded_fen,
            id,
        ),
    }
}

/// WeChat V2 payment XML, MD5-signed with the API key.
pub(crate) fn v2_payment(signer: &V2Signer, order: &OrderTruth) -> Payload {
    let mut params = signer.payment_params(
        &order.out_trade_no,
        order.total_fen,
        order.provider_trade_no.as_deref().unwrap_or_default(),
    );
    let sign = v2::sign(&params, &signer.api_key, V2SignType::Md5);
    params.push(("sign".into(), sign));
    Payload::WechatV2 {
        params,
        authenticator: "sign",
    }
}

/// WeChat V2 refund: `req_info` encrypted with the MD5 of the API key.
pub(crate) fn v2_refund(signer: &V2Signer, order: &OrderTruth, refund: &RefundTruth) -> Payload {
    let params = signer.refund_params(&V2Refund {
        out_trade_no: &order.out_trade_no,
        out_refund_no: &refund.out_refund_no,
        transaction_id: order.provider_trade_no.as_deref().unwrap_or_default(),
        refund_id: &refund.refund_id,
        total_fen: order.total_fen,
        refund_fen: refund.amount_fen,
        refund_status: "SUCCESS",
    });
    Payload::WechatV2 {
        params,
        authenticator: "req_info",
    }
}

/// WeChat V3 `TRANSACTION.SUCCESS`.
pub(crate) fn v3_transaction(signer: &V3Signer, order: &OrderTruth, id: &str) -> Payload {
    let mut resource = signer.transaction_resource(&order.out_trade_no, order.total_fen, "SUCCESS");
    resource["transaction_id"] = order.provider_trade_no.clone().unwrap_or_default().into();
    let body = signer.notification(
        id,
        "TRANSACTION.SUCCESS",
        "transaction",
        resource.to_string().as_bytes(),
    );
    Payload::WechatV3 { body }
}

/// WeChat V3 `REFUND.SUCCESS`.
pub(crate) fn v3_refund(
    signer: &V3Signer,
    order: &OrderTruth,
    refund: &RefundTruth,
    id: &str,
) -> Payload {
    let mut resource = signer.refund_resource(
        &order.out_trade_no,
        &refund.out_refund_no,
        order.total_fen,
        refund.amount_fen,
        "SUCCESS",
    );
    resource["transaction_id"] = order.provider_trade_no.clone().unwrap_or_default().into();
    resource["refund_id"] = refund.refund_id.clone().into();
    let body = signer.notification(
        id,
        "REFUND.SUCCESS",
        "refund",
        resource.to_string().as_bytes(),
    );
    Payload::WechatV3 { body }
}
