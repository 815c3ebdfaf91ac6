//! The workspace's executables for the tests that run them as a user would
//! (`payhook-sim`, `payhook-chaos`, …).
//!
//! Cargo hands a test the path of an executable only when both are in the same
//! package (`CARGO_BIN_EXE_*`); the simulator and the chaos suite are packages of
//! their own. So the kit builds them itself, with the same command `scripts/test`
//! runs before the tests (`cargo build --workspace --bins`, a no-op when they are
//! fresh), once per test process, into the target directory the test runs from.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of the workspace executable `name`, built (if not fresh) first.
///
/// # Panics
/// When the build fails: the test cannot run without the executable.
pub fn path(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let profile_dir = BUILT
        .get_or_init(build)
        .as_ref()
        .unwrap_or_else(|e| panic!("building the workspace executables: {e}"));
    let exe = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        exe.is_file(),
        "no executable {} after the build",
        exe.display()
    );
    exe
}

/// Builds the workspace's executables; returns the profile directory they are in.
fn build() -> Result<PathBuf, String> {
    // target/<profile>/deps/<test binary>
    let current = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let profile_dir = current
        .parent()
        .and_then(Path::parent)
        .ok_or("the test binary is not in a cargo target directory")?
        .to_path_buf();
    if std::env::var_os("PAYHOOK_TEST_BINS_BUILT").is_some() {
        // scripts/test built them just before the tests.
        return Ok(profile_dir);
    }
    let target_dir = profile_dir
        .parent()
        .ok_or("the profile directory has no parent")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--workspace",
            "--bins",
            "--quiet",
            "--profile",
            &profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(profile_dir)
    } else {
        Err(format!("cargo build --workspace --bins: {status}"))
    }
}
