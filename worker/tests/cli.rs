//! `payhook-worker` behaves like a tool: `--help` and `--version` exit 0 without
//! touching anything, unknown arguments are refused, `check-config` exits 0 / 2 / 3.

use std::path::PathBuf;
use std::process::{Command, Output};

fn config(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "payhook-worker-cli-{}-{}.toml",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::write(&path, text).expect("write config");
    path
}

fn worker(args: &[&str], config: Option<&PathBuf>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_payhook-worker"));
    command.args(args).env_remove("PAYHOOK_CONFIG");
    if let Some(path) = config {
        command.env("PAYHOOK_CONFIG", path);
    }
    command.output().expect("payhook-worker runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_and_version_exit_0_and_unknown_arguments_exit_2() {
    let broken = config("[worker]\nadmin_listen = \"not an address\"\n");
    let help = worker(&["--help"], Some(&broken));
    assert_eq!(help.status.code(), Some(0));
    assert!(
        text(&help.stdout).contains("check-config"),
        "{}",
        text(&help.stdout)
    );
    let version = worker(&["--version"], Some(&broken));
    assert_eq!(version.status.code(), Some(0));
    assert!(text(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    let unknown = worker(&["parked", "list"], Some(&broken));
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "operator commands are payhook-admin's"
    );
    let _ = std::fs::remove_file(broken);
}

#[test]
fn check_config_exits_0_valid_2_invalid_3_unreachable() {
    let token = "t".repeat(40);
    let valid = config(&format!(
        "[amqp]\nurl = \"amqp://guest:guest@127.0.0.1:1/%2f\"\n\
         [postgres]\nurl = \"postgres://postgres@127.0.0.1:1/payhook\"\n\
         [[worker.admin_tokens]]\nname = \"ops\"\nscope = \"operate\"\ntoken = \"{token}\"\n"
    ));
    let ok = worker(&["check-config"], Some(&valid));
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let printed = text(&ok.stdout);
    assert!(printed.contains("configuration: valid"), "{printed}");
    assert!(printed.contains("ops"), "{printed}");
    assert!(
        !printed.contains(&token),
        "the token is never printed: {printed}"
    );

    let unreachable = worker(&["check-config", "--connect"], Some(&valid));
    assert_eq!(
        unreachable.status.code(),
        Some(3),
        "{}",
        text(&unreachable.stderr)
    );

    let short = config(
        "[[worker.admin_tokens]]\nname = \"ops\"\nscope = \"operate\"\ntoken = \"hunter2\"\n",
    );
    let refused = worker(&["check-config"], Some(&short));
    assert_eq!(refused.status.code(), Some(2));
    let said = text(&refused.stderr);
    assert!(said.contains("worker.admin_tokens.ops.token"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");

    let tls_on_plain =
        config("[redis]\nurl = \"redis://127.0.0.1:6379\"\n[redis.tls]\nca = \"x\"\n");
    let refused = worker(&["check-config"], Some(&tls_on_plain));
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("redis.tls"),
        "{}",
        text(&refused.stderr)
    );
    for path in [valid, short, tls_on_plain] {
        let _ = std::fs::remove_file(path);
    }
}

/// The key report: every certificate with its serial and validity, public keys by
/// fingerprint — and the most common mistake, the app's own key where Alipay's belongs,
/// refused with exit 2 naming the setting.
#[test]
fn check_config_describes_keys_and_refuses_the_apps_own_key_as_alipays() {
    let vector: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/src/wechat_v3/vectors/wechat_v3_notify.json"),
        )
        .expect("vector"),
    )
    .expect("vector JSON");
    let cert = vector["platform_certificate_pem"].as_str().expect("cert");
    let key = vector["platform_private_key_pem_pkcs8"]
        .as_str()
        .expect("key");
    let described = config(&format!(
        "[wechat_v3.main]\nmch_id = \"1\"\napi_v3_key = \"0123456789abcdef0123456789abcdef\"\n\
         platform_certs = ['''\n{cert}''']\n"
    ));
    let ok = worker(&["check-config"], Some(&described));
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let printed = text(&ok.stdout);
    assert!(
        printed.contains("wechat_v3.main.platform_certs[0]: serial D7CE59D1F522D701")
            && printed.contains("2031-04-25"),
        "{printed}"
    );
    let own = config(&format!(
        "[alipay.shop]\napp_id = \"1\"\nalipay_cert = '''\n{cert}'''\n\
         app_private_key = '''\n{key}'''\n"
    ));
    let refused = worker(&["check-config"], Some(&own));
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stdout));
    let said = text(&refused.stderr);
    assert!(
        said.contains("alipay.shop.alipay_cert") && said.contains("app's own public key"),
        "{said}"
    );
    assert!(!said.contains("PRIVATE KEY"), "{said}");
    for path in [described, own] {
        let _ = std::fs::remove_file(path);
    }
}
