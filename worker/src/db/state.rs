//! The payment state machine: a state is *derived* from facts (paid, refunded amount,
//! total, closed) and never moves backwards.
//!
//! Notifications arrive in any order (docs/design.md invariant 4): a refund before its
//! payment, `TRADE_FINISHED` after a refund, a close after a payment. Rather than a
//! table of allowed edges, which would have to reject or defer out-of-order
//! arrivals, every applied transition adds its facts and the new state is the higher
//! of the current state and the state those facts imply. Applying the same facts in
//! any order therefore ends in the same state, and no step lowers it.

use std::fmt;

use serde::Serialize;

/// The state of a payment, ordered by rank:
/// `PENDING < CLOSED < PAID < PARTIALLY_REFUNDED < REFUNDED`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentState {
    Pending,
    /// Closed unpaid. Ranked below `PAID`: a payment that lands after the close is
    /// still money that moved, so it wins (see [`Facts::derive`]).
    Closed,
    Paid,
    PartiallyRefunded,
    Refunded,
}

impl PaymentState {
    /// The spelling stored in `payments.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Closed => "CLOSED",
            Self::Paid => "PAID",
            Self::PartiallyRefunded => "PARTIALLY_REFUNDED",
            Self::Refunded => "REFUNDED",
        }
    }

    /// The rank in the monotonic order (0 = `PENDING` … 4 = `REFUNDED`).
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// The next state: never below `self`.
    pub fn advance(self, facts: &Facts) -> Self {
        self.max(facts.derive())
    }
}

impl fmt::Display for PaymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for PaymentState {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl std::str::FromStr for PaymentState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "PENDING" => Self::Pending,
            "CLOSED" => Self::Closed,
            "PAID" => Self::Paid,
            "PARTIALLY_REFUNDED" => Self::PartiallyRefunded,
            "REFUNDED" => Self::Refunded,
            other => return Err(format!("unknown payment state {other:?}")),
        })
    }
}

/// What is known about a payment after a transition, all amounts in fen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts {
    /// The buyer paid: a payment notification, or any succeeded refund (a refund
    /// proves the payment, so a refund that overtakes its payment still lands).
    pub paid: bool,
    /// The provider closed the order.
    pub closed: bool,
    /// The order total, when some notification told it.
    pub total_amount: Option<i64>,
    /// Money refunded so far.
    pub refunded_amount: i64,
}

impl Facts {
    /// The state these facts imply on their own.
    pub fn derive(&self) -> PaymentState {
        let total = self.total_amount.filter(|&t| t > 0);
        match total {
            Some(total) if self.refunded_amount >= total => PaymentState::Refunded,
            _ if self.refunded_amount > 0 => PaymentState::PartiallyRefunded,
            _ if self.paid => PaymentState::Paid,
            _ if self.closed => PaymentState::Closed,
            _ => PaymentState::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [PaymentState; 5] = [
        PaymentState::Pending,
        PaymentState::Closed,
        PaymentState::Paid,
        PaymentState::PartiallyRefunded,
        PaymentState::Refunded,
    ];

    #[test]
    fn ranks_follow_the_documented_order() {
        let ranks: Vec<u8> = ALL.iter().map(|s| s.rank()).collect();
        assert_eq!(ranks, [0, 1, 2, 3, 4]);
        for state in ALL {
            assert_eq!(state.as_str().parse::<PaymentState>(), Ok(state));
        }
        assert!("paid".parse::<PaymentState>().is_err());
    }

    #[test]
    fn facts_derive_the_highest_state_they_prove() {
        let paid = Facts {
            paid: true,
            total_amount: Some(100),
            ..Facts::default()
        };
        assert_eq!(Facts::default().derive(), PaymentState::Pending);
        let closed = Facts {
            closed: true,
            ..Facts::default()
        };
        assert_eq!(closed.derive(), PaymentState::Closed);
        assert_eq!(paid.derive(), PaymentState::Paid);
        let partial = Facts {
            refunded_amount: 30,
            ..paid
        };
        assert_eq!(partial.derive(), PaymentState::PartiallyRefunded);
        let full = Facts {
            refunded_amount: 100,
            ..paid
        };
        assert_eq!(full.derive(), PaymentState::Refunded);
        // Without a known total, a refund can only prove "partially".
        let unknown_total = Facts {
            total_amount: None,
            ..full
        };
        assert_eq!(unknown_total.derive(), PaymentState::PartiallyRefunded);
    }

    #[test]
    fn a_payment_after_a_close_wins() {
        let facts = Facts {
            paid: true,
            closed: true,
            total_amount: Some(100),
            refunded_amount: 0,
        };
        assert_eq!(
            PaymentState::Closed.advance(&facts),
            PaymentState::Paid,
            "money moved: a late payment is recorded"
        );
    }

    #[test]
    fn advance_never_moves_backwards() {
        for current in ALL {
            for paid in [false, true] {
                for closed in [false, true] {
                    for refunded_amount in [0, 50, 100] {
                        let facts = Facts {
                            paid,
                            closed,
                            total_amount: Some(100),
                            refunded_amount,
                        };
                        assert!(current.advance(&facts) >= current);
                    }
                }
            }
        }
    }
}
