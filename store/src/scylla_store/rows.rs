//! Rows as Scylla sees them, and the pure planning around them: domain values ↔ bound
//! values and result rows, the day partitions a reading query visits, how a write is
//! cut into single-partition batches.
//!
//! Nothing here talks to the cluster, so every mapping is unit-tested (round trips with
//! proptest) and the backend's I/O code only moves these values around.
//!
//! Encodings: times are CQL `timestamp` (signed Unix ms, so dates before 1970 work);
//! unsigned domain counters (`u64` sequence numbers and log offsets) are stored
//! bit-for-bit in `bigint` (`as` casts both ways are lossless); alerts are their JSON
//! [`AlertRecord`], the format clients already see. (With serde_json's default features a
//! float of 17 significant digits may read back 1 ulp off; measured values such as
//! `262.35` round-trip exactly. serde_json's `float_roundtrip` feature would make every
//! value exact, at a parsing cost for the whole workspace.)

use std::collections::{BTreeMap, BTreeSet};

use gridpulse_domain::{
    AlertEventKind, AlertRecord, AlertState, Amount, Granularity, MeterId, MeterRollup, Reading,
    UserId, UserRollup,
};
use scylla::value::{CqlTimestamp, MaybeUnset};

use crate::error::StoreError;
use crate::model::{
    AlertHistoryEntry, AuditEntry, ConfigKind, DAY_MS, SnapshotRow, check_history_entry, day_bucket,
};

/// Shorthand for [`StoreError::corrupt`].
pub(crate) fn corrupt(
    what: &'static str,
    location: impl Into<String>,
    message: impl std::fmt::Display,
) -> StoreError {
    StoreError::corrupt(what, location, message)
}

/// `u64` stored bit-for-bit in a `bigint`.
pub(crate) fn u64_to_bigint(value: u64) -> i64 {
    value as i64
}

/// The inverse of [`u64_to_bigint`].
pub(crate) fn bigint_to_u64(value: i64) -> u64 {
    value as u64
}

// ---- readings ----------------------------------------------------------------------

/// Bound values of `insert_reading`, in [`super::statements::READING_COLUMNS`] order.
/// Missing optional values are *unset*, not null, so no tombstone is written.
pub(crate) type ReadingInsert = (
    String,
    i32,
    CqlTimestamp,
    f64,
    f64,
    f64,
    f64,
    MaybeUnset<f64>,
    MaybeUnset<i64>,
);

/// A result row of `select_readings`: ts, voltage, current, power, energy, credit, seq.
pub(crate) type ReadingSelect = (CqlTimestamp, f64, f64, f64, f64, Option<f64>, Option<i64>);

/// One row of the `readings` table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReadingRow {
    pub meter: String,
    pub day: i32,
    pub ts_ms: i64,
    pub voltage: f64,
    pub current: f64,
    pub power_w: f64,
    pub energy_wh: f64,
    pub credit: Option<f64>,
    pub seq: Option<i64>,
}

impl ReadingRow {
    /// The row of `reading`, in the partition (meter, [`day_bucket`]).
    pub(crate) fn from_reading(reading: &Reading) -> ReadingRow {
        ReadingRow {
            meter: reading.meter.as_str().to_owned(),
            day: day_bucket(reading.ts_ms),
            ts_ms: reading.ts_ms,
            voltage: reading.voltage,
            current: reading.current,
            power_w: reading.power_w,
            energy_wh: reading.energy_wh,
            credit: reading.credit,
            seq: reading.seq.map(u64_to_bigint),
        }
    }

    /// The bound values of `insert_reading`.
    pub(crate) fn insert_values(&self) -> ReadingInsert {
        (
            self.meter.clone(),
            self.day,
            CqlTimestamp(self.ts_ms),
            self.voltage,
            self.current,
            self.power_w,
            self.energy_wh,
            self.credit.map_or(MaybeUnset::Unset, MaybeUnset::Set),
            self.seq.map_or(MaybeUnset::Unset, MaybeUnset::Set),
        )
    }

    /// What `select_readings` returns for this row.
    #[cfg(test)]
    pub(crate) fn select_row(&self) -> ReadingSelect {
        (
            CqlTimestamp(self.ts_ms),
            self.voltage,
            self.current,
            self.power_w,
            self.energy_wh,
            self.credit,
            self.seq,
        )
    }
}

/// The reading of a `select_readings` row of `meter`'s partition.
pub(crate) fn reading_from_select(meter: MeterId, row: ReadingSelect) -> Reading {
    let (ts, voltage, current, power_w, energy_wh, credit, seq) = row;
    Reading {
        meter,
        ts_ms: ts.0,
        voltage,
        current,
        power_w,
        energy_wh,
        credit,
        seq: seq.map(bigint_to_u64),
        backfill: false,
    }
}

/// Cuts `readings` into unlogged-batch-sized groups of one partition (meter, day) each,
/// at most `max_rows` rows per group, partitions and rows in key order. A key written
/// twice keeps its last reading (a batch applies all its rows with one timestamp, so
/// two rows of one key in a batch would not keep the later one).
pub(crate) fn reading_batches(readings: &[Reading], max_rows: usize) -> Vec<Vec<ReadingRow>> {
    let mut partitions: BTreeMap<(MeterId, i32), BTreeMap<i64, &Reading>> = BTreeMap::new();
    for reading in readings {
        partitions
            .entry((reading.meter, day_bucket(reading.ts_ms)))
            .or_default()
            .insert(reading.ts_ms, reading);
    }
    let max_rows = max_rows.max(1);
    let mut batches = Vec::new();
    for rows in partitions.into_values() {
        let rows: Vec<ReadingRow> = rows.into_values().map(ReadingRow::from_reading).collect();
        batches.extend(rows.chunks(max_rows).map(<[ReadingRow]>::to_vec));
    }
    batches
}

/// One day partition of a reading query and the part of the range inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DayRange {
    /// The partition's day, as [`day_bucket`] computes it on writes.
    pub day: i32,
    /// Inclusive start, Unix ms.
    pub from_ms: i64,
    /// Exclusive end, Unix ms.
    pub to_ms: i64,
}

/// The day partitions holding `[from_ms, to_ms)`, oldest first, each with the part of
/// the range it holds. Empty when the range is.
pub(crate) fn day_ranges(from_ms: i64, to_ms: i64) -> Vec<DayRange> {
    let mut ranges = Vec::new();
    let mut start = from_ms;
    while start < to_ms {
        let next_day = start
            .div_euclid(DAY_MS)
            .saturating_add(1)
            .saturating_mul(DAY_MS);
        let end = next_day.min(to_ms);
        ranges.push(DayRange {
            day: day_bucket(start),
            from_ms: start,
            to_ms: end,
        });
        if end <= start {
            break; // i64 saturation at the very end of time: nothing further exists.
        }
        start = end;
    }
    ranges
}

// ---- snapshots and checkpoints --------------------------------------------------------

/// Bound values of `insert_snapshot`: meter, log_partition, applied_offset, state,
/// written_at.
pub(crate) type SnapshotInsert = (String, i64, Option<i64>, Vec<u8>, CqlTimestamp);
/// A row of `select_snapshot`: log_partition, applied_offset, state, written_at.
pub(crate) type SnapshotSelect = (i64, Option<i64>, Option<Vec<u8>>, CqlTimestamp);

/// The bound values storing `snapshot`.
pub(crate) fn snapshot_values(snapshot: &SnapshotRow) -> SnapshotInsert {
    (
        snapshot.meter.as_str().to_owned(),
        i64::from(snapshot.partition),
        snapshot.applied_offset.map(u64_to_bigint),
        snapshot.state.clone(),
        CqlTimestamp(snapshot.written_at_ms),
    )
}

/// The snapshot of `meter` from its row.
pub(crate) fn snapshot_from_select(
    meter: MeterId,
    row: SnapshotSelect,
) -> Result<SnapshotRow, StoreError> {
    let (log_partition, applied_offset, state, written_at) = row;
    let partition = u32::try_from(log_partition).map_err(|_| {
        corrupt(
            "snapshot",
            format!("snapshots/{meter}"),
            format!("log_partition {log_partition} is not a partition number"),
        )
    })?;
    Ok(SnapshotRow {
        meter,
        partition,
        applied_offset: applied_offset.map(bigint_to_u64),
        // An empty blob and a null read back alike on some versions: both are "no state".
        state: state.unwrap_or_default(),
        written_at_ms: written_at.0,
    })
}

/// Bound values of `insert_checkpoint`: log_partition, log_offset.
pub(crate) fn checkpoint_values(partition: u32, offset: u64) -> (i64, i64) {
    (i64::from(partition), u64_to_bigint(offset))
}

// ---- alerts ------------------------------------------------------------------------

/// The stored name of an alert event (its JSON name).
pub(crate) fn event_name(event: AlertEventKind) -> &'static str {
    event.as_str()
}

/// Orders events that share a millisecond in lifecycle order (the `event_rank`
/// clustering column).
pub(crate) fn event_rank(event: AlertEventKind) -> i8 {
    match event {
        AlertEventKind::Raised => 0,
        AlertEventKind::Updated => 1,
        AlertEventKind::Acknowledged => 2,
        AlertEventKind::Resolved => 3,
        AlertEventKind::Assigned => 4,
        AlertEventKind::Commented => 5,
        AlertEventKind::Snoozed => 6,
        AlertEventKind::Unsnoozed => 7,
        AlertEventKind::Reminder => 8,
    }
}

/// Parses a stored event name.
pub(crate) fn parse_event(name: &str) -> Option<AlertEventKind> {
    AlertEventKind::parse(name)
}

/// The TTL (seconds, 0 = none) of an alert's rows: open alerts never expire, resolved
/// ones expire `resolved_ttl` after the write that resolved them.
pub(crate) fn alert_ttl(state: AlertState, resolved_ttl: Option<i32>) -> i32 {
    if state.is_open() {
        0
    } else {
        resolved_ttl.unwrap_or(0)
    }
}

/// One alert as stored in `alerts`, `alerts_by_meter` and `alerts_by_day`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AlertRow {
    pub id: String,
    pub meter: String,
    pub kind: &'static str,
    pub state: &'static str,
    pub first_seen_ms: i64,
    /// Day of `first_seen` (the `alerts_by_day` partition).
    pub day: i32,
    /// The JSON `AlertRecord`.
    pub body: String,
}

impl AlertRow {
    /// The rows of `alert`.
    pub(crate) fn from_alert(alert: &AlertRecord) -> Result<AlertRow, StoreError> {
        let body = serde_json::to_string(alert)
            .map_err(|error| corrupt("alert", alert.id.clone(), error))?;
        Ok(AlertRow {
            id: alert.id.clone(),
            meter: alert.meter.as_str().to_owned(),
            kind: alert.kind.as_str(),
            state: alert.state.as_str(),
            first_seen_ms: alert.first_seen_ms,
            day: day_bucket(alert.first_seen_ms),
            body,
        })
    }

    /// Bound values of `insert_alert` (with the TTL last).
    pub(crate) fn alert_values(
        &self,
        ttl: i32,
    ) -> (
        String,
        String,
        &'static str,
        &'static str,
        CqlTimestamp,
        String,
        i32,
    ) {
        (
            self.id.clone(),
            self.meter.clone(),
            self.kind,
            self.state,
            CqlTimestamp(self.first_seen_ms),
            self.body.clone(),
            ttl,
        )
    }

    /// Bound values of `insert_alert_by_meter` (with the TTL last).
    pub(crate) fn by_meter_values(
        &self,
        ttl: i32,
    ) -> (
        String,
        CqlTimestamp,
        String,
        &'static str,
        &'static str,
        String,
        i32,
    ) {
        (
            self.meter.clone(),
            CqlTimestamp(self.first_seen_ms),
            self.id.clone(),
            self.kind,
            self.state,
            self.body.clone(),
            ttl,
        )
    }

    /// Bound values of `insert_alert_by_day` (with the TTL last).
    #[allow(clippy::type_complexity)]
    pub(crate) fn by_day_values(
        &self,
        ttl: i32,
    ) -> (
        i32,
        CqlTimestamp,
        String,
        String,
        &'static str,
        &'static str,
        String,
        i32,
    ) {
        (
            self.day,
            CqlTimestamp(self.first_seen_ms),
            self.id.clone(),
            self.meter.clone(),
            self.kind,
            self.state,
            self.body.clone(),
            ttl,
        )
    }
}

/// Decodes a stored alert body; `location` names the table and key for the error.
pub(crate) fn alert_from_body(
    body: &str,
    location: impl Into<String>,
) -> Result<AlertRecord, StoreError> {
    serde_json::from_str(body).map_err(|error| corrupt("alert", location, error))
}

/// One row of `alert_history` (a lifecycle change) or of `alert_workflow` (a workflow
/// event: `workflow` is set, `action_seq` and `comment` are its own).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistoryRow {
    pub id: String,
    pub at_ms: i64,
    pub event_rank: i8,
    pub event: &'static str,
    pub actor: String,
    /// The JSON `AlertRecord` after the change.
    pub body: String,
    /// A row of `alert_workflow`.
    pub workflow: bool,
    /// Its position among the alert's workflow events (0 for lifecycle changes).
    pub action_seq: u32,
    /// A comment's text, else empty (never null).
    pub comment: String,
}

/// A row of `select_alert_history`: at, event_rank, event, actor, body.
pub(crate) type HistorySelect = (CqlTimestamp, i8, String, String, String);
/// A row of `select_alert_workflow`: at, action_seq, event, actor, comment, body.
pub(crate) type WorkflowSelect = (CqlTimestamp, i64, String, String, String, String);
/// Bound values of `insert_alert_workflow` (with the TTL last).
pub(crate) type WorkflowValues = (
    String,
    CqlTimestamp,
    i64,
    &'static str,
    String,
    String,
    String,
    i32,
);

impl HistoryRow {
    /// The row of `entry`.
    pub(crate) fn from_entry(entry: &AlertHistoryEntry) -> Result<HistoryRow, StoreError> {
        let body = serde_json::to_string(&entry.alert)
            .map_err(|error| corrupt("alert history", entry.alert.id.clone(), error))?;
        let workflow = entry.event.is_workflow();
        check_history_entry(entry)?;
        Ok(HistoryRow {
            id: entry.alert.id.clone(),
            at_ms: entry.at_ms,
            event_rank: event_rank(entry.event),
            event: event_name(entry.event),
            actor: entry.by.clone(),
            body,
            workflow,
            action_seq: if workflow { entry.action_seq } else { 0 },
            comment: entry.comment.clone().unwrap_or_default(),
        })
    }

    /// Bound values of `insert_alert_workflow` (with the TTL last).
    pub(crate) fn workflow_values(&self, ttl: i32) -> WorkflowValues {
        (
            self.id.clone(),
            CqlTimestamp(self.at_ms),
            i64::from(self.action_seq),
            self.event,
            self.actor.clone(),
            self.comment.clone(),
            self.body.clone(),
            ttl,
        )
    }

    /// What `select_alert_workflow` returns for this row.
    #[cfg(test)]
    pub(crate) fn workflow_select_row(&self) -> WorkflowSelect {
        (
            CqlTimestamp(self.at_ms),
            i64::from(self.action_seq),
            self.event.to_owned(),
            self.actor.clone(),
            self.comment.clone(),
            self.body.clone(),
        )
    }

    /// Bound values of `insert_alert_history` (with the TTL last).
    pub(crate) fn values(
        &self,
        ttl: i32,
    ) -> (String, CqlTimestamp, i8, &'static str, String, String, i32) {
        (
            self.id.clone(),
            CqlTimestamp(self.at_ms),
            self.event_rank,
            self.event,
            self.actor.clone(),
            self.body.clone(),
            ttl,
        )
    }

    /// What `select_alert_history` returns for this row.
    #[cfg(test)]
    pub(crate) fn select_row(&self) -> HistorySelect {
        (
            CqlTimestamp(self.at_ms),
            self.event_rank,
            self.event.to_owned(),
            self.actor.clone(),
            self.body.clone(),
        )
    }
}

/// The history entry of a row of alert `id`.
pub(crate) fn history_from_select(
    id: &str,
    row: HistorySelect,
) -> Result<AlertHistoryEntry, StoreError> {
    let (at, rank, event_text, actor, body) = row;
    let location = || format!("alert_history/{id}");
    let event = parse_event(&event_text).ok_or_else(|| {
        corrupt(
            "alert history",
            location(),
            format!("unknown event `{event_text}`"),
        )
    })?;
    if event_rank(event) != rank {
        return Err(corrupt(
            "alert history",
            location(),
            format!("event `{event_text}` stored with rank {rank}"),
        ));
    }
    if event.is_workflow() {
        return Err(corrupt(
            "alert history",
            location(),
            format!("workflow event `{event_text}` in alert_history"),
        ));
    }
    let alert =
        serde_json::from_str(&body).map_err(|error| corrupt("alert history", location(), error))?;
    Ok(AlertHistoryEntry {
        event,
        at_ms: at.0,
        by: actor,
        alert,
        comment: None,
        action_seq: 0,
    })
}

/// The history entry of an `alert_workflow` row of alert `id`.
pub(crate) fn workflow_from_select(
    id: &str,
    row: WorkflowSelect,
) -> Result<AlertHistoryEntry, StoreError> {
    let (at, action_seq, event_text, actor, comment, body) = row;
    let location = || format!("alert_workflow/{id}");
    let event = parse_event(&event_text)
        .filter(|event| event.is_workflow())
        .ok_or_else(|| {
            corrupt(
                "alert workflow",
                location(),
                format!("not a workflow event: `{event_text}`"),
            )
        })?;
    let action_seq = u32::try_from(action_seq).map_err(|_| {
        corrupt(
            "alert workflow",
            location(),
            format!("action_seq {action_seq} out of range"),
        )
    })?;
    let alert = serde_json::from_str(&body)
        .map_err(|error| corrupt("alert workflow", location(), error))?;
    Ok(AlertHistoryEntry {
        event,
        at_ms: at.0,
        by: actor,
        alert,
        comment: (!comment.is_empty()).then_some(comment),
        action_seq,
    })
}

/// Sorts one alert's entries of both history tables into one history: by time, a
/// millisecond's lifecycle changes (in lifecycle order) before its workflow events (in
/// the order they happened) — the order of the embedded store's keys.
pub(crate) fn merge_history(mut entries: Vec<AlertHistoryEntry>) -> Vec<AlertHistoryEntry> {
    entries.sort_by_key(history_order);
    entries
}

/// Where an entry sorts in its alert's history (see [`merge_history`]).
pub(crate) fn history_order(entry: &AlertHistoryEntry) -> (i64, bool, i64) {
    let workflow = entry.event.is_workflow();
    let within = if workflow {
        i64::from(entry.action_seq)
    } else {
        i64::from(event_rank(entry.event))
    };
    (entry.at_ms, workflow, within)
}

/// Everything one `write_alert_events` call writes.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct AlertWritePlan {
    /// Days of first_seen to record in `alert_days`.
    pub days: BTreeSet<i32>,
    /// The last state of each alert in the call, with the TTL of its rows.
    pub alerts: Vec<(AlertRow, i32)>,
    /// History rows, grouped per alert (one partition per group, at most `max_rows`
    /// rows), each with its TTL.
    pub history: Vec<Vec<(HistoryRow, i32)>>,
    /// Workflow rows (`alert_workflow`), grouped the same way.
    pub workflow: Vec<Vec<(HistoryRow, i32)>>,
    /// Alerts resolved with a TTL: their earlier history (written while open, without
    /// TTL) must be rewritten with it.
    pub refresh: Vec<(String, i32)>,
}

/// Plans the rows of `entries` (in publish order: a later entry of an alert is its
/// newer state). History rows with the same key keep the last entry.
pub(crate) fn plan_alert_writes(
    entries: &[AlertHistoryEntry],
    resolved_ttl: Option<i32>,
    max_rows: usize,
) -> Result<AlertWritePlan, StoreError> {
    let mut last: BTreeMap<&str, &AlertRecord> = BTreeMap::new();
    // Keyed like the tables: (at, event_rank) and (at, action_seq).
    let mut history: BTreeMap<&str, BTreeMap<(i64, i8), HistoryRow>> = BTreeMap::new();
    let mut workflow: BTreeMap<&str, BTreeMap<(i64, u32), HistoryRow>> = BTreeMap::new();
    for entry in entries {
        last.insert(&entry.alert.id, &entry.alert);
        let row = HistoryRow::from_entry(entry)?;
        if row.workflow {
            workflow
                .entry(&entry.alert.id)
                .or_default()
                .insert((row.at_ms, row.action_seq), row);
        } else {
            history
                .entry(&entry.alert.id)
                .or_default()
                .insert((row.at_ms, row.event_rank), row);
        }
    }
    let mut plan = AlertWritePlan::default();
    for (id, alert) in &last {
        let ttl = alert_ttl(alert.state, resolved_ttl);
        plan.days.insert(day_bucket(alert.first_seen_ms));
        plan.alerts.push((AlertRow::from_alert(alert)?, ttl));
        if ttl > 0 {
            plan.refresh.push(((*id).to_owned(), ttl));
        }
        if let Some(rows) = history.remove(id) {
            let rows: Vec<(HistoryRow, i32)> = rows.into_values().map(|row| (row, ttl)).collect();
            plan.history.extend(
                rows.chunks(max_rows.max(1))
                    .map(<[(HistoryRow, i32)]>::to_vec),
            );
        }
        if let Some(rows) = workflow.remove(id) {
            let rows: Vec<(HistoryRow, i32)> = rows.into_values().map(|row| (row, ttl)).collect();
            plan.workflow.extend(
                rows.chunks(max_rows.max(1))
                    .map(<[(HistoryRow, i32)]>::to_vec),
            );
        }
    }
    Ok(plan)
}

/// Keeps the last item per key, in key order (a write of many rows must not race two
/// versions of one row against each other).
pub(crate) fn last_per_key<K: Ord, T>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    let mut by_key = BTreeMap::new();
    for item in items {
        by_key.insert(key(&item), item);
    }
    by_key.into_values().collect()
}

// ---- bound values of the key lookups ---------------------------------------------------
//
// One function per shape, used by the backend and by the tests that serialize them
// against the schema's column types.

/// The one `alert_days` partition.
pub(crate) const ALERT_DAYS_SCOPE: i32 = 0;

/// `select_readings`: meter, day, from, to, LIMIT (clamped to CQL's `int`).
pub(crate) fn reading_range_values(
    meter: &str,
    range: DayRange,
    limit: usize,
) -> (&str, i32, CqlTimestamp, CqlTimestamp, i32) {
    (
        meter,
        range.day,
        CqlTimestamp(range.from_ms),
        CqlTimestamp(range.to_ms),
        i32::try_from(limit).unwrap_or(i32::MAX),
    )
}

/// A text partition key (meter, alert id).
pub(crate) fn text_key(key: &str) -> (&str,) {
    (key,)
}

/// `select_alerts_by_day`: the day.
pub(crate) fn day_key(day: i32) -> (i32,) {
    (day,)
}

/// `select_checkpoint`: the log partition.
pub(crate) fn checkpoint_key(partition: u32) -> (i64,) {
    (i64::from(partition),)
}

/// `insert_alert_day` and `select_alert_days_since`: scope, day.
pub(crate) fn alert_day_values(day: i32) -> (i32, i32) {
    (ALERT_DAYS_SCOPE, day)
}

/// `select_alert_days`: scope.
pub(crate) fn alert_days_key() -> (i32,) {
    (ALERT_DAYS_SCOPE,)
}

/// `select_alerts_by_*_since`: the partition key, then `first_seen >= since`.
pub(crate) fn since_values<K>(key: K, since_ms: i64) -> (K, CqlTimestamp) {
    (key, CqlTimestamp(since_ms))
}

/// `select_config` and `delete_config`: kind, id.
pub(crate) fn config_key(kind: ConfigKind, id: &str) -> (&'static str, &str) {
    (kind.as_str(), id)
}

/// `insert_config`: kind, id, body.
pub(crate) fn config_values<'a>(
    kind: ConfigKind,
    id: &'a str,
    body: &'a str,
) -> (&'static str, &'a str, &'a str) {
    (kind.as_str(), id, body)
}

/// `insert_migration`: version, name, checksum, statement count, applied_at.
pub(crate) fn migration_values(
    version: i32,
    name: &str,
    checksum: i64,
    statements: usize,
    applied_at_ms: i64,
) -> (i32, &str, i64, i32, CqlTimestamp) {
    (
        version,
        name,
        checksum,
        i32::try_from(statements).unwrap_or(i32::MAX),
        CqlTimestamp(applied_at_ms),
    )
}

// ---- usage rollups and stream offsets ------------------------------------------------
//
// Rollups: one partition per (subject, granularity), clustered by window start. Every
// column is written on every upsert and none is ever null (no tombstones): a missing
// cost or currency is the empty text. Counters are `bigint` (u64 bit-for-bit, u32
// widened).

/// Bound values of `insert_meter_rollup`, in
/// [`super::statements::METER_ROLLUP_COLUMNS`] order.
pub(crate) type MeterRollupInsert = (
    String,
    &'static str,
    CqlTimestamp,
    CqlTimestamp,
    i64,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
    i64,
    f64,
    i64,
);

/// A row of `select_meter_rollups`: window_start, window_end, readings, energy, power
/// min/avg/max, voltage min/max, expected readings, completeness, revision.
pub(crate) type MeterRollupSelect = (
    CqlTimestamp,
    CqlTimestamp,
    i64,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
    i64,
    f64,
    i64,
);

/// The bound values storing `rollup`.
pub(crate) fn meter_rollup_values(rollup: &MeterRollup) -> MeterRollupInsert {
    (
        rollup.meter.as_str().to_owned(),
        rollup.granularity.as_str(),
        CqlTimestamp(rollup.window_start_ms),
        CqlTimestamp(rollup.window_end_ms),
        u64_to_bigint(rollup.readings),
        rollup.energy_wh,
        rollup.power_min_w,
        rollup.power_avg_w,
        rollup.power_max_w,
        rollup.voltage_min,
        rollup.voltage_max,
        u64_to_bigint(rollup.expected_readings),
        rollup.completeness_pct,
        i64::from(rollup.revision),
    )
}

/// A `u32` column stored widened in a `bigint`; anything else is corrupt.
fn bigint_to_u32(
    value: i64,
    column: &str,
    location: impl FnOnce() -> String,
) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| {
        corrupt(
            "rollup",
            location(),
            format!("{column} {value} is not a u32"),
        )
    })
}

/// The rollup of a `select_meter_rollups` row of `meter`'s `granularity` partition.
pub(crate) fn meter_rollup_from_select(
    meter: MeterId,
    granularity: Granularity,
    row: MeterRollupSelect,
) -> Result<MeterRollup, StoreError> {
    let (
        start,
        end,
        readings,
        energy_wh,
        power_min_w,
        power_avg_w,
        power_max_w,
        voltage_min,
        voltage_max,
        expected_readings,
        completeness_pct,
        revision,
    ) = row;
    let location = || format!("meter_rollups/{meter}/{}/{}", granularity.as_str(), start.0);
    Ok(MeterRollup {
        meter,
        granularity,
        window_start_ms: start.0,
        window_end_ms: end.0,
        readings: bigint_to_u64(readings),
        energy_wh,
        power_min_w,
        power_avg_w,
        power_max_w,
        voltage_min,
        voltage_max,
        expected_readings: bigint_to_u64(expected_readings),
        completeness_pct,
        revision: bigint_to_u32(revision, "revision", location)?,
    })
}

/// Bound values of `insert_user_rollup`, in [`super::statements::USER_ROLLUP_COLUMNS`]
/// order.
pub(crate) type UserRollupInsert = (
    String,
    &'static str,
    CqlTimestamp,
    CqlTimestamp,
    i64,
    i64,
    f64,
    String,
    String,
    i64,
);

/// A row of `select_user_rollups`: window_start, window_end, meters, readings, energy,
/// cost, currency, revision (cost and currency read as optional: null and empty are
/// both "none").
pub(crate) type UserRollupSelect = (
    CqlTimestamp,
    CqlTimestamp,
    i64,
    i64,
    f64,
    Option<String>,
    Option<String>,
    i64,
);

/// The bound values storing `rollup` (whose currency, if any, is not empty:
/// [`crate::model::check_user_rollup`]).
pub(crate) fn user_rollup_values(rollup: &UserRollup) -> UserRollupInsert {
    (
        rollup.user.as_str().to_owned(),
        rollup.granularity.as_str(),
        CqlTimestamp(rollup.window_start_ms),
        CqlTimestamp(rollup.window_end_ms),
        i64::from(rollup.meters),
        u64_to_bigint(rollup.readings),
        rollup.energy_wh,
        rollup.cost.map(|cost| cost.to_string()).unwrap_or_default(),
        rollup.currency.clone().unwrap_or_default(),
        i64::from(rollup.revision),
    )
}

/// The rollup of a `select_user_rollups` row of `user`'s `granularity` partition.
pub(crate) fn user_rollup_from_select(
    user: UserId,
    granularity: Granularity,
    row: UserRollupSelect,
) -> Result<UserRollup, StoreError> {
    let (start, end, meters, readings, energy_wh, cost, currency, revision) = row;
    let location = || format!("user_rollups/{user}/{}/{}", granularity.as_str(), start.0);
    let cost =
        match cost.filter(|text| !text.is_empty()) {
            None => None,
            Some(text) => Some(Amount::parse(&text).map_err(|error| {
                corrupt("rollup", location(), format!("cost `{text}`: {error}"))
            })?),
        };
    Ok(UserRollup {
        user,
        granularity,
        window_start_ms: start.0,
        window_end_ms: end.0,
        meters: bigint_to_u32(meters, "meters", location)?,
        readings: bigint_to_u64(readings),
        energy_wh,
        cost,
        currency: currency.filter(|text| !text.is_empty()),
        revision: bigint_to_u32(revision, "revision", location)?,
    })
}

/// Cuts `items` into unlogged-batch-sized groups of one partition key each (at most
/// `max_rows` rows, partitions and rows in key order), keeping the last item of each
/// (partition, clustering) key: a batch applies all its rows with one timestamp, so two
/// rows of one key in a batch would not keep the later one.
pub(crate) fn partition_batches<T, P: Ord, C: Ord>(
    items: &[T],
    partition: impl Fn(&T) -> P,
    clustering: impl Fn(&T) -> C,
    max_rows: usize,
) -> Vec<Vec<&T>> {
    let mut partitions: BTreeMap<P, BTreeMap<C, &T>> = BTreeMap::new();
    for item in items {
        partitions
            .entry(partition(item))
            .or_default()
            .insert(clustering(item), item);
    }
    let mut batches = Vec::new();
    for rows in partitions.into_values() {
        let rows: Vec<&T> = rows.into_values().collect();
        batches.extend(rows.chunks(max_rows.max(1)).map(<[&T]>::to_vec));
    }
    batches
}

// ---- audit log -------------------------------------------------------------------------

/// The one `audit_days` partition.
pub(crate) const AUDIT_DAYS_SCOPE: i32 = 0;

/// An audit seq in `bigint`, order kept: the top bit flipped, so signed order is u64
/// order (entries of one millisecond sort by seq).
pub(crate) fn audit_seq_to_bigint(seq: u64) -> i64 {
    (seq ^ (1 << 63)) as i64
}

/// The inverse of [`audit_seq_to_bigint`].
pub(crate) fn audit_seq_from_bigint(value: i64) -> u64 {
    (value as u64) ^ (1 << 63)
}

/// Bound values of `insert_audit`: day, at, seq, subject, role, method, path, status,
/// detail.
pub(crate) type AuditValues = (
    i32,
    CqlTimestamp,
    i64,
    String,
    String,
    String,
    String,
    i32,
    String,
);
/// Bound values of `insert_audit_by_subject`: subject, day, at, seq, role, method, path,
/// status, detail.
pub(crate) type AuditBySubjectValues = (
    String,
    i32,
    CqlTimestamp,
    i64,
    String,
    String,
    String,
    i32,
    String,
);
/// A row of the audit selects: at, seq, subject, role, method, path, status, detail.
pub(crate) type AuditSelect = (
    CqlTimestamp,
    i64,
    String,
    String,
    String,
    String,
    i32,
    String,
);

/// The `audit_log` row of `entry`.
pub(crate) fn audit_values(entry: &AuditEntry) -> AuditValues {
    (
        day_bucket(entry.at_ms),
        CqlTimestamp(entry.at_ms),
        audit_seq_to_bigint(entry.seq),
        entry.subject.clone(),
        entry.role.clone(),
        entry.method.clone(),
        entry.path.clone(),
        i32::from(entry.status),
        entry.detail.clone().unwrap_or_default(),
    )
}

/// The `audit_by_subject` row of `entry`.
pub(crate) fn audit_by_subject_values(entry: &AuditEntry) -> AuditBySubjectValues {
    let (day, at, seq, subject, role, method, path, status, detail) = audit_values(entry);
    (subject, day, at, seq, role, method, path, status, detail)
}

/// The entry of an audit row read from `table`.
pub(crate) fn audit_from_select(row: AuditSelect, table: &str) -> Result<AuditEntry, StoreError> {
    let (at, seq, subject, role, method, path, status, detail) = row;
    let status = u16::try_from(status).map_err(|_| {
        corrupt(
            "audit entry",
            format!("{table} at {}", at.0),
            format!("status {status} out of range"),
        )
    })?;
    Ok(AuditEntry {
        at_ms: at.0,
        seq: audit_seq_from_bigint(seq),
        subject,
        role,
        method,
        path,
        status,
        detail: (!detail.is_empty()).then_some(detail),
    })
}

/// `select_audit_before`: day, `at <` this, LIMIT.
pub(crate) fn audit_before_values(day: i32, at_ms: i64, limit: usize) -> (i32, CqlTimestamp, i32) {
    (
        day,
        CqlTimestamp(at_ms),
        i32::try_from(limit).unwrap_or(i32::MAX),
    )
}

/// `select_audit_same_at`: day, `at =` this, `seq <` this, LIMIT.
pub(crate) fn audit_same_at_values(
    day: i32,
    (at_ms, seq): (i64, u64),
    limit: usize,
) -> (i32, CqlTimestamp, i64, i32) {
    (
        day,
        CqlTimestamp(at_ms),
        audit_seq_to_bigint(seq),
        i32::try_from(limit).unwrap_or(i32::MAX),
    )
}

/// `select_meter_rollups` and `select_user_rollups`: subject, granularity, from, to,
/// LIMIT (clamped to CQL's `int`).
pub(crate) fn rollup_range_values(
    subject: &str,
    granularity: Granularity,
    from_ms: i64,
    to_ms: i64,
    limit: usize,
) -> (&str, &'static str, CqlTimestamp, CqlTimestamp, i32) {
    (
        subject,
        granularity.as_str(),
        CqlTimestamp(from_ms),
        CqlTimestamp(to_ms),
        i32::try_from(limit).unwrap_or(i32::MAX),
    )
}

/// Bound values of `insert_stream_offset`: job, log_partition, log_offset.
pub(crate) fn stream_offset_values(job: &str, partition: u32, offset: u64) -> (String, i64, i64) {
    (job.to_owned(), i64::from(partition), u64_to_bigint(offset))
}

/// A `select_stream_offsets` row (log_partition, log_offset) of `job`.
pub(crate) fn stream_offset_from_select(
    job: &str,
    (partition, offset): (i64, i64),
) -> Result<(u32, u64), StoreError> {
    let partition = u32::try_from(partition).map_err(|_| {
        corrupt(
            "stream offset",
            format!("stream_offsets/{job}"),
            format!("log_partition {partition} is not a partition number"),
        )
    })?;
    Ok((partition, bigint_to_u64(offset)))
}

#[cfg(test)]
mod tests {
    use gridpulse_domain::money::MAX_AMOUNT_MICRO_UNITS;
    use gridpulse_domain::{AlertKind, Severity, alert_id};
    use proptest::prelude::*;

    use super::*;

    /// 2025-02-19 22:00 UTC: two hours before midnight.
    const T0: i64 = 1_740_002_400_000;

    fn meter(id: &str) -> MeterId {
        MeterId::new(id).unwrap()
    }

    fn reading(meter: MeterId, ts_ms: i64) -> Reading {
        Reading {
            meter,
            ts_ms,
            voltage: 230.0,
            current: 1.0,
            power_w: 230.0,
            energy_wh: ts_ms as f64,
            credit: None,
            seq: None,
            backfill: false,
        }
    }

    fn alert(meter: MeterId, first_seen_ms: i64, state: AlertState) -> AlertRecord {
        AlertRecord {
            id: alert_id(&meter, AlertKind::OverVoltage, first_seen_ms),
            meter,
            kind: AlertKind::OverVoltage,
            severity: Severity::Critical,
            state,
            first_seen_ms,
            last_seen_ms: first_seen_ms + 10_000,
            count: 3,
            value: 262.0,
            threshold: 253.0,
            acknowledged_by: None,
            acknowledged_at_ms: None,
            resolved_by: None,
            resolved_at_ms: None,
            assignee: None,
            snoozed_until_ms: None,
            comments: 0,
            reminders: 0,
            last_reminder_ms: None,
            group: None,
        }
    }

    #[test]
    fn day_ranges_split_a_range_at_utc_midnight() {
        let midnight = T0 + 2 * 3_600_000;
        assert_eq!(midnight % DAY_MS, 0);
        let day = day_bucket(T0);
        assert_eq!(
            day_ranges(T0, T0 + 6 * 3_600_000),
            vec![
                DayRange {
                    day,
                    from_ms: T0,
                    to_ms: midnight
                },
                DayRange {
                    day: day + 1,
                    from_ms: midnight,
                    to_ms: T0 + 6 * 3_600_000
                },
            ]
        );
        // Exactly one day, aligned: one partition; one millisecond either side: two.
        assert_eq!(day_ranges(midnight, midnight + DAY_MS).len(), 1);
        assert_eq!(day_ranges(midnight - 1, midnight + 1).len(), 2);
        // A query ending exactly at midnight does not touch the next day.
        assert_eq!(
            day_ranges(T0, midnight),
            vec![DayRange {
                day,
                from_ms: T0,
                to_ms: midnight
            }]
        );
    }

    #[test]
    fn day_ranges_handle_negative_timestamps_and_empty_ranges() {
        assert_eq!(
            day_ranges(-1000, 1000),
            vec![
                DayRange {
                    day: -1,
                    from_ms: -1000,
                    to_ms: 0
                },
                DayRange {
                    day: 0,
                    from_ms: 0,
                    to_ms: 1000
                },
            ]
        );
        assert_eq!(
            day_ranges(-DAY_MS - 1, -DAY_MS + 1),
            vec![
                DayRange {
                    day: -2,
                    from_ms: -DAY_MS - 1,
                    to_ms: -DAY_MS
                },
                DayRange {
                    day: -1,
                    from_ms: -DAY_MS,
                    to_ms: -DAY_MS + 1
                },
            ]
        );
        assert!(day_ranges(T0, T0).is_empty());
        assert!(day_ranges(T0, T0 - 1).is_empty());
        // The ends of time terminate (no overflow, no endless loop).
        assert_eq!(day_ranges(i64::MAX - 10, i64::MAX).len(), 1);
        assert_eq!(day_ranges(i64::MIN, i64::MIN + 10).len(), 1);
    }

    proptest! {
        #[test]
        fn day_ranges_tile_the_range_one_day_each(from in -20_000_000_000_000i64..20_000_000_000_000, len in 0i64..(400 * DAY_MS)) {
            let to = from + len;
            let ranges = day_ranges(from, to);
            if len == 0 {
                prop_assert!(ranges.is_empty());
            } else {
                prop_assert_eq!(ranges.first().unwrap().from_ms, from);
                prop_assert_eq!(ranges.last().unwrap().to_ms, to);
                prop_assert_eq!(ranges.len() as i64, i64::from(day_bucket(to - 1) - day_bucket(from)) + 1);
                for pair in ranges.windows(2) {
                    prop_assert_eq!(pair[0].to_ms, pair[1].from_ms);
                    prop_assert_eq!(pair[0].day + 1, pair[1].day);
                }
                for range in &ranges {
                    prop_assert!(range.from_ms < range.to_ms);
                    prop_assert_eq!(day_bucket(range.from_ms), range.day);
                    prop_assert_eq!(day_bucket(range.to_ms - 1), range.day);
                }
            }
        }

        #[test]
        fn readings_round_trip_through_rows(
            ts_ms in any::<i64>(),
            voltage in -1e9f64..1e9,
            current in -1e6f64..1e6,
            power_w in -1e9f64..1e9,
            energy_wh in 0f64..1e15,
            credit in proptest::option::of(-1e9f64..1e9),
            seq in proptest::option::of(any::<u64>()),
        ) {
            let original = Reading { meter: meter("site.7:m-1"), ts_ms, voltage, current, power_w, energy_wh, credit, seq, backfill: false };
            let row = ReadingRow::from_reading(&original);
            prop_assert_eq!(row.day, day_bucket(ts_ms));
            prop_assert_eq!(row.meter.as_str(), "site.7:m-1");
            prop_assert_eq!(reading_from_select(original.meter, row.select_row()), original);
            let values = row.insert_values();
            // Absent optional values are unset, never null (no tombstones).
            prop_assert_eq!(matches!(values.7, MaybeUnset::Unset), credit.is_none());
            prop_assert_eq!(matches!(values.8, MaybeUnset::Unset), seq.is_none());
            prop_assert_eq!(values.2, CqlTimestamp(ts_ms));
        }

        #[test]
        fn snapshots_round_trip_through_rows(
            partition in any::<u32>(),
            applied_offset in proptest::option::of(any::<u64>()),
            state in proptest::collection::vec(any::<u8>(), 0..64),
            written_at_ms in any::<i64>(),
        ) {
            let snapshot = SnapshotRow { meter: meter("m-1"), partition, applied_offset, state, written_at_ms };
            let (key, log_partition, offset, state, written_at) = snapshot_values(&snapshot);
            prop_assert_eq!(key.as_str(), "m-1");
            let back = snapshot_from_select(snapshot.meter, (log_partition, offset, Some(state), written_at)).unwrap();
            prop_assert_eq!(back, snapshot);
        }

        #[test]
        fn checkpoints_and_sequence_numbers_keep_every_u64(value in any::<u64>(), partition in any::<u32>()) {
            let (stored_partition, stored_offset) = checkpoint_values(partition, value);
            prop_assert_eq!(u32::try_from(stored_partition).ok(), Some(partition));
            prop_assert_eq!(bigint_to_u64(stored_offset), value);
        }

        #[test]
        fn alerts_and_history_round_trip_through_rows(
            meter_id in "[A-Za-z0-9_.:-]{1,40}",
            kind in 0usize..6,
            state in 0usize..3,
            first_seen_ms in -10_000_000_000_000i64..10_000_000_000_000,
            count in any::<u64>(),
            // Measured values: serde_json's default float parser is exact for these but
            // may be 1 ulp off for 17-significant-digit values (see the module docs).
            centi_value in -100_000_000_000i64..100_000_000_000,
            acknowledged_by in proptest::option::of("[a-z]{0,8}"),
            at_offset in 0i64..1_000_000,
            event in 0usize..4,
        ) {
            let meter = meter(&meter_id);
            let kind = AlertKind::ALL[kind];
            let state = [AlertState::Firing, AlertState::Acknowledged, AlertState::Resolved][state];
            let record = AlertRecord {
                id: alert_id(&meter, kind, first_seen_ms),
                meter,
                kind,
                severity: kind.default_severity(),
                state,
                first_seen_ms,
                last_seen_ms: first_seen_ms + at_offset,
                count,
                value: centi_value as f64 / 100.0,
                threshold: 253.0,
                acknowledged_at_ms: acknowledged_by.as_ref().map(|_| first_seen_ms + 1),
                acknowledged_by,
                resolved_by: None,
                resolved_at_ms: None,
                assignee: None,
                snoozed_until_ms: None,
                comments: 0,
                reminders: 0,
                last_reminder_ms: None,
                group: None,
            };
            let row = AlertRow::from_alert(&record).unwrap();
            prop_assert_eq!(row.day, day_bucket(first_seen_ms));
            prop_assert_eq!(row.kind, kind.as_str());
            prop_assert_eq!(row.state, state.as_str());
            prop_assert_eq!(alert_from_body(&row.body, "alerts").unwrap(), record.clone());

            let event = [AlertEventKind::Raised, AlertEventKind::Updated, AlertEventKind::Acknowledged, AlertEventKind::Resolved][event];
            let entry = AlertHistoryEntry { event, at_ms: first_seen_ms + at_offset, by: "system".into(), alert: record, comment: None, action_seq: 0 };
            let history = HistoryRow::from_entry(&entry).unwrap();
            prop_assert_eq!(history_from_select(&history.id, history.select_row()).unwrap(), entry);
        }
    }

    #[test]
    fn snapshot_rows_with_impossible_partitions_are_corrupt() {
        let error =
            snapshot_from_select(meter("m"), (-1, None, None, CqlTimestamp(0))).unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Corrupt {
                    what: "snapshot",
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("snapshots/m"), "{error}");
        // A null state reads as empty.
        let row = snapshot_from_select(meter("m"), (1, None, None, CqlTimestamp(0))).unwrap();
        assert!(row.state.is_empty());
    }

    #[test]
    fn history_rows_with_unknown_events_wrong_ranks_or_bad_json_are_corrupt() {
        let body = serde_json::to_string(&alert(meter("m"), T0, AlertState::Firing)).unwrap();
        let row = |rank: i8, event: &str, body: &str| {
            (
                CqlTimestamp(T0),
                rank,
                event.to_owned(),
                "system".to_owned(),
                body.to_owned(),
            )
        };
        for bad in [
            row(0, "exploded", &body),
            row(3, "raised", &body),
            row(0, "raised", "{not json"),
        ] {
            let error = history_from_select("m.over_voltage.1", bad).unwrap_err();
            assert!(
                matches!(
                    error,
                    StoreError::Corrupt {
                        what: "alert history",
                        ..
                    }
                ),
                "{error}"
            );
            assert!(
                error.to_string().contains("alert_history/m.over_voltage.1"),
                "{error}"
            );
        }
        assert!(history_from_select("x", row(0, "raised", &body)).is_ok());
        assert!(matches!(
            alert_from_body("[]", "alerts/x"),
            Err(StoreError::Corrupt { what: "alert", .. })
        ));
    }

    #[test]
    fn event_names_are_the_json_names_and_ranks_follow_the_lifecycle() {
        let lifecycle = [
            AlertEventKind::Raised,
            AlertEventKind::Updated,
            AlertEventKind::Acknowledged,
            AlertEventKind::Resolved,
        ];
        for (rank, event) in lifecycle.into_iter().enumerate() {
            assert_eq!(
                serde_json::to_value(event).unwrap(),
                serde_json::json!(event_name(event))
            );
            assert_eq!(parse_event(event_name(event)), Some(event));
            assert_eq!(event_rank(event), rank as i8);
        }
        assert_eq!(parse_event("Raised"), None);
    }

    /// What `select_meter_rollups` returns for the row stored by `values`.
    fn meter_select(values: MeterRollupInsert) -> MeterRollupSelect {
        let (_, _, start, end, readings, energy, pmin, pavg, pmax, vmin, vmax, expected, pct, rev) =
            values;
        (
            start, end, readings, energy, pmin, pavg, pmax, vmin, vmax, expected, pct, rev,
        )
    }

    /// What `select_user_rollups` returns for the row stored by `values`.
    fn user_select(values: UserRollupInsert) -> UserRollupSelect {
        let (_, _, start, end, meters, readings, energy, cost, currency, revision) = values;
        (
            start,
            end,
            meters,
            readings,
            energy,
            Some(cost),
            Some(currency),
            revision,
        )
    }

    fn granularity() -> impl Strategy<Value = Granularity> {
        prop::sample::select(Granularity::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn meter_rollups_round_trip_through_rows(
            granularity in granularity(),
            window_start_ms in any::<i64>(),
            window_end_ms in any::<i64>(),
            readings in any::<u64>(),
            expected_readings in any::<u64>(),
            energy_wh in -1e15f64..1e15,
            completeness_pct in 0f64..=100.0,
            revision in any::<u32>(),
        ) {
            let rollup = MeterRollup {
                meter: meter("site.7:m-1"),
                granularity,
                window_start_ms,
                window_end_ms,
                readings,
                energy_wh,
                power_min_w: energy_wh / 3.0,
                power_avg_w: energy_wh / 7.0,
                power_max_w: energy_wh * 3.0,
                voltage_min: 0.1 + 0.2,
                voltage_max: f64::MAX,
                expected_readings,
                completeness_pct,
                revision,
            };
            let values = meter_rollup_values(&rollup);
            prop_assert_eq!(values.0.as_str(), "site.7:m-1");
            prop_assert_eq!(values.1, granularity.as_str());
            let back = meter_rollup_from_select(rollup.meter, granularity, meter_select(values)).unwrap();
            prop_assert_eq!(back, rollup);
        }

        #[test]
        fn user_rollups_round_trip_through_rows(
            granularity in granularity(),
            window_start_ms in any::<i64>(),
            meters in any::<u32>(),
            readings in any::<u64>(),
            energy_wh in 0f64..1e15,
            cost in proptest::option::of(-MAX_AMOUNT_MICRO_UNITS..=MAX_AMOUNT_MICRO_UNITS),
            currency in proptest::option::of("[A-Z]{3}"),
            revision in any::<u32>(),
        ) {
            let rollup = UserRollup {
                user: UserId::new("u-1").unwrap(),
                granularity,
                window_start_ms,
                window_end_ms: window_start_ms.wrapping_add(DAY_MS),
                meters,
                readings,
                energy_wh,
                cost: cost.map(|micro| Amount::from_micro_units(micro).unwrap()),
                currency,
                revision,
            };
            let values = user_rollup_values(&rollup);
            // Never a null: absent cost and currency are empty texts.
            prop_assert_eq!(values.7.is_empty(), rollup.cost.is_none());
            prop_assert_eq!(values.8.is_empty(), rollup.currency.is_none());
            let back = user_rollup_from_select(rollup.user, granularity, user_select(values)).unwrap();
            prop_assert_eq!(back, rollup);
        }

        #[test]
        fn stream_offsets_keep_every_u32_partition_and_u64_offset(partition in any::<u32>(), offset in any::<u64>()) {
            let (job, stored_partition, stored_offset) = stream_offset_values("rollups", partition, offset);
            prop_assert_eq!(job.as_str(), "rollups");
            prop_assert_eq!(stream_offset_from_select("rollups", (stored_partition, stored_offset)).unwrap(), (partition, offset));
        }
    }

    #[test]
    fn rollup_rows_that_do_not_fit_the_domain_are_corrupt() {
        let rollup = UserRollup {
            user: UserId::new("u-1").unwrap(),
            granularity: Granularity::Day,
            window_start_ms: T0,
            window_end_ms: T0 + DAY_MS,
            meters: 1,
            readings: 1,
            energy_wh: 1.0,
            cost: None,
            currency: None,
            revision: 0,
        };
        let row = user_select(user_rollup_values(&rollup));
        // Null cost and currency (not written by this store) read as none.
        let mut nulls = row.clone();
        (nulls.5, nulls.6) = (None, None);
        assert_eq!(
            user_rollup_from_select(rollup.user, Granularity::Day, nulls).unwrap(),
            rollup
        );
        let mut bad_cost = row.clone();
        bad_cost.5 = Some("1e3".into());
        let mut bad_meters = row.clone();
        bad_meters.2 = -1;
        let mut bad_revision = row;
        bad_revision.7 = i64::from(u32::MAX) + 1;
        for bad in [bad_cost, bad_meters, bad_revision] {
            let error = user_rollup_from_select(rollup.user, Granularity::Day, bad).unwrap_err();
            assert!(
                matches!(error, StoreError::Corrupt { what: "rollup", .. }),
                "{error}"
            );
            assert!(
                error
                    .to_string()
                    .contains(&format!("user_rollups/u-1/day/{T0}")),
                "{error}"
            );
        }
        let mut meter_row = meter_select(meter_rollup_values(&MeterRollup {
            meter: meter("m"),
            granularity: Granularity::Hour,
            window_start_ms: T0,
            window_end_ms: T0 + 3_600_000,
            readings: 1,
            energy_wh: 1.0,
            power_min_w: 1.0,
            power_avg_w: 1.0,
            power_max_w: 1.0,
            voltage_min: 230.0,
            voltage_max: 230.0,
            expected_readings: 1,
            completeness_pct: 100.0,
            revision: 0,
        }));
        meter_row.11 = -5;
        assert!(meter_rollup_from_select(meter("m"), Granularity::Hour, meter_row).is_err());
        assert!(stream_offset_from_select("j", (-1, 0)).is_err());
    }

    #[test]
    fn partition_batches_group_by_partition_and_keep_the_last_of_a_key() {
        // (partition, clustering, value)
        let mut items: Vec<(char, i64, u32)> = (0..250).map(|i| ('a', i, 0)).collect();
        items.extend((0..5).map(|i| ('b', i, 0)));
        items.push(('a', 7, 1)); // a later version of ('a', 7)
        items.insert(0, ('b', 3, 9)); // an earlier version of ('b', 3)
        let batches = partition_batches(&items, |item| item.0, |item| item.1, 100);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![100, 100, 50, 5]);
        for batch in &batches {
            assert!(batch.iter().all(|item| item.0 == batch[0].0));
            assert!(batch.windows(2).all(|pair| pair[0].1 < pair[1].1));
        }
        assert_eq!(batches[0][7], &('a', 7, 1));
        assert_eq!(batches[3][3], &('b', 3, 0));
        assert!(partition_batches(&items[..0], |item| item.0, |item| item.1, 100).is_empty());
    }

    #[test]
    fn reading_batches_hold_one_partition_and_at_most_max_rows() {
        let a = meter("a");
        let b = meter("b");
        let midnight = T0 + 2 * 3_600_000;
        // 250 readings of `a` before midnight, 30 after, 5 of `b`, interleaved.
        let mut readings: Vec<Reading> = (0..250).map(|i| reading(a, T0 + i * 1000)).collect();
        readings.extend((0..30).map(|i| reading(a, midnight + i * 1000)));
        for i in 0..5 {
            readings.insert(i * 40, reading(b, T0 + i as i64));
        }
        let batches = reading_batches(&readings, BATCH);
        const BATCH: usize = 100;
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![100, 100, 50, 30, 5]);
        for batch in &batches {
            assert!(
                batch
                    .iter()
                    .all(|row| row.meter == batch[0].meter && row.day == batch[0].day)
            );
            assert!(batch.windows(2).all(|pair| pair[0].ts_ms < pair[1].ts_ms));
        }
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), readings.len());
        assert!(reading_batches(&[], BATCH).is_empty());
    }

    #[test]
    fn reading_batches_keep_the_last_of_duplicate_keys() {
        let a = meter("a");
        let mut second = reading(a, T0);
        second.voltage = 240.0;
        let batches = reading_batches(&[reading(a, T0), reading(a, T0 + 1), second], 100);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].len(), 2);
        assert_eq!(batches[0][0].voltage, 240.0);
    }

    #[test]
    fn alert_ttl_applies_only_to_resolved_alerts() {
        assert_eq!(alert_ttl(AlertState::Firing, Some(86_400)), 0);
        assert_eq!(alert_ttl(AlertState::Acknowledged, Some(86_400)), 0);
        assert_eq!(alert_ttl(AlertState::Resolved, Some(86_400)), 86_400);
        assert_eq!(alert_ttl(AlertState::Resolved, None), 0);
    }

    #[test]
    fn alert_write_plan_keeps_the_last_state_and_every_history_entry() {
        let m = meter("m");
        let raised = alert(m, T0, AlertState::Firing);
        let mut acked = raised.clone();
        acked.state = AlertState::Acknowledged;
        acked.acknowledged_by = Some("alice".into());
        acked.acknowledged_at_ms = Some(T0 + 60_000);
        let mut resolved = acked.clone();
        resolved.state = AlertState::Resolved;
        resolved.resolved_by = Some("system".into());
        resolved.resolved_at_ms = Some(T0 + 120_000);
        let other = alert(m, T0 + 3 * 3_600_000, AlertState::Firing); // after midnight
        let entries = vec![
            AlertHistoryEntry::from_change(AlertEventKind::Raised, raised.clone()),
            AlertHistoryEntry::from_change(AlertEventKind::Raised, other.clone()),
            // A replay of the first entry in the same call: no second history row.
            AlertHistoryEntry::from_change(AlertEventKind::Raised, raised.clone()),
            AlertHistoryEntry::from_change(AlertEventKind::Acknowledged, acked),
            AlertHistoryEntry::from_change(AlertEventKind::Resolved, resolved.clone()),
        ];
        let ttl = 400 * 86_400;
        let plan = plan_alert_writes(&entries, Some(ttl), 100).unwrap();
        assert_eq!(
            plan.days,
            BTreeSet::from([day_bucket(T0), day_bucket(T0) + 1])
        );

        let last: Vec<(&str, &str, i32)> = plan
            .alerts
            .iter()
            .map(|(row, ttl)| (row.id.as_str(), row.state, *ttl))
            .collect();
        assert_eq!(
            last,
            vec![
                (raised.id.as_str(), "resolved", ttl),
                (other.id.as_str(), "firing", 0)
            ]
        );
        assert_eq!(
            alert_from_body(&plan.alerts[0].0.body, "t").unwrap(),
            resolved
        );

        assert_eq!(plan.history.len(), 2);
        let events: Vec<(&str, i64, i32)> = plan.history[0]
            .iter()
            .map(|(row, ttl)| (row.event, row.at_ms, *ttl))
            .collect();
        assert_eq!(
            events,
            vec![
                ("raised", T0, ttl),
                ("acknowledged", T0 + 60_000, ttl),
                ("resolved", T0 + 120_000, ttl)
            ]
        );
        assert_eq!(plan.history[1].len(), 1);
        assert_eq!(plan.history[1][0].1, 0);
        assert_eq!(plan.refresh, vec![(raised.id.clone(), ttl)]);

        // Without a TTL nothing expires and nothing needs rewriting.
        let plan = plan_alert_writes(&entries, None, 100).unwrap();
        assert!(plan.refresh.is_empty());
        assert!(plan.alerts.iter().all(|(_, ttl)| *ttl == 0));
    }

    fn workflow_entry(
        alert: &AlertRecord,
        event: AlertEventKind,
        at_ms: i64,
        action_seq: u32,
        comment: Option<&str>,
    ) -> AlertHistoryEntry {
        AlertHistoryEntry {
            event,
            at_ms,
            by: "dana".into(),
            alert: alert.clone(),
            comment: comment.map(str::to_owned),
            action_seq,
        }
    }

    #[test]
    fn workflow_events_go_to_their_own_table_and_merge_back_in_order() {
        let m = meter("m");
        let firing = alert(m, T0, AlertState::Firing);
        let mut acked = firing.clone();
        acked.state = AlertState::Acknowledged;
        acked.acknowledged_by = Some("alice".into());
        acked.acknowledged_at_ms = Some(T0 + 2000);
        let entries = vec![
            AlertHistoryEntry::from_change(AlertEventKind::Raised, firing.clone()),
            workflow_entry(&firing, AlertEventKind::Assigned, T0 + 1000, 1, None),
            // Two comments in one millisecond, and an acknowledgement in it too.
            workflow_entry(&firing, AlertEventKind::Commented, T0 + 2000, 2, Some("a")),
            workflow_entry(&firing, AlertEventKind::Commented, T0 + 2000, 3, Some("b")),
            AlertHistoryEntry::from_change(AlertEventKind::Acknowledged, acked.clone()),
            // Stored again (a retried write): the same row.
            workflow_entry(&firing, AlertEventKind::Commented, T0 + 2000, 3, Some("b")),
        ];
        let plan = plan_alert_writes(&entries, None, 100).unwrap();
        let lifecycle: Vec<&str> = plan.history[0].iter().map(|(row, _)| row.event).collect();
        assert_eq!(lifecycle, ["raised", "acknowledged"]);
        assert_eq!(plan.workflow.len(), 1);
        let workflow: Vec<(&str, u32, &str)> = plan.workflow[0]
            .iter()
            .map(|(row, _)| (row.event, row.action_seq, row.comment.as_str()))
            .collect();
        assert_eq!(
            workflow,
            [
                ("assigned", 1, ""),
                ("commented", 2, "a"),
                ("commented", 3, "b")
            ]
        );
        // What the two tables return, merged: by time, the millisecond's lifecycle
        // change first, then its workflow events in their order.
        let mut read_back = Vec::new();
        for (row, _) in plan.workflow[0].iter().rev() {
            read_back.push(workflow_from_select("m", row.workflow_select_row()).unwrap());
        }
        for (row, _) in &plan.history[0] {
            read_back.push(history_from_select("m", row.select_row()).unwrap());
        }
        let merged = merge_history(read_back);
        let expected: Vec<AlertHistoryEntry> = [0, 1, 4, 2, 3]
            .iter()
            .map(|&index| entries[index].clone())
            .collect();
        assert_eq!(merged, expected);
        assert_eq!(merged[3].comment.as_deref(), Some("a"));

        // Rows that cannot be a workflow event, or an empty comment, are refused.
        let bad = ("raised".to_owned(), CqlTimestamp(T0));
        let body = serde_json::to_string(&firing).unwrap();
        let row = (bad.1, 1, bad.0, "x".to_owned(), String::new(), body.clone());
        assert!(workflow_from_select("m", row).is_err());
        let row = (
            CqlTimestamp(T0),
            -1,
            "commented".into(),
            "x".into(),
            "c".into(),
            body,
        );
        assert!(workflow_from_select("m", row).is_err());
        let empty = workflow_entry(&firing, AlertEventKind::Commented, T0, 9, Some(""));
        assert!(matches!(
            plan_alert_writes(&[empty], None, 100),
            Err(StoreError::BadRequest {
                field: "comment",
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn audit_entries_round_trip_and_seqs_keep_their_order(
            at_ms in any::<i64>(),
            seq in any::<u64>(),
            other_seq in any::<u64>(),
            status in any::<u16>(),
            detail in proptest::option::of("[a-z ]{1,20}"),
        ) {
            let entry = AuditEntry {
                at_ms,
                seq,
                subject: "ops-1".into(),
                role: "ops".into(),
                method: "POST".into(),
                path: "/api/x".into(),
                status,
                detail,
            };
            let (day, at, stored_seq, subject, role, method, path, status, detail) =
                audit_values(&entry);
            prop_assert_eq!(day, day_bucket(at_ms));
            let back = audit_from_select((at, stored_seq, subject, role, method, path, status, detail), "audit_log").unwrap();
            prop_assert_eq!(back, entry);
            prop_assert_eq!(
                audit_seq_to_bigint(seq).cmp(&audit_seq_to_bigint(other_seq)),
                seq.cmp(&other_seq)
            );
            let by_subject = audit_by_subject_values(&AuditEntry { at_ms, seq, subject: "s".into(), role: String::new(), method: "GET".into(), path: "/".into(), status: 1, detail: None });
            prop_assert_eq!((by_subject.0.as_str(), by_subject.1), ("s", day));
        }
    }

    #[test]
    fn audit_rows_with_impossible_statuses_are_corrupt() {
        let row = (
            CqlTimestamp(1),
            0,
            "s".to_owned(),
            String::new(),
            "GET".to_owned(),
            "/".to_owned(),
            70_000,
            String::new(),
        );
        assert!(matches!(
            audit_from_select(row, "audit_log"),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn alert_write_plan_cuts_long_histories_into_bounded_batches() {
        let m = meter("m");
        let firing = alert(m, T0, AlertState::Firing);
        let entries: Vec<AlertHistoryEntry> = (0..250)
            .map(|i| {
                let mut updated = firing.clone();
                updated.last_seen_ms = T0 + i;
                AlertHistoryEntry::from_change(AlertEventKind::Updated, updated)
            })
            .collect();
        let plan = plan_alert_writes(&entries, None, 100).unwrap();
        let sizes: Vec<usize> = plan.history.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        assert_eq!(plan.alerts.len(), 1);
        assert_eq!(
            alert_from_body(&plan.alerts[0].0.body, "t")
                .unwrap()
                .last_seen_ms,
            T0 + 249
        );
    }

    #[test]
    fn last_per_key_keeps_the_last_item_of_each_key() {
        let kept = last_per_key([(1, 'a'), (2, 'b'), (1, 'c')], |item| item.0);
        assert_eq!(kept, vec![(1, 'c'), (2, 'b')]);
    }

    #[test]
    fn bound_key_values_clamp_to_cql_int() {
        let range = DayRange {
            day: 3,
            from_ms: 1,
            to_ms: 2,
        };
        assert_eq!(reading_range_values("m", range, usize::MAX).4, i32::MAX);
        assert_eq!(reading_range_values("m", range, 8).4, 8);
        assert_eq!(alert_day_values(7), (ALERT_DAYS_SCOPE, 7));
    }
}
