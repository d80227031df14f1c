//! The hourly rollup job inside `gridpulse run`: timely workers on threads read the
//! in-process log's journal (the readings the meter actors consume, already validated),
//! and their rollups are upserted into the store.
//!
//! Order of effects, so that a crash or restart loses nothing and counts nothing twice:
//! rollups are written (in the order the job handed them over), the store is flushed,
//! then the partition's checkpoint is stored (`ConfigKind::StreamCheckpoints`) and the
//! journal is held from its offset (`InProcessLog::hold_from`: checkpoints of the
//! meter actors never truncate what the job still needs). A restart resumes each
//! partition from its stored checkpoint and reproduces the same rollups (same content,
//! same revision), which the store upserts over the old rows.
//!
//! Hours the job can no longer revise (readings later than its allowed lateness:
//! imported or buffered history behind live data) are queued in the store and
//! recomputed from the stored readings by [`crate::rollup_recompute`].
//!
//! Hours only: days and months are sums of hours at query time (in any zone whose
//! offset is whole hours), so the journal is held for about an hour and the allowed
//! lateness, not for a whole day or month.

use std::collections::BTreeMap;
use std::sync::Arc;

use gridpulse_domain::{Granularity, Limits, MeterId, MeterRollup, Reading};
use gridpulse_ingest::memory_log::InProcessLog;
use gridpulse_store::journal::Journal;
use gridpulse_store::{ConfigKind, Store};
use gridpulse_stream_jobs::{
    CommunicationConfig, JobConfig, JobHandle, JobOutput, LateReading, LineError,
    PartitionCheckpoint, PartitionReader, ReadStatus, RollupConfig, Source, SourceError,
    SourceRecord,
};
use tokio::sync::mpsc;

use crate::rollup_recompute::{self, Dirty, DirtyHours, JobProgress};

/// The job's name in the store.
pub const JOB: &str = "rollups";

/// The journal of the in-process log as a stream-job source.
struct JournalSource {
    journal: Arc<Journal>,
}

impl Source for JournalSource {
    fn partitions(&self) -> Vec<u32> {
        (0..self.journal.n_partitions()).collect()
    }

    fn open(&self, partition: u32, offset: u64) -> Result<Box<dyn PartitionReader>, SourceError> {
        if partition >= self.journal.n_partitions() {
            return Err(SourceError::UnknownPartition { partition });
        }
        let first = self.journal.first_offset(partition);
        if offset < first {
            tracing::warn!(
                partition,
                offset,
                first,
                "the journal no longer holds the job's start: rolling up from its first reading"
            );
        }
        Ok(Box::new(JournalReader {
            journal: Arc::clone(&self.journal),
            partition,
            next: offset.max(first),
            batch: Vec::new(),
        }))
    }
}

struct JournalReader {
    journal: Arc<Journal>,
    partition: u32,
    next: u64,
    batch: Vec<(u64, Reading)>,
}

impl PartitionReader for JournalReader {
    fn read(
        &mut self,
        max_records: usize,
        record: &mut dyn FnMut(u64, SourceRecord<'_>),
    ) -> Result<ReadStatus, SourceError> {
        self.batch = self
            .journal
            .read_from(self.partition, self.next, max_records)
            .map_err(|error| SourceError::Other {
                partition: self.partition,
                message: error.to_string(),
            })?;
        if self.batch.is_empty() {
            return Ok(ReadStatus::Idle);
        }
        for (offset, reading) in &self.batch {
            record(*offset, SourceRecord::Reading(reading));
            self.next = offset + 1;
        }
        Ok(ReadStatus::Lines(self.batch.len()))
    }
}

enum Message {
    Rollups(Vec<MeterRollup>),
    /// Hours to recompute (too-late readings), queued before the checkpoint after them.
    Dirty(Vec<(MeterId, i64, Dirty)>),
    Checkpoint(PartitionCheckpoint),
}

/// Hands the job's results to the writer task, in order.
struct StoreOutput {
    queue: mpsc::UnboundedSender<Message>,
    dirty: DirtyHours,
}

impl JobOutput for StoreOutput {
    fn rollups(&self, rollups: &[MeterRollup]) {
        if self.queue.send(Message::Rollups(rollups.to_vec())).is_err() {
            tracing::error!("rollup writer stopped; the job's next checkpoint is not stored");
        }
    }

    fn error(&self, error: &LineError) {
        crate::metrics::record_rollup_event("error");
        tracing::warn!(
            partition = error.partition,
            offset = error.offset,
            code = error.code,
            "reading refused by the rollup job"
        );
    }

    fn late(&self, late: &LateReading) {
        crate::metrics::record_rollup_event("late");
        tracing::debug!(
            ?late,
            "reading too late for its rollup window: its hour is recomputed from the store"
        );
        self.dirty.note(late);
    }

    fn checkpoint(&self, checkpoint: &PartitionCheckpoint) {
        // Every too-late reading this checkpoint covers was noted before it.
        let dirty = self.dirty.take();
        if !dirty.is_empty() {
            let _ = self.queue.send(Message::Dirty(dirty));
        }
        let _ = self.queue.send(Message::Checkpoint(*checkpoint));
    }
}

async fn load_checkpoints(store: &dyn Store) -> BTreeMap<u32, PartitionCheckpoint> {
    match store.get_config(ConfigKind::StreamCheckpoints, JOB).await {
        Ok(None) => BTreeMap::new(),
        Ok(Some(json)) => serde_json::from_slice(&json).unwrap_or_else(|error| {
            tracing::error!(%error, "stored rollup checkpoints are unreadable; rolling up the journal again");
            BTreeMap::new()
        }),
        Err(error) => {
            tracing::error!(%error, "cannot read the rollup checkpoints; rolling up the journal again");
            BTreeMap::new()
        }
    }
}

/// Writes rollups and checkpoints in order; the journal is held accordingly.
async fn write_loop(
    store: Arc<dyn Store>,
    log: Option<Arc<InProcessLog>>,
    mut queue: mpsc::UnboundedReceiver<Message>,
    mut checkpoints: BTreeMap<u32, PartitionCheckpoint>,
    progress: Arc<JobProgress>,
) {
    let mut pending: Vec<MeterRollup> = Vec::new();
    while let Some(message) = queue.recv().await {
        let mut messages = vec![message];
        while let Ok(more) = queue.try_recv() {
            messages.push(more);
            if messages.len() >= 1024 {
                break;
            }
        }
        let mut changed = false;
        for message in messages {
            match message {
                Message::Rollups(rollups) => pending.extend(rollups),
                Message::Dirty(dirty) => {
                    // After the rollups before them, before the checkpoint after them
                    // (flushed with it).
                    if !write_rollups(&*store, &mut pending).await
                        || !queue_dirty(&*store, &dirty).await
                    {
                        return;
                    }
                }
                Message::Checkpoint(checkpoint) => {
                    // Everything handed over before the checkpoint goes first.
                    if !write_rollups(&*store, &mut pending).await {
                        return;
                    }
                    checkpoints.insert(checkpoint.partition, checkpoint);
                    changed = true;
                }
            }
        }
        if !write_rollups(&*store, &mut pending).await {
            return;
        }
        if changed {
            let json = match serde_json::to_vec(&checkpoints) {
                Ok(json) => json,
                Err(error) => {
                    tracing::error!(%error, "cannot encode the rollup checkpoints");
                    continue;
                }
            };
            let stored = async {
                store.flush().await?;
                store
                    .put_config(ConfigKind::StreamCheckpoints, JOB, &json)
                    .await?;
                store.flush().await
            };
            match stored.await {
                Ok(()) => {
                    if let Some(log) = &log {
                        for checkpoint in checkpoints.values() {
                            log.hold_from(checkpoint.partition, checkpoint.offset);
                        }
                    }
                    progress.stored(
                        checkpoints
                            .values()
                            .map(|checkpoint| (checkpoint.partition, checkpoint.replay_until)),
                    );
                }
                Err(error) => {
                    tracing::error!(%error, "rollup checkpoint not stored; the next one retries")
                }
            }
        }
    }
}

async fn queue_dirty(store: &dyn Store, dirty: &[(MeterId, i64, Dirty)]) -> bool {
    for attempt in 0..10u32 {
        match rollup_recompute::queue(store, dirty).await {
            Ok(()) => return true,
            Err(error) => {
                tracing::warn!(%error, attempt, "queueing rollup hours to recompute failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100 << attempt.min(5))).await;
            }
        }
    }
    tracing::error!(
        "rollup hours to recompute could not be queued; the rollup writer stops (the job resumes from its last checkpoint at the next start and reports them again)"
    );
    false
}

async fn write_rollups(store: &dyn Store, pending: &mut Vec<MeterRollup>) -> bool {
    if pending.is_empty() {
        return true;
    }
    // The store refuses nothing the job makes; retry transient failures, never drop.
    for attempt in 0..10u32 {
        match store.put_meter_rollups(pending).await {
            Ok(()) => {
                crate::metrics::record_rollups_written(pending.len());
                pending.clear();
                return true;
            }
            Err(error) => {
                tracing::warn!(%error, attempt, "storing rollups failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100 << attempt.min(5))).await;
            }
        }
    }
    tracing::error!(
        "rollups could not be stored; the rollup writer stops (the job resumes from its last checkpoint at the next start)"
    );
    false
}

/// The running job.
#[derive(Debug)]
pub struct RollupJob {
    handle: parking_lot::Mutex<Option<JobHandle>>,
    writer: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    recompute: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl RollupJob {
    /// Stops the workers (they report a last checkpoint) and waits for them.
    pub fn stop(&self) {
        if let Some(handle) = self.handle.lock().take() {
            handle.stop();
            if let Err(error) = handle.join() {
                tracing::warn!(%error, "rollup job ended with an error");
            }
        }
    }

    /// Stops the job and waits (at most 10 s) until the writer stored what its last
    /// checkpoint covers, and the checkpoint.
    pub async fn shutdown(self: &Arc<Self>) {
        let job = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || job.stop()).await;
        let writer = self.writer.lock().take();
        if let Some(writer) = writer
            && tokio::time::timeout(std::time::Duration::from_secs(10), writer)
                .await
                .is_err()
        {
            tracing::warn!(
                "the rollup writer did not finish in 10 s; the next start replays from the last stored checkpoint"
            );
        }
        // Its queue is stored: what it did not process yet, the next start does.
        let recompute = self.recompute.lock().take();
        if let Some(recompute) = recompute {
            recompute.abort();
            let _ = recompute.await;
        }
    }

    /// Readings applied, rollups emitted, late and refused readings so far.
    ///
    /// (Dropping the job stops it too: timely joins its workers on drop, which would
    /// wait forever for workers still reading a live log.)
    pub fn stats(&self) -> Option<gridpulse_stream_jobs::StatsSnapshot> {
        self.handle.lock().as_ref().map(JobHandle::stats)
    }
}

impl Drop for RollupJob {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the hourly rollup job on `workers` timely worker threads over the log's
/// journal, resuming from the stored checkpoints. Must be called on a tokio runtime.
pub async fn start(
    store: Arc<dyn Store>,
    log: Arc<InProcessLog>,
    workers: usize,
    limits: Limits,
) -> Result<Arc<RollupJob>, String> {
    let journal = log
        .journal()
        .cloned()
        .ok_or("rollups need the durable log (persistence)")?;
    let checkpoints = load_checkpoints(&*store).await;
    // Hold the journal for the job from the start, before any truncation can happen.
    for partition in 0..journal.n_partitions() {
        let from = checkpoints
            .get(&partition)
            .map_or(journal.first_offset(partition), |checkpoint| {
                checkpoint.offset
            });
        log.hold_from(partition, from);
    }
    run_job(
        store,
        Some(log),
        Arc::new(JournalSource { journal }),
        checkpoints,
        (workers, None),
        limits,
    )
}

/// Starts the hourly rollup job over any source (Kafka's `readings` with
/// `gridpulse stream-jobs`), resuming from the checkpoints in `store`.
///
/// `communication` is timely's cluster configuration (several processes, see
/// `gridpulse_stream_jobs`); `None` runs `workers` threads in this process.
pub async fn start_on(
    store: Arc<dyn Store>,
    source: Arc<dyn Source>,
    workers: usize,
    communication: Option<CommunicationConfig>,
    limits: Limits,
) -> Result<Arc<RollupJob>, String> {
    let checkpoints = load_checkpoints(&*store).await;
    run_job(
        store,
        None,
        source,
        checkpoints,
        (workers, communication),
        limits,
    )
}

fn run_job(
    store: Arc<dyn Store>,
    log: Option<Arc<InProcessLog>>,
    source: Arc<dyn Source>,
    checkpoints: BTreeMap<u32, PartitionCheckpoint>,
    (workers, communication): (usize, Option<CommunicationConfig>),
    limits: Limits,
) -> Result<Arc<RollupJob>, String> {
    let rollup = RollupConfig {
        granularities: vec![Granularity::Hour],
        ..RollupConfig::default()
    };
    let config = JobConfig {
        workers: workers.max(1),
        communication,
        rollup,
        limits,
        resume: checkpoints.values().copied().collect(),
        ..JobConfig::default()
    };
    let progress = Arc::new(JobProgress::default());
    progress.stored(
        checkpoints
            .values()
            .map(|checkpoint| (checkpoint.partition, checkpoint.replay_until)),
    );
    let recompute = tokio::spawn(rollup_recompute::run(
        Arc::clone(&store),
        Arc::clone(&progress),
        config.rollup.clone(),
    ));
    let (queue, receiver) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(
        Arc::clone(&store),
        log,
        receiver,
        checkpoints,
        progress,
    ));
    let output = StoreOutput {
        queue,
        dirty: DirtyHours::default(),
    };
    let handle = gridpulse_stream_jobs::spawn(config, source, Arc::new(output))
        .map_err(|error| error.to_string())?;
    Ok(Arc::new(RollupJob {
        handle: parking_lot::Mutex::new(Some(handle)),
        writer: parking_lot::Mutex::new(Some(writer)),
        recompute: parking_lot::Mutex::new(Some(recompute)),
    }))
}
