//! `persist` mode: the embedded system with persistence on — every reading fsynced to
//! the journal before it is accepted, raw readings, snapshots and alerts written to the
//! embedded store, and a final checkpoint so everything is durable in the store before
//! the clock stops. Then a restart on the same data directory: time until the system
//! serves (meters restore lazily), and time until every meter has been restored.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use gridpulse_api::embedded::Persistence;
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};
use gridpulse_domain::MeterId;
use gridpulse_store::Retention;
use gridpulse_store::embedded::EmbeddedStore;
use gridpulse_store::journal::{Journal, JournalOptions};

use crate::embedded::{Generator, wait_applied};
use crate::payloads::Fleet;
use crate::report::{self, parse_duration};

/// Options of the persistence benchmark.
#[derive(Debug, Args)]
pub struct PersistArgs {
    /// Simulated meters.
    #[arg(long, default_value_t = 100_000)]
    meters: usize,
    /// Length of the load phase (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Data directory (default: a fresh directory under the system temp dir, removed
    /// afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log partitions.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Actor worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Readings per append (one journal fsync per touched partition each; a bulk
    /// client's body or several concurrent requests' worth).
    #[arg(long, default_value_t = 16_384)]
    batch: usize,
    /// Upper bound on readings generated.
    #[arg(long, default_value_t = 100_000_000)]
    max_readings: u64,
}

/// Runs the benchmark and prints its figures.
pub fn run(args: PersistArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.meters > 0, "--meters must be at least 1");
    let cores = report::cores();
    let (data_dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("gridpulse-persist-bench-{}", std::process::id())),
            true,
        ),
    };
    anyhow::ensure!(
        !data_dir.exists() || std::fs::read_dir(&data_dir)?.next().is_none(),
        "{} is not empty: the benchmark needs an empty data directory",
        data_dir.display()
    );
    println!(
        "persist benchmark: {} meters, {} cores, load phase {:?}, data in {}",
        args.meters,
        cores,
        args.duration,
        data_dir.display()
    );
    let fleet = Fleet::new(args.meters);
    let result =
        actix_web::rt::System::new().block_on(run_in_system(&args, fleet, &data_dir, cores));
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    result
}

fn config(args: &PersistArgs, data_dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        n_partitions: args.partitions,
        n_workers: args.workers,
        n_http_workers: 1,
        persistence: Some(Persistence::new(data_dir)),
        ..EmbeddedConfig::default()
    }
}

async fn run_in_system(
    args: &PersistArgs,
    fleet: Fleet,
    data_dir: &Path,
    cores: usize,
) -> anyhow::Result<()> {
    let system = EmbeddedSystem::start_default_clock(
        config(args, data_dir),
        TcpListener::bind("127.0.0.1:0")?,
    )
    .await
    .context("starting the embedded system")?;
    let server = system.server.handle();
    actix_web::rt::spawn(system.server);
    let state = system.state.clone();
    let log = Arc::clone(
        state
            .log
            .in_process()
            .context("persist mode uses the in-process log")?,
    );
    let now_ms = gridpulse_actors::Clock::now_ms(&gridpulse_actors::SystemClock);
    let mut generator = Generator::new(fleet, 0, args.batch, now_ms, Arc::default());

    let (duration, max_readings) = (args.duration, args.max_readings);
    let started = Instant::now();
    let load_log = Arc::clone(&log);
    let generator_done = tokio::task::spawn_blocking(move || -> anyhow::Result<Generator> {
        let min_readings = generator.fleet.len() as u64;
        while (started.elapsed() < duration || generator.n_readings < min_readings)
            && generator.n_readings < max_readings
        {
            generator.produce(&load_log, 1024)?;
        }
        generator.flush(&load_log)?;
        Ok(generator)
    })
    .await??;
    let produced = generator_done.n_readings;
    wait_applied(&state.meters, produced, Duration::from_secs(300)).await?;
    // Everything in the store: readings writers and alert writer flushed, snapshots
    // and checkpoints written.
    state.meters.checkpoint_all().await?;
    let elapsed = started.elapsed();
    let readings_per_sec = produced as f64 / elapsed.as_secs_f64();
    let disk_bytes = dir_bytes(data_dir);
    let bytes_per_reading = disk_bytes as f64 / produced as f64;
    println!(
        "durable throughput: {produced} readings in {:.2} s = {readings_per_sec:.0} readings/s ({} log-full waits)",
        elapsed.as_secs_f64(),
        generator_done.n_full_waits
    );
    println!(
        "disk: {:.1} MiB in {} = {bytes_per_reading:.1} bytes/reading (raw canonical JSON is ~130 bytes/reading)",
        disk_bytes as f64 / 1048576.0,
        data_dir.display()
    );

    // Clean shutdown, then restart on the same directory.
    server.stop(false).await;
    EmbeddedSystem::shutdown(&state).await?;
    drop((state, log));
    drop(system.state);
    wait_released(data_dir, args.partitions).await?;

    let restart = Instant::now();
    let system = EmbeddedSystem::start_default_clock(
        config(args, data_dir),
        TcpListener::bind("127.0.0.1:0")?,
    )
    .await
    .context("restarting")?;
    let server = system.server.handle();
    actix_web::rt::spawn(system.server);
    let first = MeterId::new(generator_done.fleet.id(0))?;
    let snapshot = system.state.meters.observe(first).await?;
    let ready_ms = restart.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(snapshot.n_readings > 0, "restored meter has no state");
    // Restore every meter (they otherwise come back lazily on their next reading).
    let restore_start = Instant::now();
    let mut restored = 0usize;
    for chunk in (0..generator_done.fleet.len())
        .collect::<Vec<_>>()
        .chunks(1000)
    {
        let observes = chunk.iter().map(|idx| {
            let meters = system.state.meters.clone();
            let id = MeterId::new(generator_done.fleet.id(*idx));
            async move { meters.observe(id?).await.map_err(anyhow::Error::from) }
        });
        for result in futures_util::future::join_all(observes).await {
            anyhow::ensure!(result?.n_readings > 0, "a meter came back empty");
            restored += 1;
        }
    }
    let restore_all_ms = restart.elapsed().as_secs_f64() * 1000.0;
    println!(
        "restart: serving after {ready_ms:.0} ms; all {restored} meters restored from snapshots after {restore_all_ms:.0} ms ({:.0} ms restoring)",
        restore_start.elapsed().as_secs_f64() * 1000.0
    );
    server.stop(false).await;
    report::print_key_values(&[
        ("mode", "persist".into()),
        ("meters", args.meters.to_string()),
        ("readings", produced.to_string()),
        ("readings_per_sec", format!("{readings_per_sec:.0}")),
        ("bytes_per_reading", format!("{bytes_per_reading:.1}")),
        ("restart_ready_ms", format!("{ready_ms:.0}")),
        ("restore_all_ms", format!("{restore_all_ms:.0}")),
        ("cores", cores.to_string()),
    ]);
    Ok(())
}

/// The previous system's threads release the store and journal locks asynchronously.
async fn wait_released(data_dir: &Path, n_partitions: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let store = EmbeddedStore::open(&data_dir.join("store"), Retention::default());
        let journal = Journal::open(
            &data_dir.join("journal"),
            n_partitions,
            JournalOptions::default(),
        );
        match (store, journal) {
            (Ok(_), Ok(_)) => return Ok(()),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            (Err(error), _) => {
                return Err(error).context("the first system never released the store");
            }
            (_, Err(error)) => {
                return Err(error).context("the first system never released the journal");
            }
        }
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
