//! Prometheus metrics of the actor system (`gridpulse_actors_*`), one helper per event.
//!
//! Hot-path counters are added per batch, never per reading, and never carry a meter
//! label (cardinality).

use std::sync::LazyLock;

use gridpulse_domain::{AlertEventKind, AlertKind};
use prometheus::{
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, register_int_counter,
    register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
};

#[allow(clippy::expect_used)]
static READINGS_APPLIED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gridpulse_actors_readings_applied_total",
        "Readings routed to meter actors"
    )
    .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static READINGS_STALE: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gridpulse_actors_readings_stale_total",
        "Duplicate or late readings ignored by live meter state"
    )
    .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static METERS_LIVE: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("gridpulse_actors_meters_live", "Meter actors alive")
        .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static MAILBOX_DEPTH: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gridpulse_actors_mailbox_depth_messages",
        "Readings sent to meter actors and not yet processed, per partition",
        &["partition"]
    )
    .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static RESTARTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gridpulse_actors_restarts_total",
        "Meter actors restarted by their supervisor"
    )
    .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static ALERTS_INHIBITED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gridpulse_actors_alerts_inhibited_total",
        "Threshold alert raises skipped because their reading lay in the meter's offline window"
    )
    .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static ALERT_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gridpulse_actors_alert_events_total",
        "Alert lifecycle events by kind and event",
        &["kind", "event"]
    )
    .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static ALERTS_OPEN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gridpulse_actors_alerts_open",
        "Open alerts by kind and state",
        &["kind", "state"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static ALERT_PERSIST_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gridpulse_actors_alert_persist_failures_total",
        "Alert changes that could not be queued for the store"
    )
    .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static CHECKPOINTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gridpulse_actors_checkpoints_total",
        "Partition checkpoints by outcome",
        &["outcome"]
    )
    .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static SNAPSHOT_RESTORES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gridpulse_actors_snapshot_restores_total",
        "Meter actors started from a stored snapshot, by outcome",
        &["outcome"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static PARTITIONS_REVOKED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gridpulse_actors_partitions_revoked_total",
        "Partitions taken away by a consumer-group rebalance"
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static USAGE_DELTAS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gridpulse_actors_usage_deltas_total",
        "Usage deltas (meter minutes) by outcome: sent by meters, applied or skipped as replays by users",
        &["outcome"]
    )
    .expect("metric registers once")
});

/// A meter sent a closed usage minute to its owner.
pub fn record_usage_sent() {
    USAGE_DELTAS.with_label_values(&["sent"]).inc();
}

/// A user applied a usage delta.
pub fn record_usage_applied() {
    USAGE_DELTAS.with_label_values(&["applied"]).inc();
}

/// A user skipped a replayed usage delta.
pub fn record_usage_duplicate() {
    USAGE_DELTAS.with_label_values(&["duplicate"]).inc();
}

/// A partition was revoked (rebalance).
pub fn record_partition_revoked() {
    PARTITIONS_REVOKED.inc();
}

/// An alert change could not be queued for persistence.
pub fn record_alert_persist_failure() {
    ALERT_PERSIST_FAILURES.inc();
}

/// A partition checkpoint finished (`ok`) or failed (`error`).
pub fn record_checkpoint(outcome: &str) {
    CHECKPOINTS.with_label_values(&[outcome]).inc();
}

/// A meter actor looked for its snapshot: `restored`, `none` or `corrupt`.
pub fn record_snapshot_restore(outcome: &str) {
    SNAPSHOT_RESTORES.with_label_values(&[outcome]).inc();
}

/// A batch of readings was routed; `n_stale` of them were duplicates or late.
pub fn record_readings(n_applied: u64, n_stale: u64) {
    READINGS_APPLIED.inc_by(n_applied);
    if n_stale > 0 {
        READINGS_STALE.inc_by(n_stale);
    }
}

/// Counts stale readings found by meter actors.
pub fn record_stale(n_stale: u64) {
    READINGS_STALE.inc_by(n_stale);
}

/// Meter actors were created (positive) or stopped (negative).
pub fn record_meters_live(delta: i64) {
    METERS_LIVE.add(delta);
}

/// Sets the in-flight depth of one partition's meter mailboxes.
pub fn record_mailbox_depth(partition: u32, depth: u64) {
    MAILBOX_DEPTH
        .with_label_values(&[&partition.to_string()])
        .set(depth as i64);
}

/// A meter actor was restarted by its supervisor.
pub fn record_restart() {
    RESTARTS.inc();
}

/// Meter actor restarts so far.
pub fn restarts_total() -> u64 {
    RESTARTS.get()
}

/// Threshold alert raises skipped by offline windows.
pub fn record_alerts_inhibited(n: u64) {
    if n > 0 {
        ALERTS_INHIBITED.inc_by(n);
    }
}

/// An alert event was published; `open_delta` moves the open-alert gauge.
pub fn record_alert_event(
    kind: AlertKind,
    event: AlertEventKind,
    state_before: Option<&'static str>,
    state_after: Option<&'static str>,
) {
    let event_name = event.as_str();
    ALERT_EVENTS
        .with_label_values(&[kind.as_str(), event_name])
        .inc();
    if state_before != state_after {
        if let Some(state) = state_before {
            ALERTS_OPEN.with_label_values(&[kind.as_str(), state]).dec();
        }
        if let Some(state) = state_after {
            ALERTS_OPEN.with_label_values(&[kind.as_str(), state]).inc();
        }
    }
}

static USER_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gridpulse_actors_user_events_total",
        "Per-user events (budget, budget_forecast, credit, top_up, session) published",
        &["type"]
    )
    .expect("metric registers once")
});

static BILLING_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gridpulse_actors_billing_errors_total",
        "Usage minutes a user's tariff could not price (see the log)"
    )
    .expect("metric registers once")
});

/// A user event was published.
pub fn record_user_event(kind: &str) {
    USER_EVENTS.with_label_values(&[kind]).inc();
}

/// A usage minute could not be priced.
pub fn record_billing_error() {
    BILLING_ERRORS.inc();
}
