//! Everything one meter actor knows, as plain data and pure functions.
//!
//! The actor (`meter_actor.rs`) is a thin shell around [`MeterState`], so the rules —
//! rolling usage, register handling, baseline, forecast, thresholds with hysteresis and
//! the alert lifecycle — are tested here with explicit times, no runtime and no sleeps.
//!
//! Time: live state follows *event* time (the readings' timestamps), so a replay of the
//! same readings rebuilds the same state and the same alert ids. Only "no data", the
//! alert workflow (reminders, snoozes) and the offline window look at the wall clock,
//! always passed in by the caller.
//!
//! Offline and inhibition: a meter is *offline* while its `no_data` alert is open (it
//! was silent longer than its timeout, by the wall clock). The first reading that
//! arrives while it is offline resolves `no_data` before anything else and closes the
//! outage: the *offline window* is `[first_seen of no_data, arrival of that reading)`
//! — the event time from which the meter counted as silent to the wall-clock time it
//! was heard from again. Every reading is still applied (energy, usage, baseline,
//! clearing of open alerts), but a reading whose timestamp lies inside the window was
//! measured while the meter was offline (backfilled from its buffer, or sent in the
//! reconnecting batch), so it raises no threshold alert (over/under voltage, over
//! current, power spike): `no_data` already stands for that time. A register decrease
//! is still raised (it is about the register, not the supply). The window is kept in
//! the state until a reading at or after its end arrives, so a replay decides the same.

use gridpulse_domain::{
    AlertEventKind, AlertKind, AlertNote, AlertRecord, AlertState, ClosedMinute, MeterId, Reading,
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
/// Who raises a `no_data` alert from a meter's MQTT last will (the raise's note).
pub const LINK_ACTOR: &str = "mqtt";
/// The reason in the note of a `no_data` alert raised by a last will.
pub const LINK_DOWN_REASON: &str =
    "the meter's MQTT link dropped: its last will (status `offline`) was published";

/// One change to one alert, to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    /// What happened.
    pub event: AlertEventKind,
    /// The alert after the change.
    pub alert: AlertRecord,
    /// Who, when and what, for workflow events (assign, comment, snooze, reminder).
    pub note: Option<AlertNote>,
}

impl AlertChange {
    /// A lifecycle change (raise, update, acknowledge, resolve): no note.
    pub fn lifecycle(event: AlertEventKind, alert: AlertRecord) -> AlertChange {
        AlertChange {
            event,
            alert,
            note: None,
        }
    }
}

/// The changes one reading or command causes (almost always none or one).
pub type AlertChanges = SmallVec<[AlertChange; 2]>;

/// Threshold alerts: the kinds an offline window inhibits.
const THRESHOLD_KINDS: [AlertKind; 4] = [
    AlertKind::OverVoltage,
    AlertKind::UnderVoltage,
    AlertKind::OverCurrent,
    AlertKind::PowerSpike,
];

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

/// The last outage of a meter, as far as inhibition needs it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineWindow {
    /// Event time from which the meter counted as silent (`first_seen` of its
    /// `no_data` alert), Unix ms.
    pub from_ms: i64,
    /// Wall-clock time the first reading after the outage arrived, Unix ms.
    pub until_ms: i64,
}

impl OfflineWindow {
    fn contains(&self, ts_ms: i64) -> bool {
        ts_ms >= self.from_ms && ts_ms < self.until_ms
    }
}

/// The in-memory state of one meter. Serialisable: it is what a snapshot stores
/// ([`MeterState::encode`] adds a format version).
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
    /// The last outage, until a reading at or after its end is applied.
    offline: Option<OfflineWindow>,
    /// Threshold raises not made because the reading lay in an offline window.
    n_inhibited: u64,
    /// The last applied reading ended an outage (the actor makes that durable at once).
    #[serde(skip)]
    reconnected: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OpenAlert {
    /// In format 2's layout: without `group` (the hub's, never the meter's).
    #[serde(with = "record_v2")]
    pub(crate) record: AlertRecord,
    pub(crate) last_event_ms: i64,
    /// Wall-clock time the reminder schedule counts from: when the alert was raised,
    /// its latest reminder, or the end of its latest snooze, Unix ms.
    pub(crate) reminder_from_ms: i64,
    /// Workflow events so far (the latest one's `action_seq`).
    pub(crate) n_workflow: u32,
}

impl OpenAlert {
    /// Records one workflow event on this alert and pushes it.
    fn workflow(
        &mut self,
        event: AlertEventKind,
        by: &str,
        at_ms: i64,
        text: Option<String>,
        changes: &mut AlertChanges,
    ) {
        self.n_workflow = self.n_workflow.saturating_add(1);
        changes.push(AlertChange {
            event,
            alert: self.record.clone(),
            note: Some(AlertNote {
                by: by.to_owned(),
                at_ms,
                action_seq: self.n_workflow,
                text,
            }),
        });
    }
}

/// An alert record in snapshot format 2: every field but `group`, which the hub sets
/// (postcard is not self-describing, so the layout on disk must not change).
mod record_v2 {
    use gridpulse_domain::{AlertKind, AlertRecord, AlertState, MeterId, Severity};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct RecordV2 {
        id: String,
        meter: MeterId,
        kind: AlertKind,
        severity: Severity,
        state: AlertState,
        first_seen_ms: i64,
        last_seen_ms: i64,
        count: u64,
        value: f64,
        threshold: f64,
        acknowledged_by: Option<String>,
        acknowledged_at_ms: Option<i64>,
        resolved_by: Option<String>,
        resolved_at_ms: Option<i64>,
        assignee: Option<String>,
        snoozed_until_ms: Option<i64>,
        comments: u32,
        reminders: u32,
        last_reminder_ms: Option<i64>,
    }

    pub(super) fn serialize<S: Serializer>(
        record: &AlertRecord,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let r = record.clone();
        RecordV2 {
            id: r.id,
            meter: r.meter,
            kind: r.kind,
            severity: r.severity,
            state: r.state,
            first_seen_ms: r.first_seen_ms,
            last_seen_ms: r.last_seen_ms,
            count: r.count,
            value: r.value,
            threshold: r.threshold,
            acknowledged_by: r.acknowledged_by,
            acknowledged_at_ms: r.acknowledged_at_ms,
            resolved_by: r.resolved_by,
            resolved_at_ms: r.resolved_at_ms,
            assignee: r.assignee,
            snoozed_until_ms: r.snoozed_until_ms,
            comments: r.comments,
            reminders: r.reminders,
            last_reminder_ms: r.last_reminder_ms,
        }
        .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<AlertRecord, D::Error> {
        let r = RecordV2::deserialize(deserializer)?;
        Ok(AlertRecord {
            id: r.id,
            meter: r.meter,
            kind: r.kind,
            severity: r.severity,
            state: r.state,
            first_seen_ms: r.first_seen_ms,
            last_seen_ms: r.last_seen_ms,
            count: r.count,
            value: r.value,
            threshold: r.threshold,
            acknowledged_by: r.acknowledged_by,
            acknowledged_at_ms: r.acknowledged_at_ms,
            resolved_by: r.resolved_by,
            resolved_at_ms: r.resolved_at_ms,
            assignee: r.assignee,
            snoozed_until_ms: r.snoozed_until_ms,
            comments: r.comments,
            reminders: r.reminders,
            last_reminder_ms: r.last_reminder_ms,
            group: None,
        })
    }
}

/// The first byte of a versioned snapshot. A snapshot of the first format has none: it
/// starts with the meter id's length (1 to 47), never 0.
const SNAPSHOT_MARKER: u8 = 0;
/// The current snapshot format (1 is the unversioned one of `meter_state_v1.rs`).
const SNAPSHOT_VERSION: u8 = 2;

/// Why a stored snapshot cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not decode exactly (corrupt, cut short, trailing bytes).
    #[error("snapshot format {version}: {message}")]
    Corrupt {
        /// The format the bytes claim.
        version: u8,
        /// What failed.
        message: String,
    },
    /// Written by a newer gridpulse.
    #[error("snapshot format {0} is newer than this gridpulse understands")]
    UnknownVersion(u8),
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
            offline: None,
            n_inhibited: 0,
            reconnected: false,
        }
    }

    /// Rebuilds a state from the fields of an older snapshot format.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        meter: MeterId,
        last: Option<LastReading>,
        windows: PowerWindows,
        profile: HourProfile,
        (baseline_w, day_start_ms, energy_today_wh, energy_yesterday_wh): (f64, i64, f64, f64),
        (n_readings, n_stale): (u64, u64),
        open: [Option<Box<OpenAlert>>; 6],
        latched: u8,
        usage: UsageAccumulator,
    ) -> MeterState {
        MeterState {
            meter,
            last,
            windows,
            profile,
            baseline_w,
            day_start_ms,
            energy_today_wh,
            energy_yesterday_wh,
            n_readings,
            n_stale,
            open,
            latched,
            usage,
            offline: None,
            n_inhibited: 0,
            reconnected: false,
        }
    }

    /// Whether the last applied reading ended an outage (taken once).
    pub fn take_reconnected(&mut self) -> bool {
        std::mem::take(&mut self.reconnected)
    }

    /// Threshold raises inhibited by offline windows so far.
    pub fn n_inhibited(&self) -> u64 {
        self.n_inhibited
    }

    /// The last outage, while readings inside it may still arrive.
    pub fn offline_window(&self) -> Option<OfflineWindow> {
        self.offline
    }

    /// Encodes the state for a snapshot: a marker byte, the format version, then the
    /// state in postcard (compact, but not self-describing: a new field needs a new
    /// version, and the old one stays decodable).
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_extend(self, vec![SNAPSHOT_MARKER, SNAPSHOT_VERSION])
    }

    /// Decodes a snapshot written by [`MeterState::encode`] of this or an earlier
    /// version; refuses anything that does not decode exactly.
    pub fn decode(bytes: &[u8]) -> Result<MeterState, SnapshotError> {
        let corrupt = |version: u8| {
            move |error: postcard::Error| SnapshotError::Corrupt {
                version,
                message: error.to_string(),
            }
        };
        let exact = |version: u8, rest: &[u8]| {
            if rest.is_empty() {
                Ok(())
            } else {
                Err(SnapshotError::Corrupt {
                    version,
                    message: format!("{} trailing bytes", rest.len()),
                })
            }
        };
        match bytes {
            [SNAPSHOT_MARKER, SNAPSHOT_VERSION, state @ ..] => {
                let (state, rest) = postcard::take_from_bytes::<MeterState>(state)
                    .map_err(corrupt(SNAPSHOT_VERSION))?;
                exact(SNAPSHOT_VERSION, rest)?;
                Ok(state)
            }
            [SNAPSHOT_MARKER, version, ..] => Err(SnapshotError::UnknownVersion(*version)),
            [SNAPSHOT_MARKER] => Err(SnapshotError::Corrupt {
                version: 0,
                message: "no version byte".into(),
            }),
            legacy => {
                let (state, rest) = crate::meter_state_v1::decode(legacy).map_err(corrupt(1))?;
                exact(1, rest)?;
                Ok(state)
            }
        }
    }

    /// The meter's id.
    pub fn meter(&self) -> MeterId {
        self.meter
    }

    /// The last accepted reading.
    pub fn last(&self) -> Option<&LastReading> {
        self.last.as_ref()
    }

    /// Applies one validated reading as if it arrived at its own timestamp (no offline
    /// window can hold it), pushing the alert changes it causes onto `changes`.
    pub fn apply(
        &mut self,
        reading: &Reading,
        thresholds: &Thresholds,
        changes: &mut AlertChanges,
    ) -> Applied {
        self.apply_arrived(reading, reading.ts_ms, thresholds, changes)
    }

    /// Applies one validated reading that arrived at wall-clock `arrival_ms`, pushing
    /// the alert changes it causes onto `changes`. The arrival time matters only if the
    /// meter is offline (it ends the offline window) and as the start of the reminder
    /// schedule of an alert the reading raises.
    pub fn apply_arrived(
        &mut self,
        reading: &Reading,
        arrival_ms: i64,
        thresholds: &Thresholds,
        changes: &mut AlertChanges,
    ) -> Applied {
        self.apply_closing(reading, arrival_ms, thresholds, changes)
            .0
    }

    /// [`apply_arrived`](Self::apply_arrived), also returning the usage minute the
    /// reading closed (a reading that opens a new minute closes the previous one). It is
    /// returned rather than kept: a field would cost every meter 40 bytes for a value
    /// that lives for one call.
    pub fn apply_closing(
        &mut self,
        reading: &Reading,
        arrival_ms: i64,
        thresholds: &Thresholds,
        changes: &mut AlertChanges,
    ) -> (Applied, Option<ClosedMinute>) {
        let ts_ms = reading.ts_ms;
        if let Some(last) = &self.last
            && ts_ms <= last.ts_ms
        {
            self.n_stale += 1;
            return (Applied::Stale, None);
        }
        self.n_readings += 1;
        // Backfill is history: it moves energy, usage and the baseline, never an alert.
        let live = !reading.backfill;

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
                && live
            {
                self.raise(
                    AlertKind::RegisterDecrease,
                    current_wh,
                    previous_wh,
                    (ts_ms, arrival_ms),
                    changes,
                );
            }
        }

        let closed_minute = self.usage.add(ts_ms, counted_wh, reading.power_w);

        // The reading proves the meter is alive: an open `no_data` ends the outage here,
        // before any threshold is looked at.
        if live {
            if let Some(no_data) = &self.open[AlertKind::NoData.index()] {
                self.offline = Some(OfflineWindow {
                    from_ms: no_data.record.first_seen_ms,
                    until_ms: arrival_ms,
                });
                self.reconnected = true;
            }
            self.clear(AlertKind::NoData, ts_ms, changes);
        }
        let inhibited = self.offline.is_some_and(|window| window.contains(ts_ms));
        if self
            .offline
            .is_some_and(|window| !inhibited && ts_ms >= window.until_ms)
        {
            // Later readings are later still: nothing can fall inside it any more.
            self.offline = None;
        }
        let at = (ts_ms, arrival_ms);

        // Spike detection uses the baseline *before* this reading moves it.
        let power_w = reading.power_w;
        let warmed = self.n_readings > u64::from(thresholds.spike_warmup_readings);
        let spike_level = self.baseline_w * thresholds.spike_factor;
        if warmed && live {
            let is_spike =
                power_w > spike_level && power_w - self.baseline_w >= thresholds.spike_min_delta_w;
            if is_spike {
                self.raise_threshold(
                    AlertKind::PowerSpike,
                    power_w,
                    spike_level,
                    at,
                    inhibited,
                    changes,
                );
            } else if power_w < self.baseline_w * thresholds.spike_clear_factor {
                self.clear(AlertKind::PowerSpike, ts_ms, changes);
            }
        }
        self.update_baseline(power_w, ts_ms, warmed, spike_level);

        let voltage = reading.voltage;
        let current = reading.current;
        if live {
            self.evaluate_thresholds(voltage, current, thresholds, (at, inhibited), changes);
        }

        self.windows.record(ts_ms, power_w);
        self.profile.record(ts_ms, power_w);
        self.last = Some(LastReading {
            ts_ms,
            voltage,
            current,
            power_w,
            energy_wh: reading.energy_wh,
        });
        (Applied::Accepted, closed_minute)
    }

    /// The voltage and current thresholds of one live reading.
    fn evaluate_thresholds(
        &mut self,
        voltage: f64,
        current: f64,
        thresholds: &Thresholds,
        (at, inhibited): ((i64, i64), bool),
        changes: &mut AlertChanges,
    ) {
        self.evaluate(
            AlertKind::OverVoltage,
            (
                voltage > thresholds.over_voltage_v,
                voltage < thresholds.over_voltage_clear_v,
            ),
            (voltage, thresholds.over_voltage_v),
            (at, inhibited),
            changes,
        );
        self.evaluate(
            AlertKind::UnderVoltage,
            (
                voltage < thresholds.under_voltage_v,
                voltage > thresholds.under_voltage_clear_v,
            ),
            (voltage, thresholds.under_voltage_v),
            (at, inhibited),
            changes,
        );
        self.evaluate(
            AlertKind::OverCurrent,
            (
                current > thresholds.over_current_a,
                current < thresholds.over_current_clear_a,
            ),
            (current, thresholds.over_current_a),
            (at, inhibited),
            changes,
        );
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
            (since_ms, now_ms),
            changes,
        );
    }

    /// The meter's link dropped at wall-clock `at_ms` (its MQTT last will said
    /// `offline`): raises `no_data` at once instead of waiting for the timeout, with a
    /// note giving the reason. The meter counts as silent from just after its last
    /// reading (`first_seen` = its event time + 1 ms, or `at_ms` for a meter never
    /// heard from), so readings it buffered meanwhile and backfills later fall in the
    /// offline window. Nothing happens if `no_data` is already open (or latched by a
    /// hand resolve): idempotent, so a redelivered last will changes nothing.
    pub fn link_down(&mut self, at_ms: i64, thresholds: &Thresholds, changes: &mut AlertChanges) {
        if self.open[AlertKind::NoData.index()].is_some() {
            return;
        }
        let since_ms = self.last.map_or(at_ms, |last| last.ts_ms.saturating_add(1));
        let before = changes.len();
        self.raise(
            AlertKind::NoData,
            (at_ms - since_ms).max(0) as f64 / 1000.0,
            f64::from(thresholds.no_data_timeout_s),
            (since_ms, at_ms),
            changes,
        );
        if let Some(raised) = changes.get_mut(before) {
            raised.note = Some(AlertNote {
                by: LINK_ACTOR.to_owned(),
                at_ms,
                action_seq: 0,
                text: Some(LINK_DOWN_REASON.to_owned()),
            });
        }
    }

    /// The meter's link is back at wall-clock `at_ms` (it said `online`): an open
    /// `no_data` resolves as a live reading would resolve it, closing the outage at
    /// `at_ms` (readings measured before that, sent from its buffer, are inhibited).
    pub fn link_up(&mut self, at_ms: i64, changes: &mut AlertChanges) {
        if let Some(no_data) = &self.open[AlertKind::NoData.index()] {
            self.offline = Some(OfflineWindow {
                from_ms: no_data.record.first_seen_ms,
                until_ms: at_ms,
            });
            self.reconnected = true;
        }
        self.clear(AlertKind::NoData, at_ms, changes);
    }

    /// Raises or clears a threshold alert: `(raise, clear)` conditions, `(value,
    /// threshold)`, `((event time, arrival), inhibited)`.
    fn evaluate(
        &mut self,
        kind: AlertKind,
        (raise, clear): (bool, bool),
        (value, threshold): (f64, f64),
        (at, inhibited): ((i64, i64), bool),
        changes: &mut AlertChanges,
    ) {
        if raise {
            self.raise_threshold(kind, value, threshold, at, inhibited, changes);
        } else if clear {
            self.clear(kind, at.0, changes);
        }
    }

    /// Raises a threshold alert unless the reading lies in an offline window.
    fn raise_threshold(
        &mut self,
        kind: AlertKind,
        value: f64,
        threshold: f64,
        at: (i64, i64),
        inhibited: bool,
        changes: &mut AlertChanges,
    ) {
        debug_assert!(THRESHOLD_KINDS.contains(&kind));
        if inhibited {
            self.n_inhibited += 1;
        } else {
            self.raise(kind, value, threshold, at, changes);
        }
    }

    /// Raises `kind` at `(event time, wall-clock time)`.
    fn raise(
        &mut self,
        kind: AlertKind,
        value: f64,
        threshold: f64,
        (ts_ms, now_ms): (i64, i64),
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
                    changes.push(AlertChange::lifecycle(
                        AlertEventKind::Updated,
                        open.record.clone(),
                    ));
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
                    assignee: None,
                    snoozed_until_ms: None,
                    comments: 0,
                    reminders: 0,
                    last_reminder_ms: None,
                    group: None,
                };
                changes.push(AlertChange::lifecycle(
                    AlertEventKind::Raised,
                    record.clone(),
                ));
                *slot = Some(Box::new(OpenAlert {
                    record,
                    last_event_ms: ts_ms,
                    reminder_from_ms: now_ms,
                    n_workflow: 0,
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
            changes.push(AlertChange::lifecycle(AlertEventKind::Resolved, record));
        }
    }

    fn open_mut(
        &mut self,
        kind: AlertKind,
        first_seen_ms: i64,
    ) -> Result<&mut OpenAlert, AlertActionError> {
        // A kind no meter raises (a group, the hub's) is never open here.
        match self.open.get_mut(kind.index()) {
            Some(Some(open)) if open.record.first_seen_ms == first_seen_ms => Ok(open),
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
            changes.push(AlertChange::lifecycle(
                AlertEventKind::Acknowledged,
                open.record.clone(),
            ));
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
        changes.push(AlertChange::lifecycle(
            AlertEventKind::Resolved,
            record.clone(),
        ));
        Ok(record)
    }

    /// Assigns the open alert to `to` (`None`: unassigns it). Idempotent: assigning it
    /// to whom it is assigned to changes nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn assign(
        &mut self,
        kind: AlertKind,
        first_seen_ms: i64,
        to: Option<&str>,
        by: &str,
        at_ms: i64,
        changes: &mut AlertChanges,
    ) -> Result<AlertRecord, AlertActionError> {
        let open = self.open_mut(kind, first_seen_ms)?;
        if open.record.assignee.as_deref() != to {
            open.record.assignee = to.map(str::to_owned);
            open.workflow(AlertEventKind::Assigned, by, at_ms, None, changes);
        }
        Ok(open.record.clone())
    }

    /// Adds a comment to the open alert (every call is a new comment).
    #[allow(clippy::too_many_arguments)]
    pub fn comment(
        &mut self,
        kind: AlertKind,
        first_seen_ms: i64,
        text: &str,
        by: &str,
        at_ms: i64,
        changes: &mut AlertChanges,
    ) -> Result<AlertRecord, AlertActionError> {
        let open = self.open_mut(kind, first_seen_ms)?;
        open.record.comments = open.record.comments.saturating_add(1);
        open.workflow(
            AlertEventKind::Commented,
            by,
            at_ms,
            Some(text.to_owned()),
            changes,
        );
        Ok(open.record.clone())
    }

    /// Snoozes the open alert's reminders until `until_ms` (wall clock; the caller
    /// checks that it lies ahead). Idempotent for the same time; another time replaces
    /// it.
    #[allow(clippy::too_many_arguments)]
    pub fn snooze(
        &mut self,
        kind: AlertKind,
        first_seen_ms: i64,
        until_ms: i64,
        by: &str,
        at_ms: i64,
        changes: &mut AlertChanges,
    ) -> Result<AlertRecord, AlertActionError> {
        let open = self.open_mut(kind, first_seen_ms)?;
        if open.record.snoozed_until_ms != Some(until_ms) {
            open.record.snoozed_until_ms = Some(until_ms);
            open.workflow(AlertEventKind::Snoozed, by, at_ms, None, changes);
        }
        Ok(open.record.clone())
    }

    /// Lifts the open alert's snooze; reminders count from now. Idempotent: an alert
    /// that is not snoozed stays as it is.
    pub fn unsnooze(
        &mut self,
        kind: AlertKind,
        first_seen_ms: i64,
        by: &str,
        at_ms: i64,
        changes: &mut AlertChanges,
    ) -> Result<AlertRecord, AlertActionError> {
        let open = self.open_mut(kind, first_seen_ms)?;
        if open.record.snoozed_until_ms.take().is_some() {
            open.reminder_from_ms = at_ms;
            open.workflow(AlertEventKind::Unsnoozed, by, at_ms, None, changes);
        }
        Ok(open.record.clone())
    }

    /// The alert timers due at wall-clock `now_ms`: a snooze that has run out ends
    /// (`unsnoozed` by `system`, at its end), and a firing alert nobody acknowledged
    /// gets a reminder every `reminder_after_ms` (`None` or ≤ 0: never), counted from
    /// when it was raised, its latest reminder or the end of its latest snooze, never
    /// while snoozed. A reminder is dated when it was due, and reminders missed while
    /// nothing checked (the process was down) collapse into the latest one, so a check
    /// that runs again after a restart at the same schedule repeats nothing.
    pub fn check_alert_timers(
        &mut self,
        now_ms: i64,
        reminder_after_ms: Option<i64>,
        changes: &mut AlertChanges,
    ) {
        let every = reminder_after_ms.filter(|every| *every > 0);
        for open in self.open.iter_mut().flatten() {
            if let Some(until_ms) = open.record.snoozed_until_ms {
                if now_ms < until_ms {
                    continue;
                }
                open.record.snoozed_until_ms = None;
                open.reminder_from_ms = until_ms;
                open.workflow(
                    AlertEventKind::Unsnoozed,
                    SYSTEM_ACTOR,
                    until_ms,
                    None,
                    changes,
                );
            }
            let Some(every) = every else {
                continue;
            };
            if open.record.state != AlertState::Firing {
                continue;
            }
            let elapsed_ms = now_ms.saturating_sub(open.reminder_from_ms);
            if elapsed_ms < every {
                continue;
            }
            let due_ms = open
                .reminder_from_ms
                .saturating_add(elapsed_ms / every * every);
            open.reminder_from_ms = due_ms;
            open.record.reminders = open.record.reminders.saturating_add(1);
            open.record.last_reminder_ms = Some(due_ms);
            open.workflow(
                AlertEventKind::Reminder,
                SYSTEM_ACTOR,
                due_ms,
                None,
                changes,
            );
        }
    }

    /// The earliest wall-clock time at which [`MeterState::check_alert_timers`] has
    /// something to do: a snooze's end, or a firing alert's next reminder.
    pub fn next_alert_timer_ms(&self, reminder_after_ms: Option<i64>) -> Option<i64> {
        let every = reminder_after_ms.filter(|every| *every > 0);
        self.open
            .iter()
            .flatten()
            .filter_map(|open| match (open.record.snoozed_until_ms, every) {
                (Some(until_ms), _) => Some(until_ms),
                (None, Some(every)) if open.record.state == AlertState::Firing => {
                    Some(open.reminder_from_ms.saturating_add(every))
                }
                (None, _) => None,
            })
            .min()
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
            n_inhibited_alerts: self.n_inhibited,
            offline_window: self.offline,
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
    /// Threshold alerts not raised because their reading lay in an offline window.
    pub n_inhibited_alerts: u64,
    /// The last outage, while readings inside it may still arrive.
    pub offline_window: Option<OfflineWindow>,
    /// Open alerts.
    pub open_alerts: Vec<AlertRecord>,
    /// Thresholds in force.
    pub thresholds: Thresholds,
}

#[cfg(test)]
#[path = "meter_state_tests.rs"]
mod tests;
