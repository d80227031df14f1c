//! Users: accounts (name, tariff, monthly budget) stored as configuration documents,
//! and live usage summed over their meters (the `usage-by-user` flow).
//!
//! An account is `{"id", "name", "tariff", "monthly_budget", "currency"}` (all but
//! `id` and `name` may be null or left out; the budget is a decimal string). The rules
//! (tariff exists, currency is the tariff's, budget positive and exact in the currency)
//! are in `gridpulse_actors::account`. Every write is durable before it is answered.

use actix_web::{HttpResponse, get, post, put, web};
use gridpulse_actors::account::WriteOutcome;
use gridpulse_actors::{SystemError, UserAccount, UserSnapshot};
use gridpulse_domain::{Amount, UserId};
use serde::{Deserialize, Deserializer, Serialize};

use super::meters::parse_limit;
use super::{account_book, decode_json, read_body};
use crate::error::ApiError;
use crate::state::AppState;

/// Largest account or budget body, bytes.
const MAX_ACCOUNT_BODY_BYTES: usize = 16 * 1024;

/// Default and largest page sizes of `GET /api/users`.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

fn parse_user(field: &str, text: &str) -> Result<UserId, ApiError> {
    UserId::new(text).map_err(|error| ApiError::bad_field(field, error.to_string()))
}

/// Tells the user's actor (when this process hosts it) that the account changed, so
/// the next minute is priced with it; others reread accounts every few seconds.
async fn notify_users(state: &AppState, user: UserId) {
    if let Some(users) = &state.users
        && let Err(error) = users.account_changed(user).await
    {
        tracing::warn!(%user, %error, "user actor not told of the account change; it rereads it shortly");
    }
}

fn written(outcome: WriteOutcome, account: &UserAccount) -> HttpResponse {
    match outcome {
        WriteOutcome::Created => HttpResponse::Created().json(account),
        WriteOutcome::Unchanged | WriteOutcome::Replaced => HttpResponse::Ok().json(account),
    }
}

/// `POST /api/users`: creates an account. 201 with the stored account (currency
/// resolved from its tariff); 200 when an equal account exists (a retry); 409 when the
/// id exists with a different account (use `PUT /api/users/{id}`); 400 naming the
/// field otherwise, and nothing is stored.
#[utoipa::path(
    post,
    path = "/api/users",
    tag = "users",
    request_body(content = crate::openapi::Json, description = "Account {id, name, tariff, monthly_budget, currency}", content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = crate::openapi::Json),
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
#[post("/api/users")]
pub async fn create_user(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_ACCOUNT_BODY_BYTES).await?;
    let account: UserAccount = decode_json("account", &body)?;
    let (account, outcome) = account_book(&state)?.create_account(account).await?;
    notify_users(&state, account.id).await;
    Ok(written(outcome, &account))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /api/users?after=&limit=`: accounts in id order, `limit` per page (1–500,
/// default 50): `{"users": [account, ...], "next": "<id>", "total": n}`; pass `next`
/// as `after` for the next page (absent on the last).
#[utoipa::path(
    get,
    path = "/api/users",
    tag = "users",
    params(
        ("after" = Option<String>, Query, description = "Cursor: the `next` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Page size"),
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
#[get("/api/users")]
pub async fn list_users(
    state: web::Data<AppState>,
    request: actix_web::HttpRequest,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    if let Some(tenant) = crate::access::caller(&request).tenant() {
        // A consumer sees their own account only.
        let users: Vec<UserAccount> = account_book(&state)?
            .account(tenant)
            .await?
            .into_iter()
            .collect();
        return Ok(HttpResponse::Ok().json(serde_json::json!({
            "users": users,
            "total": users.len(),
        })));
    }
    let after = query
        .after
        .as_deref()
        .map(|text| parse_user("after", text))
        .transpose()?;
    let limit = parse_limit(query.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let page = account_book(&state)?.accounts(after, limit).await?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Serialize)]
struct UserView {
    id: UserId,
    /// The stored account (`null` without one, or without a store).
    account: Option<UserAccount>,
    /// The live usage (`null` before the user's first usage minute, or where this
    /// process hosts no user actors).
    usage: Option<UserSnapshot>,
    /// The meters the user owns (from the stored meter configurations), in id order.
    meters: Vec<gridpulse_domain::MeterId>,
}

/// `GET /api/users/{id}`: `{"id", "account", "usage", "meters"}`; 404 when there is neither an
/// account nor any usage.
#[utoipa::path(
    get,
    path = "/api/users/{id}",
    tag = "users",
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
#[get("/api/users/{id}")]
pub async fn get_user(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user = parse_user("id", &id)?;
    let account = match &state.store {
        Some(_) => account_book(&state)?.account(user).await?,
        None => None,
    };
    let usage = match &state.users {
        Some(users) => match users.observe(user).await {
            Ok(usage) => Some(usage),
            Err(SystemError::UserNotFound) => None,
            Err(error) => return Err(error.into()),
        },
        None => None,
    };
    if account.is_none() && usage.is_none() {
        return Err(ApiError::NotFound("user"));
    }
    let meters = crate::access::owned_meters(&state, user).await?;
    Ok(HttpResponse::Ok().json(UserView {
        id: user,
        account,
        usage,
        meters,
    }))
}

/// `PUT /api/users/{id}`: creates or replaces the account (body as for `POST`, its
/// `id` equal to the path's). 201 when created, 200 when replaced or unchanged.
#[utoipa::path(
    put,
    path = "/api/users/{id}",
    tag = "users",
    params(
        ("id" = String, Path, description = "User id"),
    ),
    request_body(content = crate::openapi::Json, description = "Account", content_type = "application/json"),
    responses(
        (status = 200, description = "OK", body = crate::openapi::Json),
        (status = 201, description = "Created", body = crate::openapi::Json),
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
#[put("/api/users/{id}")]
pub async fn put_user(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let user = parse_user("id", &id)?;
    let body = read_body(payload, MAX_ACCOUNT_BODY_BYTES).await?;
    let account: UserAccount = decode_json("account", &body)?;
    if account.id != user {
        return Err(ApiError::InvalidField {
            field: "id".into(),
            code: "id_mismatch",
            reason: format!("is `{}`, but the path names `{user}`", account.id),
        });
    }
    let (account, outcome) = account_book(&state)?.replace_account(account).await?;
    notify_users(&state, account.id).await;
    Ok(written(outcome, &account))
}

#[derive(Debug, Serialize)]
struct BudgetView {
    user: UserId,
    monthly_budget: Option<Amount>,
    currency: Option<String>,
}

impl From<UserAccount> for BudgetView {
    fn from(account: UserAccount) -> Self {
        BudgetView {
            user: account.id,
            monthly_budget: account.monthly_budget,
            currency: account.currency,
        }
    }
}

/// `GET /api/users/{id}/budget`: `{"user", "monthly_budget", "currency"}`; 404 without
/// an account.
#[utoipa::path(
    get,
    path = "/api/users/{id}/budget",
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
#[get("/api/users/{id}/budget")]
pub async fn get_budget(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user = parse_user("id", &id)?;
    let account = account_book(&state)?
        .account(user)
        .await?
        .ok_or(ApiError::NotFound("account"))?;
    Ok(HttpResponse::Ok().json(BudgetView::from(account)))
}

/// Body of `PUT /api/users/{id}/budget`: the key is required; `null` clears the budget.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetUpdate {
    #[serde(default, deserialize_with = "present_even_if_null")]
    monthly_budget: Option<Option<Amount>>,
}

/// Tells a `null` value (`Some(None)`) from a missing key (`None`, the default).
fn present_even_if_null<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<Amount>>, D::Error> {
    Option::<Amount>::deserialize(deserializer).map(Some)
}

/// `PUT /api/users/{id}/budget` with `{"monthly_budget": "150.00"}` (or `null` to
/// clear it): checked like any account change (positive, exact in the account's
/// currency), durable before the answer, which is the new budget view.
#[utoipa::path(
    put,
    path = "/api/users/{id}/budget",
    tag = "money",
    params(
        ("id" = String, Path, description = "User id"),
    ),
    request_body(content = crate::openapi::Json, description = "{monthly_budget}", content_type = "application/json"),
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
#[put("/api/users/{id}/budget")]
pub async fn put_budget(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let user = parse_user("id", &id)?;
    let body = read_body(payload, MAX_ACCOUNT_BODY_BYTES).await?;
    let update: BudgetUpdate = decode_json("budget", &body)?;
    let monthly_budget = update
        .monthly_budget
        .ok_or_else(|| ApiError::InvalidField {
            field: "monthly_budget".into(),
            code: "missing_field",
            reason: "is required (a decimal string such as \"150.00\", or null to clear)".into(),
        })?;
    let account = account_book(&state)?
        .set_monthly_budget(user, monthly_budget)
        .await?;
    notify_users(&state, user).await;
    Ok(HttpResponse::Ok().json(BudgetView::from(account)))
}

/// A user's live usage: energy today and in total over their meters, per meter, and
/// the newest minute applied. With `granularity=hour|day|month` (and `from`, `to`,
/// `limit`, `cursor`), the user's stored usage rollups instead.
#[utoipa::path(
    get,
    path = "/api/users/{id}/usage",
    tag = "usage",
    params(
        ("id" = String, Path, description = "User id"),
        ("granularity" = Option<String>, Query, description = "hour, day or month"),
        ("from" = Option<i64>, Query, description = "Start, Unix ms (inclusive)"),
        ("to" = Option<i64>, Query, description = "End, Unix ms (exclusive)"),
        ("limit" = Option<u32>, Query, description = "Page size"),
        ("cursor" = Option<String>, Query, description = "Cursor: the `next_cursor` of the previous page"),
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
#[get("/api/users/{id}/usage")]
pub async fn get_usage(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<super::usage::UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let user = parse_user("id", &id)?;
    if query.granularity.is_some() || query.from.is_some() || query.to.is_some() {
        return super::usage::user_usage(&state, user, &query).await;
    }
    let users = state.users.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "this API replica hosts no user actors: ask a processor (gridpulse run)".into(),
        )
    })?;
    Ok(HttpResponse::Ok().json(users.observe(user).await?))
}
