//! `GET /api/v1/audit/logs`, `/logs/{id}` and `/logs/export`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::AppError;
use super::{rejection, AppState};
use crate::audit::event::{is_valid_event_id, parse_time_ms, KINDS};
use crate::audit::store::{Cursor, LogFilter, LogQuery, Order, StoredRecord};
use crate::audit::{AuditStore, StoreError};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 1000;
/// Records read from the store per chunk of an export.
const EXPORT_CHUNK: u32 = 1000;

/// Every query parameter of the Audit API. One struct (rather than one per
/// endpoint with shared fields flattened in) so unknown parameters are
/// refused: a misspelt filter must not silently widen a result.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    pub since: Option<String>,
    pub until: Option<String>,
    pub kind: Option<String>,
    pub outcome: Option<String>,
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub rule: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
    pub format: Option<String>,
    pub bucket: Option<String>,
}

impl AuditParams {
    /// Refuses parameters that `endpoint` does not take.
    pub fn only(&self, endpoint: &str, allowed: &[&str]) -> Result<(), AppError> {
        let given = [
            ("limit", self.limit.is_some()),
            ("cursor", self.cursor.is_some()),
            ("format", self.format.is_some()),
            ("bucket", self.bucket.is_some()),
        ];
        for (name, present) in given {
            if present && !allowed.contains(&name) {
                return Err(AppError::BadRequest(format!(
                    "{endpoint} does not take the parameter {name}"
                )));
            }
        }
        Ok(())
    }

    /// Checks every filter; an unknown kind or outcome is an error rather than
    /// an empty result, so a typo is not mistaken for "nothing happened".
    pub fn to_filter(&self) -> Result<LogFilter, AppError> {
        let time = |name: &str, value: &Option<String>| -> Result<Option<i64>, AppError> {
            value
                .as_deref()
                .map(|text| {
                    parse_time_ms(text).ok_or_else(|| {
                        AppError::BadRequest(format!(
                            "{name} must be an RFC 3339 timestamp (e.g. 2026-01-02T03:04:05Z)"
                        ))
                    })
                })
                .transpose()
        };
        let since_ms = time("since", &self.since)?;
        let until_ms = time("until", &self.until)?;
        if let (Some(since), Some(until)) = (since_ms, until_ms) {
            if since > until {
                return Err(AppError::BadRequest(
                    "since must not be after until".to_owned(),
                ));
            }
        }
        if let Some(kind) = &self.kind {
            if !KINDS.contains(&kind.as_str()) {
                return Err(AppError::BadRequest(format!(
                    "kind must be one of {}",
                    KINDS.join(", ")
                )));
            }
        }
        if let Some(outcome) = &self.outcome {
            if outcome != "allow" && outcome != "deny" {
                return Err(AppError::BadRequest(
                    "outcome must be allow or deny".to_owned(),
                ));
            }
        }
        Ok(LogFilter {
            since_ms,
            until_ms,
            kind: self.kind.clone(),
            outcome: self.outcome.clone(),
            subject: self.subject.clone(),
            tenant: self.tenant.clone(),
            rule: self.rule.clone(),
        })
    }
}

/// The JSON of one record: the event's fields plus `seq`, `hash`, `prev_hash`.
pub fn record_json(record: &StoredRecord) -> Result<Value, StoreError> {
    let mut object: Map<String, Value> =
        serde_json::from_str(&record.event_json).map_err(|e| StoreError::CorruptRecord {
            seq: record.seq,
            reason: e.to_string(),
        })?;
    object.insert("seq".into(), record.seq.into());
    object.insert("hash".into(), record.hash.clone().into());
    object.insert("prev_hash".into(), record.prev_hash.clone().into());
    Ok(Value::Object(object))
}

fn parse_limit(limit: Option<&str>) -> Result<u32, AppError> {
    let Some(text) = limit else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.parse::<u32>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(AppError::BadRequest(format!(
            "limit must be a whole number from 1 to {MAX_LIMIT}"
        ))),
    }
}

pub async fn list_logs(
    State(state): State<AppState>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(params) = params.map_err(|e| rejection("invalid query", e.body_text()))?;
    params.only("the log list", &["limit", "cursor"])?;
    let filter = params.to_filter()?;
    let limit = parse_limit(params.limit.as_deref())?;
    let after = params
        .cursor
        .as_deref()
        .map(|text| {
            Cursor::decode(text).ok_or_else(|| {
                AppError::BadRequest(
                    "cursor is not one this API handed out (use next_cursor as is)".to_owned(),
                )
            })
        })
        .transpose()?;
    // One extra row says whether another page exists.
    let mut records = state
        .store
        .query(&LogQuery {
            filter,
            order: Order::NewestFirst,
            after,
            limit: limit + 1,
        })
        .await?;
    let next_cursor = if records.len() > limit as usize {
        records.truncate(limit as usize);
        records.last().map(|r| r.cursor().encode())
    } else {
        None
    };
    let items = records
        .iter()
        .map(record_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({"items": items, "next_cursor": next_cursor})))
}

pub async fn get_log(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    if !is_valid_event_id(&id) {
        return Err(AppError::BadRequest(
            "an event id is 1 to 128 characters of A-Z a-z 0-9 . _ : -".to_owned(),
        ));
    }
    match state.store.get(&id).await? {
        Some(record) => Ok(Json(record_json(&record)?)),
        None => Err(AppError::NotFound("no audit record has this id".to_owned())),
    }
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Csv,
}

pub async fn export_logs(
    State(state): State<AppState>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(params) = params.map_err(|e| rejection("invalid query", e.body_text()))?;
    params.only("the export", &["format"])?;
    let filter = params.to_filter()?;
    let format = match params.format.as_deref() {
        None | Some("ndjson") => Format::Ndjson,
        Some("csv") => Format::Csv,
        Some(_) => {
            return Err(AppError::BadRequest(
                "format must be ndjson or csv".to_owned(),
            ))
        }
    };
    let (content_type, file_name) = match format {
        Format::Ndjson => ("application/x-ndjson", "audit-export.ndjson"),
        Format::Csv => ("text/csv; charset=utf-8", "audit-export.csv"),
    };
    let body = Body::from_stream(export_stream(state.store.clone(), filter, format));
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// Where an export stream is.
struct ExportState {
    store: Arc<dyn AuditStore>,
    filter: LogFilter,
    format: Format,
    after: Option<Cursor>,
    header_sent: bool,
    done: bool,
}

/// The export body: pages of [`EXPORT_CHUNK`] records read one after the
/// other with a keyset cursor, so memory stays constant however many rows
/// match. A store failure mid-way ends the stream with an error, which aborts
/// the response (the client sees a truncated transfer, never a silently short
/// file that looks complete).
fn export_stream(
    store: Arc<dyn AuditStore>,
    filter: LogFilter,
    format: Format,
) -> impl futures::Stream<Item = Result<Bytes, StoreError>> + Send {
    let state = ExportState {
        store,
        filter,
        format,
        after: None,
        header_sent: false,
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let mut chunk = String::new();
        if !state.header_sent {
            state.header_sent = true;
            if state.format == Format::Csv {
                chunk.push_str(&CSV_COLUMNS.join(","));
                chunk.push_str("\r\n");
            }
        }
        let page = state
            .store
            .query(&LogQuery {
                filter: state.filter.clone(),
                order: Order::OldestFirst,
                after: state.after,
                limit: EXPORT_CHUNK,
            })
            .await;
        let records = match page {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(%error, "export aborted: the audit store failed");
                state.done = true;
                return Some((Err(error), state));
            }
        };
        if records.len() < EXPORT_CHUNK as usize {
            state.done = true;
        }
        state.after = records.last().map(StoredRecord::cursor);
        for record in &records {
            let line = match state.format {
                Format::Ndjson => ndjson_line(record),
                Format::Csv => csv_line(record),
            };
            match line {
                Ok(line) => chunk.push_str(&line),
                Err(error) => {
                    tracing::error!(%error, "export aborted: a stored record cannot be read");
                    state.done = true;
                    return Some((Err(error), state));
                }
            }
        }
        Some((Ok(Bytes::from(chunk)), state))
    })
}

fn ndjson_line(record: &StoredRecord) -> Result<String, StoreError> {
    let mut line =
        serde_json::to_string(&record_json(record)?).map_err(|e| StoreError::CorruptRecord {
            seq: record.seq,
            reason: e.to_string(),
        })?;
    line.push('\n');
    Ok(line)
}

/// Columns of the CSV export, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "seq",
    "id",
    "time",
    "kind",
    "outcome",
    "status",
    "reason",
    "rule",
    "method",
    "path",
    "subject",
    "tenant",
    "roles",
    "source",
    "request_id",
    "policy_revision",
    "details",
    "prev_hash",
    "hash",
];

fn csv_line(record: &StoredRecord) -> Result<String, StoreError> {
    let event = record.event()?;
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let details = if event.details.is_empty() {
        String::new()
    } else {
        Value::Object(event.details.clone()).to_string()
    };
    let fields = [
        record.seq.to_string(),
        event.id.clone(),
        event.time.clone(),
        event.kind.clone(),
        event.outcome.clone(),
        event.status.map(|s| s.to_string()).unwrap_or_default(),
        text(&event.reason),
        text(&event.rule),
        text(&event.method),
        text(&event.path),
        text(&event.subject),
        text(&event.tenant),
        event.roles.join(";"),
        text(&event.source),
        text(&event.request_id),
        text(&event.policy_revision),
        details,
        record.prev_hash.clone(),
        record.hash.clone(),
    ];
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    Ok(line)
}

/// One CSV field (RFC 4180 quoting). Text that a spreadsheet would run as a
/// formula (`=`, `+`, `-`, `@`, tab, carriage return first) is prefixed with
/// `'`: event fields come from requests, i.e. from anyone on the internet.
pub fn csv_field(value: &str) -> String {
    let neutralised;
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        neutralised = format!("'{value}");
        neutralised.as_str()
    } else {
        value
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn limit_defaults_and_bounds() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(parse_limit(Some("1000")).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "ten", ""] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_reject_unknown_kinds_outcomes_and_inverted_ranges() {
        let params = AuditParams {
            kind: Some("authz.nope".into()),
            ..Default::default()
        };
        assert!(params.to_filter().is_err());
        let params = AuditParams {
            outcome: Some("maybe".into()),
            ..Default::default()
        };
        assert!(params.to_filter().is_err());
        let params = AuditParams {
            since: Some("2026-01-02T00:00:00Z".into()),
            until: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert!(params.to_filter().is_err());
        let params = AuditParams {
            since: Some("last week".into()),
            ..Default::default()
        };
        assert!(params.to_filter().is_err());
    }
}
