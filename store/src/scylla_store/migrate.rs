//! Schema migrations: the versioned CQL files under `store/cql/` (embedded in the binary
//! with `include_str!`), the statement splitter that reads them, and [`migrate`], which
//! applies the ones a keyspace has not seen yet and records each in `schema_migrations`.
//!
//! Rules for the files: `V{version:03}__{name}.cql`, keyspace-relative statements (they
//! run after `USE <keyspace>`), each harmless to repeat (`IF NOT EXISTS`), because a file
//! interrupted half-way is applied again from the top. An applied file is never edited:
//! its checksum is recorded, and both `migrate` and [`super::ScyllaStore::connect`]
//! refuse a keyspace whose recorded checksum differs from the embedded file's.

use std::collections::BTreeMap;

use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::unprepared::Statement;

use super::config::ScyllaConfig;
use super::rows::migration_values;
use super::statements::{StatementTexts, create_keyspace, create_migrations_table};
use super::{build_session, db_error, rows_of};
use crate::error::StoreError;

/// One embedded schema file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Version, from the file name (`V001` → 1); applied in increasing order.
    pub version: u32,
    /// Name, from the file name (`V001__init.cql` → `init`).
    pub name: &'static str,
    /// The file's CQL text.
    pub cql: &'static str,
}

impl Migration {
    /// The file name, `V001__init.cql`.
    pub fn file_name(&self) -> String {
        format!("V{:03}__{}.cql", self.version, self.name)
    }

    /// The file's statements, split and stripped of comments.
    pub fn statements(&self) -> Result<Vec<String>, StoreError> {
        split_statements(self.cql)
            .map_err(|reason| StoreError::Scylla(format!("schema file {}: {reason}", self.file_name())))
    }

    /// Checksum of the statements (comments and blank lines may change freely; any
    /// change to a statement changes it).
    pub fn checksum(&self) -> Result<i64, StoreError> {
        Ok(checksum(&self.statements()?))
    }
}

/// Every schema file, in version order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    cql: include_str!("../../cql/V001__init.cql"),
}];

/// A migration applied by one [`migrate`] run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Its version.
    pub version: u32,
    /// Its name.
    pub name: String,
    /// How many statements it ran.
    pub statements: usize,
}

/// A migration as recorded in `schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordedMigration {
    pub name: String,
    pub checksum: i64,
}

/// CRC-32 of the statements joined by `;\n`, as a `bigint`.
pub(crate) fn checksum(statements: &[String]) -> i64 {
    i64::from(crc32fast::hash(statements.join(";\n").as_bytes()))
}

/// The migrations of `known` that `recorded` lacks, in order. Refuses when a recorded
/// migration's checksum differs from the embedded file (the file was edited after it
/// was applied: write a new migration instead).
pub(crate) fn pending<'m>(
    known: &'m [Migration],
    recorded: &BTreeMap<u32, RecordedMigration>,
) -> Result<Vec<&'m Migration>, StoreError> {
    let mut pending = Vec::new();
    for migration in known {
        match recorded.get(&migration.version) {
            None => pending.push(migration),
            Some(record) => {
                let checksum = migration.checksum()?;
                if record.checksum != checksum {
                    return Err(StoreError::Scylla(format!(
                        "schema file {} was applied with checksum {} (as `{}`) but the embedded \
                         file has checksum {checksum}: applied files must not change, add a new \
                         migration instead",
                        migration.file_name(),
                        record.checksum,
                        record.name
                    )));
                }
            }
        }
    }
    Ok(pending)
}

/// Checks that the keyspace has every embedded migration (what `connect` requires).
/// Versions the keyspace has but this build does not know (a newer gridpulse migrated
/// it) are allowed: migrations only add.
pub(crate) fn check_current(
    keyspace: &str,
    known: &[Migration],
    recorded: &BTreeMap<u32, RecordedMigration>,
) -> Result<(), StoreError> {
    let missing = pending(known, recorded)?;
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing.iter().map(|migration| migration.file_name()).collect();
    Err(StoreError::Scylla(format!(
        "keyspace `{keyspace}` is missing schema migrations {}: run `gridpulse migrate` first",
        names.join(", ")
    )))
}

/// Splits a CQL file into statements on `;`, ignoring semicolons inside `'strings'`
/// (with `''` escapes), `"quoted identifiers"`, `$$dollar strings$$` and comments
/// (`-- ...`, `// ...`, `/* ... */`). Comments are dropped, statements are trimmed,
/// empty ones skipped; the last statement may omit its `;`. Errors name the line where
/// an unterminated string or comment starts.
pub fn split_statements(text: &str) -> Result<Vec<String>, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Code,
        Quoted(char),
        Dollar,
        LineComment,
        BlockComment,
    }
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut state = State::Code;
    let mut line = 1usize;
    let mut opened_at = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match state {
            State::Code => match c {
                ';' => {
                    let statement = current.trim();
                    if !statement.is_empty() {
                        statements.push(statement.to_owned());
                    }
                    current.clear();
                }
                '\'' | '"' => {
                    state = State::Quoted(c);
                    opened_at = line;
                    current.push(c);
                }
                '$' if chars.peek() == Some(&'$') => {
                    chars.next();
                    state = State::Dollar;
                    opened_at = line;
                    current.push_str("$$");
                }
                '-' if chars.peek() == Some(&'-') => {
                    chars.next();
                    state = State::LineComment;
                }
                '/' if chars.peek() == Some(&'/') => {
                    chars.next();
                    state = State::LineComment;
                }
                '/' if chars.peek() == Some(&'*') => {
                    chars.next();
                    state = State::BlockComment;
                    opened_at = line;
                    current.push(' ');
                }
                _ => current.push(c),
            },
            State::Quoted(quote) => {
                current.push(c);
                if c == quote {
                    if chars.peek() == Some(&quote) {
                        // A doubled quote is an escaped quote, still inside.
                        chars.next();
                        current.push(quote);
                    } else {
                        state = State::Code;
                    }
                }
            }
            State::Dollar => {
                current.push(c);
                if c == '$' && chars.peek() == Some(&'$') {
                    chars.next();
                    current.push('$');
                    state = State::Code;
                }
            }
            State::LineComment => {
                if c == '\n' {
                    state = State::Code;
                    current.push('\n');
                }
            }
            State::BlockComment => {
                if c == '*' && chars.peek() == Some(&'/') {
                    chars.next();
                    state = State::Code;
                }
            }
        }
        if c == '\n' {
            line += 1;
        }
    }
    match state {
        State::Code | State::LineComment => {}
        State::Quoted('\'') => return Err(format!("string opened on line {opened_at} is never closed")),
        State::Quoted(_) => return Err(format!("quoted identifier opened on line {opened_at} is never closed")),
        State::Dollar => return Err(format!("$$ string opened on line {opened_at} is never closed")),
        State::BlockComment => return Err(format!("comment opened on line {opened_at} is never closed")),
    }
    let statement = current.trim();
    if !statement.is_empty() {
        statements.push(statement.to_owned());
    }
    Ok(statements)
}

/// Reads `schema_migrations` (which must exist).
pub(crate) async fn read_recorded(
    session: &Session,
    texts: &StatementTexts,
    consistency: Consistency,
) -> Result<BTreeMap<u32, RecordedMigration>, StoreError> {
    let mut statement = Statement::new(texts.select_migrations.clone());
    statement.set_consistency(consistency);
    let result = session
        .query_unpaged(statement, ())
        .await
        .map_err(db_error("reading schema_migrations"))?;
    let rows: Vec<(i32, String, i64)> = rows_of(result, "schema_migrations")?;
    let mut recorded = BTreeMap::new();
    for (version, name, checksum) in rows {
        let version = u32::try_from(version).map_err(|_| {
            super::rows::corrupt("schema migration", "schema_migrations", format!("version {version}"))
        })?;
        recorded.insert(version, RecordedMigration { name, checksum });
    }
    Ok(recorded)
}

/// Creates the keyspace if it is missing (with the configured replication factor; an
/// existing keyspace is left as it is), creates `schema_migrations`, then applies every
/// embedded schema file not yet recorded there, in version order, recording each one.
///
/// Idempotent: a second run applies nothing and returns an empty list. Refuses a
/// keyspace where an applied file's checksum differs from the embedded one.
pub async fn migrate(config: &ScyllaConfig) -> Result<Vec<AppliedMigration>, StoreError> {
    config.validate()?;
    let keyspace = config.keyspace.as_str();
    let texts = StatementTexts::new(config);
    let session = build_session(config).await?;
    let ddl = |text: &str| Statement::new(text.to_owned());

    session
        .query_unpaged(ddl(&create_keyspace(keyspace, config.replication_factor)), ())
        .await
        .map_err(db_error(format!("creating keyspace `{keyspace}`")))?;
    session
        .use_keyspace(keyspace, true)
        .await
        .map_err(db_error(format!("USE `{keyspace}`")))?;
    session
        .query_unpaged(ddl(&create_migrations_table(keyspace)), ())
        .await
        .map_err(db_error("creating schema_migrations"))?;

    let recorded = read_recorded(&session, &texts, config.consistency.for_reads()).await?;
    let mut applied = Vec::new();
    for migration in pending(MIGRATIONS, &recorded)? {
        let file = migration.file_name();
        let statements = migration.statements()?;
        for (index, cql) in statements.iter().enumerate() {
            session.query_unpaged(ddl(cql), ()).await.map_err(|error| {
                let head: String = cql.split_whitespace().take(6).collect::<Vec<_>>().join(" ");
                StoreError::Scylla(format!(
                    "schema file {file}, statement {} (`{head} ...`): {error}",
                    index + 1
                ))
            })?;
        }
        let mut record = Statement::new(texts.insert_migration.clone());
        record.set_consistency(config.consistency.for_writes());
        let version = i32::try_from(migration.version)
            .map_err(|_| StoreError::Scylla(format!("schema file {file}: version too large")))?;
        session
            .query_unpaged(
                record,
                migration_values(version, migration.name, checksum(&statements), statements.len(), now_ms()),
            )
            .await
            .map_err(db_error(format!("recording {file} in schema_migrations")))?;
        tracing::info!(keyspace, file, statements = statements.len(), "applied schema migration");
        applied.push(AppliedMigration {
            version: migration.version,
            name: migration.name.to_owned(),
            statements: statements.len(),
        });
    }
    session
        .await_schema_agreement()
        .await
        .map_err(db_error("waiting for schema agreement"))?;
    Ok(applied)
}

/// Wall-clock now, Unix ms (for `applied_at` only).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}
