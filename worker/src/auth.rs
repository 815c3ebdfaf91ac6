//! Who may call the worker's admin API: bearer tokens from `worker.admin_tokens`, each
//! with a name and a scope (`read` ⊂ `operate`).
//!
//! - `/healthz`, `/readyz` and `/metrics` stay open: probes and Prometheus carry no
//!   token, and they reveal no payment data (the NetworkPolicy limits who reaches them).
//! - Any other route needs a token: 401 without one or with an unknown one, 403 with a
//!   `read` token on an `operate` route. With no token configured every such route
//!   answers 401: closed by default.
//! - Tokens are compared as SHA-256 digests in constant time, against every configured
//!   token (no early exit), and never logged; a refusal is logged with the peer's
//!   address and the route.

use std::net::IpAddr;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, HttpResponse, web};
use payhook_shared::config::{AdminScope, AdminToken, ConfigError};
use secrecy::ExposeSecret as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The shortest token accepted: 32 characters (e.g. `openssl rand -hex 32` gives 64).
pub const MIN_TOKEN_LEN: usize = 32;

/// The configured tokens, as digests.
#[derive(Clone)]
pub struct Tokens {
    tokens: Vec<(String, AdminScope, [u8; 32])>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|(name, scope, _)| (name, scope)))
            .finish()
    }
}

/// The authenticated caller of a request (in the request's extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub scope: AdminScope,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Loads every token; errors name the token (by its name), never its value.
    pub fn load(configured: &[AdminToken]) -> Result<Self, ConfigError> {
        let mut tokens = Vec::with_capacity(configured.len());
        for token in configured {
            let field = format!("worker.admin_tokens.{}.token", token.name);
            let value = token
                .token
                .load()
                .map_err(|e| ConfigError::new(&field, e))?;
            if value.expose_secret().len() < MIN_TOKEN_LEN {
                return Err(ConfigError::new(
                    field,
                    format!("must be at least {MIN_TOKEN_LEN} characters (openssl rand -hex 32)"),
                ));
            }
            tokens.push((
                token.name.clone(),
                token.scope,
                digest(value.expose_secret()),
            ));
        }
        Ok(Self { tokens })
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller a bearer token belongs to.
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        let presented = digest(presented);
        let mut found = None;
        for (name, scope, expected) in &self.tokens {
            if bool::from(expected.ct_eq(&presented)) {
                found = Some(Caller {
                    name: name.clone(),
                    scope: *scope,
                });
            }
        }
        found
    }
}

/// The scope a route needs; `None` for the open ones.
pub fn required_scope(method: &Method, path: &str) -> Option<AdminScope> {
    match path {
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" => None,
        // Runs a captured request through verification: reads, changes nothing.
        "/diagnose" => Some(AdminScope::Read),
        _ if path.starts_with("/rejected/") && path.ends_with("/diagnose") => {
            Some(AdminScope::Read)
        }
        _ if method == Method::GET || method == Method::HEAD => Some(AdminScope::Read),
        _ => Some(AdminScope::Operate),
    }
}

fn bearer(req: &ServiceRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn peer(req: &ServiceRequest) -> Option<IpAddr> {
    req.peer_addr().map(|a| a.ip())
}

/// The admin listener's guard (`middleware::from_fn`).
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(needed) = required_scope(req.method(), req.path()) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let caller = req
        .app_data::<web::Data<Tokens>>()
        .zip(bearer(&req))
        .and_then(|(tokens, presented)| tokens.authenticate(presented));
    let refusal = match &caller {
        None => {
            tracing::warn!(peer = ?peer(&req), method = %req.method(), path = req.path(), "admin API: missing or unknown token");
            Some(
                HttpResponse::Unauthorized()
                    .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"payhook-admin\""))
                    .json(json!({"error": "a valid bearer token is required"})),
            )
        }
        Some(caller) if caller.scope < needed => {
            tracing::warn!(token = %caller.name, method = %req.method(), path = req.path(), "admin API: token scope too small");
            Some(HttpResponse::Forbidden().json(json!({
                "error": format!("this route needs a token with scope {}", needed.as_str())
            })))
        }
        Some(_) => None,
    };
    if let Some(response) = refusal {
        return Ok(req.into_response(response).map_into_right_body());
    }
    if let Some(caller) = caller {
        req.extensions_mut().insert(caller);
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhook_shared::config::Secret;

    fn token(name: &str, scope: AdminScope, value: &str) -> AdminToken {
        AdminToken {
            name: name.into(),
            scope,
            token: Secret::inline(value),
        }
    }

    #[test]
    fn tokens_authenticate_by_value_and_short_ones_are_refused() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let tokens = Tokens::load(&[
            token("ops", AdminScope::Operate, &a),
            token("dash", AdminScope::Read, &b),
        ])
        .expect("loads");
        assert_eq!(
            tokens.authenticate(&a),
            Some(Caller {
                name: "ops".into(),
                scope: AdminScope::Operate
            })
        );
        assert_eq!(
            tokens.authenticate(&b).map(|c| c.scope),
            Some(AdminScope::Read)
        );
        assert_eq!(tokens.authenticate("nope"), None);
        assert!(!format!("{tokens:?}").contains(&a));
        let err = Tokens::load(&[token("short", AdminScope::Read, "hunter2")]).expect_err("short");
        assert_eq!(err.field, "worker.admin_tokens.short.token");
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn routes_need_the_scope_of_what_they_do() {
        assert_eq!(required_scope(&Method::GET, "/metrics"), None);
        assert_eq!(required_scope(&Method::GET, "/readyz"), None);
        assert_eq!(
            required_scope(&Method::GET, "/payments/alipay/m1/o1"),
            Some(AdminScope::Read)
        );
        assert_eq!(
            required_scope(&Method::POST, "/orders"),
            Some(AdminScope::Operate)
        );
        assert_eq!(
            required_scope(&Method::POST, "/parked/replay"),
            Some(AdminScope::Operate)
        );
    }
}
