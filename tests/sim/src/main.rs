//! `payhook-sim`: the provider simulator for people. See `payhook-sim --help` and the
//! crate's README.
//!
//! Everything lives in [`payhook_sim`]; this file only reads arguments (clap).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use payhook_shared::event::Provider;
use payhook_sim::keys_dir::{KeysDir, SNIPPET_FILE};
use payhook_sim::oneshot::{self, OneShotKind};
use payhook_sim::scenario::{self, Scenario};
use payhook_sim::server::control::{Delivery, NewOrder, Notify, Refund};
use payhook_sim::{Simulator, is_ack, schedule};

/// Plays Alipay, WeChat Pay V2 and V3 against payhook (TEST ONLY keys).
///
/// Every command takes --keys-dir DIR (default ./payhook-sim-keys): the simulator's
/// TEST ONLY keys, generated on first use, with payhook-merchants.toml, the payhook
/// configuration that trusts them (merchant name m1).
#[derive(Debug, Parser)]
#[command(name = "payhook-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send one signed notification.
    Send(SendArgs),
    /// Play a seeded scenario of orders with faults, print a summary.
    Run(RunArgs),
    /// Play a steady stream of orders until Ctrl-C / SIGTERM (demos).
    ///
    /// Creates orders one at a time, in turn for each provider, plays them (pay; some
    /// refunded, some closed unpaid) and delivers their notifications, until Ctrl-C or
    /// SIGTERM; then waits (bounded) for deliveries in flight and prints a summary.
    Trickle(TrickleArgs),
    /// Generate the keys directory (if missing) and print its config snippet's path.
    Keys(KeysDirArg),
    /// Serve the query APIs and the control API until Ctrl-C.
    ///
    /// Routes: POST /gateway.do (Alipay), GET /v3/pay/transactions/out-trade-no/{no}?mchid=,
    /// GET /v3/refund/domestic/refunds/{no}, GET /v3/certificates, POST /pay/orderquery;
    /// the control API: POST /_sim/orders, GET /_sim/orders/{provider}/{no}, POST
    /// /_sim/orders/{provider}/{no}/pay|refund|close|finish (used by `payhook-sim
    /// order`, `pay`, `refund`, `close`, `finish`).
    Serve(ServeArgs),
    /// Create an order at the provider (of a running `serve`).
    Order(OrderArgs),
    /// The buyer pays an order; its notification delivered, duplicated, delayed or withheld.
    ///
    /// The notification goes to the serve's --notify-base, on the provider's resend
    /// schedule, unless --no-notify (only a query finds the change: payhook's
    /// reconciler must) or --duplicate (the first attempt sent twice).
    Pay(ActArgs),
    /// Refund an order, partly or fully.
    Refund(RefundArgs),
    /// Close an unpaid order.
    Close(ActArgs),
    /// End an Alipay trade (TRADE_FINISHED).
    Finish(FinishArgs),
}

#[derive(Debug, Args)]
struct KeysDirArg {
    /// The keys directory (TEST ONLY keys, generated on first use).
    #[arg(long, value_name = "DIR", default_value = "payhook-sim-keys")]
    keys_dir: PathBuf,
}

#[derive(Debug, Args)]
struct SendArgs {
    /// What to send.
    #[arg(long, value_name = "KIND", value_parser = kind)]
    kind: OneShotKind,
    /// The notify URL, e.g. http://127.0.0.1:8080/notify/alipay/m1.
    #[arg(long)]
    url: String,
    /// The order amount in fen.
    #[arg(long, value_name = "FEN", default_value_t = 8_888)]
    amount: i64,
    /// The order number (default: a fresh one).
    #[arg(long, value_name = "NO")]
    out_trade_no: Option<String>,
    #[command(flatten)]
    keys: KeysDirArg,
}

/// Where the simulator listens and how fast its clock runs.
#[derive(Debug, Args)]
struct Play {
    /// payhook's receiver, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    notify_base: String,
    /// Providers, in turn.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = provider,
          default_value = "alipay,wechat-v2,wechat-v3")]
    providers: Vec<Provider>,
    /// Probability a notification is sent twice at once.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    duplicate: f64,
    /// Probability a payment is held until its refund went out.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    reorder: f64,
    /// Share of paid orders refunded.
    #[arg(long, value_name = "P", default_value_t = 0.3)]
    refund: f64,
    /// Share of orders closed unpaid.
    #[arg(long, value_name = "P", default_value_t = 0.1)]
    close: f64,
    /// Provider time to real time (0.001: 4 min = 240 ms).
    #[arg(long, value_name = "F", default_value_t = 0.001)]
    time_scale: f64,
    /// RNG seed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// The query API's address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[command(flatten)]
    keys: KeysDirArg,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Number of orders.
    #[arg(long, value_name = "N", default_value_t = 10)]
    orders: usize,
    /// Probability a notification is never delivered.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    drop: f64,
    /// Probability of a delay before the first attempt.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    delay: f64,
    /// The largest delay, provider time.
    #[arg(long, value_name = "S", default_value_t = 600)]
    max_delay_secs: u64,
    /// Probability the first attempt has a corrupt signature.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    corrupt: f64,
    /// Probability of a WECHATPAY/SIGNTEST/ probe first (V3).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    probe: f64,
    /// Probability the first attempt has a stale timestamp (V3).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    stale: f64,
    /// Probability an Alipay notification is GBK.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    gbk: f64,
    #[command(flatten)]
    play: Play,
}

#[derive(Debug, Args)]
struct TrickleArgs {
    /// Orders per second, in (0, 10000].
    #[arg(long, value_name = "R", default_value_t = 1.0)]
    rate: f64,
    /// Stop after N orders (default: no limit).
    #[arg(long, value_name = "N")]
    max_orders: Option<u64>,
    #[command(flatten)]
    play: Play,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Demo orders to create and play first.
    #[arg(long, value_name = "N", default_value_t = 0)]
    orders: usize,
    /// Deliver notifications there (the demo orders' and the control API's).
    #[arg(long, value_name = "URL")]
    notify_base: Option<String>,
    /// Provider time to real time.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    time_scale: f64,
    /// RNG seed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    keys: KeysDirArg,
}

/// Which order of which running simulator.
#[derive(Debug, Args)]
struct Target {
    /// alipay | wechat_v2 | wechat_v3.
    #[arg(long, value_name = "P", value_parser = provider)]
    provider: Provider,
    /// The order (out_trade_no).
    #[arg(long, value_name = "NO")]
    order: String,
    /// The simulator (`payhook-sim serve`).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8090")]
    sim: String,
}

/// What happens to the notification an operation produces.
#[derive(Debug, Args)]
struct NotifyArgs {
    /// Withhold the notification: only a query finds the change.
    #[arg(long, conflicts_with = "duplicate")]
    no_notify: bool,
    /// Send the first attempt twice at once.
    #[arg(long)]
    duplicate: bool,
    /// Wait this long (provider time) before the first attempt.
    #[arg(long, value_name = "S", default_value_t = 0)]
    delay_secs: u64,
}

impl NotifyArgs {
    fn delivery(&self) -> Delivery {
        Delivery {
            notify: match (self.no_notify, self.duplicate) {
                (true, _) => Notify::Withhold,
                (false, true) => Notify::Duplicate,
                (false, false) => Notify::Deliver,
            },
            delay_secs: self.delay_secs,
        }
    }
}

#[derive(Debug, Args)]
struct OrderArgs {
    #[command(flatten)]
    target: Target,
    /// The amount in yuan, e.g. 88.88 (exact: at most two decimals).
    #[arg(long, value_name = "YUAN", value_parser = yuan)]
    amount: i64,
}

#[derive(Debug, Args)]
struct ActArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    notify: NotifyArgs,
}

#[derive(Debug, Args)]
struct RefundArgs {
    #[command(flatten)]
    target: Target,
    /// The refund (out_refund_no).
    #[arg(long, value_name = "NO")]
    refund: String,
    /// The amount in yuan, e.g. 8.88 (exact: at most two decimals).
    #[arg(long, value_name = "YUAN", value_parser = yuan)]
    amount: i64,
    #[command(flatten)]
    notify: NotifyArgs,
}

#[derive(Debug, Args)]
struct FinishArgs {
    /// The Alipay order (out_trade_no).
    #[arg(long, value_name = "NO")]
    order: String,
    /// The simulator (`payhook-sim serve`).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8090")]
    sim: String,
    #[command(flatten)]
    notify: NotifyArgs,
}

fn kind(text: &str) -> Result<OneShotKind, String> {
    text.parse()
}

fn provider(text: &str) -> Result<Provider, String> {
    match text.trim() {
        "alipay" => Ok(Provider::Alipay),
        "wechat-v2" | "wechat_v2" => Ok(Provider::WechatV2),
        "wechat-v3" | "wechat_v3" => Ok(Provider::WechatV3),
        other => Err(format!("{other:?}: alipay, wechat_v2 or wechat_v3")),
    }
}

fn yuan(text: &str) -> Result<i64, String> {
    payhook_shared::money::parse_yuan(text).map_err(|e| e.to_string())
}

/// Exit codes: 0 ok, 1 the command failed, 2 a mistake on the command line (clap).
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("payhook-sim: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("payhook-sim: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Send(args) => send(args).await,
        Command::Run(args) => run(args).await,
        Command::Trickle(args) => trickle(args).await,
        Command::Keys(args) => {
            KeysDir::load_or_generate(&args.keys_dir)?;
            println!(
                "{}",
                std::path::absolute(args.keys_dir.join(SNIPPET_FILE))?.display()
            );
            Ok(())
        }
        Command::Serve(args) => serve(args).await,
        Command::Order(args) => {
            let body = NewOrder {
                provider: args.target.provider,
                out_trade_no: args.target.order.clone(),
                amount_fen: args.amount,
            };
            control(&args.target.sim, "_sim/orders", &body).await
        }
        Command::Pay(args) => act(&args.target, "pay", &args.notify.delivery()).await,
        Command::Close(args) => act(&args.target, "close", &args.notify.delivery()).await,
        Command::Refund(args) => {
            let body = Refund {
                out_refund_no: args.refund,
                amount_fen: args.amount,
                delivery: args.notify.delivery(),
            };
            act(&args.target, "refund", &body).await
        }
        Command::Finish(args) => {
            let target = Target {
                provider: Provider::Alipay,
                order: args.order,
                sim: args.sim,
            };
            act(&target, "finish", &args.notify.delivery()).await
        }
    }
}

fn keys(dir: &Path) -> anyhow::Result<KeysDir> {
    let keys = KeysDir::load_or_generate(dir)?;
    eprintln!(
        "keys: {} (payhook config: {})",
        dir.display(),
        dir.join(SNIPPET_FILE).display()
    );
    Ok(keys)
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let out_trade_no = args
        .out_trade_no
        .unwrap_or_else(|| format!("sim{}", uuid::Uuid::new_v4().simple()));
    let keys = keys(&args.keys.keys_dir)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let request = oneshot::build(&keys.providers, args.kind, &out_trade_no, args.amount, &id);
    let mut builder = reqwest::Client::new()
        .post(&args.url)
        .header("Content-Type", request.content_type)
        .body(request.body);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let response = builder.send().await.context("sending")?;
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    let acked = is_ack(args.kind.provider(), status, &body);
    println!("out_trade_no: {out_trade_no}");
    println!("status: {status}");
    println!("body: {}", String::from_utf8_lossy(&body));
    println!("acked: {acked}");
    if !acked {
        bail!("the notification was not acknowledged");
    }
    Ok(())
}

/// A simulator configured from the common scenario arguments.
fn configured(play: &Play) -> anyhow::Result<payhook_sim::SimConfig> {
    let keys = keys(&play.keys.keys_dir)?;
    let mut config = keys.sim_config();
    config.notify_base = Some(play.notify_base.clone());
    config.time_scale = play.time_scale;
    config.seed = play.seed;
    config.listen = play.listen;
    config.fault_rates.duplicate = play.duplicate;
    config.fault_rates.reorder = play.reorder;
    Ok(config)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let play = &args.play;
    let mut config = configured(play)?;
    let rates = &mut config.fault_rates;
    rates.drop = args.drop;
    rates.delay = args.delay;
    rates.max_delay = Duration::from_secs(args.max_delay_secs);
    rates.corrupt = args.corrupt;
    rates.sign_test_probe = args.probe;
    rates.stale_timestamp = args.stale;
    rates.gbk = args.gbk;
    let scale = schedule::TimeScale(config.time_scale);
    let sim = Simulator::start(config).await?;
    eprintln!("query API: {}", sim.base_url());
    let scenario = Scenario {
        orders: args.orders,
        providers: play.providers.clone(),
        order_prefix: format!("sim{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        refund_rate: play.refund,
        close_rate: play.close,
        finish_rate: 0.1,
        seed: play.seed,
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

async fn trickle(args: TrickleArgs) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        bail!("--rate must be in (0, 10000]");
    }
    let play = &args.play;
    let sim = Simulator::start(configured(play)?).await?;
    eprintln!("query API: {}", sim.base_url());
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(payhook_shared::telemetry::on_shutdown_signal(stop.clone()));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    let max_orders = args.max_orders.unwrap_or(u64::MAX);
    let mut played = 0_u64;
    while played < max_orders {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let index = usize::try_from(played).unwrap_or(0) % play.providers.len();
        let scenario = Scenario {
            orders: 1,
            providers: vec![play.providers[index]],
            order_prefix: format!("demo{run}-{played}"),
            refund_rate: play.refund,
            close_rate: play.close,
            finish_rate: 0.1,
            seed: play.seed.wrapping_add(played),
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

/// `pay`, `refund`, `close`, `finish` of one order.
async fn act(target: &Target, operation: &str, body: &impl serde::Serialize) -> anyhow::Result<()> {
    let path = format!(
        "_sim/orders/{}/{}/{operation}",
        target.provider.as_str(),
        target.order
    );
    control(&target.sim, &path, body).await
}

/// One request to the control API of the simulator at `base`; prints its answer.
async fn control(base: &str, path: &str, body: &impl serde::Serialize) -> anyhow::Result<()> {
    let base = base.trim_end_matches('/');
    let answer = reqwest::Client::new()
        .post(format!("{base}/{path}"))
        .json(body)
        .send()
        .await
        .with_context(|| {
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let keys = keys(&args.keys.keys_dir)?;
    let mut config = keys.sim_config();
    config.listen = args.listen;
    config.notify_base = args.notify_base;
    config.time_scale = args.time_scale;
    config.seed = args.seed;
    let sim = Simulator::start(config).await?;
    if args.orders > 0 {
        let scenario = Scenario {
            orders: args.orders,
            order_prefix: "demo".into(),
            seed: args.seed,
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
