//! Accepting a body of readings: parse, validate, append the good ones, report the bad.
//!
//! The one path every source shares (HTTP, simulator, benchmarks; MQTT and bulk import
//! later), so validation and counting are the same everywhere.

use gridpulse_domain::{Limits, MalformedJson, ReadingError, parse_batch};

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

/// Parses `body` (one reading or an array), appends the valid readings to `log` and
/// reports the invalid ones. `source` labels the metrics (`http`, `simulator`, ...).
pub fn ingest_json(
    log: &InProcessLog,
    body: &[u8],
    now_ms: i64,
    limits: &Limits,
    source: &'static str,
) -> Result<IngestReport, IngestError> {
    let parsed = match parse_batch(body, now_ms, limits) {
        Ok(parsed) => parsed,
        Err(error) => {
            metrics::record_rejected(source, "malformed_json", 1);
            return Err(error.into());
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
    log.append(&good)?;
    metrics::record_accepted(source, good.len() as u64);
    report.accepted = good.len();
    Ok(report)
}
