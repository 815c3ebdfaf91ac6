//! Refund registration: the merchant tells payhook about a refund it asked the provider
//! for (provider, merchant, out_trade_no, out_refund_no, amount). Until a notification
//! or a query settles it the refund is `REFUND_PROCESSING`; the reconciler queries it
//! if its notification does not come. Registering is idempotent.

use payhook_shared::event::Provider;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::orders::Registered;

/// A refund to register (the admin API's request body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRefund {
    pub provider: Provider,
    pub merchant: String,
    pub out_trade_no: String,
    pub out_refund_no: String,
    /// The refund amount in fen.
    pub amount: i64,
}

/// Registers `refund`: creates the refund (and, if payhook has not heard of the order
/// yet, a pending payment row for it), or marks a refund a notification already
/// recorded as registered. Same terms again: [`Registered::AlreadyRegistered`].
pub async fn register_refund(pool: &PgPool, refund: &NewRefund) -> Result<Registered, sqlx::Error> {
    let named = super::orders::invalid_name;
    let invalid = (refund.amount <= 0)
        .then(|| "amount must be positive (fen)".to_owned())
        .or_else(|| named("merchant", &refund.merchant))
        .or_else(|| named("out_trade_no", &refund.out_trade_no))
        .or_else(|| named("out_refund_no", &refund.out_refund_no));
    if let Some(reason) = invalid {
        return Ok(Registered::Invalid(reason));
    }
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO payments (provider, merchant, out_trade_no) VALUES ($1, $2, $3)
         ON CONFLICT (provider, merchant, out_trade_no) DO NOTHING",
    )
    .bind(refund.provider.as_str())
    .bind(&refund.merchant)
    .bind(&refund.out_trade_no)
    .execute(&mut *tx)
    .await?;
    let payment_id: i64 = sqlx::query_scalar(
        "SELECT id FROM payments WHERE provider = $1 AND merchant = $2 AND out_trade_no = $3
         FOR UPDATE",
    )
    .bind(refund.provider.as_str())
    .bind(&refund.merchant)
    .bind(&refund.out_trade_no)
    .fetch_one(&mut *tx)
    .await?;
    let created = sqlx::query(
        "INSERT INTO refunds (payment_id, provider, merchant, out_refund_no, status,
             registered, expected_amount)
         VALUES ($1, $2, $3, $4, 'REFUND_PROCESSING', TRUE, $5)
         ON CONFLICT (provider, merchant, out_refund_no) DO NOTHING",
    )
    .bind(payment_id)
    .bind(refund.provider.as_str())
    .bind(&refund.merchant)
    .bind(&refund.out_refund_no)
    .bind(refund.amount)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if created {
        tx.commit().await?;
        return Ok(Registered::Created);
    }
    let (existing_payment, registered, expected): (i64, bool, Option<i64>) = sqlx::query_as(
        "SELECT payment_id, registered, expected_amount FROM refunds
         WHERE provider = $1 AND merchant = $2 AND out_refund_no = $3 FOR UPDATE",
    )
    .bind(refund.provider.as_str())
    .bind(&refund.merchant)
    .bind(&refund.out_refund_no)
    .fetch_one(&mut *tx)
    .await?;
    if existing_payment != payment_id {
        return Ok(Registered::Conflict(
            "this out_refund_no belongs to another order".into(),
        ));
    }
    if registered {
        return Ok(if expected == Some(refund.amount) {
            Registered::AlreadyRegistered
        } else {
            Registered::Conflict("already registered with another amount".into())
        });
    }
    sqlx::query(
        "UPDATE refunds SET registered = TRUE, expected_amount = $4, updated_at = now()
         WHERE provider = $1 AND merchant = $2 AND out_refund_no = $3",
    )
    .bind(refund.provider.as_str())
    .bind(&refund.merchant)
    .bind(&refund.out_refund_no)
    .bind(refund.amount)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Registered::Created)
}
