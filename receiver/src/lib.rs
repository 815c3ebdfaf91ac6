//! payhook receiver: the HTTP endpoint behind the providers' `notify_url`.
//!
//! # Layout
//!
//! - [`startup`]: [`Application`] — build (bind, parse keys, start the broker
//!   supervisor) and run until the injected shutdown signal.
//! - [`routes`]: the notify pipeline shared by all providers (edge checks → bounded
//!   body read → verify → publish with confirm → answer), health and metrics.
//! - [`publisher`]: RabbitMQ connection supervision and confirmed publishing.
//! - [`answer`]: success and failure answers in each provider's format.
//! - [`certificates`]: WeChat V3 platform certificates, read from the worker's stream.
//! - [`signing_keys`]: the receiver refuses to hold a signing private key.
//! - [`edge`]: client address behind trusted proxies, per-provider allowlists.
//! - [`metrics`]: the Prometheus registry.
//! - [`tls`]: optional HTTPS with rustls.
//!
//! # The ack contract
//!
//! The provider's success answer is sent only after RabbitMQ confirmed a persistent,
//! mandatory message routed to the durable work queue. Anything else — verification
//! failure, broker away, returned, nacked, or no confirm within the ack deadline —
//! gets the provider's failure answer, so the provider resends.

pub mod answer;
pub mod certificates;
pub mod edge;
pub mod metrics;
pub mod publisher;
pub mod rejected;
pub mod routes;
pub mod signing_keys;
pub mod startup;
pub mod tls;

pub use startup::Application;
