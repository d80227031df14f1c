//! `rollup` mode: the hourly per-meter rollup job (`gridpulse-stream-jobs`) on generated
//! NDJSON held in memory.
//!
//! Generates `--meters` meters reporting every `--interval-s` seconds for `--hours`
//! hours, as canonical NDJSON lines in `--partitions` partitions (Kafka's partitioner of
//! the meter id), then runs the job with `--workers` timely workers and the input
//! declared complete at the end, so every hour is emitted. The clock covers the whole
//! job: reading the lines, parsing and validating them with the production parser,
//! exchanging readings between workers, the rollups, checkpoints, and every window's
//! final emission. Generation is not timed. Bounded: the job must end within
//! `--time-limit`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use gridpulse_domain::{Granularity, Limits, MeterId, MeterRollup, parse_reading};
use gridpulse_stream_jobs::{
    JobConfig, JobOutput, LateReading, LineError, MemorySource, RollupConfig, spawn,
};

use crate::report;

/// Options of the rollup benchmark.
#[derive(Debug, Args)]
pub struct RollupArgs {
    /// Meters.
    #[arg(long, default_value_t = 10_000)]
    meters: usize,
    /// Hours of readings.
    #[arg(long, default_value_t = 4)]
    hours: u32,
    /// Seconds between two readings of a meter.
    #[arg(long, default_value_t = 10)]
    interval_s: u32,
    /// Source partitions.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Timely worker threads (`-w`).
    #[arg(short = 'w', long, default_value_t = 2)]
    workers: usize,
    /// Lines read per worker per round.
    #[arg(long, default_value_t = 65_536)]
    lines_per_round: usize,
    /// The job must finish within this (e.g. `120s`, `5m`).
    #[arg(long, default_value = "10m", value_parser = parse_limit)]
    time_limit: Duration,
}

fn parse_limit(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Some(minutes) = text.strip_suffix('m') {
        let minutes: u64 = minutes
            .parse()
            .map_err(|_| format!("`{text}`: not minutes"))?;
        if (1..=60).contains(&minutes) {
            return Ok(Duration::from_secs(minutes * 60));
        }
        return Err(format!("`{text}`: 1 to 60 minutes"));
    }
    report::parse_duration(text)
}

#[derive(Debug, Default)]
struct CountingSink {
    rollups: AtomicU64,
    readings_in_rollups: AtomicU64,
    errors: AtomicU64,
    late: AtomicU64,
}

impl JobOutput for CountingSink {
    fn rollups(&self, rollups: &[MeterRollup]) {
        self.rollups
            .fetch_add(rollups.len() as u64, Ordering::Relaxed);
        let readings: u64 = rollups.iter().map(|rollup| rollup.readings).sum();
        self.readings_in_rollups
            .fetch_add(readings, Ordering::Relaxed);
    }
    fn error(&self, _error: &LineError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
    fn late(&self, _late: &LateReading) {
        self.late.fetch_add(1, Ordering::Relaxed);
    }
}

/// Appends `value / 10^decimals` in decimal.
fn push_fixed(out: &mut Vec<u8>, value: u64, decimals: u32) {
    use std::io::Write;
    let scale = 10u64.pow(decimals);
    let _ = write!(
        out,
        "{}.{:0width$}",
        value / scale,
        value % scale,
        width = decimals as usize
    );
}

/// Canonical NDJSON for every meter, in time order, split by Kafka's partitioner.
fn generate(args: &RollupArgs, start_ms: i64) -> Vec<(u32, Vec<u8>)> {
    use std::io::Write;
    let meters: Vec<(String, u32)> = (0..args.meters)
        .map(|idx| {
            let name = format!("meter-{idx:06}");
            let partition = MeterId::new(&name)
                .map(|id| id.partition(args.partitions))
                .unwrap_or(0);
            (name, partition)
        })
        .collect();
    let n_steps = u64::from(args.hours) * 3600 / u64::from(args.interval_s.max(1));
    let per_partition = (n_steps as usize * args.meters / args.partitions.max(1) as usize) * 150;
    let mut buffers: Vec<Vec<u8>> = (0..args.partitions)
        .map(|_| Vec::with_capacity(per_partition + per_partition / 8))
        .collect();
    let mut energy_mwh: Vec<u64> = (0..args.meters as u64).map(|idx| idx * 1_000_000).collect();
    let mut noise: u64 = 0x2545_f491_4f6c_dd1d;
    for step in 0..n_steps {
        let ts_ms = start_ms + (step * u64::from(args.interval_s) * 1000) as i64;
        for (idx, (name, partition)) in meters.iter().enumerate() {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            let voltage_dv = 2250 + noise % 200; // 225.0–244.9 V
            let power_dw = 1000 + (noise >> 16) % 30_000; // 100.0–3099.9 W
            // current (mA) = power / voltage, rounded up
            let current_ma = (power_dw * 10_000).div_ceil(voltage_dv);
            energy_mwh[idx] += power_dw * 100 * u64::from(args.interval_s) / 3600;
            let out = &mut buffers[*partition as usize];
            let _ = write!(out, r#"{{"meter":"{name}","ts_ms":{ts_ms},"voltage":"#);
            push_fixed(out, voltage_dv, 1);
            out.extend_from_slice(br#","current":"#);
            push_fixed(out, current_ma, 3);
            out.extend_from_slice(br#","power_w":"#);
            push_fixed(out, power_dw, 1);
            out.extend_from_slice(br#","energy_wh":"#);
            push_fixed(out, energy_mwh[idx], 3);
            out.extend_from_slice(b"}\n");
        }
    }
    buffers
        .into_iter()
        .enumerate()
        .map(|(partition, bytes)| (partition as u32, bytes))
        .collect()
}

/// Runs the benchmark and prints its figures.
pub fn run(args: RollupArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.meters > 0 && args.hours > 0 && args.partitions > 0 && args.workers > 0,
        "--meters, --hours, --partitions and --workers must be at least 1"
    );
    anyhow::ensure!(
        (1..=3600).contains(&args.interval_s),
        "--interval-s must be 1 to 3600"
    );
    let cores = report::cores();
    // 2026-03-09T00:00:00Z
    let start_ms = 1_773_014_400_000;
    println!(
        "rollup benchmark: {} meters, one reading per {} s for {} h, {} partitions, -w {}, {cores} cores",
        args.meters, args.interval_s, args.hours, args.partitions, args.workers
    );
    let generated = Instant::now();
    let partitions = generate(&args, start_ms);
    let n_lines: usize = partitions
        .iter()
        .map(|(_, bytes)| bytes.iter().filter(|&&b| b == b'\n').count())
        .sum();
    let source = MemorySource::new(partitions);
    let input_bytes = source.n_bytes();
    println!(
        "generated {n_lines} lines ({:.1} MiB of NDJSON, {:.0} bytes/line) in {:.1} s",
        input_bytes as f64 / 1048576.0,
        input_bytes as f64 / n_lines.max(1) as f64,
        generated.elapsed().as_secs_f64()
    );

    // What parsing alone costs, on one thread, for the record.
    let parse_ns = parse_cost_ns(&source);
    let rss_before = report::resident_bytes().unwrap_or(0);

    let sink = Arc::new(CountingSink::default());
    let config = JobConfig {
        workers: args.workers,
        rollup: RollupConfig {
            granularities: vec![Granularity::Hour],
            reporting_interval_ms: i64::from(args.interval_s) * 1000,
            ..RollupConfig::default()
        },
        lines_per_round: args.lines_per_round,
        close_windows_at_end: true,
        ..JobConfig::default()
    };
    let started = Instant::now();
    let handle = spawn(config, Arc::new(source), sink.clone())?;
    // Watchdog: stop the job if it runs past the limit.
    let stopper = handle.stopper();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let (done, timed_out, limit) = (Arc::clone(&done), Arc::clone(&timed_out), args.time_limit);
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if started.elapsed() >= limit {
                    timed_out.store(true, Ordering::Relaxed);
                    stopper.stop();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let job_report = handle.join();
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let job_report = job_report?;
    anyhow::ensure!(
        !timed_out.load(Ordering::Relaxed),
        "the job did not finish within {:?}",
        args.time_limit
    );
    let readings_per_sec = job_report.stats.readings as f64 / elapsed.as_secs_f64();
    let peak = report::peak_resident_bytes().unwrap_or(0);
    let rollups = sink.rollups.load(Ordering::Relaxed);
    let in_rollups = sink.readings_in_rollups.load(Ordering::Relaxed);
    anyhow::ensure!(
        in_rollups == job_report.stats.applied,
        "rollups cover {in_rollups} readings, {} were applied",
        job_report.stats.applied
    );
    println!(
        "rolled up {} readings in {:.2} s: {readings_per_sec:.0} readings/s (lines read, parsed and validated, exchanged, aggregated, emitted)",
        job_report.stats.readings,
        elapsed.as_secs_f64()
    );
    println!(
        "{rollups} hourly rollups; late applied {}, too late {}, duplicates {}, errors {}",
        job_report.stats.late_applied,
        job_report.stats.too_late,
        job_report.stats.duplicates,
        job_report.stats.errors
    );
    println!(
        "parsing alone: {parse_ns:.0} ns/line on one thread ({:.0} lines/s/core)",
        1e9 / parse_ns.max(1.0)
    );
    println!(
        "peak resident memory {:.1} MiB (input {:.1} MiB, resident before the job {:.1} MiB)",
        peak as f64 / 1048576.0,
        input_bytes as f64 / 1048576.0,
        rss_before as f64 / 1048576.0
    );
    report::print_key_values(&[
        ("mode", "rollup".into()),
        ("meters", args.meters.to_string()),
        ("hours", args.hours.to_string()),
        ("workers", args.workers.to_string()),
        ("partitions", args.partitions.to_string()),
        ("readings", job_report.stats.readings.to_string()),
        ("readings_per_sec", format!("{readings_per_sec:.0}")),
        ("rollups", rollups.to_string()),
        ("late", job_report.stats.late_applied.to_string()),
        ("too_late", job_report.stats.too_late.to_string()),
        ("errors", job_report.stats.errors.to_string()),
        ("parse_ns_per_line", format!("{parse_ns:.0}")),
        ("input_bytes", input_bytes.to_string()),
        ("rss_before_job_bytes", rss_before.to_string()),
        ("peak_rss_bytes", peak.to_string()),
        ("cores", cores.to_string()),
    ]);
    Ok(())
}

/// Parses up to 200,000 lines of the first partition on this thread; ns per line.
fn parse_cost_ns(source: &MemorySource) -> f64 {
    use gridpulse_stream_jobs::{ReadStatus, Source, SourceRecord};
    let limits = Limits::default();
    let Some(partition) = source.partitions().first().copied() else {
        return 0.0;
    };
    let Ok(mut reader) = source.open(partition, 0) else {
        return 0.0;
    };
    let mut n_lines = 0u64;
    let mut n_ok = 0u64;
    let started = Instant::now();
    for _ in 0..4 {
        match reader.read(50_000, &mut |_, record| {
            n_lines += 1;
            if let SourceRecord::Line(line) = record
                && parse_reading(line, i64::MAX, &limits).is_ok()
            {
                n_ok += 1;
            }
        }) {
            Ok(ReadStatus::Lines(_)) => {}
            _ => break,
        }
    }
    let elapsed = started.elapsed();
    if n_ok < n_lines {
        println!("warning: {} generated lines did not parse", n_lines - n_ok);
    }
    elapsed.as_nanos() as f64 / n_lines.max(1) as f64
}
