//! The state of one user (account), fed by the usage deltas of the user's meters.
//!
//! Plain data and pure functions like [`MeterState`](crate::MeterState): the
//! [`UserActor`](crate::user_system::UserActor) is a thin shell around it. Deltas are
//! identified by (meter, minute) and each meter's minutes arrive in order, so a delta
//! at or before the last minute applied for its meter is a replay and changes nothing.

use std::collections::BTreeMap;

use gridpulse_domain::{MeterId, UsageDelta, UserId};
use serde::{Deserialize, Serialize};

use crate::user_billing::UserMoney;
use crate::windows::day_start_ms;

/// One of the user's meters, as the user sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeterUsage {
    /// Start of the last minute applied.
    pub last_minute_ms: i64,
    /// Energy in the user's current day, Wh.
    pub energy_today_wh: f64,
    /// Energy since the user first heard of the meter, Wh.
    pub energy_total_wh: f64,
    /// Readings behind the applied minutes.
    pub readings: u64,
}

/// What applying a delta did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageApplied {
    /// New usage, counted.
    Applied,
    /// A (meter, minute) already applied: a replay.
    Duplicate,
}

/// The state of one user. Serialisable: it is what a user snapshot stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    user: UserId,
    meters: BTreeMap<MeterId, MeterUsage>,
    /// Start of the user's current day (UTC), from the newest minute seen.
    day_start_ms: i64,
    energy_today_wh: f64,
    energy_total_wh: f64,
    /// Newest minute applied, any meter.
    last_minute_ms: i64,
    n_deltas: u64,
    n_duplicates: u64,
    /// Cost, bills, budget state and the user's event log.
    #[serde(default)]
    money: UserMoney,
}

/// A user's live usage, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserSnapshot {
    /// The user.
    pub user: UserId,
    /// Start of the current day, Unix ms (UTC).
    pub day_start_ms: i64,
    /// Energy today over all the user's meters, Wh.
    pub energy_today_wh: f64,
    /// Energy since the user's first delta, Wh.
    pub energy_total_wh: f64,
    /// Newest minute applied, Unix ms.
    pub last_minute_ms: Option<i64>,
    /// Deltas applied.
    pub n_deltas: u64,
    /// Replayed deltas skipped.
    pub n_duplicates: u64,
    /// Per meter.
    pub meters: BTreeMap<MeterId, MeterUsage>,
}

impl UserState {
    /// A user never heard of.
    pub fn new(user: UserId) -> UserState {
        UserState {
            user,
            meters: BTreeMap::new(),
            day_start_ms: i64::MIN,
            energy_today_wh: 0.0,
            energy_total_wh: 0.0,
            last_minute_ms: i64::MIN,
            n_deltas: 0,
            n_duplicates: 0,
            money: UserMoney::default(),
        }
    }

    /// The money side (cost, bills, budget, events).
    pub fn money(&self) -> &UserMoney {
        &self.money
    }

    /// The money side, to price applied usage with.
    pub fn money_mut(&mut self) -> &mut UserMoney {
        &mut self.money
    }

    /// The user's id.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// Applies one delta (skipping replays).
    pub fn apply(&mut self, delta: &UsageDelta) -> UsageApplied {
        let minute = delta.minute_ms;
        let meter = self.meters.entry(delta.meter).or_insert(MeterUsage {
            last_minute_ms: i64::MIN,
            energy_today_wh: 0.0,
            energy_total_wh: 0.0,
            readings: 0,
        });
        if minute <= meter.last_minute_ms {
            self.n_duplicates += 1;
            return UsageApplied::Duplicate;
        }
        meter.last_minute_ms = minute;
        meter.energy_total_wh += delta.energy_wh;
        meter.readings += u64::from(delta.readings);
        let day = day_start_ms(minute);
        if day > self.day_start_ms {
            // A new day: today starts over, for every meter.
            self.day_start_ms = day;
            self.energy_today_wh = 0.0;
            for usage in self.meters.values_mut() {
                usage.energy_today_wh = 0.0;
            }
        }
        if day == self.day_start_ms {
            self.energy_today_wh += delta.energy_wh;
            if let Some(usage) = self.meters.get_mut(&delta.meter) {
                usage.energy_today_wh += delta.energy_wh;
            }
        }
        self.energy_total_wh += delta.energy_wh;
        self.last_minute_ms = self.last_minute_ms.max(minute);
        self.n_deltas += 1;
        UsageApplied::Applied
    }

    /// The user's live usage.
    pub fn snapshot(&self) -> UserSnapshot {
        UserSnapshot {
            user: self.user,
            day_start_ms: self.day_start_ms.max(0),
            energy_today_wh: self.energy_today_wh,
            energy_total_wh: self.energy_total_wh,
            last_minute_ms: (self.last_minute_ms != i64::MIN).then_some(self.last_minute_ms),
            n_deltas: self.n_deltas,
            n_duplicates: self.n_duplicates,
            meters: self.meters.clone(),
        }
    }

    /// Encodes the state for a snapshot.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Decodes a snapshot written by [`UserState::encode`].
    pub fn decode(bytes: &[u8]) -> Result<UserState, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_700_006_400_000; // 00:00 UTC

    fn delta(meter: &str, minute: i64, wh: f64) -> UsageDelta {
        UsageDelta {
            user: UserId::new("u1").unwrap(),
            meter: MeterId::new(meter).unwrap(),
            minute_ms: T0 + minute * 60_000,
            energy_wh: wh,
            readings: 6,
            max_power_w: 100.0,
        }
    }

    #[test]
    fn sums_meters_and_days_and_skips_replays() {
        let mut user = UserState::new(UserId::new("u1").unwrap());
        assert_eq!(user.apply(&delta("a", 0, 10.0)), UsageApplied::Applied);
        assert_eq!(user.apply(&delta("b", 0, 5.0)), UsageApplied::Applied);
        assert_eq!(user.apply(&delta("a", 1, 1.0)), UsageApplied::Applied);
        assert_eq!(user.apply(&delta("a", 1, 1.0)), UsageApplied::Duplicate);
        assert_eq!(user.apply(&delta("a", 0, 10.0)), UsageApplied::Duplicate);
        let snap = user.snapshot();
        assert_eq!(snap.energy_today_wh, 16.0);
        assert_eq!(snap.energy_total_wh, 16.0);
        assert_eq!(snap.n_duplicates, 2);
        assert_eq!(snap.meters[&MeterId::new("a").unwrap()].readings, 12);
        // The next day: today restarts; a late minute of yesterday counts in total only.
        user.apply(&delta("a", 24 * 60, 3.0));
        user.apply(&delta("b", 5, 2.0));
        let snap = user.snapshot();
        assert_eq!(snap.day_start_ms, T0 + DAY);
        assert_eq!(snap.energy_today_wh, 3.0);
        assert_eq!(snap.energy_total_wh, 21.0);
        assert_eq!(
            UserState::decode(&user.encode().unwrap()).unwrap(),
            user,
            "snapshots round-trip"
        );
    }

    proptest! {
        /// However the deltas are replayed (any prefix again, any number of times), the
        /// totals equal one application of each (meter, minute).
        #[test]
        fn replays_never_double_count(
            minutes in proptest::collection::vec((0usize..3, 0u16..50, 0u16..1000), 1..60),
            replay_from in 0usize..60,
        ) {
            let mut per_meter: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 3];
            for (meter, minute, wh) in minutes {
                per_meter[meter].push((i64::from(minute), f64::from(wh)));
            }
            let mut stream = Vec::new();
            for (idx, list) in per_meter.iter_mut().enumerate() {
                list.sort_by_key(|(minute, _)| *minute);
                list.dedup_by_key(|(minute, _)| *minute);
                for (minute, wh) in list.iter() {
                    stream.push(delta(["a", "b", "c"][idx], *minute, *wh));
                }
            }
            let expected: f64 = stream.iter().map(|d| d.energy_wh).sum();
            let mut user = UserState::new(UserId::new("u1").unwrap());
            let cut = replay_from.min(stream.len());
            for d in &stream { user.apply(d); }
            for d in &stream[cut..] { user.apply(d); }
            for d in &stream { user.apply(d); }
            prop_assert_eq!(user.snapshot().energy_total_wh, expected);
            prop_assert_eq!(user.snapshot().n_deltas as usize, stream.len());
        }
    }
}
