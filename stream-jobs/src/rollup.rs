//! The pure core of the rollup: per-meter windows in event time, watermarks, late data
//! and what must be kept for a restart. No timely, no I/O, no clock: the job feeds it
//! tagged readings and per-partition progress, in the order they come, and it answers
//! with rollups to upsert.
//!
//! # Definitions
//!
//! * **Slice**: UTC hour ∩ local day (see [`crate::calendar`]). Readings are kept per
//!   slice, sorted by time, while the slice is open; hour, day and month rollups are sums
//!   of slices.
//! * **Readings** of a window: distinct timestamps; a duplicate timestamp is ignored
//!   (the first in partition order wins).
//! * **Energy**: the readings of a meter sorted by time form register steps; each step is
//!   classified by [`gridpulse_domain::register_step`] (rollover counted, reset and
//!   implausible jump counted 0, never negative) and attributed to the window of the
//!   **later** reading. A step across a gap longer than [`RollupConfig::max_gap_ms`]
//!   counts 0 (no catch-up spike after an outage). The first reading of an open slice
//!   steps from the last reading before it: the previous open slice's, or the meter's
//!   *baseline* (the last reading of the last final slice).
//! * **Power**: min, mean over the readings, max; **voltage**: min and max. Sums are
//!   taken in time order, so a window's figures are a function of its set of readings,
//!   bit for bit, whatever the arrival order.
//! * **Completeness**: `readings / expected`, at most 100 %, with `expected` the window's
//!   length over the reporting interval (a 25-hour DST day expects 25 hours of readings).
//!
//! # Event time
//!
//! Each source partition has a watermark: the highest event time read from it so far
//! minus [`RollupConfig::out_of_orderness_ms`]. A meter's readings all come from one
//! partition, and each reading carries the partition's highest event time *before* it,
//! so whether it is on time, late or too late depends only on its position in the
//! partition — never on batching, worker count or restarts.
//!
//! * A window is **emitted** (revision 0) once its partition's watermark passes its end.
//! * A reading whose slice ended less than [`RollupConfig::allowed_lateness_ms`] before
//!   the watermark is **late**: it is applied, and every already-due window it changes
//!   gets `revision + 1` and is emitted again. Several late readings in one round give
//!   one emission whose revision counts them all, so a (window, revision) pair always
//!   has the same content, and a higher revision is always newer.
//! * A window is **final** once the watermark passes its end plus the lateness. A
//!   reading for a final slice is **too late**: it is counted and reported
//!   ([`InsertOutcome::TooLate`]), never applied and never silently dropped.

use std::collections::BTreeMap;

use gridpulse_domain::{Granularity, MeterId, MeterRollup, register_step};
use jiff::tz::TimeZone;
use rustc_hash::FxHashMap;

use crate::calendar::{Calendar, HOUR_MS, Placement, Window};
use crate::records::{LateReading, NeededOffset, PartitionProgress, SourcedReading};

/// What the rollup computes and how patient it is.
#[derive(Debug, Clone)]
pub struct RollupConfig {
    /// Window sizes to compute (at least one).
    pub granularities: Vec<Granularity>,
    /// Time zone of days and months (hours are UTC hours). Default UTC.
    pub time_zone: TimeZone,
    /// Meters' reporting interval, ms, for expected readings and completeness
    /// (default 10 s).
    pub reporting_interval_ms: i64,
    /// How far event time may go backwards within a partition before a reading counts
    /// as late (default 30 s).
    pub out_of_orderness_ms: i64,
    /// How long after the watermark passed a slice's end a reading still revises it
    /// (default 15 min). Beyond it a reading is too late.
    pub allowed_lateness_ms: i64,
    /// Longest gap between two readings whose register step is counted (default 6 h).
    /// It also bounds how long a silent meter's last reading holds back the commit offset.
    pub max_gap_ms: i64,
    /// Highest power a meter can draw, W, for the plausibility of register steps
    /// (default 100 kW, the actors' default threshold).
    pub max_power_w: f64,
}

impl Default for RollupConfig {
    fn default() -> Self {
        RollupConfig {
            granularities: vec![Granularity::Hour],
            time_zone: TimeZone::UTC,
            reporting_interval_ms: 10_000,
            out_of_orderness_ms: 30_000,
            allowed_lateness_ms: 15 * 60_000,
            max_gap_ms: 6 * HOUR_MS,
            max_power_w: 100_000.0,
        }
    }
}

/// A rollup configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No granularity to compute.
    #[error("`granularities` is empty")]
    NoGranularity,
    /// A duration that must be positive is not.
    #[error("`{field}` must be positive")]
    NotPositive {
        /// The field.
        field: &'static str,
    },
    /// A duration that must not be negative is.
    #[error("`{field}` must not be negative")]
    Negative {
        /// The field.
        field: &'static str,
    },
    /// The reporting interval is longer than an hour.
    #[error("`reporting_interval_ms` must be at most one hour")]
    IntervalTooLong,
    /// The time zone name is not in the bundled tz database.
    #[error("`time_zone`: unknown time zone `{name}`")]
    UnknownTimeZone {
        /// The name.
        name: String,
    },
}

impl RollupConfig {
    /// Checks the configuration once, before a job starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.granularities.is_empty() {
            return Err(ConfigError::NoGranularity);
        }
        if self.reporting_interval_ms <= 0 {
            return Err(ConfigError::NotPositive {
                field: "reporting_interval_ms",
            });
        }
        if self.reporting_interval_ms > HOUR_MS {
            return Err(ConfigError::IntervalTooLong);
        }
        if !(self.max_power_w.is_finite() && self.max_power_w > 0.0) {
            return Err(ConfigError::NotPositive {
                field: "max_power_w",
            });
        }
        for (field, value) in [
            ("out_of_orderness_ms", self.out_of_orderness_ms),
            ("allowed_lateness_ms", self.allowed_lateness_ms),
            ("max_gap_ms", self.max_gap_ms),
        ] {
            if value < 0 {
                return Err(ConfigError::Negative { field });
            }
        }
        Ok(())
    }

    /// Sets the time zone of days and months by IANA name.
    pub fn with_time_zone(mut self, name: &str) -> Result<Self, ConfigError> {
        self.time_zone = jiff::tz::db()
            .get(name)
            .map_err(|_| ConfigError::UnknownTimeZone {
                name: name.to_owned(),
            })?;
        Ok(self)
    }

    fn window_of(&self, placement: &Placement, granularity: Granularity) -> Window {
        match granularity {
            Granularity::Hour => placement.hour,
            Granularity::Day => placement.day,
            Granularity::Month => placement.month,
        }
    }
}

/// What happened to one reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InsertOutcome {
    /// Applied to its open slice.
    Applied,
    /// Its timestamp was already there: ignored.
    Duplicate,
    /// Its slice is final: not applied.
    TooLate(LateReading),
    /// A replayed reading whose slice is final (reported before the checkpoint).
    ReplayedTooLate,
    /// The meter's readings so far came from another partition: refused, because the
    /// meter's watermark is its partition's.
    PartitionConflict {
        /// The partition the meter reads from.
        established: u32,
    },
    /// Outside the calendar's range.
    OutOfRange,
}

/// Counters of one core (one worker's meters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Readings applied.
    pub applied: u64,
    /// Duplicate timestamps ignored.
    pub duplicates: u64,
    /// Too-late readings (counted and reported).
    pub too_late: u64,
    /// Late readings applied (each revises the windows it changes).
    pub late_applied: u64,
    /// Replayed readings (after a restart).
    pub replayed: u64,
    /// Rollups emitted.
    pub rollups: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    ts_ms: i64,
    energy_wh: f64,
    power_w: f64,
}

/// Mergeable figures of a set of readings.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Aggregate {
    readings: u64,
    energy_wh: f64,
    power_sum_w: f64,
    power_min_w: f64,
    power_max_w: f64,
    voltage_min: f64,
    voltage_max: f64,
}

impl Aggregate {
    const EMPTY: Aggregate = Aggregate {
        readings: 0,
        energy_wh: 0.0,
        power_sum_w: 0.0,
        power_min_w: f64::INFINITY,
        power_max_w: f64::NEG_INFINITY,
        voltage_min: f64::INFINITY,
        voltage_max: f64::NEG_INFINITY,
    };

    fn merge(&mut self, other: &Aggregate) {
        self.readings += other.readings;
        self.energy_wh += other.energy_wh;
        self.power_sum_w += other.power_sum_w;
        self.power_min_w = self.power_min_w.min(other.power_min_w);
        self.power_max_w = self.power_max_w.max(other.power_max_w);
        self.voltage_min = self.voltage_min.min(other.voltage_min);
        self.voltage_max = self.voltage_max.max(other.voltage_max);
    }
}

#[derive(Debug)]
struct Slice {
    placement: Placement,
    /// Sorted by time, distinct timestamps.
    samples: Vec<Sample>,
    voltage_min: f64,
    voltage_max: f64,
    /// Changed since its windows were last emitted.
    dirty: bool,
    /// Smallest offset of a reading applied here, and its partition max before it.
    min_offset: u64,
    min_offset_max_before: i64,
}

impl Slice {
    fn aggregate(&self, previous: Option<&Sample>, config: &RollupConfig) -> Aggregate {
        let mut aggregate = Aggregate::EMPTY;
        aggregate.readings = self.samples.len() as u64;
        aggregate.voltage_min = self.voltage_min;
        aggregate.voltage_max = self.voltage_max;
        let mut previous = previous.copied();
        for sample in &self.samples {
            if let Some(previous) = previous {
                aggregate.energy_wh += step_wh(&previous, sample, config);
            }
            aggregate.power_sum_w += sample.power_w;
            aggregate.power_min_w = aggregate.power_min_w.min(sample.power_w);
            aggregate.power_max_w = aggregate.power_max_w.max(sample.power_w);
            previous = Some(*sample);
        }
        aggregate
    }
}

/// Energy counted from `previous` to `next`, Wh.
fn step_wh(previous: &Sample, next: &Sample, config: &RollupConfig) -> f64 {
    let elapsed_ms = next.ts_ms - previous.ts_ms;
    if elapsed_ms > config.max_gap_ms {
        return 0.0;
    }
    register_step(
        previous.energy_wh,
        next.energy_wh,
        elapsed_ms,
        config.max_power_w,
    )
    .counted_wh()
}

#[derive(Debug)]
struct WindowState {
    granularity: Granularity,
    window: Window,
    /// The final slices of the window, merged.
    closed: Aggregate,
    closed_min_offset: u64,
    closed_min_offset_max_before: i64,
    revision: u32,
    dirty: bool,
}

#[derive(Debug, Clone, Copy)]
struct Baseline {
    sample: Sample,
    /// A lower bound of the offset of the reading (the min offset of its slice).
    offset: u64,
    offset_max_before: i64,
}

#[derive(Debug)]
struct MeterState {
    partition: u32,
    baseline: Option<Baseline>,
    /// The latest too-late reading after `baseline`, kept as the previous reading of the
    /// open slice after it (see [`adopt_late`]).
    late_before: Option<Baseline>,
    /// Open slices, sorted by start.
    slices: Vec<Slice>,
    /// Open windows (every granularity).
    windows: Vec<WindowState>,
    /// Index of the slice the last reading went to.
    cursor: usize,
}

impl MeterState {
    fn find_slice(&mut self, ts_ms: i64) -> Option<usize> {
        if let Some(slice) = self.slices.get(self.cursor)
            && slice.placement.slice.contains(ts_ms)
        {
            return Some(self.cursor);
        }
        let idx = self
            .slices
            .iter()
            .position(|slice| slice.placement.slice.contains(ts_ms))?;
        self.cursor = idx;
        Some(idx)
    }

    fn is_empty(&self) -> bool {
        self.baseline.is_none()
            && self.late_before.is_none()
            && self.slices.is_empty()
            && self.windows.is_empty()
    }

    fn needed(&self) -> Option<(u64, i64)> {
        let mut needed: Option<(u64, i64)> = None;
        let mut consider = |offset: u64, max_before: i64| {
            if needed.is_none_or(|(current, _)| offset < current) {
                needed = Some((offset, max_before));
            }
        };
        for kept in self.baseline.iter().chain(self.late_before.iter()) {
            consider(kept.offset, kept.offset_max_before);
        }
        for slice in &self.slices {
            consider(slice.min_offset, slice.min_offset_max_before);
        }
        for window in &self.windows {
            if window.closed.readings > 0 {
                consider(
                    window.closed_min_offset,
                    window.closed_min_offset_max_before,
                );
            }
        }
        needed
    }
}

#[derive(Debug, Default)]
struct PartitionClock {
    max_event_ms: i64,
    /// Meters to look at when the watermark reaches the key.
    timers: BTreeMap<i64, Vec<MeterId>>,
    /// Meters with a due window changed by a late reading.
    dirty_due: Vec<MeterId>,
    replay_done: bool,
}

/// One worker's meters: all their open windows, and the partitions' watermarks.
#[derive(Debug)]
pub struct RollupCore {
    config: RollupConfig,
    calendar: Calendar,
    meters: FxHashMap<MeterId, MeterState>,
    partitions: BTreeMap<u32, PartitionClock>,
    stats: CoreStats,
    scratch: Vec<Aggregate>,
    due: Vec<MeterId>,
}

impl RollupCore {
    /// A core for `config` (validated).
    pub fn new(config: RollupConfig) -> Result<RollupCore, ConfigError> {
        config.validate()?;
        let mut config = config;
        config.granularities.sort();
        config.granularities.dedup();
        Ok(RollupCore {
            calendar: Calendar::new(config.time_zone.clone()),
            config,
            meters: FxHashMap::default(),
            partitions: BTreeMap::new(),
            stats: CoreStats::default(),
            scratch: Vec::new(),
            due: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RollupConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    /// Meters with state (open windows or a baseline).
    pub fn n_meters(&self) -> usize {
        self.meters.len()
    }

    /// The watermark of `partition` (highest event time minus out-of-orderness).
    pub fn watermark_ms(&self, partition: u32) -> Option<i64> {
        self.partitions.get(&partition).map(|clock| {
            clock
                .max_event_ms
                .saturating_sub(self.config.out_of_orderness_ms)
        })
    }

    /// Applies one reading (in partition order for its meter).
    pub fn insert(&mut self, reading: &SourcedReading) -> InsertOutcome {
        let config = &self.config;
        let lateness = config.allowed_lateness_ms;
        let watermark = reading
            .partition_max_before_ms
            .saturating_sub(config.out_of_orderness_ms);
        let too_late = |slice: &Window| slice.end_ms.saturating_add(lateness) <= watermark;
        let late_outcome = |slice: &Window, stats: &mut CoreStats| {
            if reading.replay {
                stats.replayed += 1;
                InsertOutcome::ReplayedTooLate
            } else {
                stats.too_late += 1;
                InsertOutcome::TooLate(LateReading {
                    meter: reading.meter,
                    ts_ms: reading.ts_ms,
                    partition: reading.partition,
                    offset: reading.offset,
                    window_end_ms: slice.end_ms,
                    watermark_ms: watermark,
                })
            }
        };
        let state = match self.meters.get_mut(&reading.meter) {
            Some(state) => state,
            None => {
                let Ok(placement) = self.calendar.place(reading.ts_ms) else {
                    return InsertOutcome::OutOfRange;
                };
                if too_late(&placement.slice) {
                    let clock = self.partitions.entry(reading.partition).or_default();
                    let mut state = MeterState {
                        partition: reading.partition,
                        baseline: None,
                        late_before: None,
                        slices: Vec::new(),
                        windows: Vec::new(),
                        cursor: 0,
                    };
                    adopt_late(&mut state, reading, watermark, config, clock);
                    if !state.is_empty() {
                        self.meters.insert(reading.meter, state);
                    }
                    return late_outcome(&placement.slice, &mut self.stats);
                }
                self.meters
                    .entry(reading.meter)
                    .or_insert_with(|| MeterState {
                        partition: reading.partition,
                        baseline: None,
                        late_before: None,
                        slices: Vec::new(),
                        windows: Vec::new(),
                        cursor: 0,
                    })
            }
        };
        if state.partition != reading.partition {
            return InsertOutcome::PartitionConflict {
                established: state.partition,
            };
        }
        let slice_idx = match state.find_slice(reading.ts_ms) {
            Some(idx) => idx,
            None => {
                let Ok(placement) = self.calendar.place(reading.ts_ms) else {
                    return InsertOutcome::OutOfRange;
                };
                if too_late(&placement.slice) {
                    let clock = self.partitions.entry(reading.partition).or_default();
                    adopt_late(state, reading, watermark, config, clock);
                    return late_outcome(&placement.slice, &mut self.stats);
                }
                let clock = self.partitions.entry(reading.partition).or_default();
                open_slice(state, placement, config, clock, reading.meter)
            }
        };
        let slice = &mut state.slices[slice_idx];
        if too_late(&slice.placement.slice) {
            // Final by this reading's watermark; removed at the end of the round.
            let window = slice.placement.slice;
            let clock = self.partitions.entry(reading.partition).or_default();
            adopt_late(state, reading, watermark, config, clock);
            return late_outcome(&window, &mut self.stats);
        }

        let sample = Sample {
            ts_ms: reading.ts_ms,
            energy_wh: reading.energy_wh,
            power_w: reading.power_w,
        };
        let became_last = match slice.samples.last() {
            None => true,
            Some(last) if last.ts_ms < sample.ts_ms => true,
            Some(_) => match slice
                .samples
                .binary_search_by(|probe| probe.ts_ms.cmp(&sample.ts_ms))
            {
                Ok(_) => {
                    self.stats.duplicates += 1;
                    return InsertOutcome::Duplicate;
                }
                Err(position) => {
                    slice.samples.insert(position, sample);
                    false
                }
            },
        };
        if became_last {
            slice.samples.push(sample);
        }
        slice.voltage_min = slice.voltage_min.min(reading.voltage);
        slice.voltage_max = slice.voltage_max.max(reading.voltage);
        slice.dirty = true;
        if reading.offset < slice.min_offset {
            slice.min_offset = reading.offset;
            slice.min_offset_max_before = reading.partition_max_before_ms;
        }
        // The next open slice's first step now starts from this reading.
        let next_changed = became_last && slice_idx + 1 < state.slices.len();
        if next_changed {
            state.slices[slice_idx + 1].dirty = true;
        }
        if reading.replay {
            self.stats.replayed += 1;
        } else {
            self.stats.applied += 1;
        }

        // Late for a window that is already due: it is revised.
        let slice_end = state.slices[slice_idx].placement.slice.end_ms;
        if watermark >= slice_end || next_changed {
            let mut revised = false;
            let mut affected: [Option<(Granularity, Window)>; 6] = [None; 6];
            let mut n_affected = 0;
            let mut add = |placement: &Placement| {
                for &granularity in &config.granularities {
                    let window = config.window_of(placement, granularity);
                    let key = Some((granularity, window));
                    if !affected[..n_affected].contains(&key) {
                        affected[n_affected] = key;
                        n_affected += 1;
                    }
                }
            };
            add(&state.slices[slice_idx].placement);
            if next_changed {
                add(&state.slices[slice_idx + 1].placement);
            }
            for (granularity, window) in affected[..n_affected].iter().flatten() {
                if watermark < window.end_ms {
                    continue;
                }
                if let Some(state_window) = state
                    .windows
                    .iter_mut()
                    .find(|w| w.granularity == *granularity && w.window == *window)
                {
                    state_window.revision += 1;
                    revised = true;
                }
            }
            if revised {
                self.stats.late_applied += 1;
                let clock = self.partitions.entry(reading.partition).or_default();
                clock.dirty_due.push(reading.meter);
            }
        }
        InsertOutcome::Applied
    }

    /// Applies a partition's progress at the end of a round: advances its watermark,
    /// emits the windows it made due and those revised by late readings, and finalizes
    /// those past their lateness.
    pub fn advance(&mut self, progress: &PartitionProgress, out: &mut Vec<MeterRollup>) {
        let clock = self.partitions.entry(progress.partition).or_default();
        clock.max_event_ms = clock.max_event_ms.max(progress.max_event_ms);
        if progress.fed_until < progress.replay_until {
            // Replaying: rebuild only. Nothing is due before the checkpoint's cut.
            return;
        }
        let silent = progress.replay_until > 0 && !clock.replay_done;
        clock.replay_done = true;
        let watermark = clock
            .max_event_ms
            .saturating_sub(self.config.out_of_orderness_ms);

        self.due.clear();
        let later = clock.timers.split_off(&watermark.saturating_add(1));
        let fired = std::mem::replace(&mut clock.timers, later);
        for (_, meters) in fired {
            self.due.extend(meters);
        }
        self.due.append(&mut clock.dirty_due);
        self.due.sort_unstable();
        self.due.dedup();

        let mut due = std::mem::take(&mut self.due);
        for meter in &due {
            let Some(state) = self.meters.get_mut(meter) else {
                continue;
            };
            if state.partition != progress.partition {
                continue;
            }
            let n_emitted = process_meter(
                *meter,
                state,
                watermark,
                silent,
                &self.config,
                &mut self.scratch,
                clock,
                out,
            );
            self.stats.rollups += n_emitted;
            if state.is_empty() {
                self.meters.remove(meter);
            }
        }
        due.clear();
        self.due = due;
    }

    /// Per partition, the smallest offset this core still needs: what a restart must
    /// read again.
    pub fn needed_offsets(&self) -> Vec<NeededOffset> {
        let mut needed: BTreeMap<u32, (u64, i64)> = BTreeMap::new();
        for state in self.meters.values() {
            if let Some((offset, max_before)) = state.needed() {
                let entry = needed
                    .entry(state.partition)
                    .or_insert((offset, max_before));
                if offset < entry.0 {
                    *entry = (offset, max_before);
                }
            }
        }
        needed
            .into_iter()
            .map(|(partition, (offset, max_event_before_ms))| NeededOffset {
                partition,
                offset,
                max_event_before_ms,
            })
            .collect()
    }
}

/// A too-late reading is not applied to its (final) window, but it may be the previous
/// reading of a later window that is still open: the meter keeps it (`late_before`) and
/// the first energy step of the first slice after it starts from it, exactly as a
/// recomputation of the final windows from stored readings assumes (see
/// [`hours_from_readings`]); a due window it changes is revised, like a late reading's.
///
/// The decision depends only on the reading's position: it is taken against the slices
/// that are not final by the reading's own watermark, never against whether a final
/// slice was already drained (which depends on rounds), so a replay decides the same.
fn adopt_late(
    state: &mut MeterState,
    reading: &SourcedReading,
    watermark: i64,
    config: &RollupConfig,
    clock: &mut PartitionClock,
) {
    let late = Baseline {
        sample: Sample {
            ts_ms: reading.ts_ms,
            energy_wh: reading.energy_wh,
            power_w: reading.power_w,
        },
        offset: reading.offset,
        offset_max_before: reading.partition_max_before_ms,
    };
    if baseline_expiry(&late, config) <= watermark
        || state
            .late_before
            .is_some_and(|kept| kept.sample.ts_ms >= reading.ts_ms)
        || state
            .baseline
            .is_some_and(|baseline| baseline.sample.ts_ms >= reading.ts_ms)
    {
        // Too old to start any step still open, or not the latest reading before one.
        return;
    }
    let mut next = None;
    for (idx, slice) in state.slices.iter().enumerate() {
        let (Some(first), Some(last)) = (slice.samples.first(), slice.samples.last()) else {
            continue;
        };
        if first.ts_ms > reading.ts_ms {
            next = Some(idx);
            break;
        }
        if last.ts_ms >= reading.ts_ms {
            return;
        }
    }
    if let Some(idx) = next {
        let slice = &mut state.slices[idx];
        let lateness = config.allowed_lateness_ms;
        if slice.placement.slice.end_ms.saturating_add(lateness) <= watermark {
            // Final too: both are for the recomputation from the store.
            return;
        }
        slice.dirty = true;
        let placement = slice.placement;
        let mut revised = false;
        for &granularity in &config.granularities {
            let window = config.window_of(&placement, granularity);
            if watermark < window.end_ms {
                continue;
            }
            if let Some(state_window) = state
                .windows
                .iter_mut()
                .find(|w| w.granularity == granularity && w.window == window)
            {
                state_window.revision += 1;
                revised = true;
            }
        }
        if revised {
            clock.dirty_due.push(reading.meter);
        }
    }
    state.late_before = Some(late);
    clock
        .timers
        .entry(baseline_expiry(&late, config))
        .or_default()
        .push(reading.meter);
}

/// The previous reading of `slice`'s first step: the one before it in the meter's
/// slices (`chain`), or the meter's kept too-late reading if that is later.
fn previous_of(chain: Option<Sample>, late: Option<&Baseline>, slice: &Slice) -> Option<Sample> {
    match (late, slice.samples.first()) {
        (Some(late), Some(first))
            if late.sample.ts_ms < first.ts_ms
                && chain.is_none_or(|chain| chain.ts_ms < late.sample.ts_ms) =>
        {
            Some(late.sample)
        }
        _ => chain,
    }
}

/// Hourly rollups of one meter recomputed from its stored readings, for the hours
/// starting at `hours` (UTC hour starts): the figures the job computes for a window that
/// received every one of those readings (energy steps through `register_step`, a step
/// longer than `max_gap_ms` counting 0, the first step from the last reading before the
/// hour), with revision 0 — the caller sets it. `readings` must be sorted by time with
/// distinct timestamps and hold every reading of `[hour - max_gap_ms, hour + 1 h)` for
/// each hour asked. Hours without a reading are left out.
///
/// Hour slices are whole UTC hours: this holds for a job whose days are in a zone with a
/// whole-hour offset, or that computes hours only (`gridpulse run`).
pub fn hours_from_readings(
    meter: MeterId,
    readings: &[gridpulse_domain::Reading],
    hours: &[i64],
    config: &RollupConfig,
) -> Vec<MeterRollup> {
    let mut out = Vec::with_capacity(hours.len());
    for &start_ms in hours {
        let end_ms = start_ms.saturating_add(HOUR_MS);
        let first = readings.partition_point(|reading| reading.ts_ms < start_ms);
        let last = readings.partition_point(|reading| reading.ts_ms < end_ms);
        if first == last {
            continue;
        }
        let sample = |reading: &gridpulse_domain::Reading| Sample {
            ts_ms: reading.ts_ms,
            energy_wh: reading.energy_wh,
            power_w: reading.power_w,
        };
        let mut aggregate = Aggregate::EMPTY;
        aggregate.readings = (last - first) as u64;
        let mut previous = first.checked_sub(1).map(|idx| sample(&readings[idx]));
        for reading in &readings[first..last] {
            let sample = sample(reading);
            if let Some(previous) = previous {
                aggregate.energy_wh += step_wh(&previous, &sample, config);
            }
            aggregate.power_sum_w += sample.power_w;
            aggregate.power_min_w = aggregate.power_min_w.min(sample.power_w);
            aggregate.power_max_w = aggregate.power_max_w.max(sample.power_w);
            aggregate.voltage_min = aggregate.voltage_min.min(reading.voltage);
            aggregate.voltage_max = aggregate.voltage_max.max(reading.voltage);
            previous = Some(sample);
        }
        // The job merges a window's final slice into an empty aggregate: same sums.
        let mut merged = Aggregate::EMPTY;
        merged.merge(&aggregate);
        let window = WindowState {
            granularity: Granularity::Hour,
            window: Window { start_ms, end_ms },
            closed: Aggregate::EMPTY,
            closed_min_offset: u64::MAX,
            closed_min_offset_max_before: i64::MIN,
            revision: 0,
            dirty: false,
        };
        out.push(rollup(meter, &window, &merged, config));
    }
    out
}

/// Opens the slice of `placement` (and its windows, and their timers); returns its index.
fn open_slice(
    state: &mut MeterState,
    placement: Placement,
    config: &RollupConfig,
    clock: &mut PartitionClock,
    meter: MeterId,
) -> usize {
    let lateness = config.allowed_lateness_ms;
    let mut times: [i64; 8] = [0; 8];
    let mut n_times = 0;
    let mut add_time = |time: i64| {
        if !times[..n_times].contains(&time) {
            times[n_times] = time;
            n_times += 1;
        }
    };
    add_time(placement.slice.end_ms);
    add_time(placement.slice.end_ms.saturating_add(lateness));
    for &granularity in &config.granularities {
        let window = config.window_of(&placement, granularity);
        if !state
            .windows
            .iter()
            .any(|w| w.granularity == granularity && w.window == window)
        {
            state.windows.push(WindowState {
                granularity,
                window,
                closed: Aggregate::EMPTY,
                closed_min_offset: u64::MAX,
                closed_min_offset_max_before: i64::MIN,
                revision: 0,
                dirty: true,
            });
            add_time(window.end_ms);
            add_time(window.end_ms.saturating_add(lateness));
        }
    }
    for &time in &times[..n_times] {
        clock.timers.entry(time).or_default().push(meter);
    }
    let capacity = (placement.slice.len_ms() / config.reporting_interval_ms).clamp(1, 4096);
    let slice = Slice {
        placement,
        samples: Vec::with_capacity(capacity as usize),
        voltage_min: f64::INFINITY,
        voltage_max: f64::NEG_INFINITY,
        dirty: true,
        min_offset: u64::MAX,
        min_offset_max_before: i64::MIN,
    };
    let idx = state
        .slices
        .iter()
        .position(|s| s.placement.slice.start_ms > placement.slice.start_ms)
        .unwrap_or(state.slices.len());
    state.slices.insert(idx, slice);
    // A new slice after an older one changes nothing there; one before a newer one
    // changes the newer one's first step.
    if let Some(next) = state.slices.get_mut(idx + 1) {
        next.dirty = true;
    }
    state.cursor = idx;
    idx
}

/// Emits `meter`'s due and changed windows and finalizes what is past its lateness;
/// returns how many rollups it emitted.
#[allow(clippy::too_many_arguments)]
fn process_meter(
    meter: MeterId,
    state: &mut MeterState,
    watermark: i64,
    silent: bool,
    config: &RollupConfig,
    scratch: &mut Vec<Aggregate>,
    clock: &mut PartitionClock,
    out: &mut Vec<MeterRollup>,
) -> u64 {
    let lateness = config.allowed_lateness_ms;
    let mut n_emitted = 0;

    // Changed slices make their windows changed.
    for slice in state.slices.iter_mut().filter(|slice| slice.dirty) {
        slice.dirty = false;
        for &granularity in &config.granularities {
            let window = config.window_of(&slice.placement, granularity);
            if let Some(w) = state
                .windows
                .iter_mut()
                .find(|w| w.granularity == granularity && w.window == window)
            {
                w.dirty = true;
            }
        }
    }

    // Emit due windows that changed.
    if state
        .windows
        .iter()
        .any(|w| w.dirty && w.window.end_ms <= watermark)
    {
        scratch.clear();
        let mut previous = state.baseline.map(|baseline| baseline.sample);
        for slice in &state.slices {
            let before = previous_of(previous, state.late_before.as_ref(), slice);
            scratch.push(slice.aggregate(before.as_ref(), config));
            previous = slice.samples.last().copied();
        }
        for w in state
            .windows
            .iter_mut()
            .filter(|w| w.dirty && w.window.end_ms <= watermark)
        {
            w.dirty = false;
            let is_final = w.window.end_ms.saturating_add(lateness) <= watermark;
            if silent && is_final {
                // Its final rollup was stored before the checkpoint.
                continue;
            }
            let mut aggregate = w.closed;
            for (slice, slice_aggregate) in state.slices.iter().zip(scratch.iter()) {
                if config.window_of(&slice.placement, w.granularity) == w.window {
                    aggregate.merge(slice_aggregate);
                }
            }
            out.push(rollup(meter, w, &aggregate, config));
            n_emitted += 1;
        }
    }

    // Finalize slices past their lateness, oldest first.
    let mut n_final = 0;
    let mut previous = state.baseline.map(|baseline| baseline.sample);
    for slice in &state.slices {
        if slice.placement.slice.end_ms.saturating_add(lateness) > watermark {
            break;
        }
        let before = previous_of(previous, state.late_before.as_ref(), slice);
        let aggregate = slice.aggregate(before.as_ref(), config);
        for &granularity in &config.granularities {
            let window = config.window_of(&slice.placement, granularity);
            if let Some(w) = state
                .windows
                .iter_mut()
                .find(|w| w.granularity == granularity && w.window == window)
            {
                w.closed.merge(&aggregate);
                if slice.min_offset < w.closed_min_offset {
                    w.closed_min_offset = slice.min_offset;
                    w.closed_min_offset_max_before = slice.min_offset_max_before;
                }
            }
        }
        if let Some(last) = slice.samples.last() {
            previous = Some(*last);
            state.baseline = Some(Baseline {
                sample: *last,
                offset: slice.min_offset,
                offset_max_before: slice.min_offset_max_before,
            });
        }
        n_final += 1;
    }
    if n_final > 0 {
        state.slices.drain(..n_final);
        state.cursor = 0;
        if let Some(baseline) = &state.baseline {
            let expiry = baseline_expiry(baseline, config);
            clock.timers.entry(expiry).or_default().push(meter);
        }
    }

    // Drop final windows (emitted above if they changed).
    state
        .windows
        .retain(|w| w.window.end_ms.saturating_add(lateness) > watermark);

    // Forget a baseline no future reading can step from.
    if let Some(baseline) = &state.baseline
        && baseline_expiry(baseline, config) <= watermark
    {
        state.baseline = None;
    }
    // And a kept too-late reading that is no longer the latest, or too old.
    if let Some(late) = &state.late_before
        && (baseline_expiry(late, config) <= watermark
            || state
                .baseline
                .is_some_and(|baseline| baseline.sample.ts_ms >= late.sample.ts_ms))
    {
        state.late_before = None;
    }
    n_emitted
}

/// The watermark from which no accepted reading can be within `max_gap_ms` of the
/// baseline: an accepted reading's slice (at most an hour long) ends after
/// `watermark - lateness`.
fn baseline_expiry(baseline: &Baseline, config: &RollupConfig) -> i64 {
    baseline
        .sample
        .ts_ms
        .saturating_add(config.max_gap_ms)
        .saturating_add(config.allowed_lateness_ms)
        .saturating_add(HOUR_MS)
}

fn rollup(
    meter: MeterId,
    window: &WindowState,
    aggregate: &Aggregate,
    config: &RollupConfig,
) -> MeterRollup {
    let expected_readings = (window.window.len_ms() / config.reporting_interval_ms).max(1) as u64;
    let readings = aggregate.readings;
    MeterRollup {
        meter,
        granularity: window.granularity,
        window_start_ms: window.window.start_ms,
        window_end_ms: window.window.end_ms,
        readings,
        energy_wh: aggregate.energy_wh,
        power_min_w: aggregate.power_min_w,
        power_avg_w: if readings == 0 {
            0.0
        } else {
            aggregate.power_sum_w / readings as f64
        },
        power_max_w: aggregate.power_max_w,
        voltage_min: aggregate.voltage_min,
        voltage_max: aggregate.voltage_max,
        expected_readings,
        completeness_pct: (readings as f64 * 100.0 / expected_readings as f64).min(100.0),
        revision: window.revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_773_075_600_000; // an hour boundary

    fn reading(offset: u64, ts_ms: i64, energy_wh: f64, max_before: i64) -> SourcedReading {
        SourcedReading {
            meter: MeterId::new("m-1").unwrap(),
            ts_ms,
            voltage: 230.0 + offset as f64,
            power_w: 100.0 * (offset + 1) as f64,
            energy_wh,
            partition: 0,
            offset,
            partition_max_before_ms: max_before,
            replay: false,
        }
    }

    fn advance(core: &mut RollupCore, max_event_ms: i64) -> Vec<MeterRollup> {
        let mut out = Vec::new();
        core.advance(
            &PartitionProgress {
                partition: 0,
                fed_until: 0,
                max_event_ms,
                replay_until: 0,
                checkpoint: false,
            },
            &mut out,
        );
        out
    }

    fn core() -> RollupCore {
        RollupCore::new(RollupConfig {
            out_of_orderness_ms: 0,
            allowed_lateness_ms: 10 * 60_000,
            ..RollupConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn a_step_counts_in_the_window_of_its_later_reading() {
        let mut core = core();
        let none = i64::MIN;
        assert_eq!(
            core.insert(&reading(0, T0 + 3_590_000, 100.0, none)),
            InsertOutcome::Applied
        );
        let max = T0 + 3_590_000;
        assert_eq!(
            core.insert(&reading(1, T0 + 3_600_000, 101.0, max)),
            InsertOutcome::Applied
        );
        assert_eq!(
            core.insert(&reading(2, T0 + 3_610_000, 103.0, max + 10_000)),
            InsertOutcome::Applied
        );
        assert_eq!(
            core.insert(&reading(3, T0 + 3_610_000, 999.0, max + 20_000)),
            InsertOutcome::Duplicate
        );
        let out = advance(&mut core, T0 + 2 * HOUR_MS);
        assert_eq!(out.len(), 2);
        let (first, second) = (&out[0], &out[1]);
        assert_eq!((first.readings, first.energy_wh), (1, 0.0));
        assert_eq!((second.readings, second.energy_wh), (2, 3.0));
        assert_eq!(second.expected_readings, 360);
        assert_eq!(second.power_min_w, 200.0);
        assert_eq!(second.power_avg_w, 250.0);
        assert_eq!(second.voltage_max, 232.0);
        assert!((second.completeness_pct - 200.0 / 360.0).abs() < 1e-12);
        assert_eq!(core.stats().duplicates, 1);
    }

    #[test]
    fn late_readings_revise_due_windows_and_too_late_ones_are_refused() {
        let mut core = core();
        core.insert(&reading(0, T0 + 10_000, 10.0, i64::MIN));
        core.insert(&reading(1, T0 + HOUR_MS + 5_000, 20.0, T0 + 10_000));
        let out = advance(&mut core, T0 + HOUR_MS + 5_000);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].revision, out[0].readings), (0, 1));
        // Late, within lateness: the first hour gets revision 1, and the next hour's first
        // step now starts from it (not due: no revision there).
        let max = T0 + HOUR_MS + 5_000;
        assert_eq!(
            core.insert(&reading(2, T0 + 20_000, 12.0, max)),
            InsertOutcome::Applied
        );
        let out = advance(&mut core, max);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].revision, out[0].readings, out[0].energy_wh),
            (1, 2, 2.0)
        );
        // Past the lateness: refused and reported.
        let max = T0 + HOUR_MS + 11 * 60_000;
        let _ = advance(&mut core, max);
        match core.insert(&reading(3, T0 + 30_000, 13.0, max)) {
            InsertOutcome::TooLate(late) => assert_eq!(late.window_end_ms, T0 + HOUR_MS),
            other => panic!("{other:?}"),
        }
        // The next hour steps from the too-late reading (13 → 20), the last before it.
        let out = advance(&mut core, T0 + 3 * HOUR_MS);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].readings, out[0].energy_wh, out[0].revision),
            (1, 7.0, 0)
        );
        assert_eq!(core.stats().too_late, 1);
    }

    #[test]
    fn a_too_late_reading_becomes_the_start_of_the_next_open_step() {
        let mut core = core();
        core.insert(&reading(0, T0 + 10_000, 10.0, i64::MIN));
        let max = T0 + 2 * HOUR_MS + 5_000;
        core.insert(&reading(1, max, 30.0, T0 + 10_000));
        let out = advance(&mut core, max);
        assert_eq!(out.len(), 1, "hour 0 emitted and final: {out:?}");
        // Too late for hour 0, but the last reading before hour 2's first one.
        assert!(matches!(
            core.insert(&reading(2, T0 + 50 * 60_000, 20.0, max)),
            InsertOutcome::TooLate(_)
        ));
        let out = advance(&mut core, T0 + 4 * HOUR_MS);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].window_start_ms, T0 + 2 * HOUR_MS);
        assert_eq!(
            out[0].energy_wh, 10.0,
            "steps from the too-late reading (20 → 30)"
        );
        // An older too-late reading than the baseline changes nothing.
        let mut core = core_with_baseline_after_late();
        let out = advance(&mut core, T0 + 4 * HOUR_MS);
        assert_eq!(out[0].energy_wh, 20.0, "{out:?}");
    }

    fn core_with_baseline_after_late() -> RollupCore {
        let mut core = core();
        core.insert(&reading(0, T0 + 50 * 60_000, 10.0, i64::MIN));
        let max = T0 + 2 * HOUR_MS + 5_000;
        core.insert(&reading(1, max, 30.0, T0 + 50 * 60_000));
        let _ = advance(&mut core, max);
        assert!(matches!(
            core.insert(&reading(2, T0 + 10_000, 5.0, max)),
            InsertOutcome::TooLate(_)
        ));
        core
    }

    #[test]
    fn hours_from_readings_match_the_job() {
        let config = RollupConfig::default();
        let meter = MeterId::new("m-1").unwrap();
        let mut job = RollupCore::new(config.clone()).unwrap();
        let mut stored = Vec::new();
        let mut max_before = i64::MIN;
        for k in 0..1_500i64 {
            let ts = T0 - 20 * 60_000 + k * 10_000 + (k % 7) * 13;
            let energy = 1_000.0 + k as f64 * 0.37 + if k == 700 { 9_000.0 } else { 0.0 };
            let reading = gridpulse_domain::Reading {
                meter,
                ts_ms: ts,
                voltage: 228.0 + (k % 11) as f64,
                current: 1.0,
                power_w: 100.0 + (k % 13) as f64 * 7.5,
                energy_wh: energy,
                credit: None,
                seq: None,
                backfill: false,
            };
            stored.push(reading);
            job.insert(&SourcedReading::new(
                &reading, 0, k as u64, max_before, false,
            ));
            max_before = max_before.max(ts);
        }
        let mut out = Vec::new();
        job.advance(
            &PartitionProgress {
                partition: 0,
                fed_until: 1_500,
                max_event_ms: i64::MAX / 2,
                replay_until: 0,
                checkpoint: false,
            },
            &mut out,
        );
        let hours: Vec<i64> = (-1..4).map(|h| T0 + h * HOUR_MS).collect();
        let recomputed = hours_from_readings(meter, &stored, &hours, &config);
        assert_eq!(recomputed.len(), 5);
        out.sort_by_key(|rollup| rollup.window_start_ms);
        assert_eq!(out, recomputed, "bit for bit");
        // An hour without readings is left out.
        assert!(hours_from_readings(meter, &stored, &[T0 + 9 * HOUR_MS], &config).is_empty());
    }

    #[test]
    fn a_silent_meter_stops_holding_offsets() {
        let mut core = core();
        core.insert(&reading(5, T0 + 10_000, 10.0, i64::MIN));
        assert_eq!(core.needed_offsets()[0].offset, 5);
        let _ = advance(&mut core, T0 + 2 * HOUR_MS);
        // Final, but its last reading is the baseline of the next step.
        assert_eq!(core.needed_offsets()[0].offset, 5);
        let _ = advance(&mut core, T0 + 9 * HOUR_MS);
        assert!(core.needed_offsets().is_empty());
        assert_eq!(core.n_meters(), 0);
    }
}
