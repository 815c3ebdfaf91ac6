//! The receiver's ack contract against the real RabbitMQ: each provider's verified
//! notification is answered with success only once exactly one persistent message is
//! on the work queue; nothing else is.

use payhook_testkit::harness::unique;
use std::sync::Arc;

use payhook_shared::clock::SystemClock;
use payhook_shared::event::{Kind, Provider, Status};
use payhook_shared::wechat_v2::SignType as V2SignType;
use payhook_testkit::harness::{Answer, Providers, TestBroker, TestReceiver, post, test_settings};

const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";
const XML: &str = "text/xml";
const JSON: &str = "application/json";

struct Ctx {
    providers: Providers,
    receiver: TestReceiver,
    broker: TestBroker,
    client: reqwest::Client,
}

async fn start() -> Ctx {
    start_with_clock(Arc::new(SystemClock)).await
}

async fn start_with_clock(clock: Arc<dyn payhook_shared::clock::Clock>) -> Ctx {
    let providers = Providers::new();
    let mut settings = test_settings();
    providers.register(&mut settings);
    let receiver = TestReceiver::spawn(settings, clock).await;
    Ctx {
        providers,
        receiver,
        broker: TestBroker::connect().await,
        client: reqwest::Client::new(),
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Ctx {
    async fn alipay(&self, body: Vec<u8>) -> Answer {
        post(
            &self.client,
            &self.receiver.url("/notify/alipay/m1"),
            FORM,
            &[],
            body,
        )
        .await
    }
    async fn wechat_v2(&self, body: Vec<u8>) -> Answer {
        post(
            &self.client,
            &self.receiver.url("/notify/wechat/v2/m1"),
            XML,
            &[],
            body,
        )
        .await
    }
    async fn wechat_v3(&self, body: Vec<u8>) -> Answer {
        let headers = self.providers.wechat_v3.headers(now(), &body);
        self.wechat_v3_with(headers, body).await
    }
    async fn wechat_v3_with(&self, headers: Vec<(String, String)>, body: Vec<u8>) -> Answer {
        post(
            &self.client,
            &self.receiver.url("/notify/wechat/v3/m1"),
            JSON,
            &headers,
            body,
        )
        .await
    }
    fn work(&self) -> &str {
        &self.receiver.names.work
    }
}

#[tokio::test]
async fn alipay_payment_is_acked_and_queued_once_with_its_identity() {
    let ctx = start().await;
    let (order, notify_id) = (unique("o"), unique("n"));
    let answer = ctx
        .alipay(ctx.providers.alipay.payment(&order, 8888, &notify_id))
        .await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "success"));

    let messages = ctx.broker.drain(ctx.work()).await;
    assert_eq!(
        messages.len(),
        1,
        "exactly one message per acked notification"
    );
    let m = &messages[0];
    let e = &m.envelope;
    assert_eq!(e.provider, Provider::Alipay);
    assert_eq!(e.merchant, "m1");
    assert_eq!((e.kind, e.status), (Kind::Payment, Status::Paid));
    assert_eq!(e.event_id, format!("alipay:m1:{notify_id}"));
    assert_eq!(
        e.transition_key.as_deref(),
        Some(format!("alipay:m1:payment:{order}:PAID").as_str())
    );
    assert_eq!(e.fields.out_trade_no.as_deref(), Some(order.as_str()));
    assert_eq!(e.fields.total_amount, Some(8888));
    assert_eq!(
        e.fields.app_id.as_deref(),
        Some(ctx.providers.alipay.app_id.as_str())
    );
    assert!(
        e.raw
            .body
            .as_deref()
            .is_some_and(|b| b.contains("notify_id")),
        "raw body kept"
    );
    // Durable and identifiable on the wire.
    assert_eq!(m.properties.delivery_mode(), &Some(2));
    assert_eq!(
        m.properties.message_id().as_ref().map(|s| s.as_str()),
        Some(e.event_id.as_str())
    );
    let header = m
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("request_id").cloned())
        .expect("request_id header");
    let lapin::types::AMQPValue::LongString(header) = header else {
        panic!("string header")
    };
    let request_id = answer.request_id.expect("X-Request-Id on the answer");
    assert_eq!(
        header.as_bytes(),
        request_id.as_bytes(),
        "the answer's request id travels in AMQP"
    );
    assert_eq!(e.request_id, request_id);
    assert_eq!(
        ctx.receiver
            .metric("payhook_notifications_total{provider=\"alipay\",outcome=\"acked\"}"),
        1.0
    );
}

#[tokio::test]
async fn alipay_partial_and_full_refunds_are_published_with_cumulative_amounts() {
    let ctx = start().await;
    let order = unique("o");
    let signer = &ctx.providers.alipay;
    let partial = signer.refund(&order, 10000, 3000, "r1", &unique("n"), false);
    let full = signer.refund(&order, 10000, 10000, "r2", &unique("n"), true);
    assert_eq!(ctx.alipay(partial).await.body, "success");
    assert_eq!(ctx.alipay(full).await.body, "success");
    let messages = ctx.broker.drain(ctx.work()).await;
    let refunds: Vec<_> = messages.iter().map(|m| &m.envelope).collect();
    assert_eq!(refunds.len(), 2);
    for (e, amount, refund_no) in [(refunds[0], 3000, "r1"), (refunds[1], 10000, "r2")] {
        assert_eq!((e.kind, e.status), (Kind::Refund, Status::RefundSucceeded));
        assert_eq!(e.fields.refund_amount, Some(amount));
        assert!(e.fields.refund_amount_cumulative);
        assert_eq!(e.fields.out_refund_no.as_deref(), Some(refund_no));
    }
}

#[tokio::test]
async fn alipay_close_of_an_unpaid_order_is_published_as_close() {
    let ctx = start().await;
    let order = unique("o");
    assert_eq!(
        ctx.alipay(ctx.providers.alipay.close(&order, 500, &unique("n")))
            .await
            .body,
        "success"
    );
    let messages = ctx.broker.drain(ctx.work()).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        (messages[0].envelope.kind, messages[0].envelope.status),
        (Kind::Close, Status::Closed)
    );
}

#[tokio::test]
async fn wechat_v2_payments_in_md5_and_hmac_are_acked_and_queued() {
    let ctx = start().await;
    for sign_type in [V2SignType::Md5, V2SignType::HmacSha256] {
        let (order, txn) = (unique("o"), unique("4200"));
        let answer = ctx
            .wechat_v2(
                ctx.providers
                    .wechat_v2
                    .payment(&order, 1999, &txn, sign_type),
            )
            .await;
        assert_eq!(answer.status, 200);
        assert!(
            answer
                .body
                .contains("<return_code><![CDATA[SUCCESS]]></return_code>"),
            "{}",
            answer.body
        );
        let messages = ctx.broker.drain(ctx.work()).await;
        assert_eq!(messages.len(), 1);
        let e = &messages[0].envelope;
        assert_eq!(
            (e.provider, e.kind, e.status),
            (Provider::WechatV2, Kind::Payment, Status::Paid)
        );
        assert_eq!(e.event_id, format!("wechat_v2:m1:{txn}:SUCCESS"));
        assert_eq!(e.fields.total_amount, Some(1999));
        assert_eq!(
            e.fields.mch_id.as_deref(),
            Some(ctx.providers.wechat_v2.mch_id.as_str())
        );
    }
}

#[tokio::test]
async fn wechat_v2_encrypted_refund_is_decrypted_and_queued() {
    let ctx = start().await;
    let (order, refund_no) = (unique("o"), unique("r"));
    let body = ctx
        .providers
        .wechat_v2
        .refund(&order, &refund_no, 1000, 400, "SUCCESS");
    let answer = ctx.wechat_v2(body).await;
    assert!(answer.body.contains("SUCCESS"), "{}", answer.body);
    let messages = ctx.broker.drain(ctx.work()).await;
    assert_eq!(messages.len(), 1);
    let e = &messages[0].envelope;
    assert_eq!((e.kind, e.status), (Kind::Refund, Status::RefundSucceeded));
    assert_eq!(e.event_id, format!("wechat_v2:m1:{refund_no}:SUCCESS"));
    assert_eq!(e.fields.refund_amount, Some(400));
    assert!(!e.fields.refund_amount_cumulative);
}

#[tokio::test]
async fn wechat_v3_transaction_is_acked_with_204_and_queued() {
    let ctx = start().await;
    let (id, order) = (uuid::Uuid::new_v4().to_string(), unique("o"));
    let body = ctx
        .providers
        .wechat_v3
        .transaction(&id, &order, 12345, "SUCCESS");
    let answer = ctx.wechat_v3(body).await;
    assert_eq!((answer.status, answer.body.as_str()), (204, ""));
    let messages = ctx.broker.drain(ctx.work()).await;
    assert_eq!(messages.len(), 1);
    let e = &messages[0].envelope;
    assert_eq!(
        (e.provider, e.kind, e.status),
        (Provider::WechatV3, Kind::Payment, Status::Paid)
    );
    assert_eq!(e.event_id, format!("wechat_v3:m1:{id}"));
    assert_eq!(e.fields.total_amount, Some(12345));
    let header_names: Vec<&str> = e.raw.headers.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        header_names
            .iter()
            .any(|h| h.eq_ignore_ascii_case("Wechatpay-Signature")),
        "{header_names:?}"
    );
}

#[tokio::test]
async fn wechat_v3_refund_is_acked_and_queued() {
    let ctx = start().await;
    let id = uuid::Uuid::new_v4().to_string();
    let (order, refund_no) = (unique("o"), unique("r"));
    let body = ctx
        .providers
        .wechat_v3
        .refund(&id, &order, &refund_no, 1000, 250, "SUCCESS");
    assert_eq!(ctx.wechat_v3(body).await.status, 204);
    let messages = ctx.broker.drain(ctx.work()).await;
    assert_eq!(messages.len(), 1);
    let e = &messages[0].envelope;
    assert_eq!((e.kind, e.status), (Kind::Refund, Status::RefundSucceeded));
    assert_eq!(e.fields.refund_amount, Some(250));
    assert_eq!(e.fields.out_refund_no.as_deref(), Some(refund_no.as_str()));
}

/// Replaces the first occurrence of `from` in a body (a tampered field).
fn tamper(body: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(body.to_vec()).expect("utf-8 body");
    assert!(text.contains(from), "{from} not in body");
    text.replacen(from, to, 1).into_bytes()
}

#[tokio::test]
async fn every_bad_input_gets_the_failure_answer_and_publishes_nothing() {
    // The receiver's clock stands still, so the ±300 s window edges are exact however
    // long this test takes.
    let ts = now();
    let ctx = start_with_clock(Arc::new(payhook_shared::clock::FixedClock::at_unix(ts))).await;
    let p = &ctx.providers;
    let alipay_url = ctx.receiver.url("/notify/alipay/m1");

    // Alipay: the failure body is always "fail".
    let paid = p.alipay.payment(&unique("o"), 8888, &unique("n"));
    let forger =
        payhook_sim::signer::alipay::AlipaySigner::new(&p.alipay.app_id, &p.alipay.seller_id)
            .with_key_slot(2);
    let wrong_key = forger.payment(&unique("o"), 1, &unique("n"));
    let alipay_cases: Vec<(&str, Answer, u16)> = vec![
        (
            "tampered amount",
            ctx.alipay(tamper(&paid, "total_amount=88.88", "total_amount=0.01"))
                .await,
            401,
        ),
        ("wrong key", ctx.alipay(wrong_key).await, 401),
        ("empty body", ctx.alipay(Vec::new()).await, 400),
        ("not a form", ctx.alipay(b"\xff\xfe%%%".to_vec()).await, 400),
        (
            "unknown merchant",
            post(
                &ctx.client,
                &ctx.receiver.url("/notify/alipay/nobody"),
                FORM,
                &[],
                paid.clone(),
            )
            .await,
            404,
        ),
        (
            "wrong content type",
            post(&ctx.client, &alipay_url, JSON, &[], paid.clone()).await,
            415,
        ),
        ("oversize", ctx.alipay(vec![b'a'; 70_000]).await, 413),
    ];
    for (case, answer, status) in alipay_cases {
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (status, "fail"),
            "alipay: {case}"
        );
    }

    // WeChat APIv2: FAIL in XML.
    let v2_paid = p
        .wechat_v2
        .payment(&unique("o"), 100, &unique("4200"), V2SignType::Md5);
    let xxe = b"<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><xml><return_code>&xxe;</return_code></xml>".to_vec();
    let other_merchant = payhook_sim::signer::wechat_v2::V2Signer::new("1900000109");
    let v2_cases: Vec<(&str, Answer, u16)> = vec![
        (
            "tampered fee",
            ctx.wechat_v2(tamper(
                &v2_paid,
                "<total_fee>100</total_fee>",
                "<total_fee>1</total_fee>",
            ))
            .await,
            401,
        ),
        ("XXE", ctx.wechat_v2(xxe).await, 400),
        (
            "refund under another key",
            ctx.wechat_v2(other_merchant.refund("o", "r", 10, 10, "SUCCESS"))
                .await,
            401,
        ),
        (
            "refund truncated",
            ctx.wechat_v2(p.wechat_v2.refund_envelope("AAAA")).await,
            401,
        ),
    ];
    for (case, answer, status) in v2_cases {
        assert_eq!(answer.status, status, "wechat_v2: {case}: {}", answer.body);
        assert!(
            answer
                .body
                .contains("<return_code><![CDATA[FAIL]]></return_code>"),
            "wechat_v2: {case}: {}",
            answer.body
        );
    }

    // WeChat APIv3: 4xx with {"code":"FAIL"}.
    let v3_body = p.wechat_v3.transaction(
        &uuid::Uuid::new_v4().to_string(),
        &unique("o"),
        1,
        "SUCCESS",
    );
    let with = |name: &str, value: &str| -> Vec<(String, String)> {
        p.wechat_v3
            .headers(ts, &v3_body)
            .into_iter()
            .map(|(k, v)| {
                if k.eq_ignore_ascii_case(name) {
                    (k, value.to_owned())
                } else {
                    (k, v)
                }
            })
            .collect()
    };
    let without = |name: &str| -> Vec<(String, String)> {
        p.wechat_v3
            .headers(ts, &v3_body)
            .into_iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
            .collect()
    };
    let v3_cases: Vec<(&str, Answer, u16)> = vec![
        (
            "stale timestamp",
            ctx.wechat_v3_with(p.wechat_v3.headers(ts - 301, &v3_body), v3_body.clone())
                .await,
            401,
        ),
        (
            "future timestamp",
            ctx.wechat_v3_with(p.wechat_v3.headers(ts + 301, &v3_body), v3_body.clone())
                .await,
            401,
        ),
        (
            "SIGNTEST probe",
            ctx.wechat_v3_with(
                with("Wechatpay-Signature", "WECHATPAY/SIGNTEST/9V6/uAwx"),
                v3_body.clone(),
            )
            .await,
            401,
        ),
        (
            "unknown serial",
            ctx.wechat_v3_with(
                with(
                    "Wechatpay-Serial",
                    "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
                ),
                v3_body.clone(),
            )
            .await,
            401,
        ),
        (
            "missing nonce",
            ctx.wechat_v3_with(without("Wechatpay-Nonce"), v3_body.clone())
                .await,
            400,
        ),
        (
            "tampered body",
            ctx.wechat_v3_with(
                p.wechat_v3.headers(ts, &v3_body),
                tamper(&v3_body, "\"id\":\"", "\"id\":\"x"),
            )
            .await,
            401,
        ),
    ];
    for (case, answer, status) in v3_cases {
        assert_eq!(answer.status, status, "wechat_v3: {case}: {}", answer.body);
        let json: serde_json::Value =
            serde_json::from_str(&answer.body).expect("JSON failure body");
        assert_eq!(json["code"], "FAIL", "wechat_v3: {case}");
    }

    assert_eq!(
        ctx.broker.depth(ctx.work()).await,
        0,
        "nothing unverified reaches the queue"
    );
    let m = |s: &str| ctx.receiver.metric(s);
    assert_eq!(
        m("payhook_verify_failures_total{provider=\"wechat_v3\",reason=\"stale_timestamp\"}"),
        2.0
    );
    assert_eq!(
        m("payhook_verify_failures_total{provider=\"alipay\",reason=\"bad_signature\"}"),
        2.0
    );
    assert_eq!(
        m("payhook_verify_failures_total{provider=\"wechat_v2\",reason=\"xml_doctype\"}"),
        1.0
    );
    assert_eq!(
        m("payhook_notifications_total{provider=\"alipay\",outcome=\"unknown_merchant\"}"),
        1.0
    );
    assert_eq!(
        m("payhook_notifications_total{provider=\"alipay\",outcome=\"acked\"}"),
        0.0
    );
}

/// During a key change each merchant has its new key and its previous one: a
/// notification signed (or encrypted) with either is acked, the metric says which key
/// verified, and one with a third key is still refused.
#[tokio::test]
async fn a_key_change_costs_no_notification_and_the_metric_says_which_key_verified() {
    use payhook_shared::config::{Material, Secret};
    let providers = Providers::new();
    let mut settings = test_settings();
    providers.register(&mut settings);
    // The configuration was switched to new keys ahead of the providers: the simulator
    // still signs with the old ones, now configured as previous.
    let new_alipay = providers.alipay.clone().with_key_slot(2);
    let mut new_v2 = providers.wechat_v2.clone();
    new_v2.api_key = "N".repeat(32);
    let mut new_v3 = providers.wechat_v3.clone();
    new_v3.api_v3_key = "M".repeat(32);
    {
        let a = settings.alipay.get_mut("m1").expect("m1");
        a.previous_alipay_public_key = a.alipay_public_key.take();
        a.alipay_public_key = Some(Material::Inline(new_alipay.public_key_b64()));
        let v2 = settings.wechat_v2.get_mut("m1").expect("m1");
        v2.previous_api_key = Some(v2.api_key.clone());
        v2.api_key = Secret::inline(new_v2.api_key.clone());
        let v3 = settings.wechat_v3.get_mut("m1").expect("m1");
        v3.previous_api_v3_key = Some(v3.api_v3_key.clone());
        v3.api_v3_key = Secret::inline(new_v3.api_v3_key.clone());
    }
    let receiver = TestReceiver::spawn(settings, Arc::new(SystemClock)).await;
    let ctx = Ctx {
        providers,
        receiver,
        broker: TestBroker::connect().await,
        client: reqwest::Client::new(),
    };
    let keys = |provider: &str, key: &str| {
        ctx.receiver.metric(&format!(
            r#"payhook_verify_keys_total{{provider="{provider}",merchant="m1",key="{key}"}}"#
        ))
    };
    for provider in ["alipay", "wechat_v2", "wechat_v3"] {
        assert_eq!(keys(provider, "previous"), 0.0, "exported at zero");
    }

    // Old keys (the providers before the switch), then new ones (after it).
    let old = &ctx.providers;
    let answers = [
        ctx.alipay(old.alipay.payment(&unique("o"), 100, &unique("n")))
            .await,
        ctx.alipay(new_alipay.payment(&unique("o"), 100, &unique("n")))
            .await,
        ctx.wechat_v2(
            old.wechat_v2
                .payment(&unique("o"), 100, &unique("t"), V2SignType::Md5),
        )
        .await,
        ctx.wechat_v2(new_v2.payment(&unique("o"), 100, &unique("t"), V2SignType::Md5))
            .await,
        ctx.wechat_v3(
            old.wechat_v3
                .transaction(&unique("id"), &unique("o"), 100, "SUCCESS"),
        )
        .await,
        ctx.wechat_v3(new_v3.transaction(&unique("id"), &unique("o"), 100, "SUCCESS"))
            .await,
    ];
    for (i, answer) in answers.iter().enumerate() {
        assert!(matches!(answer.status, 200 | 204), "answer {i}: {answer:?}");
    }
    assert_eq!(ctx.broker.drain(ctx.work()).await.len(), 6);
    for provider in ["alipay", "wechat_v2", "wechat_v3"] {
        assert_eq!(keys(provider, "previous"), 1.0, "{provider}");
        assert_eq!(keys(provider, "current"), 1.0, "{provider}");
    }

    // A third key is neither: refused, nothing queued.
    let stranger = ctx.providers.alipay.clone().with_key_slot(3);
    let answer = ctx
        .alipay(stranger.payment(&unique("o"), 100, &unique("n")))
        .await;
    assert_eq!((answer.status, answer.body.as_str()), (401, "fail"));
    let mut third = ctx.providers.wechat_v2.clone();
    third.api_key = "T".repeat(32);
    let answer = ctx
        .wechat_v2(third.payment(&unique("o"), 100, &unique("t"), V2SignType::Md5))
        .await;
    assert_eq!(answer.status, 401);
    assert_eq!(ctx.broker.drain(ctx.work()).await.len(), 0);
}

/// W3C trace context: an incoming `traceparent` is continued (same trace, the
/// receiver's own span) on the envelope and in the AMQP headers; without one a trace
/// starts; a malformed one is ignored, never refused.
#[tokio::test]
async fn the_trace_context_travels_from_the_request_into_the_message() {
    const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let ctx = start().await;
    let url = ctx.receiver.url("/notify/alipay/m1");
    let traced = |incoming: Option<&str>| {
        let body = ctx
            .providers
            .alipay
            .payment(&unique("o"), 100, &unique("n"));
        let headers: Vec<(String, String)> = incoming
            .map(|t| vec![("traceparent".to_owned(), t.to_owned())])
            .unwrap_or_default();
        let client = ctx.client.clone();
        let url = url.clone();
        async move { post(&client, &url, FORM, &headers, body).await }
    };
    for incoming in [Some(INCOMING), None, Some("00-garbage")] {
        let answer = traced(incoming).await;
        assert_eq!(answer.body, "success", "{incoming:?}");
        let messages = ctx.broker.drain(ctx.work()).await;
        assert_eq!(messages.len(), 1);
        let m = &messages[0];
        let on_envelope = m.envelope.traceparent.clone().expect("traceparent");
        let header = m
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("traceparent").cloned());
        let Some(lapin::types::AMQPValue::LongString(header)) = header else {
            panic!("traceparent header")
        };
        assert_eq!(header.as_bytes(), on_envelope.as_bytes());
        let parsed =
            payhook_shared::trace::TraceParent::parse(&on_envelope).expect("a valid traceparent");
        let continued = parsed.trace_id() == "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(continued, incoming == Some(INCOMING), "{on_envelope}");
        assert_ne!(on_envelope, INCOMING, "the receiver's own span");
    }
}
