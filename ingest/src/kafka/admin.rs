//! `gridpulse topics create`: the topics gridpulse needs, created idempotently.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaConfig;

/// One topic's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    /// Created now.
    Created(String),
    /// Was already there.
    Exists(String),
}

/// Creates `readings`, `alerts`, `usage-by-user` and `readings-dlq`; existing topics are
/// left as they are.
pub async fn create_topics(config: &KafkaConfig) -> Result<Vec<TopicOutcome>, String> {
    let admin: AdminClient<DefaultClientContext> = config
        .client()
        .create()
        .map_err(|error| format!("kafka admin client: {error}"))?;
    let replication = || TopicReplication::Fixed(config.replication);
    let topics = [
        NewTopic::new(&config.readings_topic, config.partitions, replication()),
        NewTopic::new(&config.alerts_topic, config.partitions, replication()),
        NewTopic::new(&config.usage_topic, config.partitions, replication()),
        NewTopic::new(&config.dlq_topic, 1, replication()),
    ];
    let results = admin
        .create_topics(topics.iter(), &AdminOptions::new())
        .await
        .map_err(|error| format!("creating topics on {}: {error}", config.brokers))?;
    results
        .into_iter()
        .map(|result| match result {
            Ok(name) => Ok(TopicOutcome::Created(name)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => Ok(TopicOutcome::Exists(name)),
            Err((name, code)) => Err(format!("creating topic {name}: {code}")),
        })
        .collect()
}
