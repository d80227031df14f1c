//! `usage-by-user` on Kafka: meter actors produce closed usage minutes keyed by user
//! id; a second consumer group (`{group}-users`) hosts the user actors, so each user's
//! state lives in exactly one process without any cross-process actor call.
//!
//! [`KafkaUsageSink`] is the producer (`acks=all`, idempotent, murmur2 so the partition
//! is [`UserId::partition`](gridpulse_domain::UserId::partition)); its `flush` resolves
//! when the broker acknowledged everything published before it, which the meter
//! checkpoint awaits before committing `readings` offsets. [`UsageConsumer`] feeds the
//! user partitions; offsets are committed after the user snapshots they cover are
//! stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gridpulse_actors::usage::{FlushFuture, UsageEvent, UsageRecord, UsageSink};
use gridpulse_actors::user_system::CommitFn;
use gridpulse_domain::UsageDelta;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::KafkaConfig;
use super::acked::AckedProducer;
use crate::metrics;

/// Most records handed to the user partitions per round.
const CONSUME_BATCH: usize = 4096;

/// Produces usage deltas to `usage-by-user` (key = user id).
#[derive(Debug)]
pub struct KafkaUsageSink(AckedProducer<UsageDelta>);

impl KafkaUsageSink {
    /// Starts the producer task. Must be called on a tokio runtime.
    pub fn start(config: &KafkaConfig) -> Result<Arc<KafkaUsageSink>, String> {
        let producer = AckedProducer::start(
            config,
            &config.usage_topic,
            5,
            |delta: &UsageDelta, payload: &mut Vec<u8>| {
                serde_json::to_writer(payload, delta).map_err(|error| error.to_string())?;
                Ok(delta.user.as_str().to_owned())
            },
        )?;
        Ok(Arc::new(KafkaUsageSink(producer)))
    }
}

impl UsageSink for KafkaUsageSink {
    fn publish(&self, delta: UsageDelta) {
        self.0.send(delta);
    }

    fn flush(&self) -> FlushFuture {
        self.0.flush()
    }
}

/// The user consumer group: reads `usage-by-user` and feeds the user partitions.
pub struct UsageConsumer {
    /// For commits; `None` once closed. Never cloned out of the lock, so after `close`
    /// the polling thread holds the last reference and closes the consumer (LeaveGroup).
    consumer: Mutex<Option<Arc<BaseConsumer<UsageContext>>>>,
    topic: String,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for UsageConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageConsumer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Drop for UsageConsumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl UsageConsumer {
    /// Joins `{group}-users` and starts the polling thread; answers the consumer and
    /// one receiver per partition of the usage topic (for [`gridpulse_actors::UserSystem`]).
    pub fn start(
        config: &KafkaConfig,
    ) -> Result<(Arc<UsageConsumer>, Vec<mpsc::UnboundedReceiver<UsageEvent>>), String> {
        let mut client = config.client();
        client
            .set("group.id", format!("{}-users", config.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("max.poll.interval.ms", "6000")
            // Short long-polls (see `readings`): minutes reach users promptly, and
            // tansu 0.6 answers them reliably.
            .set("fetch.wait.max.ms", "10");
        for (key, value) in &config.overrides {
            client.set(key, value);
        }
        let context = UsageContext {
            topic: config.usage_topic.clone(),
            revoked: Mutex::new(Vec::new()),
        };
        let consumer: BaseConsumer<UsageContext> = client
            .create_with_context(context)
            .map_err(|error| format!("kafka usage consumer: {error}"))?;
        let metadata = consumer
            .fetch_metadata(Some(&config.usage_topic), Duration::from_secs(10))
            .map_err(|error| format!("metadata of {}: {error}", config.usage_topic))?;
        let n_partitions = metadata
            .topics()
            .iter()
            .find(|topic| topic.name() == config.usage_topic)
            .map_or(0, |topic| topic.partitions().len());
        if n_partitions == 0 {
            return Err(format!(
                "topic {} has no partitions on {}: run `gridpulse topics create --kafka-brokers {}`",
                config.usage_topic, config.brokers, config.brokers
            ));
        }
        consumer
            .subscribe(&[&config.usage_topic])
            .map_err(|error| format!("subscribing to {}: {error}", config.usage_topic))?;
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..n_partitions).map(|_| mpsc::unbounded_channel()).unzip();
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_consumer, thread_stop) = (Arc::clone(&consumer), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("kafka-usage".into())
            .spawn(move || {
                poll_loop(&thread_consumer, &senders, &thread_stop);
                // After `close`, the last reference: dropping it leaves the group.
                drop(thread_consumer);
            })
            .map_err(|error| format!("starting the usage consumer: {error}"))?;
        Ok((
            Arc::new(UsageConsumer {
                consumer: Mutex::new(Some(consumer)),
                topic: config.usage_topic.clone(),
                stop,
            }),
            receivers,
        ))
    }

    /// The commit callback for [`gridpulse_actors::UserSystemConfig::commit`].
    pub fn commit_fn(self: &Arc<Self>) -> CommitFn {
        let this = Arc::clone(self);
        Arc::new(move |partition: u32, offset: u64| this.commit(partition, offset))
    }

    fn commit(&self, partition: u32, offset: u64) {
        let Ok(offset) = i64::try_from(offset) else {
            return;
        };
        let mut offsets = TopicPartitionList::new();
        if offsets
            .add_partition_offset(&self.topic, partition as i32, Offset::Offset(offset))
            .is_err()
        {
            return;
        }
        let consumer = self.consumer.lock();
        let Some(consumer) = consumer.as_ref() else {
            return;
        };
        if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(%error, partition, offset, "usage offset commit failed; the next checkpoint retries");
        }
    }

    /// Clean shutdown after the final user checkpoint: stops polling; the polling thread
    /// then drops the last reference, which closes the consumer (pending commits,
    /// LeaveGroup).
    pub fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.consumer.lock().take();
    }

    /// The close callback for [`gridpulse_actors::UserSystemConfig::close`].
    pub fn close_fn(self: &Arc<Self>) -> Arc<dyn Fn() + Send + Sync> {
        let this = Arc::clone(self);
        Arc::new(move || this.close())
    }
}

fn poll_loop(
    consumer: &BaseConsumer<UsageContext>,
    senders: &[mpsc::UnboundedSender<UsageEvent>],
    stop: &AtomicBool,
) {
    let mut pending: Vec<Vec<UsageRecord>> = vec![Vec::new(); senders.len()];
    let mut n_pending = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let timeout = if n_pending == 0 {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        let polled = consumer.poll(timeout);
        for partition in std::mem::take(&mut *consumer.context().revoked.lock()) {
            let idx = partition as usize;
            if let (Some(batch), Some(sender)) = (pending.get_mut(idx), senders.get(idx)) {
                n_pending -= batch.len();
                batch.clear();
                if sender.send(UsageEvent::Revoked).is_err() {
                    return;
                }
            }
        }
        match polled {
            Some(Ok(message)) => {
                let payload = message.payload().unwrap_or_default();
                match serde_json::from_slice::<UsageDelta>(payload) {
                    Ok(delta) => {
                        if let Some(batch) = pending.get_mut(message.partition() as usize) {
                            batch.push(UsageRecord {
                                offset: u64::try_from(message.offset()).ok(),
                                delta,
                            });
                            n_pending += 1;
                        }
                    }
                    Err(error) => {
                        metrics::record_rejected("usage_topic", "malformed_json", 1);
                        tracing::error!(%error, partition = message.partition(), offset = message.offset(), "skipping an unreadable usage record");
                    }
                }
                if n_pending < CONSUME_BATCH {
                    continue;
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "kafka usage consume failed"),
            None => {}
        }
        for (sender, batch) in senders.iter().zip(pending.iter_mut()) {
            if !batch.is_empty()
                && sender
                    .send(UsageEvent::Records(std::mem::take(batch)))
                    .is_err()
            {
                return;
            }
        }
        n_pending = 0;
    }
}

/// Records revoked partitions of the usage topic.
struct UsageContext {
    topic: String,
    revoked: Mutex<Vec<i32>>,
}

impl ClientContext for UsageContext {}

impl ConsumerContext for UsageContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let revoked: Vec<i32> = partitions
                .elements_for_topic(&self.topic)
                .iter()
                .map(|element| element.partition())
                .collect();
            tracing::info!(?revoked, "usage partitions revoked");
            self.revoked.lock().extend(revoked);
        }
    }
}
