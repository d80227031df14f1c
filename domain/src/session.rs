//! Saving sessions: users opt in to a time window and earn points for using less
//! energy in it than their baseline (as in Octopus "Saving Sessions").
//!
//! A session is stored and exchanged as a [`SessionDefinition`] and used as a
//! [`SavingSession`], which only [`SessionDefinition::validate`] makes; a
//! [`SessionError`] names the field a rule concerns ([`SessionError::field`]).
//!
//! **Window.** `[start_ms, end_ms)` is aligned to UTC half hours, non-empty, at most
//! [`MAX_SESSION_MS`] long and inside one local day of the session's IANA time zone
//! (bundled tz database, as in [`crate::tariff`]); it may end at the next local
//! midnight. The zone's UTC offset must be a whole number of half hours at the session
//! (zones such as Asia/Kathmandu, +05:45, are refused: their local half hours are not
//! the UTC half-hour slots consumption is kept in) and must not change inside the
//! window (no session across a DST change). The window's half hours are its
//! *positions*: 17:30–19:00 local has three.
//!
//! **History.** The caller keeps a user's consumption per UTC half-hour slot as a
//! `BTreeMap<slot start (Unix ms), Wh>` ([`half_hour_slot`]). A slot without an entry,
//! or with a non-finite value, is *missing*; the entry of the slot in progress holds
//! what was used in it so far.
//!
//! **Baseline** ([`baseline`]). For a session on local day D, the *candidate days* are
//! the most recent [`BaselineRule::candidate_days`] days before D of the same kind —
//! weekdays (Mon–Fri) for a weekday session, weekend days (Sat/Sun) for a weekend one
//! — skipping the dates the caller excludes (the user's own earlier session days,
//! whose consumption is not "normal"), looking back at most [`MAX_LOOKBACK_DAYS`]
//! days. Only exclusions are skipped: a candidate without data is *not* replaced by an
//! older day. Each position maps to the UTC slot of the *same local wall-clock time*
//! on the candidate day, so across a DST change the UTC slots shift by an hour. A
//! candidate is *usable* when every position maps to exactly one local instant (not
//! in a DST gap or fold), each maps to a UTC half hour (a zone's offset that day
//! may differ from the session's, as in Africa/Monrovia before 1972) and every
//! slot has data; otherwise it is listed in [`Baseline::days_missing`]. With
//! fewer than [`BaselineRule::min_days`] usable days there is no baseline
//! ([`BaselineError::InsufficientData`]); otherwise each position's baseline is the
//! mean of its slots over the usable days. The rule is thus "of the last 10 weekdays,
//! at least 6 complete" (weekends: "of the last 4 weekend days, at least 2").
//!
//! **Progress** ([`progress`]) counts completed slots in full and the slot in progress
//! pro rata: its baseline scaled by the fraction of the half hour elapsed, against what
//! was actually used in it so far.
//!
//! **Result** ([`result`]): the saving is `max(0, baseline − actual)` over the *whole*
//! session (not per slot: using less in one half hour and more in another nets out),
//! and points are `⌊⌊saved Wh⌋ × points_per_kwh / 1000⌋` in integer arithmetic. A
//! session with any slot of actual data missing is *incomplete*: no saving, no points.
//!
//! **Streaks and leaderboards** ([`update_streak`], [`leaderboard`]): a streak counts
//! consecutive opted-in sessions with a saving; a leaderboard ranks by points, equal
//! points sharing a rank.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::tariff::{LocalDate, Weekday};
use crate::usage::UserId;

/// Length of one consumption slot, ms.
pub const HALF_HOUR_MS: i64 = 30 * 60 * 1000;

/// The longest session accepted: 4 hours.
pub const MAX_SESSION_MS: i64 = 8 * HALF_HOUR_MS;

/// How far before the session day the baseline looks for candidate days.
pub const MAX_LOOKBACK_DAYS: i64 = 60;

/// Points per kWh saved when a definition does not say (Octopus: 800, 8 points = 1p).
pub const DEFAULT_POINTS_PER_KWH: u32 = 800;

/// The start of the UTC half-hour slot holding `ts_ms`.
pub fn half_hour_slot(ts_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(HALF_HOUR_MS)
}

fn is_weekend(date: LocalDate) -> bool {
    matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday)
}

// ---------------------------------------------------------------------------------
// Definition and validation
// ---------------------------------------------------------------------------------

/// A saving session as stored and exchanged; unknown keys are refused. Turn it into a
/// usable [`SavingSession`] with [`SessionDefinition::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionDefinition {
    /// Unique id of the session.
    pub id: String,
    /// Display name.
    pub name: String,
    /// First instant of the window, Unix ms (a UTC half hour).
    pub start_ms: i64,
    /// First instant after the window, Unix ms (a UTC half hour).
    pub end_ms: i64,
    /// IANA time zone whose local day and wall-clock times the session is in.
    pub time_zone: String,
    /// Points per kWh saved (default [`DEFAULT_POINTS_PER_KWH`]).
    #[serde(default = "default_points_per_kwh")]
    pub points_per_kwh: u32,
}

fn default_points_per_kwh() -> u32 {
    DEFAULT_POINTS_PER_KWH
}

/// Why a session definition is refused. [`SessionError::field`] names the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum SessionError {
    /// `id` is empty.
    EmptyId,
    /// `name` is empty.
    EmptyName,
    /// `time_zone` is not in the tz database.
    UnknownTimeZone {
        /// The name given.
        name: String,
    },
    /// The zone's UTC offset at the session is not a whole number of half hours.
    OffsetNotHalfHour {
        /// The offset, seconds east of UTC.
        offset_seconds: i32,
    },
    /// `start_ms` is not the start of a UTC half hour, or outside the calendar.
    StartNotAligned {
        /// The value given.
        start_ms: i64,
    },
    /// `end_ms` is not the start of a UTC half hour.
    EndNotAligned {
        /// The value given.
        end_ms: i64,
    },
    /// `end_ms` is not after `start_ms`.
    EndNotAfterStart,
    /// The window is longer than [`MAX_SESSION_MS`].
    TooLong {
        /// The window's length, ms.
        duration_ms: i64,
    },
    /// The window does not end on the local day it starts on.
    CrossesLocalMidnight,
    /// The zone's UTC offset changes inside the window (a DST change).
    OffsetChangesInWindow,
    /// `points_per_kwh` is 0.
    ZeroPointsPerKwh,
}

impl SessionError {
    /// The field of [`SessionDefinition`] the error concerns.
    pub fn field(&self) -> &'static str {
        match self {
            SessionError::EmptyId => "id",
            SessionError::EmptyName => "name",
            SessionError::UnknownTimeZone { .. } | SessionError::OffsetNotHalfHour { .. } => {
                "time_zone"
            }
            SessionError::StartNotAligned { .. } => "start_ms",
            SessionError::EndNotAligned { .. }
            | SessionError::EndNotAfterStart
            | SessionError::TooLong { .. }
            | SessionError::CrossesLocalMidnight
            | SessionError::OffsetChangesInWindow => "end_ms",
            SessionError::ZeroPointsPerKwh => "points_per_kwh",
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ", self.field())?;
        match self {
            SessionError::EmptyId | SessionError::EmptyName => write!(f, "must not be empty"),
            SessionError::UnknownTimeZone { name } => write!(
                f,
                "unknown time zone `{name}`: expected an IANA name such as Europe/London"
            ),
            SessionError::OffsetNotHalfHour { offset_seconds } => write!(
                f,
                "has a UTC offset of {offset_seconds} s at the session, not a whole number of half hours"
            ),
            SessionError::StartNotAligned { start_ms } => {
                write!(f, "must be the start of a UTC half hour, got {start_ms}")
            }
            SessionError::EndNotAligned { end_ms } => {
                write!(f, "must be the start of a UTC half hour, got {end_ms}")
            }
            SessionError::EndNotAfterStart => write!(f, "must be after `start_ms`"),
            SessionError::TooLong { duration_ms } => write!(
                f,
                "makes a window of {duration_ms} ms, at most {MAX_SESSION_MS} ms allowed"
            ),
            SessionError::CrossesLocalMidnight => {
                write!(f, "must be on the local day the session starts on")
            }
            SessionError::OffsetChangesInWindow => {
                write!(f, "makes a window across a change of UTC offset (DST)")
            }
            SessionError::ZeroPointsPerKwh => write!(f, "must be greater than 0"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SessionError {}

/// A validated saving session. Made only by [`SessionDefinition::validate`];
/// (de)serialized as its definition, validated again on the way in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "SessionDefinition", into = "SessionDefinition")]
pub struct SavingSession {
    definition: SessionDefinition,
    time_zone: TimeZone,
    local_date: LocalDate,
    /// Local wall-clock minute of the day the window starts at.
    local_start_minute: u16,
    slot_count: usize,
}

impl PartialEq for SavingSession {
    fn eq(&self, other: &Self) -> bool {
        self.definition == other.definition
    }
}

impl TryFrom<SessionDefinition> for SavingSession {
    type Error = SessionError;
    fn try_from(definition: SessionDefinition) -> Result<Self, Self::Error> {
        definition.validate()
    }
}

impl From<SavingSession> for SessionDefinition {
    fn from(session: SavingSession) -> Self {
        session.definition
    }
}

impl SessionDefinition {
    /// Checks every rule of the module documentation and builds the [`SavingSession`];
    /// the first broken rule is reported.
    pub fn validate(&self) -> Result<SavingSession, SessionError> {
        let (start_ms, end_ms) = (self.start_ms, self.end_ms);
        if self.id.is_empty() {
            return Err(SessionError::EmptyId);
        }
        if self.name.is_empty() {
            return Err(SessionError::EmptyName);
        }
        if self.points_per_kwh == 0 {
            return Err(SessionError::ZeroPointsPerKwh);
        }
        let time_zone =
            jiff::tz::db()
                .get(&self.time_zone)
                .map_err(|_| SessionError::UnknownTimeZone {
                    name: self.time_zone.clone(),
                })?;
        let start = Timestamp::from_millisecond(start_ms)
            .ok()
            .filter(|_| start_ms.rem_euclid(HALF_HOUR_MS) == 0)
            .ok_or(SessionError::StartNotAligned { start_ms })?;
        if end_ms.rem_euclid(HALF_HOUR_MS) != 0 {
            return Err(SessionError::EndNotAligned { end_ms });
        }
        if end_ms <= start_ms {
            return Err(SessionError::EndNotAfterStart);
        }
        let duration_ms = end_ms - start_ms;
        if duration_ms > MAX_SESSION_MS {
            return Err(SessionError::TooLong { duration_ms });
        }
        let offset_seconds = time_zone.to_offset(start).seconds();
        if offset_seconds % (30 * 60) != 0 {
            return Err(SessionError::OffsetNotHalfHour { offset_seconds });
        }
        let last = Timestamp::from_millisecond(end_ms - 1)
            .map_err(|_| SessionError::EndNotAligned { end_ms })?;
        let local_start = time_zone.to_datetime(start);
        let local_date =
            local_date_of(local_start.date()).ok_or(SessionError::StartNotAligned { start_ms })?;
        if time_zone.to_datetime(last).date() != local_start.date() {
            return Err(SessionError::CrossesLocalMidnight);
        }
        let slot_count = (duration_ms / HALF_HOUR_MS) as usize;
        let offset_changes = (1..slot_count)
            .filter_map(|slot| {
                Timestamp::from_millisecond(start_ms + slot as i64 * HALF_HOUR_MS).ok()
            })
            .chain([last])
            .any(|instant| time_zone.to_offset(instant).seconds() != offset_seconds);
        if offset_changes {
            return Err(SessionError::OffsetChangesInWindow);
        }
        let local_start_minute = local_start.hour() as u16 * 60 + local_start.minute() as u16;
        Ok(SavingSession {
            definition: self.clone(),
            time_zone,
            local_date,
            local_start_minute,
            slot_count,
        })
    }
}

fn local_date_of(date: jiff::civil::Date) -> Option<LocalDate> {
    LocalDate::new(
        date.year(),
        u8::try_from(date.month()).ok()?,
        u8::try_from(date.day()).ok()?,
    )
}

impl SavingSession {
    /// The definition this session was validated from.
    pub fn definition(&self) -> &SessionDefinition {
        &self.definition
    }

    /// The session's id.
    pub fn id(&self) -> &str {
        &self.definition.id
    }

    /// First instant of the window, Unix ms.
    pub fn start_ms(&self) -> i64 {
        self.definition.start_ms
    }

    /// First instant after the window, Unix ms.
    pub fn end_ms(&self) -> i64 {
        self.definition.end_ms
    }

    /// Points per kWh saved.
    pub fn points_per_kwh(&self) -> u32 {
        self.definition.points_per_kwh
    }

    /// The local day of the session.
    pub fn local_date(&self) -> LocalDate {
        self.local_date
    }

    /// Whether the session is on a Saturday or Sunday.
    pub fn is_weekend(&self) -> bool {
        is_weekend(self.local_date)
    }

    /// The number of half-hour positions of the window.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// The UTC slot starts of the window, first to last.
    pub fn slots(&self) -> Vec<i64> {
        (0..self.slot_count)
            .map(|slot| self.start_ms() + slot as i64 * HALF_HOUR_MS)
            .collect()
    }

    /// The baseline rule of the session's kind of day.
    pub fn baseline_rule(&self) -> BaselineRule {
        if self.is_weekend() {
            BaselineRule::WEEKEND
        } else {
            BaselineRule::WEEKDAY
        }
    }

    /// The UTC slots of the window's local wall-clock positions on local `date`; none
    /// if a position does not exist or exists twice that day (DST) or is not at a UTC
    /// half hour (an offset that is not a whole number of half hours that day). Then
    /// the slots are consecutive: an offset change between two positions would put a
    /// position in its gap or fold.
    pub fn slots_on(&self, date: LocalDate) -> Option<Vec<i64>> {
        let mut slots: Vec<i64> = Vec::with_capacity(self.slot_count);
        for position in 0..self.slot_count {
            let minute = self.local_start_minute + 30 * position as u16;
            let local = jiff::civil::DateTime::new(
                date.year(),
                date.month() as i8,
                date.day() as i8,
                (minute / 60) as i8,
                (minute % 60) as i8,
                0,
                0,
            )
            .ok()?;
            let utc_ms = self
                .time_zone
                .to_ambiguous_timestamp(local)
                .unambiguous()
                .ok()?
                .as_millisecond();
            if utc_ms.rem_euclid(HALF_HOUR_MS) != 0 {
                return None;
            }
            slots.push(utc_ms);
        }
        Some(slots)
    }

    /// The user's actual consumption in each slot of the window (none = missing).
    pub fn actual_per_slot(&self, history: &BTreeMap<i64, f64>) -> Vec<Option<f64>> {
        self.slots()
            .into_iter()
            .map(|slot| known(history, slot))
            .collect()
    }
}

/// The consumption of `slot`, if known (present and finite).
fn known(history: &BTreeMap<i64, f64>, slot: i64) -> Option<f64> {
    history.get(&slot).copied().filter(|wh| wh.is_finite())
}

// ---------------------------------------------------------------------------------
// Baseline
// ---------------------------------------------------------------------------------

/// How many candidate days a baseline looks at and how many must be usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineRule {
    /// The most recent days of the session's kind considered.
    pub candidate_days: u32,
    /// The usable days required among them.
    pub min_days: u32,
}

impl BaselineRule {
    /// Weekday sessions: the last 10 weekdays, at least 6 usable.
    pub const WEEKDAY: BaselineRule = BaselineRule {
        candidate_days: 10,
        min_days: 6,
    };
    /// Weekend sessions: the last 4 weekend days, at least 2 usable.
    pub const WEEKEND: BaselineRule = BaselineRule {
        candidate_days: 4,
        min_days: 2,
    };
}

/// What a user would normally use in a session's window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Mean consumption per position of the window over the usable days, Wh.
    pub per_slot_wh: Vec<f64>,
    /// Sum of `per_slot_wh`, Wh.
    pub total_wh: f64,
    /// The usable candidate days, most recent first.
    pub days_used: Vec<LocalDate>,
    /// The candidate days that were not usable, most recent first.
    pub days_missing: Vec<LocalDate>,
}

/// Why there is no baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum BaselineError {
    /// Fewer usable candidate days than the rule requires.
    InsufficientData {
        /// Usable days found.
        usable: u32,
        /// Usable days required.
        required: u32,
    },
}

impl fmt::Display for BaselineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaselineError::InsufficientData { usable, required } => write!(
                f,
                "not enough history for a baseline: {usable} complete days, {required} required"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BaselineError {}

/// The baseline of `session` from the user's half-hour `history`, never using a
/// date in `excluded` (the user's earlier session days). See the module documentation
/// for the rule.
pub fn baseline(
    session: &SavingSession,
    history: &BTreeMap<i64, f64>,
    excluded: &BTreeSet<LocalDate>,
) -> Result<Baseline, BaselineError> {
    let rule = session.baseline_rule();
    let mut sums = vec![0.0; session.slot_count];
    let (mut days_used, mut days_missing) = (Vec::new(), Vec::new());
    let mut candidates = 0;
    for days_back in 1..=MAX_LOOKBACK_DAYS {
        if candidates == rule.candidate_days {
            break;
        }
        let Some(date) = session.local_date.plus_days(-days_back) else {
            break;
        };
        if is_weekend(date) != session.is_weekend() || excluded.contains(&date) {
            continue;
        }
        candidates += 1;
        let values = session.slots_on(date).and_then(|slots| {
            slots
                .into_iter()
                .map(|slot| known(history, slot))
                .collect::<Option<Vec<f64>>>()
        });
        match values {
            Some(values) => {
                sums.iter_mut().zip(values).for_each(|(sum, wh)| *sum += wh);
                days_used.push(date);
            }
            None => days_missing.push(date),
        }
    }
    let usable = days_used.len() as u32;
    if usable < rule.min_days {
        return Err(BaselineError::InsufficientData {
            usable,
            required: rule.min_days,
        });
    }
    let per_slot_wh: Vec<f64> = sums
        .into_iter()
        .map(|sum| sum / f64::from(usable))
        .collect();
    Ok(Baseline {
        total_wh: per_slot_wh.iter().sum(),
        per_slot_wh,
        days_used,
        days_missing,
    })
}

// ---------------------------------------------------------------------------------
// Progress and result
// ---------------------------------------------------------------------------------

/// Where a user stands during a session.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SessionProgress {
    /// Time of the window elapsed, ms (0 before it, its length after it).
    pub elapsed_ms: i64,
    /// Whole slots of the window completed.
    pub elapsed_slots: u32,
    /// Baseline of the completed slots plus the elapsed fraction of the current one, Wh.
    pub baseline_so_far_wh: f64,
    /// Consumption in the completed slots and the current one so far, Wh.
    pub actual_so_far_wh: f64,
    /// `baseline_so_far_wh − actual_so_far_wh` (negative when using more), Wh.
    pub saved_so_far_wh: f64,
    /// Completed slots without data (counted as 0 Wh used).
    pub missing_slots: u32,
    /// Whether the user is saving so far (`saved_so_far_wh > 0`); false before start.
    pub on_track: bool,
}

/// Progress of `session` at `now_ms` against its `baseline`: completed slots in
/// full, the current slot's baseline pro rata by the time elapsed in it and its actual
/// consumption as recorded so far in `history`.
pub fn progress(
    session: &SavingSession,
    baseline: &Baseline,
    history: &BTreeMap<i64, f64>,
    now_ms: i64,
) -> SessionProgress {
    let duration_ms = session.end_ms() - session.start_ms();
    let elapsed_ms = now_ms
        .saturating_sub(session.start_ms())
        .clamp(0, duration_ms);
    let (mut baseline_so_far_wh, mut actual_so_far_wh, mut missing_slots) = (0.0, 0.0, 0);
    for (position, slot) in session.slots().into_iter().enumerate() {
        let slot_elapsed_ms = (elapsed_ms - position as i64 * HALF_HOUR_MS).min(HALF_HOUR_MS);
        if slot_elapsed_ms <= 0 {
            break;
        }
        let slot_baseline = baseline.per_slot_wh.get(position).copied().unwrap_or(0.0);
        baseline_so_far_wh += slot_baseline * slot_elapsed_ms as f64 / HALF_HOUR_MS as f64;
        match known(history, slot) {
            Some(wh) => actual_so_far_wh += wh,
            None if slot_elapsed_ms == HALF_HOUR_MS => missing_slots += 1,
            None => {}
        }
    }
    let saved_so_far_wh = baseline_so_far_wh - actual_so_far_wh;
    SessionProgress {
        elapsed_ms,
        elapsed_slots: (elapsed_ms / HALF_HOUR_MS) as u32,
        baseline_so_far_wh,
        actual_so_far_wh,
        saved_so_far_wh,
        missing_slots,
        on_track: elapsed_ms > 0 && saved_so_far_wh > 0.0,
    }
}

/// The outcome of a session for one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResult {
    /// The session's id.
    pub session_id: String,
    /// The session's end, Unix ms (orders results for streaks).
    pub end_ms: i64,
    /// Whether actual data was known for every slot; an incomplete result saves
    /// nothing and earns no points.
    pub complete: bool,
    /// The baseline of the whole window, Wh.
    pub baseline_wh: f64,
    /// Actual consumption in the window (known slots), Wh.
    pub actual_wh: f64,
    /// `max(0, baseline_wh − actual_wh)` if complete, else 0, Wh.
    pub saved_wh: f64,
    /// `⌊⌊saved_wh⌋ × points_per_kwh / 1000⌋`.
    pub points: u64,
}

/// The result of `session` from its `baseline` and the `actual_per_slot` consumption
/// ([`SavingSession::actual_per_slot`]). Incomplete if any slot is unknown or the
/// slot counts differ.
pub fn result(
    session: &SavingSession,
    baseline: &Baseline,
    actual_per_slot: &[Option<f64>],
) -> SessionResult {
    let complete = actual_per_slot.len() == session.slot_count
        && baseline.per_slot_wh.len() == session.slot_count
        && actual_per_slot
            .iter()
            .all(|wh| wh.is_some_and(f64::is_finite));
    let actual_wh: f64 = actual_per_slot.iter().flatten().sum();
    let saved_wh = if complete {
        (baseline.total_wh - actual_wh).max(0.0)
    } else {
        0.0
    };
    // `as` saturates and truncates towards zero: the floor of a non-negative value.
    let points = (saved_wh as u64).saturating_mul(u64::from(session.points_per_kwh())) / 1000;
    SessionResult {
        session_id: session.id().into(),
        end_ms: session.end_ms(),
        complete,
        baseline_wh: baseline.total_wh,
        actual_wh,
        saved_wh,
        points,
    }
}

// ---------------------------------------------------------------------------------
// Streaks and leaderboard
// ---------------------------------------------------------------------------------

/// A user's run of consecutive opted-in sessions with a saving.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Streak {
    /// Sessions in the current run.
    pub current: u32,
    /// The longest run so far.
    pub best: u32,
    /// End of the last session applied, Unix ms.
    pub last_session_end_ms: Option<i64>,
}

/// The streak after `result`, the next session the user opted in to: a saving
/// (`saved_wh > 0`) extends it; no saving, or no data (incomplete), breaks it. A
/// result not later than the last one applied (a replay) changes nothing.
pub fn update_streak(prev: Streak, result: &SessionResult) -> Streak {
    if prev
        .last_session_end_ms
        .is_some_and(|last| result.end_ms <= last)
    {
        return prev;
    }
    let current = if result.saved_wh > 0.0 {
        prev.current.saturating_add(1)
    } else {
        0
    };
    Streak {
        current,
        best: prev.best.max(current),
        last_session_end_ms: Some(result.end_ms),
    }
}

/// One row of a session leaderboard.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardRow {
    /// 1-based rank; equal points share a rank and the next rank skips (1, 2, 2, 4).
    pub rank: u32,
    /// The user.
    pub user: UserId,
    /// The user's saving, Wh.
    pub saved_wh: f64,
    /// The user's points.
    pub points: u64,
}

/// Ranks `entries` by points (most first), then saving (most first), then user id
/// (ascending text); every entry gets a row, incomplete results with 0 points too.
pub fn leaderboard(entries: &[(UserId, SessionResult)]) -> Vec<LeaderboardRow> {
    let mut rows: Vec<LeaderboardRow> = entries
        .iter()
        .map(|(user, result)| LeaderboardRow {
            rank: 0,
            user: *user,
            saved_wh: result.saved_wh,
            points: result.points,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.points
            .cmp(&a.points)
            .then(b.saved_wh.total_cmp(&a.saved_wh))
            .then_with(|| a.user.as_str().cmp(b.user.as_str()))
    });
    let mut previous_points = None;
    for (index, row) in (1u32..).zip(rows.iter_mut()) {
        row.rank = match previous_points {
            Some((points, rank)) if points == row.points => rank,
            _ => index,
        };
        previous_points = Some((row.points, row.rank));
    }
    rows
}
