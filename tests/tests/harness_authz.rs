//! Authorization (issue 2) on the real `dist/avb_edge.wasm`, driven by the
//! wasmtime proxy-wasm host as Envoy drives it: configuration refusal, the
//! allow path and the headers the upstream gets, 400/401/403 replies,
//! counters, dry run, identity from jwt_authn metadata, and no trap on
//! hostile input. Run `make plugin` first.

#[path = "support/harness.rs"]
mod harness;

use avb_tests::host::{encode_property_map, Action, Host, HttpRequest};
use harness::{
    bearer_identity, builder, claims, one, reply, reply_json, sign, token, values, NOW_SECS,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const JWT_AUTHN_NS: &str = "envoy.filters.http.jwt_authn";

fn rules() -> Value {
    json!([
        {"name": "audit.logs.list", "methods": ["GET"], "path": "/api/v1/audit/logs", "any_of": ["OPERATOR"]},
        {"name": "stt.config.get", "methods": ["GET"], "path": "/api/v1/stt/config", "any_of": ["ADMIN", "DEVELOPER"]},
        {"name": "llm.test", "methods": ["POST"], "path": "/api/v1/llm/test", "any_of": ["DEVELOPER"], "mode": "dry_run"},
        {"name": "health", "methods": ["GET"], "path": "/healthz", "public": true}
    ])
}

fn policy() -> Value {
    json!({
        "mode": "enforce",
        "unmatched": "deny",
        "identity": bearer_identity(),
        "role_inherits": {"ADMIN": ["OPERATOR", "DEVELOPER"]},
        "rules": rules()
    })
}

fn host_for(policy: &Value, workers: usize) -> Host {
    builder(policy).workers(workers).build().unwrap()
}

fn host() -> Host {
    host_for(&policy(), 1)
}

/// Sends one header-only request on `worker`.
fn send(host: &Host, worker: usize, headers: &[(&str, &str)]) -> (HttpRequest, Action) {
    let request = host.request(worker);
    let action = request.headers(headers, true).unwrap();
    (request, action)
}

fn get(path: &str, authorization: Option<&str>) -> Vec<(String, String)> {
    let mut headers = vec![
        (":method".to_owned(), "GET".to_owned()),
        (":path".to_owned(), path.to_owned()),
        (":authority".to_owned(), "api.example".to_owned()),
        (":scheme".to_owned(), "https".to_owned()),
    ];
    if let Some(value) = authorization {
        headers.push(("authorization".to_owned(), value.to_owned()));
    }
    headers
}

fn refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn metric(host: &Host, name: &str) -> i64 {
    host.metric(name)
        .unwrap_or_else(|| panic!("metric {name} is not defined: {:?}", host.metrics()))
}

fn build_error(policy: &Value, with_env: bool) -> String {
    let builder = if with_env {
        builder(policy)
    } else {
        avb_tests::host::HostBuilder::new(harness::wasm())
            .configuration(policy.to_string().into_bytes())
            .start_time(harness::now())
    };
    match builder.build() {
        Ok(_) => panic!("the filter accepted a policy it must refuse: {policy}"),
        Err(error) => format!("{error:#}"),
    }
}

#[test]
fn policy_with_a_duplicate_rule_name_is_refused_naming_the_rule() {
    let mut policy = policy();
    policy["rules"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "health", "methods": ["GET"], "path": "/other", "public": true}));
    let error = build_error(&policy, true);
    assert!(error.contains("proxy_on_configure rejected"), "{error}");
    assert!(error.contains("policy refused"), "{error}");
    assert!(error.contains("`health` is used twice"), "{error}");
}

#[test]
fn policy_with_an_unknown_field_is_refused_naming_the_field() {
    let mut policy = policy();
    policy["rules"][0]["any_off"] = json!(["OPERATOR"]);
    let error = build_error(&policy, true);
    assert!(error.contains("policy refused"), "{error}");
    assert!(error.contains("any_off"), "{error}");
}

#[test]
fn policy_whose_key_secret_env_is_missing_is_refused_naming_the_variable() {
    let error = build_error(&policy(), false);
    assert!(error.contains("policy refused"), "{error}");
    assert!(error.contains(harness::HS_KEY_ENV), "{error}");
}

#[test]
fn policy_that_is_not_json_or_is_empty_is_refused() {
    for config in [&b""[..], b"{", b"rules: []", b"null"] {
        let result = avb_tests::host::HostBuilder::new(harness::wasm())
            .configuration(config.to_vec())
            .build();
        let error = format!("{:#}", result.expect_err("must be refused"));
        assert!(error.contains("policy refused"), "{error}");
    }
}

#[test]
fn allowed_request_reaches_upstream_with_identity_headers_and_no_client_avb_headers() {
    let host = host();
    let token = token("alice", &["ADMIN"], Some("tenant-7"));
    let mut headers = get("/api/v1/audit/logs?page=2", Some(&bearer(&token)));
    for (name, value) in [
        ("x-avb-subject", "mallory"),
        ("x-avb-roles", "PLATFORM_ADMIN"),
        ("X-Avb-Tenant", "other"),
        ("x-avb-decision-id", "forged"),
        ("x-avb-anything", "forged"),
        ("x-request-id", "req-1"),
    ] {
        headers.push((name.to_owned(), value.to_owned()));
    }
    let (request, action) = send(&host, 0, &refs(&headers));
    assert_eq!(action, Action::Continue);
    assert!(request.forwarded());
    assert!(request.local_reply().is_none());
    let upstream = request.upstream_headers();
    assert_eq!(one(&upstream, "x-avb-subject"), "alice");
    let roles: BTreeSet<String> = one(&upstream, "x-avb-roles")
        .split(',')
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = ["ADMIN", "DEVELOPER", "OPERATOR"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(roles, expected, "effective roles, inheritance applied");
    assert_eq!(one(&upstream, "x-avb-tenant"), "tenant-7");
    assert_eq!(one(&upstream, "x-avb-rule"), "audit.logs.list");
    let id = one(&upstream, "x-avb-decision-id");
    assert_ne!(id, "forged");
    assert!(id.len() >= 16, "{id}");
    assert!(
        values(&upstream, "x-avb-anything").is_empty(),
        "{upstream:?}"
    );
    // The request itself is untouched otherwise.
    assert_eq!(one(&upstream, ":path"), "/api/v1/audit/logs?page=2");
    assert_eq!(one(&upstream, "authorization"), bearer(&token));
    assert_eq!(one(&upstream, "x-request-id"), "req-1");
    request.done().unwrap();
    assert_eq!(metric(&host, "avb.allowed"), 1);
}

#[test]
fn public_rule_lets_an_anonymous_request_through_without_identity_headers() {
    let host = host();
    let mut headers = get("/healthz", None);
    headers.push(("x-avb-subject".to_owned(), "mallory".to_owned()));
    let (request, action) = send(&host, 0, &refs(&headers));
    assert_eq!(action, Action::Continue);
    let upstream = request.upstream_headers();
    assert!(
        values(&upstream, "x-avb-subject").is_empty(),
        "{upstream:?}"
    );
    assert_eq!(one(&upstream, "x-avb-rule"), "health");
    one(&upstream, "x-avb-decision-id");
}

#[test]
fn request_without_token_gets_401_with_a_bare_bearer_challenge() {
    let host = host();
    let mut headers = get("/api/v1/audit/logs", None);
    headers.push(("x-avb-subject".to_owned(), "mallory".to_owned()));
    let (request, action) = send(&host, 0, &refs(&headers));
    assert_eq!(action, Action::Pause);
    assert!(!request.forwarded());
    let reply = reply(&request);
    assert_eq!(reply.status, 401);
    assert_eq!(
        one(&reply.headers, "www-authenticate"),
        r#"Bearer realm="avb""#
    );
    let body = reply_json(&reply);
    assert_eq!(body["error"], "unauthenticated");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert_eq!(metric(&host, "avb.unauthenticated"), 1);
    assert_eq!(metric(&host, "avb.allowed"), 0);
    assert_eq!(metric(&host, "avb.rule.audit.logs.list.unauthenticated"), 1);
    assert_eq!(metric(&host, "avb.rule.audit.logs.list.denied"), 0);
}

#[test]
fn bad_expired_or_foreign_tokens_get_401_with_invalid_token_challenge() {
    let host = host();
    let good = token("alice", &["OPERATOR"], None);
    let mut expired = claims("alice", &["OPERATOR"], None);
    expired["exp"] = json!(NOW_SECS - 3600);
    let mut wrong_audience = claims("alice", &["OPERATOR"], None);
    wrong_audience["aud"] = json!("someone-else");
    let mut wrong_issuer = claims("alice", &["OPERATOR"], None);
    wrong_issuer["iss"] = json!("https://evil.example");
    let foreign_key = avb_edge::policy::identity::sign_hs(
        avb_edge::policy::identity::HmacAlgorithm::Hs256,
        b"some-other-key-that-is-at-least-32-bytes-long",
        Some(harness::KID),
        &claims("alice", &["OPERATOR"], None).to_string(),
    );
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[1] = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            claims("alice", &["ADMIN"], None).to_string(),
        );
        parts.join(".")
    };
    for presented in [
        "Bearer not-a-jwt".to_owned(),
        bearer(&sign(&expired)),
        bearer(&sign(&wrong_audience)),
        bearer(&sign(&wrong_issuer)),
        bearer(&foreign_key),
        bearer(&tampered),
        format!("Basic {good}"),
        "Bearer".to_owned(),
    ] {
        let (request, action) = send(
            &host,
            0,
            &refs(&get("/api/v1/audit/logs", Some(&presented))),
        );
        assert_eq!(action, Action::Pause, "{presented}");
        assert!(!request.forwarded(), "{presented}");
        let reply = reply(&request);
        assert_eq!(reply.status, 401, "{presented}");
        assert_eq!(
            one(&reply.headers, "www-authenticate"),
            r#"Bearer realm="avb", error="invalid_token""#,
            "{presented}"
        );
        assert_eq!(reply_json(&reply)["error"], "unauthenticated");
        // The reply never echoes the credential.
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        let credential = presented.split_once(' ').map_or("", |(_, c)| c);
        assert!(!text.contains(&good), "{text}");
        assert!(
            credential.is_empty() || !text.contains(credential),
            "{text}"
        );
    }
    assert_eq!(metric(&host, "avb.unauthenticated"), 8);
}

#[test]
fn two_authorization_headers_get_401() {
    let host = host();
    let good = bearer(&token("alice", &["OPERATOR"], None));
    let mut headers = get("/api/v1/audit/logs", Some(&good));
    headers.push(("authorization".to_owned(), good.clone()));
    let (request, _) = send(&host, 0, &refs(&headers));
    let reply = reply(&request);
    assert_eq!(reply.status, 401);
    assert!(!request.forwarded());
}

#[test]
fn valid_token_without_the_role_gets_403_naming_the_rule() {
    let host = host();
    let token = token("bob", &["DEVELOPER"], Some("tenant-1"));
    let (request, action) = send(
        &host,
        0,
        &refs(&get("/api/v1/audit/logs", Some(&bearer(&token)))),
    );
    assert_eq!(action, Action::Pause);
    assert!(!request.forwarded());
    let reply = reply(&request);
    assert_eq!(reply.status, 403);
    assert!(values(&reply.headers, "www-authenticate").is_empty());
    let body = reply_json(&reply);
    assert_eq!(body["error"], "permission_denied");
    assert_eq!(body["rule"], "audit.logs.list");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert_eq!(metric(&host, "avb.denied"), 1);
    assert_eq!(metric(&host, "avb.rule.audit.logs.list.denied"), 1);
}

#[test]
fn unmatched_request_gets_403_without_a_rule() {
    let host = host();
    let token = token("alice", &["ADMIN"], None);
    let (request, _) = send(
        &host,
        0,
        &refs(&get("/api/v1/unknown", Some(&bearer(&token)))),
    );
    let reply = reply(&request);
    assert_eq!(reply.status, 403);
    let body = reply_json(&reply);
    assert_eq!(body["error"], "permission_denied");
    assert!(body.get("rule").is_none(), "{body}");
}

#[test]
fn non_canonical_paths_get_400_before_any_rule() {
    let host = host();
    let token = bearer(&token("alice", &["ADMIN"], None));
    let paths = [
        "/api/v1/audit/../audit/logs",
        "/api/v1/audit/./logs",
        "/api/v1/audit/%2e%2e/audit/logs",
        "/api/v1/audit/%2E/logs",
        "/api//v1/audit/logs",
        "//api/v1/audit/logs",
        "/api/v1/audit%2Flogs",
        "/api/v1/audit%2flogs",
        "/api/v1/audit%5Clogs",
        "/api/v1/audit\\logs",
        "/api/v1/audit/logs;x=1",
        "/api/v1/audit/logs/..;/logs",
        "/api/v1/audit/logs#frag",
        "/api/v1/audit/%6Cogs",
        "/api/v1/audit/%252e%252e/logs",
        "/api/v1/audit/logs%zz",
        "/api/v1/audit/logs%",
        "/api/v1/audit/logs\u{1}",
        "api/v1/audit/logs",
        "*",
        "",
    ];
    for path in paths {
        let (request, action) = send(&host, 0, &refs(&get(path, Some(&token))));
        assert_eq!(action, Action::Pause, "{path:?}");
        assert!(!request.forwarded(), "{path:?}");
        let reply = reply(&request);
        assert_eq!(reply.status, 400, "{path:?}");
        let body = reply_json(&reply);
        assert_eq!(body["error"], "bad_request", "{path:?}");
        assert!(body.get("rule").is_none(), "{body}");
    }
    assert_eq!(metric(&host, "avb.rejected"), paths.len() as i64);
    assert_eq!(metric(&host, "avb.allowed"), 0);
}

#[test]
fn missing_path_or_lower_case_method_gets_400() {
    let host = host();
    let token = bearer(&token("alice", &["ADMIN"], None));
    let no_path = [
        (":method", "GET"),
        (":authority", "api.example"),
        ("authorization", token.as_str()),
    ];
    let lower = [
        (":method", "get"),
        (":path", "/api/v1/audit/logs"),
        (":authority", "api.example"),
        ("authorization", token.as_str()),
    ];
    for headers in [&no_path[..], &lower[..]] {
        let (request, _) = send(&host, 0, headers);
        let reply = reply(&request);
        assert_eq!(reply.status, 400, "{headers:?}");
        assert_eq!(reply_json(&reply)["error"], "bad_request");
        assert!(!request.forwarded());
    }
}

#[test]
fn decision_ids_are_unique_across_two_workers() {
    let host = host_for(&policy(), 2);
    let token = bearer(&token("alice", &["OPERATOR"], None));
    let mut seen = BTreeSet::new();
    for round in 0..50 {
        let worker = round % 2;
        let (allowed, _) = send(
            &host,
            worker,
            &refs(&get("/api/v1/audit/logs", Some(&token))),
        );
        assert!(seen.insert(one(&allowed.upstream_headers(), "x-avb-decision-id")));
        let (denied, _) = send(&host, worker, &refs(&get("/api/v1/audit/logs", None)));
        assert!(seen.insert(one(&reply(&denied).headers, "x-avb-decision-id")));
        allowed.done().unwrap();
        denied.done().unwrap();
    }
    assert_eq!(seen.len(), 100);
}

#[test]
fn counters_are_global_across_workers_and_per_rule() {
    let host = host_for(&policy(), 2);
    let operator = bearer(&token("olga", &["OPERATOR"], None));
    let developer = bearer(&token("dev", &["DEVELOPER"], None));
    send(&host, 0, &refs(&get("/api/v1/audit/logs", Some(&operator))));
    send(&host, 1, &refs(&get("/api/v1/audit/logs", Some(&operator))));
    send(
        &host,
        1,
        &refs(&get("/api/v1/stt/config", Some(&developer))),
    );
    send(
        &host,
        0,
        &refs(&get("/api/v1/audit/logs", Some(&developer))),
    );
    send(&host, 1, &refs(&get("/api/v1/stt/config", Some(&operator))));
    send(&host, 0, &refs(&get("/api/v1/stt/config", None)));
    send(
        &host,
        1,
        &refs(&get("/api//v1/stt/config", Some(&operator))),
    );
    send(&host, 0, &refs(&get("/healthz", None)));
    assert_eq!(metric(&host, "avb.allowed"), 4);
    assert_eq!(metric(&host, "avb.denied"), 2);
    assert_eq!(metric(&host, "avb.unauthenticated"), 1);
    assert_eq!(metric(&host, "avb.rejected"), 1);
    assert_eq!(metric(&host, "avb.dry_run_denied"), 0);
    assert_eq!(metric(&host, "avb.rule.audit.logs.list.allowed"), 2);
    assert_eq!(metric(&host, "avb.rule.audit.logs.list.denied"), 1);
    assert_eq!(metric(&host, "avb.rule.stt.config.get.allowed"), 1);
    assert_eq!(metric(&host, "avb.rule.stt.config.get.denied"), 1);
    assert_eq!(metric(&host, "avb.rule.stt.config.get.unauthenticated"), 1);
    assert_eq!(metric(&host, "avb.rule.audit.logs.list.unauthenticated"), 0);
    assert_eq!(metric(&host, "avb.rule.health.allowed"), 1);
    assert_eq!(metric(&host, "avb.rule.llm.test.denied"), 0);
    assert_eq!(metric(&host, "avb.rule.llm.test.dry_run_denied"), 0);
}

#[test]
fn policy_level_dry_run_lets_denials_through_and_counts_them() {
    let mut policy = policy();
    policy["mode"] = json!("dry_run");
    let host = host_for(&policy, 1);
    let developer = bearer(&token("dev", &["DEVELOPER"], None));
    let mut headers = get("/api/v1/audit/logs", Some(&developer));
    headers.push(("x-avb-subject".to_owned(), "mallory".to_owned()));
    let (forbidden, action) = send(&host, 0, &refs(&headers));
    assert_eq!(action, Action::Continue);
    assert!(forbidden.forwarded() && forbidden.local_reply().is_none());
    let upstream = forbidden.upstream_headers();
    assert_eq!(one(&upstream, "x-avb-subject"), "dev");
    assert_eq!(one(&upstream, "x-avb-rule"), "audit.logs.list");
    one(&upstream, "x-avb-decision-id");

    let (anonymous, action) = send(&host, 0, &refs(&get("/api/v1/audit/logs", None)));
    assert_eq!(action, Action::Continue);
    assert!(anonymous.forwarded());
    assert!(values(&anonymous.upstream_headers(), "x-avb-subject").is_empty());

    // A 400 is never let through, dry run or not.
    let (bad, action) = send(
        &host,
        0,
        &refs(&get("/api/v1/audit/../logs", Some(&developer))),
    );
    assert_eq!(action, Action::Pause);
    assert_eq!(reply(&bad).status, 400);

    assert_eq!(metric(&host, "avb.dry_run_denied"), 2);
    assert_eq!(metric(&host, "avb.denied"), 0);
    assert_eq!(metric(&host, "avb.unauthenticated"), 0);
    assert_eq!(metric(&host, "avb.rejected"), 1);
    assert_eq!(metric(&host, "avb.rule.audit.logs.list.dry_run_denied"), 2);
    assert_eq!(metric(&host, "avb.rule.audit.logs.list.denied"), 0);
    assert_eq!(metric(&host, "avb.rule.audit.logs.list.allowed"), 0);
}

#[test]
fn rule_level_dry_run_lets_only_that_rule_through() {
    let host = host();
    let operator = bearer(&token("olga", &["OPERATOR"], None));
    let post = [
        (":method", "POST"),
        (":path", "/api/v1/llm/test"),
        (":authority", "api.example"),
        ("authorization", operator.as_str()),
    ];
    let (dry, action) = send(&host, 0, &post);
    assert_eq!(action, Action::Continue);
    assert!(dry.forwarded());
    assert_eq!(one(&dry.upstream_headers(), "x-avb-rule"), "llm.test");
    // Another rule of the same policy is still enforced.
    let (enforced, action) = send(&host, 0, &refs(&get("/api/v1/stt/config", Some(&operator))));
    assert_eq!(action, Action::Pause);
    assert_eq!(reply(&enforced).status, 403);
    assert_eq!(metric(&host, "avb.dry_run_denied"), 1);
    assert_eq!(metric(&host, "avb.denied"), 1);
    assert_eq!(metric(&host, "avb.rule.llm.test.dry_run_denied"), 1);
    assert_eq!(metric(&host, "avb.rule.llm.test.denied"), 0);
    assert_eq!(metric(&host, "avb.rule.stt.config.get.denied"), 1);
}

fn jwt_authn_policy() -> Value {
    json!({
        "identity": {
            "source": "jwt_authn_metadata",
            "metadata_key": "verified",
            "roles_claim": "realm_access.roles",
            "tenant_claim": "tenant_id"
        },
        "role_inherits": {"ADMIN": ["OPERATOR", "DEVELOPER"]},
        "rules": rules()
    })
}

/// A jwt_authn payload as Envoy hands it to `get_property`: a struct of
/// proxy-wasm pairs, the roles list with each element in the key slot.
fn jwt_authn_payload(subject: &str, roles: &[&str], tenant: &str) -> Vec<u8> {
    let role_pairs: Vec<(&str, &[u8])> = roles.iter().map(|r| (*r, &b""[..])).collect();
    let roles = encode_property_map(&role_pairs);
    let realm_access = encode_property_map(&[("roles", &roles)]);
    encode_property_map(&[
        ("sub", subject.as_bytes()),
        ("iss", b"https://id.example"),
        ("tenant_id", tenant.as_bytes()),
        ("realm_access", &realm_access),
    ])
}

#[test]
fn jwt_authn_metadata_identity_grants_the_roles_of_the_verified_payload() {
    let host = builder(&jwt_authn_policy()).build().unwrap();
    let payload = jwt_authn_payload("carol", &["ADMIN"], "tenant-3");
    let request = host.request(0);
    request.set_property(
        &["metadata", "filter_metadata", JWT_AUTHN_NS, "verified"],
        payload.clone(),
    );
    assert_eq!(
        request
            .headers(&refs(&get("/api/v1/audit/logs", None)), true)
            .unwrap(),
        Action::Continue
    );
    let upstream = request.upstream_headers();
    assert_eq!(one(&upstream, "x-avb-subject"), "carol");
    assert_eq!(one(&upstream, "x-avb-tenant"), "tenant-3");
    assert!(one(&upstream, "x-avb-roles")
        .split(',')
        .any(|r| r == "OPERATOR"));

    // The same payload without the needed role is a 403.
    let request = host.request(0);
    request.set_property(
        &["metadata", "filter_metadata", JWT_AUTHN_NS, "verified"],
        jwt_authn_payload("dave", &["DEVELOPER"], "tenant-3"),
    );
    request
        .headers(&refs(&get("/api/v1/audit/logs", None)), true)
        .unwrap();
    assert_eq!(reply(&request).status, 403);
}

#[test]
fn jwt_authn_metadata_identity_ignores_forged_payload_headers() {
    let host = builder(&jwt_authn_policy()).build().unwrap();
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        json!({"sub": "mallory", "realm_access": {"roles": ["ADMIN"]}}).to_string(),
    );
    let mut headers = get(
        "/api/v1/audit/logs",
        Some(&bearer(&token("mallory", &["ADMIN"], None))),
    );
    headers.push(("x-jwt-payload".to_owned(), forged.clone()));
    headers.push(("x-jwt-claim-roles".to_owned(), "ADMIN".to_owned()));
    let (request, action) = send(&host, 0, &refs(&headers));
    assert_eq!(action, Action::Pause);
    assert!(!request.forwarded());
    let reply = reply(&request);
    assert_eq!(reply.status, 401);
    assert_eq!(reply_json(&reply)["error"], "unauthenticated");
    // Metadata under another key is not the configured payload either.
    let request = host.request(0);
    request.set_property(
        &["metadata", "filter_metadata", JWT_AUTHN_NS, "other"],
        jwt_authn_payload("mallory", &["ADMIN"], "t"),
    );
    request
        .headers(&refs(&get("/api/v1/audit/logs", None)), true)
        .unwrap();
    assert_eq!(harness::reply(&request).status, 401);
}

#[test]
fn malformed_jwt_authn_metadata_is_401_and_never_traps() {
    let host = builder(&jwt_authn_policy()).build().unwrap();
    let truncated = {
        let mut bytes = jwt_authn_payload("x", &["ADMIN"], "t");
        bytes.truncate(bytes.len() / 2);
        bytes
    };
    let huge_count = {
        let mut bytes = u32::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        bytes
    };
    // A deeply nested struct: every level a one-pair map.
    let mut nested = b"leaf".to_vec();
    for _ in 0..200 {
        nested = encode_property_map(&[("n", &nested)]);
    }
    for payload in [
        Vec::new(),
        vec![0xff, 0xfe, 0x00],
        truncated,
        huge_count,
        nested,
        encode_property_map(&[("sub", &[0xff, 0xff][..])]),
        encode_property_map(&[("realm_access", b"ADMIN")]),
    ] {
        let request = host.request(0);
        request.set_property(
            &["metadata", "filter_metadata", JWT_AUTHN_NS, "verified"],
            payload.clone(),
        );
        let action = request.headers(&refs(&get("/api/v1/audit/logs", None)), true);
        assert!(action.is_ok(), "{action:?}");
        assert!(!request.forwarded(), "{payload:?}");
        assert_eq!(reply(&request).status, 401, "{payload:?}");
        request.done().unwrap();
    }
    assert_eq!(host.vm_failure(0), None);
}

#[test]
fn hostile_inputs_never_trap_the_vm() {
    let host = host_for(&policy(), 1);
    let long_path = format!("/{}", "a/".repeat(20_000));
    let long_value = "x".repeat(200_000);
    let many_dots = format!("Bearer {}", ".".repeat(10_000));
    let huge_segments = format!(
        "Bearer {}.{}.{}",
        "A".repeat(50_000),
        "B".repeat(50_000),
        "C".repeat(50_000)
    );
    let none_token = format!(
        "Bearer {}.{}.",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            r#"{"alg":"none"}"#
        ),
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            claims("x", &["ADMIN"], None).to_string()
        )
    );
    let deep_claims = {
        let mut value = json!("ADMIN");
        for _ in 0..500 {
            value = json!({"a": value});
        }
        let mut claims = claims("x", &["ADMIN"], None);
        claims["deep"] = value;
        bearer(&sign(&claims))
    };
    let weird_roles = {
        let mut claims = claims("x\r\nx-injected: 1", &[], None);
        claims["realm_access"] = json!({"roles": [1, null, {"a": 2}, "OPERATOR\r\nx: y", "ADMIN"]});
        bearer(&sign(&claims))
    };
    let string_roles = {
        let mut claims = claims("x", &[], Some("t\u{0}"));
        claims["realm_access"] = json!({"roles": "OPERATOR   ADMIN"});
        bearer(&sign(&claims))
    };
    let numeric_exp = {
        let mut claims = claims("x", &["ADMIN"], None);
        claims["exp"] = json!(1e308);
        claims["nbf"] = json!(-1);
        claims["iat"] = json!("yesterday");
        bearer(&sign(&claims))
    };
    let duplicate_claims = bearer(&harness::sign_hs_raw(
        r#"{"iss":"https://id.harness.example","aud":"avb-api","sub":"a","sub":"b","exp":9999999999}"#,
    ));
    let mut cases: Vec<Vec<(String, String)>> = vec![
        get(&long_path, None),
        get("/api/v1/audit/logs", Some(&long_value)),
        get("/api/v1/audit/logs", Some(&many_dots)),
        get("/api/v1/audit/logs", Some(&huge_segments)),
        get("/api/v1/audit/logs", Some(&none_token)),
        get("/api/v1/audit/logs", Some(&deep_claims)),
        get("/api/v1/audit/logs", Some(&weird_roles)),
        get("/api/v1/audit/logs", Some(&string_roles)),
        get("/api/v1/audit/logs", Some(&numeric_exp)),
        get("/api/v1/audit/logs", Some(&duplicate_claims)),
        get(
            "/api/v1/audit/logs",
            Some("Bearer \u{1F600}.\u{1F600}.\u{1F600}"),
        ),
        get("/api/v1/ä/ß/\u{1F600}", None),
        get("/%00", None),
        get("/%", None),
        get("/%%%%%", None),
        get("/api/v1/audit/logs?\u{0}", None),
        vec![],
        vec![(":method".to_owned(), "GET".to_owned())],
        vec![(":path".to_owned(), "/healthz".to_owned())],
        vec![
            (":method".to_owned(), long_value.clone()),
            (":path".to_owned(), "/healthz".to_owned()),
        ],
        vec![
            (":method".to_owned(), "".to_owned()),
            (":path".to_owned(), "/healthz".to_owned()),
        ],
    ];
    let mut many_headers = get("/api/v1/audit/logs", None);
    for i in 0..2_000 {
        many_headers.push((format!("x-avb-h{i}"), long_value[..100].to_owned()));
    }
    cases.push(many_headers);
    for (index, headers) in cases.iter().enumerate() {
        let request = host.request(0);
        let outcome = request.headers(&refs(headers), true);
        assert!(outcome.is_ok(), "case {index} trapped: {outcome:?}");
        if let Some(sent) = request.forwarded().then(|| request.upstream_headers()) {
            // Anything let through is a public rule or carries no forged identity.
            assert!(values(&sent, "x-avb-h0").is_empty(), "case {index}");
            assert!(
                sent.iter()
                    .all(|(k, v)| !k.starts_with("x-avb-") || !v.contains('\n')),
                "case {index}: {sent:?}"
            );
        } else {
            let status = reply(&request).status;
            assert!([400, 401, 403].contains(&status), "case {index}: {status}");
        }
        request.done().unwrap();
        assert_eq!(host.vm_failure(0), None, "case {index}");
    }
    // The VM still serves ordinary traffic afterwards.
    let ok = bearer(&token("alice", &["OPERATOR"], None));
    let (request, action) = send(&host, 0, &refs(&get("/api/v1/audit/logs", Some(&ok))));
    assert_eq!(action, Action::Continue);
    assert!(request.forwarded());
}

#[test]
fn refused_reconfiguration_keeps_the_running_policy() {
    let host = host_for(&policy(), 2);
    let mut broken = policy();
    broken["rules"][0]["path"] = json!("/api/v1/{unclosed");
    let error = format!("{:#}", host.reconfigure(broken.to_string()).unwrap_err());
    assert!(error.contains("policy refused"), "{error}");
    assert!(error.contains("unclosed"), "{error}");
    for worker in 0..2 {
        let (request, _) = send(&host, worker, &refs(&get("/api/v1/audit/logs", None)));
        assert_eq!(reply(&request).status, 401, "worker {worker}");
        assert_eq!(host.vm_failure(worker), None);
    }
}

#[test]
fn a_new_policy_applies_to_the_next_requests() {
    let host = host_for(&policy(), 2);
    let developer = bearer(&token("dev", &["DEVELOPER"], None));
    let (before, _) = send(
        &host,
        1,
        &refs(&get("/api/v1/audit/logs", Some(&developer))),
    );
    assert_eq!(reply(&before).status, 403);
    let mut open = policy();
    open["rules"][0]["any_of"] = json!(["DEVELOPER"]);
    host.reconfigure(open.to_string()).unwrap();
    for worker in 0..2 {
        let (after, action) = send(
            &host,
            worker,
            &refs(&get("/api/v1/audit/logs", Some(&developer))),
        );
        assert_eq!(action, Action::Continue, "worker {worker}");
        assert!(after.forwarded());
    }
}
