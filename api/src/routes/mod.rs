//! HTTP routes, one file per resource.

pub mod alerts;
pub mod meters;
pub mod readings;
pub mod system;
pub mod users;

use actix_web::web;
use futures_util::StreamExt;
use gridpulse_domain::MeterId;

use crate::error::ApiError;

/// Mounts every route.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(readings::post_readings)
        .service(meters::list_meters)
        .service(meters::get_meter)
        .service(meters::put_thresholds)
        .service(meters::put_meter)
        .service(users::get_usage)
        .service(meters::get_readings)
        .service(alerts::list_alerts)
        .service(alerts::get_alert)
        .service(alerts::ack_alert)
        .service(alerts::resolve_alert)
        .service(crate::ws::ws_alerts)
        .service(system::healthz)
        .service(system::readyz)
        .service(system::metrics)
        .service(system::index);
}

/// Reads a request body, refusing more than `limit` bytes without buffering them.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::BadBody(format!("reading the request body failed: {error}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a meter id from a path or query parameter named `field`.
pub fn parse_meter(field: &str, text: &str) -> Result<MeterId, ApiError> {
    MeterId::new(text).map_err(|error| ApiError::bad_field(field, error.to_string()))
}
