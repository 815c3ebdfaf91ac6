//! HTTP routes: one notify endpoint per provider and merchant, plus health and metrics.
//!
//! Every provider goes through the same [`handle`] pipeline — edge checks, bounded body
//! read, verification, publish with confirm, answer — so the ack contract lives in one
//! place; the providers differ only in [`verify`] and in their answer format.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt as _;
use payhook_shared::clock::Clock;
use payhook_shared::error::VerifyError;
use payhook_shared::event::{Envelope, Provider, Source, VerifiedNotification};
use payhook_shared::merchants::{KeySlot, Merchants, Rejection};
use payhook_shared::wechat_v3;
use payhook_shared::wechat_v3::V3Headers;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::answer;
use crate::edge::Edge;
use crate::metrics::{Metrics, Outcome};
use crate::publisher::{PublishError, Publisher};

/// Request-independent state shared by every handler.
#[derive(Debug)]
pub struct AppState {
    pub merchants: Merchants,
    pub publisher: Publisher,
    /// Samples of refused requests, for `payhook-admin rejected`.
    pub rejected: crate::rejected::Sampler,
    /// WeChat V3 platform certificates from the worker.
    pub certificates: crate::certificates::Certificates,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    pub edge: Edge,
    pub limits: Limits,
    /// Bounds concurrent requests; when exhausted, requests are shed at once.
    pub in_flight: Semaphore,
}

/// Size and time limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub ack_deadline: Duration,
    pub body_timeout: Duration,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/notify/alipay/{merchant}", web::post().to(alipay_notify))
        .route(
            "/notify/wechat/v2/{merchant}",
            web::post().to(wechat_v2_notify),
        )
        .route(
            "/notify/wechat/v3/{merchant}",
            web::post().to(wechat_v3_notify),
        )
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn alipay_notify(
    state: web::Data<AppState>,
    merchant: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> HttpResponse {
    handle(&state, Provider::Alipay, &merchant, &req, body).await
}

async fn wechat_v2_notify(
    state: web::Data<AppState>,
    merchant: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> HttpResponse {
    handle(&state, Provider::WechatV2, &merchant, &req, body).await
}

async fn wechat_v3_notify(
    state: web::Data<AppState>,
    merchant: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> HttpResponse {
    handle(&state, Provider::WechatV3, &merchant, &req, body).await
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    // Ready: notifications can be handed to the broker, and the WeChat V3 platform
    // certificates published before this receiver started have been read.
    let broker = state.publisher.is_ready();
    let certificates = state.certificates.caught_up();
    let body = serde_json::json!({
        "status": if broker && certificates { "ready" } else { "not_ready" },
        "broker": if broker { "up" } else { "down" },
        "certificates": if certificates { "current" } else { "catching_up" },
    });
    if broker && certificates {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// A refusal: what to answer, what to count.
struct Refusal {
    outcome: Outcome,
    status: StatusCode,
    message: &'static str,
}

impl Refusal {
    fn new(outcome: Outcome, status: StatusCode, message: &'static str) -> Self {
        Self {
            outcome,
            status,
            message,
        }
    }
}

async fn handle(
    state: &AppState,
    provider: Provider,
    merchant: &str,
    req: &HttpRequest,
    body: web::Payload,
) -> HttpResponse {
    let started = Instant::now();
    let mut id_buf = uuid::Uuid::encode_buffer();
    let request_id: &str = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut id_buf);
    // The same id is in our logs and in the AMQP headers: one id to trace a request.
    let request_id_header = HeaderValue::from_str(request_id).ok();
    let span = tracing::info_span!(
        "notification",
        request_id = %request_id,
        trace_id = tracing::field::Empty,
        provider = %provider,
        // Bounded: the path segment is attacker-controlled.
        merchant = %merchant.chars().take(64).collect::<String>(),
        provider_request_id = req.headers().get("Request-ID").and_then(|v| v.to_str().ok()).unwrap_or(""),
    );
    // This request's span in the caller's trace (a tracing edge proxy), or a new trace.
    let trace = payhook_shared::trace::enter(
        &span,
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    span.record("trace_id", trace.trace_id());
    async move {
        let result = process(
            state,
            provider,
            merchant,
            req,
            body,
            started,
            Ids {
                request: request_id.to_owned(),
                trace,
            },
        )
        .await;
        let mut response = match result {
            Ok(()) => {
                state.metrics.notification(provider, Outcome::Acked);
                // `process` succeeded, so the merchant is a configured one: bounded labels.
                state.metrics.merchant_acked(
                    provider,
                    merchant,
                    state.clock.now().unix_timestamp_nanos() as f64 / 1e9,
                );
                state
                    .metrics
                    .ack_latency(provider, started.elapsed().as_secs_f64());
                answer::success(provider)
            }
            Err(refusal) => {
                state.metrics.notification(provider, refusal.outcome);
                answer::failure(provider, refusal.status, refusal.message)
            }
        };
        if let Some(value) = request_id_header {
            response
                .headers_mut()
                .insert(HeaderName::from_static("x-request-id"), value);
        }
        response
    }
    .instrument(span)
    .await
}

/// A request's identities: ours (logs, `X-Request-Id`, AMQP) and its trace span.
struct Ids {
    request: String,
    trace: payhook_shared::trace::TraceParent,
}

async fn process(
    state: &AppState,
    provider: Provider,
    merchant: &str,
    req: &HttpRequest,
    body: web::Payload,
    started: Instant,
    ids: Ids,
) -> Result<(), Refusal> {
    let Ids {
        request: request_id,
        trace,
    } = ids;
    // Shed rather than queue: a request that waits past the provider's deadline is a
    // resend anyway, and queueing would push every other request past it too.
    let Ok(_permit) = state.in_flight.try_acquire() else {
        tracing::warn!("shedding load: too many requests in flight");
        return Err(Refusal::new(
            Outcome::Shed,
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
        ));
    };
    let _gauge = InFlight::enter(&state.metrics);

    let client = client_ip(state, req);
    if !state.edge.allowed(provider, client) {
        tracing::warn!(client = ?client, "source address not in the allowlist");
        return Err(Refusal::new(
            Outcome::Forbidden,
            StatusCode::FORBIDDEN,
            "forbidden",
        ));
    }
    if !content_type_ok(provider, req) {
        tracing::info!("unsupported content type");
        return Err(Refusal::new(
            Outcome::UnsupportedMediaType,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported content type",
        ));
    }
    let body = read_body(req, body, &state.limits).await?;

    let verified = match verify(state, provider, merchant, req, &body) {
        Ok((verified, slot)) => {
            state.metrics.key_verified(provider, merchant, slot);
            verified
        }
        Err(Rejection::UnknownMerchant) => {
            tracing::warn!("notification for an unknown merchant");
            return Err(Refusal::new(
                Outcome::UnknownMerchant,
                StatusCode::NOT_FOUND,
                "unknown merchant",
            ));
        }
        Err(Rejection::Verify(error)) => {
            state.metrics.verify_failure(provider, error.reason());
            tracing::warn!(reason = error.reason(), %error, "notification refused");
            state.rejected.offer(
                provider,
                merchant,
                &error,
                &request_id,
                req.headers(),
                &body,
            );
            return Err(Refusal::new(
                Outcome::Rejected,
                status_for(&error),
                error.reason(),
            ));
        }
    };

    let envelope = Envelope::from_verified(
        verified,
        merchant,
        Source::Notify,
        state.clock.now(),
        request_id,
    )
    .with_traceparent(&trace);
    let deadline = started + state.limits.ack_deadline;
    match state.publisher.publish(&envelope, deadline).await {
        Ok(()) => {
            tracing::info!(
                event_id = %envelope.event_id,
                kind = envelope.kind.as_str(),
                out_trade_no = envelope.fields.out_trade_no.as_deref().unwrap_or(""),
                "notification accepted"
            );
            Ok(())
        }
        Err(error) => {
            let (outcome, message) = match error {
                PublishError::Unavailable => {
                    (Outcome::BrokerUnavailable, "temporarily unavailable")
                }
                _ => (Outcome::PublishFailed, "not persisted"),
            };
            tracing::error!(%error, event_id = %envelope.event_id, "notification not persisted; provider will resend");
            Err(Refusal::new(
                outcome,
                StatusCode::SERVICE_UNAVAILABLE,
                message,
            ))
        }
    }
}

/// The request's bytes through the merchant registry's verification (the current key,
/// then a previous one during a key change).
fn verify(
    state: &AppState,
    provider: Provider,
    merchant: &str,
    req: &HttpRequest,
    body: &[u8],
) -> Result<(VerifiedNotification, KeySlot), Rejection> {
    let headers = if provider == Provider::WechatV3 {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        V3Headers {
            timestamp: header(wechat_v3::HEADER_TIMESTAMP),
            nonce: header(wechat_v3::HEADER_NONCE),
            signature: header(wechat_v3::HEADER_SIGNATURE),
            serial: header(wechat_v3::HEADER_SERIAL),
            signature_type: header(wechat_v3::HEADER_SIGNATURE_TYPE),
        }
    } else {
        V3Headers::default()
    };
    state
        .merchants
        .verify(provider, merchant, body, &headers, &*state.clock)
}

fn status_for(error: &VerifyError) -> StatusCode {
    StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
}

fn client_ip(state: &AppState, req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr().map(|a| a.ip());
    let forwarded = req
        .headers()
        .get("X-Forwarded-For")
        .and_then(|v| v.to_str().ok());
    state.edge.client_ip(peer, forwarded)
}

/// A missing content type is tolerated (the body must still parse and verify); a
/// wrong one is refused before reading the body.
fn content_type_ok(provider: Provider, req: &HttpRequest) -> bool {
    let Some(value) = req.headers().get(CONTENT_TYPE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match provider {
        Provider::Alipay => essence == "application/x-www-form-urlencoded",
        Provider::WechatV2 => essence == "text/xml" || essence == "application/xml",
        Provider::WechatV3 => essence == "application/json",
    }
}

/// Reads the raw body — never parsed or re-serialised by the framework (trap 6) — up
/// to the size cap and within the body timeout.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limits: &Limits,
) -> Result<web::Bytes, Refusal> {
    let too_large = || {
        Refusal::new(
            Outcome::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large",
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return Err(too_large());
    }
    let read = async {
        let mut buf =
            web::BytesMut::with_capacity(declared.unwrap_or(4096).min(limits.max_body_bytes));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|error| {
                tracing::info!(%error, "body read failed");
                Refusal::new(
                    Outcome::Rejected,
                    StatusCode::BAD_REQUEST,
                    "unreadable body",
                )
            })?;
            if buf.len() + chunk.len() > limits.max_body_bytes {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(result) => result,
        Err(_elapsed) => {
            tracing::info!("body not received in time");
            Err(Refusal::new(
                Outcome::BodyTimeout,
                StatusCode::REQUEST_TIMEOUT,
                "body timeout",
            ))
        }
    }
}

/// Keeps the in-flight gauge right on every exit path.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a Metrics) -> Self {
        metrics.in_flight().inc();
        Self(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight().dec();
    }
}
