//! `POST /api/import`: a utility's file of history (CSV or NDJSON, optionally gzip)
//! streamed into the reading log as backfill, answered by a streamed per-row report.
//!
//! The request body is read chunk by chunk and handed through a bounded channel to the
//! import (`gridpulse_ingest::import`) on a blocking thread, so the body never sits in
//! memory and a slow log slows the upload (TCP backpressure) instead of buffering it;
//! the small JSON body limit does not apply. The answer is `200` as soon as the options
//! are checked, and its body is the report as it is written: one line per refused row,
//! then the summary line (`{"summary": {...}}`, or `# summary {...}` for
//! `report=csv`). A failure mid-way (a truncated gzip stream, the body cut, the log
//! refusing) ends the report with a summary saying `"complete": false` and why; the
//! rows before it are imported.

use std::io::{self, Read, Write};
use std::sync::Arc;

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, post, web};
use futures_util::StreamExt;
use gridpulse_actors::MeterSystem;
use gridpulse_actors::log::LogError;
use gridpulse_domain::{Limits, MeterId, Reading};
use gridpulse_ingest::ReadingLog;
use gridpulse_ingest::import::{
    EnergyUnit, Format, ImportOptions, ImportTarget, MeterStatus, PowerUnit, ReportFormat,
    ReportWriter, TimestampFormat, run_import,
};
use gridpulse_store::{ConfigKind, Store};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::state::AppState;

/// Options of an import, as query parameters (all optional).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    format: Option<String>,
    ts: Option<String>,
    energy_unit: Option<String>,
    power_unit: Option<String>,
    register_meters: Option<String>,
    report: Option<String>,
}

fn choose<T: Copy>(
    field: &'static str,
    value: Option<&str>,
    choices: &[(&str, T)],
    default: T,
) -> Result<T, ApiError> {
    let Some(value) = value else {
        return Ok(default);
    };
    choices
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, choice)| *choice)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            ApiError::bad_field(
                field,
                format!("must be one of {}, got {value:?}", names.join(", ")),
            )
        })
}

fn options(query: &ImportQuery) -> Result<(ImportOptions, ReportFormat), ApiError> {
    let options = ImportOptions {
        format: choose(
            "format",
            query.format.as_deref(),
            &[
                ("auto", Format::Auto),
                ("csv", Format::Csv),
                ("ndjson", Format::Ndjson),
            ],
            Format::Auto,
        )?,
        ts_format: choose(
            "ts",
            query.ts.as_deref(),
            &[
                ("ms", TimestampFormat::UnixMs),
                ("s", TimestampFormat::UnixSeconds),
                ("rfc3339", TimestampFormat::Rfc3339),
            ],
            TimestampFormat::UnixMs,
        )?,
        energy_unit: choose(
            "energy_unit",
            query.energy_unit.as_deref(),
            &[("wh", EnergyUnit::Wh), ("kwh", EnergyUnit::Kwh)],
            EnergyUnit::Wh,
        )?,
        power_unit: choose(
            "power_unit",
            query.power_unit.as_deref(),
            &[("w", PowerUnit::W), ("kw", PowerUnit::Kw)],
            PowerUnit::W,
        )?,
        register_meters: choose(
            "register_meters",
            query.register_meters.as_deref(),
            &[("true", true), ("false", false)],
            false,
        )?,
        ..ImportOptions::default()
    };
    let report = choose(
        "report",
        query.report.as_deref(),
        &[("ndjson", ReportFormat::Ndjson), ("csv", ReportFormat::Csv)],
        ReportFormat::Ndjson,
    )?;
    Ok((options, report))
}

/// The log and the meter directory, from the import's blocking thread.
struct ApiTarget {
    log: ReadingLog,
    store: Arc<dyn Store>,
    meters: MeterSystem,
    runtime: tokio::runtime::Handle,
}

impl ImportTarget for ApiTarget {
    fn append(&mut self, readings: &[Reading]) -> Result<(), LogError> {
        match &self.log {
            // Already on a blocking thread: the journal's fsync may block here.
            ReadingLog::InProcess(log) => log.append(readings),
            ReadingLog::Kafka(producer) => self.runtime.block_on(producer.append(readings)),
        }
    }

    fn resolve_meter(&mut self, meter: MeterId, register: bool) -> Result<MeterStatus, String> {
        let config = self
            .runtime
            .block_on(self.store.get_config(ConfigKind::Meter, meter.as_str()))
            .map_err(|error| error.to_string())?;
        if config.is_some() {
            return Ok(MeterStatus::Known);
        }
        if !register {
            return Ok(MeterStatus::Unknown);
        }
        // The registration `POST /api/meters {"id": meter}` makes: no owner, no tariff.
        self.runtime
            .block_on(self.meters.set_registration(meter, None, None, false))
            .map_err(|error| error.to_string())?;
        Ok(MeterStatus::Registered)
    }
}

/// The request body, read on the blocking thread from the chunks the handler forwards.
struct BodyReader {
    chunks: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(message)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the request body ended early: {message}"),
                    ));
                }
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// The report, sent to the response body in chunks of about 16 KiB.
struct ReportSender {
    sender: mpsc::Sender<Bytes>,
    buffer: Vec<u8>,
}

impl Write for ReportSender {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= 16 * 1024 {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        self.sender
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

/// Imports a file of readings (CSV with a header, or NDJSON; gzip by `Content-Encoding:
/// gzip` or its magic bytes) as backfill. The body is the report: one line per refused
/// row (`{"line", "field", "code", "reason"}`), then `{"summary": {"format", "gzip",
/// "bytes", "rows", "accepted", "rejected", "duplicates", "out_of_order", "meters_registered",
/// "complete", "error"}}`.
#[utoipa::path(
    post,
    path = "/api/import",
    tag = "readings",
    params(
        ("format" = Option<String>, Query, description = "auto (default: NDJSON if the first line starts with `{`), csv or ndjson"),
        ("ts" = Option<String>, Query, description = "CSV `ts` column: ms (Unix milliseconds, default), s (Unix seconds) or rfc3339"),
        ("energy_unit" = Option<String>, Query, description = "CSV energy column: wh (default) or kwh"),
        ("power_unit" = Option<String>, Query, description = "CSV power column: w (default) or kw"),
        ("register_meters" = Option<bool>, Query, description = "Register meters without a configuration instead of refusing their rows (default false)"),
        ("report" = Option<String>, Query, description = "Report format: ndjson (default) or csv"),
    ),
    request_body(content = String, description = "The file: CSV with a header (meter, ts, voltage, current, power_w, energy_wh, optional credit, seq) or NDJSON readings; optionally gzip", content_type = "text/csv"),
    responses(
        (status = 200, description = "The report, streamed: one line per refused row, then the summary", body = String, content_type = "application/x-ndjson"),
        (status = 400, description = "A parameter or body field is invalid (`error.field` names it)", body = crate::openapi::ErrorResponse),
        (status = 401, description = "No valid token (`error.code` says why)", body = crate::openapi::ErrorResponse),
        (status = 403, description = "The caller's role may not do this", body = crate::openapi::ErrorResponse),
        (status = 429, description = "Rate limit exceeded (see `Retry-After`)", body = crate::openapi::ErrorResponse),
        (status = 503, description = "Unavailable: no store (`--in-memory`), shutting down or overloaded", body = crate::openapi::ErrorResponse),
    ),
)]
#[post("/api/import")]
pub async fn post_import(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<ImportQuery>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (mut options, report_format) = options(&query)?;
    match request
        .headers()
        .get("content-encoding")
        .map(|value| value.to_str().unwrap_or("").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => {}
        Some("gzip" | "x-gzip") => options.gzip = Some(true),
        Some(other) => {
            return Err(ApiError::bad_field(
                "Content-Encoding",
                format!("must be gzip or identity, got {other:?}"),
            ));
        }
    }
    let store = state.store.clone().ok_or_else(|| {
        ApiError::Unavailable(
            "import needs persistence (imported history is stored and meters are checked \
             against their stored configuration): this process runs without a store \
             (started with --in-memory)"
                .into(),
        )
    })?;
    let (chunk_sender, chunks) = mpsc::channel::<Result<Bytes, String>>(16);
    let (report_sender, mut report) = mpsc::channel::<Bytes>(16);
    // The payload is tied to this worker's thread: forward it from here.
    actix_web::rt::spawn(async move {
        while let Some(chunk) = payload.next().await {
            let item = chunk.map_err(|error| error.to_string());
            let failed = item.is_err();
            if chunk_sender.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    let mut target = ApiTarget {
        log: state.log.clone(),
        store,
        meters: state.meters.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let limits: Limits = state.limits;
    let now_ms = state.clock.now_ms();
    tokio::task::spawn_blocking(move || {
        let input = BodyReader {
            chunks,
            current: Bytes::new(),
        };
        let mut writer = ReportWriter::new(
            report_format,
            ReportSender {
                sender: report_sender,
                buffer: Vec::with_capacity(16 * 1024),
            },
        );
        let summary = run_import(input, &options, &mut target, &mut writer, now_ms, &limits);
        tracing::info!(
            rows = summary.rows,
            accepted = summary.accepted,
            rejected = summary.rejected,
            duplicates = summary.duplicates,
            complete = summary.complete,
            "import finished"
        );
        if let Err(error) = writer.summary(&summary) {
            tracing::info!(%error, "import summary not delivered");
        }
    });
    let body = futures_util::stream::poll_fn(move |context| {
        report
            .poll_recv(context)
            .map(|chunk| chunk.map(Ok::<Bytes, actix_web::Error>))
    });
    let content_type = match report_format {
        ReportFormat::Ndjson => "application/x-ndjson",
        ReportFormat::Csv => "text/csv; charset=utf-8",
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("cache-control", "no-store"))
        .streaming(body))
}
