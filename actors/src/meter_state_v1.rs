//! The first snapshot format of [`MeterState`] (unversioned postcard), kept so that
//! snapshots stored before the alert workflow (assignee, snooze, comments, reminders)
//! and offline windows still restore exactly: postcard is not self-describing, so a
//! field added to a nested struct cannot default — the old layout must be read as it
//! was and converted.
//!
//! Never change these types: they describe bytes already on disk.

use gridpulse_domain::{AlertKind, AlertRecord, AlertState, MeterId, Severity, UsageAccumulator};
use serde::Deserialize;

use crate::meter_state::{LastReading, MeterState, OpenAlert};
use crate::windows::{HourProfile, PowerWindows};

#[derive(Deserialize)]
struct MeterStateV1 {
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
    open: [Option<Box<OpenAlertV1>>; 6],
    latched: u8,
    usage: UsageAccumulator,
}

#[derive(Deserialize)]
struct OpenAlertV1 {
    record: AlertRecordV1,
    last_event_ms: i64,
}

#[derive(Deserialize)]
struct AlertRecordV1 {
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
}

impl OpenAlertV1 {
    fn upgrade(self) -> OpenAlert {
        let v1 = self.record;
        OpenAlert {
            // The wall-clock time it was raised was not kept: its event time stands in.
            reminder_from_ms: v1.first_seen_ms,
            record: AlertRecord {
                id: v1.id,
                meter: v1.meter,
                kind: v1.kind,
                severity: v1.severity,
                state: v1.state,
                first_seen_ms: v1.first_seen_ms,
                last_seen_ms: v1.last_seen_ms,
                count: v1.count,
                value: v1.value,
                threshold: v1.threshold,
                acknowledged_by: v1.acknowledged_by,
                acknowledged_at_ms: v1.acknowledged_at_ms,
                resolved_by: v1.resolved_by,
                resolved_at_ms: v1.resolved_at_ms,
                assignee: None,
                snoozed_until_ms: None,
                comments: 0,
                reminders: 0,
                last_reminder_ms: None,
                group: None,
            },
            last_event_ms: self.last_event_ms,
            n_workflow: 0,
        }
    }
}

/// Decodes a format-1 snapshot; answers the state and the bytes after it.
pub(crate) fn decode(bytes: &[u8]) -> Result<(MeterState, &[u8]), postcard::Error> {
    let (v1, rest) = postcard::take_from_bytes::<MeterStateV1>(bytes)?;
    let open = v1
        .open
        .map(|slot| slot.map(|open| Box::new(open.upgrade())));
    let state = MeterState::from_parts(
        v1.meter,
        v1.last,
        v1.windows,
        v1.profile,
        (
            v1.baseline_w,
            v1.day_start_ms,
            v1.energy_today_wh,
            v1.energy_yesterday_wh,
        ),
        (v1.n_readings, v1.n_stale),
        open,
        v1.latched,
        v1.usage,
    );
    Ok((state, rest))
}
