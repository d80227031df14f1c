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
}

impl AlertKind {
    /// Every kind, in a fixed order (metrics, docs, tests).
    pub const ALL: [AlertKind; 6] = [
        AlertKind::OverVoltage,
        AlertKind::UnderVoltage,
        AlertKind::OverCurrent,
        AlertKind::PowerSpike,
        AlertKind::NoData,
        AlertKind::RegisterDecrease,
    ];

    /// The wire name, e.g. `over_voltage`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::OverVoltage => "over_voltage",
            AlertKind::UnderVoltage => "under_voltage",
            AlertKind::OverCurrent => "over_current",
            AlertKind::PowerSpike => "power_spike",
            AlertKind::NoData => "no_data",
            AlertKind::RegisterDecrease => "register_decrease",
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
            AlertKind::OverVoltage | AlertKind::OverCurrent | AlertKind::RegisterDecrease => {
                Severity::Critical
            }
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
    }
}
