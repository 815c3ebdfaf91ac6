//! Alipay's trade bill: the detail CSV (`…_业务明细.csv`) of the ZIP that
//! `alipay.data.dataservice.bill.downloadurl.query` (`bill_type=trade`) points to.
//!
//! ```text
//! #支付宝业务明细查询
//! #账号：[20881234567890120156]
//! #起始日期：[2026年12月06日 00:00:00]   终止日期：[2026年12月07日 00:00:00]
//! #-----------------------------------------业务明细列表----------------------------------------
//! 支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,…,退款批次号/请求号,服务费（元）,分润（元）,备注
//! 2026120622001412345678901234\t,O1\t,交易\t,…,88.88\t,88.88\t,…
//! #-----------------------------------------业务明细列表结束------------------------------------
//! #交易合计：1笔，商家实收共88.88元，商家优惠共0.00元
//! #退款合计：0笔，商家实收退款共0.00元，商家优惠退款共0.00元
//! #导出时间：[2026年12月07日 09:12:21]
//! ```
//!
//! GBK, decoded line by line (a GBK trail byte is never `\n`) and strictly: a byte
//! sequence that is not GBK is an error, not a replacement character. Values carry
//! trailing tabs and spaces. A refund line (`退款`) states the refunded amount as a
//! negative 商家实收 and names the refund request in 退款批次号/请求号.

use std::io::BufRead;

use super::{
    BillError, BillPayment, BillRecord, BillRefund, BillTotals, check_totals, cst_time, fen,
};
use crate::event::Provider;

/// The detail list's columns, in order.
pub const COLUMNS: [&str; 25] = [
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
];

/// The comment line that opens the detail list (with its dashes).
pub const LIST_START: &str = "业务明细列表";
/// The comment line that closes it.
pub const LIST_END: &str = "业务明细列表结束";

const PROVIDER: Provider = Provider::Alipay;

const TRADE_NO: usize = 0;
const OUT_TRADE_NO: usize = 1;
const KIND: usize = 2;
const FINISHED: usize = 5;
const ORDER_AMOUNT: usize = 11;
const RECEIVED: usize = 12;
const REQUEST_NO: usize = 21;
const SERVICE_FEE: usize = 22;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// `#` lines until the list's opening comment.
    Preamble,
    Header,
    Detail,
    /// `#` lines: the totals, the export time.
    Footer,
}

/// Reads an Alipay trade bill's detail CSV from `reader` (GBK bytes), handing every
/// trade and refund line to `on_record` in file order, and returns the totals once
/// they are checked against the footer's 交易合计 and 退款合计.
pub fn read(
    mut reader: impl BufRead,
    mut on_record: impl FnMut(BillRecord),
) -> Result<BillTotals, BillError> {
    let malformed = |line: usize, reason: &str| BillError::Malformed {
        provider: PROVIDER,
        line,
        reason: reason.to_owned(),
    };
    let mut expect = Expect::Preamble;
    let mut counted = BillTotals::default();
    let mut trades: Option<(i64, i64)> = None;
    let mut refunds: Option<(i64, i64)> = None;
    let mut raw = Vec::new();
    let mut number = 0;
    loop {
        raw.clear();
        let read = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| BillError::Read {
                provider: PROVIDER,
                message: e.to_string(),
            })?;
        if read == 0 {
            break;
        }
        number += 1;
        let bytes = raw.strip_suffix(b"\n").unwrap_or(&raw);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let line = encoding_rs::GBK
            .decode_without_bom_handling_and_without_replacement(bytes)
            .ok_or_else(|| malformed(number, "not GBK text"))?;
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        match expect {
            Expect::Preamble => {
                let comment = line
                    .strip_prefix('#')
                    .ok_or_else(|| malformed(number, "text before the detail list"))?;
                if comment.trim_matches('-') == LIST_START {
                    expect = Expect::Header;
                }
            }
            Expect::Header => {
                let columns: Vec<&str> = line.split(',').map(str::trim).collect();
                if columns != COLUMNS {
                    return Err(BillError::UnknownColumns {
                        provider: PROVIDER,
                        line: number,
                        columns: columns.len(),
                    });
                }
                expect = Expect::Detail;
            }
            Expect::Detail => {
                if let Some(comment) = line.strip_prefix('#') {
                    if comment.trim_matches('-') != LIST_END {
                        return Err(malformed(number, "a comment inside the detail list"));
                    }
                    expect = Expect::Footer;
                    continue;
                }
                let values: Vec<&str> = line.split(',').map(str::trim).collect();
                if values.len() != COLUMNS.len() {
                    return Err(malformed(number, "not a detail line of 25 values"));
                }
                let record = detail(&values).map_err(|reason| malformed(number, &reason))?;
                counted.add(&record);
                on_record(record);
            }
            Expect::Footer => {
                let comment = line
                    .strip_prefix('#')
                    .ok_or_else(|| malformed(number, "text after the detail list"))?;
                if let Some(rest) = comment.strip_prefix("交易合计：") {
                    trades =
                        Some(total(rest).ok_or_else(|| malformed(number, "交易合计 unreadable"))?);
                } else if let Some(rest) = comment.strip_prefix("退款合计：") {
                    refunds =
                        Some(total(rest).ok_or_else(|| malformed(number, "退款合计 unreadable"))?);
                }
            }
        }
    }
    let (Some((trade_count, trade_fen)), Some((refund_count, refund_fen))) = (trades, refunds)
    else {
        return Err(BillError::Truncated { provider: PROVIDER });
    };
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    check_totals(
        PROVIDER,
        &[
            ("交易合计 (lines)", trade_count),
            ("交易合计 商家实收 (fen)", trade_fen),
            ("退款合计 (lines)", refund_count),
            ("退款合计 商家实收 (fen)", refund_fen),
        ],
        &[
            count(counted.payments),
            counted.payment_fen,
            count(counted.refunds),
            -counted.refund_fen,
        ],
    )?;
    Ok(counted)
}

/// `N笔，商家实收共X元，…` (or `商家实收：X元`, `商家实收退款共-X元`): the count
/// and the 商家实收 amount in fen.
fn total(text: &str) -> Option<(i64, i64)> {
    let (count, rest) = text.split_once('笔')?;
    let count = count.trim().parse().ok()?;
    let (_, after) = rest.split_once("商家实收")?;
    let start = after.find(|c: char| c.is_ascii_digit() || c == '-')?;
    let amount = &after[start..];
    let end = amount.find('元')?;
    Some((count, fen(&amount[..end])?))
}

fn detail(values: &[&str]) -> Result<BillRecord, String> {
    let text = |column: usize| -> Result<String, String> {
        match values[column] {
            "" => Err(format!("{} is empty", COLUMNS[column])),
            value => Ok(value.to_owned()),
        }
    };
    let amount = |column: usize| -> Result<i64, String> {
        match values[column] {
            "" => Ok(0),
            value => fen(value).ok_or_else(|| format!("{} is not an amount", COLUMNS[column])),
        }
    };
    // Alipay states a charged fee as a negative 服务费, a returned one positive.
    let fee_millifen = -amount(SERVICE_FEE)? * 1000;
    let at = cst_time(values[FINISHED])?;
    match values[KIND] {
        "交易" => Ok(BillRecord::Payment(BillPayment {
            provider_trade_no: text(TRADE_NO)?,
            out_trade_no: text(OUT_TRADE_NO)?,
            amount_fen: amount(ORDER_AMOUNT)?,
            settled_fen: amount(RECEIVED)?,
            fee_millifen,
            at,
        })),
        "退款" => {
            let received = amount(RECEIVED)?;
            if received > 0 {
                return Err(format!("a refund with a positive {}", COLUMNS[RECEIVED]));
            }
            Ok(BillRecord::Refund(BillRefund {
                provider_trade_no: text(TRADE_NO)?,
                out_trade_no: text(OUT_TRADE_NO)?,
                out_refund_no: text(REQUEST_NO)?,
                refund_id: None,
                amount_fen: -received,
                fee_millifen,
                at,
            }))
        }
        _ => Err(format!("{} is neither 交易 nor 退款", COLUMNS[KIND])),
    }
}

/// Writes a detail CSV in this format, GBK-encoded (the simulator serves it; tests and
/// benchmarks build bills with it). `account` is the Alipay account (PID), `day` the
/// bill date `YYYY-MM-DD`.
pub fn write(
    out: &mut impl std::io::Write,
    account: &str,
    day: &str,
    records: impl IntoIterator<Item = BillRecord>,
) -> std::io::Result<BillTotals> {
    let mut gbk = |text: &str| -> std::io::Result<()> {
        let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
        if unmappable {
            return Err(std::io::Error::other("text not representable in GBK"));
        }
        out.write_all(&bytes)?;
        out.write_all(b"\r\n")
    };
    let dashes = "-".repeat(41);
    gbk("#支付宝业务明细查询")?;
    gbk(&format!("#账号：[{account}]"))?;
    gbk(&format!(
        "#起始日期：[{day} 00:00:00]   终止日期：[{day} 23:59:59]"
    ))?;
    gbk(&format!("#{dashes}{LIST_START}{dashes}"))?;
    gbk(&COLUMNS.join(","))?;
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let time = |at: Option<time::OffsetDateTime>| {
        at.and_then(|t| t.to_offset(super::CST).format(format).ok())
            .unwrap_or_default()
    };
    let yuan = crate::money::format_yuan;
    let mut totals = BillTotals::default();
    for record in records {
        let values: Vec<String> = match &record {
            BillRecord::Payment(p) => vec![
                p.provider_trade_no.clone(),
                p.out_trade_no.clone(),
                "交易".into(),
                "payhook-sim 商品".into(),
                time(p.at),
                time(p.at),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                "138****0000".into(),
                yuan(p.amount_fen),
                yuan(p.settled_fen),
                "0.00".into(),
                "0.00".into(),
                "0.00".into(),
                "0.00".into(),
                "0.00".into(),
                String::new(),
                "0.00".into(),
                "0.00".into(),
                String::new(),
                yuan(-p.fee_millifen / 1000),
                "0.00".into(),
                String::new(),
            ],
            BillRecord::Refund(r) => vec![
                r.provider_trade_no.clone(),
                r.out_trade_no.clone(),
                "退款".into(),
                "payhook-sim 商品".into(),
                time(r.at),
                time(r.at),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                "138****0000".into(),
                yuan(-r.amount_fen),
                yuan(-r.amount_fen),
                "0.00".into(),
                "0.00".into(),
                "0.00".into(),
                "0.00".into(),
                "0.00".into(),
                String::new(),
                "0.00".into(),
                "0.00".into(),
                r.out_refund_no.clone(),
                yuan(-r.fee_millifen / 1000),
                "0.00".into(),
                String::new(),
            ],
        };
        let line: Vec<String> = values.into_iter().map(|v| format!("{v}\t")).collect();
        gbk(&line.join(","))?;
        totals.add(&record);
    }
    gbk(&format!("#{dashes}{LIST_END}{}", "-".repeat(36)))?;
    gbk(&format!(
        "#交易合计：{}笔，商家实收共{}元，商家优惠共0.00元",
        totals.payments,
        yuan(totals.payment_fen)
    ))?;
    gbk(&format!(
        "#退款合计：{}笔，商家实收退款共{}元，商家优惠退款共0.00元",
        totals.refunds,
        yuan(-totals.refund_fen)
    ))?;
    gbk(&format!("#导出时间：[{day} 09:00:00]"))?;
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bill in the shape Alipay sends (the values made up), UTF-8 here and encoded
    /// to GBK by [`gbk`].
    const BILL: &str = "#支付宝业务明细查询\r
#账号：[20881234567890120156]\r
#起始日期：[2026年12月06日 00:00:00]   终止日期：[2026年12月07日 00:00:00]\r
#-----------------------------------------业务明细列表----------------------------------------\r
支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注\r
2026120622001412345678901234\t,O1\t,交易\t,年货礼盒\t,2026-12-06 10:00:00\t,2026-12-06 10:00:05\t,\t,\t,\t,\t,138****0000\t,88.88\t,88.88\t,0.00\t,0.00\t,0.00\t,0.00\t,0.00\t,\t,0.00\t,0.00\t,\t,-0.53\t,0.00\t,\t\r
2026120622001412345678901235\t,O2\t,交易\t,春联\t,2026-12-06 11:00:00\t,2026-12-06 11:00:02\t,\t,\t,\t,\t,159****1111\t,100.00\t,100.00\t,0.00\t,0.00\t,0.00\t,0.00\t,0.00\t,\t,0.00\t,0.00\t,\t,-0.60\t,0.00\t,\t\r
2026120622001412345678901234\t,O1\t,退款\t,年货礼盒\t,2026-12-06 12:00:00\t,2026-12-06 12:00:01\t,\t,\t,\t,\t,138****0000\t,-8.88\t,-8.88\t,0.00\t,0.00\t,0.00\t,0.00\t,0.00\t,\t,0.00\t,0.00\t,R1\t,0.05\t,0.00\t,\t\r
#-----------------------------------------业务明细列表结束------------------------------------\r
#交易合计：2笔，商家实收共188.88元，商家优惠共0.00元\r
#退款合计：1笔，商家实收退款共-8.88元，商家优惠退款共0.00元\r
#导出时间：[2026年12月07日 09:12:21]\r
";

    fn gbk(text: &str) -> Vec<u8> {
        let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
        assert!(!unmappable);
        bytes.into_owned()
    }

    fn parse(bytes: &[u8]) -> Result<(Vec<BillRecord>, BillTotals), BillError> {
        let mut records = Vec::new();
        let totals = read(bytes, |r| records.push(r))?;
        Ok((records, totals))
    }

    #[test]
    fn a_gbk_bill_gives_its_trades_and_refunds_in_fen() {
        let (records, totals) = parse(&gbk(BILL)).expect("valid bill");
        assert_eq!(records.len(), 3);
        let BillRecord::Payment(first) = &records[0] else {
            panic!("a trade first");
        };
        assert_eq!(first.provider_trade_no, "2026120622001412345678901234");
        assert_eq!(first.out_trade_no, "O1");
        assert_eq!((first.amount_fen, first.settled_fen), (8888, 8888));
        assert_eq!(first.fee_millifen, 53_000, "a fee charged is positive");
        let BillRecord::Refund(refund) = &records[2] else {
            panic!("a refund last");
        };
        assert_eq!(refund.out_refund_no, "R1");
        assert_eq!(refund.amount_fen, 888);
        assert_eq!(refund.refund_id, None);
        assert_eq!(refund.fee_millifen, -5_000, "a fee returned is negative");
        assert_eq!(
            (
                totals.payments,
                totals.payment_fen,
                totals.refunds,
                totals.refund_fen
            ),
            (2, 18888, 1, 888)
        );
    }

    #[test]
    fn utf8_where_gbk_belongs_is_refused_not_garbled() {
        // The same text in UTF-8: not valid GBK on the first Chinese line.
        assert!(matches!(
            parse(BILL.as_bytes()),
            Err(BillError::Malformed { line: 1, .. })
        ));
    }

    #[test]
    fn an_empty_day_has_zero_totals() {
        let mut text = Vec::new();
        let totals = write(&mut text, "2088123456789012", "2026-12-06", []).expect("write");
        assert_eq!(totals, BillTotals::default());
        let (records, read_totals) = parse(&text).expect("valid empty bill");
        assert!(records.is_empty());
        assert_eq!(read_totals, totals);
    }

    #[test]
    fn footers_that_do_not_add_up_are_refused() {
        let wrong = BILL.replace("商家实收共188.88元", "商家实收共188.89元");
        assert_eq!(
            parse(&gbk(&wrong)).map(|_| ()),
            Err(BillError::Totals {
                provider: Provider::Alipay,
                what: "交易合计 商家实收 (fen)",
                stated: 18889,
                counted: 18888,
            })
        );
        let count = BILL.replace("#退款合计：1笔", "#退款合计：2笔");
        assert!(matches!(
            parse(&gbk(&count)),
            Err(BillError::Totals {
                what: "退款合计 (lines)",
                ..
            })
        ));
    }

    #[test]
    fn truncated_downloads_are_refused() {
        let bytes = gbk(BILL);
        for keep in [0, 10, bytes.len() / 2, bytes.len() - 120] {
            let result = parse(&bytes[..keep]);
            assert!(result.is_err(), "kept {keep} bytes: {result:?}");
        }
    }

    #[test]
    fn unknown_columns_and_strange_lines_are_refused() {
        let renamed = BILL.replacen("服务费（元）", "手续费（元）", 1);
        assert!(matches!(
            parse(&gbk(&renamed)),
            Err(BillError::UnknownColumns { line: 5, .. })
        ));
        let other_kind = BILL.replacen(",交易\t,春联", ",冻结\t,春联", 1);
        assert!(matches!(
            parse(&gbk(&other_kind)),
            Err(BillError::Malformed { line: 7, .. })
        ));
        let comma_in_name = BILL.replacen("春联", "春联,福字", 1);
        assert!(matches!(
            parse(&gbk(&comma_in_name)),
            Err(BillError::Malformed { line: 7, .. })
        ));
        let text_after = format!("{BILL}surprise\r\n");
        assert!(matches!(
            parse(&gbk(&text_after)),
            Err(BillError::Malformed { .. })
        ));
        let positive_refund = BILL.replacen("-8.88\t,-8.88", "-8.88\t,8.88", 1);
        assert!(matches!(
            parse(&gbk(&positive_refund)),
            Err(BillError::Malformed { line: 8, .. })
        ));
    }

    #[test]
    fn what_write_writes_reads_back_the_same() {
        let (records, _) = parse(&gbk(BILL)).expect("valid bill");
        // Alipay states fees in fen: round-trips whole fen.
        let mut text = Vec::new();
        let written =
            write(&mut text, "2088123456789012", "2026-12-06", records.clone()).expect("write");
        let (read_back, totals) = parse(&text).expect("valid");
        assert_eq!(read_back, records);
        assert_eq!(totals, written);
    }
}
