//! The one error type of the HTTP API: every failure answers
//! `{"error": code, "detail": message}` and never carries internals (SQL,
//! file paths, connection strings); those go to the log only.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::audit::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed; the detail says what to fix.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Missing or wrong credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The policy refused the request (status from the decision: 401 or 403).
    #[error("denied ({status}): {detail}")]
    Denied { status: StatusCode, detail: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    /// A dependency is missing or down; retrying later may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// An upstream (Redis) failed part way; the detail is safe to show.
    #[error("upstream failed: {0}")]
    Upstream(String),
    /// The audit store failed. Logged in full, answered as a bare 503 so
    /// senders retry.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
}

impl AppError {
    fn status_code_and_detail(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::BadRequest(d) => (StatusCode::BAD_REQUEST, "bad_request", d.clone()),
            Self::Unauthorized(d) => (StatusCode::UNAUTHORIZED, "unauthorized", d.clone()),
            Self::Denied { status, detail } => {
                let code = match status.as_u16() {
                    400 => "bad_request",
                    401 => "unauthorized",
                    _ => "forbidden",
                };
                (*status, code, detail.clone())
            }
            Self::NotFound(d) => (StatusCode::NOT_FOUND, "not_found", d.clone()),
            Self::PayloadTooLarge(d) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                d.clone(),
            ),
            Self::Unavailable(d) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", d.clone()),
            Self::Upstream(d) => (StatusCode::BAD_GATEWAY, "upstream_failed", d.clone()),
            Self::Store(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the audit store could not complete the request; see the companion log".to_owned(),
            ),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let Self::Store(error) = &self {
            tracing::error!(%error, "audit store failure");
        }
        let (status, code, detail) = self.status_code_and_detail();
        let mut response = (status, Json(json!({"error": code, "detail": detail}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_do_not_leak_their_message() {
        let error = AppError::Store(StoreError::Task("/secret/path.db is locked".into()));
        let (status, code, detail) = error.status_code_and_detail();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(code, "store_unavailable");
        assert!(!detail.contains("secret"));
    }

    #[test]
    fn unauthorized_answers_carry_a_bearer_challenge() {
        let response = AppError::Unauthorized("no token".into()).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
