//! The simulator's query APIs against payhook's own verifiers: responses are signed
//! as the providers sign them, request signatures are checked as the providers
//! check them, and both are counted.

use std::time::Duration;

use payhook_shared::alipay::{AlipayKeys, SignType, verify_response};
use payhook_shared::clock::SystemClock;
use payhook_shared::error::VerifyError;
use payhook_shared::event::Provider;
use payhook_shared::wechat_v3::{V3Headers, decrypt_resource, verify_signature};
use payhook_sim::client::{AlipayCertSns, QueryClient, RawAnswer};
use payhook_sim::keys;
use payhook_sim::signer::wechat_v3::V3Signer;
use payhook_sim::{SimConfig, Simulator, api, result};
use payhook_testkit::harness::{Providers, eventually};
use serde_json::Value;

const QUERY: &str = "alipay_trade_query_response";
const REFUND_QUERY: &str = "alipay_trade_fastpay_refund_query_response";

async fn start(config: SimConfig) -> (Simulator, QueryClient) {
    let sim = Simulator::start(config).await.expect("simulator starts");
    let client = QueryClient::new(&sim);
    (sim, client)
}

fn alipay_keys(sim: &Simulator) -> AlipayKeys {
    AlipayKeys::from_public_key(&sim.providers().alipay.public_key_b64()).expect("key")
}

/// The verified node of an Alipay answer, parsed.
fn alipay_node(sim: &Simulator, answer: &RawAnswer, node: &str) -> Result<Value, VerifyError> {
    let raw = verify_response(&alipay_keys(sim), SignType::Rsa2, &answer.body, node)?;
    Ok(serde_json::from_str(raw).expect("node is JSON"))
}

/// Verifies a V3 answer with the merchant's platform keys; returns its JSON.
fn v3_verified(signer: &V3Signer, answer: &RawAnswer) -> Result<Value, VerifyError> {
    verify_signature(
        &signer.platform_keys(),
        &V3Headers::from_pairs(&answer.headers),
        answer.body.as_bytes(),
        &SystemClock,
    )?;
    Ok(serde_json::from_str(&answer.body).expect("JSON body"))
}

#[tokio::test]
async fn alipay_trade_query_answers_signed_from_the_order_book() {
    let (sim, client) = start(SimConfig::default()).await;
    sim.create_order(Provider::Alipay, "o-paid", 8_888)
        .expect("created");
    sim.pay(Provider::Alipay, "o-paid").expect("paid");
    sim.create_order(Provider::Alipay, "o-waiting", 100)
        .expect("created");

    let paid = client
        .alipay(api::ALIPAY_TRADE_QUERY, r#"{"out_trade_no":"o-paid"}"#)
        .await;
    let node = alipay_node(&sim, &paid, QUERY).expect("signed by the Alipay key");
    assert_eq!(node["code"], "10000");
    assert_eq!(node["trade_status"], "TRADE_SUCCESS");
    assert_eq!(node["total_amount"], "88.88");
    assert!(node["send_pay_date"].is_string() && node["trade_no"].is_string());

    let waiting = client
        .alipay(api::ALIPAY_TRADE_QUERY, r#"{"out_trade_no":"o-waiting"}"#)
        .await;
    assert_eq!(
        alipay_node(&sim, &waiting, QUERY).expect("signed")["trade_status"],
        "WAIT_BUYER_PAY"
    );

    let unknown = client
        .alipay(api::ALIPAY_TRADE_QUERY, r#"{"out_trade_no":"o-never"}"#)
        .await;
    let node = alipay_node(&sim, &unknown, QUERY).expect("signed");
    assert_eq!(
        (node["code"].as_str(), node["sub_code"].as_str()),
        (Some("40004"), Some("ACQ.TRADE_NOT_EXIST"))
    );

    assert_eq!(sim.queries_served(api::ALIPAY_TRADE_QUERY, result::OK), 2);
    assert_eq!(
        sim.queries_served(api::ALIPAY_TRADE_QUERY, result::NOT_FOUND),
        1
    );
}

#[tokio::test]
async fn alipay_refund_query_says_refunded_only_for_a_successful_refund() {
    let (sim, client) = start(SimConfig::default()).await;
    sim.create_order(Provider::Alipay, "o1", 10_000)
        .expect("created");
    sim.pay(Provider::Alipay, "o1").expect("paid");
    sim.refund(Provider::Alipay, "o1", "r1", 2_500)
        .expect("refunded");

    let done = client
        .alipay(
            api::ALIPAY_REFUND_QUERY,
            r#"{"out_trade_no":"o1","out_request_no":"r1"}"#,
        )
        .await;
    let node = alipay_node(&sim, &done, REFUND_QUERY).expect("signed");
    assert_eq!(node["refund_status"], "REFUND_SUCCESS");
    assert_eq!(
        (
            node["refund_amount"].as_str(),
            node["total_amount"].as_str()
        ),
        (Some("25.00"), Some("100.00"))
    );

    let none = client
        .alipay(
            api::ALIPAY_REFUND_QUERY,
            r#"{"out_trade_no":"o1","out_request_no":"r2"}"#,
        )
        .await;
    let node = alipay_node(&sim, &none, REFUND_QUERY).expect("signed");
    assert_eq!(node["code"], "10000");
    assert!(node.get("refund_status").is_none(), "{node}");
}

#[tokio::test]
async fn alipay_request_signed_with_another_key_is_refused_unsigned_and_counted() {
    let (sim, mut client) = start(SimConfig::default()).await;
    client.alipay_app_key = keys::rsa_key(3);
    let answer = client
        .alipay(api::ALIPAY_TRADE_QUERY, r#"{"out_trade_no":"o1"}"#)
        .await;
    let top: Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(top[QUERY]["code"], "40002");
    assert_eq!(top[QUERY]["sub_code"], "isv.invalid-signature");
    assert!(top.get("sign").is_none());
    assert_eq!(sim.rejected_request_signatures(), 1);
    assert_eq!(
        sim.queries_served(api::ALIPAY_TRADE_QUERY, result::BAD_SIGNATURE),
        1
    );
}

#[tokio::test]
async fn the_next_responses_can_carry_a_bad_signature_and_are_counted() {
    let (sim, client) = start(SimConfig::default()).await;
    sim.corrupt_next_query_responses(2);
    let query = || client.alipay(api::ALIPAY_TRADE_QUERY, r#"{"out_trade_no":"x"}"#);
    let first = query().await;
    assert_eq!(
        alipay_node(&sim, &first, QUERY).err(),
        Some(VerifyError::BadSignature)
    );
    let v3 = client
        .wechat_v3_get("/v3/pay/transactions/out-trade-no/x?mchid=1900000110")
        .await;
    assert_eq!(
        v3_verified(&sim.providers().wechat_v3, &v3).err(),
        Some(VerifyError::BadSignature)
    );
    let third = query().await;
    assert!(
        alipay_node(&sim, &third, QUERY).is_ok(),
        "only the next two"
    );
    assert_eq!(sim.query_stats().bad_signatures_sent, 2);
}

#[tokio::test]
async fn wechat_v3_queries_answer_signed_and_unknown_ones_are_signed_404s() {
    let (sim, client) = start(SimConfig::default()).await;
    let v3 = sim.providers().wechat_v3.clone();
    sim.create_order(Provider::WechatV3, "o1", 500)
        .expect("created");
    sim.pay(Provider::WechatV3, "o1").expect("paid");
    sim.refund(Provider::WechatV3, "o1", "r1", 200)
        .expect("refunded");
    sim.create_order(Provider::WechatV3, "o2", 100)
        .expect("created");

    let path = |no: &str| format!("/v3/pay/transactions/out-trade-no/{no}?mchid={}", v3.mch_id);
    let paid = client.wechat_v3_get(&path("o1")).await;
    assert_eq!(paid.status, 200);
    let tx = v3_verified(&v3, &paid).expect("signed by the platform key");
    assert_eq!(tx["trade_state"], "REFUND");
    assert_eq!(tx["amount"]["total"], 500);
    let truth = sim.order(Provider::WechatV3, "o1").expect("order");
    assert_eq!(
        tx["transaction_id"].as_str(),
        truth.provider_trade_no.as_deref()
    );

    let unpaid = v3_verified(&v3, &client.wechat_v3_get(&path("o2")).await).expect("signed");
    assert_eq!(unpaid["trade_state"], "NOTPAY");
    assert!(unpaid.get("transaction_id").is_none());

    let missing = client.wechat_v3_get(&path("o3")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        v3_verified(&v3, &missing).expect("signed")["code"],
        "ORDER_NOT_EXIST"
    );

    let refund = client.wechat_v3_get("/v3/refund/domestic/refunds/r1").await;
    let refund = v3_verified(&v3, &refund).expect("signed");
    assert_eq!(
        (
            refund["status"].as_str(),
            refund["amount"]["refund"].as_i64()
        ),
        (Some("SUCCESS"), Some(200))
    );
    let no_refund = client.wechat_v3_get("/v3/refund/domestic/refunds/r9").await;
    assert_eq!(no_refund.status, 404);
    assert_eq!(
        v3_verified(&v3, &no_refund).expect("signed")["code"],
        "RESOURCE_NOT_EXISTS"
    );
}

#[tokio::test]
async fn wechat_v3_requests_with_a_bad_signature_or_a_stale_timestamp_get_a_signed_401() {
    let (sim, mut client) = start(SimConfig::default()).await;
    let v3 = sim.providers().wechat_v3.clone();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let stale = client.wechat_v3_get_at("/v3/certificates", now - 301).await;
    assert_eq!(stale.status, 401);
    client.wechat_key = keys::rsa_key(3);
    let forged = client.wechat_v3_get("/v3/certificates").await;
    assert_eq!(forged.status, 401);
    assert_eq!(
        v3_verified(&v3, &forged).expect("even a 401 is signed")["code"],
        "SIGN_ERROR"
    );
    assert_eq!(sim.rejected_request_signatures(), 2);
    assert_eq!(
        sim.queries_served(api::WECHAT_V3_CERTIFICATES, result::BAD_SIGNATURE),
        2
    );
}

#[tokio::test]
async fn rotated_platform_certificate_is_listed_at_once_and_signs_after_the_overlap() {
    let mut config = SimConfig::new(Providers::with_v3_certificate());
    config.time_scale = 0.001;
    config.cert_overlap = Duration::from_secs(1_000); // 1 s real
    config.cert_retire_after = Duration::from_secs(1_000);
    let (sim, client) = start(config).await;
    let old = sim.providers().wechat_v3.clone();
    let api_v3_key = old.api_v3_key.clone();

    let new_serial = sim.rotate_wechat_platform_cert().await;
    let listing = client.wechat_v3_get("/v3/certificates").await;
    // Still signed with the old certificate during the overlap.
    let listing = v3_verified(&old, &listing).expect("signed by the old certificate");
    let data = listing["data"].as_array().expect("data");
    let serials: Vec<&str> = data
        .iter()
        .filter_map(|c| c["serial_no"].as_str())
        .collect();
    assert_eq!(serials, [old.serial.as_str(), new_serial.as_str()]);
    let mut keys = payhook_shared::wechat_v3::PlatformKeys::new();
    for cert in data {
        let e = &cert["encrypt_certificate"];
        let pem = decrypt_resource(
            api_v3_key.as_bytes(),
            e["nonce"].as_str().expect("nonce"),
            e["associated_data"].as_str().expect("aad"),
            e["ciphertext"].as_str().expect("ciphertext"),
        )
        .expect("decrypts with the APIv3 key");
        keys.add_certificate_pem(std::str::from_utf8(&pem).expect("PEM"))
            .expect("certificate");
    }
    assert_eq!(keys.len(), 2);

    assert!(
        eventually(Duration::from_secs(10), || sim.wechat_signing_serial()
            == new_serial)
        .await,
        "signing switches after the overlap"
    );
    let after = client.wechat_v3_get("/v3/certificates").await;
    verify_signature(
        &keys,
        &V3Headers::from_pairs(&after.headers),
        after.body.as_bytes(),
        &SystemClock,
    )
    .expect("signed by the new certificate, fetched from the listing");
    assert!(
        eventually(Duration::from_secs(10), || sim.wechat_listed_serials()
            == [new_serial.clone()])
        .await,
        "the old certificate leaves the listing when it expires"
    );
}

#[tokio::test]
async fn wechat_v2_orderquery_checks_the_request_sign_and_signs_its_answer() {
    let (sim, client) = start(SimConfig::default()).await;
    sim.create_order(Provider::WechatV2, "o1", 700)
        .expect("created");
    sim.pay(Provider::WechatV2, "o1").expect("paid");
    let v2 = sim.providers().wechat_v2.clone();
    let fields = |answer: &RawAnswer| {
        payhook_shared::wechat_v2::parse_xml(answer.body.as_bytes()).expect("XML")
    };
    let field = |f: &[(String, String)], name: &str| {
        f.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    };

    let found = fields(&client.wechat_v2_orderquery("o1").await);
    assert_eq!(field(&found, "trade_state").as_deref(), Some("SUCCESS"));
    assert_eq!(field(&found, "total_fee").as_deref(), Some("700"));
    let expected = payhook_sim::signer::wechat_v2::sign(
        &found,
        &v2.api_key,
        payhook_shared::wechat_v2::SignType::Md5,
    );
    assert_eq!(field(&found, "sign"), Some(expected));

    let missing = fields(&client.wechat_v2_orderquery("o2").await);
    assert_eq!(
        field(&missing, "err_code").as_deref(),
        Some("ORDERNOTEXIST")
    );

    let forged = reqwest::Client::new()
        .post(format!("{}/pay/orderquery", sim.base_url()))
        .body(payhook_sim::client::wechat_v2_orderquery(
            &payhook_sim::signer::wechat_v2::V2Signer {
                api_key: "x".repeat(32),
                ..v2.clone()
            },
            "o1",
        ))
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .expect("body");
    assert!(forged.contains("FAIL"), "{forged}");
    assert_eq!(sim.rejected_request_signatures(), 1);
}

#[tokio::test]
async fn alipay_certificate_mode_requires_the_sns_and_names_the_signing_certificate() {
    let config = SimConfig {
        alipay_cert_mode: true,
        ..SimConfig::default()
    };
    let (sim, mut client) = start(config).await;
    sim.create_order(Provider::Alipay, "o1", 100)
        .expect("created");
    sim.pay(Provider::Alipay, "o1").expect("paid");
    sim.finish("o1").expect("finished");
    let query = r#"{"out_trade_no":"o1"}"#;

    let without = client.alipay(api::ALIPAY_TRADE_QUERY, query).await;
    let top: Value = serde_json::from_str(&without.body).expect("JSON");
    assert_eq!(top[QUERY]["code"], "40002", "no app_cert_sn: refused");

    client.alipay_cert_sns = Some(AlipayCertSns {
        app_cert_sn: "a".repeat(32),
        alipay_root_cert_sn: "b".repeat(32),
    });
    let answer = client.alipay(api::ALIPAY_TRADE_QUERY, query).await;
    let top: Value = serde_json::from_str(&answer.body).expect("JSON");
    let alipay = &sim.providers().alipay;
    assert_eq!(
        top["alipay_cert_sn"].as_str(),
        Some(alipay.cert_sn().as_str())
    );
    let keys = AlipayKeys::from_certificates(&alipay.certificate_pem()).expect("certificate");
    let raw = verify_response(&keys, SignType::Rsa2, &answer.body, QUERY).expect("verifies by SN");
    let node: Value = serde_json::from_str(raw).expect("JSON");
    assert_eq!(node["trade_status"], "TRADE_FINISHED");
}
