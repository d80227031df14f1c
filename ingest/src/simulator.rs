//! A deterministic fleet of simulated smart meters.
//!
//! `gridpulse run --simulate N` feeds the embedded pipeline from here, so that a
//! newcomer with no meters, no broker and no data set sees live usage and every alert
//! kind within a few minutes of starting the server. The same simulator drives tests
//! and load tests, so it has to be:
//!
//! * **realistic**: a residential daily load curve by UTC hour, per-meter scale and
//!   phase, multiplicative noise, 230 V ± a few volts, a power factor of 0.9–0.99 (so
//!   `power_w <= voltage × current` always holds), and an energy register that
//!   accumulates exactly the reported power over the elapsed time;
//! * **eventful**: per-meter random anomalies (power spike, voltage swell and sag,
//!   over-current, outage, register reset) plus a small share of payloads the real
//!   parser rejects (wrong type, missing field, negative value, malformed JSON,
//!   power above voltage × current). Right after start an opening "showcase" puts each
//!   anomaly kind on a couple of random meters, so every kind shows up within three
//!   simulated minutes; afterwards anomalies are rare background events;
//! * **deterministic**: everything derives from [`SimulatorConfig::seed`] through a
//!   splitmix64 generator, and readings are produced in due-time order regardless of
//!   how the caller slices time into ticks, so the same config, start time and tick
//!   times always yield the same output;
//! * **cheap**: meters are phase-staggered over the reporting interval and visited
//!   through a cursor over that fixed schedule, so a tick touches only the meters that
//!   are due, and nothing is allocated per reading except the push into the output
//!   (bad payloads, which are rare, allocate their bytes).

use std::fmt;

use gridpulse_domain::{MeterId, Reading};

/// Milliseconds in an hour.
const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// Mean time between two background anomalies of one meter at `anomaly_rate` 1.0.
const MEAN_ANOMALY_GAP_MS: f64 = 2.0 * HOUR_MS as f64;
/// Normal readings a meter sends after an anomaly before the next one may start.
const COOLDOWN_READINGS: u8 = 3;
/// Background outage duration range, milliseconds.
const OUTAGE_MS: (i64, i64) = (90_000, 240_000);
/// Showcase outage duration range, milliseconds: short enough to end within 3 minutes.
const SHOWCASE_OUTAGE_MS: (i64, i64) = (90_000, 105_000);

/// Residential load shape by UTC hour: 0 is the night base load, 1 the daily peak.
/// Interpolated linearly between hours.
const LOAD_SHAPE: [f64; 24] = [
    0.03, 0.0, 0.0, 0.0, 0.0, 0.04, // 00-05: night
    0.22, 0.65, 1.0, 0.70, 0.35, 0.25, // 06-11: morning peak
    0.30, 0.28, 0.22, 0.25, 0.40, 0.70, // 12-17: day
    0.95, 1.0, 0.85, 0.60, 0.35, 0.12, // 18-23: evening peak
];

/// What the simulated fleet looks like.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SimulatorConfig {
    /// Number of meters, named `sim-000001`, `sim-000002`, ...
    pub meters: usize,
    /// Seed of every random choice: the same seed gives the same fleet and readings.
    pub seed: u64,
    /// How often each meter reports, milliseconds (default 5000, like the seed firmware).
    pub interval_ms: i64,
    /// Share of otherwise normal payloads that are replaced by a payload the parser
    /// rejects (default 0.002).
    pub bad_share: f64,
    /// Scale of how often background anomalies happen (default 1.0, about one per meter
    /// every two hours); 0 disables anomalies altogether, including the opening
    /// showcase.
    pub anomaly_rate: f64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            meters: 100,
            seed: 0x6772_6964_7075_6c73,
            interval_ms: 5000,
            bad_share: 0.002,
            anomaly_rate: 1.0,
        }
    }
}

/// What one [`Simulator::tick`] produced. Reuse it across ticks (call
/// [`SimulatorOutput::clear`]) to keep its buffers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimulatorOutput {
    /// Valid readings, in due-time order.
    pub readings: Vec<Reading>,
    /// Raw JSON payloads that `gridpulse_domain::parse_reading` rejects, to be fed
    /// through the real parse path and counted as rejected.
    pub bad_payloads: Vec<Vec<u8>>,
}

impl SimulatorOutput {
    /// Empties both lists, keeping their capacity.
    pub fn clear(&mut self) {
        self.readings.clear();
        self.bad_payloads.clear();
    }
}

/// The id of simulated meter number `number` (1-based): `sim-000001`, ...
///
/// Numbers above 999 999 simply get more digits. Returns `None` only for a number that
/// cannot name a meter, which no `usize` does.
pub fn simulated_meter_id(number: usize) -> Option<MeterId> {
    let mut digits = [0u8; 20];
    let mut count = 0;
    let mut rest = number;
    while rest > 0 || count < 6 {
        digits[count] = b'0' + (rest % 10) as u8;
        rest /= 10;
        count += 1;
    }
    let mut text = [0u8; 24];
    text[..4].copy_from_slice(b"sim-");
    for (slot, digit) in text[4..4 + count]
        .iter_mut()
        .zip(digits[..count].iter().rev())
    {
        *slot = *digit;
    }
    let text = std::str::from_utf8(&text[..4 + count]).ok()?;
    MeterId::new(text).ok()
}

/// A tiny deterministic generator (splitmix64): fast, statistically fine for a
/// simulation, and the same on every platform.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[low, high)`.
    fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: i64, high: i64) -> i64 {
        let span = high.saturating_sub(low).max(0) as u64;
        low.saturating_add(self.below(span.saturating_add(1)) as i64)
    }
}

/// The anomaly kinds, in showcase order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnomalyKind {
    Spike,
    Swell,
    Sag,
    OverCurrent,
    Outage,
    Reset,
}

const ANOMALY_KINDS: [AnomalyKind; 6] = [
    AnomalyKind::Spike,
    AnomalyKind::Swell,
    AnomalyKind::Sag,
    AnomalyKind::OverCurrent,
    AnomalyKind::Outage,
    AnomalyKind::Reset,
];

/// The anomaly a meter is in, with what is left of it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Anomaly {
    None,
    /// Power at `factor` × `base_w` (at least `base_w + add_w`) for `left` readings.
    Spike {
        left: u8,
        factor: f64,
        add_w: f64,
        base_w: f64,
    },
    /// Voltage around `volts` (> 255 V) for `left` readings.
    Swell {
        left: u8,
        volts: f64,
    },
    /// Voltage around `volts` (< 200 V) for `left` readings.
    Sag {
        left: u8,
        volts: f64,
    },
    /// Current around `amps` (> 70 A) for `left` readings.
    OverCurrent {
        left: u8,
        amps: f64,
    },
    /// Silent until this time; the register keeps counting.
    Outage {
        until_ms: i64,
    },
}

/// A showcase anomaly planned at construction.
#[derive(Debug, Clone, Copy)]
struct Planned {
    meter: usize,
    at_ms: i64,
    kind: AnomalyKind,
}

/// One simulated meter.
#[derive(Debug, Clone)]
struct Meter {
    /// Night base load, W.
    base_w: f64,
    /// Daily peak load, W.
    peak_w: f64,
    /// This household's routine runs early or late by this much, ms.
    shift_ms: i64,
    /// Supply voltage at this meter, V.
    nominal_v: f64,
    power_factor: f64,
    energy_wh: f64,
    /// Slow multiplicative load drift (AR(1)), around 0.
    drift: f64,
    /// Power of the last reading sent, W.
    last_sent_w: f64,
    anomaly: Anomaly,
    cooldown: u8,
    /// Index of this meter's next showcase entry in `Simulator::plan`, if any.
    next_plan: usize,
}

/// A deterministic fleet of simulated meters; see the module documentation.
pub struct Simulator {
    config: SimulatorConfig,
    interval_ms: i64,
    start_ms: i64,
    meters: Vec<Meter>,
    plan: Vec<Planned>,
    rng: SplitMix64,
    /// Probability that a calm meter starts a background anomaly at one reading.
    anomaly_p: f64,
    bad_p: f64,
    /// Cursor over the schedule: the next reading due is meter `next_index`'s reading of
    /// round `next_round`.
    next_round: i64,
    next_index: usize,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("config", &self.config)
            .field("start_ms", &self.start_ms)
            .field("next_due_ms", &self.next_due_ms())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Builds the fleet. Meter `i` (0-based) first reports at `start_ms + i ×
    /// interval / meters`, then every `interval_ms`. A non-positive `interval_ms` is
    /// treated as 1 ms.
    pub fn new(config: SimulatorConfig, start_ms: i64) -> Simulator {
        let interval_ms = config.interval_ms.max(1);
        let mut rng = SplitMix64(config.seed ^ 0x5349_4d55_4c41_544f);
        let mut meters = Vec::with_capacity(config.meters);
        for _ in 0..config.meters {
            let base_w = rng.range(150.0, 300.0);
            meters.push(Meter {
                base_w,
                peak_w: rng.range(1500.0, 3000.0),
                shift_ms: rng.between(-45 * 60_000, 45 * 60_000),
                nominal_v: rng.range(226.0, 234.0),
                power_factor: rng.range(0.9, 0.99),
                energy_wh: rng.range(100_000.0, 20_000_000.0),
                drift: rng.range(-0.1, 0.1),
                last_sent_w: base_w,
                anomaly: Anomaly::None,
                cooldown: 0,
                next_plan: usize::MAX,
            });
        }
        let anomaly_rate = if config.anomaly_rate.is_finite() {
            config.anomaly_rate.max(0.0)
        } else {
            0.0
        };
        let plan = showcase_plan(config.meters, anomaly_rate, start_ms, interval_ms, &mut rng);
        for (index, planned) in plan.iter().enumerate().rev() {
            meters[planned.meter].next_plan = index;
        }
        let bad_p = if config.bad_share.is_finite() {
            config.bad_share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Simulator {
            anomaly_p: (anomaly_rate * interval_ms as f64 / MEAN_ANOMALY_GAP_MS).min(1.0),
            bad_p,
            config,
            interval_ms,
            start_ms,
            meters,
            plan,
            rng,
            next_round: 0,
            next_index: 0,
        }
    }

    /// The configuration the fleet was built from.
    pub fn config(&self) -> &SimulatorConfig {
        &self.config
    }

    /// The ids of all simulated meters, in order.
    pub fn meter_ids(&self) -> impl Iterator<Item = MeterId> + '_ {
        (1..=self.meters.len()).filter_map(simulated_meter_id)
    }

    /// Nominal payloads per second (readings plus bad payloads) of the whole fleet:
    /// `meters / interval`. Outages make the actual rate slightly lower.
    pub fn expected_readings_per_sec(&self) -> f64 {
        self.meters.len() as f64 * 1000.0 / self.interval_ms as f64
    }

    /// When the next reading falls due, Unix ms (`None` for an empty fleet). A driver
    /// can sleep until then instead of polling.
    pub fn next_due_ms(&self) -> Option<i64> {
        (!self.meters.is_empty()).then(|| self.due_ms(self.next_index, self.next_round))
    }

    /// Appends to `out` every reading (and bad payload) that fell due after the
    /// previous tick and at or before `now_ms`, in due-time order. Readings carry their
    /// due time, not `now_ms`. Calling with a time earlier than a previous tick emits
    /// nothing.
    pub fn tick(&mut self, now_ms: i64, out: &mut SimulatorOutput) {
        if self.meters.is_empty() {
            return;
        }
        loop {
            let due = self.due_ms(self.next_index, self.next_round);
            if due > now_ms || due == i64::MAX {
                break;
            }
            self.step(self.next_index, due, out);
            self.next_index += 1;
            if self.next_index == self.meters.len() {
                self.next_index = 0;
                self.next_round += 1;
            }
        }
    }

    /// Due time of meter `index`'s reading in `round`.
    fn due_ms(&self, index: usize, round: i64) -> i64 {
        let phase = (index as u128 * self.interval_ms as u128 / self.meters.len() as u128) as i64;
        self.start_ms
            .saturating_add(phase)
            .saturating_add(round.saturating_mul(self.interval_ms))
    }

    /// Advances meter `index` to `due` and emits what it sends then, if anything.
    fn step(&mut self, index: usize, due: i64, out: &mut SimulatorOutput) {
        let interval_ms = self.interval_ms;
        let anomaly_p = self.anomaly_p;
        let bad_p = self.bad_p;
        let rng = &mut self.rng;
        let meter = &mut self.meters[index];

        // The household's normal behaviour at this time.
        meter.drift = (0.9 * meter.drift + rng.range(-0.04, 0.04)).clamp(-0.25, 0.25);
        let noise = (1.0 + meter.drift) * rng.range(0.93, 1.07);
        let shape = load_shape(due.saturating_add(meter.shift_ms));
        let normal_w = (meter.base_w + (meter.peak_w - meter.base_w) * shape) * noise;
        let normal_v = meter.nominal_v + rng.range(-1.5, 1.5);

        // Maybe start an anomaly: a planned showcase one first, else a random one.
        let calm = meter.anomaly == Anomaly::None && meter.cooldown == 0;
        if meter.anomaly == Anomaly::None && meter.cooldown > 0 {
            meter.cooldown -= 1;
        }
        let mut reset = false;
        if calm {
            let kind = match self.plan.get(meter.next_plan) {
                Some(planned) if planned.meter == index => {
                    if planned.at_ms <= due {
                        meter.next_plan += 1;
                        Some((planned.kind, SHOWCASE_OUTAGE_MS))
                    } else {
                        None
                    }
                }
                _ => (rng.unit() < anomaly_p).then(|| (background_kind(rng), OUTAGE_MS)),
            };
            if let Some((kind, outage_ms)) = kind {
                meter.anomaly =
                    start_anomaly(kind, due, outage_ms, normal_w, meter.last_sent_w, rng);
                reset = kind == AnomalyKind::Reset;
            }
        }

        // This reading, shaped by the anomaly in progress.
        let mut volts = normal_v;
        let mut power_w = normal_w;
        let mut amps = None;
        let mut silent = false;
        let mut anomalous = reset;
        let mut left_after = None;
        match &mut meter.anomaly {
            Anomaly::None => {}
            Anomaly::Spike {
                left,
                factor,
                add_w,
                base_w,
            } => {
                let base = base_w.max(normal_w);
                power_w = (*factor * base).max(base + *add_w);
                *left -= 1;
                left_after = Some(*left);
            }
            Anomaly::Swell { left, volts: level } => {
                volts = (*level + rng.range(-0.8, 0.8)).max(255.5);
                *left -= 1;
                left_after = Some(*left);
            }
            Anomaly::Sag { left, volts: level } => {
                volts = (*level + rng.range(-0.8, 0.8)).min(199.5);
                *left -= 1;
                left_after = Some(*left);
            }
            Anomaly::OverCurrent { left, amps: level } => {
                amps = Some((*level + rng.range(-1.0, 1.0)).max(70.5));
                *left -= 1;
                left_after = Some(*left);
            }
            Anomaly::Outage { until_ms } => {
                if due < *until_ms {
                    silent = true;
                } else {
                    left_after = Some(0);
                }
            }
        }
        if let Some(left) = left_after {
            anomalous = true;
            if left == 0 {
                meter.anomaly = Anomaly::None;
                meter.cooldown = COOLDOWN_READINGS;
            }
        }
        if reset {
            meter.cooldown = COOLDOWN_READINGS;
        }

        // Round like a meter display; keep power <= voltage × current.
        let volts = round_to(volts, 10.0);
        let (current, power_w) = match amps {
            Some(amps) => {
                let current = round_to(amps, 1000.0);
                (
                    current,
                    (volts * current * meter.power_factor * 10.0).floor() / 10.0,
                )
            }
            None => {
                let power_w = round_to(power_w.max(0.0), 10.0);
                let current = (power_w / (volts * meter.power_factor) * 1000.0).ceil() / 1000.0;
                (current, power_w)
            }
        };

        // The register counts what was drawn, whether or not the meter is heard.
        if reset {
            meter.energy_wh = if rng.unit() < 0.3 {
                0.0
            } else {
                rng.range(0.0, 50.0)
            };
        }
        meter.energy_wh += power_w * interval_ms as f64 / HOUR_MS as f64;

        if silent {
            return;
        }
        let Some(id) = simulated_meter_id(index + 1) else {
            return; // unreachable: every number names a valid meter id
        };
        // Only plain readings are corrupted, so anomalies always reach the pipeline.
        if calm && !anomalous && rng.unit() < bad_p {
            out.bad_payloads.push(bad_payload(
                rng,
                id.as_str(),
                due,
                volts,
                current,
                power_w,
                meter.energy_wh,
            ));
            return;
        }
        meter.last_sent_w = power_w;
        let round = due.saturating_sub(self.start_ms) / interval_ms;
        out.readings.push(Reading {
            meter: id,
            ts_ms: due,
            voltage: volts,
            current,
            power_w,
            energy_wh: meter.energy_wh,
            credit: None,
            seq: Some(round.max(0) as u64),
            backfill: false,
        });
    }
}

/// The load shape (0 = night base, 1 = peak) at `ts_ms`, by UTC hour.
fn load_shape(ts_ms: i64) -> f64 {
    let hours = ts_ms.rem_euclid(DAY_MS) as f64 / HOUR_MS as f64;
    let hour = (hours as usize).min(23);
    let fraction = hours - hour as f64;
    LOAD_SHAPE[hour] * (1.0 - fraction) + LOAD_SHAPE[(hour + 1) % 24] * fraction
}

fn round_to(value: f64, per_unit: f64) -> f64 {
    (value * per_unit).round() / per_unit
}

/// Picks a background anomaly kind: spikes are the most common, resets the rarest.
fn background_kind(rng: &mut SplitMix64) -> AnomalyKind {
    let u = rng.unit();
    if u < 0.30 {
        AnomalyKind::Spike
    } else if u < 0.45 {
        AnomalyKind::Swell
    } else if u < 0.60 {
        AnomalyKind::Sag
    } else if u < 0.75 {
        AnomalyKind::OverCurrent
    } else if u < 0.90 {
        AnomalyKind::Outage
    } else {
        AnomalyKind::Reset
    }
}

/// The state of a freshly started anomaly (`Anomaly::None` for an instant reset).
fn start_anomaly(
    kind: AnomalyKind,
    due: i64,
    outage_ms: (i64, i64),
    normal_w: f64,
    last_sent_w: f64,
    rng: &mut SplitMix64,
) -> Anomaly {
    match kind {
        AnomalyKind::Spike => Anomaly::Spike {
            left: rng.between(1, 3) as u8,
            factor: rng.range(4.5, 8.0),
            add_w: rng.range(4000.0, 6000.0),
            base_w: normal_w.max(last_sent_w),
        },
        AnomalyKind::Swell => Anomaly::Swell {
            left: rng.between(3, 8) as u8,
            volts: rng.range(256.5, 264.0),
        },
        AnomalyKind::Sag => Anomaly::Sag {
            left: rng.between(3, 8) as u8,
            volts: rng.range(186.0, 198.5),
        },
        AnomalyKind::OverCurrent => Anomaly::OverCurrent {
            left: rng.between(2, 4) as u8,
            amps: rng.range(72.0, 90.0),
        },
        AnomalyKind::Outage => Anomaly::Outage {
            until_ms: due.saturating_add(rng.between(outage_ms.0, outage_ms.1)),
        },
        AnomalyKind::Reset => Anomaly::None,
    }
}

/// The opening showcase: each anomaly kind on one or two random meters, early enough
/// that all of them are visible within three minutes at the default interval. Spikes
/// wait for the pipeline's baseline warm-up (about a minute of readings).
fn showcase_plan(
    meters: usize,
    anomaly_rate: f64,
    start_ms: i64,
    interval_ms: i64,
    rng: &mut SplitMix64,
) -> Vec<Planned> {
    if meters == 0 || anomaly_rate <= 0.0 {
        return Vec::new();
    }
    let per_kind = if meters >= 50 { 2 } else { 1 };
    let distinct = meters >= per_kind * ANOMALY_KINDS.len();
    let mut plan: Vec<Planned> = Vec::with_capacity(per_kind * ANOMALY_KINDS.len());
    for _ in 0..per_kind {
        for kind in ANOMALY_KINDS {
            let mut meter = rng.below(meters as u64) as usize;
            let mut tries = 0;
            while distinct && tries < 1000 && plan.iter().any(|planned| planned.meter == meter) {
                meter = rng.below(meters as u64) as usize;
                tries += 1;
            }
            let (first, last) = match kind {
                AnomalyKind::Outage => (1, 8),
                AnomalyKind::Spike => (14, 25),
                _ => (3, 24),
            };
            let offset = rng
                .between(first, last)
                .saturating_mul(interval_ms)
                .saturating_add(rng.between(0, interval_ms - 1));
            plan.push(Planned {
                meter,
                at_ms: start_ms.saturating_add(offset),
                kind,
            });
        }
    }
    plan.sort_by_key(|planned| (planned.meter, planned.at_ms));
    plan
}

/// A payload for `meter` that `parse_reading` rejects, of a random kind.
fn bad_payload(
    rng: &mut SplitMix64,
    meter: &str,
    ts_ms: i64,
    voltage: f64,
    current: f64,
    power_w: f64,
    energy_wh: f64,
) -> Vec<u8> {
    let text = match rng.below(5) {
        // A number sent as a string.
        0 => format!(
            r#"{{"meter":"{meter}","ts_ms":{ts_ms},"voltage":"{voltage}","current":{current},"power_w":{power_w},"energy_wh":{energy_wh}}}"#
        ),
        // A required field left out.
        1 => format!(
            r#"{{"meter":"{meter}","ts_ms":{ts_ms},"voltage":{voltage},"current":{current},"power_w":{power_w}}}"#
        ),
        // A negative power.
        2 => format!(
            r#"{{"meter":"{meter}","ts_ms":{ts_ms},"voltage":{voltage},"current":{current},"power_w":{},"energy_wh":{energy_wh}}}"#,
            -power_w.max(1.0)
        ),
        // A transmission cut short.
        3 => {
            let mut text = format!(
                r#"{{"meter":"{meter}","ts_ms":{ts_ms},"voltage":{voltage},"current":{current},"power_w":{power_w},"energy_wh":{energy_wh}}}"#
            );
            text.truncate(text.len() / 2);
            text
        }
        // Active power far above voltage × current.
        _ => format!(
            r#"{{"meter":"{meter}","ts_ms":{ts_ms},"voltage":{voltage},"current":{current},"power_w":{},"energy_wh":{energy_wh}}}"#,
            round_to(voltage * current * 2.0 + 500.0, 10.0)
        ),
    };
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use gridpulse_domain::{Limits, ParseError, parse_reading};

    use super::*;

    /// 2023-11-14T19:00:00Z: evening peak.
    const EVENING_MS: i64 = 1_699_920_000_000 + 19 * HOUR_MS;
    /// 2023-11-14T03:00:00Z: night.
    const NIGHT_MS: i64 = 1_699_920_000_000 + 3 * HOUR_MS;

    fn config(meters: usize, seed: u64) -> SimulatorConfig {
        SimulatorConfig {
            meters,
            seed,
            ..SimulatorConfig::default()
        }
    }

    /// Runs a fresh simulator from `start_ms` for `duration_ms`, ticking every `step_ms`.
    fn run(
        config: SimulatorConfig,
        start_ms: i64,
        duration_ms: i64,
        step_ms: i64,
    ) -> SimulatorOutput {
        let mut simulator = Simulator::new(config, start_ms);
        let mut out = SimulatorOutput::default();
        let mut now = start_ms;
        while now < start_ms + duration_ms {
            now = (now + step_ms).min(start_ms + duration_ms);
            let before = out.readings.len();
            simulator.tick(now, &mut out);
            for reading in &out.readings[before..] {
                assert!(reading.ts_ms <= now, "reading from the future");
            }
        }
        out
    }

    fn by_meter(readings: &[Reading]) -> BTreeMap<MeterId, Vec<Reading>> {
        let mut meters: BTreeMap<MeterId, Vec<Reading>> = BTreeMap::new();
        for reading in readings {
            meters.entry(reading.meter).or_default().push(*reading);
        }
        meters
    }

    /// The canonical payload of a reading, written by hand (no serde_json in this crate).
    fn canonical_json(reading: &Reading) -> Vec<u8> {
        let mut text = format!(
            r#"{{"meter":"{}","ts_ms":{},"voltage":{},"current":{},"power_w":{},"energy_wh":{}"#,
            reading.meter,
            reading.ts_ms,
            reading.voltage,
            reading.current,
            reading.power_w,
            reading.energy_wh
        );
        if let Some(seq) = reading.seq {
            text.push_str(&format!(r#","seq":{seq}"#));
        }
        text.push('}');
        text.into_bytes()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Seen {
        Swell,
        Sag,
        OverCurrent,
        Spike,
        Gap,
        RegisterDecrease,
    }

    /// Which anomaly kinds each meter's readings show.
    fn anomalies_seen(readings: &[Reading], interval_ms: i64) -> BTreeMap<MeterId, BTreeSet<Seen>> {
        let mut seen: BTreeMap<MeterId, BTreeSet<Seen>> = BTreeMap::new();
        for (meter, series) in by_meter(readings) {
            let kinds = seen.entry(meter).or_default();
            for (index, reading) in series.iter().enumerate() {
                if reading.voltage > 255.0 {
                    kinds.insert(Seen::Swell);
                }
                if reading.voltage < 200.0 {
                    kinds.insert(Seen::Sag);
                }
                if reading.current > 70.0 {
                    kinds.insert(Seen::OverCurrent);
                }
                let Some(previous) = index.checked_sub(1).map(|i| series[i]) else {
                    continue;
                };
                if reading.power_w > 4.0 * previous.power_w {
                    kinds.insert(Seen::Spike);
                }
                if reading.ts_ms - previous.ts_ms > 60_000.max(interval_ms) {
                    kinds.insert(Seen::Gap);
                }
                if reading.energy_wh < previous.energy_wh {
                    kinds.insert(Seen::RegisterDecrease);
                }
            }
        }
        seen
    }

    #[test]
    fn same_config_same_output_whatever_the_tick_times() {
        let a = run(config(100, 7), EVENING_MS, 600_000, 1000);
        let b = run(config(100, 7), EVENING_MS, 600_000, 1000);
        assert_eq!(a, b);
        assert!(a.readings.len() > 10_000);
        // Coarser or irregular ticks produce the same stream.
        let c = run(config(100, 7), EVENING_MS, 600_000, 7_777);
        assert_eq!(a, c);
        // Another seed is another fleet.
        let d = run(config(100, 8), EVENING_MS, 600_000, 1000);
        assert_ne!(a.readings, d.readings);
    }

    #[test]
    fn every_anomaly_kind_appears_within_three_minutes_for_100_meters() {
        let all = BTreeSet::from([
            Seen::Swell,
            Seen::Sag,
            Seen::OverCurrent,
            Seen::Spike,
            Seen::Gap,
            Seen::RegisterDecrease,
        ]);
        for seed in 0..25 {
            for start in [EVENING_MS, NIGHT_MS] {
                let out = run(config(100, seed), start, 180_000, 1000);
                let seen = anomalies_seen(&out.readings, 5000);
                let union: BTreeSet<Seen> = seen.values().flatten().copied().collect();
                assert_eq!(union, all, "seed {seed}, start {start}");
                // Most meters are normal.
                let quiet = seen.values().filter(|kinds| kinds.is_empty()).count();
                assert!(quiet >= 75, "seed {seed}: only {quiet} of 100 meters quiet");
            }
        }
    }

    #[test]
    fn most_readings_are_normal_over_an_hour() {
        let out = run(config(100, 3), EVENING_MS, HOUR_MS, 5000);
        let anomalous = out
            .readings
            .iter()
            .filter(|r| r.voltage > 253.0 || r.voltage < 207.0 || r.current > 63.0)
            .count();
        let share = anomalous as f64 / out.readings.len() as f64;
        assert!(share < 0.02, "{share}");
        // Background anomalies keep happening after the showcase.
        let late: Vec<Reading> = out
            .readings
            .iter()
            .filter(|r| r.ts_ms >= EVENING_MS + 10 * 60_000)
            .copied()
            .collect();
        let seen = anomalies_seen(&late, 5000);
        assert!(seen.values().filter(|kinds| !kinds.is_empty()).count() >= 5);
    }

    #[test]
    fn readings_pass_the_real_parser() {
        let limits = Limits::default();
        for start in [EVENING_MS, NIGHT_MS] {
            let out = run(config(100, 11), start, 600_000, 1000);
            assert!(!out.readings.is_empty());
            for reading in &out.readings {
                assert!(
                    reading.power_w <= reading.voltage * reading.current,
                    "{reading:?}"
                );
                let bytes = canonical_json(reading);
                let parsed = parse_reading(&bytes, reading.ts_ms, &limits)
                    .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
                assert_eq!(parsed.meter, reading.meter);
                assert_eq!(parsed.ts_ms, reading.ts_ms);
                assert_eq!(parsed.seq, reading.seq);
                for (a, b) in [
                    (parsed.voltage, reading.voltage),
                    (parsed.current, reading.current),
                    (parsed.power_w, reading.power_w),
                    (parsed.energy_wh, reading.energy_wh),
                ] {
                    assert!(close(a, b), "{a} != {b}");
                }
            }
        }
    }

    #[test]
    fn every_bad_payload_is_rejected_by_the_parser() {
        let limits = Limits::default();
        let config = SimulatorConfig {
            bad_share: 0.05,
            ..config(100, 5)
        };
        let out = run(config, EVENING_MS, 600_000, 1000);
        assert!(out.bad_payloads.len() > 100, "{}", out.bad_payloads.len());
        let mut reasons = BTreeSet::new();
        for bytes in &out.bad_payloads {
            match parse_reading(bytes, EVENING_MS + HOUR_MS, &limits) {
                Ok(reading) => panic!(
                    "accepted {reading:?} from {}",
                    String::from_utf8_lossy(bytes)
                ),
                Err(ParseError::Malformed(_)) => reasons.insert("malformed"),
                Err(ParseError::Invalid(error)) => reasons.insert(error.reason.code()),
            };
        }
        let expected = BTreeSet::from([
            "malformed",
            "wrong_type",
            "missing",
            "negative",
            "power_exceeds_apparent",
        ]);
        assert_eq!(reasons, expected);
        // The default share is small but not zero.
        let out = run(config_with_share(0.002), EVENING_MS, 600_000, 5000);
        let share =
            out.bad_payloads.len() as f64 / (out.readings.len() + out.bad_payloads.len()) as f64;
        assert!(share > 0.0005 && share < 0.005, "{share}");
    }

    fn config_with_share(bad_share: f64) -> SimulatorConfig {
        SimulatorConfig {
            bad_share,
            ..config(100, 9)
        }
    }

    #[test]
    fn energy_registers_are_monotonic_except_at_resets() {
        let interval = 5000;
        let out = run(config(100, 13), EVENING_MS, 1_800_000, 1000);
        let mut resets = 0;
        let mut exact_steps = 0;
        for series in by_meter(&out.readings).values() {
            for pair in series.windows(2) {
                let (previous, reading) = (pair[0], pair[1]);
                let elapsed = reading.ts_ms - previous.ts_ms;
                assert_eq!(elapsed % interval, 0);
                if reading.energy_wh < previous.energy_wh {
                    // A reset: back to a small value, then one interval of counting.
                    resets += 1;
                    assert!(
                        reading.energy_wh
                            < 50.0 + reading.power_w * elapsed as f64 / HOUR_MS as f64
                    );
                    continue;
                }
                if elapsed == interval {
                    // The register advances by exactly the reported power × time.
                    let expected = reading.power_w * interval as f64 / HOUR_MS as f64;
                    assert!(
                        (reading.energy_wh - previous.energy_wh - expected).abs() < 1e-6,
                        "{pair:?}"
                    );
                    exact_steps += 1;
                } else {
                    // Across an outage or a dropped payload it kept counting.
                    let min_w = 100.0;
                    assert!(
                        reading.energy_wh - previous.energy_wh
                            >= min_w * elapsed as f64 / HOUR_MS as f64
                    );
                }
            }
        }
        assert!(resets >= 1);
        assert!(exact_steps > 30_000);
    }

    #[test]
    fn readings_per_second_match_meters_over_interval() {
        let quiet = SimulatorConfig {
            meters: 1000,
            anomaly_rate: 0.0,
            ..SimulatorConfig::default()
        };
        let mut simulator = Simulator::new(quiet.clone(), EVENING_MS);
        assert!(close(simulator.expected_readings_per_sec(), 200.0));
        assert_eq!(simulator.next_due_ms(), Some(EVENING_MS));
        let mut out = SimulatorOutput::default();
        let mut per_second = Vec::new();
        for second in 1..=60 {
            out.clear();
            simulator.tick(EVENING_MS + second * 1000 - 1, &mut out);
            per_second.push(out.readings.len() + out.bad_payloads.len());
            // Timestamps are due times, in order, within this second.
            assert!(out.readings.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
            assert!(
                out.readings
                    .iter()
                    .all(|r| r.ts_ms >= EVENING_MS + (second - 1) * 1000)
            );
        }
        // Phase-staggered: the load is smooth, second by second.
        assert!(per_second.iter().all(|&n| n == 200), "{per_second:?}");
        let total: usize = per_second.iter().sum();
        assert!(close(
            total as f64 / 60.0,
            simulator.expected_readings_per_sec()
        ));
        // Each meter reports exactly every interval.
        let out = run(quiet, EVENING_MS, 60_000, 1000);
        for series in by_meter(&out.readings).values() {
            assert!(
                series
                    .windows(2)
                    .all(|w| w[1].ts_ms - w[0].ts_ms == 5000 || w[1].ts_ms - w[0].ts_ms == 10_000)
            );
        }
    }

    #[test]
    fn meter_ids_are_zero_padded() {
        assert_eq!(
            simulated_meter_id(1).map(|id| id.to_string()),
            Some("sim-000001".to_owned())
        );
        assert_eq!(
            simulated_meter_id(123_456).map(|id| id.to_string()),
            Some("sim-123456".to_owned())
        );
        assert_eq!(
            simulated_meter_id(1_234_567).map(|id| id.to_string()),
            Some("sim-1234567".to_owned())
        );
        let simulator = Simulator::new(config(3, 1), EVENING_MS);
        let ids: Vec<String> = simulator.meter_ids().map(|id| id.to_string()).collect();
        assert_eq!(ids, ["sim-000001", "sim-000002", "sim-000003"]);
        let out = run(config(3, 1), EVENING_MS, 4999, 5000);
        let seen: BTreeSet<String> = out.readings.iter().map(|r| r.meter.to_string()).collect();
        assert_eq!(seen.len() + out.bad_payloads.len(), 3);
    }

    #[test]
    fn load_follows_a_residential_daily_curve() {
        let quiet = SimulatorConfig {
            anomaly_rate: 0.0,
            bad_share: 0.0,
            ..config(200, 21)
        };
        let mean_power = |start: i64| {
            let out = run(quiet.clone(), start, 120_000, 5000);
            out.readings.iter().map(|r| r.power_w).sum::<f64>() / out.readings.len() as f64
        };
        let night = mean_power(NIGHT_MS);
        let evening = mean_power(EVENING_MS);
        assert!((150.0..=300.0).contains(&night), "night {night} W");
        assert!((1500.0..=3000.0).contains(&evening), "evening {evening} W");
        let out = run(quiet, EVENING_MS, 120_000, 5000);
        for reading in &out.readings {
            assert!((222.0..=238.0).contains(&reading.voltage), "{reading:?}");
            let power_factor = reading.power_w / (reading.voltage * reading.current);
            assert!((0.89..=0.995).contains(&power_factor), "{reading:?}");
        }
    }

    #[test]
    fn empty_fleet_and_odd_configs_do_not_panic() {
        let mut out = SimulatorOutput::default();
        let mut empty = Simulator::new(config(0, 1), EVENING_MS);
        empty.tick(EVENING_MS + HOUR_MS, &mut out);
        assert_eq!(empty.next_due_ms(), None);
        assert_eq!(empty.expected_readings_per_sec(), 0.0);
        let odd = SimulatorConfig {
            meters: 2,
            interval_ms: 0,
            bad_share: f64::NAN,
            anomaly_rate: f64::INFINITY,
            ..SimulatorConfig::default()
        };
        let mut simulator = Simulator::new(odd, EVENING_MS);
        simulator.tick(EVENING_MS + 100, &mut out);
        assert_eq!(out.readings.len() + out.bad_payloads.len(), 202);
        assert!(out.bad_payloads.is_empty());
        // Going back in time emits nothing.
        out.clear();
        simulator.tick(EVENING_MS, &mut out);
        assert!(out.readings.is_empty());
    }
}
