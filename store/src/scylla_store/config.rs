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
                    format!("`{text}` is not a consistency level: use one of {}", consistency_names()),
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
            Some(text) => parse_ttl_days(&text).map_err(|reason| invalid(ENV_READINGS_TTL_DAYS, reason))?,
        };
        let alerts_ttl_days = match get(ENV_ALERTS_TTL_DAYS) {
            None => defaults.alerts_ttl_days,
            Some(text) => parse_ttl_days(&text).map_err(|reason| invalid(ENV_ALERTS_TTL_DAYS, reason))?,
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
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
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
