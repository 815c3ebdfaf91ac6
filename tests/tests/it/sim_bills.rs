//! The simulator's daily bills: every provider's bill of a past day is served through
//! the provider's own API (signed answers, a hashed or zipped file), parses with
//! payhook's strict parsers to exactly what the order book holds for that day, and
//! carries the differences a test puts in; today's bill is "not generated yet".

use std::io::Read as _;

use payhook_shared::alipay::{AlipayKeys, SignType, verify_response};
use payhook_shared::bills::{self, BillRecord, CST};
use payhook_shared::clock::SystemClock;
use payhook_shared::event::Provider;
use payhook_shared::wechat_v3::{V3Headers, verify_signature};
use payhook_sim::bills::BillTweak;
use payhook_sim::client::QueryClient;
use payhook_sim::{SimConfig, Simulator, api};
use serde_json::Value;
use time::{Date, OffsetDateTime};

/// A simulator whose orders of every provider were paid and refunded yesterday (China
/// Standard Time): `O1` 88.88 yuan refunded 8.88 by `R1`, `O2` 1.00 yuan, `O3` never
/// paid. Returns yesterday and today.
async fn played_yesterday() -> (Simulator, QueryClient, Date, Date) {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator starts");
    sim.set_book_offset(time::Duration::days(-1));
    for provider in [Provider::Alipay, Provider::WechatV2, Provider::WechatV3] {
        sim.create_order(provider, "O1", 8_888).expect("created");
        sim.pay(provider, "O1").expect("paid");
        sim.create_order(provider, "O2", 100).expect("created");
        sim.pay(provider, "O2").expect("paid");
        sim.refund(provider, "O1", "R1", 888).expect("refunded");
        sim.create_order(provider, "O3", 50).expect("created");
    }
    let today = OffsetDateTime::now_utc().to_offset(CST).date();
    let yesterday = today.previous_day().expect("a day before");
    let client = QueryClient::new(&sim);
    (sim, client, yesterday, today)
}

fn dashed(day: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

fn records_of(
    provider: Provider,
    bytes: &[u8],
) -> (Vec<BillRecord>, payhook_shared::bills::BillTotals) {
    let mut records = Vec::new();
    let totals = match provider {
        Provider::Alipay => bills::alipay::read(bytes, |r| records.push(r)),
        other => bills::wechat::read(bytes, other, |r| records.push(r)),
    }
    .expect("the bill parses");
    (records, totals)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

/// The V3 `tradebill` answer, its signature verified.
async fn v3_tradebill(sim: &Simulator, client: &QueryClient, query: &str) -> (u16, Value) {
    let answer = client
        .wechat_v3_get(&format!("/v3/bill/tradebill?{query}"))
        .await;
    verify_signature(
        &sim.providers().wechat_v3.platform_keys(),
        &V3Headers::from_pairs(&answer.headers),
        answer.body.as_bytes(),
        &SystemClock,
    )
    .expect("the answer is signed by the platform key");
    (
        answer.status,
        serde_json::from_str(&answer.body).expect("JSON"),
    )
}

#[tokio::test]
async fn wechat_v3_serves_yesterdays_bill_with_its_hash_plain_and_gzipped() {
    let (sim, client, yesterday, today) = played_yesterday().await;
    let expected = sim.bill(Provider::WechatV3, yesterday);
    assert_eq!(
        expected.len(),
        3,
        "two payments and a refund; O3 never paid"
    );

    let (status, answer) = v3_tradebill(
        &sim,
        &client,
        &format!("bill_date={}&bill_type=ALL", dashed(yesterday)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["hash_type"], "SHA1");
    let url = answer["download_url"].as_str().expect("download_url");
    let (status, file) = client.wechat_v3_download(url).await;
    assert_eq!(status, 200);
    let digest = {
        use sha1::Digest as _;
        hex::encode(sha1::Sha1::digest(&file))
    };
    assert_eq!(answer["hash_value"], digest.as_str());
    let (records, totals) = records_of(Provider::WechatV3, &file);
    assert_eq!(records, expected);
    assert_eq!((totals.payments, totals.payment_fen), (2, 8_988));
    assert_eq!((totals.refunds, totals.refund_fen), (1, 888));
    assert_eq!(
        totals.fee_millifen,
        (8_988 - 888) * 6,
        "0.6 %, returned with the refund"
    );

    let (_, gz) = v3_tradebill(
        &sim,
        &client,
        &format!(
            "bill_date={}&bill_type=ALL&tar_type=GZIP",
            dashed(yesterday)
        ),
    )
    .await;
    let (_, packed) = client
        .wechat_v3_download(gz["download_url"].as_str().expect("url"))
        .await;
    assert_eq!(gunzip(&packed), file);

    let (status, not_yet) = v3_tradebill(
        &sim,
        &client,
        &format!("bill_date={}&bill_type=ALL", dashed(today)),
    )
    .await;
    assert_eq!(
        (status, not_yet["code"].as_str()),
        (400, Some("NO_STATEMENT_EXIST"))
    );
    let mut forger = client.clone();
    forger.wechat_key = payhook_sim::keys::rsa_key(2);
    let (unsigned, _) = forger.wechat_v3_download(url).await;
    assert_eq!(unsigned, 401, "the download needs a valid signature");
}

#[tokio::test]
async fn wechat_v2_downloadbill_serves_the_text_bill_or_no_bill_exist() {
    let (sim, client, yesterday, today) = played_yesterday().await;
    let compact = |day: Date| dashed(day).replace('-', "");
    let (status, text) = client
        .wechat_v2_downloadbill(&compact(yesterday), None)
        .await;
    assert_eq!(status, 200);
    let (records, _) = records_of(Provider::WechatV2, &text);
    assert_eq!(records, sim.bill(Provider::WechatV2, yesterday));
    let (_, gz) = client
        .wechat_v2_downloadbill(&compact(yesterday), Some("GZIP"))
        .await;
    assert_eq!(gunzip(&gz), text);

    let (_, none) = client.wechat_v2_downloadbill(&compact(today), None).await;
    let none = String::from_utf8(none).expect("XML");
    assert!(
        none.contains("No Bill Exist") && none.contains("20002"),
        "{none}"
    );
}

#[tokio::test]
async fn alipay_serves_a_zip_whose_gbk_detail_is_the_days_book() {
    let (sim, client, yesterday, today) = played_yesterday().await;
    let keys = AlipayKeys::from_public_key(&sim.providers().alipay.public_key_b64()).expect("key");
    let node = "alipay_data_dataservice_bill_downloadurl_query_response";
    let ask = |day: Date| {
        let client = client.clone();
        async move {
            client
                .alipay(
                    api::ALIPAY_BILL_URL,
                    &format!(r#"{{"bill_type":"trade","bill_date":"{}"}}"#, dashed(day)),
                )
                .await
        }
    };
    let answer = ask(yesterday).await;
    let verified: Value = serde_json::from_str(
        verify_response(&keys, SignType::Rsa2, &answer.body, node).expect("signed answer"),
    )
    .expect("JSON");
    assert_eq!(verified["code"], "10000");
    let url = verified["bill_download_url"].as_str().expect("url");
    let (status, zip) = client.fetch(url).await;
    assert_eq!(status, 200);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("a ZIP");
    let names: Vec<String> = archive
        .file_names()
        .map(|name| name.expect("entry name").into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let detail = names
        .iter()
        .find(|n| n.ends_with("_业务明细.csv"))
        .expect("the detail CSV")
        .clone();
    let mut bytes = Vec::new();
    archive
        .by_name(&detail)
        .expect("entry")
        .read_to_end(&mut bytes)
        .expect("inflate");
    let (records, totals) = records_of(Provider::Alipay, &bytes);
    assert_eq!(records, sim.bill(Provider::Alipay, yesterday));
    assert_eq!((totals.payments, totals.refunds), (2, 1));

    let not_yet = ask(today).await;
    let not_yet: Value = serde_json::from_str(
        verify_response(&keys, SignType::Rsa2, &not_yet.body, node).expect("signed answer"),
    )
    .expect("JSON");
    assert_eq!(not_yet["sub_code"], "isp.bill_not_exist");
}

#[tokio::test]
async fn a_tweaked_bill_states_another_amount_and_leaves_out_what_it_drops() {
    let (sim, client, yesterday, _) = played_yesterday().await;
    sim.tweak_bill(
        Provider::WechatV3,
        yesterday,
        BillTweak::Amount {
            out_trade_no: "O2".into(),
            amount_fen: 101,
        },
    );
    sim.tweak_bill(
        Provider::WechatV3,
        yesterday,
        BillTweak::DropRefund {
            out_refund_no: "R1".into(),
        },
    );
    let (_, answer) = v3_tradebill(
        &sim,
        &client,
        &format!("bill_date={}&bill_type=ALL", dashed(yesterday)),
    )
    .await;
    let (_, file) = client
        .wechat_v3_download(answer["download_url"].as_str().expect("url"))
        .await;
    let (records, totals) = records_of(Provider::WechatV3, &file);
    assert_eq!((totals.payments, totals.refunds), (2, 0));
    let o2 = records
        .iter()
        .find_map(|r| match r {
            BillRecord::Payment(p) if p.out_trade_no == "O2" => Some(p.amount_fen),
            _ => None,
        })
        .expect("O2 in the bill");
    assert_eq!(o2, 101);
    // The other providers' bills are untouched.
    assert_eq!(sim.bill(Provider::WechatV2, yesterday).len(), 3);
}

/// From outside, through the control API: the book's clock set a day back, an order
/// paid, a difference put into the bill.
#[tokio::test]
async fn the_control_api_plays_yesterday_and_tweaks_its_bill() {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator starts");
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let post = |path: String, body: Value| {
        let request = http.post(format!("{base}{path}")).json(&body);
        async move { request.send().await.expect("answer").status().as_u16() }
    };
    assert_eq!(
        post(
            "/_sim/clock".into(),
            serde_json::json!({"book_offset_secs": -86_400})
        )
        .await,
        204
    );
    let order =
        serde_json::json!({"provider": "wechat_v3", "out_trade_no": "C1", "amount_fen": 500});
    assert_eq!(post("/_sim/orders".into(), order).await, 201);
    assert_eq!(
        post(
            "/_sim/orders/wechat_v3/C1/pay".into(),
            serde_json::json!({})
        )
        .await,
        200
    );
    let yesterday = OffsetDateTime::now_utc()
        .to_offset(CST)
        .date()
        .previous_day()
        .expect("a day before");
    assert_eq!(
        post(
            format!("/_sim/bills/wechat_v3/{}/tweaks", dashed(yesterday)),
            serde_json::json!({"kind": "amount", "out_trade_no": "C1", "amount_fen": 499}),
        )
        .await,
        204
    );
    assert_eq!(
        post(
            "/_sim/bills/nope/2026-12-06/tweaks".into(),
            serde_json::json!({"kind": "drop_trade", "out_trade_no": "C1"}),
        )
        .await,
        404
    );
    let bill = sim.bill(Provider::WechatV3, yesterday);
    assert!(
        matches!(&bill[..], [BillRecord::Payment(p)] if p.out_trade_no == "C1" && p.amount_fen == 499),
        "{bill:?}"
    );
}
