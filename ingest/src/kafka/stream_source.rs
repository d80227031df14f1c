//! `readings` as a stream-job source: one consumer per partition, assigned at the
//! offset the job resumes from (no consumer group: the job's position is its stored
//! checkpoint, written after the rollups it covers, so nothing needs to be joined or
//! left and a shutdown never waits on a broker).

use std::time::Duration;

use gridpulse_stream_jobs::{PartitionReader, ReadStatus, Source, SourceError, SourceRecord};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::KafkaConfig;

/// How long one read waits for the first record of a batch.
const FIRST_RECORD_WAIT: Duration = Duration::from_millis(20);

/// The partitions of `readings`.
#[derive(Debug)]
pub struct KafkaStreamSource {
    config: KafkaConfig,
    partitions: Vec<u32>,
}

impl KafkaStreamSource {
    /// Looks up the partitions of the readings topic (blocking, bounded by 10 s).
    pub fn new(config: &KafkaConfig) -> Result<KafkaStreamSource, String> {
        let consumer: BaseConsumer = config
            .client()
            .create()
            .map_err(|error| format!("kafka consumer: {error}"))?;
        let metadata = consumer
            .fetch_metadata(Some(&config.readings_topic), Duration::from_secs(10))
            .map_err(|error| format!("metadata of {}: {error}", config.readings_topic))?;
        let n = metadata
            .topics()
            .iter()
            .find(|topic| topic.name() == config.readings_topic && topic.error().is_none())
            .map_or(0, |topic| topic.partitions().len());
        if n == 0 {
            return Err(format!(
                "topic {} has no partitions: run `gridpulse topics create` first",
                config.readings_topic
            ));
        }
        Ok(KafkaStreamSource {
            config: config.clone(),
            partitions: (0..n as u32).collect(),
        })
    }
}

impl Source for KafkaStreamSource {
    fn partitions(&self) -> Vec<u32> {
        self.partitions.clone()
    }

    fn open(&self, partition: u32, offset: u64) -> Result<Box<dyn PartitionReader>, SourceError> {
        let other = |message: String| SourceError::Other { partition, message };
        let consumer: BaseConsumer = self
            .config
            .client()
            // A group id although nothing is committed to it and it never joins (the
            // partition is assigned, not subscribed): without one, librdkafka 2.x never
            // fetched an assigned partition from tansu 0.6 (seen in the tests).
            .set("group.id", format!("{}-rollups", self.config.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "10")
            .create()
            .map_err(|error| other(format!("kafka consumer: {error}")))?;
        let mut assignment = TopicPartitionList::new();
        let start = i64::try_from(offset).map_err(|_| other("offset out of range".into()))?;
        assignment
            .add_partition_offset(
                &self.config.readings_topic,
                partition as i32,
                Offset::Offset(start),
            )
            .map_err(|error| other(error.to_string()))?;
        consumer
            .assign(&assignment)
            .map_err(|error| other(format!("assigning: {error}")))?;
        Ok(Box::new(KafkaPartitionReader {
            consumer: Some(consumer),
            partition,
        }))
    }
}

struct KafkaPartitionReader {
    /// `None` only while dropping.
    consumer: Option<BaseConsumer>,
    partition: u32,
}

impl Drop for KafkaPartitionReader {
    fn drop(&mut self) {
        // rdkafka's `Drop` of a consumer with a group id polls until it is closed, which
        // needs the broker: never on a timely worker (its join would wait with it).
        if let Some(consumer) = self.consumer.take() {
            let spawned = std::thread::Builder::new()
                .name("kafka-rollup-close".into())
                .spawn(move || drop(consumer));
            if let Err(error) = spawned {
                tracing::warn!(%error, "no thread to close a rollup consumer on; closing it here");
            }
        }
    }
}

impl PartitionReader for KafkaPartitionReader {
    fn read(
        &mut self,
        max_records: usize,
        record: &mut dyn FnMut(u64, SourceRecord<'_>),
    ) -> Result<ReadStatus, SourceError> {
        let Some(consumer) = &self.consumer else {
            return Ok(ReadStatus::End);
        };
        let mut n = 0;
        let mut wait = FIRST_RECORD_WAIT;
        while n < max_records {
            match consumer.poll(wait) {
                None => break,
                Some(Err(error)) => {
                    tracing::warn!(partition = self.partition, %error, "kafka read for rollups failed; retrying");
                    break;
                }
                Some(Ok(message)) => {
                    if let Ok(offset) = u64::try_from(message.offset()) {
                        // A link status (or another non-reading record) is no reading for
                        // rollups: an empty line, skipped, its offset passed.
                        let line = match super::link_status::RecordKind::of(message.headers()) {
                            super::link_status::RecordKind::Reading => {
                                message.payload().unwrap_or_default()
                            }
                            _ => b"",
                        };
                        record(offset, SourceRecord::Line(line));
                        n += 1;
                    }
                    // Take what is already fetched without waiting.
                    wait = Duration::ZERO;
                }
            }
        }
        Ok(if n == 0 {
            ReadStatus::Idle
        } else {
            ReadStatus::Lines(n)
        })
    }
}
