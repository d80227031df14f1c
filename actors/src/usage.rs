//! The `usage-by-user` flow: meter actors send closed usage minutes to their owner's
//! user actor, through a partitioned log keyed by user id.
//!
//! [`UsageSink`] is the producer side (Kafka's `usage-by-user` topic in distributed
//! mode, [`ChannelUsage`] in embedded mode); [`UsageEvent`]s on one channel per user
//! partition are the consumer side, read by a
//! [`UserPartitionActor`](crate::user_system::UserPartitionActor).
//!
//! Exactly-once: a meter checkpoint calls [`UsageSink::flush`] after its snapshots and
//! before its offset is stored, so every delta of the readings the checkpoint covers
//! is durable first (broker acknowledgement, or the user actors' snapshots in embedded
//! mode). Replays re-send the same (meter, minute) deltas, which user actors skip.

use std::future::Future;
use std::pin::Pin;

use gridpulse_domain::UsageDelta;
use tokio::sync::{mpsc, oneshot};

/// A boxed `Send` future of a usage flush.
pub type FlushFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Where meter actors send usage deltas.
pub trait UsageSink: Send + Sync + std::fmt::Debug + 'static {
    /// Queues one delta (never blocks the actor thread, never drops it).
    fn publish(&self, delta: UsageDelta);
    /// Resolves once every delta published before the call is durable.
    fn flush(&self) -> FlushFuture;
}

/// One delta at its position in a user partition (`None` in embedded mode, where the
/// channel has no offsets).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UsageRecord {
    /// Offset in the `usage-by-user` partition.
    pub offset: Option<u64>,
    /// The delta.
    pub delta: UsageDelta,
}

/// What a user partition receives.
#[derive(Debug)]
pub enum UsageEvent {
    /// Deltas, in partition order.
    Records(Vec<UsageRecord>),
    /// Store the state of every user changed so far, then answer.
    Barrier(oneshot::Sender<Result<(), String>>),
    /// The partition moved to another process (Kafka rebalance).
    Revoked,
}

/// Embedded mode's usage log: one unbounded channel per user partition. Deltas are at
/// most one per meter per minute of event time, and the reading pump's high-water mark
/// bounds how far meters run ahead, so the channels stay small.
#[derive(Debug)]
pub struct ChannelUsage {
    senders: Vec<mpsc::UnboundedSender<UsageEvent>>,
}

impl ChannelUsage {
    /// A channel log of `n_partitions` partitions and the receivers of its partitions.
    pub fn new(n_partitions: u32) -> (ChannelUsage, Vec<mpsc::UnboundedReceiver<UsageEvent>>) {
        let (senders, receivers) = (0..n_partitions.max(1))
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        (ChannelUsage { senders }, receivers)
    }
}

impl UsageSink for ChannelUsage {
    fn publish(&self, delta: UsageDelta) {
        let partition = delta.user.partition(self.senders.len() as u32) as usize;
        if let Some(sender) = self.senders.get(partition)
            && sender
                .send(UsageEvent::Records(vec![UsageRecord {
                    offset: None,
                    delta,
                }]))
                .is_err()
        {
            tracing::warn!(user = %delta.user, "user partition stopped; usage delta not delivered");
        }
    }

    fn flush(&self) -> FlushFuture {
        // A barrier behind everything sent so far, in every partition: when all answer,
        // the user actors have applied and stored it.
        let mut answers = Vec::with_capacity(self.senders.len());
        for sender in &self.senders {
            let (ack, answer) = oneshot::channel();
            if sender.send(UsageEvent::Barrier(ack)).is_err() {
                return Box::pin(async { Err("user partitions stopped".to_owned()) });
            }
            answers.push(answer);
        }
        Box::pin(async move {
            for answer in answers {
                answer
                    .await
                    .map_err(|_| "user partition stopped".to_owned())??;
            }
            Ok(())
        })
    }
}
