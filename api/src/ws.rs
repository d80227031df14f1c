//! `GET /ws/alerts`: live alert events over a websocket.
//!
//! On connect the client gets `{"type":"snapshot","seq":N,"alerts":[...]}` (the open
//! alerts that pass its filters, unless `snapshot=false`), then one
//! `{"type":"alert","seq":..,"event":..,"alert":{..}}` per change after `N`, in sequence
//! order, with no gap between snapshot and stream. Filters (query): `meter`, `kind`,
//! `min_severity`. The server pings every 20 s and closes connections silent for 60 s.
//! A client too slow to keep up with the stream (more than the hub's channel capacity
//! behind) is closed with a reason rather than slowing anyone else down.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, get, web};
use actix_ws::{CloseCode, CloseReason, Message};
use futures_util::StreamExt;
use gridpulse_actors::user_events::UserEvent;
use gridpulse_domain::{AlertEvent, AlertKind, AlertRecord, MeterId, Severity, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use crate::error::ApiError;
use crate::routes::alerts::parse_kind;
use crate::routes::parse_meter;
use crate::state::AppState;

const PING_EVERY: Duration = Duration::from_secs(20);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WsQuery {
    meter: Option<String>,
    kind: Option<String>,
    min_severity: Option<String>,
    snapshot: Option<bool>,
    user: Option<String>,
    types: Option<String>,
}

/// Event types a client can ask for with `types=` (comma-separated; all by default).
const EVENT_TYPES: [&str; 7] = [
    "alert",
    "budget",
    "budget_forecast",
    "credit",
    "top_up",
    "session_progress",
    "session_result",
];

#[derive(Debug, Clone)]
struct Subscription {
    meter: Option<MeterId>,
    kind: Option<AlertKind>,
    min_severity: Severity,
    /// User events of this user only (alerts are not filtered by it).
    user: Option<UserId>,
    /// Wanted event types; `None`: all.
    types: Option<Vec<&'static str>>,
}

impl Subscription {
    fn wants(&self, type_name: &str) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.contains(&type_name))
    }

    fn matches(&self, alert: &AlertRecord) -> bool {
        self.wants("alert")
            && self.meter.is_none_or(|meter| meter == alert.meter)
            && self.kind.is_none_or(|kind| kind == alert.kind)
            && alert.severity >= self.min_severity
    }

    fn matches_user_event(&self, event: &UserEvent) -> bool {
        self.wants(event.body.type_name()) && self.user.is_none_or(|user| user == event.user)
    }
}

fn parse_types(text: &str) -> Result<Vec<&'static str>, ApiError> {
    text.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            EVENT_TYPES
                .iter()
                .copied()
                .find(|known| *known == name)
                .ok_or_else(|| {
                    ApiError::bad_field(
                        "types",
                        format!(
                            "unknown event type `{name}`: one of {}",
                            EVENT_TYPES.join(", ")
                        ),
                    )
                })
        })
        .collect()
}

#[derive(Serialize)]
struct Snapshot<'a> {
    r#type: &'static str,
    seq: u64,
    alerts: &'a [AlertRecord],
}

#[derive(Serialize)]
struct EventMessage<'a> {
    r#type: &'static str,
    #[serde(flatten)]
    event: &'a AlertEvent,
}

/// Upgrades to a websocket streaming alert events.
#[utoipa::path(
    get,
    path = "/ws/alerts",
    tag = "websocket",
    responses(
        (status = 101, description = "Switching to the websocket protocol"),
        (status = 400, description = "A parameter or body field is invalid (`error.field` names it)", body = crate::openapi::ErrorResponse),
        (status = 401, description = "No valid token (`error.code` says why)", body = crate::openapi::ErrorResponse),
        (status = 403, description = "The caller's role may not do this", body = crate::openapi::ErrorResponse),
        (status = 429, description = "Rate limit exceeded (see `Retry-After`)", body = crate::openapi::ErrorResponse),
    ),
)]
#[get("/ws/alerts")]
pub async fn ws_alerts(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Payload,
    query: web::Query<WsQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    if !state.auth.is_insecure() && crate::access::caller_if_any(&request).is_none() {
        return Err(ApiError::Unauthorized(crate::auth::AuthError::Missing).into());
    }
    let subscription = Subscription {
        meter: query
            .meter
            .as_deref()
            .map(|text| parse_meter("meter", text))
            .transpose()?,
        kind: query.kind.as_deref().map(parse_kind).transpose()?,
        min_severity: match query.min_severity.as_deref() {
            None | Some("info") => Severity::Info,
            Some("warning") => Severity::Warning,
            Some("critical") => Severity::Critical,
            Some(_) => {
                return Err(ApiError::bad_field(
                    "min_severity",
                    "must be one of info, warning, critical",
                )
                .into());
            }
        },
        user: query
            .user
            .as_deref()
            .map(|text| {
                UserId::new(text).map_err(|error| ApiError::bad_field("user", error.to_string()))
            })
            .transpose()?,
        types: query.types.as_deref().map(parse_types).transpose()?,
    };
    let send_snapshot = query.snapshot.unwrap_or(true);
    let (response, session, messages) = actix_ws::handle(&request, body)?;
    let hub = std::sync::Arc::clone(state.meters.hub());
    let user_events = Some(state.user_events.subscribe());
    actix_web::rt::spawn(async move {
        crate::metrics::record_websocket_clients(1);
        let (seq, open, events) = hub.subscribe();
        drop(hub);
        serve(
            session,
            messages,
            subscription,
            send_snapshot.then_some((seq, open)),
            events,
            user_events,
        )
        .await;
        crate::metrics::record_websocket_clients(-1);
    });
    Ok(response)
}

async fn serve(
    mut session: actix_ws::Session,
    mut messages: actix_ws::MessageStream,
    subscription: Subscription,
    snapshot: Option<(u64, Vec<AlertRecord>)>,
    mut events: tokio::sync::broadcast::Receiver<std::sync::Arc<AlertEvent>>,
    mut user_events: Option<tokio::sync::broadcast::Receiver<std::sync::Arc<UserEvent>>>,
) {
    if let Some((seq, open)) = snapshot {
        let alerts: Vec<AlertRecord> = open
            .into_iter()
            .filter(|alert| subscription.matches(alert))
            .collect();
        let Ok(text) = serde_json::to_string(&Snapshot {
            r#type: "snapshot",
            seq,
            alerts: &alerts,
        }) else {
            return;
        };
        if session.text(text).await.is_err() {
            return;
        }
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let close_reason = loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    if !subscription.matches(&event.alert) {
                        continue;
                    }
                    let Ok(text) = serde_json::to_string(&EventMessage { r#type: "alert", event: &event }) else {
                        continue;
                    };
                    if session.text(text).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(n_missed)) => {
                    break Some(CloseReason {
                        code: CloseCode::Again,
                        description: Some(format!("client too slow: {n_missed} events missed; reconnect")),
                    });
                }
                Err(RecvError::Closed) => break Some(CloseReason { code: CloseCode::Restart, description: Some("server shutting down".into()) }),
            },
            event = async {
                match user_events.as_mut() {
                    Some(receiver) => receiver.recv().await,
                    None => std::future::pending().await,
                }
            } => match event {
                Ok(event) => {
                    if !subscription.matches_user_event(&event) {
                        continue;
                    }
                    let Ok(text) = serde_json::to_string(event.as_ref()) else {
                        continue;
                    };
                    if session.text(text).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(n_missed)) => {
                    break Some(CloseReason {
                        code: CloseCode::Again,
                        description: Some(format!("client too slow: {n_missed} user events missed; reconnect and read GET /api/users/{{id}}/events")),
                    });
                }
                Err(RecvError::Closed) => user_events = None,
            },
            message = messages.next() => match message {
                Some(Ok(Message::Ping(bytes))) => {
                    last_heard = tokio::time::Instant::now();
                    if session.pong(&bytes).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => last_heard = tokio::time::Instant::now(),
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > IDLE_TIMEOUT {
                    break Some(CloseReason { code: CloseCode::Away, description: Some("idle timeout".into()) });
                }
                if session.ping(b"").await.is_err() {
                    return;
                }
            }
        }
    };
    let _ = session.close(close_reason).await;
}
