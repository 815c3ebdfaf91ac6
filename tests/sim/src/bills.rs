//! The providers' daily trade bills, made from the order book: every payment paid that
//! day (China Standard Time) and every refund made that day, with the providers' fees
//! (0.6 %); orders never paid are absent. Tweaks put a difference in a day's bill as
//! the providers sometimes do (another amount, a trade or a refund left out), for the
//! reconciliation tests.
//!
//! Served by the query APIs: WeChat Pay APIv3 `GET /v3/bill/tradebill` and its
//! download, APIv2 `POST /pay/downloadbill`, Alipay
//! `alipay.data.dataservice.bill.downloadurl.query` and its ZIP.

use payhook_shared::bills::{BillPayment, BillRecord, BillRefund, CST};
use payhook_shared::event::Provider;
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, Time};

use crate::book::{Book, key};

/// A difference put into one day's bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BillTweak {
    /// The bill states another amount for a trade (order amount and settled amount).
    Amount {
        out_trade_no: String,
        amount_fen: i64,
    },
    /// The bill leaves a paid trade out.
    DropTrade { out_trade_no: String },
    /// The bill leaves a refund out.
    DropRefund { out_refund_no: String },
}

/// The fee the simulated providers charge: 0.6 % of `fen`, in thousandths of a fen
/// (WeChat states it to 0.00001 yuan; Alipay in whole fen, rounded).
fn fee_millifen(provider: Provider, fen: i64) -> i64 {
    match provider {
        Provider::Alipay => (fen * 6 + 500) / 1000 * 1000,
        Provider::WechatV2 | Provider::WechatV3 => fen * 6,
    }
}

/// Whether `at` falls on `day` in China Standard Time.
fn on(day: Date, at: OffsetDateTime) -> bool {
    at.to_offset(CST).date() == day
}

/// The start of `day` in China Standard Time.
pub fn day_start(day: Date) -> OffsetDateTime {
    day.with_time(Time::MIDNIGHT).assume_offset(CST)
}

/// The trades and refunds of `provider` on `day`, in time order, with `tweaks` applied.
pub(crate) fn records(
    book: &Book,
    provider: Provider,
    day: Date,
    tweaks: &[BillTweak],
) -> Vec<BillRecord> {
    let mut out: Vec<(OffsetDateTime, BillRecord)> = Vec::new();
    let dropped_trade = |no: &str| {
        tweaks
            .iter()
            .any(|t| matches!(t, BillTweak::DropTrade { out_trade_no } if out_trade_no == no))
    };
    let dropped_refund = |no: &str| {
        tweaks
            .iter()
            .any(|t| matches!(t, BillTweak::DropRefund { out_refund_no } if out_refund_no == no))
    };
    let amount = |no: &str, fen: i64| {
        tweaks
            .iter()
            .find_map(|t| match t {
                BillTweak::Amount {
                    out_trade_no,
                    amount_fen,
                } if out_trade_no == no => Some(*amount_fen),
                _ => None,
            })
            .unwrap_or(fen)
    };
    for order in book
        .orders
        .range((key(provider), String::new())..)
        .take_while(|((p, _), _)| *p == key(provider))
        .map(|(_, order)| order)
    {
        let Some(trade_no) = &order.provider_trade_no else {
            continue;
        };
        if let Some(paid_at) = order.paid_at
            && on(day, paid_at)
            && !dropped_trade(&order.out_trade_no)
        {
            let fen = amount(&order.out_trade_no, order.total_fen);
            out.push((
                paid_at,
                BillRecord::Payment(BillPayment {
                    provider_trade_no: trade_no.clone(),
                    out_trade_no: order.out_trade_no.clone(),
                    amount_fen: fen,
                    settled_fen: fen,
                    fee_millifen: fee_millifen(provider, fen),
                    at: Some(paid_at),
                }),
            ));
        }
        for refund in &order.refunds {
            if !on(day, refund.created_at) || dropped_refund(&refund.out_refund_no) {
                continue;
            }
            out.push((
                refund.created_at,
                BillRecord::Refund(BillRefund {
                    provider_trade_no: trade_no.clone(),
                    out_trade_no: order.out_trade_no.clone(),
                    out_refund_no: refund.out_refund_no.clone(),
                    refund_id: (provider != Provider::Alipay).then(|| refund.refund_id.clone()),
                    amount_fen: refund.amount_fen,
                    fee_millifen: -fee_millifen(provider, refund.amount_fen),
                    at: Some(refund.created_at),
                }),
            ));
        }
    }
    out.sort_by_key(|(at, _)| *at);
    // A bill states times to the second.
    for (_, record) in &mut out {
        let at = match record {
            BillRecord::Payment(p) => &mut p.at,
            BillRecord::Refund(r) => &mut r.at,
        };
        *at = at.and_then(|t| t.replace_nanosecond(0).ok());
    }
    out.into_iter().map(|(_, record)| record).collect()
}

/// A bill date `YYYY-MM-DD` (APIv3, Alipay) or `YYYYMMDD` (APIv2).
pub fn parse_day(text: &str) -> Option<Date> {
    let dashed = time::macros::format_description!("[year]-[month]-[day]");
    let compact = time::macros::format_description!("[year][month][day]");
    Date::parse(text, dashed)
        .or_else(|_| Date::parse(text, compact))
        .ok()
}

/// Whether the providers have generated `day`'s bill at `now`: only once the day is
/// over in China Standard Time (the providers publish it in the morning after; the
/// simulator at once).
pub fn generated(day: Date, now: OffsetDateTime) -> bool {
    now.to_offset(CST).date() > day
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_are_point_six_percent() {
        assert_eq!(fee_millifen(Provider::WechatV3, 8888), 53_328);
        assert_eq!(fee_millifen(Provider::Alipay, 8888), 53_000);
        assert_eq!(fee_millifen(Provider::Alipay, 100), 1_000);
    }

    #[test]
    fn a_day_is_the_china_standard_time_day() {
        let day = parse_day("2026-12-06").expect("date");
        assert_eq!(parse_day("20261206"), Some(day));
        let late_utc = day_start(day) + time::Duration::hours(23);
        assert!(on(day, late_utc));
        assert!(!on(day, day_start(day) - time::Duration::seconds(1)));
        assert!(!generated(day, late_utc));
        assert!(generated(day, late_utc + time::Duration::hours(1)));
    }
}
