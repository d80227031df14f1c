//! The per-meter actors of gridpulse and the system that hosts them.
//!
//! Readings arrive through a partitioned log ([`log::ReadingSource`]); each partition
//! is owned by a [`partition_actor::PartitionActor`] on a worker arbiter, which routes
//! readings to one [`meter_actor::MeterActor`] per meter. Meter actors keep rolling
//! usage, a baseline, a forecast and threshold state ([`meter_state`]) and publish alert
//! changes to the [`hub::AlertHub`], which numbers, indexes and broadcasts them.
//!
//! Architecture invariant: this crate never knows where readings come from (HTTP, MQTT,
//! Kafka, simulator) nor who consumes alerts (websocket, REST); it knows no HTTP.
//! Architecture invariant: a meter's readings are applied in log order by one actor;
//! live state follows event time, so replays rebuild the same state and alert ids.

pub mod account;
pub mod clock;
pub mod grouper;
pub mod hub;
pub mod log;
pub mod meter_actor;
pub mod meter_state;
mod meter_state_v1;
pub mod metrics;
pub mod partition_actor;
pub mod stream;
pub mod system;
pub mod thresholds;
pub mod usage;
pub mod user_billing;
pub mod user_credit;
pub mod user_events;
pub mod user_sessions;
pub mod user_state;
pub mod user_system;
pub mod windows;
pub mod writer;

pub use account::{AccountBook, AccountError, TariffDocument, UserAccount};
pub use clock::{Clock, ManualClock, SystemClock};
pub use hub::{AlertCatchUp, AlertHub, HubEvent};
pub use log::{LinkRecord, LogError, LogRecord, PartitionReader, ReadingSource};
pub use meter_actor::AlertAction;
pub use meter_state::{MeterSnapshot, MeterState};
pub use system::{MeterSystem, SystemConfig, SystemError};
pub use thresholds::Thresholds;
pub use usage::{ChannelUsage, UsageEvent, UsageRecord, UsageSink};
pub use user_state::{UserSnapshot, UserState};
pub use user_system::{UserSystem, UserSystemConfig};
