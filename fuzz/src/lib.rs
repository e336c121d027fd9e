//! Shared pieces of the avb-edge fuzz targets: the fixed policies each target
//! decides against, and independent oracles that say what the engine may
//! accept (a route reference matcher, JWT and Lago signature checks written
//! against the crypto crates directly, not through the engine).
//!
//! An oracle that disagrees with the engine is a finding: the targets assert,
//! libFuzzer records the input under `fuzz/artifacts/<target>/`, and the
//! input becomes a regression test in `plugin/tests/`.

#![deny(unsafe_code)]

use std::sync::OnceLock;

use avb_edge::policy::identity::{sign_hs, HmacAlgorithm};
use avb_edge::policy::matcher::TemplateSegment;
use avb_edge::policy::{Policy, Rule, Template};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Sha256, Sha384, Sha512};

/// Issuer of every token the targets mint or load.
pub const ISSUER: &str = "https://id.agentvoicebox.example";
/// Inside the validity window of the fixture tokens and of minted tokens.
pub const NOW: u64 = 1_700_000_100;

/// The HS256 secret of the routing policy (raw bytes; test-only).
pub const ROUTING_HS_KEY: &[u8] = b"fuzz-routing-hs256-key-0123456789abcdef";

/// The JWKS of `plugin/tests/fixtures/jwt` (HS256/384/512, RS256/384/512, ES256).
pub const FIXTURE_JWKS: &str = include_str!("../../plugin/tests/fixtures/jwt/jwks.json");
/// Known-answer tokens signed by OpenSSL with the fixture keys.
pub const FIXTURE_TOKENS: &str = include_str!("../../plugin/tests/fixtures/jwt/tokens.json");
const FIXTURE_RSA_PUBLIC_PEM: &str =
    include_str!("../../plugin/tests/fixtures/jwt/rsa-2048.pub.pem");
const FIXTURE_EC_PUBLIC_PEM: &str = include_str!("../../plugin/tests/fixtures/jwt/ec-p256.pub.pem");

/// The Lago installation's public key as Lago publishes it (base64 of the PEM).
pub const LAGO_PUBLIC_KEY_B64: &str =
    include_str!("../../plugin/tests/fixtures/lago/lago_public.pem.b64");
const LAGO_PUBLIC_PEM: &str = include_str!("../../plugin/tests/fixtures/lago/lago_public.pem");
/// Lago's JWT issuer.
pub const LAGO_ISSUER: &str = "https://api.getlago.com";
/// The HMAC keys of the Lago webhook, in the order the verifier tries them.
pub const LAGO_HMAC_KEYS: [(&str, &str); 2] = [
    ("current", "6a1e7c1e-4b7a-4f0e-9a53-2f6d8c4b1e77"),
    ("previous", "0b7d1f3e-58a2-4c61-8f0d-3e9a2b7c4d15"),
];

/// Methods the routing target picks from: listed ones, unlisted ones, and
/// malformed ones the engine must answer with 400.
pub const METHODS: [&str; 12] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "get", "Get", "", "GE T",
    "M-SEARCH",
];

/// The routing policy: the shipped AgentVoiceBox table plus rules that use
/// every template shape (`{name}`, `*`, `**`, method-less rules, tenant
/// parameters), so the trie's backtracking is exercised. `unmatched: deny`.
pub fn routing_policy_json() -> Value {
    json!({
        "mode": "enforce",
        "unmatched": "deny",
        "identity": {
            "source": "bearer_jwt",
            "issuers": [{
                "issuer": ISSUER,
                "audiences": ["avb-api"],
                "jwks": {"keys": [{"kty": "oct", "kid": "fuzz-hs-1", "alg": "HS256",
                                    "k": URL_SAFE_NO_PAD.encode(ROUTING_HS_KEY)}]}
            }],
            "roles_claim": "realm_access.roles",
            "tenant_claim": "tenant_id",
            "cross_tenant_roles": ["PLATFORM_ADMIN"]
        },
        "role_inherits": {"ADMIN": ["OPERATOR", "DEVELOPER"]},
        "rules": [
            {"name": "audit.logs.list", "methods": ["GET"], "path": "/api/v1/audit/logs", "any_of": ["OPERATOR"]},
            {"name": "audit.logs.detail", "methods": ["GET"], "path": "/api/v1/audit/logs/{id}", "any_of": ["OPERATOR"]},
            {"name": "audit.logs.export", "methods": ["GET"], "path": "/api/v1/audit/logs/export", "any_of": ["ADMIN"]},
            {"name": "audit.statistics", "methods": ["GET"], "path": "/api/v1/audit/statistics", "any_of": ["OPERATOR"]},
            {"name": "audit.purge", "methods": ["POST"], "path": "/api/v1/audit/purge", "any_of": ["ADMIN"]},
            {"name": "stt.config.get", "methods": ["GET"], "path": "/api/v1/stt/config", "any_of": ["ADMIN", "DEVELOPER"]},
            {"name": "stt.config.update", "methods": ["PUT", "PATCH"], "path": "/api/v1/stt/config", "any_of": ["ADMIN"]},
            {"name": "stt.test", "methods": ["POST"], "path": "/api/v1/stt/test", "any_of": ["DEVELOPER"]},
            {"name": "llm.config.get", "methods": ["GET"], "path": "/api/v1/llm/config", "any_of": ["ADMIN"]},
            {"name": "tenants.cache", "methods": ["POST"], "path": "/api/v1/tenants/{tenant_id}/cache/invalidate",
             "any_of": ["ADMIN", "PLATFORM_ADMIN"], "tenant_param": "tenant_id"},
            {"name": "api.rest", "path": "/api/v1/**", "authenticated": true},
            {"name": "api.rest.get", "methods": ["GET"], "path": "/api/v1/**", "all_of": ["OPERATOR", "DEVELOPER"]},
            {"name": "files.raw", "methods": ["GET"], "path": "/files/*/raw", "public": true},
            {"name": "files.any", "path": "/files/**", "any_of": ["VIEWER"]},
            {"name": "dash", "path": "/{tenant}/dash", "authenticated": true},
            {"name": "dash.admin", "path": "/admin/dash", "any_of": ["ADMIN"]},
            {"name": "root", "methods": ["GET"], "path": "/", "public": true},
            {"name": "health", "methods": ["GET"], "path": "/healthz", "public": true}
        ]
    })
}

/// The compiled routing policy (built once per process).
pub fn routing_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let text = routing_policy_json().to_string();
        match Policy::from_json(text.as_bytes(), &|_| None) {
            Ok(policy) => policy,
            Err(err) => panic!("the fuzz routing policy must compile: {err}"),
        }
    })
}

/// `Authorization` values the routing target picks from: valid tokens for
/// each role (and tenant), an expired one, and garbage.
pub fn routing_authorizations() -> &'static [Option<String>] {
    static VALUES: OnceLock<Vec<Option<String>>> = OnceLock::new();
    VALUES.get_or_init(|| {
        let token = |roles: &[&str], tenant: &str, exp: u64| {
            let claims = json!({
                "iss": ISSUER, "aud": "avb-api", "sub": "fuzz", "tenant_id": tenant,
                "iat": NOW - 10, "exp": exp, "realm_access": {"roles": roles},
            });
            Some(format!(
                "Bearer {}",
                sign_hs(
                    HmacAlgorithm::Hs256,
                    ROUTING_HS_KEY,
                    Some("fuzz-hs-1"),
                    &claims.to_string()
                )
            ))
        };
        vec![
            None,
            token(&["ADMIN"], "t1", NOW + 600),
            token(&["OPERATOR"], "t1", NOW + 600),
            token(&["DEVELOPER"], "t2", NOW + 600),
            token(&["VIEWER"], "t1", NOW + 600),
            token(&["PLATFORM_ADMIN"], "t9", NOW + 600),
            token(&["OPERATOR", "DEVELOPER"], "t1", NOW + 600),
            token(&[], "t1", NOW + 600),
            token(&["ADMIN"], "t1", NOW - 3600),
            Some("Bearer not.a.token".to_owned()),
            Some("Basic YWRtaW46YWRtaW4=".to_owned()),
        ]
    })
}

/// Whether `template` matches the canonical path `path` (`/` or `/a/b`).
pub fn template_matches(template: &Template, path: &str) -> bool {
    specificity(template, &path_segments(path)).is_some()
}

/// The segments of a canonical path (none for `/`).
pub fn path_segments(path: &str) -> Vec<&str> {
    let body = path.strip_prefix('/').unwrap_or(path);
    if body.is_empty() {
        Vec::new()
    } else {
        body.split('/').collect()
    }
}

/// Specificity of `template` against `segments` when it matches: one rank
/// per path segment (literal 3, `{name}`/`*` 2, consumed by `**` 1), then
/// whether the template ended exactly (1) or with a `**` (0). Larger compares
/// as more specific, segment by segment from the left.
pub fn specificity(template: &Template, segments: &[&str]) -> Option<Vec<u8>> {
    let mut ranks = Vec::with_capacity(segments.len() + 1);
    let mut position = 0;
    for segment in template.segments() {
        match segment {
            TemplateSegment::Rest => {
                ranks.extend(std::iter::repeat_n(1, segments.len() - position));
                ranks.push(0);
                return Some(ranks);
            }
            TemplateSegment::Literal(text) => {
                if segments.get(position) != Some(&text.as_str()) {
                    return None;
                }
                ranks.push(3);
            }
            TemplateSegment::Param(_) | TemplateSegment::Star => {
                if segments.get(position).is_none_or(|s| s.is_empty()) {
                    return None;
                }
                ranks.push(2);
            }
        }
        position += 1;
    }
    if position != segments.len() {
        return None;
    }
    ranks.push(1);
    Some(ranks)
}

/// Whether a rule's method list admits `method` (`None` admits any).
pub fn method_admitted(rule: &Rule, method: &str) -> bool {
    rule.methods()
        .is_none_or(|methods| methods.iter().any(|m| m == method))
}

/// The naive reference matcher: score every rule, keep the most specific; a
/// rule listing the method beats one listing none at equal shape.
pub fn reference_best_match(policy: &Policy, path: &str, method: &str) -> Option<usize> {
    let segments = path_segments(path);
    let mut best: Option<(Vec<u8>, usize)> = None;
    for (index, rule) in policy.rules().iter().enumerate() {
        if !method_admitted(rule, method) {
            continue;
        }
        let Ok(template) = Template::parse(rule.template()) else {
            continue;
        };
        let Some(mut score) = specificity(&template, &segments) else {
            continue;
        };
        score.push(if rule.methods().is_some() { 2 } else { 1 });
        if best.as_ref().is_none_or(|(top, _)| score > *top) {
            best = Some((score, index));
        }
    }
    best.map(|(_, index)| index)
}

/// The policy the JWT target decides against: the fixture JWKS (every
/// algorithm), one authenticated rule and one role rule.
pub fn jwt_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let jwks: Value = match serde_json::from_str(FIXTURE_JWKS) {
            Ok(jwks) => jwks,
            Err(err) => panic!("fixture jwks.json: {err}"),
        };
        let policy = json!({
            "identity": {
                "issuers": [{"issuer": ISSUER, "audiences": ["avb-api"], "jwks": jwks}],
                "roles_claim": "realm_access.roles",
                "tenant_claim": "tenant_id"
            },
            "rules": [
                {"name": "any", "methods": ["GET"], "path": "/t", "authenticated": true},
                {"name": "admin", "methods": ["GET"], "path": "/admin", "any_of": ["ADMIN"]}
            ]
        })
        .to_string();
        match Policy::from_json(policy.as_bytes(), &|_| None) {
            Ok(policy) => policy,
            Err(err) => panic!("the fuzz jwt policy must compile: {err}"),
        }
    })
}

/// A key of the fixture JWKS, decoded for the oracle.
enum OracleKey {
    Hmac(&'static str, Vec<u8>),
    Rsa(&'static str, rsa::RsaPublicKey),
    Ec(p256::ecdsa::VerifyingKey),
}

fn oracle_keys() -> &'static [OracleKey] {
    static KEYS: OnceLock<Vec<OracleKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        // p256 and rsa share the pkcs8 crate: one import serves both.
        use p256::pkcs8::DecodePublicKey as _;
        let mut keys = Vec::new();
        let jwks: Value = serde_json::from_str(FIXTURE_JWKS).unwrap_or(Value::Null);
        for key in jwks["keys"].as_array().into_iter().flatten() {
            if key["kty"] == "oct" {
                let alg = match key["alg"].as_str() {
                    Some("HS256") => "HS256",
                    Some("HS384") => "HS384",
                    Some("HS512") => "HS512",
                    _ => continue,
                };
                if let Some(secret) = key["k"]
                    .as_str()
                    .and_then(|k| URL_SAFE_NO_PAD.decode(k).ok())
                {
                    keys.push(OracleKey::Hmac(alg, secret));
                }
            }
        }
        if let Ok(rsa_key) = rsa::RsaPublicKey::from_public_key_pem(FIXTURE_RSA_PUBLIC_PEM) {
            for alg in ["RS256", "RS384", "RS512"] {
                keys.push(OracleKey::Rsa(alg, rsa_key.clone()));
            }
        }
        if let Ok(ec_key) = p256::ecdsa::VerifyingKey::from_public_key_pem(FIXTURE_EC_PUBLIC_PEM) {
            keys.push(OracleKey::Ec(ec_key));
        }
        keys
    })
}

/// Independent check: is `token` (compact JWS) signed by one of the fixture
/// keys, with a header `alg` equal to that key's algorithm?
pub fn signed_by_fixture_key(token: &str) -> bool {
    // p256 and rsa share the signature crate: one import serves both.
    use p256::ecdsa::signature::Verifier as _;
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, payload_b64, signature_b64] = parts.as_slice() else {
        return false;
    };
    let Ok(header) = URL_SAFE_NO_PAD.decode(header_b64) else {
        return false;
    };
    let Ok(header) = serde_json::from_slice::<Value>(&header) else {
        return false;
    };
    let Some(alg) = header["alg"].as_str() else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature_b64) else {
        return false;
    };
    let signing_input = format!("{header_b64}.{payload_b64}");
    let message = signing_input.as_bytes();
    oracle_keys().iter().any(|key| match key {
        OracleKey::Hmac(key_alg, secret) => {
            *key_alg == alg
                && match alg {
                    "HS256" => Hmac::<Sha256>::new_from_slice(secret)
                        .is_ok_and(|m| m.chain_update(message).verify_slice(&signature).is_ok()),
                    "HS384" => Hmac::<Sha384>::new_from_slice(secret)
                        .is_ok_and(|m| m.chain_update(message).verify_slice(&signature).is_ok()),
                    "HS512" => Hmac::<Sha512>::new_from_slice(secret)
                        .is_ok_and(|m| m.chain_update(message).verify_slice(&signature).is_ok()),
                    _ => false,
                }
        }
        OracleKey::Rsa(key_alg, public) => {
            let Ok(sig) = rsa::pkcs1v15::Signature::try_from(signature.as_slice()) else {
                return false;
            };
            *key_alg == alg
                && match alg {
                    "RS256" => rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public.clone())
                        .verify(message, &sig)
                        .is_ok(),
                    "RS384" => rsa::pkcs1v15::VerifyingKey::<Sha384>::new(public.clone())
                        .verify(message, &sig)
                        .is_ok(),
                    "RS512" => rsa::pkcs1v15::VerifyingKey::<Sha512>::new(public.clone())
                        .verify(message, &sig)
                        .is_ok(),
                    _ => false,
                }
        }
        OracleKey::Ec(public) => {
            alg == "ES256"
                && p256::ecdsa::Signature::from_slice(&signature)
                    .is_ok_and(|sig| public.verify(message, &sig).is_ok())
        }
    })
}

/// The fixture HS256 secret (`hs256-1`), for the jwt target's structured
/// mode: fuzzed header and claims JSON, validly signed, so mutations reach
/// the checks behind the signature.
pub fn fixture_hs256_secret() -> Vec<u8> {
    let jwks: Value = serde_json::from_str(FIXTURE_JWKS).unwrap_or(Value::Null);
    jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|key| key["kid"] == "hs256-1")
        .and_then(|key| key["k"].as_str())
        .and_then(|k| URL_SAFE_NO_PAD.decode(k).ok())
        .unwrap_or_default()
}

/// A compact JWS over the exact `header` and `claims` bytes, HMAC-SHA256
/// signed with `secret`.
pub fn hs256_over(secret: &[u8], header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let tag = Hmac::<Sha256>::new_from_slice(secret)
        .map(|mac| {
            mac.chain_update(input.as_bytes())
                .finalize()
                .into_bytes()
                .to_vec()
        })
        .unwrap_or_default();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// What must hold of the claims of any token the jwt policy lets through at
/// [`NOW`] (60 s skew): trusted issuer, our audience, unexpired, started.
pub fn claims_acceptable(claims: &Value) -> bool {
    const SKEW: f64 = 60.0;
    #[allow(clippy::cast_precision_loss)]
    let now = NOW as f64;
    let audience_ok = match &claims["aud"] {
        Value::String(aud) => aud == "avb-api",
        Value::Array(list) => list.iter().any(|a| a == "avb-api"),
        _ => false,
    };
    let exp_ok = claims["exp"].as_f64().is_some_and(|exp| now < exp + SKEW);
    let not_before_ok = |name: &str| match claims.get(name) {
        None => true,
        Some(value) => value.as_f64().is_some_and(|t| t <= now + SKEW),
    };
    claims["iss"] == ISSUER && audience_ok && exp_ok && not_before_ok("nbf") && not_before_ok("iat")
}

/// Independent check of a Lago HMAC delivery: the id of the first key whose
/// base64 HMAC-SHA256 of `body` equals `signature`.
pub fn lago_hmac_key_for(signature: &str, body: &[u8]) -> Option<&'static str> {
    let expected = STANDARD.decode(signature).ok()?;
    LAGO_HMAC_KEYS.iter().find_map(|(id, secret)| {
        Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .is_ok_and(|m| m.chain_update(body).verify_slice(&expected).is_ok())
            .then_some(*id)
    })
}

/// Independent check of a Lago JWT delivery: RS256 by the Lago key over the
/// signing input, `iss` is Lago's, `data` equals `body` byte for byte.
pub fn lago_jwt_signed_for(token: &str, body: &[u8]) -> bool {
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::signature::Verifier as _;
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, payload_b64, signature_b64] = parts.as_slice() else {
        return false;
    };
    let Ok(public) = rsa::RsaPublicKey::from_public_key_pem(LAGO_PUBLIC_PEM) else {
        return false;
    };
    let (Ok(signature), Ok(claims)) = (
        URL_SAFE_NO_PAD.decode(signature_b64),
        URL_SAFE_NO_PAD.decode(payload_b64),
    ) else {
        return false;
    };
    let Ok(signature) = rsa::pkcs1v15::Signature::try_from(signature.as_slice()) else {
        return false;
    };
    let signed = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public)
        .verify(format!("{header_b64}.{payload_b64}").as_bytes(), &signature)
        .is_ok();
    let Ok(claims) = serde_json::from_slice::<Value>(&claims) else {
        return false;
    };
    signed
        && claims["iss"] == LAGO_ISSUER
        && claims["data"].as_str().map(str::as_bytes) == Some(body)
}

/// The Lago webhook section the lago target compiles: both algorithms, two
/// HMAC keys (rotation), the fixture public key, a small body limit.
pub fn lago_webhook_json() -> Value {
    json!({
        "provider": "lago",
        "algorithms": ["hmac", "jwt"],
        "hmac_keys": LAGO_HMAC_KEYS.iter()
            .map(|(id, secret)| json!({"id": id, "secret": secret}))
            .collect::<Vec<_>>(),
        "jwt": {"issuer": LAGO_ISSUER, "public_key": LAGO_PUBLIC_KEY_B64},
        "max_body_bytes": 65536,
        "replay_window_seconds": 86400
    })
}

/// Environment for the policy target: any `*_env` name resolves, so the
/// fuzzer reaches the checks behind secret resolution.
pub fn policy_env(name: &str) -> Option<String> {
    if name.is_empty() || name.starts_with("UNSET") {
        None
    } else if name.contains("PUBLIC_KEY") {
        Some(LAGO_PUBLIC_KEY_B64.to_owned())
    } else {
        Some(URL_SAFE_NO_PAD.encode([0x5a; 64]))
    }
}

/// The jwt_authn-metadata policy of the property target.
pub fn metadata_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let policy = json!({
            "identity": {
                "source": "jwt_authn_metadata",
                "metadata_key": "jwt_payload",
                "roles_claim": "realm_access.roles",
                "tenant_claim": "tenant_id",
                "cross_tenant_roles": ["PLATFORM_ADMIN"]
            },
            "role_inherits": {"ADMIN": ["OPERATOR"]},
            "rules": [
                {"name": "admin", "methods": ["GET"], "path": "/admin", "any_of": ["ADMIN"]},
                {"name": "tenant", "methods": ["GET"], "path": "/t/{tenant_id}", "authenticated": true,
                 "tenant_param": "tenant_id"}
            ]
        })
        .to_string();
        match Policy::from_json(policy.as_bytes(), &|_| None) {
            Ok(policy) => policy,
            Err(err) => panic!("the fuzz metadata policy must compile: {err}"),
        }
    })
}

/// Whether a roles claim value (list of strings, or a string of roles
/// separated by ASCII whitespace) names `role`.
pub fn claim_names_role(roles: &Value, role: &str) -> bool {
    match roles {
        Value::String(text) => text.split_ascii_whitespace().any(|r| r == role),
        Value::Array(items) => items.iter().any(|item| item.as_str() == Some(role)),
        _ => false,
    }
}

/// Splits `data` into the first `count` `\n`-terminated fields and the rest.
pub fn split_fields(data: &[u8], count: usize) -> (Vec<&[u8]>, &[u8]) {
    let mut fields = Vec::with_capacity(count);
    let mut rest = data;
    for _ in 0..count {
        match rest.iter().position(|&b| b == b'\n') {
            Some(at) => {
                fields.push(&rest[..at]);
                rest = &rest[at + 1..];
            }
            None => {
                fields.push(rest);
                rest = &[];
            }
        }
    }
    (fields, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use avb_edge::policy::identity::bearer_token;

    #[test]
    fn fixed_policies_compile() {
        assert!(!routing_policy().rules().is_empty());
        assert!(!jwt_policy().rules().is_empty());
        assert!(!metadata_policy().rules().is_empty());
    }

    #[test]
    fn reference_matcher_prefers_literal_then_param_then_rest() {
        let policy = routing_policy();
        let name = |path: &str, method: &str| {
            reference_best_match(policy, path, method).map(|i| policy.rules()[i].name().to_owned())
        };
        assert_eq!(
            name("/api/v1/audit/logs/export", "GET").as_deref(),
            Some("audit.logs.export")
        );
        assert_eq!(
            name("/api/v1/audit/logs/42", "GET").as_deref(),
            Some("audit.logs.detail")
        );
        assert_eq!(
            name("/api/v1/audit/logs/42", "POST").as_deref(),
            Some("api.rest")
        );
        assert_eq!(name("/api/v1/x/y", "GET").as_deref(), Some("api.rest.get"));
        assert_eq!(name("/api/v1", "DELETE").as_deref(), Some("api.rest"));
        assert_eq!(name("/admin/dash", "GET").as_deref(), Some("dash.admin"));
        assert_eq!(name("/acme/dash", "GET").as_deref(), Some("dash"));
        assert_eq!(name("/", "GET").as_deref(), Some("root"));
        assert_eq!(name("/nothing", "GET"), None);
    }

    #[test]
    fn oracle_accepts_every_fixture_token_and_refuses_a_tampered_one() {
        let tokens: Value = serde_json::from_str(FIXTURE_TOKENS).unwrap_or(Value::Null);
        let tokens = tokens["tokens"].as_object().cloned().unwrap_or_default();
        assert_eq!(tokens.len(), 7);
        for (alg, token) in tokens {
            let token = token.as_str().unwrap_or_default();
            assert!(signed_by_fixture_key(token), "{alg}");
            let tampered = format!("{}x", token.trim_end_matches('A'));
            assert!(!signed_by_fixture_key(&tampered), "{alg} tampered");
            assert!(bearer_token(&format!("Bearer {token}")).is_ok());
        }
    }

    #[test]
    fn lago_oracles_accept_the_fixture_deliveries_only() {
        let body = include_bytes!("../../plugin/tests/fixtures/lago/body.json");
        assert_eq!(
            lago_hmac_key_for("rg5IjrgwVZPEA2TMBsmaPJN1vg6bDS5YDOzXz55iS8I=", body),
            Some("current")
        );
        assert_eq!(
            lago_hmac_key_for("rg5IjrgwVZPEA2TMBsmaPJN1vg6bDS5YDOzXz55iS8I=", b"{}"),
            None
        );
        let token = include_str!("../../plugin/tests/fixtures/lago/valid.jwt").trim();
        assert!(lago_jwt_signed_for(token, body));
        assert!(!lago_jwt_signed_for(token, b"{}"));
    }

    #[test]
    fn structured_tokens_verify_and_claims_rules_hold() {
        let claims = json!({"iss": ISSUER, "aud": ["x", "avb-api"], "exp": NOW + 1, "nbf": NOW});
        let token = hs256_over(
            &fixture_hs256_secret(),
            br#"{"alg":"HS256","kid":"hs256-1"}"#,
            claims.to_string().as_bytes(),
        );
        assert!(signed_by_fixture_key(&token));
        assert!(claims_acceptable(&claims));
        assert!(!claims_acceptable(
            &json!({"iss": ISSUER, "aud": "avb-api", "exp": NOW - 61})
        ));
        assert!(!claims_acceptable(
            &json!({"iss": ISSUER, "aud": "other", "exp": NOW + 9})
        ));
        assert!(!claims_acceptable(
            &json!({"iss": ISSUER, "aud": "avb-api", "exp": NOW + 9, "nbf": NOW + 61})
        ));
    }

    #[test]
    fn split_fields_takes_lines_then_the_rest() {
        let (fields, rest) = split_fields(b"a\nb\nrest\nmore", 2);
        assert_eq!(fields, vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(rest, b"rest\nmore");
        let (fields, rest) = split_fields(b"only", 3);
        assert_eq!(fields, vec![&b"only"[..], &b""[..], &b""[..]]);
        assert!(rest.is_empty());
    }
}
