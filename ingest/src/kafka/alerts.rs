//! Alerts over Kafka: processors publish every alert event to `alerts` (key = meter id),
//! and any number of API replicas consume it into their own hub, so websocket clients
//! can connect to any replica and the processors never talk to clients.

use std::sync::Arc;
use std::time::Duration;

use gridpulse_actors::AlertHub;
use gridpulse_actors::hub::{EventForwarder, HubEvent};
use gridpulse_actors::usage::FlushFuture;
use gridpulse_domain::AlertEvent;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};

use super::KafkaConfig;
use super::acked::AckedProducer;
use crate::metrics;

/// Forwards every alert event of a processor's hub to `alerts` (key = meter id);
/// checkpoints and alert commands wait until the broker acknowledged them
/// ([`AlertHub::flush`]), so no event an offset commit covers is missing from the topic.
#[derive(Debug)]
pub struct KafkaAlertForwarder(AckedProducer<Arc<HubEvent>>);

impl KafkaAlertForwarder {
    /// Starts the producer task. Must be called on a tokio runtime.
    pub fn start(config: &KafkaConfig) -> Result<Arc<KafkaAlertForwarder>, String> {
        let producer = AckedProducer::start(
            config,
            &config.alerts_topic,
            0,
            |event: &Arc<HubEvent>, payload: &mut Vec<u8>| {
                serde_json::to_writer(payload, &event.event).map_err(|error| error.to_string())?;
                Ok(event.event.alert.meter.as_str().to_owned())
            },
        )?;
        Ok(Arc::new(KafkaAlertForwarder(producer)))
    }
}

impl EventForwarder for KafkaAlertForwarder {
    fn forward(&self, event: Arc<HubEvent>) {
        self.0.send(event);
    }

    fn flush(&self) -> FlushFuture {
        self.0.flush()
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
    let group = format!("gridpulse-api-{replica_id}");
    relay_topic(
        &config,
        &group,
        &config.alerts_topic,
        "alerts_topic",
        |event: AlertEvent| {
            hub.publish([gridpulse_actors::meter_state::AlertChange {
                event: event.event,
                alert: event.alert,
                note: event.note,
            }]);
        },
    )
    .await
}

/// Consumes `topic` as the replica's own consumer group `group`, from the oldest
/// retained record, and hands every decodable JSON record to `deliver`; undecodable ones
/// are counted (`metric_source`) and skipped. Runs until the task is dropped; the
/// consumer is then closed off the runtime.
pub(crate) async fn relay_topic<T: serde::de::DeserializeOwned>(
    config: &KafkaConfig,
    group: &str,
    topic: &str,
    metric_source: &'static str,
    deliver: impl Fn(T),
) -> Result<(), String> {
    let consumer: StreamConsumer = config
        .client()
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("session.timeout.ms", "6000")
        .set("max.poll.interval.ms", "6000")
        // Short long-polls, as for `readings`: events reach clients within milliseconds.
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|error| format!("kafka consumer of {topic}: {error}"))?;
    consumer
        .subscribe(&[topic])
        .map_err(|error| format!("subscribing to {topic}: {error}"))?;
    let consumer = CloseOffThread(Some(consumer));
    let Some(consumer) = consumer.0.as_ref() else {
        return Ok(());
    };
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, %topic, "consume failed, retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match serde_json::from_slice::<T>(message.payload().unwrap_or_default()) {
            Ok(event) => deliver(event),
            Err(error) => {
                metrics::record_rejected(metric_source, "undecodable", 1);
                tracing::warn!(%error, %topic, offset = message.offset(), "undecodable record skipped");
            }
        }
    }
}

/// Drops a group consumer on a thread of its own. Dropping one leaves the group, and
/// librdkafka polls for that without end while the broker is unreachable (rdkafka's
/// `Drop` loops until the consumer is closed): on a runtime thread that would hang the
/// shutdown of the whole process (seen in tests: the broker stopped first).
pub(crate) struct CloseOffThread(pub(crate) Option<StreamConsumer>);

impl Drop for CloseOffThread {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            let spawned = std::thread::Builder::new()
                .name("kafka-alerts-close".into())
                .spawn(move || drop(consumer));
            if let Err(error) = spawned {
                tracing::warn!(%error, "no thread to close the alert consumer on; closing it here");
            }
        }
    }
}
