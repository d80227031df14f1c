//! Stream jobs: hourly, daily and monthly usage rollups per meter, computed with Timely
//! Dataflow in event time, correct under late data and across restarts.
//!
//! The job reads partitions of NDJSON reading lines (a [`Source`]: in memory, files, and
//! — wired by the binary — the in-process log or Kafka's `readings` topic), parses them
//! with the production parser, exchanges readings by meter across timely workers, keeps
//! each meter's open windows, and hands [`MeterRollup`](gridpulse_domain::MeterRollup)
//! upserts to a [`JobOutput`]. Bad lines go to `JobOutput::error` on their own stream;
//! readings that arrive after their window is final go to `JobOutput::late`; per-partition
//! [`PartitionCheckpoint`]s say what may be committed.
//!
//! * [`calendar`]: window assignment (UTC hours; local days and months via jiff).
//! * [`rollup`]: the pure core — aggregation, watermarks, lateness, revisions, and the
//!   offsets a restart needs. Its module docs define every figure.
//! * [`job`]: the timely dataflow (workers, exchange, rounds, checkpoints).
//! * [`source`]: the `Source` trait, `MemorySource` and `FileSource`.
//! * [`records`]: what travels between stages and to the callbacks.
//!
//! # Invariants
//!
//! * Architecture invariant: knows nothing of HTTP, the store, Kafka or actors — only
//!   sources, sinks and callbacks. The binary wires those.
//! * Architecture invariant: every reading is parsed and validated by
//!   `gridpulse-domain` (`parse_reading`), and every register step is classified by
//!   `gridpulse_domain::register_step`: energy is never negative or spiking.
//! * Architecture invariant: a bad line or a refused reading never panics a worker; it
//!   is counted and given to `JobOutput::error` with its reason, and the lines around it
//!   are kept.
//! * Architecture invariant: results are a function of the partitions' contents only.
//!   Each reading is judged on time / late / too late against its own partition's
//!   watermark *before* it, so batching, the worker count and restarts change when
//!   rollups are emitted, never what a (window, revision) holds. A window's figures are
//!   a function of its set of readings, summed in time order.
//! * Architecture invariant: nothing is silently dropped: duplicates, late and too-late
//!   readings, bad lines are each counted ([`JobStats`]), too-late readings and bad
//!   lines are also reported one by one.
//! * Architecture invariant: a checkpoint is reported only after every rollup it covers
//!   went through `JobOutput::rollups` on every worker. Resuming from the checkpoints
//!   (`JobConfig::resume`) reproduces the same rollups, with the same revisions.
//!
//! # Offsets and restarts
//!
//! A partition's checkpoint `offset` is the smallest offset still needed: of a reading in
//! a window that is not final yet, or of the last reading before a meter's open windows
//! (the start of its next energy step). Everything before it is final and emitted:
//! commit it (Kafka: the `readings` group offset; keep `max_event_before_ms` and
//! `replay_until` beside it, e.g. [`PartitionCheckpoint::metadata`] as the commit
//! metadata). On resume the readings from `offset` to `replay_until` are read again to
//! rebuild the open windows: they report nothing twice, and the windows due at
//! `replay_until` are re-emitted with the content and revision they already had.
//! How far the commit trails the head: about the allowed lateness plus the longest
//! enabled window (an hour; a day or a month if those are enabled — months are best
//! summed from the day rows where the log's retention is shorter), and at most
//! `max_gap_ms` more for a meter that went silent.
//!
//! # Running on a cluster
//!
//! In one process, `JobConfig::workers` threads (`-w N`) share the work. Across machines,
//! set `JobConfig::communication` to timely's
//! `CommunicationConfig::Cluster { threads, process, addresses, report, zerocopy }` —
//! what timely's own `-w` (threads per process), `-n` (processes), `-p` (this process's
//! index, 0-based) and `-h` (a hostfile of `host:port` lines, one per process, in process
//! order) options build. Every process runs the same job with the same source list and
//! reads the partitions whose id modulo the total worker count is one of its workers;
//! readings and progress cross processes over timely's TCP links (records are
//! serde/bincode), and each partition's checkpoint is reported by the process reading
//! it, which is also the one that commits it.
//!
//! ```text
//! host0$ gridpulse stream-jobs ... -w 2 -n 2 -p 0 -h hosts.txt
//! host1$ gridpulse stream-jobs ... -w 2 -n 2 -p 1 -h hosts.txt
//! ```

pub mod calendar;
pub mod job;
pub mod records;
pub mod rollup;
pub mod source;

pub use calendar::{Calendar, Placement, Window};
pub use job::{
    JobConfig, JobError, JobHandle, JobOutput, JobReport, JobStats, JobStopper, StatsSnapshot,
    meter_hash, run, spawn,
};
pub use records::{
    LateReading, LineError, NO_EVENT_TIME, NeededOffset, PartitionCheckpoint, PartitionProgress,
    SourcedReading,
};
pub use rollup::{
    ConfigError, CoreStats, InsertOutcome, RollupConfig, RollupCore, hours_from_readings,
};
pub use source::{
    FileSource, MemorySource, PartitionReader, ReadStatus, Source, SourceError, SourceRecord,
};
pub use timely::CommunicationConfig;
