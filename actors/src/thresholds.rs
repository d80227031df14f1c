//! Per-meter alert thresholds, with defaults for a 230 V residential supply.

use serde::{Deserialize, Serialize};

/// The limits one meter is watched against. Each alert has a raise level and a clear
/// level on the safe side of it (hysteresis), so a value hovering at the limit does not
/// flap between firing and resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Raise over-voltage above this, volts (230 V + 10 %).
    pub over_voltage_v: f64,
    /// Clear over-voltage below this, volts.
    pub over_voltage_clear_v: f64,
    /// Raise under-voltage below this, volts (230 V − 10 %).
    pub under_voltage_v: f64,
    /// Clear under-voltage above this, volts.
    pub under_voltage_clear_v: f64,
    /// Raise over-current above this, amperes.
    pub over_current_a: f64,
    /// Clear over-current below this, amperes.
    pub over_current_clear_a: f64,
    /// Raise a power spike when power exceeds baseline × this factor ...
    pub spike_factor: f64,
    /// ... and exceeds the baseline by at least this many watts.
    pub spike_min_delta_w: f64,
    /// Clear a power spike when power falls below baseline × this factor.
    pub spike_clear_factor: f64,
    /// Readings needed before the baseline is trusted for spike detection.
    pub spike_warmup_readings: u32,
    /// Raise no-data when the meter has been silent this long, seconds.
    pub no_data_timeout_s: u32,
    /// The most power the meter can draw, watts; larger register jumps are glitches.
    pub max_power_w: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            over_voltage_v: 253.0,
            over_voltage_clear_v: 250.0,
            under_voltage_v: 207.0,
            under_voltage_clear_v: 210.0,
            over_current_a: 63.0,
            over_current_clear_a: 60.0,
            spike_factor: 3.0,
            spike_min_delta_w: 2000.0,
            spike_clear_factor: 2.0,
            spike_warmup_readings: 12,
            no_data_timeout_s: 60,
            max_power_w: 100_000.0,
        }
    }
}

/// A threshold set that contradicts itself.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("thresholds: `{field}` {reason}")]
pub struct ThresholdsError {
    /// The offending field.
    pub field: &'static str,
    /// Why.
    pub reason: &'static str,
}

impl Thresholds {
    /// Checks that every clear level lies on the safe side of its raise level.
    pub fn validate(&self) -> Result<(), ThresholdsError> {
        let fields = [
            ("over_voltage_v", self.over_voltage_v),
            ("over_voltage_clear_v", self.over_voltage_clear_v),
            ("under_voltage_v", self.under_voltage_v),
            ("under_voltage_clear_v", self.under_voltage_clear_v),
            ("over_current_a", self.over_current_a),
            ("over_current_clear_a", self.over_current_clear_a),
            ("spike_factor", self.spike_factor),
            ("spike_min_delta_w", self.spike_min_delta_w),
            ("spike_clear_factor", self.spike_clear_factor),
            ("max_power_w", self.max_power_w),
        ];
        for (field, value) in fields {
            if !value.is_finite() || value < 0.0 {
                return Err(ThresholdsError {
                    field,
                    reason: "must be a finite, non-negative number",
                });
            }
        }
        let checks = [
            (
                "over_voltage_clear_v",
                self.over_voltage_clear_v <= self.over_voltage_v,
                "must not exceed over_voltage_v",
            ),
            (
                "under_voltage_clear_v",
                self.under_voltage_clear_v >= self.under_voltage_v,
                "must not be below under_voltage_v",
            ),
            (
                "under_voltage_v",
                self.under_voltage_v < self.over_voltage_v,
                "must be below over_voltage_v",
            ),
            (
                "over_current_clear_a",
                self.over_current_clear_a <= self.over_current_a,
                "must not exceed over_current_a",
            ),
            (
                "spike_factor",
                self.spike_factor > 1.0,
                "must be greater than 1",
            ),
            (
                "spike_clear_factor",
                self.spike_clear_factor >= 1.0 && self.spike_clear_factor <= self.spike_factor,
                "must be between 1 and spike_factor",
            ),
            (
                "no_data_timeout_s",
                self.no_data_timeout_s >= 1,
                "must be at least 1 second",
            ),
        ];
        for (field, ok, reason) in checks {
            if !ok {
                return Err(ThresholdsError { field, reason });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_contradictions_are_named() {
        assert_eq!(Thresholds::default().validate(), Ok(()));
        let bad = Thresholds {
            over_voltage_clear_v: 260.0,
            ..Thresholds::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "over_voltage_clear_v");
        let bad = Thresholds {
            spike_factor: f64::NAN,
            ..Thresholds::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "spike_factor");
        let bad: Result<Thresholds, _> = serde_json::from_str(r#"{"over_voltag_v": 1}"#);
        assert!(bad.unwrap_err().to_string().contains("unknown field"));
    }
}
