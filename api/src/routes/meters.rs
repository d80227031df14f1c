//! Meters: paged list, live state, thresholds.

use actix_web::{HttpResponse, get, post, put, web};
use gridpulse_actors::system::MeterConfig;
use gridpulse_actors::{MeterSnapshot, Thresholds};
use gridpulse_domain::{MeterId, UserId};
use gridpulse_store::{ConfigKind, ReadingQuery};
use serde::{Deserialize, Serialize};

use super::{decode_json, parse_meter, read_body};
use crate::error::ApiError;
use crate::state::AppState;

/// Default and largest page sizes of `GET /api/meters`.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    after: Option<String>,
    limit: Option<String>,
    search: Option<String>,
}

#[derive(Debug, Serialize)]
struct MeterPage {
    meters: Vec<MeterSnapshot>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    total: usize,
}

/// Parses a `limit` query parameter.
pub fn parse_limit(text: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match text {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=max).contains(&limit) => Ok(limit),
            _ => Err(ApiError::bad_field(
                "limit",
                format!("must be a whole number from 1 to {max}"),
            )),
        },
    }
}

/// Lists meters in id order, `limit` per page, with their live state.
#[utoipa::path(
    get,
    path = "/api/meters",
    tag = "meters",
    params(
        ("after" = Option<String>, Query, description = "Cursor: the `next` of the previous page"),
        ("search" = Option<String>, Query, description = "Only meters whose id starts with this"),
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
#[get("/api/meters")]
pub async fn list_meters(
    state: web::Data<AppState>,
    request: actix_web::HttpRequest,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = query
        .after
        .as_deref()
        .map(|text| parse_meter("after", text))
        .transpose()?;
    let limit = parse_limit(query.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    // A search is an id prefix (ids are at most 47 bytes of `[A-Za-z0-9._:-]`).
    let search = match query.search.as_deref() {
        None | Some("") => None,
        Some(text)
            if text.len() <= 47
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) =>
        {
            Some(text.to_owned())
        }
        Some(_) => {
            return Err(ApiError::bad_field(
                "search",
                "must be the start of a meter id: at most 47 of A-Z a-z 0-9 . _ : -",
            ));
        }
    };
    if let Some(tenant) = crate::access::caller(&request).tenant() {
        // A consumer lists their own meters only.
        let owned = crate::access::owned_meters(&state, tenant).await?;
        let total = owned.len();
        let ids: Vec<MeterId> = owned
            .into_iter()
            .filter(|id| after.is_none_or(|after| id.as_str() > after.as_str()))
            .filter(|id| {
                search
                    .as_deref()
                    .is_none_or(|prefix| id.as_str().starts_with(prefix))
            })
            .take(limit + 1)
            .collect();
        let next = (ids.len() > limit).then(|| ids[limit - 1].to_string());
        let mut meters = Vec::with_capacity(limit);
        for id in ids.into_iter().take(limit) {
            meters.push(state.meters.observe(id).await?);
        }
        return Ok(HttpResponse::Ok().json(MeterPage {
            meters,
            next,
            total,
        }));
    }
    let ids = state
        .meters
        .list_meters(after, search.as_deref(), limit + 1)
        .await?;
    let next = (ids.len() > limit).then(|| ids[limit - 1].to_string());
    let mut meters = Vec::with_capacity(limit);
    for id in ids.into_iter().take(limit) {
        meters.push(state.meters.observe(id).await?);
    }
    let total = state.meters.count_meters().await?;
    Ok(HttpResponse::Ok().json(MeterPage {
        meters,
        next,
        total,
    }))
}

/// The live state of one meter: last reading, rolling usage, forecast, open alerts.
#[utoipa::path(
    get,
    path = "/api/meters/{id}",
    tag = "meters",
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
#[get("/api/meters/{id}")]
pub async fn get_meter(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let meter = parse_meter("id", &id)?;
    Ok(HttpResponse::Ok().json(state.meters.observe(meter).await?))
}

/// Replaces a meter's thresholds (fields left out keep their defaults).
#[utoipa::path(
    put,
    path = "/api/meters/{id}/thresholds",
    tag = "meters",
    params(
        ("id" = String, Path, description = "Meter id"),
    ),
    request_body(content = crate::openapi::Json, description = "Thresholds", content_type = "application/json"),
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
#[put("/api/meters/{id}/thresholds")]
pub async fn put_thresholds(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let meter = parse_meter("id", &id)?;
    let body = read_body(payload, 64 * 1024).await?;
    let thresholds: Thresholds = serde_json::from_slice(&body)
        .map_err(|error| ApiError::BadBody(format!("thresholds: {error}")))?;
    state
        .meters
        .set_thresholds(meter, thresholds.clone())
        .await?;
    Ok(HttpResponse::Ok().json(thresholds))
}

/// `PUT /api/meters/{id}`: the meter's registration, replaced whole (a field left out
/// is `null` / `false`; `thresholds` left out keeps the meter's thresholds).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeterUpdate {
    /// The owning user's id, or `null` for none.
    #[serde(default)]
    owner: Option<String>,
    /// The id of an existing tariff, or `null` (the owner's tariff applies).
    #[serde(default)]
    tariff: Option<String>,
    /// Prepaid meter (needs an owner and a tariff: credit burns down by it).
    #[serde(default)]
    prepaid: bool,
    /// The meter's thresholds (fields left out keep their defaults).
    #[serde(default)]
    thresholds: Option<Thresholds>,
    /// The feeder that supplies it, or `null` (no feeder grouping).
    #[serde(default)]
    feeder: Option<String>,
}

/// `POST /api/meters`: registers a meter: `{"id", "owner", "tariff", "prepaid",
/// "thresholds", "feeder"}` (all but `id` optional).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeterCreate {
    id: String,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    tariff: Option<String>,
    #[serde(default)]
    prepaid: bool,
    #[serde(default)]
    thresholds: Option<Thresholds>,
    #[serde(default)]
    feeder: Option<String>,
}

/// Checks a registration (nothing changes on a 400) and applies it; answers the
/// meter's configuration.
async fn register(
    state: &AppState,
    meter: MeterId,
    update: MeterUpdate,
) -> Result<MeterConfig, ApiError> {
    let owner = update
        .owner
        .as_deref()
        .map(|text| {
            UserId::new(text).map_err(|error| ApiError::bad_field("owner", error.to_string()))
        })
        .transpose()?;
    if update.prepaid && owner.is_none() {
        return Err(ApiError::bad_field(
            "owner",
            "a prepaid meter needs an owner (their account holds its credit)",
        ));
    }
    if update.prepaid && update.tariff.is_none() {
        return Err(ApiError::bad_field(
            "prepaid",
            "a prepaid meter needs a tariff (its credit burns down by it)",
        ));
    }
    if let Some(tariff) = &update.tariff {
        let known = crate::routes::account_book(state)?
            .tariff(tariff)
            .await?
            .is_some();
        if !known {
            return Err(ApiError::bad_field(
                "tariff",
                format!("no tariff {tariff:?}: create it with POST /api/tariffs first"),
            ));
        }
    }
    if let Some(thresholds) = &update.thresholds {
        thresholds
            .validate()
            .map_err(|error| ApiError::bad_field("thresholds", error.to_string()))?;
    }
    if let Some(feeder) = &update.feeder {
        gridpulse_actors::system::check_feeder(feeder)
            .map_err(|reason| ApiError::bad_field("feeder", reason))?;
    }
    state
        .meters
        .set_registration(meter, owner, update.tariff.clone(), update.prepaid)
        .await?;
    if let Some(thresholds) = update.thresholds.clone() {
        state.meters.set_thresholds(meter, thresholds).await?;
    }
    state
        .meters
        .set_feeder(meter, update.feeder.clone())
        .await?;
    if let (Some(users), Some(owner)) = (&state.users, owner)
        && let Err(error) = users.account_changed(owner).await
    {
        tracing::warn!(%owner, %error, "owner's actor not told of the meter change; it rereads it shortly");
    }
    let mut config = state.meters.meter_config(meter).await?;
    // Without a store the configuration lives only in the actor: answer what was set.
    config.owner = owner;
    config.tariff = update.tariff;
    config.prepaid = update.prepaid;
    config.feeder = update.feeder;
    if update.thresholds.is_some() {
        config.thresholds = update.thresholds;
    }
    Ok(config)
}

/// Sets a meter's registration: `{"owner": "user-1", "tariff": "flat-gbp", "prepaid":
/// true, "thresholds": {...}}`; the meter need not have reported yet. Usage minutes
/// that close from now on go to the new owner. The tariff must exist (400 naming
/// `tariff`), a prepaid meter needs an owner and a tariff (400 naming `owner` /
/// `prepaid`), thresholds must be consistent (400 naming `thresholds`); nothing changes
/// on a 400.
#[utoipa::path(
    put,
    path = "/api/meters/{id}",
    tag = "meters",
    params(
        ("id" = String, Path, description = "Meter id"),
    ),
    request_body(content = crate::openapi::Json, description = "Registration {owner, tariff, prepaid, thresholds, feeder}", content_type = "application/json"),
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
#[put("/api/meters/{id}")]
pub async fn put_meter(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let meter = parse_meter("id", &id)?;
    let body = read_body(payload, 64 * 1024).await?;
    let update: MeterUpdate = decode_json("meter", &body)?;
    Ok(HttpResponse::Ok().json(register(&state, meter, update).await?))
}

/// `POST /api/meters`: registers a new meter (same rules as `PUT /api/meters/{id}`).
/// 201 with its configuration; 200 when it is registered exactly so already (a retry);
/// 409 when it is registered differently (use `PUT /api/meters/{id}`).
#[utoipa::path(
    post,
    path = "/api/meters",
    tag = "meters",
    request_body(content = crate::openapi::Json, description = "Registration {id, owner, tariff, prepaid, thresholds, feeder}", content_type = "application/json"),
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
#[post("/api/meters")]
pub async fn create_meter(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, 64 * 1024).await?;
    let create: MeterCreate = decode_json("meter", &body)?;
    let meter = parse_meter("id", &create.id)?;
    let existing = match &state.store {
        Some(store) => store.get_config(ConfigKind::Meter, meter.as_str()).await?,
        None => None,
    };
    let owner = create
        .owner
        .as_deref()
        .map(|text| {
            UserId::new(text).map_err(|error| ApiError::bad_field("owner", error.to_string()))
        })
        .transpose()?;
    if existing.is_some() {
        let current = state.meters.meter_config(meter).await?;
        let same = current.owner == owner
            && current.tariff == create.tariff
            && current.prepaid == create.prepaid
            && current.feeder == create.feeder
            && (create.thresholds.is_none() || current.thresholds == create.thresholds);
        if same {
            return Ok(HttpResponse::Ok().json(current));
        }
        return Err(ApiError::Conflict(format!(
            "meter {meter} is registered differently: change it with PUT /api/meters/{meter}"
        )));
    }
    let config = register(
        &state,
        meter,
        MeterUpdate {
            owner: create.owner,
            tariff: create.tariff,
            prepaid: create.prepaid,
            thresholds: create.thresholds,
            feeder: create.feeder,
        },
    )
    .await?;
    Ok(HttpResponse::Created().json(config))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Parses a Unix-milliseconds time parameter.
pub fn parse_time(field: &'static str, text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .map_err(|_| ApiError::bad_field(field, "must be a Unix time in milliseconds"))
}

/// A meter's stored readings in `[from, to)` (Unix ms; default: the last 24 hours),
/// oldest first, `limit` per page (1–10000, default 1000); `next_cursor` continues.
#[utoipa::path(
    get,
    path = "/api/meters/{id}/readings",
    tag = "meters",
    params(
        ("id" = String, Path, description = "Meter id"),
        ("from" = Option<i64>, Query, description = "Start, Unix ms (inclusive)"),
        ("to" = Option<i64>, Query, description = "End, Unix ms (exclusive)"),
        ("limit" = Option<u32>, Query, description = "Page size"),
        ("cursor" = Option<String>, Query, description = "Cursor: the `next_cursor` of the previous page"),
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
#[get("/api/meters/{id}/readings")]
pub async fn get_readings(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let meter = parse_meter("id", &id)?;
    let store = state.store.as_ref().ok_or_else(|| {
        ApiError::Unavailable("reading history needs persistence (run without --in-memory)".into())
    })?;
    let to_ms = match query.to.as_deref() {
        Some(text) => parse_time("to", text)?,
        None => state.clock.now_ms() + 1,
    };
    let from_ms = match query.from.as_deref() {
        Some(text) => parse_time("from", text)?,
        None => to_ms - 86_400_000,
    };
    let limit = parse_limit(query.limit.as_deref(), 1000, 10_000)?;
    let page = store
        .read_readings(&ReadingQuery {
            meter,
            from_ms,
            to_ms,
            limit,
            cursor: query.cursor.clone(),
        })
        .await?;
    Ok(HttpResponse::Ok().json(page))
}
