//! The reconciler: asks the providers about payments whose notification is missing or
//! doubtful, and feeds what they answer back through the one apply path.
//!
//! Every `sweep_interval` it takes the due payments — registered orders still
//! `PENDING` some time after registration, quarantined ones, payments known only from
//! a refund (the payment's own notification has not arrived), and any pending payment
//! an operator asked about ([`reconcile_now`]) — and, for each:
//!
//! 1. **claims** it by pushing its next query time out (`min × 2^attempts`, capped at
//!    `max`) in the same statement that selects it (`FOR UPDATE SKIP LOCKED`), so two
//!    workers never query the same payment at once and a crash only delays it;
//! 2. **queries** the provider (`alipay.trade.query`, WeChat V3 transaction by
//!    `out_trade_no`, WeChat V2 `orderquery`) with the merchant's private key, and verifies the answer's
//!    signature — an answer that does not verify is counted and never used;
//! 3. **publishes** a verified final answer (paid, closed, failed) to the notifications
//!    exchange as an envelope with `source = reconcile`, with a publisher confirm, like
//!    the receiver. The worker's consumer applies it exactly as a notification: same
//!    dedup, same transition key, so a later real notification of the same transition
//!    is a duplicate transition, not a second effect.
//!
//! Registered refunds (`POST /refunds`) still processing are queried the same way
//! (WeChat V3 refund query, Alipay `alipay.trade.fastpay.refund.query`; Alipay's answer
//! is turned into the running total its notifications use, by asking about the trade's
//! other registered refunds too: see `interpret_refund_query`).
//!
//! "Not created" (`ACQ.TRADE_NOT_EXIST`, `ORDER_NOT_EXIST`) means the buyer never opened
//! the order: it is left pending, and closed once the order's `expires_at` has passed.
//! A payment still pending `give_up_after` past its expiry (or its registration) is no
//! longer queried; `reconcile_last` says why, for a person to look at.

use std::sync::Arc;
use std::time::Duration;

use lapin::Channel;
use payhook_shared::alipay::gateway::RefundAnswer;
use payhook_shared::clock::Clock;
use payhook_shared::config::Settings;
use payhook_shared::event::{
    Envelope, PaymentAnswer, Provider, Source, Status, VerifiedNotification,
};
use payhook_shared::merchants::Merchants;
use payhook_shared::query::{Queriers, QueryClient, QueryError};
use payhook_shared::topology::envelope_properties;
use payhook_shared::wechat_v3::api::RefundQuery;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The payments the reconciler watches: registered or quarantined ones still pending,
/// and those known only from a refund. (Covered by `payments_reconcile_watch_idx`.)
const WATCHED_PAYMENTS: &str = "((state = 'PENDING' AND (registered OR quarantined)) \
     OR (paid_at IS NULL AND refunded_amount > 0))";

/// How long a reconciliation publish may wait for the broker's confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// The schedule (from `[reconcile]`).
#[derive(Debug, Clone)]
pub struct Schedule {
    pub pending_after: Duration,
    pub interval_min: Duration,
    pub interval_max: Duration,
    pub give_up_after: Duration,
    pub sweep_interval: Duration,
    pub batch: u32,
}

/// One due payment.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Due {
    id: i64,
    provider: String,
    merchant: String,
    out_trade_no: String,
    expires_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
}

/// One due refund.
#[derive(Debug, Clone, sqlx::FromRow)]
struct DueRefund {
    id: i64,
    payment_id: i64,
    provider: String,
    merchant: String,
    out_trade_no: String,
    out_refund_no: String,
    created_at: OffsetDateTime,
}

/// What a sweep did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Payments queried (or skipped for want of credentials).
    pub taken: usize,
    /// Verified answers published for the apply path.
    pub published: usize,
}

/// The reconciler of one worker.
pub struct Reconciler {
    pool: PgPool,
    client: QueryClient,
    queriers: Queriers,
    exchange: String,
    schedule: Schedule,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("exchange", &self.exchange)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    /// The reconciler configured by `settings`, or `None` when `reconcile.enabled` is
    /// false. Merchants without a private key are not queried (their payments are
    /// counted as `no_credentials`).
    pub fn build(
        settings: &Settings,
        pool: PgPool,
        metrics: Metrics,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Option<Self>> {
        if !settings.reconcile.enabled {
            return Ok(None);
        }
        let merchants = Merchants::build(settings)?;
        let queriers = Queriers::build(settings, &merchants)?;
        Self::build_with(settings, queriers, pool, metrics, clock)
    }

    /// Like [`Reconciler::build`] with queriers built by the caller (the worker shares
    /// them with the certificate refresher, so answers verify with the downloaded
    /// platform certificates).
    pub fn build_with(
        settings: &Settings,
        queriers: Queriers,
        pool: PgPool,
        metrics: Metrics,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Option<Self>> {
        let c = &settings.reconcile;
        if !c.enabled {
            return Ok(None);
        }
        let client = QueryClient::new(c, clock.clone())?;
        Ok(Some(Self {
            pool,
            client,
            queriers,
            exchange: payhook_shared::topology::Names::new(&settings.amqp.prefix).notifications,
            schedule: Schedule {
                pending_after: Duration::from_secs(c.pending_after_secs),
                interval_min: Duration::from_secs(c.interval_min_secs),
                interval_max: Duration::from_secs(c.interval_max_secs),
                give_up_after: Duration::from_secs(c.give_up_after_secs),
                sweep_interval: Duration::from_millis(c.sweep_interval_ms),
                batch: c.batch,
            },
            metrics,
            clock,
        }))
    }

    /// Sweeps every `sweep_interval` until `stop` fires or the channel fails.
    pub async fn run(&self, channel: Channel, stop: CancellationToken) -> Result<(), lapin::Error> {
        loop {
            match self.sweep_once(&channel).await {
                Ok(report) if report.taken > 0 => {
                    tracing::info!(
                        taken = report.taken,
                        published = report.published,
                        "reconcile sweep"
                    );
                }
                Ok(_) => {}
                Err(SweepError::Broker(error)) => return Err(error),
                Err(error) => tracing::warn!(%error, "reconcile sweep failed"),
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.schedule.sweep_interval) => {}
            }
        }
    }

    /// One round: claim the due payments, query each, publish what settles them.
    pub async fn sweep_once(&self, channel: &Channel) -> Result<SweepReport, SweepError> {
        let due = self.claim_due().await?;
        let mut report = SweepReport {
            taken: due.len(),
            published: 0,
        };
        for payment in &due {
            let (result, publish, stop) = self.query(payment).await;
            self.metrics.reconcile_query(&payment.provider, result);
            if let Some(verified) = publish
                && self.publish(channel, &payment.merchant, *verified).await?
            {
                report.published += 1;
            }
            self.record("payments", payment.id, result, stop).await?;
        }
        for refund in &self.claim_due_refunds().await? {
            report.taken += 1;
            let (result, publish, stop) = self.query_refund(refund).await;
            self.metrics.reconcile_query(&refund.provider, result);
            if let Some(verified) = publish
                && self.publish(channel, &refund.merchant, *verified).await?
            {
                report.published += 1;
            }
            self.record("refunds", refund.id, result, stop).await?;
        }
        let watched: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM payments WHERE {WATCHED_PAYMENTS} \
                 AND (reconcile_next_at IS NULL OR reconcile_next_at < 'infinity')"
        ))
        .fetch_one(&self.pool)
        .await?;
        self.metrics.reconcile_pending.set(watched);
        Ok(report)
    }

    async fn claim_due(&self) -> Result<Vec<Due>, sqlx::Error> {
        self.claim(
            "payments",
            &format!(
                "({WATCHED_PAYMENTS} OR (state = 'PENDING' AND reconcile_next_at IS NOT NULL))"
            ),
            "t.id, t.provider, t.merchant, t.out_trade_no, t.expires_at, t.created_at",
        )
        .await
    }

    async fn claim_due_refunds(&self) -> Result<Vec<DueRefund>, sqlx::Error> {
        self.claim(
            "refunds",
            "status = 'REFUND_PROCESSING' AND registered",
            "t.id, t.payment_id, t.provider, t.merchant, \
             (SELECT out_trade_no FROM payments WHERE id = t.payment_id), \
             t.out_refund_no, t.created_at",
        )
        .await
    }

    /// Takes up to `batch` rows of `table` (payments or refunds) matching `watched`
    /// whose query is due, and pushes each one's next query out (`min × 2^attempts`,
    /// capped) in the same statement: a crash only delays a query, and two sweepers
    /// never take the same row (`SKIP LOCKED`).
    async fn claim<T>(
        &self,
        table: &'static str,
        watched: &str,
        returning: &'static str,
    ) -> Result<Vec<T>, sqlx::Error>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let s = &self.schedule;
        let sql = format!(
            "WITH due AS ( \
                 SELECT id FROM {table} \
                 WHERE {watched} \
                   AND COALESCE(reconcile_next_at, created_at + make_interval(secs => $1)) <= now() \
                 ORDER BY COALESCE(reconcile_next_at, created_at) \
                 LIMIT $2 \
                 FOR UPDATE SKIP LOCKED) \
             UPDATE {table} t \
             SET reconcile_attempts = t.reconcile_attempts + 1, \
                 reconcile_next_at = now() + make_interval(secs => \
                     LEAST($4, $3 * power(2, LEAST(t.reconcile_attempts, 30)))) \
             FROM due WHERE t.id = due.id \
             RETURNING {returning}"
        );
        sqlx::query_as(&sql)
            .bind(s.pending_after.as_secs_f64())
            .bind(i64::from(s.batch))
            .bind(s.interval_min.as_secs_f64())
            .bind(s.interval_max.as_secs_f64())
            .fetch_all(&self.pool)
            .await
    }

    /// Asks the provider about a registered refund.
    async fn query_refund(
        &self,
        r: &DueRefund,
    ) -> (&'static str, Option<Box<VerifiedNotification>>, bool) {
        let give_up = r.created_at + self.schedule.give_up_after <= self.clock.now();
        let answer = match r.provider.as_str() {
            "wechat_v3" => match self.queriers.wechat_v3.get(&r.merchant) {
                Some(q) => self
                    .client
                    .wechat_refund(q, &r.out_refund_no)
                    .await
                    .map(|a| match a {
                        RefundQuery::Found(n) => Some(n),
                        RefundQuery::NotFound => None,
                    }),
                None => return ("no_credentials", None, false),
            },
            "alipay" => match self.queriers.alipay.get(&r.merchant) {
                Some(q) => match self.alipay_refunded_before(q, r).await {
                    Ok(before) => self
                        .client
                        .alipay_refund_query(q, &r.out_trade_no, &r.out_refund_no, before)
                        .await
                        .map(|a| match a {
                            RefundAnswer::Refunded(n) => Some(n),
                            RefundAnswer::NotRefunded => None,
                        }),
                    Err(error) => Err(error),
                },
                None => return ("no_credentials", None, false),
            },
            _ => return ("unsupported", None, true),
        };
        match answer {
            Ok(Some(n)) => match n.status() {
                Status::RefundSucceeded => ("refund_succeeded", Some(n), false),
                Status::RefundClosed => ("refund_closed", Some(n), false),
                Status::RefundAbnormal => ("refund_abnormal", Some(n), false),
                _ => ("refund_processing", None, give_up),
            },
            Ok(None) => ("not_found", None, give_up),
            Err(error) => {
                tracing::warn!(
                    provider = %r.provider, merchant = %r.merchant, refund_id = r.id,
                    error = %error, "reconcile: refund query failed"
                );
                (error.label(), None, false)
            }
        }
    }

    /// What the trade's other registered refunds refunded, as Alipay answers for each
    /// of them now: the base of this refund's running total (Alipay's notifications
    /// state refunds as the trade's running total; its refund query, per refund).
    /// Refunds payhook was never told about are not counted: the total is then a lower
    /// bound, which the apply path's "highest running total wins" rule keeps safe.
    async fn alipay_refunded_before(
        &self,
        q: &payhook_shared::query::AlipayQuerier,
        r: &DueRefund,
    ) -> Result<i64, QueryError> {
        let others: Vec<String> = sqlx::query_scalar(
            "SELECT out_refund_no FROM refunds WHERE payment_id = $1 AND id <> $2 AND registered",
        )
        .bind(r.payment_id)
        .bind(r.id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| QueryError::Transport(format!("database: {e}")))?;
        let mut before = 0_i64;
        for other in &others {
            if let RefundAnswer::Refunded(n) = self
                .client
                .alipay_refund_query(q, &r.out_trade_no, other, 0)
                .await?
            {
                before = before.saturating_add(n.fields().refund_amount.unwrap_or(0));
            }
        }
        Ok(before)
    }

    /// Asks the provider; returns the metric result, the answer to publish if it
    /// settles the payment, and whether to stop querying it.
    async fn query(&self, p: &Due) -> (&'static str, Option<Box<VerifiedNotification>>, bool) {
        let now = self.clock.now();
        let expired = p.expires_at.is_some_and(|at| at <= now);
        let give_up = p.expires_at.unwrap_or(p.created_at) + self.schedule.give_up_after <= now;
        let answer = match p.provider.as_str() {
            "alipay" => match self.queriers.alipay.get(&p.merchant) {
                Some(q) => self.client.alipay_trade_query(q, &p.out_trade_no).await,
                None => return ("no_credentials", None, false),
            },
            "wechat_v3" => match self.queriers.wechat_v3.get(&p.merchant) {
                Some(q) => self.client.wechat_transaction(q, &p.out_trade_no).await,
                None => return ("no_credentials", None, false),
            },
            "wechat_v2" => match self.queriers.wechat_v2.get(&p.merchant) {
                Some(q) => self.client.wechat_v2_orderquery(q, &p.out_trade_no).await,
                None => return ("no_credentials", None, false),
            },
            _ => return ("unsupported", None, true),
        };
        match answer {
            Ok(PaymentAnswer::Found(n)) => match n.status() {
                Status::Pending => ("pending", None, give_up),
                Status::Paid => ("paid", Some(n), false),
                Status::Closed => ("closed", Some(n), false),
                Status::Failed => ("failed", Some(n), false),
                _ => ("other", None, give_up),
            },
            Ok(PaymentAnswer::NotCreated(close)) if expired => {
                ("not_created_expired", Some(close), false)
            }
            Ok(PaymentAnswer::NotCreated(_)) => ("not_created", None, give_up),
            Err(error) => {
                match &error {
                    QueryError::Answer(a) => tracing::warn!(
                        provider = %p.provider, merchant = %p.merchant, payment_id = p.id,
                        error = %a, "reconcile: answer refused"
                    ),
                    QueryError::Transport(e) => tracing::warn!(
                        provider = %p.provider, merchant = %p.merchant, payment_id = p.id,
                        error = %e, "reconcile: query failed"
                    ),
                }
                (error.label(), None, false)
            }
        }
    }

    async fn publish(
        &self,
        channel: &Channel,
        merchant: &str,
        verified: VerifiedNotification,
    ) -> Result<bool, SweepError> {
        let request_id = format!("reconcile-{}", uuid::Uuid::new_v4().simple());
        let envelope = Envelope::from_verified(
            verified,
            merchant,
            Source::Reconcile,
            OffsetDateTime::now_utc(),
            request_id,
        )
        // A query's answer starts a trace of its own.
        .with_traceparent(&payhook_shared::trace::TraceParent::start());
        let body = serde_json::to_vec(&envelope)?;
        let sent = payhook_shared::amqp::publish_confirmed(
            channel,
            &self.exchange,
            &envelope.routing_key(),
            &body,
            envelope_properties(&envelope, "payhook-reconciler"),
            CONFIRM_TIMEOUT,
        )
        .await;
        match sent {
            Ok(()) => {
                tracing::info!(
                    event_id = %envelope.event_id, status = ?envelope.status,
                    "reconcile: published the provider's answer"
                );
                Ok(true)
            }
            // The channel is broken: the sweep stops and reconnects.
            Err(payhook_shared::amqp::PublishError::Channel(error)) => Err(error.into()),
            // Not durable: the payment stays due and is queried again next time.
            Err(error) => {
                tracing::warn!(event_id = %envelope.event_id, %error, "reconcile: publish not confirmed");
                Ok(false)
            }
        }
    }

    /// Notes the answer on the payment or refund row (`table` is one of the two).
    async fn record(
        &self,
        table: &'static str,
        id: i64,
        result: &str,
        stop: bool,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "UPDATE {table} SET reconcile_last = $2, reconciled_at = now(), \
             reconcile_next_at = CASE WHEN $3 THEN 'infinity'::timestamptz \
                                      ELSE reconcile_next_at END \
             WHERE id = $1"
        );
        sqlx::query(&sql)
            .bind(id)
            .bind(result)
            .bind(stop)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Why a sweep stopped.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("envelope: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Makes a payment due now (the admin API's "reconcile now").
pub async fn reconcile_now(
    pool: &PgPool,
    provider: Provider,
    merchant: &str,
    out_trade_no: &str,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE payments SET reconcile_next_at = now() \
         WHERE provider = $1 AND merchant = $2 AND out_trade_no = $3 \
           AND (state = 'PENDING' OR (paid_at IS NULL AND refunded_amount > 0))",
    )
    .bind(provider.as_str())
    .bind(merchant)
    .bind(out_trade_no)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() > 0)
}
