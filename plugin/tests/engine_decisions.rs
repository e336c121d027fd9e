//! Decisions of the policy engine: the shipped AgentVoiceBox table row by row,
//! and every rule of issue 2 (400 before any rule, 401, 403, dry run,
//! tenants, unmatched handling, webhooks, jwt_authn metadata, the token cache).

// A test crate: helpers outside #[test] fns may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use avb_edge::policy::identity::{sign_hs, HmacAlgorithm};
use avb_edge::policy::{
    AuditLevel, Authorization, Decision, DecisionKind, Effect, Mode, Policy, Request, TokenCache,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

const ISSUER: &str = "https://id.agentvoicebox.example";
/// The local-stack dev key (envoy/dev.env), injected through `k_env`.
const DEV_KEY_B64: &str = "ztaE2Q9vzzMOFaw52fhRZjLEA3NiZGG_jFhxPeWNSuA";
const NOW: u64 = 1_800_000_000;

fn env(name: &str) -> Option<String> {
    match name {
        "AVB_JWT_HS_KEY" => Some(DEV_KEY_B64.to_owned()),
        "AVB_INGEST_TOKEN" => Some("ingest-token".to_owned()),
        "LAGO_HMAC_KEY" => Some("6a1e7c1e-4b7a-4f0e-9a53-2f6d8c4b1e77".to_owned()),
        _ => None,
    }
}

fn identity_section() -> Value {
    json!({
        "source": "bearer_jwt",
        "issuers": [{
            "issuer": ISSUER,
            "audiences": ["avb-api"],
            "jwks": {"keys": [{"kty": "oct", "kid": "dev-hs-1", "alg": "HS256", "k_env": "AVB_JWT_HS_KEY"}]}
        }],
        "roles_claim": "realm_access.roles",
        "subject_claim": "sub",
        "tenant_claim": "tenant_id",
        "clock_skew_seconds": 60,
        "cross_tenant_roles": ["PLATFORM_ADMIN"]
    })
}

/// The AgentVoiceBox table: (rule name, methods, path, roles).
const TABLE: [(&str, &[&str], &str, &[&str]); 12] = [
    (
        "get_audit_logs",
        &["GET"],
        "/api/v1/audit/logs",
        &["OPERATOR"],
    ),
    (
        "get_audit_log_detail",
        &["GET"],
        "/api/v1/audit/logs/{id}",
        &["OPERATOR"],
    ),
    (
        "export_audit_logs",
        &["GET"],
        "/api/v1/audit/logs/export",
        &["ADMIN"],
    ),
    (
        "get_audit_statistics",
        &["GET"],
        "/api/v1/audit/statistics",
        &["OPERATOR"],
    ),
    (
        "purge_old_logs",
        &["POST"],
        "/api/v1/audit/purge",
        &["ADMIN"],
    ),
    (
        "get_stt_config",
        &["GET"],
        "/api/v1/stt/config",
        &["ADMIN", "DEVELOPER"],
    ),
    (
        "update_stt_config",
        &["PUT", "PATCH"],
        "/api/v1/stt/config",
        &["ADMIN"],
    ),
    (
        "get_stt_metrics",
        &["GET"],
        "/api/v1/stt/metrics",
        &["OPERATOR"],
    ),
    ("test_stt", &["POST"], "/api/v1/stt/test", &["DEVELOPER"]),
    ("get_llm_config", &["GET"], "/api/v1/llm/config", &["ADMIN"]),
    (
        "update_llm_config",
        &["PUT", "PATCH"],
        "/api/v1/llm/config",
        &["ADMIN"],
    ),
    ("test_llm", &["POST"], "/api/v1/llm/test", &["DEVELOPER"]),
];

fn agentvoicebox_policy_json() -> Value {
    let rules: Vec<Value> = TABLE
        .iter()
        .map(|(name, methods, path, roles)| {
            json!({"name": name, "methods": methods, "path": path, "any_of": roles})
        })
        .chain([json!({"name": "health", "methods": ["GET"], "path": "/healthz", "public": true})])
        .collect();
    json!({
        "mode": "enforce",
        "unmatched": "deny",
        "identity": identity_section(),
        "role_inherits": {"ADMIN": ["OPERATOR", "DEVELOPER"]},
        "rules": rules
    })
}

fn compile(policy: &Value) -> Policy {
    Policy::from_json(policy.to_string().as_bytes(), &env)
        .unwrap_or_else(|e| panic!("policy refused: {e}"))
}

fn agentvoicebox() -> Policy {
    compile(&agentvoicebox_policy_json())
}

fn token_with(claims: Value) -> String {
    let key = URL_SAFE_NO_PAD.decode(DEV_KEY_B64).unwrap();
    sign_hs(
        HmacAlgorithm::Hs256,
        &key,
        Some("dev-hs-1"),
        &claims.to_string(),
    )
}

fn token(roles: &[&str]) -> String {
    token_with(json!({
        "iss": ISSUER, "aud": "avb-api", "sub": "user-1", "tenant_id": "acme",
        "realm_access": {"roles": roles}, "iat": NOW - 10, "exp": NOW + 3600
    }))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn decide(policy: &Policy, method: &str, path: &str, authorization: Option<&str>) -> Decision {
    let request = Request {
        method: Some(method),
        path: Some(path),
        authorization: authorization.map_or(Authorization::Absent, Authorization::One),
        jwt_payload: None,
    };
    policy.decide(&request, NOW)
}

fn rule_name(policy: &Policy, decision: &Decision) -> Option<String> {
    decision.rule.map(|i| policy.rules()[i].name().to_owned())
}

/// The roles that grant a row: those listed, plus ADMIN (which inherits all).
fn grants(row_roles: &[&str], role: &str) -> bool {
    row_roles.contains(&role) || role == "ADMIN"
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "42")
}

#[test]
fn every_table_row_is_allowed_for_its_roles_and_denied_otherwise() {
    let policy = agentvoicebox();
    for (name, methods, path, roles) in TABLE {
        let path = concrete(path);
        for method in methods {
            for role in ["ADMIN", "OPERATOR", "DEVELOPER", "VIEWER"] {
                let header = bearer(&token(&[role]));
                let d = decide(&policy, method, &path, Some(&header));
                assert_eq!(
                    rule_name(&policy, &d).as_deref(),
                    Some(name),
                    "{method} {path}"
                );
                if grants(roles, role) {
                    assert_eq!(d.kind, DecisionKind::Allowed, "{name} {role}: {d:?}");
                    assert_eq!(
                        (d.effect, d.status, d.reason),
                        (Effect::Allow, 200, "role_granted")
                    );
                    let identity = d.identity.unwrap();
                    assert_eq!(identity.subject, "user-1");
                    assert_eq!(identity.tenant.as_deref(), Some("acme"));
                } else {
                    assert_eq!(d.kind, DecisionKind::Denied, "{name} {role}: {d:?}");
                    assert_eq!((d.effect, d.status), (Effect::Deny, 403));
                    assert_eq!(
                        (d.error, d.reason),
                        (Some("permission_denied"), "missing_role")
                    );
                }
            }
            let anonymous = decide(&policy, method, &path, None);
            assert_eq!(anonymous.kind, DecisionKind::Unauthenticated, "{name}");
            assert_eq!((anonymous.status, anonymous.reason), (401, "missing_token"));
            assert!(!anonymous.token_presented);
        }
    }
}

#[test]
fn methods_not_in_the_table_fall_to_unmatched_deny() {
    let policy = agentvoicebox();
    let admin = bearer(&token(&["ADMIN"]));
    for (_, methods, path, _) in TABLE {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
            if methods.contains(&method) {
                continue;
            }
            // The same path may be served for this method by another row.
            let row_for_method = TABLE
                .iter()
                .any(|(_, m, p, _)| *p == path && m.contains(&method));
            if row_for_method {
                continue;
            }
            let d = decide(&policy, method, &concrete(path), Some(&admin));
            assert_eq!(
                (d.status, d.reason),
                (403, "no_matching_rule"),
                "{method} {path}"
            );
            assert_eq!(d.rule, None);
        }
    }
}

#[test]
fn export_is_more_specific_than_detail() {
    let policy = agentvoicebox();
    let operator = bearer(&token(&["OPERATOR"]));
    let d = decide(&policy, "GET", "/api/v1/audit/logs/export", Some(&operator));
    assert_eq!(rule_name(&policy, &d).as_deref(), Some("export_audit_logs"));
    assert_eq!(d.status, 403, "OPERATOR may read details but not export");
    let d = decide(&policy, "GET", "/api/v1/audit/logs/7", Some(&operator));
    assert_eq!(
        rule_name(&policy, &d).as_deref(),
        Some("get_audit_log_detail")
    );
    assert_eq!(d.status, 200);
}

#[test]
fn lookalike_export_path_is_rejected_not_matched_as_detail() {
    let policy = agentvoicebox();
    let operator = bearer(&token(&["OPERATOR"]));
    for path in [
        "/api/v1/audit/logs/export.",
        "/api/v1/audit/logs/export/",
        "/api/v1/audit/logs/expor%74",
        "/api/v1/audit/logs/export;.csv",
        "/api/v1/audit/logs/x/../export",
        "/api/v1/audit//logs/export",
        "/api/v1/audit/logs%2Fexport",
        "/api/v1/audit/logs%2fexport",
        "/api/v1/audit/logs\\export",
        "/api/v1/audit/logs/export#x",
    ] {
        let d = decide(&policy, "GET", path, Some(&operator));
        assert_eq!(d.kind, DecisionKind::Rejected, "{path}: {d:?}");
        assert_eq!(
            (d.status, d.error, d.reason),
            (400, Some("bad_request"), "non_canonical_path")
        );
        assert_eq!(d.rule, None, "a rejected request never reaches a rule");
        assert_eq!(d.identity, None);
    }
}

#[test]
fn query_string_is_ignored_for_matching() {
    let policy = agentvoicebox();
    let operator = bearer(&token(&["OPERATOR"]));
    let d = decide(
        &policy,
        "GET",
        "/api/v1/audit/logs?since=2024&x=/..",
        Some(&operator),
    );
    assert_eq!(rule_name(&policy, &d).as_deref(), Some("get_audit_logs"));
    assert_eq!(d.status, 200);
    assert_eq!(d.canonical_path.as_deref(), Some("/api/v1/audit/logs"));
}

#[test]
fn matching_is_case_sensitive() {
    let policy = agentvoicebox();
    let admin = bearer(&token(&["ADMIN"]));
    let d = decide(&policy, "GET", "/API/v1/audit/logs", Some(&admin));
    assert_eq!(d.reason, "no_matching_rule");
}

#[test]
fn missing_path_bad_and_lower_case_methods_are_bad_requests() {
    let policy = agentvoicebox();
    let admin = bearer(&token(&["ADMIN"]));
    let no_path = policy.decide(
        &Request {
            method: Some("GET"),
            path: None,
            authorization: Authorization::One(&admin),
            jwt_payload: None,
        },
        NOW,
    );
    assert_eq!((no_path.status, no_path.reason), (400, "missing_path"));
    let no_method = policy.decide(
        &Request {
            method: None,
            path: Some("/healthz"),
            authorization: Authorization::Absent,
            jwt_payload: None,
        },
        NOW,
    );
    assert_eq!((no_method.status, no_method.reason), (400, "bad_method"));
    for method in ["get", "Get", "GE T", ""] {
        let d = decide(&policy, method, "/api/v1/audit/logs", Some(&admin));
        assert_eq!(
            (d.kind, d.status, d.reason),
            (DecisionKind::Rejected, 400, "bad_method"),
            "{method:?}"
        );
    }
    for path in ["*", "http://example.com/healthz", "healthz", ""] {
        let d = decide(&policy, "GET", path, None);
        assert_eq!(d.status, 400, "{path:?}");
    }
}

#[test]
fn head_is_not_implied_by_get() {
    let policy = agentvoicebox();
    assert_eq!(decide(&policy, "GET", "/healthz", None).status, 200);
    let head = decide(&policy, "HEAD", "/healthz", None);
    assert_eq!((head.status, head.reason), (403, "no_matching_rule"));
}

#[test]
fn public_rule_needs_no_token_and_ignores_a_bad_one() {
    let policy = agentvoicebox();
    let d = decide(&policy, "GET", "/healthz", None);
    assert_eq!((d.kind, d.reason), (DecisionKind::Allowed, "public"));
    assert_eq!(d.identity, None);
    let d = decide(&policy, "GET", "/healthz", Some("Bearer not.a.token"));
    assert_eq!((d.kind, d.reason), (DecisionKind::Allowed, "public"));
}

#[test]
fn two_authorization_headers_are_unauthenticated_everywhere() {
    let policy = agentvoicebox();
    for path in ["/healthz", "/api/v1/audit/logs", "/nowhere"] {
        let d = policy.decide(
            &Request {
                method: Some("GET"),
                path: Some(path),
                authorization: Authorization::Multiple,
                jwt_payload: None,
            },
            NOW,
        );
        assert_eq!(d.kind, DecisionKind::Unauthenticated, "{path}");
        assert_eq!((d.status, d.reason), (401, "duplicate_authorization"));
        assert!(d.token_presented);
    }
}

#[test]
fn invalid_and_expired_tokens_are_unauthenticated_with_token_presented() {
    let policy = agentvoicebox();
    let path = "/api/v1/audit/logs";
    let expired = token_with(json!({
        "iss": ISSUER, "aud": "avb-api", "sub": "u", "realm_access": {"roles": ["ADMIN"]},
        "exp": NOW - 61
    }));
    let d = decide(&policy, "GET", path, Some(&bearer(&expired)));
    assert_eq!(
        (d.status, d.error, d.reason),
        (401, Some("unauthenticated"), "token_expired")
    );
    assert!(d.token_presented);
    assert!(!d.detail.contains(&expired));

    let mut tampered = token(&["OPERATOR"]);
    tampered.push('x');
    let d = decide(&policy, "GET", path, Some(&bearer(&tampered)));
    assert_eq!((d.status, d.reason), (401, "invalid_token"));
    assert!(!d.detail.contains(&tampered));

    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", ""] {
        let d = decide(&policy, "GET", path, Some(header));
        assert_eq!((d.status, d.reason), (401, "invalid_token"), "{header:?}");
        assert!(d.token_presented);
    }
    let lower_scheme = format!("bearer {}", token(&["OPERATOR"]));
    assert_eq!(
        decide(&policy, "GET", path, Some(&lower_scheme)).status,
        200
    );
}

#[test]
fn claims_that_are_not_header_safe_are_unauthenticated() {
    let policy = agentvoicebox();
    for claims in [
        json!({"iss": ISSUER, "aud": "avb-api", "sub": "a,b", "exp": NOW + 60}),
        json!({"iss": ISSUER, "aud": "avb-api", "sub": "a\r\nx-avb-roles: ADMIN", "exp": NOW + 60}),
        json!({"iss": ISSUER, "aud": "avb-api", "exp": NOW + 60}),
        json!({"iss": ISSUER, "aud": "avb-api", "sub": "a", "tenant_id": "t,u", "exp": NOW + 60}),
        json!({"iss": ISSUER, "aud": "avb-api", "sub": "a", "realm_access": {"roles": ["A,DMIN"]}, "exp": NOW + 60}),
    ] {
        let d = decide(
            &policy,
            "GET",
            "/api/v1/audit/logs",
            Some(&bearer(&token_with(claims.clone()))),
        );
        assert_eq!((d.status, d.reason), (401, "invalid_token"), "{claims}");
    }
}

#[test]
fn roles_claim_may_be_a_space_separated_string() {
    let policy = agentvoicebox();
    let t = token_with(json!({
        "iss": ISSUER, "aud": "avb-api", "sub": "u", "realm_access": {"roles": "VIEWER OPERATOR"},
        "exp": NOW + 60
    }));
    let d = decide(
        &policy,
        "GET",
        "/api/v1/audit/statistics",
        Some(&bearer(&t)),
    );
    assert_eq!(d.status, 200);
    assert_eq!(d.identity.unwrap().roles, ["OPERATOR", "VIEWER"]);
}

#[test]
fn effective_roles_include_inherited_roles_sorted() {
    let policy = agentvoicebox();
    let d = decide(
        &policy,
        "GET",
        "/api/v1/stt/metrics",
        Some(&bearer(&token(&["ADMIN"]))),
    );
    assert_eq!(
        d.identity.unwrap().roles,
        ["ADMIN", "DEVELOPER", "OPERATOR"]
    );
}

fn custom_policy(extra: Value) -> Policy {
    let mut policy = json!({
        "identity": identity_section(),
        "role_inherits": {"ADMIN": ["OPERATOR"]},
        "rules": [
            {"name": "ops", "methods": ["GET"], "path": "/ops", "any_of": ["OPERATOR"]},
            {"name": "both", "methods": ["GET"], "path": "/both", "all_of": ["OPERATOR", "DEVELOPER"]},
            {"name": "me", "path": "/me", "authenticated": true},
            {"name": "tenant.items", "methods": ["GET"], "path": "/tenants/{tenant}/items/**",
             "any_of": ["OPERATOR"], "tenant_param": "tenant"},
            {"name": "canary", "methods": ["GET"], "path": "/canary", "any_of": ["ADMIN"], "mode": "dry_run", "audit": "all"},
            {"name": "quiet", "methods": ["GET"], "path": "/quiet", "public": true, "audit": "none"}
        ]
    });
    for (key, value) in extra.as_object().unwrap() {
        policy[key] = value.clone();
    }
    compile(&policy)
}

#[test]
fn all_of_needs_every_role() {
    let policy = custom_policy(json!({}));
    let one = bearer(&token(&["OPERATOR"]));
    let two = bearer(&token(&["OPERATOR", "DEVELOPER"]));
    assert_eq!(
        decide(&policy, "GET", "/both", Some(&one)).reason,
        "missing_role"
    );
    assert_eq!(
        decide(&policy, "GET", "/both", Some(&two)).reason,
        "role_granted"
    );
}

#[test]
fn authenticated_rule_needs_only_a_valid_token() {
    let policy = custom_policy(json!({}));
    let d = decide(&policy, "DELETE", "/me", Some(&bearer(&token(&[]))));
    assert_eq!((d.status, d.reason), (200, "authenticated"));
    assert_eq!(decide(&policy, "DELETE", "/me", None).status, 401);
}

#[test]
fn tenant_param_must_match_the_token_tenant() {
    let policy = custom_policy(json!({}));
    let acme = bearer(&token(&["OPERATOR"]));
    let d = decide(&policy, "GET", "/tenants/acme/items/1", Some(&acme));
    assert_eq!((d.status, d.reason), (200, "role_granted"));
    assert_eq!(
        decide(&policy, "GET", "/tenants/acme/items", Some(&acme)).status,
        200
    );
    let d = decide(&policy, "GET", "/tenants/globex/items/1", Some(&acme));
    assert_eq!((d.status, d.reason), (403, "tenant_mismatch"));
    let no_tenant = bearer(&token_with(json!({
        "iss": ISSUER, "aud": "avb-api", "sub": "u", "realm_access": {"roles": ["OPERATOR"]},
        "exp": NOW + 60
    })));
    let d = decide(&policy, "GET", "/tenants/acme/items/1", Some(&no_tenant));
    assert_eq!((d.status, d.reason), (403, "tenant_mismatch"));
}

#[test]
fn cross_tenant_role_may_cross_tenants() {
    let policy = custom_policy(json!({}));
    let platform = bearer(&token(&["OPERATOR", "PLATFORM_ADMIN"]));
    let d = decide(&policy, "GET", "/tenants/globex/items/1", Some(&platform));
    assert_eq!(d.status, 200);
}

#[test]
fn roles_are_checked_before_the_tenant() {
    let policy = custom_policy(json!({}));
    let developer = bearer(&token(&["DEVELOPER"]));
    let d = decide(&policy, "GET", "/tenants/acme/items/1", Some(&developer));
    assert_eq!(d.reason, "missing_role");
}

#[test]
fn unmatched_modes_deny_authenticate_or_allow() {
    let deny = custom_policy(json!({"unmatched": "deny"}));
    let d = decide(&deny, "GET", "/nowhere", Some(&bearer(&token(&["ADMIN"]))));
    assert_eq!(
        (d.kind, d.status, d.reason),
        (DecisionKind::Denied, 403, "no_matching_rule")
    );

    let authenticated = custom_policy(json!({"unmatched": "authenticated"}));
    assert_eq!(decide(&authenticated, "GET", "/nowhere", None).status, 401);
    let d = decide(
        &authenticated,
        "GET",
        "/nowhere",
        Some(&bearer(&token(&[]))),
    );
    assert_eq!((d.status, d.reason, d.rule), (200, "authenticated", None));
    assert!(d.identity.is_some());

    let allow = custom_policy(json!({"unmatched": "allow"}));
    let d = decide(&allow, "GET", "/nowhere", None);
    assert_eq!(
        (d.kind, d.status, d.reason),
        (DecisionKind::Allowed, 200, "unmatched_allowed")
    );
    assert_eq!(decide(&allow, "GET", "/nowhere/../ops", None).status, 400);
}

#[test]
fn dry_run_policy_lets_would_be_denials_through_and_reports_them() {
    let policy = custom_policy(json!({"mode": "dry_run"}));
    assert_eq!(policy.mode(), Mode::DryRun);
    let developer = bearer(&token(&["DEVELOPER"]));
    let d = decide(&policy, "GET", "/ops", Some(&developer));
    assert_eq!(d.kind, DecisionKind::DryRunDenied);
    assert_eq!((d.effect, d.status), (Effect::Allow, 200));
    assert_eq!(
        (d.error, d.reason),
        (Some("permission_denied"), "missing_role")
    );
    assert_eq!(rule_name(&policy, &d).as_deref(), Some("ops"));

    let d = decide(&policy, "GET", "/ops", None);
    assert_eq!(
        (d.kind, d.status, d.error, d.reason),
        (
            DecisionKind::DryRunDenied,
            200,
            Some("unauthenticated"),
            "missing_token"
        )
    );

    let d = decide(&policy, "GET", "/nowhere", None);
    assert_eq!(
        (d.kind, d.reason),
        (DecisionKind::DryRunDenied, "no_matching_rule")
    );

    let d = decide(&policy, "GET", "/ops", Some(&bearer(&token(&["OPERATOR"]))));
    assert_eq!(d.kind, DecisionKind::Allowed, "allowed stays allowed");
}

#[test]
fn dry_run_never_lets_a_bad_path_through() {
    let policy = custom_policy(json!({"mode": "dry_run"}));
    for path in ["/ops/../canary", "/ops;x", "/o%2Fps"] {
        let d = decide(&policy, "GET", path, None);
        assert_eq!(
            (d.kind, d.effect, d.status),
            (DecisionKind::Rejected, Effect::Deny, 400),
            "{path}"
        );
    }
    let d = decide(&policy, "get", "/ops", None);
    assert_eq!((d.kind, d.status), (DecisionKind::Rejected, 400));
}

#[test]
fn rule_mode_overrides_policy_mode() {
    let enforce = custom_policy(json!({}));
    let d = decide(
        &enforce,
        "GET",
        "/canary",
        Some(&bearer(&token(&["OPERATOR"]))),
    );
    assert_eq!(
        (d.kind, d.status, d.reason),
        (DecisionKind::DryRunDenied, 200, "missing_role")
    );
    let d = decide(
        &enforce,
        "GET",
        "/ops",
        Some(&bearer(&token(&["DEVELOPER"]))),
    );
    assert_eq!(d.kind, DecisionKind::Denied, "other rules stay enforced");

    let mut raw = json!({
        "mode": "dry_run",
        "identity": identity_section(),
        "rules": [{"name": "strict", "path": "/strict", "any_of": ["ADMIN"], "mode": "enforce"}]
    });
    let policy = compile(&raw);
    assert_eq!(
        decide(&policy, "GET", "/strict", None).kind,
        DecisionKind::Unauthenticated
    );
    raw["rules"][0]["mode"] = json!(null);
    let policy = compile(&raw);
    assert_eq!(
        decide(&policy, "GET", "/strict", None).kind,
        DecisionKind::DryRunDenied
    );
}

fn lago_webhooks() -> Value {
    json!({"lago": {"provider": "lago", "algorithms": ["hmac"],
                    "hmac_keys": [{"id": "current", "secret_env": "LAGO_HMAC_KEY"}]}})
}

#[test]
fn webhook_rule_hands_the_request_to_the_named_verifier() {
    let policy = custom_policy(json!({
        "webhooks": lago_webhooks(),
        "rules": [{"name": "billing.lago", "methods": ["POST"], "path": "/api/v1/billing/webhooks/lago", "webhook": "lago"}]
    }));
    let d = decide(&policy, "POST", "/api/v1/billing/webhooks/lago", None);
    assert_eq!(
        (d.kind, d.effect, d.status, d.reason),
        (DecisionKind::Webhook, Effect::Allow, 200, "webhook")
    );
    assert_eq!(d.webhook.as_deref(), Some("lago"));
    assert!(policy.webhook("lago").is_some());
    assert!(policy.webhook("stripe").is_none());
    assert_eq!(policy.webhook_names().collect::<Vec<_>>(), ["lago"]);
    let get = decide(&policy, "GET", "/api/v1/billing/webhooks/lago", None);
    assert_eq!(get.reason, "no_matching_rule");
}

#[test]
fn audit_level_is_none_without_audit_section() {
    let policy = custom_policy(json!({}));
    assert!(policy.audit().is_none());
    for path in ["/ops", "/canary", "/quiet", "/nowhere", "/x/../y"] {
        assert_eq!(
            decide(&policy, "GET", path, None).audit,
            AuditLevel::None,
            "{path}"
        );
    }
}

#[test]
fn audit_level_is_the_rule_override_or_the_policy_default() {
    let policy = custom_policy(json!({"audit": {
        "cluster": "avb_companion", "authority": "avb-companion", "path": "/v1/audit/events",
        "token_env": "AVB_INGEST_TOKEN", "events": "denied"
    }}));
    assert_eq!(policy.audit().unwrap().token, "ingest-token");
    assert_eq!(
        decide(&policy, "GET", "/ops", None).audit,
        AuditLevel::Denied
    );
    assert_eq!(
        decide(&policy, "GET", "/canary", None).audit,
        AuditLevel::All
    );
    assert_eq!(
        decide(&policy, "GET", "/quiet", None).audit,
        AuditLevel::None
    );
    assert_eq!(
        decide(&policy, "GET", "/nowhere", None).audit,
        AuditLevel::Denied
    );
    assert_eq!(
        decide(&policy, "GET", "/x/../y", None).audit,
        AuditLevel::Denied
    );
}

fn metadata_policy() -> Policy {
    compile(&json!({
        "identity": {
            "source": "jwt_authn_metadata",
            "metadata_key": "avb_payload",
            "roles_claim": "realm_access.roles",
            "tenant_claim": "tenant_id"
        },
        "role_inherits": {"ADMIN": ["OPERATOR"]},
        "rules": [{"name": "ops", "methods": ["GET"], "path": "/ops", "any_of": ["OPERATOR"]}]
    }))
}

fn decide_with_payload(
    policy: &Policy,
    authorization: Authorization<'_>,
    payload: Option<&Value>,
) -> Decision {
    policy.decide(
        &Request {
            method: Some("GET"),
            path: Some("/ops"),
            authorization,
            jwt_payload: payload,
        },
        NOW,
    )
}

#[test]
fn jwt_authn_metadata_supplies_the_identity() {
    let policy = metadata_policy();
    assert_eq!(policy.jwt_authn_metadata_key(), Some("avb_payload"));
    let payload = json!({"sub": "svc", "tenant_id": "acme", "realm_access": {"roles": ["ADMIN"]}});
    let d = decide_with_payload(&policy, Authorization::Absent, Some(&payload));
    assert_eq!((d.status, d.reason), (200, "role_granted"));
    assert_eq!(d.identity.unwrap().roles, ["ADMIN", "OPERATOR"]);
    let viewer = json!({"sub": "svc", "realm_access": {"roles": ["VIEWER"]}});
    assert_eq!(
        decide_with_payload(&policy, Authorization::Absent, Some(&viewer)).status,
        403
    );
}

#[test]
fn jwt_authn_metadata_missing_is_unauthenticated_whatever_the_headers_say() {
    let policy = metadata_policy();
    let d = decide_with_payload(&policy, Authorization::Absent, None);
    assert_eq!((d.status, d.reason), (401, "missing_token"));
    assert!(!d.token_presented);
    // A bearer header is not parsed: only Envoy's verified payload counts.
    let forged = bearer(&token(&["ADMIN"]));
    let d = decide_with_payload(&policy, Authorization::One(&forged), None);
    assert_eq!((d.status, d.reason), (401, "missing_token"));
    assert!(d.token_presented);
    let bad = json!({"sub": "a,b"});
    assert_eq!(
        decide_with_payload(&policy, Authorization::Absent, Some(&bad)).reason,
        "invalid_token"
    );
}

#[test]
fn cached_decisions_equal_uncached_ones() {
    let policy = agentvoicebox();
    let mut cache = TokenCache::default();
    let tokens: Vec<String> = ["ADMIN", "OPERATOR", "DEVELOPER", "VIEWER"]
        .iter()
        .map(|r| bearer(&token(&[r])))
        .chain(["Bearer x.y.z".to_owned(), "Basic abc".to_owned()])
        .collect();
    for round in 0..2 {
        for (_, methods, path, _) in TABLE {
            for header in &tokens {
                let request = Request {
                    method: Some(methods[0]),
                    path: Some(path),
                    authorization: Authorization::One(header),
                    jwt_payload: None,
                };
                assert_eq!(
                    policy.decide_cached(&request, NOW, &mut cache),
                    policy.decide(&request, NOW),
                    "round {round} {path}"
                );
            }
        }
    }
    assert_eq!(cache.len(), 4, "only valid tokens are cached");
}

#[test]
fn cached_token_is_not_served_after_it_expires() {
    let policy = agentvoicebox();
    let mut cache = TokenCache::default();
    let header = bearer(&token(&["OPERATOR"]));
    let request = Request {
        method: Some("GET"),
        path: Some("/api/v1/audit/logs"),
        authorization: Authorization::One(&header),
        jwt_payload: None,
    };
    assert_eq!(policy.decide_cached(&request, NOW, &mut cache).status, 200);
    let later = NOW + 3600 + 60;
    let d = policy.decide_cached(&request, later, &mut cache);
    assert_eq!((d.status, d.reason), (401, "token_expired"));
    assert_eq!(d, policy.decide(&request, later));
    assert!(cache.is_empty());
}

#[test]
fn cache_filled_by_another_policy_is_cleared() {
    let first = agentvoicebox();
    let mut changed = agentvoicebox_policy_json();
    changed["role_inherits"] = json!({});
    let second = compile(&changed);
    assert_ne!(first.revision(), second.revision());
    let mut cache = TokenCache::default();
    let header = bearer(&token(&["ADMIN"]));
    let request = Request {
        method: Some("GET"),
        path: Some("/api/v1/stt/metrics"),
        authorization: Authorization::One(&header),
        jwt_payload: None,
    };
    assert_eq!(first.decide_cached(&request, NOW, &mut cache).status, 200);
    // Without inheritance ADMIN no longer implies OPERATOR: the cached identity must not leak over.
    assert_eq!(second.decide_cached(&request, NOW, &mut cache).status, 403);
}

#[test]
fn revision_is_stable_and_tracks_meaning() {
    let a = agentvoicebox();
    assert_eq!(a.revision().len(), 16);
    assert!(a.revision().bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(a.revision(), agentvoicebox().revision());
    // Spelling out a default does not change the revision.
    let mut explicit = agentvoicebox_policy_json();
    explicit["identity"]["clock_skew_seconds"] = json!(60);
    explicit["webhooks"] = json!({});
    assert_eq!(compile(&explicit).revision(), a.revision());
    let mut changed = agentvoicebox_policy_json();
    changed["rules"][0]["any_of"] = json!(["ADMIN"]);
    assert_ne!(compile(&changed).revision(), a.revision());
}

#[test]
fn rules_keep_configuration_order() {
    let policy = agentvoicebox();
    let names: Vec<&str> = policy.rules().iter().map(|r| r.name()).collect();
    let mut expected: Vec<&str> = TABLE.iter().map(|row| row.0).collect();
    expected.push("health");
    assert_eq!(names, expected);
}

#[test]
fn ten_thousand_rules_decide_like_ten() {
    let mut rules: Vec<Value> = (0..10_000)
        .map(|i| json!({"name": format!("r{i}"), "methods": ["GET"], "path": format!("/svc/{i}/items/{{id}}"), "any_of": ["OPERATOR"]}))
        .collect();
    rules.push(json!({"name": "ops", "methods": ["GET"], "path": "/ops", "any_of": ["OPERATOR"]}));
    let policy = compile(&json!({"identity": identity_section(), "rules": rules}));
    let operator = bearer(&token(&["OPERATOR"]));
    let d = decide(&policy, "GET", "/svc/9999/items/5", Some(&operator));
    assert_eq!(rule_name(&policy, &d).as_deref(), Some("r9999"));
    assert_eq!(d.status, 200);
    assert_eq!(
        decide(&policy, "GET", "/svc/10000/items/5", Some(&operator)).status,
        403
    );
}

/// Deterministic pseudo-random inputs: decide must answer every one of them
/// with a well-formed decision and never panic.
#[test]
fn arbitrary_inputs_never_panic() {
    let policy = custom_policy(json!({"unmatched": "authenticated"}));
    let pieces = [
        "/", "//", "..", ".", "%", "%2", "%2F", "%C3%A9", "%FF", "ops", "tenants", "acme", "items",
        "{x}", "*", "?", "#", ";", "\\", " ", "\u{0}", "é", "a", "export.", "&", "~",
    ];
    let headers = [
        "",
        "Bearer",
        "Bearer a.b.c",
        "Bearer ....",
        "bearer x",
        "Basic Og==",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for _ in 0..20_000 {
        let length = next(8);
        let path: String = (0..length).map(|_| pieces[next(pieces.len())]).collect();
        let method = ["GET", "get", "", "POST", "X-Y", "GET\r\n"][next(6)];
        let header = headers[next(headers.len())];
        let authorization = match next(3) {
            0 => Authorization::Absent,
            1 => Authorization::One(header),
            _ => Authorization::Multiple,
        };
        let d = policy.decide(
            &Request {
                method: Some(method),
                path: Some(&path),
                authorization,
                jwt_payload: None,
            },
            NOW,
        );
        assert!(matches!(d.status, 200 | 400 | 401 | 403), "{path:?}: {d:?}");
        assert_eq!(d.effect == Effect::Deny, d.status != 200);
    }
}
