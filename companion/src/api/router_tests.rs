//! The router driven without a socket (`tower::ServiceExt::oneshot`) over a
//! temporary SQLite store.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::audit::open_store;

const TOKEN: &str = "ingest-token-for-router-tests";

struct Harness {
    state: AppState,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let store = open_store(&url).await.unwrap();
    Harness {
        state: AppState::new(store).with_ingest_token(IngestToken::new(TOKEN).unwrap()),
        _dir: dir,
    }
}

async fn call(state: &AppState, request: Request<Body>) -> (StatusCode, Value) {
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

fn ingest_request(token: Option<&str>, body: &str) -> Request<Body> {
    let mut builder =
        Request::post("/v1/audit/events").header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post_json(uri: &str, body: Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn event(id: &str) -> Value {
    json!({"id": id, "time": "2026-01-01T00:00:00.000Z", "kind": "authz.denied", "outcome": "deny",
           "subject": "alice", "rule": "audit.logs.list"})
}

#[tokio::test]
async fn ingest_with_a_wrong_or_missing_token_is_401_and_stores_nothing() {
    let h = harness().await;
    let body = json!({"events": [event("a")]}).to_string();
    for token in [Some("wrong"), Some(""), None] {
        let (status, body_json) = call(&h.state, ingest_request(token, &body)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(body_json["error"], "unauthorized");
    }
    let request = Request::post("/v1/audit/events")
        .header(header::AUTHORIZATION, format!("Basic {TOKEN}"))
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(call(&h.state, request).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(h.state.store.chain_state().await.unwrap().head_seq, 0);
}

#[tokio::test]
async fn ingest_without_a_configured_token_is_503() {
    let h = harness().await;
    let state = AppState::new(h.state.store.clone());
    let (status, _) = call(&state, ingest_request(Some(TOKEN), r#"{"events":[]}"#)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn ingest_answers_accepted_and_duplicates() {
    let h = harness().await;
    let body = json!({"events": [event("a"), event("b")]}).to_string();
    let (status, answer) = call(&h.state, ingest_request(Some(TOKEN), &body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"accepted": 2, "duplicates": 0}));
    let (_, answer) = call(&h.state, ingest_request(Some(TOKEN), &body)).await;
    assert_eq!(answer, json!({"accepted": 0, "duplicates": 2}));
}

#[tokio::test]
async fn a_malformed_body_is_400_and_stores_nothing() {
    let h = harness().await;
    for body in [
        "not json",
        r#"{"event":[]}"#,
        r#"{"events":{}}"#,
        r#"{"events":[],"x":1}"#,
    ] {
        let (status, answer) = call(&h.state, ingest_request(Some(TOKEN), body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(answer["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was stored"));
    }
}

#[tokio::test]
async fn a_malformed_event_is_reported_precisely_and_the_valid_ones_are_stored() {
    let h = harness().await;
    let mut bad_kind = event("c");
    bad_kind["kind"] = json!("authz.nope");
    let body = json!({"events": [event("a"), {"id": "b"}, bad_kind, event("d")]}).to_string();
    let (status, answer) = call(&h.state, ingest_request(Some(TOKEN), &body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "invalid_events");
    assert_eq!(answer["accepted"], 2);
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["index"], 1);
    assert_eq!(rejected[0]["id"], "b");
    assert!(rejected[0]["error"].as_str().unwrap().contains("time"));
    assert_eq!(rejected[1]["index"], 2);
    assert!(rejected[1]["error"].as_str().unwrap().contains("kind"));
    assert!(h.state.store.get("a").await.unwrap().is_some());
    assert!(h.state.store.get("d").await.unwrap().is_some());
    assert!(h.state.store.get("c").await.unwrap().is_none());
    let metrics = h.state.metrics.render();
    assert!(metrics.contains("avb_audit_events_rejected_total 2\n"));
}

#[tokio::test]
async fn an_oversized_batch_is_refused_whole() {
    let h = harness().await;
    let events: Vec<Value> = (0..=ingest::MAX_BATCH_EVENTS)
        .map(|i| event(&format!("e{i}")))
        .collect();
    let body = json!({ "events": events }).to_string();
    let (status, _) = call(&h.state, ingest_request(Some(TOKEN), &body)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.state.store.chain_state().await.unwrap().head_seq, 0);
}

#[tokio::test]
async fn unknown_records_and_endpoints_are_404_and_bad_ids_400() {
    let h = harness().await;
    let (status, body) = call(&h.state, get("/api/v1/audit/logs/unknown-id")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    assert_eq!(
        call(&h.state, get("/api/v1/nothing")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&h.state, get("/api/v1/audit/logs/a%20b")).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn list_parameters_are_checked() {
    let h = harness().await;
    for uri in [
        "/api/v1/audit/logs?limit=0",
        "/api/v1/audit/logs?limit=1001",
        "/api/v1/audit/logs?cursor=garbage",
        "/api/v1/audit/logs?since=yesterday",
        "/api/v1/audit/logs?kind=authz.nope",
        "/api/v1/audit/logs?outcom=deny",
        "/api/v1/audit/logs?format=csv",
        "/api/v1/audit/logs?subject=a&subject=b",
        "/api/v1/audit/logs/export?format=xml",
        "/api/v1/audit/statistics?bucket=week",
    ] {
        let (status, body) = call(&h.state, get(uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"], "bad_request");
    }
    let (status, body) = call(&h.state, get("/api/v1/audit/logs")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"items": [], "next_cursor": null}));
}

#[tokio::test]
async fn statistics_answer_the_documented_shape() {
    let h = harness().await;
    let body = json!({"events": [event("a"), event("b")]}).to_string();
    call(&h.state, ingest_request(Some(TOKEN), &body)).await;
    let (status, stats) = call(&h.state, get("/api/v1/audit/statistics?bucket=day")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["total"], 2);
    assert_eq!(stats["bucket"], "day");
    assert_eq!(stats["by_kind"], json!({"authz.denied": 2}));
    assert_eq!(stats["by_outcome"], json!({"deny": 2}));
    assert_eq!(stats["by_rule"], json!({"audit.logs.list": 2}));
    assert_eq!(
        stats["series"],
        json!([{"start": "2026-01-01T00:00:00.000Z", "total": 2, "allow": 0, "deny": 2}])
    );
}

#[tokio::test]
async fn purge_requires_an_explicit_dry_run_and_a_positive_age() {
    let h = harness().await;
    for body in [
        json!({"older_than_days": 30}),
        json!({"older_than_days": 0, "dry_run": true}),
        json!({"older_than_days": -1, "dry_run": true}),
        json!({"older_than_days": 30, "dry_run": false, "all": true}),
    ] {
        let (status, _) = call(&h.state, post_json("/api/v1/audit/purge", body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    let (status, answer) = call(
        &h.state,
        post_json(
            "/api/v1/audit/purge",
            json!({"older_than_days": 30, "dry_run": true}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["purged"], 0);
    assert_eq!(answer["dry_run"], true);
    assert_eq!(answer["record_id"], Value::Null);
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let h = harness().await;
    assert_eq!(call(&h.state, get("/healthz")).await.0, StatusCode::OK);
    let (status, body) = call(&h.state, get("/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    call(&h.state, get("/healthz")).await;
    let (status, text) = call(&h.state, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text
        .as_str()
        .unwrap()
        .contains("avb_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 2"));
}

#[tokio::test]
async fn cache_invalidation_without_redis_is_503_and_hostile_tenants_400() {
    let h = harness().await;
    let (status, body) = call(
        &h.state,
        post_json(
            "/api/v1/tenants/acme/cache/invalidate",
            json!({"dry_run": true}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["detail"].as_str().unwrap().contains("--redis"));
    for tenant in ["a*", "a%3Ab", "%5B", "a%5Cb"] {
        let uri = format!("/api/v1/tenants/{tenant}/cache/invalidate");
        let (status, _) = call(&h.state, post_json(&uri, json!({}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{tenant}");
    }
}

/// An authorizer that lets through only `Bearer ok` and names the caller.
struct FakeAuthorizer;

impl Authorizer for FakeAuthorizer {
    fn authorize(&self, _method: &str, _path: &str, authorization: &[&str]) -> Authorization {
        match authorization {
            ["Bearer ok"] => Authorization::Allow(Caller {
                subject: Some("admin-7".into()),
                tenant: Some("acme".into()),
                roles: vec!["ADMIN".into()],
                rule: Some("audit.purge".into()),
                policy_revision: Some("rev1".into()),
            }),
            [] => Authorization::Deny {
                status: StatusCode::UNAUTHORIZED,
                reason: "a bearer token is required".into(),
            },
            _ => Authorization::Deny {
                status: StatusCode::OK,
                reason: "confused authorizer".into(),
            },
        }
    }
}

#[tokio::test]
async fn the_policy_guards_api_routes_only_and_names_the_caller_in_purge_records() {
    let h = harness().await;
    let state = h.state.clone().with_authorizer(Arc::new(FakeAuthorizer));
    // Denied without a token; a deny with a bogus status becomes 403.
    let (status, body) = call(&state, get("/api/v1/audit/logs")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized");
    let request = Request::get("/api/v1/audit/logs")
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&state, request).await.0, StatusCode::FORBIDDEN);
    // Unknown /api/ paths are guarded too.
    assert_eq!(
        call(&state, get("/api/v1/other")).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Ingest and health are not /api/.
    assert_eq!(call(&state, get("/healthz")).await.0, StatusCode::OK);
    let ingest = ingest_request(Some(TOKEN), &json!({"events": [event("a")]}).to_string());
    assert_eq!(call(&state, ingest).await.0, StatusCode::OK);
    // Allowed: the purge record says who asked.
    let request = Request::post("/api/v1/audit/purge")
        .header(header::AUTHORIZATION, "Bearer ok")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", "req-42")
        .body(Body::from(
            json!({"older_than_days": 1, "dry_run": false}).to_string(),
        ))
        .unwrap();
    let (status, answer) = call(&state, request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["purged"], 1);
    let id = answer["record_id"].as_str().unwrap();
    let record = state.store.get(id).await.unwrap().unwrap().event().unwrap();
    assert_eq!(record.kind, "audit.purged");
    assert_eq!(record.subject.as_deref(), Some("admin-7"));
    assert_eq!(record.tenant.as_deref(), Some("acme"));
    assert_eq!(record.roles, vec!["ADMIN"]);
    assert_eq!(record.rule.as_deref(), Some("audit.purge"));
    assert_eq!(record.request_id.as_deref(), Some("req-42"));
    assert_eq!(record.policy_revision.as_deref(), Some("rev1"));
    assert!(crate::audit::verify_chain(state.store.as_ref())
        .await
        .unwrap()
        .is_intact());
}
