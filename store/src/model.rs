//! What is stored: rows, queries and their keys, shared by both backends.

use gridpulse_domain::{
    AlertEventKind, AlertKind, AlertNote, AlertRecord, AlertState, Granularity, MeterId, Reading,
    UserId, UserRollup,
};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Milliseconds per day bucket.
pub const DAY_MS: i64 = 86_400_000;

/// The day bucket (days since the Unix epoch, UTC) holding `ts_ms`: raw readings are
/// partitioned by (meter, day), so a partition never grows without bound.
pub fn day_bucket(ts_ms: i64) -> i32 {
    ts_ms.div_euclid(DAY_MS) as i32
}

/// A page of one meter's readings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadingPage {
    /// Readings, oldest first.
    pub readings: Vec<Reading>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A range query over one meter's readings.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadingQuery {
    /// The meter.
    pub meter: MeterId,
    /// Inclusive start, Unix ms.
    pub from_ms: i64,
    /// Exclusive end, Unix ms.
    pub to_ms: i64,
    /// Page size.
    pub limit: usize,
    /// Resume after this cursor (from a previous page).
    pub cursor: Option<String>,
}

/// Longest time range one reading query may span (keeps a query to at most this many
/// day partitions).
pub const MAX_QUERY_DAYS: i64 = 366;

impl ReadingQuery {
    /// Checks the range and decodes the cursor into the first timestamp to read.
    pub fn start_ms(&self) -> Result<i64, StoreError> {
        if self.to_ms <= self.from_ms {
            return Err(StoreError::BadRequest {
                field: "to",
                reason: "must be after `from`".into(),
            });
        }
        if (self.to_ms - self.from_ms) / DAY_MS > MAX_QUERY_DAYS {
            return Err(StoreError::BadRequest {
                field: "to",
                reason: format!("the range may span at most {MAX_QUERY_DAYS} days"),
            });
        }
        cursor_start(self.from_ms, self.to_ms, self.cursor.as_deref())
    }
}

/// The first key to read of a range `[from_ms, to_ms)` resumed at `cursor` (a time a
/// previous page of the same range returned), refusing a cursor outside the range.
fn cursor_start(from_ms: i64, to_ms: i64, cursor: Option<&str>) -> Result<i64, StoreError> {
    match cursor {
        None => Ok(from_ms),
        Some(cursor) => match cursor.parse::<i64>() {
            Ok(ts) if ts >= from_ms && ts <= to_ms => Ok(ts),
            _ => Err(StoreError::BadRequest {
                field: "cursor",
                reason: "is not a cursor of this query".into(),
            }),
        },
    }
}

/// The cursor that resumes a reading query at `next_ts_ms`.
pub fn reading_cursor(next_ts_ms: i64) -> String {
    next_ts_ms.to_string()
}

/// A range query over one subject's rollups of one granularity: the windows whose
/// `window_start_ms` is in `[from_ms, to_ms)`, oldest first, at most `limit` per page.
///
/// Unlike [`ReadingQuery`] the span is not limited: one subject's windows of one
/// granularity are one partition (one prefix in the embedded store), and `limit`
/// bounds the work.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupQuery<S> {
    /// The meter ([`MeterRollupQuery`]) or user ([`UserRollupQuery`]).
    pub subject: S,
    /// Window size; other granularities of the subject are never returned.
    pub granularity: Granularity,
    /// Inclusive start of `window_start_ms`, Unix ms.
    pub from_ms: i64,
    /// Exclusive end of `window_start_ms`, Unix ms.
    pub to_ms: i64,
    /// Page size (0 reads as 1).
    pub limit: usize,
    /// Resume at this cursor (the `next_cursor` of the previous page of this query).
    pub cursor: Option<String>,
}

/// A query over one meter's rollups.
pub type MeterRollupQuery = RollupQuery<MeterId>;
/// A query over one user's rollups.
pub type UserRollupQuery = RollupQuery<UserId>;

impl<S> RollupQuery<S> {
    /// Checks the range and decodes the cursor into the first `window_start_ms` to read.
    pub fn start_ms(&self) -> Result<i64, StoreError> {
        if self.to_ms <= self.from_ms {
            return Err(StoreError::BadRequest {
                field: "to",
                reason: "must be after `from`".into(),
            });
        }
        cursor_start(self.from_ms, self.to_ms, self.cursor.as_deref())
    }
}

/// A page of one subject's rollups.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollupPage<R> {
    /// Rollups, oldest window first.
    pub rollups: Vec<R>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The cursor that resumes a rollup query at the window starting at `window_start_ms`.
pub fn rollup_cursor(window_start_ms: i64) -> String {
    window_start_ms.to_string()
}

/// Refuses what neither backend can store exactly: an empty currency code (the Scylla
/// table keeps "no currency" as the empty text, so no write ever leaves a tombstone).
pub fn check_user_rollup(rollup: &UserRollup) -> Result<(), StoreError> {
    if rollup.currency.as_deref() == Some("") {
        return Err(StoreError::BadRequest {
            field: "currency",
            reason: format!(
                "is empty in the {} rollup of {} at {}: omit it instead",
                rollup.granularity.as_str(),
                rollup.user,
                rollup.window_start_ms
            ),
        });
    }
    Ok(())
}

/// Longest stream job name, bytes.
pub const MAX_JOB_NAME_LEN: usize = 128;

/// Checks a stream job name (the key of its stored offsets): 1 to
/// [`MAX_JOB_NAME_LEN`] bytes.
pub fn check_job_name(job: &str) -> Result<(), StoreError> {
    if job.is_empty() || job.len() > MAX_JOB_NAME_LEN {
        return Err(StoreError::BadRequest {
            field: "job",
            reason: format!(
                "a stream job name has 1 to {MAX_JOB_NAME_LEN} bytes, not {}",
                job.len()
            ),
        });
    }
    Ok(())
}

/// The stored state of one meter actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRow {
    /// The meter.
    pub meter: MeterId,
    /// The log partition the meter belongs to.
    pub partition: u32,
    /// Offset of the last reading reflected in `state` (readings at or before it are
    /// skipped on replay).
    pub applied_offset: Option<u64>,
    /// The actor's state, encoded by the actors crate (opaque here).
    pub state: Vec<u8>,
    /// Wall-clock time of the snapshot, Unix ms.
    pub written_at_ms: i64,
}

/// One change of one alert: a lifecycle change or a workflow event.
///
/// Key: (alert id, `at_ms`, event) for lifecycle changes; workflow events add their
/// `action_seq`, so two comments (or assignments, snoozes) in one millisecond are two
/// entries, and storing one entry again rewrites the same row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertHistoryEntry {
    /// What happened.
    pub event: AlertEventKind,
    /// When: event time for raise/update/system resolve, wall clock for human actions
    /// and workflow events (a reminder: when it was due).
    pub at_ms: i64,
    /// Who did it (`system` for automatic changes).
    pub by: String,
    /// The alert after the change (assignee, snooze end, counts).
    pub alert: AlertRecord,
    /// The text of a comment (`commented`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// A workflow event's position among the alert's workflow events (1, 2, ...); 0 for
    /// lifecycle changes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub action_seq: u32,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl AlertHistoryEntry {
    /// Builds the history entry for a lifecycle change.
    pub fn from_change(event: AlertEventKind, alert: AlertRecord) -> AlertHistoryEntry {
        AlertHistoryEntry::from_event(event, alert, None)
    }

    /// Builds the history entry for a published change; workflow events take who,
    /// when and what from their note.
    pub fn from_event(
        event: AlertEventKind,
        alert: AlertRecord,
        note: Option<&AlertNote>,
    ) -> AlertHistoryEntry {
        if let Some(note) = note {
            return AlertHistoryEntry {
                event,
                at_ms: note.at_ms,
                by: note.by.clone(),
                alert,
                comment: note.text.clone(),
                action_seq: note.action_seq,
            };
        }
        let (at_ms, by) = match event {
            AlertEventKind::Raised => (alert.first_seen_ms, "system".to_owned()),
            AlertEventKind::Acknowledged => (
                alert.acknowledged_at_ms.unwrap_or(alert.last_seen_ms),
                alert.acknowledged_by.clone().unwrap_or_default(),
            ),
            AlertEventKind::Resolved => (
                alert.resolved_at_ms.unwrap_or(alert.last_seen_ms),
                alert.resolved_by.clone().unwrap_or_default(),
            ),
            // A workflow event always has a note; without one it is dated like an update.
            AlertEventKind::Updated
            | AlertEventKind::Assigned
            | AlertEventKind::Commented
            | AlertEventKind::Snoozed
            | AlertEventKind::Unsnoozed
            | AlertEventKind::Reminder => (alert.last_seen_ms, "system".to_owned()),
        };
        AlertHistoryEntry {
            event,
            at_ms,
            by,
            alert,
            comment: None,
            action_seq: 0,
        }
    }
}

/// Refuses what neither backend can store exactly: an empty comment (Scylla keeps "no
/// comment" as the empty text, so no write ever leaves a tombstone).
pub fn check_history_entry(entry: &AlertHistoryEntry) -> Result<(), StoreError> {
    if entry.comment.as_deref() == Some("") {
        return Err(StoreError::BadRequest {
            field: "comment",
            reason: format!(
                "is empty in the history of alert {}: omit it instead",
                entry.alert.id
            ),
        });
    }
    Ok(())
}

/// An alert with its lifecycle history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAlert {
    /// The alert as it is now.
    pub alert: AlertRecord,
    /// Every change, oldest first.
    pub history: Vec<AlertHistoryEntry>,
}

/// A query over stored alerts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertQuery {
    /// Only this meter.
    pub meter: Option<MeterId>,
    /// Only this kind.
    pub kind: Option<AlertKind>,
    /// Only this state.
    pub state: Option<AlertState>,
    /// Only alerts first seen at or after this time, Unix ms.
    pub since_ms: Option<i64>,
    /// The cursor: only alerts after this `(first_seen_ms, id)` in newest-first order
    /// (first seen earlier, or in the same millisecond with a greater id) — the last
    /// alert of the previous page.
    pub before: Option<(i64, String)>,
    /// At most this many.
    pub limit: usize,
}

impl AlertQuery {
    /// Whether `alert` passes the filters.
    pub fn matches(&self, alert: &AlertRecord) -> bool {
        self.meter.is_none_or(|meter| alert.meter == meter)
            && self.kind.is_none_or(|kind| alert.kind == kind)
            && self.state.is_none_or(|state| alert.state == state)
            && self
                .since_ms
                .is_none_or(|since| alert.first_seen_ms >= since)
            && self.before.as_ref().is_none_or(|(at_ms, id)| {
                alert.first_seen_ms < *at_ms
                    || (alert.first_seen_ms == *at_ms && alert.id.as_str() > id.as_str())
            })
    }
}

/// One write to the API: who did what (append-only).
///
/// `(at_ms, seq)` identifies an entry: the writer keeps it unique (`at_ms * 1000 + a
/// counter` is fine); appending the same entry again rewrites the same row, which is
/// what makes a retried append harmless. Entries are never updated or deleted through
/// the store's interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, Unix ms (wall clock).
    pub at_ms: i64,
    /// Tells apart the entries of one millisecond; assigned by the writer.
    pub seq: u64,
    /// Who: the authenticated subject (1 to [`MAX_AUDIT_SUBJECT_BYTES`] bytes).
    pub subject: String,
    /// Their role, e.g. `ops` (at most 64 bytes).
    pub role: String,
    /// HTTP method (1 to 16 bytes).
    pub method: String,
    /// Request path (1 to 4096 bytes).
    pub path: String,
    /// HTTP status answered.
    pub status: u16,
    /// Anything else worth keeping (at most 16 KiB; `Some("")` is refused: omit it).
    pub detail: Option<String>,
}

/// Longest audit subject, bytes (the embedded store's keys carry its length in a byte).
pub const MAX_AUDIT_SUBJECT_BYTES: usize = 255;

/// Refuses an audit entry neither backend can store exactly, naming the field.
pub fn check_audit_entry(entry: &AuditEntry) -> Result<(), StoreError> {
    let bad = |field: &'static str, reason: String| Err(StoreError::BadRequest { field, reason });
    let within = |text: &str, min: usize, max: usize| (min..=max).contains(&text.len());
    if !within(&entry.subject, 1, MAX_AUDIT_SUBJECT_BYTES) {
        return bad(
            "subject",
            format!("must have 1 to {MAX_AUDIT_SUBJECT_BYTES} bytes"),
        );
    }
    if !within(&entry.role, 0, 64) {
        return bad("role", "must have at most 64 bytes".into());
    }
    if !within(&entry.method, 1, 16) {
        return bad("method", "must have 1 to 16 bytes".into());
    }
    if !within(&entry.path, 1, 4096) {
        return bad("path", "must have 1 to 4096 bytes".into());
    }
    match entry.detail.as_deref() {
        Some("") => bad("detail", "is empty: omit it instead".into()),
        Some(detail) if detail.len() > 16 * 1024 => {
            bad("detail", "must have at most 16384 bytes".into())
        }
        _ => Ok(()),
    }
}

/// A page of the audit log: entries newest first (by `at_ms`, then `seq`), strictly
/// older than `before`, of one subject or all, at most `limit` (0 reads as 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// The `(at_ms, seq)` of the last entry of the previous page; `None`: the newest.
    pub before: Option<(i64, u64)>,
    /// Only this subject's entries.
    pub subject: Option<String>,
    /// Page size.
    pub limit: usize,
}

/// Kinds of configuration documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigKind {
    /// Meter configuration (owner, tariff, thresholds).
    Meter,
    /// User / account.
    User,
    /// Tariff.
    Tariff,
    /// A user actor's snapshot (usage state), written at user checkpoints.
    UserState,
    /// A saving session (definition, participants and their baselines).
    Session,
    /// A stream job's checkpoints, one per log partition (embedded mode).
    StreamCheckpoints,
    /// Hour rollups to recompute from stored readings (too-late readings of a rollup
    /// job): one document per (meter, hour, too-late offset), deleted once done.
    RollupRecompute,
}

impl ConfigKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::Meter => "meter",
            ConfigKind::User => "user",
            ConfigKind::Tariff => "tariff",
            ConfigKind::UserState => "user_state",
            ConfigKind::Session => "session",
            ConfigKind::StreamCheckpoints => "stream_checkpoints",
            ConfigKind::RollupRecompute => "rollup_recompute",
        }
    }
}

/// How long each table keeps data; `None` keeps it forever. Usage rollups and stream
/// offsets are always kept (a meter's hourly rollups are ~1 MB a year).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Raw readings, days.
    pub readings_days: Option<u32>,
    /// Resolved alerts and their history, days.
    pub alerts_days: Option<u32>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            readings_days: Some(400),
            alerts_days: Some(400),
        }
    }
}
