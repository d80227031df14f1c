//! `import` mode: bulk import of a CSV file (`gridpulse_ingest::import`) into the
//! in-process log.
//!
//! Generates `--rows` CSV rows of `--meters` meters (one reading per meter every 10 s,
//! rows in time order, so consecutive rows name different meters: the per-meter lookup
//! runs for every row) in memory, optionally gzips it, then times the import: line
//! splitting, field decoding, validation by the domain rules, the per-meter checks
//! (registered, duplicate) and batched appends to an `InProcessLog` with 8 partitions.
//! Generation is not timed. Bounded: `--rows` is at most 50 M and the import runs once.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use gridpulse_actors::log::LogError;
use gridpulse_domain::{Limits, MeterId, Reading};
use gridpulse_ingest::InProcessLog;
use gridpulse_ingest::import::{
    ImportOptions, ImportTarget, MeterStatus, ReportFormat, ReportWriter, run_import,
};

use crate::report;

/// Options of the import benchmark.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// CSV rows to import (at most 50,000,000).
    #[arg(long, default_value_t = 4_000_000, value_parser = clap::value_parser!(u64).range(1..=50_000_000))]
    rows: u64,
    /// Meters the rows cycle through.
    #[arg(long, default_value_t = 10_000)]
    meters: u64,
    /// Readings per append to the log.
    #[arg(long, default_value_t = gridpulse_ingest::import::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Every n-th row is invalid (0: none), to include the report path.
    #[arg(long, default_value_t = 1000)]
    bad_every: u64,
    /// Gzip the file first (measures decompression too).
    #[arg(long)]
    gzip: bool,
}

/// Appends to the in-process log; every meter is registered.
struct LogTarget(Arc<InProcessLog>);

impl ImportTarget for LogTarget {
    fn append(&mut self, readings: &[Reading]) -> Result<(), LogError> {
        self.0.append(readings)
    }
    fn resolve_meter(&mut self, _meter: MeterId, _register: bool) -> Result<MeterStatus, String> {
        Ok(MeterStatus::Known)
    }
}

fn generate(args: &ImportArgs, start_ms: i64) -> Vec<u8> {
    let mut csv = Vec::with_capacity(args.rows as usize * 56);
    csv.extend_from_slice(b"meter,ts,voltage,current,power_w,energy_wh\n");
    let meters = args.meters.max(1);
    for row in 0..args.rows {
        let meter = row % meters;
        let step = row / meters;
        let ts = start_ms + step as i64 * 10_000;
        let voltage = 228.0 + (row % 7) as f64 * 0.5;
        let power = 300 + (row % 900);
        let energy = step as f64 * 0.9 + meter as f64;
        if args.bad_every > 0 && row % args.bad_every == args.bad_every - 1 {
            let _ = writeln!(
                csv,
                "meter-{meter},{ts},{voltage:.1},oops,{power},{energy:.2}"
            );
        } else {
            let _ = writeln!(
                csv,
                "meter-{meter},{ts},{voltage:.1},6.5,{power},{energy:.2}"
            );
        }
    }
    csv
}

/// Runs the benchmark.
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let steps = args.rows / args.meters.max(1) + 1;
    let start_ms = now_ms - steps as i64 * 10_000 - 60_000;
    let plain = generate(&args, start_ms);
    let input = if args.gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&plain)?;
        encoder.finish()?
    } else {
        plain.clone()
    };
    let log = InProcessLog::new(8, args.rows as usize + 1);
    let mut target = LogTarget(Arc::clone(&log));
    let options = ImportOptions {
        batch_size: args.batch_size,
        ..ImportOptions::default()
    };
    let mut report_out = ReportWriter::new(ReportFormat::Ndjson, std::io::sink());
    println!(
        "importing {} CSV rows ({:.1} MB{}) of {} meters into the in-process log",
        args.rows,
        plain.len() as f64 / 1e6,
        if args.gzip {
            format!(", {:.1} MB gzip", input.len() as f64 / 1e6)
        } else {
            String::new()
        },
        args.meters
    );
    let started = Instant::now();
    let summary = run_import(
        input.as_slice(),
        &options,
        &mut target,
        &mut report_out,
        now_ms,
        &Limits::default(),
    );
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(summary.complete, "import failed: {:?}", summary.error);
    anyhow::ensure!(
        summary.accepted as usize == log.pending(),
        "the log holds {} readings, the summary says {} accepted",
        log.pending(),
        summary.accepted
    );
    let rows_per_sec = summary.rows as f64 / elapsed;
    let mb_per_sec = plain.len() as f64 / 1e6 / elapsed;
    println!(
        "{} rows in {elapsed:.3} s: {rows_per_sec:.0} rows/s, {mb_per_sec:.1} MB/s of CSV; accepted {}, rejected {}, duplicates {}",
        summary.rows, summary.accepted, summary.rejected, summary.duplicates
    );
    report::print_key_values(&[
        ("mode", "import".into()),
        ("format", "csv".into()),
        ("gzip", args.gzip.to_string()),
        ("rows", summary.rows.to_string()),
        ("accepted", summary.accepted.to_string()),
        ("rejected", summary.rejected.to_string()),
        ("seconds", format!("{elapsed:.3}")),
        ("rows_per_sec", format!("{rows_per_sec:.0}")),
        ("mb_per_sec", format!("{mb_per_sec:.1}")),
        ("cores", report::cores().to_string()),
    ]);
    Ok(())
}
