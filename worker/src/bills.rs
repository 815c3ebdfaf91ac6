//! Daily bill reconciliation: one provider bill of one day (China Standard Time)
//! against payhook's ledger (docs/design.md, "Daily bills").
//!
//! A run, in ONE transaction under an advisory lock on (provider, merchant, day), so
//! that one replica runs it at a time and a failed run leaves nothing half-written:
//!
//! 1. the run row (`bill_runs`) is claimed, its earlier lines removed;
//! 2. the bill's lines stream in with `COPY` (`bill_lines`): the worker holds one
//!    chunk at a time, whatever the bill's size;
//! 3. set-based queries compare them with `payments` and `refunds` and upsert the
//!    differences (`bill_differences`, keyed by day, category and order or refund:
//!    a run again finds the same rows); open differences a run no longer finds are
//!    marked settled;
//! 4. a paid trade payhook never applied (`missing_in_payhook`) is handed to the
//!    reconciler: its payment row is created (or kept) pending and due now, so the
//!    provider's query answer goes through the one apply path — one event, no double
//!    effect;
//! 5. both sides' counts and sums are recorded, the lines deleted.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use payhook_shared::bills::{BillRecord, BillTotals, CST};
use payhook_shared::event::Provider;
use sqlx::{PgPool, Row as _};
use time::{Date, OffsetDateTime, Time};

/// What a difference is.
pub const CATEGORIES: [&str; 5] = [
    "missing_in_payhook",
    "missing_at_provider",
    "amount_mismatch",
    "state_mismatch",
    "refund_mismatch",
];

/// Lines sent to PostgreSQL per `COPY` chunk.
const CHUNK_LINES: usize = 2_000;

/// What a run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub run_id: i64,
    /// What the bill held (its own summary, checked by the parser).
    pub bill: BillTotals,
    /// Payments payhook has as paid that day, and their total, fen.
    pub ledger_payments: i64,
    pub ledger_payment_fen: i64,
    /// Refunds payhook has as succeeded that day, and their total, fen.
    pub ledger_refunds: i64,
    pub ledger_refund_fen: i64,
    /// Open differences of the day after the run, by category.
    pub open: BTreeMap<String, i64>,
    /// Differences earlier runs found that this one no longer finds.
    pub settled: u64,
    /// Orders handed to the reconciler's query.
    pub queries_requested: u64,
}

/// Why a run failed (nothing of it was written).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The bill itself was refused (see `payhook_shared::bills::BillError`).
    #[error("bill refused: {0}")]
    Bill(String),
    /// The provider's bill could not be fetched (transport, signature, hash).
    #[error("bill download failed: {0}")]
    Download(String),
    /// No query credentials are configured for the merchant.
    #[error("no query credentials for {0}")]
    NotQueryable(String),
}

/// The instants `[start, end)` of `day` in China Standard Time.
pub fn day_bounds(day: Date) -> (OffsetDateTime, OffsetDateTime) {
    let start = day.with_time(Time::MIDNIGHT).assume_offset(CST);
    (start, start + time::Duration::days(1))
}

/// Which parser a bill file needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Alipay's detail CSV (GBK).
    Alipay,
    /// WeChat Pay's `ALL` trade bill, from APIv2 or APIv3.
    Wechat(Provider),
}

/// The bill's identity in a run: whose, which day, which file.
#[derive(Debug, Clone, Copy)]
pub struct Bill<'a> {
    pub provider: Provider,
    pub merchant: &'a str,
    pub day: Date,
    /// SHA-256 of the file, hex.
    pub sha256: &'a str,
}

/// Reconciles the bill file `reader` (in `format`) with the ledger. The file is parsed
/// on a blocking thread and its lines copied to PostgreSQL as they come, a few chunks
/// in flight: memory does not grow with the bill. A bill the parser refuses (a
/// truncated download, a summary that does not add up) fails the run and writes
/// nothing but the failure.
pub async fn reconcile_file<R>(
    pool: &PgPool,
    bill: Bill<'_>,
    format: Format,
    reader: R,
) -> Result<RunReport, RunError>
where
    R: std::io::BufRead + Send + 'static,
{
    let (sender, chunks) = tokio::sync::mpsc::channel::<Vec<BillRecord>>(4);
    let parser = tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(CHUNK_LINES);
        let mut on_record = |record| {
            chunk.push(record);
            if chunk.len() == CHUNK_LINES {
                // A closed channel means the run ended: the rest is not needed.
                let _ = sender.blocking_send(std::mem::take(&mut chunk));
            }
        };
        let result = match format {
            Format::Alipay => payhook_shared::bills::alipay::read(reader, &mut on_record),
            Format::Wechat(provider) => {
                payhook_shared::bills::wechat::read(reader, provider, &mut on_record)
            }
        };
        if result.is_ok() && !chunk.is_empty() {
            let _ = sender.blocking_send(chunk);
        }
        result
    });
    let verdict = async move {
        match parser.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(join) => Err(format!("the parser stopped: {join}")),
        }
    };
    let result = run(pool, bill, chunks, verdict).await;
    if let Err(error) = &result {
        record_failure(pool, bill, error).await;
    }
    result
}

/// How a day's run ended.
#[derive(Debug)]
pub enum DayOutcome {
    Reconciled(RunReport),
    /// The provider has no bill for the day (yet): recorded as `no_bill`, to be tried
    /// again later.
    NoBill(String),
}

/// One merchant's day, whole: the bill downloaded from the provider into `dir` (the
/// file removed afterwards), then reconciled. A download that fails is recorded as a
/// failed run.
pub async fn run_day(
    pool: &PgPool,
    client: &payhook_shared::query::QueryClient,
    queriers: &payhook_shared::query::Queriers,
    provider: Provider,
    merchant: &str,
    day: Date,
    dir: &std::path::Path,
) -> Result<DayOutcome, RunError> {
    use payhook_shared::query::BillDownload;
    let missing = || RunError::NotQueryable(format!("{provider} merchant {merchant}"));
    let downloaded = match provider {
        Provider::Alipay => {
            let q = queriers.alipay.get(merchant).ok_or_else(missing)?;
            client.alipay_bill(q, day, dir).await
        }
        Provider::WechatV2 => {
            let q = queriers.wechat_v2.get(merchant).ok_or_else(missing)?;
            client.wechat_v2_downloadbill(q, day, dir).await
        }
        Provider::WechatV3 => {
            let q = queriers.wechat_v3.get(merchant).ok_or_else(missing)?;
            client.wechat_tradebill(q, day, dir).await
        }
    };
    let no_file = Bill {
        provider,
        merchant,
        day,
        sha256: "",
    };
    let file = match downloaded {
        Ok(BillDownload::File(file)) => file,
        Ok(BillDownload::NoBill(reason)) => {
            sqlx::query(
                "INSERT INTO bill_runs (provider, merchant, bill_date, state, attempts, error,
                     finished_at)
                 VALUES ($1, $2, $3, 'no_bill', 1, $4, now())
                 ON CONFLICT (provider, merchant, bill_date) DO UPDATE
                     SET state = 'no_bill', attempts = bill_runs.attempts + 1,
                         error = EXCLUDED.error, finished_at = now()
                     WHERE bill_runs.state <> 'reconciled'",
            )
            .bind(provider.as_str())
            .bind(merchant)
            .bind(day)
            .bind(&reason)
            .execute(pool)
            .await?;
            return Ok(DayOutcome::NoBill(reason));
        }
        Err(error) => {
            let error = RunError::Download(error.to_string());
            record_failure(pool, no_file, &error).await;
            return Err(error);
        }
    };
    let reader = file
        .reader()
        .map_err(|e| RunError::Download(format!("bill file: {e}")))?;
    let format = match provider {
        Provider::Alipay => Format::Alipay,
        wechat => Format::Wechat(wechat),
    };
    let bill = Bill {
        provider,
        merchant,
        day,
        sha256: &file.sha256,
    };
    reconcile_file(pool, bill, format, reader)
        .await
        .map(DayOutcome::Reconciled)
}

/// Reconciles `records`, the bill of `provider` for `merchant` on `day` (SHA-256
/// `bill_sha256`), with the ledger. Running it again for the same bill gives the same
/// differences and applies nothing twice.
pub async fn reconcile(
    pool: &PgPool,
    provider: Provider,
    merchant: &str,
    day: Date,
    bill_sha256: &str,
    records: impl IntoIterator<Item = BillRecord>,
) -> Result<RunReport, RunError> {
    let records: Vec<BillRecord> = records.into_iter().collect();
    let chunks: Vec<Vec<BillRecord>> = records.chunks(CHUNK_LINES).map(<[_]>::to_vec).collect();
    let (sender, receiver) = tokio::sync::mpsc::channel(chunks.len().max(1));
    for chunk in chunks {
        // The channel holds every chunk: this cannot fail.
        let _ = sender.try_send(chunk);
    }
    drop(sender);
    let bill = Bill {
        provider,
        merchant,
        day,
        sha256: bill_sha256,
    };
    run(pool, bill, receiver, std::future::ready(Ok(()))).await
}

/// Records a failed run (its transaction rolled back): state `failed` and why.
async fn record_failure(pool: &PgPool, bill: Bill<'_>, error: &RunError) {
    let result = sqlx::query(
        "INSERT INTO bill_runs (provider, merchant, bill_date, state, attempts, bill_sha256,
             error, finished_at)
         VALUES ($1, $2, $3, 'failed', 1, $4, $5, now())
         ON CONFLICT (provider, merchant, bill_date) DO UPDATE
             SET state = 'failed', attempts = bill_runs.attempts + 1,
                 bill_sha256 = EXCLUDED.bill_sha256, error = EXCLUDED.error,
                 finished_at = now()",
    )
    .bind(bill.provider.as_str())
    .bind(bill.merchant)
    .bind(bill.day)
    .bind(bill.sha256)
    .bind(error.to_string())
    .execute(pool)
    .await;
    if let Err(db) = result {
        tracing::error!(error = %db, "bill run: recording the failure failed");
    }
}

/// One run: the lines from `chunks`, committed only when `verdict` (the parser's) is
/// `Ok` once they have all come.
async fn run(
    pool: &PgPool,
    bill: Bill<'_>,
    mut chunks: tokio::sync::mpsc::Receiver<Vec<BillRecord>>,
    verdict: impl std::future::Future<Output = Result<(), String>>,
) -> Result<RunReport, RunError> {
    let Bill {
        provider,
        merchant,
        day,
        sha256: bill_sha256,
    } = bill;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("payhook-bill:{provider}:{merchant}:{day}"))
        .execute(&mut *tx)
        .await?;
    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO bill_runs (provider, merchant, bill_date, state, attempts, bill_sha256)
         VALUES ($1, $2, $3, 'running', 1, $4)
         ON CONFLICT (provider, merchant, bill_date) DO UPDATE
             SET state = 'running', attempts = bill_runs.attempts + 1,
                 bill_sha256 = EXCLUDED.bill_sha256, error = NULL,
                 started_at = now(), finished_at = NULL
         RETURNING id",
    )
    .bind(provider.as_str())
    .bind(merchant)
    .bind(day)
    .bind(bill_sha256)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM bill_lines WHERE run_id = $1")
        .bind(run_id)
        .execute(&mut *tx)
        .await?;

    // 2. The lines, in chunks.
    let mut bill = BillTotals::default();
    let mut copy = tx
        .copy_in_raw(
            "COPY bill_lines (run_id, line, kind, provider_trade_no, out_trade_no,
                 out_refund_no, refund_id, amount, settled, fee_millifen, at)
             FROM STDIN (FORMAT csv)",
        )
        .await?;
    let mut line = 0;
    let mut text = String::new();
    while let Some(chunk) = chunks.recv().await {
        text.clear();
        for record in &chunk {
            line += 1;
            bill.add(record);
            csv_line(&mut text, run_id, line, record);
        }
        copy.send(text.as_bytes()).await?;
    }
    if let Err(reason) = verdict.await {
        // The COPY aborted and the transaction dropped: the run is rolled back.
        copy.abort("the bill was refused").await?;
        return Err(RunError::Bill(reason));
    }
    copy.finish().await?;

    // 3. The comparison.
    let (start, end) = day_bounds(day);
    let seen = OffsetDateTime::now_utc();
    for statement in COMPARE {
        sqlx::query(statement)
            .bind(run_id)
            .bind(provider.as_str())
            .bind(merchant)
            .bind(day)
            .bind(start)
            .bind(end)
            .bind(seen)
            .execute(&mut *tx)
            .await?;
    }
    let settled = sqlx::query(
        "UPDATE bill_differences SET status = 'settled'
         WHERE provider = $1 AND merchant = $2 AND bill_date = $3
           AND status = 'open' AND last_seen_at < $4",
    )
    .bind(provider.as_str())
    .bind(merchant)
    .bind(day)
    .bind(seen)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    // 4. Paid trades payhook never applied: the reconciler asks the provider.
    let queries_requested = sqlx::query(REQUEST_QUERIES)
        .bind(provider.as_str())
        .bind(merchant)
        .bind(day)
        .bind(seen)
        .execute(&mut *tx)
        .await?
        .rows_affected();

    // 5. Both sides, recorded.
    let ledger = sqlx::query(LEDGER_TOTALS)
        .bind(provider.as_str())
        .bind(merchant)
        .bind(start)
        .bind(end)
        .fetch_one(&mut *tx)
        .await?;
    let open: BTreeMap<String, i64> = sqlx::query(
        "SELECT category, count(*) FROM bill_differences
         WHERE provider = $1 AND merchant = $2 AND bill_date = $3 AND status = 'open'
         GROUP BY category",
    )
    .bind(provider.as_str())
    .bind(merchant)
    .bind(day)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|row| (row.get::<String, _>(0), row.get::<i64, _>(1)))
    .collect();
    let report = RunReport {
        run_id,
        bill,
        ledger_payments: ledger.get(0),
        ledger_payment_fen: ledger.get(1),
        ledger_refunds: ledger.get(2),
        ledger_refund_fen: ledger.get(3),
        open,
        settled,
        queries_requested,
    };
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    sqlx::query(
        "UPDATE bill_runs SET state = 'reconciled', finished_at = now(),
             bill_payments = $2, bill_payment_fen = $3, bill_refunds = $4,
             bill_refund_fen = $5, bill_fee_millifen = $6, ledger_payments = $7,
             ledger_payment_fen = $8, ledger_refunds = $9, ledger_refund_fen = $10,
             open_differences = $11
         WHERE id = $1",
    )
    .bind(run_id)
    .bind(count(bill.payments))
    .bind(bill.payment_fen)
    .bind(count(bill.refunds))
    .bind(bill.refund_fen)
    .bind(bill.fee_millifen)
    .bind(report.ledger_payments)
    .bind(report.ledger_payment_fen)
    .bind(report.ledger_refunds)
    .bind(report.ledger_refund_fen)
    .bind(report.open.values().sum::<i64>())
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM bill_lines WHERE run_id = $1")
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(report)
}

/// One `COPY … (FORMAT csv)` line: every text value quoted (quotes doubled), empty
/// for none.
fn csv_line(out: &mut String, run_id: i64, line: usize, record: &BillRecord) {
    let quoted = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
    let at = |t: Option<OffsetDateTime>| {
        t.and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
    };
    let _ = match record {
        BillRecord::Payment(p) => writeln!(
            out,
            "{run_id},{line},payment,{},{},,,{},{},{},{}",
            quoted(&p.provider_trade_no),
            quoted(&p.out_trade_no),
            p.amount_fen,
            p.settled_fen,
            p.fee_millifen,
            at(p.at),
        ),
        BillRecord::Refund(r) => writeln!(
            out,
            "{run_id},{line},refund,{},{},{},{},{},,{},{}",
            quoted(&r.provider_trade_no),
            quoted(&r.out_trade_no),
            quoted(&r.out_refund_no),
            r.refund_id.as_deref().map(quoted).unwrap_or_default(),
            r.amount_fen,
            r.fee_millifen,
            at(r.at),
        ),
    };
}

/// Upserts one category's differences: `$1` run, `$2` provider, `$3` merchant, `$4`
/// day, `$5`/`$6` the day's bounds, `$7` this run's time (`last_seen_at`).
macro_rules! upsert_differences {
    ($select:expr) => {
        concat!(
            "INSERT INTO bill_differences (provider, merchant, bill_date, category,
                 out_trade_no, out_refund_no, provider_trade_no, bill_amount,
                 ledger_amount, registered_amount, found_at, last_seen_at) ",
            $select,
            " ON CONFLICT (provider, merchant, bill_date, category, out_trade_no,
                 out_refund_no) DO UPDATE
                 SET provider_trade_no = EXCLUDED.provider_trade_no,
                     bill_amount = EXCLUDED.bill_amount,
                     ledger_amount = EXCLUDED.ledger_amount,
                     registered_amount = EXCLUDED.registered_amount,
                     last_seen_at = EXCLUDED.last_seen_at,
                     status = CASE WHEN bill_differences.status = 'settled' THEN 'open'
                                   ELSE bill_differences.status END"
        )
    };
}

/// The comparison, one statement per direction (each binds `$1`–`$7`, see
/// [`upsert_differences`]; a statement that needs no day bounds still names `$5` and
/// `$6`, so that PostgreSQL knows their types).
const COMPARE: [&str; 4] = [
    // Paid in the bill: unknown or unpaid in payhook, closed in payhook, or another
    // amount.
    upsert_differences!(
        "SELECT $2, $3, $4,
                CASE WHEN p.id IS NULL OR (p.paid_at IS NULL AND p.state <> 'CLOSED')
                         THEN 'missing_in_payhook'
                     WHEN p.state = 'CLOSED' THEN 'state_mismatch'
                     ELSE 'amount_mismatch' END,
                l.out_trade_no, '', l.provider_trade_no, l.amount, p.total_amount,
                p.expected_amount, $7, $7
         FROM bill_lines l
         LEFT JOIN payments p
           ON p.provider = $2 AND p.merchant = $3 AND p.out_trade_no = l.out_trade_no
         WHERE l.run_id = $1 AND l.kind = 'payment'
           AND (p.id IS NULL OR p.paid_at IS NULL OR p.state = 'CLOSED'
                OR p.total_amount IS DISTINCT FROM l.amount)
           AND $5::timestamptz IS NOT NULL AND $6::timestamptz IS NOT NULL"
    ),
    // Paid that day in payhook, absent from the bill.
    upsert_differences!(
        "SELECT $2, $3, $4, 'missing_at_provider', p.out_trade_no, '',
                p.provider_trade_no, NULL, p.total_amount, p.expected_amount, $7, $7
         FROM payments p
         WHERE p.provider = $2 AND p.merchant = $3
           AND p.paid_at >= $5 AND p.paid_at < $6
           AND NOT EXISTS (SELECT 1 FROM bill_lines l
                           WHERE l.run_id = $1 AND l.kind = 'payment'
                             AND l.out_trade_no = p.out_trade_no)"
    ),
    // Refunded in the bill: unknown, not succeeded, or another amount in payhook
    // (Alipay's cumulative refund_fee is not one refund's amount: not compared).
    upsert_differences!(
        "SELECT $2, $3, $4, 'refund_mismatch', l.out_trade_no, l.out_refund_no,
                l.provider_trade_no, l.amount, r.amount, r.expected_amount, $7, $7
         FROM bill_lines l
         LEFT JOIN refunds r
           ON r.provider = $2 AND r.merchant = $3 AND r.out_refund_no = l.out_refund_no
         WHERE l.run_id = $1 AND l.kind = 'refund'
           AND (r.id IS NULL OR r.status <> 'REFUND_SUCCEEDED'
                OR (NOT r.amount_cumulative AND r.amount IS DISTINCT FROM l.amount))
           AND $5::timestamptz IS NOT NULL AND $6::timestamptz IS NOT NULL"
    ),
    // Succeeded that day in payhook (by when payhook recorded it), absent from the
    // bill.
    upsert_differences!(
        "SELECT $2, $3, $4, 'refund_mismatch', p.out_trade_no, r.out_refund_no,
                p.provider_trade_no, NULL, r.amount, r.expected_amount, $7, $7
         FROM refunds r JOIN payments p ON p.id = r.payment_id
         WHERE r.provider = $2 AND r.merchant = $3 AND r.status = 'REFUND_SUCCEEDED'
           AND r.updated_at >= $5 AND r.updated_at < $6
           AND NOT EXISTS (SELECT 1 FROM bill_lines l
                           WHERE l.run_id = $1 AND l.kind = 'refund'
                             AND l.out_refund_no = r.out_refund_no)"
    ),
];

/// For each open `missing_in_payhook` difference of the day not yet handed over: the
/// payment row created (pending) or kept, due for the reconciler's query now.
const REQUEST_QUERIES: &str = "
    WITH asked AS (
        UPDATE bill_differences SET query_requested = TRUE
        WHERE provider = $1 AND merchant = $2 AND bill_date = $3
          AND category = 'missing_in_payhook' AND status = 'open'
          AND last_seen_at = $4 AND NOT query_requested
        RETURNING out_trade_no
    )
    INSERT INTO payments (provider, merchant, out_trade_no, currency, reconcile_next_at)
    SELECT $1, $2, out_trade_no, 'CNY', now() FROM asked
    ON CONFLICT (provider, merchant, out_trade_no) DO UPDATE
        SET reconcile_next_at = now(), updated_at = now()
        WHERE payments.state = 'PENDING'";

/// The ledger's side of the day: payments paid and refunds succeeded in `[$3, $4)`.
const LEDGER_TOTALS: &str = "
    SELECT
        (SELECT count(*) FROM payments
          WHERE provider = $1 AND merchant = $2 AND paid_at >= $3 AND paid_at < $4),
        (SELECT COALESCE(sum(total_amount), 0)::int8 FROM payments
          WHERE provider = $1 AND merchant = $2 AND paid_at >= $3 AND paid_at < $4),
        (SELECT count(*) FROM refunds
          WHERE provider = $1 AND merchant = $2 AND status = 'REFUND_SUCCEEDED'
            AND updated_at >= $3 AND updated_at < $4),
        (SELECT COALESCE(sum(amount), 0)::int8 FROM refunds
          WHERE provider = $1 AND merchant = $2 AND status = 'REFUND_SUCCEEDED'
            AND updated_at >= $3 AND updated_at < $4)";

#[cfg(test)]
mod tests {
    use super::*;
    use payhook_shared::bills::{BillPayment, BillRefund};

    #[test]
    fn copy_lines_quote_text_and_leave_absent_values_empty() {
        let mut out = String::new();
        csv_line(
            &mut out,
            7,
            1,
            &BillRecord::Payment(BillPayment {
                provider_trade_no: "42".into(),
                out_trade_no: "O\"1,".into(),
                amount_fen: 100,
                settled_fen: 99,
                fee_millifen: 600,
                at: None,
            }),
        );
        csv_line(
            &mut out,
            7,
            2,
            &BillRecord::Refund(BillRefund {
                provider_trade_no: "42".into(),
                out_trade_no: "O1".into(),
                out_refund_no: "R1".into(),
                refund_id: None,
                amount_fen: 10,
                fee_millifen: -60,
                at: None,
            }),
        );
        assert_eq!(
            out,
            "7,1,payment,\"42\",\"O\"\"1,\",,,100,99,600,\n7,2,refund,\"42\",\"O1\",\"R1\",,10,,-60,\n"
        );
    }

    #[test]
    fn a_day_is_its_china_standard_time_bounds() {
        let day = Date::from_calendar_date(2026, time::Month::December, 6).expect("date");
        let (start, end) = day_bounds(day);
        assert_eq!(
            start.unix_timestamp(),
            1_796_486_400,
            "2026-12-05T16:00:00Z"
        );
        assert_eq!(end - start, time::Duration::days(1));
    }
}
