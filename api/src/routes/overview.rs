//! `GET /api/overview`: the figures of the dashboard's overview in one small document.

use actix_web::{HttpResponse, get, web};
use gridpulse_domain::{AlertKind, Severity};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::state::AppState;

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// Totals for the live overview: readings applied so far (the page derives the rate
/// from two samples), meters live and offline (an open `no_data` alert), open alerts by
/// severity, kind and state, websocket clients, and in Kafka mode the consumer lag of
/// this process's `readings` partitions.
#[utoipa::path(
    get,
    path = "/api/overview",
    tag = "system",
    responses(
        (status = 200, description = "OK", body = crate::openapi::Json),
        (status = 401, description = "No valid token (`error.code` says why)", body = crate::openapi::ErrorResponse),
        (status = 403, description = "The caller's role may not do this", body = crate::openapi::ErrorResponse),
        (status = 429, description = "Rate limit exceeded (see `Retry-After`)", body = crate::openapi::ErrorResponse),
        (status = 503, description = "Unavailable: no store (`--in-memory`), shutting down or overloaded", body = crate::openapi::ErrorResponse),
    ),
)]
#[get("/api/overview")]
pub async fn get_overview(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // Applied readings first: a meter exists before its first reading is applied, so
    // every meter these readings came from is in the count taken after (read the other
    // way round, a reading applied in between shows without its meter).
    let readings_applied = state.meters.n_applied();
    let meters_live = state.meters.count_meters().await?;
    let mut by_severity: Map<String, Value> = ["info", "warning", "critical"]
        .iter()
        .map(|name| ((*name).to_owned(), json!(0)))
        .collect();
    let mut by_kind: Map<String, Value> = AlertKind::ALL
        .iter()
        .map(|kind| (kind.as_str().to_owned(), json!(0)))
        .collect();
    let mut by_state: Map<String, Value> = ["firing", "acknowledged"]
        .iter()
        .map(|name| ((*name).to_owned(), json!(0)))
        .collect();
    let (mut open, mut offline) = (0usize, 0usize);
    for (kind, alert_state, severity, n) in state.meters.hub().open_counts() {
        open += n;
        if kind == AlertKind::NoData {
            offline += n;
        }
        for (map, key) in [
            (&mut by_severity, severity_name(severity)),
            (&mut by_kind, kind.as_str()),
            (&mut by_state, alert_state.as_str()),
        ] {
            let entry = map.entry(key.to_owned()).or_insert(json!(0));
            *entry = json!(entry.as_u64().unwrap_or(0) + n as u64);
        }
    }
    let lags = gridpulse_ingest::metrics::consumer_lags();
    let consumer_lag = (!lags.is_empty()).then(|| {
        json!({
            "total": lags.iter().map(|(_, lag)| *lag).sum::<i64>(),
            "partitions": lags
                .iter()
                .map(|(partition, lag)| (partition.to_string(), json!(lag)))
                .collect::<Map<String, Value>>(),
        })
    });
    Ok(HttpResponse::Ok().json(json!({
        "at_ms": state.clock.now_ms(),
        "mode": if state.log.in_process().is_some() { "embedded" } else { "kafka" },
        "readings_applied_total": readings_applied,
        "meters": {"live": meters_live, "offline": offline},
        "alerts_open": {
            "total": open,
            "by_severity": by_severity,
            "by_kind": by_kind,
            "by_state": by_state,
        },
        "websocket_clients": crate::metrics::websocket_clients(),
        "consumer_lag": consumer_lag,
    })))
}
