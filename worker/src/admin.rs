//! The worker's admin listener: health, readiness, metrics, order and refund
//! registration, payments and their history, queues, the parking queue (list and
//! replay), the audit trail. `payhook-admin --api` is its client. Internal: never
//! expose it publicly.
//! Every route but the probes and metrics needs a bearer token ([`crate::auth`]);
//! every operate action leaves an audit record ([`crate::db::audit`]).

use actix_web::http::Method;
use actix_web::{HttpResponse, Route, web};
use payhook_shared::event::Provider;
use serde_json::json;

use crate::auth::Caller;
use crate::db::audit;
use crate::db::orders::{self, NewOrder, Registered};
use crate::parked::ReplayFilter;
use crate::shared::Shared;

/// The API's OpenAPI 3.1 document, served at `/openapi.json`; a test checks that it
/// lists exactly the routes of [`routes`].
pub const OPENAPI: &str = include_str!("../api/openapi.json");

/// Every route: path, method, handler.
pub fn routes() -> Vec<(&'static str, Method, Route)> {
    vec![
        ("/healthz", Method::GET, web::get().to(healthz)),
        ("/readyz", Method::GET, web::get().to(readyz)),
        ("/metrics", Method::GET, web::get().to(metrics)),
        ("/openapi.json", Method::GET, web::get().to(openapi)),
        ("/orders", Method::POST, web::post().to(register_order)),
        ("/refunds", Method::POST, web::post().to(register_refund)),
        (
            "/payments/{provider}/{merchant}/{out_trade_no}",
            Method::GET,
            web::get().to(history),
        ),
        (
            "/payments/{provider}/{merchant}/{out_trade_no}/reconcile",
            Method::POST,
            web::post().to(reconcile_now),
        ),
        ("/payments", Method::GET, web::get().to(payments)),
        ("/queues", Method::GET, web::get().to(queues)),
        ("/parked", Method::GET, web::get().to(parked_list)),
        ("/parked/replay", Method::POST, web::post().to(replay)),
        ("/audit", Method::GET, web::get().to(audit_trail)),
        ("/diagnose", Method::POST, web::post().to(diagnose)),
        ("/rejected", Method::GET, web::get().to(rejected_list)),
        ("/rejected/{id}", Method::GET, web::get().to(rejected_show)),
        (
            "/rejected/{id}/diagnose",
            Method::POST,
            web::post().to(rejected_diagnose),
        ),
    ]
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Unreadable bodies, paths and queries answer 400 in JSON, like every other answer.
    cfg.app_data(web::JsonConfig::default().error_handler(|error, _| bad_request(error)))
        .app_data(web::QueryConfig::default().error_handler(|error, _| bad_request(error)))
        .app_data(web::PathConfig::default().error_handler(|error, _| bad_request(error)));
    for (path, _, route) in routes() {
        cfg.route(path, route);
    }
}

fn bad_request(error: impl std::fmt::Display + std::fmt::Debug + 'static) -> actix_web::Error {
    let answer = HttpResponse::BadRequest().json(json!({"error": error.to_string()}));
    actix_web::error::InternalError::from_response(error, answer).into()
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

/// Whether a name taken from a path can be a stored one (no control characters:
/// PostgreSQL refuses NUL in text).
fn plausible(name: &str) -> bool {
    !name.chars().any(char::is_control)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the broker link and PostgreSQL are up. Redis is reported but does not
/// make the worker unready: without it the worker runs on the database's guarantees.
async fn readyz(shared: web::Data<Shared>) -> HttpResponse {
    let broker = shared.broker_up();
    let postgres = shared.postgres_up().await;
    let redis = if shared.dedup.ping().await {
        "up"
    } else {
        "degraded"
    };
    let body = json!({
        "status": if broker && postgres { "ready" } else { "not_ready" },
        "broker": if broker { "up" } else { "down" },
        "postgres": if postgres { "up" } else { "down" },
        "redis": redis,
    });
    if broker && postgres {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(shared: web::Data<Shared>) -> HttpResponse {
    shared.refresh_gauges().await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(shared.metrics.render())
}

async fn register_order(
    shared: web::Data<Shared>,
    caller: web::ReqData<Caller>,
    order: web::Json<NewOrder>,
) -> HttpResponse {
    let result = orders::register(&shared.pool, &order).await;
    let target = format!(
        "{}/{}/{}",
        order.provider.as_str(),
        order.merchant,
        order.out_trade_no
    );
    audit::record(
        &shared.pool,
        &caller.name,
        "register_order",
        &target,
        &registration_result(&result),
    )
    .await;
    registration_answer(result)
}

/// Registers a refund the merchant asked the provider for (see [`crate::db::refunds`]).
async fn register_refund(
    shared: web::Data<Shared>,
    caller: web::ReqData<Caller>,
    refund: web::Json<crate::db::NewRefund>,
) -> HttpResponse {
    let result = crate::db::register_refund(&shared.pool, &refund).await;
    let target = format!(
        "{}/{}/{}/{}",
        refund.provider.as_str(),
        refund.merchant,
        refund.out_trade_no,
        refund.out_refund_no
    );
    audit::record(
        &shared.pool,
        &caller.name,
        "register_refund",
        &target,
        &registration_result(&result),
    )
    .await;
    registration_answer(result)
}

/// A registration's outcome for the audit trail.
pub fn registration_result(result: &Result<Registered, sqlx::Error>) -> String {
    match result {
        Ok(Registered::Created) => "created".into(),
        Ok(Registered::AlreadyRegistered) => "already_registered".into(),
        Ok(Registered::Conflict(reason)) => format!("conflict: {reason}"),
        Ok(Registered::Invalid(reason)) => format!("invalid: {reason}"),
        Err(_) => "error: database unavailable".into(),
    }
}

fn registration_answer(result: Result<Registered, sqlx::Error>) -> HttpResponse {
    match result {
        Ok(Registered::Created) => HttpResponse::Created().json(json!({"status": "created"})),
        Ok(Registered::AlreadyRegistered) => {
            HttpResponse::Ok().json(json!({"status": "already_registered"}))
        }
        Ok(Registered::Conflict(reason)) => {
            HttpResponse::Conflict().json(json!({"status": "conflict", "reason": reason}))
        }
        Ok(Registered::Invalid(reason)) => {
            HttpResponse::BadRequest().json(json!({"status": "invalid", "reason": reason}))
        }
        Err(error) => {
            tracing::error!(%error, "registration failed");
            HttpResponse::ServiceUnavailable().json(json!({"error": "database unavailable"}))
        }
    }
}

fn parse_provider(text: &str) -> Option<Provider> {
    Provider::ALL.into_iter().find(|p| p.as_str() == text)
}

/// Makes a pending payment due for reconciliation at the next sweep (202), or says
/// it is not pending (409) or unknown (404).
async fn reconcile_now(
    shared: web::Data<Shared>,
    caller: web::ReqData<Caller>,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    let (provider, merchant, out_trade_no) = path.into_inner();
    let target = format!("{provider}/{merchant}/{out_trade_no}");
    let Some(provider) = parse_provider(&provider) else {
        audit::record(
            &shared.pool,
            &caller.name,
            "reconcile",
            &target,
            "unknown provider",
        )
        .await;
        return HttpResponse::NotFound().json(json!({"error": "unknown provider"}));
    };
    let result =
        crate::reconcile::reconcile_now(&shared.pool, provider, &merchant, &out_trade_no).await;
    let outcome = match &result {
        Ok(true) => "scheduled",
        Ok(false) => "not pending",
        Err(_) => "error: database unavailable",
    };
    audit::record(&shared.pool, &caller.name, "reconcile", &target, outcome).await;
    match result {
        Ok(true) => HttpResponse::Accepted().json(json!({"scheduled": true})),
        Ok(false) => HttpResponse::Conflict()
            .json(json!({"error": "no pending payment with this out_trade_no"})),
        Err(error) => {
            tracing::error!(%error, "reconcile-now update failed");
            HttpResponse::ServiceUnavailable().json(json!({"error": "database unavailable"}))
        }
    }
}

async fn history(
    shared: web::Data<Shared>,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    let (provider, merchant, out_trade_no) = path.into_inner();
    let Some(provider) = parse_provider(&provider) else {
        return HttpResponse::NotFound().json(json!({"error": "unknown provider"}));
    };
    if !plausible(&merchant) || !plausible(&out_trade_no) {
        return HttpResponse::NotFound().json(json!({"error": "no such payment"}));
    }
    match crate::db::history::payment_history(&shared.pool, provider, &merchant, &out_trade_no)
        .await
    {
        Ok(Some(history)) => HttpResponse::Ok().json(history),
        Ok(None) => HttpResponse::NotFound().json(json!({"error": "no such payment"})),
        Err(error) => {
            tracing::error!(%error, "history query failed");
            HttpResponse::ServiceUnavailable().json(json!({"error": "database unavailable"}))
        }
    }
}

/// `POST /parked/replay` query: which messages, and whether to move them.
#[derive(Debug, serde::Deserialize)]
struct ReplayQuery {
    provider: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

async fn replay(
    shared: web::Data<Shared>,
    caller: web::ReqData<Caller>,
    query: web::Query<ReplayQuery>,
) -> HttpResponse {
    let ReplayQuery {
        provider,
        reason,
        dry_run,
    } = query.into_inner();
    let filter = ReplayFilter { provider, reason };
    let result = shared.replay_parked(&filter, dry_run).await;
    if !dry_run {
        let outcome = match &result {
            Ok(answer) => format!(
                "matched {}, replayed {}, kept {}",
                answer.report.matched, answer.report.replayed, answer.report.kept
            ),
            Err(_) => "error: broker unavailable".into(),
        };
        audit::record(
            &shared.pool,
            &caller.name,
            "replay_parked",
            &filter.describe(),
            &outcome,
        )
        .await;
    }
    match result {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "replay failed");
            HttpResponse::ServiceUnavailable().json(json!({"error": "broker unavailable"}))
        }
    }
}

/// The parked messages a filter selects (the parking queue is walked once; see
/// [`crate::parked`]).
async fn parked_list(shared: web::Data<Shared>, filter: web::Query<ReplayFilter>) -> HttpResponse {
    match shared.list_parked(&filter).await {
        Ok(messages) => HttpResponse::Ok().json(messages),
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "listing parked messages failed"
            );
            HttpResponse::ServiceUnavailable().json(json!({"error": "broker unavailable"}))
        }
    }
}

async fn queues(shared: web::Data<Shared>) -> HttpResponse {
    match shared.queue_depths().await {
        Ok(depths) => HttpResponse::Ok().json(depths),
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "reading queue depths failed");
            HttpResponse::ServiceUnavailable().json(json!({"error": "broker unavailable"}))
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct PaymentsQuery {
    #[serde(default = "default_payments_limit")]
    limit: i64,
    state: Option<crate::db::state::PaymentState>,
}

fn default_payments_limit() -> i64 {
    20
}

/// The payments payhook heard of most recently, newest first.
async fn payments(shared: web::Data<Shared>, query: web::Query<PaymentsQuery>) -> HttpResponse {
    let limit = query.limit.clamp(1, 1000);
    match crate::db::history::recent_payments(&shared.pool, limit, query.state).await {
        Ok(rows) => HttpResponse::Ok().json(rows),
        Err(error) => {
            tracing::error!(%error, "payments query failed");
            HttpResponse::ServiceUnavailable().json(json!({"error": "database unavailable"}))
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct AuditQuery {
    #[serde(default = "default_audit_limit")]
    limit: i64,
}

fn default_audit_limit() -> i64 {
    50
}

/// The audit trail, newest first.
async fn audit_trail(shared: web::Data<Shared>, query: web::Query<AuditQuery>) -> HttpResponse {
    match audit::recent(&shared.pool, query.limit.clamp(1, 10_000)).await {
        Ok(records) => HttpResponse::Ok().json(records),
        Err(error) => {
            tracing::error!(%error, "audit query failed");
            HttpResponse::ServiceUnavailable().json(json!({"error": "database unavailable"}))
        }
    }
}

/// Runs a captured request through the receiver's verification, step by step, with
/// this worker's keys (the downloaded WeChat V3 platform certificates included).
async fn diagnose(
    shared: web::Data<Shared>,
    captured: web::Json<payhook_shared::diagnose::Captured>,
) -> HttpResponse {
    match captured.diagnose(&shared.merchants, &payhook_shared::clock::SystemClock) {
        Ok(diagnosis) => HttpResponse::Ok().json(diagnosis),
        Err(error) => HttpResponse::BadRequest().json(json!({ "error": error })),
    }
}

/// The samples of refused notifications, newest first.
async fn rejected_list(
    shared: web::Data<Shared>,
    filter: web::Query<crate::rejected::Filter>,
) -> HttpResponse {
    HttpResponse::Ok().json(shared.rejected.list(&filter))
}

/// One sample: its summary, header names and field names (never values).
async fn rejected_show(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    match shared.rejected.get(&id) {
        Some(sample) => HttpResponse::Ok().json(sample.describe()),
        None => not_held(),
    }
}

/// One sample run through verification, judged as of when it was refused.
async fn rejected_diagnose(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    let Some(sample) = shared.rejected.get(&id) else {
        return not_held();
    };
    match sample
        .captured()
        .diagnose(&shared.merchants, &payhook_shared::clock::SystemClock)
    {
        Ok(diagnosis) => HttpResponse::Ok().json(diagnosis),
        Err(error) => HttpResponse::BadRequest().json(json!({ "error": error })),
    }
}

fn not_held() -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "error": "no such sample held (samples are trimmed by kind, size and age)"
    }))
}
