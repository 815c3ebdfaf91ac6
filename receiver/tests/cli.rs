//! `payhook-receiver` behaves like a tool: `--help` and `--version` exit 0 without
//! touching anything, unknown arguments are refused, `check-config` exits 0 / 2 / 3.

use std::path::PathBuf;
use std::process::{Command, Output};

fn config(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "payhook-receiver-cli-{}-{}.toml",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::write(&path, text).expect("write config");
    path
}

fn receiver(args: &[&str], config: Option<&PathBuf>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_payhook-receiver"));
    command.args(args).env_remove("PAYHOOK_CONFIG");
    if let Some(path) = config {
        command.env("PAYHOOK_CONFIG", path);
    }
    command.output().expect("payhook-receiver runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_and_version_exit_0_and_unknown_arguments_exit_2() {
    // A configuration that could not serve: --help must not even read it.
    let broken = config("[receiver]\nlisten = \"not an address\"\n");
    let help = receiver(&["--help"], Some(&broken));
    assert_eq!(help.status.code(), Some(0));
    assert!(
        text(&help.stdout).contains("check-config"),
        "{}",
        text(&help.stdout)
    );
    let version = receiver(&["--version"], Some(&broken));
    assert_eq!(version.status.code(), Some(0));
    assert!(text(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    let unknown = receiver(&["--bogus"], Some(&broken));
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        text(&unknown.stderr).contains("--bogus"),
        "{}",
        text(&unknown.stderr)
    );
    let _ = std::fs::remove_file(broken);
}

#[test]
fn check_config_exits_0_valid_2_invalid_3_unreachable() {
    let valid = config(
        "[receiver]\nlisten = \"127.0.0.1:0\"\n[amqp]\nurl = \"amqp://guest:guest@127.0.0.1:1/%2f\"\n",
    );
    let ok = receiver(&["check-config"], Some(&valid));
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("configuration: valid"));
    assert!(
        !text(&ok.stdout).contains("guest:guest"),
        "no password printed"
    );

    let unreachable = receiver(&["check-config", "--connect"], Some(&valid));
    assert_eq!(
        unreachable.status.code(),
        Some(3),
        "{}",
        text(&unreachable.stderr)
    );
    assert!(!text(&unreachable.stderr).contains("guest:guest"));

    let invalid = config("[receiver]\nack_deadline_ms = 6000\n");
    let refused = receiver(&["check-config"], Some(&invalid));
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("receiver.ack_deadline_ms"),
        "{}",
        text(&refused.stderr)
    );
    let bad_key = config("[alipay.shop]\napp_id = \"1\"\nalipay_public_key = \"not a key\"\n");
    let refused = receiver(&["check-config"], Some(&bad_key));
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("alipay.shop"),
        "{}",
        text(&refused.stderr)
    );
    for path in [valid, invalid, bad_key] {
        let _ = std::fs::remove_file(path);
    }
}
