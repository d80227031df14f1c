//! Usage rollups: what the stream jobs compute per meter and per user for each hour,
//! day and month, what the store keeps (upserted by key, so a recomputed window after
//! late data replaces the old row) and what `GET /api/meters/{id}/usage` returns.
//!
//! Plain data: the window arithmetic and the aggregation live in `stream-jobs`.

use alloc::string::String;

use serde::{Deserialize, Serialize};

use crate::meter_id::MeterId;
use crate::money::Amount;
use crate::usage::UserId;

/// The size of a rollup window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// One hour.
    Hour,
    /// One local calendar day.
    Day,
    /// One local calendar month.
    Month,
}

impl Granularity {
    /// Every granularity, finest first.
    pub const ALL: [Granularity; 3] = [Granularity::Hour, Granularity::Day, Granularity::Month];

    /// The wire name (`hour`, `day`, `month`).
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Month => "month",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Granularity> {
        Granularity::ALL
            .into_iter()
            .find(|granularity| granularity.as_str() == text)
    }
}

/// One meter's usage in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterRollup {
    /// The meter.
    pub meter: MeterId,
    /// Window size.
    pub granularity: Granularity,
    /// First instant of the window, Unix ms (inclusive).
    pub window_start_ms: i64,
    /// First instant after the window, Unix ms (exclusive).
    pub window_end_ms: i64,
    /// Distinct readings in the window (duplicates by timestamp counted once).
    pub readings: u64,
    /// Energy from register deltas attributed to the window, Wh (never negative:
    /// resets and implausible jumps count 0).
    pub energy_wh: f64,
    /// Lowest active power, W.
    pub power_min_w: f64,
    /// Mean active power over the readings, W.
    pub power_avg_w: f64,
    /// Highest active power, W.
    pub power_max_w: f64,
    /// Lowest RMS voltage, V.
    pub voltage_min: f64,
    /// Highest RMS voltage, V.
    pub voltage_max: f64,
    /// Readings expected in the window at the meter's reporting interval.
    pub expected_readings: u64,
    /// `readings / expected_readings`, percent, at most 100.
    pub completeness_pct: f64,
    /// How many times the window was recomputed after late data (0: first result).
    pub revision: u32,
}

/// One user's usage in one window: their meters' rollups summed, priced by the tariff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRollup {
    /// The user.
    pub user: UserId,
    /// Window size.
    pub granularity: Granularity,
    /// First instant of the window, Unix ms (inclusive).
    pub window_start_ms: i64,
    /// First instant after the window, Unix ms (exclusive).
    pub window_end_ms: i64,
    /// Meters that reported in the window.
    pub meters: u32,
    /// Readings over those meters.
    pub readings: u64,
    /// Energy over those meters, Wh.
    pub energy_wh: f64,
    /// Energy cost of the window by the user's tariff (none without one).
    pub cost: Option<Amount>,
    /// ISO 4217 code of `cost`.
    pub currency: Option<String>,
    /// How many times the window was recomputed after late data.
    pub revision: u32,
}
