//! Alerts over Kafka: processors publish every alert event to `alerts` (key = meter id),
//! and any number of API replicas consume it into their own hub, so websocket clients
//! can connect to any replica and the processors never talk to clients.

use std::sync::Arc;
use std::time::Duration;

use gridpulse_actors::AlertHub;
use gridpulse_domain::AlertEvent;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::broadcast::error::RecvError;

use super::KafkaConfig;
use crate::metrics;

/// Produces every event of `hub` to the alerts topic until the hub closes.
pub async fn forward_alerts(hub: Arc<AlertHub>, config: KafkaConfig) -> Result<(), String> {
    let producer: FutureProducer = config
        .client()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2")
        .create()
        .map_err(|error| format!("kafka alert producer: {error}"))?;
    let (_, _, mut events) = hub.subscribe();
    drop(hub);
    loop {
        match events.recv().await {
            Ok(event) => {
                let Ok(payload) = serde_json::to_vec(event.as_ref()) else {
                    continue;
                };
                let record = FutureRecord::to(&config.alerts_topic)
                    .key(event.alert.meter.as_str())
                    .payload(&payload);
                if let Err((error, _)) = producer.send(record, Duration::from_secs(5)).await {
                    metrics::record_rejected("alerts_topic", "produce_failed", 1);
                    tracing::error!(%error, alert = %event.alert.id, "alert event not produced");
                }
            }
            Err(RecvError::Lagged(n_missed)) => {
                metrics::record_rejected("alerts_topic", "lagged", n_missed);
                tracing::error!(n_missed, "alert forwarder fell behind the hub");
            }
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}

/// Consumes the alerts topic into `hub` (which numbers the events for its own
/// websocket clients). Each replica is its own consumer group and reads every
/// partition from the oldest event the topic retains, so no event is missed while it
/// joins (its hub then holds the recent history for queries).
pub async fn consume_alerts(
    hub: Arc<AlertHub>,
    config: KafkaConfig,
    replica_id: String,
) -> Result<(), String> {
    let consumer: StreamConsumer = config
        .client()
        .set("group.id", format!("gridpulse-api-{replica_id}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("session.timeout.ms", "6000")
        .set("max.poll.interval.ms", "6000")
        .create()
        .map_err(|error| format!("kafka alert consumer: {error}"))?;
    consumer
        .subscribe(&[&config.alerts_topic])
        .map_err(|error| format!("subscribing to {}: {error}", config.alerts_topic))?;
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "alert consume failed, retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match serde_json::from_slice::<AlertEvent>(message.payload().unwrap_or_default()) {
            Ok(event) => hub.publish([(event.event, event.alert)]),
            Err(error) => {
                metrics::record_rejected("alerts_topic", "undecodable", 1);
                tracing::warn!(%error, offset = message.offset(), "undecodable alert event skipped");
            }
        }
    }
}
