//! Prometheus counters of the companion, rendered as text at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// Counters shared by every request.
#[derive(Debug, Default)]
pub struct Metrics {
    ingested: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    store_failures: AtomicU64,
    /// (method, route template, status) -> count. Route templates, not raw
    /// paths, so the label set stays bounded whatever clients send.
    http_requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl Metrics {
    pub fn record_ingest(&self, accepted: u64, duplicates: u64, rejected: u64) {
        self.ingested.fetch_add(accepted, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        self.rejected.fetch_add(rejected, Ordering::Relaxed);
    }

    pub fn record_store_failure(&self) {
        self.store_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_request(&self, method: &str, route: &str, status: u16) {
        let mut requests = self
            .http_requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = [
            (
                "avb_audit_events_ingested_total",
                "Audit events durably stored.",
                &self.ingested,
            ),
            (
                "avb_audit_events_duplicate_total",
                "Audit events received again (same id) and not stored twice.",
                &self.duplicates,
            ),
            (
                "avb_audit_events_rejected_total",
                "Audit events refused as malformed.",
                &self.rejected,
            ),
            (
                "avb_audit_store_failures_total",
                "Requests that failed because the audit store did.",
                &self.store_failures,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP avb_http_requests_total HTTP requests answered, by method, route and status."
        );
        let _ = writeln!(out, "# TYPE avb_http_requests_total counter");
        let requests = self
            .http_requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for ((method, route, status), count) in requests.iter() {
            let _ = writeln!(
                out,
                "avb_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {count}",
                label(method),
                label(route)
            );
        }
        out
    }
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Middleware counting every answered request.
pub async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state
        .metrics
        .record_request(&method, &route, response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_counters_and_escapes_labels() {
        let metrics = Metrics::default();
        metrics.record_ingest(3, 1, 2);
        metrics.record_request("GET", "/a\"b", 200);
        metrics.record_request("GET", "/a\"b", 200);
        let text = metrics.render();
        assert!(text.contains("avb_audit_events_ingested_total 3\n"));
        assert!(text.contains("avb_audit_events_duplicate_total 1\n"));
        assert!(text.contains("avb_audit_events_rejected_total 2\n"));
        assert!(text.contains(
            "avb_http_requests_total{method=\"GET\",route=\"/a\\\"b\",status=\"200\"} 2\n"
        ));
    }

    #[test]
    fn fresh_metrics_render_zeroes() {
        let text = Metrics::default().render();
        assert!(text.contains("avb_audit_events_ingested_total 0\n"));
        assert!(!text.contains("avb_http_requests_total{"));
    }
}
