//! payhook worker: exactly-once business updates from at-least-once notifications.
//!
//! # Layout
//!
//! - [`startup`]: [`Worker`] — build (PostgreSQL + migrations, Redis, admin listener)
//!   and run (broker supervision: consumer + outbox relay) until the shutdown signal.
//! - [`consumer`]: consumes the work queue: dedup claim → one transaction → ack.
//! - [`db`]: PostgreSQL — migrations, the one apply path (payment state machine,
//!   transition ledger, refunds, raw notification audit, outbox), order registration.
//! - [`dedup`]: the Redis two-phase claim (fast path; the database is the truth).
//! - [`outbox`]: publishes committed outbox rows to the events exchange as CloudEvents
//!   (the dispatcher right after each commit; the relay sweeps what it left).
//! - [`reconcile`]: queries the providers about pending / doubtful payments and
//!   publishes their verified answers for the same apply path.
//! - [`retry`]: retry tiers and parking; [`parked`]: listing parked messages and
//!   replaying them to the work queue.
//! - [`admin`]: health, readiness, metrics, order registration, history, replay.
//! - [`cli`]: `payhook-admin`, the operator's command line.
//! - [`metrics`]: the Prometheus registry.

pub mod admin;
pub mod auth;
pub mod bills;
pub mod certificates;
pub mod cli;
pub mod consumer;
pub mod db;
pub mod dedup;
pub mod metrics;
pub mod outbox;
pub mod parked;
pub mod reconcile;
pub mod rejected;
pub mod retention;
pub mod retry;
pub mod shared;
pub mod startup;

pub use startup::Worker;
