//! `avb-policy check`: validate policies and summarise them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::policy::RawPolicy;

use super::env_file::Environment;
use super::source::load_policy;
use super::{CliError, Outcome};

pub fn run(paths: &[PathBuf], env_file: Option<&Path>) -> Result<Outcome, CliError> {
    let environment = Environment::load(env_file)?;
    let mut outcome = Outcome::Success;
    for path in paths {
        let compiled = load_policy(path).and_then(|document| {
            let compiled = document.compile(&environment)?;
            Ok((document, compiled))
        });
        match compiled {
            Ok((document, compiled)) => {
                let summary = summarise(&document.raw);
                println!(
                    "{}: ok: {} rules, {} roles, {} webhooks, revision {}",
                    path.display(),
                    summary.rules,
                    summary.roles.len(),
                    summary.webhooks,
                    compiled.policy.revision()
                );
                if !summary.roles.is_empty() {
                    let roles: Vec<&str> = summary.roles.iter().map(String::as_str).collect();
                    println!("  roles: {}", roles.join(", "));
                }
                if !compiled.placeholders.is_empty() {
                    eprintln!(
                        "{}: note: not set here, checked with placeholders (the filter needs them in the Wasm VM environment): {}",
                        path.display(),
                        compiled.placeholders.join(", ")
                    );
                }
                for warning in warnings(&document.raw) {
                    eprintln!("{}: warning: {warning}", path.display());
                }
            }
            Err(error) => {
                match CliError::from(error) {
                    CliError::Usage(message) => return Err(CliError::Usage(message)),
                    CliError::Invalid(message) => eprintln!("{message}"),
                }
                outcome = Outcome::Failures;
            }
        }
    }
    Ok(outcome)
}

/// Counts shown by `check`.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub rules: usize,
    pub roles: BTreeSet<String>,
    pub webhooks: usize,
}

/// Every role named anywhere in the policy.
pub fn summarise(raw: &RawPolicy) -> Summary {
    let mut roles: BTreeSet<String> = rule_roles(raw).into_iter().collect();
    for (role, granted) in &raw.role_inherits {
        roles.insert(role.clone());
        roles.extend(granted.iter().cloned());
    }
    if let Some(identity) = &raw.identity {
        roles.extend(identity.cross_tenant_roles.iter().cloned());
    }
    Summary {
        rules: raw.rules.len(),
        roles,
        webhooks: raw.webhooks.len(),
    }
}

/// Roles that some rule requires (`any_of`, `all_of`).
fn rule_roles(raw: &RawPolicy) -> BTreeSet<String> {
    raw.rules
        .iter()
        .flat_map(|rule| {
            let any = rule.any_of.iter().flatten();
            let all = rule.all_of.iter().flatten();
            any.chain(all).cloned()
        })
        .collect()
}

/// Things that are valid but probably not meant.
pub fn warnings(raw: &RawPolicy) -> Vec<String> {
    let mut warnings = Vec::new();
    let required = rule_roles(raw);

    // A role in role_inherits matters only if it, or a role it grants
    // (transitively), is required by some rule.
    let mentioned: BTreeSet<&String> = raw
        .role_inherits
        .iter()
        .flat_map(|(role, granted)| std::iter::once(role).chain(granted.iter()))
        .collect();
    for role in mentioned {
        let reach = reachable(&raw.role_inherits, role);
        if reach.iter().all(|granted| !required.contains(*granted)) {
            warnings.push(format!(
                "role `{role}` in role_inherits neither is nor grants a role that any rule requires"
            ));
        }
    }

    if let Some(identity) = &raw.identity {
        let tenant_rules = raw.rules.iter().any(|rule| rule.tenant_param.is_some());
        if !identity.cross_tenant_roles.is_empty() && !tenant_rules {
            warnings.push(format!(
                "cross_tenant_roles ({}) has no effect: no rule sets tenant_param",
                identity.cross_tenant_roles.join(", ")
            ));
        }
    }

    // A rule whose roles are named nowhere else is likely a typo: no other
    // rule, no inheritance and no cross-tenant setting knows them.
    for (index, rule) in raw.rules.iter().enumerate() {
        let own: BTreeSet<&String> = rule
            .any_of
            .iter()
            .chain(rule.all_of.iter())
            .flatten()
            .collect();
        if own.is_empty() {
            continue;
        }
        let known_elsewhere = |role: &String| {
            raw.rules.iter().enumerate().any(|(other, r)| {
                other != index
                    && r.any_of
                        .iter()
                        .chain(r.all_of.iter())
                        .flatten()
                        .any(|x| x == role)
            }) || raw
                .role_inherits
                .iter()
                .any(|(k, granted)| k == role || granted.contains(role))
                || raw
                    .identity
                    .as_ref()
                    .is_some_and(|identity| identity.cross_tenant_roles.contains(role))
        };
        if !own.iter().any(|role| known_elsewhere(role)) {
            let names: Vec<&str> = own.iter().map(|role| role.as_str()).collect();
            warnings.push(format!(
                "rule `{}` requires only roles named nowhere else in the policy ({}); check the spelling",
                rule.name,
                names.join(", ")
            ));
        }
    }
    warnings
}

/// `role` and every role it grants, transitively.
fn reachable<'a>(
    inherits: &'a BTreeMap<String, Vec<String>>,
    role: &'a String,
) -> BTreeSet<&'a String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![role];
    while let Some(current) = stack.pop() {
        if seen.insert(current) {
            if let Some(granted) = inherits.get(current) {
                stack.extend(granted.iter());
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(yaml: &str) -> RawPolicy {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn summary_counts_every_role_named_anywhere() {
        let policy = raw(
            "role_inherits: {ADMIN: [OPERATOR]}\nrules:\n  - {name: a, path: /a, any_of: [DEV]}\n",
        );
        let summary = summarise(&policy);
        assert_eq!(summary.rules, 1);
        assert_eq!(summary.roles.len(), 3);
    }

    #[test]
    fn inherited_role_that_reaches_no_rule_is_warned_about() {
        let policy = raw(
            "role_inherits: {AUDITOR: [VIEWER]}\nrules:\n  - {name: a, path: /a, any_of: [X]}\n  - {name: b, path: /b, any_of: [X]}\n",
        );
        let found = warnings(&policy);
        assert!(found.iter().any(|w| w.contains("`AUDITOR`")), "{found:?}");
        assert!(found.iter().any(|w| w.contains("`VIEWER`")), "{found:?}");
    }

    #[test]
    fn role_granting_a_required_role_is_not_warned_about() {
        let policy = raw(
            "role_inherits: {ADMIN: [OPERATOR]}\nrules:\n  - {name: a, path: /a, any_of: [OPERATOR]}\n",
        );
        assert!(warnings(&policy).is_empty(), "{:?}", warnings(&policy));
    }

    #[test]
    fn rule_with_roles_known_nowhere_else_is_warned_about() {
        let policy = raw("rules:\n  - {name: a, path: /a, any_of: [OPERATR]}\n  - {name: b, path: /b, any_of: [OPERATOR]}\n  - {name: c, path: /c, any_of: [OPERATOR]}\n");
        let found = warnings(&policy);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("rule `a`"), "{found:?}");
    }
}
