//! The providers' daily trade bills (对账单), parsed strictly and as a stream.
//!
//! A bill is the provider's own record of a day's trades and refunds: what daily
//! reconciliation compares payhook's ledger against. Its content comes from a download
//! URL, so it is outsider input: every line must be a trade, a refund, a summary or a
//! comment, an unknown column set is an error, and the summary must add up to the
//! detail lines — never a silent skip.
//!
//! - [`alipay`]: the detail CSV of `alipay.data.dataservice.bill.downloadurl.query`
//!   (`bill_type=trade`), GBK, `#` comment lines above and below, the totals in the
//!   footer comments.
//! - [`wechat`]: the `ALL` trade bill of WeChat Pay (APIv3 `tradebill`, APIv2
//!   `downloadbill`): every value behind a back-tick, the summary header and line at
//!   the end.
//!
//! Parsers read line by line and hand each record to a callback: memory does not grow
//! with the bill. Money is integer: amounts in fen, fees in thousandths of a fen
//! (WeChat states fees to 0.00001 yuan).

pub mod alipay;
pub mod wechat;

use thiserror::Error;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::event::Provider;

/// One trade or refund line of a bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillRecord {
    Payment(BillPayment),
    Refund(BillRefund),
}

/// A paid trade, as the bill states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillPayment {
    /// Alipay `trade_no`, WeChat `transaction_id`.
    pub provider_trade_no: String,
    pub out_trade_no: String,
    /// The order amount, fen.
    pub amount_fen: i64,
    /// What the merchant is settled (Alipay 商家实收, WeChat 应结订单金额), fen.
    pub settled_fen: i64,
    /// The fee the provider charged, thousandths of a fen (positive; Alipay's
    /// negative 服务费 is turned around).
    pub fee_millifen: i64,
    /// When the trade completed (the bill's China Standard Time, as an instant).
    pub at: Option<OffsetDateTime>,
}

/// A refund, as the bill states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRefund {
    pub provider_trade_no: String,
    pub out_trade_no: String,
    /// The merchant's refund number (Alipay `out_request_no`, WeChat `out_refund_no`).
    pub out_refund_no: String,
    /// WeChat `refund_id`; Alipay bills do not name one.
    pub refund_id: Option<String>,
    /// The amount refunded, fen (positive).
    pub amount_fen: i64,
    /// The fee returned with it, thousandths of a fen (negative: given back).
    pub fee_millifen: i64,
    pub at: Option<OffsetDateTime>,
}

/// What a bill's summary states, checked against its detail lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BillTotals {
    pub payments: u64,
    /// Sum of the payments' settled amounts, fen.
    pub payment_fen: i64,
    pub refunds: u64,
    /// Sum of the refunded amounts, fen (positive).
    pub refund_fen: i64,
    /// Sum of the fees, thousandths of a fen (refund lines return fees: negative).
    pub fee_millifen: i64,
}

impl BillTotals {
    /// Adds one detail line.
    pub fn add(&mut self, record: &BillRecord) {
        match record {
            BillRecord::Payment(p) => {
                self.payments += 1;
                self.payment_fen += p.settled_fen;
                self.fee_millifen += p.fee_millifen;
            }
            BillRecord::Refund(r) => {
                self.refunds += 1;
                self.refund_fen += r.amount_fen;
                self.fee_millifen += r.fee_millifen;
            }
        }
    }
}

/// Why a bill was refused. Line numbers are 1-based lines of the (decoded) file;
/// messages name columns and the kind of mistake, never a line's content.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BillError {
    /// The header is not one of the column sets payhook knows.
    #[error("{provider} bill, line {line}: unknown column set ({columns} columns)")]
    UnknownColumns {
        provider: Provider,
        line: usize,
        columns: usize,
    },
    /// A line that is not a trade, a refund, a summary or a comment where it stands.
    #[error("{provider} bill, line {line}: {reason}")]
    Malformed {
        provider: Provider,
        line: usize,
        reason: String,
    },
    /// The file ended before its summary (a truncated download).
    #[error("{provider} bill: ended before its summary (truncated?)")]
    Truncated { provider: Provider },
    /// The summary does not add up to the detail lines.
    #[error(
        "{provider} bill: the summary states {what} {stated}, the detail lines add up to {counted}"
    )]
    Totals {
        provider: Provider,
        what: &'static str,
        stated: i64,
        counted: i64,
    },
    #[error("{provider} bill: reading failed: {message}")]
    Read { provider: Provider, message: String },
}

/// China Standard Time: the providers' day.
pub const CST: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(offset) => offset,
    Err(_) => UtcOffset::UTC,
};

/// A bill's `YYYY-MM-DD HH:MM:SS` in China Standard Time; `None` for an empty value.
fn cst_time(text: &str) -> Result<Option<OffsetDateTime>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    PrimitiveDateTime::parse(text, format)
        .map(|t| Some(t.assume_offset(CST)))
        .map_err(|_| "a time that is not YYYY-MM-DD HH:MM:SS".to_owned())
}

/// An exact decimal with at most `scale` fraction digits, optionally negative, as an
/// integer count of `10^-scale` (yuan → fen with 2, → thousandths of a fen with 5).
fn decimal(text: &str, scale: u32) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty()
        || !all_digits(int_part)
        || !all_digits(frac_part)
        || (digits.contains('.') && frac_part.is_empty())
        || frac_part.len() > scale as usize
    {
        return None;
    }
    let mut value: i64 = int_part.parse().ok()?;
    for i in 0..scale as usize {
        let d = frac_part
            .as_bytes()
            .get(i)
            .map_or(0, |b| i64::from(b - b'0'));
        value = value.checked_mul(10)?.checked_add(d)?;
    }
    Some(if negative { -value } else { value })
}

/// Yuan with at most two decimals → fen.
fn fen(text: &str) -> Option<i64> {
    decimal(text, 2)
}

/// Yuan with at most five decimals → thousandths of a fen.
fn millifen(text: &str) -> Option<i64> {
    decimal(text, 5)
}

/// Checks the stated totals against the counted ones, in a fixed order.
fn check_totals(
    provider: Provider,
    stated: &[(&'static str, i64)],
    counted: &[i64],
) -> Result<(), BillError> {
    for (&(what, stated), &counted) in stated.iter().zip(counted) {
        if stated != counted {
            return Err(BillError::Totals {
                provider,
                what,
                stated,
                counted,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact_and_signed() {
        assert_eq!(fen("88.88"), Some(8888));
        assert_eq!(fen("0.1"), Some(10));
        assert_eq!(fen("-3000.00"), Some(-300_000));
        assert_eq!(fen("12"), Some(1200));
        assert_eq!(millifen("0.04000"), Some(4000));
        assert_eq!(millifen("-0.27000"), Some(-27000));
        assert_eq!(millifen("0.00600"), Some(600));
        assert_eq!(millifen("4.33"), Some(433_000));
        for bad in [
            "", "-", ".5", "5.", "1.234", "1e3", "+1", "1,000", " 1", "0x1",
        ] {
            assert_eq!(fen(bad), None, "{bad:?}");
        }
        assert_eq!(millifen("0.000001"), None);
        assert_eq!(fen("99999999999999999999"), None);
    }

    #[test]
    fn bill_times_are_china_standard_time() {
        let t = cst_time("2024-07-09 16:47:58")
            .expect("valid")
            .expect("some");
        assert_eq!(t.offset(), CST);
        assert_eq!(t.unix_timestamp(), 1_720_514_878);
        assert_eq!(cst_time(""), Ok(None));
        assert!(cst_time("2024/07/09 16:47").is_err());
    }
}
