//! `avb-policy test`: table-driven policy tests.
//!
//! A cases file (YAML or JSON) has a top-level `cases` list. Each case names
//! a request (`method`, `path`), a caller (`roles: [..]` or `anonymous:
//! true`, optional `tenant` and `subject`) and what must happen (`expect`:
//! `allow`, `deny`, `unauthenticated`, `bad_request`, `dry_run_deny`,
//! `webhook`, or a status code; optionally the `rule` that must decide).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::policy::Decision;

use super::env_file::Environment;
use super::explain::outcome_label;
use super::probe::{unix_now, Caller, ProbePolicy};
use super::source::load_policy;
use super::{CliError, Outcome};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    cases: Vec<RawCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    #[serde(default)]
    name: Option<String>,
    method: String,
    path: String,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    anonymous: Option<bool>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    expect: RawExpectation,
    #[serde(default)]
    rule: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawExpectation {
    Status(u16),
    Word(String),
}

/// What a case requires of the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// One of the labels of [`outcome_label`].
    Outcome(&'static str),
    /// The HTTP status the client sees.
    Status(u16),
}

const OUTCOMES: [&str; 6] = [
    "allow",
    "deny",
    "unauthenticated",
    "bad_request",
    "dry_run_deny",
    "webhook",
];

impl Expectation {
    fn parse(raw: &RawExpectation) -> Result<Expectation, String> {
        match raw {
            RawExpectation::Status(status) => Ok(Expectation::Status(*status)),
            RawExpectation::Word(word) => {
                if let Some(known) = OUTCOMES.iter().find(|known| **known == word.as_str()) {
                    return Ok(Expectation::Outcome(known));
                }
                word.parse::<u16>().map(Expectation::Status).map_err(|_| {
                    format!(
                        "expect `{word}` is not one of {} or a status code",
                        OUTCOMES.join(", ")
                    )
                })
            }
        }
    }

    fn is_met_by(&self, decision: &Decision) -> bool {
        match self {
            Expectation::Outcome(label) => outcome_label(decision) == *label,
            Expectation::Status(status) => decision.status == *status,
        }
    }

    fn describe(&self) -> String {
        match self {
            Expectation::Outcome(label) => (*label).to_owned(),
            Expectation::Status(status) => format!("status {status}"),
        }
    }
}

/// One checked case.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: Option<String>,
    pub method: String,
    pub path: String,
    pub caller: Caller,
    pub expect: Expectation,
    pub rule: Option<String>,
}

/// Parses a cases file; errors start with `file:line:column` where known.
pub fn parse_cases(path: &Path, text: &str) -> Result<Vec<Case>, String> {
    let shown = path.display();
    let is_json =
        path.extension().is_some_and(|ext| ext == "json") || text.trim_start().starts_with('{');
    let file: CasesFile = if is_json {
        serde_json::from_str(text)
            .map_err(|error| format!("{shown}:{}:{}: {error}", error.line(), error.column()))?
    } else {
        serde_yaml::from_str(text).map_err(|error| {
            let (line, column) = error
                .location()
                .map_or((1, 1), |location| (location.line(), location.column()));
            format!("{shown}:{line}:{column}: {error}")
        })?
    };
    file.cases
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            check_case(raw).map_err(|problem| format!("{shown}: case {}: {problem}", index + 1))
        })
        .collect()
}

fn check_case(raw: RawCase) -> Result<Case, String> {
    let RawCase {
        name,
        method,
        path,
        roles,
        anonymous,
        tenant,
        subject,
        expect,
        rule,
    } = raw;
    let caller = match (roles, anonymous) {
        (Some(_), Some(true)) => {
            return Err("give either `roles` or `anonymous: true`, not both".into())
        }
        (None, Some(true)) => {
            if tenant.is_some() || subject.is_some() {
                return Err("an anonymous case cannot have a tenant or subject".into());
            }
            Caller::Anonymous
        }
        (Some(roles), _) => Caller::Token {
            roles,
            tenant,
            subject,
        },
        (None, _) => return Err("give `roles: [..]` (may be empty) or `anonymous: true`".into()),
    };
    Ok(Case {
        name,
        method,
        path,
        caller,
        expect: Expectation::parse(&expect)?,
        rule,
    })
}

pub fn run(
    policy: &Path,
    case_files: &[PathBuf],
    env_file: Option<&Path>,
) -> Result<Outcome, CliError> {
    let environment = Environment::load(env_file)?;
    let document = load_policy(policy)?;
    document.compile(&environment)?;
    let probe = ProbePolicy::new(&document, &environment)?;
    let now = unix_now();
    let (mut passed, mut failed) = (0_usize, 0_usize);
    for file in case_files {
        let text = std::fs::read_to_string(file).map_err(|error| {
            CliError::Usage(format!("{}: cannot read: {error}", file.display()))
        })?;
        let cases = parse_cases(file, &text).map_err(CliError::Invalid)?;
        for (index, case) in cases.iter().enumerate() {
            let decision = probe.decide(&case.method, &case.path, &case.caller, now);
            let rule_name = decision
                .rule
                .and_then(|rule| probe.policy().rules().get(rule))
                .map(|rule| rule.name().to_owned());
            let rule_ok = case
                .rule
                .as_ref()
                .is_none_or(|wanted| rule_name.as_deref() == Some(wanted.as_str()));
            if case.expect.is_met_by(&decision) && rule_ok {
                passed += 1;
                continue;
            }
            failed += 1;
            let title = case
                .name
                .as_ref()
                .map(|name| format!(" \"{name}\""))
                .unwrap_or_default();
            let mut expected = case.expect.describe();
            if let Some(rule) = &case.rule {
                expected.push_str(&format!(" by rule {rule}"));
            }
            println!(
                "FAIL {} case {}{title}: {} {} as {}",
                file.display(),
                index + 1,
                case.method,
                case.path,
                case.caller.label()
            );
            println!("  expected: {expected}");
            println!(
                "  actual:   {} (status {}, rule {}, reason {})",
                outcome_label(&decision),
                decision.status,
                rule_name.as_deref().unwrap_or("<none>"),
                decision.reason
            );
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        Outcome::Success
    } else {
        Outcome::Failures
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_needs_roles_or_anonymous() {
        let error = parse_cases(
            Path::new("c.yaml"),
            "cases:\n  - {method: GET, path: /a, expect: allow}\n",
        )
        .unwrap_err();
        assert!(error.contains("case 1"), "{error}");
    }

    #[test]
    fn roles_and_anonymous_together_are_refused() {
        let error = parse_cases(
            Path::new("c.yaml"),
            "cases:\n  - {method: GET, path: /a, roles: [A], anonymous: true, expect: allow}\n",
        )
        .unwrap_err();
        assert!(error.contains("not both"), "{error}");
    }

    #[test]
    fn unknown_expectation_is_refused() {
        let error = parse_cases(
            Path::new("c.yaml"),
            "cases:\n  - {method: GET, path: /a, anonymous: true, expect: allowed}\n",
        )
        .unwrap_err();
        assert!(error.contains("`allowed`"), "{error}");
    }

    #[test]
    fn unknown_case_field_is_refused_with_its_line() {
        let error = parse_cases(
            Path::new("c.yaml"),
            "cases:\n  - method: GET\n    path: /a\n    anonymous: true\n    expct: allow\n",
        )
        .unwrap_err();
        assert!(error.starts_with("c.yaml:"), "{error}");
        assert!(error.contains("expct"), "{error}");
    }

    #[test]
    fn status_codes_and_words_are_both_accepted() {
        let cases = parse_cases(
            Path::new("c.json"),
            r#"{"cases": [{"method": "GET", "path": "/a", "roles": [], "expect": 403},
                          {"method": "GET", "path": "/a", "anonymous": true, "expect": "unauthenticated"}]}"#,
        )
        .unwrap();
        assert_eq!(cases[0].expect, Expectation::Status(403));
        assert_eq!(cases[1].expect, Expectation::Outcome("unauthenticated"));
    }
}
