//! How to reach the Scylla cluster and how to write to it: [`ScyllaConfig`], read from
//! `GRIDPULSE_SCYLLA_*` environment variables or deserialized from a config file.
//!
//! Every value is checked here, once, with an error naming the variable (or field) at
//! fault, so a typo fails at startup instead of as a CQL error under load. The keyspace
//! name is restricted to a plain lowercase CQL identifier because it is spliced into
//! statement text (a keyspace cannot be a bind marker).

use std::fmt;

use scylla::statement::Consistency;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::model::Retention;

/// `host:port` of one or more contact points, comma-separated (required: when unset,
/// the Scylla backend is not configured).
pub const ENV_NODES: &str = "GRIDPULSE_SCYLLA_NODES";
/// Keyspace name (default `gridpulse`).
pub const ENV_KEYSPACE: &str = "GRIDPULSE_SCYLLA_KEYSPACE";
/// User name for password authentication.
pub const ENV_USERNAME: &str = "GRIDPULSE_SCYLLA_USERNAME";
/// Password for password authentication.
pub const ENV_PASSWORD: &str = "GRIDPULSE_SCYLLA_PASSWORD";
/// Consistency level: `one`, `two`, `three`, `quorum`, `all`, `local_quorum`,
/// `each_quorum`, `local_one` (default `local_quorum`).
pub const ENV_CONSISTENCY: &str = "GRIDPULSE_SCYLLA_CONSISTENCY";
/// Replication factor used by `migrate` when it creates the keyspace (default 3).
pub const ENV_REPLICATION_FACTOR: &str = "GRIDPULSE_SCYLLA_REPLICATION_FACTOR";
/// Days raw readings live (TTL); `0` or `none` keeps them forever (default 400).
pub const ENV_READINGS_TTL_DAYS: &str = "GRIDPULSE_SCYLLA_READINGS_TTL_DAYS";
/// Days resolved alerts and their history live (TTL); `0` or `none` keeps them forever
/// (default 400).
pub const ENV_ALERTS_TTL_DAYS: &str = "GRIDPULSE_SCYLLA_ALERTS_TTL_DAYS";

/// The default keyspace.
pub const DEFAULT_KEYSPACE: &str = "gridpulse";
/// The default replication factor of a keyspace created by `migrate`.
pub const DEFAULT_REPLICATION_FACTOR: u32 = 3;
/// Longest TTL Scylla accepts: 20 years (630,720,000 s).
pub const MAX_TTL_DAYS: u32 = 7300;
/// Longest keyspace name CQL accepts.
const MAX_KEYSPACE_LEN: usize = 48;

/// The consistency level of every statement (serializable, unlike the driver's enum).
///
/// Reads and writes use the same level, except [`ScyllaConsistency::EachQuorum`], which
/// Scylla allows for writes only: reads then use `LOCAL_QUORUM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScyllaConsistency {
    /// One replica.
    One,
    /// Two replicas.
    Two,
    /// Three replicas.
    Three,
    /// A majority of all replicas, across datacenters.
    Quorum,
    /// Every replica.
    All,
    /// A majority of the replicas in the coordinator's datacenter (the default).
    #[default]
    LocalQuorum,
    /// A majority in every datacenter (writes; reads use `LOCAL_QUORUM`).
    EachQuorum,
    /// One replica in the coordinator's datacenter.
    LocalOne,
}

impl ScyllaConsistency {
    /// Every level, in the order the error messages list them.
    pub const ALL: [ScyllaConsistency; 8] = [
        ScyllaConsistency::One,
        ScyllaConsistency::Two,
        ScyllaConsistency::Three,
        ScyllaConsistency::Quorum,
        ScyllaConsistency::All,
        ScyllaConsistency::LocalQuorum,
        ScyllaConsistency::EachQuorum,
        ScyllaConsistency::LocalOne,
    ];

    /// The configuration name, e.g. `local_quorum`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScyllaConsistency::One => "one",
            ScyllaConsistency::Two => "two",
            ScyllaConsistency::Three => "three",
            ScyllaConsistency::Quorum => "quorum",
            ScyllaConsistency::All => "all",
            ScyllaConsistency::LocalQuorum => "local_quorum",
            ScyllaConsistency::EachQuorum => "each_quorum",
            ScyllaConsistency::LocalOne => "local_one",
        }
    }

    /// Parses a configuration name, ignoring case and accepting `-` for `_`
    /// (`LOCAL_QUORUM`, `local-quorum`).
    pub fn parse(text: &str) -> Option<ScyllaConsistency> {
        let normalized = text.trim().to_ascii_lowercase().replace('-', "_");
        ScyllaConsistency::ALL
            .into_iter()
            .find(|level| level.as_str() == normalized)
    }

    /// The level of writes.
    pub fn for_writes(self) -> Consistency {
        match self {
            ScyllaConsistency::One => Consistency::One,
            ScyllaConsistency::Two => Consistency::Two,
            ScyllaConsistency::Three => Consistency::Three,
            ScyllaConsistency::Quorum => Consistency::Quorum,
            ScyllaConsistency::All => Consistency::All,
            ScyllaConsistency::LocalQuorum => Consistency::LocalQuorum,
            ScyllaConsistency::EachQuorum => Consistency::EachQuorum,
            ScyllaConsistency::LocalOne => Consistency::LocalOne,
        }
    }

    /// The level of reads (`EACH_QUORUM` is write-only, so it reads at `LOCAL_QUORUM`).
    pub fn for_reads(self) -> Consistency {
        match self {
            ScyllaConsistency::EachQuorum => Consistency::LocalQuorum,
            other => other.for_writes(),
        }
    }
}

impl fmt::Display for ScyllaConsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to reach the cluster and how to write to it.
///
/// `Debug` and `Serialize` never show the password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// Contact points, `host:port` each (`[::1]:9042` for IPv6 literals).
    pub nodes: Vec<String>,
    /// The keyspace: a lowercase CQL identifier (`[a-z][a-z0-9_]*`, at most 48 chars).
    pub keyspace: String,
    /// User name for password authentication (with `password`).
    pub username: Option<String>,
    /// Password for password authentication (with `username`).
    #[serde(skip_serializing)]
    pub password: Option<String>,
    /// Consistency level of every statement.
    pub consistency: ScyllaConsistency,
    /// Replication factor of the keyspace when `migrate` creates it (an existing
    /// keyspace is never altered).
    pub replication_factor: u32,
    /// TTL of raw readings, days from the write; `None` keeps them forever.
    pub readings_ttl_days: Option<u32>,
    /// TTL of resolved alerts and their history, days from the write that resolved
    /// them; open alerts never expire. `None` keeps them forever.
    pub alerts_ttl_days: Option<u32>,
}

impl Default for ScyllaConfig {
    /// One local node, keyspace `gridpulse`, `LOCAL_QUORUM`, replication factor 3 and
    /// the TTLs of [`Retention::default`].
    fn default() -> Self {
        let retention = Retention::default();
        ScyllaConfig {
            nodes: vec!["127.0.0.1:9042".to_owned()],
            keyspace: DEFAULT_KEYSPACE.to_owned(),
            username: None,
            password: None,
            consistency: ScyllaConsistency::default(),
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            readings_ttl_days: retention.readings_days,
            alerts_ttl_days: retention.alerts_days,
        }
    }
}

impl fmt::Debug for ScyllaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaConfig")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("consistency", &self.consistency)
            .field("replication_factor", &self.replication_factor)
            .field("readings_ttl_days", &self.readings_ttl_days)
            .field("alerts_ttl_days", &self.alerts_ttl_days)
            .finish()
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::BadRequest {
        field,
        reason: reason.into(),
    }
}

impl ScyllaConfig {
    /// Reads the `GRIDPULSE_SCYLLA_*` environment variables: `Ok(None)` when
    /// `GRIDPULSE_SCYLLA_NODES` is unset or empty (Scylla not configured), an error
    /// naming the variable when a value is invalid.
    pub fn from_env() -> Result<Option<ScyllaConfig>, StoreError> {
        ScyllaConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`ScyllaConfig::from_env`] over any lookup of variables (tests, config layers).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ScyllaConfig>, StoreError> {
        let get = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let Some(nodes) = get(ENV_NODES) else {
            return Ok(None);
        };
        let defaults = ScyllaConfig::default();
        let nodes: Vec<String> = nodes
            .split(',')
            .map(|node| node.trim().to_owned())
            .filter(|node| !node.is_empty())
            .collect();
        check_nodes(&nodes).map_err(|reason| invalid(ENV_NODES, reason))?;

        let keyspace = get(ENV_KEYSPACE).unwrap_or(defaults.keyspace);
        check_keyspace(&keyspace).map_err(|reason| invalid(ENV_KEYSPACE, reason))?;

        let username = get(ENV_USERNAME);
        // Passwords may legitimately start or end with spaces: only an unset or empty
        // variable counts as absent.
        let password = lookup(ENV_PASSWORD).filter(|value| !value.is_empty());
        match (&username, &password) {
            (Some(_), None) => {
                return Err(invalid(
                    ENV_PASSWORD,
                    format!("is required when {ENV_USERNAME} is set"),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    ENV_USERNAME,
                    format!("is required when {ENV_PASSWORD} is set"),
                ));
            }
            _ => {}
        }

        let consistency = match get(ENV_CONSISTENCY) {
            None => defaults.consistency,
            Some(text) => ScyllaConsistency::parse(&text).ok_or_else(|| {
                invalid(
                    ENV_CONSISTENCY,
                    format!(
                        "`{text}` is not a consistency level: use one of {}",
                        consistency_names()
                    ),
                )
            })?,
        };

        let replication_factor = match get(ENV_REPLICATION_FACTOR) {
            None => defaults.replication_factor,
            Some(text) => match text.parse::<u32>() {
                Ok(factor) if factor >= 1 => factor,
                _ => {
                    return Err(invalid(
                        ENV_REPLICATION_FACTOR,
                        format!("`{text}` is not a positive integer"),
                    ));
                }
            },
        };

        let readings_ttl_days = match get(ENV_READINGS_TTL_DAYS) {
            None => defaults.readings_ttl_days,
            Some(text) => {
                parse_ttl_days(&text).map_err(|reason| invalid(ENV_READINGS_TTL_DAYS, reason))?
            }
        };
        let alerts_ttl_days = match get(ENV_ALERTS_TTL_DAYS) {
            None => defaults.alerts_ttl_days,
            Some(text) => {
                parse_ttl_days(&text).map_err(|reason| invalid(ENV_ALERTS_TTL_DAYS, reason))?
            }
        };

        let config = ScyllaConfig {
            nodes,
            keyspace,
            username,
            password,
            consistency,
            replication_factor,
            readings_ttl_days,
            alerts_ttl_days,
        };
        config.validate()?;
        Ok(Some(config))
    }

    /// Takes the TTLs from a [`Retention`] (the same setting the embedded store uses).
    pub fn with_retention(mut self, retention: Retention) -> ScyllaConfig {
        self.readings_ttl_days = retention.readings_days;
        self.alerts_ttl_days = retention.alerts_days;
        self
    }

    /// Checks every field; errors name the field (`scylla.keyspace`, ...).
    pub fn validate(&self) -> Result<(), StoreError> {
        check_nodes(&self.nodes).map_err(|reason| invalid("scylla.nodes", reason))?;
        check_keyspace(&self.keyspace).map_err(|reason| invalid("scylla.keyspace", reason))?;
        if self.username.is_some() != self.password.is_some() {
            return Err(invalid(
                "scylla.username",
                "username and password must be set together",
            ));
        }
        if self.replication_factor == 0 {
            return Err(invalid("scylla.replication_factor", "must be at least 1"));
        }
        for (field, days) in [
            ("scylla.readings_ttl_days", self.readings_ttl_days),
            ("scylla.alerts_ttl_days", self.alerts_ttl_days),
        ] {
            if let Some(days) = days {
                check_ttl_days(days).map_err(|reason| invalid(field, reason))?;
            }
        }
        Ok(())
    }

    /// The readings TTL in seconds, if any.
    pub fn readings_ttl_seconds(&self) -> Option<i32> {
        ttl_seconds(self.readings_ttl_days)
    }

    /// The TTL of resolved alerts in seconds, if any.
    pub fn alerts_ttl_seconds(&self) -> Option<i32> {
        ttl_seconds(self.alerts_ttl_days)
    }
}

/// Days to a CQL TTL in seconds; `None` and `0` mean no TTL.
fn ttl_seconds(days: Option<u32>) -> Option<i32> {
    days.filter(|days| *days > 0)
        .map(|days| i32::try_from(i64::from(days.min(MAX_TTL_DAYS)) * 86_400).unwrap_or(i32::MAX))
}

fn consistency_names() -> String {
    ScyllaConsistency::ALL
        .iter()
        .map(|level| level.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_ttl_days(text: &str) -> Result<Option<u32>, String> {
    if text.eq_ignore_ascii_case("none") || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let days: u32 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of days (or `none`)"))?;
    if days == 0 {
        return Ok(None);
    }
    check_ttl_days(days)?;
    Ok(Some(days))
}

fn check_ttl_days(days: u32) -> Result<(), String> {
    if days > MAX_TTL_DAYS {
        return Err(format!(
            "{days} days is longer than Scylla's longest TTL ({MAX_TTL_DAYS} days)"
        ));
    }
    Ok(())
}

/// Checks the contact points: at least one, each `host:port` with a non-zero port.
pub(crate) fn check_nodes(nodes: &[String]) -> Result<(), String> {
    if nodes.is_empty() {
        return Err("needs at least one contact point, e.g. `127.0.0.1:9042`".into());
    }
    for node in nodes {
        let Some((host, port)) = node.rsplit_once(':') else {
            return Err(format!("`{node}` is not host:port"));
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("`{node}` has no valid host"));
        }
        match port.parse::<u16>() {
            Ok(port) if port > 0 => {}
            _ => return Err(format!("`{node}` has no valid port (1-65535)")),
        }
    }
    Ok(())
}

/// Checks that `keyspace` is a plain lowercase CQL identifier, safe to splice into
/// statement text and identical quoted or not.
pub(crate) fn check_keyspace(keyspace: &str) -> Result<(), String> {
    let mut chars = keyspace.chars();
    let valid = matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && keyspace.len() <= MAX_KEYSPACE_LEN;
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{keyspace}` is not a keyspace name: use a lowercase letter then lowercase \
             letters, digits or `_`, at most {MAX_KEYSPACE_LEN} characters"
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// `from_lookup` over a fixed set of variables (no process environment: tests run
    /// in parallel).
    fn from_vars(vars: &[(&str, &str)]) -> Result<Option<ScyllaConfig>, StoreError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ScyllaConfig::from_lookup(|name| vars.get(name).cloned())
    }

    fn field_of(error: StoreError) -> &'static str {
        match error {
            StoreError::BadRequest { field, .. } => field,
            other => panic!("expected a BadRequest, got {other}"),
        }
    }

    #[test]
    fn config_from_env_is_none_without_nodes() {
        assert_eq!(from_vars(&[]).unwrap(), None);
        assert_eq!(from_vars(&[(ENV_NODES, "  ")]).unwrap(), None);
        // Other variables alone do not configure Scylla.
        assert_eq!(
            from_vars(&[(ENV_KEYSPACE, "x"), (ENV_CONSISTENCY, "one")]).unwrap(),
            None
        );
    }

    #[test]
    fn config_from_env_defaults() {
        let config = from_vars(&[(ENV_NODES, "10.0.0.1:9042")]).unwrap().unwrap();
        assert_eq!(
            config,
            ScyllaConfig {
                nodes: vec!["10.0.0.1:9042".into()],
                ..ScyllaConfig::default()
            }
        );
        assert_eq!(config.keyspace, "gridpulse");
        assert_eq!(config.consistency, ScyllaConsistency::LocalQuorum);
        assert_eq!(config.replication_factor, 3);
        assert_eq!(config.readings_ttl_days, Retention::default().readings_days);
        assert_eq!(config.alerts_ttl_days, Retention::default().alerts_days);
        assert_eq!(config.username, None);
    }

    #[test]
    fn config_from_env_reads_every_variable() {
        let config = from_vars(&[
            (ENV_NODES, " a.example:9042, [::1]:19042 ,b:1,"),
            (ENV_KEYSPACE, "grid_2"),
            (ENV_USERNAME, "svc"),
            (ENV_PASSWORD, " s3cret "),
            (ENV_CONSISTENCY, "QUORUM"),
            (ENV_REPLICATION_FACTOR, "1"),
            (ENV_READINGS_TTL_DAYS, "30"),
            (ENV_ALERTS_TTL_DAYS, "none"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.nodes, vec!["a.example:9042", "[::1]:19042", "b:1"]);
        assert_eq!(config.keyspace, "grid_2");
        assert_eq!(config.username.as_deref(), Some("svc"));
        assert_eq!(
            config.password.as_deref(),
            Some(" s3cret "),
            "passwords are not trimmed"
        );
        assert_eq!(config.consistency, ScyllaConsistency::Quorum);
        assert_eq!(config.replication_factor, 1);
        assert_eq!(config.readings_ttl_days, Some(30));
        assert_eq!(config.readings_ttl_seconds(), Some(30 * 86_400));
        assert_eq!(config.alerts_ttl_days, None);
        assert_eq!(config.alerts_ttl_seconds(), None);
        let zero = from_vars(&[(ENV_NODES, "a:1"), (ENV_READINGS_TTL_DAYS, "0")])
            .unwrap()
            .unwrap();
        assert_eq!(zero.readings_ttl_days, None);
    }

    #[test]
    fn config_from_env_names_the_invalid_variable() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (&[(ENV_NODES, "localhost")], ENV_NODES, "host:port"),
            (&[(ENV_NODES, "a:9042,b:notaport")], ENV_NODES, "b:notaport"),
            (&[(ENV_NODES, ":9042")], ENV_NODES, "host"),
            (&[(ENV_NODES, "a:0")], ENV_NODES, "port"),
            (
                &[(ENV_NODES, "a:1"), (ENV_KEYSPACE, "Grid")],
                ENV_KEYSPACE,
                "`Grid`",
            ),
            (
                &[(ENV_NODES, "a:1"), (ENV_KEYSPACE, "g-p")],
                ENV_KEYSPACE,
                "lowercase",
            ),
            (
                &[(ENV_NODES, "a:1"), (ENV_KEYSPACE, "1gp")],
                ENV_KEYSPACE,
                "letter",
            ),
            (
                &[(ENV_NODES, "a:1"), (ENV_CONSISTENCY, "most")],
                ENV_CONSISTENCY,
                "local_quorum",
            ),
            (
                &[(ENV_NODES, "a:1"), (ENV_REPLICATION_FACTOR, "0")],
                ENV_REPLICATION_FACTOR,
                "positive",
            ),
            (
                &[(ENV_NODES, "a:1"), (ENV_REPLICATION_FACTOR, "three")],
                ENV_REPLICATION_FACTOR,
                "`three`",
            ),
            (
                &[(ENV_NODES, "a:1"), (ENV_READINGS_TTL_DAYS, "9000")],
                ENV_READINGS_TTL_DAYS,
                "7300",
            ),
            (
                &[(ENV_NODES, "a:1"), (ENV_ALERTS_TTL_DAYS, "-1")],
                ENV_ALERTS_TTL_DAYS,
                "`-1`",
            ),
            (
                &[(ENV_NODES, "a:1"), (ENV_USERNAME, "svc")],
                ENV_PASSWORD,
                ENV_USERNAME,
            ),
            (
                &[(ENV_NODES, "a:1"), (ENV_PASSWORD, "pw")],
                ENV_USERNAME,
                ENV_PASSWORD,
            ),
        ];
        for (vars, variable, detail) in cases {
            let error = from_vars(vars).unwrap_err();
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("{variable}: ")),
                "{vars:?}: {message}"
            );
            assert!(message.contains(detail), "{vars:?}: {message}");
            assert_eq!(field_of(error), *variable);
        }
    }

    #[test]
    fn consistency_names_parse_and_map_to_the_driver() {
        for level in ScyllaConsistency::ALL {
            assert_eq!(ScyllaConsistency::parse(level.as_str()), Some(level));
            assert_eq!(
                ScyllaConsistency::parse(&level.as_str().to_uppercase()),
                Some(level)
            );
            assert_eq!(
                serde_json::to_value(level).unwrap(),
                serde_json::json!(level.as_str())
            );
        }
        assert_eq!(
            ScyllaConsistency::parse("local-quorum"),
            Some(ScyllaConsistency::LocalQuorum)
        );
        assert_eq!(ScyllaConsistency::parse("any"), None);
        assert_eq!(
            ScyllaConsistency::default().for_writes(),
            Consistency::LocalQuorum
        );
        assert_eq!(
            ScyllaConsistency::EachQuorum.for_writes(),
            Consistency::EachQuorum
        );
        assert_eq!(
            ScyllaConsistency::EachQuorum.for_reads(),
            Consistency::LocalQuorum
        );
        assert_eq!(ScyllaConsistency::One.for_reads(), Consistency::One);
    }

    #[test]
    fn validate_names_the_field() {
        assert!(ScyllaConfig::default().validate().is_ok());
        let bad = |config: ScyllaConfig| field_of(config.validate().unwrap_err());
        assert_eq!(
            bad(ScyllaConfig {
                nodes: vec![],
                ..ScyllaConfig::default()
            }),
            "scylla.nodes"
        );
        assert_eq!(
            bad(ScyllaConfig {
                keyspace: "x;DROP".into(),
                ..ScyllaConfig::default()
            }),
            "scylla.keyspace"
        );
        assert_eq!(
            bad(ScyllaConfig {
                keyspace: "k".repeat(49),
                ..ScyllaConfig::default()
            }),
            "scylla.keyspace"
        );
        assert_eq!(
            bad(ScyllaConfig {
                replication_factor: 0,
                ..ScyllaConfig::default()
            }),
            "scylla.replication_factor"
        );
        assert_eq!(
            bad(ScyllaConfig {
                password: Some("pw".into()),
                ..ScyllaConfig::default()
            }),
            "scylla.username"
        );
        assert_eq!(
            bad(ScyllaConfig {
                alerts_ttl_days: Some(MAX_TTL_DAYS + 1),
                ..ScyllaConfig::default()
            }),
            "scylla.alerts_ttl_days"
        );
        assert!(
            ScyllaConfig {
                keyspace: "k".repeat(48),
                ..ScyllaConfig::default()
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn config_never_shows_the_password() {
        let config = ScyllaConfig {
            username: Some("svc".into()),
            password: Some("hunter2".into()),
            ..ScyllaConfig::default()
        };
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && debug.contains("<redacted>"),
            "{debug}"
        );
        let json = serde_json::to_string(&config).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        // A config file round-trips (password supplied separately) and may omit fields.
        let back: ScyllaConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back,
            ScyllaConfig {
                password: None,
                ..config
            }
        );
        let partial: ScyllaConfig =
            serde_json::from_str(r#"{"nodes":["n:9042"],"consistency":"one"}"#).unwrap();
        assert_eq!(partial.consistency, ScyllaConsistency::One);
        assert_eq!(partial.keyspace, DEFAULT_KEYSPACE);
        assert!(serde_json::from_str::<ScyllaConfig>(r#"{"nodez":[]}"#).is_err());
    }

    #[test]
    fn with_retention_sets_both_ttls() {
        let config = ScyllaConfig::default().with_retention(Retention {
            readings_days: Some(7),
            alerts_days: None,
        });
        assert_eq!(
            (config.readings_ttl_days, config.alerts_ttl_days),
            (Some(7), None)
        );
    }
}
