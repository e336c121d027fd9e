//! `POST /api/v1/tenants/{tenant_id}/cache/invalidate` (body optional
//! `{"dry_run": true}`): clears one tenant's Redis cache and records who asked.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::Deserialize;

use super::error::AppError;
use super::guard::Caller;
use super::{request_id, AppState};
use crate::audit::event::{format_time_ms, new_event_id, now_ms, validate, AuditEvent};
use crate::cache::{self, CacheError, InvalidateOptions, InvalidateReport, RedisTarget};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateBody {
    #[serde(default)]
    dry_run: bool,
}

/// The `cache.invalidated` record for one run (finished or failed part way).
///
/// `tenant` is the tenant whose cache was cleared; the caller's own tenant (if
/// any) is in `details.caller_tenant`. Shared with the `cache invalidate`
/// command so both write the same shape.
pub fn cache_invalidated_event(
    tenant: &str,
    outcome: Result<&InvalidateReport, &CacheError>,
    dry_run: bool,
    caller: &Caller,
) -> AuditEvent {
    let mut details = serde_json::Map::new();
    details.insert("dry_run".into(), dry_run.into());
    match outcome {
        Ok(report) => {
            details.insert("matched".into(), report.matched.into());
            details.insert("deleted".into(), report.deleted.into());
            details.insert("scanned".into(), report.scanned.into());
            details.insert("duration_ms".into(), report.duration_ms.into());
        }
        Err(error) => {
            details.insert("error".into(), error.to_string().into());
            if let CacheError::Interrupted {
                scanned,
                matched,
                deleted,
                ..
            }
            | CacheError::TopologyChanged {
                scanned,
                matched,
                deleted,
                ..
            } = error
            {
                details.insert("matched".into(), (*matched).into());
                details.insert("deleted".into(), (*deleted).into());
                details.insert("scanned".into(), (*scanned).into());
            }
        }
    }
    if let Some(caller_tenant) = &caller.tenant {
        details.insert("caller_tenant".into(), caller_tenant.clone().into());
    }
    AuditEvent {
        id: new_event_id(),
        time: format_time_ms(now_ms()),
        kind: "cache.invalidated".to_owned(),
        outcome: "allow".to_owned(),
        status: Some(if outcome.is_ok() { 200 } else { 502 }),
        rule: caller.rule.clone(),
        subject: caller.subject.clone(),
        tenant: Some(tenant.to_owned()),
        roles: caller.roles.clone(),
        source: Some("avb-companion".to_owned()),
        policy_revision: caller.policy_revision.clone(),
        details,
        ..AuditEvent::default()
    }
}

pub async fn invalidate_tenant_cache(
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<InvalidateReport>, AppError> {
    let tenant =
        cache::validate_tenant_id(&tenant_id).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let body: InvalidateBody = if body.iter().all(u8::is_ascii_whitespace) {
        InvalidateBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            AppError::BadRequest(format!(
                "the body must be empty or {{\"dry_run\": true|false}}: {e}"
            ))
        })?
    };
    let Some(redis_url) = &state.redis_url else {
        return Err(AppError::Unavailable(
            "cache invalidation is not configured: start the companion with --redis or AVB_REDIS_URL"
                .to_owned(),
        ));
    };
    let caller = caller.map(|Extension(c)| c).unwrap_or_default();
    let options = InvalidateOptions {
        dry_run: body.dry_run,
        ..InvalidateOptions::default()
    };
    let target = RedisTarget::connect(redis_url).await.map_err(|error| {
        tracing::warn!(%error, "cache invalidation: redis is not reachable");
        AppError::Unavailable("redis is not reachable; nothing was deleted".to_owned())
    })?;
    let outcome = cache::invalidate(&target, &tenant, &options, &|_| {}).await;
    let mut record =
        cache_invalidated_event(tenant.as_str(), outcome.as_ref(), body.dry_run, &caller);
    record.method = Some("POST".to_owned());
    record.path = Some(format!(
        "/api/v1/tenants/{}/cache/invalidate",
        tenant.as_str()
    ));
    record.request_id = request_id(&headers);
    let recorded = match validate(record) {
        Ok(valid) => state.store.ingest(vec![valid]).await.map(|_| ()),
        Err(error) => Err(error.into()),
    };
    match (outcome, recorded) {
        (Ok(report), Ok(())) => Ok(Json(report)),
        (Ok(report), Err(error)) => {
            tracing::error!(%error, tenant = %report.tenant, "cache cleared but its audit record was not written");
            Err(AppError::Unavailable(format!(
                "the cache of tenant {} was cleared ({} keys deleted) but the audit record could not be written",
                report.tenant, report.deleted
            )))
        }
        (Err(error), _) if error.is_usage_error() => Err(AppError::BadRequest(error.to_string())),
        (Err(error), _) => {
            tracing::error!(%error, "cache invalidation failed");
            Err(AppError::Upstream(error.to_string()))
        }
    }
}
