//! End-to-end: the real Envoy 1.40 with the built `dist/avb_edge.wasm` and
//! the shipped policy (`envoy/policies/agentvoicebox.yaml`), in front of the
//! echo upstream, driven by real HTTP requests (issue 2).
//!
//! Requires `make plugin` (or `AVB_WASM`) and an Envoy (`AVB_ENVOY` or
//! `scripts/envoy.sh`). Each test starts its own Envoy and echo server on
//! free loopback ports.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use avb_tests::echo::{EchoServer, Received};
use avb_tests::http::{H2Request, RawRequest, Response};
use avb_tests::procs::envoy::{dev_env, shipped_policy_json, Envoy, EnvoyConfig};
use avb_tests::procs::wasm_path;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const ISSUER: &str = "https://id.agentvoicebox.example";
const AUDIENCE: &str = "avb-api";
const DEV_KID: &str = "dev-hs-1";
/// Tags every request of a test so its upstream log can be found among
/// concurrent traffic.
const TRACE_HEADER: &str = "x-test-trace";

/// The AgentVoiceBox table of issue 2: rule, methods, path, roles (any of).
const TABLE: &[(&str, &[&str], &str, &[&str])] = &[
    (
        "audit.logs.list",
        &["GET"],
        "/api/v1/audit/logs",
        &["OPERATOR"],
    ),
    (
        "audit.logs.detail",
        &["GET"],
        "/api/v1/audit/logs/evt-42",
        &["OPERATOR"],
    ),
    (
        "audit.logs.export",
        &["GET"],
        "/api/v1/audit/logs/export",
        &["ADMIN"],
    ),
    (
        "audit.statistics",
        &["GET"],
        "/api/v1/audit/statistics",
        &["OPERATOR"],
    ),
    ("audit.purge", &["POST"], "/api/v1/audit/purge", &["ADMIN"]),
    (
        "stt.config.get",
        &["GET"],
        "/api/v1/stt/config",
        &["ADMIN", "DEVELOPER"],
    ),
    (
        "stt.config.update",
        &["PUT", "PATCH"],
        "/api/v1/stt/config",
        &["ADMIN"],
    ),
    (
        "stt.metrics",
        &["GET"],
        "/api/v1/stt/metrics",
        &["OPERATOR"],
    ),
    ("stt.test", &["POST"], "/api/v1/stt/test", &["DEVELOPER"]),
    ("llm.config.get", &["GET"], "/api/v1/llm/config", &["ADMIN"]),
    (
        "llm.config.update",
        &["PUT", "PATCH"],
        "/api/v1/llm/config",
        &["ADMIN"],
    ),
    ("llm.test", &["POST"], "/api/v1/llm/test", &["DEVELOPER"]),
];

const ALL_ROLES: &[&str] = &["ADMIN", "OPERATOR", "DEVELOPER", "VIEWER"];

/// What a role grants under the shipped `role_inherits` (ADMIN: OPERATOR, DEVELOPER).
fn effective_roles(role: &str) -> BTreeSet<&str> {
    let mut roles = BTreeSet::from([role]);
    if role == "ADMIN" {
        roles.extend(["OPERATOR", "DEVELOPER"]);
    }
    roles
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn dev_key() -> Vec<u8> {
    let env = dev_env().expect("envoy/dev.env is readable");
    let encoded = env
        .get("AVB_JWT_HS_KEY")
        .expect("AVB_JWT_HS_KEY in envoy/dev.env");
    URL_SAFE_NO_PAD
        .decode(encoded)
        .expect("AVB_JWT_HS_KEY is base64url (a JWK `k`)")
}

/// An HS256 JWT signed with `key`. Minted here with hmac + base64 so the
/// test does not trust the engine it is testing.
fn sign_hs256(key: &[u8], header: &Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length works for HMAC");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

fn claims(subject: &str, roles: &[&str], tenant: &str) -> Value {
    let issued = now();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "tenant_id": tenant,
        "iat": issued,
        "exp": issued + 600,
        "realm_access": {"roles": roles},
    })
}

fn dev_header() -> Value {
    json!({"alg": "HS256", "typ": "JWT", "kid": DEV_KID})
}

/// A valid token for the local dev key.
fn token(subject: &str, roles: &[&str], tenant: &str) -> String {
    sign_hs256(&dev_key(), &dev_header(), &claims(subject, roles, tenant))
}

/// Envoy with the shipped policy and the built filter in front of an echo.
struct Stack {
    echo: EchoServer,
    envoy: Envoy,
    port: u16,
}

impl Stack {
    fn shipped() -> Self {
        Self::with(|config| config)
    }

    fn with(adjust: impl FnOnce(EnvoyConfig) -> EnvoyConfig) -> Self {
        let echo = EchoServer::start().expect("echo upstream starts");
        let config = adjust(EnvoyConfig::shipped(echo.port()).expect("dist/avb_edge.wasm built"));
        let envoy = config
            .start()
            .expect("envoy starts with the shipped policy");
        let port = envoy.listener_port().expect("listener port");
        Self { echo, envoy, port }
    }

    /// Sends `request` tagged with a fresh trace id; returns the response and
    /// what the upstream received for it.
    fn send(&self, request: RawRequest) -> (Response, Vec<Received>) {
        let trace = trace_id();
        let response = request
            .header(TRACE_HEADER, &trace)
            .send(self.port)
            .expect("envoy answers");
        (response, self.upstream_saw(&trace))
    }

    fn upstream_saw(&self, trace: &str) -> Vec<Received> {
        self.echo
            .requests()
            .into_iter()
            .filter(|request| request.header(TRACE_HEADER) == Some(trace))
            .collect()
    }
}

fn trace_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Every local reply of the filter: JSON with a decision id that matches the
/// `x-avb-decision-id` header.
fn assert_local_reply(response: &Response, status: u16, error: &str, context: &str) -> Value {
    assert_eq!(response.status, status, "{context}: {}", response.text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/json")),
        "{context}: content-type {:?}",
        response.header("content-type")
    );
    let decision_header = response
        .header("x-avb-decision-id")
        .unwrap_or_else(|| panic!("{context}: no x-avb-decision-id"))
        .to_owned();
    assert!(!decision_header.is_empty(), "{context}: empty decision id");
    let body = response.json().expect("local reply body is JSON");
    assert_eq!(body["error"], error, "{context}: {body}");
    assert!(body["detail"].is_string(), "{context}: no detail in {body}");
    assert_eq!(body["decision_id"], decision_header.as_str(), "{context}");
    body
}

fn header_set(value: Option<&str>) -> BTreeSet<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(|role| role.trim().to_owned())
        .filter(|role| !role.is_empty())
        .collect()
}

#[test]
fn every_table_row_is_allowed_for_its_roles_and_denied_otherwise() {
    let stack = Stack::shipped();
    let mut failures = Vec::new();
    for (rule, methods, path, any_of) in TABLE {
        for method in *methods {
            for role in ALL_ROLES {
                let allowed = effective_roles(role)
                    .iter()
                    .any(|held| any_of.contains(held));
                let request = RawRequest::new(method, path)
                    .bearer(&token("user-1", &[role], "tenant-a"))
                    .body(if *method == "GET" { "" } else { "{}" });
                let (response, upstream) = stack.send(request);
                let context = format!("{method} {path} as {role}");
                if allowed {
                    if response.status != 200 || upstream.len() != 1 {
                        failures.push(format!(
                            "{context}: expected allow, got {} ({}) upstream saw {}",
                            response.status,
                            response.text(),
                            upstream.len()
                        ));
                        continue;
                    }
                    let seen = &upstream[0];
                    assert_eq!(seen.method, *method, "{context}");
                    assert_eq!(seen.path, *path, "{context}");
                    assert_eq!(seen.header("x-avb-rule"), Some(*rule), "{context}");
                    assert_eq!(seen.header("x-avb-subject"), Some("user-1"), "{context}");
                    assert_eq!(seen.header("x-avb-tenant"), Some("tenant-a"), "{context}");
                    let expected_roles: BTreeSet<String> = effective_roles(role)
                        .iter()
                        .map(|r| (*r).to_owned())
                        .collect();
                    assert_eq!(
                        header_set(seen.header("x-avb-roles")),
                        expected_roles,
                        "{context}: effective roles"
                    );
                    assert!(
                        seen.header("x-avb-decision-id")
                            .is_some_and(|id| !id.is_empty()),
                        "{context}: no decision id upstream"
                    );
                } else {
                    if response.status != 403 || !upstream.is_empty() {
                        failures.push(format!(
                            "{context}: expected 403 and nothing upstream, got {} ({}) upstream saw {}",
                            response.status,
                            response.text(),
                            upstream.len()
                        ));
                        continue;
                    }
                    let body = assert_local_reply(&response, 403, "permission_denied", &context);
                    assert_eq!(body["rule"], *rule, "{context}");
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn admin_reaches_every_row_through_inheritance() {
    let stack = Stack::shipped();
    for (rule, methods, path, _) in TABLE {
        for method in *methods {
            let (response, upstream) = stack.send(
                RawRequest::new(method, path)
                    .bearer(&token("admin-1", &["ADMIN"], "tenant-a"))
                    .body(""),
            );
            assert_eq!(response.status, 200, "{method} {path}: {}", response.text());
            assert_eq!(upstream.len(), 1, "{method} {path}");
            assert_eq!(upstream[0].header("x-avb-rule"), Some(*rule));
            assert_eq!(
                header_set(upstream[0].header("x-avb-roles")),
                ["ADMIN", "DEVELOPER", "OPERATOR"]
                    .iter()
                    .map(|r| (*r).to_owned())
                    .collect()
            );
        }
    }
}

#[test]
fn missing_token_gets_401_with_a_bearer_challenge_and_never_reaches_upstream() {
    let stack = Stack::shipped();
    for (_, methods, path, _) in TABLE {
        let (response, upstream) = stack.send(RawRequest::new(methods[0], path).body(""));
        let context = format!("{} {path} without a token", methods[0]);
        assert_local_reply(&response, 401, "unauthenticated", &context);
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer realm=\"avb\""),
            "{context}"
        );
        assert!(upstream.is_empty(), "{context}: upstream saw it");
    }
}

#[test]
fn bad_tokens_get_401_invalid_token_and_never_reach_upstream() {
    let stack = Stack::shipped();
    let key = dev_key();
    let good = claims("user-1", &["ADMIN"], "tenant-a");
    let with = |field: &str, value: Value| {
        let mut claims = good.clone();
        claims[field] = value;
        claims
    };
    let mut tampered = token("user-1", &["VIEWER"], "tenant-a");
    let payload_with_admin = URL_SAFE_NO_PAD.encode(good.to_string());
    let parts: Vec<&str> = tampered.split('.').collect();
    tampered = format!("{}.{}.{}", parts[0], payload_with_admin, parts[2]);
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "not-a-jwt".to_owned()),
        (
            "wrong key",
            sign_hs256(b"some-other-key-some-other-key-32", &dev_header(), &good),
        ),
        ("tampered payload", tampered),
        (
            "expired",
            sign_hs256(&key, &dev_header(), &with("exp", json!(now() - 3600))),
        ),
        (
            "not yet valid",
            sign_hs256(&key, &dev_header(), &with("nbf", json!(now() + 3600))),
        ),
        (
            "wrong issuer",
            sign_hs256(
                &key,
                &dev_header(),
                &with("iss", json!("https://evil.example")),
            ),
        ),
        (
            "wrong audience",
            sign_hs256(&key, &dev_header(), &with("aud", json!("other-api"))),
        ),
        ("no exp", {
            let mut claims = good.clone();
            claims.as_object_mut().expect("object").remove("exp");
            sign_hs256(&key, &dev_header(), &claims)
        }),
        (
            "unknown kid",
            sign_hs256(&key, &json!({"alg": "HS256", "kid": "nope"}), &good),
        ),
        ("alg none", {
            let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": DEV_KID}).to_string());
            let payload = URL_SAFE_NO_PAD.encode(good.to_string());
            format!("{header}.{payload}.")
        }),
    ];
    for (name, bad) in cases {
        let (response, upstream) = stack.send(RawRequest::get("/api/v1/audit/logs").bearer(&bad));
        let context = format!("{name} token");
        assert_local_reply(&response, 401, "unauthenticated", &context);
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"avb\""),
            "{context}: {challenge}"
        );
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{context}: {challenge}"
        );
        assert!(upstream.is_empty(), "{context}: upstream saw it");
    }
}

#[test]
fn two_authorization_headers_are_rejected_with_401() {
    let stack = Stack::shipped();
    let admin = token("admin-1", &["ADMIN"], "tenant-a");
    let (response, upstream) = stack.send(
        RawRequest::get("/api/v1/audit/logs")
            .bearer(&admin)
            .bearer(&admin),
    );
    assert_local_reply(&response, 401, "unauthenticated", "duplicate authorization");
    assert!(upstream.is_empty());
}

#[test]
fn spoofed_x_avb_headers_never_reach_upstream() {
    let stack = Stack::shipped();
    let spoof = |request: RawRequest| {
        request
            .header("x-avb-subject", "attacker")
            .header("X-AVB-Roles", "ADMIN,PLATFORM_ADMIN")
            .header("x-avb-tenant", "tenant-victim")
            .header("x-avb-rule", "health")
            .header("x-avb-decision-id", "forged")
            .header("X-Avb-Webhook", "lago")
            .header("x-avb-anything-else", "1")
    };
    // Allowed request: the filter's own values replace the client's.
    let (response, upstream) = stack.send(spoof(
        RawRequest::get("/api/v1/audit/logs").bearer(&token("op-1", &["OPERATOR"], "tenant-a")),
    ));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.len(), 1);
    let seen = &upstream[0];
    assert_eq!(seen.header_all("x-avb-subject"), vec!["op-1"]);
    assert_eq!(seen.header_all("x-avb-tenant"), vec!["tenant-a"]);
    assert_eq!(seen.header_all("x-avb-rule"), vec!["audit.logs.list"]);
    assert_eq!(seen.header_all("x-avb-roles").len(), 1);
    assert_eq!(
        header_set(seen.header("x-avb-roles")),
        BTreeSet::from(["OPERATOR".to_owned()])
    );
    assert_eq!(seen.header_all("x-avb-decision-id").len(), 1);
    assert_ne!(seen.header("x-avb-decision-id"), Some("forged"));
    assert!(seen.header("x-avb-webhook").is_none());
    assert!(seen.header("x-avb-anything-else").is_none());

    // Public rule (no identity): nothing client-supplied survives either.
    let (response, upstream) = stack.send(spoof(RawRequest::get("/healthz")));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.len(), 1);
    let spoofed: Vec<_> = upstream[0]
        .headers
        .iter()
        .filter(|(name, value)| {
            name.starts_with("x-avb-")
                && [
                    "attacker",
                    "ADMIN,PLATFORM_ADMIN",
                    "tenant-victim",
                    "forged",
                    "lago",
                    "1",
                ]
                .contains(&value.as_str())
        })
        .collect();
    assert!(
        spoofed.is_empty(),
        "client x-avb-* reached upstream: {spoofed:?}"
    );
    assert_eq!(upstream[0].header("x-avb-rule"), Some("health"));
}

#[test]
fn unmatched_paths_and_methods_are_denied_with_403() {
    let stack = Stack::shipped();
    let admin = token("admin-1", &["ADMIN"], "tenant-a");
    for (method, path) in [
        ("GET", "/api/v1/unknown"),
        ("GET", "/"),
        ("DELETE", "/api/v1/audit/logs"),
        // HEAD is not implied by GET.
        ("HEAD", "/api/v1/audit/logs"),
        ("GET", "/api/v1/audit/logs/a/b"),
        // Matching is case-sensitive.
        ("GET", "/API/v1/audit/logs"),
    ] {
        let (response, upstream) = stack.send(RawRequest::new(method, path).bearer(&admin));
        let context = format!("{method} {path}");
        assert_eq!(response.status, 403, "{context}: {}", response.text());
        assert_eq!(
            response
                .header("content-type")
                .map(|v| v.starts_with("application/json")),
            Some(true),
            "{context}"
        );
        assert!(response.header("x-avb-decision-id").is_some(), "{context}");
        if method != "HEAD" {
            assert_local_reply(&response, 403, "permission_denied", &context);
        }
        assert!(upstream.is_empty(), "{context}: upstream saw it");
    }
}

#[test]
fn public_health_route_needs_no_token() {
    let stack = Stack::shipped();
    let (response, upstream) = stack.send(RawRequest::get("/healthz"));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.len(), 1);
    assert_eq!(upstream[0].header("x-avb-rule"), Some("health"));
    assert!(upstream[0].header("x-avb-subject").is_none());
}

/// Paths a client can use to dodge a route rule. With Envoy's own
/// normalisation off, the filter itself must answer 400 (its canonical-path
/// check does not lean on Envoy's settings).
#[test]
fn non_canonical_paths_get_400_from_the_filter_when_envoy_does_not_normalise() {
    let stack = Stack::with(|config| config.with_normalisation(false));
    let admin = token("admin-1", &["ADMIN"], "tenant-a");
    let mut failures = Vec::new();
    for path in [
        "/api/v1/stt/../llm/config",
        "/api/v1/llm/./config",
        "/api/v1/stt/%2e%2e/llm/config",
        "/api/v1//llm/config",
        "/api/v1/llm%2Fconfig",
        "/api/v1/llm%2fconfig",
        "/api/v1/llm%5Cconfig",
        "/api/v1/llm/config;x=1",
        "/api/v1/llm/..;/config",
        "/api/v1/llm/%63onfig",
        "/api/v1/llm/config%252F",
        "/api/v1/llm/con%zzfig",
        "/api/v1/llm/config%",
    ] {
        let (response, upstream) = stack.send(RawRequest::get(path).bearer(&admin));
        if !upstream.is_empty() {
            failures.push(format!("{path}: reached the upstream"));
            continue;
        }
        if response.status != 400 || response.header("x-avb-decision-id").is_none() {
            failures.push(format!(
                "{path}: expected the filter's 400, got {} {:?}",
                response.status,
                response.text()
            ));
            continue;
        }
        assert_local_reply(&response, 400, "bad_request", path);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// With the shipped Envoy options on, a bypass attempt is stopped either by
/// Envoy (escaped slashes) or by the filter; it never reaches the upstream
/// and never reaches a rule it should not.
#[test]
fn bypass_paths_never_reach_upstream_with_shipped_envoy_options() {
    let stack = Stack::shipped();
    // DEVELOPER may call stt.test but not llm.config.get (ADMIN only).
    let developer = token("dev-1", &["DEVELOPER"], "tenant-a");
    for path in [
        "/api/v1/stt/test/../../llm/config",
        "/api/v1/stt/%2e%2e/llm/config",
        "/api/v1/llm%2Fconfig",
        "/api/v1/llm%2fconfig",
        "/api/v1/llm/config;x",
        "//api/v1/llm/config",
        "/api/v1/llm/%63onfig",
    ] {
        let (response, upstream) = stack.send(RawRequest::get(path).bearer(&developer));
        assert!(
            matches!(response.status, 400 | 403 | 404),
            "{path}: status {} {}",
            response.status,
            response.text()
        );
        assert!(upstream.is_empty(), "{path}: reached the upstream");
    }
    // Absolute-form and asterisk-form targets do not sneak past either.
    for (method, target) in [
        ("GET", "http://localhost/api/v1/llm/config"),
        ("OPTIONS", "*"),
    ] {
        let (response, upstream) = stack.send(RawRequest::new(method, target).bearer(&developer));
        assert_ne!(
            response.status,
            200,
            "{method} {target}: {}",
            response.text()
        );
        assert!(
            upstream.is_empty(),
            "{method} {target}: reached the upstream"
        );
    }
}

#[test]
fn http2_requests_are_decided_like_http1() {
    let stack = Stack::shipped();
    let trace = trace_id();
    let allowed = H2Request::new("GET", "/api/v1/stt/config")
        .header(
            "authorization",
            &format!("Bearer {}", token("dev-1", &["DEVELOPER"], "t")),
        )
        .header("x-avb-subject", "attacker")
        .header(TRACE_HEADER, &trace)
        .send_blocking(stack.port)
        .expect("h2 request");
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let upstream = stack.upstream_saw(&trace);
    assert_eq!(upstream.len(), 1);
    assert_eq!(upstream[0].version, "HTTP/2.0");
    assert_eq!(upstream[0].header_all("x-avb-subject"), vec!["dev-1"]);

    let trace = trace_id();
    let denied = H2Request::new("PUT", "/api/v1/stt/config")
        .header(
            "authorization",
            &format!("Bearer {}", token("dev-1", &["DEVELOPER"], "t")),
        )
        .header(TRACE_HEADER, &trace)
        .data_frames(vec![b"{\"model\":".to_vec(), b"\"x\"}".to_vec()])
        .send_blocking(stack.port)
        .expect("h2 request");
    assert_local_reply(&denied, 403, "permission_denied", "h2 PUT as DEVELOPER");
    assert!(stack.upstream_saw(&trace).is_empty());
}

#[test]
fn decisions_are_counted_in_envoy_stats() {
    let stack = Stack::shipped();
    let operator = token("op-1", &["OPERATOR"], "tenant-a");
    stack.send(RawRequest::get("/api/v1/audit/logs").bearer(&operator));
    stack.send(RawRequest::get("/api/v1/llm/config").bearer(&operator));
    stack.send(RawRequest::get("/api/v1/llm/config"));
    let stats = stack.envoy.stats().expect("admin stats");
    let avb: BTreeMap<&String, &u64> = stats
        .iter()
        .filter(|(name, _)| name.contains("avb."))
        .collect();
    for outcome in ["allowed", "denied", "unauthenticated"] {
        assert!(
            avb.iter()
                .any(|(name, value)| name.ends_with(outcome) && **value >= 1),
            "no avb.*{outcome} counter above zero in {avb:?}"
        );
    }
}

/// Envoy must never serve with a half-understood policy: with the filter
/// failing closed in a static config, each broken policy stops Envoy from
/// starting, and the filter's one log line names the problem.
#[test]
fn envoy_refuses_a_broken_policy() {
    let shipped: Value =
        serde_json::from_str(&shipped_policy_json().expect("shipped policy")).expect("json");
    let mut unknown_field = shipped.clone();
    unknown_field["rules"][0]["any_of_roles"] = json!(["ADMIN"]);
    let mut duplicate_rule = shipped.clone();
    let first_rule = duplicate_rule["rules"][0].clone();
    duplicate_rule["rules"]
        .as_array_mut()
        .expect("rules list")
        .push(first_rule);
    let mut inheritance_cycle = shipped.clone();
    inheritance_cycle["role_inherits"]["OPERATOR"] = json!(["ADMIN"]);
    let mut unknown_key_env = shipped.clone();
    unknown_key_env["identity"]["issuers"][0]["jwks"]["keys"][0]["k_env"] = json!("NO_SUCH_VAR");

    for (name, policy, named_in_log) in [
        ("unknown field", unknown_field.to_string(), "any_of_roles"),
        (
            "duplicate rule",
            duplicate_rule.to_string(),
            "audit.logs.list",
        ),
        (
            "role_inherits cycle",
            inheritance_cycle.to_string(),
            "cycle",
        ),
        (
            "missing key env var",
            unknown_key_env.to_string(),
            "NO_SUCH_VAR",
        ),
        (
            "not JSON",
            "{\"mode\": \"enforce\",".to_owned(),
            "policy refused",
        ),
    ] {
        let echo = EchoServer::start().expect("echo");
        let config = EnvoyConfig::new(wasm_path().expect("wasm built"), policy, echo.port());
        let message = match config.start() {
            Ok(envoy) => {
                let port = envoy.listener_port().expect("listener");
                let answer = RawRequest::get("/healthz").send(port).map(|r| r.status);
                panic!("{name}: envoy started with a broken policy (GET /healthz -> {answer:?})");
            }
            Err(err) => format!("{err:#}"),
        };
        assert!(
            message.contains("policy refused") && message.contains(named_in_log),
            "{name}: expected the filter to refuse the policy naming {named_in_log:?}:\n{message}"
        );
        assert!(echo.requests().is_empty(), "{name}: upstream saw traffic");
    }
}

/// Requests Envoy's codec may already refuse; whoever answers, the answer is
/// 400 and nothing reaches the upstream. When the filter answers, it answers
/// with its JSON body.
#[test]
fn malformed_request_lines_get_400_and_never_reach_upstream() {
    let stack = Stack::with(|config| config.with_normalisation(false));
    let admin = token("admin-1", &["ADMIN"], "tenant-a");
    for (method, target) in [
        ("GET", "/api/v1/llm\\config"),
        ("GET", "/api/v1/llm/config#frag"),
        ("GET", "/api/v1/llm/config%00"),
        ("GET", "/api/v1/llm/config%0A"),
        ("get", "/api/v1/llm/config"),
        ("GET", "api/v1/llm/config"),
    ] {
        let context = format!("{method} {target}");
        let (response, upstream) = stack.send(RawRequest::new(method, target).bearer(&admin));
        assert_eq!(response.status, 400, "{context}: {}", response.text());
        assert!(upstream.is_empty(), "{context}: reached the upstream");
        if response.header("x-avb-decision-id").is_some() {
            assert_local_reply(&response, 400, "bad_request", &context);
        }
        eprintln!(
            "{context}: 400 from {}",
            if response.header("x-avb-decision-id").is_some() {
                "the filter"
            } else {
                "envoy"
            }
        );
    }
}

/// CACHE-001: the tenant in the path must be the token's tenant, unless the
/// caller holds a cross-tenant role (PLATFORM_ADMIN).
#[test]
fn tenant_cache_invalidation_is_bound_to_the_token_tenant() {
    let stack = Stack::shipped();
    let path = |tenant: &str| format!("/api/v1/tenants/{tenant}/cache/invalidate");
    let admin_a = token("admin-a", &["ADMIN"], "tenant-a");

    let (response, upstream) = stack.send(RawRequest::post(&path("tenant-a"), "").bearer(&admin_a));
    assert_eq!(response.status, 200, "own tenant: {}", response.text());
    assert_eq!(upstream.len(), 1);
    assert_eq!(
        upstream[0].header("x-avb-rule"),
        Some("tenants.cache.invalidate")
    );
    assert_eq!(upstream[0].header("x-avb-tenant"), Some("tenant-a"));

    let (response, upstream) = stack.send(RawRequest::post(&path("tenant-b"), "").bearer(&admin_a));
    let body = assert_local_reply(&response, 403, "permission_denied", "other tenant as ADMIN");
    assert_eq!(body["rule"], "tenants.cache.invalidate");
    assert!(
        upstream.is_empty(),
        "cross-tenant call reached the upstream"
    );

    let platform = token("ops-1", &["PLATFORM_ADMIN"], "tenant-ops");
    let (response, upstream) =
        stack.send(RawRequest::post(&path("tenant-b"), "").bearer(&platform));
    assert_eq!(response.status, 200, "PLATFORM_ADMIN: {}", response.text());
    assert_eq!(upstream.len(), 1);

    // An OPERATOR of the right tenant still lacks the role.
    let operator_a = token("op-a", &["OPERATOR"], "tenant-a");
    let (response, upstream) =
        stack.send(RawRequest::post(&path("tenant-a"), "").bearer(&operator_a));
    assert_local_reply(&response, 403, "permission_denied", "OPERATOR");
    assert!(upstream.is_empty());
}

/// Dry run lets a would-be denial through, counted, so a policy change can be
/// watched before it is enforced.
#[test]
fn dry_run_lets_would_be_denials_through_and_counts_them() {
    let mut policy: Value =
        serde_json::from_str(&shipped_policy_json().expect("shipped policy")).expect("json");
    policy["mode"] = json!("dry_run");
    let echo = EchoServer::start().expect("echo");
    let envoy = EnvoyConfig::new(
        wasm_path().expect("wasm built"),
        policy.to_string(),
        echo.port(),
    )
    .start()
    .expect("envoy starts with a dry-run policy");
    let stack = Stack {
        echo,
        port: envoy.listener_port().expect("listener"),
        envoy,
    };
    let developer = token("dev-1", &["DEVELOPER"], "tenant-a");
    let (response, upstream) = stack.send(RawRequest::get("/api/v1/llm/config").bearer(&developer));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.len(), 1, "dry run must let the request through");
    let counted = stack
        .envoy
        .stats()
        .expect("stats")
        .iter()
        .any(|(name, value)| name.ends_with("avb.dry_run_denied") && *value >= 1);
    assert!(counted, "no avb.dry_run_denied counted");
}
