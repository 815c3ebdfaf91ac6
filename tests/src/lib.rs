//! payhook test tooling, shared by the integration tests and the benchmarks.
//!
//! # Layout
//!
//! - [`keys`]: RSA keys generated at test time (never committed), cached per process.
//! - [`signer`]: the provider side — builds notifications signed and encrypted exactly
//!   as Alipay and WeChat Pay do, so that tests exercise the real verification path.
//! - [`harness`]: starts the receiver as production does, on port 0 with a fresh
//!   broker name prefix per test, and inspects the broker.
//! - [`proxy`]: a TCP proxy that can cut and restore the path to the broker.
//! - [`bench`]: load-generation pieces shared by the benchmark binaries (HTTP client,
//!   open/closed loops, latency statistics, drain consumer, CPU readings).
//! - [`http1`]: the benchmarks' lean HTTP/1.1 keep-alive client (pre-serialised
//!   requests on plain TCP, minimal answer parser).
//! - [`sim`]: the provider simulator (order book, scheduled delivery with faults,
//!   signed query APIs), in process for tests and as the `payhook-sim` binary.
//! - [`truth`]: payhook's database compared with the simulator's truth.
//! - [`pki`]: a test CA, server and client certificates for the private TLS servers.
//! - [`chaos`]: the chaos suite (faults injected under load, loss accounting), run by
//!   the `payhook-chaos` binary and `tests/tests/it/chaos.rs`.

pub mod bench;
pub mod chaos;
pub mod db;
pub mod harness;
pub mod http1;
pub mod keys;
pub mod metric_names;
pub mod pki;
pub mod proxy;
pub mod signer;
pub mod sim;
pub mod truth;
pub mod worker;
