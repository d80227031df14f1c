//! Prepaid credit: balance and days left, top-ups with an idempotency key, the
//! reconciliation of auto top-up requests by the payment gateway, and the append-only
//! transaction log. The state lives in the owner's user actor (its credit account per
//! prepaid meter); every command is durable before it is answered.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use gridpulse_actors::user_credit::{CreditCommand, CreditReply};
use gridpulse_actors::user_system::RunCreditCommand;
use gridpulse_actors::{MeterSystem, UserSystem};
use gridpulse_domain::{Amount, CreditError, Currency, MeterId, UserId};
use serde::{Deserialize, Serialize};

use super::meters::parse_limit;
use super::{account_book, decode_json, parse_meter, read_body};
use crate::error::ApiError;
use crate::state::AppState;

const MAX_BODY_BYTES: usize = 4 * 1024;

fn users(state: &AppState) -> Result<&UserSystem, ApiError> {
    state.users.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "this API replica hosts no user actors: ask a processor (gridpulse run)".into(),
        )
    })
}

/// The owner and the tariff currency of a prepaid meter; 404 for a meter that is not
/// registered prepaid, 409 for one without an owner.
async fn prepaid_meter(
    state: &AppState,
    meters: &MeterSystem,
    meter: MeterId,
) -> Result<(UserId, Currency), ApiError> {
    let config = meters.meter_config(meter).await?;
    if !config.prepaid {
        return Err(ApiError::NotFound("prepaid meter"));
    }
    let owner = config.owner.ok_or_else(|| {
        ApiError::Conflict(format!(
            "prepaid meter {meter} has no owner: set one with PUT /api/meters/{meter}"
        ))
    })?;
    let tariff_id = config
        .tariff
        .ok_or_else(|| ApiError::Conflict(format!("prepaid meter {meter} has no tariff")))?;
    let tariff = account_book(state)?
        .tariff(&tariff_id)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("tariff `{tariff_id}` is missing")))?
        .validate()
        .map_err(|error| ApiError::Unavailable(format!("stored tariff: {error}")))?;
    Ok((owner, tariff.currency()))
}

fn credit_error(error: CreditError) -> ApiError {
    match error {
        CreditError::IdempotencyConflict { .. } | CreditError::InvalidTransition { .. } => {
            ApiError::Conflict(error.to_string())
        }
        CreditError::UnknownTopUp { .. } => ApiError::NotFound("top-up"),
        other => match other.field() {
            Some(field) => ApiError::bad_field(field, other.to_string()),
            None => ApiError::BadBody(other.to_string()),
        },
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUpBody {
    amount: Amount,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Serialize)]
struct CommandAnswer {
    meter: MeterId,
    #[serde(flatten)]
    reply: CreditReply,
}

/// `POST /api/meters/{id}/topups` with `{"amount": "10.00"}` and an idempotency key
/// (`Idempotency-Key` header or `"idempotency_key"` in the body): credits the meter at
/// once. 201 for a new key; 200 with the original answer for a key seen before with the
/// same amount; 409 for a key seen with a different amount; 400 naming the field for a
/// missing key or a non-positive amount. Nothing changes on an error.
#[utoipa::path(
    post,
    path = "/api/meters/{id}/topups",
    tag = "credit",
    params(
        ("id" = String, Path, description = "Meter id"),
    ),
    request_body(content = crate::openapi::Json, description = "Top-up {amount, idempotency_key}", content_type = "application/json"),
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
#[post("/api/meters/{id}/topups")]
pub async fn post_topup(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let meter = parse_meter("id", &id)?;
    let body = read_body(payload, MAX_BODY_BYTES).await?;
    let top_up: TopUpBody = decode_json("top-up", &body)?;
    let header = request
        .headers()
        .get("idempotency-key")
        .map(|value| {
            value
                .to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::bad_field("idempotency_key", "header is not text"))
        })
        .transpose()?;
    let key = match (header, top_up.idempotency_key) {
        (Some(header), Some(body)) if header != body => {
            return Err(ApiError::bad_field(
                "idempotency_key",
                "the Idempotency-Key header and the body's idempotency_key differ",
            ));
        }
        (Some(key), _) | (None, Some(key)) => key,
        (None, None) => {
            return Err(ApiError::bad_field(
                "idempotency_key",
                "is required (Idempotency-Key header or body field): a retried top-up must not credit twice",
            ));
        }
    };
    let (owner, currency) = prepaid_meter(&state, &state.meters, meter).await?;
    let reply = users(&state)?
        .credit_command(
            owner,
            RunCreditCommand {
                meter,
                currency,
                command: CreditCommand::TopUp {
                    key,
                    amount: top_up.amount,
                },
                at_ms: state.clock.now_ms(),
            },
        )
        .await?
        .map_err(credit_error)?;
    let replayed = matches!(&reply, CreditReply::TopUp(outcome) if outcome.replayed);
    let answer = CommandAnswer { meter, reply };
    Ok(if replayed {
        HttpResponse::Ok().json(answer)
    } else {
        HttpResponse::Created().json(answer)
    })
}

/// The meter of an auto top-up request id `{meter}:{cycle}:{sequence}`.
fn meter_of_request(id: &str) -> Result<MeterId, ApiError> {
    let mut parts = id.rsplitn(3, ':');
    let (Some(_sequence), Some(_cycle), Some(meter)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ApiError::bad_field(
            "id",
            "an auto top-up request id looks like {meter}:{cycle}:{sequence}",
        ));
    };
    parse_meter("id", meter)
}

async fn reconcile(
    state: &AppState,
    id: &str,
    command: CreditCommand,
) -> Result<HttpResponse, ApiError> {
    let meter = meter_of_request(id)?;
    let (owner, currency) = prepaid_meter(state, &state.meters, meter).await?;
    let reply = users(state)?
        .credit_command(
            owner,
            RunCreditCommand {
                meter,
                currency,
                command,
                at_ms: state.clock.now_ms(),
            },
        )
        .await?
        .map_err(credit_error)?;
    Ok(HttpResponse::Ok().json(CommandAnswer { meter, reply }))
}

/// `POST /api/topups/{id}/confirm`: the payment gateway took the payment of an auto
/// top-up request; the meter is credited once (a repeated confirm answers
/// `"already": true` and credits nothing). 409 for a failed request, 404 for an
/// unknown one.
#[utoipa::path(
    post,
    path = "/api/topups/{id}/confirm",
    tag = "credit",
    params(
        ("id" = String, Path, description = "Top-up id"),
    ),
    responses(
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
#[post("/api/topups/{id}/confirm")]
pub async fn confirm_topup(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    reconcile(&state, &id, CreditCommand::Confirm { id: id.clone() }).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailBody {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/topups/{id}/fail` (optional `{"reason": "card declined"}`): the gateway
/// could not take the payment; nothing is credited, and a later minute still below the
/// trigger asks again (the next sequence). 409 for a confirmed request.
#[utoipa::path(
    post,
    path = "/api/topups/{id}/fail",
    tag = "credit",
    params(
        ("id" = String, Path, description = "Top-up id"),
    ),
    request_body(content = crate::openapi::Json, description = "{reason}", content_type = "application/json"),
    responses(
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
#[post("/api/topups/{id}/fail")]
pub async fn fail_topup(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY_BYTES).await?;
    let fail: FailBody = if body.iter().all(u8::is_ascii_whitespace) {
        FailBody::default()
    } else {
        decode_json("failure", &body)?
    };
    let reason = fail.reason.unwrap_or_else(|| "payment failed".into());
    reconcile(
        &state,
        &id,
        CreditCommand::Fail {
            id: id.clone(),
            reason,
        },
    )
    .await
}

#[derive(Serialize)]
struct CreditView {
    #[serde(flatten)]
    status: gridpulse_domain::CreditStatus,
    /// Burn rate (moving average of the last hours), per hour.
    cost_per_hour: Amount,
    /// Days the balance lasts at the burn rate (none while nothing is used).
    days_of_credit_left: Option<f64>,
    settings: gridpulse_domain::CreditSettings,
}

/// `GET /api/meters/{id}/credit`: balance, burn rate, days of credit left, the pending
/// auto top-up request and the active credit alerts. 404 for a meter that is not
/// prepaid or has no credit account yet (no usage, no top-up).
#[utoipa::path(
    get,
    path = "/api/meters/{id}/credit",
    tag = "credit",
    params(
        ("id" = String, Path, description = "Meter id"),
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
#[get("/api/meters/{id}/credit")]
pub async fn get_credit(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let meter = parse_meter("id", &id)?;
    let (owner, _) = prepaid_meter(&state, &state.meters, meter).await?;
    let prepaid = users(&state)?
        .observe_credit(owner, meter)
        .await?
        .ok_or(ApiError::NotFound("credit account"))?;
    let cost_per_hour = prepaid.cost_per_hour();
    let cost_per_day = cost_per_hour
        .checked_mul_integer(24)
        .unwrap_or(cost_per_hour);
    Ok(HttpResponse::Ok().json(CreditView {
        status: prepaid.account.status(),
        cost_per_hour,
        days_of_credit_left: prepaid.account.days_of_credit_left(cost_per_day),
        settings: *prepaid.account.settings(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /api/meters/{id}/transactions?after=SEQ&limit=N`: the meter's append-only
/// credit log (top-ups, confirmed auto top-ups, one usage charge per day), oldest first,
/// each with the balance after it; page on with `after` = the last `seq`.
#[utoipa::path(
    get,
    path = "/api/meters/{id}/transactions",
    tag = "credit",
    params(
        ("id" = String, Path, description = "Meter id"),
        ("after" = Option<String>, Query, description = "Cursor: the `next` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Page size"),
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
#[get("/api/meters/{id}/transactions")]
pub async fn get_transactions(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    let meter = parse_meter("id", &id)?;
    let after = match query.after.as_deref() {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::bad_field("after", format!("`{text}` is not a sequence number"))
        })?,
    };
    let limit = parse_limit(query.limit.as_deref(), 100, 1000)?;
    let (owner, _) = prepaid_meter(&state, &state.meters, meter).await?;
    let prepaid = users(&state)?
        .observe_credit(owner, meter)
        .await?
        .ok_or(ApiError::NotFound("credit account"))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "meter": meter,
        "transactions": prepaid.account.transactions(after, limit),
        "unposted_usage": prepaid.account.unposted_usage(),
    })))
}
