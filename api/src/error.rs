//! API errors and the one place that maps them to HTTP status codes.
//!
//! Every error body is JSON: `{"error": {"code": "...", "message": "...", "field": "..."}}`
//! with a stable `code` for machines, a `message` for people and the `field` when one
//! input is to blame, so clients can show it next to the right input.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use gridpulse_actors::SystemError;
use gridpulse_actors::account::{AccountError, FieldError};
use gridpulse_actors::log::LogError;
use serde::Serialize;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request parameter or body field is invalid.
    #[error("`{field}` {reason}")]
    BadField {
        /// The parameter or field.
        field: String,
        /// Why it is refused.
        reason: String,
    },
    /// A body field breaks a rule that has a stable code (e.g. `overlapping_bands`).
    #[error("`{field}` {reason}")]
    InvalidField {
        /// Path of the field, e.g. `definition.energy.tiers[1].up_to_kwh`.
        field: String,
        /// Short stable code for machine clients.
        code: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The request body as a whole is unusable.
    #[error("{0}")]
    BadBody(String),
    /// Nothing with this id.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than allowed.
    #[error("request body larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// Ingest cannot keep up: retry later.
    #[error("{0}")]
    Overloaded(String),
    /// Shutting down or otherwise unable to serve.
    #[error("{0}")]
    Unavailable(String),
    /// No valid token.
    #[error("{0}")]
    Unauthorized(crate::auth::AuthError),
    /// The caller's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The caller sent too many requests: retry after the given seconds.
    #[error("rate limit exceeded: retry after {retry_after_s} s")]
    RateLimited {
        /// Seconds until the next request is allowed.
        retry_after_s: u64,
    },
}

impl ApiError {
    /// A bad parameter or field.
    pub fn bad_field(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
        ApiError::BadField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The error body: `{"error": {...}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`invalid_field`, `not_found`, `expired`, ...).
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// The parameter or body field to blame, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadField { .. } => "invalid_field",
            ApiError::InvalidField { code, .. } => code,
            ApiError::BadBody(_) => "bad_body",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge { .. } => "body_too_large",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Unauthorized(error) => error.code(),
            ApiError::Forbidden(_) => "forbidden",
            ApiError::RateLimited { .. } => "rate_limited",
        }
    }

    /// The field to blame, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::BadField { field, .. } | ApiError::InvalidField { field, .. } => {
                Some(field.as_str())
            }
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadField { .. } | ApiError::InvalidField { .. } | ApiError::BadBody(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Overloaded(_) => {
                response.insert_header(("Retry-After", "1"));
            }
            ApiError::RateLimited { retry_after_s } => {
                response.insert_header(("Retry-After", retry_after_s.to_string()));
            }
            ApiError::Unauthorized(_) => {
                response.insert_header((
                    "WWW-Authenticate",
                    format!(
                        "Bearer error=\"invalid_token\", error_description=\"{}\"",
                        self.code()
                    ),
                ));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                field: self.field().map(str::to_owned),
            },
        })
    }
}

impl From<SystemError> for ApiError {
    fn from(error: SystemError) -> Self {
        match error {
            SystemError::MeterNotFound => ApiError::NotFound("meter"),
            SystemError::UserNotFound => ApiError::NotFound("user"),
            SystemError::AlertNotOpen => ApiError::NotFound("open alert"),
            SystemError::BadInput { field, reason } => ApiError::bad_field(field, reason),
            SystemError::Thresholds(error) => ApiError::bad_field(error.field, error.reason),
            SystemError::Unavailable(error) => ApiError::Unavailable(error.to_string()),
            SystemError::Store(error) => ApiError::Unavailable(format!("store: {error}")),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        ApiError::InvalidField {
            field: error.field,
            code: error.code,
            reason: error.reason,
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::Invalid(error) => error.into(),
            AccountError::NotFound(what) => ApiError::NotFound(what),
            AccountError::Conflict(reason) => ApiError::Conflict(reason),
            AccountError::Store(reason) => ApiError::Unavailable(format!("store: {reason}")),
        }
    }
}

impl From<gridpulse_store::StoreError> for ApiError {
    fn from(error: gridpulse_store::StoreError) -> Self {
        match error {
            gridpulse_store::StoreError::BadRequest { field, reason } => {
                ApiError::bad_field(field, reason)
            }
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::Full { .. } => ApiError::Overloaded(error.to_string()),
            LogError::Closed | LogError::Revoked | LogError::Backend(_) => {
                ApiError::Unavailable(error.to_string())
            }
        }
    }
}
