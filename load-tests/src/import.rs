//! `import` mode: bulk import of a CSV file (`gridpulse_ingest::import`) into the
//! in-process log.
//!
//! Generates `--rows` CSV rows of `--meters` meters (one reading per meter every 10 s,
//! rows in time order, so consecutive rows name different meters: the per-meter lookup
//! runs for every row) in memory, optionally gzips it, then times the import: line
//! splitting, field decoding, validation by the domain rules, the per-meter checks
//! (registered, duplicate) and batched appends to an `InProcessLog` with 8 partitions.
//! Generation is not timed. Bounded: `--rows` is at most 50 M and the import runs once.
//!
//! `--stream` measures memory instead: the CSV is generated while the import reads it
//! (a `Read` that makes rows on demand, nothing of the file in memory) and the valid
//! rows are counted and dropped after each batch append instead of kept in a log, so
//! the process's peak RSS (`VmHWM`) is the import's own: reader, line buffer, parser,
//! per-meter map, batch and report. Printed as `peak_rss_mib=` with the RSS before.

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
    /// Generate the file while importing it and drop appended rows: report the peak RSS
    /// of the import alone (timing includes generation).
    #[arg(long, conflicts_with = "gzip")]
    stream: bool,
}

/// Counts appended rows and drops them (`--stream`).
struct DropTarget {
    appended: u64,
}

impl ImportTarget for DropTarget {
    fn append(&mut self, readings: &[Reading]) -> Result<(), LogError> {
        self.appended += readings.len() as u64;
        Ok(())
    }
    fn resolve_meter(&mut self, _meter: MeterId, _register: bool) -> Result<MeterStatus, String> {
        Ok(MeterStatus::Known)
    }
}

/// The CSV of [`generate`], made on demand a few thousand rows at a time.
struct GeneratedCsv<'a> {
    args: &'a ImportArgs,
    start_ms: i64,
    next_row: u64,
    buffer: Vec<u8>,
    position: usize,
    bytes: u64,
}

impl std::io::Read for GeneratedCsv<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.position == self.buffer.len() {
            self.buffer.clear();
            self.position = 0;
            if self.next_row == 0 {
                self.buffer
                    .extend_from_slice(b"meter,ts,voltage,current,power_w,energy_wh\n");
            }
            let end = (self.next_row + 4096).min(self.args.rows);
            for row in self.next_row..end {
                write_row(&mut self.buffer, self.args, self.start_ms, row);
            }
            self.next_row = end;
            if self.buffer.is_empty() {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buffer.len() - self.position);
        out[..n].copy_from_slice(&self.buffer[self.position..self.position + n]);
        self.position += n;
        self.bytes += n as u64;
        Ok(n)
    }
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
    for row in 0..args.rows {
        write_row(&mut csv, args, start_ms, row);
    }
    csv
}

fn write_row(csv: &mut Vec<u8>, args: &ImportArgs, start_ms: i64, row: u64) {
    let meters = args.meters.max(1);
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

/// `--stream`: the import's peak memory.
fn run_streamed(args: &ImportArgs, now_ms: i64, start_ms: i64) -> anyhow::Result<()> {
    let mib = |bytes: Option<u64>| bytes.map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0));
    let rss_before = mib(report::peak_resident_bytes());
    let mut input = GeneratedCsv {
        args,
        start_ms,
        next_row: 0,
        buffer: Vec::with_capacity(4096 * 64),
        position: 0,
        bytes: 0,
    };
    let mut target = DropTarget { appended: 0 };
    let options = ImportOptions {
        batch_size: args.batch_size,
        ..ImportOptions::default()
    };
    let mut report_out = ReportWriter::new(ReportFormat::Ndjson, std::io::sink());
    println!(
        "importing {} CSV rows of {} meters generated on the fly (appended rows dropped)",
        args.rows, args.meters
    );
    let started = Instant::now();
    let summary = run_import(
        &mut input,
        &options,
        &mut target,
        &mut report_out,
        now_ms,
        &Limits::default(),
    );
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(summary.complete, "import failed: {:?}", summary.error);
    anyhow::ensure!(
        summary.accepted == target.appended,
        "appended {}, the summary says {} accepted",
        target.appended,
        summary.accepted
    );
    let peak = mib(report::peak_resident_bytes());
    let rows_per_sec = summary.rows as f64 / elapsed;
    println!(
        "{} rows ({:.1} MB) in {elapsed:.3} s ({rows_per_sec:.0} rows/s, generation included); peak RSS {peak:.1} MiB (before the import {rss_before:.1} MiB)",
        summary.rows,
        input.bytes as f64 / 1e6
    );
    report::print_key_values(&[
        ("mode", "import".into()),
        ("stream", "true".into()),
        ("rows", summary.rows.to_string()),
        ("meters", args.meters.to_string()),
        ("accepted", summary.accepted.to_string()),
        ("rejected", summary.rejected.to_string()),
        ("bytes", input.bytes.to_string()),
        ("seconds", format!("{elapsed:.3}")),
        ("peak_rss_mib", format!("{peak:.1}")),
        ("rss_before_mib", format!("{rss_before:.1}")),
        ("cores", report::cores().to_string()),
    ]);
    Ok(())
}

/// Runs the benchmark.
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let steps = args.rows / args.meters.max(1) + 1;
    let start_ms = now_ms - steps as i64 * 10_000 - 60_000;
    if args.stream {
        return run_streamed(&args, now_ms, start_ms);
    }
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
