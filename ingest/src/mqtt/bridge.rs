//! The bridge's two tasks: the MQTT event loop (connect, subscribe, reconnect with
//! backoff, hand publishes over) and the batcher (decode what is ready, one log append,
//! dead letters, then PUBACKs).

use std::sync::Arc;
use std::time::Duration;

use gridpulse_actors::{Clock, LogError};
use gridpulse_domain::{Limits, Reading};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::MqttBridgeConfig;
use super::payload::{
    MessageOutcome, READINGS_TOPIC_FILTER, SEED_TOPIC_FILTER, STATUS_TOPIC_FILTER, decode,
};
use super::status::{BridgeStatus, LinkNews, LinkSink};
use crate::accept::ReadingLog;
use crate::dead_letter::{DeadLetter, DeadLetterSink};
use crate::metrics;

/// Publishes handed from the event loop to the batcher. Bounded: the broker sends at
/// most its in-flight window of unacknowledged QoS 1 messages, so this never fills in
/// practice; if it did, the event loop waits (backpressure to the broker).
const PUBLISH_QUEUE: usize = 1 << 16;
/// Requests (PUBACKs, subscriptions) queued for the event loop; above the broker's
/// in-flight window so an ack never waits for the loop that waits for the batcher.
const REQUEST_QUEUE: usize = 1 << 16;

/// A running bridge. Dropping it does not stop it; call [`MqttBridge::shutdown`] (or
/// [`MqttBridge::abort`] to simulate a crash).
#[derive(Debug)]
pub struct MqttBridge {
    status: BridgeStatus,
    clock: Arc<dyn Clock>,
    client: AsyncClient,
    event_loop: JoinHandle<()>,
    batcher: JoinHandle<()>,
}

impl MqttBridge {
    /// Starts the bridge on the current tokio runtime: readings to `log`, refusals to
    /// `dead_letters`. Returns at once; the connection is made (and retried) in the
    /// background, see [`BridgeStatus::is_connected`].
    pub fn start(
        config: &MqttBridgeConfig,
        log: ReadingLog,
        dead_letters: DeadLetterSink,
        limits: Limits,
        clock: Arc<dyn Clock>,
    ) -> Result<MqttBridge, String> {
        MqttBridge::start_with_links(config, log, dead_letters, limits, clock, None)
    }

    /// [`MqttBridge::start`], with live link changes (status topic, last will) also
    /// sent to `links` (the meter actors) before their messages are acknowledged.
    pub fn start_with_links(
        config: &MqttBridgeConfig,
        log: ReadingLog,
        dead_letters: DeadLetterSink,
        limits: Limits,
        clock: Arc<dyn Clock>,
        links: Option<Arc<dyn LinkSink>>,
    ) -> Result<MqttBridge, String> {
        config.validate()?;
        let mut options =
            MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
        options
            .set_keep_alive(config.keep_alive)
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes)
            .set_inflight(100);
        let (client, event_loop) = AsyncClient::new(options, REQUEST_QUEUE);
        let status = BridgeStatus::new();
        let (publishes, received) = mpsc::channel(PUBLISH_QUEUE);
        let event_loop = tokio::spawn(run_event_loop(
            event_loop,
            client.clone(),
            publishes,
            status.clone(),
            Arc::clone(&clock),
            (config.min_backoff, config.max_backoff),
        ));
        let batcher = tokio::spawn(run_batcher(
            received,
            Batcher {
                client: client.clone(),
                log,
                dead_letters,
                limits,
                clock: Arc::clone(&clock),
                status: status.clone(),
                max_batch_messages: config.max_batch_messages,
                links,
            },
        ));
        tracing::info!(
            broker = %format!("{}:{}", config.host, config.port),
            client_id = %config.client_id,
            "mqtt bridge started"
        );
        Ok(MqttBridge {
            status,
            clock,
            client,
            event_loop,
            batcher,
        })
    }

    /// The bridge's status handle.
    pub fn status(&self) -> &BridgeStatus {
        &self.status
    }

    /// Stops at once, like a crash: nothing more is appended or acknowledged; the
    /// broker keeps unacknowledged messages in the session for the next start.
    pub fn abort(&self) {
        self.batcher.abort();
        self.event_loop.abort();
        self.status.set_connected(false, self.clock.now_ms());
    }

    /// Stops: the batch being appended finishes (and is acknowledged), then the bridge
    /// disconnects. The session stays on the broker (`clean_session = false`).
    pub async fn shutdown(self) {
        // The batcher ends when the event loop (its only sender) ends.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.disconnect()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.event_loop).await;
        self.batcher.abort();
        let _ = self.batcher.await;
        self.status.set_connected(false, self.clock.now_ms());
    }
}

async fn run_event_loop(
    mut event_loop: EventLoop,
    client: AsyncClient,
    publishes: mpsc::Sender<Publish>,
    status: BridgeStatus,
    clock: Arc<dyn Clock>,
    (min_backoff, max_backoff): (Duration, Duration),
) {
    let mut backoff = min_backoff;
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                backoff = min_backoff;
                status.set_connected(true, clock.now_ms());
                tracing::info!(session_present = connack.session_present, "mqtt connected");
                // Subscriptions survive in a persistent session; renewing them is harmless
                // and covers a broker that lost the session. Queued, never awaited here
                // (the loop must keep polling to send them).
                let filters = [
                    SEED_TOPIC_FILTER,
                    READINGS_TOPIC_FILTER,
                    STATUS_TOPIC_FILTER,
                ]
                .map(|filter| rumqttc::SubscribeFilter::new(filter.to_owned(), QoS::AtLeastOnce));
                if let Err(error) = client.try_subscribe_many(filters) {
                    tracing::error!(%error, "could not queue the mqtt subscriptions");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if publishes.send(publish).await.is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                // Our own disconnect: flush it, then stop.
                let _ = tokio::time::timeout(Duration::from_secs(1), event_loop.poll()).await;
                return;
            }
            Ok(_) => {}
            Err(rumqttc::ConnectionError::RequestsDone) => return,
            Err(error) => {
                status.set_connected(false, clock.now_ms());
                tracing::warn!(%error, retry_in = ?backoff, "mqtt connection lost");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

struct Batcher {
    client: AsyncClient,
    log: ReadingLog,
    dead_letters: DeadLetterSink,
    limits: Limits,
    clock: Arc<dyn Clock>,
    status: BridgeStatus,
    max_batch_messages: usize,
    links: Option<Arc<dyn LinkSink>>,
}

async fn run_batcher(mut received: mpsc::Receiver<Publish>, batcher: Batcher) {
    let mut publishes: Vec<Publish> = Vec::with_capacity(batcher.max_batch_messages);
    let mut readings: Vec<Reading> = Vec::with_capacity(batcher.max_batch_messages);
    let mut letters: Vec<DeadLetter> = Vec::new();
    let mut links: Vec<(gridpulse_domain::MeterId, LinkNews)> = Vec::new();
    // Live status messages of the batch: (index in `publishes`, index in `links`).
    let mut statuses: Vec<(usize, usize)> = Vec::new();
    loop {
        // Wait for one message, then take whatever else the event loop has ready.
        let Some(first) = received.recv().await else {
            return;
        };
        publishes.push(first);
        while publishes.len() < batcher.max_batch_messages {
            match received.try_recv() {
                Ok(publish) => publishes.push(publish),
                Err(_) => break,
            }
        }
        let now_ms = batcher.clock.now_ms();
        let mut outcomes = [0u64; 4]; // accepted, partial, dead_letter, status
        for (publish_idx, publish) in publishes.iter().enumerate() {
            let outcome = decode(
                &publish.topic,
                &publish.payload,
                now_ms,
                &batcher.limits,
                &mut readings,
            );
            let refusal = match outcome {
                MessageOutcome::Readings {
                    meter,
                    accepted,
                    refused,
                } => {
                    if accepted > 0 {
                        links.push((meter, LinkNews::Reading));
                    }
                    outcomes[if refused.is_some() { 1 } else { 0 }] += 1;
                    refused
                }
                MessageOutcome::Status { meter, online } => {
                    if !publish.retain {
                        statuses.push((publish_idx, links.len()));
                    }
                    links.push((meter, LinkNews::Status(online)));
                    outcomes[3] += 1;
                    None
                }
                MessageOutcome::Refused(code, reason) => {
                    outcomes[2] += 1;
                    Some((code, reason))
                }
            };
            if let Some((code, reason)) = refusal {
                metrics::record_rejected("mqtt", code, 1);
                letters.push(DeadLetter {
                    at_ms: now_ms,
                    source: "mqtt",
                    topic: publish.topic.clone(),
                    code,
                    reason,
                    payload: publish.payload.to_vec(),
                });
            }
        }
        let n_readings = readings.len() as u64;
        let n_letters = letters.len() as u64;
        // Durable first: readings, then dead letters; only then the PUBACKs.
        if !append_until_accepted(&batcher.log, &readings).await {
            return;
        }
        readings.clear();
        metrics::record_accepted("mqtt", n_readings);
        if let Err(error) = batcher
            .dead_letters
            .write(std::mem::take(&mut letters))
            .await
        {
            // Not acknowledged: the broker redelivers them after a reconnect (their good
            // neighbours are stored again, idempotently).
            tracing::error!(%error, "could not keep dead letters; their messages stay unacknowledged");
            publishes.clear();
            links.clear();
            statuses.clear();
            continue;
        }
        batcher.status.record_links(&links, now_ms);
        let not_durable = forward_links(batcher.links.as_deref(), &links, &statuses, now_ms).await;
        statuses.clear();
        links.clear();
        for (publish_idx, publish) in publishes.drain(..).enumerate() {
            if not_durable.contains(&publish_idx) {
                // Redelivered after the next reconnect (persistent session).
                continue;
            }
            if publish.qos != QoS::AtMostOnce
                && let Err(error) = batcher.client.ack(&publish).await
            {
                tracing::warn!(%error, "could not queue a puback (the broker will redeliver)");
            }
        }
        let n_messages: u64 = outcomes.iter().sum();
        batcher
            .status
            .record_batch(n_readings, n_messages, n_letters);
        for (outcome, n) in ["accepted", "partial", "dead_letter", "status"]
            .into_iter()
            .zip(outcomes)
        {
            metrics::record_mqtt_messages(outcome, n);
        }
    }
}

/// How long the bridge waits for the meters to make a link change durable.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends the batch's live status changes to `sink` — only each meter's last news of the
/// batch (a later reading or status supersedes an earlier status) — and waits until
/// they are durable; answers the indexes (in the batch's publishes) of those that are
/// not, which stay unacknowledged.
async fn forward_links(
    sink: Option<&dyn LinkSink>,
    links: &[(gridpulse_domain::MeterId, LinkNews)],
    statuses: &[(usize, usize)],
    now_ms: i64,
) -> Vec<usize> {
    let Some(sink) = sink else {
        return Vec::new();
    };
    // Concurrently: many meters lose their link at once when a feeder goes down.
    let mut pending = tokio::task::JoinSet::new();
    for &(publish_idx, link_idx) in statuses {
        let (meter, news) = links[link_idx];
        let superseded = links[link_idx + 1..]
            .iter()
            .any(|(later, _)| *later == meter);
        if let (LinkNews::Status(online), false) = (news, superseded) {
            let change = sink.link_changed(meter, online, now_ms);
            pending.spawn(async move {
                match tokio::time::timeout(LINK_TIMEOUT, change).await {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => {
                        tracing::warn!(%meter, %error, "meter link change not durable; its message stays unacknowledged");
                        Some(publish_idx)
                    }
                    Err(_) => {
                        tracing::warn!(%meter, "meter link change timed out; its message stays unacknowledged");
                        Some(publish_idx)
                    }
                }
            });
        }
    }
    let mut failed = Vec::new();
    while let Some(outcome) = pending.join_next().await {
        match outcome {
            Ok(Some(publish_idx)) => failed.push(publish_idx),
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "meter link change task failed"),
        }
    }
    failed
}

/// Appends, retrying while the log is full or the backend fails (the messages stay
/// unacknowledged meanwhile). `false` when the log is closed (shutting down).
async fn append_until_accepted(log: &ReadingLog, readings: &[Reading]) -> bool {
    let mut wait = Duration::from_millis(10);
    loop {
        match log.append(readings.to_vec()).await {
            Ok(()) => return true,
            Err(LogError::Closed) => {
                tracing::info!("reading log closed; mqtt bridge stops");
                return false;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?wait, "reading log refused an mqtt batch");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}
