//! Turning an untrusted APIv2 notification body into a [`VerifiedNotification`].
//!
//! Payment notifications are authenticated by their `sign`; refund notifications by
//! their `req_info` decrypting under our key. Which one a body is depends only on
//! whether it carries `req_info`, never on a field the sender could set to choose a
//! weaker check: a body with `req_info` is authenticated by decryption alone, and only
//! the decrypted fields (plus the outer `appid`/`mch_id`) are read from it.

use secrecy::ExposeSecret as _;

use super::fields::{DEFAULT_CURRENCY, Fields, Normalization, parse_fen};
use super::sign::{SignType, verify_sign};
use super::{V2Merchant, parse_xml, refund};
use crate::error::VerifyError;
use crate::event::{Kind, Normalized, Provider, RawNotification, Status, VerifiedNotification};

/// The `event_type` recorded for payment notifications (APIv2 has none of its own).
pub const PAYMENT_EVENT_TYPE: &str = "pay.notify";

/// Verifies and normalizes a payment or refund notification for `merchant`.
///
/// # Errors
/// Parsing: [`VerifyError::XmlDoctype`], [`VerifyError::Malformed`].
/// Both kinds: [`VerifyError::ProviderFailure`] unless `return_code` is `SUCCESS`.
/// Payments: [`VerifyError::MissingField`] (`sign`, `result_code`, …),
/// [`VerifyError::UnsupportedAlgorithm`], [`VerifyError::BadSignature`].
/// Refunds: [`VerifyError::Decrypt`]. Normalization: [`VerifyError::Amount`].
pub fn verify_notification(
    merchant: &V2Merchant,
    body: &[u8],
) -> Result<VerifiedNotification, VerifyError> {
    let params = parse_xml(body)?;
    let outer = Fields::new(&params);
    // return_code reports whether WeChat's callback itself worked; a FAIL carries no
    // signature and no business data, so there is nothing to verify or publish.
    if outer.require("return_code")? != "SUCCESS" {
        return Err(VerifyError::ProviderFailure);
    }
    let api_key = merchant.api_key.expose_secret();

    let has_req_info = params.iter().any(|(k, _)| k == "req_info");
    let normalized = if has_req_info {
        let plaintext = refund::decrypt_req_info(outer.get("req_info").unwrap_or(""), api_key)?;
        // Bytes that decrypt with valid padding but are not a flat <root> document are
        // what a wrong key (1 in ~256 chance of valid padding) or a spliced ciphertext
        // yields: not authenticated, so reported as a decryption failure.
        let inner_params = parse_xml(&plaintext).map_err(|error| {
            tracing::debug!(
                reason = error.reason(),
                "req_info plaintext is not flat XML"
            );
            VerifyError::Decrypt
        })?;
        refund::normalize(&Fields::new(&inner_params), &outer)?
    } else {
        let received = outer.require("sign")?;
        let sign_type = SignType::from_field(outer.get("sign_type"))?;
        verify_sign(&params, api_key, sign_type, received)?;
        normalize_payment(&outer)?
    };

    Ok(VerifiedNotification::new(
        Provider::WechatV2,
        normalized.notification_id,
        normalized.kind,
        normalized.status,
        normalized.fields,
        RawNotification::new(body, vec![]),
    ))
}

/// Normalizes a verified payment notification.
fn normalize_payment(f: &Fields<'_>) -> Result<Normalization, VerifyError> {
    let result_code = f.require("result_code")?;
    let status = match result_code {
        "SUCCESS" => Status::Paid,
        "FAIL" => Status::Failed,
        _ => Status::Other,
    };
    let transaction_id = f.get("transaction_id");
    // A failed payment may never have been given a transaction_id: then the order
    // number is the only identity it has.
    let subject = match (transaction_id, status) {
        (Some(id), _) => id,
        (None, Status::Paid) => return Err(VerifyError::MissingField("transaction_id")),
        (None, _) => f
            .get("out_trade_no")
            .ok_or(VerifyError::MissingField("transaction_id"))?,
    };
    let total_amount = parse_fen(f, "total_fee")?;
    if status == Status::Paid && total_amount.is_none() {
        // A payment without its amount cannot be checked against the order.
        return Err(VerifyError::MissingField("total_fee"));
    }
    let fields = Normalized {
        out_trade_no: f.get("out_trade_no").map(str::to_owned),
        provider_trade_no: transaction_id.map(str::to_owned),
        provider_status: result_code.to_owned(),
        event_type: Some(PAYMENT_EVENT_TYPE.to_owned()),
        total_amount,
        paid_amount: parse_fen(f, "cash_fee")?,
        refund_amount: None,
        refund_amount_cumulative: false,
        currency: f.get("fee_type").unwrap_or(DEFAULT_CURRENCY).to_owned(),
        out_refund_no: None,
        provider_refund_no: None,
        app_id: f.get("appid").map(str::to_owned),
        mch_id: f.get("mch_id").map(str::to_owned),
        payee: None,
        payer: f.get("openid").map(str::to_owned),
        event_time: f.get("time_end").map(str::to_owned),
    };
    Ok(Normalization {
        notification_id: format!("{subject}:{result_code}"),
        kind: Kind::Payment,
        status,
        fields,
    })
}
