//! Fan-out of hub events to websocket connections: one dispatcher task per process
//! reads both hubs' channels and hands each event to the bounded queue of every
//! connection whose filters it passes, found through an index (by meter for alerts, by
//! user for user events), so an event wakes only the connections that want it.
//!
//! A connection's queue holds `Arc`s of the hubs' events (their wire text is encoded
//! once, by the first connection that sends it). A queue that is full means the client
//! reads slower than events arrive: the connection is dropped from the index and told
//! through its [`ConnectionSignal`], so it can close with a reason instead of holding
//! anybody up — ingest and the other clients never wait for it.
//!
//! Gap-freedom: a connection registers (or changes) its filters here *before* it asks
//! the hubs for its catch-up (`AlertHub::catch_up`), so every event after the catch-up's
//! sequence is either not yet published or still to be dispatched, and reaches its
//! queue; the connection skips queued events at or below the sequence it is at. If the
//! dispatcher itself falls behind a hub's channel, it re-reads the missed events from
//! the hub's replay ring; only if the ring no longer holds them are the affected
//! connections closed (they resume, or get a reset).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gridpulse_actors::user_events::{UserEventHub, UserHubEvent};
use gridpulse_actors::{AlertHub, HubEvent};
use gridpulse_domain::{MeterId, UserId};
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{Notify, mpsc};

use super::subscription::Subscription;

/// Events the dispatcher takes from a channel before it locks the index once for them.
const DISPATCH_BATCH: usize = 256;

/// One queued event for a connection.
#[derive(Debug, Clone)]
pub enum Frame {
    /// An alert event.
    Alert(Arc<HubEvent>),
    /// A user event.
    User(Arc<UserHubEvent>),
}

/// How the dispatcher tells a connection it was dropped.
#[derive(Debug, Default)]
pub struct ConnectionSignal {
    notify: Notify,
    overflowed: AtomicBool,
    lost_stream: AtomicBool,
}

impl ConnectionSignal {
    /// Resolves when the dispatcher dropped the connection.
    pub async fn dropped(&self) {
        self.notify.notified().await;
    }

    /// Whether it was dropped because its queue was full.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Whether it was dropped because the server itself fell behind a hub.
    pub fn lost_stream(&self) -> bool {
        self.lost_stream.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
struct Entry {
    queue: mpsc::Sender<Frame>,
    subscription: Arc<Subscription>,
    signal: Arc<ConnectionSignal>,
}

#[derive(Debug, Default)]
struct Registry {
    connections: FxHashMap<u64, Entry>,
    alerts_by_meter: FxHashMap<MeterId, FxHashSet<u64>>,
    alerts_any_meter: FxHashSet<u64>,
    user_events_by_user: FxHashMap<UserId, FxHashSet<u64>>,
    user_events_any_user: FxHashSet<u64>,
}

impl Registry {
    fn index(&mut self, id: u64, subscription: &Subscription) {
        if subscription.wants("alert") {
            match &subscription.meters {
                None => {
                    self.alerts_any_meter.insert(id);
                }
                Some(meters) => {
                    for meter in meters {
                        self.alerts_by_meter.entry(*meter).or_default().insert(id);
                    }
                }
            }
        }
        if subscription.wants_user_events() {
            match subscription.user {
                None => {
                    self.user_events_any_user.insert(id);
                }
                Some(user) => {
                    self.user_events_by_user.entry(user).or_default().insert(id);
                }
            }
        }
    }

    fn unindex(&mut self, id: u64, subscription: &Subscription) {
        self.alerts_any_meter.remove(&id);
        if let Some(meters) = &subscription.meters {
            for meter in meters {
                if let Some(ids) = self.alerts_by_meter.get_mut(meter) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.alerts_by_meter.remove(meter);
                    }
                }
            }
        }
        self.user_events_any_user.remove(&id);
        if let Some(user) = subscription.user
            && let Some(ids) = self.user_events_by_user.get_mut(&user)
        {
            ids.remove(&id);
            if ids.is_empty() {
                self.user_events_by_user.remove(&user);
            }
        }
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.connections.remove(&id)?;
        self.unindex(id, &entry.subscription);
        Some(entry)
    }

    /// Queues `frame` for `id` if its subscription passes it; the connections whose
    /// queue is full or closed go to `dropped`.
    fn offer(&self, id: u64, frame: &Frame, dropped: &mut Vec<(u64, bool)>) {
        let Some(entry) = self.connections.get(&id) else {
            return;
        };
        let wanted = match frame {
            Frame::Alert(event) => entry.subscription.matches_alert(&event.event.alert),
            Frame::User(event) => entry.subscription.matches_user_event(&event.event),
        };
        if !wanted {
            return;
        }
        match entry.queue.try_send(frame.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => dropped.push((id, true)),
            Err(mpsc::error::TrySendError::Closed(_)) => dropped.push((id, false)),
        }
    }
}

/// The connection registry and the dispatcher's state.
#[derive(Debug)]
pub struct Fanout {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    alerts: Arc<AlertHub>,
    user_events: Arc<UserEventHub>,
    epoch: Arc<str>,
    n_overflowed: AtomicU64,
}

/// A connection's membership; leaves the registry when dropped.
#[derive(Debug)]
pub struct Registration {
    fanout: Arc<Fanout>,
    id: u64,
    /// How the dispatcher says it dropped this connection.
    pub signal: Arc<ConnectionSignal>,
    /// The queue's capacity.
    pub capacity: usize,
}

impl Registration {
    /// Replaces the filters the dispatcher applies (before the caller's catch-up).
    pub fn update(&self, subscription: Arc<Subscription>) {
        let mut registry = self.fanout.registry.lock();
        let registry = &mut *registry;
        if let Some(entry) = registry.connections.get_mut(&self.id) {
            let old = std::mem::replace(&mut entry.subscription, Arc::clone(&subscription));
            registry.unindex(self.id, &old);
            registry.index(self.id, &subscription);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.fanout.registry.lock().remove(self.id);
    }
}

impl Fanout {
    /// A fan-out over both hubs; [`Fanout::run`] must be spawned to deliver anything.
    pub fn new(alerts: Arc<AlertHub>, user_events: Arc<UserEventHub>) -> Arc<Fanout> {
        // One opaque token for both streams' epochs.
        let epoch = Arc::from(format!("{}.{}", alerts.epoch(), user_events.epoch()).as_str());
        Arc::new(Fanout {
            registry: Mutex::default(),
            next_id: AtomicU64::new(1),
            alerts,
            user_events,
            epoch,
            n_overflowed: AtomicU64::new(0),
        })
    }

    /// The alert hub.
    pub fn alerts(&self) -> &Arc<AlertHub> {
        &self.alerts
    }

    /// The user event hub.
    pub fn user_events(&self) -> &Arc<UserEventHub> {
        &self.user_events
    }

    /// The epoch clients resume with (both streams').
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Connections closed so far because their queue overflowed.
    pub fn n_overflowed(&self) -> u64 {
        self.n_overflowed.load(Ordering::Relaxed)
    }

    /// Events waiting in connection queues: in all of them, and in the fullest one
    /// (read when `/metrics` is scraped, never on the event path).
    pub fn queue_depths(&self) -> (usize, usize) {
        let registry = self.registry.lock();
        registry
            .connections
            .values()
            .map(|entry| entry.queue.max_capacity() - entry.queue.capacity())
            .fold((0, 0), |(total, deepest), depth| {
                (total + depth, deepest.max(depth))
            })
    }

    /// Registers a connection with `subscription` and a queue of `capacity` events;
    /// the receiver is where the dispatcher puts its events.
    pub fn register(
        self: &Arc<Fanout>,
        subscription: Arc<Subscription>,
        capacity: usize,
    ) -> (Registration, mpsc::Receiver<Frame>) {
        let capacity = capacity.max(1);
        let (sender, receiver) = mpsc::channel(capacity);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(ConnectionSignal::default());
        let mut registry = self.registry.lock();
        registry.index(id, &subscription);
        registry.connections.insert(
            id,
            Entry {
                queue: sender,
                subscription,
                signal: Arc::clone(&signal),
            },
        );
        let registration = Registration {
            fanout: Arc::clone(self),
            id,
            signal,
            capacity,
        };
        (registration, receiver)
    }

    /// Dispatches both hubs' events until the hubs are gone. Spawned once per process.
    pub async fn run(self: Arc<Fanout>) {
        let (mut alerts_at, mut alerts) = self.alerts.receiver_at();
        let (mut user_events_at, mut user_events) = self.user_events.receiver_at();
        let mut batch_alerts = Vec::with_capacity(DISPATCH_BATCH);
        let mut batch_users = Vec::with_capacity(DISPATCH_BATCH);
        loop {
            tokio::select! {
                received = alerts.recv() => match received {
                    Ok(event) => {
                        batch_alerts.push(event);
                        while batch_alerts.len() < DISPATCH_BATCH {
                            match alerts.try_recv() {
                                Ok(event) => batch_alerts.push(event),
                                Err(TryRecvError::Lagged(_)) => {
                                    self.recover_alerts(&mut alerts_at);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.dispatch_alerts(&mut batch_alerts, &mut alerts_at);
                    }
                    Err(RecvError::Lagged(_)) => self.recover_alerts(&mut alerts_at),
                    Err(RecvError::Closed) => return,
                },
                received = user_events.recv() => match received {
                    Ok(event) => {
                        batch_users.push(event);
                        while batch_users.len() < DISPATCH_BATCH {
                            match user_events.try_recv() {
                                Ok(event) => batch_users.push(event),
                                Err(TryRecvError::Lagged(_)) => {
                                    self.recover_user_events(&mut user_events_at);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.dispatch_user_events(&mut batch_users, &mut user_events_at);
                    }
                    Err(RecvError::Lagged(_)) => self.recover_user_events(&mut user_events_at),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    fn dispatch_alerts(&self, batch: &mut Vec<Arc<HubEvent>>, at: &mut u64) {
        let mut dropped = Vec::new();
        {
            let registry = self.registry.lock();
            for event in batch.iter() {
                // Events re-read from the ring after a lag come again through the channel.
                if event.seq <= *at {
                    continue;
                }
                *at = event.seq;
                let frame = Frame::Alert(Arc::clone(event));
                if let Some(ids) = registry.alerts_by_meter.get(&event.event.alert.meter) {
                    for id in ids {
                        registry.offer(*id, &frame, &mut dropped);
                    }
                }
                for id in &registry.alerts_any_meter {
                    registry.offer(*id, &frame, &mut dropped);
                }
            }
        }
        batch.clear();
        self.drop_connections(dropped, false);
    }

    fn dispatch_user_events(&self, batch: &mut Vec<Arc<UserHubEvent>>, at: &mut u64) {
        let mut dropped = Vec::new();
        {
            let registry = self.registry.lock();
            for event in batch.iter() {
                if event.seq <= *at {
                    continue;
                }
                *at = event.seq;
                let frame = Frame::User(Arc::clone(event));
                if let Some(ids) = registry.user_events_by_user.get(&event.event.user) {
                    for id in ids {
                        registry.offer(*id, &frame, &mut dropped);
                    }
                }
                for id in &registry.user_events_any_user {
                    registry.offer(*id, &frame, &mut dropped);
                }
            }
        }
        batch.clear();
        self.drop_connections(dropped, false);
    }

    /// The dispatcher lagged behind the alert channel: re-reads what it missed from the
    /// ring, or drops every alert subscriber if the ring lost it too.
    fn recover_alerts(&self, at: &mut u64) {
        match self.alerts.events_after(*at) {
            Ok(mut missed) => {
                tracing::warn!(
                    n_missed = missed.len(),
                    "websocket dispatcher lagged; replayed alerts from the ring"
                );
                self.dispatch_alerts(&mut missed, at);
            }
            Err(error) => {
                tracing::error!(%error, "websocket dispatcher lost alert events; closing alert subscribers");
                let ids: Vec<(u64, bool)> = {
                    let registry = self.registry.lock();
                    registry
                        .connections
                        .iter()
                        .filter(|(_, entry)| entry.subscription.wants("alert"))
                        .map(|(id, _)| (*id, false))
                        .collect()
                };
                self.drop_connections(ids, true);
                *at = self.alerts.last_seq();
            }
        }
    }

    fn recover_user_events(&self, at: &mut u64) {
        match self.user_events.events_after(*at) {
            Ok(mut missed) => {
                tracing::warn!(
                    n_missed = missed.len(),
                    "websocket dispatcher lagged; replayed user events from the ring"
                );
                self.dispatch_user_events(&mut missed, at);
            }
            Err(error) => {
                tracing::error!(%error, "websocket dispatcher lost user events; closing user event subscribers");
                let ids: Vec<(u64, bool)> = {
                    let registry = self.registry.lock();
                    registry
                        .connections
                        .iter()
                        .filter(|(_, entry)| entry.subscription.wants_user_events())
                        .map(|(id, _)| (*id, false))
                        .collect()
                };
                self.drop_connections(ids, true);
                *at = self.user_events.last_seq();
            }
        }
    }

    fn drop_connections(&self, dropped: Vec<(u64, bool)>, lost_stream: bool) {
        if dropped.is_empty() {
            return;
        }
        let mut registry = self.registry.lock();
        for (id, overflowed) in dropped {
            let Some(entry) = registry.remove(id) else {
                continue;
            };
            if overflowed {
                self.n_overflowed.fetch_add(1, Ordering::Relaxed);
                crate::metrics::record_websocket_overflow();
                entry.signal.overflowed.store(true, Ordering::Release);
            }
            if lost_stream {
                entry.signal.lost_stream.store(true, Ordering::Release);
            }
            entry.signal.notify.notify_one();
        }
    }
}
