//! The chaos suite's CI-sized subset (the whole suite: `scripts/chaos`, see
//! RELIABILITY.md): a real receiver and worker process (this crate's `payhook-chaos`
//! binary running them, the same code as `payhook-receiver` / `payhook-worker`)
//! under the simulator's load, while the worker is killed with SIGKILL five times,
//! the broker is partitioned away by a TCP proxy for 6 s, and a private Redis is
//! killed and restarted. Every notification the receiver acked must be applied once,
//! every order must end in the simulator's state, every transition must have exactly
//! one CloudEvents id, and only the two poison messages may be parked.

use std::path::PathBuf;
use std::time::Duration;

use payhook_chaos::process::Launcher;
use payhook_chaos::{self as chaos, Options, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_kills_broker_partition_and_redis_crash_lose_nothing_and_apply_nothing_twice() {
    let options = Options {
        orders: 60,
        rate: 30.0,
        seed: 7,
        time_scale: 0.001,
        launcher: Launcher::SelfExec(payhook_testkit::bins::path("payhook-chaos")),
        keys_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos-keys"),
        quiesce_timeout: Duration::from_secs(60),
        keep: false,
    };
    // The private Redis needs the redis-server binary, which scripts/services makes
    // sure of: a missing binary fails the scenario rather than skipping it.
    let scenarios = [
        Scenario::WorkerKill,
        Scenario::BrokerPartition,
        Scenario::RedisRestart,
    ];
    let mut rows = Vec::new();
    for scenario in scenarios {
        let row = chaos::run(scenario, &options)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        rows.push(row);
    }
    let table = chaos::table(&rows);
    println!("{table}");
    for row in &rows {
        assert!(
            row.passed(),
            "{} failed: {:?} (logs: {:?})\n{table}",
            row.scenario,
            row.notes,
            row.dir
        );
        assert!(row.acked > 0 && row.applied == row.acked, "{table}");
    }
}
