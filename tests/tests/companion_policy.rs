//! Defence in depth: the real companion started with the shipped policy
//! enforces it on `/api/` itself (reaching it around Envoy grants nothing),
//! and records the caller the policy identified.
//!
//! Run: `cargo test -p avb-tests --test companion_policy`.

use avb_tests::http::RawRequest;
use avb_tests::procs::companion::{CompanionConfig, CompanionServer};
use avb_tests::procs::workspace_root;
use avb_tests::tokens::dev_token;
use serde_json::{json, Value};

/// The local-only secrets of the shipped policy (envoy/dev.env).
fn dev_env_pairs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace_root().join("envoy/dev.env")).unwrap();
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn token(subject: &str, roles: &[&str], tenant: &str) -> String {
    dev_token(subject, roles, tenant, 600).unwrap()
}

fn start_with_shipped_policy() -> (CompanionServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CompanionConfig::new(&format!(
        "sqlite://{}",
        dir.path().join("audit.db").display()
    ));
    config.policy = Some(workspace_root().join("envoy/policies/agentvoicebox.yaml"));
    config.env = dev_env_pairs();
    let server = CompanionServer::start(&config).unwrap();
    let events: Vec<Value> = (0..3)
        .map(|i| {
            json!({"id": format!("p{i}"), "time": "2026-01-01T00:00:00Z", "kind": "authz.denied",
                   "outcome": "deny", "subject": "mallory"})
        })
        .collect();
    assert_eq!(server.post_events(&events).unwrap().status, 200);
    (server, dir)
}

#[test]
fn audit_logs_need_an_operator_token_even_without_envoy() {
    let (server, _dir) = start_with_shipped_policy();
    let anonymous = server.get("/api/v1/audit/logs", None).unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert_eq!(anonymous.json().unwrap()["error"], "unauthorized");
    let developer = token("dev-1", &["DEVELOPER"], "acme");
    assert_eq!(
        server
            .get("/api/v1/audit/logs", Some(&developer))
            .unwrap()
            .status,
        403
    );
    let forged = format!("{}x", token("op-1", &["OPERATOR"], "acme"));
    assert_eq!(
        server
            .get("/api/v1/audit/logs", Some(&forged))
            .unwrap()
            .status,
        401
    );
    let operator = token("op-1", &["OPERATOR"], "acme");
    let listed = server.get("/api/v1/audit/logs", Some(&operator)).unwrap();
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json().unwrap()["items"].as_array().unwrap().len(), 3);
    let detail = server
        .get("/api/v1/audit/logs/p1", Some(&operator))
        .unwrap();
    assert_eq!(detail.status, 200);
}

#[test]
fn export_and_purge_need_an_admin() {
    let (server, _dir) = start_with_shipped_policy();
    let operator = token("op-1", &["OPERATOR"], "acme");
    let export = "/api/v1/audit/logs/export?format=csv";
    assert_eq!(server.get(export, Some(&operator)).unwrap().status, 403);
    let admin = token("admin-1", &["ADMIN"], "acme");
    assert_eq!(server.get(export, Some(&admin)).unwrap().status, 200);
    let purge = |bearer: &str| {
        RawRequest::post(
            "/api/v1/audit/purge",
            json!({"older_than_days": 1, "dry_run": false}).to_string(),
        )
        .header("content-type", "application/json")
        .bearer(bearer)
        .send(server.port())
        .unwrap()
    };
    assert_eq!(purge(&operator).status, 403);
    let purged = purge(&admin);
    assert_eq!(purged.status, 200, "{}", purged.text());
    let answer = purged.json().unwrap();
    assert_eq!(answer["purged"], 3);
    // The record names who asked and under which rule and policy revision.
    let id = answer["record_id"].as_str().unwrap();
    let record = server
        .get(&format!("/api/v1/audit/logs/{id}"), Some(&operator))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(record["kind"], "audit.purged");
    assert_eq!(record["subject"], "admin-1");
    assert_eq!(record["tenant"], "acme");
    assert_eq!(record["rule"], "audit.purge");
    assert!(record["policy_revision"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    assert!(record["roles"]
        .as_array()
        .unwrap()
        .contains(&json!("ADMIN")));
}

#[test]
fn path_tricks_and_unknown_api_routes_are_refused() {
    let (server, _dir) = start_with_shipped_policy();
    let admin = token("admin-1", &["ADMIN"], "acme");
    for target in [
        "/api/v1/audit/logs/../purge",
        "/api/v1/audit//logs",
        "/api/v1/audit/logs%2Fexport",
        "/api/v1/unknown",
    ] {
        let response = RawRequest::get(target)
            .bearer(&admin)
            .send(server.port())
            .unwrap();
        assert!(
            matches!(response.status, 400 | 401 | 403 | 404),
            "{target}: {}",
            response.status
        );
        assert_ne!(response.status, 200, "{target}");
    }
    // Two Authorization headers are never resolved to one of them.
    let operator = token("op-1", &["OPERATOR"], "acme");
    let doubled = RawRequest::get("/api/v1/audit/logs")
        .bearer(&operator)
        .bearer(&operator)
        .send(server.port())
        .unwrap();
    assert_eq!(doubled.status, 401);
    // Health and ingest stay outside the policy.
    assert_eq!(server.get("/healthz", None).unwrap().status, 200);
}
