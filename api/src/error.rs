//! API errors and the one place that maps them to HTTP status codes.
//!
//! Every error body is JSON: `{"error": "...", "field": "...", "code": "..."}` with the
//! field when one input is to blame, so clients can show it next to the right input,
//! and a stable code when a rule has one (tariff and account rules, JSON decoding).

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

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
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
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (field, code) = match self {
            ApiError::BadField { field, .. } => (Some(field.as_str()), None),
            ApiError::InvalidField { field, code, .. } => (Some(field.as_str()), Some(*code)),
            _ => (None, None),
        };
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Overloaded(_)) {
            response.insert_header(("Retry-After", "1"));
        }
        response.json(ErrorBody {
            error: self.to_string(),
            field,
            code,
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
