//! `payhook-chaos`: runs the chaos scenarios (faults injected into a real receiver →
//! RabbitMQ → worker → Redis/PostgreSQL pipeline under the simulator's load) and
//! prints the loss-accounting table. See `payhook_chaos` and RELIABILITY.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use payhook_chaos::process::{self, Component, Launcher};
use payhook_chaos::{self as chaos, Options, Scenario};

const HELP: &str = "payhook-chaos — fault injection with loss accounting

USAGE:
    payhook-chaos [OPTIONS]

Runs each scenario from scratch (fresh broker prefix, database schema, Redis prefix;
private RabbitMQ / Redis / PostgreSQL instances for the scenarios that stop one),
drives a steady load of orders through the real receiver and worker processes while
the faults are injected, waits for quiescence and compares with the simulator's
truth. Prints a Markdown table; exits 1 if any scenario lost or double-applied
anything (or did not reach the truth).

OPTIONS:
    --scenarios LIST    comma-separated (default all): receiver-kill, worker-kill,
                        rabbitmq-restart, rabbitmq-outage, redis-restart,
                        postgres-restart, broker-partition, combined
    --orders N          orders per scenario (default 200)
    --rate R            orders per second (default 20)
    --seed N            seed of the load, the faults' timing and the simulator (default 1)
    --time-scale F      provider time to real time for resends (default 0.001)
    --bin-dir DIR       run DIR/payhook-receiver and DIR/payhook-worker (default: this
                        binary runs them itself, the same code as their main)
    --keys-dir DIR      the simulator's TEST ONLY keys (default target/chaos-keys)
    --quiesce-secs N    longest wait for quiescence after the load (default 180)
    --keep              keep every run's directory (config, logs), not only failed ones";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some(process::RUN_RECEIVER) => {
            runtime.block_on(process::run_component(Component::Receiver))
        }
        Some(process::RUN_WORKER) => runtime.block_on(process::run_component(Component::Worker)),
        Some("-h" | "--help") => {
            println!("{HELP}");
            Ok(())
        }
        _ => runtime.block_on(chaos_main(&args)),
    }
}

async fn chaos_main(args: &[String]) -> anyhow::Result<()> {
    let mut scenarios = Scenario::ALL.to_vec();
    let mut options = Options {
        orders: 200,
        rate: 20.0,
        seed: 1,
        time_scale: 0.001,
        launcher: Launcher::SelfExec(std::env::current_exe()?),
        keys_dir: PathBuf::from("target/chaos-keys"),
        quiesce_timeout: Duration::from_secs(180),
        keep: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value (see --help)"))
        };
        match flag.as_str() {
            "--scenarios" => {
                scenarios = value()?
                    .split(',')
                    .map(|name| {
                        Scenario::from_name(name.trim())
                            .with_context(|| format!("unknown scenario {name:?} (see --help)"))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--orders" => options.orders = value()?.parse().context("--orders")?,
            "--rate" => options.rate = value()?.parse().context("--rate")?,
            "--seed" => options.seed = value()?.parse().context("--seed")?,
            "--time-scale" => options.time_scale = value()?.parse().context("--time-scale")?,
            "--bin-dir" => options.launcher = Launcher::Binaries(PathBuf::from(value()?)),
            "--keys-dir" => options.keys_dir = PathBuf::from(value()?),
            "--quiesce-secs" => {
                options.quiesce_timeout =
                    Duration::from_secs(value()?.parse().context("--quiesce-secs")?);
            }
            "--keep" => options.keep = true,
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    if options.orders == 0 || options.rate.is_nan() || options.rate <= 0.0 {
        bail!("--orders and --rate must be positive");
    }
    options.launcher.check()?;

    let mut rows = Vec::new();
    let mut failed = false;
    for scenario in scenarios {
        eprintln!("chaos: {} …", scenario.name());
        match chaos::run(scenario, &options).await {
            Ok(row) => {
                eprintln!(
                    "chaos: {} {} in {:.1} s",
                    scenario.name(),
                    if row.passed() { "ok" } else { "FAILED" },
                    row.total.as_secs_f64()
                );
                for note in &row.notes {
                    eprintln!("  note: {note}");
                }
                if let Some(dir) = &row.dir {
                    eprintln!("  config and logs: {}", dir.display());
                }
                failed |= !row.passed();
                rows.push(row);
            }
            Err(e) => {
                eprintln!("chaos: {} could not run: {e:#}", scenario.name());
                failed = true;
            }
        }
    }
    println!(
        "\n{} orders per scenario at {}/s, seed {}, time scale {}\n",
        options.orders, options.rate, options.seed, options.time_scale
    );
    print!("{}", chaos::table(&rows));
    if failed {
        std::process::exit(1);
    }
    Ok(())
}
