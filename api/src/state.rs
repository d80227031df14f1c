//! What every handler can reach: the log, the meter system, limits, the clock, how
//! callers are authenticated and the websocket fan-out.

use std::sync::Arc;

use gridpulse_actors::user_events::UserEventHub;
use gridpulse_actors::{Clock, MeterSystem, UserSystem};
use gridpulse_domain::Limits;
use gridpulse_ingest::ReadingLog;
use gridpulse_store::Store;

/// Shared application state (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppState {
    /// Where accepted readings go.
    pub log: ReadingLog,
    /// The meter actors.
    pub meters: MeterSystem,
    /// The user actors (`None` on an API-only replica: processors host them).
    pub users: Option<UserSystem>,
    /// Where user events reach websocket clients: the user actors' hub, or on an API
    /// replica the hub fed by the `user-events` topic.
    pub user_events: Arc<UserEventHub>,
    /// The in-process hourly rollup job (persistent embedded mode).
    pub rollups: Option<Arc<crate::rollups::RollupJob>>,
    /// History (readings, alerts with lifecycle) when persistence is on.
    pub store: Option<Arc<dyn Store>>,
    /// Validation limits for incoming readings.
    pub limits: Limits,
    /// Wall clock (validation of future timestamps, alert commands).
    pub clock: Arc<dyn Clock>,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// How callers authenticate.
    pub auth: crate::auth::Auth,
    /// Per-token request rate limit.
    pub rate_limiter: Arc<crate::access::RateLimiter>,
    /// Delivers hub events to websocket connections.
    pub fanout: Arc<crate::ws::fanout::Fanout>,
    /// Websocket settings.
    pub ws: crate::ws::WsConfig,
    /// The MQTT bridge of this process, once `--mqtt` started one.
    pub mqtt: Arc<std::sync::OnceLock<MqttBridgeInfo>>,
    /// Background tasks of the system (fan-out, timers, retention, simulator, a replica's
    /// Kafka relays), ended by
    /// [`EmbeddedSystem::shutdown`](crate::EmbeddedSystem::shutdown): each holds parts
    /// of the system (the hub, the store), which must not outlive it.
    pub background: BackgroundTasks,
}

/// Handles of the system's background tasks (see [`AppState::background`]).
pub type BackgroundTasks = Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>;

/// The MQTT bridge running in this process: where it connects and its status.
#[derive(Debug, Clone)]
pub struct MqttBridgeInfo {
    /// `host:port` of the broker.
    pub broker: String,
    /// Its MQTT client id.
    pub client_id: String,
    /// Connection, counters and meters' links.
    pub status: gridpulse_ingest::mqtt::BridgeStatus,
}
