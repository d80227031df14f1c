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
