//! Defence in depth: the companion enforces the edge policy on `/api/` itself,
//! so reaching it around Envoy grants nothing.
//!
//! The decision comes from an [`Authorizer`] (in production the filter's own
//! policy engine, see [`super::policy`]); the caller it identifies is what
//! the API records as "who asked".

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::AppError;
use super::AppState;

/// Who made a request, as the policy identified them (all empty when no
/// policy is enforced).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    /// The policy rule that allowed the request.
    pub rule: Option<String>,
    /// The policy revision that decided.
    pub policy_revision: Option<String>,
}

/// A decision about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    Allow(Caller),
    /// `status` is 400, 401 or 403; `reason` is safe to show to the caller.
    Deny {
        status: StatusCode,
        reason: String,
    },
}

/// Decides whether a request to `/api/` may proceed.
pub trait Authorizer: Send + Sync {
    /// `path_and_query` is the request target as received (percent-encoding
    /// intact); `authorization` every `Authorization` header value (two or
    /// more must never be resolved to one of them).
    fn authorize(
        &self,
        method: &str,
        path_and_query: &str,
        authorization: &[&str],
    ) -> Authorization;
}

/// Middleware: every `/api/` request must be allowed by the authorizer; the
/// caller is attached to the request for the handlers.
pub async fn enforce_policy(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    let caller = match &state.authorizer {
        None => Caller::default(),
        Some(authorizer) => {
            let Ok(authorization) = request
                .headers()
                .get_all(header::AUTHORIZATION)
                .iter()
                .map(|v| v.to_str())
                .collect::<Result<Vec<&str>, _>>()
            else {
                return AppError::Denied {
                    status: StatusCode::UNAUTHORIZED,
                    detail: "the Authorization header is not valid text".to_owned(),
                }
                .into_response();
            };
            let target = request
                .uri()
                .path_and_query()
                .map_or_else(|| request.uri().path(), |pq| pq.as_str());
            match decide(
                authorizer,
                request.method().as_str(),
                target,
                &authorization,
            ) {
                Authorization::Allow(caller) => caller,
                Authorization::Deny { status, reason } => {
                    return AppError::Denied {
                        status,
                        detail: reason,
                    }
                    .into_response()
                }
            }
        }
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Asks the authorizer; a deny with any status but 400/401/403 is answered
/// 403, so a misbehaving authorizer can never turn a deny into a success.
fn decide(
    authorizer: &Arc<dyn Authorizer>,
    method: &str,
    path_and_query: &str,
    authorization: &[&str],
) -> Authorization {
    match authorizer.authorize(method, path_and_query, authorization) {
        Authorization::Deny { status, reason } if !matches!(status.as_u16(), 400 | 401 | 403) => {
            Authorization::Deny {
                status: StatusCode::FORBIDDEN,
                reason,
            }
        }
        other => other,
    }
}
