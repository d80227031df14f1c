//! The alert vocabulary clients see on the wire: kinds, severities, lifecycle states,
//! records and events.

use alloc::string::String;
use core::fmt;

use crate::meter_id::MeterId;

/// What an alert is about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Voltage above the meter's over-voltage threshold.
    OverVoltage,
    /// Voltage below the meter's under-voltage threshold.
    UnderVoltage,
    /// Current above the meter's over-current threshold.
    OverCurrent,
    /// Power far above the meter's rolling baseline.
    PowerSpike,
    /// No reading for longer than the meter's no-data timeout.
    NoData,
    /// The energy register went backwards without a rollover (reset or tampering).
    RegisterDecrease,
    /// Many meters went silent for one cause (the MQTT bridge lost its broker, or a
    /// feeder is down): one alert standing for their `no_data` alerts (its members).
    /// Raised by the alert hub, never by a meter; its `meter` names the cause.
    NoDataGroup,
}

impl AlertKind {
    /// Every kind, in a fixed order (metrics, docs, tests).
    pub const ALL: [AlertKind; 7] = [
        AlertKind::OverVoltage,
        AlertKind::UnderVoltage,
        AlertKind::OverCurrent,
        AlertKind::PowerSpike,
        AlertKind::NoData,
        AlertKind::RegisterDecrease,
        AlertKind::NoDataGroup,
    ];

    /// The kinds a meter raises (the rest are raised by the hub): `index` of these is
    /// below [`AlertKind::N_METER_KINDS`].
    pub const N_METER_KINDS: usize = 6;

    /// The wire name, e.g. `over_voltage`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::OverVoltage => "over_voltage",
            AlertKind::UnderVoltage => "under_voltage",
            AlertKind::OverCurrent => "over_current",
            AlertKind::PowerSpike => "power_spike",
            AlertKind::NoData => "no_data",
            AlertKind::RegisterDecrease => "register_decrease",
            AlertKind::NoDataGroup => "no_data_group",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<AlertKind> {
        AlertKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    /// The severity an alert of this kind is raised with.
    pub fn default_severity(self) -> Severity {
        match self {
            AlertKind::OverVoltage
            | AlertKind::OverCurrent
            | AlertKind::RegisterDecrease
            | AlertKind::NoDataGroup => Severity::Critical,
            AlertKind::UnderVoltage | AlertKind::PowerSpike | AlertKind::NoData => {
                Severity::Warning
            }
        }
    }

    /// The position of this kind in [`AlertKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent an alert is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

/// Where an alert is in its lifecycle: `firing → acknowledged → resolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds (or held) and nobody has taken it yet.
    Firing,
    /// Someone has taken it; it stays open until the condition clears or it is resolved.
    Acknowledged,
    /// Closed: the condition cleared (with hysteresis) or someone resolved it.
    Resolved,
}

impl AlertState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<AlertState> {
        [
            AlertState::Firing,
            AlertState::Acknowledged,
            AlertState::Resolved,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }

    /// Whether the alert is still open.
    pub fn is_open(self) -> bool {
        !matches!(self, AlertState::Resolved)
    }
}

/// An alert as stored and shown.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlertRecord {
    /// Stable id: `{meter}.{kind}.{first_seen_ms}`; the same reading replayed yields the
    /// same id.
    pub id: String,
    /// The meter the alert is about.
    pub meter: MeterId,
    /// What it is about.
    pub kind: AlertKind,
    /// How urgent.
    pub severity: Severity,
    /// Lifecycle state.
    pub state: AlertState,
    /// Event time of the first raise, Unix ms.
    pub first_seen_ms: i64,
    /// Event time of the latest raise, Unix ms.
    pub last_seen_ms: i64,
    /// How many times the condition was raised while the alert was open.
    pub count: u64,
    /// The measured value of the latest raise.
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When it was acknowledged, Unix ms.
    pub acknowledged_at_ms: Option<i64>,
    /// Who resolved it (`system` when the condition cleared).
    pub resolved_by: Option<String>,
    /// When it was resolved, Unix ms.
    pub resolved_at_ms: Option<i64>,
    /// Who the alert is assigned to (a user id or a person's name), if anyone.
    #[serde(default)]
    pub assignee: Option<String>,
    /// No reminders before this time, Unix ms (wall clock), while set.
    #[serde(default)]
    pub snoozed_until_ms: Option<i64>,
    /// How many comments it has.
    #[serde(default)]
    pub comments: u32,
    /// How many reminders it has had.
    #[serde(default)]
    pub reminders: u32,
    /// When the latest reminder was due, Unix ms (wall clock).
    #[serde(default)]
    pub last_reminder_ms: Option<i64>,
    /// On a `no_data` alert grouped into a `no_data_group` alert: the group's id (set
    /// by the hub while the group is open; the member stays a real alert).
    #[serde(default)]
    pub group: Option<String>,
}

/// Builds the stable id of an alert.
pub fn alert_id(meter: &MeterId, kind: AlertKind, first_seen_ms: i64) -> String {
    alloc::format!("{meter}.{}.{first_seen_ms}", kind.as_str())
}

/// Splits a stable alert id into its meter, kind and first-seen time.
pub fn parse_alert_id(id: &str) -> Option<(MeterId, AlertKind, i64)> {
    let mut parts = id.rsplitn(3, '.');
    let first_seen_ms = parts.next()?.parse().ok()?;
    let kind = AlertKind::parse(parts.next()?)?;
    let meter = MeterId::new(parts.next()?).ok()?;
    Some((meter, kind, first_seen_ms))
}

/// What happened to an alert.
///
/// `Raised`, `Updated`, `Acknowledged` and `Resolved` are its lifecycle; the others are
/// workflow events ([`AlertEventKind::is_workflow`]), each carrying an [`AlertNote`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEventKind {
    /// A new alert opened.
    Raised,
    /// An open alert was raised again (count and last-seen changed).
    Updated,
    /// Someone acknowledged it.
    Acknowledged,
    /// It closed.
    Resolved,
    /// Someone assigned it to someone (or unassigned it: `assignee` is then `None`).
    Assigned,
    /// Someone commented on it (the text is in the note).
    Commented,
    /// Someone snoozed its reminders until `snoozed_until_ms`.
    Snoozed,
    /// Its snooze ended: lifted by someone, or run out (`system`).
    Unsnoozed,
    /// It is still firing and nobody acknowledged it (`system`).
    Reminder,
}

impl AlertEventKind {
    /// Every kind, in a fixed order.
    pub const ALL: [AlertEventKind; 9] = [
        AlertEventKind::Raised,
        AlertEventKind::Updated,
        AlertEventKind::Acknowledged,
        AlertEventKind::Resolved,
        AlertEventKind::Assigned,
        AlertEventKind::Commented,
        AlertEventKind::Snoozed,
        AlertEventKind::Unsnoozed,
        AlertEventKind::Reminder,
    ];

    /// The wire name, e.g. `acknowledged`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEventKind::Raised => "raised",
            AlertEventKind::Updated => "updated",
            AlertEventKind::Acknowledged => "acknowledged",
            AlertEventKind::Resolved => "resolved",
            AlertEventKind::Assigned => "assigned",
            AlertEventKind::Commented => "commented",
            AlertEventKind::Snoozed => "snoozed",
            AlertEventKind::Unsnoozed => "unsnoozed",
            AlertEventKind::Reminder => "reminder",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<AlertEventKind> {
        AlertEventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    /// Whether this is a workflow event (assign, comment, snooze, unsnooze, reminder):
    /// it carries an [`AlertNote`] and leaves the lifecycle state alone.
    pub fn is_workflow(self) -> bool {
        !matches!(
            self,
            AlertEventKind::Raised
                | AlertEventKind::Updated
                | AlertEventKind::Acknowledged
                | AlertEventKind::Resolved
        )
    }
}

impl fmt::Display for AlertEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a workflow change, when, and what it said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlertNote {
    /// Who (`system` for reminders and snoozes that ran out).
    pub by: String,
    /// When, Unix ms (wall clock; for a reminder the time it was due, for a snooze that
    /// ran out its end).
    pub at_ms: i64,
    /// Position among the alert's workflow events (1, 2, ...): tells apart two events
    /// of one kind in the same millisecond, and makes re-storing one harmless.
    pub action_seq: u32,
    /// A comment's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One change to one alert, as pushed to subscribers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlertEvent {
    /// Position in the alert stream (monotonic, starts at 1), assigned by the hub.
    pub seq: u64,
    /// What happened.
    pub event: AlertEventKind,
    /// The alert after the change.
    pub alert: AlertRecord,
    /// Who, when and what, for workflow events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<AlertNote>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_ids_round_trip_even_with_dots_in_meter_ids() {
        for meter in ["meter-01", "site.7.m:3", "a"] {
            let meter = MeterId::new(meter).unwrap();
            for kind in AlertKind::ALL {
                let id = alert_id(&meter, kind, 1_700_000_000_123);
                assert_eq!(parse_alert_id(&id), Some((meter, kind, 1_700_000_000_123)));
            }
        }
        assert_eq!(parse_alert_id("m.not_a_kind.1"), None);
        assert_eq!(parse_alert_id("m.no_data.x"), None);
        assert_eq!(parse_alert_id("no_data.1"), None);
    }

    #[test]
    fn kinds_and_states_parse_their_wire_names() {
        for kind in AlertKind::ALL {
            assert_eq!(AlertKind::parse(kind.as_str()), Some(kind));
            assert_eq!(AlertKind::ALL[kind.index()], kind);
        }
        for state in [
            AlertState::Firing,
            AlertState::Acknowledged,
            AlertState::Resolved,
        ] {
            assert_eq!(AlertState::parse(state.as_str()), Some(state));
        }
        assert_eq!(AlertKind::parse("over-voltage"), None);
        for event in AlertEventKind::ALL {
            assert_eq!(AlertEventKind::parse(event.as_str()), Some(event));
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(json, alloc::format!("\"{}\"", event.as_str()));
        }
        assert!(!AlertEventKind::Resolved.is_workflow());
        assert!(AlertEventKind::Reminder.is_workflow());
    }

    #[test]
    fn records_stored_before_the_workflow_fields_still_decode() {
        let old = r#"{"id":"m.no_data.5","meter":"m","kind":"no_data","severity":"warning",
            "state":"firing","first_seen_ms":5,"last_seen_ms":5,"count":1,"value":61.0,
            "threshold":60.0,"acknowledged_by":null,"acknowledged_at_ms":null,
            "resolved_by":null,"resolved_at_ms":null}"#;
        let record: AlertRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.assignee, None);
        assert_eq!(record.snoozed_until_ms, None);
        assert_eq!((record.comments, record.reminders), (0, 0));
        let old_event = alloc::format!(r#"{{"seq":3,"event":"raised","alert":{old}}}"#);
        let event: AlertEvent = serde_json::from_str(&old_event).unwrap();
        assert_eq!(event.note, None);
    }
}
