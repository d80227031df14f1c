//! What every handler can reach: the log, the meter system, limits and the clock.

use std::sync::Arc;

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
    /// History (readings, alerts with lifecycle) when persistence is on.
    pub store: Option<Arc<dyn Store>>,
    /// Validation limits for incoming readings.
    pub limits: Limits,
    /// Wall clock (validation of future timestamps, alert commands).
    pub clock: Arc<dyn Clock>,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
}
