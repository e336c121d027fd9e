//! `GET /api/v1/audit/statistics?since&until&bucket=hour|day` (and the log
//! filters): totals, counts by kind, outcome and rule, and a time series.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde_json::{json, Value};

use super::error::AppError;
use super::logs::AuditParams;
use super::{rejection, AppState};
use crate::audit::store::Bucket;

pub async fn statistics(
    State(state): State<AppState>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(params) = params.map_err(|e| rejection("invalid query", e.body_text()))?;
    params.only("statistics", &["bucket"])?;
    let filter = params.to_filter()?;
    let bucket = match params.bucket.as_deref() {
        None | Some("hour") => Bucket::Hour,
        Some("day") => Bucket::Day,
        Some(_) => {
            return Err(AppError::BadRequest(
                "bucket must be hour or day".to_owned(),
            ))
        }
    };
    let stats = state.store.statistics(&filter, bucket).await?;
    Ok(Json(json!({
        "since": params.since.as_deref().and_then(crate::audit::event::parse_time_ms).map(crate::audit::event::format_time_ms),
        "until": params.until.as_deref().and_then(crate::audit::event::parse_time_ms).map(crate::audit::event::format_time_ms),
        "bucket": if bucket == Bucket::Day { "day" } else { "hour" },
        "total": stats.total,
        "by_kind": stats.by_kind,
        "by_outcome": stats.by_outcome,
        "by_rule": stats.by_rule,
        "series": stats.series,
    })))
}
