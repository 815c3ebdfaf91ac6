//! The state changes of the order book — create, pay, refund, close, finish — and
//! the notification each one produces (recorded in the truth, then delivered).

use std::sync::Arc;
use time::OffsetDateTime;

use payhook_shared::event::Provider;
use rand::RngExt as _;
use tokio::sync::watch;
use tokio::time::Instant;

use super::book::{self, key};
use super::delivery::Delivery;
use super::{
    Faults, Inner, NotificationKind, NotificationTruth, OrderState, SimError, Simulator, State,
    notify,
};
use crate::signer::alipay::AlipaySigner;

impl Simulator {
    /// Creates an order (buyer not paid yet): Alipay queries answer
    /// `WAIT_BUYER_PAY`, WeChat `NOTPAY`. No notification.
    pub fn create_order(
        &self,
        provider: Provider,
        out_trade_no: &str,
        total_fen: i64,
    ) -> Result<(), SimError> {
        self.inner.create_order(provider, out_trade_no, total_fen)
    }

    /// Sets the faults of every later notification of this order (instead of the
    /// rates). Faults are fixed when a notification is created: set them before the
    /// `pay` / `refund` they are for (e.g. drop the payment, then
    /// [`Self::clear_order_faults`] and deliver the refund).
    pub fn set_order_faults(
        &self,
        provider: Provider,
        out_trade_no: &str,
        faults: Faults,
    ) -> Result<(), SimError> {
        self.inner.set_order_faults(provider, out_trade_no, faults)
    }

    /// Back to the fault rates for this order's later notifications.
    pub fn clear_order_faults(&self, provider: Provider, out_trade_no: &str) {
        self.inner.clear_order_faults(provider, out_trade_no)
    }

    /// The buyer pays: Alipay `TRADE_SUCCESS`, V2 payment XML, V3
    /// `TRANSACTION.SUCCESS`. Returns the notification id.
    pub fn pay(&self, provider: Provider, out_trade_no: &str) -> Result<Option<String>, SimError> {
        self.inner.pay(provider, out_trade_no)
    }

    /// Refunds `amount_fen` under `out_refund_no`: Alipay re-sends `TRADE_SUCCESS`
    /// with the cumulative `refund_fee` (partial) or `TRADE_CLOSED` with it (full); V2
    /// `req_info` refund; V3 `REFUND.SUCCESS`. Returns the notification id.
    pub fn refund(
        &self,
        provider: Provider,
        out_trade_no: &str,
        out_refund_no: &str,
        amount_fen: i64,
    ) -> Result<Option<String>, SimError> {
        self.inner
            .refund(provider, out_trade_no, out_refund_no, amount_fen)
    }

    /// Closes an unpaid order. Alipay notifies `TRADE_CLOSED` (no `refund_fee`);
    /// WeChat does not notify closes (`None`), only queries show `CLOSED`.
    pub fn close(
        &self,
        provider: Provider,
        out_trade_no: &str,
    ) -> Result<Option<String>, SimError> {
        self.inner.close(provider, out_trade_no)
    }

    /// Alipay only: the trade ends (`TRADE_FINISHED`, after the refund period); no
    /// refund is possible afterwards. The state stays as it was.
    pub fn finish(&self, out_trade_no: &str) -> Result<Option<String>, SimError> {
        self.inner.finish(out_trade_no)
    }
}

impl Inner {
    /// [`Simulator::create_order`].
    pub(crate) fn create_order(
        self: &Arc<Self>,
        provider: Provider,
        out_trade_no: &str,
        total_fen: i64,
    ) -> Result<(), SimError> {
        self.lock()
            .book
            .create(provider, &self.merchant, out_trade_no, total_fen)
    }

    /// [`Simulator::set_order_faults`].
    pub(crate) fn set_order_faults(
        self: &Arc<Self>,
        provider: Provider,
        out_trade_no: &str,
        faults: Faults,
    ) -> Result<(), SimError> {
        let mut state = self.lock();
        state.book.order_mut(provider, out_trade_no)?;
        state
            .order_faults
            .insert((key(provider), out_trade_no.to_owned()), faults);
        Ok(())
    }

    /// [`Simulator::clear_order_faults`].
    pub(crate) fn clear_order_faults(self: &Arc<Self>, provider: Provider, out_trade_no: &str) {
        self.lock()
            .order_faults
            .remove(&(key(provider), out_trade_no.to_owned()));
    }

    /// [`Simulator::pay`].
    pub(crate) fn pay(
        self: &Arc<Self>,
        provider: Provider,
        out_trade_no: &str,
    ) -> Result<Option<String>, SimError> {
        let inner = self;
        let mut guard = inner.lock();
        let state = &mut *guard;
        let trade_no = match provider {
            Provider::Alipay => crate::signer::alipay::trade_no(out_trade_no),
            _ => Inner::wechat_id(state, "4200", 24),
        };
        let book_now = OffsetDateTime::now_utc() + state.book_offset;
        let order = state.book.order_mut(provider, out_trade_no)?;
        book::pay(order, trade_no, book_now)?;
        let order = order.clone();
        let id = inner.emit(
            state,
            provider,
            out_trade_no,
            NotificationKind::Payment,
            None,
            |id, gbk| match provider {
                Provider::Alipay => notify::alipay_payment(inner.alipay(gbk), &order, id),
                Provider::WechatV2 => notify::v2_payment(&inner.providers.wechat_v2, &order),
                Provider::WechatV3 => {
                    notify::v3_transaction(inner.platform().current(), &order, id)
                }
            },
        );
        Ok(Some(id))
    }

    /// [`Simulator::refund`].
    pub(crate) fn refund(
        self: &Arc<Self>,
        provider: Provider,
        out_trade_no: &str,
        out_refund_no: &str,
        amount_fen: i64,
    ) -> Result<Option<String>, SimError> {
        let inner = self;
        let mut guard = inner.lock();
        let state = &mut *guard;
        let refund_id = match provider {
            Provider::Alipay => String::new(),
            Provider::WechatV2 => Inner::wechat_id(state, "5000", 25),
            Provider::WechatV3 => Inner::wechat_id(state, "5030", 25),
        };
        let book_now = OffsetDateTime::now_utc() + state.book_offset;
        let order = state.book.order_mut(provider, out_trade_no)?;
        let refund = book::refund(order, out_refund_no, refund_id, amount_fen, book_now)?;
        let order = order.clone();
        let id = inner.emit(
            state,
            provider,
            out_trade_no,
            NotificationKind::Refund,
            Some(out_refund_no.to_owned()),
            |id, gbk| match provider {
                Provider::Alipay => notify::alipay_refund(inner.alipay(gbk), &order, &refund, id),
                Provider::WechatV2 => {
                    notify::v2_refund(&inner.providers.wechat_v2, &order, &refund)
                }
                Provider::WechatV3 => {
                    notify::v3_refund(inner.platform().current(), &order, &refund, id)
                }
            },
        );
        Ok(Some(id))
    }

    /// [`Simulator::close`].
    pub(crate) fn close(
        self: &Arc<Self>,
        provider: Provider,
        out_trade_no: &str,
    ) -> Result<Option<String>, SimError> {
        let inner = self;
        let mut guard = inner.lock();
        let state = &mut *guard;
        let order = state.book.order_mut(provider, out_trade_no)?;
        book::close(order)?;
        let order = order.clone();
        if provider != Provider::Alipay {
            return Ok(None);
        }
        let id = inner.emit(
            state,
            provider,
            out_trade_no,
            NotificationKind::Close,
            None,
            |id, gbk| notify::alipay_close(inner.alipay(gbk), &order, id),
        );
        Ok(Some(id))
    }

    /// [`Simulator::finish`].
    pub(crate) fn finish(self: &Arc<Self>, out_trade_no: &str) -> Result<Option<String>, SimError> {
        let inner = self;
        let mut guard = inner.lock();
        let state = &mut *guard;
        let order = state.book.order_mut(Provider::Alipay, out_trade_no)?;
        if !matches!(
            order.state,
            OrderState::Paid | OrderState::PartiallyRefunded
        ) || order.finished
        {
            return Err(SimError::Refused(format!(
                "cannot finish {out_trade_no} in state {}",
                order.state.as_str()
            )));
        }
        order.finished = true;
        let order = order.clone();
        let id = inner.emit(
            state,
            Provider::Alipay,
            out_trade_no,
            NotificationKind::Finished,
            None,
            |id, gbk| notify::alipay_finished(inner.alipay(gbk), &order, id),
        );
        Ok(Some(id))
    }
}

impl Inner {
    fn notify_url(&self, provider: Provider) -> Option<String> {
        let path = match provider {
            Provider::Alipay => "alipay",
            Provider::WechatV2 => "wechat/v2",
            Provider::WechatV3 => "wechat/v3",
        };
        self.notify_base.as_ref().map(|base| {
            format!(
                "{}/notify/{path}/{}",
                base.trim_end_matches('/'),
                self.merchant
            )
        })
    }

    /// Records a notification of `order` and starts its delivery. `build` gets the
    /// notification id and whether it is to be GBK.
    fn emit(
        self: &Arc<Self>,
        state: &mut State,
        provider: Provider,
        out_trade_no: &str,
        kind: NotificationKind,
        out_refund_no: Option<String>,
        build: impl FnOnce(&str, bool) -> notify::Payload,
    ) -> String {
        let id = match provider {
            Provider::Alipay => format!("{:032x}", state.rng.random::<u128>()),
            Provider::WechatV2 => format!("v2-{:016x}", state.rng.random::<u64>()),
            Provider::WechatV3 => uuid::Builder::from_random_bytes(state.rng.random())
                .into_uuid()
                .to_string(),
        };
        let order_key = (key(provider), out_trade_no.to_owned());
        // Always draw, so the sequence does not depend on which orders have faults.
        let drawn = state.rates.draw(&mut state.rng);
        let mut faults = state.order_faults.get(&order_key).copied().unwrap_or(drawn);
        faults.reorder &= kind == NotificationKind::Payment;
        faults.gbk &= provider == Provider::Alipay;
        faults.sign_test_probe &= provider == Provider::WechatV3;
        if provider != Provider::WechatV3 {
            faults.stale_attempts = 0;
        }
        let payload = build(&id, faults.gbk);
        let url = self.notify_url(provider);
        let mut names = faults.names();
        if url.is_none() {
            names.push("no_notify_url");
        }
        state.book.add_notification(NotificationTruth {
            id: id.clone(),
            provider,
            out_trade_no: out_trade_no.to_owned(),
            kind,
            out_refund_no,
            attempts: Vec::new(),
            acked: false,
            dropped: url.is_none(),
            gave_up: false,
            faults: names,
        });
        let order_signal = state
            .signals
            .entry(order_key)
            .or_insert_with(|| watch::channel(0).0)
            .clone();
        if let Some(url) = url {
            let delivery = Delivery {
                id: id.clone(),
                url,
                payload,
                faults,
                order_signal,
                created: Instant::now(),
            };
            self.tracker.spawn(Arc::clone(self).deliver(delivery));
        }
        id
    }

    fn wechat_id(state: &mut State, prefix: &str, digits: u32) -> String {
        let bound = 10u128.pow(digits);
        let n = state.rng.random_range(0..bound);
        format!("{prefix}{n:0width$}", width = digits as usize)
    }
}

impl Inner {
    fn alipay(&self, gbk: bool) -> &AlipaySigner {
        if gbk {
            &self.alipay_gbk
        } else {
            &self.providers.alipay
        }
    }
}
