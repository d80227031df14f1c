//! Per-user events over Kafka: processors forward every user event (budget, credit,
//! top-ups, sessions) to `user-events` (key = user id), and API replicas consume it into
//! their own hub, so a websocket client of any replica gets them.

use std::sync::Arc;

use gridpulse_actors::usage::FlushFuture;
use gridpulse_actors::user_events::{UserEvent, UserEventForwarder, UserEventHub, UserHubEvent};

use super::KafkaConfig;
use super::acked::AckedProducer;
use super::alerts::relay_topic;

/// Forwards a processor's user events to `user-events`; user checkpoints wait until
/// the broker acknowledged them before committing the usage offsets behind them.
#[derive(Debug)]
pub struct KafkaUserEventForwarder(AckedProducer<Arc<UserHubEvent>>);

impl KafkaUserEventForwarder {
    /// Starts the producer task. Must be called on a tokio runtime.
    pub fn start(config: &KafkaConfig) -> Result<Arc<KafkaUserEventForwarder>, String> {
        let producer = AckedProducer::start(
            config,
            &config.user_events_topic,
            0,
            |event: &Arc<UserHubEvent>, payload: &mut Vec<u8>| {
                serde_json::to_writer(payload, &event.event).map_err(|error| error.to_string())?;
                Ok(event.event.user.as_str().to_owned())
            },
        )?;
        Ok(Arc::new(KafkaUserEventForwarder(producer)))
    }
}

impl UserEventForwarder for KafkaUserEventForwarder {
    fn forward(&self, event: Arc<UserHubEvent>) {
        self.0.send(event);
    }

    fn flush(&self) -> FlushFuture {
        self.0.flush()
    }
}

/// Consumes `user-events` into `hub` for this replica's websocket clients. Each replica
/// is its own consumer group and starts, like for `alerts`, from the oldest retained
/// event, so nothing published while it joined is missed; clients tell events apart by
/// their stable `id` and per-user `seq`.
pub async fn consume_user_events(
    hub: Arc<UserEventHub>,
    config: KafkaConfig,
    replica_id: String,
) -> Result<(), String> {
    let group = format!("gridpulse-api-events-{replica_id}");
    relay_topic(
        &config,
        &group,
        &config.user_events_topic,
        "user_events_topic",
        |event: UserEvent| hub.relay(event),
    )
    .await
}
