//! `payhook-admin`: the operator's command line, in one of two ways:
//!
//! - **Through the admin API** (`--api URL` or `PAYHOOK_ADMIN_URL`), with a bearer token
//!   (`PAYHOOK_ADMIN_TOKEN`, or the file named by `--token-file` /
//!   `PAYHOOK_ADMIN_TOKEN_FILE`): it needs neither the database's nor the broker's
//!   credentials, the token's scope limits what it may do, and its operate commands are
//!   audited under the token's name. The way for people.
//! - **Directly** (no `--api`): it reads the worker's configuration (`PAYHOOK_CONFIG` +
//!   `PAYHOOK__…` overrides) and talks to RabbitMQ and PostgreSQL itself, so it works
//!   while the worker is down (break-glass, on the worker's host); operate commands are
//!   audited as `payhook-admin:<login>`. It never migrates the database and never
//!   declares queues.
//!
//! Human output by default; `--json` prints one JSON document per command (one JSON
//! object per line for `--watch`) for scripts. Progress bars go to stderr and only when
//! it is a terminal.

mod api;
mod render;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use lapin::Connection;
use payhook_shared::config::Settings;
use payhook_shared::event::Provider;
use payhook_shared::topology::Names;
use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::db::orders::{self, NewOrder, Registered};
use crate::db::state::PaymentState;
use crate::db::{audit, history};
use crate::parked::{self, QueueDepth, ReplayAnswer, ReplayFilter};

/// payhook-admin — inspect and operate a payhook deployment
#[derive(Debug, Parser)]
#[command(name = "payhook-admin", version)]
pub struct Cli {
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
    /// The worker's admin API, e.g. http://payhook-worker-admin:8081 (default:
    /// PAYHOOK_ADMIN_URL). Commands then go through it with the bearer token of
    /// PAYHOOK_ADMIN_TOKEN or --token-file, and need neither the database nor the
    /// broker. Without it, payhook-admin reads the worker's configuration
    /// (PAYHOOK_CONFIG) and talks to PostgreSQL and RabbitMQ directly.
    #[arg(long, global = true, value_name = "URL")]
    api: Option<String>,
    /// A file holding the admin API token (default: PAYHOOK_ADMIN_TOKEN_FILE, else the
    /// token in PAYHOOK_ADMIN_TOKEN).
    #[arg(long, global = true, value_name = "PATH")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The admin API's URL when commands go through it (`--api`, else
    /// `PAYHOOK_ADMIN_URL`).
    pub fn api_url(&self) -> Option<String> {
        self.api.clone().or_else(|| {
            std::env::var("PAYHOOK_ADMIN_URL")
                .ok()
                .filter(|url| !url.trim().is_empty())
        })
    }
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
    /// Explain why a captured notification is refused: each verification step, the
    /// key tried (fingerprint or serial), the first step that failed and the answer
    /// the provider gets. Through the admin API it uses the worker's keys, the WeChat
    /// V3 platform certificates it downloaded included; directly, the configured ones.
    /// Prints no secret and no field value. Exit status 0 when the receiver would
    /// accept the request, 4 when it refuses it.
    Diagnose(DiagnoseArgs),
    /// Samples of the notifications the receivers refused (through the admin API
    /// only: the workers hold them).
    #[command(subcommand)]
    Rejected(RejectedCommand),
    /// The audit trail: every operate action, through the admin API or this tool.
    Audit {
        /// How many records, newest first.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
enum RejectedCommand {
    /// The samples, newest first: when, provider, merchant, reason, size, id.
    List {
        #[arg(long, value_parser = parse_provider)]
        provider: Option<Provider>,
        #[arg(long)]
        merchant: Option<String>,
        /// A refusal reason, e.g. bad_signature.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One sample: headers and body field names, sizes and digest (never values).
    Show { id: String },
    /// One sample run through verification step by step, as of when it was refused.
    /// Exit status 4 when the receiver refuses it (as it did).
    Diagnose { id: String },
}

#[derive(Debug, Args)]
struct DiagnoseArgs {
    /// alipay, wechat_v2 or wechat_v3.
    #[arg(long, value_parser = parse_provider)]
    provider: Provider,
    /// The merchant's name in the configuration (the notify_url's last segment).
    #[arg(long)]
    merchant: String,
    /// The request body exactly as received; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    body: PathBuf,
    /// A request header, `Name: value`; repeat it. WeChat Pay APIv3 needs
    /// Wechatpay-Timestamp, -Nonce, -Signature and -Serial.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Judge timestamps as of this time (RFC 3339), e.g. when the request was captured.
    /// Default: now.
    #[arg(long, value_parser = parse_rfc3339)]
    at: Option<OffsetDateTime>,
}

impl DiagnoseArgs {
    fn captured(&self) -> anyhow::Result<payhook_shared::diagnose::Captured> {
        use std::io::Read as _;
        let body = if self.body.as_os_str() == "-" {
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body)?;
            body
        } else {
            std::fs::read(&self.body).with_context(|| format!("reading {}", self.body.display()))?
        };
        Ok(payhook_shared::diagnose::Captured::new(
            self.provider,
            &self.merchant,
            &body,
            self.headers.clone(),
            self.at.map(OffsetDateTime::unix_timestamp),
        ))
    }
}

/// `Name: value` → (name, value).
fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not `Name: value`"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{text:?} has no header name"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// The exit status of `diagnose` when the receiver refuses the request.
pub const DIAGNOSE_REFUSED: u8 = 4;

/// A diagnosed request the receiver refuses: printed, then exit status
/// [`DIAGNOSE_REFUSED`].
#[derive(Debug)]
pub struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the receiver refuses this request")
    }
}

impl std::error::Error for Refused {}

fn diagnosed(
    out: &mut impl std::io::Write,
    json: bool,
    diagnosis: &payhook_shared::diagnose::Diagnosis,
) -> anyhow::Result<()> {
    emit(out, json, diagnosis, |out, d| write!(out, "{d}"))?;
    if diagnosis.accepted() {
        Ok(())
    } else {
        Err(Refused.into())
    }
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
    /// The filter as the admin API's query parameters.
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(provider) = self.provider {
            query.push(("provider", provider.as_str().to_owned()));
        }
        if let Some(reason) = &self.reason {
            query.push(("reason", reason.clone()));
        }
        query
    }

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

/// Runs one command; what it prints goes to `out`. Through the admin API when
/// [`Cli::api_url`] says so (then `settings` is not read), else directly with
/// `settings`.
pub async fn run(
    cli: Cli,
    settings: &Settings,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    if cli.api_url().is_some() {
        return run_api(cli, out).await;
    }
    let names = Names::new(&settings.amqp.prefix);
    match cli.command {
        Command::Queues => {
            let connection = connect(settings, "payhook-admin").await?;
            let depths =
                parked::queue_depths(&connection, &names, settings.worker.retry_delays_ms.len())
                    .await;
            let _ = connection.close(200, "done".into()).await;
            emit(out, cli.json, depths?.as_slice(), render::queues)
        }
        Command::Parked(ParkedCommand::List { filter }) => {
            let filter = filter.filter();
            let (connection, channel) = confirm_channel(settings, "payhook-admin").await?;
            let progress = render::progress(cli.json);
            let listed = parked::list_parked(&channel, &names, &filter, |done, total| {
                progress.update(done, total);
            })
            .await;
            progress.finish();
            let _ = connection.close(200, "done".into()).await;
            emit(out, cli.json, listed?.as_slice(), render::parked)
        }
        Command::Parked(ParkedCommand::Replay { filter, dry_run }) => {
            let filter = filter.filter();
            let (connection, channel) = confirm_channel(settings, "payhook-admin").await?;
            let progress = render::progress(cli.json);
            let walked =
                parked::replay_selected(&channel, &names, &filter, dry_run, |done, total| {
                    progress.update(done, total);
                })
                .await;
            progress.finish();
            let _ = connection.close(200, "done".into()).await;
            if !dry_run {
                let outcome = match &walked {
                    Ok(a) => format!(
                        "matched {}, replayed {}, kept {}",
                        a.report.matched, a.report.replayed, a.report.kept
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
            emit(out, cli.json, &walked?, render::replay)
        }
        Command::Payment(key) => {
            let pool = pool(settings)?;
            let found =
                history::payment_history(&pool, key.provider, &key.merchant, &key.out_trade_no)
                    .await
                    .context("reading the payment's history")?;
            let Some(found) = found else {
                return Err(key.unknown());
            };
            emit(out, cli.json, &found, render::history)
        }
        Command::Payments(args) => {
            let pool = pool(settings)?;
            watch_payments(out, cli.json, &args, async || {
                history::recent_payments(&pool, args.limit, args.state)
                    .await
                    .context("reading payments")
            })
            .await
        }
        Command::Order(OrderCommand::Register(args)) => {
            let pool = pool(settings)?;
            let order = args.order();
            let registered = orders::register(&pool, &order).await;
            let outcome = crate::admin::registration_result(&registered);
            let target = format!(
                "{}/{}/{}",
                order.provider.as_str(),
                order.merchant,
                order.out_trade_no
            );
            audit::record(&pool, &actor(), "register_order", &target, &outcome).await;
            let answer = match registered.context("registering the order")? {
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
            audit::record(&pool, &actor(), "reconcile", &key.target(), outcome).await;
            if !scheduled.context("scheduling the query")? {
                return Err(key.not_pending());
            }
            emit(out, cli.json, &Outcome::ok("scheduled"), render::outcome)
        }
        Command::Audit { limit } => {
            let pool = pool(settings)?;
            let records = audit::recent(&pool, limit.clamp(1, 10_000))
                .await
                .context("reading the audit trail")?;
            emit(out, cli.json, records.as_slice(), render::audit)
        }
        Command::Rejected(_) => bail!(
            "the samples of refused notifications are held by the workers: use --api (or PAYHOOK_ADMIN_URL)"
        ),
        Command::Diagnose(args) => {
            let merchants = payhook_shared::merchants::Merchants::build(settings)?;
            let diagnosis = args
                .captured()?
                .diagnose(&merchants, &payhook_shared::clock::SystemClock)
                .map_err(anyhow::Error::msg)?;
            diagnosed(out, cli.json, &diagnosis)
        }
    }
}

/// Runs one command through the admin API.
async fn run_api(cli: Cli, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let url = cli.api_url().context("no admin API URL")?;
    let api = api::Api::new(&url, api::token(cli.token_file.as_deref())?)?;
    match cli.command {
        Command::Queues => {
            let depths: Vec<QueueDepth> = api.get(&["queues"], &[]).await?;
            emit(out, cli.json, depths.as_slice(), render::queues)
        }
        Command::Parked(ParkedCommand::List { filter }) => {
            let listed: Vec<parked::ParkedMessage> = api.get(&["parked"], &filter.query()).await?;
            emit(out, cli.json, listed.as_slice(), render::parked)
        }
        Command::Parked(ParkedCommand::Replay { filter, dry_run }) => {
            let mut query = filter.query();
            query.push(("dry_run", dry_run.to_string()));
            let answer: ReplayAnswer = api.post(&["parked", "replay"], &query).await?;
            emit(out, cli.json, &answer, render::replay)
        }
        Command::Payment(key) => {
            let p = key.provider.as_str();
            let found: Option<history::PaymentHistory> = api
                .get_found(&["payments", p, &key.merchant, &key.out_trade_no])
                .await?;
            let Some(found) = found else {
                return Err(key.unknown());
            };
            emit(out, cli.json, &found, render::history)
        }
        Command::Payments(args) => {
            let mut query = vec![("limit", args.limit.to_string())];
            if let Some(state) = args.state {
                query.push(("state", state.to_string()));
            }
            watch_payments(out, cli.json, &args, async || {
                api.get(&["payments"], &query).await
            })
            .await
        }
        Command::Order(OrderCommand::Register(args)) => {
            let (status, answer) = api.send_json(&["orders"], &args.order()).await?;
            let reason = || answer["reason"].as_str().unwrap_or("").to_owned();
            let answer = match status {
                201 => Outcome::ok("created"),
                200 => Outcome::ok("already_registered"),
                409 => bail!("conflict: {}", reason()),
                400 => bail!("invalid order: {}", reason()),
                other => bail!("the admin API answered {other}: {answer}"),
            };
            emit(out, cli.json, &answer, render::outcome)
        }
        Command::Reconcile(key) => {
            let p = key.provider.as_str();
            let path = ["payments", p, &key.merchant, &key.out_trade_no, "reconcile"];
            match api.post_status(&path).await? {
                202 => emit(out, cli.json, &Outcome::ok("scheduled"), render::outcome),
                409 => Err(key.not_pending()),
                404 => Err(key.unknown()),
                other => bail!("the admin API answered {other}"),
            }
        }
        Command::Rejected(RejectedCommand::List {
            provider,
            merchant,
            reason,
            limit,
        }) => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(provider) = provider {
                query.push(("provider", provider.as_str().to_owned()));
            }
            if let Some(merchant) = merchant {
                query.push(("merchant", merchant));
            }
            if let Some(reason) = reason {
                query.push(("reason", reason));
            }
            let listed: Vec<payhook_shared::rejected::Summary> =
                api.get(&["rejected"], &query).await?;
            emit(out, cli.json, listed.as_slice(), render::rejected)
        }
        Command::Rejected(RejectedCommand::Show { id }) => {
            let Some(found): Option<payhook_shared::rejected::Described> =
                api.get_found(&["rejected", &id]).await?
            else {
                bail!("no sample {id} is held (samples are trimmed by kind, size and age)");
            };
            emit(out, cli.json, &found, render::rejected_sample)
        }
        Command::Rejected(RejectedCommand::Diagnose { id }) => {
            let Some(diagnosis): Option<payhook_shared::diagnose::Diagnosis> =
                api.post_found(&["rejected", &id, "diagnose"]).await?
            else {
                bail!("no sample {id} is held (samples are trimmed by kind, size and age)");
            };
            diagnosed(out, cli.json, &diagnosis)
        }
        Command::Diagnose(args) => {
            let (status, answer) = api.send_json(&["diagnose"], &args.captured()?).await?;
            if status != 200 {
                bail!(
                    "the admin API answered {status}: {}",
                    answer["error"].as_str().unwrap_or("")
                );
            }
            let diagnosis: payhook_shared::diagnose::Diagnosis = serde_json::from_value(answer)
                .context("the admin API's answer is not a diagnosis")?;
            diagnosed(out, cli.json, &diagnosis)
        }
        Command::Audit { limit } => {
            let records: Vec<audit::AuditRecord> =
                api.get(&["audit"], &[("limit", limit.to_string())]).await?;
            emit(out, cli.json, records.as_slice(), render::audit)
        }
    }
}

/// Prints the recent payments `read` returns, again every `--watch` seconds until
/// Ctrl-C.
async fn watch_payments<W: std::io::Write>(
    out: &mut W,
    json: bool,
    args: &PaymentsArgs,
    read: impl AsyncFn() -> anyhow::Result<Vec<history::PaymentRecord>>,
) -> anyhow::Result<()> {
    loop {
        let rows = read().await?;
        if json {
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

impl PaymentKey {
    fn target(&self) -> String {
        format!(
            "{}/{}/{}",
            self.provider.as_str(),
            self.merchant,
            self.out_trade_no
        )
    }

    fn unknown(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "no payment {} {} {} is known",
            self.provider,
            self.merchant,
            self.out_trade_no
        )
    }

    fn not_pending(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "no pending payment {} {} {}: only pending payments are reconciled",
            self.provider,
            self.merchant,
            self.out_trade_no
        )
    }
}

impl RegisterArgs {
    fn order(&self) -> NewOrder {
        let expires_at = match (self.expires_at, self.expires_in) {
            (Some(at), _) => Some(at),
            (None, Some(secs)) => Some(OffsetDateTime::now_utc() + Duration::from_secs(secs)),
            (None, None) => None,
        };
        NewOrder {
            provider: self.provider,
            merchant: self.merchant.clone(),
            out_trade_no: self.out_trade_no.clone(),
            amount: self.amount,
            currency: self.currency.clone(),
            expires_at,
            app_id: self.app_id.clone(),
            mch_id: self.mch_id.clone(),
            payee: self.payee.clone(),
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
