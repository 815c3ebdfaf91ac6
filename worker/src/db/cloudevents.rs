//! The downstream events: CloudEvents 1.0 JSON documents (structured mode), one per
//! applied transition, written to the outbox in the transaction that applies it.
//!
//! The document is built once, here, and stored whole in `outbox.payload`, with its
//! `id` also in `outbox.event_id`: every relay of the row publishes the same bytes,
//! so consumers can deduplicate on `id`.

use payhook_shared::event::{Provider, Source, Status};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// The CloudEvents specification version the documents follow.
pub const SPEC_VERSION: &str = "1.0";

/// Media type of `data`.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// What happened, as `<kind>.<state>`: the routing key's first two words and the
/// type's last two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    PaymentSucceeded,
    PaymentClosed,
    PaymentFailed,
    PaymentQuarantined,
    RefundSucceeded,
    RefundClosed,
    RefundAbnormal,
}

impl EventKind {
    /// The event announcing a transition to `status`, for statuses that have one.
    pub fn for_status(status: Status) -> Option<Self> {
        Some(match status {
            Status::Paid => Self::PaymentSucceeded,
            Status::Closed => Self::PaymentClosed,
            Status::Failed => Self::PaymentFailed,
            Status::RefundSucceeded => Self::RefundSucceeded,
            Status::RefundClosed => Self::RefundClosed,
            Status::RefundAbnormal => Self::RefundAbnormal,
            Status::Pending | Status::RefundProcessing | Status::Other => return None,
        })
    }

    /// `<kind>.<state>`, e.g. `payment.succeeded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PaymentSucceeded => "payment.succeeded",
            Self::PaymentClosed => "payment.closed",
            Self::PaymentFailed => "payment.failed",
            Self::PaymentQuarantined => "payment.quarantined",
            Self::RefundSucceeded => "refund.succeeded",
            Self::RefundClosed => "refund.closed",
            Self::RefundAbnormal => "refund.abnormal",
        }
    }

    /// The routing key on the events exchange: `<kind>.<state>.<provider>`.
    pub fn routing_key(self, provider: Provider) -> String {
        format!("{}.{provider}", self.as_str())
    }

    /// The CloudEvents `type`: `payhook.<kind>.<state>`.
    pub fn event_type(self) -> String {
        format!("payhook.{}", self.as_str())
    }
}

/// The `data` of every payhook event. Amounts in fen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventData {
    pub provider: Provider,
    pub merchant: String,
    pub out_trade_no: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_refund_no: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_trade_no: Option<String>,
    /// The payment state after the transition (`PAID`, `REFUNDED`, …).
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_amount: Option<i64>,
    /// The refund amount as the provider reported it; see `refund_amount_cumulative`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_amount: Option<i64>,
    /// `true` when `refund_amount` is the trade's running total (Alipay `refund_fee`)
    /// rather than this refund's amount (WeChat).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refund_amount_cumulative: bool,
    /// Money refunded on the payment so far, after this transition.
    pub refunded_amount: i64,
    pub currency: String,
    /// The business transition this event announces (the ledger's unique key).
    pub transition_key: String,
    /// The notification that caused it (the envelope's `event_id`).
    pub event_id: String,
    /// `notify` or `reconcile`.
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_reason: Option<String>,
}

/// A CloudEvents 1.0 document in structured JSON mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloudEvent {
    pub specversion: &'static str,
    /// Unique per event; also `outbox.event_id`.
    pub id: Uuid,
    /// `/payhook/<provider>/<merchant>`.
    pub source: String,
    /// `payhook.<kind>.<state>`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The merchant order number.
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub datacontenttype: &'static str,
    /// The CloudEvents distributed-tracing extension: the worker's span, a child of
    /// the notification's trace (`payhook_shared::trace`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub data: EventData,
    /// Not part of the document: where it is routed.
    #[serde(skip)]
    pub kind: EventKind,
}

impl CloudEvent {
    /// A new event (fresh time-ordered id) announcing `kind` with `data`.
    pub fn new(kind: EventKind, data: EventData, time: OffsetDateTime) -> Self {
        Self {
            specversion: SPEC_VERSION,
            id: Uuid::now_v7(),
            source: format!("/payhook/{}/{}", data.provider, data.merchant),
            event_type: kind.event_type(),
            subject: data.out_trade_no.clone(),
            time,
            datacontenttype: DATA_CONTENT_TYPE,
            traceparent: None,
            data,
            kind,
        }
    }

    /// The event continuing the trace of `traceparent` (the envelope's), with a span
    /// of its own; none when the envelope carries none that parses.
    pub fn continuing(mut self, traceparent: Option<&str>) -> Self {
        self.traceparent = traceparent
            .and_then(payhook_shared::trace::TraceParent::parse)
            .map(|parent| parent.child().to_string());
        self
    }

    /// `<kind>.<state>.<provider>`.
    pub fn routing_key(&self) -> String {
        self.kind.routing_key(self.data.provider)
    }

    /// The JSON document stored in `outbox.payload`. Fails only for a `time` RFC 3339
    /// cannot express (a year beyond 9999).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// An event serialized once: the apply path writes the outbox row from it and, after
/// the commit, hands it to the outbox dispatcher, so that the event goes out at once
/// instead of waiting for a relay round to read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// The CloudEvents `id`, also `outbox.event_id` (how the dispatcher marks it).
    pub event_id: Uuid,
    /// `<kind>.<state>.<provider>`.
    pub routing_key: String,
    /// The document, byte for byte what `outbox.payload` holds.
    pub payload: String,
    /// The CloudEvents `type`.
    pub event_type: String,
    /// The CloudEvents `time`, in Unix seconds (the AMQP `timestamp`).
    pub timestamp: i64,
}

impl Emitted {
    /// The outgoing form of `event`. Fails only as [`CloudEvent::to_json`] does.
    pub fn of(event: &CloudEvent) -> Result<Self, serde_json::Error> {
        Ok(Self {
            event_id: event.id,
            routing_key: event.routing_key(),
            payload: event.to_json()?,
            event_type: event.event_type.clone(),
            timestamp: event.time.unix_timestamp(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data() -> EventData {
        EventData {
            provider: Provider::WechatV3,
            merchant: "shop".into(),
            out_trade_no: "O1".into(),
            out_refund_no: Some("R1".into()),
            provider_trade_no: None,
            state: "PARTIALLY_REFUNDED".into(),
            total_amount: Some(10000),
            paid_amount: None,
            refund_amount: Some(3000),
            refund_amount_cumulative: false,
            refunded_amount: 3000,
            currency: "CNY".into(),
            transition_key: "wechat_v3:shop:refund:R1:REFUND_SUCCEEDED".into(),
            event_id: "wechat_v3:shop:n1".into(),
            source: Source::Notify,
            quarantine_reason: None,
        }
    }

    #[test]
    fn refund_event_is_a_cloudevents_1_0_document() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
        let event = CloudEvent::new(EventKind::RefundSucceeded, data(), at);
        assert_eq!(event.routing_key(), "refund.succeeded.wechat_v3");
        let doc: serde_json::Value =
            serde_json::from_str(&event.to_json().expect("serializes")).expect("JSON");
        assert_eq!(
            doc,
            json!({
                "specversion": "1.0",
                "id": event.id.to_string(),
                "source": "/payhook/wechat_v3/shop",
                "type": "payhook.refund.succeeded",
                "subject": "O1",
                "time": "2023-11-14T22:13:20Z",
                "datacontenttype": "application/json",
                "data": {
                    "provider": "wechat_v3",
                    "merchant": "shop",
                    "out_trade_no": "O1",
                    "out_refund_no": "R1",
                    "state": "PARTIALLY_REFUNDED",
                    "total_amount": 10000,
                    "refund_amount": 3000,
                    "refunded_amount": 3000,
                    "currency": "CNY",
                    "transition_key": "wechat_v3:shop:refund:R1:REFUND_SUCCEEDED",
                    "event_id": "wechat_v3:shop:n1",
                    "source": "notify",
                }
            })
        );
    }

    #[test]
    fn every_transition_status_has_a_routing_key_and_type() {
        let cases = [
            (
                Status::Paid,
                "payment.succeeded.alipay",
                "payhook.payment.succeeded",
            ),
            (
                Status::Closed,
                "payment.closed.alipay",
                "payhook.payment.closed",
            ),
            (
                Status::Failed,
                "payment.failed.alipay",
                "payhook.payment.failed",
            ),
            (
                Status::RefundSucceeded,
                "refund.succeeded.alipay",
                "payhook.refund.succeeded",
            ),
            (
                Status::RefundClosed,
                "refund.closed.alipay",
                "payhook.refund.closed",
            ),
            (
                Status::RefundAbnormal,
                "refund.abnormal.alipay",
                "payhook.refund.abnormal",
            ),
        ];
        for (status, key, event_type) in cases {
            let kind = EventKind::for_status(status).expect("a transition status");
            assert_eq!(kind.routing_key(Provider::Alipay), key);
            assert_eq!(kind.event_type(), event_type);
        }
        for status in [Status::Pending, Status::RefundProcessing, Status::Other] {
            assert_eq!(EventKind::for_status(status), None);
        }
        assert_eq!(
            EventKind::PaymentQuarantined.routing_key(Provider::WechatV2),
            "payment.quarantined.wechat_v2"
        );
    }

    #[test]
    fn ids_are_unique_per_event() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let a = CloudEvent::new(EventKind::PaymentSucceeded, data(), at);
        let b = CloudEvent::new(EventKind::PaymentSucceeded, data(), at);
        assert_ne!(a.id, b.id);
    }
}
