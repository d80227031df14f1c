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
//! offset-carrying snapshots. A revocation is a hand-over: the rebalance callback tells
//! each revoked partition and waits (bounded) until it has checkpointed — snapshots
//! stored, offset committed while this member still owns the partition — and dropped its
//! meters, so the new owner restores fresh snapshots and replays almost nothing. At a clean shutdown [`ReadingSource::close`] stops the
//! dispatcher and closes the consumer, which waits for the last commits and leaves the
//! group, so the partitions move to the other members at once instead of after the
//! session timeout.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use gridpulse_actors::log::{
    LinkRecord, LocalFuture, LogError, LogRecord, PartitionReader, ReadingSource,
};
use gridpulse_actors::{Clock, SystemClock};
use gridpulse_domain::{Limits, ParseError, parse_reading};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use super::KafkaConfig;
use super::link_status::{self, RecordKind};
use crate::metrics;

/// Most records the dispatcher gathers before handing batches over.
const DISPATCH_BATCH: usize = 4096;

/// How long a rebalance waits for revoked partitions to checkpoint (well inside
/// `max.poll.interval.ms`, which the wait counts against). Past it the group moves on
/// and the new owner replays from the previous checkpoint: slower, never wrong.
const REVOKE_HANDOVER_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a clean shutdown waits for the consumer to leave its group.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

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
    decoder: Arc<Decoder>,
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
            .set("statistics.interval.ms", "1000")
            // Prefetch deep enough that the local queue never runs dry between fetches
            // (with librdkafka's default of 100,000 records per partition it refilled in
            // bursts, ~1 s apart: 183k instead of ~450k readings/s in the benchmark),
            // bounded in memory by `queued.max.messages.kbytes` (64 MiB).
            .set("queued.min.messages", "1000000")
            .set("queued.max.messages.kbytes", "65536")
            // Brokers may hold a fetch until this expires when little data is there:
            // short, so a reading reaches its actor within milliseconds.
            .set("fetch.wait.max.ms", "10");
        for (key, value) in &config.overrides {
            client.set(key, value);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let context = RebalanceContext {
            topic: config.readings_topic.clone(),
            revoked: Mutex::new(Vec::new()),
            senders: OnceLock::new(),
            stop: Arc::clone(&stop),
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
            .map(|_| mpsc::channel(config.partition_queue_batches.max(1)))
            .unzip();
        let _ = consumer.context().senders.set(senders.clone());
        let consumer = Arc::new(consumer);
        let dispatcher = Dispatcher {
            consumer: Arc::clone(&consumer),
            topic: config.readings_topic.clone(),
            senders,
            stop: Arc::clone(&stop),
        };
        let decoder = Arc::new(Decoder {
            limits,
            topic: config.readings_topic.clone(),
            dlq,
            dlq_topic: config.dlq_topic.clone(),
        });
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
            decoder,
        }))
    }
}

/// Polls the consumer on its own thread and hands per-partition batches of raw records
/// over; decoding happens on the partitions' own threads, in parallel.
struct Dispatcher {
    consumer: Arc<BaseConsumer<RebalanceContext>>,
    topic: String,
    senders: Vec<mpsc::Sender<PartitionEvent>>,
    stop: Arc<AtomicBool>,
}

impl Dispatcher {
    fn run(&self) {
        let n_partitions = self.senders.len();
        let mut pending: Vec<RawBatch> = (0..n_partitions).map(|_| RawBatch::default()).collect();
        let mut paused = vec![false; n_partitions];
        // Records waiting for partitions that are not paused.
        let mut n_ready = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            // Take whatever is already there while records are ready; otherwise block
            // briefly for the next (short while partitions are paused: they are retried).
            let timeout = if n_ready > 0 {
                Duration::ZERO
            } else if paused.contains(&true) {
                Duration::from_millis(5)
            } else {
                Duration::from_millis(100)
            };
            let polled = self.consumer.poll(timeout);
            // Partitions taken away by a rebalance (the callback ran inside `poll`, before
            // any record of the new assignment, and told them): drop their unsent records
            // (after what they checkpointed: the new owner reads them), and tell those the
            // callback could not reach in time.
            let revoked = std::mem::take(&mut *self.consumer.context().revoked.lock());
            for (partition, told) in revoked {
                let idx = partition as usize;
                if let (Some(batch), Some(sender)) = (pending.get_mut(idx), self.senders.get(idx)) {
                    if !paused[idx] {
                        n_ready -= batch.len();
                    }
                    batch.clear();
                    // A pause ends with the assignment.
                    paused[idx] = false;
                    if !told && sender.blocking_send(PartitionEvent::Revoked(None)).is_err() {
                        return;
                    }
                }
            }
            match polled {
                Some(Ok(message)) => {
                    let idx = message.partition() as usize;
                    if let Some(batch) = pending.get_mut(idx) {
                        batch.push(
                            message.offset(),
                            message.key(),
                            message.payload().unwrap_or_default(),
                            RecordKind::of(message.headers()),
                        );
                        if !paused[idx] {
                            n_ready += 1;
                        }
                    }
                    if n_ready < DISPATCH_BATCH {
                        continue;
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "kafka consume failed"),
                None => {}
            }
            // Hand over. A partition whose actor is behind (its queue is full) is paused:
            // the broker keeps its records, the other partitions go on, and it resumes as
            // soon as its queue has room again.
            for (idx, (sender, batch)) in self.senders.iter().zip(pending.iter_mut()).enumerate() {
                if batch.is_empty() {
                    continue;
                }
                match sender.try_reserve() {
                    Ok(permit) => {
                        // The next batch of this partition starts at the size of this one.
                        let full = std::mem::replace(batch, RawBatch::with_capacity_of(batch));
                        permit.send(PartitionEvent::Records(full));
                        if paused[idx] {
                            paused[idx] = false;
                            self.set_paused(idx, false);
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(())) => {
                        if !paused[idx] {
                            paused[idx] = true;
                            self.set_paused(idx, true);
                            metrics::record_partition_pause();
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(())) => return,
                }
            }
            n_ready = 0;
        }
    }

    /// Pauses or resumes fetching one partition.
    fn set_paused(&self, partition: usize, pause: bool) {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, partition as i32);
        let result = if pause {
            self.consumer.pause(&list)
        } else {
            self.consumer.resume(&list)
        };
        match result {
            Ok(()) => tracing::debug!(partition, pause, "partition fetching paused/resumed"),
            Err(error) => {
                tracing::warn!(%error, partition, pause, "could not pause/resume a partition")
            }
        }
    }
}

/// Raw records of one partition copied out of librdkafka into one buffer: one
/// allocation per batch instead of one per record.
#[derive(Debug, Default)]
pub struct RawBatch {
    bytes: Vec<u8>,
    entries: Vec<RawEntry>,
}

#[derive(Debug, Clone, Copy)]
struct RawEntry {
    offset: i64,
    key: Option<(usize, usize)>,
    payload: (usize, usize),
    kind: RecordKind,
}

impl RawBatch {
    fn push(&mut self, offset: i64, key: Option<&[u8]>, payload: &[u8], kind: RecordKind) {
        let key = key.map(|key| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(key);
            (start, self.bytes.len())
        });
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.entries.push(RawEntry {
            offset,
            key,
            payload: (start, self.bytes.len()),
            kind,
        });
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn with_capacity_of(other: &RawBatch) -> RawBatch {
        RawBatch {
            bytes: Vec::with_capacity(other.bytes.len()),
            entries: Vec::with_capacity(other.entries.len()),
        }
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }
}

/// Decodes raw records on a partition's thread; sends refused ones to the DLQ.
struct Decoder {
    limits: Limits,
    topic: String,
    dlq: FutureProducer,
    dlq_topic: String,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("dlq_topic", &self.dlq_topic)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// The readings of `batches` in order, and their link status records into `links`
    /// (one a later live reading of its meter supersedes is dropped: applied after the
    /// batch, it would overtake that reading); refused records go to the dead-letter
    /// topic (awaited: their offsets are committed with the partition's).
    async fn decode(
        &self,
        partition: u32,
        batches: Vec<RawBatch>,
        links: &mut Vec<LinkRecord>,
    ) -> Vec<LogRecord> {
        let now_ms = SystemClock.now_ms();
        let mut records = Vec::with_capacity(batches.iter().map(RawBatch::len).sum());
        for batch in &batches {
            for entry in &batch.entries {
                let payload = &batch.bytes[entry.payload.0..entry.payload.1];
                let key = entry.key.map(|(start, end)| &batch.bytes[start..end]);
                match entry.kind {
                    RecordKind::Reading => {}
                    RecordKind::LinkStatus => {
                        match link_status::decode(key, payload) {
                            Ok((meter, online, at_ms)) => links.push(LinkRecord {
                                offset: entry.offset as u64,
                                meter,
                                online,
                                at_ms,
                            }),
                            Err((code, reason)) => {
                                self.dead_letter(
                                    partition,
                                    entry.offset,
                                    key,
                                    payload,
                                    code,
                                    &reason,
                                )
                                .await;
                            }
                        }
                        continue;
                    }
                    RecordKind::Unknown => {
                        let reason = format!(
                            "unknown `{}` record (this version knows `{}`)",
                            link_status::RECORD_HEADER,
                            link_status::LINK_STATUS
                        );
                        self.dead_letter(
                            partition,
                            entry.offset,
                            key,
                            payload,
                            "unknown_record",
                            &reason,
                        )
                        .await;
                        continue;
                    }
                }
                let outcome = match parse_reading(payload, now_ms, &self.limits) {
                    Ok(reading) => match key {
                        Some(key) if key != reading.meter.as_str().as_bytes() => Err((
                            "meter_mismatch",
                            "record key names a different meter than the payload".to_owned(),
                        )),
                        _ => Ok(reading),
                    },
                    Err(ParseError::Malformed(error)) => Err(("malformed_json", error.to_string())),
                    Err(ParseError::Invalid(error)) => {
                        Err((error.reason.code(), error.to_string()))
                    }
                };
                match outcome {
                    Ok(reading) => {
                        if !links.is_empty() && !reading.backfill {
                            links.retain(|link| link.meter != reading.meter);
                        }
                        records.push(LogRecord {
                            offset: entry.offset as u64,
                            reading,
                        });
                    }
                    Err((code, reason)) => {
                        self.dead_letter(partition, entry.offset, key, payload, code, &reason)
                            .await;
                    }
                }
            }
        }
        metrics::record_accepted("kafka", records.len() as u64);
        records
    }

    async fn dead_letter(
        &self,
        partition: u32,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
        code: &str,
        reason: &str,
    ) {
        metrics::record_rejected("kafka", code, 1);
        let (partition_text, offset_text) = (partition.to_string(), offset.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "code",
                value: Some(code),
            })
            .insert(Header {
                key: "source-topic",
                value: Some(self.topic.as_str()),
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
        if let Some(key) = key {
            record = record.key(key);
        }
        // Wait for the broker: the record's offset will be committed with its partition.
        if let Err((error, _)) = self.dlq.send(record, Duration::from_secs(5)).await {
            tracing::error!(%error, partition, offset, "could not write a dead letter");
        }
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
            partition,
            receiver,
            revoked_pending: false,
            release_ack: None,
            decoder: Arc::clone(&self.decoder),
            links: Vec::new(),
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
            // Leaving the group needs the broker; librdkafka waits for it without end
            // (the thread keeps trying), the shutdown does not: the group times this
            // member out after `session.timeout.ms` instead.
            if let Some(closed) = closed {
                match tokio::time::timeout(CLOSE_TIMEOUT, closed).await {
                    Ok(_) => tracing::info!("kafka consumer closed: left the group"),
                    Err(_) => tracing::warn!(
                        "kafka consumer could not leave its group within {} s (broker unreachable?); going on",
                        CLOSE_TIMEOUT.as_secs()
                    ),
                }
            }
        })
    }
}

/// What the dispatcher hands a partition.
#[derive(Debug)]
pub enum PartitionEvent {
    /// Raw records, in offset order.
    Records(RawBatch),
    /// The partition was revoked by a rebalance; the rebalance waits for the partition
    /// number on the sender (if any) until the partition has checkpointed and let go.
    Revoked(Option<std::sync::mpsc::SyncSender<u32>>),
}

/// Hands revoked partitions over (librdkafka calls it inside `poll`) and keeps the
/// consumer-lag and commit metrics.
#[derive(Debug)]
pub struct RebalanceContext {
    topic: String,
    /// Revoked partitions for the dispatcher, with whether they were told.
    revoked: Mutex<Vec<(i32, bool)>>,
    /// The partitions' queues (set once, right after the consumer is created).
    senders: OnceLock<Vec<mpsc::Sender<PartitionEvent>>>,
    /// Closing: revocations are not waited for (the final checkpoint has run).
    stop: Arc<AtomicBool>,
}

impl RebalanceContext {
    /// Tells every revoked partition and waits (at most [`REVOKE_HANDOVER_TIMEOUT`])
    /// until each has checkpointed and dropped its meters; returns which were told.
    fn hand_over(&self, partitions: &[i32]) -> Vec<(i32, bool)> {
        let Some(senders) = self.senders.get() else {
            return partitions
                .iter()
                .map(|&partition| (partition, false))
                .collect();
        };
        let wait = !self.stop.load(Ordering::Relaxed);
        let deadline = Instant::now() + REVOKE_HANDOVER_TIMEOUT;
        let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(partitions.len());
        let mut told = Vec::with_capacity(partitions.len());
        let mut n_waiting = 0usize;
        for &partition in partitions {
            let Some(sender) = usize::try_from(partition)
                .ok()
                .and_then(|idx| senders.get(idx))
            else {
                continue;
            };
            let mut event = PartitionEvent::Revoked(wait.then(|| ack_tx.clone()));
            // The queue drains as the partition works through the records before it.
            let delivered = loop {
                match sender.try_send(event) {
                    Ok(()) => break true,
                    Err(mpsc::error::TrySendError::Full(back)) if Instant::now() < deadline => {
                        event = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => break false,
                }
            };
            n_waiting += usize::from(delivered && wait);
            told.push((partition, delivered));
        }
        drop(ack_tx);
        let mut n_handed_over = 0usize;
        while n_handed_over < n_waiting {
            match ack_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(partition) => {
                    n_handed_over += 1;
                    metrics::record_revoke_handover("checkpointed");
                    tracing::debug!(partition, "revoked partition checkpointed and released");
                }
                // Timed out, or the partitions are gone (shutting down).
                Err(_) => break,
            }
        }
        for _ in n_handed_over..n_waiting {
            metrics::record_revoke_handover("timeout");
        }
        if n_handed_over < n_waiting {
            tracing::warn!(
                n_waiting,
                n_handed_over,
                "revoked partitions did not checkpoint in time: their new owner replays more"
            );
        }
        told
    }
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
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => metrics::record_commit(true),
            // Nothing to commit is not a failure (librdkafka reports it as an error).
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(error) => {
                metrics::record_commit(false);
                tracing::warn!(%error, "offset commit failed; the next checkpoint retries");
            }
        }
    }

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
                let told = self.hand_over(&revoked);
                self.revoked.lock().extend(told);
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

/// One partition's records, in offset order, decoded on the partition's thread.
#[derive(Debug)]
pub struct KafkaPartitionReader {
    partition: u32,
    decoder: Arc<Decoder>,
    receiver: Option<mpsc::Receiver<PartitionEvent>>,
    /// A revocation was seen while gathering a batch: report it next.
    revoked_pending: bool,
    /// The rebalance waiting for this partition to let go (answered by `released`).
    release_ack: Option<std::sync::mpsc::SyncSender<u32>>,
    /// Link status records of the last batch (see [`PartitionReader::take_links`]).
    links: Vec<LinkRecord>,
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
            let first = match receiver.recv().await {
                None => return Err(LogError::Closed),
                Some(PartitionEvent::Revoked(ack)) => {
                    self.release_ack = ack;
                    return Err(LogError::Revoked);
                }
                Some(PartitionEvent::Records(batch)) => batch,
            };
            let mut n_records = first.len();
            let mut batches = vec![first];
            // Gather what is already queued, stopping before a revocation.
            while n_records < max {
                match receiver.try_recv() {
                    Ok(PartitionEvent::Records(more)) => {
                        n_records += more.len();
                        batches.push(more);
                    }
                    Ok(PartitionEvent::Revoked(ack)) => {
                        // Deliver these records now; the revocation must not be lost.
                        self.revoked_pending = true;
                        self.release_ack = ack;
                        break;
                    }
                    Err(_) => break,
                }
            }
            Ok(self
                .decoder
                .decode(self.partition, batches, &mut self.links)
                .await)
        })
    }

    fn commit(&mut self, _next_offset: u64) {
        // Nothing to free: records are consumed from the channel.
    }

    fn take_links(&mut self) -> Vec<LinkRecord> {
        std::mem::take(&mut self.links)
    }

    fn released(&mut self) {
        if let Some(ack) = self.release_ack.take() {
            // The rebalance may have stopped waiting: then nobody listens.
            let _ = ack.try_send(self.partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use gridpulse_domain::{Limits, MeterId};
    use rdkafka::ClientConfig;

    use super::{Decoder, RawBatch, RecordKind, link_status};

    fn reading(meter: &str, ts_ms: i64, backfill: bool) -> Vec<u8> {
        format!(
            r#"{{"meter":"{meter}","ts_ms":{ts_ms},"voltage":230,"current":1,"power_w":200,"energy_wh":10,"backfill":{backfill}}}"#
        )
        .into_bytes()
    }

    fn status(meter: &str, online: bool) -> Vec<u8> {
        link_status::encode(
            &MeterId::new(meter).unwrap_or_else(|_| unreachable!()),
            online,
            1_764_600_000_000,
        )
    }

    /// A link status comes out after the batch's readings, unless a later live reading
    /// of its meter in the batch supersedes it (a backfilled one does not; another
    /// meter's does not).
    #[tokio::test(flavor = "current_thread")]
    async fn a_later_live_reading_of_the_meter_supersedes_its_status_in_the_batch() {
        // Never sent to: no record here is refused.
        let dlq = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create()
            .unwrap_or_else(|error| unreachable!("{error}"));
        let decoder = Decoder {
            limits: Limits::default(),
            topic: "readings".into(),
            dlq,
            dlq_topic: "readings-dlq".into(),
        };
        let now = gridpulse_actors::Clock::now_ms(&gridpulse_actors::SystemClock);
        let mut batch = RawBatch::default();
        let entries: [(&str, Vec<u8>, RecordKind); 6] = [
            ("a", reading("a", now - 3_000, false), RecordKind::Reading),
            ("a", status("a", false), RecordKind::LinkStatus),
            ("a", reading("a", now - 2_000, false), RecordKind::Reading),
            ("b", status("b", false), RecordKind::LinkStatus),
            ("b", reading("b", now - 9_000, true), RecordKind::Reading),
            ("a", reading("a", now - 1_000, false), RecordKind::Reading),
        ];
        for (offset, (key, payload, kind)) in entries.iter().enumerate() {
            batch.push(offset as i64, Some(key.as_bytes()), payload, *kind);
        }
        let mut links = Vec::new();
        let records = decoder.decode(0, vec![batch], &mut links).await;
        let offsets: Vec<u64> = records.iter().map(|record| record.offset).collect();
        assert_eq!(offsets, vec![0, 2, 4, 5]);
        assert_eq!(links.len(), 1, "{links:?}");
        assert_eq!(links[0].meter.as_str(), "b");
        assert_eq!(links[0].offset, 3);
        assert!(!links[0].online);
    }
}
