//! Saving sessions: baseline selection (property-tested against a reference built
//! only from the UTC → local direction of the tz database), DST days, window
//! validation, points rounding, progress, streaks and leaderboard ties.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use gridpulse_domain::{
    Baseline, BaselineError, HALF_HOUR_MS, LocalDate, SavingSession, SessionDefinition,
    SessionError, SessionResult, Streak, UserId, Weekday, baseline, half_hour_slot, leaderboard,
    progress, result, update_streak,
};
use jiff::civil;
use jiff::tz::TimeZone;
use proptest::prelude::*;

fn utc_ms(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

fn date(text: &str) -> LocalDate {
    text.parse().unwrap()
}

fn definition(start: &str, end: &str, time_zone: &str) -> SessionDefinition {
    SessionDefinition {
        id: "s1".into(),
        name: "Saving Session".into(),
        start_ms: utc_ms(start),
        end_ms: utc_ms(end),
        time_zone: time_zone.into(),
        points_per_kwh: 800,
    }
}

fn session(start: &str, end: &str, time_zone: &str) -> SavingSession {
    definition(start, end, time_zone).validate().unwrap()
}

/// Every UTC half hour of `[from, to)` with `wh`.
fn fill(history: &mut BTreeMap<i64, f64>, from: &str, to: &str, wh: f64) {
    for slot in (utc_ms(from)..utc_ms(to)).step_by(HALF_HOUR_MS as usize) {
        history.insert(slot, wh);
    }
}

fn no_exclusions() -> BTreeSet<LocalDate> {
    BTreeSet::new()
}

// ---------------------------------------------------------------------------------
// Baseline: property tests against a reference
// ---------------------------------------------------------------------------------

/// splitmix64: a reproducible stream from one proptest seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn is_weekend(day: civil::Date) -> bool {
    matches!(
        day.weekday(),
        jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
    )
}

fn to_local_date(day: civil::Date) -> LocalDate {
    day.to_string().parse().unwrap()
}

/// What the baseline should be, computed independently: candidates by walking back
/// with jiff's calendar; each (local date, local minute) gets the UTC slots whose
/// local time it is (UTC → local only), usable if exactly one.
struct Reference {
    candidates: Vec<LocalDate>,
    used: Vec<LocalDate>,
    per_slot_wh: Vec<f64>,
    required: u32,
}

fn reference(
    time_zone: &TimeZone,
    day: civil::Date,
    start_minute: i32,
    slot_count: usize,
    history: &BTreeMap<i64, f64>,
    excluded: &BTreeSet<LocalDate>,
) -> Reference {
    let (want, required) = if is_weekend(day) { (4, 2) } else { (10, 6) };
    let mut local_slots: BTreeMap<(civil::Date, i32), Vec<i64>> = BTreeMap::new();
    let first = day
        .checked_sub(jiff::Span::new().days(62))
        .unwrap()
        .to_zoned_datetime(time_zone.clone())
        .unwrap()
        .timestamp()
        .as_millisecond();
    let last = day
        .to_zoned_datetime(time_zone.clone())
        .unwrap()
        .timestamp()
        .as_millisecond();
    for slot in (half_hour_slot(first)..last).step_by(HALF_HOUR_MS as usize) {
        let local = time_zone.to_datetime(jiff::Timestamp::from_millisecond(slot).unwrap());
        let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
        local_slots
            .entry((local.date(), minute))
            .or_default()
            .push(slot);
    }
    let mut candidates = Vec::new();
    let mut used = Vec::new();
    let mut sums = vec![0.0; slot_count];
    for back in 1..=60 {
        let candidate = day.checked_sub(jiff::Span::new().days(back)).unwrap();
        if candidates.len() == want
            || is_weekend(candidate) != is_weekend(day)
            || excluded.contains(&to_local_date(candidate))
        {
            continue;
        }
        candidates.push(to_local_date(candidate));
        let values: Option<Vec<f64>> = (0..slot_count)
            .map(|position| {
                let minute = start_minute + 30 * position as i32;
                match local_slots.get(&(candidate, minute)).map(Vec::as_slice) {
                    Some([slot]) => history.get(slot).copied().filter(|wh| wh.is_finite()),
                    _ => None,
                }
            })
            .collect();
        if let Some(values) = values {
            used.push(to_local_date(candidate));
            for (sum, wh) in sums.iter_mut().zip(values) {
                *sum += wh;
            }
        }
    }
    let per_slot_wh = sums.iter().map(|sum| sum / used.len() as f64).collect();
    Reference {
        candidates,
        used,
        per_slot_wh,
        required,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

const ZONES: [&str; 5] = [
    "Europe/London",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Kolkata",
    "UTC",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With random histories (random missing and non-finite slots) and random
    /// exclusions: the days used are of the session's kind, strictly before its day,
    /// never excluded, at most 10/4 and exactly the usable ones among the most recent
    /// candidates; the baseline is their mean per position; and there is no baseline
    /// exactly when fewer than 6/2 are usable.
    #[test]
    fn baseline_matches_reference(
        zone in 0_usize..ZONES.len(),
        day_number in 0_i64..2200,
        start_position in 0_i32..48,
        slot_count in 1_usize..=8,
        missing_percent in prop_oneof![Just(0_u64), 0_u64..40, Just(100)],
        exclude_percent in prop_oneof![Just(0_u64), 0_u64..40],
        seed in any::<u64>(),
    ) {
        let time_zone = jiff::tz::db().get(ZONES[zone]).unwrap();
        let day = civil::date(2020, 1, 1)
            .checked_add(jiff::Span::new().days(day_number))
            .unwrap();
        let start_minute = start_position * 30;
        prop_assume!(start_minute + 30 * slot_count as i32 <= 24 * 60);
        let start_local = day.to_datetime(civil::Time::midnight())
            .checked_add(jiff::Span::new().minutes(start_minute))
            .unwrap();
        let Ok(start) = time_zone.to_ambiguous_timestamp(start_local).unambiguous() else {
            return Err(TestCaseError::reject("session start in a DST gap or fold"));
        };
        let start_ms = start.as_millisecond();
        let definition = SessionDefinition {
            id: "s".into(),
            name: "s".into(),
            start_ms,
            end_ms: start_ms + slot_count as i64 * HALF_HOUR_MS,
            time_zone: ZONES[zone].into(),
            points_per_kwh: 800,
        };
        let Ok(session) = definition.validate() else {
            return Err(TestCaseError::reject("window across a DST change"));
        };
        prop_assert_eq!(session.local_date(), to_local_date(day));

        let mut rng = Rng(seed);
        let mut history = BTreeMap::new();
        for slot in ((start_ms - 64 * 86_400_000)..(start_ms + 86_400_000))
            .step_by(HALF_HOUR_MS as usize)
        {
            if !rng.percent(missing_percent) {
                let wh = if rng.percent(1) { f64::NAN } else { (rng.next() % 200_000) as f64 / 100.0 };
                history.insert(slot, wh);
            }
        }
        let excluded: BTreeSet<LocalDate> = (1..45)
            .filter(|_| rng.percent(exclude_percent))
            .map(|back| to_local_date(day.checked_sub(jiff::Span::new().days(back)).unwrap()))
            .collect();

        let want = reference(&time_zone, day, start_minute, slot_count, &history, &excluded);
        let (max_days, kind_is_weekend) = if is_weekend(day) { (4, true) } else { (10, false) };
        match baseline(&session, &history, &excluded) {
            Ok(got) => {
                prop_assert!(want.used.len() as u32 >= want.required);
                // (a) kind, before the day, never excluded, bounded, most recent.
                for used in &got.days_used {
                    prop_assert_eq!(
                        matches!(used.weekday(), Weekday::Saturday | Weekday::Sunday),
                        kind_is_weekend
                    );
                    prop_assert!(*used < session.local_date());
                    prop_assert!(!excluded.contains(used));
                }
                prop_assert!(got.days_used.len() <= max_days);
                prop_assert!(got.days_used.windows(2).all(|pair| pair[0] > pair[1]));
                let mut considered: Vec<LocalDate> =
                    got.days_used.iter().chain(&got.days_missing).copied().collect();
                considered.sort_by(|a, b| b.cmp(a));
                prop_assert_eq!(&considered, &want.candidates);
                prop_assert_eq!(&got.days_used, &want.used);
                // (b) the mean per position.
                prop_assert_eq!(got.per_slot_wh.len(), slot_count);
                for (got_wh, want_wh) in got.per_slot_wh.iter().zip(&want.per_slot_wh) {
                    prop_assert!(close(*got_wh, *want_wh), "{} vs {}", got_wh, want_wh);
                }
                prop_assert!(close(got.total_wh, want.per_slot_wh.iter().sum()));
            }
            // (c) no baseline exactly when too few usable days.
            Err(BaselineError::InsufficientData { usable, required }) => {
                prop_assert_eq!(required, want.required);
                prop_assert_eq!(usable as usize, want.used.len());
                prop_assert!(usable < required);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Baseline: DST and weekend cases
// ---------------------------------------------------------------------------------

/// Every slot of March 2025 is 999 Wh except the ones a local 17:30–19:00 window
/// really covers on each candidate day, which are 100 Wh: a baseline mapping the
/// window by the session's UTC offset would read 999s on the other side of the change.
#[test]
fn spring_forward_maps_local_time_not_utc() {
    // Tuesday 1 April 2025, 17:30–19:00 BST = 16:30–18:00 UTC; clocks went forward
    // on Sunday 30 March.
    let session = session(
        "2025-04-01T16:30:00Z",
        "2025-04-01T18:00:00Z",
        "Europe/London",
    );
    let mut history = BTreeMap::new();
    fill(
        &mut history,
        "2025-03-01T00:00:00Z",
        "2025-04-02T00:00:00Z",
        999.0,
    );
    let gmt_days = [
        "03-18", "03-19", "03-20", "03-21", "03-24", "03-25", "03-26", "03-27", "03-28",
    ];
    for day in gmt_days {
        fill(
            &mut history,
            &format!("2025-{day}T17:30:00Z"),
            &format!("2025-{day}T19:00:00Z"),
            100.0,
        );
    }
    fill(
        &mut history,
        "2025-03-31T16:30:00Z",
        "2025-03-31T18:00:00Z",
        100.0,
    );
    assert_eq!(
        session.slots_on(date("2025-03-28")).unwrap(),
        [
            "2025-03-28T17:30:00Z",
            "2025-03-28T18:00:00Z",
            "2025-03-28T18:30:00Z"
        ]
        .map(utc_ms)
    );
    assert_eq!(
        session.slots_on(date("2025-03-31")).unwrap(),
        [
            "2025-03-31T16:30:00Z",
            "2025-03-31T17:00:00Z",
            "2025-03-31T17:30:00Z"
        ]
        .map(utc_ms)
    );
    let got = baseline(&session, &history, &no_exclusions()).unwrap();
    assert_eq!(got.per_slot_wh, [100.0, 100.0, 100.0]);
    assert_eq!(got.total_wh, 300.0);
    assert_eq!(got.days_used.len(), 10);
    assert_eq!(got.days_used[0], date("2025-03-31"));
    assert_eq!(got.days_used[9], date("2025-03-18"));
    assert!(got.days_missing.is_empty());
}

#[test]
fn fall_back_maps_local_time_not_utc() {
    // Tuesday 28 October 2025, 17:30–18:30 GMT; clocks went back on Sunday 26 October.
    let session = session(
        "2025-10-28T17:30:00Z",
        "2025-10-28T18:30:00Z",
        "Europe/London",
    );
    let mut history = BTreeMap::new();
    fill(
        &mut history,
        "2025-10-01T00:00:00Z",
        "2025-10-29T00:00:00Z",
        999.0,
    );
    for day in [
        "10-15", "10-16", "10-17", "10-20", "10-21", "10-22", "10-23", "10-24",
    ] {
        fill(
            &mut history,
            &format!("2025-{day}T16:30:00Z"),
            &format!("2025-{day}T17:30:00Z"),
            40.0,
        );
    }
    fill(
        &mut history,
        "2025-10-27T17:30:00Z",
        "2025-10-27T18:30:00Z",
        40.0,
    );
    // 14 October is a candidate (the 10th weekday back) without data.
    history.remove(&utc_ms("2025-10-14T17:00:00Z"));
    let got = baseline(&session, &history, &no_exclusions()).unwrap();
    assert_eq!(got.per_slot_wh, [40.0, 40.0]);
    assert_eq!(got.days_used.len(), 9);
    assert_eq!(got.days_missing, [date("2025-10-14")]);
}

/// Candidate days on which a window time does not exist (spring gap) or exists twice
/// (autumn fold) are not usable, even with complete data.
#[test]
fn dst_gap_and_fold_days_are_not_usable() {
    let mut history = BTreeMap::new();
    fill(
        &mut history,
        "2025-03-01T00:00:00Z",
        "2025-11-03T00:00:00Z",
        10.0,
    );
    // Sunday 6 April 01:00–02:00 BST; 01:00 did not exist on 30 March.
    let spring = session(
        "2025-04-06T00:00:00Z",
        "2025-04-06T01:00:00Z",
        "Europe/London",
    );
    assert_eq!(spring.slots_on(date("2025-03-30")), None);
    let got = baseline(&spring, &history, &no_exclusions()).unwrap();
    assert_eq!(
        got.days_used,
        [date("2025-04-05"), date("2025-03-29"), date("2025-03-23")]
    );
    assert_eq!(got.days_missing, [date("2025-03-30")]);
    // Sunday 2 November 01:00–01:30 GMT; 01:00 happened twice on 26 October.
    let autumn = session(
        "2025-11-02T01:00:00Z",
        "2025-11-02T01:30:00Z",
        "Europe/London",
    );
    let got = baseline(&autumn, &history, &no_exclusions()).unwrap();
    assert_eq!(got.days_missing, [date("2025-10-26")]);
    assert_eq!(got.days_used.len(), 3);
}

/// Liberia was UTC−00:44:30 until 7 January 1972: on earlier days a local 12:00 is
/// not a UTC half hour, so those days cannot be used.
#[test]
fn days_with_an_odd_utc_offset_are_not_usable() {
    // Tuesday 18 January 1972, 12:00–13:00 GMT.
    let session = session(
        "1972-01-18T12:00:00Z",
        "1972-01-18T13:00:00Z",
        "Africa/Monrovia",
    );
    let mut history = BTreeMap::new();
    fill(
        &mut history,
        "1971-12-01T00:00:00Z",
        "1972-01-19T00:00:00Z",
        7.0,
    );
    assert_eq!(session.slots_on(date("1972-01-06")), None);
    let got = baseline(&session, &history, &no_exclusions()).unwrap();
    assert_eq!(got.days_used.len(), 7);
    assert_eq!(got.days_used[6], date("1972-01-07"));
    assert_eq!(
        got.days_missing,
        ["1972-01-06", "1972-01-05", "1972-01-04"].map(date)
    );
}

#[test]
fn weekend_sessions_use_only_weekend_days() {
    // Saturday 14 June 2025, 12:00–13:00 BST. Weekend slots 50 Wh, weekday slots 500.
    let session = session(
        "2025-06-14T11:00:00Z",
        "2025-06-14T12:00:00Z",
        "Europe/London",
    );
    assert!(session.is_weekend());
    let mut history = BTreeMap::new();
    for offset in 0..14 {
        let day = date("2025-05-31").plus_days(offset).unwrap();
        let wh = if day.weekday() >= Weekday::Saturday {
            50.0
        } else {
            500.0
        };
        fill(
            &mut history,
            &format!("{day}T00:00:00Z"),
            &format!("{day}T23:30:00Z"),
            wh,
        );
    }
    // Sunday 8 June was a session day of this user: skipped, not counted as missing.
    let excluded = BTreeSet::from([date("2025-06-08")]);
    let got = baseline(&session, &history, &excluded).unwrap();
    assert_eq!(got.per_slot_wh, [50.0, 50.0]);
    assert_eq!(
        got.days_used,
        ["2025-06-07", "2025-06-01", "2025-05-31"].map(date)
    );
    // 25 May is the 4th candidate, without data; older weekend days are not reached.
    assert_eq!(got.days_missing, [date("2025-05-25")]);
    // Without data from 7 June on, two of the four are usable: just enough.
    history.retain(|&slot, _| slot < utc_ms("2025-06-07T00:00:00Z"));
    let got = baseline(&session, &history, &excluded).unwrap();
    assert_eq!(got.days_used, ["2025-06-01", "2025-05-31"].map(date));
    history.retain(|&slot, _| slot < utc_ms("2025-06-01T00:00:00Z"));
    assert_eq!(
        baseline(&session, &history, &excluded),
        Err(BaselineError::InsufficientData {
            usable: 1,
            required: 2
        })
    );
}

// ---------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------

#[test]
fn validation_errors_name_their_field() {
    let base = || {
        definition(
            "2025-07-01T16:30:00Z",
            "2025-07-01T18:00:00Z",
            "Europe/London",
        )
    };
    let check = |change: &dyn Fn(&mut SessionDefinition), field: &str, error: SessionError| {
        let mut definition = base();
        change(&mut definition);
        let got = definition.validate().unwrap_err();
        assert_eq!((got.field(), &got), (field, &error), "{got}");
        assert!(got.to_string().starts_with(&format!("`{field}`")), "{got}");
    };
    assert!(base().validate().is_ok());
    check(&|d| d.id.clear(), "id", SessionError::EmptyId);
    check(&|d| d.name.clear(), "name", SessionError::EmptyName);
    check(
        &|d| d.points_per_kwh = 0,
        "points_per_kwh",
        SessionError::ZeroPointsPerKwh,
    );
    check(
        &|d| d.time_zone = "Mars/Olympus".into(),
        "time_zone",
        SessionError::UnknownTimeZone {
            name: "Mars/Olympus".into(),
        },
    );
    // Nepal is UTC+05:45: its local half hours are not UTC half hours.
    check(
        &|d| d.time_zone = "Asia/Kathmandu".into(),
        "time_zone",
        SessionError::OffsetNotHalfHour {
            offset_seconds: 20_700,
        },
    );
    check(
        &|d| d.start_ms += 15 * 60_000,
        "start_ms",
        SessionError::StartNotAligned {
            start_ms: utc_ms("2025-07-01T16:45:00Z"),
        },
    );
    check(
        &|d| d.start_ms = i64::MIN,
        "start_ms",
        SessionError::StartNotAligned { start_ms: i64::MIN },
    );
    check(
        &|d| d.end_ms -= 1,
        "end_ms",
        SessionError::EndNotAligned {
            end_ms: utc_ms("2025-07-01T17:59:59.999Z"),
        },
    );
    check(
        &|d| d.end_ms = d.start_ms,
        "end_ms",
        SessionError::EndNotAfterStart,
    );
    check(
        &|d| d.end_ms = d.start_ms - HALF_HOUR_MS,
        "end_ms",
        SessionError::EndNotAfterStart,
    );
    check(
        &|d| d.end_ms = d.start_ms + 9 * HALF_HOUR_MS,
        "end_ms",
        SessionError::TooLong {
            duration_ms: 9 * HALF_HOUR_MS,
        },
    );
    // 23:00–00:30 BST crosses local midnight; 23:00–00:00 ends exactly at it.
    check(
        &|d| {
            d.start_ms = utc_ms("2025-07-01T22:00:00Z");
            d.end_ms = utc_ms("2025-07-01T23:30:00Z");
        },
        "end_ms",
        SessionError::CrossesLocalMidnight,
    );
    // 00:00 GMT – 02:30 BST on 30 March 2025 spans the clock change.
    check(
        &|d| {
            d.start_ms = utc_ms("2025-03-30T00:00:00Z");
            d.end_ms = utc_ms("2025-03-30T01:30:00Z");
        },
        "end_ms",
        SessionError::OffsetChangesInWindow,
    );
    let mut to_midnight = base();
    to_midnight.start_ms = utc_ms("2025-07-01T22:00:00Z");
    to_midnight.end_ms = utc_ms("2025-07-01T23:00:00Z");
    assert_eq!(
        to_midnight.validate().unwrap().local_date(),
        date("2025-07-01")
    );
    let mut four_hours = base();
    four_hours.end_ms = four_hours.start_ms + 8 * HALF_HOUR_MS;
    assert_eq!(four_hours.validate().unwrap().slot_count(), 8);
    // India is UTC+05:30: local half hours are UTC half hours.
    let mut kolkata = base();
    kolkata.time_zone = "Asia/Kolkata".into();
    let kolkata = kolkata.validate().unwrap();
    assert_eq!(
        kolkata.slots_on(date("2025-06-30")).unwrap()[0],
        utc_ms("2025-06-30T16:30:00Z")
    );
}

#[test]
fn definitions_round_trip_and_default_points() {
    let json = r#"{"id":"s7","name":"Tea time","start_ms":1751387400000,"end_ms":1751392800000,"time_zone":"Europe/London"}"#;
    let definition: SessionDefinition = serde_json::from_str(json).unwrap();
    assert_eq!(definition.points_per_kwh, 800);
    let session: SavingSession = serde_json::from_str(json).unwrap();
    assert_eq!(session.definition(), &definition);
    assert_eq!(session.local_date(), date("2025-07-01"));
    let round_trip: SavingSession =
        serde_json::from_str(&serde_json::to_string(&session).unwrap()).unwrap();
    assert_eq!(round_trip, session);
    let unknown = json.replace("\"name\"", "\"colour\":1,\"name\"");
    assert!(serde_json::from_str::<SessionDefinition>(&unknown).is_err());
    // Deserializing a session validates it.
    let misaligned = json.replace("1751387400000", "1751387400001");
    let error = serde_json::from_str::<SavingSession>(&misaligned).unwrap_err();
    assert!(error.to_string().contains("start_ms"), "{error}");
}

#[test]
fn half_hour_slots() {
    assert_eq!(HALF_HOUR_MS, 1_800_000);
    assert_eq!(
        half_hour_slot(utc_ms("2025-07-01T17:29:59.999Z")),
        utc_ms("2025-07-01T17:00:00Z")
    );
    assert_eq!(
        half_hour_slot(utc_ms("2025-07-01T17:30:00Z")),
        utc_ms("2025-07-01T17:30:00Z")
    );
    assert_eq!(half_hour_slot(-1), -HALF_HOUR_MS);
    assert_eq!(half_hour_slot(0), 0);
}

// ---------------------------------------------------------------------------------
// Progress and result
// ---------------------------------------------------------------------------------

fn flat_baseline(per_slot_wh: &[f64]) -> Baseline {
    Baseline {
        per_slot_wh: per_slot_wh.to_vec(),
        total_wh: per_slot_wh.iter().sum(),
        days_used: Vec::new(),
        days_missing: Vec::new(),
    }
}

fn tea_time() -> SavingSession {
    // 17:30–19:00 BST.
    session(
        "2025-07-01T16:30:00Z",
        "2025-07-01T18:00:00Z",
        "Europe/London",
    )
}

#[test]
fn progress_counts_the_current_slot_pro_rata() {
    let session = tea_time();
    let base = flat_baseline(&[100.0, 100.0, 60.0]);
    let mut history = BTreeMap::new();
    history.insert(utc_ms("2025-07-01T16:30:00Z"), 40.0);
    history.insert(utc_ms("2025-07-01T17:00:00Z"), 10.0);
    let now = utc_ms("2025-07-01T17:15:00Z");
    let got = progress(&session, &base, &history, now);
    assert_eq!(got.elapsed_ms, 45 * 60_000);
    assert_eq!(got.elapsed_slots, 1);
    assert_eq!(got.baseline_so_far_wh, 150.0);
    assert_eq!(got.actual_so_far_wh, 50.0);
    assert_eq!(got.saved_so_far_wh, 100.0);
    assert_eq!(got.missing_slots, 0);
    assert!(got.on_track);
    // The slot in progress may have no data yet: not missing.
    let mut early = history.clone();
    early.remove(&utc_ms("2025-07-01T17:00:00Z"));
    let got = progress(&session, &base, &early, now);
    assert_eq!((got.actual_so_far_wh, got.missing_slots), (40.0, 0));

    let before = progress(&session, &base, &history, utc_ms("2025-07-01T16:00:00Z"));
    assert_eq!(
        (
            before.elapsed_ms,
            before.baseline_so_far_wh,
            before.actual_so_far_wh
        ),
        (0, 0.0, 0.0)
    );
    assert!(!before.on_track);

    // After the end: the whole window; the last slot has no data.
    history.insert(utc_ms("2025-07-01T17:00:00Z"), 200.0);
    let after = progress(&session, &base, &history, utc_ms("2025-07-02T00:00:00Z"));
    assert_eq!(after.elapsed_slots, 3);
    assert_eq!(after.baseline_so_far_wh, 260.0);
    assert_eq!(after.actual_so_far_wh, 240.0);
    assert_eq!(after.missing_slots, 1);
    history.insert(utc_ms("2025-07-01T17:30:00Z"), 100.0);
    let over = progress(&session, &base, &history, utc_ms("2025-07-02T00:00:00Z"));
    assert_eq!(over.saved_so_far_wh, -80.0);
    assert!(!over.on_track);
}

#[test]
fn points_round_down_from_whole_wh() {
    let session = tea_time(); // 800 points per kWh
    // Saved 1234.9 Wh → ⌊1234 × 0.8⌋ = 987 (987.2).
    let got = result(
        &session,
        &flat_baseline(&[500.0, 500.0, 434.9]),
        &[Some(100.0), Some(100.0), Some(0.0)],
    );
    assert!((got.saved_wh - 1234.9).abs() < 1e-9);
    assert_eq!(got.points, 987);
    assert!(got.complete);
    assert_eq!(
        (got.session_id.as_str(), got.end_ms),
        ("s1", session.end_ms())
    );
    // 999.99 Wh at 1000 points per kWh is 999 points, not 1000.
    let mut definition = session.definition().clone();
    definition.points_per_kwh = 1000;
    let thousand = definition.validate().unwrap();
    let got = result(
        &thousand,
        &flat_baseline(&[999.99, 0.0, 0.0]),
        &[Some(0.0); 3],
    );
    assert_eq!(got.points, 999);
    // 1.25 Wh at 800/kWh: 1 Wh → 0.8 → 0 points, but a positive saving.
    let got = result(&session, &flat_baseline(&[1.25, 0.0, 0.0]), &[Some(0.0); 3]);
    assert_eq!((got.saved_wh, got.points), (1.25, 0));
}

#[test]
fn saving_is_clamped_over_the_whole_session() {
    let session = tea_time();
    let base = flat_baseline(&[100.0, 100.0, 100.0]);
    // Per slot +100, −50, 0: the session saves 50, not 100.
    let got = result(&session, &base, &[Some(0.0), Some(150.0), Some(100.0)]);
    assert_eq!(
        (got.saved_wh, got.actual_wh, got.baseline_wh),
        (50.0, 250.0, 300.0)
    );
    assert_eq!(got.points, 40);
    // Using more than the baseline saves nothing, never negative.
    let got = result(&session, &base, &[Some(200.0), Some(200.0), Some(200.0)]);
    assert_eq!((got.saved_wh, got.points), (0.0, 0));
}

#[test]
fn missing_actual_data_makes_the_result_incomplete() {
    let session = tea_time();
    let base = flat_baseline(&[100.0, 100.0, 100.0]);
    let got = result(&session, &base, &[Some(0.0), None, Some(0.0)]);
    assert!(!got.complete);
    assert_eq!((got.saved_wh, got.points, got.actual_wh), (0.0, 0, 0.0));
    let got = result(&session, &base, &[Some(0.0), Some(f64::NAN), Some(0.0)]);
    assert!(!got.complete);
    let got = result(&session, &base, &[Some(0.0), Some(0.0)]);
    assert!(!got.complete);
    // actual_per_slot reads the window's slots from the history.
    let mut history = BTreeMap::new();
    fill(
        &mut history,
        "2025-07-01T16:30:00Z",
        "2025-07-01T17:30:00Z",
        5.0,
    );
    history.insert(utc_ms("2025-07-01T18:00:00Z"), 99.0);
    assert_eq!(
        session.actual_per_slot(&history),
        [Some(5.0), Some(5.0), None]
    );
}

// ---------------------------------------------------------------------------------
// Streaks and leaderboard
// ---------------------------------------------------------------------------------

fn outcome(end_ms: i64, saved_wh: f64, points: u64) -> SessionResult {
    SessionResult {
        session_id: format!("s{end_ms}"),
        end_ms,
        complete: true,
        baseline_wh: 1000.0,
        actual_wh: 1000.0 - saved_wh,
        saved_wh,
        points,
    }
}

#[test]
fn streaks_count_consecutive_savings() {
    let mut streak = Streak::default();
    for end in 1..=3 {
        streak = update_streak(streak, &outcome(end, 100.0, 80));
    }
    assert_eq!((streak.current, streak.best), (3, 3));
    // A replayed (not later) result changes nothing.
    assert_eq!(update_streak(streak, &outcome(3, 0.0, 0)), streak);
    assert_eq!(update_streak(streak, &outcome(2, 0.0, 0)), streak);
    // An opted-in session without a saving breaks the streak; the best stays.
    streak = update_streak(streak, &outcome(4, 0.0, 0));
    assert_eq!(
        (streak.current, streak.best, streak.last_session_end_ms),
        (0, 3, Some(4))
    );
    streak = update_streak(streak, &outcome(5, 0.5, 0));
    assert_eq!((streak.current, streak.best), (1, 3));
    // No data (incomplete) breaks it too.
    let mut incomplete = outcome(6, 0.0, 0);
    incomplete.complete = false;
    streak = update_streak(streak, &incomplete);
    assert_eq!(streak.current, 0);
}

#[test]
fn leaderboard_ranks_ties_together() {
    let user = |id: &str| UserId::new(id).unwrap();
    let entries = [
        (user("dora"), outcome(1, 20.0, 10)),
        (user("bob"), outcome(1, 70.0, 50)),
        (user("cara"), outcome(1, 60.0, 50)),
        (user("ann"), outcome(1, 130.0, 100)),
        (user("abe"), outcome(1, 60.0, 50)),
        (user("zed"), outcome(1, 0.0, 0)),
    ];
    let rows: Vec<(u32, String, u64)> = leaderboard(&entries)
        .into_iter()
        .map(|row| (row.rank, row.user.to_string(), row.points))
        .collect();
    let want = [
        (1, "ann", 100),
        (2, "bob", 50), // same points: more saved first
        (2, "abe", 50), // same points and saved: user id ascending
        (2, "cara", 50),
        (5, "dora", 10),
        (6, "zed", 0),
    ];
    let want: Vec<(u32, String, u64)> = want
        .iter()
        .map(|&(r, u, p)| (r, u.to_string(), p))
        .collect();
    assert_eq!(rows, want);
    assert!(leaderboard(&[]).is_empty());
}
