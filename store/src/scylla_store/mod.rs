//! The ScyllaDB backend: the same [`Store`] interface as the embedded store, on a
//! cluster, for deployments past one machine.
//!
//! * [`ScyllaConfig`] — contact points, keyspace, credentials, consistency, TTLs
//!   (`GRIDPULSE_SCYLLA_*` variables via [`ScyllaConfig::from_env`]).
//! * [`migrate`] — creates the keyspace and applies the versioned CQL files of
//!   `store/cql/` (embedded in the binary), recording them in `schema_migrations`.
//! * [`ScyllaStore::connect`] — one driver session (token-aware default load balancing,
//!   client-side monotonic write timestamps), every statement prepared once, with the
//!   configured consistency; refuses a keyspace whose migrations are missing.
//!
//! Data model (see `store/cql/V001__init.cql`): readings in (meter, UTC day) partitions
//! clustered by time, so a range query walks day partitions in order with `LIMIT` and
//! paging; snapshots by meter; checkpoints by log partition; alerts by id as JSON plus
//! two denormalised indexes (by meter, by day of first_seen, newest first) and a small
//! list of days that have alerts; alert history by (id, at, event); configuration by
//! (kind, id). `V002__rollups.cql`: usage rollups in (meter or user, granularity)
//! partitions clustered by window start, and stream job offsets by (job, log
//! partition).
//!
//! Writes: unlogged batches only within one partition key (readings of one meter-day,
//! history of one alert, rollups of one subject and granularity, offsets of one job), at
//! most [`BATCH_ROWS`] rows; everything else is single
//! prepared statements run concurrently, at most [`MAX_IN_FLIGHT`] at once. A slice
//! that names one key twice keeps its last value, as the embedded store does.
//!
//! Retention is TTL at write time (`USING TTL`, from [`ScyllaConfig::readings_ttl_days`]
//! and [`ScyllaConfig::alerts_ttl_days`]; rollups and offsets have none: kept forever),
//! so [`Store::apply_retention`] has nothing to do here; durability is the write consistency, so [`Store::flush`] has nothing to do
//! either.

mod config;
mod migrate;
mod rows;
mod statements;

use std::collections::BTreeSet;
use std::fmt::Display;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use gridpulse_domain::{AlertRecord, MeterId, MeterRollup, Reading, UserRollup};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::response::PagingState;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::Consistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::unprepared::Statement;
use tokio::task::JoinSet;

pub use self::config::{
    DEFAULT_KEYSPACE, DEFAULT_REPLICATION_FACTOR, ENV_ALERTS_TTL_DAYS, ENV_CONSISTENCY,
    ENV_KEYSPACE, ENV_NODES, ENV_PASSWORD, ENV_READINGS_TTL_DAYS, ENV_REPLICATION_FACTOR,
    ENV_USERNAME, MAX_TTL_DAYS, ScyllaConfig, ScyllaConsistency,
};
pub use self::migrate::{AppliedMigration, MIGRATIONS, Migration, migrate, split_statements};
use self::rows::{
    AUDIT_DAYS_SCOPE, AuditSelect, HistoryRow, HistorySelect, MeterRollupSelect, ReadingRow,
    ReadingSelect, SnapshotSelect, UserRollupSelect, WorkflowSelect, alert_day_values,
    alert_days_key, alert_from_body, audit_before_values, audit_by_subject_values,
    audit_from_select, audit_same_at_values, audit_values, checkpoint_key, checkpoint_values,
    config_key, config_values, corrupt, day_key, day_ranges, history_from_select, last_per_key,
    merge_history, meter_rollup_from_select, meter_rollup_values, partition_batches,
    plan_alert_writes, reading_batches, reading_from_select, reading_range_values,
    rollup_range_values, since_values, snapshot_from_select, snapshot_values,
    stream_offset_from_select, stream_offset_values, text_key, user_rollup_from_select,
    user_rollup_values, workflow_from_select,
};
use self::statements::StatementTexts;
use crate::error::StoreError;
use crate::model::{
    AlertHistoryEntry, AlertQuery, AuditEntry, AuditQuery, ConfigKind, MeterRollupQuery,
    ReadingPage, ReadingQuery, RollupPage, RollupQuery, SnapshotRow, StoredAlert, UserRollupQuery,
    check_audit_entry, check_job_name, check_user_rollup, day_bucket, reading_cursor,
    rollup_cursor,
};
use crate::{Store, StoreFuture};

/// Most rows in one unlogged batch (all of one partition key).
pub const BATCH_ROWS: usize = 100;
/// Most requests one store call keeps in flight.
pub const MAX_IN_FLIGHT: usize = 64;
/// Rows per page of every paged read.
const PAGE_ROWS: i32 = 1000;

/// The Scylla store (cheap to clone: one shared session).
#[derive(Debug, Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    session: Session,
    keyspace: String,
    statements: Prepared,
    write_consistency: Consistency,
    alerts_ttl_seconds: Option<i32>,
    /// Days already recorded in `alert_days` by this process (skips re-writing the one
    /// hot row on every alert).
    known_alert_days: Mutex<BTreeSet<i32>>,
    /// Days already recorded in `audit_days`, and (subject, day) in
    /// `audit_subject_days`, by this process.
    known_audit_days: Mutex<KnownAuditDays>,
}

/// Days (of everyone, of one subject) with audit entries this process recorded.
type KnownAuditDays = (BTreeSet<i32>, BTreeSet<(String, i32)>);

/// Every prepared statement (see [`StatementTexts`] for the text of each).
#[derive(Debug)]
struct Prepared {
    insert_reading: PreparedStatement,
    select_readings: PreparedStatement,
    insert_snapshot: PreparedStatement,
    select_snapshot: PreparedStatement,
    insert_checkpoint: PreparedStatement,
    select_checkpoint: PreparedStatement,
    insert_alert: PreparedStatement,
    insert_alert_by_meter: PreparedStatement,
    insert_alert_by_day: PreparedStatement,
    insert_alert_day: PreparedStatement,
    insert_alert_history: PreparedStatement,
    insert_alert_workflow: PreparedStatement,
    select_alert: PreparedStatement,
    select_alert_history: PreparedStatement,
    select_alert_workflow: PreparedStatement,
    select_alerts_by_meter: PreparedStatement,
    select_alerts_by_meter_since: PreparedStatement,
    select_alert_days: PreparedStatement,
    select_alert_days_since: PreparedStatement,
    select_alerts_by_day: PreparedStatement,
    select_alerts_by_day_since: PreparedStatement,
    insert_config: PreparedStatement,
    select_config: PreparedStatement,
    delete_config: PreparedStatement,
    list_config: PreparedStatement,
    insert_meter_rollup: PreparedStatement,
    select_meter_rollups: PreparedStatement,
    insert_user_rollup: PreparedStatement,
    select_user_rollups: PreparedStatement,
    insert_stream_offset: PreparedStatement,
    select_stream_offsets: PreparedStatement,
    insert_audit: PreparedStatement,
    insert_audit_day: PreparedStatement,
    insert_audit_by_subject: PreparedStatement,
    insert_audit_subject_day: PreparedStatement,
    select_audit_days: PreparedStatement,
    select_audit_subject_days: PreparedStatement,
    select_audit_before: PreparedStatement,
    select_audit_same_at: PreparedStatement,
    select_audit_by_subject_before: PreparedStatement,
    select_audit_by_subject_same_at: PreparedStatement,
}

/// Maps a driver error to [`StoreError::Scylla`] with what was being done.
pub(crate) fn db_error<E: Display>(context: impl Display) -> impl FnOnce(E) -> StoreError {
    move |error| StoreError::Scylla(format!("{context}: {error}"))
}

/// Decodes every row of a result; a type mismatch or undecodable value is
/// [`StoreError::Corrupt`] naming `table`.
pub(crate) fn rows_of<R>(result: QueryResult, table: &str) -> Result<Vec<R>, StoreError>
where
    R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
{
    let rows = result
        .into_rows_result()
        .map_err(db_error(format!("reading {table}: expected rows")))?;
    let typed = rows
        .rows::<R>()
        .map_err(|error| corrupt("row", table.to_owned(), error))?;
    typed
        .map(|row| row.map_err(|error| corrupt("row", table.to_owned(), error)))
        .collect()
}

/// Opens a driver session on `config`'s nodes: token-aware default load balancing,
/// the configured consistency as the default, monotonic client-side timestamps (so a
/// process's later write of a row always wins, whichever coordinator serves it).
pub(crate) async fn build_session(config: &ScyllaConfig) -> Result<Session, StoreError> {
    let policy = DefaultPolicy::builder().token_aware(true).build();
    let profile = ExecutionProfile::builder()
        .consistency(config.consistency.for_writes())
        .load_balancing_policy(policy)
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.nodes)
        .default_execution_profile_handle(profile.into_handle())
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()));
    if let (Some(username), Some(password)) = (&config.username, &config.password) {
        builder = builder.user(username, password);
    }
    builder.build().await.map_err(db_error(format!(
        "connecting to {}",
        config.nodes.join(",")
    )))
}

/// A page visitor collecting the alerts of `(body,)` rows that match `query`, breaking
/// once `found` holds `limit`.
fn collect_matching<'f>(
    found: &'f mut Vec<AlertRecord>,
    query: &'f AlertQuery,
    limit: usize,
    table: &'static str,
) -> impl FnMut(Vec<(String,)>) -> Result<ControlFlow<()>, StoreError> + Send + 'f {
    move |rows| {
        for (body,) in rows {
            let alert = alert_from_body(&body, table)?;
            if query.matches(&alert) {
                found.push(alert);
                if found.len() >= limit {
                    return Ok(ControlFlow::Break(()));
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    }
}

/// A rollup result row that starts with its window start (the cursor of a page).
trait HasWindowStart {
    fn window_start_ms(&self) -> i64;
}

impl HasWindowStart for MeterRollupSelect {
    fn window_start_ms(&self) -> i64 {
        self.0.0
    }
}

impl HasWindowStart for UserRollupSelect {
    fn window_start_ms(&self) -> i64 {
        self.0.0
    }
}

/// A write running on the runtime.
type Task = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'static>>;

/// Runs `tasks`, at most `limit` at once; the first error is returned and the tasks
/// still running are dropped (every write is idempotent, so a retry of the whole call
/// is safe).
async fn run_bounded(tasks: Vec<Task>, limit: usize) -> Result<(), StoreError> {
    if tasks.len() <= 1 {
        for task in tasks {
            task.await?;
        }
        return Ok(());
    }
    let mut running = JoinSet::new();
    let joined = |result: Result<Result<(), StoreError>, tokio::task::JoinError>| {
        result.map_err(db_error("write task failed"))?
    };
    for task in tasks {
        if running.len() >= limit.max(1)
            && let Some(result) = running.join_next().await
        {
            joined(result)?;
        }
        running.spawn(task);
    }
    while let Some(result) = running.join_next().await {
        joined(result)?;
    }
    Ok(())
}

impl ScyllaStore {
    /// Connects to the cluster and prepares every statement.
    ///
    /// Refuses, saying to run `gridpulse migrate`, when the keyspace is missing or lacks
    /// an embedded migration; refuses when an applied schema file has changed.
    pub async fn connect(config: ScyllaConfig) -> Result<ScyllaStore, StoreError> {
        config.validate()?;
        let session = build_session(&config).await?;
        let keyspace = config.keyspace.clone();

        let mut probe = Statement::new(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
        );
        probe.set_consistency(Consistency::LocalOne);
        let result = session
            .query_unpaged(
                probe,
                (keyspace.as_str(), statements::SCHEMA_MIGRATIONS.table),
            )
            .await
            .map_err(db_error("reading system_schema.tables"))?;
        let found: Vec<(String,)> = rows_of(result, "system_schema.tables")?;
        if found.is_empty() {
            return Err(StoreError::Scylla(format!(
                "keyspace `{keyspace}` has no schema_migrations table (the keyspace is missing or \
                 was never migrated): run `gridpulse migrate` first"
            )));
        }
        let texts = StatementTexts::new(&config);
        let recorded =
            migrate::read_recorded(&session, &texts, config.consistency.for_reads()).await?;
        migrate::check_current(&keyspace, MIGRATIONS, &recorded)?;
        for version in recorded
            .keys()
            .filter(|version| !MIGRATIONS.iter().any(|m| m.version == **version))
        {
            tracing::warn!(
                keyspace,
                version,
                "keyspace has a schema migration this gridpulse does not know"
            );
        }

        let reads = config.consistency.for_reads();
        let writes = config.consistency.for_writes();
        let prepare = |text: String, consistency: Consistency| {
            let session = &session;
            async move {
                let mut statement = Statement::new(text.clone());
                statement.set_page_size(PAGE_ROWS);
                let mut prepared = session
                    .prepare(statement)
                    .await
                    .map_err(db_error(format!("preparing `{text}`")))?;
                prepared.set_consistency(consistency);
                // Every statement is an idempotent upsert, delete or read: safe to retry
                // and to execute speculatively.
                prepared.set_is_idempotent(true);
                Ok::<PreparedStatement, StoreError>(prepared)
            }
        };
        let t = texts;
        let statements = Prepared {
            insert_reading: prepare(t.insert_reading, writes).await?,
            select_readings: prepare(t.select_readings, reads).await?,
            insert_snapshot: prepare(t.insert_snapshot, writes).await?,
            select_snapshot: prepare(t.select_snapshot, reads).await?,
            insert_checkpoint: prepare(t.insert_checkpoint, writes).await?,
            select_checkpoint: prepare(t.select_checkpoint, reads).await?,
            insert_alert: prepare(t.insert_alert, writes).await?,
            insert_alert_by_meter: prepare(t.insert_alert_by_meter, writes).await?,
            insert_alert_by_day: prepare(t.insert_alert_by_day, writes).await?,
            insert_alert_day: prepare(t.insert_alert_day, writes).await?,
            insert_alert_history: prepare(t.insert_alert_history, writes).await?,
            insert_alert_workflow: prepare(t.insert_alert_workflow, writes).await?,
            select_alert: prepare(t.select_alert, reads).await?,
            select_alert_history: prepare(t.select_alert_history, reads).await?,
            select_alert_workflow: prepare(t.select_alert_workflow, reads).await?,
            select_alerts_by_meter: prepare(t.select_alerts_by_meter, reads).await?,
            select_alerts_by_meter_since: prepare(t.select_alerts_by_meter_since, reads).await?,
            select_alert_days: prepare(t.select_alert_days, reads).await?,
            select_alert_days_since: prepare(t.select_alert_days_since, reads).await?,
            select_alerts_by_day: prepare(t.select_alerts_by_day, reads).await?,
            select_alerts_by_day_since: prepare(t.select_alerts_by_day_since, reads).await?,
            insert_config: prepare(t.insert_config, writes).await?,
            select_config: prepare(t.select_config, reads).await?,
            delete_config: prepare(t.delete_config, writes).await?,
            list_config: prepare(t.list_config, reads).await?,
            insert_meter_rollup: prepare(t.insert_meter_rollup, writes).await?,
            select_meter_rollups: prepare(t.select_meter_rollups, reads).await?,
            insert_user_rollup: prepare(t.insert_user_rollup, writes).await?,
            select_user_rollups: prepare(t.select_user_rollups, reads).await?,
            insert_stream_offset: prepare(t.insert_stream_offset, writes).await?,
            select_stream_offsets: prepare(t.select_stream_offsets, reads).await?,
            insert_audit: prepare(t.insert_audit, writes).await?,
            insert_audit_day: prepare(t.insert_audit_day, writes).await?,
            insert_audit_by_subject: prepare(t.insert_audit_by_subject, writes).await?,
            insert_audit_subject_day: prepare(t.insert_audit_subject_day, writes).await?,
            select_audit_days: prepare(t.select_audit_days, reads).await?,
            select_audit_subject_days: prepare(t.select_audit_subject_days, reads).await?,
            select_audit_before: prepare(t.select_audit_before, reads).await?,
            select_audit_same_at: prepare(t.select_audit_same_at, reads).await?,
            select_audit_by_subject_before: prepare(t.select_audit_by_subject_before, reads)
                .await?,
            select_audit_by_subject_same_at: prepare(t.select_audit_by_subject_same_at, reads)
                .await?,
        };
        tracing::info!(keyspace, nodes = ?config.nodes, consistency = %config.consistency, "connected to scylla");
        Ok(ScyllaStore {
            inner: Arc::new(Inner {
                session,
                keyspace,
                statements,
                write_consistency: writes,
                alerts_ttl_seconds: config.alerts_ttl_seconds(),
                known_alert_days: Mutex::new(BTreeSet::new()),
                known_audit_days: Mutex::new((BTreeSet::new(), BTreeSet::new())),
            }),
        })
    }

    /// The keyspace this store uses.
    pub fn keyspace(&self) -> &str {
        &self.inner.keyspace
    }
}

impl Inner {
    /// A task executing one prepared write.
    fn execute_task<V>(
        self: &Arc<Self>,
        statement: &PreparedStatement,
        values: V,
        context: String,
    ) -> Task
    where
        V: SerializeRow + Send + 'static,
    {
        let inner = Arc::clone(self);
        let statement = statement.clone();
        Box::pin(async move {
            inner
                .session
                .execute_unpaged(&statement, values)
                .await
                .map_err(db_error(context))?;
            Ok(())
        })
    }

    /// A task writing `rows` (all of one partition key) as one unlogged batch.
    fn batch_task<V>(
        self: &Arc<Self>,
        statement: &PreparedStatement,
        rows: Vec<V>,
        context: String,
    ) -> Task
    where
        V: SerializeRow + Send + Sync + 'static,
    {
        let inner = Arc::clone(self);
        let mut batch = Batch::new(BatchType::Unlogged);
        for _ in 0..rows.len() {
            batch.append_statement(statement.clone());
        }
        batch.set_consistency(self.write_consistency);
        batch.set_is_idempotent(true);
        Box::pin(async move {
            inner
                .session
                .batch(&batch, &rows)
                .await
                .map_err(db_error(context))?;
            Ok(())
        })
    }

    /// Reads `statement` page by page, handing each page's rows to `visit` until it
    /// breaks or the rows run out.
    async fn for_each_page<R, V>(
        &self,
        statement: &PreparedStatement,
        values: &V,
        table: &str,
        mut visit: impl FnMut(Vec<R>) -> Result<ControlFlow<()>, StoreError> + Send,
    ) -> Result<(), StoreError>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
        V: SerializeRow + Sync,
    {
        let mut paging = PagingState::start();
        loop {
            let (result, response) = self
                .session
                .execute_single_page(statement, values, paging)
                .await
                .map_err(db_error(format!("reading {table}")))?;
            if visit(rows_of(result, table)?)?.is_break() {
                return Ok(());
            }
            match response.into_paging_control_flow() {
                ControlFlow::Break(()) => return Ok(()),
                ControlFlow::Continue(next) => paging = next,
            }
        }
    }

    /// Every row of `statement` (for partitions known to be small).
    async fn all_rows<R, V>(
        &self,
        statement: &PreparedStatement,
        values: &V,
        table: &str,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata> + Send,
        V: SerializeRow + Sync,
    {
        let mut all = Vec::new();
        self.for_each_page(statement, values, table, |rows| {
            all.extend(rows);
            Ok(ControlFlow::Continue(()))
        })
        .await?;
        Ok(all)
    }

    /// At most one row of `statement`.
    async fn one_row<R, V>(
        &self,
        statement: &PreparedStatement,
        values: V,
        table: &str,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
        V: SerializeRow,
    {
        let result = self
            .session
            .execute_unpaged(statement, values)
            .await
            .map_err(db_error(format!("reading {table}")))?;
        Ok(rows_of::<R>(result, table)?.into_iter().next())
    }

    async fn write_readings(self: &Arc<Self>, readings: &[Reading]) -> Result<(), StoreError> {
        let tasks = reading_batches(readings, BATCH_ROWS)
            .into_iter()
            .map(|rows| {
                let context = match rows.first() {
                    Some(first) => format!(
                        "writing {} readings of {} day {}",
                        rows.len(),
                        first.meter,
                        first.day
                    ),
                    None => "writing readings".to_owned(),
                };
                let values: Vec<_> = rows.iter().map(ReadingRow::insert_values).collect();
                self.batch_task(&self.statements.insert_reading, values, context)
            })
            .collect();
        run_bounded(tasks, MAX_IN_FLIGHT).await
    }

    async fn read_readings(&self, query: &ReadingQuery) -> Result<ReadingPage, StoreError> {
        let start_ms = query.start_ms()?;
        let limit = query.limit.max(1);
        // One row more than the page: its timestamp is the next cursor.
        let wanted = limit.saturating_add(1);
        let meter = query.meter.as_str();
        let mut readings: Vec<Reading> = Vec::with_capacity(limit.min(10_000));
        let mut next_ts: Option<i64> = None;
        for range in day_ranges(start_ms, query.to_ms) {
            let values = reading_range_values(meter, range, wanted - readings.len());
            self.for_each_page(
                &self.statements.select_readings,
                &values,
                "readings",
                |rows: Vec<ReadingSelect>| {
                    for row in rows {
                        if readings.len() == limit {
                            next_ts = Some(row.0.0);
                            return Ok(ControlFlow::Break(()));
                        }
                        readings.push(reading_from_select(query.meter, row));
                    }
                    Ok(ControlFlow::Continue(()))
                },
            )
            .await?;
            if next_ts.is_some() {
                break;
            }
        }
        Ok(ReadingPage {
            readings,
            next_cursor: next_ts.map(reading_cursor),
        })
    }

    async fn put_snapshots(self: &Arc<Self>, snapshots: &[SnapshotRow]) -> Result<(), StoreError> {
        let tasks = last_per_key(snapshots, |snapshot| snapshot.meter)
            .into_iter()
            .map(|snapshot| {
                self.execute_task(
                    &self.statements.insert_snapshot,
                    snapshot_values(snapshot),
                    format!("writing the snapshot of {}", snapshot.meter),
                )
            })
            .collect();
        run_bounded(tasks, MAX_IN_FLIGHT).await
    }

    async fn get_snapshot(&self, meter: MeterId) -> Result<Option<SnapshotRow>, StoreError> {
        let row: Option<SnapshotSelect> = self
            .one_row(
                &self.statements.select_snapshot,
                text_key(meter.as_str()),
                "snapshots",
            )
            .await?;
        row.map(|row| snapshot_from_select(meter, row)).transpose()
    }

    async fn put_checkpoint(&self, partition: u32, offset: u64) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(
                &self.statements.insert_checkpoint,
                checkpoint_values(partition, offset),
            )
            .await
            .map_err(db_error(format!(
                "writing the checkpoint of partition {partition}"
            )))?;
        Ok(())
    }

    async fn get_checkpoint(&self, partition: u32) -> Result<Option<u64>, StoreError> {
        let row: Option<(Option<i64>,)> = self
            .one_row(
                &self.statements.select_checkpoint,
                checkpoint_key(partition),
                "checkpoints",
            )
            .await?;
        Ok(row.and_then(|(offset,)| offset).map(rows::bigint_to_u64))
    }

    async fn write_alert_events(
        self: &Arc<Self>,
        entries: &[AlertHistoryEntry],
    ) -> Result<(), StoreError> {
        let plan = plan_alert_writes(entries, self.alerts_ttl_seconds, BATCH_ROWS)?;

        // 1. The days, first: a query never misses a day whose alerts are written.
        let new_days: Vec<i32> = {
            let known = self
                .known_alert_days
                .lock()
                .map_err(|_| StoreError::Scylla("alert day cache poisoned".into()))?;
            plan.days
                .iter()
                .copied()
                .filter(|day| !known.contains(day))
                .collect()
        };
        if !new_days.is_empty() {
            let values: Vec<(i32, i32)> =
                new_days.iter().map(|day| alert_day_values(*day)).collect();
            self.batch_task(
                &self.statements.insert_alert_day,
                values,
                "writing alert_days".into(),
            )
            .await?;
            if let Ok(mut known) = self.known_alert_days.lock() {
                known.extend(new_days);
            }
        }

        // 2. History (a batch per alert) and the alert rows (three tables each).
        let mut tasks: Vec<Task> = Vec::new();
        for rows in &plan.history {
            let context = match rows.first() {
                Some((first, _)) => format!("writing the history of alert {}", first.id),
                None => "writing alert history".to_owned(),
            };
            let values: Vec<_> = rows.iter().map(|(row, ttl)| row.values(*ttl)).collect();
            tasks.push(self.batch_task(&self.statements.insert_alert_history, values, context));
        }
        for rows in &plan.workflow {
            let context = match rows.first() {
                Some((first, _)) => format!("writing the workflow events of alert {}", first.id),
                None => "writing alert workflow events".to_owned(),
            };
            let values: Vec<_> = rows
                .iter()
                .map(|(row, ttl)| row.workflow_values(*ttl))
                .collect();
            tasks.push(self.batch_task(&self.statements.insert_alert_workflow, values, context));
        }
        for (row, ttl) in &plan.alerts {
            let s = &self.statements;
            tasks.push(self.execute_task(
                &s.insert_alert,
                row.alert_values(*ttl),
                format!("writing alert {}", row.id),
            ));
            tasks.push(self.execute_task(
                &s.insert_alert_by_meter,
                row.by_meter_values(*ttl),
                format!("writing alerts_by_meter for {}", row.id),
            ));
            tasks.push(self.execute_task(
                &s.insert_alert_by_day,
                row.by_day_values(*ttl),
                format!("writing alerts_by_day for {}", row.id),
            ));
        }
        run_bounded(tasks, MAX_IN_FLIGHT).await?;

        // 3. Resolved alerts with a TTL: history written while they were open had none.
        let mut tasks: Vec<Task> = Vec::new();
        for (id, ttl) in &plan.refresh {
            let history = self.history(id).await?;
            let rows = history
                .iter()
                .map(HistoryRow::from_entry)
                .collect::<Result<Vec<_>, _>>()?;
            let (workflow, lifecycle): (Vec<HistoryRow>, Vec<HistoryRow>) =
                rows.into_iter().partition(|row| row.workflow);
            let lifecycle: Vec<_> = lifecycle.iter().map(|row| row.values(*ttl)).collect();
            for chunk in lifecycle.chunks(BATCH_ROWS) {
                tasks.push(self.batch_task(
                    &self.statements.insert_alert_history,
                    chunk.to_vec(),
                    format!("setting the TTL of the history of alert {id}"),
                ));
            }
            let workflow: Vec<_> = workflow
                .iter()
                .map(|row| row.workflow_values(*ttl))
                .collect();
            for chunk in workflow.chunks(BATCH_ROWS) {
                tasks.push(self.batch_task(
                    &self.statements.insert_alert_workflow,
                    chunk.to_vec(),
                    format!("setting the TTL of the workflow events of alert {id}"),
                ));
            }
        }
        run_bounded(tasks, MAX_IN_FLIGHT).await
    }

    /// One alert's history: its lifecycle changes and its workflow events merged by
    /// time (a millisecond's lifecycle changes first).
    async fn history(&self, id: &str) -> Result<Vec<AlertHistoryEntry>, StoreError> {
        let rows: Vec<HistorySelect> = self
            .all_rows(
                &self.statements.select_alert_history,
                &text_key(id),
                "alert_history",
            )
            .await?;
        let workflow: Vec<WorkflowSelect> = self
            .all_rows(
                &self.statements.select_alert_workflow,
                &text_key(id),
                "alert_workflow",
            )
            .await?;
        let lifecycle = rows.into_iter().map(|row| history_from_select(id, row));
        let workflow = workflow
            .into_iter()
            .map(|row| workflow_from_select(id, row));
        Ok(merge_history(
            lifecycle.chain(workflow).collect::<Result<Vec<_>, _>>()?,
        ))
    }

    async fn get_alert(&self, id: &str) -> Result<Option<StoredAlert>, StoreError> {
        let row: Option<(String,)> = self
            .one_row(&self.statements.select_alert, text_key(id), "alerts")
            .await?;
        let Some((body,)) = row else {
            return Ok(None);
        };
        let alert = alert_from_body(&body, format!("alerts/{id}"))?;
        let history = self.history(id).await?;
        Ok(Some(StoredAlert { alert, history }))
    }

    async fn query_alerts(&self, query: &AlertQuery) -> Result<Vec<AlertRecord>, StoreError> {
        let limit = query.limit.max(1);
        let mut found = Vec::new();
        let s = &self.statements;
        if let Some(meter) = &query.meter {
            let meter = meter.as_str();
            match query.since_ms {
                Some(since) => {
                    let values = since_values(meter, since);
                    self.for_each_page(
                        &s.select_alerts_by_meter_since,
                        &values,
                        "alerts_by_meter",
                        collect_matching(&mut found, query, limit, "alerts_by_meter"),
                    )
                    .await?;
                }
                None => {
                    self.for_each_page(
                        &s.select_alerts_by_meter,
                        &text_key(meter),
                        "alerts_by_meter",
                        collect_matching(&mut found, query, limit, "alerts_by_meter"),
                    )
                    .await?;
                }
            }
            return Ok(found);
        }

        let days: Vec<(i32,)> = match query.since_ms {
            Some(since) => {
                self.all_rows(
                    &s.select_alert_days_since,
                    &alert_day_values(day_bucket(since)),
                    "alert_days",
                )
                .await?
            }
            None => {
                self.all_rows(&s.select_alert_days, &alert_days_key(), "alert_days")
                    .await?
            }
        };
        // A cursor skips the days after its own (within a day, matches() skips the
        // rows before it).
        let last_day = query.before.as_ref().map(|(at_ms, _)| day_bucket(*at_ms));
        for (day,) in days {
            if last_day.is_some_and(|last| day > last) {
                continue;
            }
            match query.since_ms {
                Some(since) => {
                    let values = since_values(day, since);
                    self.for_each_page(
                        &s.select_alerts_by_day_since,
                        &values,
                        "alerts_by_day",
                        collect_matching(&mut found, query, limit, "alerts_by_day"),
                    )
                    .await?;
                }
                None => {
                    self.for_each_page(
                        &s.select_alerts_by_day,
                        &day_key(day),
                        "alerts_by_day",
                        collect_matching(&mut found, query, limit, "alerts_by_day"),
                    )
                    .await?;
                }
            }
            if found.len() >= limit {
                break;
            }
        }
        Ok(found)
    }

    /// Writes `rows` (already cut into single-partition groups) as one unlogged batch
    /// per group, concurrently.
    async fn write_batches<V>(
        self: &Arc<Self>,
        statement: &PreparedStatement,
        groups: Vec<(Vec<V>, String)>,
    ) -> Result<(), StoreError>
    where
        V: SerializeRow + Send + Sync + 'static,
    {
        let tasks = groups
            .into_iter()
            .map(|(values, context)| self.batch_task(statement, values, context))
            .collect();
        run_bounded(tasks, MAX_IN_FLIGHT).await
    }

    async fn put_meter_rollups(
        self: &Arc<Self>,
        rollups: &[MeterRollup],
    ) -> Result<(), StoreError> {
        let groups = partition_batches(
            rollups,
            |rollup| (rollup.meter, rollup.granularity),
            |rollup| rollup.window_start_ms,
            BATCH_ROWS,
        )
        .into_iter()
        .map(|rows| {
            let context = match rows.first() {
                Some(first) => format!(
                    "writing {} {} rollups of meter {}",
                    rows.len(),
                    first.granularity.as_str(),
                    first.meter
                ),
                None => "writing meter rollups".to_owned(),
            };
            let values: Vec<_> = rows.into_iter().map(meter_rollup_values).collect();
            (values, context)
        })
        .collect();
        self.write_batches(&self.statements.insert_meter_rollup, groups)
            .await
    }

    async fn put_user_rollups(self: &Arc<Self>, rollups: &[UserRollup]) -> Result<(), StoreError> {
        for rollup in rollups {
            check_user_rollup(rollup)?;
        }
        let groups = partition_batches(
            rollups,
            |rollup| (rollup.user, rollup.granularity),
            |rollup| rollup.window_start_ms,
            BATCH_ROWS,
        )
        .into_iter()
        .map(|rows| {
            let context = match rows.first() {
                Some(first) => format!(
                    "writing {} {} rollups of user {}",
                    rows.len(),
                    first.granularity.as_str(),
                    first.user
                ),
                None => "writing user rollups".to_owned(),
            };
            let values: Vec<_> = rows.into_iter().map(user_rollup_values).collect();
            (values, context)
        })
        .collect();
        self.write_batches(&self.statements.insert_user_rollup, groups)
            .await
    }

    /// One page of one rollup partition: `LIMIT` one row more than the page, whose
    /// window start is the next cursor.
    async fn rollup_page<S: Sync, R, Row>(
        &self,
        (statement, table): (&PreparedStatement, &str),
        query: &RollupQuery<S>,
        subject: &str,
        decode: impl Fn(Row) -> Result<R, StoreError> + Send + Sync,
    ) -> Result<RollupPage<R>, StoreError>
    where
        R: Send,
        Row: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata> + HasWindowStart,
    {
        let start_ms = query.start_ms()?;
        let limit = query.limit.max(1);
        let values = rollup_range_values(
            subject,
            query.granularity,
            start_ms,
            query.to_ms,
            limit.saturating_add(1),
        );
        let mut rollups = Vec::with_capacity(limit.min(1000));
        let mut next_start: Option<i64> = None;
        self.for_each_page(statement, &values, table, |rows: Vec<Row>| {
            for row in rows {
                if rollups.len() == limit {
                    next_start = Some(row.window_start_ms());
                    return Ok(ControlFlow::Break(()));
                }
                rollups.push(decode(row)?);
            }
            Ok(ControlFlow::Continue(()))
        })
        .await?;
        Ok(RollupPage {
            rollups,
            next_cursor: next_start.map(rollup_cursor),
        })
    }

    async fn put_stream_offsets(
        self: &Arc<Self>,
        job: &str,
        offsets: &[(u32, u64)],
    ) -> Result<(), StoreError> {
        check_job_name(job)?;
        let groups = partition_batches(offsets, |_| (), |&(partition, _)| partition, BATCH_ROWS)
            .into_iter()
            .map(|rows| {
                let values: Vec<_> = rows
                    .into_iter()
                    .map(|&(partition, offset)| stream_offset_values(job, partition, offset))
                    .collect();
                (values, format!("writing the stream offsets of job {job}"))
            })
            .collect();
        self.write_batches(&self.statements.insert_stream_offset, groups)
            .await
    }

    async fn get_stream_offsets(&self, job: &str) -> Result<Vec<(u32, u64)>, StoreError> {
        check_job_name(job)?;
        let rows: Vec<(i64, i64)> = self
            .all_rows(
                &self.statements.select_stream_offsets,
                &text_key(job),
                "stream_offsets",
            )
            .await?;
        rows.into_iter()
            .map(|row| stream_offset_from_select(job, row))
            .collect()
    }

    async fn append_audit(self: &Arc<Self>, entries: &[AuditEntry]) -> Result<(), StoreError> {
        for entry in entries {
            check_audit_entry(entry)?;
        }
        // 1. The days, first: a read never misses a day whose entries are written.
        let (new_days, new_subject_days) = {
            let known = self
                .known_audit_days
                .lock()
                .map_err(|_| StoreError::Scylla("audit day cache poisoned".into()))?;
            let days: BTreeSet<i32> = entries
                .iter()
                .map(|entry| day_bucket(entry.at_ms))
                .filter(|day| !known.0.contains(day))
                .collect();
            let subject_days: BTreeSet<(String, i32)> = entries
                .iter()
                .map(|entry| (entry.subject.clone(), day_bucket(entry.at_ms)))
                .filter(|key| !known.1.contains(key))
                .collect();
            (days, subject_days)
        };
        let mut tasks: Vec<Task> = Vec::new();
        if !new_days.is_empty() {
            let values: Vec<(i32, i32)> = new_days
                .iter()
                .map(|day| (AUDIT_DAYS_SCOPE, *day))
                .collect();
            tasks.push(self.batch_task(
                &self.statements.insert_audit_day,
                values,
                "writing audit_days".into(),
            ));
        }
        for (subject, day) in &new_subject_days {
            tasks.push(self.execute_task(
                &self.statements.insert_audit_subject_day,
                (subject.clone(), *day),
                format!("writing audit_subject_days for {subject}"),
            ));
        }
        run_bounded(tasks, MAX_IN_FLIGHT).await?;
        if let Ok(mut known) = self.known_audit_days.lock() {
            known.0.extend(new_days);
            known.1.extend(new_subject_days);
        }
        // 2. The entries: one batch per day, and per (subject, day).
        let mut tasks: Vec<Task> = Vec::new();
        let by_time = |entry: &AuditEntry| (entry.at_ms, entry.seq);
        for rows in partition_batches(
            entries,
            |entry| day_bucket(entry.at_ms),
            by_time,
            BATCH_ROWS,
        ) {
            let values: Vec<_> = rows.into_iter().map(audit_values).collect();
            tasks.push(self.batch_task(
                &self.statements.insert_audit,
                values,
                "writing audit_log".into(),
            ));
        }
        for rows in partition_batches(
            entries,
            |entry| (entry.subject.clone(), day_bucket(entry.at_ms)),
            by_time,
            BATCH_ROWS,
        ) {
            let context = match rows.first() {
                Some(first) => format!("writing audit_by_subject for {}", first.subject),
                None => "writing audit_by_subject".to_owned(),
            };
            let values: Vec<_> = rows.into_iter().map(audit_by_subject_values).collect();
            tasks.push(self.batch_task(&self.statements.insert_audit_by_subject, values, context));
        }
        run_bounded(tasks, MAX_IN_FLIGHT).await
    }

    /// The days that may hold entries older than the cursor, newest first; per day, the
    /// cursor's own millisecond (smaller seqs) first, then what is older.
    async fn read_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = query.limit.max(1);
        let s = &self.statements;
        let subject = query.subject.as_deref();
        let last_day = query
            .before
            .map_or(i32::MAX, |(at_ms, _)| day_bucket(at_ms));
        let days: Vec<(i32,)> = match subject {
            Some(subject) => {
                self.all_rows(
                    &s.select_audit_subject_days,
                    &(subject, last_day),
                    "audit_subject_days",
                )
                .await?
            }
            None => {
                self.all_rows(
                    &s.select_audit_days,
                    &(AUDIT_DAYS_SCOPE, last_day),
                    "audit_days",
                )
                .await?
            }
        };
        let mut found: Vec<AuditEntry> = Vec::with_capacity(limit.min(1000));
        for (day,) in days {
            let cursor = query.before.filter(|(at_ms, _)| day_bucket(*at_ms) == day);
            if let Some(before) = cursor {
                let (day, at, seq, page) = audit_same_at_values(day, before, limit - found.len());
                match subject {
                    Some(subject) => {
                        let values = (subject, day, at, seq, page);
                        let statement = &s.select_audit_by_subject_same_at;
                        self.audit_rows(statement, &values, "audit_by_subject", &mut found, limit)
                            .await?;
                    }
                    None => {
                        let values = (day, at, seq, page);
                        let statement = &s.select_audit_same_at;
                        self.audit_rows(statement, &values, "audit_log", &mut found, limit)
                            .await?;
                    }
                }
            }
            if found.len() >= limit {
                break;
            }
            let older_than = cursor.map_or(i64::MAX, |(at_ms, _)| at_ms);
            let (day, at, page) = audit_before_values(day, older_than, limit - found.len());
            match subject {
                Some(subject) => {
                    let values = (subject, day, at, page);
                    let statement = &s.select_audit_by_subject_before;
                    self.audit_rows(statement, &values, "audit_by_subject", &mut found, limit)
                        .await?;
                }
                None => {
                    let values = (day, at, page);
                    let statement = &s.select_audit_before;
                    self.audit_rows(statement, &values, "audit_log", &mut found, limit)
                        .await?;
                }
            }
            if found.len() >= limit {
                break;
            }
        }
        Ok(found)
    }

    /// Reads one audit slice into `found`, up to `limit` entries in all.
    async fn audit_rows<V: SerializeRow + Sync>(
        &self,
        statement: &PreparedStatement,
        values: &V,
        table: &str,
        found: &mut Vec<AuditEntry>,
        limit: usize,
    ) -> Result<(), StoreError> {
        self.for_each_page(statement, values, table, |rows: Vec<AuditSelect>| {
            for row in rows {
                if found.len() >= limit {
                    return Ok(ControlFlow::Break(()));
                }
                found.push(audit_from_select(row, table)?);
            }
            Ok(ControlFlow::Continue(()))
        })
        .await
    }

    async fn put_config(&self, kind: ConfigKind, id: &str, json: &[u8]) -> Result<(), StoreError> {
        let body = std::str::from_utf8(json).map_err(|error| StoreError::BadRequest {
            field: "json",
            reason: format!("configuration documents are JSON text: {error}"),
        })?;
        self.session
            .execute_unpaged(
                &self.statements.insert_config,
                config_values(kind, id, body),
            )
            .await
            .map_err(db_error(format!("writing config {}/{id}", kind.as_str())))?;
        Ok(())
    }

    async fn get_config(&self, kind: ConfigKind, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(String,)> = self
            .one_row(
                &self.statements.select_config,
                config_key(kind, id),
                "config",
            )
            .await?;
        Ok(row.map(|(body,)| body.into_bytes()))
    }

    async fn delete_config(&self, kind: ConfigKind, id: &str) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(&self.statements.delete_config, config_key(kind, id))
            .await
            .map_err(db_error(format!("deleting config {}/{id}", kind.as_str())))?;
        Ok(())
    }

    async fn list_config(&self, kind: ConfigKind) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows: Vec<(String, String)> = self
            .all_rows(
                &self.statements.list_config,
                &text_key(kind.as_str()),
                "config",
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, body)| (id, body.into_bytes()))
            .collect())
    }
}

impl Store for ScyllaStore {
    /// Upserts readings: one unlogged batch per (meter, day) partition and at most
    /// [`BATCH_ROWS`] rows, batches run concurrently; `USING TTL` when configured.
    fn write_readings<'a>(&'a self, readings: &'a [Reading]) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.inner.write_readings(readings).await })
    }

    /// Walks the day partitions of the range in order, with `LIMIT` and paging; the
    /// next cursor is the timestamp of the first reading not returned.
    fn read_readings<'a>(&'a self, query: &'a ReadingQuery) -> StoreFuture<'a, ReadingPage> {
        Box::pin(async move { self.inner.read_readings(query).await })
    }

    fn put_snapshots<'a>(&'a self, snapshots: &'a [SnapshotRow]) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.inner.put_snapshots(snapshots).await })
    }

    fn get_snapshot(&self, meter: MeterId) -> StoreFuture<'_, Option<SnapshotRow>> {
        Box::pin(async move { self.inner.get_snapshot(meter).await })
    }

    fn put_checkpoint(&self, partition: u32, offset: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.inner.put_checkpoint(partition, offset).await })
    }

    fn get_checkpoint(&self, partition: u32) -> StoreFuture<'_, Option<u64>> {
        Box::pin(async move { self.inner.get_checkpoint(partition).await })
    }

    /// Writes the last state of each alert (alerts and both indexes) and every history
    /// entry; resolved alerts get the alerts TTL, on their history too.
    fn write_alert_events<'a>(&'a self, events: &'a [AlertHistoryEntry]) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.inner.write_alert_events(events).await })
    }

    fn get_alert<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<StoredAlert>> {
        Box::pin(async move { self.inner.get_alert(id).await })
    }

    /// With a meter: that meter's partition of `alerts_by_meter`. Without: the days of
    /// `alert_days` (from `since_ms`), newest first, each day's `alerts_by_day`
    /// partition. Kind and state are filtered here; reading stops at the limit.
    fn query_alerts<'a>(&'a self, query: &'a AlertQuery) -> StoreFuture<'a, Vec<AlertRecord>> {
        Box::pin(async move { self.inner.query_alerts(query).await })
    }

    /// Stores the document as `text`: it must be UTF-8 (JSON is).
    fn put_config<'a>(
        &'a self,
        kind: ConfigKind,
        id: &'a str,
        json: &'a [u8],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.inner.put_config(kind, id, json).await })
    }

    fn get_config<'a>(&'a self, kind: ConfigKind, id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move { self.inner.get_config(kind, id).await })
    }

    fn delete_config<'a>(&'a self, kind: ConfigKind, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.inner.delete_config(kind, id).await })
    }

    fn list_config(&self, kind: ConfigKind) -> StoreFuture<'_, Vec<(String, Vec<u8>)>> {
        Box::pin(async move { self.inner.list_config(kind).await })
    }

    /// One unlogged batch per (meter, granularity) partition, at most [`BATCH_ROWS`]
    /// rows, run concurrently; no TTL (rollups are kept).
    fn put_meter_rollups<'a>(&'a self, rollups: &'a [MeterRollup]) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.inner.put_meter_rollups(rollups).await })
    }

    /// One slice of the (meter, granularity) partition with `LIMIT` and paging.
    fn read_meter_rollups<'a>(
        &'a self,
        query: &'a MeterRollupQuery,
    ) -> StoreFuture<'a, RollupPage<MeterRollup>> {
        Box::pin(async move {
            let (meter, granularity) = (query.subject, query.granularity);
            self.inner
                .rollup_page(
                    (&self.inner.statements.select_meter_rollups, "meter_rollups"),
                    query,
                    meter.as_str(),
                    |row: MeterRollupSelect| meter_rollup_from_select(meter, granularity, row),
                )
                .await
        })
    }

    /// As [`Store::put_meter_rollups`], per (user, granularity) partition.
    fn put_user_rollups<'a>(&'a self, rollups: &'a [UserRollup]) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.inner.put_user_rollups(rollups).await })
    }

    fn read_user_rollups<'a>(
        &'a self,
        query: &'a UserRollupQuery,
    ) -> StoreFuture<'a, RollupPage<UserRollup>> {
        Box::pin(async move {
            let (user, granularity) = (query.subject, query.granularity);
            self.inner
                .rollup_page(
                    (&self.inner.statements.select_user_rollups, "user_rollups"),
                    query,
                    user.as_str(),
                    |row: UserRollupSelect| user_rollup_from_select(user, granularity, row),
                )
                .await
        })
    }

    /// Unlogged batches of the job's one partition (one batch up to [`BATCH_ROWS`] log
    /// partitions, so one call is atomic for any usual partition count).
    fn put_stream_offsets<'a>(
        &'a self,
        job: &'a str,
        offsets: &'a [(u32, u64)],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.inner.put_stream_offsets(job, offsets).await })
    }

    fn get_stream_offsets<'a>(&'a self, job: &'a str) -> StoreFuture<'a, Vec<(u32, u64)>> {
        Box::pin(async move { self.inner.get_stream_offsets(job).await })
    }

    /// Days first (`audit_days`, `audit_subject_days`), then one unlogged batch per
    /// day partition of `audit_log` and per (subject, day) of `audit_by_subject`.
    fn append_audit<'a>(&'a self, entries: &'a [AuditEntry]) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.inner.append_audit(entries).await })
    }

    /// Walks the days before the cursor newest first, each a `LIMIT`ed slice of one
    /// partition, until the page is full.
    fn read_audit<'a>(&'a self, query: &'a AuditQuery) -> StoreFuture<'a, Vec<AuditEntry>> {
        Box::pin(async move { self.inner.read_audit(query).await })
    }

    /// A no-op: every write returned only once acknowledged at the configured
    /// consistency, so it is already as durable as the cluster makes it.
    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// A no-op returning 0: retention is enforced by TTLs set at write time
    /// ([`ScyllaConfig::readings_ttl_days`], [`ScyllaConfig::alerts_ttl_days`]); Scylla
    /// expires the rows itself and time-window compaction drops whole days of readings.
    fn apply_retention(&self, _now_ms: i64) -> StoreFuture<'_, u64> {
        Box::pin(async { Ok(0) })
    }
}
