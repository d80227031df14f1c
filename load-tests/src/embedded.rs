//! `embedded` mode: the whole embedded system, fed as fast as it takes readings.
//!
//! Phase 1 (throughput): one generator thread formats canonical JSON, parses and
//! validates it with the production parser and appends batches to the in-process log;
//! partition actors route to one meter actor per meter, which evaluate thresholds. The
//! clock stops when every reading has been applied by its meter actor.
//! Phase 2 (latency): the same at a fixed rate; `--alert-meters` meters alternate over-
//! and normal voltage each round, and a websocket client measures the time from a
//! reading's acceptance (append to the log) to its `raised` event on `/ws/alerts`.
//! Memory: resident bytes per meter after phase 1, over a baseline taken before any
//! meter existed.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use gridpulse_actors::LogError;
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};
use gridpulse_domain::{Limits, Reading, parse_reading};
use gridpulse_ingest::InProcessLog;
use parking_lot::Mutex;

use crate::payloads::{Fleet, OVER_VOLTAGE, RECOVERED};
use crate::report::{self, parse_duration};

/// Options of the embedded benchmark.
#[derive(Debug, Args)]
pub struct EmbeddedArgs {
    /// Simulated meters.
    #[arg(long, default_value_t = 100_000)]
    meters: usize,
    /// Length of the throughput phase (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Readings per second during the latency phase.
    #[arg(long, default_value_t = 100_000)]
    latency_rate: u64,
    /// Length of the latency phase (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    latency_duration: Duration,
    /// Meters that alternate over-voltage and normal readings (alert sources).
    #[arg(long, default_value_t = 200)]
    alert_meters: usize,
    /// Log partitions.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Actor worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Readings per append to the log.
    #[arg(long, default_value_t = 4096)]
    batch: usize,
    /// Upper bound on readings generated in the throughput phase.
    #[arg(long, default_value_t = 100_000_000)]
    max_readings: u64,
}

/// When each alert-raising reading was accepted, keyed by (meter, event time).
pub(crate) type Accepted = Arc<Mutex<HashMap<(String, i64), Instant>>>;

pub(crate) struct Generator {
    pub(crate) fleet: Fleet,
    pub(crate) alert_meters: usize,
    pub(crate) base_ms: i64,
    pub(crate) limits: Limits,
    pub(crate) payload: Vec<u8>,
    pub(crate) batch: Vec<Reading>,
    pub(crate) batch_size: usize,
    pub(crate) round: u64,
    pub(crate) next_idx: usize,
    pub(crate) n_readings: u64,
    pub(crate) n_full_waits: u64,
    pub(crate) accepted: Accepted,
    pub(crate) raising: Vec<(usize, i64)>,
}

impl Generator {
    /// A generator over `fleet` whose event time starts six hours before `now_ms`.
    pub(crate) fn new(
        fleet: Fleet,
        alert_meters: usize,
        batch_size: usize,
        now_ms: i64,
        accepted: Accepted,
    ) -> Generator {
        Generator {
            fleet,
            alert_meters,
            base_ms: now_ms - 6 * 3_600_000,
            limits: Limits::default(),
            payload: Vec::with_capacity(256),
            batch: Vec::with_capacity(batch_size),
            batch_size: batch_size.max(1),
            round: 0,
            next_idx: 0,
            n_readings: 0,
            n_full_waits: 0,
            accepted,
            raising: Vec::new(),
        }
    }

    /// Whether meter `idx` alternates over-voltage and normal readings: every
    /// `len / alert_meters`-th meter, so that alert events are spread evenly over a
    /// round instead of coming in one burst at its start.
    pub(crate) fn is_alert_meter(&self, idx: usize) -> bool {
        let stride = (self.fleet.len() / self.alert_meters.max(1)).max(1);
        self.alert_meters > 0 && idx.is_multiple_of(stride) && idx / stride < self.alert_meters
    }

    /// Generates, parses and appends the next `n` readings (round-robin over meters).
    pub(crate) fn produce(&mut self, log: &InProcessLog, n: u64) -> anyhow::Result<()> {
        let now_ms = gridpulse_actors::Clock::now_ms(&gridpulse_actors::SystemClock);
        for _ in 0..n {
            let idx = self.next_idx;
            let ts_ms = self.base_ms + self.round as i64 * 5_000;
            let electrical = self.is_alert_meter(idx).then(|| {
                if self.round % 2 == 1 {
                    self.raising.push((idx, ts_ms));
                    OVER_VOLTAGE
                } else {
                    RECOVERED
                }
            });
            self.fleet
                .write_reading(&mut self.payload, idx, ts_ms, self.round, electrical);
            let reading = parse_reading(&self.payload, now_ms, &self.limits)
                .context("generated reading must be valid")?;
            self.batch.push(reading);
            self.n_readings += 1;
            self.next_idx += 1;
            if self.next_idx == self.fleet.len() {
                self.next_idx = 0;
                self.round += 1;
            }
            if self.batch.len() >= self.batch_size {
                self.flush(log)?;
            }
        }
        Ok(())
    }

    /// Produces readings at `per_sec` for `duration` (flushing as it goes; idle waits
    /// are 0.5 ms), then flushes the rest. Blocking: run it on a blocking thread.
    pub(crate) fn produce_at_rate(
        &mut self,
        log: &InProcessLog,
        per_sec: f64,
        duration: Duration,
    ) -> anyhow::Result<()> {
        let start = std::time::Instant::now();
        let start_count = self.n_readings;
        while start.elapsed() < duration {
            let due = (start.elapsed().as_secs_f64() * per_sec) as u64;
            let done = self.n_readings - start_count;
            if due > done {
                self.produce(log, due - done)?;
                self.flush(log)?;
            } else {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        self.flush(log)
    }

    pub(crate) fn flush(&mut self, log: &InProcessLog) -> anyhow::Result<()> {
        loop {
            match log.append(&self.batch) {
                Ok(()) => break,
                Err(LogError::Full { .. }) => {
                    self.n_full_waits += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(error) => return Err(error.into()),
            }
        }
        self.batch.clear();
        if !self.raising.is_empty() {
            let at = Instant::now();
            let mut accepted = self.accepted.lock();
            for (idx, ts_ms) in self.raising.drain(..) {
                accepted.insert((self.fleet.id(idx).to_owned(), ts_ms), at);
            }
        }
        Ok(())
    }
}

/// Runs the benchmark and prints its figures.
pub fn run(args: EmbeddedArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.meters > 0, "--meters must be at least 1");
    anyhow::ensure!(args.latency_rate > 0, "--latency-rate must be at least 1");
    let cores = report::cores();
    println!(
        "embedded benchmark: {} meters, {} cores, throughput phase {:?}, latency phase {:?} at {} readings/s",
        args.meters, cores, args.duration, args.latency_duration, args.latency_rate
    );
    let fleet = Fleet::new(args.meters);
    actix_web::rt::System::new().block_on(run_in_system(args, fleet, cores))
}

async fn run_in_system(args: EmbeddedArgs, fleet: Fleet, cores: usize) -> anyhow::Result<()> {
    let config = EmbeddedConfig {
        n_partitions: args.partitions,
        n_workers: args.workers,
        n_http_workers: 1,
        ..EmbeddedConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let system = EmbeddedSystem::start_default_clock(config, listener).await?;
    let addr = system.local_addr;
    let server = system.server.handle();
    actix_web::rt::spawn(system.server);
    let log = Arc::clone(
        system
            .state
            .log
            .in_process()
            .context("embedded mode uses the in-process log")?,
    );
    let meters = system.state.meters.clone();

    // Websocket client: latency of each `raised` event from acceptance.
    let accepted: Accepted = Arc::default();
    // Only alerts whose reading was accepted in phase 2 count (phase 1's backlog may
    // still be arriving when phase 2 starts).
    let measure_from: Arc<Mutex<Option<Instant>>> = Arc::default();
    let latencies_ms: Arc<Mutex<Vec<f64>>> = Arc::default();
    let n_alert_events = Arc::new(AtomicU64::new(0));
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws/alerts?snapshot=false"))
            .await
            .context("websocket connect")?;
    {
        let (accepted, measure_from, latencies_ms, n_alert_events) = (
            Arc::clone(&accepted),
            Arc::clone(&measure_from),
            Arc::clone(&latencies_ms),
            Arc::clone(&n_alert_events),
        );
        actix_web::rt::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                let received = Instant::now();
                let Ok(text) = message.to_text() else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<serde_json::Value>(text) else {
                    continue;
                };
                n_alert_events.fetch_add(1, Ordering::Relaxed);
                if event["event"] != "raised" {
                    continue;
                }
                let key = (
                    event["alert"]["meter"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    event["alert"]["first_seen_ms"].as_i64().unwrap_or_default(),
                );
                let sent = accepted.lock().remove(&key);
                let from = *measure_from.lock();
                if let (Some(sent), Some(from)) = (sent, from)
                    && sent >= from
                {
                    let ms = received.duration_since(sent).as_secs_f64() * 1000.0;
                    latencies_ms.lock().push(ms);
                }
            }
        });
    }

    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_base = report::resident_bytes().unwrap_or(0);
    let now_ms = gridpulse_actors::Clock::now_ms(&gridpulse_actors::SystemClock);
    let mut generator = Generator::new(
        fleet,
        args.alert_meters.min(args.meters),
        args.batch,
        now_ms,
        accepted,
    );

    // Phase 1: throughput, on a generator thread (the actix threads run the actors).
    let phase1_log = Arc::clone(&log);
    let (duration, max_readings) = (args.duration, args.max_readings);
    let started = Instant::now();
    let mut generator = tokio::task::spawn_blocking(move || -> anyhow::Result<Generator> {
        // Always at least one full round, so every meter exists.
        let min_readings = generator.fleet.len() as u64;
        while (started.elapsed() < duration || generator.n_readings < min_readings)
            && generator.n_readings < max_readings
        {
            generator.produce(&phase1_log, 1024)?;
        }
        generator.flush(&phase1_log)?;
        Ok(generator)
    })
    .await??;
    let produced = generator.n_readings;
    wait_applied(&meters, produced, Duration::from_secs(120)).await?;
    let elapsed = started.elapsed();
    let readings_per_sec = produced as f64 / elapsed.as_secs_f64();
    let rss_after = report::resident_bytes().unwrap_or(0);
    let bytes_per_meter = rss_after.saturating_sub(rss_base) as f64 / args.meters as f64;
    println!(
        "throughput: {produced} readings in {:.2} s = {readings_per_sec:.0} readings/s ({} log-full waits)",
        elapsed.as_secs_f64(),
        generator.n_full_waits
    );
    println!(
        "memory: {:.1} MiB resident over baseline for {} meters = {bytes_per_meter:.0} bytes/meter",
        rss_after.saturating_sub(rss_base) as f64 / 1048576.0,
        args.meters
    );

    // Phase 2: alert latency at a fixed rate.
    *measure_from.lock() = Some(Instant::now());
    let phase2_log = Arc::clone(&log);
    let (rate, latency_duration) = (args.latency_rate, args.latency_duration);
    generator.batch_size = (rate / 1000).clamp(1, 4096) as usize;
    let generator = tokio::task::spawn_blocking(move || -> anyhow::Result<Generator> {
        let start = Instant::now();
        let start_count = generator.n_readings;
        while start.elapsed() < latency_duration {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            let done = generator.n_readings - start_count;
            if due > done {
                generator.produce(&phase2_log, due - done)?;
                generator.flush(&phase2_log)?;
            } else {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        generator.flush(&phase2_log)?;
        Ok(generator)
    })
    .await??;
    let phase2_readings = generator.n_readings - produced;
    wait_applied(&meters, generator.n_readings, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut samples = latencies_ms.lock().clone();
    let p50 = report::quantile(&mut samples, 0.50).unwrap_or(f64::NAN);
    let p99 = report::quantile(&mut samples, 0.99).unwrap_or(f64::NAN);
    let max = samples.last().copied().unwrap_or(f64::NAN);
    println!(
        "alert latency at {rate} readings/s ({phase2_readings} readings, {} alerts measured): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        samples.len()
    );
    println!(
        "alert events received: {}; peak resident memory {:.1} MiB",
        n_alert_events.load(Ordering::Relaxed),
        report::peak_resident_bytes().unwrap_or(0) as f64 / 1048576.0
    );
    server.stop(false).await;
    report::print_key_values(&[
        ("mode", "embedded".into()),
        ("meters", args.meters.to_string()),
        ("readings", produced.to_string()),
        ("readings_per_sec", format!("{readings_per_sec:.0}")),
        ("latency_rate", rate.to_string()),
        ("alerts_measured", samples.len().to_string()),
        ("alert_p50_ms", format!("{p50:.3}")),
        ("alert_p99_ms", format!("{p99:.3}")),
        ("bytes_per_meter", format!("{bytes_per_meter:.0}")),
        ("cores", cores.to_string()),
    ]);
    Ok(())
}

/// Waits until the meter actors have applied `target` readings.
pub(crate) async fn wait_applied(
    meters: &gridpulse_actors::MeterSystem,
    target: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while meters.n_applied() < target {
        anyhow::ensure!(
            start.elapsed() < limit,
            "only {} of {target} readings applied after {limit:?}",
            meters.n_applied()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(meters: usize, alert_meters: usize) -> Generator {
        Generator::new(Fleet::new(meters), alert_meters, 16, 0, Arc::default())
    }

    #[test]
    fn alert_meters_are_spread_evenly_over_the_fleet() {
        for (meters, alert_meters) in [(100_000, 2_000), (10, 10), (10, 3), (7, 2), (5, 9)] {
            let generator = generator(meters, alert_meters);
            let chosen: Vec<usize> = (0..meters)
                .filter(|&i| generator.is_alert_meter(i))
                .collect();
            assert_eq!(
                chosen.len(),
                alert_meters.min(meters),
                "{meters} meters, {alert_meters} alert meters"
            );
            // No two alert meters closer than len / alert_meters (the burst this avoids).
            let stride = (meters / alert_meters).max(1);
            assert!(
                chosen.windows(2).all(|pair| pair[1] - pair[0] == stride),
                "{chosen:?}"
            );
        }
        assert!(!generator(10, 0).is_alert_meter(0));
    }
}
