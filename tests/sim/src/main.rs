//! `payhook-sim`: the provider simulator for people. See `payhook-sim --help`.
//!
//! Everything lives in [`payhook_sim`]; this file only reads arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use payhook_shared::event::Provider;
use payhook_sim::keys_dir::{KeysDir, SNIPPET_FILE};
use payhook_sim::oneshot::{self, OneShotKind};
use payhook_sim::scenario::{self, Scenario};
use payhook_sim::{Simulator, is_ack, schedule};

const HELP: &str = "payhook-sim — plays Alipay, WeChat Pay V2 and V3 against payhook

USAGE:
    payhook-sim <COMMAND> [OPTIONS]

COMMANDS:
    send     send one signed notification
    run      play a seeded scenario of orders with faults, print a summary
    trickle  play a steady stream of orders until Ctrl-C / SIGTERM (demos)
    keys     generate the keys directory (if missing) and print its config snippet's path
    serve    serve the query APIs (Alipay gateway, WeChat V3 and V2) and the control API
    order    create an order at the provider (of a running `serve`)
    pay      the buyer pays an order; its notification delivered, duplicated, delayed or withheld
    refund   refund an order, partly or fully
    close    close an unpaid order
    finish   end an Alipay trade (TRADE_FINISHED)

Every command takes --keys-dir DIR (default ./payhook-sim-keys): the simulator's
TEST ONLY keys, generated on first use, with payhook-merchants.toml, the payhook
configuration that trusts them (merchant name m1).

Run `payhook-sim <COMMAND> --help` for the options of a command.";

const SEND_HELP: &str = "payhook-sim send — send one signed notification

USAGE:
    payhook-sim send --kind KIND --url URL [OPTIONS]

OPTIONS:
    --kind KIND           alipay-payment | alipay-refund | alipay-full-refund |
                          alipay-close | alipay-finished | wechat-v2-payment |
                          wechat-v2-refund | wechat-v3-transaction | wechat-v3-refund
    --url URL             the notify URL, e.g. http://127.0.0.1:8080/notify/alipay/m1
    --amount FEN          order amount in fen (default 8888)
    --out-trade-no NO     order number (default a fresh one)
    --keys-dir DIR        keys directory (default ./payhook-sim-keys)";

const RUN_HELP: &str = "payhook-sim run — play a scenario against payhook and print a summary

USAGE:
    payhook-sim run --notify-base URL [OPTIONS]

OPTIONS:
    --notify-base URL     payhook's receiver, e.g. http://127.0.0.1:8080
    --orders N            number of orders (default 10)
    --providers LIST      alipay,wechat-v2,wechat-v3 (default all)
    --drop P              probability a notification is never delivered (default 0)
    --duplicate P         probability a notification is sent twice at once
    --reorder P           probability a payment is held until its refund went out
    --delay P             probability of a delay before the first attempt
    --max-delay-secs S    largest delay, provider time (default 600)
    --corrupt P           probability the first attempt has a corrupt signature
    --probe P             probability of a WECHATPAY/SIGNTEST/ probe first (V3)
    --stale P             probability the first attempt has a stale timestamp (V3)
    --gbk P               probability an Alipay notification is GBK
    --refund P            share of paid orders refunded (default 0.3)
    --close P             share of orders closed unpaid (default 0.1)
    --time-scale F        provider time to real time (default 0.001: 4 min = 240 ms)
    --seed N              RNG seed (default 0)
    --listen ADDR         query API address (default 127.0.0.1:0)
    --keys-dir DIR        keys directory (default ./payhook-sim-keys)";

const TRICKLE_HELP: &str = "payhook-sim trickle — a steady stream of demo orders until stopped

USAGE:
    payhook-sim trickle --notify-base URL [OPTIONS]

Creates orders one at a time, in turn for each provider, plays them (pay; some
refunded, some closed unpaid) and delivers their notifications, until Ctrl-C or
SIGTERM; then waits (bounded) for deliveries in flight and prints a summary.

OPTIONS:
    --notify-base URL     payhook's receiver, e.g. http://127.0.0.1:8080
    --rate R              orders per second (default 1)
    --max-orders N        stop after N orders (default: no limit)
    --providers LIST      alipay,wechat-v2,wechat-v3 (default all)
    --duplicate P         probability a notification is sent twice at once
    --reorder P           probability a payment is held until its refund went out
    --refund P            share of paid orders refunded (default 0.3)
    --close P             share of orders closed unpaid (default 0.1)
    --time-scale F        provider time to real time (default 0.001)
    --seed N              RNG seed (default 0)
    --listen ADDR         query API address (default 127.0.0.1:0)
    --keys-dir DIR        keys directory (default ./payhook-sim-keys)";

const SERVE_HELP: &str = "payhook-sim serve — serve the query APIs until Ctrl-C

USAGE:
    payhook-sim serve [OPTIONS]

Routes: POST /gateway.do (Alipay), GET /v3/pay/transactions/out-trade-no/{no}?mchid=,
GET /v3/refund/domestic/refunds/{no}, GET /v3/certificates, POST /pay/orderquery; the
control API: POST /_sim/orders, GET /_sim/orders/{provider}/{no}, POST
/_sim/orders/{provider}/{no}/pay|refund|close|finish (used by `payhook-sim order`,
`pay`, `refund`, `close`, `finish`).

OPTIONS:
    --listen ADDR         address (default 127.0.0.1:8090)
    --orders N            demo orders to create and play first (default 0)
    --notify-base URL     also deliver the demo orders' notifications there
    --time-scale F        provider time to real time (default 1)
    --seed N              RNG seed (default 0)
    --keys-dir DIR        keys directory (default ./payhook-sim-keys)";

const CONTROL_HELP: &str = "payhook-sim order|pay|refund|close|finish — act at the provider

USAGE:
    payhook-sim order  --provider P --order NO --amount YUAN [--sim URL]
    payhook-sim pay    --provider P --order NO [--no-notify | --duplicate] [--delay-secs S] [--sim URL]
    payhook-sim refund --provider P --order NO --refund NO --amount YUAN [--no-notify …] [--sim URL]
    payhook-sim close  --provider P --order NO [--sim URL]
    payhook-sim finish --order NO [--sim URL]                      (Alipay)

Drives a running `payhook-sim serve` through its control API and prints the order as
the provider now sees it. The notification the operation produces goes to the
serve's --notify-base, on the provider's resend schedule, unless --no-notify (only a
query finds the change: payhook's reconciler must) or --duplicate (the first attempt
sent twice).

OPTIONS:
    --provider P          alipay | wechat_v2 | wechat_v3
    --order NO            out_trade_no
    --amount YUAN         e.g. 88.88 (exact: at most two decimals)
    --refund NO           out_refund_no
    --delay-secs S        wait this long (provider time) before the first attempt
    --sim URL             the simulator (default http://127.0.0.1:8090)";

/// A mistake on the command line: exit 2 with one line, like the other binaries.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// `--name value` pairs and bare `--flags`.
struct Args(Vec<(String, Option<String>)>);

impl Args {
    fn parse(raw: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        let mut raw = raw.peekable();
        while let Some(arg) = raw.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(Usage(format!("unexpected argument {arg:?} (see --help)")).into());
            };
            let value = match raw.peek() {
                Some(next) if !next.starts_with("--") => raw.next(),
                _ => None,
            };
            out.push((name.to_owned(), value));
        }
        Ok(Self(out))
    }

    fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|e| anyhow::anyhow!("--{name} {text:?}: {e}")),
        }
    }

    fn check_known(&self, known: &[&str]) -> anyhow::Result<()> {
        for (name, _) in &self.0 {
            if !known.contains(&name.as_str()) && name != "help" {
                return Err(Usage(format!("unknown option --{name} (see --help)")).into());
            }
        }
        Ok(())
    }

    fn keys(&self) -> anyhow::Result<KeysDir> {
        let dir = PathBuf::from(self.get("keys-dir").unwrap_or("payhook-sim-keys"));
        let keys = KeysDir::load_or_generate(&dir)?;
        eprintln!(
            "keys: {} (payhook config: {})",
            dir.display(),
            dir.join(SNIPPET_FILE).display()
        );
        Ok(keys)
    }
}

/// Exit codes: 0 ok, 1 the command failed, 2 a mistake on the command line.
fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("payhook-sim: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if error.downcast_ref::<Usage>().is_some() => {
            eprintln!("payhook-sim: {error}");
            std::process::ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("payhook-sim: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch() -> anyhow::Result<()> {
    let mut raw = std::env::args().skip(1);
    let command = raw.next().unwrap_or_else(|| "--help".into());
    let args = Args::parse(raw)?;
    match command.as_str() {
        "send" if args.flag("help") => println!("{SEND_HELP}"),
        "run" if args.flag("help") => println!("{RUN_HELP}"),
        "serve" if args.flag("help") => println!("{SERVE_HELP}"),
        "trickle" if args.flag("help") => println!("{TRICKLE_HELP}"),
        "order" | "pay" | "refund" | "close" | "finish" if args.flag("help") => {
            println!("{CONTROL_HELP}");
        }
        "order" | "pay" | "refund" | "close" | "finish" => control(&command, &args).await?,
        "trickle" => trickle(&args).await?,
        "keys" => {
            args.check_known(&["keys-dir"])?;
            let dir = PathBuf::from(args.get("keys-dir").unwrap_or("payhook-sim-keys"));
            KeysDir::load_or_generate(&dir)?;
            println!("{}", std::path::absolute(dir.join(SNIPPET_FILE))?.display());
        }
        "send" => send(&args).await?,
        "run" => run(&args).await?,
        "serve" => serve(&args).await?,
        "--help" | "-h" | "help" => println!("{HELP}"),
        "--version" | "-V" => println!("payhook-sim {}", env!("CARGO_PKG_VERSION")),
        other => return Err(Usage(format!("unknown command {other:?} (see --help)")).into()),
    }
    Ok(())
}

async fn send(args: &Args) -> anyhow::Result<()> {
    args.check_known(&["kind", "url", "amount", "out-trade-no", "keys-dir"])?;
    let kind: OneShotKind = args
        .get("kind")
        .context("--kind is required (see --help)")?
        .parse()
        .map_err(anyhow::Error::msg)?;
    let url = args.get("url").context("--url is required (see --help)")?;
    let amount: i64 = args.parsed("amount", 8_888)?;
    let fresh = format!("sim{}", uuid::Uuid::new_v4().simple());
    let out_trade_no = args.get("out-trade-no").unwrap_or(&fresh);
    let keys = args.keys()?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let request = oneshot::build(&keys.providers, kind, out_trade_no, amount, &id);
    let mut builder = reqwest::Client::new()
        .post(url)
        .header("Content-Type", request.content_type)
        .body(request.body);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let response = builder.send().await.context("sending")?;
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    let acked = is_ack(kind.provider(), status, &body);
    println!("out_trade_no: {out_trade_no}");
    println!("status: {status}");
    println!("body: {}", String::from_utf8_lossy(&body));
    println!("acked: {acked}");
    if !acked {
        bail!("the notification was not acknowledged");
    }
    Ok(())
}

fn providers(list: &str) -> anyhow::Result<Vec<Provider>> {
    list.split(',')
        .map(|name| match name.trim() {
            "alipay" => Ok(Provider::Alipay),
            "wechat-v2" | "wechat_v2" => Ok(Provider::WechatV2),
            "wechat-v3" | "wechat_v3" => Ok(Provider::WechatV3),
            other => bail!("unknown provider {other:?}"),
        })
        .collect()
}

async fn run(args: &Args) -> anyhow::Result<()> {
    args.check_known(&[
        "notify-base",
        "orders",
        "providers",
        "drop",
        "duplicate",
        "reorder",
        "delay",
        "max-delay-secs",
        "corrupt",
        "probe",
        "stale",
        "gbk",
        "refund",
        "close",
        "time-scale",
        "seed",
        "listen",
        "keys-dir",
    ])?;
    let notify_base = args
        .get("notify-base")
        .context("--notify-base is required (see --help)")?;
    let keys = args.keys()?;
    let mut config = keys.sim_config();
    config.notify_base = Some(notify_base.to_owned());
    config.time_scale = args.parsed("time-scale", 0.001)?;
    config.seed = args.parsed("seed", 0)?;
    config.listen = args.parsed("listen", SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let rates = &mut config.fault_rates;
    rates.drop = args.parsed("drop", 0.0)?;
    rates.duplicate = args.parsed("duplicate", 0.0)?;
    rates.reorder = args.parsed("reorder", 0.0)?;
    rates.delay = args.parsed("delay", 0.0)?;
    rates.max_delay = Duration::from_secs(args.parsed("max-delay-secs", 600)?);
    rates.corrupt = args.parsed("corrupt", 0.0)?;
    rates.sign_test_probe = args.parsed("probe", 0.0)?;
    rates.stale_timestamp = args.parsed("stale", 0.0)?;
    rates.gbk = args.parsed("gbk", 0.0)?;
    let scale = schedule::TimeScale(config.time_scale);
    let seed = config.seed;
    let sim = Simulator::start(config).await?;
    eprintln!("query API: {}", sim.base_url());
    let scenario = Scenario {
        orders: args.parsed("orders", 10)?,
        providers: providers(
            args.get("providers")
                .unwrap_or("alipay,wechat-v2,wechat-v3"),
        )?,
        order_prefix: format!("sim{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        refund_rate: args.parsed("refund", 0.3)?,
        close_rate: args.parsed("close", 0.1)?,
        finish_rate: 0.1,
        seed,
    };
    scenario::play(&sim, &scenario)?;
    // The longest a notification can take: the longest schedule plus the largest
    // delay and reorder hold, scaled, with room for the requests themselves.
    let horizon = schedule::WECHAT.iter().sum::<Duration>() + Duration::from_secs(3600);
    let within = scale.apply(horizon) + Duration::from_secs(30);
    let settled = sim.settle(within).await;
    println!("{}", serde_json::to_string_pretty(&sim.summary())?);
    sim.stop().await;
    if !settled {
        bail!("some notifications were still being delivered after {within:?}");
    }
    Ok(())
}

async fn trickle(args: &Args) -> anyhow::Result<()> {
    args.check_known(&[
        "notify-base",
        "rate",
        "max-orders",
        "providers",
        "duplicate",
        "reorder",
        "refund",
        "close",
        "time-scale",
        "seed",
        "listen",
        "keys-dir",
    ])?;
    let notify_base = args
        .get("notify-base")
        .context("--notify-base is required (see --help)")?;
    let rate: f64 = args.parsed("rate", 1.0)?;
    if !(rate > 0.0 && rate <= 10_000.0) {
        bail!("--rate must be in (0, 10000]");
    }
    let max_orders: u64 = args.parsed("max-orders", u64::MAX)?;
    let keys = args.keys()?;
    let mut config = keys.sim_config();
    config.notify_base = Some(notify_base.to_owned());
    config.time_scale = args.parsed("time-scale", 0.001)?;
    config.seed = args.parsed("seed", 0)?;
    config.listen = args.parsed("listen", SocketAddr::from(([127, 0, 0, 1], 0)))?;
    config.fault_rates.duplicate = args.parsed("duplicate", 0.0)?;
    config.fault_rates.reorder = args.parsed("reorder", 0.0)?;
    let seed = config.seed;
    let providers = providers(
        args.get("providers")
            .unwrap_or("alipay,wechat-v2,wechat-v3"),
    )?;
    let (refund_rate, close_rate) = (args.parsed("refund", 0.3)?, args.parsed("close", 0.1)?);
    let sim = Simulator::start(config).await?;
    eprintln!("query API: {}", sim.base_url());
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(payhook_shared::telemetry::on_shutdown_signal(stop.clone()));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut played = 0_u64;
    while played < max_orders {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let provider = providers[usize::try_from(played).unwrap_or(0) % providers.len()];
        let scenario = Scenario {
            orders: 1,
            providers: vec![provider],
            order_prefix: format!("demo{run}-{played}"),
            refund_rate,
            close_rate,
            finish_rate: 0.1,
            seed: seed.wrapping_add(played),
        };
        scenario::play(&sim, &scenario)?;
        played += 1;
        if played.is_multiple_of(10) {
            let s = sim.summary();
            eprintln!(
                "orders {} · notifications {} · acked {} · in flight {}",
                s.orders, s.notifications, s.acked, s.in_flight
            );
        }
    }
    let settled = sim.settle(Duration::from_secs(15)).await;
    println!("{}", serde_json::to_string_pretty(&sim.summary())?);
    sim.stop().await;
    if !settled {
        bail!("some notifications were still being delivered when the trickle stopped");
    }
    Ok(())
}

/// `order`, `pay`, `refund`, `close`, `finish`: the control API's client.
async fn control(command: &str, args: &Args) -> anyhow::Result<()> {
    use payhook_sim::server::control::{Delivery, NewOrder, Notify, Refund};
    args.check_known(&[
        "provider",
        "order",
        "amount",
        "refund",
        "no-notify",
        "duplicate",
        "delay-secs",
        "sim",
    ])?;
    let usage = |what: &str| {
        Usage(format!(
            "{what} is required (see `payhook-sim {command} --help`)"
        ))
    };
    let provider = match (command, args.get("provider")) {
        ("finish", None) => Provider::Alipay,
        (_, None) => return Err(usage("--provider").into()),
        (_, Some(p)) => match p {
            "alipay" => Provider::Alipay,
            "wechat_v2" => Provider::WechatV2,
            "wechat_v3" => Provider::WechatV3,
            other => {
                return Err(Usage(format!(
                    "--provider {other:?}: alipay, wechat_v2 or wechat_v3"
                ))
                .into());
            }
        },
    };
    let order = args
        .get("order")
        .ok_or_else(|| usage("--order"))?
        .to_owned();
    let amount = || -> anyhow::Result<i64> {
        let text = args.get("amount").ok_or_else(|| usage("--amount"))?;
        payhook_shared::money::parse_yuan(text)
            .map_err(|e| Usage(format!("--amount {text:?}: {e}")).into())
    };
    let delivery = Delivery {
        notify: match (args.flag("no-notify"), args.flag("duplicate")) {
            (true, true) => return Err(Usage("--no-notify or --duplicate, not both".into()).into()),
            (true, false) => Notify::Withhold,
            (false, true) => Notify::Duplicate,
            (false, false) => Notify::Deliver,
        },
        delay_secs: args.parsed("delay-secs", 0)?,
    };
    let base = args
        .get("sim")
        .unwrap_or("http://127.0.0.1:8090")
        .trim_end_matches('/')
        .to_owned();
    let path = format!("{base}/_sim/orders/{}/{order}", provider.as_str());
    let client = reqwest::Client::new();
    let request = match command {
        "order" => client.post(format!("{base}/_sim/orders")).json(&NewOrder {
            provider,
            out_trade_no: order.clone(),
            amount_fen: amount()?,
        }),
        "refund" => client.post(format!("{path}/refund")).json(&Refund {
            out_refund_no: args
                .get("refund")
                .ok_or_else(|| usage("--refund"))?
                .to_owned(),
            amount_fen: amount()?,
            delivery,
        }),
        other => client.post(format!("{path}/{other}")).json(&delivery),
    };
    let answer = request.send().await.with_context(|| {
        format!("the simulator at {base} did not answer (is `payhook-sim serve` running?)")
    })?;
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "the simulator answered {status}: {}",
            body["error"].as_str().unwrap_or("")
        );
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

async fn serve(args: &Args) -> anyhow::Result<()> {
    args.check_known(&[
        "listen",
        "orders",
        "notify-base",
        "time-scale",
        "seed",
        "keys-dir",
    ])?;
    let keys = args.keys()?;
    let mut config = keys.sim_config();
    config.listen = args.parsed("listen", SocketAddr::from(([127, 0, 0, 1], 8090)))?;
    config.notify_base = args.get("notify-base").map(str::to_owned);
    config.time_scale = args.parsed("time-scale", 1.0)?;
    config.seed = args.parsed("seed", 0)?;
    let seed = config.seed;
    let sim = Simulator::start(config).await?;
    let orders: usize = args.parsed("orders", 0)?;
    if orders > 0 {
        let scenario = Scenario {
            orders,
            order_prefix: "demo".into(),
            seed,
            ..Scenario::default()
        };
        scenario::play(&sim, &scenario)?;
        for order in sim.orders() {
            println!(
                "{} {} {} fen {}",
                order.provider,
                order.out_trade_no,
                order.total_fen,
                order.state.as_str()
            );
        }
    }
    println!(
        "serving the query APIs and the control API (/_sim/…) on {} (Ctrl-C stops)",
        sim.base_url()
    );
    tokio::signal::ctrl_c().await?;
    println!("{}", serde_json::to_string_pretty(&sim.query_stats())?);
    sim.stop().await;
    Ok(())
}
