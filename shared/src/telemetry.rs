//! Logs and metrics, set up the same way in every service.
//!
//! Logs are structured (`json` by default); every message a stage handles runs inside a span
//! carrying its `request_id` and `trace_id`, so each log line names both. Metrics go to one
//! process-wide Prometheus recorder that `/metrics` renders.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global log subscriber once; later calls (several services in one process, or
/// tests) are no-ops.
pub fn init_logs(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets for the histograms that count things rather than time them.
const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ])
            // Counts, not seconds: messages per handled batch (up to `bus.batch_size`), and the
            // raw messages' segments gathered into one partition message.
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("mcplane_batch_messages".into()),
                    COUNT_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("mcplane_correlator_segments_per_message".into()),
                    COUNT_BUCKETS,
                )
            })
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Fails only when another recorder is installed already; the handle still renders ours.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_are_counted_in_buckets_of_messages_not_seconds() {
        let handle = metrics();
        metrics::histogram!("mcplane_batch_messages", "consumer" => "test").record(3.0);
        metrics::histogram!("mcplane_batch_seconds", "consumer" => "test").record(0.003);
        metrics::histogram!("mcplane_correlator_segments_per_message").record(40.0);
        let text = handle.render();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .to_string()
        };
        assert!(line("mcplane_batch_messages_bucket{consumer=\"test\",le=\"4\"}").ends_with(" 1"));
        assert!(line("mcplane_batch_messages_bucket{consumer=\"test\",le=\"2\"}").ends_with(" 0"));
        assert!(
            line("mcplane_batch_seconds_bucket{consumer=\"test\",le=\"0.005\"}").ends_with(" 1")
        );
        assert!(line("mcplane_correlator_segments_per_message_bucket{le=\"64\"}").ends_with(" 1"));
        assert!(line("mcplane_correlator_segments_per_message_bucket{le=\"32\"}").ends_with(" 0"));
    }
}
