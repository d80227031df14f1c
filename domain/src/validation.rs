//! Validation of untrusted readings: typed, field-level errors.
//!
//! Every reason a reading can be refused is a variant of [`ErrorReason`], reported with
//! the field it concerns, so the API can answer "400: `voltage`: must be a number, got
//! a string" and the dead-letter path can record the same reason.

use core::fmt;

use crate::meter_id::MeterIdError;

/// Physical and temporal limits a reading must respect.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Highest plausible RMS voltage, volts (low-voltage meters: 1000 V).
    pub max_voltage: f64,
    /// Highest plausible RMS current, amperes.
    pub max_current: f64,
    /// Highest plausible active power, watts.
    pub max_power_w: f64,
    /// Active power may exceed apparent power (V × I) by this factor, to absorb
    /// measurement rounding; above it the reading is physically impossible.
    pub apparent_power_tolerance: f64,
    /// Absolute slack in watts added to the apparent-power check (tiny loads).
    pub apparent_power_slack_w: f64,
    /// How far in the future (milliseconds) a timestamp may be: meter clock skew.
    pub max_future_skew_ms: i64,
    /// Earliest accepted timestamp, Unix milliseconds (2000-01-01 by default).
    pub min_ts_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_voltage: 1000.0,
            max_current: 1000.0,
            max_power_w: 1_000_000.0,
            apparent_power_tolerance: 1.1,
            apparent_power_slack_w: 50.0,
            max_future_skew_ms: 5 * 60 * 1000,
            min_ts_ms: 946_684_800_000,
        }
    }
}

/// Why a field was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorReason {
    /// A required field is absent (or `null`).
    Missing,
    /// The field has the wrong JSON type.
    WrongType {
        /// What was expected, e.g. "number".
        expected: &'static str,
        /// What was found, e.g. "string".
        found: &'static str,
    },
    /// The field is not a finite number.
    NotFinite,
    /// The field is negative where only non-negative values make sense.
    Negative {
        /// The rejected value.
        value: f64,
    },
    /// The value is outside what a meter can physically measure.
    OutOfRange {
        /// The rejected value.
        value: f64,
        /// The inclusive upper limit.
        max: f64,
    },
    /// Active power is larger than apparent power (voltage × current) allows.
    PowerExceedsApparent {
        /// Reported active power, W.
        power_w: f64,
        /// Voltage × current, VA.
        apparent_va: f64,
    },
    /// The timestamp lies further in the future than the allowed clock skew.
    TooFarInFuture {
        /// The rejected timestamp, Unix ms.
        ts_ms: i64,
        /// The latest timestamp that would have been accepted, Unix ms.
        latest_ms: i64,
    },
    /// The timestamp is before [`Limits::min_ts_ms`].
    TooOld {
        /// The rejected timestamp, Unix ms.
        ts_ms: i64,
    },
    /// The timestamp is not a whole number.
    NotInteger,
    /// The meter id is malformed.
    BadMeterId(MeterIdError),
    /// The payload is neither the canonical nor the seed firmware format.
    UnknownFormat,
    /// The payload is not a JSON object.
    NotAnObject {
        /// The JSON type found instead.
        found: &'static str,
    },
    /// The meter id in the payload differs from the one the transport names.
    MeterMismatch,
    /// The cumulative energy register went backwards (neither rollover nor replay).
    RegisterWentBackwards {
        /// Previous register value, Wh.
        previous_wh: f64,
        /// New register value, Wh.
        current_wh: f64,
    },
}

impl fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorReason::Missing => write!(f, "is required"),
            ErrorReason::WrongType { expected, found } => {
                write!(f, "must be a {expected}, got {found}")
            }
            ErrorReason::NotFinite => write!(f, "must be a finite number"),
            ErrorReason::Negative { value } => write!(f, "must not be negative, got {value}"),
            ErrorReason::OutOfRange { value, max } => {
                write!(
                    f,
                    "is physically impossible: {value} exceeds the limit {max}"
                )
            }
            ErrorReason::PowerExceedsApparent {
                power_w,
                apparent_va,
            } => write!(
                f,
                "is physically impossible: {power_w} W exceeds voltage x current = {apparent_va} VA"
            ),
            ErrorReason::TooFarInFuture { ts_ms, latest_ms } => write!(
                f,
                "is too far in the future: {ts_ms} ms is after the latest accepted {latest_ms} ms"
            ),
            ErrorReason::TooOld { ts_ms } => {
                write!(
                    f,
                    "is before the year 2000: {ts_ms} ms (expected Unix milliseconds)"
                )
            }
            ErrorReason::NotInteger => write!(f, "must be a whole number of milliseconds"),
            ErrorReason::BadMeterId(error) => write!(f, "{error}"),
            ErrorReason::UnknownFormat => write!(
                f,
                "unknown reading format: expected canonical {{\"meter\",\"ts_ms\",\"voltage\",\"current\",\"power_w\",\"energy_wh\"}} or firmware {{\"deviceId\",\"voltage\",\"current\",\"power\",\"energy\",\"timestamp\"}}"
            ),
            ErrorReason::NotAnObject { found } => write!(f, "must be a JSON object, got {found}"),
            ErrorReason::MeterMismatch => {
                write!(f, "names a different meter than the one it was sent for")
            }
            ErrorReason::RegisterWentBackwards {
                previous_wh,
                current_wh,
            } => write!(
                f,
                "energy register went backwards from {previous_wh} Wh to {current_wh} Wh"
            ),
        }
    }
}

impl ErrorReason {
    /// A short stable code for metrics labels and machine clients.
    pub fn code(&self) -> &'static str {
        match self {
            ErrorReason::Missing => "missing",
            ErrorReason::WrongType { .. } => "wrong_type",
            ErrorReason::NotFinite => "not_finite",
            ErrorReason::Negative { .. } => "negative",
            ErrorReason::OutOfRange { .. } => "out_of_range",
            ErrorReason::PowerExceedsApparent { .. } => "power_exceeds_apparent",
            ErrorReason::TooFarInFuture { .. } => "future_timestamp",
            ErrorReason::TooOld { .. } => "old_timestamp",
            ErrorReason::NotInteger => "not_integer",
            ErrorReason::BadMeterId(_) => "bad_meter_id",
            ErrorReason::UnknownFormat => "unknown_format",
            ErrorReason::NotAnObject { .. } => "not_an_object",
            ErrorReason::MeterMismatch => "meter_mismatch",
            ErrorReason::RegisterWentBackwards { .. } => "register_backwards",
        }
    }
}

/// A refused reading: which field, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadingError {
    /// The field concerned, as named in the payload (`""` for the whole reading).
    pub field: &'static str,
    /// Why it was refused.
    pub reason: ErrorReason,
}

impl ReadingError {
    /// Builds an error for `field`.
    pub const fn new(field: &'static str, reason: ErrorReason) -> ReadingError {
        ReadingError { field, reason }
    }
}

impl fmt::Display for ReadingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "reading {}", self.reason)
        } else {
            write!(f, "`{}` {}", self.field, self.reason)
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ReadingError {}

/// Checks a measured quantity: finite, non-negative, at most `max`.
pub(crate) fn check_quantity(
    field: &'static str,
    value: f64,
    max: f64,
) -> Result<f64, ReadingError> {
    if !value.is_finite() {
        return Err(ReadingError::new(field, ErrorReason::NotFinite));
    }
    if value < 0.0 {
        return Err(ReadingError::new(field, ErrorReason::Negative { value }));
    }
    if value > max {
        return Err(ReadingError::new(
            field,
            ErrorReason::OutOfRange { value, max },
        ));
    }
    Ok(value)
}

/// Checks a timestamp against the limits and the caller's `now_ms`.
pub(crate) fn check_timestamp(
    field: &'static str,
    ts_ms: i64,
    now_ms: i64,
    limits: &Limits,
) -> Result<i64, ReadingError> {
    let latest_ms = now_ms.saturating_add(limits.max_future_skew_ms);
    if ts_ms > latest_ms {
        return Err(ReadingError::new(
            field,
            ErrorReason::TooFarInFuture { ts_ms, latest_ms },
        ));
    }
    if ts_ms < limits.min_ts_ms {
        return Err(ReadingError::new(field, ErrorReason::TooOld { ts_ms }));
    }
    Ok(ts_ms)
}

/// Checks that active power is possible given voltage and current.
pub(crate) fn check_power_vs_apparent(
    field: &'static str,
    power_w: f64,
    voltage: f64,
    current: f64,
    limits: &Limits,
) -> Result<(), ReadingError> {
    let apparent_va = voltage * current;
    if power_w > apparent_va * limits.apparent_power_tolerance + limits.apparent_power_slack_w {
        return Err(ReadingError::new(
            field,
            ErrorReason::PowerExceedsApparent {
                power_w,
                apparent_va,
            },
        ));
    }
    Ok(())
}

/// A reading's values decoded from a format other than JSON (CSV bulk import), in base
/// units, before validation: [`validate_parts`] applies exactly the rules the JSON
/// formats get.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadingParts {
    /// The meter.
    pub meter: crate::MeterId,
    /// Measurement time, Unix milliseconds.
    pub ts_ms: i64,
    /// Volts.
    pub voltage: f64,
    /// Amperes.
    pub current: f64,
    /// Watts.
    pub power_w: f64,
    /// Watt-hours.
    pub energy_wh: f64,
    /// Prepaid credit, when given.
    pub credit: Option<f64>,
    /// Meter-side sequence number, when given.
    pub seq: Option<u64>,
    /// History delivered late (see [`crate::Reading::backfill`]).
    pub backfill: bool,
}

/// How the source format names the fields whose names differ between formats, so an
/// error names the field (column) the caller wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartNames {
    /// The timestamp field.
    pub ts: &'static str,
    /// The active power field.
    pub power: &'static str,
    /// The energy register field.
    pub energy: &'static str,
}

/// Validates decoded values with the same rules and [`Limits`] as the JSON formats:
/// timestamp window, finite non-negative quantities within the limits, active power
/// within apparent power, finite credit.
pub fn validate_parts(
    parts: &ReadingParts,
    names: &PartNames,
    now_ms: i64,
    limits: &Limits,
) -> Result<crate::Reading, ReadingError> {
    let ts_ms = check_timestamp(names.ts, parts.ts_ms, now_ms, limits)?;
    let voltage = check_quantity("voltage", parts.voltage, limits.max_voltage)?;
    let current = check_quantity("current", parts.current, limits.max_current)?;
    let power_w = check_quantity(names.power, parts.power_w, limits.max_power_w)?;
    let energy_wh = check_quantity(names.energy, parts.energy_wh, f64::MAX)?;
    check_power_vs_apparent(names.power, power_w, voltage, current, limits)?;
    if let Some(credit) = parts.credit
        && !credit.is_finite()
    {
        return Err(ReadingError::new("credit", ErrorReason::NotFinite));
    }
    Ok(crate::Reading {
        meter: parts.meter,
        ts_ms,
        voltage,
        current,
        power_w,
        energy_wh,
        credit: parts.credit,
        seq: parts.seq,
        backfill: parts.backfill,
    })
}
