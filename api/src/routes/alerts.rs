//! Alerts: query, detail (with history), and the workflow — acknowledge, resolve,
//! assign, comment, snooze, unsnooze. Every action answers the alert after it, once it
//! is durable; each one that changes something is an event in the alert's history and
//! on the websocket.

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use gridpulse_actors::AlertAction;
use std::collections::HashSet;

use gridpulse_domain::{AlertKind, AlertRecord, AlertState};
use gridpulse_store::{AlertHistoryEntry, AlertQuery as StoreAlertQuery};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::meters::parse_limit;
use super::{decode_json, parse_meter, read_body};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertQuery {
    meter: Option<String>,
    kind: Option<String>,
    state: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

#[derive(Debug, Serialize)]
struct AlertList {
    alerts: Vec<gridpulse_domain::AlertRecord>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

impl AlertList {
    /// The page of `limit` from `alerts` (newest first, at most `limit + 1`).
    fn page(mut alerts: Vec<AlertRecord>, limit: usize) -> AlertList {
        let next = (alerts.len() > limit).then(|| {
            let last = &alerts[limit - 1];
            format!("{}.{}", last.first_seen_ms, last.id)
        });
        alerts.truncate(limit);
        AlertList { alerts, next }
    }
}

/// An alert cursor: `<first_seen_ms>.<id>` of the last alert of the previous page.
fn parse_alert_cursor(text: &str) -> Result<(i64, String), ApiError> {
    text.split_once('.')
        .and_then(|(at, id)| Some((at.parse().ok()?, id)))
        .filter(|(_, id)| !id.is_empty() && id.len() <= 256)
        .map(|(at, id)| (at, id.to_owned()))
        .ok_or_else(|| ApiError::bad_field("before", "must be the `next` of a previous page"))
}

/// Parses an alert kind parameter.
pub fn parse_kind(text: &str) -> Result<AlertKind, ApiError> {
    AlertKind::parse(text).ok_or_else(|| {
        let names: Vec<&str> = AlertKind::ALL.iter().map(|kind| kind.as_str()).collect();
        ApiError::bad_field("kind", format!("must be one of {}", names.join(", ")))
    })
}

/// Lists alerts, newest first. Filters: `meter`, `kind`, `state`, `since` (Unix ms),
/// `limit` (1–1000, default 100); `before` is the `next` of the previous page.
#[utoipa::path(
    get,
    path = "/api/alerts",
    tag = "alerts",
    params(
        ("meter" = Option<String>, Query, description = "Meter id"),
        ("kind" = Option<String>, Query, description = "Alert kind"),
        ("state" = Option<String>, Query, description = "firing, acknowledged or resolved"),
        ("since" = Option<i64>, Query, description = "First seen at or after, Unix ms"),
        ("limit" = Option<u32>, Query, description = "Page size"),
        ("before" = Option<String>, Query, description = "Cursor: the `next` of the previous page"),
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
#[get("/api/alerts")]
pub async fn list_alerts(
    state: web::Data<AppState>,
    request: actix_web::HttpRequest,
    query: web::Query<AlertQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut filter = StoreAlertQuery {
        meter: query
            .meter
            .as_deref()
            .map(|text| parse_meter("meter", text))
            .transpose()?,
        kind: query.kind.as_deref().map(parse_kind).transpose()?,
        state: query
            .state
            .as_deref()
            .map(|text| {
                AlertState::parse(text).ok_or_else(|| {
                    ApiError::bad_field("state", "must be one of firing, acknowledged, resolved")
                })
            })
            .transpose()?,
        since_ms: query
            .since
            .as_deref()
            .map(|text| {
                text.parse::<i64>().map_err(|_| {
                    ApiError::bad_field("since", "must be a Unix time in milliseconds")
                })
            })
            .transpose()?,
        before: query
            .before
            .as_deref()
            .map(parse_alert_cursor)
            .transpose()?,
        limit: parse_limit(query.limit.as_deref(), 100, 1000)?,
    };
    let limit = filter.limit;
    // One more than asked says whether there is a next page.
    filter.limit += 1;
    if let Some(tenant) = crate::access::caller(&request).tenant() {
        // A consumer sees the alerts of their own meters only: one query per meter.
        let owned = crate::access::owned_meters(&state, tenant).await?;
        let meters: Vec<_> = match filter.meter {
            Some(meter) => owned.into_iter().filter(|owned| *owned == meter).collect(),
            None => owned,
        };
        let mut alerts = Vec::new();
        for meter in meters {
            filter.meter = Some(meter);
            alerts.extend(find_alerts(&state, &filter).await?);
        }
        sort_newest_first(&mut alerts);
        alerts.truncate(filter.limit);
        return Ok(HttpResponse::Ok().json(AlertList::page(alerts, limit)));
    }
    let alerts = find_alerts(&state, &filter).await?;
    Ok(HttpResponse::Ok().json(AlertList::page(alerts, limit)))
}

fn sort_newest_first(alerts: &mut [AlertRecord]) {
    alerts.sort_by(|a, b| {
        b.first_seen_ms
            .cmp(&a.first_seen_ms)
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// Alerts matching `filter`, newest first: live ones from the hub (freshest), history
/// across restarts from the store.
async fn find_alerts(
    state: &AppState,
    filter: &StoreAlertQuery,
) -> Result<Vec<AlertRecord>, ApiError> {
    let limit = filter.limit;
    let mut alerts = state.meters.hub().query(filter);
    if let Some(store) = &state.store {
        let stored = store.query_alerts(filter).await?;
        let live: HashSet<String> = alerts.iter().map(|alert| alert.id.clone()).collect();
        // A stored copy may be older than the hub's, so the hub decides its state.
        let hub = state.meters.hub();
        alerts.extend(
            stored
                .into_iter()
                .filter(|alert| !live.contains(&alert.id) && hub.get(&alert.id).is_none()),
        );
        sort_newest_first(&mut alerts);
        alerts.truncate(limit);
    }
    Ok(alerts)
}

/// One alert with its lifecycle history (oldest first); a `no_data_group` alert also
/// lists its open members (`members`: their alert ids).
#[utoipa::path(
    get,
    path = "/api/alerts/{id}",
    tag = "alerts",
    params(
        ("id" = String, Path, description = "Alert id"),
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
#[get("/api/alerts/{id}")]
pub async fn get_alert(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let live = state.meters.hub().get(&id);
    let stored = match &state.store {
        Some(store) => store.get_alert(&id).await?,
        None => None,
    };
    let (alert, history) = match (live, stored) {
        (Some(alert), stored) => (alert, stored.map(|s| s.history).unwrap_or_default()),
        (None, Some(stored)) => (stored.alert, stored.history),
        (None, None) => return Err(ApiError::NotFound("alert")),
    };
    // An open group lists its open members (their `no_data` alert ids).
    let members = (alert.kind == AlertKind::NoDataGroup).then(|| {
        state
            .meters
            .hub()
            .group(&alert.id)
            .map(|(_, members)| members)
            .unwrap_or_default()
    });
    Ok(HttpResponse::Ok().json(AlertDetail {
        alert,
        history,
        members,
    }))
}

#[derive(Debug, Serialize)]
struct AlertDetail {
    #[serde(flatten)]
    alert: AlertRecord,
    history: Vec<AlertHistoryEntry>,
    /// On a `no_data_group` alert: the ids of its members' open `no_data` alerts.
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<Vec<String>>,
}

/// The body of `ack`, `resolve` and `DELETE .../snooze` (optional as a whole).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    by: Option<String>,
}

/// `POST /api/alerts/{id}/assign`: `to` is required, `null` unassigns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    #[serde(default, deserialize_with = "present")]
    to: Option<Option<String>>,
    by: Option<String>,
}

/// `POST /api/alerts/{id}/comments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    text: String,
    by: Option<String>,
}

/// `POST /api/alerts/{id}/snooze`: `until` in Unix ms.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnoozeBody {
    until: i64,
    by: Option<String>,
}

/// Tells a key given as `null` (`Some(None)`) from a missing one (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The largest body of an alert action: a comment of 2000 characters, each escaped
/// as `\uXXXX`, with room to spare.
const MAX_ACTION_BODY_BYTES: usize = 16 * 1024;

/// Who is acting on an alert: the caller's token subject. The body's optional `by`
/// (1 to 100 characters) may only repeat it — except on a server started with
/// `--insecure-dev`, where there is no token and `by` names the person (default
/// `insecure-dev`).
fn actor_name(request: &HttpRequest, by: Option<String>) -> Result<String, ApiError> {
    if let Some(by) = &by
        && (by.trim().is_empty() || by.chars().count() > 100)
    {
        return Err(ApiError::bad_field("by", "must be 1 to 100 characters"));
    }
    let caller = crate::access::caller(request);
    let insecure = request
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.auth.is_insecure());
    match by {
        Some(by) if insecure => Ok(by),
        Some(by) if by != *caller.subject => Err(ApiError::bad_field(
            "by",
            "is the caller's token subject: leave it out or repeat it",
        )),
        _ => Ok(caller.subject.to_string()),
    }
}

/// Reads and decodes an action body; an empty one reads as `{}` (so a required field
/// is named as missing).
async fn action_body<T: DeserializeOwned>(
    payload: web::Payload,
    what: &str,
) -> Result<T, ApiError> {
    let body = read_body(payload, MAX_ACTION_BODY_BYTES).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return decode_json(what, b"{}");
    }
    decode_json(what, &body)
}

/// Runs `action` on alert `id` on behalf of `by`: 404 for an alert that is unknown or
/// not open, 409 for one already resolved.
async fn alert_action(
    state: &AppState,
    id: &str,
    action: AlertAction,
    by: &str,
) -> Result<HttpResponse, ApiError> {
    match state.meters.alert_command(id, action, by).await {
        Ok(alert) => Ok(HttpResponse::Ok().json(alert)),
        Err(gridpulse_actors::SystemError::AlertNotOpen) => match state.meters.hub().get(id) {
            Some(alert) if !alert.state.is_open() => Err(ApiError::Conflict(format!(
                "alert {id} is already resolved"
            ))),
            _ => Err(ApiError::NotFound("open alert")),
        },
        Err(error) => Err(error.into()),
    }
}

/// Acknowledges an open alert. Body (optional): `{"by": "name"}` (see `actor_name`).
#[utoipa::path(
    post,
    path = "/api/alerts/{id}/ack",
    tag = "alerts",
    params(
        ("id" = String, Path, description = "Alert id"),
    ),
    request_body(content = crate::openapi::Json, description = "Optional JSON body", content_type = "application/json"),
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
#[post("/api/alerts/{id}/ack")]
pub async fn ack_alert(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: ActionBody = action_body(payload, "acknowledge").await?;
    let by = actor_name(&request, body.by)?;
    alert_action(&state, &id, AlertAction::Acknowledge, &by).await
}

/// Resolves an open alert. Body (optional): `{"by": "name"}` (see `actor_name`).
#[utoipa::path(
    post,
    path = "/api/alerts/{id}/resolve",
    tag = "alerts",
    params(
        ("id" = String, Path, description = "Alert id"),
    ),
    request_body(content = crate::openapi::Json, description = "Optional JSON body", content_type = "application/json"),
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
#[post("/api/alerts/{id}/resolve")]
pub async fn resolve_alert(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: ActionBody = action_body(payload, "resolve").await?;
    let by = actor_name(&request, body.by)?;
    alert_action(&state, &id, AlertAction::Resolve, &by).await
}

/// Assigns an open alert. Body: `{"to": "user-id or name"}` (1 to 100 characters;
/// `{"to": null}` unassigns), optionally `"by"`. Assigning it to whom it is assigned to
/// changes nothing.
#[utoipa::path(
    post,
    path = "/api/alerts/{id}/assign",
    tag = "alerts",
    params(
        ("id" = String, Path, description = "Alert id"),
    ),
    request_body(content = crate::openapi::Json, description = "JSON body: `to` (required)", content_type = "application/json"),
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
#[post("/api/alerts/{id}/assign")]
pub async fn assign_alert(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: AssignBody = action_body(payload, "assign").await?;
    let Some(to) = body.to else {
        return Err(ApiError::bad_field(
            "to",
            "is required: a user id or name, or null to unassign",
        ));
    };
    let by = actor_name(&request, body.by)?;
    alert_action(&state, &id, AlertAction::Assign { to }, &by).await
}

/// Comments on an open alert. Body: `{"text": "..."}` (1 to 2000 characters, not only
/// spaces), optionally `"by"`.
#[utoipa::path(
    post,
    path = "/api/alerts/{id}/comments",
    tag = "alerts",
    params(
        ("id" = String, Path, description = "Alert id"),
    ),
    request_body(content = crate::openapi::Json, description = "JSON body: `text` (required)", content_type = "application/json"),
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
#[post("/api/alerts/{id}/comments")]
pub async fn comment_alert(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: CommentBody = action_body(payload, "comment").await?;
    let by = actor_name(&request, body.by)?;
    let action = AlertAction::Comment { text: body.text };
    alert_action(&state, &id, action, &by).await
}

/// Snoozes an open alert's reminders. Body: `{"until": <Unix ms>}` (after now by the
/// system clock, at most 30 days ahead), optionally `"by"`.
#[utoipa::path(
    post,
    path = "/api/alerts/{id}/snooze",
    tag = "alerts",
    params(
        ("id" = String, Path, description = "Alert id"),
    ),
    request_body(content = crate::openapi::Json, description = "JSON body: `until` (required)", content_type = "application/json"),
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
#[post("/api/alerts/{id}/snooze")]
pub async fn snooze_alert(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: SnoozeBody = action_body(payload, "snooze").await?;
    let by = actor_name(&request, body.by)?;
    let action = AlertAction::Snooze {
        until_ms: body.until,
    };
    alert_action(&state, &id, action, &by).await
}

/// Lifts an open alert's snooze (nothing changes if it is not snoozed). Body
/// (optional): `{"by": "name"}`.
#[utoipa::path(
    delete,
    path = "/api/alerts/{id}/snooze",
    tag = "alerts",
    params(
        ("id" = String, Path, description = "Alert id"),
    ),
    request_body(content = crate::openapi::Json, description = "Optional JSON body", content_type = "application/json"),
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
#[delete("/api/alerts/{id}/snooze")]
pub async fn unsnooze_alert(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: ActionBody = action_body(payload, "unsnooze").await?;
    let by = actor_name(&request, body.by)?;
    alert_action(&state, &id, AlertAction::Unsnooze, &by).await
}
