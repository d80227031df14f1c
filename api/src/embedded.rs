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
use gridpulse_actors::{AlertHub, Clock, MeterSystem, SystemClock, SystemConfig, Thresholds};
use gridpulse_domain::Limits;
use gridpulse_ingest::simulator::{Simulator, SimulatorConfig, SimulatorOutput};
use gridpulse_ingest::{InProcessLog, ingest_json, metrics as ingest_metrics};

use crate::state::AppState;

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
    /// Alert events a websocket client may lag behind before it is disconnected.
    pub alert_channel_capacity: usize,
    /// Resolved alerts kept in memory for queries.
    pub max_resolved_alerts: usize,
    /// Run the simulator with this configuration.
    pub simulate: Option<SimulatorConfig>,
    /// How often partitions look for silent meters ("no data").
    pub no_data_sweep: Duration,
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
            max_resolved_alerts: 100_000,
            simulate: None,
            no_data_sweep: Duration::from_secs(1),
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
}

impl std::fmt::Debug for EmbeddedSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedSystem")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl EmbeddedSystem {
    /// Starts everything; HTTP on `listener`. Must be called inside an actix `System`.
    pub fn start(
        config: EmbeddedConfig,
        listener: TcpListener,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<EmbeddedSystem> {
        let log = InProcessLog::new(config.n_partitions, config.log_capacity);
        let hub = AlertHub::new(config.alert_channel_capacity, config.max_resolved_alerts);
        let meters = MeterSystem::start(
            SystemConfig {
                n_workers: config.n_workers,
                default_thresholds: config.default_thresholds.clone(),
                no_data_sweep: config.no_data_sweep,
                ..SystemConfig::default()
            },
            Arc::clone(&log) as Arc<dyn gridpulse_actors::ReadingSource>,
            hub,
            Arc::clone(&clock),
        );
        let state = AppState {
            log,
            meters,
            limits: config.limits,
            clock,
            max_body_bytes: config.max_body_bytes,
        };
        if let Some(simulator) = config.simulate.clone() {
            actix_web::rt::spawn(run_simulator(simulator, state.clone()));
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
        .workers(config.n_http_workers.max(1))
        .shutdown_timeout(5)
        .listen(listener)?
        .run();
        Ok(EmbeddedSystem {
            state,
            server,
            local_addr,
        })
    }

    /// Starts with the system clock.
    pub fn start_default_clock(
        config: EmbeddedConfig,
        listener: TcpListener,
    ) -> std::io::Result<EmbeddedSystem> {
        EmbeddedSystem::start(config, listener, Arc::new(SystemClock))
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
        match state.log.append(&output.readings) {
            Ok(()) => {
                ingest_metrics::record_accepted("simulator", output.readings.len() as u64);
                output.readings.clear();
            }
            Err(gridpulse_actors::LogError::Closed) => return,
            Err(error) => {
                tracing::warn!(%error, pending = output.readings.len(), "simulator paused")
            }
        }
        for payload in output.bad_payloads.drain(..) {
            let _ = ingest_json(
                &state.log,
                &payload,
                state.clock.now_ms(),
                &state.limits,
                "simulator",
            );
        }
    }
}
