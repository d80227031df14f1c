//! Window assignment: which hour, local day and local month an instant falls in.
//!
//! Hours are UTC hours. Days and months are calendar days and months in the job's time
//! zone (jiff's bundled tz database, UTC by default), so a DST day lasts 23 or 25 hours.
//! Aggregation works on *slices*: the intersection of a UTC hour and a local day. In a
//! zone whose offset is a whole number of hours a slice is the hour; in `Asia/Kolkata`
//! (+05:30) every hour that holds local midnight is cut in two. Slices tile hours, days
//! and months exactly, so a day is the sum of its slices and nothing is counted twice.
//!
//! Each UTC hour is resolved through jiff once and cached; the hot path of the rollup
//! asks only when a meter's reading leaves the slice it was in.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rustc_hash::FxHashMap;

/// One hour, in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// Cached hours before the cache is cleared (bounds memory under far-flung timestamps).
const MAX_CACHED_HOURS: usize = 100_000;

/// A half-open time window `[start_ms, end_ms)`, Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// First instant (inclusive).
    pub start_ms: i64,
    /// First instant after the window (exclusive).
    pub end_ms: i64,
}

impl Window {
    /// Whether `ts_ms` is in the window.
    pub fn contains(&self, ts_ms: i64) -> bool {
        self.start_ms <= ts_ms && ts_ms < self.end_ms
    }

    /// Duration, ms.
    pub fn len_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }
}

/// The windows an instant belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// UTC hour ∩ local day: the unit of aggregation.
    pub slice: Window,
    /// The UTC hour.
    pub hour: Window,
    /// The local calendar day.
    pub day: Window,
    /// The local calendar month.
    pub month: Window,
}

/// An instant jiff cannot place (outside its supported range, about ±9999 years).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timestamp {ts_ms} ms is outside the calendar's range")]
pub struct OutOfRange {
    /// The instant.
    pub ts_ms: i64,
}

/// The day and month of one part of an hour.
#[derive(Debug, Clone, Copy)]
struct Part {
    slice: Window,
    day: Window,
    month: Window,
}

/// An hour split at a local midnight, if one falls inside it.
#[derive(Debug, Clone, Copy)]
struct HourLayout {
    first: Part,
    second: Option<Part>,
}

/// Resolves instants to windows in one time zone, caching per UTC hour.
#[derive(Debug)]
pub struct Calendar {
    zone: TimeZone,
    hours: FxHashMap<i64, HourLayout>,
}

impl Calendar {
    /// A calendar for `zone`.
    pub fn new(zone: TimeZone) -> Calendar {
        Calendar {
            zone,
            hours: FxHashMap::default(),
        }
    }

    /// The time zone of days and months.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The windows of instant `ts_ms`.
    pub fn place(&mut self, ts_ms: i64) -> Result<Placement, OutOfRange> {
        let hour_start = ts_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let hour = Window {
            start_ms: hour_start,
            end_ms: hour_start + HOUR_MS,
        };
        let layout = match self.hours.get(&hour_start) {
            Some(layout) => *layout,
            None => {
                let layout = self.layout(hour).ok_or(OutOfRange { ts_ms })?;
                if self.hours.len() >= MAX_CACHED_HOURS {
                    self.hours.clear();
                }
                self.hours.insert(hour_start, layout);
                layout
            }
        };
        let part = match layout.second {
            Some(second) if second.slice.contains(ts_ms) => second,
            _ => layout.first,
        };
        Ok(Placement {
            slice: part.slice,
            hour,
            day: part.day,
            month: part.month,
        })
    }

    fn layout(&self, hour: Window) -> Option<HourLayout> {
        let (day, month) = self.day_and_month(hour.start_ms)?;
        if day.end_ms >= hour.end_ms {
            return Some(HourLayout {
                first: Part {
                    slice: hour,
                    day,
                    month,
                },
                second: None,
            });
        }
        let (next_day, next_month) = self.day_and_month(day.end_ms)?;
        Some(HourLayout {
            first: Part {
                slice: Window {
                    start_ms: hour.start_ms,
                    end_ms: day.end_ms,
                },
                day,
                month,
            },
            second: Some(Part {
                slice: Window {
                    start_ms: day.end_ms,
                    end_ms: hour.end_ms,
                },
                day: next_day,
                month: next_month,
            }),
        })
    }

    /// The local day and month containing `ts_ms`.
    fn day_and_month(&self, ts_ms: i64) -> Option<(Window, Window)> {
        let timestamp = Timestamp::from_millisecond(ts_ms).ok()?;
        let date = self.zone.to_datetime(timestamp).date();
        let start_of = |date: jiff::civil::Date| -> Option<i64> {
            Some(
                date.to_zoned_datetime(self.zone.clone())
                    .ok()?
                    .timestamp()
                    .as_millisecond(),
            )
        };
        let day = Window {
            start_ms: start_of(date)?,
            end_ms: start_of(date.tomorrow().ok()?)?,
        };
        let first = date.first_of_month();
        let next_first = first.last_of_month().tomorrow().ok()?;
        let month = Window {
            start_ms: start_of(first)?,
            end_ms: start_of(next_first)?,
        };
        Some((day, month))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> TimeZone {
        jiff::tz::db().get(name).unwrap()
    }

    fn ms(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn utc_hours_days_months() {
        let mut calendar = Calendar::new(TimeZone::UTC);
        let placement = calendar.place(ms("2024-02-29T13:45:10Z")).unwrap();
        assert_eq!(placement.hour.start_ms, ms("2024-02-29T13:00:00Z"));
        assert_eq!(placement.slice, placement.hour);
        assert_eq!(placement.day.start_ms, ms("2024-02-29T00:00:00Z"));
        assert_eq!(placement.day.end_ms, ms("2024-03-01T00:00:00Z"));
        assert_eq!(placement.month.start_ms, ms("2024-02-01T00:00:00Z"));
        assert_eq!(placement.month.end_ms, ms("2024-03-01T00:00:00Z"));
        // Before 1970 too.
        let old = calendar.place(ms("1969-12-31T23:59:59Z")).unwrap();
        assert_eq!(old.hour.start_ms, ms("1969-12-31T23:00:00Z"));
    }

    #[test]
    fn half_hour_zone_splits_the_midnight_hour() {
        let mut calendar = Calendar::new(zone("Asia/Kolkata"));
        // Local midnight 2024-03-10 is 2024-03-09T18:30Z.
        let before = calendar.place(ms("2024-03-09T18:10:00Z")).unwrap();
        let after = calendar.place(ms("2024-03-09T18:40:00Z")).unwrap();
        assert_eq!(before.hour, after.hour);
        assert_eq!(before.slice.end_ms, ms("2024-03-09T18:30:00Z"));
        assert_eq!(after.slice.start_ms, ms("2024-03-09T18:30:00Z"));
        assert_eq!(before.day.end_ms, after.day.start_ms);
        assert_eq!(after.day.len_ms(), 24 * HOUR_MS);
    }

    #[test]
    fn dst_days_are_23_and_25_hours() {
        let mut calendar = Calendar::new(zone("Europe/London"));
        let spring = calendar.place(ms("2024-03-31T12:00:00Z")).unwrap();
        assert_eq!(spring.day.len_ms(), 23 * HOUR_MS);
        let autumn = calendar.place(ms("2024-10-27T12:00:00Z")).unwrap();
        assert_eq!(autumn.day.len_ms(), 25 * HOUR_MS);
        // October in London: 31 days and one extra hour.
        assert_eq!(autumn.month.len_ms(), (31 * 24 + 1) * HOUR_MS);
        assert_eq!(autumn.slice, autumn.hour);
    }
}
