//! Usage history from the stream jobs' rollups: `GET /api/meters/{id}/usage` and, with
//! a `granularity`, `GET /api/users/{id}/usage` (without one that route answers the
//! user's live usage from the user actor).
//!
//! Rollups are upserted by the stream job (a window recomputed after late data
//! replaces its row, with a higher `revision`), so a page always shows the latest
//! figures of each window.

use actix_web::{HttpResponse, get, web};
use gridpulse_domain::{Granularity, MeterId, UserId};
use gridpulse_store::{MeterRollupQuery, RollupQuery, UserRollupQuery};
use serde::Deserialize;

use super::meters::{parse_limit, parse_time};
use super::parse_meter;
use crate::error::ApiError;
use crate::state::AppState;

/// Query of the usage routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// `hour`, `day` or `month`.
    pub granularity: Option<String>,
    /// Windows starting at or after, Unix ms (default: a span back from `to`).
    pub from: Option<String>,
    /// Windows starting before, Unix ms (default: now).
    pub to: Option<String>,
    /// Page size, 1–10,000 (default 1,000).
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn granularity(text: Option<&str>) -> Result<Granularity, ApiError> {
    match text {
        None => Ok(Granularity::Hour),
        Some(text) => Granularity::parse(text).ok_or_else(|| {
            ApiError::bad_field(
                "granularity",
                format!("`{text}` is not one of hour, day, month"),
            )
        }),
    }
}

/// The default span back from `to`: a day of hours, 31 days, a year of months.
fn default_span_ms(granularity: Granularity) -> i64 {
    match granularity {
        Granularity::Hour => 86_400_000,
        Granularity::Day => 31 * 86_400_000,
        Granularity::Month => 366 * 86_400_000,
    }
}

/// Builds the store query of a usage request; 400 naming the parameter.
pub fn rollup_query<S>(
    state: &AppState,
    subject: S,
    query: &UsageQuery,
) -> Result<RollupQuery<S>, ApiError> {
    let granularity = granularity(query.granularity.as_deref())?;
    let to_ms = match query.to.as_deref() {
        Some(text) => parse_time("to", text)?,
        None => state.clock.now_ms() + 1,
    };
    let from_ms = match query.from.as_deref() {
        Some(text) => parse_time("from", text)?,
        None => to_ms - default_span_ms(granularity),
    };
    if to_ms <= from_ms {
        return Err(ApiError::bad_field("to", "must be after `from`"));
    }
    Ok(RollupQuery {
        subject,
        granularity,
        from_ms,
        to_ms,
        limit: parse_limit(query.limit.as_deref(), 1000, 10_000)?,
        cursor: query.cursor.clone(),
    })
}

fn store(state: &AppState) -> Result<&std::sync::Arc<dyn gridpulse_store::Store>, ApiError> {
    state.store.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "usage history needs persistence (the rollups are stored): run without --in-memory"
                .into(),
        )
    })
}

/// `GET /api/meters/{id}/usage?granularity=hour|day|month&from=&to=&limit=&cursor=`:
/// the meter's rollups (readings, energy, min/avg/max power, min/max voltage,
/// completeness), oldest window first, paged with `next_cursor`. A window with no
/// readings has no row.
#[get("/api/meters/{id}/usage")]
pub async fn get_meter_usage(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let meter: MeterId = parse_meter("id", &id)?;
    let query: MeterRollupQuery = rollup_query(&state, meter, &query)?;
    let page = store(&state)?.read_meter_rollups(&query).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "meter": meter,
        "granularity": query.granularity,
        "rollups": page.rollups,
        "next_cursor": page.next_cursor,
    })))
}

/// The user rollups of `GET /api/users/{id}/usage?granularity=...`.
pub async fn user_usage(
    state: &AppState,
    user: UserId,
    query: &UsageQuery,
) -> Result<HttpResponse, ApiError> {
    let query: UserRollupQuery = rollup_query(state, user, query)?;
    let page = store(state)?.read_user_rollups(&query).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "user": user,
        "granularity": query.granularity,
        "rollups": page.rollups,
        "next_cursor": page.next_cursor,
    })))
}
