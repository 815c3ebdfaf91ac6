//! The standard Prometheus process metrics (CPU seconds, resident and virtual memory,
//! open and maximum file descriptors, threads, start time), read on each scrape from
//! the `metrics-process` crate's snapshot and exported by the receiver's and the
//! worker's registries (`payhook_process_…`: the registries' prefix).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Register with `Registry::register_collector`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = metrics_process::collector::collect();
        if let Some(cpu) = m.cpu_seconds_total {
            let counter = ConstCounter::new(cpu);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                m.resident_memory_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                m.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                m.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors (0: unlimited)",
                m.max_fds,
            ),
            ("process_threads", "Number of OS threads", m.threads),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                m.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn the_process_metrics_are_exported_under_the_prefix() {
        let mut registry = Registry::with_prefix("payhook");
        registry.register_collector(Box::new(ProcessCollector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for family in [
            "payhook_process_cpu_seconds_total",
            "payhook_process_resident_memory_bytes",
            "payhook_process_open_fds",
            "payhook_process_start_time_seconds",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(family)),
                "{family} in\n{text}"
            );
        }
    }
}
