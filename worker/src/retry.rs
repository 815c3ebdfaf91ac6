//! Retry tiers and the parking queue.
//!
//! A transient failure re-publishes the message to retry tier `n` (a quorum queue whose
//! `x-message-ttl` dead-letters it back to the work queue after the tier's delay), with
//! the attempt count and the first/last error in headers. After the last tier — or at
//! once for a permanent error — the message goes to the parking queue with its reason.
//! The original delivery is acked only after the broker confirmed the copy, so a crash
//! in between redelivers the original (at-least-once; the apply path is idempotent).

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use payhook_shared::topology::Names;

pub const ATTEMPTS: &str = "x-payhook-attempts";
pub const FIRST_ERROR: &str = "x-payhook-first-error";
pub const LAST_ERROR: &str = "x-payhook-last-error";
pub const FIRST_FAILED_AT: &str = "x-payhook-first-failed-at";
pub const PARK_REASON: &str = "x-payhook-park-reason";
pub const PARKED_AT: &str = "x-payhook-parked-at";

/// Longest error text kept in a header (errors never carry secrets, but may be long).
const MAX_ERROR_LEN: usize = 512;

/// Why a message was parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkReason {
    /// Not a JSON envelope of ours.
    BadEnvelope,
    /// An envelope schema version this worker does not know.
    UnknownSchemaVersion,
    /// The database refused it for good.
    Permanent,
    /// Transient failures outlasted every retry tier.
    RetriesExhausted,
}

impl ParkReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadEnvelope => "bad_envelope",
            Self::UnknownSchemaVersion => "unknown_schema_version",
            Self::Permanent => "permanent_error",
            Self::RetriesExhausted => "retries_exhausted",
        }
    }
}

/// The attempt count carried by a message (0 for a first delivery).
pub fn attempts(properties: &BasicProperties) -> u32 {
    match header(properties, ATTEMPTS) {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

/// A string header's value.
pub fn string_header(properties: &BasicProperties, name: &str) -> Option<String> {
    match header(properties, name) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
}

fn truncate(text: &str) -> String {
    let mut end = text.len().min(MAX_ERROR_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Headers for the next hop: the original ones plus attempts and errors.
fn next_headers(properties: &BasicProperties, attempts: u32, error: &str) -> FieldTable {
    let mut headers = properties.headers().clone().unwrap_or_default();
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut put = |k: &str, v: AMQPValue| {
        headers.insert(ShortString::from(k), v);
    };
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    if string_header(properties, FIRST_ERROR).is_none() {
        put(FIRST_ERROR, text(&truncate(error)));
        put(FIRST_FAILED_AT, text(&now));
    }
    put(LAST_ERROR, text(&truncate(error)));
    put(ATTEMPTS, AMQPValue::LongUInt(attempts));
    headers
}

/// A copy that the broker did not take: the original must not be acked.
#[derive(Debug, thiserror::Error)]
pub enum HopError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("copy returned or nacked by the broker")]
    NotConfirmed,
    #[error("no publisher confirm within {0:?}")]
    TimedOut(std::time::Duration),
}

/// How long a hop (retry tier, parking, a parked message's copy) waits for the broker's
/// confirm: a stalled broker must not hold a consumer slot for ever.
pub const HOP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Publishes `data` persistent to `queue` through the default exchange and waits for
/// the confirm, at most [`HOP_DEADLINE`] (`payhook_shared::amqp::publish_confirmed`).
pub(crate) async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    data: &[u8],
    properties: BasicProperties,
) -> Result<(), HopError> {
    use payhook_shared::amqp::PublishError;
    payhook_shared::amqp::publish_confirmed(channel, "", queue, data, properties, HOP_DEADLINE)
        .await
        .map_err(|error| match error {
            PublishError::Channel(error) => HopError::Broker(error),
            PublishError::Returned | PublishError::Nacked => HopError::NotConfirmed,
            PublishError::TimedOut(after) => HopError::TimedOut(after),
        })
}

/// Where a transiently failed message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rescheduled {
    /// To retry tier `n` (0-based).
    Retry(usize),
    /// Every tier used: parked.
    Parked,
}

/// Sends a transiently failed message to its next retry tier, or parks it when every
/// tier has been used.
pub async fn retry_or_park(
    channel: &Channel,
    names: &Names,
    delays_ms: &[u32],
    data: &[u8],
    properties: &BasicProperties,
    error: &str,
) -> Result<Rescheduled, HopError> {
    let done = attempts(properties);
    let tier = done as usize;
    if tier >= delays_ms.len() {
        park(
            channel,
            names,
            data,
            properties,
            ParkReason::RetriesExhausted,
            error,
        )
        .await?;
        return Ok(Rescheduled::Parked);
    }
    let headers = next_headers(properties, done + 1, error);
    publish_confirmed(
        channel,
        &names.retry(tier),
        data,
        properties.clone().with_headers(headers),
    )
    .await?;
    Ok(Rescheduled::Retry(tier))
}

/// Parks a message with its reason, attempts and errors in headers.
pub async fn park(
    channel: &Channel,
    names: &Names,
    data: &[u8],
    properties: &BasicProperties,
    reason: ParkReason,
    error: &str,
) -> Result<(), HopError> {
    let mut headers = next_headers(properties, attempts(properties), error);
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    headers.insert(
        PARK_REASON.into(),
        AMQPValue::LongString(reason.as_str().into()),
    );
    headers.insert(PARKED_AT.into(), AMQPValue::LongString(now.as_str().into()));
    publish_confirmed(
        channel,
        &names.parked,
        data,
        properties.clone().with_headers(headers),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_default_to_zero_and_read_back() {
        assert_eq!(attempts(&BasicProperties::default()), 0);
        let props = BasicProperties::default().with_headers(next_headers(
            &BasicProperties::default(),
            3,
            "boom",
        ));
        assert_eq!(attempts(&props), 3);
        assert_eq!(string_header(&props, FIRST_ERROR).as_deref(), Some("boom"));
        // The first error is kept across hops; the last one moves on.
        let again = BasicProperties::default().with_headers(next_headers(&props, 4, "bang"));
        assert_eq!(string_header(&again, FIRST_ERROR).as_deref(), Some("boom"));
        assert_eq!(string_header(&again, LAST_ERROR).as_deref(), Some("bang"));
    }

    #[test]
    fn long_errors_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_ERROR_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
