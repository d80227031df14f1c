//! `GET /api/audit`: the audit log, newest first, one cursor page at a time (ops only).

use actix_web::{HttpResponse, get, web};
use gridpulse_store::{AuditEntry, AuditQuery};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::routes::meters::parse_limit;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
struct AuditParams {
    subject: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

#[derive(Debug, Serialize)]
struct AuditPage {
    entries: Vec<AuditEntry>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// A cursor is `<at_ms>.<seq>` of the last entry of the previous page.
fn parse_cursor(text: &str) -> Result<(i64, u64), ApiError> {
    let bad = || ApiError::bad_field("before", "must be the `next` of a previous page");
    let (at, seq) = text.split_once('.').ok_or_else(bad)?;
    Ok((
        at.parse().map_err(|_| bad())?,
        seq.parse().map_err(|_| bad())?,
    ))
}

/// The audit log: every write by an authenticated caller (who, role, method, path,
/// status), newest first. Filter by `subject`; `limit` 1–1000 (default 100); `before`
/// is the `next` of the previous page.
#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "audit",
    params(
        ("subject" = Option<String>, Query, description = "Only this token subject's writes"),
        ("limit" = Option<u32>, Query, description = "Page size"),
        ("before" = Option<String>, Query, description = "Cursor: the `next` of the previous page"),
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
#[get("/api/audit")]
pub async fn get_audit(
    state: web::Data<AppState>,
    query: web::Query<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    let limit = parse_limit(query.limit.as_deref(), 100, 1000)?;
    let before = query.before.as_deref().map(parse_cursor).transpose()?;
    let subject = match query.subject.as_deref() {
        Some("") => return Err(ApiError::bad_field("subject", "must not be empty")),
        Some(subject) if subject.len() > gridpulse_store::MAX_AUDIT_SUBJECT_BYTES => {
            return Err(ApiError::bad_field(
                "subject",
                format!(
                    "must have at most {} bytes",
                    gridpulse_store::MAX_AUDIT_SUBJECT_BYTES
                ),
            ));
        }
        other => other.map(str::to_owned),
    };
    let store = state.store.as_ref().ok_or_else(|| {
        ApiError::Unavailable("the audit log needs persistence (run without --in-memory)".into())
    })?;
    // One more than asked says whether there is a next page.
    let mut entries = store
        .read_audit(&AuditQuery {
            before,
            subject,
            limit: limit + 1,
        })
        .await?;
    let next = (entries.len() > limit).then(|| {
        let last = &entries[limit - 1];
        format!("{}.{}", last.at_ms, last.seq)
    });
    entries.truncate(limit);
    Ok(HttpResponse::Ok().json(AuditPage { entries, next }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_name_the_field() {
        assert_eq!(parse_cursor("17.42").unwrap(), (17, 42));
        assert_eq!(
            parse_cursor("-5.18446744073709551615").unwrap(),
            (-5, u64::MAX)
        );
        for bad in ["", "17", "17.", ".4", "a.b", "1.-1", "1.2.3"] {
            let error = parse_cursor(bad).unwrap_err();
            assert!(format!("{error:?}").contains("before"), "{bad}: {error:?}");
        }
    }
}
