//! The locked payment row, as the apply transaction found it: what `facts` decides
//! from and `rows` and `bulk` write after.

use time::OffsetDateTime;

use super::state::PaymentState;

/// The locked payment row, as the transaction found it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct Payment {
    pub(super) id: i64,
    #[sqlx(try_from = "String")]
    pub(super) state: PaymentState,
    pub(super) registered: bool,
    pub(super) expected_amount: Option<i64>,
    pub(super) currency: String,
    pub(super) expected_app_id: Option<String>,
    pub(super) expected_mch_id: Option<String>,
    pub(super) expected_payee: Option<String>,
    pub(super) total_amount: Option<i64>,
    pub(super) paid_amount: Option<i64>,
    pub(super) refunded_amount: i64,
    pub(super) provider_trade_no: Option<String>,
    pub(super) paid_at: Option<OffsetDateTime>,
    pub(super) closed_at: Option<OffsetDateTime>,
}
