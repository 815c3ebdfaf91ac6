//! payhook's integration tests against the real services (RabbitMQ, Redis, PostgreSQL,
//! Prometheus, TLS servers), one binary with a module per theme: one link instead of
//! one per file, and `cargo nextest run -p payhook-tests -E 'test(/^admin_cli::/)'`
//! runs one theme. nextest runs every test in a process of its own, which the tests
//! that install process-wide state (a tracing subscriber) rely on.

mod admin_auth;
mod admin_cli;
mod alerts_live;
mod backend_tls;
mod bills_download;
mod bills_reconcile;
mod chaos;
mod demo;
mod deploy_config;
mod deploy_manifests;
mod fuzz_corpus;
mod many_merchants;
mod receiver_ack;
mod receiver_edge;
mod receiver_hostile;
mod reconcile_e2e;
mod retention;
mod sim_bills;
mod sim_cli;
mod sim_delivery;
mod sim_e2e;
mod sim_queries;
mod worker_apply;
mod worker_dedup;
mod worker_e2e;
mod worker_outbox;
mod worker_reconcile;
