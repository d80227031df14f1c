//! Everything one meter actor knows, as plain data and pure functions.
//!
//! The actor (`meter_actor.rs`) is a thin shell around [`MeterState`], so the rules —
//! rolling usage, register handling, baseline, forecast, thresholds with hysteresis and
//! the alert lifecycle — are tested here with explicit times, no runtime and no sleeps.
//!
//! Time: live state follows *event* time (the readings' timestamps), so a replay of the
//! same readings rebuilds the same state and the same alert ids. Only "no data" looks at
//! the wall clock, passed in by the caller.

use gridpulse_domain::{
    AlertEventKind, AlertKind, AlertRecord, AlertState, ClosedMinute, MeterId, Reading,
    RegisterStep, UsageAccumulator, alert_id, register_step,
};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::thresholds::Thresholds;
use crate::windows::{HourProfile, PowerWindows, day_end_ms, day_start_ms};

/// Time constant of the power baseline (EWMA), milliseconds: half an hour.
const BASELINE_TAU_MS: f64 = 30.0 * 60_000.0;
/// An open alert raised again emits an `updated` event at most this often (event time).
const UPDATE_EVENT_EVERY_MS: i64 = 10_000;
/// Who resolves alerts whose condition cleared.
pub const SYSTEM_ACTOR: &str = "system";

/// One change to one alert, to be published.
pub type AlertChange = (AlertEventKind, AlertRecord);
/// The changes one reading or command causes (almost always none or one).
pub type AlertChanges = SmallVec<[AlertChange; 2]>;

/// The last accepted reading, trimmed to what the rules need.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LastReading {
    /// Event time, Unix ms.
    pub ts_ms: i64,
    /// Volts.
    pub voltage: f64,
    /// Amperes.
    pub current: f64,
    /// Watts.
    pub power_w: f64,
    /// Register, Wh.
    pub energy_wh: f64,
}

/// What applying one reading did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The reading advanced the meter's state.
    Accepted,
    /// A reading at or before the last one (a duplicate or a late arrival): live state
    /// ignores it, which makes retries and replays idempotent.
    Stale,
}

/// Why an alert command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertActionError {
    /// No open alert has this id (never existed, or already resolved).
    #[error("no open alert with this id")]
    NotOpen,
    /// The command was applied but could not be made durable.
    #[error("the change could not be stored: {0}")]
    NotDurable(String),
}

/// The in-memory state of one meter. Serialisable: it is what a snapshot stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterState {
    meter: MeterId,
    last: Option<LastReading>,
    windows: PowerWindows,
    profile: HourProfile,
    baseline_w: f64,
    day_start_ms: i64,
    energy_today_wh: f64,
    energy_yesterday_wh: f64,
    n_readings: u64,
    n_stale: u64,
    /// Open alert per kind (index: `AlertKind::index`); boxed because rarely present.
    open: [Option<Box<OpenAlert>>; 6],
    /// Kinds resolved by hand while their condition still held: no new alert until the
    /// condition clears first (bit per `AlertKind::index`).
    latched: u8,
    /// The open usage minute (sent to the meter's owner when it closes).
    usage: UsageAccumulator,
    /// The minute the last applied reading closed, until the actor takes it.
    #[serde(skip)]
    closed_minute: Option<ClosedMinute>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpenAlert {
    record: AlertRecord,
    last_event_ms: i64,
}

impl MeterState {
    /// A meter never heard from.
    pub fn new(meter: MeterId) -> MeterState {
        MeterState {
            meter,
            last: None,
            windows: PowerWindows::default(),
            profile: HourProfile::default(),
            baseline_w: 0.0,
            day_start_ms: i64::MIN,
            energy_today_wh: 0.0,
            energy_yesterday_wh: 0.0,
            n_readings: 0,
            n_stale: 0,
            open: Default::default(),
            latched: 0,
            usage: UsageAccumulator::default(),
            closed_minute: None,
        }
    }

    /// The usage minute closed by the last applied reading, if any (taken once).
    pub fn take_closed_minute(&mut self) -> Option<ClosedMinute> {
        self.closed_minute.take()
    }

    /// Encodes the state for a snapshot (compact binary, versioned by the store format).
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(self)
    }

    /// Decodes a snapshot written by [`MeterState::encode`].
    pub fn decode(bytes: &[u8]) -> Result<MeterState, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    /// The meter's id.
    pub fn meter(&self) -> MeterId {
        self.meter
    }

    /// The last accepted reading.
    pub fn last(&self) -> Option<&LastReading> {
        self.last.as_ref()
    }

    /// Applies one validated reading, pushing the alert changes it causes onto `changes`.
    pub fn apply(
        &mut self,
        reading: &Reading,
        thresholds: &Thresholds,
        changes: &mut AlertChanges,
    ) -> Applied {
        let ts_ms = reading.ts_ms;
        if let Some(last) = &self.last
            && ts_ms <= last.ts_ms
        {
            self.n_stale += 1;
            return Applied::Stale;
        }
        self.n_readings += 1;

        // Energy: classify the register step before anything else moves.
        let day_start = day_start_ms(ts_ms);
        if day_start != self.day_start_ms {
            self.energy_yesterday_wh = if day_start == self.day_start_ms.saturating_add(86_400_000)
            {
                self.energy_today_wh
            } else {
                0.0
            };
            self.energy_today_wh = 0.0;
            self.day_start_ms = day_start;
        }
        let mut counted_wh = 0.0;
        if let Some(last) = self.last {
            let step = register_step(
                last.energy_wh,
                reading.energy_wh,
                ts_ms - last.ts_ms,
                thresholds.max_power_w,
            );
            counted_wh = step.counted_wh();
            self.energy_today_wh += counted_wh;
            if let RegisterStep::Reset {
                previous_wh,
                current_wh,
            } = step
            {
                self.raise(
                    AlertKind::RegisterDecrease,
                    current_wh,
                    previous_wh,
                    ts_ms,
                    changes,
                );
            }
        }

        self.closed_minute = self.usage.add(ts_ms, counted_wh, reading.power_w);

        // The reading proves the meter is alive.
        self.clear(AlertKind::NoData, ts_ms, changes);

        // Spike detection uses the baseline *before* this reading moves it.
        let power_w = reading.power_w;
        let warmed = self.n_readings > u64::from(thresholds.spike_warmup_readings);
        let spike_level = self.baseline_w * thresholds.spike_factor;
        if warmed {
            let is_spike =
                power_w > spike_level && power_w - self.baseline_w >= thresholds.spike_min_delta_w;
            if is_spike {
                self.raise(AlertKind::PowerSpike, power_w, spike_level, ts_ms, changes);
            } else if power_w < self.baseline_w * thresholds.spike_clear_factor {
                self.clear(AlertKind::PowerSpike, ts_ms, changes);
            }
        }
        self.update_baseline(power_w, ts_ms, warmed, spike_level);

        let voltage = reading.voltage;
        self.evaluate(
            AlertKind::OverVoltage,
            voltage > thresholds.over_voltage_v,
            voltage < thresholds.over_voltage_clear_v,
            voltage,
            thresholds.over_voltage_v,
            ts_ms,
            changes,
        );
        self.evaluate(
            AlertKind::UnderVoltage,
            voltage < thresholds.under_voltage_v,
            voltage > thresholds.under_voltage_clear_v,
            voltage,
            thresholds.under_voltage_v,
            ts_ms,
            changes,
        );
        let current = reading.current;
        self.evaluate(
            AlertKind::OverCurrent,
            current > thresholds.over_current_a,
            current < thresholds.over_current_clear_a,
            current,
            thresholds.over_current_a,
            ts_ms,
            changes,
        );

        self.windows.record(ts_ms, power_w);
        self.profile.record(ts_ms, power_w);
        self.last = Some(LastReading {
            ts_ms,
            voltage,
            current,
            power_w,
            energy_wh: reading.energy_wh,
        });
        Applied::Accepted
    }

    fn update_baseline(&mut self, power_w: f64, ts_ms: i64, warmed: bool, spike_level: f64) {
        let Some(last) = self.last else {
            self.baseline_w = power_w;
            return;
        };
        // Time-aware EWMA, a plain running mean while young (bias correction, so the
        // first reading does not dominate); once warmed, spikes are clamped.
        // `n_readings` already counts this reading.
        let dt_ms = (ts_ms - last.ts_ms) as f64;
        let alpha = if warmed {
            1.0 - (-dt_ms / BASELINE_TAU_MS).exp()
        } else {
            1.0 / self.n_readings as f64
        };
        let sample = if warmed {
            power_w.min(spike_level)
        } else {
            power_w
        };
        self.baseline_w += alpha * (sample - self.baseline_w);
    }

    /// Raises "no data" if the meter has been silent longer than its timeout at wall-clock
    /// `now_ms`, measured from the wall-clock time its last reading arrived.
    pub fn check_no_data(
        &mut self,
        now_ms: i64,
        last_arrival_ms: i64,
        thresholds: &Thresholds,
        changes: &mut AlertChanges,
    ) {
        let timeout_ms = i64::from(thresholds.no_data_timeout_s) * 1000;
        let silent_ms = now_ms - last_arrival_ms;
        if silent_ms <= timeout_ms {
            return;
        }
        // The id derives from the data (last event time + timeout), so it is stable.
        let since_ms = self.last.map_or(last_arrival_ms, |last| last.ts_ms) + timeout_ms;
        self.raise(
            AlertKind::NoData,
            silent_ms as f64 / 1000.0,
            f64::from(thresholds.no_data_timeout_s),
            since_ms,
            changes,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &mut self,
        kind: AlertKind,
        raise: bool,
        clear: bool,
        value: f64,
        threshold: f64,
        ts_ms: i64,
        changes: &mut AlertChanges,
    ) {
        if raise {
            self.raise(kind, value, threshold, ts_ms, changes);
        } else if clear {
            self.clear(kind, ts_ms, changes);
        }
    }

    fn raise(
        &mut self,
        kind: AlertKind,
        value: f64,
        threshold: f64,
        ts_ms: i64,
        changes: &mut AlertChanges,
    ) {
        let bit = 1u8 << kind.index();
        if self.latched & bit != 0 {
            return;
        }
        match &mut self.open[kind.index()] {
            Some(open) => {
                open.record.count += 1;
                open.record.last_seen_ms = open.record.last_seen_ms.max(ts_ms);
                open.record.value = value;
                if ts_ms - open.last_event_ms >= UPDATE_EVENT_EVERY_MS {
                    open.last_event_ms = ts_ms;
                    changes.push((AlertEventKind::Updated, open.record.clone()));
                }
            }
            slot @ None => {
                let record = AlertRecord {
                    id: alert_id(&self.meter, kind, ts_ms),
                    meter: self.meter,
                    kind,
                    severity: kind.default_severity(),
                    state: AlertState::Firing,
                    first_seen_ms: ts_ms,
                    last_seen_ms: ts_ms,
                    count: 1,
                    value,
                    threshold,
                    acknowledged_by: None,
                    acknowledged_at_ms: None,
                    resolved_by: None,
                    resolved_at_ms: None,
                };
                changes.push((AlertEventKind::Raised, record.clone()));
                *slot = Some(Box::new(OpenAlert {
                    record,
                    last_event_ms: ts_ms,
                }));
            }
        }
    }

    fn clear(&mut self, kind: AlertKind, ts_ms: i64, changes: &mut AlertChanges) {
        self.latched &= !(1u8 << kind.index());
        if let Some(open) = self.open[kind.index()].take() {
            let mut record = open.record;
            record.state = AlertState::Resolved;
            record.resolved_by = Some(SYSTEM_ACTOR.to_owned());
            record.resolved_at_ms = Some(ts_ms.max(record.last_seen_ms));
            changes.push((AlertEventKind::Resolved, record));
        }
    }

    fn open_mut(
        &mut self,
        kind: AlertKind,
        first_seen_ms: i64,
    ) -> Result<&mut OpenAlert, AlertActionError> {
        match &mut self.open[kind.index()] {
            Some(open) if open.record.first_seen_ms == first_seen_ms => Ok(open),
            _ => Err(AlertActionError::NotOpen),
        }
    }

    /// Acknowledges the open alert `kind`/`first_seen_ms` (idempotent while open).
    pub fn acknowledge(
        &mut self,
        kind: AlertKind,
        first_seen_ms: i64,
        by: &str,
        at_ms: i64,
        changes: &mut AlertChanges,
    ) -> Result<AlertRecord, AlertActionError> {
        let open = self.open_mut(kind, first_seen_ms)?;
        if open.record.state == AlertState::Firing {
            open.record.state = AlertState::Acknowledged;
            open.record.acknowledged_by = Some(by.to_owned());
            open.record.acknowledged_at_ms = Some(at_ms);
            changes.push((AlertEventKind::Acknowledged, open.record.clone()));
        }
        Ok(open.record.clone())
    }

    /// Resolves the open alert `kind`/`first_seen_ms` by hand. If its condition still
    /// holds, no new alert of that kind opens until the condition has cleared.
    pub fn resolve(
        &mut self,
        kind: AlertKind,
        first_seen_ms: i64,
        by: &str,
        at_ms: i64,
        changes: &mut AlertChanges,
    ) -> Result<AlertRecord, AlertActionError> {
        self.open_mut(kind, first_seen_ms)?;
        let Some(open) = self.open[kind.index()].take() else {
            return Err(AlertActionError::NotOpen);
        };
        // A register decrease is an event, not a condition: nothing to wait for.
        if kind != AlertKind::RegisterDecrease {
            self.latched |= 1u8 << kind.index();
        }
        let mut record = open.record;
        record.state = AlertState::Resolved;
        record.resolved_by = Some(by.to_owned());
        record.resolved_at_ms = Some(at_ms);
        changes.push((AlertEventKind::Resolved, record.clone()));
        Ok(record)
    }

    /// The open alerts of this meter.
    pub fn open_alerts(&self) -> impl Iterator<Item = &AlertRecord> {
        self.open.iter().flatten().map(|open| &open.record)
    }

    /// A serialisable view of the state, with derived figures (averages, forecast).
    pub fn snapshot(&self, thresholds: &Thresholds) -> MeterSnapshot {
        let at_ms = self.last.map_or(0, |last| last.ts_ms);
        let average_1h_w = self.windows.average_w(59, at_ms);
        let fallback_w = average_1h_w.unwrap_or(self.baseline_w);
        let (next_hour_wh, rest_of_today_wh) = match self.last {
            Some(_) => (
                Some(
                    self.profile
                        .forecast_wh(at_ms, at_ms + 3_600_000, fallback_w),
                ),
                Some(
                    self.profile
                        .forecast_wh(at_ms, day_end_ms(at_ms), fallback_w),
                ),
            ),
            None => (None, None),
        };
        MeterSnapshot {
            meter: self.meter,
            last_reading: self.last,
            average_power_w: AveragePower {
                one_minute: self.windows.average_w(1, at_ms),
                fifteen_minutes: self.windows.average_w(15, at_ms),
                one_hour: average_1h_w,
            },
            baseline_power_w: self.baseline_w,
            energy_today_wh: self.energy_today_wh,
            energy_yesterday_wh: self.energy_yesterday_wh,
            forecast: Forecast {
                next_hour_wh,
                rest_of_today_wh,
                today_total_wh: rest_of_today_wh.map(|rest| rest + self.energy_today_wh),
            },
            n_readings: self.n_readings,
            n_stale_readings: self.n_stale,
            open_alerts: self.open_alerts().cloned().collect(),
            thresholds: thresholds.clone(),
        }
    }
}

/// Rolling average power, watts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AveragePower {
    /// Over the last minute.
    pub one_minute: Option<f64>,
    /// Over the last 15 minutes.
    pub fifteen_minutes: Option<f64>,
    /// Over the last hour.
    pub one_hour: Option<f64>,
}

/// Consumption forecast from the hour-of-day profile (falling back to the last hour's
/// average for hours not yet learned).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    /// Energy expected in the next hour, Wh.
    pub next_hour_wh: Option<f64>,
    /// Energy expected from the last reading to the end of the UTC day, Wh.
    pub rest_of_today_wh: Option<f64>,
    /// Energy used today plus the rest-of-today forecast, Wh.
    pub today_total_wh: Option<f64>,
}

/// The observable state of one meter actor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeterSnapshot {
    /// Meter id.
    pub meter: MeterId,
    /// Last accepted reading.
    pub last_reading: Option<LastReading>,
    /// Rolling averages.
    pub average_power_w: AveragePower,
    /// EWMA baseline power used for spike detection, W.
    pub baseline_power_w: f64,
    /// Energy used today (UTC), from register deltas, Wh.
    pub energy_today_wh: f64,
    /// Energy used yesterday (UTC), Wh.
    pub energy_yesterday_wh: f64,
    /// Forecast.
    pub forecast: Forecast,
    /// Readings applied.
    pub n_readings: u64,
    /// Duplicate or late readings ignored.
    pub n_stale_readings: u64,
    /// Open alerts.
    pub open_alerts: Vec<AlertRecord>,
    /// Thresholds in force.
    pub thresholds: Thresholds,
}

#[cfg(test)]
#[path = "meter_state_tests.rs"]
mod tests;
