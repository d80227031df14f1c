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
    }
}

/// Feeds voltages (one reading every 5 s, normal current/power) and returns the events.
fn feed_voltages(state: &mut MeterState, voltages: &[f64]) -> Vec<(AlertEventKind, AlertRecord)> {
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

fn kinds(events: &[(AlertEventKind, AlertRecord)]) -> Vec<(AlertEventKind, AlertKind)> {
    events
        .iter()
        .map(|(event, alert)| (*event, alert.kind))
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
    let resolved = &events[2].1;
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
        .filter(|(event, _)| *event == AlertEventKind::Updated)
        .count();
    assert_eq!(events[0].0, AlertEventKind::Raised);
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
    assert_eq!(changes[0].1.first_seen_ms, T0 + 6 * STEP_MS);
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
    assert_eq!(changes[0].1.value, 0.0);
    assert_eq!(changes[0].1.threshold, 15.0);
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
        changes.last().map(|(event, _)| *event),
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
    assert_eq!(changes[0].1.id, format!("m-1.no_data.{}", T0 + 60_000));
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
            for (event, alert) in changes.iter().filter(|(_, a)| a.kind == AlertKind::OverVoltage) {
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
                    AlertEventKind::Acknowledged => prop_assert!(false, "nobody acknowledged"),
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
                all.extend(changes.into_iter().map(|(e, a)| (e, a.id)));
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
