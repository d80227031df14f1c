//! Grouping of per-meter `no_data` alerts (inhibition, issue 7): while the MQTT bridge
//! is cut off from its broker, or a large share of one feeder's meters are silent, their
//! `no_data` alerts are *members* of one `no_data_group` alert.
//!
//! The grouper lives inside the [`AlertHub`](crate::hub::AlertHub)'s lock and sees every
//! `no_data` change before it is numbered: it stamps a member's record with its group's
//! id (`group`), and raises, updates and resolves the group alert itself. Members stay
//! real alerts (index, store, history, commands), but the websocket hands them only to
//! subscribers that named their meter; everybody else gets the group alert.
//!
//! * Cause `mqtt_bridge`: the bridge is disconnected and a meter it has heard of raises
//!   `no_data`; resolves when the bridge is connected again.
//! * Cause `feeder:<name>`: at least `max(min_members, ⌈share × size⌉)` of the feeder's
//!   registered meters have an open `no_data`; the open ones join at once; resolves when
//!   fewer are open.
//!
//! A member stays a member (tagged, not pushed one by one) until its own `no_data`
//! resolves, even after the group resolved; `no_data` raised after that is not grouped
//! unless a new group forms. The group alert: `meter` = the cause (`mqtt_bridge`,
//! `feeder:<name>`), id `{cause}.no_data_group.{first_seen_ms}` (the event time of the
//! member that formed it, or the bridge's disconnection), `value` = members open now,
//! `count` = members ever, `threshold` = the feeder's threshold (1 for the bridge).
//! Member-count updates are coalesced into at most one `updated` event per group per
//! [`Grouper::tick`] (every second).

use std::sync::Arc;

use gridpulse_domain::{AlertEventKind, AlertKind, AlertRecord, AlertState, MeterId, alert_id};
use rustc_hash::FxHashMap;

use crate::meter_state::{AlertChange, SYSTEM_ACTOR};

/// The cause id of the bridge group.
pub const BRIDGE_CAUSE: &str = "mqtt_bridge";
/// Who resolves a group whose cause cleared.
const GROUPER: &str = SYSTEM_ACTOR;

/// When `no_data` alerts of one feeder are grouped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupConfig {
    /// Share of a feeder's meters that must be silent (default 0.5).
    pub share: f64,
    /// And at least this many meters (default 3).
    pub min_members: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            share: 0.5,
            min_members: 3,
        }
    }
}

/// What the grouper asks of the MQTT bridge of this process, live (never stale by a
/// timer): called under the hub's lock, so it must be quick and must not block.
pub trait BridgeProbe: Send + Sync + 'static {
    /// Whether the bridge feeds `meter` (it heard of it).
    fn feeds(&self, meter: &MeterId) -> bool;
    /// `Some(since_ms)` while the bridge has lost its broker; `None` while connected
    /// or before it ever connected (a bridge starting up is no cause).
    fn down_since_ms(&self) -> Option<i64>;
    /// When it last connected, Unix ms.
    fn connected_at_ms(&self) -> Option<i64>;
}

/// The probe of the bridge, shared.
pub type BridgeFeeds = Arc<dyn BridgeProbe>;

#[derive(Debug)]
struct OpenGroup {
    record: AlertRecord,
    /// Members whose `no_data` is open → that alert's id.
    open_members: FxHashMap<MeterId, String>,
    /// Changed since the last `updated` event.
    dirty: bool,
}

/// The grouping state (see the module docs).
pub(crate) struct Grouper {
    config: GroupConfig,
    feeder_of: FxHashMap<MeterId, Arc<str>>,
    feeder_size: FxHashMap<Arc<str>, usize>,
    /// Meters with an open `no_data` (→ its alert id), per feeder.
    silent_by_feeder: FxHashMap<Arc<str>, FxHashMap<MeterId, String>>,
    /// Tagged members (until their `no_data` resolves) → (group id, alert id).
    member_of: FxHashMap<MeterId, (String, String)>,
    /// Open groups by cause.
    groups: FxHashMap<String, OpenGroup>,
    bridge: Option<BridgeFeeds>,
}

impl std::fmt::Debug for Grouper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grouper")
            .field("config", &self.config)
            .field("groups", &self.groups.len())
            .field("members", &self.member_of.len())
            .finish_non_exhaustive()
    }
}

impl Grouper {
    pub(crate) fn new(config: GroupConfig) -> Grouper {
        Grouper {
            config,
            feeder_of: FxHashMap::default(),
            feeder_size: FxHashMap::default(),
            silent_by_feeder: FxHashMap::default(),
            member_of: FxHashMap::default(),
            groups: FxHashMap::default(),
            bridge: None,
        }
    }

    pub(crate) fn set_config(&mut self, config: GroupConfig) {
        self.config = config;
    }

    pub(crate) fn set_bridge_feeds(&mut self, feeds: BridgeFeeds) {
        self.bridge = Some(feeds);
    }

    /// The feeder's threshold: how many silent meters make a group.
    fn threshold(&self, feeder: &str) -> usize {
        let size = self.feeder_size.get(feeder).copied().unwrap_or(0);
        let share = (self.config.share * size as f64).ceil() as usize;
        share.max(self.config.min_members).max(1)
    }

    /// Puts `meter` on `feeder` (`None`: on none). `open_no_data`: the id of its open
    /// `no_data` now, if any (counted for its new feeder).
    pub(crate) fn set_feeder(
        &mut self,
        meter: MeterId,
        feeder: Option<&str>,
        open_no_data: Option<String>,
    ) {
        if let Some(old) = self.feeder_of.remove(&meter) {
            if let Some(size) = self.feeder_size.get_mut(&old) {
                *size = size.saturating_sub(1);
            }
            if let Some(silent) = self.silent_by_feeder.get_mut(&old) {
                silent.remove(&meter);
            }
        }
        if let Some(feeder) = feeder {
            let feeder: Arc<str> = match self.feeder_size.get_key_value(feeder) {
                Some((key, _)) => Arc::clone(key),
                None => Arc::from(feeder),
            };
            *self.feeder_size.entry(Arc::clone(&feeder)).or_default() += 1;
            if let Some(id) = open_no_data {
                self.silent_by_feeder
                    .entry(Arc::clone(&feeder))
                    .or_default()
                    .insert(meter, id);
            }
            self.feeder_of.insert(meter, feeder);
        }
    }

    /// Rebuilds from alerts loaded at start (open groups, tagged members).
    pub(crate) fn seed(&mut self, alert: &AlertRecord) {
        if !alert.state.is_open() {
            return;
        }
        match alert.kind {
            AlertKind::NoDataGroup => {
                let cause = alert.meter.as_str().to_owned();
                self.groups.entry(cause).or_insert_with(|| OpenGroup {
                    record: alert.clone(),
                    open_members: FxHashMap::default(),
                    dirty: false,
                });
            }
            AlertKind::NoData => {
                if let Some(feeder) = self.feeder_of.get(&alert.meter) {
                    self.silent_by_feeder
                        .entry(Arc::clone(feeder))
                        .or_default()
                        .insert(alert.meter, alert.id.clone());
                }
                if let Some(group) = &alert.group {
                    self.member_of
                        .insert(alert.meter, (group.clone(), alert.id.clone()));
                    if let Some(open) = self.groups.values_mut().find(|g| &g.record.id == group) {
                        open.open_members.insert(alert.meter, alert.id.clone());
                    }
                }
            }
            _ => {}
        }
    }

    /// Seeds the members of groups seeded before them (the order of `seed` is free).
    pub(crate) fn seed_done(&mut self) {
        for (meter, (group_id, alert_id)) in &self.member_of {
            if let Some(open) = self.groups.values_mut().find(|g| &g.record.id == group_id) {
                open.open_members.insert(*meter, alert_id.clone());
            }
        }
    }

    /// Looks at one change before it is numbered: stamps a member's `no_data` record
    /// with its group and pushes what that causes (a group raised or resolved, members
    /// tagged after the fact) onto `more`, to be published after it. `index` finds an
    /// alert in the hub's index by id.
    pub(crate) fn observe(
        &mut self,
        change: &mut AlertChange,
        index: &dyn Fn(&str) -> Option<AlertRecord>,
        more: &mut Vec<AlertChange>,
    ) {
        if change.alert.kind != AlertKind::NoData {
            return;
        }
        let meter = change.alert.meter;
        let feeder = self.feeder_of.get(&meter).cloned();
        if !change.alert.state.is_open() {
            if let Some(feeder) = &feeder
                && let Some(silent) = self.silent_by_feeder.get_mut(feeder)
            {
                silent.remove(&meter);
            }
            if let Some((group_id, _)) = self.member_of.remove(&meter) {
                change.alert.group = Some(group_id.clone());
                if let Some(group) = self.groups.values_mut().find(|g| g.record.id == group_id) {
                    group.open_members.remove(&meter);
                    group.dirty = true;
                }
            }
            // A feeder whose silent share fell below its threshold is back.
            if let Some(feeder) = feeder {
                let cause = feeder_cause(&feeder);
                let silent = self.silent_by_feeder.get(&feeder).map_or(0, |s| s.len());
                if silent < self.threshold(&feeder)
                    && let Some(group) = self.groups.remove(&cause)
                {
                    let at_ms = change
                        .alert
                        .resolved_at_ms
                        .unwrap_or(change.alert.last_seen_ms);
                    more.push(resolve_group(group, GROUPER, at_ms));
                }
            }
            return;
        }
        if let Some(feeder) = &feeder {
            self.silent_by_feeder
                .entry(Arc::clone(feeder))
                .or_default()
                .insert(meter, change.alert.id.clone());
        }
        if let Some((group_id, _)) = self.member_of.get(&meter) {
            change.alert.group = Some(group_id.clone());
            return;
        }
        // Not a member yet: does a cause hold?
        let bridge_down_since = self
            .bridge
            .as_ref()
            .and_then(|bridge| bridge.down_since_ms().filter(|_| bridge.feeds(&meter)));
        let cause = if bridge_down_since.is_some() {
            Some((BRIDGE_CAUSE.to_owned(), None))
        } else {
            feeder.as_ref().and_then(|feeder| {
                let silent = self.silent_by_feeder.get(feeder).map_or(0, |s| s.len());
                (silent >= self.threshold(feeder)).then(|| (feeder_cause(feeder), Some(feeder)))
            })
        };
        let Some((cause, feeder)) = cause else {
            return;
        };
        if !self.groups.contains_key(&cause) {
            let (first_seen_ms, threshold) = match feeder {
                Some(feeder) => (change.alert.first_seen_ms, self.threshold(feeder)),
                None => (bridge_down_since.unwrap_or(change.alert.first_seen_ms), 1),
            };
            let Ok(cause_id) = MeterId::new(&cause) else {
                return;
            };
            let record = group_record(cause_id, first_seen_ms, threshold as f64);
            more.push(AlertChange::lifecycle(
                AlertEventKind::Raised,
                record.clone(),
            ));
            self.groups.insert(
                cause.clone(),
                OpenGroup {
                    record,
                    open_members: FxHashMap::default(),
                    dirty: true,
                },
            );
            // The feeder's meters already silent join now (tagged by an update).
            if let Some(feeder) = feeder {
                let others: Vec<(MeterId, String)> = self
                    .silent_by_feeder
                    .get(feeder)
                    .map(|silent| {
                        silent
                            .iter()
                            .filter(|(m, _)| **m != meter)
                            .map(|(m, id)| (*m, id.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                for (other, id) in others {
                    if self.member_of.contains_key(&other) {
                        continue;
                    }
                    if let Some(mut record) = index(&id).filter(|r| r.state.is_open()) {
                        self.join(&cause, other, &id);
                        record.group = self.member_of.get(&other).map(|(g, _)| g.clone());
                        more.push(AlertChange::lifecycle(AlertEventKind::Updated, record));
                    }
                }
            }
        }
        let id = change.alert.id.clone();
        self.join(&cause, meter, &id);
        change.alert.group = self.member_of.get(&meter).map(|(g, _)| g.clone());
    }

    fn join(&mut self, cause: &str, meter: MeterId, alert_id: &str) {
        if let Some(group) = self.groups.get_mut(cause) {
            group.open_members.insert(meter, alert_id.to_owned());
            group.record.count += 1;
            group.dirty = true;
            self.member_of
                .insert(meter, (group.record.id.clone(), alert_id.to_owned()));
        }
    }

    /// A bridge group whose bridge is connected again resolves (at its reconnection).
    pub(crate) fn check_bridge(&mut self, more: &mut Vec<AlertChange>) {
        let Some(bridge) = &self.bridge else {
            return;
        };
        if bridge.down_since_ms().is_none()
            && let Some(group) = self.groups.remove(BRIDGE_CAUSE)
        {
            let at_ms = bridge
                .connected_at_ms()
                .unwrap_or(group.record.first_seen_ms);
            more.push(resolve_group(group, GROUPER, at_ms));
        }
    }

    /// One `updated` event per group whose members changed since the last tick.
    pub(crate) fn tick(&mut self, more: &mut Vec<AlertChange>) {
        for group in self.groups.values_mut().filter(|group| group.dirty) {
            group.dirty = false;
            let open = group.open_members.len() as f64;
            if group.record.value != open {
                group.record.value = open;
                more.push(AlertChange::lifecycle(
                    AlertEventKind::Updated,
                    group.record.clone(),
                ));
            }
        }
    }

    /// The open group with this id: its record and its open members' `no_data` alert
    /// ids (sorted).
    pub(crate) fn group(&self, id: &str) -> Option<(AlertRecord, Vec<String>)> {
        let group = self.groups.values().find(|group| group.record.id == id)?;
        let mut members: Vec<String> = group.open_members.values().cloned().collect();
        members.sort_unstable();
        Some((group.record.clone(), members))
    }

    /// Acknowledges the open group `id` (idempotent); answers the change, if any.
    pub(crate) fn acknowledge(
        &mut self,
        id: &str,
        by: &str,
        at_ms: i64,
    ) -> Option<Option<AlertChange>> {
        let group = self
            .groups
            .values_mut()
            .find(|group| group.record.id == id)?;
        if group.record.state != AlertState::Firing {
            return Some(None);
        }
        group.record.state = AlertState::Acknowledged;
        group.record.acknowledged_by = Some(by.to_owned());
        group.record.acknowledged_at_ms = Some(at_ms);
        Some(Some(AlertChange::lifecycle(
            AlertEventKind::Acknowledged,
            group.record.clone(),
        )))
    }

    /// Resolves the open group `id` by hand; answers the change.
    pub(crate) fn resolve(&mut self, id: &str, by: &str, at_ms: i64) -> Option<AlertChange> {
        let cause = self
            .groups
            .iter()
            .find(|(_, group)| group.record.id == id)
            .map(|(cause, _)| cause.clone())?;
        let group = self.groups.remove(&cause)?;
        Some(resolve_group(group, by, at_ms))
    }
}

fn feeder_cause(feeder: &str) -> String {
    format!("feeder:{feeder}")
}

fn group_record(cause: MeterId, first_seen_ms: i64, threshold: f64) -> AlertRecord {
    AlertRecord {
        id: alert_id(&cause, AlertKind::NoDataGroup, first_seen_ms),
        meter: cause,
        kind: AlertKind::NoDataGroup,
        severity: AlertKind::NoDataGroup.default_severity(),
        state: AlertState::Firing,
        first_seen_ms,
        last_seen_ms: first_seen_ms,
        count: 0,
        value: 0.0,
        threshold,
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

fn resolve_group(group: OpenGroup, by: &str, at_ms: i64) -> AlertChange {
    let mut record = group.record;
    record.value = group.open_members.len() as f64;
    record.state = AlertState::Resolved;
    record.resolved_by = Some(by.to_owned());
    record.resolved_at_ms = Some(at_ms.max(record.first_seen_ms));
    AlertChange::lifecycle(AlertEventKind::Resolved, record)
}

#[cfg(test)]
mod tests {
    use gridpulse_domain::{AlertEventKind, AlertKind, AlertRecord, AlertState, MeterId, alert_id};

    use crate::hub::AlertHub;
    use crate::meter_state::AlertChange;

    fn no_data(meter: &str, first_seen_ms: i64, state: AlertState) -> AlertChange {
        let meter = MeterId::new(meter).unwrap();
        let mut record = super::group_record(meter, first_seen_ms, 0.0);
        record.kind = AlertKind::NoData;
        record.id = alert_id(&meter, AlertKind::NoData, first_seen_ms);
        record.state = state;
        let event = if state.is_open() {
            AlertEventKind::Raised
        } else {
            AlertEventKind::Resolved
        };
        AlertChange::lifecycle(event, record)
    }

    #[derive(Default)]
    struct TestBridge(parking_lot::Mutex<(Option<i64>, Option<i64>)>);

    impl TestBridge {
        fn set(&self, down_since_ms: Option<i64>, connected_at_ms: Option<i64>) {
            *self.0.lock() = (down_since_ms, connected_at_ms);
        }
    }

    impl super::BridgeProbe for TestBridge {
        fn feeds(&self, meter: &MeterId) -> bool {
            meter.as_str() != "http"
        }
        fn down_since_ms(&self) -> Option<i64> {
            self.0.lock().0
        }
        fn connected_at_ms(&self) -> Option<i64> {
            self.0.lock().1
        }
    }

    fn events(hub: &AlertHub) -> Vec<(AlertEventKind, AlertKind, String, Option<String>)> {
        hub.events_after(0)
            .unwrap()
            .iter()
            .map(|e| {
                let a: &AlertRecord = &e.event.alert;
                (e.event.event, a.kind, a.meter.to_string(), a.group.clone())
            })
            .collect()
    }

    #[test]
    fn while_the_bridge_is_down_its_meters_no_data_join_one_group_until_it_is_back() {
        let hub = AlertHub::new(64, 64, 64);
        let bridge = std::sync::Arc::new(TestBridge::default());
        hub.set_bridge_feeds(bridge.clone());
        // Before the bridge ever connected (starting up): no cause.
        bridge.set(None, None);
        hub.publish([no_data("before", 10, AlertState::Firing)]);
        bridge.set(Some(1_000), Some(500));
        hub.publish([
            no_data("a", 2_000, AlertState::Firing),
            no_data("b", 2_500, AlertState::Firing),
            no_data("http", 2_600, AlertState::Firing),
        ]);
        hub.tick_groups();
        let group = "mqtt_bridge.no_data_group.1000".to_owned();
        let (record, members) = hub.group(&group).expect("the bridge group is open");
        assert_eq!(members, vec!["a.no_data.2000", "b.no_data.2500"]);
        assert_eq!((record.value, record.count), (2.0, 2));
        // Back: the group resolves; its members stay tagged until they resolve.
        bridge.set(None, Some(5_000));
        hub.tick_groups();
        hub.publish([no_data("a", 2_000, AlertState::Resolved)]);
        hub.publish([no_data("c", 6_000, AlertState::Firing)]);
        let seen = events(&hub);
        let tagged = Some(group.clone());
        assert_eq!(
            seen,
            vec![
                (
                    AlertEventKind::Raised,
                    AlertKind::NoData,
                    "before".into(),
                    None
                ),
                (
                    AlertEventKind::Raised,
                    AlertKind::NoData,
                    "a".into(),
                    tagged.clone()
                ),
                (
                    AlertEventKind::Raised,
                    AlertKind::NoDataGroup,
                    "mqtt_bridge".into(),
                    None
                ),
                (
                    AlertEventKind::Raised,
                    AlertKind::NoData,
                    "b".into(),
                    tagged.clone()
                ),
                (
                    AlertEventKind::Raised,
                    AlertKind::NoData,
                    "http".into(),
                    None
                ),
                (
                    AlertEventKind::Updated,
                    AlertKind::NoDataGroup,
                    "mqtt_bridge".into(),
                    None
                ),
                (
                    AlertEventKind::Resolved,
                    AlertKind::NoDataGroup,
                    "mqtt_bridge".into(),
                    None
                ),
                (
                    AlertEventKind::Resolved,
                    AlertKind::NoData,
                    "a".into(),
                    tagged
                ),
                (AlertEventKind::Raised, AlertKind::NoData, "c".into(), None),
            ]
        );
        assert_eq!(hub.get(&group).unwrap().resolved_at_ms, Some(5_000));
    }

    #[test]
    fn a_restart_rebuilds_open_groups_and_members_from_the_seeded_alerts() {
        let hub = AlertHub::new(64, 64, 64);
        for n in 1..=4 {
            hub.set_feeder(MeterId::new(&format!("m{n}")).unwrap(), Some("F"));
        }
        for n in 1..=3 {
            hub.publish([no_data(&format!("m{n}"), 100, AlertState::Firing)]);
        }
        hub.tick_groups();
        let group = "feeder:F.no_data_group.100";
        assert_eq!(hub.group(group).unwrap().1.len(), 3);
        let open: Vec<AlertRecord> = hub
            .events_after(0)
            .unwrap()
            .iter()
            .map(|e| e.event.alert.clone())
            .rev()
            .collect();
        // A new hub fed the stored open alerts (newest copies first, like the store).
        let restarted = AlertHub::new(64, 64, 64);
        for n in 1..=4 {
            restarted.set_feeder(MeterId::new(&format!("m{n}")).unwrap(), Some("F"));
        }
        let mut latest = std::collections::BTreeMap::new();
        for alert in open {
            latest.entry(alert.id.clone()).or_insert(alert);
        }
        restarted.seed(latest.into_values());
        assert_eq!(restarted.group(group).unwrap().1.len(), 3);
        // One member back is below the threshold (3 of 4 → 2): the group resolves.
        restarted.publish([no_data("m1", 100, AlertState::Resolved)]);
        assert!(restarted.group(group).is_none());
        assert_eq!(restarted.get(group).unwrap().state, AlertState::Resolved);
    }
}
