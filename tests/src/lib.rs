//! payhook test tooling, shared by the integration tests and the benchmarks.
//!
//! # Layout
//!
//! - [`keys`]: RSA keys generated at test time (never committed), cached per process.
//! - [`signer`]: the provider side — builds notifications signed and encrypted exactly
//!   as Alipay and WeChat Pay do, so that tests exercise the real verification path.

pub mod keys;
pub mod signer;
