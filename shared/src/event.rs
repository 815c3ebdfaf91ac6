//! The normalized event and the internal envelope.
//!
//! Trust is a type: a [`VerifiedNotification`] can only be constructed inside this
//! crate, by a provider module after the signature (or decryption) checked out, and an
//! [`Envelope`] — the only thing the receiver publishes — can only be built from one
//! (or, in the worker's reconciler, from a verified query response).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Version of the envelope's JSON schema. The worker parks unknown versions.
pub const SCHEMA_VERSION: u32 = 1;

/// The payment provider (and protocol generation) a notification came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Alipay,
    WechatV2,
    WechatV3,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Alipay, Provider::WechatV2, Provider::WechatV3];

    /// The label used in routes, routing keys and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alipay => "alipay",
            Self::WechatV2 => "wechat_v2",
            Self::WechatV3 => "wechat_v3",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Payment,
    Refund,
    Close,
    /// A verified notification of a type payhook does not interpret (kept, published).
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Refund => "refund",
            Self::Close => "close",
            Self::Other => "other",
        }
    }
}

/// Where an envelope came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Notify,
    Reconcile,
}

/// The business state a notification asserts (the target of a transition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Payment not completed yet (e.g. `WAIT_BUYER_PAY`, `NOTPAY`, `USERPAYING`).
    Pending,
    /// Paid (`TRADE_SUCCESS`, `TRADE_FINISHED`, `SUCCESS`).
    Paid,
    /// Closed unpaid (`TRADE_CLOSED` without refund, `CLOSED`, `REVOKED`).
    Closed,
    /// Payment failed (`PAYERROR`).
    Failed,
    /// A refund succeeded.
    RefundSucceeded,
    /// A refund is in progress (`PROCESSING`, `CHANGE` pending).
    RefundProcessing,
    /// A refund was closed / failed (`REFUNDCLOSE`, `CLOSED`).
    RefundClosed,
    /// A refund is abnormal and needs a person (`ABNORMAL`, `CHANGE`).
    RefundAbnormal,
    /// Not interpreted.
    Other,
}

impl Status {
    /// The status as stored and in reconciliation ids (`PAID`, `REFUND_SUCCEEDED`, …),
    /// the same text as its JSON form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Paid => "PAID",
            Self::Closed => "CLOSED",
            Self::Failed => "FAILED",
            Self::RefundSucceeded => "REFUND_SUCCEEDED",
            Self::RefundProcessing => "REFUND_PROCESSING",
            Self::RefundClosed => "REFUND_CLOSED",
            Self::RefundAbnormal => "REFUND_ABNORMAL",
            Self::Other => "OTHER",
        }
    }
}

/// The normalized fields every provider maps onto. Money in minor units (fen).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Normalized {
    /// Merchant order number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    /// Provider trade id (`trade_no` / `transaction_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_trade_no: Option<String>,
    /// The provider's own status text, verbatim (`TRADE_SUCCESS`, `SUCCESS`, …).
    pub provider_status: String,
    /// The provider's event type (`trade_status_sync`, `TRANSACTION.SUCCESS`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Order total in fen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<i64>,
    /// Amount the buyer actually paid in fen (`buyer_pay_amount`, `payer_total`, `cash_fee`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_amount: Option<i64>,
    /// Refund amount in fen. Alipay: cumulative `refund_fee` of the trade; WeChat: this refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_amount: Option<i64>,
    /// Whether `refund_amount` is cumulative over the trade (Alipay) or this refund only.
    #[serde(default)]
    pub refund_amount_cumulative: bool,
    /// ISO 4217 currency, `CNY` when the provider does not say.
    pub currency: String,
    /// Merchant refund number (Alipay `out_biz_no`, WeChat `out_refund_no`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_refund_no: Option<String>,
    /// Provider refund id (WeChat `refund_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_refund_no: Option<String>,
    /// The app the notification names (Alipay `app_id`, WeChat `appid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The merchant id the notification names (WeChat `mch_id`/`mchid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mch_id: Option<String>,
    /// The payee (Alipay `seller_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payee: Option<String>,
    /// The payer (Alipay `buyer_id`, WeChat `openid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// When the provider says the event happened, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
}

/// The raw notification, kept for audit and re-verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawNotification {
    /// The body exactly as received, when it is UTF-8 (always, in practice: forms are
    /// percent-encoded ASCII, XML and JSON are UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body in standard Base64 when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// The headers that took part in verification, name → value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

impl RawNotification {
    pub(crate) fn new(body: &[u8], headers: Vec<(String, String)>) -> Self {
        use base64::Engine as _;
        match std::str::from_utf8(body) {
            Ok(text) => Self {
                body: Some(text.to_owned()),
                body_base64: None,
                headers,
            },
            Err(_) => Self {
                body: None,
                body_base64: Some(base64::engine::general_purpose::STANDARD.encode(body)),
                headers,
            },
        }
    }
}

/// A notification whose authenticity has been established. Only the provider modules
/// of this crate can construct one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNotification {
    provider: Provider,
    /// The provider's identity of this notification (Alipay `notify_id`, V3 `id`, V2
    /// `transaction_id:result_code` or `out_refund_no:refund_status`).
    notification_id: String,
    kind: Kind,
    status: Status,
    fields: Normalized,
    raw: RawNotification,
}

impl VerifiedNotification {
    pub(crate) fn new(
        provider: Provider,
        notification_id: String,
        kind: Kind,
        status: Status,
        fields: Normalized,
        raw: RawNotification,
    ) -> Self {
        Self {
            provider,
            notification_id,
            kind,
            status,
            fields,
            raw,
        }
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }
    pub fn notification_id(&self) -> &str {
        &self.notification_id
    }
    pub fn kind(&self) -> Kind {
        self.kind
    }
    pub fn status(&self) -> Status {
        self.status
    }
    pub fn fields(&self) -> &Normalized {
        &self.fields
    }
    pub fn raw(&self) -> &RawNotification {
        &self.raw
    }
}

/// What a provider's verified answer to a payment query (the reconciler's
/// `alipay.trade.query`, WeChat V3 transaction query, V2 `orderquery`) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentAnswer {
    /// The provider does not know the order: the buyer never opened it (yet). Carries
    /// the close this proves **once the order has expired** (an expired order can no
    /// longer be paid); publish it only then. Even a premature close could not undo a
    /// later payment: the state machine ranks PAID above CLOSED.
    NotCreated(Box<VerifiedNotification>),
    /// The order as a notification would have described it.
    Found(Box<VerifiedNotification>),
}

/// The message published on `payhook.work`: versioned JSON.
///
/// **Only verified data is published**, and the type says so: an envelope is built
/// from a [`VerifiedNotification`] ([`Envelope::from_verified`]), which only the
/// provider modules' verification constructs, or read back from the broker (whose
/// permissions let only receivers and the reconciler publish to the work queue). Its
/// content is read-only: [`EnvelopeData`] through `Deref`, so `envelope.fields` reads
/// and nothing writes. Tests build arbitrary envelopes with the `testing` feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Envelope(EnvelopeData);

/// The content of an [`Envelope`], read through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeData {
    pub schema_version: u32,
    /// Dedup identity of the notification: `<provider>:<merchant>:<notification id>`.
    /// Also the AMQP `message_id`.
    pub event_id: String,
    /// Identity of the business transition this notification asserts, or `None` for
    /// kinds without one (`other`, `pending`): see [`transition_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition_key: Option<String>,
    pub provider: Provider,
    /// The configured merchant name (the route's `{merchant}` segment).
    pub merchant: String,
    pub kind: Kind,
    pub status: Status,
    pub source: Source,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub request_id: String,
    /// W3C `traceparent` of the span that published it (`crate::trace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub fields: Normalized,
    pub raw: RawNotification,
}

impl Envelope {
    /// Wraps a verified notification for publication.
    pub fn from_verified(
        verified: VerifiedNotification,
        merchant: &str,
        source: Source,
        received_at: OffsetDateTime,
        request_id: String,
    ) -> Self {
        let VerifiedNotification {
            provider,
            notification_id,
            kind,
            status,
            fields,
            raw,
        } = verified;
        Self(EnvelopeData {
            schema_version: SCHEMA_VERSION,
            event_id: format!("{provider}:{merchant}:{notification_id}"),
            transition_key: transition_key(provider, merchant, status, &fields),
            provider,
            merchant: merchant.to_owned(),
            kind,
            status,
            source,
            received_at,
            request_id,
            traceparent: None,
            fields,
            raw,
        })
    }

    /// The envelope published under the span `traceparent`.
    pub fn with_traceparent(mut self, traceparent: &crate::trace::TraceParent) -> Self {
        self.0.traceparent = Some(traceparent.to_string());
        self
    }

    /// An envelope with any content, for tests (feature `testing`): production code
    /// builds envelopes only from verified notifications.
    #[cfg(any(test, feature = "testing"))]
    pub fn from_data(data: EnvelopeData) -> Self {
        Self(data)
    }

    /// The content, to change in a test and build again with [`Envelope::from_data`]
    /// (feature `testing`).
    #[cfg(any(test, feature = "testing"))]
    pub fn into_data(self) -> EnvelopeData {
        self.0
    }

    /// The routing key on `payhook.notifications`: `<provider>.<kind>`.
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.provider, self.kind.as_str())
    }
}

impl std::ops::Deref for Envelope {
    type Target = EnvelopeData;

    fn deref(&self) -> &EnvelopeData {
        &self.0
    }
}

/// The identity of a business transition:
/// payment `(provider, merchant, out_trade_no, target state)`, refund
/// `(provider, merchant, out_refund_no, refund status)`. Different notifications of
/// the same transition (a resend with a new id, a reconciliation result) share it.
pub fn transition_key(
    provider: Provider,
    merchant: &str,
    status: Status,
    fields: &Normalized,
) -> Option<String> {
    let state = match status {
        Status::Paid => "PAID",
        Status::Closed => "CLOSED",
        Status::Failed => "FAILED",
        Status::RefundSucceeded => "REFUND_SUCCEEDED",
        Status::RefundClosed => "REFUND_CLOSED",
        Status::RefundAbnormal => "REFUND_ABNORMAL",
        Status::Pending | Status::RefundProcessing | Status::Other => return None,
    };
    let is_refund = matches!(
        status,
        Status::RefundSucceeded | Status::RefundClosed | Status::RefundAbnormal
    );
    let subject = if is_refund {
        // Alipay full refunds may come without out_biz_no: the trade itself is the refund.
        fields
            .out_refund_no
            .as_deref()
            .or(fields.out_trade_no.as_deref())?
    } else {
        fields.out_trade_no.as_deref()?
    };
    let class = if is_refund { "refund" } else { "payment" };
    Some(format!("{provider}:{merchant}:{class}:{subject}:{state}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paid(out_trade_no: &str) -> VerifiedNotification {
        VerifiedNotification::new(
            Provider::Alipay,
            "n1".into(),
            Kind::Payment,
            Status::Paid,
            Normalized {
                out_trade_no: Some(out_trade_no.into()),
                provider_status: "TRADE_SUCCESS".into(),
                currency: "CNY".into(),
                total_amount: Some(10),
                ..Normalized::default()
            },
            RawNotification::new(b"a=b", vec![]),
        )
    }

    #[test]
    fn envelope_identities_name_provider_and_merchant() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let env = Envelope::from_verified(paid("o1"), "shop", Source::Notify, at, "r".into());
        assert_eq!(env.event_id, "alipay:shop:n1");
        assert_eq!(
            env.transition_key.as_deref(),
            Some("alipay:shop:payment:o1:PAID")
        );
        assert_eq!(env.routing_key(), "alipay.payment");
    }

    #[test]
    fn status_text_is_its_json_form() {
        for status in [
            Status::Pending,
            Status::Paid,
            Status::Closed,
            Status::Failed,
            Status::RefundSucceeded,
            Status::RefundProcessing,
            Status::RefundClosed,
            Status::RefundAbnormal,
            Status::Other,
        ] {
            let json = serde_json::to_string(&status).expect("serializes");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
    }

    #[test]
    fn envelope_json_round_trips() {
        let env = Envelope::from_verified(
            paid("o1"),
            "shop",
            Source::Notify,
            OffsetDateTime::UNIX_EPOCH,
            "r".into(),
        );
        let json = serde_json::to_vec(&env).expect("serializes");
        let back: Envelope = serde_json::from_slice(&json).expect("deserializes");
        assert_eq!(back, env);
    }

    #[test]
    fn non_utf8_body_is_kept_as_base64() {
        let raw = RawNotification::new(&[0xff, 0xfe], vec![]);
        assert_eq!(raw.body, None);
        assert_eq!(raw.body_base64.as_deref(), Some("//4="));
    }
}
