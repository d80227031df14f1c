//! Tariffs: how a user's energy becomes money, created and read over REST.
//!
//! A tariff is one JSON document, the definition nested under `definition` (the
//! domain's `TariffDefinition`, amounts as decimal strings):
//!
//! ```json
//! {"id": "standard-gbp", "name": "Standard",
//!  "definition": {"currency": "GBP", "time_zone": "Europe/London",
//!                 "billing_period_start_day": 1, "standing_charge_per_day": "0.50",
//!                 "energy": {"kind": "flat", "rate_per_kwh": "0.245"}}}
//! ```
//!
//! `energy.kind` is `flat` (`rate_per_kwh`), `tiered` (`tiers`: `[{"up_to_kwh", "rate_per_kwh"}]`,
//! the last without `up_to_kwh`) or `time_of_use` (`default_rate_per_kwh`, `bands`:
//! `[{"name", "days", "start", "end", "rate_per_kwh"}]`). Tariffs are immutable: see
//! `gridpulse_actors::account` for why, and for the rules.

use actix_web::{HttpResponse, get, post, web};
use gridpulse_actors::TariffDocument;
use gridpulse_actors::account::{WriteOutcome, validate_tariff_id};
use serde::Serialize;

use super::{account_book, decode_json, read_body};
use crate::error::ApiError;
use crate::state::AppState;

/// Largest tariff document, bytes (a TOU tariff with many bands is a few KB).
const MAX_TARIFF_BODY_BYTES: usize = 64 * 1024;

/// `POST /api/tariffs`: creates a tariff, durable before the answer. 201 with the
/// document when created; 200 when an equal document already exists under the id (a
/// retry); 409 when the id exists with a different document (tariffs never change: a
/// new price is a new id); 400 naming the field (`{"error", "field", "code"}`, e.g.
/// `definition.energy.bands[1]` / `overlapping_bands`) when the document is invalid,
/// and then nothing is stored.
#[utoipa::path(
    post,
    path = "/api/tariffs",
    tag = "tariffs",
    request_body(content = crate::openapi::Json, description = "Tariff document {id, name, definition}", content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = crate::openapi::Json),
        (status = 200, description = "OK", body = crate::openapi::Json),
        (status = 400, description = "A parameter or body field is invalid (`error.field` names it)", body = crate::openapi::ErrorResponse),
        (status = 401, description = "No valid token (`error.code` says why)", body = crate::openapi::ErrorResponse),
        (status = 403, description = "The caller's role may not do this", body = crate::openapi::ErrorResponse),
        (status = 404, description = "Not found (or not the consumer's own)", body = crate::openapi::ErrorResponse),
        (status = 409, description = "Conflicts with the current state", body = crate::openapi::ErrorResponse),
        (status = 413, description = "Body larger than the limit", body = crate::openapi::ErrorResponse),
        (status = 429, description = "Rate limit exceeded (see `Retry-After`)", body = crate::openapi::ErrorResponse),
        (status = 503, description = "Unavailable: no store (`--in-memory`), shutting down or overloaded", body = crate::openapi::ErrorResponse),
    ),
)]
#[post("/api/tariffs")]
pub async fn create_tariff(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_TARIFF_BODY_BYTES).await?;
    let document: TariffDocument = decode_json("tariff", &body)?;
    let book = account_book(&state)?;
    let (document, outcome) = book.create_tariff(document).await?;
    Ok(match outcome {
        WriteOutcome::Created => HttpResponse::Created().json(document),
        WriteOutcome::Unchanged | WriteOutcome::Replaced => HttpResponse::Ok().json(document),
    })
}

#[derive(Debug, Serialize)]
struct TariffList {
    tariffs: Vec<TariffDocument>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct TariffPage {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /api/tariffs?after=&limit=`: tariffs in id order, `{"tariffs": [document, ...],
/// "next"}`; `limit` 1–1000 (default 100), `after` the `next` of the previous page.
#[utoipa::path(
    get,
    path = "/api/tariffs",
    tag = "tariffs",
    params(
        ("after" = Option<String>, Query, description = "Cursor: the `next` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Page size"),
    ),
    responses(
        (status = 200, description = "OK", body = crate::openapi::Json),
        (status = 400, description = "A parameter or body field is invalid (`error.field` names it)", body = crate::openapi::ErrorResponse),
        (status = 401, description = "No valid token (`error.code` says why)", body = crate::openapi::ErrorResponse),
        (status = 403, description = "The caller's role may not do this", body = crate::openapi::ErrorResponse),
        (status = 429, description = "Rate limit exceeded (see `Retry-After`)", body = crate::openapi::ErrorResponse),
        (status = 503, description = "Unavailable: no store (`--in-memory`), shutting down or overloaded", body = crate::openapi::ErrorResponse),
    ),
)]
#[get("/api/tariffs")]
pub async fn list_tariffs(
    state: web::Data<AppState>,
    query: web::Query<TariffPage>,
) -> Result<HttpResponse, ApiError> {
    let limit = crate::routes::meters::parse_limit(query.limit.as_deref(), 100, 1000)?;
    let after = query.after.as_deref();
    let mut tariffs: Vec<TariffDocument> = account_book(&state)?
        .tariffs()
        .await?
        .into_iter()
        .filter(|tariff| after.is_none_or(|after| tariff.id.as_str() > after))
        .take(limit + 1)
        .collect();
    let next = (tariffs.len() > limit).then(|| tariffs[limit - 1].id.to_string());
    tariffs.truncate(limit);
    Ok(HttpResponse::Ok().json(TariffList { tariffs, next }))
}

/// `GET /api/tariffs/{id}`: one tariff document; 404 if there is none.
#[utoipa::path(
    get,
    path = "/api/tariffs/{id}",
    tag = "tariffs",
    params(
        ("id" = String, Path, description = "Tariff id"),
    ),
    responses(
        (status = 200, description = "OK", body = crate::openapi::Json),
        (status = 400, description = "A parameter or body field is invalid (`error.field` names it)", body = crate::openapi::ErrorResponse),
        (status = 401, description = "No valid token (`error.code` says why)", body = crate::openapi::ErrorResponse),
        (status = 403, description = "The caller's role may not do this", body = crate::openapi::ErrorResponse),
        (status = 404, description = "Not found (or not the consumer's own)", body = crate::openapi::ErrorResponse),
        (status = 429, description = "Rate limit exceeded (see `Retry-After`)", body = crate::openapi::ErrorResponse),
        (status = 503, description = "Unavailable: no store (`--in-memory`), shutting down or overloaded", body = crate::openapi::ErrorResponse),
    ),
)]
#[get("/api/tariffs/{id}")]
pub async fn get_tariff(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    validate_tariff_id("id", &id)?;
    match account_book(&state)?.tariff(&id).await? {
        Some(document) => Ok(HttpResponse::Ok().json(document)),
        None => Err(ApiError::NotFound("tariff")),
    }
}
