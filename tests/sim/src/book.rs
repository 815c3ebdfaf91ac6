//! The order book: what the simulated providers believe happened. It is the truth a
//! test compares payhook's database against, and what the query APIs answer from.
//!
//! Every state change goes through [`Book`], which refuses transitions a provider
//! would refuse (refunding more than was paid, closing a paid order) and records the
//! notification the change produces.

use std::collections::BTreeMap;
use std::time::Duration;

use payhook_shared::event::Provider;
use serde::Serialize;
use time::OffsetDateTime;

use super::SimError;

/// An order's state as the provider sees it (the names of payhook's payment states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderState {
    Pending,
    Paid,
    PartiallyRefunded,
    Refunded,
    Closed,
}

impl OrderState {
    /// `PENDING`, `PAID`, `PARTIALLY_REFUNDED`, `REFUNDED` or `CLOSED`: the value of
    /// payhook's `payments.state` for the same order.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Paid => "PAID",
            Self::PartiallyRefunded => "PARTIALLY_REFUNDED",
            Self::Refunded => "REFUNDED",
            Self::Closed => "CLOSED",
        }
    }
}

/// One successful refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundTruth {
    /// The merchant's refund number (Alipay `out_request_no` / `out_biz_no`, WeChat
    /// `out_refund_no`).
    pub out_refund_no: String,
    /// The provider's refund id (WeChat `refund_id`; Alipay has none, kept for symmetry).
    pub refund_id: String,
    pub amount_fen: i64,
    /// Cumulative refunded amount of the order after this refund.
    pub cumulative_fen: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// One order and everything that happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderTruth {
    pub provider: Provider,
    /// The merchant name in payhook's notify URL (`m1`).
    pub merchant: String,
    pub out_trade_no: String,
    pub total_fen: i64,
    pub state: OrderState,
    /// Alipay `trade_no` / WeChat `transaction_id`, known once paid.
    pub provider_trade_no: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub paid_at: Option<OffsetDateTime>,
    pub refunded_fen: i64,
    pub refunds: Vec<RefundTruth>,
    /// Alipay only: `TRADE_FINISHED` was announced (no refund possible any more).
    pub finished: bool,
    /// The notifications this order produced, oldest first.
    pub notifications: Vec<String>,
}

/// What a notification announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    Payment,
    Refund,
    Close,
    Finished,
}

/// One delivery attempt of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// When its answer came (or the request failed), counted from the notification's
    /// creation, in real (scaled) time.
    pub at: Duration,
    /// The HTTP status, or `None` when the request failed (refused, timed out).
    pub status: Option<u16>,
    /// Whether the answer was the provider's "received" answer.
    pub acked: bool,
    /// The fault this attempt carried, if any (`corrupt_signature`, `stale_timestamp`,
    /// `sign_test_probe`, `duplicate`).
    pub fault: Option<&'static str>,
}

/// One notification (all its resends share the id) and its delivery so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationTruth {
    /// Alipay `notify_id`, WeChat V3 `id`; for WeChat V2 (which has none) an id of the
    /// simulator's own (`v2-…`).
    pub id: String,
    pub provider: Provider,
    pub out_trade_no: String,
    pub kind: NotificationKind,
    /// The refund it announces (refund notifications).
    pub out_refund_no: Option<String>,
    /// Every request sent (resends, duplicates and probes included).
    pub attempts: Vec<Attempt>,
    /// The provider got its "received" answer; no more resends.
    pub acked: bool,
    /// Dropped by fault injection: never sent, only a query can find the change.
    pub dropped: bool,
    /// The resend schedule ran out without an ack.
    pub gave_up: bool,
    /// The fault names injected into this notification.
    pub faults: Vec<&'static str>,
}

impl NotificationTruth {
    /// Requests sent, probes and duplicates included.
    pub fn sent(&self) -> usize {
        self.attempts.len()
    }

    /// Whether delivery is over (acked, dropped or given up).
    pub fn settled(&self) -> bool {
        self.acked || self.dropped || self.gave_up
    }
}

/// The order book. Keys are `(provider, out_trade_no)`.
#[derive(Debug, Default)]
pub(crate) struct Book {
    pub orders: BTreeMap<(ProviderKey, String), OrderTruth>,
    pub notifications: BTreeMap<String, NotificationTruth>,
    /// Notification ids in creation order.
    pub order_of_notifications: Vec<String>,
}

/// [`Provider`] as an ordered map key.
pub(crate) type ProviderKey = u8;

pub(crate) fn key(provider: Provider) -> ProviderKey {
    match provider {
        Provider::Alipay => 0,
        Provider::WechatV2 => 1,
        Provider::WechatV3 => 2,
    }
}

impl Book {
    pub fn order(&self, provider: Provider, out_trade_no: &str) -> Option<&OrderTruth> {
        self.orders.get(&(key(provider), out_trade_no.to_owned()))
    }

    pub fn order_mut(
        &mut self,
        provider: Provider,
        out_trade_no: &str,
    ) -> Result<&mut OrderTruth, SimError> {
        self.orders
            .get_mut(&(key(provider), out_trade_no.to_owned()))
            .ok_or_else(|| SimError::UnknownOrder(out_trade_no.to_owned()))
    }

    /// A refund of `provider` by its refund number (WeChat looks refunds up alone).
    pub fn refund(
        &self,
        provider: Provider,
        out_refund_no: &str,
    ) -> Option<(&OrderTruth, &RefundTruth)> {
        self.orders
            .range((key(provider), String::new())..)
            .take_while(|((p, _), _)| *p == key(provider))
            .find_map(|(_, order)| {
                order
                    .refunds
                    .iter()
                    .find(|r| r.out_refund_no == out_refund_no)
                    .map(|r| (order, r))
            })
    }

    pub fn create(
        &mut self,
        provider: Provider,
        merchant: &str,
        out_trade_no: &str,
        total_fen: i64,
    ) -> Result<(), SimError> {
        if total_fen <= 0 {
            return Err(SimError::Refused("amount must be positive".into()));
        }
        let k = (key(provider), out_trade_no.to_owned());
        if self.orders.contains_key(&k) {
            return Err(SimError::Refused(format!("order {out_trade_no} exists")));
        }
        self.orders.insert(
            k,
            OrderTruth {
                provider,
                merchant: merchant.to_owned(),
                out_trade_no: out_trade_no.to_owned(),
                total_fen,
                state: OrderState::Pending,
                provider_trade_no: None,
                paid_at: None,
                refunded_fen: 0,
                refunds: Vec::new(),
                finished: false,
                notifications: Vec::new(),
            },
        );
        Ok(())
    }

    /// Records a new notification of `order`.
    pub fn add_notification(&mut self, truth: NotificationTruth) {
        if let Some(order) = self
            .orders
            .get_mut(&(key(truth.provider), truth.out_trade_no.clone()))
        {
            order.notifications.push(truth.id.clone());
        }
        self.order_of_notifications.push(truth.id.clone());
        self.notifications.insert(truth.id.clone(), truth);
    }
}

/// Checks and applies a payment.
pub(crate) fn pay(
    order: &mut OrderTruth,
    trade_no: String,
    at: OffsetDateTime,
) -> Result<(), SimError> {
    if order.state != OrderState::Pending {
        return Err(SimError::Refused(format!(
            "cannot pay {} in state {}",
            order.out_trade_no,
            order.state.as_str()
        )));
    }
    order.state = OrderState::Paid;
    order.provider_trade_no = Some(trade_no);
    order.paid_at = Some(at);
    Ok(())
}

/// Checks and applies a refund; returns the recorded refund.
pub(crate) fn refund(
    order: &mut OrderTruth,
    out_refund_no: &str,
    refund_id: String,
    amount_fen: i64,
    at: OffsetDateTime,
) -> Result<RefundTruth, SimError> {
    if !matches!(
        order.state,
        OrderState::Paid | OrderState::PartiallyRefunded
    ) || order.finished
    {
        return Err(SimError::Refused(format!(
            "cannot refund {} in state {}{}",
            order.out_trade_no,
            order.state.as_str(),
            if order.finished { " (finished)" } else { "" }
        )));
    }
    if amount_fen <= 0 || order.refunded_fen + amount_fen > order.total_fen {
        return Err(SimError::Refused(format!(
            "refund of {amount_fen} fen exceeds what is left of {}",
            order.out_trade_no
        )));
    }
    if order
        .refunds
        .iter()
        .any(|r| r.out_refund_no == out_refund_no)
    {
        return Err(SimError::Refused(format!("refund {out_refund_no} exists")));
    }
    order.refunded_fen += amount_fen;
    order.state = if order.refunded_fen == order.total_fen {
        OrderState::Refunded
    } else {
        OrderState::PartiallyRefunded
    };
    let refund = RefundTruth {
        out_refund_no: out_refund_no.to_owned(),
        refund_id,
        amount_fen,
        cumulative_fen: order.refunded_fen,
        created_at: at,
    };
    order.refunds.push(refund.clone());
    Ok(refund)
}

/// Checks and applies an unpaid close.
pub(crate) fn close(order: &mut OrderTruth) -> Result<(), SimError> {
    if order.state != OrderState::Pending {
        return Err(SimError::Refused(format!(
            "cannot close {} in state {}",
            order.out_trade_no,
            order.state.as_str()
        )));
    }
    order.state = OrderState::Closed;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book_with_order() -> Book {
        let mut book = Book::default();
        book.create(Provider::Alipay, "m1", "o1", 1000)
            .expect("created");
        book
    }

    #[test]
    fn refunds_move_the_state_and_never_exceed_the_total() {
        let mut book = book_with_order();
        let order = book.order_mut(Provider::Alipay, "o1").expect("order");
        pay(order, "t".into(), OffsetDateTime::now_utc()).expect("paid");
        refund(order, "r1", "x".into(), 400, OffsetDateTime::now_utc()).expect("partial");
        assert_eq!(order.state, OrderState::PartiallyRefunded);
        assert!(refund(order, "r2", "x".into(), 601, OffsetDateTime::now_utc()).is_err());
        assert!(
            refund(order, "r1", "x".into(), 1, OffsetDateTime::now_utc()).is_err(),
            "same refund number"
        );
        let last = refund(order, "r2", "x".into(), 600, OffsetDateTime::now_utc()).expect("rest");
        assert_eq!(
            (order.state, last.cumulative_fen),
            (OrderState::Refunded, 1000)
        );
    }

    #[test]
    fn a_paid_order_cannot_be_closed_nor_paid_twice() {
        let mut book = book_with_order();
        let order = book.order_mut(Provider::Alipay, "o1").expect("order");
        pay(order, "t".into(), OffsetDateTime::now_utc()).expect("paid");
        assert!(close(order).is_err());
        assert!(pay(order, "t".into(), OffsetDateTime::now_utc()).is_err());
    }

    #[test]
    fn refunds_are_found_by_number_within_their_provider() {
        let mut book = book_with_order();
        book.create(Provider::WechatV3, "m1", "o1", 500)
            .expect("created");
        let order = book.order_mut(Provider::WechatV3, "o1").expect("order");
        pay(order, "t".into(), OffsetDateTime::now_utc()).expect("paid");
        refund(order, "r9", "id".into(), 100, OffsetDateTime::now_utc()).expect("refund");
        assert!(book.refund(Provider::WechatV3, "r9").is_some());
        assert!(book.refund(Provider::Alipay, "r9").is_none());
    }
}
