//! The `avb-policy` binary, run as a user would: check, explain, test, diff,
//! token and schema, with every exit code (0 ok, 1 invalid/failed/changed,
//! 2 usage or I/O).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use avb_edge::cli::{policy_schema, validate_against_schema};
use avb_edge::policy::{Authorization, DecisionKind, Policy, RawPolicy, Request};

const SHIPPED: &str = "envoy/policies/agentvoicebox.yaml";
const SHIPPED_CASES: &str = "envoy/policies/agentvoicebox.test.yaml";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn avb_policy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_avb-policy"))
        .args(args)
        .current_dir(root())
        .env_remove("AVB_JWT_HS_KEY")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap()
}

/// A scratch file that disappears with the test's temp dir.
fn write_temp(dir: &tempdir::Dir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(label: &str) -> Dir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let path = std::env::temp_dir()
                .join(format!("avb-policy-{label}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn shipped_text() -> String {
    std::fs::read_to_string(root().join(SHIPPED)).unwrap()
}

fn dev_env(name: &str) -> Option<String> {
    let env = std::fs::read_to_string(root().join("envoy/dev.env")).unwrap();
    env.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")))
        .map(|value| value.trim().to_owned())
}

fn dev_key() -> String {
    let env = std::fs::read_to_string(root().join("envoy/dev.env")).unwrap();
    env.lines()
        .find_map(|line| line.strip_prefix("AVB_JWT_HS_KEY="))
        .unwrap()
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------- --help

#[test]
fn every_command_has_help_and_exits_zero() {
    for command in [
        "check", "explain", "test", "diff", "render", "token", "schema",
    ] {
        let output = avb_policy(&[command, "--help"]);
        assert_eq!(code(&output), 0, "{command}: {}", stderr(&output));
        assert!(stdout(&output).contains("Usage: avb-policy"), "{command}");
    }
    let output = avb_policy(&["--help"]);
    assert_eq!(code(&output), 0);
    assert!(stdout(&output).contains("Exit codes"));
}

#[test]
fn unknown_command_and_missing_arguments_are_usage_errors() {
    assert_eq!(code(&avb_policy(&["frobnicate"])), 2);
    assert_eq!(code(&avb_policy(&["check"])), 2);
    assert_eq!(code(&avb_policy(&[])), 2);
}

// ---------------------------------------------------------------- check

#[test]
fn check_accepts_the_shipped_policy_and_reports_the_filters_revision() {
    let output = avb_policy(&["check", SHIPPED]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let raw: RawPolicy = serde_yaml::from_str(&shipped_text()).unwrap();
    let key = dev_key();
    let policy = Policy::from_raw(raw, &|name: &str| dev_env(name).or(Some(key.clone()))).unwrap();
    let expected = format!(
        "{SHIPPED}: ok: {} rules, 4 roles, {} webhooks, revision {}",
        policy.rules().len(),
        policy.webhook_names().count(),
        policy.revision()
    );
    assert!(stdout(&output).contains(&expected), "{}", stdout(&output));
    assert!(stdout(&output).contains("roles: ADMIN, DEVELOPER, OPERATOR, PLATFORM_ADMIN"));
    // Without the secret, check still works and says what it assumed.
    assert!(stderr(&output).contains("checked with placeholders"));
    assert!(stderr(&output).contains("AVB_JWT_HS_KEY"));
}

#[test]
fn check_revision_is_the_same_for_the_yaml_and_its_json_form() {
    let yaml = stdout(&avb_policy(&["check", SHIPPED]));
    let json = stdout(&avb_policy(&["check", "envoy/policies/agentvoicebox.json"]));
    let revision = |text: &str| {
        text.split("revision ")
            .nth(1)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(revision(&yaml), revision(&json));
}

#[test]
fn check_warns_about_roles_no_rule_uses_but_exits_zero() {
    let dir = tempdir::Dir::new("warn");
    let policy = shipped_text().replace(
        "role_inherits:\n  ADMIN: [OPERATOR, DEVELOPER]",
        "role_inherits:\n  ADMIN: [OPERATOR, DEVELOPER]\n  AUDITOR: [VIEWER]",
    );
    let path = write_temp(&dir, "p.yaml", &policy);
    let output = avb_policy(&["check", &path]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("warning: role `AUDITOR`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_reports_an_unknown_field_at_its_line_and_column() {
    let dir = tempdir::Dir::new("unknown");
    let policy = shipped_text().replace(
        "path: /api/v1/audit/purge, any_of: [ADMIN]",
        "path: /api/v1/audit/purge, any_off: [ADMIN]",
    );
    let path = write_temp(&dir, "p.yaml", &policy);
    let line = policy.lines().position(|l| l.contains("any_off")).unwrap() + 1;
    let output = avb_policy(&["check", &path]);
    assert_eq!(code(&output), 1);
    let message = stderr(&output);
    assert!(message.starts_with(&format!("{path}:{line}:")), "{message}");
    assert!(message.contains("any_off"), "{message}");
}

#[test]
fn check_reports_json_syntax_errors_with_line_and_column() {
    let dir = tempdir::Dir::new("json");
    let path = write_temp(
        &dir,
        "p.json",
        "{\n  \"rules\": [\n    {\"name\": \"a\",, }\n  ]\n}\n",
    );
    let output = avb_policy(&["check", &path]);
    assert_eq!(code(&output), 1);
    assert!(
        stderr(&output).starts_with(&format!("{path}:3:")),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_places_engine_errors_on_the_line_of_the_rule_they_name() {
    let dir = tempdir::Dir::new("overlap");
    let health = "  - {name: health, methods: [GET], path: /healthz, public: true}\n";
    let policy = shipped_text().replace(
        health,
        &format!("{health}  - {{name: audit.logs.again, methods: [GET], path: /api/v1/audit/logs, any_of: [ADMIN]}}\n"),
    );
    let path = write_temp(&dir, "p.yaml", &policy);
    let output = avb_policy(&["check", &path]);
    assert_eq!(code(&output), 1);
    let message = stderr(&output);
    let first = policy
        .lines()
        .position(|l| l.contains("name: audit.logs.list"))
        .unwrap()
        + 1;
    assert!(
        message.starts_with(&format!("{path}:{first}:")),
        "{message}"
    );
    assert!(message.contains("overlap"), "{message}");
}

#[test]
fn check_reports_every_bad_file_and_exits_one() {
    let dir = tempdir::Dir::new("many");
    let bad = write_temp(
        &dir,
        "bad.yaml",
        "rules: [{name: 'bad name', path: /a, public: true}]\n",
    );
    let output = avb_policy(&["check", SHIPPED, &bad]);
    assert_eq!(code(&output), 1);
    assert!(stdout(&output).contains(&format!("{SHIPPED}: ok")));
    assert!(
        stderr(&output).contains(&format!("{bad}:1:")),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_of_a_missing_file_is_an_io_error() {
    let output = avb_policy(&["check", "no/such/policy.yaml"]);
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("no/such/policy.yaml: cannot read"));
}

// ---------------------------------------------------------------- explain

#[test]
fn explain_shows_rule_reason_roles_and_canonical_path() {
    let output = avb_policy(&[
        "explain",
        SHIPPED,
        "--method",
        "GET",
        "--path",
        "/api/v1/audit/logs/export?x=1",
        "--roles",
        "ADMIN",
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("decision:        allow (allow, status 200)"),
        "{text}"
    );
    assert!(
        text.contains("rule:            audit.logs.export"),
        "{text}"
    );
    assert!(
        text.contains("effective roles: ADMIN, DEVELOPER, OPERATOR"),
        "{text}"
    );
    assert!(
        text.contains("canonical path:  /api/v1/audit/logs/export"),
        "{text}"
    );
}

#[test]
fn explain_json_reports_a_denial_with_its_reason() {
    let output = avb_policy(&[
        "explain",
        SHIPPED,
        "--method",
        "GET",
        "--path",
        "/api/v1/audit/logs/export",
        "--roles",
        "OPERATOR",
        "--tenant",
        "t-1",
        "--subject",
        "alice",
        "--json",
    ]);
    assert_eq!(code(&output), 0);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["decision"], "deny");
    assert_eq!(report["status"], 403);
    assert_eq!(report["reason"], "missing_role");
    assert_eq!(report["rule"], "audit.logs.export");
    assert_eq!(report["tenant"], "t-1");
    assert_eq!(report["subject"], "alice");
    assert_eq!(report["effective_roles"], serde_json::json!(["OPERATOR"]));
}

#[test]
fn explain_anonymous_and_bad_paths() {
    let output = avb_policy(&[
        "explain",
        SHIPPED,
        "--method",
        "GET",
        "--path",
        "/api/v1/audit/logs",
        "--anonymous",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["decision"], "unauthenticated");
    assert_eq!(report["status"], 401);
    let output = avb_policy(&[
        "explain",
        SHIPPED,
        "--method",
        "GET",
        "--path",
        "/api/v1/x/../audit/logs",
        "--roles",
        "ADMIN",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["decision"], "bad_request");
    assert_eq!(report["canonical_path"], serde_json::Value::Null);
}

#[test]
fn explain_works_for_jwt_authn_metadata_identity() {
    let dir = tempdir::Dir::new("metadata");
    let path = write_temp(
        &dir,
        "p.yaml",
        "identity: {source: jwt_authn_metadata, metadata_key: payload, roles_claim: scope}\n\
         rules:\n  - {name: a, methods: [GET], path: /a, any_of: [reader]}\n",
    );
    let allowed = avb_policy(&[
        "explain", &path, "--method", "GET", "--path", "/a", "--roles", "reader", "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&allowed)).unwrap();
    assert_eq!(report["decision"], "allow", "{report}");
    let denied = avb_policy(&[
        "explain",
        &path,
        "--method",
        "GET",
        "--path",
        "/a",
        "--anonymous",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&denied)).unwrap();
    assert_eq!(report["decision"], "unauthenticated", "{report}");
}

#[test]
fn explain_needs_a_caller_and_refuses_contradictions() {
    let base = ["explain", SHIPPED, "--method", "GET", "--path", "/healthz"];
    assert_eq!(code(&avb_policy(&base)), 2);
    let mut both = base.to_vec();
    both.extend(["--anonymous", "--roles", "ADMIN"]);
    assert_eq!(code(&avb_policy(&both)), 2);
}

#[test]
fn explain_of_an_invalid_policy_exits_one() {
    let dir = tempdir::Dir::new("explain-bad");
    let path = write_temp(&dir, "p.yaml", "rules: [{name: a, path: /a}]\n");
    let output = avb_policy(&[
        "explain",
        &path,
        "--method",
        "GET",
        "--path",
        "/a",
        "--anonymous",
    ]);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
}

// ---------------------------------------------------------------- test

#[test]
fn shipped_cases_pass_and_end_with_the_summary_line() {
    let output = avb_policy(&["test", SHIPPED, SHIPPED_CASES]);
    assert_eq!(code(&output), 0, "{}{}", stdout(&output), stderr(&output));
    let last = stdout(&output).lines().last().unwrap().to_owned();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
}

#[test]
fn shipped_cases_cover_every_rule_both_ways() {
    let cases: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join(SHIPPED_CASES)).unwrap())
            .unwrap();
    let cases = cases["cases"].as_sequence().unwrap();
    let raw: RawPolicy = serde_yaml::from_str(&shipped_text()).unwrap();
    for rule in &raw.rules {
        let of_rule: Vec<&serde_yaml::Value> = cases
            .iter()
            .filter(|case| case["rule"].as_str() == Some(rule.name.as_str()))
            .collect();
        let expects = |wanted: &str| {
            of_rule
                .iter()
                .any(|case| case["expect"].as_str() == Some(wanted))
        };
        if rule.webhook.is_some() {
            assert!(expects("webhook"), "{} has no delivery case", rule.name);
            continue;
        }
        assert!(expects("allow"), "{} has no allowed case", rule.name);
        if rule.public != Some(true) {
            assert!(expects("deny"), "{} has no wrong-role case", rule.name);
            assert!(
                expects("unauthenticated"),
                "{} has no anonymous case",
                rule.name
            );
            let admin_allowed = of_rule.iter().any(|case| {
                case["expect"].as_str() == Some("allow")
                    && case["roles"]
                        .as_sequence()
                        .is_some_and(|roles| roles == &[serde_yaml::Value::from("ADMIN")])
            });
            assert!(admin_allowed, "{} has no ADMIN case", rule.name);
        }
        for method in rule.methods.iter().flatten() {
            assert!(
                of_rule
                    .iter()
                    .any(|case| case["method"].as_str() == Some(method.as_str())),
                "{} {method} is not tested",
                rule.name
            );
        }
    }
    assert!(cases
        .iter()
        .any(|case| case["expect"].as_str() == Some("bad_request")));
    assert!(cases
        .iter()
        .any(|case| case["rule"].is_null() && case["expect"].as_str() == Some("deny")));
}

#[test]
fn failing_cases_show_expected_and_actual_and_exit_one() {
    let dir = tempdir::Dir::new("fail");
    let cases = write_temp(
        &dir,
        "cases.yaml",
        "cases:\n  - {name: wrong, method: GET, path: /api/v1/llm/config, roles: [DEVELOPER], expect: allow}\n  \
         - {method: GET, path: /healthz, anonymous: true, expect: 200, rule: health}\n  \
         - {method: GET, path: /api/v1/audit/logs, roles: [OPERATOR], expect: allow, rule: audit.logs.detail}\n",
    );
    let output = avb_policy(&["test", SHIPPED, &cases]);
    assert_eq!(code(&output), 1);
    let text = stdout(&output);
    assert!(
        text.contains("case 1 \"wrong\": GET /api/v1/llm/config as DEVELOPER"),
        "{text}"
    );
    assert!(text.contains("expected: allow"), "{text}");
    assert!(
        text.contains("actual:   deny (status 403, rule llm.config.get, reason missing_role)"),
        "{text}"
    );
    assert!(
        text.contains("expected: allow by rule audit.logs.detail"),
        "{text}"
    );
    assert_eq!(text.lines().last().unwrap(), "1 passed, 2 failed");
}

#[test]
fn malformed_cases_file_exits_one_and_missing_file_exits_two() {
    let dir = tempdir::Dir::new("badcases");
    let cases = write_temp(
        &dir,
        "cases.yaml",
        "cases:\n  - {method: GET, path: /healthz, expect: allow}\n",
    );
    let output = avb_policy(&["test", SHIPPED, &cases]);
    assert_eq!(code(&output), 1);
    assert!(stderr(&output).contains("case 1"), "{}", stderr(&output));
    let output = avb_policy(&["test", SHIPPED, "no/such/cases.yaml"]);
    assert_eq!(code(&output), 2);
}

// ---------------------------------------------------------------- diff

#[test]
fn diff_of_identical_policies_finds_nothing() {
    let output = avb_policy(&["diff", SHIPPED, "envoy/policies/agentvoicebox.json"]);
    assert_eq!(code(&output), 0, "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("no decision changes"));
}

#[test]
fn diff_shows_each_changed_decision() {
    let dir = tempdir::Dir::new("diff");
    let new = shipped_text().replace(
        "name: llm.config.get, methods: [GET], path: /api/v1/llm/config, any_of: [ADMIN]}",
        "name: llm.config.get, methods: [GET], path: /api/v1/llm/config, any_of: [ADMIN, DEVELOPER]}",
    );
    assert_ne!(new, shipped_text());
    let new = write_temp(&dir, "new.yaml", &new);
    let output = avb_policy(&["diff", SHIPPED, &new]);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains(
            "GET /api/v1/llm/config DEVELOPER: deny (llm.config.get) -> allow (llm.config.get)"
        ),
        "{text}"
    );
    assert!(text.contains("1 decision changes"), "{text}");
}

#[test]
fn diff_sees_new_rules_and_removed_ones() {
    let dir = tempdir::Dir::new("diff-rules");
    let new = shipped_text().replace(
        "  - {name: health, methods: [GET], path: /healthz, public: true}\n",
        "  - {name: version, methods: [GET], path: \"/api/v1/version/{part}\", authenticated: true}\n",
    );
    let new = write_temp(&dir, "new.yaml", &new);
    let text = stdout(&avb_policy(&["diff", SHIPPED, &new]));
    assert!(
        text.contains("GET /healthz anonymous: allow (health) -> deny (no rule)"),
        "{text}"
    );
    assert!(
        text.contains("GET /api/v1/version/{part} OPERATOR: deny (no rule) -> allow (version)"),
        "{text}"
    );
}

#[test]
fn diff_with_a_missing_file_is_an_io_error() {
    assert_eq!(code(&avb_policy(&["diff", SHIPPED, "no/such.yaml"])), 2);
}

// ---------------------------------------------------------------- token

#[test]
fn minted_token_is_accepted_by_the_engine_with_the_dev_key() {
    let output = avb_policy(&[
        "token",
        "--policy",
        SHIPPED,
        "--kid",
        "dev-hs-1",
        "--sub",
        "alice",
        "--roles",
        "ADMIN",
        "--tenant",
        "t-1",
        "--ttl",
        "10m",
        "--env-file",
        "envoy/dev.env",
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let token = stdout(&output).trim().to_owned();
    let raw: RawPolicy = serde_yaml::from_str(&shipped_text()).unwrap();
    let policy = Policy::from_raw(raw, &dev_env).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let authorization = format!("Bearer {token}");
    let request = Request {
        method: Some("GET"),
        path: Some("/api/v1/audit/logs/export"),
        authorization: Authorization::One(&authorization),
        jwt_payload: None,
    };
    let decision = policy.decide(&request, now);
    assert_eq!(decision.kind, DecisionKind::Allowed, "{}", decision.detail);
    let identity = decision.identity.unwrap();
    assert_eq!(identity.subject, "alice");
    assert_eq!(identity.tenant.as_deref(), Some("t-1"));
    // The ttl is honoured: the token is expired eleven minutes (plus skew) later.
    let later = policy.decide(&request, now + 11 * 60 + 61);
    assert_eq!(later.kind, DecisionKind::Unauthenticated);
}

#[test]
fn token_refuses_rsa_keys_unknown_kids_missing_secrets_and_bad_ttls() {
    let dir = tempdir::Dir::new("token");
    let rsa_policy = write_temp(
        &dir,
        "rsa.yaml",
        &shipped_text().replacen(
            "jwks:\n        keys:\n",
            &format!(
                "jwks:\n        keys:\n          - {{kty: RSA, kid: rs-1, alg: RS256, n: \"{}\", e: AQAB}}\n",
                rsa_modulus()
            ),
            1,
        ),
    );
    let base = |policy: &str, kid: &str| {
        avb_policy(&[
            "token",
            "--policy",
            policy,
            "--kid",
            kid,
            "--sub",
            "a",
            "--roles",
            "ADMIN",
            "--env-file",
            "envoy/dev.env",
        ])
    };
    let output = base(&rsa_policy, "rs-1");
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("is an RSA key"),
        "{}",
        stderr(&output)
    );
    let output = base(SHIPPED, "nope");
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("known kids: dev-hs-1"),
        "{}",
        stderr(&output)
    );
    let output = avb_policy(&[
        "token", "--policy", SHIPPED, "--kid", "dev-hs-1", "--sub", "a", "--roles", "ADMIN",
    ]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("AVB_JWT_HS_KEY"),
        "{}",
        stderr(&output)
    );
    let output = avb_policy(&[
        "token",
        "--policy",
        SHIPPED,
        "--kid",
        "dev-hs-1",
        "--sub",
        "a",
        "--roles",
        "ADMIN",
        "--ttl",
        "5y",
        "--env-file",
        "envoy/dev.env",
    ]);
    assert_eq!(code(&output), 2);
}

/// A 2048-bit RSA modulus (base64url) from the engine's JWT fixtures.
fn rsa_modulus() -> String {
    let jwks: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("plugin/tests/fixtures/jwt/jwks.json")).unwrap(),
    )
    .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kty"] == "RSA" && key["n"].as_str().is_some_and(|n| n.len() > 300))
        .unwrap()["n"]
        .as_str()
        .unwrap()
        .to_owned()
}

// ---------------------------------------------------------------- schema

#[test]
fn shipped_schema_file_equals_the_schema_command() {
    let output = avb_policy(&["schema"]);
    assert_eq!(code(&output), 0);
    let shipped = std::fs::read_to_string(root().join("plugin/policy.schema.json")).unwrap();
    assert_eq!(
        stdout(&output),
        shipped,
        "run: avb-policy schema > plugin/policy.schema.json"
    );
    assert_eq!(stdout(&output), policy_schema());
}

#[test]
fn shipped_policy_validates_against_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(policy_schema()).unwrap();
    let policy: serde_json::Value = serde_yaml::from_str(&shipped_text()).unwrap();
    let violations = validate_against_schema(&schema, &policy);
    assert!(violations.is_empty(), "{violations:?}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("envoy/policies/agentvoicebox.json")).unwrap(),
    )
    .unwrap();
    assert!(validate_against_schema(&schema, &json).is_empty());
}

#[test]
fn schema_rejects_what_the_engine_rejects_structurally() {
    let schema: serde_json::Value = serde_json::from_str(policy_schema()).unwrap();
    let typo = shipped_text().replace("unmatched: deny", "unmatched: deny\nunmatchd: allow");
    let policy: serde_json::Value = serde_yaml::from_str(&typo).unwrap();
    let violations = validate_against_schema(&schema, &policy);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].problem.contains("unmatchd"));
}
