//! Alerts: query, detail, acknowledge, resolve.

use actix_web::{HttpResponse, get, post, web};
use gridpulse_actors::AlertAction;
use std::collections::HashSet;

use gridpulse_domain::{AlertKind, AlertRecord, AlertState};
use gridpulse_store::{AlertHistoryEntry, AlertQuery as StoreAlertQuery};
use serde::{Deserialize, Serialize};

use super::meters::parse_limit;
use super::{parse_meter, read_body};
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    by: Option<String>,
}

async fn alert_action(
    state: web::Data<AppState>,
    id: &str,
    payload: web::Payload,
    action: AlertAction,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, 4096).await?;
    let by = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let body: ActionBody = serde_json::from_slice(&body)
            .map_err(|error| ApiError::BadBody(format!("body: {error}")))?;
        body.by
    };
    let by = match by {
        Some(by) if by.trim().is_empty() || by.len() > 100 => {
            return Err(ApiError::bad_field("by", "must be 1 to 100 characters"));
        }
        Some(by) => by,
        None => "anonymous".to_owned(),
    };
    match state.meters.alert_command(id, action, &by).await {
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
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    alert_action(state, &id, payload, AlertAction::Acknowledge).await
}

/// Resolves an open alert. Body (optional): `{"by": "name"}`.
#[post("/api/alerts/{id}/resolve")]
pub async fn resolve_alert(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    alert_action(state, &id, payload, AlertAction::Resolve).await
}
