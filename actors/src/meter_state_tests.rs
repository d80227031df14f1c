//! Rules of one meter, with explicit event times: no runtime, no sleeps.

use gridpulse_domain::{AlertEventKind, AlertKind, AlertState, MeterId, Reading};
use proptest::prelude::*;

use super::*;
use crate::thresholds::Thresholds;

const T0: i64 = 1_739_923_200_000; // 2025-02-19 00:00:00 UTC
const STEP_MS: i64 = 5_000;

fn meter() -> MeterId {
    MeterId::new("m-1").unwrap()
}

fn reading(ts_ms: i64, voltage: f64, current: f64, power_w: f64, energy_wh: f64) -> Reading {
    Reading {
        meter: meter(),
        ts_ms,
        voltage,
        current,
        power_w,
        energy_wh,
        credit: None,
        seq: None,
        backfill: false,
    }
}

/// Feeds voltages (one reading every 5 s, normal current/power) and returns the events.
fn feed_voltages(state: &mut MeterState, voltages: &[f64]) -> Vec<AlertChange> {
    let thresholds = Thresholds::default();
    let mut events = Vec::new();
    for (idx, voltage) in voltages.iter().enumerate() {
        let mut changes = AlertChanges::new();
        let ts = T0 + idx as i64 * STEP_MS;
        state.apply(
            &reading(ts, *voltage, 1.0, 200.0, idx as f64),
            &thresholds,
            &mut changes,
        );
        events.extend(changes);
    }
    events
}

fn kinds(events: &[AlertChange]) -> Vec<(AlertEventKind, AlertKind)> {
    events
        .iter()
        .map(|change| (change.event, change.alert.kind))
        .collect()
}

#[test]
fn over_voltage_raises_once_counts_repeats_and_clears_with_hysteresis() {
    let mut state = MeterState::new(meter());
    // 254 raises; 252 is inside the hysteresis band (keeps it open); 249 clears.
    let events = feed_voltages(
        &mut state,
        &[230.0, 254.0, 255.0, 252.0, 256.0, 249.0, 230.0],
    );
    assert_eq!(
        kinds(&events),
        vec![
            (AlertEventKind::Raised, AlertKind::OverVoltage),
            // 256 V comes 15 s after the raise: one (throttled) update.
            (AlertEventKind::Updated, AlertKind::OverVoltage),
            (AlertEventKind::Resolved, AlertKind::OverVoltage)
        ]
    );
    let resolved = &events[2].alert;
    assert_eq!(resolved.count, 3, "254, 255 and 256 are one alert");
    assert_eq!(resolved.id, format!("m-1.over_voltage.{}", T0 + STEP_MS));
    assert_eq!(resolved.first_seen_ms, T0 + STEP_MS);
    assert_eq!(resolved.last_seen_ms, T0 + 4 * STEP_MS);
    assert_eq!(resolved.state, AlertState::Resolved);
    assert_eq!(resolved.resolved_by.as_deref(), Some(SYSTEM_ACTOR));
    assert_eq!(state.open_alerts().count(), 0);
}

#[test]
fn under_voltage_and_over_current_fire() {
    let thresholds = Thresholds::default();
    let mut state = MeterState::new(meter());
    let mut changes = AlertChanges::new();
    state.apply(
        &reading(T0, 190.0, 80.0, 14_000.0, 0.0),
        &thresholds,
        &mut changes,
    );
    assert_eq!(
        kinds(&changes),
        vec![
            (AlertEventKind::Raised, AlertKind::UnderVoltage),
            (AlertEventKind::Raised, AlertKind::OverCurrent)
        ]
    );
}

#[test]
fn repeat_raises_emit_throttled_updates() {
    let mut state = MeterState::new(meter());
    // 30 readings over the limit, 5 s apart: one raise, then an update every 10 s.
    let events = feed_voltages(&mut state, &[260.0; 30]);
    let n_updates = events
        .iter()
        .filter(|change| change.event == AlertEventKind::Updated)
        .count();
    assert_eq!(events[0].event, AlertEventKind::Raised);
    assert_eq!(n_updates, 14);
    assert_eq!(state.open_alerts().next().unwrap().count, 30);
}

#[test]
fn acknowledge_then_resolve_and_commands_on_closed_alerts_fail() {
    let mut state = MeterState::new(meter());
    feed_voltages(&mut state, &[260.0]);
    let first_seen = T0;
    let mut changes = AlertChanges::new();
    let acked = state
        .acknowledge(
            AlertKind::OverVoltage,
            first_seen,
            "alice",
            T0 + 1,
            &mut changes,
        )
        .unwrap();
    assert_eq!(acked.state, AlertState::Acknowledged);
    assert_eq!(acked.acknowledged_by.as_deref(), Some("alice"));
    // Acknowledging again changes nothing and emits nothing.
    let again = state
        .acknowledge(
            AlertKind::OverVoltage,
            first_seen,
            "bob",
            T0 + 2,
            &mut changes,
        )
        .unwrap();
    assert_eq!(again.acknowledged_by.as_deref(), Some("alice"));
    assert_eq!(changes.len(), 1);
    let resolved = state
        .resolve(
            AlertKind::OverVoltage,
            first_seen,
            "bob",
            T0 + 3,
            &mut changes,
        )
        .unwrap();
    assert_eq!(
        (resolved.state, resolved.resolved_by.as_deref()),
        (AlertState::Resolved, Some("bob"))
    );
    assert_eq!(
        state.resolve(
            AlertKind::OverVoltage,
            first_seen,
            "bob",
            T0 + 4,
            &mut changes
        ),
        Err(AlertActionError::NotOpen)
    );
    assert_eq!(
        state.acknowledge(
            AlertKind::OverCurrent,
            first_seen,
            "bob",
            T0 + 4,
            &mut changes
        ),
        Err(AlertActionError::NotOpen)
    );
}

#[test]
fn manual_resolve_while_condition_holds_waits_for_a_clear() {
    let mut state = MeterState::new(meter());
    feed_voltages(&mut state, &[260.0]);
    let mut changes = AlertChanges::new();
    state
        .resolve(AlertKind::OverVoltage, T0, "ops", T0, &mut changes)
        .unwrap();
    // Still over the limit: no new alert (no flapping after a manual resolve).
    let thresholds = Thresholds::default();
    let mut changes = AlertChanges::new();
    for idx in 1..5 {
        state.apply(
            &reading(T0 + idx * STEP_MS, 260.0, 1.0, 200.0, 0.0),
            &thresholds,
            &mut changes,
        );
    }
    assert!(changes.is_empty(), "{changes:?}");
    // It clears, then rises again: a new alert with a new id.
    state.apply(
        &reading(T0 + 5 * STEP_MS, 240.0, 1.0, 200.0, 0.0),
        &thresholds,
        &mut changes,
    );
    state.apply(
        &reading(T0 + 6 * STEP_MS, 260.0, 1.0, 200.0, 0.0),
        &thresholds,
        &mut changes,
    );
    assert_eq!(
        kinds(&changes),
        vec![(AlertEventKind::Raised, AlertKind::OverVoltage)]
    );
    assert_eq!(changes[0].alert.first_seen_ms, T0 + 6 * STEP_MS);
}

#[test]
fn duplicates_and_late_readings_change_nothing() {
    let thresholds = Thresholds::default();
    let mut state = MeterState::new(meter());
    let mut changes = AlertChanges::new();
    assert_eq!(
        state.apply(
            &reading(T0, 230.0, 1.0, 200.0, 100.0),
            &thresholds,
            &mut changes
        ),
        Applied::Accepted
    );
    assert_eq!(
        state.apply(
            &reading(T0 + STEP_MS, 230.0, 1.0, 200.0, 110.0),
            &thresholds,
            &mut changes
        ),
        Applied::Accepted
    );
    let before = state.snapshot(&thresholds);
    assert_eq!(
        state.apply(
            &reading(T0 + STEP_MS, 260.0, 1.0, 200.0, 110.0),
            &thresholds,
            &mut changes
        ),
        Applied::Stale
    );
    assert_eq!(
        state.apply(
            &reading(T0, 260.0, 1.0, 200.0, 100.0),
            &thresholds,
            &mut changes
        ),
        Applied::Stale
    );
    let after = state.snapshot(&thresholds);
    assert_eq!(before.energy_today_wh, after.energy_today_wh);
    assert_eq!(before.last_reading, after.last_reading);
    assert_eq!(after.n_stale_readings, 2);
    assert!(changes.is_empty());
}

#[test]
fn energy_today_handles_rollover_reset_and_midnight() {
    let thresholds = Thresholds::default();
    let mut state = MeterState::new(meter());
    let mut changes = AlertChanges::new();
    let day2 = T0 + 86_400_000;
    let steps = [
        (day2 - 10_000, 999_980.0), // yesterday
        (day2 - 5_000, 999_990.0),  // +10 yesterday
        (day2, 999_995.0),          // +5 today (midnight belongs to the new day)
        (day2 + 5_000, 5.0),        // rollover at 1 000 000: +10
        (day2 + 10_000, 15.0),      // +10
        (day2 + 15_000, 0.0),       // reset: +0, register_decrease
        (day2 + 20_000, 3.0),       // +3
    ];
    for (ts, energy) in steps {
        state.apply(
            &reading(ts, 230.0, 1.0, 200.0, energy),
            &thresholds,
            &mut changes,
        );
    }
    let snapshot = state.snapshot(&thresholds);
    assert!(
        (snapshot.energy_today_wh - 28.0).abs() < 1e-9,
        "{}",
        snapshot.energy_today_wh
    );
    assert!((snapshot.energy_yesterday_wh - 10.0).abs() < 1e-9);
    assert_eq!(
        kinds(&changes),
        vec![(AlertEventKind::Raised, AlertKind::RegisterDecrease)]
    );
    assert_eq!(changes[0].alert.value, 0.0);
    assert_eq!(changes[0].alert.threshold, 15.0);
    // An event alert does not clear by itself.
    assert_eq!(state.open_alerts().count(), 1);
}

#[test]
fn power_spike_needs_a_warm_baseline_and_clears() {
    let thresholds = Thresholds::default();
    let mut state = MeterState::new(meter());
    let mut changes = AlertChanges::new();
    let mut ts = T0;
    // A cold meter's first readings never count as spikes.
    state.apply(
        &reading(ts, 230.0, 30.0, 6000.0, 0.0),
        &thresholds,
        &mut changes,
    );
    for _ in 0..20 {
        ts += STEP_MS;
        state.apply(
            &reading(ts, 230.0, 2.0, 400.0, 0.0),
            &thresholds,
            &mut changes,
        );
    }
    assert!(changes.is_empty(), "{changes:?}");
    let baseline = state.snapshot(&thresholds).baseline_power_w;
    // 3 kW over a ~400 W baseline: spike.
    ts += STEP_MS;
    state.apply(
        &reading(ts, 230.0, 20.0, 4000.0, 0.0),
        &thresholds,
        &mut changes,
    );
    assert_eq!(
        kinds(&changes),
        vec![(AlertEventKind::Raised, AlertKind::PowerSpike)]
    );
    // The spike barely moves the baseline.
    let moved = state.snapshot(&thresholds).baseline_power_w - baseline;
    assert!(moved < baseline * 0.01, "baseline moved by {moved}");
    ts += STEP_MS;
    state.apply(
        &reading(ts, 230.0, 2.0, 400.0, 0.0),
        &thresholds,
        &mut changes,
    );
    assert_eq!(
        changes.last().map(|change| change.event),
        Some(AlertEventKind::Resolved)
    );
}

#[test]
fn no_data_raises_after_timeout_and_clears_on_the_next_reading() {
    let thresholds = Thresholds::default();
    let mut state = MeterState::new(meter());
    let mut changes = AlertChanges::new();
    state.apply(
        &reading(T0, 230.0, 1.0, 200.0, 0.0),
        &thresholds,
        &mut changes,
    );
    let arrival = T0 + 200;
    state.check_no_data(arrival + 60_000, arrival, &thresholds, &mut changes);
    assert!(
        changes.is_empty(),
        "exactly at the timeout is not yet silent"
    );
    state.check_no_data(arrival + 61_000, arrival, &thresholds, &mut changes);
    state.check_no_data(arrival + 62_000, arrival, &thresholds, &mut changes);
    assert_eq!(
        kinds(&changes),
        vec![(AlertEventKind::Raised, AlertKind::NoData)]
    );
    assert_eq!(changes[0].alert.id, format!("m-1.no_data.{}", T0 + 60_000));
    state.apply(
        &reading(T0 + 90_000, 230.0, 1.0, 200.0, 0.0),
        &thresholds,
        &mut changes,
    );
    assert_eq!(
        kinds(&changes).last(),
        Some(&(AlertEventKind::Resolved, AlertKind::NoData))
    );
}

#[test]
fn backfill_moves_energy_and_usage_but_never_an_alert() {
    let thresholds = Thresholds::default();
    let mut live = MeterState::new(meter());
    let mut history = MeterState::new(meter());
    let mut changes = AlertChanges::new();
    let mut quiet = AlertChanges::new();
    // The same readings, over voltage and a register reset among them: live they raise
    // alerts, as backfill they raise none but count the same energy.
    let readings: Vec<Reading> = (0..40)
        .map(|i| {
            let voltage = if (10..20).contains(&i) { 262.0 } else { 230.0 };
            let energy = if i == 30 {
                5.0
            } else {
                1000.0 + i as f64 * 2.0
            };
            reading(T0 + i * STEP_MS, voltage, 1.0, 200.0, energy)
        })
        .collect();
    for r in &readings {
        live.apply(r, &thresholds, &mut changes);
        let past = Reading {
            backfill: true,
            ..*r
        };
        history.apply(&past, &thresholds, &mut quiet);
    }
    assert!(
        kinds(&changes).contains(&(AlertEventKind::Raised, AlertKind::OverVoltage)),
        "{:?}",
        kinds(&changes)
    );
    assert!(quiet.is_empty(), "backfill raised {:?}", kinds(&quiet));
    assert_eq!(history.energy_today_wh, live.energy_today_wh);
    assert_eq!(history.last(), live.last());
    // Backfill neither ends an outage nor clears an open alert.
    let mut offline = MeterState::new(meter());
    let mut changes = AlertChanges::new();
    offline.apply(
        &reading(T0, 262.0, 1.0, 200.0, 0.0),
        &thresholds,
        &mut changes,
    );
    offline.check_no_data(T0 + 120_000, T0, &thresholds, &mut changes);
    let before = kinds(&changes);
    assert_eq!(
        before,
        vec![
            (AlertEventKind::Raised, AlertKind::OverVoltage),
            (AlertEventKind::Raised, AlertKind::NoData)
        ]
    );
    let normal = Reading {
        backfill: true,
        ..reading(T0 + STEP_MS, 230.0, 1.0, 200.0, 1.0)
    };
    offline.apply_arrived(&normal, T0 + 130_000, &thresholds, &mut changes);
    assert_eq!(kinds(&changes), before, "still offline, still over voltage");
}

#[test]
fn snapshot_has_rolling_usage_and_forecast() {
    let thresholds = Thresholds::default();
    let mut state = MeterState::new(meter());
    let mut changes = AlertChanges::new();
    // Two hours at 600 W, register advancing accordingly.
    let mut energy = 0.0;
    for idx in 0..1440 {
        let ts = T0 + idx * STEP_MS;
        state.apply(
            &reading(ts, 230.0, 3.0, 600.0, energy),
            &thresholds,
            &mut changes,
        );
        energy += 600.0 * STEP_MS as f64 / 3_600_000.0;
    }
    let snapshot = state.snapshot(&thresholds);
    assert_eq!(snapshot.average_power_w.one_minute, Some(600.0));
    assert_eq!(snapshot.average_power_w.one_hour, Some(600.0));
    assert!(
        (snapshot.energy_today_wh - 1199.1666).abs() < 0.01,
        "{}",
        snapshot.energy_today_wh
    );
    assert!((snapshot.forecast.next_hour_wh.unwrap() - 600.0).abs() < 1.0);
    // From ~02:00 to midnight at 600 W: ~22 h × 600 W.
    let rest = snapshot.forecast.rest_of_today_wh.unwrap();
    assert!((rest - 22.0 * 600.0).abs() < 10.0, "{rest}");
}

proptest! {
    /// Whatever the voltages, over-voltage events form raised → (updated|acknowledged)*
    /// → resolved cycles, at most one alert is open, and a system resolve is only ever
    /// caused by a reading below the clear level (hysteresis: no flapping).
    #[test]
    fn over_voltage_lifecycle_is_well_formed(voltages in proptest::collection::vec(200.0f64..270.0, 1..200)) {
        let thresholds = Thresholds::default();
        let mut state = MeterState::new(meter());
        let mut open: Option<String> = None;
        for (idx, voltage) in voltages.iter().enumerate() {
            let mut changes = AlertChanges::new();
            state.apply(&reading(T0 + idx as i64 * STEP_MS, *voltage, 1.0, 200.0, 0.0), &thresholds, &mut changes);
            for AlertChange { event, alert, .. } in changes.iter().filter(|change| change.alert.kind == AlertKind::OverVoltage) {
                match event {
                    AlertEventKind::Raised => {
                        prop_assert!(open.is_none());
                        prop_assert!(*voltage > thresholds.over_voltage_v);
                        open = Some(alert.id.clone());
                    }
                    AlertEventKind::Updated => prop_assert_eq!(open.as_ref(), Some(&alert.id)),
                    AlertEventKind::Resolved => {
                        let was_open = open.take();
                        prop_assert_eq!(was_open.as_ref(), Some(&alert.id));
                        prop_assert!(*voltage < thresholds.over_voltage_clear_v);
                    }
                    other => prop_assert!(false, "nobody acted on it, yet {other}"),
                }
            }
            prop_assert!(state.open_alerts().filter(|a| a.kind == AlertKind::OverVoltage).count() <= 1);
        }
    }

    /// Replaying the same readings (a crash replay) rebuilds identical state and ids.
    #[test]
    fn replay_is_deterministic(powers in proptest::collection::vec(0.0f64..9000.0, 1..100)) {
        let thresholds = Thresholds::default();
        let run = || {
            let mut state = MeterState::new(meter());
            let mut all = Vec::new();
            let mut energy = 0.0;
            for (idx, power) in powers.iter().enumerate() {
                let mut changes = AlertChanges::new();
                energy += power / 720.0;
                let r = reading(T0 + idx as i64 * STEP_MS, 230.0, power / 200.0, *power, energy);
                state.apply(&r, &thresholds, &mut changes);
                // Duplicates interleaved (at-least-once delivery) change nothing.
                state.apply(&r, &thresholds, &mut changes);
                all.extend(changes.into_iter().map(|change| (change.event, change.alert.id)));
            }
            (all, state.snapshot(&thresholds).energy_today_wh)
        };
        prop_assert_eq!(run(), run());
    }
}

#[test]
fn state_survives_a_snapshot_round_trip() {
    let thresholds = Thresholds::default();
    let mut state = MeterState::new(meter());
    let mut changes = AlertChanges::new();
    for idx in 0..500 {
        let voltage = if idx % 50 < 3 { 262.0 } else { 230.0 };
        state.apply(
            &reading(T0 + idx * STEP_MS, voltage, 2.0, 400.0, idx as f64),
            &thresholds,
            &mut changes,
        );
    }
    // Leave an alert open so it is part of the snapshot.
    state.apply(
        &reading(T0 + 500 * STEP_MS, 262.0, 2.0, 400.0, 500.0),
        &thresholds,
        &mut changes,
    );
    let bytes = state.encode().unwrap();
    assert!(bytes.len() < 1024, "snapshot is {} bytes", bytes.len());
    let restored = MeterState::decode(&bytes).unwrap();
    // (Compared by encoding: unlearned profile hours are NaN, and NaN != NaN.)
    assert_eq!(restored.encode().unwrap(), bytes);
    // The restored state behaves identically from here on.
    let (mut a, mut b) = (state, restored);
    let (mut changes_a, mut changes_b) = (AlertChanges::new(), AlertChanges::new());
    let next = reading(T0 + 501 * STEP_MS, 240.0, 2.0, 400.0, 501.0);
    a.apply(&next, &thresholds, &mut changes_a);
    b.apply(&next, &thresholds, &mut changes_b);
    assert_eq!(changes_a, changes_b);
    assert_eq!(a.encode().unwrap(), b.encode().unwrap());
    assert!(MeterState::decode(&[1, 2, 3]).is_err());
}

/// A snapshot written by the first format (before the alert workflow), as stored:
/// readings 230 V, 262 V (over-voltage raised), 252 V, 252 V + 80 A (over-current
/// raised), then over-voltage acknowledged by `ops-1` at T0 + 20 s and over-current
/// resolved by `ops-2` while it still held (so it is latched).
const SNAPSHOT_V1_HEX: &str = include_str!("fixtures/meter_state_v1.hex");

fn from_hex(hex: &str) -> Vec<u8> {
    let hex = hex.trim();
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
        .collect()
}

#[test]
fn snapshots_of_the_first_format_restore_exactly() {
    let thresholds = Thresholds::default();
    let bytes = from_hex(SNAPSHOT_V1_HEX);
    let mut state = MeterState::decode(&bytes).unwrap();
    let snapshot = state.snapshot(&thresholds);
    assert_eq!(snapshot.meter, meter());
    assert_eq!(snapshot.n_readings, 4);
    assert_eq!(snapshot.last_reading.unwrap().ts_ms, T0 + 3 * STEP_MS);
    assert!((snapshot.energy_today_wh - 3.0).abs() < 1e-9);
    assert_eq!(snapshot.open_alerts.len(), 1);
    let open = &snapshot.open_alerts[0];
    assert_eq!(open.id, format!("m-1.over_voltage.{}", T0 + STEP_MS));
    assert_eq!(open.state, AlertState::Acknowledged);
    assert_eq!(open.acknowledged_by.as_deref(), Some("ops-1"));
    assert_eq!(open.acknowledged_at_ms, Some(T0 + 20_000));
    assert_eq!((open.assignee.as_ref(), open.comments), (None, 0));
    // Over-current was resolved by hand while it held: still latched.
    let mut changes = AlertChanges::new();
    state.apply(
        &reading(T0 + 4 * STEP_MS, 252.0, 80.0, 200.0, 14.0),
        &thresholds,
        &mut changes,
    );
    assert!(kinds(&changes).is_empty(), "{changes:?}");
    // Re-encoded in the current format, it decodes to the same state.
    let encoded = state.encode().unwrap();
    assert_eq!(&encoded[..2], &[0, 2]);
    assert_eq!(
        MeterState::decode(&encoded).unwrap().encode().unwrap(),
        encoded
    );
    // Cut short or with trailing bytes, either format is refused, not misread.
    assert!(MeterState::decode(&bytes[..bytes.len() - 1]).is_err());
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(MeterState::decode(&trailing).is_err());
    let mut trailing = encoded.clone();
    trailing.push(0);
    assert!(MeterState::decode(&trailing).is_err());
    assert_eq!(
        MeterState::decode(&[0, 9, 1]).unwrap_err(),
        SnapshotError::UnknownVersion(9)
    );
}

/// A state with one firing over-voltage alert raised by a reading at T0 that arrived
/// at wall clock `arrival_ms`.
fn firing_at(arrival_ms: i64) -> MeterState {
    let mut state = MeterState::new(meter());
    let mut changes = AlertChanges::new();
    state.apply_arrived(
        &reading(T0, 262.0, 1.0, 200.0, 0.0),
        arrival_ms,
        &Thresholds::default(),
        &mut changes,
    );
    assert_eq!(
        kinds(&changes),
        vec![(AlertEventKind::Raised, AlertKind::OverVoltage)]
    );
    state
}

fn notes(changes: &[AlertChange]) -> Vec<(AlertEventKind, String, i64, u32)> {
    changes
        .iter()
        .map(|change| {
            let note = change.note.as_ref().expect("workflow events carry a note");
            (change.event, note.by.clone(), note.at_ms, note.action_seq)
        })
        .collect()
}

#[test]
fn assign_comment_snooze_and_unsnooze_are_workflow_events() {
    let mut state = firing_at(T0);
    let kind = AlertKind::OverVoltage;
    let mut changes = AlertChanges::new();
    let assigned = state
        .assign(kind, T0, Some("dana"), "ops-1", T0 + 1, &mut changes)
        .unwrap();
    assert_eq!(assigned.assignee.as_deref(), Some("dana"));
    // Assigning to the same person again changes nothing.
    state
        .assign(kind, T0, Some("dana"), "ops-1", T0 + 2, &mut changes)
        .unwrap();
    // Two comments in one millisecond are two events, told apart by their sequence.
    state
        .comment(kind, T0, "on my way", "dana", T0 + 3, &mut changes)
        .unwrap();
    let commented = state
        .comment(kind, T0, "fuse replaced", "dana", T0 + 3, &mut changes)
        .unwrap();
    assert_eq!(commented.comments, 2);
    let snoozed = state
        .snooze(kind, T0, T0 + 3_600_000, "dana", T0 + 4, &mut changes)
        .unwrap();
    assert_eq!(snoozed.snoozed_until_ms, Some(T0 + 3_600_000));
    state
        .snooze(kind, T0, T0 + 3_600_000, "dana", T0 + 5, &mut changes)
        .unwrap();
    let unsnoozed = state
        .unsnooze(kind, T0, "ops-1", T0 + 6, &mut changes)
        .unwrap();
    assert_eq!(unsnoozed.snoozed_until_ms, None);
    state
        .unsnooze(kind, T0, "ops-1", T0 + 7, &mut changes)
        .unwrap();
    let unassigned = state
        .assign(kind, T0, None, "ops-1", T0 + 8, &mut changes)
        .unwrap();
    assert_eq!(unassigned.assignee, None);
    assert_eq!(
        notes(&changes),
        vec![
            (AlertEventKind::Assigned, "ops-1".into(), T0 + 1, 1),
            (AlertEventKind::Commented, "dana".into(), T0 + 3, 2),
            (AlertEventKind::Commented, "dana".into(), T0 + 3, 3),
            (AlertEventKind::Snoozed, "dana".into(), T0 + 4, 4),
            (AlertEventKind::Unsnoozed, "ops-1".into(), T0 + 6, 5),
            (AlertEventKind::Assigned, "ops-1".into(), T0 + 8, 6),
        ]
    );
    assert_eq!(
        changes[1].note.as_ref().unwrap().text.as_deref(),
        Some("on my way")
    );
    assert_eq!(changes[2].alert.comments, 2);
    // The lifecycle state is untouched; the alert is still open and firing.
    assert_eq!(
        state.open_alerts().next().unwrap().state,
        AlertState::Firing
    );
    // Workflow commands on an alert that is not open fail.
    for result in [
        state.comment(kind, T0 + 1, "x", "a", T0, &mut changes),
        state.assign(AlertKind::NoData, T0, Some("x"), "a", T0, &mut changes),
        state.snooze(kind, T0 - 1, T0 + 9, "a", T0, &mut changes),
        state.unsnooze(AlertKind::UnderVoltage, T0, "a", T0, &mut changes),
    ] {
        assert_eq!(result.unwrap_err(), AlertActionError::NotOpen);
    }
}

const MINUTE: i64 = 60_000;

fn timers(state: &mut MeterState, now_ms: i64, every: Option<i64>) -> Vec<AlertChange> {
    let mut changes = AlertChanges::new();
    state.check_alert_timers(now_ms, every, &mut changes);
    changes.into_vec()
}

#[test]
fn reminders_come_every_interval_while_firing_and_unacknowledged() {
    let every = Some(15 * MINUTE);
    // Raised by a reading that arrived 2 s after its timestamp: the schedule counts from
    // the arrival (wall clock), not from the event time.
    let arrival = T0 + 2_000;
    let mut state = firing_at(arrival);
    assert_eq!(
        state.next_alert_timer_ms(every),
        Some(arrival + 15 * MINUTE)
    );
    assert_eq!(state.next_alert_timer_ms(None), None);
    assert!(timers(&mut state, arrival + 15 * MINUTE - 1, every).is_empty());
    let first = timers(&mut state, arrival + 15 * MINUTE + 700, every);
    assert_eq!(
        notes(&first),
        vec![(
            AlertEventKind::Reminder,
            SYSTEM_ACTOR.into(),
            arrival + 15 * MINUTE,
            1
        )]
    );
    assert_eq!(first[0].alert.reminders, 1);
    assert_eq!(first[0].alert.last_reminder_ms, Some(arrival + 15 * MINUTE));
    // Checking again at the same time repeats nothing.
    assert!(timers(&mut state, arrival + 15 * MINUTE + 900, every).is_empty());
    // Missed reminders (nothing checked for 50 min) collapse into the latest one.
    let late = timers(&mut state, arrival + 65 * MINUTE, every);
    assert_eq!(
        notes(&late),
        vec![(
            AlertEventKind::Reminder,
            SYSTEM_ACTOR.into(),
            arrival + 60 * MINUTE,
            2
        )]
    );
    assert_eq!(
        state.next_alert_timer_ms(every),
        Some(arrival + 75 * MINUTE)
    );
    // Off: no reminders.
    assert!(timers(&mut state, arrival + 200 * MINUTE, None).is_empty());
    assert!(timers(&mut state, arrival + 200 * MINUTE, Some(0)).is_empty());
    // Acknowledged: no more reminders.
    let mut changes = AlertChanges::new();
    state
        .acknowledge(
            AlertKind::OverVoltage,
            T0,
            "ops",
            arrival + 66 * MINUTE,
            &mut changes,
        )
        .unwrap();
    assert_eq!(state.next_alert_timer_ms(every), None);
    assert!(timers(&mut state, arrival + 300 * MINUTE, every).is_empty());
}

#[test]
fn a_snooze_holds_reminders_back_and_they_resume_from_its_end() {
    let every = Some(15 * MINUTE);
    let mut state = firing_at(T0);
    let mut changes = AlertChanges::new();
    let until = T0 + 40 * MINUTE;
    state
        .snooze(
            AlertKind::OverVoltage,
            T0,
            until,
            "dana",
            T0 + MINUTE,
            &mut changes,
        )
        .unwrap();
    assert_eq!(state.next_alert_timer_ms(every), Some(until));
    // Due at +15 and +30, but snoozed: nothing.
    assert!(timers(&mut state, T0 + 16 * MINUTE, every).is_empty());
    assert!(timers(&mut state, until - 1, every).is_empty());
    // The snooze runs out: unsnoozed by the system at its end; the next reminder is due
    // an interval after that.
    let ended = timers(&mut state, until + 500, every);
    assert_eq!(
        notes(&ended),
        vec![(AlertEventKind::Unsnoozed, SYSTEM_ACTOR.into(), until, 2)]
    );
    assert_eq!(ended[0].alert.snoozed_until_ms, None);
    assert_eq!(state.next_alert_timer_ms(every), Some(until + 15 * MINUTE));
    let resumed = timers(&mut state, until + 15 * MINUTE, every);
    assert_eq!(
        notes(&resumed),
        vec![(
            AlertEventKind::Reminder,
            SYSTEM_ACTOR.into(),
            until + 15 * MINUTE,
            3
        )]
    );
    // With reminders off, a snooze still runs out.
    let mut quiet = firing_at(T0);
    quiet
        .snooze(AlertKind::OverVoltage, T0, until, "dana", T0, &mut changes)
        .unwrap();
    assert_eq!(quiet.next_alert_timer_ms(None), Some(until));
    assert_eq!(
        kinds(&timers(&mut quiet, until, None)),
        vec![(AlertEventKind::Unsnoozed, AlertKind::OverVoltage)]
    );
    assert_eq!(quiet.next_alert_timer_ms(None), None);
}

#[test]
fn a_reminder_schedule_survives_a_snapshot_round_trip() {
    let every = Some(15 * MINUTE);
    let mut state = firing_at(T0);
    assert_eq!(timers(&mut state, T0 + 16 * MINUTE, every).len(), 1);
    // A restart restores the snapshot: the same check repeats nothing, the next comes on
    // time with the next sequence number.
    let mut restored = MeterState::decode(&state.encode().unwrap()).unwrap();
    assert!(timers(&mut restored, T0 + 16 * MINUTE, every).is_empty());
    assert_eq!(
        notes(&timers(&mut restored, T0 + 30 * MINUTE, every)),
        vec![(
            AlertEventKind::Reminder,
            SYSTEM_ACTOR.into(),
            T0 + 30 * MINUTE,
            2
        )]
    );
}

/// A meter that reported at T0, then went silent: no data raised by the sweep.
fn offline_meter(thresholds: &Thresholds) -> MeterState {
    let mut state = MeterState::new(meter());
    let mut changes = AlertChanges::new();
    state.apply(
        &reading(T0, 230.0, 1.0, 200.0, 0.0),
        thresholds,
        &mut changes,
    );
    state.check_no_data(T0 + 5 * MINUTE, T0, thresholds, &mut changes);
    assert_eq!(
        kinds(&changes),
        vec![(AlertEventKind::Raised, AlertKind::NoData)]
    );
    state
}

#[test]
fn readings_measured_while_offline_raise_no_threshold_alerts() {
    let thresholds = Thresholds::default();
    let mut state = offline_meter(&thresholds);
    let offline_from = T0 + 60_000; // last reading + the 60 s timeout
    let reconnect = T0 + 10 * MINUTE; // wall clock: when the backlog arrives
    // The backlog arrives at once: over-voltage at +2 min and +5 min, under-voltage and
    // over-current at +8 min. The first reading resolves no_data, nothing else fires.
    let mut changes = AlertChanges::new();
    for (ts, voltage, current) in [
        (T0 + 2 * MINUTE, 262.0, 1.0),
        (T0 + 5 * MINUTE, 264.0, 1.0),
        (T0 + 8 * MINUTE, 190.0, 80.0),
    ] {
        state.apply_arrived(
            &reading(ts, voltage, current, 200.0, 1.0),
            reconnect,
            &thresholds,
            &mut changes,
        );
    }
    assert_eq!(
        kinds(&changes),
        vec![(AlertEventKind::Resolved, AlertKind::NoData)]
    );
    assert!(state.take_reconnected());
    assert!(!state.take_reconnected(), "taken once");
    assert_eq!(state.n_inhibited(), 4);
    assert_eq!(
        state.offline_window(),
        Some(OfflineWindow {
            from_ms: offline_from,
            until_ms: reconnect
        })
    );
    // The window survives a snapshot: a replay decides the same.
    let mut restored = MeterState::decode(&state.encode().unwrap()).unwrap();
    let mut replayed = AlertChanges::new();
    restored.apply_arrived(
        &reading(T0 + 9 * MINUTE, 262.0, 1.0, 200.0, 1.0),
        reconnect + 5_000,
        &thresholds,
        &mut replayed,
    );
    assert!(replayed.is_empty(), "{replayed:?}");
    // A reading measured after the reconnect is live: it raises, and the window is gone.
    changes.clear();
    state.apply_arrived(
        &reading(reconnect + 1_000, 262.0, 1.0, 200.0, 1.0),
        reconnect + 1_500,
        &thresholds,
        &mut changes,
    );
    assert_eq!(
        kinds(&changes),
        vec![(AlertEventKind::Raised, AlertKind::OverVoltage)]
    );
    assert_eq!(state.offline_window(), None);
}

#[test]
fn readings_from_before_the_outage_and_register_decreases_are_not_inhibited() {
    let thresholds = Thresholds::default();
    let mut state = offline_meter(&thresholds);
    // Measured 30 s after the last reading: before the meter counted as silent.
    let mut changes = AlertChanges::new();
    state.apply_arrived(
        &reading(T0 + 30_000, 262.0, 1.0, 200.0, 5.0),
        T0 + 10 * MINUTE,
        &thresholds,
        &mut changes,
    );
    assert_eq!(
        kinds(&changes),
        vec![
            (AlertEventKind::Resolved, AlertKind::NoData),
            (AlertEventKind::Raised, AlertKind::OverVoltage)
        ]
    );
    // Inside the window: the register went backwards (a reset) — still raised.
    changes.clear();
    state.apply_arrived(
        &reading(T0 + 3 * MINUTE, 230.0, 1.0, 200.0, 1.0),
        T0 + 10 * MINUTE,
        &thresholds,
        &mut changes,
    );
    assert_eq!(
        kinds(&changes),
        vec![
            (AlertEventKind::Raised, AlertKind::RegisterDecrease),
            (AlertEventKind::Resolved, AlertKind::OverVoltage)
        ],
        "a reading in the window still clears what it clears"
    );
    // Without an open no_data there is no window: a plain late reading is not offline.
    let mut online = MeterState::new(meter());
    changes.clear();
    online.apply(
        &reading(T0, 230.0, 1.0, 200.0, 0.0),
        &thresholds,
        &mut changes,
    );
    online.apply_arrived(
        &reading(T0 + 5 * MINUTE, 262.0, 1.0, 200.0, 0.0),
        T0 + 60 * MINUTE,
        &thresholds,
        &mut changes,
    );
    assert_eq!(
        kinds(&changes),
        vec![(AlertEventKind::Raised, AlertKind::OverVoltage)]
    );
    assert!(!online.take_reconnected());
}

#[test]
fn a_last_will_raises_no_data_at_once_once_and_online_clears_it() {
    let thresholds = Thresholds::default();
    let mut state = MeterState::new(meter());
    let mut changes = AlertChanges::new();
    state.apply(
        &reading(T0, 230.0, 1.0, 200.0, 1.0),
        &thresholds,
        &mut changes,
    );
    assert!(changes.is_empty());
    // The last will, 3 s after the reading: long before the no-data timeout.
    let will_ms = T0 + 3_000;
    state.link_down(will_ms, &thresholds, &mut changes);
    assert_eq!(
        kinds(&changes),
        vec![(AlertEventKind::Raised, AlertKind::NoData)]
    );
    let raised = &changes[0];
    assert_eq!(raised.alert.id, format!("m-1.no_data.{}", T0 + 1));
    assert_eq!(raised.alert.value, 3.0 - 0.001);
    let note = raised.note.as_ref().unwrap();
    assert_eq!((note.by.as_str(), note.at_ms), (LINK_ACTOR, will_ms));
    assert!(note.text.as_deref().unwrap().contains("last will"));
    // Redelivered, or the silence rule later: the same open alert, no second one.
    let mut again = AlertChanges::new();
    state.link_down(will_ms + 1_000, &thresholds, &mut again);
    assert!(again.is_empty());
    state.check_no_data(will_ms + 400_000, T0, &thresholds, &mut AlertChanges::new());
    assert_eq!(state.open_alerts().count(), 1);
    // Online at `back_ms` resolves it and closes the outage there: a buffered reading
    // from inside it is inhibited.
    let back_ms = T0 + 60_000;
    let mut cleared = AlertChanges::new();
    state.link_up(back_ms, &mut cleared);
    assert_eq!(
        kinds(&cleared),
        vec![(AlertEventKind::Resolved, AlertKind::NoData)]
    );
    assert_eq!(cleared[0].alert.resolved_at_ms, Some(back_ms));
    assert_eq!(
        state.offline_window(),
        Some(OfflineWindow {
            from_ms: T0 + 1,
            until_ms: back_ms
        })
    );
    let mut buffered = AlertChanges::new();
    let mut over = reading(T0 + 30_000, 262.0, 1.0, 200.0, 2.0);
    over.backfill = false;
    state.apply_arrived(&over, back_ms + 10, &thresholds, &mut buffered);
    assert!(buffered.is_empty(), "{buffered:?}");
    // Online with nothing open changes nothing.
    let mut nothing = AlertChanges::new();
    state.link_up(back_ms + 1, &mut nothing);
    assert!(nothing.is_empty());
    // A meter never heard from counts as silent from the last will itself.
    let mut fresh = MeterState::new(meter());
    let mut raised = AlertChanges::new();
    fresh.link_down(will_ms, &thresholds, &mut raised);
    assert_eq!(raised[0].alert.first_seen_ms, will_ms);
}
