//! Producing readings to the `readings` topic.

use std::time::Duration;

use gridpulse_actors::LogError;
use gridpulse_domain::{MeterId, Reading};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::KafkaConfig;

/// Appends readings to Kafka, keyed by meter id so each meter stays in one partition.
#[derive(Clone)]
pub struct KafkaReadingProducer {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaReadingProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaReadingProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaReadingProducer {
    /// A producer with `acks=all`, idempotence and small lingering for batching.
    pub fn new(config: &KafkaConfig) -> Result<KafkaReadingProducer, String> {
        let mut client = config.client();
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            // Kafka's default (Java) partitioner: the same partition as `MeterId::partition`.
            .set("partitioner", "murmur2")
            .set("message.timeout.ms", "30000");
        for (key, value) in &config.overrides {
            client.set(key, value);
        }
        let producer = client
            .create()
            .map_err(|error| format!("kafka producer: {error}"))?;
        Ok(KafkaReadingProducer {
            producer,
            topic: config.readings_topic.clone(),
        })
    }

    /// Produces a meter's link status (see [`super::link_status`]) to `readings`, keyed
    /// by the meter, and waits for the broker's acknowledgement.
    pub async fn append_link_status(
        &self,
        meter: MeterId,
        online: bool,
        at_ms: i64,
    ) -> Result<(), String> {
        let payload = super::link_status::encode(&meter, online, at_ms);
        let headers = OwnedHeaders::new().insert(Header {
            key: super::link_status::RECORD_HEADER,
            value: Some(super::link_status::LINK_STATUS),
        });
        let record = FutureRecord::to(&self.topic)
            .key(meter.as_str())
            .payload(&payload)
            .headers(headers);
        match self.producer.send(record, Duration::from_secs(10)).await {
            Ok(_) => Ok(()),
            Err((error, _)) => {
                crate::metrics::record_produce_error();
                Err(format!("kafka produce (link status): {error}"))
            }
        }
    }

    /// Produces every reading and waits until the broker acknowledged all of them.
    pub async fn append(&self, readings: &[Reading]) -> Result<(), LogError> {
        let mut deliveries = Vec::with_capacity(readings.len());
        let mut payload = Vec::with_capacity(160);
        for reading in readings {
            payload.clear();
            serde_json::to_writer(&mut payload, reading)
                .map_err(|error| LogError::Backend(error.to_string()))?;
            let mut record = FutureRecord::to(&self.topic)
                .key(reading.meter.as_str())
                .payload(&payload);
            // Enqueue now (librdkafka batches); wait for all acknowledgements after.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((error, returned)) => {
                        if std::time::Instant::now() > deadline {
                            return Err(LogError::Backend(format!("kafka produce queue: {error}")));
                        }
                        record = returned;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    crate::metrics::record_produce_error();
                    return Err(LogError::Backend(format!("kafka produce: {error}")));
                }
                Err(_) => {
                    crate::metrics::record_produce_error();
                    return Err(LogError::Backend(
                        "kafka producer dropped the delivery".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A bridge without meters (`gridpulse mqtt-bridge --kafka-brokers`): its live link
/// changes travel in `readings`, after the meter's readings the bridge produced before
/// (same key, same partition, acknowledged before this is sent).
impl crate::mqtt::LinkSink for KafkaReadingProducer {
    fn link_changed(
        &self,
        meter: MeterId,
        online: bool,
        at_ms: i64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> {
        let producer = self.clone();
        Box::pin(async move { producer.append_link_status(meter, online, at_ms).await })
    }
}
