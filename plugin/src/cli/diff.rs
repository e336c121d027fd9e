//! `avb-policy diff`: the effect of a policy change, not its text.
//!
//! For every (method, path pattern) that a rule of either policy names, and
//! for every role named in either policy plus an anonymous caller, the request
//! is decided by both policies' engines; each difference is printed as
//! `METHOD PATH ROLE: old -> new`. A pattern is turned into a concrete path by
//! filling each `{param}`, `*` and `**` with a sample segment; the sample
//! caller's tenant equals that segment, so `tenant_param` rules are compared
//! for a caller of the right tenant.

use std::collections::BTreeSet;
use std::path::Path;

use crate::policy::{Decision, Policy, RawPolicy};

use super::check::summarise;
use super::env_file::Environment;
use super::explain::outcome_label;
use super::probe::{unix_now, Caller, ProbePolicy};
use super::source::load_policy;
use super::{CliError, Outcome};

/// The segment used for `{param}`, `*` and `**` when probing a pattern.
pub const SAMPLE_SEGMENT: &str = "sample";
/// Methods tried for a rule that lists none (any method).
const ANY_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// One changed decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub method: String,
    pub pattern: String,
    pub caller: String,
    pub old: String,
    pub new: String,
}

pub fn run(old: &Path, new: &Path, env_file: Option<&Path>) -> Result<Outcome, CliError> {
    let environment = Environment::load(env_file)?;
    let old_document = load_policy(old)?;
    let new_document = load_policy(new)?;
    let old_revision = old_document
        .compile(&environment)?
        .policy
        .revision()
        .to_owned();
    let new_revision = new_document
        .compile(&environment)?
        .policy
        .revision()
        .to_owned();
    let old_probe = ProbePolicy::new(&old_document, &environment)?;
    let new_probe = ProbePolicy::new(&new_document, &environment)?;
    let changes = changes(
        (&old_document.raw, &old_probe),
        (&new_document.raw, &new_probe),
        unix_now(),
    );
    println!("--- {} (revision {old_revision})", old.display());
    println!("+++ {} (revision {new_revision})", new.display());
    for change in &changes {
        println!(
            "{} {} {}: {} -> {}",
            change.method, change.pattern, change.caller, change.old, change.new
        );
    }
    if changes.is_empty() {
        println!("no decision changes");
        Ok(Outcome::Success)
    } else {
        println!("{} decision changes", changes.len());
        Ok(Outcome::Failures)
    }
}

/// All decision changes between two policies, in a stable order.
pub fn changes(
    old: (&RawPolicy, &ProbePolicy),
    new: (&RawPolicy, &ProbePolicy),
    now: u64,
) -> Vec<Change> {
    let mut routes: BTreeSet<(String, String)> = BTreeSet::new();
    for raw in [old.0, new.0] {
        for rule in &raw.rules {
            match &rule.methods {
                Some(methods) => {
                    for method in methods {
                        routes.insert((rule.path.clone(), method.clone()));
                    }
                }
                None => {
                    for method in ANY_METHODS {
                        routes.insert((rule.path.clone(), method.to_owned()));
                    }
                }
            }
        }
    }
    let mut callers = vec![Caller::Anonymous];
    let roles: BTreeSet<String> = summarise(old.0)
        .roles
        .into_iter()
        .chain(summarise(new.0).roles)
        .collect();
    callers.push(sample_caller(Vec::new()));
    for role in roles {
        callers.push(sample_caller(vec![role]));
    }
    let mut found = Vec::new();
    for (pattern, method) in &routes {
        let path = sample_path(pattern);
        for caller in &callers {
            let before = describe(old.1.policy(), &old.1.decide(method, &path, caller, now));
            let after = describe(new.1.policy(), &new.1.decide(method, &path, caller, now));
            if before != after {
                found.push(Change {
                    method: method.clone(),
                    pattern: pattern.clone(),
                    caller: caller.label(),
                    old: before,
                    new: after,
                });
            }
        }
    }
    found
}

fn sample_caller(roles: Vec<String>) -> Caller {
    Caller::Token {
        roles,
        tenant: Some(SAMPLE_SEGMENT.to_owned()),
        subject: None,
    }
}

/// `/a/{id}/*/**` -> `/a/sample/sample/sample`.
pub fn sample_path(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|segment| {
            let wildcard = segment == "*"
                || segment == "**"
                || (segment.starts_with('{') && segment.ends_with('}'));
            if wildcard {
                SAMPLE_SEGMENT
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The outcome and the deciding rule: a change of either is a change.
fn describe(policy: &Policy, decision: &Decision) -> String {
    let rule = decision
        .rule
        .and_then(|index| policy.rules().get(index))
        .map(|rule| rule.name())
        .unwrap_or("no rule");
    format!("{} ({rule})", outcome_label(decision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_path_fills_every_wildcard() {
        assert_eq!(sample_path("/a/{id}/*/b/**"), "/a/sample/sample/b/sample");
        assert_eq!(sample_path("/healthz"), "/healthz");
    }
}
