//! The bridge's own connection and each meter's link, readable from Rust.
//!
//! A meter is *online* once it said `online` on its status topic or sent a reading
//! since it last said `offline` (its last will, published by the broker when the
//! meter's keep-alive ran out). Reading gaps are judged by the caller against
//! `last_reading_ms` (the meter actors' `no_data` alert does this for alerts).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use gridpulse_domain::MeterId;
use parking_lot::Mutex;

use crate::metrics;

/// Where a meter's live link changes go beyond [`BridgeStatus`]: in embedded mode the
/// meter actors (an `offline` last will raises the meter's `no_data` alert at once,
/// `online` clears it).
///
/// The bridge calls it after the batch's readings are in the log and acknowledges the
/// status message only once the returned future says the change is durable, so a crash
/// in between redelivers it (the persistent session). Only live transitions come here:
/// a retained status delivered because the bridge (re)subscribed may be arbitrarily
/// old and only updates [`BridgeStatus`].
pub trait LinkSink: Send + Sync + std::fmt::Debug + 'static {
    /// `meter`'s link went up (`online`) or down at wall-clock `at_ms`.
    fn link_changed(
        &self,
        meter: MeterId,
        online: bool,
        at_ms: i64,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
}

/// What the bridge knows of one meter's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MeterLink {
    /// Online per its status topic and readings.
    pub online: bool,
    /// When the bridge last received a reading from it, Unix ms (`None`: never).
    pub last_reading_ms: Option<i64>,
    /// When its status last changed, Unix ms.
    pub changed_ms: i64,
}

#[derive(Debug, Default)]
struct Inner {
    connected: AtomicBool,
    /// Unix ms of the last CONNACK; 0 before the first.
    last_connected_ms: AtomicI64,
    /// Unix ms the connection was last lost; 0 if never.
    last_disconnected_ms: AtomicI64,
    readings_accepted: AtomicU64,
    messages_acked: AtomicU64,
    dead_letters: AtomicU64,
    meters: Mutex<HashMap<MeterId, MeterLink>>,
}

/// A cheap handle on the bridge's state (clone it freely).
#[derive(Debug, Clone, Default)]
pub struct BridgeStatus {
    inner: Arc<Inner>,
}

/// A serializable view of the bridge (`GET /api/mqtt/status`, tests).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BridgeSnapshot {
    /// Connected to the broker now.
    pub connected: bool,
    /// Last time it connected, Unix ms.
    pub last_connected_ms: Option<i64>,
    /// Last time it lost its connection, Unix ms.
    pub last_disconnected_ms: Option<i64>,
    /// Readings appended since start.
    pub readings_accepted: u64,
    /// Messages acknowledged to the broker since start.
    pub messages_acked: u64,
    /// Dead letters written since start.
    pub dead_letters: u64,
    /// Meters online now.
    pub meters_online: usize,
    /// Meters the bridge heard of that are offline now (their last will, or `offline`).
    pub meters_offline: usize,
    /// Meters seen since start.
    pub meters_known: usize,
}

impl BridgeStatus {
    /// A fresh status (disconnected, no meters).
    pub fn new() -> BridgeStatus {
        BridgeStatus::default()
    }

    /// Connected to the broker now.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// Last time the bridge connected, Unix ms.
    pub fn last_connected_ms(&self) -> Option<i64> {
        match self.inner.last_connected_ms.load(Ordering::Acquire) {
            0 => None,
            at_ms => Some(at_ms),
        }
    }

    /// Last time the bridge lost its connection, Unix ms.
    pub fn last_disconnected_ms(&self) -> Option<i64> {
        match self.inner.last_disconnected_ms.load(Ordering::Acquire) {
            0 => None,
            at_ms => Some(at_ms),
        }
    }

    /// Readings appended to the log since start.
    pub fn readings_accepted(&self) -> u64 {
        self.inner.readings_accepted.load(Ordering::Acquire)
    }

    /// Messages acknowledged (PUBACK) since start.
    pub fn messages_acked(&self) -> u64 {
        self.inner.messages_acked.load(Ordering::Acquire)
    }

    /// Dead letters written since start.
    pub fn dead_letters(&self) -> u64 {
        self.inner.dead_letters.load(Ordering::Acquire)
    }

    /// One meter's link, if the bridge heard of it.
    pub fn meter(&self, meter: &MeterId) -> Option<MeterLink> {
        self.inner.meters.lock().get(meter).copied()
    }

    /// Every known meter's link.
    pub fn meters(&self) -> Vec<(MeterId, MeterLink)> {
        let mut meters: Vec<_> = self
            .inner
            .meters
            .lock()
            .iter()
            .map(|(id, link)| (*id, *link))
            .collect();
        meters.sort_unstable_by_key(|(id, _)| *id);
        meters
    }

    /// The counters in one view.
    pub fn snapshot(&self) -> BridgeSnapshot {
        let meters = self.inner.meters.lock();
        BridgeSnapshot {
            connected: self.is_connected(),
            last_connected_ms: self.last_connected_ms(),
            last_disconnected_ms: self.last_disconnected_ms(),
            readings_accepted: self.readings_accepted(),
            messages_acked: self.messages_acked(),
            dead_letters: self.dead_letters(),
            meters_online: meters.values().filter(|link| link.online).count(),
            meters_offline: meters.values().filter(|link| !link.online).count(),
            meters_known: meters.len(),
        }
    }

    pub(crate) fn set_connected(&self, connected: bool, now_ms: i64) {
        let was = self.inner.connected.swap(connected, Ordering::AcqRel);
        if connected {
            self.inner
                .last_connected_ms
                .store(now_ms, Ordering::Release);
        } else if was {
            self.inner
                .last_disconnected_ms
                .store(now_ms, Ordering::Release);
        }
        if was != connected || !connected {
            metrics::record_mqtt_connected(connected);
        }
    }

    pub(crate) fn record_batch(&self, readings: u64, acked: u64, dead_letters: u64) {
        self.inner
            .readings_accepted
            .fetch_add(readings, Ordering::AcqRel);
        self.inner.messages_acked.fetch_add(acked, Ordering::AcqRel);
        self.inner
            .dead_letters
            .fetch_add(dead_letters, Ordering::AcqRel);
    }

    /// Applies a batch's link news: readings heard (meter, newest reading ts is not
    /// used: arrival time counts) and status messages, in arrival order.
    pub(crate) fn record_links(&self, news: &[(MeterId, LinkNews)], now_ms: i64) {
        if news.is_empty() {
            return;
        }
        let mut meters = self.inner.meters.lock();
        for (meter, news) in news {
            let link = meters.entry(*meter).or_insert(MeterLink {
                online: false,
                last_reading_ms: None,
                changed_ms: now_ms,
            });
            let online = match news {
                LinkNews::Reading => {
                    link.last_reading_ms = Some(now_ms);
                    true
                }
                LinkNews::Status(online) => *online,
            };
            if link.online != online {
                link.online = online;
                link.changed_ms = now_ms;
            }
        }
        metrics::record_mqtt_meters_online(meters.values().filter(|link| link.online).count());
    }
}

/// What one message says about its meter's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkNews {
    /// A live reading arrived.
    Reading,
    /// The meter (or its last will) said online/offline.
    Status(bool),
}
