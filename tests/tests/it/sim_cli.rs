//! `payhook-sim` as a person uses it: keys in a directory, a receiver configured with
//! the snippet it writes, `send` and `run` against that receiver.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use payhook_shared::clock::SystemClock;
use payhook_shared::config::Settings;
use payhook_sim::keys_dir::{KeysDir, SNIPPET_FILE};
use payhook_testkit::harness::{TestBroker, TestReceiver, test_settings};

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A receiver trusting exactly the merchants of the snippet in `dir`.
async fn receiver_from_snippet(dir: &Path) -> TestReceiver {
    KeysDir::load_or_generate(dir).expect("keys");
    let snippet = std::fs::read_to_string(dir.join(SNIPPET_FILE)).expect("snippet");
    let merchants = Settings::from_toml(&snippet).expect("snippet is payhook config");
    let mut settings = test_settings();
    settings.alipay = merchants.alipay;
    settings.wechat_v2 = merchants.wechat_v2;
    settings.wechat_v3 = merchants.wechat_v3;
    TestReceiver::spawn(settings, Arc::new(SystemClock)).await
}

async fn sim(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(payhook_testkit::bins::path("payhook-sim"))
            .args(args)
            .output()
            .expect("payhook-sim runs")
    })
    .await
    .expect("joined")
}

fn temp_dir() -> TempDir {
    TempDir(std::env::temp_dir().join(format!("payhook-sim-{}", uuid::Uuid::new_v4().simple())))
}

#[tokio::test]
async fn send_delivers_one_notification_the_configured_receiver_acks() {
    let dir = temp_dir();
    let receiver = receiver_from_snippet(&dir.0).await;
    for (kind, path) in [
        ("alipay-refund", "alipay"),
        ("wechat-v2-payment", "wechat/v2"),
        ("wechat-v3-transaction", "wechat/v3"),
    ] {
        let out = sim(vec![
            "send".into(),
            "--kind".into(),
            kind.into(),
            "--url".into(),
            receiver.url(&format!("/notify/{path}/m1")),
            "--keys-dir".into(),
            dir.0.display().to_string(),
        ])
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{kind}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("acked: true"), "{kind}: {stdout}");
    }
    let broker = TestBroker::connect().await;
    assert_eq!(broker.depth(&receiver.names.work).await, 3);
}

#[tokio::test]
async fn run_plays_a_seeded_scenario_and_prints_its_summary() {
    let dir = temp_dir();
    let receiver = receiver_from_snippet(&dir.0).await;
    let args: Vec<String> = [
        "run",
        "--notify-base",
        &receiver.base_url,
        "--orders",
        "15",
        "--drop",
        "0.2",
        "--duplicate",
        "0.2",
        "--reorder",
        "0.2",
        "--corrupt",
        "0.2",
        "--time-scale",
        "0.0001",
        "--seed",
        "7",
        "--keys-dir",
        &dir.0.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let out = sim(args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    let n = |k: &str| summary[k].as_u64().expect("count");
    assert_eq!(n("orders"), 15);
    assert!(n("notifications") >= 13, "{summary}");
    assert_eq!(n("acked") + n("dropped"), n("notifications"), "{summary}");
    assert!(n("dropped") > 0 && n("resends") > 0, "{summary}");
    assert_eq!(n("in_flight"), 0);
}

#[tokio::test]
async fn every_command_has_help() {
    for command in ["send", "run", "serve", "pay"] {
        let out = sim(vec![command.into(), "--help".into()]).await;
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains(&format!("payhook-sim {command}")), "{help}");
    }
    let out = sim(vec!["bogus".into()]).await;
    assert_eq!(out.status.code(), Some(2), "a mistake on the command line");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("unrecognized subcommand") && !said.contains("backtrace"),
        "{said}"
    );
    let out = sim(vec!["send".into(), "--bogus".into(), "x".into()]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = sim(vec!["--version".into()]).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// `serve` with its control API, driven by `order`, `pay`, `refund` and `close` as a
/// person would: each prints the order as the provider now sees it; what the provider
/// would refuse fails with its reason; a mistake on the command line exits 2.
#[tokio::test]
async fn the_control_commands_drive_a_running_simulator() {
    let dir = temp_dir();
    let receiver = receiver_from_snippet(&dir.0).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let _serve = Killed(
        std::process::Command::new(payhook_testkit::bins::path("payhook-sim"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--notify-base",
                &receiver.base_url,
                "--time-scale",
                "0.001",
                "--keys-dir",
                &dir.0.display().to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("serve starts"),
    );
    let up =
        payhook_testkit::harness::eventually_async(std::time::Duration::from_secs(20), || async {
            reqwest::get(format!("{base}/_sim/orders/alipay/none"))
                .await
                .is_ok_and(|r| r.status().as_u16() == 404)
        })
        .await;
    assert!(up, "the control API answers");
    let run = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend(["--sim".to_owned(), base.clone()]);
        sim(all)
    };
    let json = |out: &Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the order as JSON")
    };

    let order = format!("cli-{}", uuid::Uuid::new_v4().simple());
    let created = json(
        &run(&[
            "order",
            "--provider",
            "wechat_v3",
            "--order",
            &order,
            "--amount",
            "88.88",
        ])
        .await,
    );
    assert_eq!(created["order"]["total_fen"], 8_888);
    let paid = json(&run(&["pay", "--provider", "wechat_v3", "--order", &order]).await);
    assert_eq!(paid["order"]["state"], "PAID");
    assert!(paid["notification"].is_string());
    let refunded = json(
        &run(&[
            "refund",
            "--provider",
            "wechat_v3",
            "--order",
            &order,
            "--refund",
            "r1",
            "--amount",
            "8.88",
            "--no-notify",
        ])
        .await,
    );
    assert_eq!(refunded["order"]["refunded_fen"], 888);
    assert_eq!(refunded["order"]["state"], "PARTIALLY_REFUNDED");

    // The payment notification reached the receiver (the refund was withheld).
    let broker = TestBroker::connect().await;
    let delivered =
        payhook_testkit::harness::eventually_async(std::time::Duration::from_secs(20), || async {
            broker.depth(&receiver.names.work).await == 1
        })
        .await;
    assert!(delivered, "one notification delivered");

    // What the provider refuses: closing a paid order.
    let out = run(&["close", "--provider", "wechat_v3", "--order", &order]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A mistake on the command line.
    let out = run(&[
        "order",
        "--provider",
        "wechat_v3",
        "--order",
        "x",
        "--amount",
        "1.234",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["pay", "--order", "x"]).await;
    assert_eq!(out.status.code(), Some(2));
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
