//! A payment-notification request end to end: signature, envelope, decryption,
//! normalization.

use secrecy::ExposeSecret as _;
use serde::Deserialize;

use crate::clock::Clock;
use crate::error::VerifyError;
use crate::event::{Provider, RawNotification, VerifiedNotification};

use super::V3Merchant;
use super::normalize::{json_error, normalize};
use super::resource::{RESOURCE_ALGORITHM, decrypt_resource};
use super::signature::{V3Headers, verify_signature};

/// The notification envelope. Unknown fields are ignored; `resource_type`,
/// `summary` and `resource.original_type` are informational only and stay in the
/// raw body.
#[derive(Debug, Deserialize)]
struct Envelope {
    id: Option<String>,
    create_time: Option<String>,
    event_type: Option<String>,
    resource: Option<EncryptedResource>,
}

#[derive(Debug, Deserialize)]
struct EncryptedResource {
    algorithm: Option<String>,
    ciphertext: Option<String>,
    associated_data: Option<String>,
    nonce: Option<String>,
}

/// Verifies and decrypts a WeChat Pay APIv3 notification for `merchant`.
///
/// Order matters: the signature over the raw `body` is checked before any JSON is
/// parsed, then the envelope is read, the resource decrypted with the APIv3 key
/// (which authenticates it a second time) and normalized. A verified notification of
/// an event type payhook does not know is returned as [`crate::event::Kind::Other`].
pub fn verify_notification(
    merchant: &V3Merchant,
    headers: &V3Headers<'_>,
    body: &[u8],
    clock: &dyn Clock,
) -> Result<VerifiedNotification, VerifyError> {
    verify_signature(&merchant.keys, headers, body, clock)?;

    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| json_error("notification body", &e))?;
    let id = required(envelope.id, "id")?;
    let event_type = required(envelope.event_type, "event_type")?;
    let resource = envelope
        .resource
        .ok_or(VerifyError::MissingField("resource"))?;
    let algorithm = required(resource.algorithm, "resource.algorithm")?;
    if algorithm != RESOURCE_ALGORITHM {
        return Err(VerifyError::UnsupportedAlgorithm(algorithm));
    }
    let ciphertext = required(resource.ciphertext, "resource.ciphertext")?;
    let nonce = required(resource.nonce, "resource.nonce")?;
    let associated_data = resource.associated_data.unwrap_or_default();

    let plaintext = decrypt_resource(
        merchant.api_v3_key.expose_secret().as_bytes(),
        &nonce,
        &associated_data,
        &ciphertext,
    )?;
    let n = normalize(
        &event_type,
        envelope.create_time,
        &plaintext,
        &merchant.mch_id,
    )?;
    let raw = RawNotification::new(body, headers.to_pairs());
    Ok(VerifiedNotification::new(
        Provider::WechatV3,
        id,
        n.kind,
        n.status,
        n.fields,
        raw,
    ))
}

fn required(value: Option<String>, field: &'static str) -> Result<String, VerifyError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(VerifyError::MissingField(field))
}
