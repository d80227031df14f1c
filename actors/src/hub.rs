//! The alert hub: where every alert change is numbered, indexed and broadcast.
//!
//! Meter actors publish changes here; websocket sessions subscribe; the REST API queries
//! the index. The hub assigns the stream sequence under one lock, so subscribers see
//! events in sequence order. Alerts are rare next to readings, so one lock is cheap.
//! Open alerts are always kept; resolved ones are kept up to `max_resolved` (the store
//! keeps the full history once persistence lands). The most recent numbered events stay
//! in a replay ring ([`crate::stream::ReplayRing`]) with the hub's epoch, so a
//! subscriber can resume after the last sequence it saw.

use std::collections::VecDeque;
use std::sync::Arc;

use gridpulse_domain::{AlertEvent, AlertKind, AlertRecord, AlertState, Severity};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio::sync::broadcast;

use std::sync::OnceLock;

use gridpulse_store::{AlertHistoryEntry, AlertQuery};

use crate::grouper::{BridgeFeeds, GroupConfig, Grouper};
use crate::meter_state::AlertChange;
use crate::metrics;
use crate::stream::{ReplayGap, ReplayRing, StreamEvent};
use crate::usage::FlushFuture;
use crate::writer::{BatchWriter, WriterError};

/// One numbered alert event as the hub shares it (ring, channel, subscribers).
pub type HubEvent = StreamEvent<AlertEvent>;

#[derive(Debug)]
struct HubState {
    stream: ReplayRing<AlertEvent>,
    alerts: FxHashMap<String, AlertRecord>,
    resolved_order: VecDeque<String>,
    grouper: Grouper,
}

/// What a subscriber needs to (re)start, taken under one lock: see
/// [`AlertHub::catch_up`].
#[derive(Debug)]
pub struct AlertCatchUp {
    /// The sequence everything below is current at.
    pub last_seq: u64,
    /// The events after the requested sequence, or why they cannot be replayed.
    pub replay: Option<Result<Vec<Arc<HubEvent>>, ReplayGap>>,
    /// The open alerts at `last_seq` (when asked for, or when the replay failed).
    pub open: Option<Vec<AlertRecord>>,
}

/// Numbers, indexes and broadcasts alert events.
#[derive(Debug)]
pub struct AlertHub {
    state: Mutex<HubState>,
    epoch: Arc<str>,
    sender: broadcast::Sender<Arc<HubEvent>>,
    max_resolved: usize,
    /// Where alert history is persisted, when a store is configured.
    sink: OnceLock<BatchWriter<AlertHistoryEntry>>,
    /// Where every numbered event is forwarded (Kafka's `alerts` topic), if anywhere.
    forwarder: OnceLock<Arc<dyn EventForwarder>>,
}

/// Receives every numbered event in sequence order (a processor forwards them to the
/// `alerts` topic for API replicas). Called under the hub's lock: must not block.
pub trait EventForwarder: Send + Sync + std::fmt::Debug + 'static {
    /// Queues one event.
    fn forward(&self, event: Arc<HubEvent>);
    /// Resolves when every event forwarded before the call is delivered durably.
    fn flush(&self) -> FlushFuture;
}

impl AlertHub {
    /// A hub whose subscribers may lag by up to `channel_capacity` events, which keeps
    /// up to `max_resolved` resolved alerts and the last `replay_capacity` events for
    /// resuming subscribers.
    pub fn new(
        channel_capacity: usize,
        max_resolved: usize,
        replay_capacity: usize,
    ) -> Arc<AlertHub> {
        let (sender, _) = broadcast::channel(channel_capacity.max(16));
        let stream = ReplayRing::new(replay_capacity);
        Arc::new(AlertHub {
            epoch: Arc::clone(stream.epoch()),
            state: Mutex::new(HubState {
                stream,
                alerts: FxHashMap::default(),
                resolved_order: VecDeque::new(),
                grouper: Grouper::new(GroupConfig::default()),
            }),
            sender,
            max_resolved,
            sink: OnceLock::new(),
            forwarder: OnceLock::new(),
        })
    }

    /// Persists every published change through `sink` from now on (set once).
    pub fn set_sink(&self, sink: BatchWriter<AlertHistoryEntry>) {
        let _ = self.sink.set(sink);
    }

    /// Forwards every published event through `forwarder` from now on (set once).
    pub fn set_forwarder(&self, forwarder: Arc<dyn EventForwarder>) {
        let _ = self.forwarder.set(forwarder);
    }

    /// Waits until every change published so far is durable in the store and delivered
    /// by the forwarder.
    pub async fn flush(&self) -> Result<(), WriterError> {
        let forwarded = self.forwarder.get().map(|forwarder| forwarder.flush());
        if let Some(sink) = self.sink.get() {
            sink.flush().await?;
        }
        if let Some(forwarded) = forwarded {
            forwarded.await.map_err(WriterError)?;
        }
        Ok(())
    }

    /// Loads alerts (open ones from the store after a restart) into the index without
    /// broadcasting them.
    pub fn seed(&self, alerts: impl IntoIterator<Item = AlertRecord>) {
        let mut state = self.state.lock();
        let state = &mut *state;
        for alert in alerts {
            state.grouper.seed(&alert);
            state.alerts.insert(alert.id.clone(), alert);
        }
        state.grouper.seed_done();
    }

    /// When a feeder's `no_data` alerts are grouped.
    pub fn set_group_config(&self, config: GroupConfig) {
        self.state.lock().grouper.set_config(config);
    }

    /// The MQTT bridge of this process: which meters it feeds and whether it is down
    /// (their `no_data` alerts are grouped while it is).
    pub fn set_bridge_feeds(&self, feeds: BridgeFeeds) {
        self.state.lock().grouper.set_bridge_feeds(feeds);
    }

    /// Puts `meter` on `feeder` (`None`: none) for grouping. Call before [`AlertHub::seed`]
    /// at start (the seeded alerts are then counted), and whenever a meter's feeder
    /// changes.
    pub fn set_feeder(&self, meter: gridpulse_domain::MeterId, feeder: Option<&str>) {
        let mut state = self.state.lock();
        let state = &mut *state;
        let open_no_data = state
            .alerts
            .values()
            .find(|a| a.meter == meter && a.kind == AlertKind::NoData && a.state.is_open())
            .map(|a| a.id.clone());
        state.grouper.set_feeder(meter, feeder, open_no_data);
    }

    /// The grouping timer (every second): a bridge group whose bridge reconnected
    /// resolves, and each group whose members changed gets one member-count update.
    pub fn tick_groups(&self) {
        let mut changes = Vec::new();
        {
            let mut state = self.state.lock();
            state.grouper.check_bridge(&mut changes);
            state.grouper.tick(&mut changes);
        }
        if !changes.is_empty() {
            self.publish(changes);
        }
    }

    /// The open `no_data_group` alert `id` and its open members' alert ids.
    pub fn group(&self, id: &str) -> Option<(AlertRecord, Vec<String>)> {
        self.state.lock().grouper.group(id)
    }

    /// Acknowledges the open group `id` (idempotent): `None` if it is not open.
    pub fn acknowledge_group(&self, id: &str, by: &str, at_ms: i64) -> Option<AlertRecord> {
        let change = self.state.lock().grouper.acknowledge(id, by, at_ms)?;
        if let Some(change) = change {
            self.publish([change]);
        }
        self.get(id)
    }

    /// Resolves the open group `id` by hand: `None` if it is not open.
    pub fn resolve_group(&self, id: &str, by: &str, at_ms: i64) -> Option<AlertRecord> {
        let change = self.state.lock().grouper.resolve(id, by, at_ms)?;
        let record = change.alert.clone();
        self.publish([change]);
        Some(record)
    }

    /// Publishes changes in order.
    pub fn publish(&self, changes: impl IntoIterator<Item = AlertChange>) {
        let mut state = self.state.lock();
        let sink = self.sink.get();
        let mut to_store = Vec::new();
        // What grouping causes (a group raised or resolved, members tagged), published
        // right after the change that caused it; empty (no allocation) almost always.
        let mut caused: Vec<AlertChange> = Vec::new();
        let mut changes = changes.into_iter();
        loop {
            let mut change = match caused.pop() {
                Some(change) => change,
                None => match changes.next() {
                    Some(change) => change,
                    None => break,
                },
            };
            if change.alert.kind == AlertKind::NoData {
                let state = &mut *state;
                let alerts = &state.alerts;
                let before = caused.len();
                state.grouper.observe(
                    &mut change,
                    &|id: &str| alerts.get(id).cloned(),
                    &mut caused,
                );
                // Published in the order they were caused (popped from the end).
                caused[before..].reverse();
            }
            let AlertChange { event, alert, note } = change;
            if sink.is_some() {
                to_store.push(AlertHistoryEntry::from_event(
                    event,
                    alert.clone(),
                    note.as_ref(),
                ));
            }
            let before = state.alerts.get(&alert.id).map(|old| old.state);
            let open_state =
                |s: Option<AlertState>| s.filter(|s| s.is_open()).map(AlertState::as_str);
            metrics::record_alert_event(
                alert.kind,
                event,
                open_state(before),
                open_state(Some(alert.state)),
            );
            if alert.state == AlertState::Resolved && before.is_none_or(AlertState::is_open) {
                state.resolved_order.push_back(alert.id.clone());
                while state.resolved_order.len() > self.max_resolved {
                    if let Some(oldest) = state.resolved_order.pop_front() {
                        state.alerts.remove(&oldest);
                    }
                }
            }
            state.alerts.insert(alert.id.clone(), alert.clone());
            let seq = state.stream.next_seq();
            let numbered = state.stream.push(AlertEvent {
                seq,
                event,
                alert,
                note,
            });
            if let Some(forwarder) = self.forwarder.get() {
                forwarder.forward(Arc::clone(&numbered));
            }
            // No subscriber is fine: the index above keeps the state.
            let _ = self.sender.send(numbered);
        }
        if let Some(sink) = sink
            && !to_store.is_empty()
            && let Err(error) = sink.try_send(to_store)
        {
            metrics::record_alert_persist_failure();
            tracing::error!(%error, "alert history could not be queued for the store");
        }
    }

    /// Subscribes to events after the returned snapshot: the open alerts now and the
    /// sequence number they are current at. Nothing between the two is lost.
    pub fn subscribe(&self) -> (u64, Vec<AlertRecord>, broadcast::Receiver<Arc<HubEvent>>) {
        let state = self.state.lock();
        let receiver = self.sender.subscribe();
        (state.stream.last_seq(), open_alerts(&state), receiver)
    }

    /// The stream's epoch: distinct per hub instance (a restart, another replica).
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The newest sequence.
    pub fn last_seq(&self) -> u64 {
        self.state.lock().stream.last_seq()
    }

    /// Under one lock: the current sequence, the events after `resume` (if given) from
    /// the replay ring, and the open alerts if `snapshot` is asked for or the replay is
    /// not possible. Everything after `last_seq` comes through the channel (or a later
    /// call), so a subscriber that registered for live events before calling this misses
    /// nothing and skips the live events at or below `last_seq`.
    pub fn catch_up(&self, resume: Option<u64>, snapshot: bool) -> AlertCatchUp {
        let state = self.state.lock();
        let replay = resume.map(|seq| state.stream.after(seq));
        let open = (snapshot || matches!(replay, Some(Err(_)))).then(|| open_alerts(&state));
        AlertCatchUp {
            last_seq: state.stream.last_seq(),
            replay,
            open,
        }
    }

    /// The kept events after `seq`, oldest first.
    pub fn events_after(&self, seq: u64) -> Result<Vec<Arc<HubEvent>>, ReplayGap> {
        self.state.lock().stream.after(seq)
    }

    /// A receiver of every event after the returned sequence (taken under the lock).
    pub fn receiver_at(&self) -> (u64, broadcast::Receiver<Arc<HubEvent>>) {
        let state = self.state.lock();
        (state.stream.last_seq(), self.sender.subscribe())
    }

    /// The meters that have an open alert, each once.
    pub fn meters_with_open_alerts(&self) -> Vec<gridpulse_domain::MeterId> {
        let state = self.state.lock();
        let mut meters: Vec<gridpulse_domain::MeterId> = state
            .alerts
            .values()
            .filter(|alert| alert.state.is_open())
            .map(|alert| alert.meter)
            .collect();
        meters.sort_unstable();
        meters.dedup();
        meters
    }

    /// Open alerts counted by `(kind, state, severity)` (for the dashboard's overview;
    /// a pass over the open alerts under the lock, no allocation per alert).
    pub fn open_counts(&self) -> Vec<(AlertKind, AlertState, Severity, usize)> {
        let state = self.state.lock();
        let mut counts: Vec<(AlertKind, AlertState, Severity, usize)> = Vec::new();
        for alert in state.alerts.values().filter(|alert| alert.state.is_open()) {
            match counts.iter_mut().find(|(kind, state, severity, _)| {
                (*kind, *state, *severity) == (alert.kind, alert.state, alert.severity)
            }) {
                Some(entry) => entry.3 += 1,
                None => counts.push((alert.kind, alert.state, alert.severity, 1)),
            }
        }
        counts.sort_by_key(|(kind, state, severity, _)| (kind.index(), state.as_str(), *severity));
        counts
    }

    /// One alert by id.
    pub fn get(&self, id: &str) -> Option<AlertRecord> {
        self.state.lock().alerts.get(id).cloned()
    }

    /// Alerts matching `filter` (the same filter the store answers), newest (first
    /// seen) first, at most `filter.limit`.
    pub fn query(&self, filter: &AlertQuery) -> Vec<AlertRecord> {
        let limit = filter.limit.max(1);
        let state = self.state.lock();
        let mut found: Vec<&AlertRecord> = state
            .alerts
            .values()
            .filter(|a| filter.matches(a))
            .collect();
        found.sort_by(|a, b| {
            b.first_seen_ms
                .cmp(&a.first_seen_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        found.into_iter().take(limit).cloned().collect()
    }
}

/// The open alerts, newest (first seen) first.
fn open_alerts(state: &HubState) -> Vec<AlertRecord> {
    let mut open: Vec<AlertRecord> = state
        .alerts
        .values()
        .filter(|a| a.state.is_open())
        .cloned()
        .collect();
    open.sort_by(|a, b| {
        b.first_seen_ms
            .cmp(&a.first_seen_ms)
            .then_with(|| a.id.cmp(&b.id))
    });
    open
}
