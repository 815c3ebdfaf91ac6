//! `bench-bills`: one daily bill of N lines reconciled against a ledger of about as
//! many payments, on the real PostgreSQL (own schema, dropped after): the wall time,
//! the worker process's CPU and its peak memory, before and after.
//!
//! ```sh
//! cargo run --release -p payhook-bench --bin bench-bills -- --lines 1000000
//! ```
//!
//! The bill is written to a temporary file first (WeChat Pay's `ALL` format, or
//! Alipay's GBK CSV with `--provider alipay`), streaming, then reconciled from the file
//! through `payhook_worker::bills::reconcile_file` as the worker does: parsed on a
//! blocking thread, copied to PostgreSQL in chunks. Every 50th line is a refund; 1 % of
//! the paid trades are missing from the ledger, 0.1 % have another amount, and the
//! ledger holds 0.1 % payments the bill lacks — so the run finds differences of three
//! categories, as a real day might.

use std::io::{BufReader, BufWriter};
use std::time::Instant;

use clap::Parser;
use payhook_shared::bills::{BillPayment, BillRecord, BillRefund, CST};
use payhook_shared::event::Provider;
use payhook_testkit::db::TestDb;
use payhook_worker::bills::{self, Bill, Format};
use time::OffsetDateTime;

/// Reconciles one daily bill of N lines against the ledger and reports time and memory.
#[derive(Debug, Parser)]
#[command(name = "bench-bills")]
struct Options {
    /// Bill lines.
    #[arg(long, default_value_t = 1_000_000)]
    lines: u64,
    /// alipay | wechat_v3.
    #[arg(long, default_value = "wechat_v3", value_parser = provider)]
    provider: Provider,
}

fn provider(text: &str) -> Result<Provider, String> {
    match text {
        "alipay" => Ok(Provider::Alipay),
        "wechat_v3" => Ok(Provider::WechatV3),
        other => Err(format!("{other:?}: alipay or wechat_v3")),
    }
}

const MERCHANT: &str = "m1";

/// The bill's line `i`: a refund of the previous order every 50th line, else a payment.
fn record(i: u64, at: OffsetDateTime) -> BillRecord {
    if i % 50 == 49 {
        BillRecord::Refund(BillRefund {
            provider_trade_no: format!("T{:08}", i - 1),
            out_trade_no: format!("B{:08}", i - 1),
            out_refund_no: format!("R{i:08}"),
            refund_id: Some(format!("5030{i:08}")),
            amount_fen: 10,
            fee_millifen: -60,
            at: Some(at),
        })
    } else {
        let fen = 100 + i64::try_from(i % 1000).unwrap_or(0);
        BillRecord::Payment(BillPayment {
            provider_trade_no: format!("T{i:08}"),
            out_trade_no: format!("B{i:08}"),
            amount_fen: fen,
            settled_fen: fen,
            fee_millifen: if fen % 10 == 0 {
                fen * 6
            } else {
                fen * 6 - fen * 6 % 1000
            },
            at: Some(at),
        })
    }
}

/// `VmHWM` (peak resident set) and `VmRSS` of this process, KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// This process's user + system CPU, seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let n = options.lines;
    let at = OffsetDateTime::now_utc();
    let day = at.to_offset(CST).date();
    let db = TestDb::new().await;

    // The ledger, straight into the tables (what applying would have left).
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO payments (provider, merchant, out_trade_no, currency, state,
             total_amount, paid_amount, provider_trade_no, paid_at)
         SELECT $1, $2, 'B' || lpad(i::text, 8, '0'), 'CNY', 'PAID',
                100 + i % 1000 + CASE WHEN i % 1000 = 3 THEN 1 ELSE 0 END,
                100 + i % 1000, 'T' || lpad(i::text, 8, '0'), $3
         FROM generate_series(0, $4 - 1) AS i
         WHERE i % 50 <> 49 AND i % 100 <> 7
         UNION ALL
         SELECT $1, $2, 'X' || i, 'CNY', 'PAID', 500, 500, 'TX' || i, $3
         FROM generate_series(1, $4 / 1000) AS i",
    )
    .bind(options.provider.as_str())
    .bind(MERCHANT)
    .bind(at)
    .bind(i64::try_from(n)?)
    .execute(&db.pool)
    .await?;
    sqlx::query(
        "INSERT INTO refunds (payment_id, provider, merchant, out_refund_no, status, amount)
         SELECT p.id, $1, $2, 'R' || lpad((substr(p.out_trade_no, 2)::int8 + 1)::text, 8, '0'),
                'REFUND_SUCCEEDED', 10
         FROM payments p
         WHERE p.provider = $1 AND p.out_trade_no LIKE 'B%'
           AND substr(p.out_trade_no, 2)::int8 % 50 = 48",
    )
    .bind(options.provider.as_str())
    .bind(MERCHANT)
    .execute(&db.pool)
    .await?;
    sqlx::query("ANALYZE").execute(&db.pool).await?;
    let seeded = started.elapsed();

    // The bill file, written streaming.
    let started = Instant::now();
    let file = std::env::temp_dir().join(format!("bench-bills-{}.csv", uuid::Uuid::new_v4()));
    {
        let mut out = BufWriter::new(std::fs::File::create(&file)?);
        let records = (0..n).map(|i| record(i, at));
        match options.provider {
            Provider::Alipay => {
                payhook_shared::bills::alipay::write(
                    &mut out,
                    "2088123456789012",
                    &day.to_string(),
                    records,
                )?;
            }
            _ => {
                payhook_shared::bills::wechat::write(&mut out, ("wx1", "1900000110"), records)?;
            }
        }
    }
    let file_bytes = std::fs::metadata(&file)?.len();
    let written = started.elapsed();
    let (peak_before, rss_before) = memory_kib();

    // The run, from the file.
    let cpu_before = cpu_secs();
    let started = Instant::now();
    let format = match options.provider {
        Provider::Alipay => Format::Alipay,
        other => Format::Wechat(other),
    };
    let report = bills::reconcile_file(
        &db.pool,
        Bill {
            provider: options.provider,
            merchant: MERCHANT,
            day,
            sha256: "bench",
        },
        format,
        BufReader::new(std::fs::File::open(&file)?),
    )
    .await?;
    let elapsed = started.elapsed();
    let cpu = cpu_secs() - cpu_before;
    let (peak_after, rss_after) = memory_kib();
    let _ = std::fs::remove_file(&file);

    println!(
        "bench-bills: {} bill, {n} lines ({:.1} MiB file)",
        options.provider,
        file_bytes as f64 / 1_048_576.0
    );
    println!(
        "  ledger seeded in {:.1} s, bill written in {:.1} s",
        seeded.as_secs_f64(),
        written.as_secs_f64()
    );
    println!(
        "  reconciled in {:.2} s ({:.0} lines/s); worker CPU {:.2} s ({:.2} µs per line)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        cpu,
        cpu * 1e6 / n as f64
    );
    println!(
        "  memory: peak {:.1} MiB before the run, {:.1} MiB after (RSS {:.1} → {:.1} MiB)",
        peak_before as f64 / 1024.0,
        peak_after as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!(
        "  bill: {} payments ({} fen), {} refunds ({} fen); ledger: {} payments, {} refunds",
        report.bill.payments,
        report.bill.payment_fen,
        report.bill.refunds,
        report.bill.refund_fen,
        report.ledger_payments,
        report.ledger_refunds
    );
    println!(
        "  open differences: {:?}; queries requested: {}",
        report.open, report.queries_requested
    );
    Ok(())
}
