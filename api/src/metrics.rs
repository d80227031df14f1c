//! Prometheus metrics of the API (`gridpulse_api_*`) and the `/metrics` encoder.

use std::sync::LazyLock;

use prometheus::{IntGauge, TextEncoder, register_int_gauge};

#[allow(clippy::expect_used)]
static WEBSOCKET_CLIENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gridpulse_api_websocket_clients",
        "Websocket clients connected"
    )
    .expect("metric registers once")
});

/// A websocket client connected (+1) or left (-1).
pub fn record_websocket_clients(delta: i64) {
    WEBSOCKET_CLIENTS.add(delta);
}

/// Every registered metric in the Prometheus text format.
pub fn render() -> String {
    // Touch our own statics so they appear even before their first event.
    LazyLock::force(&WEBSOCKET_CLIENTS);
    TextEncoder::new()
        .encode_to_string(&prometheus::gather())
        .unwrap_or_else(|error| format!("# metrics encoding failed: {error}\n"))
}

#[allow(clippy::expect_used)]
static ROLLUPS_WRITTEN: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "gridpulse_stream_rollups_written_total",
        "Rollup rows upserted into the store by the in-process rollup job"
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static ROLLUP_EVENTS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "gridpulse_stream_readings_total",
        "Readings the rollup job did not apply, by outcome: late (beyond the allowed lateness), error (refused)",
        &["outcome"]
    )
    .expect("metric registers once")
});

/// Rollup rows were stored.
pub fn record_rollups_written(n: usize) {
    ROLLUPS_WRITTEN.inc_by(n as u64);
}

/// A reading the rollup job counted instead of applying.
pub fn record_rollup_event(outcome: &str) {
    ROLLUP_EVENTS.with_label_values(&[outcome]).inc();
}
