//! `scripts/demo`, the no-Docker live demo, run for a bounded time: it builds, starts the
//! receiver, the worker and the simulator's trickle, demo payments reach the database and
//! the events exchange, and Ctrl-C (SIGINT) stops every process it started, exit 0.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use payhook_shared::topology::Names;
use payhook_testkit::db::{TestDb, database_url};
use payhook_testkit::harness::{EventsTap, TopologyCleanup, amqp_url, eventually_async};
use payhook_testkit::worker::redis_url;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

/// Building the binaries is part of the demo; on a cold cache that takes minutes.
const STARTED: Duration = Duration::from_secs(900);
const FLOWING: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn alive(pid: &str) -> bool {
    PathBuf::from("/proc").join(pid).exists()
}

#[tokio::test]
async fn the_demo_shows_payments_flowing_and_stops_cleanly_on_ctrl_c() {
    let prefix = format!("demo{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let names = Names::new(&prefix);
    let _cleanup = TopologyCleanup(names.clone());
    let db = TestDb::new().await;
    let tap = EventsTap::bind(&names).await;
    let work_dir = std::env::temp_dir().join(&prefix);
    let (receiver_port, admin_port, sim_port) = (free_port(), free_port(), free_port());

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut demo = Command::new(root.join("scripts/demo"))
        .current_dir(&root)
        .env("PAYHOOK_DEMO_DIR", &work_dir)
        .env("PAYHOOK_DEMO_RECEIVER_PORT", receiver_port.to_string())
        .env("PAYHOOK_DEMO_ADMIN_PORT", admin_port.to_string())
        .env("PAYHOOK_DEMO_SIM_PORT", sim_port.to_string())
        .env("PAYHOOK_DEMO_PREFIX", &prefix)
        .env("PAYHOOK_DEMO_SCHEMA", db.schema())
        .env("PAYHOOK_DEMO_RATE", "10")
        // The test shares the broker with other runs: it does not enable plugins.
        .env("PAYHOOK_DEMO_MANAGEMENT", "0")
        .env("PAYHOOK__POSTGRES__URL", database_url())
        .env("PAYHOOK__AMQP__URL", amqp_url())
        .env("PAYHOOK__REDIS__URL", redis_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("scripts/demo starts");
    let pid = demo.id().expect("demo pid").to_string();

    // Wait for the banner and read the pids it names.
    let mut stdout = BufReader::new(demo.stdout.take().expect("stdout")).lines();
    let banner = tokio::time::timeout(STARTED, async {
        while let Ok(Some(line)) = stdout.next_line().await {
            if line.starts_with("payhook demo running") {
                return Some(line);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let Some(banner) = banner else {
        let _ = demo.kill().await;
        let output = demo.wait_with_output().await.expect("demo output");
        panic!(
            "the demo did not start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let children: Vec<String> = banner
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(children.len(), 3, "worker, receiver, simulator: {banner}");
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });

    // Demo payments reach the database and their events the events exchange.
    let pool = &db.pool;
    let settled = eventually_async(FLOWING, || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM payments WHERE state <> 'PENDING'")
            .fetch_one(pool)
            .await
            .unwrap_or(0)
            >= 5
    })
    .await;
    assert!(settled, "five demo payments settled within {FLOWING:?}");
    let events = tap.wait_for(5, FLOWING).await;
    assert!(events.len() >= 5, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e.routing_key.starts_with("payment.succeeded.")),
        "{events:?}"
    );

    // Ctrl-C: the script stops everything it started and exits 0.
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(interrupted.success());
    let output = tokio::time::timeout(Duration::from_secs(60), demo.wait_with_output())
        .await
        .expect("the demo exits within 60 s of Ctrl-C")
        .expect("demo output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
    for child in &children {
        assert!(!alive(child), "process {child} outlived the demo");
    }
    let _ = std::fs::remove_dir_all(&work_dir);
}
