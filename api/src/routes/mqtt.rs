//! `GET /api/mqtt/status`: the MQTT bridge of this process — its broker connection,
//! counters and how many meters it hears as online and offline.

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// The MQTT bridge's status. Always 200: `running` says whether this process runs a
/// bridge (`gridpulse run --mqtt`); when it does not, `message` says so and the other
/// fields are absent (a separate `gridpulse mqtt-bridge` reports through its metrics).
#[utoipa::path(
    get,
    path = "/api/mqtt/status",
    tag = "system",
    responses(
        (status = 200, description = "OK: `{running, broker, client_id, connected, last_connected_ms, last_disconnected_ms, readings_accepted, messages_acked, dead_letters, meters_online, meters_offline, meters_known}`, or `{running: false, message}`", body = crate::openapi::Json),
        (status = 401, description = "No valid token (`error.code` says why)", body = crate::openapi::ErrorResponse),
        (status = 403, description = "The caller's role may not do this", body = crate::openapi::ErrorResponse),
        (status = 429, description = "Rate limit exceeded (see `Retry-After`)", body = crate::openapi::ErrorResponse),
    ),
)]
#[get("/api/mqtt/status")]
pub async fn get_mqtt_status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let Some(bridge) = state.mqtt.get() else {
        return Ok(HttpResponse::Ok().json(json!({
            "running": false,
            "message": "no MQTT bridge runs in this process: start it with `gridpulse run --mqtt HOST:PORT` (a separate `gridpulse mqtt-bridge` reports through its /metrics)",
        })));
    };
    let snapshot = bridge.status.snapshot();
    Ok(HttpResponse::Ok().json(json!({
        "running": true,
        "broker": bridge.broker,
        "client_id": bridge.client_id,
        "connected": snapshot.connected,
        "last_connected_ms": snapshot.last_connected_ms,
        "last_disconnected_ms": snapshot.last_disconnected_ms,
        "readings_accepted": snapshot.readings_accepted,
        "messages_acked": snapshot.messages_acked,
        "dead_letters": snapshot.dead_letters,
        "meters_online": snapshot.meters_online,
        "meters_offline": snapshot.meters_offline,
        "meters_known": snapshot.meters_known,
    })))
}
