//! The processor's side of Kafka: a consumer-group member feeding partition actors.
//!
//! One consumer per process subscribes to `readings`; a dispatcher thread decodes
//! each record with the production parser and hands it to the channel of its partition
//! (the partition actor's [`PartitionReader`]) in batches. A full channel makes the dispatcher wait:
//! backpressure reaches the broker (records stay there) instead of memory growing.
//! Records that fail to decode or validate, or whose key names another meter, go to
//! `readings-dlq` with the original bytes and `reason`, `code`, `source-topic`,
//! `source-partition`, `source-offset` headers, and never stop the partition.
//! Offsets are committed only when a checkpoint says everything before them is durable
//! ([`ReadingSource::checkpointed`]): at-least-once, made exact by idempotent writes and
//! offset-carrying snapshots. At a clean shutdown [`ReadingSource::close`] stops the
//! dispatcher and closes the consumer, which waits for the last commits and leaves the
//! group, so the partitions move to the other members at once instead of after the
//! session timeout.

use std::sync::Arc;
use std::time::Duration;

use gridpulse_actors::log::{LocalFuture, LogError, LogRecord, PartitionReader, ReadingSource};
use gridpulse_actors::{Clock, SystemClock};
use gridpulse_domain::{Limits, ParseError, parse_reading};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use super::KafkaConfig;
use crate::metrics;

/// Batches buffered per partition between the dispatcher and the partition actor.
const CHANNEL_BATCHES: usize = 64;
/// Most records the dispatcher gathers before handing batches over.
const DISPATCH_BATCH: usize = 4096;

/// `readings` as a [`ReadingSource`].
pub struct KafkaSource {
    /// For commits; `None` once closed. Never cloned out of the lock, so after `close`
    /// the dispatcher thread holds the last reference and closes the consumer.
    consumer: Mutex<Option<Arc<BaseConsumer<RebalanceContext>>>>,
    topic: String,
    receivers: Mutex<Vec<Option<mpsc::Receiver<PartitionEvent>>>>,
    /// Tells the dispatcher thread to stop (and so leave the group) when dropped.
    stop: Arc<AtomicBool>,
    /// Resolves once the dispatcher thread has closed the consumer (taken by `close`).
    closed: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Joins the consumer group and starts the dispatcher thread. Must be called on a
    /// tokio runtime (dead letters are produced through it).
    pub async fn start(config: &KafkaConfig, limits: Limits) -> Result<Arc<KafkaSource>, String> {
        let mut client = config.client();
        client
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Short timeouts: a rebalance (join) waits for them.
            .set("session.timeout.ms", "6000")
            .set("max.poll.interval.ms", "6000")
            // Members learn of a rebalance (a member joined or left) at their next
            // heartbeat: every second instead of every 3 s.
            .set("heartbeat.interval.ms", "1000")
            .set("statistics.interval.ms", "1000");
        for (key, value) in &config.overrides {
            client.set(key, value);
        }
        let context = RebalanceContext {
            topic: config.readings_topic.clone(),
            revoked: Mutex::new(Vec::new()),
        };
        let consumer: BaseConsumer<RebalanceContext> = client
            .create_with_context(context)
            .map_err(|error| format!("kafka consumer: {error}"))?;
        let metadata = consumer
            .fetch_metadata(Some(&config.readings_topic), Duration::from_secs(10))
            .map_err(|error| {
                format!(
                    "metadata of {} on {}: {error}",
                    config.readings_topic, config.brokers
                )
            })?;
        let n_partitions = metadata
            .topics()
            .iter()
            .find(|topic| topic.name() == config.readings_topic)
            .map_or(0, |topic| topic.partitions().len());
        if n_partitions == 0 {
            return Err(format!(
                "topic {} has no partitions on {}: run `gridpulse topics create --kafka-brokers {}`",
                config.readings_topic, config.brokers, config.brokers
            ));
        }
        consumer
            .subscribe(&[&config.readings_topic])
            .map_err(|error| format!("subscribing to {}: {error}", config.readings_topic))?;
        let dlq: FutureProducer = config
            .client()
            .create()
            .map_err(|error| format!("kafka DLQ producer: {error}"))?;
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n_partitions)
            .map(|_| mpsc::channel(CHANNEL_BATCHES))
            .unzip();
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let dispatcher = Dispatcher {
            consumer: Arc::clone(&consumer),
            senders,
            dlq,
            dlq_topic: config.dlq_topic.clone(),
            limits,
            runtime: tokio::runtime::Handle::current(),
            stop: Arc::clone(&stop),
        };
        let (closed_tx, closed_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("kafka-dispatch".into())
            .spawn(move || {
                dispatcher.run();
                // The last reference once `close` has run: dropping it closes the
                // consumer (revocation, pending commits, LeaveGroup) on this thread.
                drop(dispatcher);
                let _ = closed_tx.send(());
            })
            .map_err(|error| format!("starting the kafka dispatcher: {error}"))?;
        Ok(Arc::new(KafkaSource {
            consumer: Mutex::new(Some(consumer)),
            topic: config.readings_topic.clone(),
            receivers: Mutex::new(receivers.into_iter().map(Some).collect()),
            stop,
            closed: Mutex::new(Some(closed_rx)),
        }))
    }
}

/// Polls the consumer on its own thread, decodes, and hands per-partition batches over.
struct Dispatcher {
    consumer: Arc<BaseConsumer<RebalanceContext>>,
    senders: Vec<mpsc::Sender<PartitionEvent>>,
    dlq: FutureProducer,
    dlq_topic: String,
    limits: Limits,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
}

impl Dispatcher {
    fn run(&self) {
        let mut pending: Vec<Vec<LogRecord>> = vec![Vec::new(); self.senders.len()];
        let mut n_pending = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            // Block briefly for the first record, then take whatever is already there.
            let timeout = if n_pending == 0 {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            };
            let polled = self.consumer.poll(timeout);
            let now_ms = SystemClock.now_ms();
            // Partitions taken away by a rebalance (the callback ran inside `poll`, before
            // any record of the new assignment): drop their unsent records, tell them.
            let revoked = std::mem::take(&mut *self.consumer.context().revoked.lock());
            for partition in revoked {
                let idx = partition as usize;
                if let (Some(batch), Some(sender)) = (pending.get_mut(idx), self.senders.get(idx)) {
                    n_pending -= batch.len();
                    batch.clear();
                    if sender.blocking_send(PartitionEvent::Revoked).is_err() {
                        return;
                    }
                }
            }
            match polled {
                Some(Ok(message)) => {
                    if let Some(record) = self.decode(&message, now_ms) {
                        let partition = message.partition() as usize;
                        if let Some(batch) = pending.get_mut(partition) {
                            batch.push(record);
                            n_pending += 1;
                        }
                    }
                    if n_pending < DISPATCH_BATCH {
                        continue;
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "kafka consume failed"),
                None => {}
            }
            // Hand over (waiting while a partition's queue is full: backpressure).
            for (sender, batch) in self.senders.iter().zip(pending.iter_mut()) {
                if batch.is_empty() {
                    continue;
                }
                metrics::record_accepted("kafka", batch.len() as u64);
                if sender
                    .blocking_send(PartitionEvent::Records(std::mem::take(batch)))
                    .is_err()
                {
                    return;
                }
            }
            n_pending = 0;
        }
    }

    /// The reading of `message`, or `None` after sending it to the dead-letter topic.
    fn decode(&self, message: &BorrowedMessage<'_>, now_ms: i64) -> Option<LogRecord> {
        let (partition, offset) = (message.partition(), message.offset());
        let payload = message.payload().unwrap_or_default();
        let outcome = match parse_reading(payload, now_ms, &self.limits) {
            Ok(reading) => match message.key() {
                Some(key) if key != reading.meter.as_str().as_bytes() => Err((
                    "meter_mismatch",
                    "record key names a different meter than the payload".to_owned(),
                )),
                _ => Ok(reading),
            },
            Err(ParseError::Malformed(error)) => Err(("malformed_json", error.to_string())),
            Err(ParseError::Invalid(error)) => Err((error.reason.code(), error.to_string())),
        };
        let (code, reason) = match outcome {
            Ok(reading) => {
                return Some(LogRecord {
                    offset: offset as u64,
                    reading,
                });
            }
            Err(refused) => refused,
        };
        metrics::record_rejected("kafka", code, 1);
        let (partition_text, offset_text) = (partition.to_string(), offset.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some(reason.as_str()),
            })
            .insert(Header {
                key: "code",
                value: Some(code),
            })
            .insert(Header {
                key: "source-topic",
                value: Some(message.topic()),
            })
            .insert(Header {
                key: "source-partition",
                value: Some(partition_text.as_str()),
            })
            .insert(Header {
                key: "source-offset",
                value: Some(offset_text.as_str()),
            });
        let mut record = FutureRecord::to(&self.dlq_topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        // Wait for the broker: the record's offset will be committed with its partition.
        if let Err((error, _)) = self
            .runtime
            .block_on(self.dlq.send(record, Duration::from_secs(5)))
        {
            tracing::error!(%error, partition, offset, "could not write a dead letter");
        }
        None
    }
}

impl ReadingSource for KafkaSource {
    fn n_partitions(&self) -> u32 {
        self.receivers.lock().len() as u32
    }

    fn open_partition(
        &self,
        partition: u32,
        _from_offset: Option<u64>,
    ) -> Box<dyn PartitionReader> {
        // The group's committed offset is the resume point (committed at checkpoints).
        let receiver = self
            .receivers
            .lock()
            .get_mut(partition as usize)
            .and_then(Option::take);
        Box::new(KafkaPartitionReader {
            receiver,
            revoked_pending: false,
        })
    }

    fn checkpointed(&self, partition: u32, offset: u64) {
        let mut offsets = TopicPartitionList::new();
        let Ok(offset) = i64::try_from(offset) else {
            return;
        };
        if let Err(error) =
            offsets.add_partition_offset(&self.topic, partition as i32, Offset::Offset(offset))
        {
            tracing::warn!(%error, partition, "bad offset to commit");
            return;
        }
        // The lock is held across the (non-blocking) call so that `close` never leaves
        // a clone of the consumer behind on an actor thread.
        let consumer = self.consumer.lock();
        let Some(consumer) = consumer.as_ref() else {
            tracing::debug!(partition, offset, "consumer closed: offset not committed");
            return;
        };
        // Only the owner commits. The broker takes a commit for any partition from any
        // member (or, before the join, from none), and partition actors checkpoint on a
        // timer whether or not their partition is assigned: a non-owner would move the
        // owner's offset to its own stale one (back: a longer replay; ahead of the
        // owner's snapshots: readings skipped after the owner crashes).
        match consumer.assignment() {
            Ok(assignment)
                if assignment
                    .find_partition(&self.topic, partition as i32)
                    .is_some() => {}
            Ok(_) => {
                tracing::debug!(
                    partition,
                    offset,
                    "partition not assigned here: not committed"
                );
                return;
            }
            Err(error) => {
                tracing::warn!(%error, partition, "no assignment to check; the next checkpoint retries");
                return;
            }
        }
        if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(%error, partition, offset, "offset commit failed; the next checkpoint retries");
        }
    }

    fn close(&self) -> LocalFuture<'_, ()> {
        self.stop.store(true, Ordering::Relaxed);
        // Now only the dispatcher thread holds the consumer; it closes it when it stops.
        drop(self.consumer.lock().take());
        let closed = self.closed.lock().take();
        Box::pin(async move {
            if let Some(closed) = closed {
                let _ = closed.await;
                tracing::info!("kafka consumer closed: left the group");
            }
        })
    }
}

/// What the dispatcher hands a partition.
#[derive(Debug)]
pub enum PartitionEvent {
    /// Records, in offset order.
    Records(Vec<LogRecord>),
    /// The partition was revoked by a rebalance.
    Revoked,
}

/// Records revoked partitions for the dispatcher (librdkafka calls it inside `poll`).
#[derive(Debug)]
pub struct RebalanceContext {
    topic: String,
    revoked: Mutex<Vec<i32>>,
}

impl rdkafka::client::ClientContext for RebalanceContext {
    /// Consumer lag per partition, from librdkafka's statistics (every second).
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (partition, stats) in &topic.partitions {
                // Records on the broker not yet handed to gridpulse: high watermark minus
                // the application's position (librdkafka's own `consumer_lag` needs a
                // committed offset, which only checkpoints write).
                let lag = if stats.hi_offset >= 0 && stats.app_offset >= 0 {
                    stats.hi_offset - stats.app_offset
                } else {
                    stats.consumer_lag
                };
                if *partition >= 0 && stats.desired && lag >= 0 {
                    metrics::record_consumer_lag(*partition, lag);
                }
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for RebalanceContext {
    fn pre_rebalance(
        &self,
        _consumer: &BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        match rebalance {
            rdkafka::consumer::Rebalance::Revoke(partitions) => {
                let revoked: Vec<i32> = partitions
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|element| element.partition())
                    .collect();
                tracing::info!(?revoked, "kafka partitions revoked");
                metrics::record_rebalance();
                self.revoked.lock().extend(revoked);
            }
            rdkafka::consumer::Rebalance::Assign(partitions) => {
                let assigned: Vec<i32> = partitions
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|element| element.partition())
                    .collect();
                tracing::info!(?assigned, "kafka partitions assigned");
            }
            rdkafka::consumer::Rebalance::Error(error) => {
                tracing::warn!(%error, "kafka rebalance error")
            }
        }
    }
}

/// One partition's records, in offset order.
#[derive(Debug)]
pub struct KafkaPartitionReader {
    receiver: Option<mpsc::Receiver<PartitionEvent>>,
    /// A revocation was seen while gathering a batch: report it next.
    revoked_pending: bool,
}

impl PartitionReader for KafkaPartitionReader {
    fn next_batch(&mut self, max: usize) -> LocalFuture<'_, Result<Vec<LogRecord>, LogError>> {
        Box::pin(async move {
            if std::mem::take(&mut self.revoked_pending) {
                return Err(LogError::Revoked);
            }
            let Some(receiver) = self.receiver.as_mut() else {
                return Err(LogError::Closed);
            };
            let mut records = match receiver.recv().await {
                None => return Err(LogError::Closed),
                Some(PartitionEvent::Revoked) => return Err(LogError::Revoked),
                Some(PartitionEvent::Records(records)) => records,
            };
            // Gather what is already queued, stopping before a revocation.
            while records.len() < max {
                match receiver.try_recv() {
                    Ok(PartitionEvent::Records(more)) => records.extend(more),
                    Ok(PartitionEvent::Revoked) => {
                        // Deliver these records now; the revocation must not be lost.
                        self.revoked_pending = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            Ok(records)
        })
    }

    fn commit(&mut self, _next_offset: u64) {
        // Nothing to free: records are consumed from the channel.
    }
}
