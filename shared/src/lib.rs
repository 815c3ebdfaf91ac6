//! payhook shared library: everything the receiver and the worker agree on.
//!
//! # Layout
//!
//! - [`alipay`], [`wechat_v2`], [`wechat_v3`]: one module per provider protocol.
//!   Pure functions over raw bytes, headers and an injected [`clock::Clock`]; no web
//!   framework, no I/O. Each turns an untrusted request into a
//!   [`event::VerifiedNotification`] or a [`error::VerifyError`] with a reason.
//! - [`event`]: the normalized event and the internal envelope published on
//!   `payhook.work` (versioned JSON, money in minor units, raw notification kept).
//! - [`crypto`]: the few primitives the providers share (RSA PKCS#1 v1.5 verify,
//!   key parsing, MD5 hex, constant-time comparison).
//! - [`money`]: exact decimal-yuan parsing into fen.
//! - [`query`]: the reconciler's signed query clients (Alipay gateway, WeChat V3).
//! - [`config`]: the multi-merchant settings tree (embedded defaults → TOML → env).
//! - [`topology`]: RabbitMQ names and idempotent declaration.
//! - [`telemetry`]: the one tracing subscriber factory.

pub mod alipay;
pub mod amqp;
pub mod bills;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod diagnose;
pub mod error;
pub mod event;
pub mod exit;
pub mod inventory;
pub mod merchants;
pub mod money;
pub mod process;
pub mod query;
pub mod redact;
pub mod rejected;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod trace;
pub mod wechat_v2;
pub mod wechat_v3;
