//! payhook worker: exactly-once business updates from at-least-once notifications.
//!
//! # Layout
//!
//! - [`db`]: PostgreSQL — migrations, the one apply path (payment state machine,
//!   transition ledger, refunds, raw notification audit, outbox), order registration.
//! - [`dedup`]: the Redis two-phase claim (fast path; the database is the truth).
//! - [`outbox`]: relays committed outbox rows to the events exchange as CloudEvents.
//! - [`consumer`]: consumes the work queue, retries through the tiers, parks.

pub mod db;
pub mod dedup;
pub mod outbox;
