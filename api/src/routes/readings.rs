//! `POST /api/readings`: one reading or an array, canonical or seed firmware format.
//!
//! Answers 202 when every reading was accepted; 400 with a per-reading report when some
//! were refused (the good ones in the same body are accepted all the same, and the
//! report says how many); 400 for malformed JSON (nothing accepted); 413 for bodies over
//! the limit; 503 with `Retry-After` when the log is full. Re-sending a body is safe:
//! a meter ignores readings at or before its last timestamp.

use actix_web::{HttpRequest, HttpResponse, post, web};
use gridpulse_ingest::{IngestError, ingest};
use serde::Serialize;

use super::read_body;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize)]
struct Rejected {
    index: usize,
    field: &'static str,
    code: &'static str,
    reason: String,
}

#[derive(Debug, Serialize)]
struct IngestBody {
    /// On a 400, the usual error object (`code` `readings_rejected`).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<crate::error::ErrorDetail>,
    accepted: usize,
    rejected: Vec<Rejected>,
}

/// Ingests readings.
#[utoipa::path(
    post,
    path = "/api/readings",
    tag = "readings",
    request_body(content = crate::openapi::Json, description = "Readings: one object or an array (canonical or seed firmware format)", content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted", body = crate::openapi::Json),
        (status = 400, description = "A parameter or body field is invalid (`error.field` names it)", body = crate::openapi::ErrorResponse),
        (status = 401, description = "No valid token (`error.code` says why)", body = crate::openapi::ErrorResponse),
        (status = 403, description = "The caller's role may not do this", body = crate::openapi::ErrorResponse),
        (status = 413, description = "Body larger than the limit", body = crate::openapi::ErrorResponse),
        (status = 429, description = "Rate limit exceeded (see `Retry-After`)", body = crate::openapi::ErrorResponse),
        (status = 503, description = "Unavailable: no store (`--in-memory`), shutting down or overloaded", body = crate::openapi::ErrorResponse),
    ),
)]
#[post("/api/readings")]
pub async fn post_readings(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if let Some(length) = request
        .headers()
        .get("content-length")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok())
        && length > state.max_body_bytes
    {
        return Err(ApiError::TooLarge {
            limit: state.max_body_bytes,
        });
    }
    let body = read_body(payload, state.max_body_bytes).await?.freeze();
    let now_ms = state.clock.now_ms();
    let result = ingest(&state.log, &body, now_ms, &state.limits, "http").await;
    let report = match result {
        Ok(report) => report,
        Err(IngestError::Malformed(error)) => {
            return Err(ApiError::BadBody(format!("{error}; nothing was accepted")));
        }
        Err(IngestError::Log(error)) => return Err(error.into()),
    };
    let rejected: Vec<Rejected> = report
        .rejected
        .iter()
        .map(|(index, error)| Rejected {
            index: *index,
            field: error.field,
            code: error.reason.code(),
            reason: error.to_string(),
        })
        .collect();
    if rejected.is_empty() {
        return Ok(HttpResponse::Accepted().json(IngestBody {
            error: None,
            accepted: report.accepted,
            rejected,
        }));
    }
    let error = match rejected.as_slice() {
        [only] => format!("reading {}: {}", only.index, only.reason),
        _ => format!("{} readings were refused; see `rejected`", rejected.len()),
    };
    Ok(HttpResponse::BadRequest().json(IngestBody {
        error: Some(crate::error::ErrorDetail {
            code: "readings_rejected",
            message: error,
            field: None,
        }),
        accepted: report.accepted,
        rejected,
    }))
}
