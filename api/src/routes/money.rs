//! A user's money: live cost (today, this billing period, estimate at the period end),
//! budget progress with its projected date, itemised bills, and the user's event log.
//!
//! The user actor keeps the usage of each billing period by local day and pricing slot
//! (and the periods it closed); these handlers price it with the tariff from the
//! account book. Tariffs never change under an id, so a closed period's bill is always
//! the same. "Now" is event time: the newest usage minute the user's actor applied, so
//! a replay or a simulated clock gives the same answers.

use actix_web::{HttpResponse, get, web};
use gridpulse_actors::user_billing::UserBilling;
use gridpulse_actors::user_events::UserEvent;
use gridpulse_actors::user_system::MoneyView;
use gridpulse_actors::{AccountBook, UserSystem};
use gridpulse_domain::{
    Amount, BillAccumulator, BillingPeriodId, BudgetAssessment, CostBreakdown, Energy, MeterId,
    Tariff, UserId,
};
use serde::{Deserialize, Serialize};

use super::account_book;
use super::meters::parse_limit;
use crate::error::ApiError;
use crate::state::AppState;

fn parse_user(text: &str) -> Result<UserId, ApiError> {
    UserId::new(text).map_err(|error| ApiError::bad_field("id", error.to_string()))
}

fn users(state: &AppState) -> Result<&UserSystem, ApiError> {
    state.users.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "this API replica hosts no user actors: ask a processor (gridpulse run)".into(),
        )
    })
}

fn internal(what: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("{what}: {error}"))
}

async fn tariff_by_id(book: &AccountBook, id: &str) -> Result<Tariff, ApiError> {
    let document = book
        .tariff(id)
        .await?
        .ok_or_else(|| internal("tariff", format!("`{id}` is missing from the store")))?;
    document
        .validate()
        .map_err(|error| internal("stored tariff", error))
}

/// The account, its money state and the current period's tariff.
struct Loaded {
    view: MoneyView,
    book: AccountBook,
}

async fn load(state: &AppState, user: UserId) -> Result<Loaded, ApiError> {
    let book = account_book(state)?;
    if book.account(user).await?.is_none() {
        return Err(ApiError::NotFound("account"));
    }
    let view = users(state)?.observe_money(user).await?;
    Ok(Loaded { view, book })
}

/// Energy projected for the rest of the period at the mean daily energy so far.
fn projected_remaining(billing: &UserBilling, tariff: &Tariff, as_of_ms: i64) -> Energy {
    let accumulator = billing.accumulator();
    let period = accumulator.period();
    let Ok(today) = tariff.local_date(as_of_ms.clamp(period.start_utc_ms, period.end_utc_ms - 1))
    else {
        return Energy::ZERO;
    };
    let days_so_far = (period.start_date.days_until(today) + 1).max(1);
    let days_left = i64::from(period.days()) - days_so_far;
    let used = accumulator.energy_in_period().milliwatt_hours();
    Energy::from_milliwatt_hours((used / days_so_far) * days_left.max(0))
}

#[derive(Serialize)]
struct BudgetView {
    monthly_budget: Amount,
    #[serde(flatten)]
    assessment: BudgetAssessment,
    /// Thresholds already reported this period (each once).
    thresholds_reported: Vec<u8>,
}

/// Live cost of one billing: today, the period so far, the estimate at its end.
#[derive(Serialize)]
struct CostFigures {
    /// Event time the figures are as of (newest usage minute), Unix ms.
    as_of_ms: i64,
    today: CostBreakdown,
    period_to_date: CostBreakdown,
    estimate_at_period_end: CostBreakdown,
}

fn figures(
    billing: &UserBilling,
    tariff: &Tariff,
    last_minute_ms: Option<i64>,
) -> Result<CostFigures, ApiError> {
    let period = billing.accumulator().period();
    let as_of_ms = last_minute_ms
        .unwrap_or(period.start_utc_ms)
        .clamp(period.start_utc_ms, period.end_utc_ms - 1);
    let today_date = tariff
        .local_date(as_of_ms)
        .map_err(|error| internal("calendar", error))?;
    let accumulator = billing.accumulator();
    Ok(CostFigures {
        as_of_ms,
        today: accumulator
            .cost_of_local_day(tariff, today_date)
            .map_err(|error| internal("pricing today", error))?,
        period_to_date: billing
            .cost_to_date(tariff, as_of_ms)
            .map_err(|error| internal("pricing the period", error))?,
        estimate_at_period_end: accumulator
            .estimate_at_period_end(tariff, projected_remaining(billing, tariff, as_of_ms))
            .map_err(|error| internal("estimating the bill", error))?,
    })
}

#[derive(Serialize)]
struct CostView {
    user: UserId,
    tariff: String,
    currency: &'static str,
    period: BillingPeriodId,
    #[serde(flatten)]
    figures: CostFigures,
    budget: Option<BudgetView>,
}

#[derive(Serialize)]
struct MeterCostView {
    meter: MeterId,
    owner: UserId,
    tariff: String,
    currency: &'static str,
    period: BillingPeriodId,
    #[serde(flatten)]
    figures: CostFigures,
}

/// `GET /api/meters/{id}/cost`: the live cost of one meter by its tariff (its own, or
/// its owner's): today, this billing period so far, the estimate at the period end.
/// 404 for a meter without an owner; 409 while none of its usage has been priced.
#[utoipa::path(
    get,
    path = "/api/meters/{id}/cost",
    tag = "money",
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
#[get("/api/meters/{id}/cost")]
pub async fn get_meter_cost(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let meter = super::parse_meter("id", &id)?;
    let owner = state
        .meters
        .meter_config(meter)
        .await?
        .owner
        .ok_or(ApiError::NotFound("meter owner"))?;
    let book = account_book(&state)?;
    let view = users(&state)?.observe_money(owner).await?;
    let Some((tariff_id, billing)) = view.money.meter_bill(meter) else {
        return Err(ApiError::Conflict(
            "no usage of this meter priced yet: it needs a tariff (its own or its owner's) and readings".into(),
        ));
    };
    let tariff = tariff_by_id(&book, tariff_id).await?;
    Ok(HttpResponse::Ok().json(MeterCostView {
        meter,
        owner,
        tariff: tariff_id.to_owned(),
        currency: tariff.currency().code(),
        period: billing.accumulator().period().id,
        figures: figures(billing, &tariff, view.last_minute_ms)?,
    }))
}

/// `GET /api/users/{id}/cost`: live cost today, this billing period so far, the
/// estimated bill at the period end, and budget progress (used %, projected spend,
/// the date 100 % is projected to be reached). 404 without an account; 409 while the
/// account has no tariff or no usage has been priced yet.
#[utoipa::path(
    get,
    path = "/api/users/{id}/cost",
    tag = "money",
    params(
        ("id" = String, Path, description = "User id"),
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
#[get("/api/users/{id}/cost")]
pub async fn get_cost(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user = parse_user(&id)?;
    let Loaded { view, book } = load(&state, user).await?;
    let Some((tariff_id, billing)) = view.money.current() else {
        return Err(ApiError::Conflict(
            "no usage priced yet: the account needs a tariff and its meters readings".into(),
        ));
    };
    let tariff = tariff_by_id(&book, tariff_id).await?;
    let figures = figures(billing, &tariff, view.last_minute_ms)?;
    let as_of_ms = figures.as_of_ms;
    let period = billing.accumulator().period();
    let budget = match view
        .pricing
        .and_then(|pricing| pricing.account.monthly_budget)
    {
        None => None,
        Some(monthly_budget) => Some(BudgetView {
            monthly_budget,
            assessment: billing
                .assess_budget(&tariff, monthly_budget, as_of_ms)
                .map_err(|error| internal("assessing the budget", error))?,
            thresholds_reported: billing
                .budget_state()
                .fired_thresholds()
                .iter()
                .map(|threshold| threshold.percent())
                .collect(),
        }),
    };
    Ok(HttpResponse::Ok().json(CostView {
        user,
        tariff: tariff_id.to_owned(),
        currency: tariff.currency().code(),
        period: period.id,
        figures,
        budget,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BillQuery {
    period: Option<String>,
}

#[derive(Serialize)]
struct BillView {
    user: UserId,
    tariff: String,
    /// False for the current period (the bill so far, standing charge to today).
    complete: bool,
    bill: CostBreakdown,
    /// For the current period: the bill estimated at its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    estimate_at_period_end: Option<CostBreakdown>,
}

/// `GET /api/users/{id}/bill?period=YYYY-MM`: the itemised bill of a billing period —
/// every tier or time-of-use band with its kWh, rate and cost, the standing charge
/// (days × rate) and the total. Without `period`, the current one (so far, with the
/// estimate at its end). 400 for a malformed period, 404 for one with no usage.
#[utoipa::path(
    get,
    path = "/api/users/{id}/bill",
    tag = "money",
    params(
        ("id" = String, Path, description = "User id"),
        ("period" = Option<String>, Query, description = "YYYY-MM (default: the current period)"),
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
#[get("/api/users/{id}/bill")]
pub async fn get_bill(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<BillQuery>,
) -> Result<HttpResponse, ApiError> {
    let user = parse_user(&id)?;
    let wanted: Option<BillingPeriodId> = query
        .period
        .as_deref()
        .map(|text| {
            text.parse().map_err(|_| {
                ApiError::bad_field("period", format!("`{text}` is not a period YYYY-MM"))
            })
        })
        .transpose()?;
    let Loaded { view, book } = load(&state, user).await?;
    if let Some((tariff_id, billing)) = view.money.current()
        && wanted.is_none_or(|period| period == billing.period())
    {
        let tariff = tariff_by_id(&book, tariff_id).await?;
        let figures = figures(billing, &tariff, view.last_minute_ms)?;
        return Ok(HttpResponse::Ok().json(BillView {
            user,
            tariff: tariff_id.to_owned(),
            complete: false,
            bill: figures.period_to_date,
            estimate_at_period_end: Some(figures.estimate_at_period_end),
        }));
    }
    let Some(wanted) = wanted else {
        return Err(ApiError::NotFound("bill"));
    };
    // Closed bills of the period (a tariff change mid-period closes a part).
    let mut parts = Vec::new();
    for closed in view
        .money
        .closed()
        .iter()
        .filter(|closed| closed.accumulator.period().id == wanted)
    {
        let tariff = tariff_by_id(&book, &closed.tariff).await?;
        parts.push((closed.tariff.clone(), whole(&closed.accumulator, &tariff)?));
    }
    match parts.len() {
        0 => Err(ApiError::NotFound("bill")),
        1 => {
            let (tariff, bill) = parts.remove(0);
            Ok(HttpResponse::Ok().json(BillView {
                user,
                tariff,
                complete: true,
                bill,
                estimate_at_period_end: None,
            }))
        }
        _ => Ok(HttpResponse::Ok().json(serde_json::json!({
            "user": user,
            "complete": true,
            "parts": parts.into_iter().map(|(tariff, bill)| serde_json::json!({"tariff": tariff, "bill": bill})).collect::<Vec<_>>(),
        }))),
    }
}

fn whole(accumulator: &BillAccumulator, tariff: &Tariff) -> Result<CostBreakdown, ApiError> {
    accumulator
        .bill_for_whole_period(tariff)
        .map_err(|error| internal("pricing a closed period", error))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize)]
struct EventsView {
    user: UserId,
    events: Vec<UserEvent>,
}

/// `GET /api/users/{id}/events?after=SEQ&limit=N`: the user's recent events (budget
/// thresholds and forecasts, …) after sequence `after`, oldest first — what a client
/// reads after a reconnect before live events on the websocket.
#[utoipa::path(
    get,
    path = "/api/users/{id}/events",
    tag = "money",
    params(
        ("id" = String, Path, description = "User id"),
        ("after" = Option<u64>, Query, description = "Events after this sequence"),
        ("limit" = Option<u32>, Query, description = "Page size"),
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
#[get("/api/users/{id}/events")]
pub async fn get_events(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let user = parse_user(&id)?;
    let after = match query.after.as_deref() {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::bad_field("after", format!("`{text}` is not a sequence number"))
        })?,
    };
    let limit = parse_limit(query.limit.as_deref(), 100, 1000)?;
    let view = users(&state)?.observe_money(user).await?;
    Ok(HttpResponse::Ok().json(EventsView {
        user,
        events: view.money.events_after(after, limit),
    }))
}
