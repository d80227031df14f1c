//! `gridpulse`: the command-line entry point.
//!
//! `gridpulse run` starts the embedded system (log, actors, API, optional simulator) in
//! one process with no servers to install. Later subcommands (processor, migrate,
//! import, ...) join it here.

use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use gridpulse_actors::Thresholds;
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};
use gridpulse_ingest::simulator::SimulatorConfig;

/// Real-time telemetry and alerting for smart electricity meters.
#[derive(Debug, Parser)]
#[command(name = "gridpulse", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process: in-process log, meter actors, API and dashboard.
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Address the API, websocket and page listen on.
    #[arg(long, env = "GRIDPULSE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Start the built-in simulator with this many meters (every alert kind shows up
    /// within a few minutes).
    #[arg(long, value_name = "METERS", env = "GRIDPULSE_SIMULATE")]
    simulate: Option<usize>,
    /// Seed of the simulator (same seed, same readings).
    #[arg(long, default_value_t = 42, env = "GRIDPULSE_SEED")]
    seed: u64,
    /// Seconds between two readings of one simulated meter.
    #[arg(long, default_value_t = 5.0, env = "GRIDPULSE_SIMULATE_INTERVAL")]
    simulate_interval: f64,
    /// Log partitions, each owned by one partition actor.
    #[arg(long, default_value_t = 8, env = "GRIDPULSE_PARTITIONS")]
    partitions: u32,
    /// Actor worker threads (0: one per core).
    #[arg(long, default_value_t = 0, env = "GRIDPULSE_WORKERS")]
    workers: usize,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 2, env = "GRIDPULSE_HTTP_WORKERS")]
    http_workers: usize,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = 4 << 20, env = "GRIDPULSE_MAX_BODY_BYTES")]
    max_body_bytes: usize,
    /// JSON file with default meter thresholds (fields left out keep their defaults).
    #[arg(long, value_name = "FILE", env = "GRIDPULSE_THRESHOLDS")]
    thresholds: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GRIDPULSE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match cli.command {
        Command::Run(args) => run(args),
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let default_thresholds = match &args.thresholds {
        None => Thresholds::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading thresholds file {}", path.display()))?;
            let thresholds: Thresholds = serde_json::from_str(&text)
                .with_context(|| format!("thresholds file {}", path.display()))?;
            thresholds
                .validate()
                .with_context(|| format!("thresholds file {}", path.display()))?;
            thresholds
        }
    };
    if !(args.simulate_interval.is_finite() && args.simulate_interval >= 0.1) {
        anyhow::bail!("--simulate-interval must be at least 0.1 seconds");
    }
    let config = EmbeddedConfig {
        n_partitions: args.partitions.max(1),
        n_workers: args.workers,
        n_http_workers: args.http_workers,
        max_body_bytes: args.max_body_bytes,
        default_thresholds,
        simulate: args.simulate.map(|meters| SimulatorConfig {
            meters,
            seed: args.seed,
            interval_ms: (args.simulate_interval * 1000.0) as i64,
            ..SimulatorConfig::default()
        }),
        ..EmbeddedConfig::default()
    };
    actix_web::rt::System::new().block_on(async move {
        let listener = TcpListener::bind(&args.listen).with_context(|| {
            format!(
                "cannot listen on {} (is it in use? try --listen)",
                args.listen
            )
        })?;
        let system = EmbeddedSystem::start_default_clock(config, listener)?;
        let url = format!("http://{}", system.local_addr);
        println!("gridpulse is running (embedded mode, no servers needed)");
        println!("  live alerts page   {url}/");
        println!("  meters             {url}/api/meters");
        println!("  alert websocket    ws://{}/ws/alerts", system.local_addr);
        println!("  metrics            {url}/metrics");
        match args.simulate {
            Some(meters) => println!("  simulator          {meters} meters, seed {}", args.seed),
            None => {
                println!("  post readings to   {url}/api/readings   (or start with --simulate 100)")
            }
        }
        println!("press Ctrl-C to stop");
        system.server.await.context("HTTP server")?;
        Ok(())
    })
}
