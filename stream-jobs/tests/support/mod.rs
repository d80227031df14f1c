//! Shared by the stream-job tests: a deterministic generator of awkward readings, a
//! collecting `JobOutput`, and a straightforward reference aggregation written from the
//! definitions in `rollup.rs`'s docs (sort, dedup, step, sum), not from the job's code.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridpulse_domain::{
    Granularity, Limits, MeterId, MeterRollup, Reading, parse_reading, register_step,
};
use gridpulse_stream_jobs::{
    Calendar, JobConfig, JobOutput, JobReport, LateReading, LineError, MemorySource,
    PartitionCheckpoint, RollupConfig, run,
};

pub const HOUR_MS: i64 = 3_600_000;
/// 2026-03-09T17:00:00Z: a Kolkata midnight (18:30Z) falls 90 minutes in.
pub const START_MS: i64 = 1_773_075_600_000;

/// Key of an upsert.
pub type Key = (MeterId, Granularity, i64);

/// Small deterministic PRNG (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

pub fn line(meter: &str, ts_ms: i64, voltage: f64, power_w: f64, energy_wh: f64) -> String {
    let current = power_w / voltage;
    format!(
        r#"{{"meter":"{meter}","ts_ms":{ts_ms},"voltage":{voltage},"current":{current},"power_w":{power_w},"energy_wh":{energy_wh}}}"#
    )
}

/// Lines per partition, in offset order.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub partitions: Vec<(u32, Vec<String>)>,
}

impl Dataset {
    pub fn source(&self) -> MemorySource {
        self.source_prefix(usize::MAX)
    }

    /// The first `fraction` of each partition's lines.
    pub fn source_prefix(&self, n_lines: usize) -> MemorySource {
        MemorySource::new(
            self.partitions
                .iter()
                .map(|(partition, lines)| {
                    let mut bytes = Vec::new();
                    for line in lines.iter().take(n_lines) {
                        bytes.extend_from_slice(line.as_bytes());
                        bytes.push(b'\n');
                    }
                    (*partition, bytes)
                })
                .collect(),
        )
    }

    pub fn n_lines(&self) -> usize {
        self.partitions.iter().map(|(_, lines)| lines.len()).sum()
    }
}

/// What kind of trouble the generator adds.
#[derive(Debug, Clone, Copy)]
pub struct Trouble {
    /// Percent of readings swapped with a neighbour (inside out-of-orderness).
    pub swap_pct: u64,
    /// Percent of readings delayed by `late_delay_ms` of partition time.
    pub late_pct: u64,
    pub late_delay_ms: i64,
    /// Percent of readings delayed by `too_late_delay_ms`.
    pub too_late_pct: u64,
    pub too_late_delay_ms: i64,
    /// Percent of readings sent twice (the copy a little later, other values).
    pub duplicate_pct: u64,
    /// Percent of lines followed by a bad line.
    pub bad_pct: u64,
}

impl Trouble {
    pub const NONE: Trouble = Trouble {
        swap_pct: 0,
        late_pct: 0,
        late_delay_ms: 0,
        too_late_pct: 0,
        too_late_delay_ms: 0,
        duplicate_pct: 0,
        bad_pct: 0,
    };
    pub const ALL: Trouble = Trouble {
        swap_pct: 5,
        late_pct: 2,
        late_delay_ms: 5 * 60_000,
        too_late_pct: 1,
        too_late_delay_ms: 40 * 60_000,
        duplicate_pct: 2,
        bad_pct: 1,
    };
}

/// `n_meters` meters over `n_partitions` partitions, one reading per 10 s for `hours`,
/// with register resets, a rollover, an implausible jump, gaps (one longer than an hour)
/// and the given trouble.
pub fn generate(
    seed: u64,
    n_meters: usize,
    n_partitions: u32,
    hours: i64,
    trouble: Trouble,
) -> Dataset {
    let mut rng = Rng::new(seed);
    // (partition time, tiebreak, line)
    let mut by_partition: BTreeMap<u32, Vec<(i64, u64, String)>> = BTreeMap::new();
    let end_ms = START_MS + hours * HOUR_MS;
    for meter_idx in 0..n_meters {
        let meter = format!("meter-{meter_idx}");
        let partition = meter_idx as u32 % n_partitions;
        let lines = by_partition.entry(partition).or_default();
        // Meter 1 starts near the top of a 6-digit Wh register and rolls over.
        let mut energy_wh = if meter_idx == 1 {
            999_000.0
        } else {
            1000.0 * meter_idx as f64
        };
        let mut ts_ms = START_MS + (meter_idx as i64 * 1_337) % 10_000;
        let mut n = 0u64;
        while ts_ms < end_ms && n < 100_000 {
            n += 1;
            let power_w = 200.0 + rng.below(3000) as f64 + (rng.below(100) as f64) / 8.0;
            let voltage = 225.0 + (rng.below(200) as f64) / 10.0;
            energy_wh += power_w * 10.0 / 3600.0;
            if energy_wh >= 1_000_000.0 {
                energy_wh -= 1_000_000.0;
            }
            let mut reported_wh = energy_wh;
            // Register reset on meter 2 half-way.
            if meter_idx == 2 && ts_ms >= START_MS + hours * HOUR_MS / 2 {
                reported_wh = energy_wh - 1000.0 * 2.0 + 3.0;
                if reported_wh < 0.0 {
                    reported_wh = 0.0;
                }
            }
            // A one-off implausible jump on meter 3.
            if meter_idx == 3 && n == 200 {
                reported_wh += 5_000_000.0;
            }
            let text = line(&meter, ts_ms, voltage, power_w, reported_wh);
            let tiebreak = rng.next();
            let mut position = ts_ms;
            if rng.chance(trouble.too_late_pct) {
                position += trouble.too_late_delay_ms;
            } else if rng.chance(trouble.late_pct) {
                position += trouble.late_delay_ms;
            }
            lines.push((position, tiebreak, text));
            if rng.chance(trouble.duplicate_pct) {
                let copy = line(&meter, ts_ms, voltage + 1.0, power_w + 1.0, reported_wh);
                lines.push((position + 3_000, rng.next(), copy));
            }
            // Gaps: meter 4 is silent for 20 minutes every hour; meter 5 for 90 minutes once.
            let mut step = 10_000;
            if meter_idx == 4 && (ts_ms - START_MS) % HOUR_MS < 10_000 && n > 1 {
                step += 20 * 60_000;
            }
            if meter_idx == 5 && n == 300 {
                step += 90 * 60_000;
            }
            ts_ms += step;
        }
    }
    let mut partitions = Vec::new();
    for (partition, mut lines) in by_partition {
        lines.sort_by_key(|(position, tiebreak, _)| (*position, *tiebreak));
        let mut texts: Vec<String> = lines.into_iter().map(|(_, _, text)| text).collect();
        // Swaps with the next line: out of order within a few seconds.
        for idx in 0..texts.len().saturating_sub(1) {
            if rng.chance(trouble.swap_pct) {
                texts.swap(idx, idx + 1);
            }
        }
        let mut with_bad = Vec::with_capacity(texts.len());
        for text in texts {
            with_bad.push(text);
            if rng.chance(trouble.bad_pct) {
                with_bad.push(match rng.below(4) {
                    0 => "this is not json".to_owned(),
                    1 => r#"{"meter":"meter-0","ts_ms":"soon","voltage":230,"current":1,"power_w":230,"energy_wh":1}"#.to_owned(),
                    2 => r#"{"meter":"meter-0","ts_ms":1773075600000,"voltage":-5,"current":1,"power_w":230,"energy_wh":1}"#.to_owned(),
                    _ => r#"{"meter":"bad meter id","ts_ms":1773075600000,"voltage":230,"current":1,"power_w":230,"energy_wh":1}"#.to_owned(),
                });
            }
        }
        partitions.push((partition, with_bad));
    }
    Dataset { partitions }
}

/// Everything a job handed out.
#[derive(Debug, Default)]
pub struct Collected {
    pub rollups: Vec<MeterRollup>,
    pub errors: Vec<LineError>,
    pub late: Vec<LateReading>,
    pub checkpoints: Vec<PartitionCheckpoint>,
}

#[derive(Debug, Default)]
pub struct Collector(pub Mutex<Collected>);

impl JobOutput for Collector {
    fn rollups(&self, rollups: &[MeterRollup]) {
        self.0
            .lock()
            .expect("collector lock")
            .rollups
            .extend_from_slice(rollups);
    }
    fn error(&self, error: &LineError) {
        self.0
            .lock()
            .expect("collector lock")
            .errors
            .push(error.clone());
    }
    fn late(&self, late: &LateReading) {
        self.0.lock().expect("collector lock").late.push(*late);
    }
    fn checkpoint(&self, checkpoint: &PartitionCheckpoint) {
        self.0
            .lock()
            .expect("collector lock")
            .checkpoints
            .push(*checkpoint);
    }
}

pub fn test_rollup_config() -> RollupConfig {
    RollupConfig {
        granularities: vec![Granularity::Hour, Granularity::Day],
        out_of_orderness_ms: 20_000,
        allowed_lateness_ms: 10 * 60_000,
        max_gap_ms: HOUR_MS,
        ..RollupConfig::default()
    }
}

pub fn job_config(workers: usize, rollup: RollupConfig) -> JobConfig {
    JobConfig {
        workers,
        rollup,
        lines_per_round: 97,
        checkpoint_every_rounds: 3,
        close_windows_at_end: true,
        ..JobConfig::default()
    }
}

/// Runs a job on `source` with a watchdog; returns what it handed out.
pub fn run_job(config: JobConfig, source: MemorySource) -> (Collected, JobReport) {
    let collector = Arc::new(Collector::default());
    let started = Instant::now();
    let report = run(config, Arc::new(source), collector.clone()).expect("job runs");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "job took too long"
    );
    let collected = std::mem::take(&mut *collector.0.lock().expect("collector lock"));
    (collected, report)
}

/// Upserts rollups into a map by key; checks that revisions never go backwards and that
/// one (key, revision) always has one content.
pub fn upsert(map: &mut BTreeMap<Key, MeterRollup>, rollups: &[MeterRollup]) {
    for rollup in rollups {
        let key = (rollup.meter, rollup.granularity, rollup.window_start_ms);
        if let Some(old) = map.get(&key) {
            assert!(
                old.revision <= rollup.revision,
                "revision went backwards: {old:?} then {rollup:?}"
            );
            if old.revision == rollup.revision {
                assert_eq!(old, rollup, "same revision, different content");
            }
        }
        map.insert(key, rollup.clone());
    }
}

pub fn upserted(rollups: &[MeterRollup]) -> BTreeMap<Key, MeterRollup> {
    let mut map = BTreeMap::new();
    upsert(&mut map, rollups);
    map
}

/// The reference's answer.
#[derive(Debug, Default)]
pub struct Expected {
    pub rollups: BTreeMap<Key, MeterRollup>,
    /// (partition, offset) of too-late readings.
    pub too_late: Vec<(u32, u64)>,
    /// (partition, offset) of bad lines.
    pub bad: Vec<(u32, u64)>,
    pub duplicates: u64,
}

#[derive(Debug, Clone, Copy)]
struct Accepted {
    reading: Reading,
    /// Partition max event time before it, minus out-of-orderness.
    watermark: i64,
    order: usize,
}

/// The reference aggregation: every window of every reading accepted when the input is
/// complete (`close_windows_at_end`).
pub fn reference(dataset: &Dataset, config: &RollupConfig) -> Expected {
    let mut expected = Expected::default();
    let mut calendar = Calendar::new(config.time_zone.clone());
    let limits = Limits::default();
    // Per meter, accepted readings in arrival order.
    let mut accepted: BTreeMap<MeterId, Vec<Accepted>> = BTreeMap::new();
    let mut order = 0;
    for (partition, lines) in &dataset.partitions {
        let mut max_event = i64::MIN;
        for (offset, text) in lines.iter().enumerate() {
            let Ok(reading) = parse_reading(text.as_bytes(), i64::MAX, &limits) else {
                expected.bad.push((*partition, offset as u64));
                continue;
            };
            let watermark = max_event.saturating_sub(config.out_of_orderness_ms);
            max_event = max_event.max(reading.ts_ms);
            let slice = calendar
                .place(reading.ts_ms)
                .expect("in calendar range")
                .slice;
            if slice.end_ms + config.allowed_lateness_ms <= watermark {
                expected.too_late.push((*partition, offset as u64));
                continue;
            }
            let list = accepted.entry(reading.meter).or_default();
            if list.iter().any(|a| a.reading.ts_ms == reading.ts_ms) {
                expected.duplicates += 1;
                continue;
            }
            list.push(Accepted {
                reading,
                watermark,
                order,
            });
            order += 1;
        }
    }

    for (meter, list) in &accepted {
        let mut sorted = list.clone();
        sorted.sort_by_key(|a| a.reading.ts_ms);
        // Per slice: (slice window, placement, readings in time order with their step).
        let mut slices: BTreeMap<i64, (gridpulse_stream_jobs::Placement, Vec<(Reading, f64)>)> =
            BTreeMap::new();
        let mut previous: Option<Reading> = None;
        for a in &sorted {
            let step = match previous {
                Some(p) if a.reading.ts_ms - p.ts_ms <= config.max_gap_ms => register_step(
                    p.energy_wh,
                    a.reading.energy_wh,
                    a.reading.ts_ms - p.ts_ms,
                    config.max_power_w,
                )
                .counted_wh(),
                _ => 0.0,
            };
            previous = Some(a.reading);
            let placement = calendar.place(a.reading.ts_ms).expect("in calendar range");
            slices
                .entry(placement.slice.start_ms)
                .or_insert((placement, Vec::new()))
                .1
                .push((a.reading, step));
        }
        for &granularity in &config.granularities {
            let window_of = |p: &gridpulse_stream_jobs::Placement| match granularity {
                Granularity::Hour => p.hour,
                Granularity::Day => p.day,
                Granularity::Month => p.month,
            };
            // Fold slices in time order.
            let mut windows: BTreeMap<i64, (gridpulse_stream_jobs::Window, [f64; 7], u64)> =
                BTreeMap::new();
            for (placement, readings) in slices.values() {
                let mut energy = 0.0;
                let mut power_sum = 0.0;
                let mut power_min = f64::INFINITY;
                let mut power_max = f64::NEG_INFINITY;
                let mut voltage_min = f64::INFINITY;
                let mut voltage_max = f64::NEG_INFINITY;
                for (reading, step) in readings {
                    energy += step;
                    power_sum += reading.power_w;
                    power_min = power_min.min(reading.power_w);
                    power_max = power_max.max(reading.power_w);
                    voltage_min = voltage_min.min(reading.voltage);
                    voltage_max = voltage_max.max(reading.voltage);
                }
                let window = window_of(placement);
                let entry = windows.entry(window.start_ms).or_insert((
                    window,
                    [
                        0.0,
                        0.0,
                        f64::INFINITY,
                        f64::NEG_INFINITY,
                        f64::INFINITY,
                        f64::NEG_INFINITY,
                        0.0,
                    ],
                    0,
                ));
                entry.1[0] += energy;
                entry.1[1] += power_sum;
                entry.1[2] = entry.1[2].min(power_min);
                entry.1[3] = entry.1[3].max(power_max);
                entry.1[4] = entry.1[4].min(voltage_min);
                entry.1[5] = entry.1[5].max(voltage_max);
                entry.2 += readings.len() as u64;
            }
            for (window, sums, n_readings) in windows.values() {
                let revision = revision_of(list, &mut calendar, granularity, *window);
                let expected_readings = (window.len_ms() / config.reporting_interval_ms) as u64;
                expected.rollups.insert(
                    (*meter, granularity, window.start_ms),
                    MeterRollup {
                        meter: *meter,
                        granularity,
                        window_start_ms: window.start_ms,
                        window_end_ms: window.end_ms,
                        readings: *n_readings,
                        energy_wh: sums[0],
                        power_min_w: sums[2],
                        power_avg_w: sums[1] / *n_readings as f64,
                        power_max_w: sums[3],
                        voltage_min: sums[4],
                        voltage_max: sums[5],
                        expected_readings,
                        completeness_pct: (*n_readings as f64 * 100.0 / expected_readings as f64)
                            .min(100.0),
                        revision,
                    },
                );
            }
        }
    }
    expected
}

/// Revisions of one window: accepted readings that arrived when the window was already
/// due (watermark at or past its end) and changed it — by being in it, or by becoming the
/// reading right before the first reading of a later slice in it.
fn revision_of(
    list: &[Accepted],
    calendar: &mut Calendar,
    granularity: Granularity,
    window: gridpulse_stream_jobs::Window,
) -> u32 {
    let window_of = |p: &gridpulse_stream_jobs::Placement| match granularity {
        Granularity::Hour => p.hour,
        Granularity::Day => p.day,
        Granularity::Month => p.month,
    };
    let mut revision = 0;
    for (idx, a) in list.iter().enumerate() {
        if a.watermark < window.end_ms {
            continue;
        }
        let placement = calendar.place(a.reading.ts_ms).expect("in calendar range");
        let mut changes = window_of(&placement) == window;
        if !changes {
            // Readings that arrived before it.
            let earlier = &list[..idx];
            let in_slice_before = earlier.iter().any(|b| {
                placement.slice.contains(b.reading.ts_ms) && b.reading.ts_ms > a.reading.ts_ms
            });
            if !in_slice_before {
                // The next slice (in time) holding an earlier-arrived reading.
                let next = earlier
                    .iter()
                    .filter(|b| b.reading.ts_ms >= placement.slice.end_ms)
                    .map(|b| calendar.place(b.reading.ts_ms).expect("in calendar range"))
                    .min_by_key(|p| p.slice.start_ms);
                if let Some(next) = next {
                    changes = window_of(&next) == window;
                }
            }
        }
        if changes {
            revision += 1;
        }
    }
    revision
}

/// Compares two rollup maps field by field with a readable failure.
pub fn assert_same(actual: &BTreeMap<Key, MeterRollup>, expected: &BTreeMap<Key, MeterRollup>) {
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !actual.contains_key(k))
        .collect();
    let extra: Vec<_> = actual
        .keys()
        .filter(|k| !expected.contains_key(k))
        .collect();
    assert!(missing.is_empty(), "missing rollups: {missing:?}");
    assert!(extra.is_empty(), "unexpected rollups: {extra:?}");
    for (key, want) in expected {
        let got = &actual[key];
        assert_eq!(got, want, "rollup {key:?} differs");
    }
}
