//! payhook's test kit, shared by the integration tests, the chaos suite and the
//! benchmarks.
//!
//! - [`bins`]: the workspace executables (simulator, chaos suite) for the tests that
//!   run them.
//! - [`harness`]: starts the receiver as production does, on port 0 with a fresh
//!   broker name prefix per test, and inspects the broker (queues, the events
//!   exchange).
//! - [`worker`]: starts the worker in process, with its own schema and Redis prefix.
//! - [`db`]: a fresh PostgreSQL schema per test, dropped afterwards.
//! - [`proxy`]: a TCP proxy that can cut and restore the path to a backend.
//! - [`pki`]: a test CA, server and client certificates for the private TLS servers.
//! - [`truth`]: payhook's database compared with the simulator's truth.
//! - [`metric_names`]: the metric names the dashboards and alerts rely on.
//!
//! The provider side (signers, keys, the simulator) is the `payhook-sim` crate.

pub mod bins;
pub mod db;
pub mod harness;
pub mod metric_names;
pub mod pki;
pub mod proxy;
pub mod truth;
pub mod worker;
