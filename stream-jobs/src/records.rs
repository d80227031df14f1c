//! The records that travel between the stages of the job and out of it: readings tagged
//! with their source position, per-partition progress, checkpoints, and what goes to the
//! error and late callbacks.

use gridpulse_domain::{MeterId, Reading};
use serde::{Deserialize, Serialize};

/// "No event time seen yet" for [`SourcedReading::partition_max_before_ms`] and
/// [`PartitionCheckpoint::max_event_before_ms`].
pub const NO_EVENT_TIME: i64 = i64::MIN;

/// A validated reading as the rollup needs it, with where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SourcedReading {
    /// The meter.
    pub meter: MeterId,
    /// Event time, Unix ms.
    pub ts_ms: i64,
    /// RMS voltage, V.
    pub voltage: f64,
    /// Active power, W.
    pub power_w: f64,
    /// Cumulative energy register, Wh.
    pub energy_wh: f64,
    /// Source partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// The highest event time of the partition's readings before this one
    /// ([`NO_EVENT_TIME`] if none): the watermark this reading is judged against, so a
    /// reading is on time or late by its position in its partition, whatever the batching,
    /// the worker count or a restart.
    pub partition_max_before_ms: i64,
    /// Read again after a restart (offset below the checkpoint's `replay_until`): it
    /// rebuilds state but reports nothing (it was reported before the checkpoint).
    pub replay: bool,
}

impl SourcedReading {
    /// Tags a reading with its source position.
    pub fn new(
        reading: &Reading,
        partition: u32,
        offset: u64,
        partition_max_before_ms: i64,
        replay: bool,
    ) -> SourcedReading {
        SourcedReading {
            meter: reading.meter,
            ts_ms: reading.ts_ms,
            voltage: reading.voltage,
            power_w: reading.power_w,
            energy_wh: reading.energy_wh,
            partition,
            offset,
            partition_max_before_ms,
            replay,
        }
    }
}

/// How far a source partition has been read: sent by the partition's reader to every
/// aggregation worker at the end of each round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionProgress {
    /// The partition.
    pub partition: u32,
    /// Offset after the last line read.
    pub fed_until: u64,
    /// Highest event time of the partition's readings before `fed_until`.
    pub max_event_ms: i64,
    /// Lines below this offset are a replay (see [`PartitionCheckpoint`]).
    pub replay_until: u64,
    /// Whether aggregators should report what they need of this partition at this round.
    pub checkpoint: bool,
}

/// Where a restart of one source partition resumes, and what the caller may commit.
///
/// `offset` is the **commit offset**: every reading before it is in a window that is
/// final (past its allowed lateness) and whose final rollup was handed to the sink, and
/// no later window needs it as the previous reading of an energy step. Readings from
/// `offset` to `replay_until` are read again on resume to rebuild open windows; they are
/// not reported twice (late readings, bad lines) and rollups they rebuild are re-emitted
/// only with the content and revision they had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    /// The partition.
    pub partition: u32,
    /// First offset to read on resume; commit this (Kafka: the consumer-group offset).
    pub offset: u64,
    /// Highest event time of the partition's readings before `offset`
    /// ([`NO_EVENT_TIME`] if none). Keep it with the offset (Kafka: commit metadata).
    pub max_event_before_ms: i64,
    /// Lines below this offset were already processed before the checkpoint.
    pub replay_until: u64,
}

impl PartitionCheckpoint {
    /// The start of a partition that was never read.
    pub fn start(partition: u32) -> PartitionCheckpoint {
        PartitionCheckpoint {
            partition,
            offset: 0,
            max_event_before_ms: NO_EVENT_TIME,
            replay_until: 0,
        }
    }

    /// Compact text for a commit's metadata field: `gp1:{max_event_before_ms}:{replay_until}`.
    pub fn metadata(&self) -> String {
        format!("gp1:{}:{}", self.max_event_before_ms, self.replay_until)
    }

    /// The checkpoint of `partition` committed at `offset` with [`Self::metadata`] text.
    pub fn from_metadata(partition: u32, offset: u64, metadata: &str) -> Option<Self> {
        let mut fields = metadata.strip_prefix("gp1:")?.split(':');
        let max_event_before_ms = fields.next()?.parse().ok()?;
        let replay_until = fields.next()?.parse().ok()?;
        if fields.next().is_some() {
            return None;
        }
        Some(PartitionCheckpoint {
            partition,
            offset,
            max_event_before_ms,
            replay_until,
        })
    }
}

/// What one aggregation worker still needs of one partition: the smallest offset of a
/// reading it holds (or holds as the previous reading of a meter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeededOffset {
    /// The partition.
    pub partition: u32,
    /// Smallest offset still needed.
    pub offset: u64,
    /// The reading's `partition_max_before_ms`.
    pub max_event_before_ms: i64,
}

/// A reading that arrived after its window was final: counted and reported, not applied.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LateReading {
    /// The meter.
    pub meter: MeterId,
    /// Its event time.
    pub ts_ms: i64,
    /// Source partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// End of the slice (hour ∩ local day) it belongs to.
    pub window_end_ms: i64,
    /// The partition's watermark when it arrived.
    pub watermark_ms: i64,
}

/// A line that did not become a reading (or a reading the job refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    /// Source partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Stable reason code (`malformed_json`, the domain's `ErrorReason::code`, or
    /// `meter_partition_conflict`, `out_of_calendar_range`).
    pub code: String,
    /// Human-readable reason naming the field.
    pub message: String,
    /// The line, cut to [`LineError::MAX_LINE_BYTES`] (for a dead-letter queue).
    pub line: Vec<u8>,
}

impl LineError {
    /// Longest part of a bad line kept in the error.
    pub const MAX_LINE_BYTES: usize = 1024;
}
