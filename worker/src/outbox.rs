//! Outbox relay (being written).
