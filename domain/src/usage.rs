//! Usage re-keyed by user: user ids and the per-minute usage delta a meter sends its
//! owner.
//!
//! Meter actors own a meter's readings; user actors (budgets, tariffs, credit) need
//! the usage of all of a user's meters in one place. Each meter actor sums its
//! energy per event-time minute and, when a reading opens the next minute, sends the
//! closed minute to its owner as a [`UsageDelta`] (key = user id): on the
//! `usage-by-user` topic in Kafka mode, over in-process channels in embedded mode.
//!
//! A delta is identified by (meter, minute). Minutes close in event-time order per
//! meter and their boundaries depend only on the readings, so a replay after a crash
//! re-sends exactly the same deltas and a user applies each (meter, minute) once by
//! remembering the last minute it applied per meter.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::meter_id::{MeterId, MeterIdError};

/// Length of one usage interval, ms.
pub const USAGE_MINUTE_MS: i64 = 60_000;

/// The start of the usage minute holding `ts_ms`.
pub fn usage_minute(ts_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(USAGE_MINUTE_MS)
}

/// A user (account) id: 1 to 47 characters of `[A-Za-z0-9_.:-]`, inline and `Copy`
/// like a meter id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(MeterId);

/// Why a string is not a user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserIdError(MeterIdError);

impl fmt::Display for UserIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            MeterIdError::Empty => write!(f, "user id is empty"),
            MeterIdError::TooLong { len } => write!(
                f,
                "user id is {len} bytes long, at most {} allowed",
                crate::meter_id::MAX_METER_ID_LEN
            ),
            MeterIdError::BadCharacter { position } => write!(
                f,
                "user id has a character outside [A-Za-z0-9_.:-] at position {position}"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for UserIdError {}

impl UserId {
    /// Parses and checks a user id.
    pub fn new(text: &str) -> Result<UserId, UserIdError> {
        MeterId::new(text).map(UserId).map_err(UserIdError)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The partition (0..n_partitions) of `usage-by-user` that owns this user: Kafka's
    /// murmur2 partitioner, like [`MeterId::partition`].
    pub fn partition(&self, n_partitions: u32) -> u32 {
        self.0.partition(n_partitions)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.as_str())
    }
}

impl core::str::FromStr for UserId {
    type Err = UserIdError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        UserId::new(text)
    }
}

impl Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UserIdVisitor;
        impl serde::de::Visitor<'_> for UserIdVisitor {
            type Value = UserId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a user id string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<UserId, E> {
                UserId::new(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(UserIdVisitor)
    }
}

/// One meter's usage in one event-time minute, sent to the meter's owner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageDelta {
    /// The owner when the minute closed.
    pub user: UserId,
    /// The meter.
    pub meter: MeterId,
    /// Start of the minute, Unix ms (a multiple of [`USAGE_MINUTE_MS`]).
    pub minute_ms: i64,
    /// Energy counted in the minute, Wh (register steps; resets and implausible jumps
    /// count nothing).
    pub energy_wh: f64,
    /// Readings applied in the minute.
    pub readings: u32,
    /// Highest power seen in the minute, W.
    pub max_power_w: f64,
}

/// A meter's open usage minute: what it has summed since the minute began.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UsageAccumulator {
    /// Start of the open minute (`i64::MIN` before the first reading).
    pub minute_ms: i64,
    /// Energy so far, Wh.
    pub energy_wh: f64,
    /// Readings so far.
    pub readings: u32,
    /// Highest power so far, W.
    pub max_power_w: f64,
}

impl Default for UsageAccumulator {
    fn default() -> Self {
        UsageAccumulator {
            minute_ms: i64::MIN,
            energy_wh: 0.0,
            readings: 0,
            max_power_w: 0.0,
        }
    }
}

/// A minute closed by [`UsageAccumulator::add`]: (minute start, energy Wh, readings,
/// max power W).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClosedMinute {
    /// Start of the minute, Unix ms.
    pub minute_ms: i64,
    /// Energy, Wh.
    pub energy_wh: f64,
    /// Readings.
    pub readings: u32,
    /// Highest power, W.
    pub max_power_w: f64,
}

impl ClosedMinute {
    /// The delta this minute makes for `user`.
    pub fn to_delta(self, user: UserId, meter: MeterId) -> UsageDelta {
        UsageDelta {
            user,
            meter,
            minute_ms: self.minute_ms,
            energy_wh: self.energy_wh,
            readings: self.readings,
            max_power_w: self.max_power_w,
        }
    }
}

impl UsageAccumulator {
    /// Adds one applied reading (readings come in event-time order); returns the
    /// previous minute when this reading opens a new one.
    pub fn add(&mut self, ts_ms: i64, energy_wh: f64, power_w: f64) -> Option<ClosedMinute> {
        let minute = usage_minute(ts_ms);
        let closed = (minute != self.minute_ms && self.readings > 0).then_some(ClosedMinute {
            minute_ms: self.minute_ms,
            energy_wh: self.energy_wh,
            readings: self.readings,
            max_power_w: self.max_power_w,
        });
        if minute != self.minute_ms {
            *self = UsageAccumulator {
                minute_ms: minute,
                ..UsageAccumulator::default()
            };
        }
        self.energy_wh += energy_wh;
        self.readings = self.readings.saturating_add(1);
        self.max_power_w = self.max_power_w.max(power_w);
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_check_like_meter_ids_and_name_themselves() {
        assert_eq!(UserId::new("user-1").unwrap().as_str(), "user-1");
        let error = UserId::new("a b").unwrap_err();
        assert_eq!(
            alloc::string::ToString::to_string(&error),
            "user id has a character outside [A-Za-z0-9_.:-] at position 1"
        );
        assert!(UserId::new("").is_err());
    }

    #[test]
    fn minutes_close_when_the_next_one_opens() {
        let mut acc = UsageAccumulator::default();
        let t0 = 1_700_000_080_000; // 40 s into a minute
        assert_eq!(usage_minute(t0), 1_700_000_040_000);
        assert_eq!(acc.add(t0, 0.0, 100.0), None);
        assert_eq!(acc.add(t0 + 10_000, 2.0, 300.0), None);
        let closed = acc.add(t0 + 20_000, 1.0, 50.0).unwrap();
        assert_eq!(closed.minute_ms, usage_minute(t0));
        assert_eq!(closed.energy_wh, 2.0);
        assert_eq!(closed.readings, 2);
        assert_eq!(closed.max_power_w, 300.0);
        // The new minute holds the reading that opened it.
        assert_eq!(acc.readings, 1);
        assert_eq!(acc.energy_wh, 1.0);
        // Skipping minutes closes only the open one.
        let closed = acc.add(t0 + 600_000, 0.5, 10.0).unwrap();
        assert_eq!(closed.minute_ms, usage_minute(t0 + 20_000));
        assert_eq!(closed.energy_wh, 1.0);
    }

    #[test]
    fn deltas_round_trip_as_json() {
        let delta = UsageDelta {
            user: UserId::new("u-1").unwrap(),
            meter: MeterId::new("m-1").unwrap(),
            minute_ms: 1_700_000_040_000,
            energy_wh: 12.5,
            readings: 6,
            max_power_w: 900.0,
        };
        let json = serde_json::to_vec(&delta).unwrap();
        assert_eq!(serde_json::from_slice::<UsageDelta>(&json).unwrap(), delta);
        assert!(serde_json::from_slice::<UsageDelta>(br#"{"user":"a b"}"#).is_err());
    }
}
