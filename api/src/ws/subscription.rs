//! What one websocket connection receives: its filters as asked for, and the effective
//! subscription after the caller's tenancy restricted them.
//!
//! A consumer principal (`Principal::tenant()` is their user) sees only alerts of the
//! meters they own and only their own user events, whatever they ask for: meters they do
//! not own and other users are dropped from the effective filters (no error, so a client
//! cannot probe which meters exist). Ownership is the meter configuration's `owner`,
//! read when the connection subscribes and again every [`OWNERSHIP_REFRESH`].

use std::time::Duration;

use gridpulse_actors::system::MeterConfig;
use gridpulse_actors::user_events::UserEvent;
use gridpulse_domain::{AlertKind, AlertRecord, MeterId, Severity, UserId};
use gridpulse_store::ConfigKind;
use rustc_hash::FxHashSet;
use serde::Serialize;

use crate::state::AppState;

/// How often a consumer's set of owned meters is read again.
pub const OWNERSHIP_REFRESH: Duration = Duration::from_secs(30);

/// Event types a client can ask for (all by default).
pub const EVENT_TYPES: [&str; 7] = [
    "alert",
    "budget",
    "budget_forecast",
    "credit",
    "top_up",
    "session_progress",
    "session_result",
];

/// The user event types (everything but `alert`).
pub fn is_user_event_type(name: &str) -> bool {
    name != "alert" && EVENT_TYPES.contains(&name)
}

/// Filters as a client asked for them (query parameters or a `subscribe` message).
#[derive(Debug, Clone, PartialEq)]
pub struct Filters {
    /// Alerts of these meters only (`None`: every meter).
    pub meters: Option<Vec<MeterId>>,
    /// User events of this user only (`None`: every user; alerts are not filtered by it).
    pub user: Option<UserId>,
    /// Alerts of these kinds only.
    pub kinds: Option<Vec<AlertKind>>,
    /// Alerts at least this severe.
    pub min_severity: Severity,
    /// Event types (`None`: all).
    pub types: Option<Vec<&'static str>>,
}

impl Default for Filters {
    fn default() -> Filters {
        Filters {
            meters: None,
            user: None,
            kinds: None,
            min_severity: Severity::Info,
            types: None,
        }
    }
}

/// The filters one connection is served with, after tenancy.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// Alerts of these meters only (`None`: every meter).
    pub meters: Option<FxHashSet<MeterId>>,
    /// User events of this user only (`None`: every user).
    pub user: Option<UserId>,
    /// Alerts of these kinds only.
    pub kinds: Option<Vec<AlertKind>>,
    /// Alerts at least this severe.
    pub min_severity: Severity,
    /// Event types (`None`: all).
    pub types: Option<Vec<&'static str>>,
    /// The consumer this subscription is restricted to, if any.
    pub tenant: Option<UserId>,
}

impl Subscription {
    /// Whether events of type `type_name` are wanted at all.
    pub fn wants(&self, type_name: &str) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.contains(&type_name))
    }

    /// Whether any user event type is wanted.
    pub fn wants_user_events(&self) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.iter().any(|name| is_user_event_type(name)))
    }

    /// Whether `alert` passes. A `no_data` alert grouped into a `no_data_group` alert
    /// (`group` set) passes only subscriptions that name its meter: the others get the
    /// group alert instead.
    pub fn matches_alert(&self, alert: &AlertRecord) -> bool {
        let grouped = alert.group.is_some() && alert.kind == AlertKind::NoData;
        self.wants("alert")
            && !(grouped && self.meters.is_none())
            && self
                .meters
                .as_ref()
                .is_none_or(|meters| meters.contains(&alert.meter))
            && self
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.contains(&alert.kind))
            && alert.severity >= self.min_severity
    }

    /// Whether `event` passes.
    pub fn matches_user_event(&self, event: &UserEvent) -> bool {
        self.wants(event.body.type_name()) && self.user.is_none_or(|user| user == event.user)
    }

    /// The effective filters as sent back in `subscribed` (meters sorted).
    pub fn echo(&self) -> FiltersEcho<'_> {
        let mut meters: Option<Vec<&str>> = self
            .meters
            .as_ref()
            .map(|meters| meters.iter().map(MeterId::as_str).collect());
        if let Some(meters) = meters.as_mut() {
            meters.sort_unstable();
        }
        FiltersEcho {
            meters,
            user: self.user.as_ref().map(UserId::as_str),
            kinds: self
                .kinds
                .as_ref()
                .map(|kinds| kinds.iter().map(|kind| kind.as_str()).collect()),
            min_severity: severity_name(self.min_severity),
            types: self.types.clone(),
        }
    }
}

/// The wire form of effective filters.
#[derive(Debug, Serialize)]
pub struct FiltersEcho<'a> {
    meters: Option<Vec<&'a str>>,
    user: Option<&'a str>,
    kinds: Option<Vec<&'static str>>,
    min_severity: &'static str,
    types: Option<Vec<&'static str>>,
}

/// The wire name of a severity.
pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// Parses a severity name.
pub fn parse_severity(text: &str) -> Option<Severity> {
    match text {
        "info" => Some(Severity::Info),
        "warning" => Some(Severity::Warning),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

/// The effective subscription of `filters` for a caller restricted to `tenant` (or
/// none): a consumer's meters are intersected with `owned` (which the caller read with
/// [`owned_meters`]), and a consumer asking for another user's events gets no user
/// events.
pub fn effective(
    filters: &Filters,
    tenant: Option<UserId>,
    owned: Option<&FxHashSet<MeterId>>,
) -> Subscription {
    let mut subscription = Subscription {
        meters: filters
            .meters
            .as_ref()
            .map(|meters| meters.iter().copied().collect()),
        user: filters.user,
        kinds: filters.kinds.clone(),
        min_severity: filters.min_severity,
        types: filters.types.clone(),
        tenant,
    };
    let Some(tenant) = tenant else {
        return subscription;
    };
    let owned = owned.cloned().unwrap_or_default();
    subscription.meters = Some(match subscription.meters.take() {
        None => owned,
        Some(asked) => asked.intersection(&owned).copied().collect(),
    });
    match subscription.user {
        Some(user) if user != tenant => {
            // Another user's events: none at all, rather than an error.
            let types = subscription
                .types
                .take()
                .unwrap_or_else(|| EVENT_TYPES.to_vec());
            subscription.types = Some(
                types
                    .into_iter()
                    .filter(|name| !is_user_event_type(name))
                    .collect(),
            );
            subscription.user = Some(tenant);
        }
        _ => subscription.user = Some(tenant),
    }
    subscription
}

/// The meters `tenant` owns, among `asked` if given (each looked up), else among every
/// meter with a stored configuration (one scan of the meter configurations). Without a
/// store no meter has an owner, so the set is empty.
pub async fn owned_meters(
    state: &AppState,
    tenant: UserId,
    asked: Option<&[MeterId]>,
) -> FxHashSet<MeterId> {
    let mut owned = FxHashSet::default();
    match asked {
        Some(asked) => {
            for meter in asked {
                match state.meters.meter_config(*meter).await {
                    Ok(config) if config.owner == Some(tenant) => {
                        owned.insert(*meter);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%meter, %error, "meter ownership not readable; meter left out");
                    }
                }
            }
        }
        None => {
            let Some(store) = &state.store else {
                return owned;
            };
            match store.list_config(ConfigKind::Meter).await {
                Ok(configs) => {
                    for (id, json) in configs {
                        let Ok(config) = serde_json::from_slice::<MeterConfig>(&json) else {
                            continue;
                        };
                        if config.owner == Some(tenant)
                            && let Ok(meter) = MeterId::new(&id)
                        {
                            owned.insert(meter);
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "meter ownership not readable; no meters this time");
                }
            }
        }
    }
    owned
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn meter(id: &str) -> MeterId {
        MeterId::new(id).unwrap()
    }

    #[test]
    fn a_consumer_keeps_only_their_meters_and_their_own_events() {
        let (alice, bob) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
        let owned: FxHashSet<MeterId> = [meter("m-1"), meter("m-2")].into_iter().collect();
        let asked = Filters {
            meters: Some(vec![meter("m-2"), meter("m-3")]),
            user: Some(bob),
            ..Filters::default()
        };
        let restricted = effective(&asked, Some(alice), Some(&owned));
        assert_eq!(
            restricted.meters,
            Some([meter("m-2")].into_iter().collect())
        );
        assert_eq!(restricted.user, Some(alice));
        assert!(!restricted.wants_user_events());
        assert!(restricted.wants("alert"));

        let everything = effective(&Filters::default(), Some(alice), Some(&owned));
        assert_eq!(everything.meters, Some(owned.clone()));
        assert_eq!(everything.user, Some(alice));
        assert!(everything.wants_user_events());

        let nothing_owned = effective(&Filters::default(), Some(alice), None);
        assert_eq!(nothing_owned.meters, Some(FxHashSet::default()));

        // Operators get what they asked for.
        let ops = effective(&asked, None, None);
        assert_eq!(ops.user, Some(bob));
        assert_eq!(ops.meters.unwrap().len(), 2);
    }
}
