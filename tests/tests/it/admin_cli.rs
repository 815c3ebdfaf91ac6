//! `payhook-admin` against the real services: a message parked by the worker is
//! listed, replayed (after a dry run) and applied; a payment's history, the recent
//! payments, queue depths, order registration and reconcile-now answer as documented,
//! in human and JSON form.

use payhook_testkit::harness::unique;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use payhook_shared::clock::SystemClock;
use payhook_shared::config::{Secret, Settings};
use payhook_testkit::db::TestDb;
use payhook_testkit::harness::{
    Providers, TestBroker, TestReceiver, eventually_async, post, test_settings,
};
use payhook_testkit::proxy::Proxy;
use payhook_testkit::worker::{TEST_ADMIN_TOKEN, TestWorker, worker_settings};
use serde_json::Value;

const FORM: &str = "application/x-www-form-urlencoded";
const QUIET: Duration = Duration::from_secs(20);

/// Runs `payhook-admin <args>` in process; returns its stdout, or its error text.
async fn admin(settings: &Settings, args: &[&str]) -> Result<String, String> {
    let cli = payhook_worker::cli::Cli::try_parse_from(
        std::iter::once("payhook-admin").chain(args.iter().copied()),
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    payhook_worker::cli::run(cli, settings, &mut out)
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(String::from_utf8(out).expect("utf-8 output"))
}

async fn admin_json(settings: &Settings, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = admin(settings, &all).await.expect("command succeeds");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

struct Stack {
    providers: Providers,
    receiver: TestReceiver,
    settings: Settings,
    db: TestDb,
    broker: TestBroker,
}

async fn stack() -> Stack {
    let providers = Providers::new();
    let mut receiver_settings = test_settings();
    providers.register(&mut receiver_settings);
    let receiver = TestReceiver::spawn(receiver_settings.clone(), Arc::new(SystemClock)).await;
    let db = TestDb::new().await;
    let settings = worker_settings(&receiver_settings, db.settings.clone());
    Stack {
        providers,
        receiver,
        settings,
        db,
        broker: TestBroker::connect().await,
    }
}

impl Stack {
    async fn pay(&self, order: &str, fen: i64) {
        let body = self.providers.alipay.payment(order, fen, &unique("n"));
        let client = reqwest::Client::new();
        let answer = post(
            &client,
            &self.receiver.url("/notify/alipay/m1"),
            FORM,
            &[],
            body,
        )
        .await;
        assert_eq!(answer.body, "success");
    }

    async fn parked_depth_is(&self, n: u32) -> bool {
        eventually_async(QUIET, || async {
            self.broker.depth(&self.receiver.names.parked).await == n
        })
        .await
    }

    async fn state(&self, order: &str) -> Option<String> {
        sqlx::query_scalar("SELECT state FROM payments WHERE out_trade_no = $1")
            .bind(order)
            .fetch_optional(&self.db.pool)
            .await
            .expect("state query")
    }

    /// Parks a real payment the way production does: the worker cannot reach
    /// PostgreSQL through every retry tier. Plus a poison message of an unknown schema.
    async fn park_two(&self, order: &str) {
        let proxy = Proxy::start("127.0.0.1:5432".parse().expect("addr")).await;
        let mut cut_off = self.settings.clone();
        cut_off.postgres.url = Secret::inline(format!("postgres://postgres@{}/test", proxy.addr));
        cut_off.postgres.acquire_timeout_ms = 300;
        let worker = TestWorker::spawn(&cut_off).await;
        proxy.cut();
        self.pay(order, 4_200).await;
        let poison = serde_json::json!({"schema_version": 99, "event_id": "x"});
        self.broker
            .publish_raw(
                &self.receiver.names.work,
                poison.to_string().as_bytes(),
                lapin::BasicProperties::default(),
            )
            .await;
        assert!(self.parked_depth_is(2).await, "both parked");
        worker.stop().await;
    }
}

#[tokio::test]
async fn a_parked_payment_is_listed_dry_run_replayed_and_applied() {
    let s = stack().await;
    let order = unique("o");
    s.park_two(&order).await;

    let listed = admin_json(&s.settings, &["parked", "list"]).await;
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    let payment = listed
        .iter()
        .find(|m| m["reason"] == "retries_exhausted")
        .expect("the payment parked after its retries");
    assert_eq!(payment["provider"], "alipay");
    assert_eq!(payment["out_trade_no"], order.as_str());
    assert_eq!(payment["amount"], 4_200);
    assert_eq!(payment["attempts"], 3, "one per retry tier");
    assert!(
        payment["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    assert!(
        listed
            .iter()
            .any(|m| m["reason"] == "unknown_schema_version")
    );
    // Listing takes nothing away.
    assert!(s.parked_depth_is(2).await);

    let human = admin(&s.settings, &["parked", "list", "--provider", "alipay"])
        .await
        .expect("list");
    assert!(human.contains(&order), "{human}");
    assert!(human.contains("42.00"), "{human}");
    assert!(human.contains("1 parked message(s)"), "{human}");

    let dry = admin_json(
        &s.settings,
        &[
            "parked",
            "replay",
            "--reason",
            "retries_exhausted",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["matched"], 1);
    assert_eq!(dry["replayed"], 0);
    assert!(s.parked_depth_is(2).await, "a dry run moves nothing");
    assert_eq!(s.state(&order).await, None, "nothing applied yet");

    let worker = TestWorker::spawn(&s.settings).await;
    let replayed = admin_json(
        &s.settings,
        &["parked", "replay", "--reason", "retries_exhausted"],
    )
    .await;
    assert_eq!(replayed["replayed"], 1);
    assert_eq!(replayed["kept"], 1);
    assert_eq!(replayed["messages"][0]["out_trade_no"], order.as_str());
    let applied = eventually_async(QUIET, || async {
        s.state(&order).await.as_deref() == Some("PAID")
    })
    .await;
    assert!(applied, "the replayed payment is applied");
    assert!(s.parked_depth_is(1).await, "the poison stays parked");

    let history = admin_json(&s.settings, &["payment", "alipay", "m1", &order]).await;
    assert_eq!(history["payment"]["state"], "PAID");
    assert_eq!(history["transitions"].as_array().map(Vec::len), Some(1));
    assert_eq!(history["notifications"][0]["outcome"], "applied");
    let human = admin(&s.settings, &["payment", "alipay", "m1", &order])
        .await
        .expect("history");
    assert!(human.contains("PENDING → PAID"), "{human}");
    assert!(human.contains("payment.succeeded.alipay"), "{human}");
    worker.stop().await;
}

#[tokio::test]
async fn queue_depths_name_every_queue_and_say_which_is_missing() {
    let s = stack().await;
    let worker = TestWorker::spawn(&s.settings).await;
    let depths = admin_json(&s.settings, &["queues"]).await;
    let depths = depths.as_array().expect("a list");
    let names = &s.receiver.names;
    let row = |q: &str| {
        depths
            .iter()
            .find(|d| d["queue"] == q)
            .unwrap_or_else(|| panic!("{q} in {depths:?}"))
            .clone()
    };
    assert_eq!(row(&names.work)["consumers"], 1);
    assert_eq!(row(&names.parked)["messages"], 0);
    assert_eq!(row(&names.retry(2))["messages"], 0);
    assert_eq!(depths.len(), 3 + 3, "work, three tiers, parked, unrouted");
    worker.stop().await;

    let mut elsewhere = s.settings.clone();
    elsewhere.amqp.prefix = unique("never-declared");
    let human = admin(&elsewhere, &["queues"]).await.expect("queues");
    assert!(human.contains("missing"), "{human}");
}

#[tokio::test]
async fn an_order_registered_from_the_command_line_is_pending_and_can_be_reconciled() {
    let s = stack().await;
    let order = unique("o");
    let registered = admin_json(
        &s.settings,
        &[
            "order",
            "register",
            "--provider",
            "alipay",
            "--merchant",
            "m1",
            "--out-trade-no",
            &order,
            "--amount",
            "1999",
            "--expires-in",
            "900",
        ],
    )
    .await;
    assert_eq!(registered["status"], "created");
    let again = admin(
        &s.settings,
        &[
            "order",
            "register",
            "--provider",
            "alipay",
            "--merchant",
            "m1",
            "--out-trade-no",
            &order,
            "--amount",
            "2000",
        ],
    )
    .await;
    assert!(
        again.as_ref().is_err_and(|e| e.contains("conflict")),
        "{again:?}"
    );
    assert_eq!(s.state(&order).await.as_deref(), Some("PENDING"));

    let recent = admin_json(&s.settings, &["payments", "--state", "PENDING"]).await;
    assert_eq!(recent[0]["out_trade_no"], order.as_str());
    assert_eq!(recent[0]["expected_amount"], 1999);

    let scheduled = admin_json(&s.settings, &["reconcile", "alipay", "m1", &order]).await;
    assert_eq!(scheduled["status"], "scheduled");
    let unknown = admin(&s.settings, &["reconcile", "alipay", "m1", "nope"]).await;
    assert!(
        unknown
            .as_ref()
            .is_err_and(|e| e.contains("no pending payment")),
        "{unknown:?}"
    );
    let bad = admin(&s.settings, &["reconcile", "paypal", "m1", &order]).await;
    assert!(
        bad.as_ref().is_err_and(|e| e.contains("unknown provider")),
        "{bad:?}"
    );
}

/// `payhook-admin --api`: the same commands through the worker's admin API with a
/// bearer token from a file — the same answers as the direct way, operate commands
/// audited under the token's name, a read token refused what it may not do, a wrong
/// token and no token explained.
#[tokio::test]
async fn every_command_answers_the_same_through_the_admin_api_with_a_token() {
    const READ_TOKEN: &str = "read-token-read-token-read-token-0123";
    let s = stack().await;
    let order = unique("o");
    s.park_two(&order).await;
    let mut settings = s.settings.clone();
    settings
        .worker
        .admin_tokens
        .push(payhook_shared::config::AdminToken {
            name: "test-reader".into(),
            scope: payhook_shared::config::AdminScope::Read,
            token: Secret::inline(READ_TOKEN),
        });
    let worker = TestWorker::spawn(&settings).await;
    let dir = std::env::temp_dir().join(unique("payhook-admin-tokens-"));
    std::fs::create_dir_all(&dir).expect("token dir");
    let operate_file = dir.join("operate");
    let read_file = dir.join("read");
    let wrong_file = dir.join("wrong");
    std::fs::write(&operate_file, format!("{TEST_ADMIN_TOKEN}\n")).expect("token file");
    std::fs::write(&read_file, READ_TOKEN).expect("token file");
    std::fs::write(&wrong_file, "x".repeat(40)).expect("token file");
    // The API way needs no database or broker settings: give it ones that cannot work.
    let mut nothing = test_settings();
    nothing.amqp.url = Secret::inline("amqp://nobody:nothing@127.0.0.1:9/%2f");
    nothing.postgres.url = Secret::inline("postgres://nobody@127.0.0.1:9/none");
    let through = |token: &std::path::Path, args: &[&str]| {
        let mut all = vec![
            "--api".to_owned(),
            worker.admin_url.clone(),
            "--token-file".to_owned(),
            token.display().to_string(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    };
    let api = async |token: &std::path::Path, args: &[&str]| {
        let all = through(token, args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        admin(&nothing, &all).await
    };
    let api_json = async |token: &std::path::Path, args: &[&str]| -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = api(token, &all).await.expect("command succeeds");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };

    // Read commands: the same answers both ways.
    assert_eq!(
        api_json(&read_file, &["parked", "list"]).await,
        admin_json(&settings, &["parked", "list"]).await
    );
    let queues = api_json(&read_file, &["queues"]).await;
    assert_eq!(queues, admin_json(&settings, &["queues"]).await);
    assert_eq!(queues.as_array().map(Vec::len), Some(6), "{queues}");
    let human = api(&read_file, &["parked", "list", "--provider", "alipay"])
        .await
        .expect("list");
    assert!(human.contains(&order) && human.contains("42.00"), "{human}");

    // Operate: a read token may not; the operate token may, and is audited.
    let refused = api(
        &read_file,
        &["parked", "replay", "--reason", "retries_exhausted"],
    )
    .await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("403")),
        "{refused:?}"
    );
    let dry = api_json(
        &operate_file,
        &[
            "parked",
            "replay",
            "--reason",
            "retries_exhausted",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(
        (dry["matched"].as_u64(), dry["replayed"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(s.parked_depth_is(2).await, "a dry run moves nothing");
    let replayed = api_json(
        &operate_file,
        &["parked", "replay", "--reason", "retries_exhausted"],
    )
    .await;
    assert_eq!(replayed["replayed"], 1);
    assert_eq!(replayed["messages"][0]["out_trade_no"], order.as_str());
    let applied = eventually_async(QUIET, || async {
        s.state(&order).await.as_deref() == Some("PAID")
    })
    .await;
    assert!(applied, "the replayed payment is applied");
    // Its event published too, so that both reads see the same history.
    let published = eventually_async(QUIET, || async {
        let history = admin_json(&settings, &["payment", "alipay", "m1", &order]).await;
        history["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.iter().all(|e| !e["published_at"].is_null()))
    })
    .await;
    assert!(published, "the payment's event is published");
    assert_eq!(
        api_json(&read_file, &["payment", "alipay", "m1", &order]).await,
        admin_json(&settings, &["payment", "alipay", "m1", &order]).await
    );
    let unknown = api(&read_file, &["payment", "alipay", "m1", "nope"]).await;
    assert!(
        unknown.as_ref().is_err_and(|e| e.contains("is known")),
        "{unknown:?}"
    );

    let registered = unique("o");
    let register = |amount: &'static str| {
        vec![
            "order".to_owned(),
            "register".to_owned(),
            "--provider".to_owned(),
            "alipay".to_owned(),
            "--merchant".to_owned(),
            "m1".to_owned(),
            "--out-trade-no".to_owned(),
            registered.clone(),
            "--amount".to_owned(),
            amount.to_owned(),
        ]
    };
    let args = register("1999");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(api_json(&operate_file, &args).await["status"], "created");
    let args = register("2000");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let conflict = api(&operate_file, &args).await;
    assert!(
        conflict.as_ref().is_err_and(|e| e.contains("conflict")),
        "{conflict:?}"
    );
    let scheduled = api_json(&operate_file, &["reconcile", "alipay", "m1", &registered]).await;
    assert_eq!(scheduled["status"], "scheduled");
    // The same payments both ways (by identity, state and amount: the reconciler may
    // touch a row's bookkeeping between the two reads).
    let identities = |rows: Value| -> Vec<(String, String, i64)> {
        rows.as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        (
                            r["out_trade_no"].as_str().unwrap_or("").to_owned(),
                            r["state"].as_str().unwrap_or("").to_owned(),
                            r["expected_amount"].as_i64().unwrap_or(-1),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let through_api = identities(
        api_json(
            &read_file,
            &["payments", "--state", "PENDING", "--limit", "5"],
        )
        .await,
    );
    assert!(
        through_api.contains(&(registered.clone(), "PENDING".into(), 1999)),
        "{through_api:?}"
    );
    assert_eq!(
        through_api,
        identities(
            admin_json(
                &settings,
                &["payments", "--state", "PENDING", "--limit", "5"]
            )
            .await
        )
    );

    let audit = api_json(&read_file, &["audit", "--limit", "10"]).await;
    let audit = audit.as_array().expect("records");
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap_or(""),
                r["action"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for expected in ["replay_parked", "register_order", "reconcile"] {
        assert!(
            actions.contains(&("test-operator", expected)),
            "{expected} by the token's name in {actions:?}"
        );
    }

    // A token the worker does not know, and none at all.
    let wrong = api(&wrong_file, &["queues"]).await;
    assert!(
        wrong.as_ref().is_err_and(|e| e.contains("401")),
        "{wrong:?}"
    );
    let none = admin(&nothing, &["--api", &worker.admin_url, "queues"]).await;
    assert!(
        none.as_ref()
            .is_err_and(|e| e.contains("PAYHOOK_ADMIN_TOKEN")),
        "{none:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    worker.stop().await;
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs `payhook-admin <args>`: its stdout, and whether the diagnosed request is
/// refused (exit status 4), or the command's error.
async fn diagnose(settings: &Settings, args: &[&str]) -> Result<(String, bool), String> {
    let cli = payhook_worker::cli::Cli::try_parse_from(
        std::iter::once("payhook-admin").chain(args.iter().copied()),
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let refused = match payhook_worker::cli::run(cli, settings, &mut out).await {
        Ok(()) => false,
        Err(error) if error.is::<payhook_worker::cli::Refused>() => true,
        Err(error) => return Err(format!("{error:#}")),
    };
    Ok((String::from_utf8(out).expect("utf-8 output"), refused))
}

#[tokio::test]
async fn diagnose_names_the_failing_step_of_a_captured_request_locally_and_through_the_api() {
    let s = stack().await;
    let worker = TestWorker::spawn(&s.settings).await;
    let dir = std::env::temp_dir().join(unique("payhook-diagnose-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, TEST_ADMIN_TOKEN).expect("token file");

    // Alipay: a good notification, and one whose amount was changed after signing.
    let order = unique("o");
    let good = s.providers.alipay.payment(&order, 8_888, &unique("n"));
    let tampered = String::from_utf8(good.clone())
        .expect("ascii form")
        .replace("total_amount=88.88", "total_amount=0.01");
    assert_ne!(tampered.as_bytes(), good.as_slice());
    let good_file = dir.join("good.form");
    let tampered_file = dir.join("tampered.form");
    std::fs::write(&good_file, &good).expect("body");
    std::fs::write(&tampered_file, &tampered).expect("body");
    let alipay = |file: &std::path::Path| {
        vec![
            "diagnose".to_owned(),
            "--provider".into(),
            "alipay".into(),
            "--merchant".into(),
            "m1".into(),
            "--body".into(),
            file.display().to_string(),
        ]
    };

    let (out, refused) = diagnose(&s.settings, &strs(&alipay(&good_file)))
        .await
        .expect("diagnoses");
    assert!(!refused, "{out}");
    assert!(out.contains("verdict: accepted"), "{out}");

    let (out, refused) = diagnose(&s.settings, &strs(&alipay(&tampered_file)))
        .await
        .expect("diagnoses");
    assert!(refused, "{out}");
    assert!(out.contains("first failing step: signature"), "{out}");
    assert!(out.contains("HTTP 401 `fail`"), "{out}");
    assert!(
        !out.contains("0.01") && !out.contains(&order),
        "no field value: {out}"
    );

    // The same through the admin API, as JSON.
    let mut through = vec![
        "--json".to_owned(),
        "--api".into(),
        worker.admin_url.clone(),
        "--token-file".into(),
        token_file.display().to_string(),
    ];
    through.extend(alipay(&tampered_file));
    let (out, refused) = diagnose(&test_settings(), &strs(&through))
        .await
        .expect("diagnoses through the API");
    assert!(refused);
    let json: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["failed_step"], "signature", "{json}");
    assert_eq!(json["verdict"], "bad_signature");

    // WeChat Pay APIv3 through the API with its headers: captured 20 minutes ago, it is
    // stale now and verifies when judged as of its capture.
    let v3 = &s.providers.wechat_v3;
    let body = v3.transaction(&unique("id"), &unique("o"), 100, "SUCCESS");
    let captured_at = time::OffsetDateTime::now_utc() - time::Duration::minutes(20);
    let headers = v3.headers(captured_at.unix_timestamp(), &body);
    let body_file = dir.join("v3.json");
    std::fs::write(&body_file, &body).expect("body");
    let mut args = vec![
        "--api".to_owned(),
        worker.admin_url.clone(),
        "--token-file".into(),
        token_file.display().to_string(),
        "diagnose".into(),
        "--provider".into(),
        "wechat_v3".into(),
        "--merchant".into(),
        "m1".into(),
        "--body".into(),
        body_file.display().to_string(),
    ];
    for (name, value) in &headers {
        args.push("--header".into());
        args.push(format!("{name}: {value}"));
    }
    let (out, refused) = diagnose(&test_settings(), &strs(&args))
        .await
        .expect("diagnoses");
    assert!(refused, "{out}");
    assert!(out.contains("first failing step: timestamp"), "{out}");
    args.push("--at".into());
    args.push(
        captured_at
            .format(&time::format_description::well_known::Rfc3339)
            .expect("rfc3339"),
    );
    let (out, refused) = diagnose(&test_settings(), &strs(&args))
        .await
        .expect("diagnoses");
    assert!(!refused, "{out}");
    assert!(
        out.contains(&v3.serial),
        "the key is named by its serial: {out}"
    );

    // Nothing about a diagnosis is an operate action.
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM admin_audit")
        .fetch_one(&s.db.pool)
        .await
        .expect("audit count");
    assert_eq!(audited, 0);
    worker.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_refused_notification_is_sampled_never_published_and_diagnosed_from_the_sample() {
    let s = stack().await;
    let worker = TestWorker::spawn(&s.settings).await;
    let dir = std::env::temp_dir().join(unique("payhook-rejected-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, TEST_ADMIN_TOKEN).expect("token file");
    let api = |args: &[&str]| {
        let mut all = vec![
            "--api".to_owned(),
            worker.admin_url.clone(),
            "--token-file".into(),
            token_file.display().to_string(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    };

    // Two tampered notifications: one sample (the second is within the interval).
    let client = reqwest::Client::new();
    let order = unique("o");
    for _ in 0..2 {
        let body = String::from_utf8(s.providers.alipay.payment(&order, 8_888, &unique("n")))
            .expect("ascii form")
            .replace("total_amount=88.88", "total_amount=0.01");
        let answer = post(
            &client,
            &s.receiver.url("/notify/alipay/m1"),
            FORM,
            &[],
            body.into_bytes(),
        )
        .await;
        assert_eq!((answer.status, answer.body.as_str()), (401, "fail"));
    }
    let sampled = eventually_async(QUIET, || async {
        s.receiver
            .metric(r#"payhook_receiver_rejected_samples_total{result="published"}"#)
            == 1.0
    })
    .await;
    assert!(sampled, "one sample published");
    assert_eq!(
        s.receiver
            .metric(r#"payhook_receiver_rejected_samples_total{result="skipped"}"#),
        1.0
    );
    // Never work: nothing reached the work queue.
    assert_eq!(s.broker.depth(&s.receiver.names.work).await, 0);

    let listed = eventually_async(QUIET, || async {
        let (out, _) = diagnose(
            &test_settings(),
            &strs(&api(&["--json", "rejected", "list"])),
        )
        .await
        .expect("lists");
        serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|samples| samples.len() == 1)
    })
    .await;
    assert!(listed, "the worker holds the sample");
    let (out, _) = diagnose(
        &test_settings(),
        &strs(&api(&["--json", "rejected", "list"])),
    )
    .await
    .expect("lists");
    let samples: Value = serde_json::from_str(&out).expect("json");
    let sample = &samples[0];
    assert_eq!(sample["provider"], "alipay");
    assert_eq!(sample["merchant"], "m1");
    assert_eq!(sample["reason"], "bad_signature");
    let id = sample["id"].as_str().expect("id").to_owned();

    let (out, refused) = diagnose(&test_settings(), &strs(&api(&["rejected", "show", &id])))
        .await
        .expect("shows");
    assert!(!refused);
    assert!(
        out.contains("total_amount") && out.contains("sign_type"),
        "{out}"
    );
    assert!(
        !out.contains("0.01") && !out.contains(&order),
        "no value shown: {out}"
    );

    let (out, refused) = diagnose(
        &test_settings(),
        &strs(&api(&["rejected", "diagnose", &id])),
    )
    .await
    .expect("diagnoses");
    assert!(refused, "{out}");
    assert!(out.contains("first failing step: signature"), "{out}");

    // Without the admin API there is nothing to read them from.
    let direct = diagnose(&s.settings, &["rejected", "list"]).await;
    assert!(direct.is_err_and(|e| e.contains("--api")));
    let missing = diagnose(&test_settings(), &strs(&api(&["rejected", "show", "nope"]))).await;
    assert!(missing.is_err_and(|e| e.contains("no sample nope")));
    worker.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
