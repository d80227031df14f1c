//! Kafka settings: brokers, topic names and partition counts, client overrides.

use rdkafka::ClientConfig;

/// How gridpulse talks to Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Readings (key = meter id).
    pub readings_topic: String,
    /// Alert events (key = meter id).
    pub alerts_topic: String,
    /// Usage deltas re-keyed by user (key = user id).
    pub usage_topic: String,
    /// Dead letters of `readings`.
    pub dlq_topic: String,
    /// Per-user events (budget, credit, top-ups, sessions; key = user id), for API
    /// replicas' websocket clients.
    pub user_events_topic: String,
    /// Partitions of the readings and alerts topics.
    pub partitions: i32,
    /// Replication factor when creating topics.
    pub replication: i32,
    /// Consumer group of processors.
    pub group_id: String,
    /// Extra librdkafka settings (`key=value`), applied last.
    pub overrides: Vec<(String, String)>,
    /// Batches of records that may wait for one partition actor; when they are full
    /// the partition is paused (the broker keeps its records) until the actor catches up.
    pub partition_queue_batches: usize,
}

impl KafkaConfig {
    /// Defaults for `brokers`.
    pub fn new(brokers: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            readings_topic: "readings".into(),
            alerts_topic: "alerts".into(),
            usage_topic: "usage-by-user".into(),
            dlq_topic: "readings-dlq".into(),
            user_events_topic: "user-events".into(),
            partitions: 8,
            replication: 1,
            group_id: "gridpulse-processors".into(),
            overrides: Vec::new(),
            partition_queue_batches: 64,
        }
    }

    /// A client configuration with the brokers and overrides.
    pub fn client(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.overrides {
            client.set(key, value);
        }
        client
    }

    /// Parses `key=value` overrides, naming the bad one.
    pub fn parse_overrides(items: &[String]) -> Result<Vec<(String, String)>, String> {
        items
            .iter()
            .map(|item| match item.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    Ok((key.trim().to_owned(), value.trim().to_owned()))
                }
                _ => Err(format!(
                    "`{item}` is not a librdkafka setting of the form key=value"
                )),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_name_the_bad_one() {
        assert_eq!(
            KafkaConfig::parse_overrides(&["linger.ms=5".into(), " acks = all ".into()]),
            Ok(vec![
                ("linger.ms".into(), "5".into()),
                ("acks".into(), "all".into())
            ])
        );
        assert!(
            KafkaConfig::parse_overrides(&["linger.ms".into()])
                .unwrap_err()
                .contains("linger.ms")
        );
        assert!(KafkaConfig::parse_overrides(&["=5".into()]).is_err());
    }
}
