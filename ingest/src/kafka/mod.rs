//! Kafka: the distributed reading log.
//!
//! * [`admin`] creates the topics (`gridpulse topics create`).
//! * [`producer::KafkaReadingProducer`] appends readings to `readings` (key = meter id,
//!   value = canonical JSON), waiting for the broker's acknowledgement before a client
//!   is told its readings are accepted.
//! * [`consumer::KafkaSource`] is the [`ReadingSource`](gridpulse_actors::ReadingSource)
//!   of a processor: one consumer-group member per process; each assigned partition feeds
//!   its partition actor in order; undecodable or invalid records go to `readings-dlq`
//!   with the original bytes and the reason; offsets are committed only at checkpoints,
//!   when everything before them is durable.
//! * [`link_status`]: a meter's MQTT link status as a `readings` record (header
//!   `gridpulse-record: link-status`, key = meter id), produced by a separate bridge
//!   ([`producer::KafkaReadingProducer`] is its `LinkSink`) and turned by the consumer
//!   into the meter's link change, ordered after its readings.
//! * [`dead_letters::KafkaDeadLetters`] writes the MQTT bridge's dead letters to
//!   `readings-dlq` (same shape, `source=mqtt` and `mqtt_topic` headers).
//! * [`test_broker::TestBroker`] runs a real Kafka-protocol broker (tansu) for tests.
//!
//! Architecture invariant: only this module knows rdkafka.

pub mod acked;
pub mod admin;
pub mod alerts;
pub mod config;
pub mod consumer;
pub mod dead_letters;
pub mod link_status;
pub mod producer;
pub mod stream_source;
pub mod test_broker;
pub mod usage;
pub mod user_events;

pub use config::KafkaConfig;
