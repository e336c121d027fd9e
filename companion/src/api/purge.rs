//! `POST /api/v1/audit/purge {"older_than_days": N, "dry_run": bool}`.
//!
//! `dry_run` is required: a destructive call must say that it means it.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::AppError;
use super::guard::Caller;
use super::{rejection, request_id, AppState};
use crate::audit::event::{format_time_ms, new_event_id, now_ms, AuditEvent};
use crate::audit::store::PurgeRequest;

/// The longest retention a purge may name (100 years).
pub const MAX_OLDER_THAN_DAYS: u32 = 36_500;

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeBody {
    older_than_days: u32,
    dry_run: bool,
}

pub async fn purge(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Json<PurgeBody>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let Json(body) = body.map_err(|e| {
        rejection(
            "the body must be {\"older_than_days\": N, \"dry_run\": true|false}",
            e.body_text(),
        )
    })?;
    if !(1..=MAX_OLDER_THAN_DAYS).contains(&body.older_than_days) {
        return Err(AppError::BadRequest(format!(
            "older_than_days must be from 1 to {MAX_OLDER_THAN_DAYS}"
        )));
    }
    let caller = caller.map(|Extension(c)| c).unwrap_or_default();
    let now = now_ms();
    let cutoff_ms = now - i64::from(body.older_than_days) * DAY_MS;
    let record = AuditEvent {
        id: new_event_id(),
        time: format_time_ms(now),
        kind: "audit.purged".to_owned(),
        outcome: "allow".to_owned(),
        status: Some(200),
        rule: caller.rule.clone(),
        method: Some("POST".to_owned()),
        path: Some("/api/v1/audit/purge".to_owned()),
        subject: caller.subject.clone(),
        tenant: caller.tenant.clone(),
        roles: caller.roles.clone(),
        source: Some("avb-companion".to_owned()),
        request_id: request_id(&headers),
        policy_revision: caller.policy_revision.clone(),
        ..AuditEvent::default()
    };
    let outcome = state
        .store
        .purge(PurgeRequest {
            cutoff_ms,
            older_than_days: body.older_than_days,
            dry_run: body.dry_run,
            record,
        })
        .await?;
    tracing::info!(
        purged = outcome.purged,
        dry_run = outcome.dry_run,
        first_seq = outcome.first_seq,
        subject = caller.subject.as_deref().unwrap_or("-"),
        "audit purge"
    );
    Ok(Json(json!({
        "purged": outcome.purged,
        "dry_run": outcome.dry_run,
        "cutoff": format_time_ms(cutoff_ms),
        "first_seq": outcome.first_seq,
        "record_id": outcome.record_id,
    })))
}
