//! The MQTT bridge: meters publish readings to a broker (Mosquitto), the bridge
//! subscribes with QoS 1 and appends what they send to the reading log.
//!
//! * `config`: where the broker is and how the bridge identifies itself.
//! * `payload`: topics and payloads to readings, dead letters and status changes (pure,
//!   no I/O).
//! * `status`: [`BridgeStatus`], the bridge's connection and every meter's link state,
//!   readable from Rust and exported as metrics; [`LinkSink`], where live link changes
//!   (a last will) go to reach the meter actors.
//! * `bridge`: the event loop and the batcher that appends, then acknowledges.
//! * `test_broker`: a real Mosquitto on a free loopback port for tests and benchmarks.
//!
//! Architecture invariant: a PUBACK is sent only after the message's readings were
//! appended to the log (and its dead letter, if any, written): a bridge that dies at
//! any point loses nothing a meter was told was delivered; the broker redelivers the
//! rest (persistent session) and the store's (meter, ts) keys make the replay
//! idempotent.

pub mod bridge;
pub mod config;
pub mod payload;
pub mod status;
pub mod test_broker;

pub use bridge::MqttBridge;
pub use config::{MqttBridgeConfig, parse_broker_address};
pub use status::{BridgeSnapshot, BridgeStatus, LinkSink, MeterLink};
