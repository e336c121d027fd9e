//! `POST /v1/audit/events`: batches from the filter.
//!
//! Every valid event of a batch is stored even when others are malformed (a
//! malformed event never becomes valid by retrying, and the valid ones must
//! not be lost with it); the answer says what happened to each. The answer is
//! sent only after the batch is committed.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::AppError;
use super::{json_status, AppState};
use crate::audit::event::{is_valid_event_id, validate_value};

/// Most events one batch may carry.
pub const MAX_BATCH_EVENTS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestBody {
    events: Vec<Value>,
}

/// One refused event, by its position in the batch.
fn rejected_entry(index: usize, event: &Value, error: &str) -> Value {
    // The id is echoed only when it is a well-formed id: anything else could
    // be arbitrary text (or a secret pasted by mistake).
    let id = event
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| is_valid_event_id(id));
    json!({"index": index, "id": id, "error": error})
}

pub async fn ingest_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    check_token(&state, &headers)?;
    let batch: IngestBody = serde_json::from_slice(&body).map_err(|e| {
        AppError::BadRequest(format!(
            "the body must be {{\"events\": [...]}}: {e}; nothing was stored"
        ))
    })?;
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(AppError::PayloadTooLarge(format!(
            "a batch may carry at most {MAX_BATCH_EVENTS} events, this one has {}; nothing was stored",
            batch.events.len()
        )));
    }
    let total = batch.events.len();
    let mut valid = Vec::with_capacity(total);
    let mut rejected = Vec::new();
    for (index, value) in batch.events.into_iter().enumerate() {
        let echo = rejected_entry_source(&value);
        match validate_value(value) {
            Ok(event) => valid.push(event),
            Err(error) => rejected.push(rejected_entry(index, &echo, &error.to_string())),
        }
    }
    let outcome = state.store.ingest(valid).await.inspect_err(|_| {
        state.metrics.record_store_failure();
    })?;
    let (accepted, duplicates) = (outcome.accepted(), outcome.duplicates());
    state
        .metrics
        .record_ingest(accepted, duplicates, rejected.len() as u64);
    if rejected.is_empty() {
        return Ok(json_status(
            StatusCode::OK,
            json!({"accepted": accepted, "duplicates": duplicates}),
        ));
    }
    Ok(json_status(
        StatusCode::BAD_REQUEST,
        json!({
            "error": "invalid_events",
            "detail": format!(
                "{} of {total} events were rejected and not stored; the other {} were stored \
                 ({accepted} new, {duplicates} already present)",
                rejected.len(),
                accepted + duplicates
            ),
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": rejected,
        }),
    ))
}

/// Keeps only the `id` of an event for the rejection report (the rest is
/// moved into validation).
fn rejected_entry_source(value: &Value) -> Value {
    match value.get("id") {
        Some(id) => json!({"id": id}),
        None => Value::Null,
    }
}

fn check_token(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let Some(expected) = &state.ingest_token else {
        return Err(AppError::Unavailable(
            "ingest is disabled: the companion was started without AVB_INGEST_TOKEN".to_owned(),
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, token)| token.trim());
    match presented {
        Some(token) if expected.matches(token) => Ok(()),
        Some(_) => Err(AppError::Unauthorized(
            "the ingest token is wrong".to_owned(),
        )),
        None => Err(AppError::Unauthorized(
            "an Authorization: Bearer <ingest token> header is required".to_owned(),
        )),
    }
}
