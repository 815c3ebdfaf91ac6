//! `payhook-sim` as a person uses it: keys in a directory, a receiver configured with
//! the snippet it writes, `send` and `run` against that receiver.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use payhook_shared::clock::SystemClock;
use payhook_shared::config::Settings;
use payhook_tests::harness::{TestBroker, TestReceiver, test_settings};
use payhook_tests::sim::keys_dir::{KeysDir, SNIPPET_FILE};

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
        Command::new(env!("CARGO_BIN_EXE_payhook-sim"))
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
    for command in ["send", "run", "serve"] {
        let out = sim(vec![command.into(), "--help".into()]).await;
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("payhook-sim {command}")));
    }
    let out = sim(vec!["bogus".into()]).await;
    assert_eq!(out.status.code(), Some(2), "a mistake on the command line");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("unknown command") && !said.contains("backtrace"),
        "{said}"
    );
    let out = sim(vec!["send".into(), "--bogus".into(), "x".into()]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = sim(vec!["--version".into()]).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}
