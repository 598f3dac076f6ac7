//! Errors as RabbitMQ's management API writes them: `{"error": …, "reason": …}` with its
//! status codes (401 for every refusal — RabbitMQ never answers 403).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

pub(crate) const REALM: &str = "Basic realm=\"RabbitMQ Management\"";

#[derive(Debug)]
pub(crate) enum ApiError {
    /// No credentials: an empty 401 asking for them.
    Unauthenticated,
    /// Wrong user or password.
    LoginFailed,
    /// Logged in, but not allowed: the reason says why.
    NotAuthorised(&'static str),
    /// The generic 404 RabbitMQ writes for every missing object.
    NotFound,
    /// A 404 with a reason of its own (`vhost_not_found`, `no exchange …`).
    NotFoundBecause(String),
    BadRequest(String),
    /// A 400 whose reason is an Erlang term rendered as JSON (`["not_base64", "…"]`).
    BadRequestTerm(serde_json::Value),
    /// POST /api/definitions without a JSON content type.
    UnsupportedMediaType,
    Internal(String),
    /// Any other status with RabbitMQ's `{"error", "reason"}` body.
    Custom {
        status: StatusCode,
        error: String,
        reason: String,
    },
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Unauthenticated => f.write_str("no credentials"),
            ApiError::LoginFailed => f.write_str("Login failed"),
            ApiError::NotAuthorised(reason) => f.write_str(reason),
            ApiError::NotFound => f.write_str("Not Found"),
            ApiError::NotFoundBecause(reason)
            | ApiError::BadRequest(reason)
            | ApiError::Internal(reason)
            | ApiError::Custom { reason, .. } => f.write_str(reason),
            ApiError::BadRequestTerm(term) => write!(f, "{term}"),
            ApiError::UnsupportedMediaType => f.write_str("unsupported media type"),
        }
    }
}

fn body(error: &str, reason: &str) -> String {
    serde_json::json!({ "error": error, "reason": reason }).to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let json = |status: StatusCode, text: String| {
            (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
        };
        match self {
            ApiError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, REALM)],
            )
                .into_response(),
            ApiError::LoginFailed => (
                StatusCode::UNAUTHORIZED,
                [
                    (header::WWW_AUTHENTICATE, REALM),
                    (header::CONTENT_TYPE, "application/json"),
                ],
                body("not_authorized", "Login failed"),
            )
                .into_response(),
            ApiError::NotAuthorised(reason) => {
                json(StatusCode::UNAUTHORIZED, body("not_authorised", reason))
            }
            ApiError::NotFound => {
                json(StatusCode::NOT_FOUND, body("Object Not Found", "Not Found"))
            }
            ApiError::NotFoundBecause(reason) => {
                json(StatusCode::NOT_FOUND, body("not_found", &reason))
            }
            ApiError::BadRequestTerm(reason) => json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": "bad_request", "reason": reason }).to_string(),
            ),
            ApiError::BadRequest(reason) => {
                json(StatusCode::BAD_REQUEST, body("bad_request", &reason))
            }
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response(),
            ApiError::Custom {
                status,
                error,
                reason,
            } => json(status, body(&error, &reason)),
            ApiError::Internal(reason) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                body("internal_error", &reason),
            ),
        }
    }
}

impl From<brook_auth::AccessError> for ApiError {
    fn from(e: brook_auth::AccessError) -> Self {
        match e {
            brook_auth::AccessError::Storage(_) | brook_auth::AccessError::Unreadable(_) => {
                ApiError::Internal(e.to_string())
            }
            // No majority: the client may retry, as with RabbitMQ's metadata store timeouts.
            brook_auth::AccessError::Unavailable(reason) => ApiError::Custom {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "unavailable".into(),
                reason,
            },
            e => ApiError::BadRequest(e.to_string()),
        }
    }
}

pub(crate) type ApiResult<T = Response> = Result<T, ApiError>;
