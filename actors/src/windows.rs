//! Rolling power windows and the hour-of-day load profile of one meter.
//!
//! Memory is the constraint (a million meters in one process), so windows are kept as
//! sixty one-minute buckets (sum and count) rather than raw samples: 360 bytes cover the
//! 1 min, 15 min and 1 h averages. A window's oldest, partly covered minute is weighted by
//! how much of it lies inside the window (the classic sliding-window approximation), so
//! averages move smoothly instead of jumping at minute boundaries.

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
const N_BUCKETS: usize = 60;
/// Weight of the newest complete hour in the hour-of-day profile.
const PROFILE_ALPHA: f32 = 0.5;

/// Sixty one-minute buckets of power readings, indexed by event time.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PowerWindows {
    /// Newest minute (Unix minutes) that has data; `i64::MIN` when empty.
    head_minute: i64,
    #[serde(with = "fixed_array")]
    sums_w: [f32; N_BUCKETS],
    #[serde(with = "fixed_array")]
    counts: [u16; N_BUCKETS],
}

impl Default for PowerWindows {
    fn default() -> Self {
        PowerWindows {
            head_minute: i64::MIN,
            sums_w: [0.0; N_BUCKETS],
            counts: [0; N_BUCKETS],
        }
    }
}

impl PowerWindows {
    /// Adds a power sample taken at `ts_ms`. Samples older than the hour kept are ignored.
    pub fn record(&mut self, ts_ms: i64, power_w: f64) {
        let minute = ts_ms.div_euclid(MINUTE_MS);
        if self.head_minute == i64::MIN {
            self.head_minute = minute;
        } else if minute > self.head_minute {
            // Clear the buckets the head moves over (at most all of them).
            let advance = (minute - self.head_minute).min(N_BUCKETS as i64);
            for step in 1..=advance {
                let idx = (self.head_minute + step).rem_euclid(N_BUCKETS as i64) as usize;
                self.sums_w[idx] = 0.0;
                self.counts[idx] = 0;
            }
            self.head_minute = minute;
        } else if minute <= self.head_minute - N_BUCKETS as i64 {
            return;
        }
        let idx = minute.rem_euclid(N_BUCKETS as i64) as usize;
        self.sums_w[idx] += power_w as f32;
        self.counts[idx] = self.counts[idx].saturating_add(1);
    }

    /// Average power over the `minutes` (1..=59) before `at_ms`, or `None` without data.
    pub fn average_w(&self, minutes: u32, at_ms: i64) -> Option<f64> {
        if self.head_minute == i64::MIN {
            return None;
        }
        let minutes = i64::from(minutes.clamp(1, N_BUCKETS as u32 - 1));
        let at_minute = at_ms.div_euclid(MINUTE_MS);
        let into_minute = at_ms.rem_euclid(MINUTE_MS) as f64 / MINUTE_MS as f64;
        let oldest_kept = self.head_minute - (N_BUCKETS as i64 - 1);
        let (mut sum, mut count) = (0.0f64, 0.0f64);
        for back in 0..=minutes {
            let minute = at_minute - back;
            if minute > self.head_minute || minute < oldest_kept {
                continue;
            }
            // The oldest minute is only partly inside the window.
            let weight = if back == minutes {
                1.0 - into_minute
            } else {
                1.0
            };
            let idx = minute.rem_euclid(N_BUCKETS as i64) as usize;
            sum += f64::from(self.sums_w[idx]) * weight;
            count += f64::from(self.counts[idx]) * weight;
        }
        (count > 0.0).then(|| sum / count)
    }
}

/// Mean power by UTC hour of day, learned from complete hours, for the forecast.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HourProfile {
    /// Hour (Unix hours) being accumulated.
    hour: i64,
    hour_sum_w: f64,
    hour_count: u32,
    /// Learned mean power per hour of day; NaN until that hour has been seen.
    mean_w: [f32; 24],
}

impl Default for HourProfile {
    fn default() -> Self {
        HourProfile {
            hour: i64::MIN,
            hour_sum_w: 0.0,
            hour_count: 0,
            mean_w: [f32::NAN; 24],
        }
    }
}

impl HourProfile {
    /// Adds a power sample; completing an hour folds it into the profile.
    pub fn record(&mut self, ts_ms: i64, power_w: f64) {
        let hour = ts_ms.div_euclid(HOUR_MS);
        if hour < self.hour {
            return;
        }
        if hour > self.hour {
            self.fold_current_hour();
            self.hour = hour;
        }
        self.hour_sum_w += power_w;
        self.hour_count += 1;
    }

    fn fold_current_hour(&mut self) {
        if self.hour_count == 0 {
            return;
        }
        let slot = self.hour.rem_euclid(24) as usize;
        let mean = (self.hour_sum_w / f64::from(self.hour_count)) as f32;
        self.mean_w[slot] = if self.mean_w[slot].is_nan() {
            mean
        } else {
            self.mean_w[slot] * (1.0 - PROFILE_ALPHA) + mean * PROFILE_ALPHA
        };
        self.hour_sum_w = 0.0;
        self.hour_count = 0;
    }

    /// Learned mean power for the UTC hour of day of `ts_ms`.
    pub fn mean_for(&self, ts_ms: i64) -> Option<f64> {
        let slot = ts_ms.div_euclid(HOUR_MS).rem_euclid(24) as usize;
        let mean = self.mean_w[slot];
        (!mean.is_nan()).then_some(f64::from(mean))
    }

    /// Forecast energy (Wh) from `from_ms` to `to_ms`: each hour at its learned mean,
    /// or at `fallback_w` where the profile has not seen that hour yet.
    pub fn forecast_wh(&self, from_ms: i64, to_ms: i64, fallback_w: f64) -> f64 {
        let mut energy_wh = 0.0;
        let mut start = from_ms;
        while start < to_ms {
            let hour_end = (start.div_euclid(HOUR_MS) + 1) * HOUR_MS;
            let end = hour_end.min(to_ms);
            let power_w = self.mean_for(start).unwrap_or(fallback_w);
            energy_wh += power_w * (end - start) as f64 / HOUR_MS as f64;
            start = end;
        }
        energy_wh
    }
}

/// Serde for fixed-size arrays longer than serde's built-in 32 (as sequences).
mod fixed_array {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize, const N: usize>(
        array: &[T; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(array.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[T; N], D::Error> {
        let items: Vec<T> = Vec::deserialize(deserializer)?;
        let len = items.len();
        items
            .try_into()
            .map_err(|_| D::Error::invalid_length(len, &"a fixed-size array"))
    }
}

/// Start of the UTC day holding `ts_ms`.
pub fn day_start_ms(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(DAY_MS) * DAY_MS
}

/// End of the UTC day holding `ts_ms`.
pub fn day_end_ms(ts_ms: i64) -> i64 {
    day_start_ms(ts_ms) + DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: i64 = 1_739_923_200_000; // 2025-02-19 00:00:00 UTC

    #[test]
    fn averages_over_each_window() {
        let mut windows = PowerWindows::default();
        // 1 h of readings every 5 s: 100 W for the first 45 min, then 1000 W.
        let mut ts = T0;
        while ts < T0 + HOUR_MS {
            let power = if ts < T0 + 45 * MINUTE_MS {
                100.0
            } else {
                1000.0
            };
            windows.record(ts, power);
            ts += 5_000;
        }
        let at = T0 + HOUR_MS; // exactly at a minute boundary
        assert_eq!(windows.average_w(1, at), Some(1000.0));
        assert_eq!(windows.average_w(15, at), Some(1000.0));
        let hour = windows.average_w(59, at).unwrap();
        // 44 minutes of 100 W and 15 of 1000 W in the last 59 minutes.
        let expected = (44.0 * 100.0 + 15.0 * 1000.0) / 59.0;
        assert!((hour - expected).abs() < 1e-6, "{hour} vs {expected}");
    }

    #[test]
    fn stale_buckets_do_not_leak_into_averages() {
        let mut windows = PowerWindows::default();
        windows.record(T0, 5000.0);
        // Two hours of silence, then one reading.
        windows.record(T0 + 2 * HOUR_MS, 10.0);
        assert_eq!(windows.average_w(59, T0 + 2 * HOUR_MS + 1), Some(10.0));
        // A sample from before the hour kept is ignored.
        windows.record(T0, 9999.0);
        assert_eq!(windows.average_w(59, T0 + 2 * HOUR_MS + 1), Some(10.0));
        assert_eq!(PowerWindows::default().average_w(15, T0), None);
    }

    #[test]
    fn profile_learns_hours_and_forecasts() {
        let mut profile = HourProfile::default();
        for minute in 0..(25 * 60) {
            let ts = T0 + minute * MINUTE_MS;
            let power = if (ts / HOUR_MS) % 24 == 7 {
                3000.0
            } else {
                200.0
            };
            profile.record(ts, power);
        }
        assert_eq!(profile.mean_for(T0 + 7 * HOUR_MS), Some(3000.0));
        assert_eq!(profile.mean_for(T0 + 3 * HOUR_MS), Some(200.0));
        // 06:30 → 08:00: half an hour at 200 W and an hour at 3000 W.
        let wh = profile.forecast_wh(T0 + 6 * HOUR_MS + 30 * MINUTE_MS, T0 + 8 * HOUR_MS, 0.0);
        assert!((wh - 3100.0).abs() < 1e-6, "{wh}");
        // Unseen hours use the fallback.
        let empty = HourProfile::default();
        assert_eq!(empty.forecast_wh(T0, T0 + 2 * HOUR_MS, 500.0), 1000.0);
    }

    proptest! {
        /// The average of a window always lies between the smallest and the largest
        /// sample recorded, whatever the order or spacing of samples.
        #[test]
        fn average_is_bounded_by_samples(samples in proptest::collection::vec((0i64..7_200_000, 0.0f64..10_000.0), 1..300), minutes in 1u32..60) {
            let mut windows = PowerWindows::default();
            let mut sorted = samples.clone();
            sorted.sort_by_key(|(ts, _)| *ts);
            for (ts, power) in &samples {
                windows.record(T0 + ts, *power);
            }
            let at = T0 + sorted.last().map(|(ts, _)| *ts).unwrap_or(0);
            if let Some(avg) = windows.average_w(minutes, at) {
                let min = samples.iter().map(|s| s.1).fold(f64::MAX, f64::min);
                let max = samples.iter().map(|s| s.1).fold(f64::MIN, f64::max);
                prop_assert!(avg >= min * 0.999 - 1e-3 && avg <= max * 1.001 + 1e-3, "{avg} not in [{min}, {max}]");
            }
        }
    }
}
