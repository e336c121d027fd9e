//! Configuration errors: every way a policy is refused, each with a message
//! that names the problem (rule, field, issuer, key or variable).

// A test crate: helpers outside #[test] fns may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use avb_edge::policy::config::RawPolicy;
use avb_edge::policy::{ConfigError, Policy, Unmatched};
use serde_json::{json, Value};

const HS_KEY: &str = "ztaE2Q9vzzMOFaw52fhRZjLEA3NiZGG_jFhxPeWNSuA";
/// From fixtures/jwt/jwks.json (test-only key).
const RSA_N: &str = "zFdb7dBWm8h1pUuakTMaHLlSiVlP-vfIMW6Bu2vh5Lsbw0WsWeB2PrTJZN9dlmbTutOVEzW0oh-txCIJS71SoI439qD1Sqe28u6NRHEVn4kOkhpWoeZ2VLYfD3eKxhfD4gEb41uaxn_CjCzmKq1JLKdRnHR17Q2IrUWr8UCGktB5Pd228E1nfcDcXtykTDbhm1mlkvXosoNCT82KO3_HvppKIhmBqYISfBuwyPbI8FO9ROjqsBmq-g9_G_1Tq1_aZzBummEbUUK01CussHl80UVXNLdaATJrI1zabIQYeK5Do7iuKlNeUAQE7ZtDRkhzmBZo33tFELmn6OithdliwQ";
const EC_X: &str = "ClXJJBpKaQFII7BGybMQJ_d-OxWOtvvLZHeH-3KROTE";
const EC_Y: &str = "5QOkZyniFNTfgjkk_tXVXXCflM5rlM8kLlkC73q2BYs";

fn env(name: &str) -> Option<String> {
    match name {
        "AVB_JWT_HS_KEY" => Some(HS_KEY.to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn identity() -> Value {
    json!({
        "issuers": [{
            "issuer": "https://id.example",
            "audiences": ["avb-api"],
            "jwks": {"keys": [{"kty": "oct", "kid": "hs-1", "alg": "HS256", "k_env": "AVB_JWT_HS_KEY"}]}
        }],
        "roles_claim": "roles",
        "tenant_claim": "tenant_id"
    })
}

fn base() -> Value {
    json!({
        "identity": identity(),
        "rules": [{"name": "ops", "methods": ["GET"], "path": "/ops", "any_of": ["OPERATOR"]}]
    })
}

fn with_rules(rules: Value) -> Value {
    let mut policy = base();
    policy["rules"] = rules;
    policy
}

fn with_key(key: Value) -> Value {
    let mut policy = base();
    policy["identity"]["issuers"][0]["jwks"]["keys"] = json!([key]);
    policy
}

fn refuse_text(text: &str) -> String {
    match Policy::from_json(text.as_bytes(), &env) {
        Ok(_) => panic!("policy was accepted: {text}"),
        Err(err) => err.to_string(),
    }
}

fn refuse(policy: Value) -> String {
    refuse_text(&policy.to_string())
}

fn accept(policy: Value) -> Policy {
    Policy::from_json(policy.to_string().as_bytes(), &env).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "`{message}` does not mention `{part}`"
        );
    }
}

#[test]
fn shipped_agentvoicebox_policy_compiles() {
    let yaml = include_str!("../../envoy/policies/agentvoicebox.yaml");
    let value: Value = serde_yaml::from_str(yaml).unwrap();
    // The local stack's secrets, as the Wasm VM's environment would carry them.
    let dev_env: Vec<(String, String)> = include_str!("../../envoy/dev.env")
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let env = |name: &str| {
        dev_env
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let policy = Policy::from_json(value.to_string().as_bytes(), &env)
        .unwrap_or_else(|e| panic!("shipped policy refused: {e}"));
    assert_eq!(policy.unmatched(), Unmatched::Deny);
    assert!(policy
        .rules()
        .iter()
        .any(|r| r.name() == "audit.logs.export"));
}

#[test]
fn invalid_json_is_refused() {
    assert_mentions(&refuse_text("{\"rules\": ["), &["not valid JSON"]);
    assert_mentions(&refuse_text(""), &["not valid JSON"]);
}

#[test]
fn duplicate_json_keys_are_refused_and_named() {
    let text = r#"{"role_inherits": {"ADMIN": ["OPERATOR"], "ADMIN": []}, "rules": []}"#;
    assert_eq!(
        refuse_text(text),
        "policy is not valid JSON: duplicate key `ADMIN`"
    );
    let text = r#"{"rules": [], "unmatched": "deny", "unmatched": "allow"}"#;
    assert_mentions(&refuse_text(text), &["duplicate key `unmatched`"]);
}

#[test]
fn unknown_fields_are_refused_everywhere() {
    let mut top = base();
    top["unmatch"] = json!("allow");
    assert_mentions(&refuse(top), &["unknown field `unmatch`"]);
    let rule = with_rules(json!([{"name": "a", "path": "/a", "any_off": ["X"]}]));
    assert_mentions(&refuse(rule), &["unknown field `any_off`"]);
    let mut ident = base();
    ident["identity"]["role_claim"] = json!("x");
    assert_mentions(&refuse(ident), &["unknown field `role_claim`"]);
    let key =
        with_key(json!({"kty": "oct", "kid": "k", "alg": "HS256", "k": HS_KEY, "d": "private"}));
    assert_mentions(&refuse(key), &["unknown field `d`"]);
    let mut audit = base();
    audit["audit"] =
        json!({"cluster": "c", "authority": "a", "path": "/p", "token": "t", "batch": 1});
    assert_mentions(&refuse(audit), &["unknown field `batch`"]);
}

#[test]
fn required_fields_are_named_when_missing() {
    assert_mentions(&refuse(json!({})), &["missing field `rules`"]);
    let mut policy = base();
    policy["identity"]
        .as_object_mut()
        .unwrap()
        .remove("roles_claim");
    assert_mentions(&refuse(policy), &["missing field `roles_claim`"]);
}

#[test]
fn bad_enum_values_are_refused() {
    let mut policy = base();
    policy["mode"] = json!("permissive");
    assert_mentions(&refuse(policy), &["unknown variant `permissive`"]);
    let mut policy = base();
    policy["unmatched"] = json!("maybe");
    assert_mentions(&refuse(policy), &["unknown variant `maybe`"]);
}

#[test]
fn rule_names_must_be_valid_and_unique() {
    let bad = with_rules(json!([{"name": "ops rule", "path": "/a", "public": true}]));
    assert_eq!(
        refuse(bad),
        "rule name `ops rule` is invalid: use letters, digits, `.`, `_` and `-`"
    );
    let empty = with_rules(json!([{"name": "", "path": "/a", "public": true}]));
    assert_mentions(&refuse(empty), &["rule name `` is invalid"]);
    let twice = with_rules(json!([
        {"name": "a", "path": "/a", "public": true},
        {"name": "a", "path": "/b", "public": true}
    ]));
    assert_eq!(refuse(twice), "rule name `a` is used twice");
}

#[test]
fn methods_must_be_upper_case_tokens_listed_once() {
    let lower =
        with_rules(json!([{"name": "a", "methods": ["get"], "path": "/a", "public": true}]));
    assert_eq!(
        refuse(lower),
        "rule `a`: method `get` is invalid: method must be upper case"
    );
    let space =
        with_rules(json!([{"name": "a", "methods": ["GE T"], "path": "/a", "public": true}]));
    assert_mentions(&refuse(space), &["rule `a`", "`GE T`", "not an HTTP token"]);
    let twice =
        with_rules(json!([{"name": "a", "methods": ["GET", "GET"], "path": "/a", "public": true}]));
    assert_eq!(refuse(twice), "rule `a`: method `GET` is listed twice");
    let empty = with_rules(json!([{"name": "a", "methods": [], "path": "/a", "public": true}]));
    assert_eq!(
        refuse(empty),
        "rule `a`: `methods` is empty; omit it to allow any method"
    );
}

#[test]
fn rules_need_exactly_one_kind() {
    let none = with_rules(json!([{"name": "a", "path": "/a"}]));
    assert_mentions(
        &refuse(none),
        &["rule `a` must have exactly one of", "found 0"],
    );
    let two = with_rules(json!([{"name": "a", "path": "/a", "public": true, "any_of": ["X"]}]));
    assert_mentions(
        &refuse(two),
        &["rule `a` must have exactly one of", "found 2"],
    );
    let false_flag = with_rules(json!([{"name": "a", "path": "/a", "public": false}]));
    assert_eq!(
        refuse(false_flag),
        "rule `a`: `public` may only be `true`; remove it instead"
    );
    let empty_roles = with_rules(json!([{"name": "a", "path": "/a", "all_of": []}]));
    assert_eq!(refuse(empty_roles), "rule `a`: `all_of` lists no roles");
    let bad_role = with_rules(json!([{"name": "a", "path": "/a", "any_of": ["OPS,ADMIN"]}]));
    assert_mentions(
        &refuse(bad_role),
        &["rule `a` any_of", "role name `OPS,ADMIN` is invalid"],
    );
}

#[test]
fn bad_templates_are_refused_with_the_rule_and_problem() {
    let cases = [
        ("/a/**/b", "`**` may only be the last segment"),
        ("/a//b", "empty segment"),
        ("/a/", "empty segment"),
        ("a", "must start with `/`"),
        ("/a/{}", "`{}` needs a parameter name"),
        ("/{id}/x/{id}", "parameter `id` appears twice"),
        ("/a/../b", "literal segment `..` is not canonical"),
        ("/a/export.", "literal segment `export.` is not canonical"),
        ("/a%2Fb", "literal segment `a%2Fb` is not canonical"),
        ("/a/b*", "must be a whole segment"),
        ("/a/{id", "must be a whole segment"),
    ];
    for (template, problem) in cases {
        let policy = with_rules(json!([{"name": "t", "path": template, "public": true}]));
        let message = refuse(policy);
        assert_mentions(
            &message,
            &[
                "rule `t`",
                &format!("invalid path template `{template}`"),
                problem,
            ],
        );
    }
}

#[test]
fn overlapping_rules_are_refused_naming_both() {
    let cases = [
        (
            json!({"path": "/a/{id}", "methods": ["GET"]}),
            json!({"path": "/a/*", "methods": ["GET", "PUT"]}),
        ),
        (json!({"path": "/a/{id}"}), json!({"path": "/a/{other}"})),
        (json!({"path": "/a/**"}), json!({"path": "/a/**"})),
        (
            json!({"path": "/a", "methods": ["PUT"]}),
            json!({"path": "/a", "methods": ["PATCH", "PUT"]}),
        ),
    ];
    for (first, second) in cases {
        let mut a = first.clone();
        a["name"] = json!("first");
        a["public"] = json!(true);
        let mut b = second.clone();
        b["name"] = json!("second");
        b["public"] = json!(true);
        let message = refuse(with_rules(json!([a, b])));
        assert_mentions(&message, &["rules `first` and `second` overlap"]);
    }
}

#[test]
fn different_methods_or_specificity_do_not_overlap() {
    accept(with_rules(json!([
        {"name": "get", "methods": ["GET"], "path": "/a/{id}", "public": true},
        {"name": "put", "methods": ["PUT"], "path": "/a/*", "public": true},
        {"name": "any", "path": "/a/{id}", "public": true},
        {"name": "literal", "path": "/a/export", "public": true},
        {"name": "rest", "path": "/a/**", "public": true}
    ])));
}

#[test]
fn role_inherits_cycles_and_bad_names_are_refused() {
    let mut cycle = base();
    cycle["role_inherits"] =
        json!({"ADMIN": ["OPERATOR"], "OPERATOR": ["AUDITOR"], "AUDITOR": ["ADMIN"]});
    assert_eq!(
        refuse(cycle),
        "role_inherits has a cycle: ADMIN -> OPERATOR -> AUDITOR -> ADMIN"
    );
    let mut bad = base();
    bad["role_inherits"] = json!({"ADMIN": ["OPS TEAM"]});
    assert_eq!(
        refuse(bad),
        "role_inherits: role name `OPS TEAM` is invalid: use printable ASCII without spaces or commas"
    );
    let mut unknown = base();
    unknown["role_inherits"] = json!({"ADMIN": ["NOT_USED_ANYWHERE"]});
    accept(unknown);
}

#[test]
fn tenant_param_must_be_a_template_param_with_a_tenant_claim() {
    let missing = with_rules(
        json!([{"name": "t", "path": "/t/{tenant}", "any_of": ["X"], "tenant_param": "org"}]),
    );
    assert_eq!(
        refuse(missing),
        "rule `t`: tenant_param `org` is not a `{param}` of its path template"
    );
    let mut no_claim = with_rules(
        json!([{"name": "t", "path": "/t/{tenant}", "any_of": ["X"], "tenant_param": "tenant"}]),
    );
    no_claim["identity"]
        .as_object_mut()
        .unwrap()
        .remove("tenant_claim");
    assert_eq!(
        refuse(no_claim),
        "rule `t`: tenant_param needs identity.tenant_claim to be set"
    );
    let public = with_rules(
        json!([{"name": "t", "path": "/t/{tenant}", "public": true, "tenant_param": "tenant"}]),
    );
    assert_eq!(
        refuse(public),
        "rule `t`: tenant_param needs an identity, but the rule is `public`"
    );
}

#[test]
fn webhook_rules_must_name_a_webhook_and_not_be_dry_run() {
    let webhooks = json!({"lago": {"provider": "lago", "algorithms": ["hmac"],
                                  "hmac_keys": [{"id": "current", "secret": "6a1e7c1e-4b7a-4f0e-9a53-2f6d8c4b1e77"}]}});
    let mut unknown = with_rules(json!([{"name": "w", "path": "/w", "webhook": "stripe"}]));
    unknown["webhooks"] = webhooks.clone();
    assert_eq!(
        refuse(unknown),
        "rule `w`: webhook `stripe` is not configured under `webhooks`"
    );
    let mut dry =
        with_rules(json!([{"name": "w", "path": "/w", "webhook": "lago", "mode": "dry_run"}]));
    dry["webhooks"] = webhooks.clone();
    assert_mentions(&refuse(dry), &["rule `w`: webhook rules cannot be dry_run"]);
    let mut broken = base();
    broken["webhooks"] = json!({"lago": {"provider": "stripe", "algorithms": ["hmac"]}});
    assert_mentions(&refuse(broken), &["webhook `lago`", "provider `stripe`"]);
    let mut ok = with_rules(json!([{"name": "w", "path": "/w", "webhook": "lago"}]));
    ok["webhooks"] = webhooks;
    accept(ok);
}

#[test]
fn rules_needing_identity_require_an_identity_section() {
    let no_identity = json!({"rules": [{"name": "ops", "path": "/ops", "any_of": ["OPERATOR"]}]});
    assert_eq!(
        refuse(no_identity),
        "rule `ops` needs an identity, but the policy has no `identity` section"
    );
    let unmatched = json!({"unmatched": "authenticated", "rules": []});
    assert_eq!(
        refuse(unmatched),
        "`unmatched: authenticated` needs an identity, but the policy has no `identity` section"
    );
    accept(json!({"rules": [{"name": "health", "path": "/healthz", "public": true}]}));
}

#[test]
fn identity_section_problems_are_named() {
    let mut no_issuers = base();
    no_issuers["identity"]["issuers"] = json!([]);
    assert_eq!(
        refuse(no_issuers),
        "identity: bearer_jwt needs at least one issuer"
    );
    let mut metadata_key = base();
    metadata_key["identity"]["metadata_key"] = json!("payload");
    assert_mentions(
        &refuse(metadata_key),
        &["`metadata_key` only applies to source `jwt_authn_metadata`"],
    );
    let mut metadata_with_issuers = base();
    metadata_with_issuers["identity"]["source"] = json!("jwt_authn_metadata");
    metadata_with_issuers["identity"]["metadata_key"] = json!("payload");
    assert_mentions(&refuse(metadata_with_issuers), &["`issuers` do not apply"]);
    let metadata_without_key = json!({
        "identity": {"source": "jwt_authn_metadata", "roles_claim": "roles"}, "rules": []
    });
    assert_mentions(
        &refuse(metadata_without_key),
        &["needs a non-empty `metadata_key`"],
    );
    let mut skew = base();
    skew["identity"]["clock_skew_seconds"] = json!(86_400);
    assert_mentions(
        &refuse(skew),
        &["`clock_skew_seconds` is 86400; at most 600"],
    );
    let mut claim = base();
    claim["identity"]["roles_claim"] = json!("realm_access..roles");
    assert_mentions(&refuse(claim), &["`roles_claim` `realm_access..roles`"]);
    let mut cross = base();
    cross["identity"]["cross_tenant_roles"] = json!(["PLATFORM ADMIN"]);
    assert_mentions(
        &refuse(cross),
        &["identity.cross_tenant_roles", "`PLATFORM ADMIN`"],
    );
}

#[test]
fn issuer_problems_name_the_issuer() {
    let mut twice = base();
    let issuer = twice["identity"]["issuers"][0].clone();
    twice["identity"]["issuers"] = json!([issuer.clone(), issuer]);
    assert_eq!(
        refuse(twice),
        "identity: issuer `https://id.example` is listed twice"
    );
    let mut no_aud = base();
    no_aud["identity"]["issuers"][0]["audiences"] = json!([]);
    assert_eq!(
        refuse(no_aud),
        "identity: issuer `https://id.example` lists no audiences"
    );
    let mut no_keys = base();
    no_keys["identity"]["issuers"][0]["jwks"]["keys"] = json!([]);
    assert_eq!(
        refuse(no_keys),
        "identity: issuer `https://id.example` has no keys"
    );
    let mut dup_kid = base();
    let key = json!({"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": HS_KEY});
    dup_kid["identity"]["issuers"][0]["jwks"]["keys"] = json!([key.clone(), key]);
    assert_eq!(
        refuse(dup_kid),
        "identity: issuer `https://id.example`: key `hs-1` is listed twice"
    );
}

#[test]
fn malformed_keys_are_refused_naming_issuer_key_and_problem() {
    let prefix = "identity: issuer `https://id.example`, key `k`: ";
    let cases = [
        (
            json!({"kty": "oct", "kid": "k", "alg": "HS256", "k": "not base64!"}),
            "`k` is not valid unpadded base64url",
        ),
        (
            json!({"kty": "oct", "kid": "k", "alg": "HS256", "k": format!("{HS_KEY}=")}),
            "`k` is not valid unpadded base64url",
        ),
        (
            json!({"kty": "oct", "kid": "k", "k": HS_KEY}),
            "key type `oct` needs `alg`",
        ),
        (
            json!({"kty": "oct", "kid": "k", "alg": "RS256", "k": HS_KEY}),
            "algorithm `RS256` does not fit key type `oct`",
        ),
        (
            json!({"kty": "oct", "kid": "k", "alg": "HS256", "k": "c2hvcnQ"}),
            "HMAC key is 5 bytes; HS256 needs at least 32",
        ),
        (
            json!({"kty": "oct", "kid": "k", "alg": "HS512", "k": HS_KEY}),
            "HMAC key is 32 bytes; HS512 needs at least 64",
        ),
        (
            json!({"kty": "oct", "kid": "k", "alg": "HS256"}),
            "missing `k`",
        ),
        (
            json!({"kty": "oct", "kid": "k", "alg": "HS256", "k": HS_KEY, "n": RSA_N}),
            "field `n` does not belong to this key type",
        ),
        (
            json!({"kty": "RSA", "kid": "k", "alg": "ES256", "n": RSA_N, "e": "AQAB"}),
            "algorithm `ES256` does not fit key type `RSA`",
        ),
        (
            json!({"kty": "RSA", "kid": "k", "e": "AQAB"}),
            "missing `n`",
        ),
        (
            json!({"kty": "RSA", "kid": "k", "n": "AQAB", "e": "AQAB"}),
            "RSA",
        ),
        (
            json!({"kty": "EC", "kid": "k", "crv": "P-384", "x": EC_X, "y": EC_Y}),
            "curve `P-384` is not supported (use P-256)",
        ),
        (
            json!({"kty": "EC", "kid": "k", "crv": "P-256", "x": EC_X, "y": EC_X}),
            "EC point is not on P-256",
        ),
        (
            json!({"kty": "EC", "kid": "k", "crv": "P-256", "x": "AQAB", "y": EC_Y}),
            "EC point is not on P-256",
        ),
        (
            json!({"kty": "EC", "kid": "k", "alg": "ES384", "crv": "P-256", "x": EC_X, "y": EC_Y}),
            "algorithm `ES384` does not fit key type `EC`",
        ),
        (
            json!({"kty": "OKP", "kid": "k", "crv": "Ed25519", "x": EC_X}),
            "unsupported key type `OKP`",
        ),
        (
            json!({"kty": "RSA", "kid": "k", "use": "enc", "n": RSA_N, "e": "AQAB"}),
            "`use` is `enc`",
        ),
    ];
    for (key, problem) in cases {
        let message = refuse(with_key(key.clone()));
        assert!(message.starts_with(prefix), "{key}: {message}");
        assert_mentions(&message, &[problem]);
    }
    let unnamed = refuse(with_key(
        json!({"kty": "oct", "alg": "HS256", "k": "c2hvcnQ"}),
    ));
    assert_mentions(&unnamed, &["key #0: HMAC key is 5 bytes"]);
}

#[test]
fn valid_rsa_and_ec_keys_are_accepted() {
    accept(with_key(
        json!({"kty": "RSA", "kid": "r", "n": RSA_N, "e": "AQAB", "x5c": ["MIIB"], "x5t": "abc"}),
    ));
    accept(with_key(
        json!({"kty": "EC", "kid": "e", "crv": "P-256", "x": EC_X, "y": EC_Y, "use": "sig"}),
    ));
}

#[test]
fn secret_env_problems_name_the_variable() {
    let missing =
        with_key(json!({"kty": "oct", "kid": "k", "alg": "HS256", "k_env": "AVB_NOT_SET"}));
    assert_eq!(
        refuse(missing),
        "`k_env` names environment variable `AVB_NOT_SET`, which is not set or empty"
    );
    let empty = with_key(json!({"kty": "oct", "kid": "k", "alg": "HS256", "k_env": "EMPTY"}));
    assert_mentions(&refuse(empty), &["`EMPTY`"]);
    let both = with_key(
        json!({"kty": "oct", "kid": "k", "alg": "HS256", "k": HS_KEY, "k_env": "AVB_JWT_HS_KEY"}),
    );
    assert_eq!(refuse(both), "`k`: give exactly one of `k` and `k_env`");
}

#[test]
fn audit_section_problems_are_named() {
    let mut no_token = base();
    no_token["audit"] = json!({"cluster": "c", "authority": "a", "path": "/v1/audit/events"});
    assert_eq!(
        refuse(no_token),
        "audit: one of `token` and `token_env` is required"
    );
    let mut env_missing = base();
    env_missing["audit"] =
        json!({"cluster": "c", "authority": "a", "path": "/p", "token_env": "AVB_NOPE"});
    assert_mentions(&refuse(env_missing), &["`token_env`", "`AVB_NOPE`"]);
    let mut bad_events = base();
    bad_events["audit"] =
        json!({"cluster": "c", "authority": "a", "path": "/p", "token": "t", "events": "none"});
    assert_mentions(&refuse(bad_events), &["unknown variant `none`"]);
    let mut small_queue = base();
    small_queue["audit"] = json!({"cluster": "c", "authority": "a", "path": "/p", "token": "t", "batch_size": 50, "queue_limit": 10});
    assert_eq!(
        refuse(small_queue),
        "audit: `queue_limit` must be at least `batch_size`"
    );
    let mut bad_rule_audit =
        with_rules(json!([{"name": "a", "path": "/a", "public": true, "audit": "some"}]));
    bad_rule_audit["audit"] = json!({"cluster": "c", "authority": "a", "path": "/p", "token": "t"});
    assert_mentions(&refuse(bad_rule_audit), &["unknown variant `some`"]);
}

#[test]
fn from_raw_reports_the_same_errors_as_from_json() {
    let raw: RawPolicy = serde_json::from_value(with_rules(json!([
        {"name": "a", "path": "/a", "public": true},
        {"name": "a", "path": "/b", "public": true}
    ])))
    .unwrap();
    let err = Policy::from_raw(raw, &env).unwrap_err();
    assert!(matches!(err, ConfigError::DuplicateRuleName { ref name } if name == "a"));
    let raw: RawPolicy = serde_json::from_value(base()).unwrap();
    assert!(Policy::from_raw(raw, &env).is_ok());
}
