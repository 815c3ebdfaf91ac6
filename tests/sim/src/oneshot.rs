//! One notification, built and sent outside any order book: `payhook-sim send`.

use std::str::FromStr;

use payhook_shared::event::Provider;

use super::book::{OrderState, OrderTruth, RefundTruth};
use super::notify::{self, NotifyRequest};
use crate::Providers;

/// The notifications `payhook-sim send` can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneShotKind {
    AlipayPayment,
    /// A partial refund (half the amount): `TRADE_SUCCESS` with `refund_fee`.
    AlipayRefund,
    /// A full refund: `TRADE_CLOSED` with `refund_fee`.
    AlipayFullRefund,
    AlipayClose,
    AlipayFinished,
    WechatV2Payment,
    WechatV2Refund,
    WechatV3Transaction,
    WechatV3Refund,
}

impl OneShotKind {
    pub const ALL: [(&'static str, Self); 9] = [
        ("alipay-payment", Self::AlipayPayment),
        ("alipay-refund", Self::AlipayRefund),
        ("alipay-full-refund", Self::AlipayFullRefund),
        ("alipay-close", Self::AlipayClose),
        ("alipay-finished", Self::AlipayFinished),
        ("wechat-v2-payment", Self::WechatV2Payment),
        ("wechat-v2-refund", Self::WechatV2Refund),
        ("wechat-v3-transaction", Self::WechatV3Transaction),
        ("wechat-v3-refund", Self::WechatV3Refund),
    ];

    pub fn provider(self) -> Provider {
        match self {
            Self::AlipayPayment
            | Self::AlipayRefund
            | Self::AlipayFullRefund
            | Self::AlipayClose
            | Self::AlipayFinished => Provider::Alipay,
            Self::WechatV2Payment | Self::WechatV2Refund => Provider::WechatV2,
            Self::WechatV3Transaction | Self::WechatV3Refund => Provider::WechatV3,
        }
    }
}

impl FromStr for OneShotKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
                format!("unknown kind {s:?}; one of {}", names.join(", "))
            })
    }
}

/// The request of one notification of `kind` for `out_trade_no` (`amount_fen` total;
/// refunds refund half of it, or all of it for a full refund).
pub fn build(
    providers: &Providers,
    kind: OneShotKind,
    out_trade_no: &str,
    amount_fen: i64,
    notification_id: &str,
) -> NotifyRequest {
    let now = time::OffsetDateTime::now_utc();
    let paid = !matches!(kind, OneShotKind::AlipayClose);
    let order = OrderTruth {
        provider: kind.provider(),
        merchant: Providers::MERCHANT.to_owned(),
        out_trade_no: out_trade_no.to_owned(),
        total_fen: amount_fen,
        state: if paid {
            OrderState::Paid
        } else {
            OrderState::Closed
        },
        provider_trade_no: Some(format!(
            "4200{:024}",
            now.unix_timestamp_nanos().unsigned_abs() % 10u128.pow(24)
        )),
        paid_at: paid.then_some(now),
        refunded_fen: 0,
        refunds: Vec::new(),
        finished: false,
        notifications: Vec::new(),
    };
    let refunded = if kind == OneShotKind::AlipayFullRefund {
        amount_fen
    } else {
        (amount_fen / 2).max(1)
    };
    let refund = RefundTruth {
        out_refund_no: format!("{out_trade_no}-r1"),
        refund_id: format!(
            "5030{:025}",
            now.unix_timestamp_nanos().unsigned_abs() % 10u128.pow(25)
        ),
        amount_fen: refunded,
        cumulative_fen: refunded,
        created_at: now,
    };
    let platform = &providers.wechat_v3;
    let payload = match kind {
        OneShotKind::AlipayPayment => {
            notify::alipay_payment(&providers.alipay, &order, notification_id)
        }
        OneShotKind::AlipayRefund | OneShotKind::AlipayFullRefund => {
            notify::alipay_refund(&providers.alipay, &order, &refund, notification_id)
        }
        OneShotKind::AlipayClose => {
            notify::alipay_close(&providers.alipay, &order, notification_id)
        }
        OneShotKind::AlipayFinished => {
            notify::alipay_finished(&providers.alipay, &order, notification_id)
        }
        OneShotKind::WechatV2Payment => notify::v2_payment(&providers.wechat_v2, &order),
        OneShotKind::WechatV2Refund => notify::v2_refund(&providers.wechat_v2, &order, &refund),
        OneShotKind::WechatV3Transaction => {
            notify::v3_transaction(platform, &order, notification_id)
        }
        OneShotKind::WechatV3Refund => {
            notify::v3_refund(platform, &order, &refund, notification_id)
        }
    };
    payload.render(platform, notify::Spoil::default())
}
