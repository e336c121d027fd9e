//! The companion's HTTP API: audit ingest from the filter, the Audit API,
//! tenant cache invalidation, health and metrics.
//!
//! [`app`] builds the router from an [`AppState`], so tests drive it without a
//! socket; [`serve`] runs it on a listener until a shutdown signal.

pub mod cache;
pub mod error;
pub mod guard;
pub mod ingest;
pub mod logs;
pub mod metrics;
pub mod policy;
pub mod purge;
pub mod statistics;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::audit::AuditStore;
pub use error::AppError;
pub use guard::{Authorization, Authorizer, Caller};
pub use metrics::Metrics;

/// Largest ingest body accepted (a full batch of large events fits).
pub const MAX_INGEST_BODY: usize = 16 * 1024 * 1024;

/// The bearer token the filter presents on `POST /v1/audit/events`.
///
/// Only its SHA-256 digest is kept, and presented tokens are compared digest
/// to digest in constant time, so neither the content nor the length of the
/// token leaks through timing.
#[derive(Clone)]
pub struct IngestToken {
    digest: [u8; 32],
}

impl IngestToken {
    /// `None` for an empty token (an empty secret would admit anyone).
    pub fn new(token: &str) -> Option<Self> {
        (!token.is_empty()).then(|| Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `presented` is the token.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(self.digest.ct_eq(&digest))
    }
}

impl std::fmt::Debug for IngestToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IngestToken(<redacted>)")
    }
}

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn AuditStore>,
    /// `None`: ingest answers 503 (the companion was started without a token).
    pub ingest_token: Option<IngestToken>,
    /// `None`: cache invalidation answers 503.
    pub redis_url: Option<Arc<str>>,
    /// `None`: `/api/` is not checked here (only with `serve --no-policy`).
    pub authorizer: Option<Arc<dyn Authorizer>>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// A state with only a store: no ingest token, no Redis, no policy.
    pub fn new(store: Arc<dyn AuditStore>) -> Self {
        Self {
            store,
            ingest_token: None,
            redis_url: None,
            authorizer: None,
            metrics: Arc::new(Metrics::default()),
        }
    }

    pub fn with_ingest_token(mut self, token: IngestToken) -> Self {
        self.ingest_token = Some(token);
        self
    }

    pub fn with_redis_url(mut self, url: &str) -> Self {
        self.redis_url = Some(Arc::from(url));
        self
    }

    pub fn with_authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }
}

/// The companion's router.
pub fn app(state: AppState) -> Router {
    let ingest = Router::new()
        .route("/v1/audit/events", post(ingest::ingest_events))
        .layer(DefaultBodyLimit::max(MAX_INGEST_BODY));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/api/v1/audit/logs", get(logs::list_logs))
        .route("/api/v1/audit/logs/export", get(logs::export_logs))
        .route("/api/v1/audit/logs/{id}", get(logs::get_log))
        .route("/api/v1/audit/statistics", get(statistics::statistics))
        .route("/api/v1/audit/purge", post(purge::purge))
        .route(
            "/api/v1/tenants/{tenant_id}/cache/invalidate",
            post(cache::invalidate_tenant_cache),
        )
        .merge(ingest)
        .fallback(not_found)
        // Layers run outside in: count every answer, including denials.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::enforce_policy,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` completes, then lets
/// in-flight requests finish (an acknowledged batch is never cut short).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    state.store.ping().await.map_err(|error| {
        tracing::warn!(%error, "readiness check: the audit store is not reachable");
        AppError::Unavailable("the audit store is not reachable".to_owned())
    })?;
    Ok(Json(json!({"status": "ready"})))
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn not_found() -> AppError {
    AppError::NotFound("no such endpoint".to_owned())
}

/// The `x-request-id` of a request, when it is a plausible id (it is copied
/// into audit records, so arbitrary text is not).
pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| crate::audit::event::is_valid_event_id(id))
        .map(str::to_owned)
}

/// A 400 for a query string or JSON body axum could not decode.
pub(crate) fn rejection(what: &str, detail: impl std::fmt::Display) -> AppError {
    AppError::BadRequest(format!("{what}: {detail}"))
}

/// Answers `status` with a JSON body.
pub(crate) fn json_status(status: StatusCode, body: serde_json::Value) -> axum::response::Response {
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_token_matches_only_itself() {
        let token = IngestToken::new("s3cret-token").unwrap();
        assert!(token.matches("s3cret-token"));
        assert!(!token.matches("s3cret-toke"));
        assert!(!token.matches("s3cret-token "));
        assert!(!token.matches(""));
        assert!(IngestToken::new("").is_none());
        assert_eq!(format!("{token:?}"), "IngestToken(<redacted>)");
    }

    #[test]
    fn request_ids_outside_the_id_alphabet_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", "abc-123".parse().unwrap());
        assert_eq!(request_id(&headers).as_deref(), Some("abc-123"));
        headers.insert("x-request-id", "a b<script>".parse().unwrap());
        assert_eq!(request_id(&headers), None);
    }
}

#[cfg(test)]
mod router_tests;
