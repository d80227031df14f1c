//! Prometheus metrics of ingest (`gridpulse_ingest_*`).

use std::sync::LazyLock;

use prometheus::{IntCounterVec, register_int_counter_vec};

#[allow(clippy::expect_used)]
static ACCEPTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gridpulse_ingest_readings_accepted_total",
        "Readings accepted into the log, by source",
        &["source"]
    )
    .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gridpulse_ingest_readings_rejected_total",
        "Readings rejected, by source and reason",
        &["source", "reason"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static REBALANCES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "gridpulse_ingest_kafka_rebalances_total",
        "Consumer-group rebalances that revoked partitions from this process"
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static CONSUMER_LAG: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "gridpulse_ingest_kafka_consumer_lag_records",
        "Records of `readings` not yet consumed, per partition this process consumes",
        &["partition"]
    )
    .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static PRODUCE_ERRORS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "gridpulse_ingest_kafka_produce_errors_total",
        "Readings the broker did not acknowledge"
    )
    .expect("metric registers once")
});

/// The consumer lag of every `readings` partition this process consumes, by partition
/// (empty outside Kafka mode).
pub fn consumer_lags() -> Vec<(i32, i64)> {
    use prometheus::core::Collector;
    let mut lags: Vec<(i32, i64)> = CONSUMER_LAG
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .filter_map(|metric| {
            let partition = metric
                .get_label()
                .iter()
                .find(|label| label.name() == "partition")?
                .value()
                .parse()
                .ok()?;
            Some((partition, metric.get_gauge().get_value() as i64))
        })
        .collect();
    lags.sort_unstable();
    lags
}

/// The consumer lag of one partition.
pub fn record_consumer_lag(partition: i32, lag: i64) {
    CONSUMER_LAG
        .with_label_values(&[&partition.to_string()])
        .set(lag);
}

/// A produce was not acknowledged.
pub fn record_produce_error() {
    PRODUCE_ERRORS.inc();
}

#[allow(clippy::expect_used)]
static PARTITION_PAUSES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "gridpulse_ingest_kafka_partition_pauses_total",
        "Times a readings partition was paused because its partition actor fell behind"
    )
    .expect("metric registers once")
});

/// A partition was paused (its actors fell behind).
pub fn record_partition_pause() {
    PARTITION_PAUSES.inc();
}

/// A rebalance revoked partitions.
pub fn record_rebalance() {
    REBALANCES.inc();
}

/// `n` readings from `source` were appended to the log.
pub fn record_accepted(source: &str, n: u64) {
    if n > 0 {
        ACCEPTED.with_label_values(&[source]).inc_by(n);
    }
}

/// `n` readings from `source` were rejected for `reason`.
pub fn record_rejected(source: &str, reason: &str, n: u64) {
    REJECTED.with_label_values(&[source, reason]).inc_by(n);
}

#[allow(clippy::expect_used)]
static REVOKE_HANDOVERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gridpulse_ingest_kafka_revoke_handovers_total",
        "Revoked partitions by how they were handed over: `checkpointed` (state stored and \
         offset committed before the group moved on) or `timeout` (the new owner replays \
         from the previous checkpoint)",
        &["outcome"]
    )
    .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static COMMITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gridpulse_ingest_kafka_offset_commits_total",
        "Offset commits of the processors' consumer group, by result (`ok`, `error`)",
        &["outcome"]
    )
    .expect("metric registers once")
});

/// A revoked partition was handed over (`checkpointed`) or the wait for it timed out.
pub fn record_revoke_handover(outcome: &str) {
    REVOKE_HANDOVERS.with_label_values(&[outcome]).inc();
}

/// The broker answered an offset commit.
pub fn record_commit(ok: bool) {
    COMMITS
        .with_label_values(&[if ok { "ok" } else { "error" }])
        .inc();
}

#[allow(clippy::expect_used)]
static DEAD_LETTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gridpulse_ingest_dead_letters_total",
        "Payloads kept on the dead-letter path, by source and reason code",
        &["source", "reason"]
    )
    .expect("metric registers once")
});

/// A payload from `source` went to the dead-letter path for `reason` (a short code).
pub fn record_dead_letter(source: &str, reason: &str) {
    DEAD_LETTERS.with_label_values(&[source, reason]).inc();
}

#[allow(clippy::expect_used)]
static MQTT_CONNECTED: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "gridpulse_ingest_mqtt_connected",
        "1 while the MQTT bridge is connected to its broker, else 0"
    )
    .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static MQTT_MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gridpulse_ingest_mqtt_messages_total",
        "MQTT messages the bridge handled, by outcome (`accepted`, `partial`, \
         `dead_letter`, `status`)",
        &["outcome"]
    )
    .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static MQTT_METERS_ONLINE: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "gridpulse_ingest_mqtt_meters_online",
        "Meters the MQTT bridge sees online (last status `online` or a reading since)"
    )
    .expect("metric registers once")
});
#[allow(clippy::expect_used)]
static MQTT_RECONNECTS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "gridpulse_ingest_mqtt_connection_errors_total",
        "Times the MQTT bridge lost (or could not open) its broker connection"
    )
    .expect("metric registers once")
});

/// The bridge connected (`true`) or lost its connection.
pub fn record_mqtt_connected(connected: bool) {
    MQTT_CONNECTED.set(i64::from(connected));
    if !connected {
        MQTT_RECONNECTS.inc();
    }
}

/// `n` MQTT messages ended with `outcome`.
pub fn record_mqtt_messages(outcome: &str, n: u64) {
    if n > 0 {
        MQTT_MESSAGES.with_label_values(&[outcome]).inc_by(n);
    }
}

/// Meters the bridge sees online.
pub fn record_mqtt_meters_online(n: usize) {
    MQTT_METERS_ONLINE.set(n as i64);
}
