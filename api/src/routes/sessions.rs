//! Saving sessions: schedule one (`POST /api/sessions`), users opt in
//! (`POST /api/sessions/{id}/participants`, which computes their baseline from the
//! stored readings of their meters), live progress over the websocket
//! (`session_progress` events), and the session's standing (`GET /api/sessions/{id}`:
//! each participant's baseline, progress or result, and the leaderboard).
//!
//! A session document (definition and participants) is stored as configuration; each
//! participant's baseline, actual energy, result and streak live in their user actor.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, post, web};
use gridpulse_actors::account::WriteOutcome;
use gridpulse_actors::user_sessions::baseline_from_store;
use gridpulse_domain::{
    BaselineError, SavingSession, SessionDefinition, SessionResult, UserId, leaderboard,
};
use gridpulse_store::ConfigKind;
use serde::{Deserialize, Serialize};

use super::{account_book, decode_json, read_body};
use crate::error::ApiError;
use crate::state::AppState;

const MAX_BODY_BYTES: usize = 16 * 1024;

/// A session as stored: its definition and who opted in when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SessionDocument {
    definition: SessionDefinition,
    /// Participant → opt-in time, Unix ms.
    participants: BTreeMap<UserId, i64>,
}

fn store(state: &AppState) -> Result<&std::sync::Arc<dyn gridpulse_store::Store>, ApiError> {
    state.store.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "saving sessions need persistence (their baselines come from stored readings): run without --in-memory".into(),
        )
    })
}

async fn read(state: &AppState, id: &str) -> Result<Option<SessionDocument>, ApiError> {
    match store(state)?.get_config(ConfigKind::Session, id).await? {
        None => Ok(None),
        Some(json) => serde_json::from_slice(&json)
            .map(Some)
            .map_err(|error| ApiError::Unavailable(format!("stored session `{id}`: {error}"))),
    }
}

async fn write(state: &AppState, document: &SessionDocument) -> Result<(), ApiError> {
    let json = serde_json::to_vec(document)
        .map_err(|error| ApiError::Unavailable(format!("encoding a session: {error}")))?;
    let store = store(state)?;
    store
        .put_config(ConfigKind::Session, &document.definition.id, &json)
        .await?;
    store.flush().await?;
    Ok(())
}

fn validated(definition: &SessionDefinition) -> Result<SavingSession, ApiError> {
    definition
        .validate()
        .map_err(|error| ApiError::bad_field(error.field(), error.to_string()))
}

/// `POST /api/sessions` with `{"id", "name", "start_ms", "end_ms", "time_zone",
/// "points_per_kwh"}`: schedules a session (window on half hours, at most 4 hours,
/// within one local day). 201; 200 for the same definition again; 409 for the id with
/// a different one; 400 naming the field.
#[utoipa::path(
    post,
    path = "/api/sessions",
    tag = "sessions",
    request_body(content = crate::openapi::Json, description = "Saving session {id, name, start_ms, end_ms, time_zone, points_per_kwh}", content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = crate::openapi::Json),
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
#[post("/api/sessions")]
pub async fn create_session(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY_BYTES).await?;
    let definition: SessionDefinition = decode_json("session", &body)?;
    validated(&definition)?;
    let outcome = match read(&state, &definition.id).await? {
        Some(existing) if existing.definition == definition => WriteOutcome::Unchanged,
        Some(_) => {
            return Err(ApiError::Conflict(format!(
                "session `{}` exists with another definition",
                definition.id
            )));
        }
        None => {
            write(
                &state,
                &SessionDocument {
                    definition: definition.clone(),
                    participants: BTreeMap::new(),
                },
            )
            .await?;
            WriteOutcome::Created
        }
    };
    Ok(match outcome {
        WriteOutcome::Created => HttpResponse::Created().json(&definition),
        _ => HttpResponse::Ok().json(&definition),
    })
}

#[derive(Debug, Deserialize)]
struct SessionPage {
    after: Option<String>,
    limit: Option<String>,
}

/// A session cursor: `<start_ms>.<id>` of the last session of the previous page.
fn parse_session_cursor(text: &str) -> Result<(i64, &str), ApiError> {
    text.split_once('.')
        .and_then(|(start, id)| Some((start.parse().ok()?, id)))
        .ok_or_else(|| ApiError::bad_field("after", "must be the `next` of a previous page"))
}

/// `GET /api/sessions?after=&limit=`: sessions' definitions and participant counts, by
/// start; `limit` 1–1000 (default 100), `after` the `next` of the previous page.
#[utoipa::path(
    get,
    path = "/api/sessions",
    tag = "sessions",
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
#[get("/api/sessions")]
pub async fn list_sessions(
    state: web::Data<AppState>,
    query: web::Query<SessionPage>,
) -> Result<HttpResponse, ApiError> {
    let limit = crate::routes::meters::parse_limit(query.limit.as_deref(), 100, 1000)?;
    let after = query
        .after
        .as_deref()
        .map(parse_session_cursor)
        .transpose()?;
    let mut sessions: Vec<SessionDocument> = Vec::new();
    for (id, json) in store(&state)?.list_config(ConfigKind::Session).await? {
        match serde_json::from_slice(&json) {
            Ok(document) => sessions.push(document),
            Err(error) => tracing::error!(%id, %error, "unreadable stored session skipped"),
        }
    }
    sessions.sort_by(|a, b| {
        (a.definition.start_ms, &a.definition.id).cmp(&(b.definition.start_ms, &b.definition.id))
    });
    if let Some((start_ms, id)) = after {
        sessions.retain(|document| {
            (
                document.definition.start_ms,
                document.definition.id.as_str(),
            ) > (start_ms, id)
        });
    }
    let next = (sessions.len() > limit).then(|| {
        let last = &sessions[limit - 1].definition;
        format!("{}.{}", last.start_ms, last.id)
    });
    let rows: Vec<serde_json::Value> = sessions
        .iter()
        .take(limit)
        .map(|document| {
            serde_json::json!({
                "session": document.definition,
                "participants": document.participants.len(),
            })
        })
        .collect();
    let mut page = serde_json::json!({ "sessions": rows });
    if let Some(next) = next {
        page["next"] = serde_json::Value::String(next);
    }
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptIn {
    user: String,
}

/// `POST /api/sessions/{id}/participants` with `{"user": "u-1"}`: opts a user in before
/// the session starts. The baseline is computed now from the stored readings of the
/// user's meters; 409 when the data is not sufficient (too few complete days) or the
/// session has started; 404 for an unknown session or account. 201, or 200 when the
/// user had opted in already (the first baseline stays).
#[utoipa::path(
    post,
    path = "/api/sessions/{id}/participants",
    tag = "sessions",
    params(
        ("id" = String, Path, description = "Session id"),
    ),
    request_body(content = crate::openapi::Json, description = "{user}", content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = crate::openapi::Json),
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
#[post("/api/sessions/{id}/participants")]
pub async fn opt_in(
    state: web::Data<AppState>,
    http: actix_web::HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY_BYTES).await?;
    let request: OptIn = decode_json("opt-in", &body)?;
    let user = UserId::new(&request.user)
        .map_err(|error| ApiError::bad_field("user", error.to_string()))?;
    // A consumer opts in themselves only (another account is as unknown as a missing one).
    if crate::access::caller(&http)
        .tenant()
        .is_some_and(|tenant| tenant != user)
    {
        return Err(ApiError::NotFound("account"));
    }
    let mut document = read(&state, &id)
        .await?
        .ok_or(ApiError::NotFound("session"))?;
    let session = validated(&document.definition)?;
    let now_ms = state.clock.now_ms();
    if now_ms >= session.start_ms() {
        return Err(ApiError::Conflict(format!(
            "session `{}` has started: opt in before it starts",
            session.id()
        )));
    }
    if account_book(&state)?.account(user).await?.is_none() {
        return Err(ApiError::NotFound("account"));
    }
    let users = state.users.as_ref().ok_or_else(|| {
        ApiError::Unavailable("this API replica hosts no user actors: ask a processor".into())
    })?;
    let usage = users.observe(user).await;
    let meters: Vec<_> = match usage {
        Ok(snapshot) => snapshot.meters.keys().copied().collect(),
        Err(gridpulse_actors::SystemError::UserNotFound) => Vec::new(),
        Err(error) => return Err(error.into()),
    };
    let excluded = users.observe_sessions(user).await?.session_days();
    let baseline = baseline_from_store(store(&state)?.as_ref(), &session, &meters, &excluded)
        .await
        .map_err(|error| ApiError::Unavailable(format!("reading history: {error}")))?
        .map_err(|BaselineError::InsufficientData { usable, required }| {
            ApiError::Conflict(format!(
                "not enough history for a baseline: {usable} complete days of the {required} needed (the same half-hours on earlier {} days)",
                if session.is_weekend() { "weekend" } else { "week" }
            ))
        })?;
    let added = users
        .enrol_session(user, session.clone(), baseline.clone())
        .await?;
    document.participants.entry(user).or_insert(now_ms);
    write(&state, &document).await?;
    let answer = serde_json::json!({ "session": session.id(), "user": user, "baseline": baseline });
    Ok(if added {
        HttpResponse::Created().json(answer)
    } else {
        HttpResponse::Ok().json(answer)
    })
}

/// `GET /api/sessions/{id}`: the definition, each participant's baseline and progress
/// (during) or result (after), and the leaderboard of results.
#[utoipa::path(
    get,
    path = "/api/sessions/{id}",
    tag = "sessions",
    params(
        ("id" = String, Path, description = "Session id"),
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
#[get("/api/sessions/{id}")]
pub async fn get_session(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let document = read(&state, &id)
        .await?
        .ok_or(ApiError::NotFound("session"))?;
    let users = state.users.as_ref().ok_or_else(|| {
        ApiError::Unavailable("this API replica hosts no user actors: ask a processor".into())
    })?;
    let now_ms = state.clock.now_ms();
    let mut participants = Vec::new();
    let mut results: Vec<(UserId, SessionResult)> = Vec::new();
    for user in document.participants.keys() {
        let sessions = users.observe_sessions(*user).await?;
        let Some(enrolled) = sessions.get(&id) else {
            continue;
        };
        if let Some(result) = &enrolled.result {
            results.push((*user, result.clone()));
        }
        participants.push(serde_json::json!({
            "user": user,
            "baseline": enrolled.baseline,
            "progress": enrolled.progress(now_ms.min(enrolled.session.end_ms())),
            "result": enrolled.result,
            "streak": sessions.streak(),
        }));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "session": document.definition,
        "participants": participants,
        "leaderboard": leaderboard(&results),
    })))
}
