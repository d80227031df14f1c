//! Recomputation of hour rollups the rollup job can no longer revise: readings that
//! arrive after their hour is final (imported or buffered history behind live data)
//! are stored like any reading, and their (meter, hour) is recomputed here from the
//! stored readings and rewritten with `revision + 1`.
//!
//! Order of effects, so that a crash or restart leaves no hour wrong:
//!
//! 1. The job reports each too-late reading (`JobOutput::late`); [`DirtyHours`] keeps
//!    one entry per (meter, hour) with the highest offset and watermark seen, in memory.
//! 2. Before the job's next checkpoint is handed over, the entries go to the rollup
//!    writer, which stores them (`ConfigKind::RollupRecompute`, one document per
//!    (meter, hour, offset)) after the rollups before them and before the checkpoint:
//!    a stored checkpoint implies its too-late readings' hours are queued durably. A
//!    crash before that replays the readings, which are reported again.
//! 3. This task processes an entry only when (a) the job's stored checkpoint of the
//!    partition is past the offset (`replay_until`: every rollup the job emitted up to
//!    the reading is written, so a job row never overwrites a recomputed one later) and
//!    (b) the meter actors' checkpoint of the partition is past it (`Store::
//!    get_checkpoint`: every reading before it is in the store; too-late readings after
//!    it queue their own entries).
//! 4. Per meter, consecutive dirty hours are read in one range query (with `max_gap`
//!    before, for the first energy step, and after, for the next reading), recomputed
//!    with `gridpulse_stream_jobs::hours_from_readings` (the job's own arithmetic), and
//!    written only if they differ from the stored row (so an identical re-import changes
//!    nothing, revision included). The hour holding the next reading after a dirty hour
//!    is recomputed too when it was final (its first step starts in the dirty hour); if
//!    it was still open the job itself steps from the too-late reading.
//! 5. The store is flushed, then exactly the processed entries are deleted. A crash in
//!    between processes them again: the same content, so nothing is rewritten.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use gridpulse_domain::{Granularity, MeterId, MeterRollup, Reading};
use gridpulse_store::{ConfigKind, MeterRollupQuery, ReadingQuery, Store, StoreError};
use gridpulse_stream_jobs::{LateReading, RollupConfig, hours_from_readings};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

const HOUR_MS: i64 = 3_600_000;
/// Longest run of hours read in one range query.
const MAX_RUN_MS: i64 = 7 * 24 * HOUR_MS;
/// Page size of the range queries.
const PAGE: usize = 10_000;

/// One dirty (meter, hour): the latest too-late reading that touched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dirty {
    /// The meter's log partition.
    pub partition: u32,
    /// The highest offset of a too-late reading of the hour.
    #[serde(skip)]
    pub offset: u64,
    /// The job's watermark of the partition at that reading.
    pub watermark_ms: i64,
}

/// Too-late readings seen since the last checkpoint, one entry per (meter, hour).
#[derive(Debug, Default)]
pub struct DirtyHours {
    hours: parking_lot::Mutex<FxHashMap<(MeterId, i64), Dirty>>,
}

impl DirtyHours {
    /// Notes a too-late reading (cheap: one lock, one map entry).
    pub fn note(&self, late: &LateReading) {
        let hour = late.ts_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let mut hours = self.hours.lock();
        let entry = hours.entry((late.meter, hour)).or_insert(Dirty {
            partition: late.partition,
            offset: late.offset,
            watermark_ms: late.watermark_ms,
        });
        entry.offset = entry.offset.max(late.offset);
        entry.watermark_ms = entry.watermark_ms.max(late.watermark_ms);
    }

    /// Everything noted so far, emptied.
    pub fn take(&self) -> Vec<(MeterId, i64, Dirty)> {
        let mut hours = self.hours.lock();
        if hours.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut *hours)
            .into_iter()
            .map(|((meter, hour), dirty)| (meter, hour, dirty))
            .collect()
    }
}

/// The stored id of an entry: `meter/hour_start_ms/offset` (meter ids have no `/`).
fn entry_id(meter: MeterId, hour: i64, offset: u64) -> String {
    format!("{}/{hour}/{offset}", meter.as_str())
}

fn parse_entry(id: &str, body: &[u8]) -> Option<(MeterId, i64, Dirty)> {
    let mut parts = id.split('/');
    let meter = MeterId::new(parts.next()?).ok()?;
    let hour: i64 = parts.next()?.parse().ok()?;
    let offset: u64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || hour.rem_euclid(HOUR_MS) != 0 {
        return None;
    }
    let mut dirty: Dirty = serde_json::from_slice(body).ok()?;
    dirty.offset = offset;
    Some((meter, hour, dirty))
}

/// Stores the entries (the caller flushes before its checkpoint).
pub async fn queue(store: &dyn Store, entries: &[(MeterId, i64, Dirty)]) -> Result<(), StoreError> {
    for (meter, hour, dirty) in entries {
        let body = serde_json::to_vec(dirty).unwrap_or_default();
        store
            .put_config(
                ConfigKind::RollupRecompute,
                &entry_id(*meter, *hour, dirty.offset),
                &body,
            )
            .await?;
    }
    Ok(())
}

/// How far the job's stored checkpoints reach, per partition (`replay_until`), and a
/// wake-up for the recompute task.
#[derive(Debug, Default)]
pub struct JobProgress {
    reached: parking_lot::Mutex<BTreeMap<u32, u64>>,
    notify: tokio::sync::Notify,
}

impl JobProgress {
    /// Records stored checkpoints and wakes the task.
    pub fn stored(&self, reached: impl IntoIterator<Item = (u32, u64)>) {
        self.reached.lock().extend(reached);
        self.notify.notify_one();
    }

    fn reached(&self, partition: u32) -> u64 {
        self.reached.lock().get(&partition).copied().unwrap_or(0)
    }
}

/// The recompute task: runs until aborted, a pass per stored job checkpoint (at least
/// every second).
pub async fn run(store: Arc<dyn Store>, progress: Arc<JobProgress>, config: RollupConfig) {
    let mut warned_no_readings = false;
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(1), progress.notify.notified()).await;
        match pass(&*store, &progress, &config, &mut warned_no_readings).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(entries = n, "rollup hours recomputed"),
            Err(error) => {
                tracing::warn!(%error, "recomputing rollup hours failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One pass over the queue; returns how many entries it processed.
pub async fn pass(
    store: &dyn Store,
    progress: &JobProgress,
    config: &RollupConfig,
    warned_no_readings: &mut bool,
) -> Result<usize, StoreError> {
    let documents = store.list_config(ConfigKind::RollupRecompute).await?;
    if documents.is_empty() {
        return Ok(0);
    }
    let mut stored_until: BTreeMap<u32, Option<u64>> = BTreeMap::new();
    let mut work: BTreeMap<MeterId, BTreeMap<i64, i64>> = BTreeMap::new();
    let mut done: Vec<String> = Vec::new();
    let mut waiting_for_readings = 0usize;
    for (id, body) in &documents {
        let Some((meter, hour, dirty)) = parse_entry(id, body) else {
            tracing::warn!(id, "unreadable rollup recompute entry dropped");
            done.push(id.clone());
            continue;
        };
        if progress.reached(dirty.partition) <= dirty.offset {
            continue;
        }
        let readings_until = match stored_until.get(&dirty.partition) {
            Some(until) => *until,
            None => {
                let until = store.get_checkpoint(dirty.partition).await?;
                stored_until.insert(dirty.partition, until);
                until
            }
        };
        if readings_until.is_none_or(|until| until <= dirty.offset) {
            waiting_for_readings += 1;
            continue;
        }
        let watermark = work
            .entry(meter)
            .or_default()
            .entry(hour)
            .or_insert(i64::MIN);
        *watermark = (*watermark).max(dirty.watermark_ms);
        done.push(id.clone());
    }
    if waiting_for_readings > 0
        && stored_until.values().all(Option::is_none)
        && !*warned_no_readings
    {
        *warned_no_readings = true;
        tracing::warn!(
            waiting_for_readings,
            "rollup hours wait for their raw readings: this store has no reading checkpoints (point the rollup job at the processors' store)"
        );
    }
    for (meter, hours) in &work {
        recompute_meter(store, *meter, hours, config).await?;
    }
    if done.is_empty() {
        return Ok(0);
    }
    store.flush().await?;
    for id in &done {
        store.delete_config(ConfigKind::RollupRecompute, id).await?;
    }
    Ok(done.len())
}

/// Recomputes `hours` (start → watermark when queued) of one meter, run by run.
async fn recompute_meter(
    store: &dyn Store,
    meter: MeterId,
    hours: &BTreeMap<i64, i64>,
    config: &RollupConfig,
) -> Result<(), StoreError> {
    let gap = config.max_gap_ms;
    let mut runs: Vec<Vec<(i64, i64)>> = Vec::new();
    for (&hour, &watermark) in hours {
        match runs.last_mut() {
            Some(run)
                if hour - run[run.len() - 1].0 <= 2 * gap + HOUR_MS
                    && hour - run[0].0 < MAX_RUN_MS =>
            {
                run.push((hour, watermark))
            }
            _ => runs.push(vec![(hour, watermark)]),
        }
    }
    let mut readings: Vec<Reading> = Vec::new();
    let mut rewritten: Vec<MeterRollup> = Vec::new();
    for run in &runs {
        let first = run[0].0;
        let last = run[run.len() - 1].0;
        // The first step of each hour, the hour itself, and the next reading (at most
        // `max_gap` after the hour) with its whole hour.
        read_all(
            store,
            meter,
            first - gap,
            last + 2 * HOUR_MS + gap,
            &mut readings,
        )
        .await?;
        let dirty: BTreeSet<i64> = run.iter().map(|(hour, _)| *hour).collect();
        let mut targets = dirty.clone();
        for &(hour, watermark) in run {
            let next = readings.partition_point(|reading| reading.ts_ms < hour + HOUR_MS);
            if let Some(next) = readings.get(next) {
                let next_hour = next.ts_ms.div_euclid(HOUR_MS) * HOUR_MS;
                let final_then = next_hour + HOUR_MS + config.allowed_lateness_ms <= watermark;
                // A step longer than `max_gap` counts 0 either way.
                if final_then && next.ts_ms - (hour + HOUR_MS) < gap {
                    targets.insert(next_hour);
                }
            }
        }
        let targets: Vec<i64> = targets.into_iter().collect();
        let recomputed = hours_from_readings(meter, &readings, &targets, config);
        let n_empty = targets.len() - recomputed.len();
        crate::metrics::record_hours_recomputed("empty", n_empty);
        let stored = read_stored(store, meter, targets[0], targets[targets.len() - 1] + 1).await?;
        let mut n_unchanged = 0;
        for mut rollup in recomputed {
            match stored.get(&rollup.window_start_ms) {
                Some(old) if same_figures(old, &rollup) => n_unchanged += 1,
                old => {
                    rollup.revision = old.map_or(0, |old| old.revision) + 1;
                    rewritten.push(rollup);
                }
            }
        }
        crate::metrics::record_hours_recomputed("unchanged", n_unchanged);
    }
    if !rewritten.is_empty() {
        store.put_meter_rollups(&rewritten).await?;
        crate::metrics::record_hours_recomputed("rewritten", rewritten.len());
        crate::metrics::record_rollups_written(rewritten.len());
    }
    Ok(())
}

fn same_figures(old: &MeterRollup, new: &MeterRollup) -> bool {
    MeterRollup {
        revision: new.revision,
        ..*old
    } == *new
}

async fn read_all(
    store: &dyn Store,
    meter: MeterId,
    from_ms: i64,
    to_ms: i64,
    out: &mut Vec<Reading>,
) -> Result<(), StoreError> {
    out.clear();
    let mut cursor = None;
    loop {
        let page = store
            .read_readings(&ReadingQuery {
                meter,
                from_ms,
                to_ms,
                limit: PAGE,
                cursor,
            })
            .await?;
        out.extend(page.readings);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    // Distinct timestamps, oldest first (the store's key order already).
    out.dedup_by_key(|reading| reading.ts_ms);
    Ok(())
}

async fn read_stored(
    store: &dyn Store,
    meter: MeterId,
    from_ms: i64,
    to_ms: i64,
) -> Result<BTreeMap<i64, MeterRollup>, StoreError> {
    let mut stored = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = store
            .read_meter_rollups(&MeterRollupQuery {
                subject: meter,
                granularity: Granularity::Hour,
                from_ms,
                to_ms,
                limit: 1_000,
                cursor,
            })
            .await?;
        for rollup in page.rollups {
            stored.insert(rollup.window_start_ms, rollup);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_are_refused() {
        let meter = MeterId::new("m-1.a:b_c").unwrap();
        let dirty = Dirty {
            partition: 3,
            offset: 99,
            watermark_ms: 1_000,
        };
        let id = entry_id(meter, 7 * HOUR_MS, 99);
        let body = serde_json::to_vec(&dirty).unwrap();
        assert_eq!(parse_entry(&id, &body), Some((meter, 7 * HOUR_MS, dirty)));
        assert_eq!(parse_entry("m-1/5/9", &body), None, "not an hour start");
        assert_eq!(parse_entry("m-1/0/9/1", &body), None);
        assert_eq!(parse_entry("m-1/0/x", &body), None);
        assert_eq!(parse_entry("m-1/0/9", b"{"), None);
    }

    #[test]
    fn dirty_hours_keep_one_entry_per_hour_with_the_highest_offset() {
        let dirty = DirtyHours::default();
        let meter = MeterId::new("m-1").unwrap();
        for (ts_ms, offset, watermark_ms) in [(10, 5, 100), (HOUR_MS - 1, 3, 200), (HOUR_MS, 4, 50)]
        {
            dirty.note(&LateReading {
                meter,
                ts_ms,
                partition: 1,
                offset,
                window_end_ms: 0,
                watermark_ms,
            });
        }
        let mut taken = dirty.take();
        taken.sort_by_key(|(_, hour, _)| *hour);
        assert_eq!(
            taken,
            vec![
                (
                    meter,
                    0,
                    Dirty {
                        partition: 1,
                        offset: 5,
                        watermark_ms: 200
                    }
                ),
                (
                    meter,
                    HOUR_MS,
                    Dirty {
                        partition: 1,
                        offset: 4,
                        watermark_ms: 50
                    }
                ),
            ]
        );
        assert!(dirty.take().is_empty());
    }
}
