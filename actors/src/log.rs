//! The consumer side of the reading log, as the actors see it.
//!
//! Readings reach the actors through a partitioned, ordered log: the in-process log in
//! embedded mode, Kafka in distributed mode. Both implement [`ReadingSource`]; nothing in
//! this crate knows which one it is talking to. Every meter maps to exactly one partition
//! (`MeterId::partition`), so each meter's readings arrive in order.

use std::future::Future;
use std::pin::Pin;

use gridpulse_domain::{MeterId, Reading};

/// One reading at its position in a partition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogRecord {
    /// Offset within the partition.
    pub offset: u64,
    /// The reading.
    pub reading: Reading,
}

/// A meter's link change carried by the log itself (Kafka: a `link-status` record in
/// `readings`, produced by a separate MQTT bridge after the meter's readings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkRecord {
    /// Offset within the partition.
    pub offset: u64,
    /// The meter.
    pub meter: MeterId,
    /// Up (`online`) or down (`offline`, e.g. its last will).
    pub online: bool,
    /// Wall clock when the bridge received the status, Unix ms.
    pub at_ms: i64,
}

/// The log could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The log is shut down; no more records will come.
    #[error("log closed")]
    Closed,
    /// The log refuses more records until consumers catch up.
    #[error("log partition {partition} is full ({capacity} records waiting): retry later")]
    Full {
        /// The partition that is full.
        partition: u32,
        /// How many records it holds at most.
        capacity: usize,
    },
    /// This process no longer owns the partition (a consumer-group rebalance): its
    /// meters must be dropped; records after this come from a new assignment.
    #[error("partition revoked")]
    Revoked,
    /// Any other failure of the backing log.
    #[error("log: {0}")]
    Backend(String),
}

/// A boxed future that need not be `Send` (partition readers run on one arbiter).
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Reads one partition in offset order.
pub trait PartitionReader: Send + std::fmt::Debug + 'static {
    /// Waits until records are available and returns up to `max` of them, in order.
    fn next_batch(&mut self, max: usize) -> LocalFuture<'_, Result<Vec<LogRecord>, LogError>>;
    /// Marks every record before `next_offset` as processed.
    fn commit(&mut self, next_offset: u64);
    /// The link changes among the records of the batch [`next_batch`] just returned, in
    /// order; each applies after every reading of that batch (a reader drops a change
    /// a later live reading of its meter in the same batch supersedes). Only the Kafka
    /// reader has any: in embedded mode the bridge hands link changes over directly.
    ///
    /// [`next_batch`]: PartitionReader::next_batch
    fn take_links(&mut self) -> Vec<LinkRecord> {
        Vec::new()
    }
    /// After [`LogError::Revoked`]: the partition has checkpointed what it applied and
    /// dropped its meters, so the log may hand it to its new owner.
    fn released(&mut self) {}
}

/// A partitioned log of readings.
pub trait ReadingSource: Send + Sync + std::fmt::Debug + 'static {
    /// How many partitions the log has.
    fn n_partitions(&self) -> u32;
    /// Opens a reader on one partition, at `from_offset` (the partition's checkpoint)
    /// or at the oldest record the log still holds.
    fn open_partition(&self, partition: u32, from_offset: Option<u64>) -> Box<dyn PartitionReader>;
    /// Every record of `partition` before `offset` is reflected in durable state: the log
    /// may forget them (truncate a journal, commit a consumer-group offset).
    fn checkpointed(&self, partition: u32, offset: u64) {
        let _ = (partition, offset);
    }
    /// Clean shutdown, after the final checkpoint: stop reading and let go of the log
    /// (a consumer-group member leaves its group, so its partitions move to the other
    /// members at once). Resolves when that is done; no records are read after it.
    fn close(&self) -> LocalFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}
