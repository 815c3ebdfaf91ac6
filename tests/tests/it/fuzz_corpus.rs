//! The fuzzers' findings stay found: every committed corpus input and crash
//! reproducer of `shared/fuzz` (seeds from the providers' vectors, what coverage-guided
//! runs kept, and `regressions/`) goes through the same target functions the
//! libFuzzer binaries call, without libFuzzer. A panic here is a fuzz crash come back.

#[path = "../../../shared/fuzz/src/lib.rs"]
mod fuzz;

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fuzz");
    let mut files = Vec::new();
    for dir in ["seeds", "corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        files.extend(entries.map(|e| e.expect("corpus entry").path()));
    }
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let files = inputs(target);
    // The seeds are committed: an empty list means the paths broke, not a pass.
    assert!(!files.is_empty(), "no inputs for {target}");
    for file in &files {
        let data = std::fs::read(file).expect("input readable");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} panics {target}", file.display());
    }
}

#[test]
fn alipay_notify_inputs_never_panic() {
    replay("alipay_notify", fuzz::alipay_notify);
}

#[test]
fn wechat_v2_notify_inputs_never_panic() {
    replay("wechat_v2_notify", fuzz::wechat_v2_notify);
}

#[test]
fn wechat_v3_notify_inputs_never_panic() {
    replay("wechat_v3_notify", fuzz::wechat_v3_notify);
}

#[test]
fn config_toml_inputs_never_panic() {
    replay("config_toml", fuzz::config_toml);
}

#[test]
fn wechat_bill_inputs_never_panic() {
    replay("wechat_bill", fuzz::wechat_bill);
}

#[test]
fn alipay_bill_inputs_never_panic() {
    replay("alipay_bill", fuzz::alipay_bill);
}

/// The bill seeds are bills the parsers accept, so that fuzzing starts from inside
/// the format rather than at its first check.
#[test]
fn the_bill_seeds_are_accepted_bills() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fuzz/seeds");
    for (target, read) in [
        (
            "wechat_bill",
            (|data: &[u8]| {
                payhook_shared::bills::wechat::read(
                    data,
                    payhook_shared::event::Provider::WechatV3,
                    |_| {},
                )
                .map(|_| ())
            }) as fn(&[u8]) -> Result<(), payhook_shared::bills::BillError>,
        ),
        ("alipay_bill", |data: &[u8]| {
            payhook_shared::bills::alipay::read(data, |_| {}).map(|_| ())
        }),
    ] {
        let entries = std::fs::read_dir(seeds.join(target)).expect("seeds committed");
        for entry in entries {
            let path = entry.expect("seed").path();
            let data = std::fs::read(&path).expect("seed readable");
            assert_eq!(read(&data), Ok(()), "{}", path.display());
        }
    }
}
