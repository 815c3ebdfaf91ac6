//! Bill downloads from the provider (the simulator), as payhook's worker makes them:
//! signed requests, the file streamed to disk with its hashes, gunzipped or unzipped —
//! the day's bill the simulator's book holds; "no bill yet" is an answer, not an error.

use std::sync::Arc;

use payhook_shared::bills::{self, BillRecord, CST};
use payhook_shared::clock::SystemClock;
use payhook_shared::config::Settings;
use payhook_shared::event::Provider;
use payhook_shared::merchants::Merchants;
use payhook_shared::query::{BillDownload, Queriers, QueryClient};
use payhook_sim::{SimConfig, Simulator};
use payhook_testkit::harness::Providers;
use time::{Date, OffsetDateTime};

/// A simulator whose book has, for `provider`, order D1 paid yesterday (88.88) and
/// refunded 8.88 (DR1); payhook's query client and merchants pointed at it.
struct Played {
    sim: Simulator,
    settings: Settings,
    queriers: Queriers,
    client: QueryClient,
    today: Date,
    yesterday: Date,
}

async fn played(provider: Provider) -> Played {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator starts");
    sim.set_book_offset(time::Duration::days(-1));
    sim.create_order(provider, "D1", 8_888).expect("created");
    sim.pay(provider, "D1").expect("paid");
    sim.refund(provider, "D1", "DR1", 888).expect("refunded");
    let today = OffsetDateTime::now_utc().to_offset(CST).date();
    let yesterday = today.previous_day().expect("a day before");
    let mut settings = Settings::from_toml("").expect("defaults");
    sim.providers().register(&mut settings);
    payhook_sim::client::register_query_credentials(&mut settings);
    settings.reconcile.wechat_base = sim.base_url();
    settings.reconcile.alipay_gateway = format!("{}/gateway.do", sim.base_url());
    let merchants = Merchants::build(&settings).expect("merchants");
    let queriers = Queriers::build(&settings, &merchants).expect("queriers");
    let client = QueryClient::new(&settings.reconcile, Arc::new(SystemClock)).expect("client");
    Played {
        sim,
        settings,
        queriers,
        client,
        today,
        yesterday,
    }
}

/// The records of a downloaded bill.
fn read_back(provider: Provider, download: BillDownload) -> Vec<BillRecord> {
    let BillDownload::File(file) = download else {
        panic!("yesterday has a bill: {download:?}");
    };
    assert_eq!(file.sha256.len(), 64);
    let mut records = Vec::new();
    let reader = file.reader().expect("the file opens");
    match provider {
        Provider::Alipay => bills::alipay::read(reader, |r| records.push(r)),
        other => bills::wechat::read(reader, other, |r| records.push(r)),
    }
    .expect("the downloaded bill parses");
    records
}

#[tokio::test]
async fn wechat_v3_tradebill_is_downloaded_checked_and_reads_as_the_days_book() {
    let p = played(Provider::WechatV3).await;
    let querier = &p.queriers.wechat_v3[Providers::MERCHANT];
    let dir = std::env::temp_dir();
    let download = p
        .client
        .wechat_tradebill(querier, p.yesterday, &dir)
        .await
        .expect("the download succeeds");
    let records = read_back(Provider::WechatV3, download);
    assert_eq!(records, p.sim.bill(Provider::WechatV3, p.yesterday));
    assert!(
        matches!(&records[..], [BillRecord::Payment(_), BillRecord::Refund(r)] if r.out_refund_no == "DR1")
    );

    // A download_url on another host than reconcile.wechat_base is never followed.
    let mut elsewhere = p.settings.reconcile.clone();
    elsewhere.wechat_base = p.sim.base_url().replace("127.0.0.1", "localhost");
    let refused = QueryClient::new(&elsewhere, Arc::new(SystemClock))
        .expect("client")
        .wechat_tradebill(querier, p.yesterday, &dir)
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("not on reconcile.wechat_base")),
        "{refused:?}"
    );

    let not_yet = p
        .client
        .wechat_tradebill(querier, p.today, &dir)
        .await
        .expect("an answer");
    assert!(
        matches!(&not_yet, BillDownload::NoBill(code) if code == "NO_STATEMENT_EXIST"),
        "{not_yet:?}"
    );
}

#[tokio::test]
async fn wechat_v2_downloadbill_is_downloaded_gzipped_and_reads_as_the_days_book() {
    let p = played(Provider::WechatV2).await;
    let querier = &p.queriers.wechat_v2[Providers::MERCHANT];
    let dir = std::env::temp_dir();
    let download = p
        .client
        .wechat_v2_downloadbill(querier, p.yesterday, &dir)
        .await
        .expect("the download succeeds");
    assert_eq!(
        read_back(Provider::WechatV2, download),
        p.sim.bill(Provider::WechatV2, p.yesterday)
    );
    let not_yet = p
        .client
        .wechat_v2_downloadbill(querier, p.today, &dir)
        .await
        .expect("an answer");
    assert!(
        matches!(&not_yet, BillDownload::NoBill(reason) if reason == "No Bill Exist"),
        "{not_yet:?}"
    );
}

#[tokio::test]
async fn alipay_bill_url_is_asked_signed_and_the_zip_gives_the_gbk_detail() {
    let p = played(Provider::Alipay).await;
    let querier = &p.queriers.alipay[Providers::MERCHANT];
    let dir = std::env::temp_dir();
    let download = p
        .client
        .alipay_bill(querier, p.yesterday, &dir)
        .await
        .expect("the download succeeds");
    assert_eq!(
        read_back(Provider::Alipay, download),
        p.sim.bill(Provider::Alipay, p.yesterday)
    );
    let not_yet = p
        .client
        .alipay_bill(querier, p.today, &dir)
        .await
        .expect("an answer");
    assert!(
        matches!(&not_yet, BillDownload::NoBill(code) if code == "isp.bill_not_exist"),
        "{not_yet:?}"
    );
}

/// A merchant's day, whole: downloaded from the provider and reconciled against an
/// (empty) ledger — the paid trade and the refund are found missing in payhook, the
/// trade handed to the reconciler; today has no bill yet and is recorded so.
#[tokio::test]
async fn a_days_run_downloads_and_reconciles_and_records_a_missing_bill() {
    use payhook_worker::bills::{self as runs, DayOutcome};
    let p = played(Provider::WechatV3).await;
    let db = payhook_testkit::db::TestDb::new().await;
    let dir = std::env::temp_dir();
    let outcome = runs::run_day(
        &db.pool,
        &p.client,
        &p.queriers,
        Provider::WechatV3,
        Providers::MERCHANT,
        p.yesterday,
        &dir,
    )
    .await
    .expect("the day runs");
    let DayOutcome::Reconciled(report) = outcome else {
        panic!("yesterday has a bill: {outcome:?}");
    };
    assert_eq!(report.open.get("missing_in_payhook"), Some(&1));
    assert_eq!(report.open.get("refund_mismatch"), Some(&1));
    assert_eq!(report.queries_requested, 1);
    let sha: String = sqlx::query_scalar("SELECT bill_sha256 FROM bill_runs")
        .fetch_one(&db.pool)
        .await
        .expect("run");
    assert_eq!(sha.len(), 64, "the downloaded file's SHA-256 is recorded");

    let today = runs::run_day(
        &db.pool,
        &p.client,
        &p.queriers,
        Provider::WechatV3,
        Providers::MERCHANT,
        p.today,
        &dir,
    )
    .await
    .expect("an answer");
    assert!(matches!(today, DayOutcome::NoBill(_)), "{today:?}");
    let state: String = sqlx::query_scalar("SELECT state FROM bill_runs WHERE bill_date = $1")
        .bind(p.today)
        .fetch_one(&db.pool)
        .await
        .expect("run");
    assert_eq!(state, "no_bill");
}
