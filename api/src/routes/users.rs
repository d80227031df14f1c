//! Users: live usage summed over their meters (the `usage-by-user` flow).

use actix_web::{HttpResponse, get, web};
use gridpulse_domain::UserId;

use crate::error::ApiError;
use crate::state::AppState;

/// A user's live usage: energy today and in total over their meters, per meter, and
/// the newest minute applied.
#[get("/api/users/{id}/usage")]
pub async fn get_usage(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user = UserId::new(&id).map_err(|error| ApiError::bad_field("id", error.to_string()))?;
    let users = state.users.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "this API replica hosts no user actors: ask a processor (gridpulse run)".into(),
        )
    })?;
    Ok(HttpResponse::Ok().json(users.observe(user).await?))
}
