//! The CQL text of every statement the store prepares, built from the configuration
//! (keyspace, TTLs) by pure functions so tests can check each one without a server.
//!
//! Statements name their table with the keyspace (`"gridpulse".readings`), bind every
//! partition key column (token-aware routing needs the key as bound values) and never
//! use `ALLOW FILTERING`: each read is one partition, or a range of one partition.
//! [`TABLE_KEYS`] is the primary key of each table as the store relies on it; a test
//! checks it against the CQL files, another checks every statement against it.

use super::config::ScyllaConfig;

/// The primary key of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableKey {
    /// Table name.
    pub table: &'static str,
    /// Partition key columns, in order.
    pub partition: &'static [&'static str],
    /// Clustering columns, in order.
    pub clustering: &'static [&'static str],
}

/// Raw readings, by (meter, day) then time.
pub(crate) const READINGS: TableKey = TableKey {
    table: "readings",
    partition: &["meter", "day"],
    clustering: &["ts"],
};
/// Meter snapshots.
pub(crate) const SNAPSHOTS: TableKey = TableKey {
    table: "snapshots",
    partition: &["meter"],
    clustering: &[],
};
/// Log checkpoints.
pub(crate) const CHECKPOINTS: TableKey = TableKey {
    table: "checkpoints",
    partition: &["log_partition"],
    clustering: &[],
};
/// Alerts by id.
pub(crate) const ALERTS: TableKey = TableKey {
    table: "alerts",
    partition: &["id"],
    clustering: &[],
};
/// Alerts of one meter, newest first.
pub(crate) const ALERTS_BY_METER: TableKey = TableKey {
    table: "alerts_by_meter",
    partition: &["meter"],
    clustering: &["first_seen", "id"],
};
/// Alerts of one day, newest first.
pub(crate) const ALERTS_BY_DAY: TableKey = TableKey {
    table: "alerts_by_day",
    partition: &["day"],
    clustering: &["first_seen", "id"],
};
/// The days that have alerts.
pub(crate) const ALERT_DAYS: TableKey = TableKey {
    table: "alert_days",
    partition: &["scope"],
    clustering: &["day"],
};
/// Alert lifecycle history.
pub(crate) const ALERT_HISTORY: TableKey = TableKey {
    table: "alert_history",
    partition: &["id"],
    clustering: &["at", "event_rank"],
};
/// Alert workflow events (assign, comment, snooze, reminder).
pub(crate) const ALERT_WORKFLOW: TableKey = TableKey {
    table: "alert_workflow",
    partition: &["id"],
    clustering: &["at", "action_seq"],
};
/// Configuration documents.
pub(crate) const CONFIG: TableKey = TableKey {
    table: "config",
    partition: &["kind"],
    clustering: &["id"],
};
/// Usage rollups of one meter and granularity, by window start.
pub(crate) const METER_ROLLUPS: TableKey = TableKey {
    table: "meter_rollups",
    partition: &["meter", "granularity"],
    clustering: &["window_start"],
};
/// Usage rollups of one user and granularity, by window start.
pub(crate) const USER_ROLLUPS: TableKey = TableKey {
    table: "user_rollups",
    partition: &["user_id", "granularity"],
    clustering: &["window_start"],
};
/// Stream job positions, by job then log partition.
pub(crate) const STREAM_OFFSETS: TableKey = TableKey {
    table: "stream_offsets",
    partition: &["job"],
    clustering: &["log_partition"],
};
/// Audit log entries of one day, newest first.
pub(crate) const AUDIT_LOG: TableKey = TableKey {
    table: "audit_log",
    partition: &["day"],
    clustering: &["at", "seq"],
};
/// The days that have audit entries.
pub(crate) const AUDIT_DAYS: TableKey = TableKey {
    table: "audit_days",
    partition: &["scope"],
    clustering: &["day"],
};
/// Audit entries of one subject and day, newest first.
pub(crate) const AUDIT_BY_SUBJECT: TableKey = TableKey {
    table: "audit_by_subject",
    partition: &["subject", "day"],
    clustering: &["at", "seq"],
};
/// The days that have audit entries of one subject.
pub(crate) const AUDIT_SUBJECT_DAYS: TableKey = TableKey {
    table: "audit_subject_days",
    partition: &["subject"],
    clustering: &["day"],
};
/// Applied schema migrations (created by `migrate` itself, not by a CQL file).
pub(crate) const SCHEMA_MIGRATIONS: TableKey = TableKey {
    table: "schema_migrations",
    partition: &["version"],
    clustering: &[],
};

/// Every table defined by the CQL files.
#[cfg(test)]
pub(crate) const TABLE_KEYS: [TableKey; 17] = [
    READINGS,
    SNAPSHOTS,
    CHECKPOINTS,
    ALERTS,
    ALERTS_BY_METER,
    ALERTS_BY_DAY,
    ALERT_DAYS,
    ALERT_HISTORY,
    ALERT_WORKFLOW,
    CONFIG,
    METER_ROLLUPS,
    USER_ROLLUPS,
    STREAM_OFFSETS,
    AUDIT_LOG,
    AUDIT_DAYS,
    AUDIT_BY_SUBJECT,
    AUDIT_SUBJECT_DAYS,
];

/// The text of every prepared statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatementTexts {
    pub insert_reading: String,
    pub select_readings: String,
    pub insert_snapshot: String,
    pub select_snapshot: String,
    pub insert_checkpoint: String,
    pub select_checkpoint: String,
    pub insert_alert: String,
    pub insert_alert_by_meter: String,
    pub insert_alert_by_day: String,
    pub insert_alert_day: String,
    pub insert_alert_history: String,
    pub insert_alert_workflow: String,
    pub select_alert: String,
    pub select_alert_history: String,
    pub select_alert_workflow: String,
    pub select_alerts_by_meter: String,
    pub select_alerts_by_meter_since: String,
    pub select_alert_days: String,
    pub select_alert_days_since: String,
    pub select_alerts_by_day: String,
    pub select_alerts_by_day_since: String,
    pub insert_config: String,
    pub select_config: String,
    pub delete_config: String,
    pub list_config: String,
    pub insert_meter_rollup: String,
    pub select_meter_rollups: String,
    pub insert_user_rollup: String,
    pub select_user_rollups: String,
    pub insert_stream_offset: String,
    pub select_stream_offsets: String,
    pub insert_audit: String,
    pub insert_audit_day: String,
    pub insert_audit_by_subject: String,
    pub insert_audit_subject_day: String,
    pub select_audit_days: String,
    pub select_audit_subject_days: String,
    pub select_audit_before: String,
    pub select_audit_same_at: String,
    pub select_audit_by_subject_before: String,
    pub select_audit_by_subject_same_at: String,
    pub select_migrations: String,
    pub insert_migration: String,
}

/// `"keyspace".table` (the keyspace is a checked lowercase identifier, so quoting it
/// changes nothing but makes a keyword-like name safe).
pub(crate) fn qualified(keyspace: &str, table: &TableKey) -> String {
    format!("\"{keyspace}\".{}", table.table)
}

fn insert(keyspace: &str, table: &TableKey, columns: &[&str], using: &str) -> String {
    let markers = vec!["?"; columns.len()].join(", ");
    format!(
        "INSERT INTO {} ({}) VALUES ({markers}){using}",
        qualified(keyspace, table),
        columns.join(", ")
    )
}

fn select(keyspace: &str, table: &TableKey, columns: &[&str], condition: &str) -> String {
    format!(
        "SELECT {} FROM {} WHERE {condition}",
        columns.join(", "),
        qualified(keyspace, table)
    )
}

/// Columns of an alert row (alerts table), in bind order.
pub(crate) const ALERT_COLUMNS: [&str; 6] = ["id", "meter", "kind", "state", "first_seen", "body"];
/// Columns of an alerts_by_meter row, in bind order.
pub(crate) const ALERT_BY_METER_COLUMNS: [&str; 6] =
    ["meter", "first_seen", "id", "kind", "state", "body"];
/// Columns of an alerts_by_day row, in bind order.
pub(crate) const ALERT_BY_DAY_COLUMNS: [&str; 7] =
    ["day", "first_seen", "id", "meter", "kind", "state", "body"];
/// Columns of an alert_history row, in bind order.
pub(crate) const HISTORY_COLUMNS: [&str; 6] = ["id", "at", "event_rank", "event", "actor", "body"];
/// Columns of an alert_workflow row, in bind order.
pub(crate) const WORKFLOW_COLUMNS: [&str; 7] = [
    "id",
    "at",
    "action_seq",
    "event",
    "actor",
    "comment",
    "body",
];
/// Columns of a readings row, in bind order.
pub(crate) const READING_COLUMNS: [&str; 9] = [
    "meter",
    "day",
    "ts",
    "voltage_v",
    "current_a",
    "power_w",
    "energy_wh",
    "credit",
    "seq",
];

/// Columns of a meter_rollups row, in bind order.
pub(crate) const METER_ROLLUP_COLUMNS: [&str; 14] = [
    "meter",
    "granularity",
    "window_start",
    "window_end",
    "readings",
    "energy_wh",
    "power_min_w",
    "power_avg_w",
    "power_max_w",
    "voltage_min_v",
    "voltage_max_v",
    "expected_readings",
    "completeness_pct",
    "revision",
];
/// Columns of a user_rollups row, in bind order.
pub(crate) const USER_ROLLUP_COLUMNS: [&str; 10] = [
    "user_id",
    "granularity",
    "window_start",
    "window_end",
    "meters",
    "readings",
    "energy_wh",
    "cost",
    "currency",
    "revision",
];
/// Columns of an audit_log row, in bind order.
pub(crate) const AUDIT_COLUMNS: [&str; 9] = [
    "day", "at", "seq", "subject", "role", "method", "path", "status", "detail",
];
/// Columns of an audit_by_subject row, in bind order.
pub(crate) const AUDIT_BY_SUBJECT_COLUMNS: [&str; 9] = [
    "subject", "day", "at", "seq", "role", "method", "path", "status", "detail",
];
/// What an audit read selects (both tables).
pub(crate) const AUDIT_SELECT_COLUMNS: [&str; 8] = [
    "at", "seq", "subject", "role", "method", "path", "status", "detail",
];
/// One rollup partition, a range of window starts, a page bound.
const ROLLUP_RANGE: &str = "AND granularity = ? AND window_start >= ? AND window_start < ? LIMIT ?";

/// The statement that creates `schema_migrations` (run by `migrate` before any file).
pub(crate) fn create_migrations_table(keyspace: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (version int, name text, checksum bigint, \
         statements int, applied_at timestamp, PRIMARY KEY ((version)))",
        qualified(keyspace, &SCHEMA_MIGRATIONS)
    )
}

/// The statement that creates the keyspace when it is missing.
///
/// `NetworkTopologyStrategy` with a plain `replication_factor` places that many replicas
/// in every datacenter (and works on a single-node, single-DC cluster with factor 1).
pub(crate) fn create_keyspace(keyspace: &str, replication_factor: u32) -> String {
    format!(
        "CREATE KEYSPACE IF NOT EXISTS \"{keyspace}\" WITH replication = \
         {{'class': 'NetworkTopologyStrategy', 'replication_factor': {replication_factor}}}"
    )
}

impl StatementTexts {
    /// Every statement for `config` (keyspace, readings TTL).
    pub(crate) fn new(config: &ScyllaConfig) -> StatementTexts {
        let ks = config.keyspace.as_str();
        let readings_ttl = match config.readings_ttl_seconds() {
            Some(seconds) => format!(" USING TTL {seconds}"),
            None => String::new(),
        };
        let alert_ttl = " USING TTL ?";
        StatementTexts {
            insert_reading: insert(ks, &READINGS, &READING_COLUMNS, &readings_ttl),
            select_readings: select(
                ks,
                &READINGS,
                &READING_COLUMNS[2..],
                "meter = ? AND day = ? AND ts >= ? AND ts < ? LIMIT ?",
            ),
            insert_snapshot: insert(
                ks,
                &SNAPSHOTS,
                &[
                    "meter",
                    "log_partition",
                    "applied_offset",
                    "state",
                    "written_at",
                ],
                "",
            ),
            select_snapshot: select(
                ks,
                &SNAPSHOTS,
                &["log_partition", "applied_offset", "state", "written_at"],
                "meter = ?",
            ),
            insert_checkpoint: insert(ks, &CHECKPOINTS, &["log_partition", "log_offset"], ""),
            select_checkpoint: select(ks, &CHECKPOINTS, &["log_offset"], "log_partition = ?"),
            insert_alert: insert(ks, &ALERTS, &ALERT_COLUMNS, alert_ttl),
            insert_alert_by_meter: insert(ks, &ALERTS_BY_METER, &ALERT_BY_METER_COLUMNS, alert_ttl),
            insert_alert_by_day: insert(ks, &ALERTS_BY_DAY, &ALERT_BY_DAY_COLUMNS, alert_ttl),
            insert_alert_day: insert(ks, &ALERT_DAYS, &["scope", "day"], ""),
            insert_alert_history: insert(ks, &ALERT_HISTORY, &HISTORY_COLUMNS, alert_ttl),
            insert_alert_workflow: insert(ks, &ALERT_WORKFLOW, &WORKFLOW_COLUMNS, alert_ttl),
            select_alert: select(ks, &ALERTS, &["body"], "id = ?"),
            select_alert_history: select(ks, &ALERT_HISTORY, &HISTORY_COLUMNS[1..], "id = ?"),
            select_alert_workflow: select(ks, &ALERT_WORKFLOW, &WORKFLOW_COLUMNS[1..], "id = ?"),
            select_alerts_by_meter: select(ks, &ALERTS_BY_METER, &["body"], "meter = ?"),
            select_alerts_by_meter_since: select(
                ks,
                &ALERTS_BY_METER,
                &["body"],
                "meter = ? AND first_seen >= ?",
            ),
            select_alert_days: select(ks, &ALERT_DAYS, &["day"], "scope = ?"),
            select_alert_days_since: select(ks, &ALERT_DAYS, &["day"], "scope = ? AND day >= ?"),
            select_alerts_by_day: select(ks, &ALERTS_BY_DAY, &["body"], "day = ?"),
            select_alerts_by_day_since: select(
                ks,
                &ALERTS_BY_DAY,
                &["body"],
                "day = ? AND first_seen >= ?",
            ),
            insert_config: insert(ks, &CONFIG, &["kind", "id", "body"], ""),
            select_config: select(ks, &CONFIG, &["body"], "kind = ? AND id = ?"),
            delete_config: format!(
                "DELETE FROM {} WHERE kind = ? AND id = ?",
                qualified(ks, &CONFIG)
            ),
            list_config: select(ks, &CONFIG, &["id", "body"], "kind = ?"),
            // Rollups are kept forever (small; no TTL), like stream offsets.
            insert_meter_rollup: insert(ks, &METER_ROLLUPS, &METER_ROLLUP_COLUMNS, ""),
            select_meter_rollups: select(
                ks,
                &METER_ROLLUPS,
                &METER_ROLLUP_COLUMNS[2..],
                &format!("meter = ? {ROLLUP_RANGE}"),
            ),
            insert_user_rollup: insert(ks, &USER_ROLLUPS, &USER_ROLLUP_COLUMNS, ""),
            select_user_rollups: select(
                ks,
                &USER_ROLLUPS,
                &USER_ROLLUP_COLUMNS[2..],
                &format!("user_id = ? {ROLLUP_RANGE}"),
            ),
            insert_stream_offset: insert(
                ks,
                &STREAM_OFFSETS,
                &["job", "log_partition", "log_offset"],
                "",
            ),
            select_stream_offsets: select(
                ks,
                &STREAM_OFFSETS,
                &["log_partition", "log_offset"],
                "job = ?",
            ),
            // The audit log is kept forever: no TTL.
            insert_audit: insert(ks, &AUDIT_LOG, &AUDIT_COLUMNS, ""),
            insert_audit_day: insert(ks, &AUDIT_DAYS, &["scope", "day"], ""),
            insert_audit_by_subject: insert(ks, &AUDIT_BY_SUBJECT, &AUDIT_BY_SUBJECT_COLUMNS, ""),
            insert_audit_subject_day: insert(ks, &AUDIT_SUBJECT_DAYS, &["subject", "day"], ""),
            select_audit_days: select(ks, &AUDIT_DAYS, &["day"], "scope = ? AND day <= ?"),
            select_audit_subject_days: select(
                ks,
                &AUDIT_SUBJECT_DAYS,
                &["day"],
                "subject = ? AND day <= ?",
            ),
            select_audit_before: select(
                ks,
                &AUDIT_LOG,
                &AUDIT_SELECT_COLUMNS,
                "day = ? AND at < ? LIMIT ?",
            ),
            select_audit_same_at: select(
                ks,
                &AUDIT_LOG,
                &AUDIT_SELECT_COLUMNS,
                "day = ? AND at = ? AND seq < ? LIMIT ?",
            ),
            select_audit_by_subject_before: select(
                ks,
                &AUDIT_BY_SUBJECT,
                &AUDIT_SELECT_COLUMNS,
                "subject = ? AND day = ? AND at < ? LIMIT ?",
            ),
            select_audit_by_subject_same_at: select(
                ks,
                &AUDIT_BY_SUBJECT,
                &AUDIT_SELECT_COLUMNS,
                "subject = ? AND day = ? AND at = ? AND seq < ? LIMIT ?",
            ),
            // The whole (tiny) table: the only statement without a partition key.
            select_migrations: format!(
                "SELECT version, name, checksum FROM {}",
                qualified(ks, &SCHEMA_MIGRATIONS)
            ),
            insert_migration: insert(
                ks,
                &SCHEMA_MIGRATIONS,
                &["version", "name", "checksum", "statements", "applied_at"],
                "",
            ),
        }
    }

    /// Every statement with the table it addresses.
    #[cfg(test)]
    pub(crate) fn all(&self) -> Vec<(&'static str, &TableKey, &str)> {
        vec![
            ("insert_reading", &READINGS, &self.insert_reading),
            ("select_readings", &READINGS, &self.select_readings),
            ("insert_snapshot", &SNAPSHOTS, &self.insert_snapshot),
            ("select_snapshot", &SNAPSHOTS, &self.select_snapshot),
            ("insert_checkpoint", &CHECKPOINTS, &self.insert_checkpoint),
            ("select_checkpoint", &CHECKPOINTS, &self.select_checkpoint),
            ("insert_alert", &ALERTS, &self.insert_alert),
            (
                "insert_alert_by_meter",
                &ALERTS_BY_METER,
                &self.insert_alert_by_meter,
            ),
            (
                "insert_alert_by_day",
                &ALERTS_BY_DAY,
                &self.insert_alert_by_day,
            ),
            ("insert_alert_day", &ALERT_DAYS, &self.insert_alert_day),
            (
                "insert_alert_history",
                &ALERT_HISTORY,
                &self.insert_alert_history,
            ),
            (
                "insert_alert_workflow",
                &ALERT_WORKFLOW,
                &self.insert_alert_workflow,
            ),
            ("select_alert", &ALERTS, &self.select_alert),
            (
                "select_alert_history",
                &ALERT_HISTORY,
                &self.select_alert_history,
            ),
            (
                "select_alert_workflow",
                &ALERT_WORKFLOW,
                &self.select_alert_workflow,
            ),
            (
                "select_alerts_by_meter",
                &ALERTS_BY_METER,
                &self.select_alerts_by_meter,
            ),
            (
                "select_alerts_by_meter_since",
                &ALERTS_BY_METER,
                &self.select_alerts_by_meter_since,
            ),
            ("select_alert_days", &ALERT_DAYS, &self.select_alert_days),
            (
                "select_alert_days_since",
                &ALERT_DAYS,
                &self.select_alert_days_since,
            ),
            (
                "select_alerts_by_day",
                &ALERTS_BY_DAY,
                &self.select_alerts_by_day,
            ),
            (
                "select_alerts_by_day_since",
                &ALERTS_BY_DAY,
                &self.select_alerts_by_day_since,
            ),
            ("insert_config", &CONFIG, &self.insert_config),
            ("select_config", &CONFIG, &self.select_config),
            ("delete_config", &CONFIG, &self.delete_config),
            ("list_config", &CONFIG, &self.list_config),
            (
                "insert_meter_rollup",
                &METER_ROLLUPS,
                &self.insert_meter_rollup,
            ),
            (
                "select_meter_rollups",
                &METER_ROLLUPS,
                &self.select_meter_rollups,
            ),
            (
                "insert_user_rollup",
                &USER_ROLLUPS,
                &self.insert_user_rollup,
            ),
            (
                "select_user_rollups",
                &USER_ROLLUPS,
                &self.select_user_rollups,
            ),
            (
                "insert_stream_offset",
                &STREAM_OFFSETS,
                &self.insert_stream_offset,
            ),
            (
                "select_stream_offsets",
                &STREAM_OFFSETS,
                &self.select_stream_offsets,
            ),
            ("insert_audit", &AUDIT_LOG, &self.insert_audit),
            ("insert_audit_day", &AUDIT_DAYS, &self.insert_audit_day),
            (
                "insert_audit_by_subject",
                &AUDIT_BY_SUBJECT,
                &self.insert_audit_by_subject,
            ),
            (
                "insert_audit_subject_day",
                &AUDIT_SUBJECT_DAYS,
                &self.insert_audit_subject_day,
            ),
            ("select_audit_days", &AUDIT_DAYS, &self.select_audit_days),
            (
                "select_audit_subject_days",
                &AUDIT_SUBJECT_DAYS,
                &self.select_audit_subject_days,
            ),
            ("select_audit_before", &AUDIT_LOG, &self.select_audit_before),
            (
                "select_audit_same_at",
                &AUDIT_LOG,
                &self.select_audit_same_at,
            ),
            (
                "select_audit_by_subject_before",
                &AUDIT_BY_SUBJECT,
                &self.select_audit_by_subject_before,
            ),
            (
                "select_audit_by_subject_same_at",
                &AUDIT_BY_SUBJECT,
                &self.select_audit_by_subject_same_at,
            ),
            (
                "select_migrations",
                &SCHEMA_MIGRATIONS,
                &self.select_migrations,
            ),
            (
                "insert_migration",
                &SCHEMA_MIGRATIONS,
                &self.insert_migration,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use gridpulse_domain::{
        AlertEventKind, AlertKind, AlertRecord, AlertState, Amount, Granularity, MeterId,
        MeterRollup, Reading, Severity, UserId, UserRollup,
    };
    use scylla::deserialize::row::DeserializeRow;
    use scylla::frame::response::result::{ColumnSpec, ColumnType, NativeType, TableSpec};
    use scylla::serialize::row::{RowSerializationContext, SerializeRow};
    use scylla::serialize::writers::RowWriter;

    use super::super::migrate::MIGRATIONS;
    use super::super::rows::{
        self, AlertRow, HistoryRow, HistorySelect, MeterRollupSelect, ReadingRow, ReadingSelect,
        SnapshotSelect, UserRollupSelect,
    };
    use super::*;
    use crate::model::{AlertHistoryEntry, ConfigKind, SnapshotRow};

    /// A table as the CQL files declare it.
    #[derive(Debug)]
    struct Table {
        columns: BTreeMap<String, String>,
        partition: Vec<String>,
        clustering: Vec<String>,
    }

    fn config() -> ScyllaConfig {
        ScyllaConfig::default()
    }

    /// Splits on commas outside parentheses.
    fn top_level_items(body: &str) -> Vec<String> {
        let (mut items, mut current, mut depth) = (Vec::new(), String::new(), 0);
        for c in body.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(current.trim().to_owned());
                    current.clear();
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        items.push(current.trim().to_owned());
        items
    }

    fn names(list: &str) -> Vec<String> {
        list.split(',')
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect()
    }

    /// Every table of the embedded CQL files plus `schema_migrations`.
    fn schema() -> BTreeMap<String, Table> {
        let mut statements: Vec<String> = MIGRATIONS
            .iter()
            .flat_map(|m| m.statements().unwrap())
            .collect();
        statements.push(create_migrations_table("gridpulse").replace("\"gridpulse\".", ""));
        let mut tables = BTreeMap::new();
        for statement in statements {
            let Some(rest) = statement.strip_prefix("CREATE TABLE IF NOT EXISTS ") else {
                panic!("unexpected statement in a schema file: {statement}");
            };
            let open = rest.find('(').unwrap();
            let name = rest[..open].trim().to_owned();
            let mut depth = 0;
            let close = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    c == ')' && depth == 0
                })
                .unwrap()
                .0;
            let mut table = Table {
                columns: BTreeMap::new(),
                partition: Vec::new(),
                clustering: Vec::new(),
            };
            for item in top_level_items(&rest[open + 1..close]) {
                if let Some(key) = item.strip_prefix("PRIMARY KEY") {
                    let key = key
                        .trim()
                        .strip_prefix('(')
                        .unwrap()
                        .strip_suffix(')')
                        .unwrap()
                        .trim();
                    let (partition, clustering) = match key.strip_prefix('(') {
                        Some(inner) => {
                            let end = inner.find(')').unwrap();
                            (names(&inner[..end]), names(&inner[end + 1..]))
                        }
                        None => {
                            let all = names(key);
                            (all[..1].to_vec(), all[1..].to_vec())
                        }
                    };
                    table.partition = partition;
                    table.clustering = clustering;
                } else {
                    let mut words = item.split_whitespace();
                    let column = words.next().unwrap().to_owned();
                    let typ = words.next().unwrap().to_owned();
                    table.columns.insert(column, typ);
                }
            }
            tables.insert(name, table);
        }
        tables
    }

    fn native(typ: &str) -> NativeType {
        match typ {
            "text" => NativeType::Text,
            "int" => NativeType::Int,
            "bigint" => NativeType::BigInt,
            "double" => NativeType::Double,
            "timestamp" => NativeType::Timestamp,
            "blob" => NativeType::Blob,
            "tinyint" => NativeType::TinyInt,
            other => panic!("type {other} not mapped in the test"),
        }
    }

    fn spec(table: &str, column: &str, typ: NativeType) -> ColumnSpec<'static> {
        ColumnSpec::owned(
            column.to_owned(),
            ColumnType::Native(typ),
            TableSpec::owned("gridpulse".to_owned(), table.to_owned()),
        )
    }

    fn table_of(text: &str) -> String {
        let after = text.split("\"gridpulse\".").nth(1).unwrap();
        after
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap()
            .to_owned()
    }

    /// The bind markers of a statement, typed from the schema, as the server would
    /// describe them when preparing it.
    fn bind_specs(text: &str, schema: &BTreeMap<String, Table>) -> Vec<ColumnSpec<'static>> {
        let table_name = table_of(text);
        let table = &schema[&table_name];
        let column = |name: &str| {
            let typ = table
                .columns
                .get(name)
                .unwrap_or_else(|| panic!("{table_name} has no column {name}: {text}"));
            spec(&table_name, name, native(typ))
        };
        let mut specs = Vec::new();
        if text.starts_with("INSERT") {
            let open = text.find('(').unwrap();
            let close = text.find(')').unwrap();
            specs.extend(
                names(&text[open + 1..close])
                    .iter()
                    .map(|name| column(name)),
            );
            if text.ends_with("USING TTL ?") {
                specs.push(spec(&table_name, "[ttl]", NativeType::Int));
            }
        } else if let Some(condition) = text.split(" WHERE ").nth(1) {
            let (condition, limit) = match condition.split_once(" LIMIT ") {
                Some((condition, limit)) => (condition, Some(limit)),
                None => (condition, None),
            };
            for restriction in condition.split(" AND ") {
                let words: Vec<&str> = restriction.split_whitespace().collect();
                assert_eq!(words.len(), 3, "restriction `{restriction}` in {text}");
                assert!(["=", ">=", "<", "<=", ">"].contains(&words[1]), "{text}");
                assert_eq!(words[2], "?", "values are always bound: {text}");
                specs.push(column(words[0]));
            }
            if let Some(limit) = limit {
                assert_eq!(limit, "?");
                specs.push(spec(&table_name, "[limit]", NativeType::Int));
            }
        }
        specs
    }

    /// The columns a SELECT returns, typed from the schema.
    fn result_specs(text: &str, schema: &BTreeMap<String, Table>) -> Vec<ColumnSpec<'static>> {
        let table_name = table_of(text);
        let columns = text
            .strip_prefix("SELECT ")
            .unwrap()
            .split(" FROM ")
            .next()
            .unwrap();
        names(columns)
            .iter()
            .map(|name| {
                spec(
                    &table_name,
                    name,
                    native(&schema[&table_name].columns[name]),
                )
            })
            .collect()
    }

    fn serializes(name: &str, specs: &[ColumnSpec<'static>], values: &impl SerializeRow) {
        let context = RowSerializationContext::from_specs(specs);
        let mut buffer = Vec::new();
        let mut writer = RowWriter::new(&mut buffer);
        if let Err(error) = values.serialize(&context, &mut writer) {
            panic!("{name}: the values the store binds do not fit the statement: {error}");
        }
    }

    fn decodes<R: for<'f, 'm> DeserializeRow<'f, 'm>>(name: &str, specs: &[ColumnSpec<'static>]) {
        if let Err(error) = R::type_check(specs) {
            panic!("{name}: the row type does not match the selected columns: {error}");
        }
    }

    fn sample_alert() -> AlertRecord {
        let meter = MeterId::new("m-1").unwrap();
        AlertRecord {
            id: gridpulse_domain::alert_id(&meter, AlertKind::OverCurrent, 5),
            meter,
            kind: AlertKind::OverCurrent,
            severity: Severity::Critical,
            state: AlertState::Firing,
            first_seen_ms: 5,
            last_seen_ms: 6,
            count: 1,
            value: 40.5,
            threshold: 32.0,
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

    fn sample_meter_rollup() -> MeterRollup {
        MeterRollup {
            meter: MeterId::new("m-1").unwrap(),
            granularity: Granularity::Hour,
            window_start_ms: 3_600_000,
            window_end_ms: 7_200_000,
            readings: 360,
            energy_wh: 412.5,
            power_min_w: 10.0,
            power_avg_w: 412.5,
            power_max_w: 3000.0,
            voltage_min: 228.0,
            voltage_max: 241.0,
            expected_readings: 360,
            completeness_pct: 100.0,
            revision: 2,
        }
    }

    fn sample_user_rollup() -> UserRollup {
        UserRollup {
            user: UserId::new("u-1").unwrap(),
            granularity: Granularity::Month,
            window_start_ms: 0,
            window_end_ms: 2_678_400_000,
            meters: 2,
            readings: 17_856,
            energy_wh: 250_000.0,
            cost: Some(Amount::parse("61.25").unwrap()),
            currency: Some("GBP".into()),
            revision: 0,
        }
    }

    #[test]
    fn schema_files_declare_the_keys_the_store_relies_on() {
        let schema = schema();
        let mut expected: Vec<&str> = TABLE_KEYS.iter().map(|key| key.table).collect();
        expected.push(SCHEMA_MIGRATIONS.table);
        expected.sort_unstable();
        assert_eq!(
            schema.keys().map(String::as_str).collect::<Vec<_>>(),
            expected
        );
        for key in TABLE_KEYS.iter().chain([&SCHEMA_MIGRATIONS]) {
            let table = &schema[key.table];
            assert_eq!(
                table.partition, key.partition,
                "partition key of {}",
                key.table
            );
            assert_eq!(
                table.clustering, key.clustering,
                "clustering key of {}",
                key.table
            );
            for column in key.partition.iter().chain(key.clustering) {
                assert!(
                    table.columns.contains_key(*column),
                    "{}.{column}",
                    key.table
                );
            }
        }
    }

    #[test]
    fn every_statement_names_its_keyspace_table_and_whole_partition_key() {
        let texts = StatementTexts::new(&config());
        for (name, table, text) in texts.all() {
            assert_eq!(table_of(text), table.table, "{name}: {text}");
            assert_eq!(
                text.matches("\"gridpulse\".").count(),
                1,
                "{name}: one table: {text}"
            );
            assert!(
                !text.contains("ALLOW FILTERING") && !text.contains(" IN "),
                "{name}: {text}"
            );
            assert!(!text.contains(';'), "{name}: {text}");
            let markers = text.matches('?').count();
            if let Some(rest) = text.strip_prefix("INSERT INTO ") {
                let columns = names(&rest[rest.find('(').unwrap() + 1..rest.find(')').unwrap()]);
                for key in table.partition.iter().chain(table.clustering) {
                    assert!(
                        columns.iter().any(|c| c == key),
                        "{name} sets the key column {key}: {text}"
                    );
                }
                let ttl_marker = usize::from(text.ends_with("USING TTL ?"));
                assert_eq!(
                    markers,
                    columns.len() + ttl_marker,
                    "{name}: one marker per column: {text}"
                );
            } else if name == "select_migrations" {
                // The one full read: a handful of rows, once per migrate/connect.
                assert!(!text.contains("WHERE"), "{text}");
            } else {
                assert!(
                    text.starts_with("SELECT ") || text.starts_with("DELETE FROM "),
                    "{name}: {text}"
                );
                let condition = text
                    .split(" WHERE ")
                    .nth(1)
                    .unwrap_or_else(|| panic!("{name}: {text}"));
                for key in table.partition {
                    assert!(
                        condition.contains(&format!("{key} = ?")),
                        "{name} binds {key}: {text}"
                    );
                }
                if text.starts_with("DELETE") {
                    for key in table.clustering {
                        assert!(
                            condition.contains(&format!("{key} = ?")),
                            "{name} deletes one row: {text}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn readings_insert_carries_ttl_only_when_configured() {
        let with = StatementTexts::new(&ScyllaConfig {
            readings_ttl_days: Some(30),
            ..config()
        });
        assert_eq!(
            with.insert_reading,
            "INSERT INTO \"gridpulse\".readings (meter, day, ts, voltage_v, current_a, power_w, energy_wh, \
             credit, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL 2592000"
        );
        let without = StatementTexts::new(&ScyllaConfig {
            readings_ttl_days: None,
            ..config()
        });
        assert!(
            !without.insert_reading.contains("TTL"),
            "{}",
            without.insert_reading
        );
        let zero = StatementTexts::new(&ScyllaConfig {
            readings_ttl_days: Some(0),
            ..config()
        });
        assert!(
            !zero.insert_reading.contains("TTL"),
            "0 days means no TTL: {}",
            zero.insert_reading
        );
        // The alerts TTL is bound per write (open alerts must not expire).
        for text in [
            &with.insert_alert,
            &with.insert_alert_by_meter,
            &with.insert_alert_by_day,
            &with.insert_alert_history,
            &with.insert_alert_workflow,
        ] {
            assert!(text.ends_with(" USING TTL ?"), "{text}");
        }
        for text in [
            &with.insert_snapshot,
            &with.insert_checkpoint,
            &with.insert_config,
            &with.insert_alert_day,
            &with.insert_meter_rollup,
            &with.insert_user_rollup,
            &with.insert_stream_offset,
            &with.insert_audit,
            &with.insert_audit_by_subject,
        ] {
            assert!(!text.contains("TTL"), "{text}");
        }
    }

    #[test]
    fn statements_follow_the_keyspace() {
        let texts = StatementTexts::new(&ScyllaConfig {
            keyspace: "grid_test_2".into(),
            ..config()
        });
        assert_eq!(
            texts.select_alert,
            "SELECT body FROM \"grid_test_2\".alerts WHERE id = ?"
        );
        assert_eq!(
            texts.delete_config,
            "DELETE FROM \"grid_test_2\".config WHERE kind = ? AND id = ?"
        );
        assert!(
            texts
                .all()
                .iter()
                .all(|(_, _, text)| !text.contains("\"gridpulse\""))
        );
    }

    /// Serializes the values the store binds against each statement's markers, typed
    /// from the CQL schema: a wrong column count or a Rust type that does not match the
    /// CQL type (e.g. i64 for an `int`) fails here instead of on a server.
    #[test]
    fn bound_values_fit_every_statement_and_the_schema() {
        let schema = schema();
        let texts = StatementTexts::new(&config());
        let binds = |text: &str| bind_specs(text, &schema);
        let meter = MeterId::new("m-1").unwrap();
        let reading = Reading {
            meter,
            ts_ms: -5,
            voltage: 230.0,
            current: 1.0,
            power_w: 230.0,
            energy_wh: 10.0,
            credit: None,
            seq: Some(u64::MAX),
            backfill: false,
        };
        let alert = sample_alert();
        let entry = AlertHistoryEntry::from_change(AlertEventKind::Raised, alert.clone());
        let alert_row = AlertRow::from_alert(&alert).unwrap();
        let history_row = HistoryRow::from_entry(&entry).unwrap();
        let snapshot = SnapshotRow {
            meter,
            partition: 3,
            applied_offset: None,
            state: vec![1],
            written_at_ms: 0,
        };
        let range = rows::day_ranges(0, 10)[0];

        serializes(
            "insert_reading",
            &binds(&texts.insert_reading),
            &ReadingRow::from_reading(&reading).insert_values(),
        );
        serializes(
            "select_readings",
            &binds(&texts.select_readings),
            &rows::reading_range_values("m-1", range, 101),
        );
        serializes(
            "insert_snapshot",
            &binds(&texts.insert_snapshot),
            &rows::snapshot_values(&snapshot),
        );
        serializes(
            "select_snapshot",
            &binds(&texts.select_snapshot),
            &rows::text_key("m-1"),
        );
        serializes(
            "insert_checkpoint",
            &binds(&texts.insert_checkpoint),
            &rows::checkpoint_values(1, 2),
        );
        serializes(
            "select_checkpoint",
            &binds(&texts.select_checkpoint),
            &rows::checkpoint_key(1),
        );
        serializes(
            "insert_alert",
            &binds(&texts.insert_alert),
            &alert_row.alert_values(0),
        );
        serializes(
            "insert_alert_by_meter",
            &binds(&texts.insert_alert_by_meter),
            &alert_row.by_meter_values(0),
        );
        serializes(
            "insert_alert_by_day",
            &binds(&texts.insert_alert_by_day),
            &alert_row.by_day_values(0),
        );
        serializes(
            "insert_alert_day",
            &binds(&texts.insert_alert_day),
            &rows::alert_day_values(4),
        );
        serializes(
            "insert_alert_history",
            &binds(&texts.insert_alert_history),
            &history_row.values(0),
        );
        let note = gridpulse_domain::AlertNote {
            by: "dana".into(),
            at_ms: 7,
            action_seq: 2,
            text: Some("on my way".into()),
        };
        let comment =
            AlertHistoryEntry::from_event(AlertEventKind::Commented, alert.clone(), Some(&note));
        serializes(
            "insert_alert_workflow",
            &binds(&texts.insert_alert_workflow),
            &HistoryRow::from_entry(&comment).unwrap().workflow_values(0),
        );
        serializes(
            "select_alert_workflow",
            &binds(&texts.select_alert_workflow),
            &rows::text_key(&alert.id),
        );
        serializes(
            "select_alert",
            &binds(&texts.select_alert),
            &rows::text_key(&alert.id),
        );
        serializes(
            "select_alert_history",
            &binds(&texts.select_alert_history),
            &rows::text_key(&alert.id),
        );
        serializes(
            "select_alerts_by_meter",
            &binds(&texts.select_alerts_by_meter),
            &rows::text_key("m-1"),
        );
        serializes(
            "select_alerts_by_meter_since",
            &binds(&texts.select_alerts_by_meter_since),
            &rows::since_values("m-1", 5),
        );
        serializes(
            "select_alert_days",
            &binds(&texts.select_alert_days),
            &rows::alert_days_key(),
        );
        serializes(
            "select_alert_days_since",
            &binds(&texts.select_alert_days_since),
            &rows::alert_day_values(4),
        );
        serializes(
            "select_alerts_by_day",
            &binds(&texts.select_alerts_by_day),
            &rows::day_key(4),
        );
        serializes(
            "select_alerts_by_day_since",
            &binds(&texts.select_alerts_by_day_since),
            &rows::since_values(4, 5),
        );
        serializes(
            "insert_config",
            &binds(&texts.insert_config),
            &rows::config_values(ConfigKind::Meter, "a", "{}"),
        );
        serializes(
            "select_config",
            &binds(&texts.select_config),
            &rows::config_key(ConfigKind::Meter, "a"),
        );
        serializes(
            "delete_config",
            &binds(&texts.delete_config),
            &rows::config_key(ConfigKind::Meter, "a"),
        );
        serializes(
            "list_config",
            &binds(&texts.list_config),
            &rows::text_key(ConfigKind::User.as_str()),
        );
        let rollup = sample_meter_rollup();
        serializes(
            "insert_meter_rollup",
            &binds(&texts.insert_meter_rollup),
            &rows::meter_rollup_values(&rollup),
        );
        serializes(
            "select_meter_rollups",
            &binds(&texts.select_meter_rollups),
            &rows::rollup_range_values("m-1", Granularity::Hour, 0, 10, 101),
        );
        serializes(
            "insert_user_rollup",
            &binds(&texts.insert_user_rollup),
            &rows::user_rollup_values(&sample_user_rollup()),
        );
        serializes(
            "select_user_rollups",
            &binds(&texts.select_user_rollups),
            &rows::rollup_range_values("u-1", Granularity::Month, 0, 10, 101),
        );
        serializes(
            "insert_stream_offset",
            &binds(&texts.insert_stream_offset),
            &rows::stream_offset_values("rollups", 3, u64::MAX),
        );
        serializes(
            "select_stream_offsets",
            &binds(&texts.select_stream_offsets),
            &rows::text_key("rollups"),
        );
        let audit = crate::model::AuditEntry {
            at_ms: 5,
            seq: u64::MAX,
            subject: "ops-1".into(),
            role: "ops".into(),
            method: "POST".into(),
            path: "/api/alerts/x/ack".into(),
            status: 200,
            detail: None,
        };
        serializes(
            "insert_audit",
            &binds(&texts.insert_audit),
            &rows::audit_values(&audit),
        );
        serializes(
            "insert_audit_by_subject",
            &binds(&texts.insert_audit_by_subject),
            &rows::audit_by_subject_values(&audit),
        );
        serializes(
            "insert_audit_day",
            &binds(&texts.insert_audit_day),
            &(rows::AUDIT_DAYS_SCOPE, 4),
        );
        serializes(
            "insert_audit_subject_day",
            &binds(&texts.insert_audit_subject_day),
            &("ops-1", 4),
        );
        serializes(
            "select_audit_days",
            &binds(&texts.select_audit_days),
            &(rows::AUDIT_DAYS_SCOPE, 4),
        );
        serializes(
            "select_audit_subject_days",
            &binds(&texts.select_audit_subject_days),
            &("ops-1", 4),
        );
        serializes(
            "select_audit_before",
            &binds(&texts.select_audit_before),
            &rows::audit_before_values(4, 5, 10),
        );
        serializes(
            "select_audit_same_at",
            &binds(&texts.select_audit_same_at),
            &rows::audit_same_at_values(4, (5, 6), 10),
        );
        let (day, at, page) = rows::audit_before_values(4, 5, 10);
        serializes(
            "select_audit_by_subject_before",
            &binds(&texts.select_audit_by_subject_before),
            &("ops-1", day, at, page),
        );
        let (day, at, seq, page) = rows::audit_same_at_values(4, (5, 6), 10);
        serializes(
            "select_audit_by_subject_same_at",
            &binds(&texts.select_audit_by_subject_same_at),
            &("ops-1", day, at, seq, page),
        );
        serializes("select_migrations", &binds(&texts.select_migrations), &());
        serializes(
            "insert_migration",
            &binds(&texts.insert_migration),
            &rows::migration_values(1, "init", 7, 3, 0),
        );
        // And a wrong type is caught by this very check (the test can fail).
        let checkpoint_specs = binds(&texts.select_checkpoint);
        let context = RowSerializationContext::from_specs(&checkpoint_specs);
        let mut buffer = Vec::new();
        assert!(
            (1_i32,)
                .serialize(&context, &mut RowWriter::new(&mut buffer))
                .is_err()
        );
    }

    /// Type-checks the row types the store decodes against the selected columns.
    #[test]
    fn result_rows_type_check_against_the_schema() {
        let schema = schema();
        let texts = StatementTexts::new(&config());
        let results = |text: &str| result_specs(text, &schema);
        decodes::<ReadingSelect>("select_readings", &results(&texts.select_readings));
        decodes::<SnapshotSelect>("select_snapshot", &results(&texts.select_snapshot));
        decodes::<(Option<i64>,)>("select_checkpoint", &results(&texts.select_checkpoint));
        decodes::<(String,)>("select_alert", &results(&texts.select_alert));
        decodes::<HistorySelect>(
            "select_alert_history",
            &results(&texts.select_alert_history),
        );
        decodes::<rows::WorkflowSelect>(
            "select_alert_workflow",
            &results(&texts.select_alert_workflow),
        );
        decodes::<(String,)>(
            "select_alerts_by_meter",
            &results(&texts.select_alerts_by_meter),
        );
        decodes::<(String,)>(
            "select_alerts_by_meter_since",
            &results(&texts.select_alerts_by_meter_since),
        );
        decodes::<(i32,)>("select_alert_days", &results(&texts.select_alert_days));
        decodes::<(i32,)>(
            "select_alert_days_since",
            &results(&texts.select_alert_days_since),
        );
        decodes::<(String,)>(
            "select_alerts_by_day",
            &results(&texts.select_alerts_by_day),
        );
        decodes::<(String,)>(
            "select_alerts_by_day_since",
            &results(&texts.select_alerts_by_day_since),
        );
        decodes::<(String,)>("select_config", &results(&texts.select_config));
        decodes::<(String, String)>("list_config", &results(&texts.list_config));
        decodes::<MeterRollupSelect>(
            "select_meter_rollups",
            &results(&texts.select_meter_rollups),
        );
        decodes::<UserRollupSelect>("select_user_rollups", &results(&texts.select_user_rollups));
        decodes::<(i64, i64)>(
            "select_stream_offsets",
            &results(&texts.select_stream_offsets),
        );
        decodes::<(i32, String, i64)>("select_migrations", &results(&texts.select_migrations));
        decodes::<(i32,)>("select_audit_days", &results(&texts.select_audit_days));
        decodes::<(i32,)>(
            "select_audit_subject_days",
            &results(&texts.select_audit_subject_days),
        );
        for (name, text) in [
            ("select_audit_before", &texts.select_audit_before),
            ("select_audit_same_at", &texts.select_audit_same_at),
            (
                "select_audit_by_subject_before",
                &texts.select_audit_by_subject_before,
            ),
            (
                "select_audit_by_subject_same_at",
                &texts.select_audit_by_subject_same_at,
            ),
        ] {
            decodes::<rows::AuditSelect>(name, &results(text));
        }
        assert!(<(i64,)>::type_check(&results(&texts.select_alert_days)).is_err());
    }

    #[test]
    fn no_identifier_is_a_reserved_cql_keyword() {
        // ScyllaDB's reserved keywords (docs: cql/reserved-keywords).
        const RESERVED: &[&str] = &[
            "add",
            "allow",
            "alter",
            "and",
            "apply",
            "asc",
            "authorize",
            "batch",
            "begin",
            "by",
            "columnfamily",
            "create",
            "delete",
            "desc",
            "describe",
            "drop",
            "entries",
            "execute",
            "from",
            "full",
            "grant",
            "if",
            "in",
            "index",
            "infinity",
            "insert",
            "into",
            "keyspace",
            "limit",
            "modify",
            "nan",
            "norecursive",
            "not",
            "null",
            "of",
            "on",
            "or",
            "order",
            "primary",
            "rename",
            "replace",
            "revoke",
            "schema",
            "select",
            "set",
            "table",
            "to",
            "token",
            "truncate",
            "unlogged",
            "update",
            "use",
            "using",
            "view",
            "where",
            "with",
        ];
        for (name, table) in schema() {
            assert!(!RESERVED.contains(&name.as_str()), "table {name}");
            for column in table.columns.keys() {
                assert!(!RESERVED.contains(&column.as_str()), "{name}.{column}");
            }
        }
    }

    #[test]
    fn keyspace_and_migrations_table_statements() {
        assert_eq!(
            create_keyspace("gridpulse", 3),
            "CREATE KEYSPACE IF NOT EXISTS \"gridpulse\" WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
        );
        assert!(create_keyspace("ks", 1).ends_with("'replication_factor': 1}"));
        assert!(
            create_migrations_table("ks")
                .starts_with("CREATE TABLE IF NOT EXISTS \"ks\".schema_migrations (")
        );
    }
}
