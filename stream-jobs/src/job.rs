//! The rollup job as a timely dataflow.
//!
//! ```text
//!  worker w reads partitions p with p % workers == w, in rounds (timely time = round):
//!    lines ──parse (domain)──┬─> readings (tagged with partition, offset, partition max)
//!                            ├─> errors ────────────────────────────> Errors sink ─> JobOutput::error
//!                            └─> progress per partition, to every worker
//!  readings ─exchange(meter)─┐
//!  progress ─broadcast───────┴─> Rollup (RollupCore per worker) ─> Deliver ─> JobOutput::rollups
//!                                  │ late ─> JobOutput::late            │ needed offsets
//!                                  └────────────────────────────────────┴─exchange(partition)─>
//!                                                           Checkpoint ─> JobOutput::checkpoint
//! ```
//!
//! * Readings are exchanged by meter id (FxHash of its bytes, the same in every
//!   process), so each meter has one owner and results do not depend on the worker count.
//! * A round is at most `lines_per_round` lines per worker. At the end of a round each
//!   reader sends every worker its partitions' progress (offset reached, highest event
//!   time): the watermarks. When timely's frontier passes a round, every worker has all of
//!   its readings and progress; the Rollup operator then emits what became due.
//! * Checkpoints: every `checkpoint_every_rounds` rounds (and at the end), each Rollup
//!   worker reports, per partition, the smallest offset it still needs; the partition's
//!   reader combines them with its position once the frontier passes the round, i.e.
//!   after every rollup of that round went through `JobOutput::rollups` on every worker.
//!
//! Readers keep at most `rounds_in_flight` rounds ahead of the slowest Deliver, so memory
//! stays bounded whatever the source's speed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hash::Hasher;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridpulse_domain::{Limits, MeterId, MeterRollup, ParseError, parse_reading};
use rustc_hash::{FxHashMap, FxHasher};
use timely::CommunicationConfig;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::{InputHandleVec, ProbeHandle};

use crate::records::{
    LateReading, LineError, NeededOffset, PartitionCheckpoint, PartitionProgress, SourcedReading,
};
use crate::rollup::{ConfigError, CoreStats, InsertOutcome, RollupConfig, RollupCore};
use crate::source::{PartitionReader, ReadStatus, Source, SourceError, SourceRecord};

/// Where the job's results go. Called from worker threads, concurrently.
///
/// `rollups` must have stored (or durably queued) the rollups when it returns: the
/// checkpoint that covers them is reported only afterwards. A sink that buffers must
/// flush in `checkpoint` before the caller commits.
pub trait JobOutput: Send + Sync {
    /// Rollups to upsert by (meter, granularity, window_start_ms); a higher revision is
    /// newer, and the same revision of a window always has the same content.
    fn rollups(&self, rollups: &[MeterRollup]);

    /// A line that is not a valid reading, or a reading the job refused.
    fn error(&self, error: &LineError) {
        let _ = error;
    }

    /// A reading whose window was already final: counted, not applied.
    fn late(&self, late: &LateReading) {
        let _ = late;
    }

    /// Where partition `checkpoint.partition` can resume; commit `checkpoint.offset`
    /// (with the rest of the checkpoint kept beside it).
    fn checkpoint(&self, checkpoint: &PartitionCheckpoint) {
        let _ = checkpoint;
    }
}

/// How the job runs.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Worker threads in this process (timely `-w`); ignored when `communication` is set.
    pub workers: usize,
    /// Timely's communication, for a cluster (`CommunicationConfig::Cluster`, see the
    /// crate docs); `None` means `Process(workers)`.
    pub communication: Option<CommunicationConfig>,
    /// What to compute.
    pub rollup: RollupConfig,
    /// Validation limits for parsing.
    pub limits: Limits,
    /// The "now" that future timestamps are checked against when parsing. `None` skips
    /// that check: lines in a log were validated when they were accepted, and a replay
    /// must judge them as the first run did.
    pub parse_now_ms: Option<i64>,
    /// Lines read per worker per round (a timely timestamp).
    pub lines_per_round: usize,
    /// Rounds a reader may be ahead of the output.
    pub rounds_in_flight: u64,
    /// Report checkpoints every this many rounds (and at the end).
    pub checkpoint_every_rounds: u64,
    /// At the end of a bounded source, declare the input complete: every open window is
    /// emitted and final. Leave `false` for a prefix you will resume.
    pub close_windows_at_end: bool,
    /// Where partitions resume (from reported checkpoints); others start at offset 0.
    pub resume: Vec<PartitionCheckpoint>,
    /// How long a worker waits when every partition it reads is idle.
    pub idle_wait: Duration,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            workers: 1,
            communication: None,
            rollup: RollupConfig::default(),
            limits: Limits::default(),
            parse_now_ms: None,
            lines_per_round: 65_536,
            rounds_in_flight: 2,
            checkpoint_every_rounds: 16,
            close_windows_at_end: false,
            resume: Vec::new(),
            idle_wait: Duration::from_millis(10),
        }
    }
}

/// The job could not start or a worker failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Invalid rollup configuration.
    #[error("rollup configuration: {0}")]
    Config(#[from] ConfigError),
    /// Invalid job configuration.
    #[error("job configuration: `{field}` {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        message: &'static str,
    },
    /// Timely could not start.
    #[error("timely: {0}")]
    Timely(String),
    /// A source failed.
    #[error("source: {0}")]
    Source(#[from] SourceError),
    /// A worker thread panicked.
    #[error("worker panicked: {0}")]
    Panicked(String),
}

/// Counters of a job, shared by its workers.
#[derive(Debug, Default)]
pub struct JobStats {
    /// Lines read (replayed ones included).
    pub lines: AtomicU64,
    /// Valid readings parsed.
    pub readings: AtomicU64,
    /// Lines that are not valid readings (and readings refused), sent to `error`.
    pub errors: AtomicU64,
    /// Readings applied to windows.
    pub applied: AtomicU64,
    /// Duplicate timestamps ignored.
    pub duplicates: AtomicU64,
    /// Late readings applied (revising due windows).
    pub late_applied: AtomicU64,
    /// Too-late readings: counted and sent to `late`, not applied.
    pub too_late: AtomicU64,
    /// Readings read again after a restart.
    pub replayed: AtomicU64,
    /// Rollups emitted.
    pub rollups: AtomicU64,
    /// Partition checkpoints reported.
    pub checkpoints: AtomicU64,
}

/// A copy of [`JobStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`JobStats::lines`].
    pub lines: u64,
    /// See [`JobStats::readings`].
    pub readings: u64,
    /// See [`JobStats::errors`].
    pub errors: u64,
    /// See [`JobStats::applied`].
    pub applied: u64,
    /// See [`JobStats::duplicates`].
    pub duplicates: u64,
    /// See [`JobStats::late_applied`].
    pub late_applied: u64,
    /// See [`JobStats::too_late`].
    pub too_late: u64,
    /// See [`JobStats::replayed`].
    pub replayed: u64,
    /// See [`JobStats::rollups`].
    pub rollups: u64,
    /// See [`JobStats::checkpoints`].
    pub checkpoints: u64,
}

impl JobStats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            lines: load(&self.lines),
            readings: load(&self.readings),
            errors: load(&self.errors),
            applied: load(&self.applied),
            duplicates: load(&self.duplicates),
            late_applied: load(&self.late_applied),
            too_late: load(&self.too_late),
            replayed: load(&self.replayed),
            rollups: load(&self.rollups),
            checkpoints: load(&self.checkpoints),
        }
    }

    fn add_core_delta(&self, now: &CoreStats, before: &CoreStats) {
        let add = |counter: &AtomicU64, now: u64, before: u64| {
            if now > before {
                counter.fetch_add(now - before, Ordering::Relaxed);
            }
        };
        add(&self.applied, now.applied, before.applied);
        add(&self.duplicates, now.duplicates, before.duplicates);
        add(&self.late_applied, now.late_applied, before.late_applied);
        add(&self.too_late, now.too_late, before.too_late);
        add(&self.replayed, now.replayed, before.replayed);
        add(&self.rollups, now.rollups, before.rollups);
    }
}

/// What a finished job leaves.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// The counters at the end.
    pub stats: StatsSnapshot,
    /// The last checkpoint of every partition, in partition order: resume from these.
    pub checkpoints: Vec<PartitionCheckpoint>,
}

/// A running job.
pub struct JobHandle {
    guards: timely::communication::WorkerGuards<Result<(), JobError>>,
    stop: Arc<AtomicBool>,
    stats: Arc<JobStats>,
    last_checkpoints: Arc<Mutex<BTreeMap<u32, PartitionCheckpoint>>>,
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("stop", &self.stop)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl JobHandle {
    /// Asks the workers to stop reading; they finish the current round, report a last
    /// checkpoint and end (open windows stay open: resume from the checkpoints).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// A handle that can stop the job from another thread.
    pub fn stopper(&self) -> JobStopper {
        JobStopper(Arc::clone(&self.stop))
    }

    /// The counters so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Waits for every worker to finish.
    pub fn join(self) -> Result<JobReport, JobError> {
        let mut first_error = None;
        for result in self.guards.join() {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Err(panic) => {
                    first_error.get_or_insert(JobError::Panicked(panic));
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        let checkpoints = match self.last_checkpoints.lock() {
            Ok(map) => map.values().copied().collect(),
            Err(poisoned) => poisoned.into_inner().values().copied().collect(),
        };
        Ok(JobReport {
            stats: self.stats.snapshot(),
            checkpoints,
        })
    }
}

/// Stops a job (see [`JobHandle::stop`]); cheap to clone and send.
#[derive(Debug, Clone)]
pub struct JobStopper(Arc<AtomicBool>);

impl JobStopper {
    /// Asks the workers to stop reading.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs the job until a bounded source ends.
pub fn run(
    config: JobConfig,
    source: Arc<dyn Source>,
    output: Arc<dyn JobOutput>,
) -> Result<JobReport, JobError> {
    spawn(config, source, output)?.join()
}

/// Starts the job's workers and returns at once.
pub fn spawn(
    config: JobConfig,
    source: Arc<dyn Source>,
    output: Arc<dyn JobOutput>,
) -> Result<JobHandle, JobError> {
    config.rollup.validate()?;
    if config.workers == 0 {
        return Err(JobError::Invalid {
            field: "workers",
            message: "must be at least 1",
        });
    }
    if config.lines_per_round == 0 || config.checkpoint_every_rounds == 0 {
        return Err(JobError::Invalid {
            field: "lines_per_round",
            message: "and `checkpoint_every_rounds` must be at least 1",
        });
    }
    let communication = config
        .communication
        .clone()
        .unwrap_or(CommunicationConfig::Process(config.workers));
    let (builders, others) = communication.try_build().map_err(JobError::Timely)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(JobStats::default());
    let last_checkpoints = Arc::new(Mutex::new(BTreeMap::new()));
    let shared = Arc::new(Shared {
        config,
        source,
        output,
        stop: Arc::clone(&stop),
        stats: Arc::clone(&stats),
        last_checkpoints: Arc::clone(&last_checkpoints),
    });
    let guards = timely::execute::execute_from(
        builders,
        others,
        timely::WorkerConfig::default(),
        move |worker| run_worker(worker, &shared),
    )
    .map_err(JobError::Timely)?;
    Ok(JobHandle {
        guards,
        stop,
        stats,
        last_checkpoints,
    })
}

struct Shared {
    config: JobConfig,
    source: Arc<dyn Source>,
    output: Arc<dyn JobOutput>,
    stop: Arc<AtomicBool>,
    stats: Arc<JobStats>,
    last_checkpoints: Arc<Mutex<BTreeMap<u32, PartitionCheckpoint>>>,
}

/// The exchange key of a meter: the same in every process and version.
pub fn meter_hash(meter: &MeterId) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(meter.as_str().as_bytes());
    hasher.finish()
}

/// What the Rollup operator sends on.
#[derive(Debug, Clone)]
enum RollupOut {
    Rollup(MeterRollup),
    Needed(NeededOffset),
}

/// A reader's position at a checkpoint round.
#[derive(Debug, Clone, Copy)]
struct Position {
    partition: u32,
    fed_until: u64,
    max_event_ms: i64,
    replay_until: u64,
    start: PartitionCheckpoint,
}

/// Positions of this worker's partitions at checkpoint rounds, shared by the reader loop
/// and the Checkpoint operator (same thread).
#[derive(Debug, Default)]
struct Ledger {
    rounds: BTreeMap<u64, Vec<Position>>,
}

struct OwnedPartition {
    partition: u32,
    reader: Box<dyn PartitionReader>,
    next_offset: u64,
    max_event_ms: i64,
    replay_until: u64,
    start: PartitionCheckpoint,
    ended: bool,
}

/// Readings sent to the dataflow per batch.
const SEND_BATCH: usize = 8192;

fn run_worker(worker: &mut timely::worker::Worker, shared: &Arc<Shared>) -> Result<(), JobError> {
    let index = worker.index();
    let peers = worker.peers();
    let config = &shared.config;

    let mut readings_input = InputHandleVec::<u64, SourcedReading>::new();
    let mut errors_input = InputHandleVec::<u64, LineError>::new();
    let mut progress_input = InputHandleVec::<u64, (u64, PartitionProgress)>::new();
    let probe = ProbeHandle::<u64>::new();
    let ledger = Rc::new(RefCell::new(Ledger::default()));
    let core = RollupCore::new(config.rollup.clone())?;

    worker.dataflow::<u64, _, _>(|scope| {
        let readings = readings_input.to_stream(scope);
        let errors = errors_input.to_stream(scope);
        let progress = progress_input.to_stream(scope);

        let output = Arc::clone(&shared.output);
        let stats = Arc::clone(&shared.stats);
        errors.sink(Pipeline, "Errors", move |(input, _frontier)| {
            input.for_each(|_cap, data| {
                for error in data.drain(..) {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    output.error(&error);
                }
            });
        });

        let output = Arc::clone(&shared.output);
        let stats = Arc::clone(&shared.stats);
        let rolled = readings
            .binary_frontier::<_, CapacityContainerBuilder<Vec<RollupOut>>, _, _, _, _>(
                progress,
                Exchange::new(|reading: &SourcedReading| meter_hash(&reading.meter)),
                Exchange::new(|(target, _): &(u64, PartitionProgress)| *target),
                "Rollup",
                move |capability, _info| {
                    let mut capability = Some(capability);
                    let mut core = core;
                    let mut reported = CoreStats::default();
                    let mut pending: BTreeMap<u64, Vec<PartitionProgress>> = BTreeMap::new();
                    let mut rollups: Vec<MeterRollup> = Vec::new();
                    move |(readings, readings_frontier), (progress, progress_frontier), out| {
                        readings.for_each(|_cap, data| {
                            for reading in data.drain(..) {
                                apply(&mut core, &reading, output.as_ref(), &stats);
                            }
                        });
                        progress.for_each(|cap, data| {
                            if let Some(round) = cap.least().copied() {
                                pending
                                    .entry(round)
                                    .or_default()
                                    .extend(data.drain(..).map(|(_, progress)| progress));
                            }
                        });
                        let frontier = [
                            readings_frontier.frontier().first().copied(),
                            progress_frontier.frontier().first().copied(),
                        ]
                        .into_iter()
                        .flatten()
                        .min();
                        while let Some(entry) = pending.first_entry() {
                            let round = *entry.key();
                            if frontier.is_some_and(|frontier| round >= frontier) {
                                break;
                            }
                            let mut list = entry.remove();
                            list.sort_by_key(|progress| progress.partition);
                            for progress in &list {
                                core.advance(progress, &mut rollups);
                            }
                            let checkpoint = list.iter().any(|progress| progress.checkpoint);
                            if let Some(capability) = &capability {
                                let at = capability.delayed(&round);
                                let mut session = out.session(&at);
                                for rollup in rollups.drain(..) {
                                    session.give(RollupOut::Rollup(rollup));
                                }
                                if checkpoint {
                                    for needed in core.needed_offsets() {
                                        session.give(RollupOut::Needed(needed));
                                    }
                                }
                            }
                            rollups.clear();
                        }
                        let now = core.stats();
                        stats.add_core_delta(&now, &reported);
                        reported = now;
                        match (frontier, capability.as_mut()) {
                            (Some(frontier), Some(capability)) => capability.downgrade(&frontier),
                            (None, _) => capability = None,
                            _ => {}
                        }
                    }
                },
            );

        let output = Arc::clone(&shared.output);
        let needed = rolled.unary::<CapacityContainerBuilder<Vec<NeededOffset>>, _, _, _>(
            Pipeline,
            "Deliver",
            move |_capability, _info| {
                let mut batch: Vec<MeterRollup> = Vec::new();
                move |input, out| {
                    input.for_each(|cap, data| {
                        let mut session = out.session(&cap);
                        for item in data.drain(..) {
                            match item {
                                RollupOut::Rollup(rollup) => batch.push(rollup),
                                RollupOut::Needed(needed) => session.give(needed),
                            }
                        }
                        if !batch.is_empty() {
                            output.rollups(&batch);
                            batch.clear();
                        }
                    });
                }
            },
        );

        let output = Arc::clone(&shared.output);
        let stats = Arc::clone(&shared.stats);
        let last_checkpoints = Arc::clone(&shared.last_checkpoints);
        let ledger = Rc::clone(&ledger);
        let mut fragments: BTreeMap<u64, FxHashMap<u32, (u64, i64)>> = BTreeMap::new();
        needed.probe_with(&probe).sink(
            Exchange::new(|needed: &NeededOffset| u64::from(needed.partition)),
            "Checkpoint",
            move |(input, frontier)| {
                input.for_each(|cap, data| {
                    let Some(round) = cap.least().copied() else {
                        return;
                    };
                    let round_fragments = fragments.entry(round).or_default();
                    for needed in data.drain(..) {
                        let entry = round_fragments
                            .entry(needed.partition)
                            .or_insert((needed.offset, needed.max_event_before_ms));
                        if needed.offset < entry.0 {
                            *entry = (needed.offset, needed.max_event_before_ms);
                        }
                    }
                });
                let mut ledger = ledger.borrow_mut();
                let frontier = frontier.frontier().first().copied();
                while let Some(entry) = ledger.rounds.first_entry() {
                    let round = *entry.key();
                    if frontier.is_some_and(|frontier| round >= frontier) {
                        break;
                    }
                    let positions = entry.remove();
                    let round_fragments = fragments.remove(&round).unwrap_or_default();
                    for position in positions {
                        let checkpoint = checkpoint_of(
                            &position,
                            round_fragments.get(&position.partition).copied(),
                        );
                        stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                        output.checkpoint(&checkpoint);
                        match last_checkpoints.lock() {
                            Ok(mut map) => {
                                map.insert(checkpoint.partition, checkpoint);
                            }
                            Err(poisoned) => {
                                poisoned
                                    .into_inner()
                                    .insert(checkpoint.partition, checkpoint);
                            }
                        }
                    }
                }
                // Fragments of rounds this worker recorded no positions for.
                if let Some(frontier) = frontier {
                    fragments.retain(|round, _| *round >= frontier);
                }
            },
        );
    });

    // The reader loop.
    let mut owned = Vec::new();
    for partition in shared.source.partitions() {
        if partition as usize % peers != index {
            continue;
        }
        let start = config
            .resume
            .iter()
            .find(|checkpoint| checkpoint.partition == partition)
            .copied()
            .unwrap_or(PartitionCheckpoint::start(partition));
        let reader = shared.source.open(partition, start.offset)?;
        owned.push(OwnedPartition {
            partition,
            reader,
            next_offset: start.offset,
            max_event_ms: start.max_event_before_ms,
            replay_until: start.replay_until,
            start,
            ended: false,
        });
    }
    let now_ms = config.parse_now_ms.unwrap_or(i64::MAX);
    let lines_per_partition = (config.lines_per_round / owned.len().max(1)).max(1);
    let mut readings_batch: Vec<SourcedReading> = Vec::with_capacity(SEND_BATCH);
    let mut errors_batch: Vec<LineError> = Vec::new();
    let mut progress_batch: Vec<(u64, PartitionProgress)> = Vec::new();
    let mut round: u64 = 0;
    let mut result = Ok(());
    loop {
        let stopping = shared.stop.load(Ordering::Relaxed) || result.is_err();
        let mut n_lines = 0usize;
        let mut n_readings = 0u64;
        let mut any_idle = false;
        if !stopping {
            for part in owned.iter_mut().filter(|part| !part.ended) {
                let mut budget = lines_per_partition;
                if part.next_offset < part.replay_until {
                    budget = budget.min((part.replay_until - part.next_offset) as usize);
                }
                let status = read_partition(
                    part,
                    budget,
                    now_ms,
                    &config.limits,
                    &mut readings_batch,
                    &mut errors_batch,
                    &mut readings_input,
                    &mut n_readings,
                );
                match status {
                    Ok(ReadStatus::Lines(n)) => n_lines += n,
                    Ok(ReadStatus::Idle) => any_idle = true,
                    Ok(ReadStatus::End) => part.ended = true,
                    Err(error) => {
                        result = Err(JobError::Source(error));
                        break;
                    }
                }
            }
        }
        shared
            .stats
            .lines
            .fetch_add(n_lines as u64, Ordering::Relaxed);
        shared
            .stats
            .readings
            .fetch_add(n_readings, Ordering::Relaxed);
        if !readings_batch.is_empty() {
            readings_input.send_batch(&mut readings_batch);
            readings_batch.clear();
        }
        if !errors_batch.is_empty() {
            errors_input.send_batch(&mut errors_batch);
            errors_batch.clear();
        }
        let all_ended = owned.iter().all(|part| part.ended);
        let last = stopping || all_ended || result.is_err();
        let checkpoint =
            last || round % config.checkpoint_every_rounds == config.checkpoint_every_rounds - 1;
        send_progress(
            &owned,
            peers,
            checkpoint,
            None,
            round,
            &ledger,
            &mut progress_batch,
            &mut progress_input,
        );
        round += 1;
        readings_input.advance_to(round);
        errors_input.advance_to(round);
        progress_input.advance_to(round);
        // Stay at most `rounds_in_flight` rounds ahead of the output.
        let behind = round.saturating_sub(config.rounds_in_flight);
        while probe.less_than(&behind) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        if last {
            break;
        }
        if any_idle && n_lines == 0 {
            worker.step_or_park(Some(config.idle_wait));
        }
    }
    if config.close_windows_at_end && result.is_ok() && !shared.stop.load(Ordering::Relaxed) {
        // The input is complete: every watermark to the end of time.
        send_progress(
            &owned,
            peers,
            true,
            Some(i64::MAX),
            round,
            &ledger,
            &mut progress_batch,
            &mut progress_input,
        );
        round += 1;
        progress_input.advance_to(round);
    }
    drop(readings_input);
    drop(errors_input);
    drop(progress_input);
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(1)));
    }
    result
}

/// Reads up to `budget` lines of `part`, parsing each into the batches.
#[allow(clippy::too_many_arguments)]
fn read_partition(
    part: &mut OwnedPartition,
    budget: usize,
    now_ms: i64,
    limits: &Limits,
    readings_batch: &mut Vec<SourcedReading>,
    errors_batch: &mut Vec<LineError>,
    readings_input: &mut InputHandleVec<u64, SourcedReading>,
    n_readings: &mut u64,
) -> Result<ReadStatus, SourceError> {
    let partition = part.partition;
    let replay_until = part.replay_until;
    let next_offset = &mut part.next_offset;
    let max_event_ms = &mut part.max_event_ms;
    part.reader.read(budget, &mut |offset, record| {
        *next_offset = offset + 1;
        let replay = offset < replay_until;
        let parsed = match record {
            SourceRecord::Reading(reading) => Ok(*reading),
            SourceRecord::Line(line) if line.is_empty() || line == b"\r" => return,
            SourceRecord::Line(line) => {
                parse_reading(line, now_ms, limits).map_err(|error| (line, error))
            }
        };
        match parsed {
            Ok(reading) => {
                *n_readings += 1;
                readings_batch.push(SourcedReading::new(
                    &reading,
                    partition,
                    offset,
                    *max_event_ms,
                    replay,
                ));
                if reading.ts_ms > *max_event_ms {
                    *max_event_ms = reading.ts_ms;
                }
                if readings_batch.len() >= SEND_BATCH {
                    readings_input.send_batch(readings_batch);
                    readings_batch.clear();
                }
            }
            Err((line, error)) => {
                if !replay {
                    errors_batch.push(line_error(partition, offset, line, &error));
                }
            }
        }
    })
}

fn line_error(partition: u32, offset: u64, line: &[u8], error: &ParseError) -> LineError {
    let code = match error {
        ParseError::Malformed(_) => "malformed_json",
        ParseError::Invalid(invalid) => invalid.reason.code(),
    };
    LineError {
        partition,
        offset,
        code: code.to_owned(),
        message: error.to_string(),
        line: line[..line.len().min(LineError::MAX_LINE_BYTES)].to_vec(),
    }
}

/// Sends every worker the progress of this worker's partitions at `round`, and records
/// the positions of a checkpoint round.
#[allow(clippy::too_many_arguments)]
fn send_progress(
    owned: &[OwnedPartition],
    peers: usize,
    checkpoint: bool,
    max_event_override: Option<i64>,
    round: u64,
    ledger: &Rc<RefCell<Ledger>>,
    batch: &mut Vec<(u64, PartitionProgress)>,
    input: &mut InputHandleVec<u64, (u64, PartitionProgress)>,
) {
    let mut positions = Vec::new();
    for part in owned {
        let max_event_ms = max_event_override.unwrap_or(part.max_event_ms);
        let progress = PartitionProgress {
            partition: part.partition,
            fed_until: part.next_offset,
            max_event_ms,
            replay_until: part.replay_until,
            checkpoint,
        };
        for target in 0..peers {
            batch.push((target as u64, progress));
        }
        if checkpoint {
            positions.push(Position {
                partition: part.partition,
                fed_until: part.next_offset,
                max_event_ms,
                replay_until: part.replay_until,
                start: part.start,
            });
        }
    }
    if !positions.is_empty() {
        ledger.borrow_mut().rounds.insert(round, positions);
    }
    if !batch.is_empty() {
        input.send_batch(batch);
        batch.clear();
    }
}

/// The checkpoint of one partition from its reader's position and the smallest offset
/// any worker still needs.
fn checkpoint_of(position: &Position, needed: Option<(u64, i64)>) -> PartitionCheckpoint {
    if position.fed_until < position.replay_until {
        // Still replaying: the checkpoint we started from stands.
        return position.start;
    }
    let (offset, max_event_before_ms) = match needed {
        Some((offset, max_before)) if offset < position.fed_until => (offset, max_before),
        _ => (position.fed_until, position.max_event_ms),
    };
    PartitionCheckpoint {
        partition: position.partition,
        offset,
        max_event_before_ms,
        replay_until: position.fed_until,
    }
}

/// Applies one reading to the core and reports what must be reported.
fn apply(
    core: &mut RollupCore,
    reading: &SourcedReading,
    output: &dyn JobOutput,
    stats: &JobStats,
) {
    match core.insert(reading) {
        InsertOutcome::Applied | InsertOutcome::Duplicate | InsertOutcome::ReplayedTooLate => {}
        InsertOutcome::TooLate(late) => output.late(&late),
        InsertOutcome::PartitionConflict { established } => {
            if !reading.replay {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                output.error(&LineError {
                    partition: reading.partition,
                    offset: reading.offset,
                    code: "meter_partition_conflict".to_owned(),
                    message: format!(
                        "meter `{}` reads from partition {established}, not {}",
                        reading.meter.as_str(),
                        reading.partition
                    ),
                    line: Vec::new(),
                });
            }
        }
        InsertOutcome::OutOfRange => {
            if !reading.replay {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                output.error(&LineError {
                    partition: reading.partition,
                    offset: reading.offset,
                    code: "out_of_calendar_range".to_owned(),
                    message: format!("`ts_ms` {} is outside the calendar's range", reading.ts_ms),
                    line: Vec::new(),
                });
            }
        }
    }
}
