//! Metric names, for the tests that check the operations files (`deploy/`): which
//! families payhook exports, and which ones a PromQL expression names. An alert on a
//! metric nobody exports never fires.

use std::collections::BTreeSet;
use std::path::Path;

/// RabbitMQ `rabbitmq_prometheus` metrics (`/metrics/detailed`, the families scraped)
/// the files may use.
pub const RABBITMQ: &[&str] = &[
    "rabbitmq_detailed_queue_messages",
    "rabbitmq_detailed_queue_messages_ready",
    "rabbitmq_detailed_queue_consumers",
];

/// Series Prometheus writes itself for every target (`up`: 1 when the last scrape
/// answered): the presence alerts use it.
pub const PROMETHEUS: &[&str] = &["up"];

/// `payhook_x_total` / `_bucket` / `_count` / `_sum` / `_created` → `payhook_x`.
pub fn family(name: &str) -> &str {
    ["_total", "_bucket", "_count", "_sum", "_created"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

/// The names the receiver and the worker register (`registry.register("name", …)`
/// under the `payhook` prefix), read from their source: a labelled family shows in an
/// exposition only once it has a sample.
pub fn registered() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut names = BTreeSet::new();
    for source in ["receiver/src/metrics.rs", "worker/src/metrics.rs"] {
        let text = std::fs::read_to_string(root.join(source)).expect("metrics source");
        for after in text.split(".register(").skip(1) {
            let name = after.split('"').nth(1).expect("a metric name literal");
            names.insert(format!("payhook_{name}"));
        }
    }
    names
}

/// The metric families of a Prometheus exposition.
pub fn families_of(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|line| {
            let name = match line.strip_prefix("# TYPE ") {
                Some(rest) => rest.split_whitespace().next(),
                None if !line.starts_with('#') => line.split(['{', ' ']).next(),
                None => None,
            }?;
            Some(family(name).to_owned()).filter(|n| !n.is_empty())
        })
        .collect()
}

/// Every `payhook_…` / `rabbitmq_…` identifier of a PromQL expression, and
/// Prometheus' own [`PROMETHEUS`] series (label values in quotes are not names).
pub fn metrics_of(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_string = false;
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            in_string = !in_string;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("payhook_")
            || word.starts_with("rabbitmq_")
            || (PROMETHEUS.contains(&word.as_str()) && c == '{')
        {
            out.push(std::mem::take(&mut word));
        }
        word.clear();
    }
    out
}
