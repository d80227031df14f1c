//! Bulk import: a utility's file of history (CSV with a header, or NDJSON; optionally
//! gzip) streamed into the reading log as backfill, with a per-row error report.
//!
//! The input is read in chunks and split into lines with one reused buffer
//! ([`lines`]), so a multi-GB file never sits in memory; valid rows are appended to the
//! log in batches ([`ImportOptions::batch_size`], 16,384 by default) through an
//! [`ImportTarget`]; every refused row becomes one report line (line number, field,
//! code, reason) and the good rows around it are imported all the same. The import is
//! synchronous: callers run it on a blocking thread (`spawn_blocking`), never on the
//! actor runtime.
//!
//! Every imported reading has `backfill = true`: history updates energy, stored
//! readings and rollups but raises no live alert. Re-importing a file stores nothing
//! twice because the store keys readings by (meter, ts). Within one import a row whose
//! ts equals its meter's latest or previous accepted ts is a *duplicate*, counted and
//! not appended; a row older than its meter's latest is *out of order*: appended (a
//! repeat among those overwrites its own row in the store) and counted. So
//! `duplicates` is exact when `out_of_order` is 0 — every meter's rows in ascending
//! time order, meters interleaved in any way — and a lower bound otherwise, with
//! memory per meter (two timestamps), never per row.

pub mod csv;
pub mod lines;

use std::io::{self, BufReader, Read, Write};

use gridpulse_actors::log::LogError;
use gridpulse_domain::{Limits, MeterId, ParseError, Reading, parse_reading};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::metrics;
use csv::{CsvLayout, RowProblem};
use lines::{Line, LineReader};

/// How the CSV `ts` column is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampFormat {
    /// Unix milliseconds (the default).
    #[default]
    UnixMs,
    /// Unix seconds, fractions allowed.
    UnixSeconds,
    /// RFC 3339 (`2024-05-01T12:00:00Z`, any offset).
    Rfc3339,
}

/// The unit of the CSV energy column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnergyUnit {
    /// Watt-hours (the default).
    #[default]
    Wh,
    /// Kilowatt-hours.
    Kwh,
}

/// The unit of the CSV power column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PowerUnit {
    /// Watts (the default).
    #[default]
    W,
    /// Kilowatts.
    Kw,
}

/// The file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CSV if the first line does not start with `{`, NDJSON if it does.
    #[default]
    Auto,
    /// CSV with a header line.
    Csv,
    /// One JSON reading per line (canonical or seed firmware format).
    Ndjson,
}

/// How to read a file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportOptions {
    /// CSV, NDJSON or decided by the first line.
    pub format: Format,
    /// `Some(true)`: the input is gzip (`Content-Encoding: gzip`, a `.gz` file);
    /// `None`: gzip when it starts with gzip's magic bytes.
    pub gzip: Option<bool>,
    /// CSV `ts` format.
    pub ts_format: TimestampFormat,
    /// CSV energy unit.
    pub energy_unit: EnergyUnit,
    /// CSV power unit.
    pub power_unit: PowerUnit,
    /// Register meters that have no configuration instead of refusing their rows.
    pub register_meters: bool,
    /// Readings per append to the log.
    pub batch_size: usize,
    /// Longest line accepted, bytes; a longer one is a row error (`line_too_long`).
    pub max_line_bytes: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            format: Format::Auto,
            gzip: None,
            ts_format: TimestampFormat::UnixMs,
            energy_unit: EnergyUnit::Wh,
            power_unit: PowerUnit::W,
            register_meters: false,
            batch_size: DEFAULT_BATCH_SIZE,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// Readings per append by default.
pub const DEFAULT_BATCH_SIZE: usize = 16_384;
/// The per-line limit by default: 16 KiB (a reading is ~100 bytes).
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024;

/// One refused row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowError {
    /// 1-based line number in the (decompressed) file; the CSV header is line 1.
    pub line: u64,
    /// The field (CSV column or JSON key) to blame; `""` for the whole row.
    pub field: &'static str,
    /// A stable code: the domain's (`missing`, `wrong_type`, `negative`,
    /// `out_of_range`, `future_timestamp`, ...) or `unknown_meter`, `line_too_long`,
    /// `wrong_column_count`, `malformed_json`, `invalid_utf8`.
    pub code: &'static str,
    /// For people.
    pub reason: String,
}

/// Why an import stopped before the end of its input (what came before is imported).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportFailure {
    /// `truncated` (the input ended inside a gzip stream or the body was cut),
    /// `bad_gzip`, `input` (another read error), `bad_header`, `log` (the log refused
    /// an append), `meters` (the meter directory failed).
    pub code: &'static str,
    /// What happened, for people.
    pub message: String,
    /// The last line read before it.
    pub after_line: u64,
    /// The CSV column to blame (`bad_header`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// What an import did. `rows = accepted + rejected + duplicates`, except that after a
/// failure of the log the rows of the batch it refused are in `rows` only.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ImportSummary {
    /// `csv` or `ndjson` (`auto` when nothing was read).
    pub format: Format,
    /// Whether the input was gzip.
    pub gzip: bool,
    /// Bytes of (decompressed) input read.
    pub bytes: u64,
    /// Data rows read: lines but the CSV header and blank lines.
    pub rows: u64,
    /// Rows appended to the log.
    pub accepted: u64,
    /// Rows refused (one report line each).
    pub rejected: u64,
    /// Rows repeating the (meter, ts) of their meter's latest or previous accepted row
    /// in this import: not appended again. Exact when `out_of_order` is 0.
    pub duplicates: u64,
    /// Accepted rows older than their meter's latest accepted row in this import
    /// (appended; a repeat among them is not counted in `duplicates`).
    pub out_of_order: u64,
    /// Meters registered because of `register_meters`.
    pub meters_registered: u64,
    /// Whether the whole input was read.
    pub complete: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ImportFailure>,
}

/// Whether a meter may receive imported readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterStatus {
    /// It has a configuration.
    Known,
    /// It had none and was registered now (`register_meters`).
    Registered,
    /// It has none: its rows are refused (`unknown_meter`).
    Unknown,
}

/// Where an import goes: the log, and the directory of registered meters. Called from
/// the import's (blocking) thread.
pub trait ImportTarget {
    /// Appends readings durably (returns once they are in the log).
    fn append(&mut self, readings: &[Reading]) -> Result<(), LogError>;
    /// Whether `meter` is registered; registers it when `register` and it is not.
    fn resolve_meter(&mut self, meter: MeterId, register: bool) -> Result<MeterStatus, String>;
}

/// The report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReportFormat {
    /// One JSON object per refused row, then `{"summary": {...}}`.
    #[default]
    Ndjson,
    /// `line,field,code,reason` rows after a header, then `# summary {...}`.
    Csv,
}

/// Writes the report of an import as it goes.
#[derive(Debug)]
pub struct ReportWriter<W: Write> {
    format: ReportFormat,
    out: W,
    started: bool,
}

impl<W: Write> ReportWriter<W> {
    /// A report in `format` to `out`.
    pub fn new(format: ReportFormat, out: W) -> ReportWriter<W> {
        ReportWriter {
            format,
            out,
            started: false,
        }
    }

    fn start(&mut self) -> io::Result<()> {
        if !self.started {
            self.started = true;
            if self.format == ReportFormat::Csv {
                self.out.write_all(b"line,field,code,reason\n")?;
            }
        }
        Ok(())
    }

    /// One refused row.
    pub fn row(&mut self, error: &RowError) -> io::Result<()> {
        self.start()?;
        match self.format {
            ReportFormat::Ndjson => {
                serde_json::to_writer(&mut self.out, error).map_err(io::Error::other)?;
                self.out.write_all(b"\n")
            }
            ReportFormat::Csv => {
                write!(self.out, "{},{},{},\"", error.line, error.field, error.code)?;
                self.out
                    .write_all(error.reason.replace('"', "\"\"").as_bytes())?;
                self.out.write_all(b"\"\n")
            }
        }
    }

    /// The closing summary line; flushes.
    pub fn summary(&mut self, summary: &ImportSummary) -> io::Result<()> {
        self.start()?;
        #[derive(Serialize)]
        struct Line<'a> {
            summary: &'a ImportSummary,
        }
        if self.format == ReportFormat::Csv {
            self.out.write_all(b"# summary ")?;
            serde_json::to_writer(&mut self.out, summary).map_err(io::Error::other)?;
        } else {
            serde_json::to_writer(&mut self.out, &Line { summary }).map_err(io::Error::other)?;
        }
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Per-meter state of one import.
#[derive(Debug, Clone, Copy)]
struct MeterEntry {
    status: MeterStatus,
    /// The ts of the meter's previous accepted row (`i64::MIN` before the first).
    last_ts_ms: i64,
    /// The latest ts of the meter's accepted rows (`i64::MIN` before the first).
    max_ts_ms: i64,
}

struct Run<'a, T: ImportTarget, W: Write> {
    options: &'a ImportOptions,
    target: &'a mut T,
    report: &'a mut ReportWriter<W>,
    now_ms: i64,
    limits: &'a Limits,
    summary: ImportSummary,
    /// Per meter of this import, by first appearance.
    meters: Vec<MeterEntry>,
    meter_index: FxHashMap<MeterId, usize>,
    /// The meter of the previous row (files often group rows by meter).
    last_meter: Option<(MeterId, usize)>,
    batch: Vec<Reading>,
}

/// Why a run stopped.
enum Stop {
    Failure(ImportFailure),
    /// The report could not be written (the client went away): stop quietly.
    Report(io::Error),
}

/// Imports `input`, writing one report line per refused row to `report`; returns the
/// summary (the caller writes it, with [`ReportWriter::summary`], where it wants).
pub fn run_import<R: Read, T: ImportTarget, W: Write>(
    input: R,
    options: &ImportOptions,
    target: &mut T,
    report: &mut ReportWriter<W>,
    now_ms: i64,
    limits: &Limits,
) -> ImportSummary {
    let mut run = Run {
        options,
        target,
        report,
        now_ms,
        limits,
        summary: ImportSummary::default(),
        meters: Vec::new(),
        meter_index: FxHashMap::default(),
        last_meter: None,
        batch: Vec::with_capacity(options.batch_size.max(1)),
    };
    match run.go(input) {
        Ok(()) => run.summary.complete = true,
        Err(Stop::Failure(failure)) => {
            tracing::warn!(code = failure.code, error = %failure.message, "import stopped");
            run.summary.error = Some(failure);
        }
        Err(Stop::Report(error)) => {
            tracing::info!(%error, "import report not deliverable, import stopped");
            run.summary.error = Some(ImportFailure {
                code: "report",
                message: format!("the report could not be written: {error}"),
                after_line: 0,
                field: None,
            });
        }
    }
    run.summary
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// How long one batch waits for room in a full log before the import gives up.
pub const LOG_FULL_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

impl<T: ImportTarget, W: Write> Run<'_, T, W> {
    fn go<R: Read>(&mut self, input: R) -> Result<(), Stop> {
        let (head, input) = sniff(input).map_err(|error| self.input_failure(&error, 0))?;
        let is_gzip = head.starts_with(&GZIP_MAGIC);
        if self.options.gzip == Some(true) && !is_gzip && !head.is_empty() {
            return Err(Stop::Failure(ImportFailure {
                code: "bad_gzip",
                message: "the input was declared gzip but does not start with gzip's magic bytes"
                    .into(),
                after_line: 0,
                field: None,
            }));
        }
        self.summary.gzip = is_gzip;
        let result = if is_gzip {
            let decoder =
                flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(64 * 1024, input));
            self.lines(LineReader::new(decoder, self.options.max_line_bytes))
        } else {
            self.lines(LineReader::new(input, self.options.max_line_bytes))
        };
        // What was parsed before a failure of the input is imported all the same.
        let flushed = self.flush();
        result.and(flushed)
    }

    fn lines<R: Read>(&mut self, mut reader: LineReader<R>) -> Result<(), Stop> {
        let result = self.read_lines(&mut reader);
        self.summary.bytes = reader.bytes_read();
        match result {
            Ok(outcome) => outcome,
            Err(error) => Err(self.input_failure(&error, reader.line_number())),
        }
    }

    /// The loop over lines: `Err` for a failure of the input, `Ok(Err)` for any other.
    fn read_lines<R: Read>(
        &mut self,
        reader: &mut LineReader<R>,
    ) -> Result<Result<(), Stop>, io::Error> {
        let mut csv: Option<CsvLayout> = None;
        loop {
            let (number, line) = match reader.next_line()? {
                Some(found) => found,
                None => return Ok(Ok(())),
            };
            let text = match line {
                Line::TooLong(length) => {
                    if self.summary.format == Format::Auto {
                        return Ok(Err(Stop::Failure(ImportFailure {
                            code: "bad_header",
                            message: format!(
                                "the first line is {length} bytes long, over the limit of {} bytes",
                                self.options.max_line_bytes
                            ),
                            after_line: 0,
                            field: None,
                        })));
                    }
                    self.summary.rows += 1;
                    if let Err(stop) = self.reject(RowError {
                        line: number,
                        field: "",
                        code: "line_too_long",
                        reason: format!(
                            "line is {length} bytes long, over the limit of {} bytes",
                            self.options.max_line_bytes
                        ),
                    }) {
                        return Ok(Err(stop));
                    }
                    continue;
                }
                Line::Text(text) => text,
            };
            let text = if number == 1 {
                text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text)
            } else {
                text
            };
            if text.trim_ascii().is_empty() {
                continue;
            }
            if self.summary.format == Format::Auto {
                let ndjson = match self.options.format {
                    Format::Ndjson => true,
                    Format::Csv => false,
                    Format::Auto => text.trim_ascii_start().first() == Some(&b'{'),
                };
                if ndjson {
                    self.summary.format = Format::Ndjson;
                } else {
                    self.summary.format = Format::Csv;
                    match CsvLayout::from_header(
                        text,
                        self.options.ts_format,
                        self.options.energy_unit,
                        self.options.power_unit,
                    ) {
                        Ok(layout) => csv = Some(layout),
                        Err(error) => {
                            return Ok(Err(Stop::Failure(ImportFailure {
                                code: "bad_header",
                                message: error.to_string(),
                                after_line: 0,
                                field: Some(error.column()),
                            })));
                        }
                    }
                    continue;
                }
            }
            self.summary.rows += 1;
            let parsed = match &csv {
                Some(layout) => layout.parse_row(text, self.now_ms, self.limits).map_err(
                    |problem| match problem {
                        RowProblem::Field(error) => RowError {
                            line: number,
                            field: error.field,
                            code: error.reason.code(),
                            reason: error.to_string(),
                        },
                        RowProblem::ColumnCount { found, expected } => RowError {
                            line: number,
                            field: "",
                            code: "wrong_column_count",
                            reason: format!(
                                "row has {found} fields, the header has {expected} columns"
                            ),
                        },
                    },
                ),
                None => parse_reading(text, self.now_ms, self.limits)
                    .map(|reading| Reading {
                        backfill: true,
                        ..reading
                    })
                    .map_err(|error| match error {
                        ParseError::Malformed(error) => RowError {
                            line: number,
                            field: "",
                            code: "malformed_json",
                            reason: format!(
                                "malformed JSON at column {}: {}",
                                error.column, error.message
                            ),
                        },
                        ParseError::Invalid(error) => RowError {
                            line: number,
                            field: error.field,
                            code: error.reason.code(),
                            reason: error.to_string(),
                        },
                    }),
            };
            let outcome = match parsed {
                Ok(reading) => self.accept(number, reading),
                Err(error) => self.reject(error),
            };
            if let Err(stop) = outcome {
                return Ok(Err(stop));
            }
        }
    }

    fn accept(&mut self, line: u64, reading: Reading) -> Result<(), Stop> {
        let idx = match self.last_meter {
            Some((meter, idx)) if meter == reading.meter => idx,
            _ => match self.meter_index.get(&reading.meter) {
                Some(idx) => *idx,
                None => self.resolve(reading.meter, line)?,
            },
        };
        self.last_meter = Some((reading.meter, idx));
        let entry = &mut self.meters[idx];
        if entry.status == MeterStatus::Unknown {
            return self.reject(RowError {
                line,
                field: "meter",
                code: "unknown_meter",
                reason: format!(
                    "meter `{}` is not registered: register it (POST /api/meters) or import with register_meters=true",
                    reading.meter
                ),
            });
        }
        if entry.last_ts_ms == reading.ts_ms || entry.max_ts_ms == reading.ts_ms {
            self.summary.duplicates += 1;
            return Ok(());
        }
        if reading.ts_ms < entry.max_ts_ms {
            self.summary.out_of_order += 1;
        }
        entry.last_ts_ms = reading.ts_ms;
        entry.max_ts_ms = entry.max_ts_ms.max(reading.ts_ms);
        self.batch.push(reading);
        if self.batch.len() >= self.options.batch_size.max(1) {
            return self.flush();
        }
        Ok(())
    }

    fn resolve(&mut self, meter: MeterId, line: u64) -> Result<usize, Stop> {
        let status = self
            .target
            .resolve_meter(meter, self.options.register_meters)
            .map_err(|message| {
                Stop::Failure(ImportFailure {
                    code: "meters",
                    message: format!("looking up meter `{meter}` failed: {message}"),
                    after_line: line.saturating_sub(1),
                    field: None,
                })
            })?;
        if status == MeterStatus::Registered {
            self.summary.meters_registered += 1;
        }
        let idx = self.meters.len();
        self.meters.push(MeterEntry {
            status,
            last_ts_ms: i64::MIN,
            max_ts_ms: i64::MIN,
        });
        self.meter_index.insert(meter, idx);
        Ok(idx)
    }

    fn reject(&mut self, error: RowError) -> Result<(), Stop> {
        self.summary.rejected += 1;
        metrics::record_rejected("import", error.code, 1);
        self.report.row(&error).map_err(Stop::Report)
    }

    fn flush(&mut self) -> Result<(), Stop> {
        if self.batch.is_empty() {
            return Ok(());
        }
        // A full log is backpressure, not a failure: the import waits for the consumers
        // (which is what slows the upload) for up to `LOG_FULL_PATIENCE` per batch.
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(1);
        let result = loop {
            match self.target.append(&self.batch) {
                Err(LogError::Full { .. }) if started.elapsed() < LOG_FULL_PATIENCE => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                other => break other,
            }
        };
        let n = self.batch.len() as u64;
        self.batch.clear();
        match result {
            Ok(()) => {
                self.summary.accepted += n;
                metrics::record_accepted("import", n);
                Ok(())
            }
            Err(error) => Err(Stop::Failure(ImportFailure {
                code: "log",
                message: format!("the reading log refused {n} readings: {error}"),
                after_line: 0,
                field: None,
            })),
        }
    }

    fn input_failure(&self, error: &io::Error, after_line: u64) -> Stop {
        let truncated = error.kind() == io::ErrorKind::UnexpectedEof;
        let code = if truncated {
            "truncated"
        } else if self.summary.gzip && error.kind() == io::ErrorKind::InvalidInput {
            "bad_gzip"
        } else {
            "input"
        };
        let message = if truncated && self.summary.gzip {
            format!(
                "the gzip stream is truncated ({error}) after line {after_line}: the rows before it were imported, the cut line was not"
            )
        } else if truncated {
            format!(
                "the input ended early ({error}) after line {after_line}: the rows before it were imported"
            )
        } else {
            format!("reading the input failed after line {after_line}: {error}")
        };
        Stop::Failure(ImportFailure {
            code,
            message,
            after_line,
            field: None,
        })
    }
}

/// The input with its first bytes put back in front.
type Sniffed<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Reads the first bytes of `input` (up to 2: gzip's magic), giving them back in
/// front of the rest.
fn sniff<R: Read>(mut input: R) -> io::Result<(Vec<u8>, Sniffed<R>)> {
    let mut head = [0u8; 2];
    let mut filled = 0;
    while filled < head.len() {
        match input.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    let head = head[..filled].to_vec();
    Ok((head.clone(), io::Cursor::new(head).chain(input)))
}

#[cfg(test)]
mod tests;
