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
        split_statements(self.cql).map_err(|reason| {
            StoreError::Scylla(format!("schema file {}: {reason}", self.file_name()))
        })
    }

    /// Checksum of the statements (comments and blank lines may change freely; any
    /// change to a statement changes it).
    pub fn checksum(&self) -> Result<i64, StoreError> {
        Ok(checksum(&self.statements()?))
    }
}

/// Every schema file, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        cql: include_str!("../../cql/V001__init.cql"),
    },
    Migration {
        version: 2,
        name: "rollups",
        cql: include_str!("../../cql/V002__rollups.cql"),
    },
    Migration {
        version: 3,
        name: "alert_workflow",
        cql: include_str!("../../cql/V003__alert_workflow.cql"),
    },
    Migration {
        version: 4,
        name: "audit_log",
        cql: include_str!("../../cql/V004__audit_log.cql"),
    },
];

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
    let names: Vec<String> = missing
        .iter()
        .map(|migration| migration.file_name())
        .collect();
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
        State::Quoted('\'') => {
            return Err(format!("string opened on line {opened_at} is never closed"));
        }
        State::Quoted(_) => {
            return Err(format!(
                "quoted identifier opened on line {opened_at} is never closed"
            ));
        }
        State::Dollar => {
            return Err(format!(
                "$$ string opened on line {opened_at} is never closed"
            ));
        }
        State::BlockComment => {
            return Err(format!(
                "comment opened on line {opened_at} is never closed"
            ));
        }
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
            super::rows::corrupt(
                "schema migration",
                "schema_migrations",
                format!("version {version}"),
            )
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
        .query_unpaged(
            ddl(&create_keyspace(keyspace, config.replication_factor)),
            (),
        )
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
                migration_values(
                    version,
                    migration.name,
                    checksum(&statements),
                    statements.len(),
                    now_ms(),
                ),
            )
            .await
            .map_err(db_error(format!("recording {file} in schema_migrations")))?;
        tracing::info!(
            keyspace,
            file,
            statements = statements.len(),
            "applied schema migration"
        );
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
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: Migration = Migration {
        version: 1,
        name: "one",
        cql: "-- first\nCREATE TABLE IF NOT EXISTS a (x int PRIMARY KEY);",
    };
    const V2: Migration = Migration {
        version: 2,
        name: "two",
        cql: "CREATE TABLE IF NOT EXISTS b (y int PRIMARY KEY);\nCREATE TABLE IF NOT EXISTS c (z int PRIMARY KEY);",
    };

    fn recorded(entries: &[(&Migration, Option<i64>)]) -> BTreeMap<u32, RecordedMigration> {
        entries
            .iter()
            .map(|(migration, checksum)| {
                (
                    migration.version,
                    RecordedMigration {
                        name: migration.name.to_owned(),
                        checksum: checksum.unwrap_or_else(|| migration.checksum().unwrap()),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn split_statements_splits_on_semicolons_and_trims() {
        assert_eq!(
            split_statements("CREATE TABLE a (x int);\n\n  CREATE TABLE b (y int) ;\n").unwrap(),
            vec!["CREATE TABLE a (x int)", "CREATE TABLE b (y int)"]
        );
        // The last statement may omit its semicolon; empty statements vanish.
        assert_eq!(
            split_statements(";; SELECT 1 ;;\nSELECT 2").unwrap(),
            vec!["SELECT 1", "SELECT 2"]
        );
        assert!(split_statements("").unwrap().is_empty());
        assert!(
            split_statements("  \n -- only a comment; really\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn split_statements_keeps_semicolons_inside_strings_and_identifiers() {
        assert_eq!(
            split_statements(
                "INSERT INTO t (a) VALUES ('x;y''z -- no /* no');SELECT \"we;ird\"\"s\" FROM t;"
            )
            .unwrap(),
            vec![
                "INSERT INTO t (a) VALUES ('x;y''z -- no /* no')",
                "SELECT \"we;ird\"\"s\" FROM t"
            ]
        );
        assert_eq!(
            split_statements(
                "CREATE FUNCTION f() RETURNS int LANGUAGE lua AS $$ return 1; $$;\nSELECT 1;"
            )
            .unwrap(),
            vec![
                "CREATE FUNCTION f() RETURNS int LANGUAGE lua AS $$ return 1; $$",
                "SELECT 1"
            ]
        );
        // A single `$` is ordinary text.
        assert_eq!(
            split_statements("SELECT $a; SELECT 2").unwrap(),
            vec!["SELECT $a", "SELECT 2"]
        );
    }

    #[test]
    fn split_statements_drops_comments() {
        let text = "-- header; with a semicolon\n// another; comment\nCREATE TABLE a ( -- trailing; comment\n  x int /* inline; */, y int\n);\n/* block;\n comment */ SELECT 1; -- end";
        assert_eq!(
            split_statements(text).unwrap(),
            vec!["CREATE TABLE a ( \n  x int  , y int\n)", "SELECT 1"]
        );
        // `-` and `/` alone are not comments.
        assert_eq!(
            split_statements("SELECT a - 1 / 2;").unwrap(),
            vec!["SELECT a - 1 / 2"]
        );
    }

    #[test]
    fn split_statements_names_the_line_of_an_unterminated_string_or_comment() {
        assert_eq!(
            split_statements("SELECT 1;\nINSERT INTO t (a) VALUES ('oops);\n").unwrap_err(),
            "string opened on line 2 is never closed"
        );
        assert_eq!(
            split_statements("\n\nSELECT \"x FROM t;").unwrap_err(),
            "quoted identifier opened on line 3 is never closed"
        );
        assert_eq!(
            split_statements("SELECT 1; /* never\nclosed").unwrap_err(),
            "comment opened on line 1 is never closed"
        );
        assert_eq!(
            split_statements("AS $$ body;").unwrap_err(),
            "$$ string opened on line 1 is never closed"
        );
        let bad = Migration {
            version: 9,
            name: "bad",
            cql: "SELECT 'x",
        };
        let error = bad.statements().unwrap_err().to_string();
        assert!(
            error.contains("V009__bad.cql") && error.contains("line 1"),
            "{error}"
        );
    }

    #[test]
    fn shipped_migrations_are_numbered_in_order_idempotent_and_keyspace_relative() {
        assert!(!MIGRATIONS.is_empty());
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                migration.version as usize,
                index + 1,
                "versions are 1, 2, 3, ... without gaps"
            );
            assert!(
                migration
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                migration.name
            );
            let statements = migration.statements().unwrap();
            assert!(!statements.is_empty(), "{}", migration.file_name());
            for statement in statements {
                assert!(
                    statement.starts_with("CREATE TABLE IF NOT EXISTS ")
                        || statement.starts_with("CREATE INDEX IF NOT EXISTS ")
                        || statement.starts_with("CREATE TYPE IF NOT EXISTS "),
                    "{}: statements must be safe to repeat: {statement}",
                    migration.file_name()
                );
                assert!(
                    !statement.contains('.') || statement.contains("'class'"),
                    "{}: keyspace-relative names only: {statement}",
                    migration.file_name()
                );
                assert!(
                    !statement.to_ascii_uppercase().contains("KEYSPACE"),
                    "{statement}"
                );
            }
        }
    }

    #[test]
    fn every_cql_file_is_embedded_and_identical() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cql");
        let mut on_disk: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "cql"))
            .map(|path| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&path).unwrap())
            })
            .collect();
        on_disk.sort();
        let embedded: Vec<(String, String)> = MIGRATIONS
            .iter()
            .map(|migration| (migration.file_name(), migration.cql.to_owned()))
            .collect();
        assert_eq!(
            on_disk,
            embedded,
            "add new files in {} to MIGRATIONS",
            dir.display()
        );
    }

    #[test]
    fn checksum_ignores_comments_but_not_statements() {
        let plain = Migration {
            cql: "CREATE TABLE IF NOT EXISTS a (x int PRIMARY KEY);",
            ..V1
        };
        assert_eq!(plain.checksum().unwrap(), V1.checksum().unwrap());
        let changed = Migration {
            cql: "CREATE TABLE IF NOT EXISTS a (x bigint PRIMARY KEY);",
            ..V1
        };
        assert_ne!(changed.checksum().unwrap(), V1.checksum().unwrap());
    }

    #[test]
    fn pending_skips_recorded_migrations_and_refuses_edited_files() {
        let known = [V1, V2];
        let versions =
            |pending: Vec<&Migration>| pending.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(
            versions(pending(&known, &BTreeMap::new()).unwrap()),
            vec![1, 2]
        );
        assert_eq!(
            versions(pending(&known, &recorded(&[(&V1, None)])).unwrap()),
            vec![2]
        );
        // Running again after everything is recorded applies nothing.
        assert!(
            pending(&known, &recorded(&[(&V1, None), (&V2, None)]))
                .unwrap()
                .is_empty()
        );
        let error = pending(&known, &recorded(&[(&V1, Some(12345))]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("V001__one.cql") && error.contains("must not change"),
            "{error}"
        );
    }

    #[test]
    fn check_current_names_missing_migrations_and_allows_newer_ones() {
        let known = [V1, V2];
        let error = check_current("gp", &known, &recorded(&[(&V1, None)]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "scylla: keyspace `gp` is missing schema migrations V002__two.cql: run `gridpulse migrate` first"
        );
        let error = check_current("gp", &known, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("V001__one.cql, V002__two.cql"), "{error}");
        // A keyspace migrated by a newer gridpulse (V3 unknown here) is fine.
        let v3 = Migration {
            version: 3,
            name: "three",
            cql: "CREATE TABLE IF NOT EXISTS d (w int PRIMARY KEY);",
        };
        check_current(
            "gp",
            &known,
            &recorded(&[(&V1, None), (&V2, None), (&v3, None)]),
        )
        .unwrap();
    }
}
