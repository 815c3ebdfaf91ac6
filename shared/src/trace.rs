//! W3C Trace Context (`traceparent`) across the hop: the receiver takes the incoming
//! request's `traceparent` (from a tracing edge proxy) or starts a trace, puts its own
//! span's `traceparent` on the envelope and in the AMQP headers; the worker continues
//! it and writes its own span's `traceparent` on the CloudEvent (the CloudEvents
//! distributed-tracing extension). Logs carry the trace id, so one id finds a payment's
//! way from the provider's request to the downstream event.
//!
//! Version `00` only; anything malformed is ignored (a new trace starts), never
//! refused: a provider's notification must not fail for a tracing header.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether spans are exported over OTLP (`crate::telemetry::init_with`).
pub(crate) static OTEL_ACTIVE: AtomicBool = AtomicBool::new(false);

/// Makes `span` this hop's span of the trace `parent` (a `traceparent`; a new trace
/// when none parses) and returns the `traceparent` to hand on. Without OTLP export
/// that is a child with a span id of its own; with it, the exported span's own ids,
/// so the next hop's spans hang under it.
pub fn enter(span: &tracing::Span, parent: Option<&str>) -> TraceParent {
    if !OTEL_ACTIVE.load(Ordering::Relaxed) {
        return TraceParent::child_of(parent);
    }
    let parent = parent.and_then(TraceParent::parse);
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let remote = parent.unwrap_or_else(TraceParent::start);
    let context = opentelemetry::trace::SpanContext::new(
        opentelemetry::trace::TraceId::from_bytes(remote.trace_id),
        opentelemetry::trace::SpanId::from_bytes(remote.span_id),
        opentelemetry::trace::TraceFlags::new(remote.flags),
        true,
        opentelemetry::trace::TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(context));
    let own = span.context().span().span_context().clone();
    if !own.is_valid() {
        return remote.child();
    }
    TraceParent {
        trace_id: own.trace_id().to_bytes(),
        span_id: own.span_id().to_bytes(),
        flags: own.trace_flags().to_u8(),
    }
}

/// A `traceparent`: version 00, trace id, parent (span) id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

impl TraceParent {
    /// A new trace, sampled (`01`).
    pub fn start() -> Self {
        Self {
            trace_id: nonzero(rand::random()),
            span_id: nonzero(rand::random()),
            flags: 0x01,
        }
    }

    /// Parses `00-<32 hex>-<16 hex>-<2 hex>` (lower-case hex; all-zero ids invalid).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let mut parts = text.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        let lower_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower_hex(trace, 32) || !lower_hex(span, 16) || !lower_hex(flags, 2) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The incoming context's child (a new span of the same trace), or a new trace when
    /// there is none or it does not parse.
    pub fn child_of(incoming: Option<&str>) -> Self {
        incoming
            .and_then(Self::parse)
            .map_or_else(Self::start, |parent| parent.child())
    }

    /// A new span of this trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero(rand::random()),
            ..*self
        }
    }

    /// The trace id, 32 lower-case hex digits (what the logs carry).
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            self.flags
        )
    }
}

/// An id with at least one non-zero byte (all zeros is invalid).
fn nonzero<const N: usize>(mut id: [u8; N]) -> [u8; N] {
    if id.iter().all(|&b| b == 0) {
        id[N - 1] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_round_trips_and_a_child_keeps_the_trace() {
        let parent = TraceParent::parse(SPEC).expect("valid");
        assert_eq!(parent.to_string(), SPEC);
        let child = TraceParent::child_of(Some(SPEC));
        assert_eq!(child.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(child.to_string(), SPEC, "a new span id");
        assert!(child.to_string().ends_with("-01"));
    }

    #[test]
    fn anything_malformed_starts_a_new_trace() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
            let fresh = TraceParent::child_of(Some(bad));
            assert_ne!(fresh.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert!(TraceParent::parse(&fresh.to_string()).is_some());
        }
    }
}
