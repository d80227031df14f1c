//! Per-user events — budget thresholds, budget forecasts, prepaid credit, top-ups —
//! and the hub that broadcasts them to websocket clients beside the alerts.
//!
//! Every event has a stable id (the same usage replayed yields the same id) and a
//! per-user sequence number assigned by the user's actor, and is kept in the user's
//! snapshot (the most recent [`MAX_KEPT_EVENTS`]), so `GET /api/users/{id}/events`
//! answers from the actor and a restart neither loses nor repeats a stored event. The
//! actor stores its snapshot *before* broadcasting an event that must happen once per
//! period (a budget threshold, a top-up request), so a crash between the two leaves the
//! event in the log for clients to read, and the replay that follows finds it already
//! recorded.
//!
//! The hub also numbers the whole stream (every user's events, in publish order) with
//! its own sequence, keeps the most recent events in a replay ring with the hub's epoch
//! ([`crate::stream`]) and shares each as one `Arc`, so websocket clients resume after
//! the last stream sequence they saw.

use std::sync::{Arc, OnceLock};

use gridpulse_domain::{
    Amount, BillingPeriodId, CreditEvent, LocalDate, SessionProgress, SessionResult, Streak, UserId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::stream::{ReplayGap, ReplayRing, StreamEvent};
use crate::usage::FlushFuture;

/// One user event numbered in the hub's stream (`seq` of the stream, not the user's).
pub type UserHubEvent = StreamEvent<UserEvent>;

/// How many recent events a user's snapshot keeps.
pub const MAX_KEPT_EVENTS: usize = 200;

/// One event of a user's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserEvent {
    /// Position in the user's stream (monotonic, from 1).
    pub seq: u64,
    /// Stable id: replays of the same usage give the same id.
    pub id: String,
    /// The user.
    pub user: UserId,
    /// Event time, Unix ms (the usage minute that caused it, or the command's time).
    pub at_ms: i64,
    /// What happened (serialized flat, with a `type` field).
    #[serde(flatten)]
    pub body: UserEventBody,
}

/// What a user event says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserEventBody {
    /// Spend reached 70, 90 or 100 % of the monthly budget (once per billing period).
    Budget {
        /// The billing period.
        period: BillingPeriodId,
        /// 70, 90 or 100.
        threshold_percent: u8,
        /// Spend so far in basis points of the budget (10 000 = 100 %).
        used_basis_points: i64,
        /// Spend so far.
        spent: Amount,
        /// The monthly budget.
        budget: Amount,
        /// Where the forecast reaches 100 % (none if not within the period).
        projected_date_budget_reached: Option<LocalDate>,
    },
    /// The projected date the budget is reached changed ("at this rate you reach
    /// 100 % on the 23rd").
    BudgetForecast {
        /// The billing period.
        period: BillingPeriodId,
        /// The new projection (none: not within the period).
        projected_date_budget_reached: Option<LocalDate>,
        /// Spend projected at the period end.
        projected_spend_at_period_end: Amount,
        /// The monthly budget.
        budget: Amount,
    },
    /// Prepaid credit: low, running out within the warning hours, exhausted (raised
    /// and cleared).
    Credit {
        /// What happened, with the meter, balance and threshold.
        event: CreditEvent,
    },
    /// A top-up: completed, an auto top-up requested from the payment gateway,
    /// confirmed or failed.
    TopUp {
        /// What happened, with the meter, id and amount.
        event: CreditEvent,
    },
    /// Live progress in a saving session (after each usage minute in its window).
    SessionProgress {
        /// The session id.
        session: String,
        /// Baseline and actual so far, saved so far.
        progress: SessionProgress,
    },
    /// A saving session's result for the user, with their streak.
    SessionResult {
        /// The session id.
        session: String,
        /// Saved kWh, points.
        result: SessionResult,
        /// The user's streak after it.
        streak: Streak,
    },
}

impl UserEventBody {
    /// The wire name of the event type (`budget`, `budget_forecast`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            UserEventBody::Budget { .. } => "budget",
            UserEventBody::BudgetForecast { .. } => "budget_forecast",
            UserEventBody::Credit { .. } => "credit",
            UserEventBody::TopUp { .. } => "top_up",
            UserEventBody::SessionProgress { .. } => "session_progress",
            UserEventBody::SessionResult { .. } => "session_result",
        }
    }
}

/// Receives every published user event (a processor forwards them to the
/// `user-events` topic for API replicas). Must not block.
pub trait UserEventForwarder: Send + Sync + std::fmt::Debug + 'static {
    /// Queues one event.
    fn forward(&self, event: Arc<UserHubEvent>);
    /// Resolves when every event forwarded before the call is delivered durably.
    fn flush(&self) -> FlushFuture;
}

/// The user events after a resume position, or why they are gone.
pub type UserReplay = Result<Vec<Arc<UserHubEvent>>, ReplayGap>;

/// Broadcasts user events to subscribers (websocket sessions) and to the forwarder, if
/// any. Events carry their user's sequence from the user's actor; the hub numbers the
/// stream as a whole (under its lock, which also orders the broadcast) and keeps the
/// most recent events for replay.
#[derive(Debug)]
pub struct UserEventHub {
    stream: parking_lot::Mutex<ReplayRing<UserEvent>>,
    epoch: Arc<str>,
    sender: broadcast::Sender<Arc<UserHubEvent>>,
    forwarder: OnceLock<Arc<dyn UserEventForwarder>>,
}

impl UserEventHub {
    /// A hub whose subscribers may lag by up to `channel_capacity` events and which keeps
    /// the last `replay_capacity` events for resuming subscribers.
    pub fn new(channel_capacity: usize, replay_capacity: usize) -> Arc<UserEventHub> {
        let (sender, _) = broadcast::channel(channel_capacity.max(16));
        let stream = ReplayRing::new(replay_capacity);
        Arc::new(UserEventHub {
            epoch: Arc::clone(stream.epoch()),
            stream: parking_lot::Mutex::new(stream),
            sender,
            forwarder: OnceLock::new(),
        })
    }

    /// The stream's epoch: distinct per hub instance.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The newest stream sequence.
    pub fn last_seq(&self) -> u64 {
        self.stream.lock().last_seq()
    }

    /// Under one lock: the current stream sequence and the events after `resume` (if
    /// given). Later events come through the channel.
    pub fn catch_up(&self, resume: Option<u64>) -> (u64, Option<UserReplay>) {
        let stream = self.stream.lock();
        (stream.last_seq(), resume.map(|seq| stream.after(seq)))
    }

    /// A receiver of every event after the returned stream sequence (taken under the
    /// lock).
    pub fn receiver_at(&self) -> (u64, broadcast::Receiver<Arc<UserHubEvent>>) {
        let stream = self.stream.lock();
        (stream.last_seq(), self.sender.subscribe())
    }

    /// The kept events after stream sequence `seq`, oldest first.
    pub fn events_after(&self, seq: u64) -> Result<Vec<Arc<UserHubEvent>>, ReplayGap> {
        self.stream.lock().after(seq)
    }

    /// Forwards every event published from now on (set once).
    pub fn set_forwarder(&self, forwarder: Arc<dyn UserEventForwarder>) {
        let _ = self.forwarder.set(forwarder);
    }

    /// Resolves when every event published so far is delivered by the forwarder.
    pub fn flush(&self) -> FlushFuture {
        match self.forwarder.get() {
            Some(forwarder) => forwarder.flush(),
            None => Box::pin(std::future::ready(Ok(()))),
        }
    }

    /// Sends events to every subscriber (none is fine: the users' snapshots keep them).
    pub fn publish(&self, events: impl IntoIterator<Item = UserEvent>) {
        let forwarder = self.forwarder.get();
        let mut stream = self.stream.lock();
        for event in events {
            crate::metrics::record_user_event(event.body.type_name());
            let event = stream.push(event);
            if let Some(forwarder) = forwarder {
                forwarder.forward(Arc::clone(&event));
            }
            let _ = self.sender.send(event);
        }
    }

    /// Sends an event that arrived from elsewhere (an API replica's consumer of the
    /// `user-events` topic) to this hub's subscribers only, numbered in this hub's
    /// stream.
    pub fn relay(&self, event: UserEvent) {
        let mut stream = self.stream.lock();
        let _ = self.sender.send(stream.push(event));
    }

    /// Events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<UserHubEvent>> {
        self.sender.subscribe()
    }
}
