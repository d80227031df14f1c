//! Dead letters of the ingest edges (the MQTT bridge) on `readings-dlq`, the shape of
//! the consumer's: the original bytes as the value; `reason`, `code`, `source` and
//! `mqtt_topic` headers.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::KafkaConfig;
use crate::dead_letter::DeadLetter;

/// A producer for the dead-letter topic.
#[derive(Clone)]
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaDeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDeadLetters")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaDeadLetters {
    /// A producer (`acks=all`) for `config.dlq_topic`.
    pub fn new(config: &KafkaConfig) -> Result<KafkaDeadLetters, String> {
        let mut client = config.client();
        client.set("acks", "all").set("message.timeout.ms", "30000");
        for (key, value) in &config.overrides {
            client.set(key, value);
        }
        let producer: FutureProducer = client
            .create()
            .map_err(|error| format!("kafka dead-letter producer: {error}"))?;
        Ok(KafkaDeadLetters {
            producer,
            topic: config.dlq_topic.clone(),
        })
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces every letter and waits for the broker's acknowledgements.
    pub async fn write(&self, letters: &[DeadLetter]) -> Result<(), String> {
        for letter in letters {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "reason",
                    value: Some(letter.reason.as_str()),
                })
                .insert(Header {
                    key: "code",
                    value: Some(letter.code),
                })
                .insert(Header {
                    key: "source",
                    value: Some(letter.source),
                })
                .insert(Header {
                    key: "mqtt_topic",
                    value: Some(letter.topic.as_str()),
                });
            let record = FutureRecord::<(), _>::to(&self.topic)
                .payload(&letter.payload)
                .headers(headers);
            self.producer
                .send(record, Duration::from_secs(10))
                .await
                .map_err(|(error, _)| error.to_string())?;
        }
        Ok(())
    }
}
