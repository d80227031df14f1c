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

/// Websocket clients connected now.
pub fn websocket_clients() -> i64 {
    WEBSOCKET_CLIENTS.get()
}

/// A websocket client connected (+1) or left (-1).
pub fn record_websocket_clients(delta: i64) {
    WEBSOCKET_CLIENTS.add(delta);
}

#[allow(clippy::expect_used)]
static REQUESTS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "gridpulse_api_requests_total",
        "HTTP requests by route (as registered), method and status",
        &["route", "method", "status"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static WEBSOCKET_OVERFLOWS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "gridpulse_api_websocket_overflows_total",
        "Websocket clients closed because their queue of events overflowed"
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static REQUEST_SECONDS: LazyLock<prometheus::HistogramVec> = LazyLock::new(|| {
    prometheus::register_histogram_vec!(
        "gridpulse_api_request_duration_seconds",
        "HTTP request latency by route (as registered) and method",
        &["route", "method"],
        vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
        ]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static AUTH_FAILURES: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "gridpulse_api_auth_failures_total",
        "Requests refused by authentication or authorization, by reason",
        &["reason"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static RATE_LIMITED: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "gridpulse_api_rate_limited_total",
        "Requests refused with 429 by the per-token rate limit, by role",
        &["role"]
    )
    .expect("metric registers once")
});

/// One answered request (`route` is the registered pattern, never the raw path:
/// bounded cardinality).
pub fn record_request(route: &str, method: &str, status: u16, elapsed: std::time::Duration) {
    let status = status.to_string();
    REQUESTS
        .with_label_values(&[route, method, status.as_str()])
        .inc();
    REQUEST_SECONDS
        .with_label_values(&[route, method])
        .observe(elapsed.as_secs_f64());
}

/// A request refused for `reason` (an auth error code or `forbidden_role`).
pub fn record_auth_failure(reason: &str) {
    AUTH_FAILURES.with_label_values(&[reason]).inc();
}

/// A request refused by the rate limit.
pub fn record_rate_limited(role: &str) {
    RATE_LIMITED.with_label_values(&[role]).inc();
}

/// A websocket client was closed because it fell too far behind.
pub fn record_websocket_overflow() {
    WEBSOCKET_OVERFLOWS.inc();
}

#[allow(clippy::expect_used)]
static WEBSOCKET_QUEUED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gridpulse_api_websocket_queued_events",
        "Events waiting in websocket connection queues (all connections), at the last scrape"
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static WEBSOCKET_QUEUE_MAX: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gridpulse_api_websocket_queue_depth_max_events",
        "Events waiting in the fullest websocket connection queue, at the last scrape"
    )
    .expect("metric registers once")
});

/// The websocket queues' depths: summed over connections, and the deepest.
pub fn record_websocket_queues(queued: usize, deepest: usize) {
    WEBSOCKET_QUEUED.set(i64::try_from(queued).unwrap_or(i64::MAX));
    WEBSOCKET_QUEUE_MAX.set(i64::try_from(deepest).unwrap_or(i64::MAX));
}

#[allow(clippy::expect_used)]
static AUDIT_ENTRIES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "gridpulse_api_audit_entries_total",
        "Writes recorded in the audit log"
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static AUDIT_FAILURES: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "gridpulse_api_audit_failures_total",
        "Writes not recorded in the audit log, by reason: no_store (--in-memory), store (the append failed)",
        &["reason"]
    )
    .expect("metric registers once")
});

/// A write was recorded in the audit log.
pub fn record_audit_entry() {
    AUDIT_ENTRIES.inc();
}

/// A write could not be recorded in the audit log.
pub fn record_audit_failure(reason: &str) {
    AUDIT_FAILURES.with_label_values(&[reason]).inc();
}

/// Every registered metric in the Prometheus text format.
pub fn render() -> String {
    // Touch our own statics so they appear even before their first event.
    LazyLock::force(&WEBSOCKET_CLIENTS);
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_SECONDS);
    LazyLock::force(&AUTH_FAILURES);
    LazyLock::force(&RATE_LIMITED);
    LazyLock::force(&WEBSOCKET_OVERFLOWS);
    LazyLock::force(&WEBSOCKET_QUEUED);
    LazyLock::force(&WEBSOCKET_QUEUE_MAX);
    LazyLock::force(&AUDIT_ENTRIES);
    LazyLock::force(&AUDIT_FAILURES);
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

#[allow(clippy::expect_used)]
static ROLLUPS_RECOMPUTED: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "gridpulse_stream_hours_recomputed_total",
        "Hour rollups recomputed from stored readings after too-late readings, by outcome: rewritten (revision + 1), unchanged (already exact), empty (no stored reading)",
        &["outcome"]
    )
    .expect("metric registers once")
});

/// Hours recomputed from stored readings.
pub fn record_hours_recomputed(outcome: &str, n: usize) {
    ROLLUPS_RECOMPUTED
        .with_label_values(&[outcome])
        .inc_by(n as u64);
}
