//! A producer whose `flush` means "the broker acknowledged everything sent before".
//!
//! Effects of readings (usage minutes, alert events) are produced from actor threads,
//! which must never block: `send` queues the item; a task produces queued items in
//! rounds (librdkafka batches them), produces failed ones again with backoff (never
//! dropping one), and counts acknowledged items in queue order. Checkpoints await
//! `flush` before committing `readings` offsets, so every effect of the readings a
//! checkpoint covers is on the broker first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gridpulse_actors::usage::FlushFuture;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{mpsc, watch};

use super::KafkaConfig;
use crate::metrics;

/// Most items produced per round.
const ROUND: usize = 4096;
/// How long a flush waits for the broker before the checkpoint gives up (and retries).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Turns an item into its record key and payload.
pub type Encode<T> = fn(&T, &mut Vec<u8>) -> Result<String, String>;

/// Produces items of type `T` to one topic, acknowledged in order.
#[derive(Debug)]
pub struct AckedProducer<T> {
    queue: mpsc::UnboundedSender<T>,
    sent: AtomicU64,
    acknowledged: watch::Receiver<u64>,
    topic: String,
}

impl<T: Send + Sync + 'static> AckedProducer<T> {
    /// An idempotent `acks=all` producer with murmur2 partitioning (the partition of a
    /// key is [`MeterId::partition`](gridpulse_domain::MeterId::partition)). Must be
    /// called on a tokio runtime.
    pub fn start(
        config: &KafkaConfig,
        topic: &str,
        linger_ms: u32,
        encode: Encode<T>,
    ) -> Result<AckedProducer<T>, String> {
        let mut client = config.client();
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", linger_ms.to_string())
            .set("partitioner", "murmur2")
            .set("message.timeout.ms", "30000");
        for (key, value) in &config.overrides {
            client.set(key, value);
        }
        let producer: FutureProducer = client
            .create()
            .map_err(|error| format!("kafka producer for {topic}: {error}"))?;
        let (queue, receiver) = mpsc::unbounded_channel();
        let (acknowledged_tx, acknowledged) = watch::channel(0);
        tokio::spawn(produce_loop(
            producer,
            topic.to_owned(),
            encode,
            receiver,
            acknowledged_tx,
        ));
        Ok(AckedProducer {
            queue,
            sent: AtomicU64::new(0),
            acknowledged,
            topic: topic.to_owned(),
        })
    }

    /// Queues one item (never blocks).
    pub fn send(&self, item: T) {
        self.sent.fetch_add(1, Ordering::SeqCst);
        if self.queue.send(item).is_err() {
            tracing::error!(topic = %self.topic, "producer task stopped; the next flush fails");
        }
    }

    /// Resolves when every item sent before the call is acknowledged by the broker.
    pub fn flush(&self) -> FlushFuture {
        let target = self.sent.load(Ordering::SeqCst);
        let mut acknowledged = self.acknowledged.clone();
        let topic = self.topic.clone();
        Box::pin(async move {
            match tokio::time::timeout(FLUSH_TIMEOUT, acknowledged.wait_for(|n| *n >= target)).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err(format!("the producer for {topic} stopped")),
                Err(_) => Err(format!(
                    "records for {topic} not acknowledged by kafka within {} s",
                    FLUSH_TIMEOUT.as_secs()
                )),
            }
        })
    }
}

async fn produce_loop<T: Send + Sync>(
    producer: FutureProducer,
    topic: String,
    encode: Encode<T>,
    mut receiver: mpsc::UnboundedReceiver<T>,
    acknowledged: watch::Sender<u64>,
) {
    let mut round = Vec::with_capacity(ROUND);
    let mut n_acknowledged = 0u64;
    let mut payload = Vec::with_capacity(256);
    while receiver.recv_many(&mut round, ROUND).await > 0 {
        let mut pending: Vec<T> = std::mem::take(&mut round);
        let mut backoff = Duration::from_millis(50);
        while !pending.is_empty() {
            let mut deliveries = Vec::with_capacity(pending.len());
            for (idx, item) in pending.iter().enumerate() {
                payload.clear();
                let key = match encode(item, &mut payload) {
                    Ok(key) => key,
                    Err(error) => {
                        // Cannot happen for our own types; counted as acknowledged so a
                        // flush never waits for it forever.
                        tracing::error!(%topic, %error, "record not encodable; skipped");
                        continue;
                    }
                };
                let mut record = FutureRecord::to(&topic).key(&key).payload(&payload);
                loop {
                    match producer.send_result(record) {
                        Ok(delivery) => {
                            deliveries.push((idx, delivery));
                            break;
                        }
                        Err((_, returned)) => {
                            // The local queue is full: let librdkafka drain it.
                            record = returned;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            }
            let mut failed = Vec::new();
            for (idx, delivery) in deliveries {
                if !matches!(delivery.await, Ok(Ok(_))) {
                    metrics::record_produce_error();
                    failed.push(idx);
                }
            }
            if failed.is_empty() {
                n_acknowledged += pending.len() as u64;
                pending.clear();
            } else {
                tracing::warn!(%topic, n_failed = failed.len(), "records not acknowledged; producing them again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                n_acknowledged += (pending.len() - failed.len()) as u64;
                let mut idx = 0;
                pending.retain(|_| {
                    let keep = failed.contains(&idx);
                    idx += 1;
                    keep
                });
            }
        }
        acknowledged.send_replace(n_acknowledged);
    }
}
