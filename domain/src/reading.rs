//! `Reading`: one validated measurement from one meter.

use crate::meter_id::MeterId;

/// One validated meter reading, in base units.
///
/// Only [`crate::validation`] builds these from untrusted input, so a `Reading` is
/// always finite, within [`crate::Limits`] and timestamped in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reading {
    /// The meter that measured it.
    pub meter: MeterId,
    /// Measurement time, Unix epoch milliseconds (UTC).
    pub ts_ms: i64,
    /// RMS voltage, volts.
    pub voltage: f64,
    /// RMS current, amperes.
    pub current: f64,
    /// Active power, watts.
    pub power_w: f64,
    /// Cumulative import energy register, watt-hours.
    pub energy_wh: f64,
    /// Prepaid credit left on the meter, in the account currency, when it reports one.
    pub credit: Option<f64>,
    /// Meter-side sequence number, when the meter numbers its readings.
    pub seq: Option<u64>,
    /// History delivered late on purpose (a meter's offline buffer, a bulk import): it
    /// updates energy, usage, history and rollups like any reading, but never raises or
    /// clears an alert (nothing live happens for the past) and does not count as the
    /// meter being heard from.
    #[serde(default, skip_serializing_if = "is_false")]
    pub backfill: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}
