//! Saving sessions inside the user actor, and the baseline computed from stored
//! readings when a user opts in.
//!
//! At opt-in the user's baseline (the same half-hours on the last 10 weekdays, or 4
//! weekend days, see [`gridpulse_domain::session`]) is computed from the readings the
//! store holds for the user's meters, and the session is enrolled in the user's actor.
//! During the session every applied usage minute inside its window adds to the actual
//! energy of its half-hour and is pushed as a `session_progress` event; the first
//! minute at or after the end settles the result (saved kWh, points) and the user's
//! streak, pushed as `session_result` and stored before it is published.

use std::collections::{BTreeMap, BTreeSet};

use gridpulse_domain::session::HALF_HOUR_MS;
use gridpulse_domain::session::{
    Baseline, BaselineError, SavingSession, SessionProgress, SessionResult, Streak, half_hour_slot,
    progress, result, update_streak,
};
use gridpulse_domain::{LocalDate, MeterId, Reading};
use gridpulse_store::{ReadingQuery, Store};
use serde::{Deserialize, Serialize};

use crate::user_events::UserEventBody;

/// How far before a half-hour boundary a reading may be to stand for the register at
/// the boundary.
const BOUNDARY_TOLERANCE_MS: i64 = 15 * 60_000;

/// One session a user opted in to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrolled {
    /// The session.
    pub session: SavingSession,
    /// The user's baseline for it.
    pub baseline: Baseline,
    /// Actual energy per half-hour slot of the window so far, Wh.
    pub actual: BTreeMap<i64, f64>,
    /// The result, once the session is over.
    pub result: Option<SessionResult>,
}

impl Enrolled {
    /// Progress as of `now_ms`.
    pub fn progress(&self, now_ms: i64) -> SessionProgress {
        progress(&self.session, &self.baseline, &self.actual, now_ms)
    }
}

/// A user's saving sessions and streak (part of the user's snapshot).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserSessions {
    enrolled: BTreeMap<String, Enrolled>,
    streak: Streak,
}

impl UserSessions {
    /// Enrols in a session (idempotent: a second opt-in keeps the first baseline).
    pub fn enrol(&mut self, session: SavingSession, baseline: Baseline) -> bool {
        if self.enrolled.contains_key(session.id()) {
            return false;
        }
        self.enrolled.insert(
            session.id().to_owned(),
            Enrolled {
                session,
                baseline,
                actual: BTreeMap::new(),
                result: None,
            },
        );
        true
    }

    /// Local dates of the sessions the user took part in (excluded from baselines).
    pub fn session_days(&self) -> BTreeSet<LocalDate> {
        self.enrolled
            .values()
            .map(|enrolled| enrolled.session.local_date())
            .collect()
    }

    /// Applies one usage minute: progress for a session whose window holds it, the
    /// result for one it ended. Returns (event id, body, must be stored first).
    pub fn apply(&mut self, minute_ms: i64, energy_wh: f64) -> Vec<(String, UserEventBody, bool)> {
        let mut out = Vec::new();
        for (id, enrolled) in &mut self.enrolled {
            if enrolled.result.is_some() {
                continue;
            }
            let (start, end) = (enrolled.session.start_ms(), enrolled.session.end_ms());
            if (start..end).contains(&minute_ms) {
                *enrolled
                    .actual
                    .entry(half_hour_slot(minute_ms))
                    .or_insert(0.0) += energy_wh;
                let progress = enrolled.progress(minute_ms + 60_000);
                out.push((
                    format!("{id}.progress.{minute_ms}"),
                    UserEventBody::SessionProgress {
                        session: id.clone(),
                        progress,
                    },
                    false,
                ));
            } else if minute_ms >= end {
                let actual = enrolled.session.actual_per_slot(&enrolled.actual);
                let outcome = result(&enrolled.session, &enrolled.baseline, &actual);
                self.streak = update_streak(self.streak, &outcome);
                enrolled.result = Some(outcome.clone());
                out.push((
                    format!("{id}.result"),
                    UserEventBody::SessionResult {
                        session: id.clone(),
                        result: outcome,
                        streak: self.streak,
                    },
                    true,
                ));
            }
        }
        out
    }

    /// One enrolled session.
    pub fn get(&self, id: &str) -> Option<&Enrolled> {
        self.enrolled.get(id)
    }

    /// The user's streak.
    pub fn streak(&self) -> Streak {
        self.streak
    }
}

/// Energy per half-hour slot of one meter from its readings (oldest first): the
/// register at each slot boundary is the last reading at or before it, if one is within
/// [`BOUNDARY_TOLERANCE_MS`]; a slot whose boundaries are not both known, or whose
/// register went backwards, has no entry.
fn slot_energy(
    readings: &[Reading],
    slots: &[i64],
    into: &mut BTreeMap<i64, f64>,
    n_meters: &mut BTreeMap<i64, usize>,
) {
    let register_at = |boundary: i64| -> Option<f64> {
        let idx = readings.partition_point(|reading| reading.ts_ms <= boundary);
        let reading = readings.get(idx.checked_sub(1)?)?;
        (boundary - reading.ts_ms <= BOUNDARY_TOLERANCE_MS).then_some(reading.energy_wh)
    };
    for &slot in slots {
        if let (Some(start), Some(end)) = (register_at(slot), register_at(slot + HALF_HOUR_MS))
            && end >= start
        {
            *into.entry(slot).or_insert(0.0) += end - start;
            *n_meters.entry(slot).or_insert(0) += 1;
        }
    }
}

/// The user's baseline for `session` from the readings the store holds for `meters`
/// on the candidate days (those of the session's kind within the look-back, before its
/// day). A slot counts only when every meter's energy in it is known.
pub async fn baseline_from_store(
    store: &dyn Store,
    session: &SavingSession,
    meters: &[MeterId],
    excluded: &BTreeSet<LocalDate>,
) -> Result<Result<Baseline, BaselineError>, String> {
    let day = session.local_date();
    let mut history = BTreeMap::new();
    let mut n_meters = BTreeMap::new();
    let mut candidates = 0u32;
    let wanted = session.baseline_rule().candidate_days + excluded.len() as u32;
    for back in 1..=gridpulse_domain::session::MAX_LOOKBACK_DAYS {
        if candidates >= wanted {
            break;
        }
        let Some(date) = day.plus_days(-back) else {
            break;
        };
        if date_is_weekend(date) != session.is_weekend() {
            continue;
        }
        candidates += 1;
        let Some(slots) = session.slots_on(date) else {
            continue;
        };
        let (Some(first), Some(last)) = (slots.first(), slots.last()) else {
            continue;
        };
        for meter in meters {
            let readings = read_all(
                store,
                *meter,
                first - BOUNDARY_TOLERANCE_MS,
                last + HALF_HOUR_MS + 1,
            )
            .await?;
            slot_energy(&readings, &slots, &mut history, &mut n_meters);
        }
    }
    // Only slots every meter contributed to are complete.
    history.retain(|slot, _| n_meters.get(slot) == Some(&meters.len()));
    Ok(gridpulse_domain::session::baseline(
        session, &history, excluded,
    ))
}

fn date_is_weekend(date: LocalDate) -> bool {
    matches!(
        date.weekday(),
        gridpulse_domain::Weekday::Saturday | gridpulse_domain::Weekday::Sunday
    )
}

async fn read_all(
    store: &dyn Store,
    meter: MeterId,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Reading>, String> {
    let mut readings = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .read_readings(&ReadingQuery {
                meter,
                from_ms,
                to_ms,
                limit: 10_000,
                cursor,
            })
            .await
            .map_err(|error| error.to_string())?;
        readings.extend(page.readings);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(readings),
        }
    }
}
