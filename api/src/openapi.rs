//! The OpenAPI 3 document of the API, served at `/api/openapi.json`: generated from the
//! `#[utoipa::path]` attribute beside each handler's route macro, so it cannot drift
//! from the routes (a test checks both lists are the same, another that every
//! operation answers as documented).

use std::sync::LazyLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, RefOr, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::routes::{
    alerts, audit, credit, import, meters, money, mqtt, overview, readings, sessions, system,
    tariffs, usage, users,
};

/// A JSON document (its shape is described by the operation).
#[derive(Debug)]
pub struct Json;

impl PartialSchema for Json {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some("A JSON document; see the operation's description"))
            .into()
    }
}

impl ToSchema for Json {}

/// The error body of every non-2xx answer.
pub type ErrorResponse = crate::error::ErrorBody;

#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "gridpulse",
        description = "Real-time telemetry and alerting for smart electricity meters. Every \
                       route but the system ones needs `Authorization: Bearer <JWT>`; roles \
                       `ops`, `utility`, `consumer`, `service`."
    ),
    paths(
        readings::post_readings,
        import::post_import,
        meters::list_meters,
        meters::get_meter,
        meters::put_thresholds,
        meters::put_meter,
        meters::create_meter,
        meters::get_readings,
        tariffs::create_tariff,
        tariffs::list_tariffs,
        tariffs::get_tariff,
        users::create_user,
        users::list_users,
        users::get_user,
        users::put_user,
        users::get_budget,
        users::put_budget,
        users::get_usage,
        money::get_cost,
        money::get_meter_cost,
        money::get_bill,
        money::get_events,
        credit::post_topup,
        credit::confirm_topup,
        credit::fail_topup,
        credit::get_credit,
        credit::get_transactions,
        sessions::create_session,
        sessions::list_sessions,
        sessions::opt_in,
        sessions::get_session,
        usage::get_meter_usage,
        audit::get_audit,
        overview::get_overview,
        mqtt::get_mqtt_status,
        alerts::list_alerts,
        alerts::get_alert,
        alerts::ack_alert,
        alerts::resolve_alert,
        alerts::assign_alert,
        alerts::comment_alert,
        alerts::snooze_alert,
        alerts::unsnooze_alert,
        crate::ws::ws_alerts,
        system::healthz,
        system::readyz,
        system::metrics,
        system::index,
        system::openapi,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    });
    &JSON
}
