//! Accepting a body of readings: parse, validate, append the good ones, report the bad.
//!
//! The one path every source shares (HTTP, simulator, benchmarks; MQTT and bulk import
//! later), so validation and counting are the same everywhere.

use std::sync::Arc;

use gridpulse_domain::{Limits, MalformedJson, Reading, ReadingError, parse_batch};

use crate::kafka::producer::KafkaReadingProducer;
use crate::memory_log::InProcessLog;
use crate::metrics;
use gridpulse_actors::log::LogError;

/// What happened to a body of readings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IngestReport {
    /// Readings appended to the log.
    pub accepted: usize,
    /// Refused readings: position in the body and why.
    pub rejected: Vec<(usize, ReadingError)>,
}

/// Why a body was refused as a whole (nothing from it was appended).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IngestError {
    /// The body is not JSON.
    #[error(transparent)]
    Malformed(#[from] MalformedJson),
    /// The log refused the append.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Where accepted readings are appended: the in-process log (embedded mode) or the
/// Kafka `readings` topic. Either way the append returns only once it is durable
/// (journal fsync, or the broker's acknowledgement).
#[derive(Debug, Clone)]
pub enum ReadingLog {
    /// Embedded mode.
    InProcess(Arc<InProcessLog>),
    /// Distributed mode.
    Kafka(Arc<KafkaReadingProducer>),
}

impl ReadingLog {
    /// Appends readings (the in-process journal's fsync runs off the async thread).
    pub async fn append(&self, readings: Vec<Reading>) -> Result<(), LogError> {
        if readings.is_empty() {
            return Ok(());
        }
        match self {
            ReadingLog::InProcess(log) => {
                let log = Arc::clone(log);
                tokio::task::spawn_blocking(move || log.append(&readings))
                    .await
                    .map_err(|error| LogError::Backend(format!("append task: {error}")))?
            }
            ReadingLog::Kafka(producer) => producer.append(&readings).await,
        }
    }

    /// The in-process log, in embedded mode.
    pub fn in_process(&self) -> Option<&Arc<InProcessLog>> {
        match self {
            ReadingLog::InProcess(log) => Some(log),
            ReadingLog::Kafka(_) => None,
        }
    }

    /// Stops accepting appends (embedded mode; Kafka producers just stop being used).
    pub fn close(&self) {
        if let ReadingLog::InProcess(log) = self {
            log.close();
        }
    }
}

/// Parses and validates `body` (one reading or an array): the valid readings, and a
/// report of the refused ones (with `accepted` still 0).
pub fn validate_body(
    body: &[u8],
    now_ms: i64,
    limits: &Limits,
    source: &'static str,
) -> Result<(Vec<Reading>, IngestReport), MalformedJson> {
    let parsed = match parse_batch(body, now_ms, limits) {
        Ok(parsed) => parsed,
        Err(error) => {
            metrics::record_rejected(source, "malformed_json", 1);
            return Err(error);
        }
    };
    let mut good = Vec::with_capacity(parsed.len());
    let mut report = IngestReport::default();
    for (idx, result) in parsed.into_iter().enumerate() {
        match result {
            Ok(reading) => good.push(reading),
            Err(error) => {
                metrics::record_rejected(source, error.reason.code(), 1);
                report.rejected.push((idx, error));
            }
        }
    }
    Ok((good, report))
}

/// Parses `body`, appends the valid readings to `log` (durably) and reports the
/// invalid ones. `source` labels the metrics (`http`, `simulator`, ...).
pub async fn ingest(
    log: &ReadingLog,
    body: &[u8],
    now_ms: i64,
    limits: &Limits,
    source: &'static str,
) -> Result<IngestReport, IngestError> {
    let (good, mut report) = validate_body(body, now_ms, limits, source)?;
    let n_good = good.len();
    log.append(good).await?;
    metrics::record_accepted(source, n_good as u64);
    report.accepted = n_good;
    Ok(report)
}
