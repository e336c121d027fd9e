//! End-to-end identity from Envoy's jwt_authn (issue 6): the real Envoy 1.40
//! runs `envoy.filters.http.jwt_authn` (a provider with the dev HS256 key as
//! an `oct` JWKS, `payload_in_metadata: payload`, `forward: true`, output
//! headers, and an `allow_missing` requirement) BEFORE the avb-edge filter,
//! whose policy takes the identity from that metadata
//! (`identity.source: jwt_authn_metadata`).
//!
//! - a token jwt_authn verified gets the decisions of its roles and tenant;
//! - jwt_authn's output headers (`x-jwt-payload`, claim headers) sent by a
//!   client without a token prove nothing: 401, and the upstream sees
//!   nothing; with a real token, forged copies grant nothing beyond it;
//! - a token jwt_authn refuses never reaches the filter's upstream.
//!
//! Requires `make plugin` (or `AVB_WASM`) and an Envoy (`AVB_ENVOY` or
//! `scripts/envoy.sh`). Run: `cargo test -p avb-tests --test e2e_jwt_authn`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use avb_tests::echo::{EchoServer, Received};
use avb_tests::http::{RawRequest, Response};
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
const TRACE_HEADER: &str = "x-test-trace";
/// Where jwt_authn stores the verified payload (and the policy reads it).
const METADATA_KEY: &str = "payload";
/// jwt_authn's output headers: appended after a token verifies, passed on
/// untouched when there is none.
const PAYLOAD_HEADER: &str = "x-jwt-payload";
const SUBJECT_HEADER: &str = "x-jwt-sub";
const TENANT_HEADER: &str = "x-jwt-tenant";

/// Rule, method, path, roles that may call it (any of), from the shipped policy.
const TABLE: &[(&str, &str, &str, &[&str])] = &[
    (
        "audit.logs.list",
        "GET",
        "/api/v1/audit/logs",
        &["OPERATOR"],
    ),
    ("audit.purge", "POST", "/api/v1/audit/purge", &["ADMIN"]),
    (
        "stt.config.get",
        "GET",
        "/api/v1/stt/config",
        &["ADMIN", "DEVELOPER"],
    ),
    ("stt.metrics", "GET", "/api/v1/stt/metrics", &["OPERATOR"]),
    ("stt.test", "POST", "/api/v1/stt/test", &["DEVELOPER"]),
    ("llm.config.get", "GET", "/api/v1/llm/config", &["ADMIN"]),
    ("llm.config.update", "PUT", "/api/v1/llm/config", &["ADMIN"]),
];

const ALL_ROLES: &[&str] = &["ADMIN", "OPERATOR", "DEVELOPER", "VIEWER"];

/// What a role grants under the shipped `role_inherits`.
fn effective_roles(role: &str) -> BTreeSet<&str> {
    let mut roles = BTreeSet::from([role]);
    if role == "ADMIN" {
        roles.extend(["OPERATOR", "DEVELOPER"]);
    }
    roles
}

fn dev_key_base64url() -> String {
    dev_env()
        .expect("envoy/dev.env is readable")
        .get("AVB_JWT_HS_KEY")
        .expect("AVB_JWT_HS_KEY in envoy/dev.env")
        .clone()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn claims(subject: &str, roles: &[&str], tenant: &str) -> Value {
    let issued = now();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "tenant_id": tenant,
        "iat": issued, "exp": issued + 600, "realm_access": {"roles": roles},
    })
}

/// HS256 over `claims` with `key`, minted here with hmac + base64.
fn sign(key: &[u8], claims: &Value) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": DEV_KID});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn token(subject: &str, roles: &[&str], tenant: &str) -> String {
    let key = URL_SAFE_NO_PAD
        .decode(dev_key_base64url())
        .expect("AVB_JWT_HS_KEY is base64url");
    sign(&key, &claims(subject, roles, tenant))
}

/// Envoy's jwt_authn with the dev key as an `oct` JWKS; a missing token is
/// let through (the avb-edge filter then decides), a bad one is refused.
fn jwt_authn_filter() -> Value {
    let jwks = json!({"keys": [{
        "kty": "oct", "kid": DEV_KID, "alg": "HS256", "k": dev_key_base64url(),
    }]});
    json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "avb": {
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "local_jwks": {"inline_string": jwks.to_string()},
                    "payload_in_metadata": METADATA_KEY,
                    "forward": true,
                    "forward_payload_header": PAYLOAD_HEADER,
                    "claim_to_headers": [
                        {"header_name": SUBJECT_HEADER, "claim_name": "sub"},
                        {"header_name": TENANT_HEADER, "claim_name": "tenant_id"},
                    ],
                },
            },
            "rules": [{
                "match": {"prefix": "/"},
                "requires": {"requires_any": {"requirements": [
                    {"provider_name": "avb"},
                    {"allow_missing": {}},
                ]}},
            }],
        },
    })
}

/// The shipped rules with the identity taken from jwt_authn's metadata, and
/// no audit shipping (no companion in these tests).
fn jwt_authn_policy() -> String {
    let mut policy: Value =
        serde_json::from_str(&shipped_policy_json().expect("shipped policy")).expect("JSON");
    let shipped_identity = policy["identity"].clone();
    policy["identity"] = json!({
        "source": "jwt_authn_metadata",
        "metadata_key": METADATA_KEY,
        "roles_claim": shipped_identity["roles_claim"],
        "subject_claim": shipped_identity["subject_claim"],
        "tenant_claim": shipped_identity["tenant_claim"],
        "cross_tenant_roles": shipped_identity["cross_tenant_roles"],
    });
    policy
        .as_object_mut()
        .expect("policy object")
        .remove("audit");
    policy.to_string()
}

struct Stack {
    echo: EchoServer,
    _envoy: Envoy,
    port: u16,
}

impl Stack {
    fn start() -> Self {
        let echo = EchoServer::start().expect("echo upstream");
        let envoy = EnvoyConfig::new(
            wasm_path().expect("dist/avb_edge.wasm built"),
            jwt_authn_policy(),
            echo.port(),
        )
        .with_http_filter_before_wasm(jwt_authn_filter())
        .start()
        .expect("envoy starts with jwt_authn before the filter");
        let port = envoy.listener_port().expect("listener");
        Self {
            echo,
            _envoy: envoy,
            port,
        }
    }

    fn send(&self, request: RawRequest) -> (Response, Vec<Received>) {
        let trace = trace_id();
        let response = request
            .header(TRACE_HEADER, &trace)
            .send(self.port)
            .expect("envoy answers");
        let upstream = self
            .echo
            .requests()
            .into_iter()
            .filter(|request| request.header(TRACE_HEADER) == Some(trace.as_str()))
            .collect();
        (response, upstream)
    }
}

fn trace_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "j{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn request(method: &str, path: &str) -> RawRequest {
    let request = RawRequest::new(method, path);
    if method == "GET" {
        request
    } else {
        request
            .body("{}")
            .header("content-type", "application/json")
    }
}

/// The filter's own 401/403: JSON with its decision id.
fn assert_filter_denied(response: &Response, status: u16, context: &str) {
    assert_eq!(response.status, status, "{context}: {}", response.text());
    assert!(
        response.header("x-avb-decision-id").is_some(),
        "{context}: not the filter's reply: {:?}",
        response.headers
    );
}

#[test]
fn tokens_verified_by_jwt_authn_get_the_decisions_of_their_roles() {
    let stack = Stack::start();
    let mut failures = Vec::new();
    for role in ALL_ROLES {
        let subject = format!("{}-1", role.to_ascii_lowercase());
        let bearer = token(&subject, &[role], "tenant-a");
        let granted = effective_roles(role);
        for (rule, method, path, any_of) in TABLE {
            let context = format!("{role} {method} {path}");
            let allowed = any_of.iter().any(|needed| granted.contains(needed));
            let (response, upstream) = stack.send(request(method, path).bearer(&bearer));
            if allowed {
                if response.status != 200 || upstream.len() != 1 {
                    failures.push(format!("{context}: expected 200, got {}", response.status));
                    continue;
                }
                let seen = &upstream[0];
                assert_eq!(
                    seen.header_all("x-avb-subject"),
                    vec![subject.as_str()],
                    "{context}"
                );
                assert_eq!(
                    seen.header_all("x-avb-tenant"),
                    vec!["tenant-a"],
                    "{context}"
                );
                assert_eq!(seen.header_all("x-avb-rule"), vec![*rule], "{context}");
                let roles: BTreeSet<&str> = seen
                    .header("x-avb-roles")
                    .unwrap_or_default()
                    .split(',')
                    .collect();
                assert_eq!(roles, granted, "{context}");
                // jwt_authn did verify it: its payload header is there.
                assert_eq!(seen.header_all(PAYLOAD_HEADER).len(), 1, "{context}");
            } else if response.status != 403 || !upstream.is_empty() {
                failures.push(format!("{context}: expected 403, got {}", response.status));
            } else {
                assert_filter_denied(&response, 403, &context);
                assert_eq!(response.json().expect("JSON")["rule"], *rule, "{context}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // No token at all: jwt_authn lets it pass (allow_missing), the filter
    // answers 401 on protected routes and lets public ones through.
    let (response, upstream) = stack.send(RawRequest::get("/api/v1/stt/config"));
    assert_filter_denied(&response, 401, "anonymous");
    assert!(upstream.is_empty());
    let (response, upstream) = stack.send(RawRequest::get("/healthz"));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.len(), 1);
}

#[test]
fn tenant_claim_from_jwt_authn_metadata_binds_the_cache_rule_to_the_tenant() {
    let stack = Stack::start();
    let admin = token("admin-1", &["ADMIN"], "tenant-a");
    let (own, upstream) = stack
        .send(RawRequest::post("/api/v1/tenants/tenant-a/cache/invalidate", "{}").bearer(&admin));
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(upstream.len(), 1);
    let (other, upstream) = stack.send(
        RawRequest::post("/api/v1/tenants/tenant-b/cache/invalidate", "{}")
            .bearer(&admin)
            // A forged tenant claim header changes nothing.
            .header(TENANT_HEADER, "tenant-b"),
    );
    assert_filter_denied(&other, 403, "ADMIN of tenant-a on tenant-b");
    assert!(upstream.is_empty());
    let platform = token("root-1", &["PLATFORM_ADMIN"], "tenant-a");
    let (cross, upstream) = stack.send(
        RawRequest::post("/api/v1/tenants/tenant-b/cache/invalidate", "{}").bearer(&platform),
    );
    assert_eq!(cross.status, 200, "{}", cross.text());
    assert_eq!(upstream.len(), 1);
}

#[test]
fn forged_jwt_authn_headers_without_a_token_get_401_and_never_reach_upstream() {
    let stack = Stack::start();
    let forged_payload = URL_SAFE_NO_PAD
        .encode(claims("admin-1", &["ADMIN", "PLATFORM_ADMIN"], "tenant-a").to_string());
    let forgeries: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "payload header",
            vec![(PAYLOAD_HEADER, forged_payload.clone())],
        ),
        (
            "claim headers",
            vec![
                (SUBJECT_HEADER, "admin-1".to_owned()),
                (TENANT_HEADER, "tenant-a".to_owned()),
            ],
        ),
        (
            "payload, claims and the filter's own headers",
            vec![
                (PAYLOAD_HEADER, forged_payload.clone()),
                (SUBJECT_HEADER, "admin-1".to_owned()),
                ("x-avb-subject", "admin-1".to_owned()),
                ("x-avb-roles", "ADMIN".to_owned()),
                ("x-avb-tenant", "tenant-a".to_owned()),
            ],
        ),
    ];
    for (what, headers) in &forgeries {
        for (_rule, method, path, _roles) in TABLE {
            let context = format!("{what}: {method} {path}");
            let mut forged = request(method, path);
            for (name, value) in headers {
                forged = forged.header(name, value);
            }
            let (response, upstream) = stack.send(forged);
            assert_filter_denied(&response, 401, &context);
            assert!(upstream.is_empty(), "{context}: reached the upstream");
        }
    }

    // With a real DEVELOPER token, forged ADMIN copies of jwt_authn's output
    // headers change nothing: identity comes from the metadata, so ADMIN
    // routes stay closed.
    let developer = token("dev-1", &["DEVELOPER"], "tenant-a");
    let (response, upstream) = stack.send(
        RawRequest::get("/api/v1/llm/config")
            .bearer(&developer)
            .header(PAYLOAD_HEADER, &forged_payload)
            .header(SUBJECT_HEADER, "admin-1"),
    );
    assert_filter_denied(&response, 403, "DEVELOPER with a forged ADMIN payload");
    assert!(upstream.is_empty());
    let (response, upstream) = stack.send(
        RawRequest::get("/api/v1/stt/config")
            .bearer(&developer)
            .header(PAYLOAD_HEADER, &forged_payload),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.len(), 1);
    assert_eq!(upstream[0].header_all("x-avb-subject"), vec!["dev-1"]);
    assert_eq!(upstream[0].header_all("x-avb-roles"), vec!["DEVELOPER"]);
    // What the upstream got in jwt_authn's output headers depends on the
    // Envoy version (appended or replaced); the filter's own headers above
    // are what it may trust.
    eprintln!(
        "upstream {PAYLOAD_HEADER}: {} value(s), {SUBJECT_HEADER}: {:?}",
        upstream[0].header_all(PAYLOAD_HEADER).len(),
        upstream[0].header_all(SUBJECT_HEADER)
    );
}

#[test]
fn tokens_jwt_authn_refuses_never_reach_the_upstream() {
    let stack = Stack::start();
    let key = URL_SAFE_NO_PAD
        .decode(dev_key_base64url())
        .expect("base64url key");
    let mut expired = claims("admin-1", &["ADMIN"], "tenant-a");
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    let mut wrong_audience = claims("admin-1", &["ADMIN"], "tenant-a");
    wrong_audience["aud"] = json!("someone-else");
    let cases = [
        (
            "wrong key",
            sign(
                b"not the dev key",
                &claims("admin-1", &["ADMIN"], "tenant-a"),
            ),
        ),
        ("expired", sign(&key, &expired)),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    let cases = cases
        .into_iter()
        .map(|(what, bearer)| (what, bearer, 401))
        .chain([("wrong audience", sign(&key, &wrong_audience), 403)]);
    for (what, bearer, status) in cases {
        let (response, upstream) =
            stack.send(RawRequest::get("/api/v1/stt/config").bearer(&bearer));
        // jwt_authn answers itself (Envoy says 403 for a wrong audience);
        // the filter never sees the request.
        assert_eq!(response.status, status, "{what}: {}", response.text());
        assert!(
            response.header("x-avb-decision-id").is_none(),
            "{what}: reached the avb-edge filter"
        );
        assert!(upstream.is_empty(), "{what}: reached the upstream");
    }
}
