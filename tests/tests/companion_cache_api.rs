//! `POST /api/v1/tenants/{tenant_id}/cache/invalidate` on the real companion
//! against a real redis-server: exact deletion, dry run, the audit record,
//! tenant binding under the shipped policy, and Redis being absent or down.
//!
//! Run: `cargo test -p avb-tests --test companion_cache_api`.

use avb_tests::http::{RawRequest, Response};
use avb_tests::procs::companion::{CompanionConfig, CompanionServer};
use avb_tests::procs::redis::RedisServer;
use avb_tests::procs::{free_port, workspace_root};
use avb_tests::tokens::dev_token;
use redis::AsyncCommands;
use serde_json::Value;

fn sqlite_config(dir: &tempfile::TempDir) -> CompanionConfig {
    CompanionConfig::new(&format!(
        "sqlite://{}",
        dir.path().join("audit.db").display()
    ))
}

fn invalidate(
    server: &CompanionServer,
    tenant: &str,
    body: &str,
    bearer: Option<&str>,
) -> Response {
    let mut request = RawRequest::post(&format!("/api/v1/tenants/{tenant}/cache/invalidate"), body)
        .header("content-type", "application/json");
    if let Some(token) = bearer {
        request = request.bearer(token);
    }
    request.send(server.port()).unwrap()
}

async fn seed(redis: &RedisServer) {
    let mut conn = redis.connection().await.unwrap();
    for i in 0..250 {
        let _: () = conn
            .set(format!("tenant:acme:session:{i}"), "x")
            .await
            .unwrap();
    }
    for key in [
        "tenant:acme2:session:1",
        "tenant:globex:acme:1",
        "acme:tenant:1",
        "tenant:acme",
    ] {
        let _: () = conn.set(key, "keep").await.unwrap();
    }
}

async fn keys(redis: &RedisServer) -> Vec<String> {
    let mut conn = redis.connection().await.unwrap();
    let mut keys: Vec<String> = conn.keys("*").await.unwrap();
    keys.sort();
    keys
}

fn cache_records(server: &CompanionServer, bearer: Option<&str>) -> Vec<Value> {
    let response = server
        .get("/api/v1/audit/logs?kind=cache.invalidated", bearer)
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    response.json().unwrap()["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_deletes_exactly_the_tenant_and_records_it() {
    let redis = RedisServer::start().unwrap();
    seed(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(&dir);
    config.redis_url = Some(redis.url());
    let server = CompanionServer::start(&config).unwrap();

    let dry = invalidate(&server, "acme", r#"{"dry_run": true}"#, None);
    assert_eq!(dry.status, 200, "{}", dry.text());
    let dry = dry.json().unwrap();
    assert_eq!(dry["matched"], 250);
    assert_eq!(dry["deleted"], 0);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(keys(&redis).await.len(), 254);

    let done = invalidate(&server, "acme", "", None);
    assert_eq!(done.status, 200, "{}", done.text());
    let done = done.json().unwrap();
    assert_eq!(done["tenant"], "acme");
    assert_eq!(done["deleted"], 250);
    assert_eq!(done["dry_run"], false);
    assert_eq!(
        keys(&redis).await,
        vec![
            "acme:tenant:1",
            "tenant:acme",
            "tenant:acme2:session:1",
            "tenant:globex:acme:1"
        ]
    );

    let records = cache_records(&server, None);
    assert_eq!(records.len(), 2);
    // Newest first: the real run, then the dry run.
    assert_eq!(records[0]["tenant"], "acme");
    assert_eq!(records[0]["details"]["deleted"], 250);
    assert_eq!(records[0]["details"]["dry_run"], false);
    assert_eq!(records[1]["details"]["dry_run"], true);
    assert_eq!(records[1]["details"]["matched"], 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tenant_ids_are_refused_before_redis_is_touched() {
    let redis = RedisServer::start().unwrap();
    seed(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(&dir);
    config.redis_url = Some(redis.url());
    let server = CompanionServer::start(&config).unwrap();
    for tenant in ["*", "acme*", "ac%3Fme", "%5Bab%5D", "acme%3A", "a%5Cb"] {
        let response = invalidate(&server, tenant, "", None);
        assert_eq!(response.status, 400, "{tenant}: {}", response.text());
        assert_eq!(response.json().unwrap()["error"], "bad_request");
    }
    assert_eq!(keys(&redis).await.len(), 254);
    assert!(cache_records(&server, None).is_empty());
    let body = invalidate(&server, "acme", r#"{"dry_run": "yes"}"#, None);
    assert_eq!(body.status, 400);
}

#[test]
fn without_redis_the_endpoint_answers_503_and_with_redis_down_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = CompanionServer::start(&sqlite_config(&dir)).unwrap();
    let response = invalidate(&server, "acme", "", None);
    assert_eq!(response.status, 503);
    assert!(response.json().unwrap()["detail"]
        .as_str()
        .unwrap()
        .contains("--redis"));
    drop(server);

    let mut config = sqlite_config(&dir);
    config.redis_url = Some(format!("redis://127.0.0.1:{}", free_port()));
    let server = CompanionServer::start(&config).unwrap();
    let response = invalidate(&server, "acme", "", None);
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(response.text().contains("nothing was deleted"));
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_clears_only_their_own_tenant_and_is_named_in_the_record() {
    let redis = RedisServer::start().unwrap();
    seed(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(&dir);
    config.redis_url = Some(redis.url());
    config.policy = Some(workspace_root().join("envoy/policies/agentvoicebox.yaml"));
    config.env = dev_env_pairs();
    let server = CompanionServer::start(&config).unwrap();

    assert_eq!(invalidate(&server, "acme", "", None).status, 401);
    let other_admin = token("admin-g", &["ADMIN"], "globex");
    assert_eq!(
        invalidate(&server, "acme", "", Some(&other_admin)).status,
        403
    );
    assert_eq!(keys(&redis).await.len(), 254);

    let admin = token("admin-a", &["ADMIN"], "acme");
    let done = invalidate(&server, "acme", "", Some(&admin));
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json().unwrap()["deleted"], 250);

    let operator = token("op-1", &["OPERATOR"], "acme");
    let records = cache_records(&server, Some(&operator));
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["subject"], "admin-a");
    assert_eq!(records[0]["tenant"], "acme");
    assert_eq!(records[0]["rule"], "tenants.cache.invalidate");
    assert_eq!(records[0]["details"]["caller_tenant"], "acme");

    // PLATFORM_ADMIN may clear any tenant's cache.
    let platform = token("root-1", &["PLATFORM_ADMIN"], "platform");
    let cross = invalidate(&server, "acme2", r#"{"dry_run":true}"#, Some(&platform));
    assert_eq!(cross.status, 200, "{}", cross.text());
    assert_eq!(cross.json().unwrap()["matched"], 1);
}
