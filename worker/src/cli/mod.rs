//! `payhook-admin`: the operator's command line. It reads the same configuration as
//! the worker (`PAYHOOK_CONFIG` + `PAYHOOK__…` overrides) and talks to RabbitMQ and
//! PostgreSQL directly, so it works while the worker is down. It never migrates the
//! database and never declares queues.
//!
//! Human output by default; `--json` prints one JSON document per command (one JSON
//! object per line for `--watch`) for scripts. Progress bars go to stderr and only when
//! it is a terminal.

mod render;

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use lapin::Connection;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use payhook_shared::config::Settings;
use payhook_shared::event::Provider;
use payhook_shared::topology::Names;
use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::db::orders::{self, NewOrder, Registered};
use crate::db::state::PaymentState;
use crate::db::{audit, history};
use crate::parked::{self, ReplayFilter, Walk};

/// payhook-admin — inspect and operate a payhook deployment
#[derive(Debug, Parser)]
#[command(name = "payhook-admin", version)]
pub struct Cli {
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Message and consumer counts of every payhook queue.
    Queues,
    /// Messages the worker could not apply.
    #[command(subcommand)]
    Parked(ParkedCommand),
    /// One payment's history: transitions, refunds, notifications, events.
    Payment(PaymentKey),
    /// The payments payhook heard of most recently.
    Payments(PaymentsArgs),
    /// Orders the merchant expects.
    #[command(subcommand)]
    Order(OrderCommand),
    /// Query the provider about a pending payment at the reconciler's next sweep.
    Reconcile(PaymentKey),
    /// The audit trail: every operate action, through the admin API or this tool.
    Audit {
        /// How many records, newest first.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

/// Who payhook-admin acts as in the audit trail: `payhook-admin:<login name>`.
fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("payhook-admin:{user}")
}

#[derive(Debug, Subcommand)]
enum ParkedCommand {
    /// List parked messages: reason, attempts, errors, what they are about.
    List {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Move parked messages back to the work queue.
    Replay {
        #[command(flatten)]
        filter: FilterArgs,
        /// Show what would be replayed; move nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
struct FilterArgs {
    /// Only this provider: alipay, wechat_v2 or wechat_v3.
    #[arg(long, value_parser = parse_provider)]
    provider: Option<Provider>,
    /// Only this park reason, e.g. retries_exhausted, permanent_error, delivery_limit.
    #[arg(long)]
    reason: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> ReplayFilter {
        ReplayFilter {
            provider: self.provider.map(|p| p.as_str().to_owned()),
            reason: self.reason.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct PaymentKey {
    /// alipay, wechat_v2 or wechat_v3.
    #[arg(value_parser = parse_provider)]
    provider: Provider,
    /// The configured merchant name (the notify URL's last segment).
    merchant: String,
    out_trade_no: String,
}

#[derive(Debug, Args)]
struct PaymentsArgs {
    /// How many.
    #[arg(long, default_value_t = 20)]
    limit: i64,
    /// Only payments in this state: PENDING, PAID, PARTIALLY_REFUNDED, REFUNDED, CLOSED.
    #[arg(long)]
    state: Option<PaymentState>,
    /// Print again every SECS seconds until interrupted.
    #[arg(long, value_name = "SECS")]
    watch: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum OrderCommand {
    /// Register an expected order before the buyer pays (idempotent).
    Register(RegisterArgs),
}

#[derive(Debug, Args)]
struct RegisterArgs {
    #[arg(long, value_parser = parse_provider)]
    provider: Provider,
    #[arg(long)]
    merchant: String,
    #[arg(long)]
    out_trade_no: String,
    /// Expected total in fen (minor units).
    #[arg(long)]
    amount: i64,
    #[arg(long, default_value = "CNY")]
    currency: String,
    /// When the order stops being payable, in seconds from now.
    #[arg(long, conflicts_with = "expires_at")]
    expires_in: Option<u64>,
    /// When the order stops being payable (RFC 3339).
    #[arg(long, value_parser = parse_rfc3339)]
    expires_at: Option<OffsetDateTime>,
    /// Expected app id, instead of the merchant's configured one.
    #[arg(long)]
    app_id: Option<String>,
    /// Expected mch id, instead of the merchant's configured one.
    #[arg(long)]
    mch_id: Option<String>,
    /// Expected payee (Alipay seller_id), instead of the configured one.
    #[arg(long)]
    payee: Option<String>,
}

fn parse_provider(text: &str) -> Result<Provider, String> {
    Provider::ALL
        .into_iter()
        .find(|p| p.as_str() == text)
        .ok_or_else(|| format!("unknown provider {text:?}: alipay, wechat_v2 or wechat_v3"))
}

fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time: {e}"))
}

/// Runs one command with `settings`; what it prints goes to `out`.
pub async fn run(
    cli: Cli,
    settings: &Settings,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let names = Names::new(&settings.amqp.prefix);
    match cli.command {
        Command::Queues => {
            let depths = queue_depths(settings, &names).await?;
            emit(out, cli.json, depths.as_slice(), render::queues)
        }
        Command::Parked(ParkedCommand::List { filter }) => {
            let filter = filter.filter();
            let (connection, channel) = confirm_channel(settings, "payhook-admin").await?;
            let mut listed = Vec::new();
            let progress = render::progress(cli.json);
            let walked = parked::walk_parked(&channel, &names, Walk::List, |m, _, done, total| {
                progress.update(done, total);
                if filter.matches(m) {
                    listed.push(m.clone());
                }
            })
            .await;
            progress.finish();
            let _ = connection.close(200, "done".into()).await;
            walked?;
            emit(out, cli.json, listed.as_slice(), render::parked)
        }
        Command::Parked(ParkedCommand::Replay { filter, dry_run }) => {
            let filter = filter.filter();
            let (connection, channel) = confirm_channel(settings, "payhook-admin").await?;
            let mut selected = Vec::new();
            let progress = render::progress(cli.json);
            let walk = Walk::Replay {
                filter: &filter,
                dry_run,
            };
            let walked = parked::walk_parked(&channel, &names, walk, |m, matched, done, total| {
                progress.update(done, total);
                if matched {
                    selected.push(m.clone());
                }
            })
            .await;
            progress.finish();
            let _ = connection.close(200, "done".into()).await;
            if !dry_run {
                let outcome = match &walked {
                    Ok(r) => format!(
                        "matched {}, replayed {}, kept {}",
                        r.matched, r.replayed, r.kept
                    ),
                    Err(_) => "error: broker unavailable".into(),
                };
                if let Ok(pool) = pool(settings) {
                    audit::record(
                        &pool,
                        &actor(),
                        "replay_parked",
                        &filter.describe(),
                        &outcome,
                    )
                    .await;
                }
            }
            let report = walked?;
            let answer = ReplayAnswer {
                report,
                messages: selected,
            };
            emit(out, cli.json, &answer, render::replay)
        }
        Command::Payment(key) => {
            let pool = pool(settings)?;
            let found =
                history::payment_history(&pool, key.provider, &key.merchant, &key.out_trade_no)
                    .await
                    .context("reading the payment's history")?;
            let Some(found) = found else {
                bail!(
                    "no payment {} {} {} is known",
                    key.provider,
                    key.merchant,
                    key.out_trade_no
                );
            };
            emit(out, cli.json, &found, render::history)
        }
        Command::Payments(args) => {
            let pool = pool(settings)?;
            loop {
                let rows = history::recent_payments(&pool, args.limit, args.state)
                    .await
                    .context("reading payments")?;
                if cli.json {
                    writeln!(out, "{}", serde_json::to_string(&rows)?)?;
                } else {
                    if args.watch.is_some() {
                        let now = OffsetDateTime::now_utc();
                        writeln!(out, "\n{}", render::rfc3339(now))?;
                    }
                    render::payments(out, &rows)?;
                }
                out.flush()?;
                let Some(every) = args.watch else {
                    return Ok(());
                };
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(every.max(1))) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
        }
        Command::Order(OrderCommand::Register(args)) => {
            let pool = pool(settings)?;
            let expires_at = match (args.expires_at, args.expires_in) {
                (Some(at), _) => Some(at),
                (None, Some(secs)) => Some(OffsetDateTime::now_utc() + Duration::from_secs(secs)),
                (None, None) => None,
            };
            let order = NewOrder {
                provider: args.provider,
                merchant: args.merchant,
                out_trade_no: args.out_trade_no,
                amount: args.amount,
                currency: args.currency,
                expires_at,
                app_id: args.app_id,
                mch_id: args.mch_id,
                payee: args.payee,
            };
            let registered = orders::register(&pool, &order).await;
            let target = format!(
                "{}/{}/{}",
                order.provider.as_str(),
                order.merchant,
                order.out_trade_no
            );
            let outcome = crate::admin::registration_result(&registered);
            audit::record(&pool, &actor(), "register_order", &target, &outcome).await;
            let registered = registered.context("registering the order")?;
            let answer = match registered {
                Registered::Created => Outcome::ok("created"),
                Registered::AlreadyRegistered => Outcome::ok("already_registered"),
                Registered::Conflict(reason) => bail!("conflict: {reason}"),
                Registered::Invalid(reason) => bail!("invalid order: {reason}"),
            };
            emit(out, cli.json, &answer, render::outcome)
        }
        Command::Reconcile(key) => {
            let pool = pool(settings)?;
            let scheduled = crate::reconcile::reconcile_now(
                &pool,
                key.provider,
                &key.merchant,
                &key.out_trade_no,
            )
            .await;
            let outcome = match &scheduled {
                Ok(true) => "scheduled",
                Ok(false) => "not pending",
                Err(_) => "error: database unavailable",
            };
            let target = format!(
                "{}/{}/{}",
                key.provider.as_str(),
                key.merchant,
                key.out_trade_no
            );
            audit::record(&pool, &actor(), "reconcile", &target, outcome).await;
            let scheduled = scheduled.context("scheduling the query")?;
            if !scheduled {
                bail!(
                    "no pending payment {} {} {}: only pending payments are reconciled",
                    key.provider,
                    key.merchant,
                    key.out_trade_no
                );
            }
            let answer = Outcome::ok("scheduled");
            emit(out, cli.json, &answer, render::outcome)
        }
        Command::Audit { limit } => {
            let pool = pool(settings)?;
            let records = audit::recent(&pool, limit.clamp(1, 10_000))
                .await
                .context("reading the audit trail")?;
            emit(out, cli.json, records.as_slice(), render::audit)
        }
    }
}

fn emit<T: Serialize + ?Sized, W: std::io::Write>(
    out: &mut W,
    json: bool,
    value: &T,
    human: fn(&mut W, &T) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    } else {
        human(out, value)?;
    }
    Ok(())
}

/// A command's one-word result.
#[derive(Debug, Serialize)]
struct Outcome {
    status: &'static str,
}

impl Outcome {
    fn ok(status: &'static str) -> Self {
        Self { status }
    }
}

/// `parked replay`'s answer: the counts and the messages it selected.
#[derive(Debug, Serialize)]
struct ReplayAnswer {
    #[serde(flatten)]
    report: parked::ReplayReport,
    messages: Vec<parked::ParkedMessage>,
}

/// One queue's counts, or `missing` when it is not declared (the worker never ran
/// with this prefix).
#[derive(Debug, Serialize)]
pub struct QueueDepth {
    pub queue: String,
    pub messages: Option<u32>,
    pub consumers: Option<u32>,
}

fn pool(settings: &Settings) -> anyhow::Result<PgPool> {
    crate::db::connect_lazy(&settings.postgres).context("postgres settings")
}

async fn connect(settings: &Settings, name: &str) -> anyhow::Result<Connection> {
    let connector = payhook_shared::amqp::Connector::from_settings(&settings.amqp)?;
    Ok(connector.connect(name).await?)
}

async fn confirm_channel(
    settings: &Settings,
    name: &str,
) -> anyhow::Result<(Connection, lapin::Channel)> {
    let connection = connect(settings, name).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

async fn queue_depths(settings: &Settings, names: &Names) -> anyhow::Result<Vec<QueueDepth>> {
    let connection = connect(settings, "payhook-admin").await?;
    let mut queues = vec![names.work.clone()];
    queues.extend((0..settings.worker.retry_delays_ms.len()).map(|i| names.retry(i)));
    queues.push(names.parked.clone());
    queues.push(names.events_unrouted.clone());
    let mut depths = Vec::with_capacity(queues.len());
    let mut channel = connection.create_channel().await?;
    for queue in queues {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
        {
            Ok(q) => depths.push(QueueDepth {
                queue,
                messages: Some(q.message_count()),
                consumers: Some(q.consumer_count()),
            }),
            Err(_) => {
                // A passive declare of a missing queue closes the channel (404).
                depths.push(QueueDepth {
                    queue,
                    messages: None,
                    consumers: None,
                });
                channel = connection.create_channel().await?;
            }
        }
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(depths)
}
