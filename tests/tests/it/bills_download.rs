//! Bill downloads from the provider (the simulator), as payhook's worker makes them:
//! WeChat Pay APIv3's signed `tradebill` answer, then the signed download checked
//! against its SHA-1, streamed to a file and read back gunzipped — the day's bill the
//! simulator's book holds; "no bill yet" is an answer, not an error.

use std::sync::Arc;

use payhook_shared::bills::{self, BillRecord, CST};
use payhook_shared::clock::SystemClock;
use payhook_shared::config::Settings;
use payhook_shared::event::Provider;
use payhook_shared::merchants::Merchants;
use payhook_shared::query::{BillDownload, Queriers, QueryClient};
use payhook_sim::{SimConfig, Simulator};
use payhook_testkit::harness::Providers;
use time::OffsetDateTime;

#[tokio::test]
async fn wechat_v3_tradebill_is_downloaded_checked_and_reads_as_the_days_book() {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator starts");
    sim.set_book_offset(time::Duration::days(-1));
    sim.create_order(Provider::WechatV3, "D1", 8_888)
        .expect("created");
    sim.pay(Provider::WechatV3, "D1").expect("paid");
    sim.refund(Provider::WechatV3, "D1", "DR1", 888)
        .expect("refunded");
    let today = OffsetDateTime::now_utc().to_offset(CST).date();
    let yesterday = today.previous_day().expect("a day before");

    let mut settings = Settings::from_toml("").expect("defaults");
    Providers::new().register(&mut settings);
    payhook_sim::client::register_query_credentials(&mut settings);
    settings.reconcile.wechat_base = sim.base_url();
    let merchants = Merchants::build(&settings).expect("merchants");
    let queriers = Queriers::build(&settings, &merchants).expect("queriers");
    let client = QueryClient::new(&settings.reconcile, Arc::new(SystemClock)).expect("client");
    let querier = &queriers.wechat_v3[Providers::MERCHANT];
    let dir = std::env::temp_dir();

    let BillDownload::File(file) = client
        .wechat_tradebill(querier, yesterday, &dir)
        .await
        .expect("the download succeeds")
    else {
        panic!("yesterday has a bill");
    };
    assert_eq!(file.sha256.len(), 64);
    let mut records = Vec::new();
    let totals = bills::wechat::read(
        file.reader().expect("the file opens"),
        Provider::WechatV3,
        |r| records.push(r),
    )
    .expect("the downloaded bill parses");
    assert_eq!(records, sim.bill(Provider::WechatV3, yesterday));
    assert_eq!((totals.payments, totals.refunds), (1, 1));
    assert!(matches!(&records[1], BillRecord::Refund(r) if r.out_refund_no == "DR1"));

    // A download_url on another host than reconcile.wechat_base is never followed.
    let mut elsewhere = settings.reconcile.clone();
    elsewhere.wechat_base = sim.base_url().replace("127.0.0.1", "localhost");
    let refused = QueryClient::new(&elsewhere, Arc::new(SystemClock))
        .expect("client")
        .wechat_tradebill(querier, yesterday, &dir)
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("not on reconcile.wechat_base")),
        "{refused:?}"
    );

    let not_yet = client
        .wechat_tradebill(querier, today, &dir)
        .await
        .expect("an answer");
    assert!(
        matches!(&not_yet, BillDownload::NoBill(code) if code == "NO_STATEMENT_EXIST"),
        "{not_yet:?}"
    );
}
