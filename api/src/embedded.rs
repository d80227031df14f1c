//! Embedded mode: the whole pipeline in one process, no servers.
//!
//! In-process log → partition actors → meter actors → alert hub → HTTP/websocket, plus
//! the optional simulator feeding the log. `gridpulse run`, the end-to-end tests and the
//! benchmarks all start the system through [`EmbeddedSystem::start`], so they exercise
//! exactly what users run.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use std::path::PathBuf;

use gridpulse_actors::ReadingSource;
use gridpulse_actors::user_events::UserEventHub;
use gridpulse_actors::user_system::CommitFn;
use gridpulse_actors::writer::BatchWriter;
use gridpulse_actors::{
    AlertHub, ChannelUsage, Clock, MeterSystem, SystemClock, SystemConfig, Thresholds, UsageEvent,
    UsageSink, UserSystem, UserSystemConfig,
};
use gridpulse_domain::AlertState;
use gridpulse_domain::Limits;
use gridpulse_ingest::kafka::consumer::KafkaSource;
use gridpulse_ingest::kafka::producer::KafkaReadingProducer;
use gridpulse_ingest::kafka::usage::{KafkaUsageSink, UsageConsumer};
use gridpulse_ingest::kafka::{KafkaConfig, alerts};
use gridpulse_ingest::simulator::{Simulator, SimulatorConfig, SimulatorOutput};
use gridpulse_ingest::{InProcessLog, ReadingLog, ingest, metrics as ingest_metrics};
use gridpulse_store::embedded::EmbeddedStore;
use gridpulse_store::journal::{Journal, JournalOptions};
use gridpulse_store::{AlertHistoryEntry, AlertQuery, Retention, Store, StoreError};

use crate::state::AppState;

type UsageReceiver = tokio::sync::mpsc::UnboundedReceiver<UsageEvent>;
/// The usage flow of a process: the meters' sink, the user partitions' inputs and how
/// their offsets are committed.
type UsageFlow = (
    Arc<dyn UsageSink>,
    Vec<UsageReceiver>,
    Option<CommitFn>,
    Option<Arc<dyn Fn() + Send + Sync>>,
);

/// How long a clean shutdown waits for the log to close (a Kafka consumer's last
/// commits and LeaveGroup).
const CLOSE_LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of an embedded system.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Log partitions (each owned by one partition actor).
    pub n_partitions: u32,
    /// Unconsumed readings a partition holds before refusing appends.
    pub log_capacity: usize,
    /// Actor worker threads; 0 means one per core.
    pub n_workers: usize,
    /// HTTP worker threads.
    pub n_http_workers: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Thresholds of meters without their own.
    pub default_thresholds: Thresholds,
    /// Reading validation limits.
    pub limits: Limits,
    /// Events the hubs' broadcast channels hold for a subscriber that lags (the
    /// websocket dispatcher re-reads from the replay ring beyond it).
    pub alert_channel_capacity: usize,
    /// Recent events each hub keeps for websocket clients that resume (per stream).
    pub replay_capacity: usize,
    /// Websocket settings: keep-alive, idle timeout, per-client queue.
    pub ws: crate::ws::WsConfig,
    /// How callers are authenticated (JWT verification, or insecure development mode).
    pub auth: crate::auth::Auth,
    /// Resolved alerts kept in memory for queries.
    pub max_resolved_alerts: usize,
    /// Run the simulator with this configuration.
    pub simulate: Option<SimulatorConfig>,
    /// How often partitions look for silent meters ("no data") and run due alert timers
    /// (reminders, snoozes that ran out).
    pub no_data_sweep: Duration,
    /// Remind of a firing alert nobody acknowledged this long after it was raised, then
    /// again as often, while not snoozed (`None` or zero: no reminders).
    pub alert_reminder_after: Option<Duration>,
    /// Persistence: `None` keeps everything in memory (lost on exit).
    pub persistence: Option<Persistence>,
    /// Use Kafka as the reading log (produce and consume) instead of the in-process log.
    pub kafka: Option<KafkaConfig>,
    /// With Kafka: serve the API only (produce readings, consume alerts); meters live in
    /// the processors.
    pub api_only: bool,
    /// Timely worker threads of the in-process hourly rollup job (persistent embedded
    /// mode); 0 turns it off.
    pub rollup_workers: usize,
    /// Requests per second per token (0: unlimited) and the burst allowed.
    pub rate_limit: (f64, f64),
    /// Run the MQTT bridge into this system's log (`--mqtt`).
    pub mqtt: Option<gridpulse_ingest::mqtt::MqttBridgeConfig>,
    /// When a feeder's `no_data` alerts are grouped into one.
    pub groups: gridpulse_actors::grouper::GroupConfig,
}

/// Where and how the embedded system persists.
#[derive(Debug, Clone)]
pub struct Persistence {
    /// Data directory: `journal/` (the durable reading log) and `store/`.
    pub data_dir: PathBuf,
    /// Use this store instead of the embedded one under `data_dir/store` (ScyllaDB).
    pub store: Option<Arc<dyn Store>>,
    /// How often partitions checkpoint.
    pub checkpoint_interval: Duration,
    /// Retention of the embedded store.
    pub retention: Retention,
    /// fsync the journal before acknowledging readings (on by default; off only for
    /// benchmarks of the rest of the pipeline).
    pub sync_journal: bool,
}

impl Persistence {
    /// Defaults under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Persistence {
        Persistence {
            data_dir: data_dir.into(),
            store: None,
            checkpoint_interval: Duration::from_secs(5),
            retention: Retention::default(),
            sync_journal: true,
        }
    }
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            n_partitions: 8,
            log_capacity: 1 << 16,
            n_workers: 0,
            n_http_workers: 2,
            max_body_bytes: 4 << 20,
            default_thresholds: Thresholds::default(),
            limits: Limits::default(),
            alert_channel_capacity: 16_384,
            replay_capacity: 100_000,
            ws: crate::ws::WsConfig::default(),
            auth: crate::auth::Auth::InsecureDev,
            max_resolved_alerts: 100_000,
            simulate: None,
            no_data_sweep: Duration::from_secs(1),
            alert_reminder_after: Some(gridpulse_actors::system::DEFAULT_REMINDER_AFTER),
            persistence: None,
            kafka: None,
            api_only: false,
            rollup_workers: 1,
            rate_limit: (200.0, 400.0),
            mqtt: None,
            groups: gridpulse_actors::grouper::GroupConfig::default(),
        }
    }
}

/// A running embedded system.
pub struct EmbeddedSystem {
    /// Shared state (log, meters, hub).
    pub state: AppState,
    /// The HTTP server; await it or stop it.
    pub server: actix_web::dev::Server,
    /// The address the HTTP server listens on.
    pub local_addr: std::net::SocketAddr,
    /// The MQTT bridge's status, when `--mqtt` runs one.
    pub mqtt: Option<gridpulse_ingest::mqtt::BridgeStatus>,
}

impl std::fmt::Debug for EmbeddedSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedSystem")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Why the embedded system could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory (store or journal) is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The actor system could not start.
    #[error(transparent)]
    Actors(#[from] gridpulse_actors::SystemError),
    /// The HTTP listener failed.
    #[error("HTTP listener: {0}")]
    Io(#[from] std::io::Error),
    /// Kafka could not be reached or is not set up.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The rollup job could not start.
    #[error("rollup job: {0}")]
    Rollups(String),
    /// The MQTT bridge's settings are wrong.
    #[error("mqtt bridge: {0}")]
    Mqtt(String),
}

impl EmbeddedSystem {
    /// Starts everything; HTTP on `listener`. With persistence, recovers first: open
    /// alerts come back from the store, each partition resumes at its checkpoint and
    /// meters restore their snapshots lazily. Must be called inside an actix `System`.
    pub async fn start(
        config: EmbeddedConfig,
        listener: TcpListener,
        clock: Arc<dyn Clock>,
    ) -> Result<EmbeddedSystem, StartError> {
        let hub = AlertHub::new(
            config.alert_channel_capacity,
            config.max_resolved_alerts,
            config.replay_capacity,
        );
        hub.set_group_config(config.groups);
        // The store (snapshots, history), when persistence is on.
        let store: Option<Arc<dyn Store>> = match &config.persistence {
            None => None,
            Some(persistence) => Some(match &persistence.store {
                Some(store) => Arc::clone(store),
                None => Arc::new(EmbeddedStore::open(
                    &persistence.data_dir.join("store"),
                    persistence.retention,
                )?),
            }),
        };
        // Where meters send usage minutes, the user partitions' inputs and their commit.
        let mut usage: Option<UsageFlow> = None;
        // Background tasks, ended by `shutdown` (see `AppState::background`).
        let background = crate::state::BackgroundTasks::default();
        // User events an API replica relays from the `user-events` topic.
        let relayed_user_events =
            UserEventHub::new(config.alert_channel_capacity, config.replay_capacity);
        // The reading log: Kafka, or in-process (journaled when persistent).
        let (log, source): (ReadingLog, Arc<dyn ReadingSource>) =
            match (&config.kafka, &config.persistence) {
                (Some(kafka), _) if config.api_only => {
                    // An API replica: readings go to Kafka, alerts come from Kafka; no
                    // meters live here (an empty local log feeds no actor).
                    let producer = KafkaReadingProducer::new(kafka).map_err(StartError::Kafka)?;
                    let replica_id = format!("{}-{}", std::process::id(), clock.now_ms());
                    let (hub, kafka) = (Arc::clone(&hub), kafka.clone());
                    let (events, replica) = (Arc::clone(&relayed_user_events), replica_id.clone());
                    let events_config = kafka.clone();
                    background.lock().push(actix_web::rt::spawn(async move {
                        if let Err(error) = alerts::consume_alerts(hub, kafka, replica_id).await {
                            tracing::error!(%error, "alert consumer stopped");
                        }
                    }));
                    background.lock().push(actix_web::rt::spawn(async move {
                        if let Err(error) =
                            gridpulse_ingest::kafka::user_events::consume_user_events(
                                events,
                                events_config,
                                replica,
                            )
                            .await
                        {
                            tracing::error!(%error, "user event consumer stopped");
                        }
                    }));
                    let idle = InProcessLog::new(1, 1);
                    (
                        ReadingLog::Kafka(Arc::new(producer)),
                        idle as Arc<dyn ReadingSource>,
                    )
                }
                (Some(kafka), _) => {
                    let producer = KafkaReadingProducer::new(kafka).map_err(StartError::Kafka)?;
                    // Usage re-keyed by user: produced by meters, consumed by this
                    // process's share of the `{group}-users` consumer group.
                    let sink = KafkaUsageSink::start(kafka).map_err(StartError::Kafka)?;
                    let (consumer, receivers) =
                        UsageConsumer::start(kafka).map_err(StartError::Kafka)?;
                    usage = Some((
                        sink as Arc<dyn UsageSink>,
                        receivers,
                        Some(consumer.commit_fn()),
                        Some(consumer.close_fn()),
                    ));
                    let source = KafkaSource::start(kafka, config.limits)
                        .await
                        .map_err(StartError::Kafka)?;
                    // Every alert event also goes to the `alerts` topic for API replicas.
                    hub.set_forwarder(
                        alerts::KafkaAlertForwarder::start(kafka).map_err(StartError::Kafka)?,
                    );
                    (
                        ReadingLog::Kafka(Arc::new(producer)),
                        source as Arc<dyn ReadingSource>,
                    )
                }
                (None, None) => {
                    let log = InProcessLog::new(config.n_partitions, config.log_capacity);
                    (ReadingLog::InProcess(Arc::clone(&log)), log)
                }
                (None, Some(persistence)) => {
                    let journal = Journal::open(
                        &persistence.data_dir.join("journal"),
                        config.n_partitions,
                        JournalOptions {
                            sync: persistence.sync_journal,
                            ..JournalOptions::default()
                        },
                    )?;
                    let log = InProcessLog::open_durable(Arc::new(journal), config.log_capacity);
                    (ReadingLog::InProcess(Arc::clone(&log)), log)
                }
            };
        // Hourly rollups of the journaled log (timely workers on threads), started
        // before the meter actors so that no checkpoint truncates what the job needs.
        let rollups = match (&log, &store) {
            (ReadingLog::InProcess(in_process), Some(store))
                if in_process.journal().is_some() && config.rollup_workers > 0 =>
            {
                Some(
                    crate::rollups::start(
                        Arc::clone(store),
                        Arc::clone(in_process),
                        config.rollup_workers,
                        config.limits,
                    )
                    .await
                    .map_err(StartError::Rollups)?,
                )
            }
            _ => None,
        };
        if config.kafka.is_none() {
            // Embedded: the usage log is in-process, one channel per user partition.
            let (channels, receivers) = ChannelUsage::new(config.n_partitions);
            usage = Some((Arc::new(channels), receivers, None, None));
        }
        if let Some(store) = &store {
            hub.set_sink(BatchWriter::spawn(
                "alerts",
                Arc::clone(store),
                1 << 16,
                Arc::new(|store: &dyn Store, entries: &[AlertHistoryEntry]| {
                    store.write_alert_events(entries)
                }),
            ));
            // Feeders first, so the seeded `no_data` alerts count for theirs. Not on an
            // API replica: the processors group, the replica relays their events.
            let meter_configs = if config.api_only {
                Vec::new()
            } else {
                store
                    .list_config(gridpulse_store::ConfigKind::Meter)
                    .await?
            };
            for (id, json) in meter_configs {
                let Ok(meter) = gridpulse_domain::MeterId::new(&id) else {
                    continue;
                };
                if let Ok(meter_config) =
                    serde_json::from_slice::<gridpulse_actors::system::MeterConfig>(&json)
                    && let Some(feeder) = meter_config.feeder
                {
                    hub.set_feeder(meter, Some(&feeder));
                }
            }
            for state in [AlertState::Firing, AlertState::Acknowledged] {
                let open = store
                    .query_alerts(&AlertQuery {
                        state: Some(state),
                        limit: 1_000_000,
                        ..AlertQuery::default()
                    })
                    .await?;
                hub.seed(open);
            }
        }
        let checkpoint_interval = config
            .persistence
            .as_ref()
            .map_or(Duration::from_secs(5), |persistence| {
                persistence.checkpoint_interval
            });
        let (usage_sink, users) = match usage {
            Some((sink, receivers, commit, close)) => (
                Some(sink),
                Some(UserSystem::start(
                    UserSystemConfig {
                        store: store.clone(),
                        checkpoint_interval,
                        commit,
                        close,
                        event_replay_capacity: config.replay_capacity,
                    },
                    receivers,
                )),
            ),
            None => (None, None),
        };
        let meters = MeterSystem::start(
            SystemConfig {
                n_workers: config.n_workers,
                default_thresholds: config.default_thresholds.clone(),
                no_data_sweep: config.no_data_sweep,
                store: store.clone(),
                checkpoint_interval,
                usage: usage_sink,
                reminder_after: config.alert_reminder_after,
                ..SystemConfig::default()
            },
            source,
            hub,
            Arc::clone(&clock),
        )
        .await?;
        if store.is_some() && config.kafka.is_none() {
            // Meters restore lazily on their next reading; those with open alerts start
            // now, so their reminders and snoozes keep time across a restart.
            let started = meters.start_meters_with_open_alerts().await?;
            tracing::debug!(started, "meters with open alerts started");
        }
        if let (Some(users), Some(kafka)) = (&users, &config.kafka) {
            // Every user event also goes to `user-events` for API replicas.
            users.events().set_forwarder(
                gridpulse_ingest::kafka::user_events::KafkaUserEventForwarder::start(kafka)
                    .map_err(StartError::Kafka)?,
            );
        }
        let user_events = users
            .as_ref()
            .map_or(relayed_user_events, |users| Arc::clone(users.events()));
        let fanout =
            crate::ws::fanout::Fanout::new(Arc::clone(meters.hub()), Arc::clone(&user_events));
        background
            .lock()
            .push(actix_web::rt::spawn(Arc::clone(&fanout).run()));
        let state = AppState {
            log,
            meters,
            users,
            user_events,
            rollups,
            store,
            limits: config.limits,
            clock,
            max_body_bytes: config.max_body_bytes,
            auth: config.auth.clone(),
            rate_limiter: Arc::new(crate::access::RateLimiter::new(
                config.rate_limit.0,
                config.rate_limit.1,
            )),
            fanout,
            ws: config.ws.clone(),
            mqtt: Arc::default(),
            background,
        };
        if let Some(store) = state.store.clone() {
            let task = actix_web::rt::spawn(run_retention(store, Arc::clone(&state.clock)));
            state.background.lock().push(task);
        }
        if let Some(simulator) = config.simulate.clone() {
            let task = actix_web::rt::spawn(run_simulator(simulator, state.clone()));
            state.background.lock().push(task);
        }
        let mqtt = match &config.mqtt {
            Some(mqtt) => Some(start_mqtt_bridge(mqtt, &config, &state)?),
            None => None,
        };
        if let Some(bridge) = &mqtt {
            state
                .meters
                .hub()
                .set_bridge_feeds(Arc::new(BridgeGrouping(bridge.clone())));
        }
        if !config.api_only {
            let task = actix_web::rt::spawn(run_group_timer(Arc::clone(state.meters.hub())));
            state.background.lock().push(task);
        }
        let local_addr = listener.local_addr()?;
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(app_state.clone()))
                .app_data(
                    web::QueryConfig::default().error_handler(|error, _request| {
                        crate::error::ApiError::BadBody(format!("query string: {error}")).into()
                    }),
                )
                .app_data(web::PathConfig::default().error_handler(|error, _request| {
                    crate::error::ApiError::BadBody(format!("path: {error}")).into()
                }))
                .wrap(actix_web::middleware::from_fn(crate::access::guard))
                .configure(crate::routes::configure)
        })
        // Alert events are small frames written back to back: without TCP_NODELAY,
        // Nagle's algorithm holds each one behind the client's delayed ACK (~40 ms).
        .on_connect(|connection, _extensions| {
            if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>()
                && let Err(error) = tcp.set_nodelay(true)
            {
                tracing::debug!(%error, "could not set TCP_NODELAY");
            }
        })
        // Signals are the binary's business: actix-server's own handling would stop the
        // whole actix System (and the meter actors) before the final checkpoint.
        .disable_signals()
        .workers(config.n_http_workers.max(1))
        .shutdown_timeout(5)
        .listen(listener)?
        .run();
        Ok(EmbeddedSystem {
            state,
            server,
            local_addr,
            mqtt,
        })
    }

    /// Starts with the system clock.
    pub async fn start_default_clock(
        config: EmbeddedConfig,
        listener: TcpListener,
    ) -> Result<EmbeddedSystem, StartError> {
        EmbeddedSystem::start(config, listener, Arc::new(SystemClock)).await
    }

    /// Clean shutdown after the HTTP server stopped: checkpoint every partition so a
    /// restart replays nothing, then close the log (with Kafka: the consumer commits
    /// and leaves its group, so other processors take the partitions over at once).
    pub async fn shutdown(state: &AppState) -> Result<(), gridpulse_actors::SystemError> {
        // The simulator stops producing, the fan-out and the timers end (and with them
        // their hold on the hub and the store).
        for task in std::mem::take(&mut *state.background.lock()) {
            task.abort();
        }
        let offsets = state.meters.checkpoint_all().await?;
        state.log.close();
        tracing::info!(?offsets, "checkpointed all partitions");
        if let Some(users) = &state.users {
            users.close().await?;
        }
        if let Some(rollups) = &state.rollups {
            // The workers finish their round and report a last checkpoint, stored.
            rollups.shutdown().await;
        }
        // Bounded: with the broker gone, leaving cannot complete; the checkpoint is
        // stored and the group expires this member after its session timeout anyway.
        if tokio::time::timeout(CLOSE_LOG_TIMEOUT, state.meters.close_log())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?CLOSE_LOG_TIMEOUT,
                "the log did not close in time; exiting without it"
            );
        }
        Ok(())
    }
}

/// Starts the MQTT bridge into the system's log; dead letters go to `readings-dlq`
/// (Kafka), `dead-letters.ndjson` in the data directory, or only the log and metrics
/// (in memory). Runs until the log closes.
fn start_mqtt_bridge(
    mqtt: &gridpulse_ingest::mqtt::MqttBridgeConfig,
    config: &EmbeddedConfig,
    state: &AppState,
) -> Result<gridpulse_ingest::mqtt::BridgeStatus, StartError> {
    use gridpulse_ingest::dead_letter::DeadLetterSink;
    let dead_letters = match (&config.kafka, &config.persistence) {
        (Some(kafka), _) => DeadLetterSink::kafka(kafka).map_err(StartError::Kafka)?,
        (None, Some(persistence)) => DeadLetterSink::file_in(&persistence.data_dir),
        (None, None) => DeadLetterSink::LogOnly,
    };
    // Embedded: live link changes (last wills) reach the meters through the partition
    // that hosts them, ordered after the readings appended before them. With Kafka the
    // meters live in the processors and only the log connects to them: the change is a
    // link-status record in `readings`, after the meter's readings (see ARCHITECTURE.md).
    let links: Option<Arc<dyn gridpulse_ingest::mqtt::LinkSink>> = match &state.log {
        gridpulse_ingest::ReadingLog::InProcess(log) if config.kafka.is_none() => {
            Some(Arc::new(MeterLinks {
                meters: state.meters.clone(),
                log: Arc::clone(log),
            }))
        }
        gridpulse_ingest::ReadingLog::Kafka(producer) => Some(Arc::new((**producer).clone())),
        gridpulse_ingest::ReadingLog::InProcess(_) => None,
    };
    let bridge = gridpulse_ingest::mqtt::MqttBridge::start_with_links(
        mqtt,
        state.log.clone(),
        dead_letters,
        state.limits,
        Arc::clone(&state.clock),
        links,
    )
    .map_err(StartError::Mqtt)?;
    let _ = state.mqtt.set(crate::state::MqttBridgeInfo {
        broker: format!("{}:{}", mqtt.host, mqtt.port),
        client_id: mqtt.client_id.clone(),
        status: bridge.status().clone(),
    });
    Ok(bridge.status().clone())
}

/// The bridge's link changes, to the meter actors of this process.
#[derive(Debug)]
struct MeterLinks {
    meters: gridpulse_actors::MeterSystem,
    log: Arc<gridpulse_ingest::InProcessLog>,
}

impl gridpulse_ingest::mqtt::LinkSink for MeterLinks {
    fn link_changed(
        &self,
        meter: gridpulse_domain::MeterId,
        online: bool,
        at_ms: i64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> {
        let partition = self.meters.partition_index(&meter);
        let after_offset = self.log.end_offset(partition).unwrap_or(0);
        let change = self.meters.link_changed(meter, online, at_ms, after_offset);
        Box::pin(async move { change.await.map_err(|error| error.to_string()) })
    }
}

/// The grouping timer: every second, a bridge group whose bridge reconnected
/// resolves, and open groups get their coalesced member-count updates.
async fn run_group_timer(hub: Arc<gridpulse_actors::hub::AlertHub>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        hub.tick_groups();
    }
}

/// The bridge as the alert grouping sees it: down once it lost a connection it had.
struct BridgeGrouping(gridpulse_ingest::mqtt::BridgeStatus);

impl gridpulse_actors::grouper::BridgeProbe for BridgeGrouping {
    fn feeds(&self, meter: &gridpulse_domain::MeterId) -> bool {
        self.0.meter(meter).is_some()
    }

    fn down_since_ms(&self) -> Option<i64> {
        if self.0.is_connected() {
            return None;
        }
        self.0.last_disconnected_ms()
    }

    fn connected_at_ms(&self) -> Option<i64> {
        self.0.last_connected_ms()
    }
}

/// Feeds simulated readings into the log in real time (ticks every 100 ms). Bad
/// payloads go through the same accept path as HTTP bodies and are counted as rejected.
async fn run_simulator(config: SimulatorConfig, state: AppState) {
    let mut simulator = Simulator::new(config, state.clock.now_ms());
    tracing::info!(
        meters = simulator.config().meters,
        readings_per_sec = simulator.expected_readings_per_sec(),
        "simulator started"
    );
    let mut output = SimulatorOutput::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        simulator.tick(state.clock.now_ms(), &mut output);
        // A full log means the actors are behind: keep the readings and retry next tick.
        match state.log.append(output.readings.clone()).await {
            Ok(()) => {
                ingest_metrics::record_accepted("simulator", output.readings.len() as u64);
                output.readings.clear();
            }
            Err(gridpulse_actors::LogError::Closed) => return,
            Err(error) => {
                tracing::warn!(%error, pending = output.readings.len(), "simulator paused");
            }
        }
        for payload in output.bad_payloads.drain(..) {
            // Bad payloads are refused and counted like any client's.
            let _ = ingest(
                &state.log,
                &payload,
                state.clock.now_ms(),
                &state.limits,
                "simulator",
            )
            .await;
        }
    }
}

/// Applies retention now and then every hour (whole expired day partitions, resolved
/// alerts past their time).
async fn run_retention(store: Arc<dyn Store>, clock: Arc<dyn Clock>) {
    let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every_hour.tick().await;
        match store.apply_retention(clock.now_ms()).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "retention removed expired data"),
            Err(error) => tracing::warn!(%error, "retention failed; will retry in an hour"),
        }
    }
}
