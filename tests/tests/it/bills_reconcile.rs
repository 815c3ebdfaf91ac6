//! Daily bill reconciliation against the real PostgreSQL: each kind of difference is
//! found with its category, a run again finds the same and applies nothing twice, a
//! difference settled since is marked so, and a paid trade payhook never heard of is
//! handed to the reconciler's query.

use payhook_shared::bills::{BillPayment, BillRecord, BillRefund, CST};
use payhook_shared::event::Provider;
use payhook_testkit::db::TestDb;
use payhook_worker::bills::{self, RunReport};
use payhook_worker::db::ApplyOutcome;
use time::{Date, OffsetDateTime};

use crate::worker_apply::{apply, paid, refunded};

const MERCHANT: &str = "m1";
const PROVIDER: Provider = Provider::WechatV3;

fn today() -> Date {
    OffsetDateTime::now_utc().to_offset(CST).date()
}

fn payment(no: &str, fen: i64) -> BillRecord {
    BillRecord::Payment(BillPayment {
        provider_trade_no: format!("T{no}"),
        out_trade_no: no.into(),
        amount_fen: fen,
        settled_fen: fen,
        fee_millifen: fen * 6,
        at: Some(OffsetDateTime::now_utc()),
    })
}

fn refund(order: &str, no: &str, fen: i64) -> BillRecord {
    BillRecord::Refund(BillRefund {
        provider_trade_no: format!("T{order}"),
        out_trade_no: order.into(),
        out_refund_no: no.into(),
        refund_id: Some(format!("5030{no}")),
        amount_fen: fen,
        fee_millifen: -fen * 6,
        at: Some(OffsetDateTime::now_utc()),
    })
}

async fn run(db: &TestDb, records: Vec<BillRecord>) -> RunReport {
    bills::reconcile(
        &db.pool,
        PROVIDER,
        MERCHANT,
        today(),
        "sha-of-the-bill",
        records,
    )
    .await
    .expect("the run completes")
}

/// The ledger: O1 paid 88.88 and refunded 8.88 (R1), O2 paid 1.00, O4 paid 3.00.
async fn ledger(db: &TestDb) {
    for envelope in [
        paid(PROVIDER, "O1", 8_888),
        paid(PROVIDER, "O2", 100),
        paid(PROVIDER, "O4", 300),
        refunded(PROVIDER, "O1", "R1", 888),
    ] {
        assert!(matches!(
            apply(db, &envelope).await,
            ApplyOutcome::Applied { .. }
        ));
    }
}

async fn open(db: &TestDb) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT category, out_trade_no, out_refund_no FROM bill_differences
         WHERE status = 'open' ORDER BY category, out_trade_no, out_refund_no",
    )
    .fetch_all(&db.pool)
    .await
    .expect("differences")
}

fn row(category: &str, order: &str, refund: &str) -> (String, String, String) {
    (category.into(), order.into(), refund.into())
}

#[tokio::test]
async fn a_clean_day_has_no_difference_and_both_sides_recorded() {
    let db = TestDb::new().await;
    ledger(&db).await;
    let report = run(
        &db,
        vec![
            payment("O1", 8_888),
            payment("O2", 100),
            payment("O4", 300),
            refund("O1", "R1", 888),
        ],
    )
    .await;
    assert!(report.open.is_empty(), "{report:?}");
    assert_eq!((report.bill.payments, report.bill.payment_fen), (3, 9_288));
    assert_eq!(
        (report.ledger_payments, report.ledger_payment_fen),
        (3, 9_288)
    );
    assert_eq!((report.ledger_refunds, report.ledger_refund_fen), (1, 888));
    let (state, lines): (String, i64) = sqlx::query_as(
        "SELECT state, (SELECT count(*) FROM bill_lines) FROM bill_runs WHERE id = $1",
    )
    .bind(report.run_id)
    .fetch_one(&db.pool)
    .await
    .expect("run row");
    assert_eq!(
        (state.as_str(), lines),
        ("reconciled", 0),
        "lines are not kept"
    );
}

#[tokio::test]
async fn every_kind_of_difference_is_found_once_and_a_run_again_changes_nothing() {
    let db = TestDb::new().await;
    ledger(&db).await;
    let bill = || {
        vec![
            payment("O1", 8_888),
            payment("O2", 101),
            payment("O3", 500),
            refund("O1", "R1", 888),
            refund("O2", "R2", 50),
        ]
    };
    let first = run(&db, bill()).await;
    let expected = vec![
        row("amount_mismatch", "O2", ""),
        row("missing_at_provider", "O4", ""),
        row("missing_in_payhook", "O3", ""),
        row("refund_mismatch", "O2", "R2"),
    ];
    assert_eq!(open(&db).await, expected);
    assert_eq!(first.queries_requested, 1, "O3 handed to the reconciler");
    let (state, due): (String, bool) = sqlx::query_as(
        "SELECT state, reconcile_next_at <= now() FROM payments
         WHERE provider = 'wechat_v3' AND merchant = 'm1' AND out_trade_no = 'O3'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("O3 is now known, pending");
    assert_eq!((state.as_str(), due), ("PENDING", true));
    let outbox_before: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&db.pool)
        .await
        .expect("outbox");

    let again = run(&db, bill()).await;
    assert_eq!(open(&db).await, expected, "the same differences, once each");
    assert_eq!((again.queries_requested, again.settled), (0, 0));
    assert_eq!(again.run_id, first.run_id, "one run row per day");
    let outbox_after: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&db.pool)
        .await
        .expect("outbox");
    assert_eq!(outbox_after, outbox_before, "a run writes no event itself");
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM bill_runs WHERE id = $1")
        .bind(first.run_id)
        .fetch_one(&db.pool)
        .await
        .expect("run");
    assert_eq!(attempts, 2);
}

#[tokio::test]
async fn a_missing_trade_applied_since_is_settled_by_the_next_run() {
    let db = TestDb::new().await;
    ledger(&db).await;
    let bill = || {
        vec![
            payment("O1", 8_888),
            payment("O2", 100),
            payment("O3", 500),
            payment("O4", 300),
            refund("O1", "R1", 888),
        ]
    };
    let first = run(&db, bill()).await;
    assert_eq!(
        first.open.get("missing_in_payhook").copied(),
        Some(1),
        "{first:?}"
    );
    // The reconciler's query answer goes through the apply path: O3 paid, one event.
    assert!(matches!(
        apply(&db, &paid(PROVIDER, "O3", 500)).await,
        ApplyOutcome::Applied { .. }
    ));
    let second = run(&db, bill()).await;
    assert!(second.open.is_empty(), "{second:?}");
    assert_eq!(second.settled, 1);
    let status: String =
        sqlx::query_scalar("SELECT status FROM bill_differences WHERE out_trade_no = 'O3'")
            .fetch_one(&db.pool)
            .await
            .expect("difference");
    assert_eq!(status, "settled");
}

fn bill_file(records: Vec<BillRecord>) -> Vec<u8> {
    let mut text = Vec::new();
    payhook_shared::bills::wechat::write(&mut text, ("wx1", "1900000110"), records).expect("write");
    text
}

fn file_bill(day: Date) -> bills::Bill<'static> {
    bills::Bill {
        provider: PROVIDER,
        merchant: MERCHANT,
        day,
        sha256: "sha-of-the-file",
    }
}

#[tokio::test]
async fn a_bill_file_streams_through_the_parser_and_a_refused_one_fails_the_run_whole() {
    let db = TestDb::new().await;
    ledger(&db).await;
    let records = vec![
        payment("O1", 8_888),
        payment("O2", 100),
        payment("O3", 500),
        payment("O4", 300),
        refund("O1", "R1", 888),
    ];
    let file = bill_file(records);

    // Cut before its summary: refused, nothing but the failure recorded.
    let cut = file[..file.len() - 60].to_vec();
    let refused = bills::reconcile_file(
        &db.pool,
        file_bill(today()),
        bills::Format::Wechat(PROVIDER),
        std::io::Cursor::new(cut),
    )
    .await;
    assert!(
        matches!(refused, Err(bills::RunError::Bill(_))),
        "{refused:?}"
    );
    let (state, error): (String, Option<String>) =
        sqlx::query_as("SELECT state, error FROM bill_runs")
            .fetch_one(&db.pool)
            .await
            .expect("the failed run is recorded");
    assert_eq!(state, "failed");
    assert!(error.is_some_and(|e| e.contains("bill refused")));
    assert!(open(&db).await.is_empty(), "a refused bill finds nothing");

    let report = bills::reconcile_file(
        &db.pool,
        file_bill(today()),
        bills::Format::Wechat(PROVIDER),
        std::io::Cursor::new(file),
    )
    .await
    .expect("the whole file reconciles");
    assert_eq!(report.bill.payments, 4);
    assert_eq!(open(&db).await, vec![row("missing_in_payhook", "O3", "")]);
}
