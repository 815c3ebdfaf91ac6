//! Maps a decrypted V3 resource onto the normalized event.
//!
//! Partner (service-provider) mode: the notification is delivered to, and encrypted
//! with the APIv3 key of, the service provider, so `mch_id`/`app_id` carry
//! `sp_mchid`/`sp_appid` there — the account configured in payhook, which is what the
//! merchant check compares with. The sub-merchant that receives the money goes into
//! `payee` (`sub_mchid`; in direct mode `payee` is `mchid`), and `payer` is the
//! openid under `app_id` (`sp_openid` in partner mode).

use serde::Deserialize;

use crate::error::VerifyError;
use crate::event::{Kind, Normalized, Status};

/// What a resource says, ready for `VerifiedNotification::new`.
#[derive(Debug)]
pub(super) struct Normalization {
    pub kind: Kind,
    pub status: Status,
    pub fields: Normalized,
}

/// Normalizes the decrypted `plaintext` of a notification of `event_type`.
/// `mch_id` is the configured merchant: a payment or refund naming another is refused.
/// Unknown event types never fail: they become [`Kind::Other`].
pub(super) fn normalize(
    event_type: &str,
    create_time: Option<String>,
    plaintext: &[u8],
    mch_id: &str,
) -> Result<Normalization, VerifyError> {
    let mut n = if event_type.starts_with("TRANSACTION.") {
        let t: Transaction = parse(plaintext, "transaction resource")?;
        if t.out_trade_no.is_none() && t.combine_out_trade_no.is_some() {
            // A combined payment (合单) carries several sub-orders under one event
            // type; payhook does not split them, so it is published uninterpreted
            // rather than refused until WeChat gives up.
            other(event_type, plaintext)
        } else {
            transaction(t, mch_id)?
        }
    } else if event_type.starts_with("REFUND.") {
        refund(event_type, parse(plaintext, "refund resource")?, mch_id)?
    } else {
        other(event_type, plaintext)
    };
    n.fields.event_type = Some(event_type.to_owned());
    if n.fields.event_time.is_none() {
        n.fields.event_time = create_time;
    }
    Ok(n)
}

#[derive(Debug, Deserialize)]
struct Transaction {
    appid: Option<String>,
    mchid: Option<String>,
    sp_appid: Option<String>,
    sp_mchid: Option<String>,
    sub_mchid: Option<String>,
    out_trade_no: Option<String>,
    /// Present instead of `out_trade_no` in combined-payment (合单) notifications.
    combine_out_trade_no: Option<String>,
    transaction_id: Option<String>,
    trade_state: Option<String>,
    success_time: Option<String>,
    payer: Option<Payer>,
    amount: Option<TransactionAmount>,
}

#[derive(Debug, Deserialize)]
struct Payer {
    openid: Option<String>,
    sp_openid: Option<String>,
    sub_openid: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TransactionAmount {
    total: Option<i64>,
    payer_total: Option<i64>,
    currency: Option<String>,
}

fn transaction(t: Transaction, mch_id: &str) -> Result<Normalization, VerifyError> {
    let named_mch = t.mchid.or(t.sp_mchid);
    check_merchant(named_mch.as_deref(), mch_id)?;
    let out_trade_no = t
        .out_trade_no
        .filter(|s| !s.is_empty())
        .ok_or(VerifyError::MissingField("out_trade_no"))?;
    let trade_state = t
        .trade_state
        .filter(|s| !s.is_empty())
        .ok_or(VerifyError::MissingField("trade_state"))?;
    let (kind, status) = match trade_state.as_str() {
        // REFUND: the trade was paid and later (partly) refunded; refunds have their
        // own notifications and transitions.
        "SUCCESS" | "REFUND" => (Kind::Payment, Status::Paid),
        "NOTPAY" | "USERPAYING" => (Kind::Payment, Status::Pending),
        "CLOSED" | "REVOKED" => (Kind::Close, Status::Closed),
        "PAYERROR" => (Kind::Payment, Status::Failed),
        _ => (Kind::Payment, Status::Other),
    };
    let amount = t.amount;
    let payer = t
        .payer
        .and_then(|p| p.openid.or(p.sp_openid).or(p.sub_openid));
    let fields = Normalized {
        out_trade_no: Some(out_trade_no),
        provider_trade_no: t.transaction_id,
        provider_status: trade_state,
        total_amount: non_negative(amount.as_ref().and_then(|a| a.total), "amount.total")?,
        paid_amount: non_negative(
            amount.as_ref().and_then(|a| a.payer_total),
            "amount.payer_total",
        )?,
        currency: amount
            .and_then(|a| a.currency)
            .unwrap_or_else(|| CNY.into()),
        app_id: t.appid.or(t.sp_appid),
        payee: t.sub_mchid.or_else(|| named_mch.clone()),
        mch_id: named_mch,
        payer,
        event_time: t.success_time,
        ..Normalized::default()
    };
    Ok(Normalization {
        kind,
        status,
        fields,
    })
}

#[derive(Debug, Deserialize)]
struct Refund {
    mchid: Option<String>,
    sp_mchid: Option<String>,
    sub_mchid: Option<String>,
    out_trade_no: Option<String>,
    transaction_id: Option<String>,
    out_refund_no: Option<String>,
    refund_id: Option<String>,
    refund_status: Option<String>,
    success_time: Option<String>,
    amount: Option<RefundAmount>,
}

#[derive(Debug, Deserialize)]
struct RefundAmount {
    total: Option<i64>,
    refund: Option<i64>,
    payer_total: Option<i64>,
    currency: Option<String>,
}

fn refund(event_type: &str, r: Refund, mch_id: &str) -> Result<Normalization, VerifyError> {
    let named_mch = r.mchid.or(r.sp_mchid);
    check_merchant(named_mch.as_deref(), mch_id)?;
    let out_refund_no = r
        .out_refund_no
        .filter(|s| !s.is_empty())
        .ok_or(VerifyError::MissingField("out_refund_no"))?;
    // The event type says the same as refund_status; the payload wins when present.
    let refund_status = r
        .refund_status
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| event_type.trim_start_matches("REFUND.").to_owned());
    let status = match refund_status.as_str() {
        "SUCCESS" => Status::RefundSucceeded,
        "ABNORMAL" => Status::RefundAbnormal,
        "CLOSED" => Status::RefundClosed,
        "PROCESSING" => Status::RefundProcessing,
        _ => Status::Other,
    };
    let amount = r.amount;
    let fields = Normalized {
        out_trade_no: r.out_trade_no,
        provider_trade_no: r.transaction_id,
        provider_status: refund_status,
        total_amount: non_negative(amount.as_ref().and_then(|a| a.total), "amount.total")?,
        paid_amount: non_negative(
            amount.as_ref().and_then(|a| a.payer_total),
            "amount.payer_total",
        )?,
        // WeChat: the amount of this refund, not the trade's running total.
        refund_amount: non_negative(amount.as_ref().and_then(|a| a.refund), "amount.refund")?,
        refund_amount_cumulative: false,
        currency: amount
            .and_then(|a| a.currency)
            .unwrap_or_else(|| CNY.into()),
        out_refund_no: Some(out_refund_no),
        provider_refund_no: r.refund_id,
        payee: r.sub_mchid.or_else(|| named_mch.clone()),
        mch_id: named_mch,
        event_time: r.success_time,
        ..Normalized::default()
    };
    Ok(Normalization {
        kind: Kind::Refund,
        status,
        fields,
    })
}

/// An event type payhook does not interpret: kept and published as such. The
/// resource may not even be a JSON object; only the merchant and app it names are
/// picked out (direct, partner or combined-payment field names).
fn other(event_type: &str, plaintext: &[u8]) -> Normalization {
    let object = serde_json::from_slice::<serde_json::Value>(plaintext).ok();
    let text = |name: &str| {
        object
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    Normalization {
        kind: Kind::Other,
        status: Status::Other,
        fields: Normalized {
            provider_status: event_type.to_owned(),
            mch_id: ["mchid", "sp_mchid", "combine_mchid"]
                .into_iter()
                .find_map(text),
            app_id: ["appid", "sp_appid", "combine_appid"]
                .into_iter()
                .find_map(text),
            currency: CNY.into(),
            ..Normalized::default()
        },
    }
}

const CNY: &str = "CNY";

fn check_merchant(named: Option<&str>, configured: &str) -> Result<(), VerifyError> {
    match named {
        Some(named) if named != configured => Err(VerifyError::MerchantMismatch("mchid")),
        _ => Ok(()),
    }
}

fn non_negative(fen: Option<i64>, field: &'static str) -> Result<Option<i64>, VerifyError> {
    match fen {
        Some(v) if v < 0 => Err(VerifyError::Amount(field)),
        _ => Ok(fen),
    }
}

/// Parses a decrypted resource. Serde's message may quote values from the payload
/// (openids, order numbers), so only the error category and position are kept.
fn parse<'a, T: Deserialize<'a>>(plaintext: &'a [u8], what: &str) -> Result<T, VerifyError> {
    serde_json::from_slice(plaintext).map_err(|e| json_error(what, &e))
}

/// A [`VerifyError::Malformed`] for a JSON error, without any payload text.
pub(super) fn json_error(what: &str, e: &serde_json::Error) -> VerifyError {
    VerifyError::Malformed(format!(
        "{what}: {:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    ))
}
