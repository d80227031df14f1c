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
}

#[derive(Debug, Serialize)]
struct AlertList {
    alerts: Vec<gridpulse_domain::AlertRecord>,
}

/// Parses an alert kind parameter.
pub fn parse_kind(text: &str) -> Result<AlertKind, ApiError> {
    AlertKind::parse(text).ok_or_else(|| {
        let names: Vec<&str> = AlertKind::ALL.iter().map(|kind| kind.as_str()).collect();
        ApiError::bad_field("kind", format!("must be one of {}", names.join(", ")))
    })
}

/// Lists alerts, newest first. Filters: `meter`, `kind`, `state`, `since` (Unix ms),
/// `limit` (1–1000, default 100).
#[get("/api/alerts")]
pub async fn list_alerts(
    state: web::Data<AppState>,
    query: web::Query<AlertQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = StoreAlertQuery {
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
        limit: parse_limit(query.limit.as_deref(), 100, 1000)?,
    };
    let limit = filter.limit;
    // Live alerts from the hub (freshest), history across restarts from the store.
    let mut alerts = state.meters.hub().query(&filter);
    if let Some(store) = &state.store {
        let stored = store.query_alerts(&filter).await?;
        let live: HashSet<String> = alerts.iter().map(|alert| alert.id.clone()).collect();
        // A stored copy may be older than the hub's, so the hub decides its state.
        let hub = state.meters.hub();
        alerts.extend(
            stored
                .into_iter()
                .filter(|alert| !live.contains(&alert.id) && hub.get(&alert.id).is_none()),
        );
        alerts.sort_by(|a, b| {
            b.first_seen_ms
                .cmp(&a.first_seen_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        alerts.truncate(limit);
    }
    Ok(HttpResponse::Ok().json(AlertList { alerts }))
}

/// One alert with its lifecycle history (oldest first).
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
    Ok(HttpResponse::Ok().json(AlertDetail { alert, history }))
}

#[derive(Debug, Serialize)]
struct AlertDetail {
    #[serde(flatten)]
    alert: AlertRecord,
    history: Vec<AlertHistoryEntry>,
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

/// Who is acting on an alert. For now: the optional `by` of the body (1 to 100
/// characters), `anonymous` without one — the authentication work replaces this with
/// the caller it puts into `request`, and nothing else here changes.
fn actor_name(_request: &HttpRequest, by: Option<String>) -> Result<String, ApiError> {
    match by {
        Some(by) if by.trim().is_empty() || by.chars().count() > 100 => {
            Err(ApiError::bad_field("by", "must be 1 to 100 characters"))
        }
        Some(by) => Ok(by),
        None => Ok("anonymous".to_owned()),
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

/// Acknowledges an open alert. Body (optional): `{"by": "name"}`.
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

/// Resolves an open alert. Body (optional): `{"by": "name"}`.
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
