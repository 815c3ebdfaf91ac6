//! Order registration: the merchant tells payhook what it expects (amount, currency,
//! identities) before the buyer pays. It enables the amount check of paid
//! notifications ([`super::apply`]) and the reconciliation of orders whose
//! notification never came. Registering is idempotent.

use payhook_shared::event::Provider;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::OffsetDateTime;

/// An order to register (the admin API's request body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    pub provider: Provider,
    pub merchant: String,
    pub out_trade_no: String,
    /// Expected total in fen.
    pub amount: i64,
    /// ISO 4217, `CNY` when omitted.
    #[serde(default = "cny")]
    pub currency: String,
    /// When the order stops being payable (RFC 3339); reconciliation uses it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Overrides the merchant's configured identities for this order.
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub mch_id: Option<String>,
    #[serde(default)]
    pub payee: Option<String>,
}

fn cny() -> String {
    "CNY".to_owned()
}

/// What registering did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// Registered now (possibly attaching to a payment a notification created).
    Created,
    /// Already registered with the same terms: nothing to do.
    AlreadyRegistered,
    /// Registered with other terms, or a notification already recorded a different
    /// amount or currency: the message says which.
    Conflict(String),
    /// The order itself is unacceptable (empty number, non-positive amount, …).
    Invalid(String),
}

/// The registration columns of a payment row.
#[derive(Debug, sqlx::FromRow)]
struct Existing {
    id: i64,
    registered: bool,
    expected_amount: Option<i64>,
    currency: String,
    expires_at: Option<OffsetDateTime>,
    expected_app_id: Option<String>,
    expected_mch_id: Option<String>,
    expected_payee: Option<String>,
    total_amount: Option<i64>,
}

/// Registers `order`; see [`Registered`].
pub async fn register(pool: &PgPool, order: &NewOrder) -> Result<Registered, sqlx::Error> {
    if let Some(reason) = invalid(order) {
        return Ok(Registered::Invalid(reason));
    }
    let mut tx = pool.begin().await?;
    let created = sqlx::query(
        "INSERT INTO payments (provider, merchant, out_trade_no, registered, expected_amount,
             currency, expires_at, expected_app_id, expected_mch_id, expected_payee)
         VALUES ($1, $2, $3, TRUE, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (provider, merchant, out_trade_no) DO NOTHING",
    )
    .bind(order.provider.as_str())
    .bind(&order.merchant)
    .bind(&order.out_trade_no)
    .bind(order.amount)
    .bind(&order.currency)
    .bind(order.expires_at)
    .bind(&order.app_id)
    .bind(&order.mch_id)
    .bind(&order.payee)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if created {
        tx.commit().await?;
        return Ok(Registered::Created);
    }
    // The row exists: a registration or a notification made it. Lock it so that a
    // notification being applied right now finishes first (or waits for us).
    let existing: Existing = sqlx::query_as(
        "SELECT id, registered, expected_amount, currency, expires_at, expected_app_id,
                expected_mch_id, expected_payee, total_amount
         FROM payments WHERE provider = $1 AND merchant = $2 AND out_trade_no = $3
         FOR UPDATE",
    )
    .bind(order.provider.as_str())
    .bind(&order.merchant)
    .bind(&order.out_trade_no)
    .fetch_one(&mut *tx)
    .await?;
    if existing.registered {
        return Ok(match different_terms(&existing, order) {
            None => Registered::AlreadyRegistered,
            Some(what) => Registered::Conflict(format!("already registered with another {what}")),
        });
    }
    if let Some(total) = existing.total_amount
        && total != order.amount
    {
        return Ok(Registered::Conflict(format!(
            "a notification already recorded amount {total} (registering {})",
            order.amount
        )));
    }
    if existing.currency != order.currency {
        return Ok(Registered::Conflict(format!(
            "a notification already recorded currency {} (registering {})",
            existing.currency, order.currency
        )));
    }
    sqlx::query(
        "UPDATE payments SET registered = TRUE, expected_amount = $2, expires_at = $3,
             expected_app_id = $4, expected_mch_id = $5, expected_payee = $6,
             updated_at = now()
         WHERE id = $1",
    )
    .bind(existing.id)
    .bind(order.amount)
    .bind(order.expires_at)
    .bind(&order.app_id)
    .bind(&order.mch_id)
    .bind(&order.payee)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Registered::Created)
}

/// Why `value` cannot be the name `field` (a merchant, an order or refund number): 1 to
/// 128 characters, not only white space, no control characters (PostgreSQL refuses
/// NUL in text; the others have no business in a name).
pub(crate) fn invalid_name(field: &str, value: &str) -> Option<String> {
    let bad = value.trim().is_empty()
        || value.chars().count() > 128
        || value.chars().any(char::is_control);
    bad.then(|| {
        format!("{field} must be 1 to 128 characters, not only white space, no control characters")
    })
}

fn invalid(order: &NewOrder) -> Option<String> {
    let named = invalid_name;
    if order.amount <= 0 {
        return Some("amount must be positive (fen)".into());
    }
    let currency_ok =
        order.currency.len() == 3 && order.currency.bytes().all(|b| b.is_ascii_uppercase());
    if !currency_ok {
        return Some("currency must be an ISO 4217 code like CNY".into());
    }
    let identities = [
        ("app_id", &order.app_id),
        ("mch_id", &order.mch_id),
        ("payee", &order.payee),
    ];
    named("merchant", &order.merchant)
        .or_else(|| named("out_trade_no", &order.out_trade_no))
        .or_else(|| {
            identities.into_iter().find_map(|(field, value)| {
                value
                    .as_deref()
                    .is_some_and(|v| v.chars().any(char::is_control) || v.chars().count() > 128)
                    .then(|| {
                        format!("{field} must be at most 128 characters, no control characters")
                    })
            })
        })
}

/// The first registration term that differs, by name.
fn different_terms(existing: &Existing, order: &NewOrder) -> Option<&'static str> {
    let same_time = match (existing.expires_at, order.expires_at) {
        // TIMESTAMPTZ keeps microseconds.
        (Some(a), Some(b)) => (a - b).abs() < time::Duration::microseconds(1),
        (a, b) => a == b,
    };
    [
        ("amount", existing.expected_amount == Some(order.amount)),
        ("currency", existing.currency == order.currency),
        ("expires_at", same_time),
        ("app_id", existing.expected_app_id == order.app_id),
        ("mch_id", existing.expected_mch_id == order.mch_id),
        ("payee", existing.expected_payee == order.payee),
    ]
    .into_iter()
    .find_map(|(name, same)| (!same).then_some(name))
}
