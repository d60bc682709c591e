//! Logs and metrics. Logs are structured (key=value, or JSON with `--log-format json`);
//! no handler logs a phone number (Art. 21): identities are logged masked
//! ([`contract::mask_identity`]) or as their pseudonymous key.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// The log line format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable key=value lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the tracing subscriber (filter from `RUST_LOG`, default `info` with the
/// storage engine at `warn`).
pub fn init_logs(format: LogFormat) {
    // The storage engine reports every flush at info; operators need its warnings only.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,lsm_tree=warn,fjall=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Installs the Prometheus recorder; latency metrics get histogram buckets.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    // Fine below 100 ms, where the accept and delivery targets are.
    let latency = [
        0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
        0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    let sizes = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)?
        .set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), &sizes)?
        .install_recorder()?;
    Ok(handle)
}
