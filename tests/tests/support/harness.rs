//! Shared pieces of the harness tests (`tests/tests/harness_*.rs`): the real
//! `dist/avb_edge.wasm` in the wasmtime host, a fixed clock, HS256 tokens for
//! a test issuer, and small readers for what the filter sent.
//!
//! Included with `#[path = "support/harness.rs"] mod harness;`; each test
//! file uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use avb_edge::policy::identity::{sign_hs, HmacAlgorithm};
use avb_tests::host::{HostBuilder, HttpRequest, LocalReply};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ISSUER: &str = "https://id.harness.example";
pub const AUDIENCE: &str = "avb-api";
pub const KID: &str = "hs-harness";
/// Raw HS256 key bytes (at least 32, as the engine requires).
pub const HS_KEY: &[u8] = b"harness-hs256-key-0123456789abcdef-not-secret";
/// The environment variable the policies name with `k_env`.
pub const HS_KEY_ENV: &str = "AVB_JWT_HS_KEY";
/// The host clock's start: every test runs at this instant unless it moves it.
pub const NOW_SECS: u64 = 1_800_000_000;

pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

pub fn wasm() -> PathBuf {
    avb_tests::procs::wasm_path().expect("run `make plugin` first")
}

/// The base64url form of [`HS_KEY`], as the VM environment carries it.
pub fn hs_key_env_value() -> String {
    URL_SAFE_NO_PAD.encode(HS_KEY)
}

/// A host for `policy` with the test clock and the HS key in the VM env.
pub fn builder(policy: &Value) -> HostBuilder {
    HostBuilder::new(wasm())
        .configuration(policy.to_string().into_bytes())
        .start_time(now())
        .env(HS_KEY_ENV, hs_key_env_value())
}

/// The `identity` section trusting [`ISSUER`] with the HS key from the env.
pub fn bearer_identity() -> Value {
    json!({
        "source": "bearer_jwt",
        "issuers": [{
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "jwks": {"keys": [{"kty": "oct", "kid": KID, "alg": "HS256", "k_env": HS_KEY_ENV}]}
        }],
        "roles_claim": "realm_access.roles",
        "subject_claim": "sub",
        "tenant_claim": "tenant_id",
        "clock_skew_seconds": 60,
        "cross_tenant_roles": ["PLATFORM_ADMIN"]
    })
}

/// Claims of a token valid for an hour from [`NOW_SECS`].
pub fn claims(subject: &str, roles: &[&str], tenant: Option<&str>) -> Value {
    let mut claims = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": NOW_SECS,
        "exp": NOW_SECS + 3600,
        "realm_access": {"roles": roles},
    });
    if let Some(tenant) = tenant {
        claims["tenant_id"] = json!(tenant);
    }
    claims
}

pub fn sign(claims: &Value) -> String {
    sign_hs(HmacAlgorithm::Hs256, HS_KEY, Some(KID), &claims.to_string())
}

/// A token over `claims_json` used verbatim (for malformed payloads).
pub fn sign_hs_raw(claims_json: &str) -> String {
    sign_hs(HmacAlgorithm::Hs256, HS_KEY, Some(KID), claims_json)
}

/// A valid bearer token for `subject` with `roles`.
pub fn token(subject: &str, roles: &[&str], tenant: Option<&str>) -> String {
    sign(&claims(subject, roles, tenant))
}

/// Every value of header `name` in `headers`.
pub fn values(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
        .collect()
}

/// The single value of `name`, failing the test if it is absent or repeated.
pub fn one(headers: &[(String, String)], name: &str) -> String {
    let found = values(headers, name);
    assert_eq!(found.len(), 1, "expected one `{name}` in {headers:?}");
    found[0].clone()
}

/// The local reply the filter sent, failing the test if there is none.
pub fn reply(request: &HttpRequest) -> LocalReply {
    request.local_reply().unwrap_or_else(|| {
        panic!(
            "no local reply; upstream saw {:?}",
            request.upstream_headers()
        )
    })
}

/// The reply body as JSON, checking the headers every local reply carries:
/// `application/json` and an `x-avb-decision-id` equal to the body's
/// `decision_id`.
pub fn reply_json(reply: &LocalReply) -> Value {
    assert_eq!(
        one(&reply.headers, "content-type"),
        "application/json",
        "{reply:?}"
    );
    let body: Value = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("reply body is not JSON ({e}): {:?}", reply.body));
    let id = one(&reply.headers, "x-avb-decision-id");
    assert!(!id.is_empty());
    assert_eq!(body["decision_id"], json!(id), "{body}");
    body
}
