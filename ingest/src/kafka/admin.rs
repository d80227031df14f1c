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
        NewTopic::new(&config.user_events_topic, config.partitions, replication()),
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

/// The offsets the processors' group (`config.group_id`) has committed on `readings`,
/// one per partition in partition order (`None`: nothing committed). Blocking: call it
/// off the actor threads. Does not join the group.
pub fn committed_reading_offsets(
    config: &KafkaConfig,
    n_partitions: i32,
) -> Result<Vec<Option<i64>>, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = config
        .client()
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|error| format!("kafka consumer: {error}"))?;
    let mut partitions = rdkafka::TopicPartitionList::new();
    for partition in 0..n_partitions {
        partitions.add_partition(&config.readings_topic, partition);
    }
    let committed = consumer
        .committed_offsets(partitions, std::time::Duration::from_secs(10))
        .map_err(|error| format!("committed offsets of {}: {error}", config.group_id))?;
    Ok((0..n_partitions)
        .map(|partition| {
            match committed
                .find_partition(&config.readings_topic, partition)
                .map(|element| element.offset())
            {
                Some(rdkafka::Offset::Offset(offset)) => Some(offset),
                _ => None,
            }
        })
        .collect())
}
