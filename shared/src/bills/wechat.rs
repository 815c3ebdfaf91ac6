//! WeChat Pay's `ALL` trade bill: APIv3 `GET /v3/bill/tradebill?bill_type=ALL` (the
//! file behind its `download_url`) and APIv2 `downloadbill` (`bill_type=ALL`) give
//! the same text.
//!
//! ```text
//! 交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,…,费率备注
//! `2024-07-09 10:06:33,`wx…,`1579507281,`0,`,`4200…,`5622…,`o…,`JSAPI,`SUCCESS,…
//! `2024-07-09 16:47:58,`wx…,`1579507281,`0,`,`4200…,`5617…,`o…,`JSAPI,`REFUND,…
//! 总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额
//! `29,`1300.00,`490.00,`0.00,`4.33000,`1300.00,`490.00
//! ```
//!
//! Every value carries a leading back-tick (so that spreadsheets keep long numbers as
//! text); values are split on `` ,` `` so that a comma inside a product name or the
//! merchant's attach data cannot shift the columns. A day without trades is the header,
//! the summary header and a zero summary line.

use std::io::BufRead;

use super::{
    BillError, BillPayment, BillRecord, BillRefund, BillTotals, check_totals, cst_time, fen,
    millifen,
};
use crate::event::Provider;

/// The `ALL` bill's columns, in order.
pub const COLUMNS: [&str; 27] = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
];

/// The summary's columns, in order.
pub const SUMMARY_COLUMNS: [&str; 7] = [
    "总交易单数",
    "应结订单总金额",
    "退款总金额",
    "充值券退款总金额",
    "手续费总金额",
    "订单总金额",
    "申请退款总金额",
];

// Column positions used.
const TIME: usize = 0;
const TRANSACTION_ID: usize = 5;
const OUT_TRADE_NO: usize = 6;
const TRADE_STATE: usize = 9;
const SETTLED: usize = 12;
const REFUND_ID: usize = 14;
const OUT_REFUND_NO: usize = 15;
const REFUND_AMOUNT: usize = 16;
const FEE: usize = 22;
const ORDER_AMOUNT: usize = 24;
const REQUESTED_REFUND: usize = 25;

/// What the parser expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Header,
    Detail,
    SummaryLine,
    End,
}

/// Reads a WeChat Pay `ALL` trade bill from `reader` (UTF-8), handing every trade and
/// refund line to `on_record` in file order, and returns the summary once it is
/// checked against the lines. `provider` names the API it came from in errors
/// (`wechat_v2` or `wechat_v3`).
pub fn read(
    reader: impl BufRead,
    provider: Provider,
    mut on_record: impl FnMut(BillRecord),
) -> Result<BillTotals, BillError> {
    let malformed = |line: usize, reason: &str| BillError::Malformed {
        provider,
        line,
        reason: reason.to_owned(),
    };
    let mut expect = Expect::Header;
    let mut counted = BillTotals::default();
    // Sums the summary states that BillTotals does not keep.
    let (mut order_fen, mut requested_fen) = (0_i64, 0_i64);
    let mut number = 0;
    for line in reader.lines() {
        number += 1;
        let line = line.map_err(|e| BillError::Read {
            provider,
            message: e.to_string(),
        })?;
        let line = line.trim_end_matches(['\r', '\n']);
        let line = if number == 1 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        match expect {
            Expect::Header => {
                let columns: Vec<&str> = line.split(',').collect();
                if columns != COLUMNS {
                    return Err(BillError::UnknownColumns {
                        provider,
                        line: number,
                        columns: columns.len(),
                    });
                }
                expect = Expect::Detail;
            }
            Expect::Detail => {
                if line.split(',').eq(SUMMARY_COLUMNS) {
                    expect = Expect::SummaryLine;
                    continue;
                }
                let values = values(line)
                    .filter(|v| v.len() == COLUMNS.len())
                    .ok_or_else(|| {
                        malformed(number, "not a detail line of 27 back-ticked values")
                    })?;
                let record = detail(&values).map_err(|reason| malformed(number, &reason))?;
                order_fen += amount(&values, ORDER_AMOUNT).map_err(|r| malformed(number, &r))?;
                requested_fen +=
                    amount(&values, REQUESTED_REFUND).map_err(|r| malformed(number, &r))?;
                counted.add(&record);
                on_record(record);
            }
            Expect::SummaryLine => {
                let values = values(line)
                    .filter(|v| v.len() == SUMMARY_COLUMNS.len())
                    .ok_or_else(|| {
                        malformed(number, "not a summary line of 7 back-ticked values")
                    })?;
                let count: i64 = values[0]
                    .parse()
                    .map_err(|_| malformed(number, "总交易单数 is not a count"))?;
                let money = |i: usize| {
                    fen(values[i]).ok_or_else(|| {
                        malformed(number, &format!("{} is not an amount", SUMMARY_COLUMNS[i]))
                    })
                };
                let fees = millifen(values[4])
                    .ok_or_else(|| malformed(number, "手续费总金额 is not an amount"))?;
                let lines = i64::try_from(counted.payments + counted.refunds).unwrap_or(i64::MAX);
                check_totals(
                    provider,
                    &[
                        ("总交易单数", count),
                        ("应结订单总金额 (fen)", money(1)?),
                        ("退款总金额 (fen)", money(2)?),
                        ("手续费总金额 (thousandths of a fen)", fees),
                        ("订单总金额 (fen)", money(5)?),
                        ("申请退款总金额 (fen)", money(6)?),
                    ],
                    &[
                        lines,
                        counted.payment_fen,
                        counted.refund_fen,
                        counted.fee_millifen,
                        order_fen,
                        requested_fen,
                    ],
                )?;
                expect = Expect::End;
            }
            Expect::End => {
                if !line.trim().is_empty() {
                    return Err(malformed(number, "text after the summary"));
                }
            }
        }
    }
    if expect == Expect::End {
        Ok(counted)
    } else {
        Err(BillError::Truncated { provider })
    }
}

/// The back-ticked values of a line, without their back-ticks; `None` when a value
/// does not start with one.
fn values(line: &str) -> Option<Vec<&str>> {
    let rest = line.strip_prefix('`')?;
    Some(rest.split(",`").collect())
}

/// An amount column (fen; an empty value is none).
fn amount(values: &[&str], column: usize) -> Result<i64, String> {
    match values[column] {
        "" => Ok(0),
        text => fen(text).ok_or_else(|| format!("{} is not an amount", COLUMNS[column])),
    }
}

/// One detail line: a payment (`SUCCESS`) or a refund (`REFUND`).
fn detail(values: &[&str]) -> Result<BillRecord, String> {
    let text = |column: usize| -> Result<String, String> {
        match values[column] {
            "" => Err(format!("{} is empty", COLUMNS[column])),
            value => Ok(value.to_owned()),
        }
    };
    let fee = millifen(values[FEE]).ok_or_else(|| format!("{} is not an amount", COLUMNS[FEE]))?;
    let at = cst_time(values[TIME])?;
    match values[TRADE_STATE] {
        "SUCCESS" => Ok(BillRecord::Payment(BillPayment {
            provider_trade_no: text(TRANSACTION_ID)?,
            out_trade_no: text(OUT_TRADE_NO)?,
            amount_fen: amount(values, ORDER_AMOUNT)?,
            settled_fen: amount(values, SETTLED)?,
            fee_millifen: fee,
            at,
        })),
        "REFUND" => Ok(BillRecord::Refund(BillRefund {
            provider_trade_no: text(TRANSACTION_ID)?,
            out_trade_no: text(OUT_TRADE_NO)?,
            out_refund_no: text(OUT_REFUND_NO)?,
            refund_id: Some(text(REFUND_ID)?),
            amount_fen: amount(values, REFUND_AMOUNT)?,
            fee_millifen: fee,
            at,
        })),
        _ => Err(format!(
            "{} is neither SUCCESS nor REFUND",
            COLUMNS[TRADE_STATE]
        )),
    }
}

/// Writes a bill in this format (the simulator serves it; tests and benchmarks build
/// bills with it). Amounts in fen, fees in thousandths of a fen.
pub fn write(
    out: &mut impl std::io::Write,
    merchant: (&str, &str),
    records: impl IntoIterator<Item = BillRecord>,
) -> std::io::Result<BillTotals> {
    let (appid, mch_id) = merchant;
    writeln!(out, "{}", COLUMNS.join(","))?;
    let mut totals = BillTotals::default();
    let (mut order_fen, mut requested_fen) = (0_i64, 0_i64);
    let time = |at: Option<time::OffsetDateTime>| {
        let format =
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        at.and_then(|t| t.to_offset(super::CST).format(format).ok())
            .unwrap_or_default()
    };
    for record in records {
        let line = match &record {
            BillRecord::Payment(p) => {
                order_fen += p.amount_fen;
                [
                    time(p.at),
                    appid.into(),
                    mch_id.into(),
                    "0".into(),
                    String::new(),
                    p.provider_trade_no.clone(),
                    p.out_trade_no.clone(),
                    "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
                    "JSAPI".into(),
                    "SUCCESS".into(),
                    "OTHERS".into(),
                    "CNY".into(),
                    crate::money::format_yuan(p.settled_fen),
                    "0.00".into(),
                    "0".into(),
                    "0".into(),
                    "0.00".into(),
                    "0.00".into(),
                    String::new(),
                    String::new(),
                    "payhook-sim".into(),
                    String::new(),
                    format_millifen(p.fee_millifen),
                    "0.60%".into(),
                    crate::money::format_yuan(p.amount_fen),
                    "0.00".into(),
                    String::new(),
                ]
            }
            BillRecord::Refund(r) => {
                requested_fen += r.amount_fen;
                [
                    time(r.at),
                    appid.into(),
                    mch_id.into(),
                    "0".into(),
                    String::new(),
                    r.provider_trade_no.clone(),
                    r.out_trade_no.clone(),
                    "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
                    "JSAPI".into(),
                    "REFUND".into(),
                    "OTHERS".into(),
                    "CNY".into(),
                    "0.00".into(),
                    "0.00".into(),
                    r.refund_id.clone().unwrap_or_default(),
                    r.out_refund_no.clone(),
                    crate::money::format_yuan(r.amount_fen),
                    "0.00".into(),
                    "ORIGINAL".into(),
                    "SUCCESS".into(),
                    "payhook-sim".into(),
                    String::new(),
                    format_millifen(r.fee_millifen),
                    "0.60%".into(),
                    "0.00".into(),
                    crate::money::format_yuan(r.amount_fen),
                    String::new(),
                ]
            }
        };
        writeln!(out, "`{}", line.join(",`"))?;
        totals.add(&record);
    }
    writeln!(out, "{}", SUMMARY_COLUMNS.join(","))?;
    writeln!(
        out,
        "`{},`{},`{},`0.00,`{},`{},`{}",
        totals.payments + totals.refunds,
        crate::money::format_yuan(totals.payment_fen),
        crate::money::format_yuan(totals.refund_fen),
        format_millifen(totals.fee_millifen),
        crate::money::format_yuan(order_fen),
        crate::money::format_yuan(requested_fen),
    )?;
    Ok(totals)
}

/// Thousandths of a fen as yuan with five decimals ("0.04000", "-0.27000").
pub fn format_millifen(value: i64) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    format!("{sign}{}.{:05}", abs / 100_000, abs % 100_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two lines in the shape of a real bill (a payment and a refund, the values
    /// replaced), with the summary the provider prints for them.
    const REAL_SHAPE: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\r
`2024-07-09 16:47:58,`wxe1696e7c7db8e7f4,`1579507281,`0,`,`4200002166202406250324636876,`5617363390111199232,`oVgfJ5d35c6iAXrRCnfhOGF9aHT8,`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50302709992024070991956632208,`5622435300878286848,`50.00,`0.00,`ORIGINAL,`SUCCESS,`2024-06-28 18:30 客户付款,`{\"statement_id\":\"5617363390111199232\",\"note\":\"a, b\"},`-0.27000,`0.54%,`0.00,`50.00,`\r
`2024-07-09 10:06:33,`wxe1696e7c7db8e7f4,`1579507281,`0,`,`4200002360202407091150650780,`5622334254839656448,`oVgfJ5TrnzDOSuaxbFc33mw-5LUY,`JSAPI,`SUCCESS,`OTHERS,`CNY,`60.00,`0.00,`0,`0,`0.00,`0.00,`,`,`2024-07-10 13:50 客户付款,`{\"statement_id\":\"5622334254839656448\"},`0.32000,`0.54%,`60.00,`0.00,`\r
总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r
`2,`60.00,`50.00,`0.00,`0.05000,`60.00,`50.00\r
";

    fn parse(text: &str) -> Result<(Vec<BillRecord>, BillTotals), BillError> {
        let mut records = Vec::new();
        let totals = read(text.as_bytes(), Provider::WechatV3, |r| records.push(r))?;
        Ok((records, totals))
    }

    #[test]
    fn a_real_shaped_bill_gives_its_payment_and_refund_in_fen() {
        let (records, totals) = parse(REAL_SHAPE).expect("valid bill");
        assert_eq!(records.len(), 2);
        let BillRecord::Refund(refund) = &records[0] else {
            panic!("the first line is a refund");
        };
        assert_eq!(refund.out_trade_no, "5617363390111199232");
        assert_eq!(refund.out_refund_no, "5622435300878286848");
        assert_eq!(
            refund.refund_id.as_deref(),
            Some("50302709992024070991956632208")
        );
        assert_eq!(refund.amount_fen, 5000);
        assert_eq!(refund.fee_millifen, -27_000);
        let BillRecord::Payment(payment) = &records[1] else {
            panic!("the second line is a payment");
        };
        assert_eq!(payment.provider_trade_no, "4200002360202407091150650780");
        assert_eq!(payment.amount_fen, 6000);
        assert_eq!(payment.settled_fen, 6000);
        assert_eq!(payment.fee_millifen, 32_000);
        assert_eq!(
            totals,
            BillTotals {
                payments: 1,
                payment_fen: 6000,
                refunds: 1,
                refund_fen: 5000,
                fee_millifen: 5000,
            }
        );
    }

    #[test]
    fn an_empty_day_is_a_zero_summary() {
        let text = format!(
            "{}\n{}\n`0,`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00\n",
            COLUMNS.join(","),
            SUMMARY_COLUMNS.join(",")
        );
        let (records, totals) = parse(&text).expect("valid empty bill");
        assert!(records.is_empty());
        assert_eq!(totals, BillTotals::default());
    }

    #[test]
    fn a_summary_that_does_not_add_up_is_refused() {
        let wrong = REAL_SHAPE.replace("`2,`60.00,`50.00", "`2,`61.00,`50.00");
        assert_eq!(
            parse(&wrong).map(|_| ()),
            Err(BillError::Totals {
                provider: Provider::WechatV3,
                what: "应结订单总金额 (fen)",
                stated: 6100,
                counted: 6000,
            })
        );
        let count = REAL_SHAPE.replace("`2,`60.00", "`3,`60.00");
        assert!(matches!(
            parse(&count),
            Err(BillError::Totals {
                what: "总交易单数",
                ..
            })
        ));
    }

    #[test]
    fn a_truncated_download_is_refused() {
        for cut in [
            0,
            40,
            REAL_SHAPE.len() / 2,
            REAL_SHAPE.rfind("总交易").unwrap_or(0),
        ] {
            let result = parse(&REAL_SHAPE[..REAL_SHAPE.floor_char_boundary(cut)]);
            assert!(result.is_err(), "cut at {cut}: {result:?}");
        }
        let without_summary_line = REAL_SHAPE[..REAL_SHAPE.rfind('`').unwrap_or(0)]
            .rsplit_once('\n')
            .map_or("", |(head, _)| head);
        assert!(matches!(
            parse(&format!("{without_summary_line}\n")),
            Err(BillError::Truncated { .. })
        ));
    }

    #[test]
    fn unknown_columns_and_strange_lines_are_refused() {
        let old_layout = REAL_SHAPE.replacen("特约商户号", "子商户号", 1);
        assert!(matches!(
            parse(&old_layout),
            Err(BillError::UnknownColumns { line: 1, .. })
        ));
        let not_ticked = REAL_SHAPE.replacen("`2024-07-09 10:06:33", "2024-07-09 10:06:33", 1);
        assert!(matches!(
            parse(&not_ticked),
            Err(BillError::Malformed { line: 3, .. })
        ));
        let other_state = REAL_SHAPE.replacen("`JSAPI,`SUCCESS", "`JSAPI,`REVOKED", 1);
        assert!(matches!(
            parse(&other_state),
            Err(BillError::Malformed { line: 3, .. })
        ));
        let bad_amount = REAL_SHAPE.replacen("`60.00,`0.00,`0,", "`60.001,`0.00,`0,", 1);
        assert!(matches!(
            parse(&bad_amount),
            Err(BillError::Malformed { line: 3, .. })
        ));
        let trailing = format!("{REAL_SHAPE}`1,`2\n");
        assert!(matches!(
            parse(&trailing),
            Err(BillError::Malformed { line: 6, .. })
        ));
    }

    #[test]
    fn errors_never_echo_a_line() {
        let other_state = REAL_SHAPE.replacen("`JSAPI,`SUCCESS", "`JSAPI,`REVOKED", 1);
        let Err(error) = parse(&other_state) else {
            panic!("an unknown trade state is refused");
        };
        let message = error.to_string();
        assert!(!message.contains("5622334254839656448"), "{message}");
        assert!(!message.contains("REVOKED"), "{message}");
    }

    #[test]
    fn what_write_writes_reads_back_the_same() {
        let records = vec![
            BillRecord::Payment(BillPayment {
                provider_trade_no: "4200000000000000000000000001".into(),
                out_trade_no: "O1".into(),
                amount_fen: 8888,
                settled_fen: 8888,
                fee_millifen: 53_000,
                at: cst_time("2026-12-06 10:00:00").ok().flatten(),
            }),
            BillRecord::Refund(BillRefund {
                provider_trade_no: "4200000000000000000000000001".into(),
                out_trade_no: "O1".into(),
                out_refund_no: "R1".into(),
                refund_id: Some("50300000000000000000000000001".into()),
                amount_fen: 888,
                fee_millifen: -5_000,
                at: cst_time("2026-12-06 11:00:00").ok().flatten(),
            }),
        ];
        let mut text = Vec::new();
        let written = write(&mut text, ("wx1", "1900000109"), records.clone()).expect("write");
        let (read_back, totals) = parse(&String::from_utf8(text).expect("utf-8")).expect("valid");
        assert_eq!(read_back, records);
        assert_eq!(totals, written);
    }
}
