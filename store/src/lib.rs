//! gridpulse persistence: one [`Store`] interface, two backends.
//!
//! * [`embedded::EmbeddedStore`] — the default: a crash-safe, pure-Rust LSM (`fjall`)
//!   under the data directory, laid out like the Scylla tables (one keyspace partition
//!   per table, and one per day for raw readings so retention drops whole days).
//! * [`scylla_store::ScyllaStore`] — for scale: the `scylla` driver, CQL schema files
//!   applied by `gridpulse migrate`, prepared statements, token-aware routing.
//!
//! Beside them, [`journal`] is the durable reading log of embedded mode (segment files
//! with checksums), the stand-in for Kafka's retention of the `readings` topic.
//!
//! Architecture invariant: only this crate knows CQL, fjall or file formats; everything
//! above it sees [`Store`] and plain domain types.
//! Architecture invariant: every write is idempotent — keys are (meter, day, timestamp),
//! (alert id), (alert id, time, event or workflow action seq), (subject, granularity,
//! window start), (stream job, partition) or (audit time, seq) — so replaying after a
//! crash writes the same rows.

pub mod embedded;
pub mod error;
pub mod journal;
pub mod model;
pub mod scylla_store;

use std::future::Future;
use std::pin::Pin;

use gridpulse_domain::{MeterId, MeterRollup, Reading, UserRollup};

pub use error::StoreError;
pub use model::{
    AlertHistoryEntry, AlertQuery, AuditEntry, AuditQuery, ConfigKind, MAX_AUDIT_SUBJECT_BYTES,
    MAX_JOB_NAME_LEN, MeterRollupQuery, ReadingPage, ReadingQuery, Retention, RollupPage,
    RollupQuery, SnapshotRow, StoredAlert, UserRollupQuery, day_bucket,
};

/// A boxed, `Send` future returned by store operations (object-safe async).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The persistence interface every backend implements.
///
/// Writes are idempotent upserts; reads never see a half-applied batch of one
/// partition key. `flush` is the durability barrier: when it returns, everything written
/// before it survives a crash.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Upserts raw readings, keyed by (meter, day, timestamp).
    fn write_readings<'a>(&'a self, readings: &'a [Reading]) -> StoreFuture<'a, ()>;
    /// Reads one meter's readings in `[from_ms, to_ms)`, oldest first, paged.
    fn read_readings<'a>(&'a self, query: &'a ReadingQuery) -> StoreFuture<'a, ReadingPage>;

    /// Upserts meter state snapshots.
    fn put_snapshots<'a>(&'a self, snapshots: &'a [SnapshotRow]) -> StoreFuture<'a, ()>;
    /// The latest snapshot of one meter.
    fn get_snapshot(&self, meter: MeterId) -> StoreFuture<'_, Option<SnapshotRow>>;
    /// Records that every reading of `partition` before `offset` is reflected in stored
    /// snapshots and rows.
    fn put_checkpoint(&self, partition: u32, offset: u64) -> StoreFuture<'_, ()>;
    /// The checkpoint of `partition`, if any.
    fn get_checkpoint(&self, partition: u32) -> StoreFuture<'_, Option<u64>>;

    /// Upserts alerts and appends their history (lifecycle changes keyed by (id, at,
    /// event), workflow events by (id, at, action seq)). Refuses (writing nothing) an
    /// entry with an empty comment.
    fn write_alert_events<'a>(&'a self, events: &'a [AlertHistoryEntry]) -> StoreFuture<'a, ()>;
    /// One alert with its history, oldest entry first (a millisecond's lifecycle
    /// changes before its workflow events, those in the order they happened).
    fn get_alert<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<StoredAlert>>;
    /// Alerts matching `query`, newest first.
    fn query_alerts<'a>(
        &'a self,
        query: &'a AlertQuery,
    ) -> StoreFuture<'a, Vec<gridpulse_domain::AlertRecord>>;

    /// Upserts one configuration document (meter, user/account, tariff) as JSON.
    fn put_config<'a>(
        &'a self,
        kind: ConfigKind,
        id: &'a str,
        json: &'a [u8],
    ) -> StoreFuture<'a, ()>;
    /// One configuration document.
    fn get_config<'a>(&'a self, kind: ConfigKind, id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;
    /// Removes one configuration document.
    fn delete_config<'a>(&'a self, kind: ConfigKind, id: &'a str) -> StoreFuture<'a, ()>;
    /// All configuration documents of one kind, by id.
    fn list_config(&self, kind: ConfigKind) -> StoreFuture<'_, Vec<(String, Vec<u8>)>>;

    /// Upserts usage rollups keyed by (meter, granularity, `window_start_ms`): a
    /// recomputed window replaces the stored row whole. Revisions are not compared —
    /// the last write of a key wins, and within one slice the last occurrence of a key.
    fn put_meter_rollups<'a>(&'a self, rollups: &'a [MeterRollup]) -> StoreFuture<'a, ()>;
    /// One meter's rollups of one granularity with `window_start_ms` in
    /// `[from_ms, to_ms)`, oldest first, paged.
    fn read_meter_rollups<'a>(
        &'a self,
        query: &'a MeterRollupQuery,
    ) -> StoreFuture<'a, RollupPage<MeterRollup>>;
    /// Upserts user rollups keyed by (user, granularity, `window_start_ms`), like
    /// [`Store::put_meter_rollups`]. Refuses (writing nothing) a rollup whose currency is
    /// `Some("")`.
    fn put_user_rollups<'a>(&'a self, rollups: &'a [UserRollup]) -> StoreFuture<'a, ()>;
    /// One user's rollups of one granularity with `window_start_ms` in
    /// `[from_ms, to_ms)`, oldest first, paged.
    fn read_user_rollups<'a>(
        &'a self,
        query: &'a UserRollupQuery,
    ) -> StoreFuture<'a, RollupPage<UserRollup>>;

    /// Upserts a stream job's position per log partition: `(partition, next_offset)`,
    /// the first offset the job has not yet reflected in stored rollups. Partitions not
    /// in `offsets` keep their stored value; a partition named twice keeps the last.
    /// Write it after the rollups it covers: the embedded store never recovers a later
    /// write without the earlier ones.
    fn put_stream_offsets<'a>(
        &'a self,
        job: &'a str,
        offsets: &'a [(u32, u64)],
    ) -> StoreFuture<'a, ()>;
    /// Every stored `(partition, next_offset)` of `job`, by partition (empty for a job
    /// that never stored any).
    fn get_stream_offsets<'a>(&'a self, job: &'a str) -> StoreFuture<'a, Vec<(u32, u64)>>;

    /// Appends entries to the audit log (one write to the API each), keyed by
    /// `(at_ms, seq)`: appending an entry again rewrites the same row. Refuses (writing
    /// nothing) an entry [`AuditEntry`] rules out, naming the field. Kept forever.
    fn append_audit<'a>(&'a self, entries: &'a [AuditEntry]) -> StoreFuture<'a, ()>;
    /// Audit entries newest first, strictly older than `query.before` (the cursor: the
    /// `(at_ms, seq)` of the last entry of the previous page), of `query.subject` or
    /// everyone, at most `query.limit`.
    fn read_audit<'a>(&'a self, query: &'a AuditQuery) -> StoreFuture<'a, Vec<AuditEntry>>;

    /// Makes everything written so far durable.
    fn flush(&self) -> StoreFuture<'_, ()>;
    /// Deletes data older than the retention allows, as of `now_ms`.
    fn apply_retention(&self, now_ms: i64) -> StoreFuture<'_, u64>;
}
