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
/// Configuration documents.
pub(crate) const CONFIG: TableKey = TableKey {
    table: "config",
    partition: &["kind"],
    clustering: &["id"],
};
/// Applied schema migrations (created by `migrate` itself, not by a CQL file).
pub(crate) const SCHEMA_MIGRATIONS: TableKey = TableKey {
    table: "schema_migrations",
    partition: &["version"],
    clustering: &[],
};

/// Every table defined by the CQL files.
#[cfg(test)]
pub(crate) const TABLE_KEYS: [TableKey; 9] = [
    READINGS,
    SNAPSHOTS,
    CHECKPOINTS,
    ALERTS,
    ALERTS_BY_METER,
    ALERTS_BY_DAY,
    ALERT_DAYS,
    ALERT_HISTORY,
    CONFIG,
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
    pub select_alert: String,
    pub select_alert_history: String,
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
pub(crate) const ALERT_BY_METER_COLUMNS: [&str; 6] = ["meter", "first_seen", "id", "kind", "state", "body"];
/// Columns of an alerts_by_day row, in bind order.
pub(crate) const ALERT_BY_DAY_COLUMNS: [&str; 7] = ["day", "first_seen", "id", "meter", "kind", "state", "body"];
/// Columns of an alert_history row, in bind order.
pub(crate) const HISTORY_COLUMNS: [&str; 6] = ["id", "at", "event_rank", "event", "actor", "body"];
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
                &["meter", "log_partition", "applied_offset", "state", "written_at"],
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
            select_alert: select(ks, &ALERTS, &["body"], "id = ?"),
            select_alert_history: select(ks, &ALERT_HISTORY, &HISTORY_COLUMNS[1..], "id = ?"),
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
            delete_config: format!("DELETE FROM {} WHERE kind = ? AND id = ?", qualified(ks, &CONFIG)),
            list_config: select(ks, &CONFIG, &["id", "body"], "kind = ?"),
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
            ("insert_alert_by_meter", &ALERTS_BY_METER, &self.insert_alert_by_meter),
            ("insert_alert_by_day", &ALERTS_BY_DAY, &self.insert_alert_by_day),
            ("insert_alert_day", &ALERT_DAYS, &self.insert_alert_day),
            ("insert_alert_history", &ALERT_HISTORY, &self.insert_alert_history),
            ("select_alert", &ALERTS, &self.select_alert),
            ("select_alert_history", &ALERT_HISTORY, &self.select_alert_history),
            ("select_alerts_by_meter", &ALERTS_BY_METER, &self.select_alerts_by_meter),
            ("select_alerts_by_meter_since", &ALERTS_BY_METER, &self.select_alerts_by_meter_since),
            ("select_alert_days", &ALERT_DAYS, &self.select_alert_days),
            ("select_alert_days_since", &ALERT_DAYS, &self.select_alert_days_since),
            ("select_alerts_by_day", &ALERTS_BY_DAY, &self.select_alerts_by_day),
            ("select_alerts_by_day_since", &ALERTS_BY_DAY, &self.select_alerts_by_day_since),
            ("insert_config", &CONFIG, &self.insert_config),
            ("select_config", &CONFIG, &self.select_config),
            ("delete_config", &CONFIG, &self.delete_config),
            ("list_config", &CONFIG, &self.list_config),
            ("select_migrations", &SCHEMA_MIGRATIONS, &self.select_migrations),
            ("insert_migration", &SCHEMA_MIGRATIONS, &self.insert_migration),
        ]
    }
}
