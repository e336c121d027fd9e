//! Raw policy (as written) -> [`Policy`] (checked), or the first problem found.
//!
//! Raw types are destructured exhaustively, so a field added to the schema
//! cannot be ignored here by mistake.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::audit_settings::{AuditLevel, AuditSettings};
use super::config::{RawIdentity, RawIdentitySource, RawMode, RawPolicy, RawRule, RawUnmatched};
use super::error::ConfigError;
use super::identity::{ClaimPath, ClaimSettings, Verifier};
use super::matcher::{RouteTable, Template};
use super::path::check_method;
use super::roles::{is_valid_role_name, RoleGraph};
use super::{IdentitySettings, IdentitySource, Mode, Policy, Requirement, Rule, Unmatched};
use crate::strict_json::{canonical_json, parse_strict};

/// Largest `clock_skew_seconds`: more would make `exp` meaningless.
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 600;
/// Longest rule name (it becomes a metric name and a header value).
pub const MAX_RULE_NAME_LEN: usize = 128;

impl Policy {
    /// Parse the filter configuration (one JSON document), validate, compile.
    /// `env` resolves `*_env` secret references (the Wasm VM's environment in
    /// the filter). Duplicate JSON keys anywhere are an error.
    pub fn from_json(
        json: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Policy, ConfigError> {
        parse_strict(json).map_err(ConfigError::Json)?;
        // Parse again into the typed form for precise schema errors (line and column).
        let raw: RawPolicy = serde_json::from_slice(json).map_err(ConfigError::Schema)?;
        Policy::from_raw(raw, env)
    }

    /// Validate and compile an already parsed policy.
    pub fn from_raw(
        raw: RawPolicy,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Policy, ConfigError> {
        let revision = revision_of(&raw)?;
        let RawPolicy {
            mode,
            unmatched,
            identity,
            role_inherits,
            rules,
            webhooks,
            audit,
        } = raw;
        for (role, granted) in &role_inherits {
            for name in std::iter::once(role).chain(granted) {
                check_role_name("role_inherits", name)?;
            }
        }
        let roles = RoleGraph::new(&role_inherits)?;
        let identity = identity
            .as_ref()
            .map(|raw| compile_identity(raw, env))
            .transpose()?;
        let mut compiled_webhooks = BTreeMap::new();
        for (name, raw) in &webhooks {
            let verifier = crate::webhook::compile_webhook(name, raw, env).map_err(|problem| {
                ConfigError::Webhook {
                    name: name.clone(),
                    problem,
                }
            })?;
            compiled_webhooks.insert(name.clone(), verifier);
        }
        let mut routes = RouteTable::new();
        let mut compiled_rules: Vec<Rule> = Vec::with_capacity(rules.len());
        // BTreeSet, not HashSet: no random hash seed (host randomness) in the Wasm VM.
        let mut names = BTreeSet::new();
        for (index, raw) in rules.iter().enumerate() {
            let (rule, template) = compile_rule(raw, identity.as_ref(), &compiled_webhooks)?;
            if !names.insert(rule.name.clone()) {
                return Err(ConfigError::DuplicateRuleName { name: rule.name });
            }
            if let Err(overlap) = routes.insert(&template, rule.methods.as_deref(), index) {
                let first = compiled_rules
                    .get(overlap.existing)
                    .map(|r| r.name.clone())
                    .unwrap_or_default();
                return Err(ConfigError::OverlappingRules {
                    first,
                    second: rule.name,
                });
            }
            compiled_rules.push(rule);
        }
        let unmatched = match unmatched {
            RawUnmatched::Deny => Unmatched::Deny,
            RawUnmatched::Allow => Unmatched::Allow,
            RawUnmatched::Authenticated => {
                if identity.is_none() {
                    return Err(ConfigError::MissingIdentity {
                        needed_by: "`unmatched: authenticated`".to_owned(),
                    });
                }
                Unmatched::Authenticated
            }
        };
        let audit = audit
            .as_ref()
            .map(|raw| AuditSettings::compile(raw, env))
            .transpose()?;
        Ok(Policy {
            revision,
            mode: mode_of(mode),
            unmatched,
            identity,
            roles,
            rules: compiled_rules,
            routes,
            webhooks: compiled_webhooks,
            audit,
        })
    }
}

fn mode_of(raw: RawMode) -> Mode {
    match raw {
        RawMode::Enforce => Mode::Enforce,
        RawMode::DryRun => Mode::DryRun,
    }
}

fn check_role_name(context: &str, role: &str) -> Result<(), ConfigError> {
    if is_valid_role_name(role) {
        Ok(())
    } else {
        Err(ConfigError::InvalidRoleName {
            context: context.to_owned(),
            role: role.to_owned(),
        })
    }
}

fn identity_error(problem: impl Into<String>) -> ConfigError {
    ConfigError::Identity {
        problem: problem.into(),
    }
}

fn claim_path(field: &str, text: &str) -> Result<ClaimPath, ConfigError> {
    ClaimPath::parse(text).ok_or_else(|| {
        identity_error(format!(
            "`{field}` `{text}` must be a dotted claim path with non-empty parts"
        ))
    })
}

fn compile_identity(
    raw: &RawIdentity,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<IdentitySettings, ConfigError> {
    let RawIdentity {
        source,
        issuers,
        metadata_key,
        roles_claim,
        subject_claim,
        tenant_claim,
        clock_skew_seconds,
        cross_tenant_roles,
    } = raw;
    let claims = ClaimSettings {
        subject: claim_path("subject_claim", subject_claim)?,
        tenant: tenant_claim
            .as_deref()
            .map(|text| claim_path("tenant_claim", text))
            .transpose()?,
        roles: claim_path("roles_claim", roles_claim)?,
    };
    for role in cross_tenant_roles {
        check_role_name("identity.cross_tenant_roles", role)?;
    }
    if *clock_skew_seconds > MAX_CLOCK_SKEW_SECONDS {
        return Err(identity_error(format!(
            "`clock_skew_seconds` is {clock_skew_seconds}; at most {MAX_CLOCK_SKEW_SECONDS} is allowed"
        )));
    }
    let source = match source {
        RawIdentitySource::BearerJwt => {
            if metadata_key.is_some() {
                return Err(identity_error(
                    "`metadata_key` only applies to source `jwt_authn_metadata`",
                ));
            }
            IdentitySource::Bearer(Verifier::new(issuers, *clock_skew_seconds, env)?)
        }
        RawIdentitySource::JwtAuthnMetadata => {
            if !issuers.is_empty() {
                return Err(identity_error(
                    "`issuers` do not apply to source `jwt_authn_metadata` (Envoy's jwt_authn verifies the token)",
                ));
            }
            match metadata_key {
                Some(key) if !key.trim().is_empty() => IdentitySource::JwtAuthnMetadata {
                    metadata_key: key.clone(),
                },
                _ => {
                    return Err(identity_error(
                        "source `jwt_authn_metadata` needs a non-empty `metadata_key`",
                    ))
                }
            }
        }
    };
    Ok(IdentitySettings {
        source,
        claims,
        cross_tenant_roles: cross_tenant_roles.clone(),
    })
}

fn is_valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_RULE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn role_list(
    rule: &str,
    field: &'static str,
    roles: &[String],
) -> Result<Vec<String>, ConfigError> {
    if roles.is_empty() {
        return Err(ConfigError::EmptyRoleList {
            rule: rule.to_owned(),
            field,
        });
    }
    for role in roles {
        check_role_name(&format!("rule `{rule}` {field}"), role)?;
    }
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    Ok(roles)
}

fn true_flag(rule: &str, field: &'static str, value: Option<bool>) -> Result<bool, ConfigError> {
    match value {
        Some(true) => Ok(true),
        Some(false) => Err(ConfigError::FalseFlag {
            rule: rule.to_owned(),
            field,
        }),
        None => Ok(false),
    }
}

fn compile_rule(
    raw: &RawRule,
    identity: Option<&IdentitySettings>,
    webhooks: &BTreeMap<String, crate::webhook::LagoVerifier>,
) -> Result<(Rule, Template), ConfigError> {
    let RawRule {
        name,
        methods,
        path,
        public,
        authenticated,
        any_of,
        all_of,
        webhook,
        tenant_param,
        mode,
        audit,
    } = raw;
    if !is_valid_rule_name(name) {
        return Err(ConfigError::InvalidRuleName { name: name.clone() });
    }
    let methods = match methods {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(ConfigError::EmptyMethods { rule: name.clone() })
        }
        Some(list) => {
            for (index, method) in list.iter().enumerate() {
                check_method(method).map_err(|problem| ConfigError::InvalidMethod {
                    rule: name.clone(),
                    method: method.clone(),
                    problem,
                })?;
                if list[..index].contains(method) {
                    return Err(ConfigError::DuplicateMethod {
                        rule: name.clone(),
                        method: method.clone(),
                    });
                }
            }
            Some(list.clone())
        }
    };
    let template = Template::parse(path).map_err(|problem| ConfigError::InvalidTemplate {
        rule: name.clone(),
        path: path.clone(),
        problem,
    })?;

    let is_public = true_flag(name, "public", *public)?;
    let is_authenticated = true_flag(name, "authenticated", *authenticated)?;
    let found = usize::from(is_public)
        + usize::from(is_authenticated)
        + usize::from(any_of.is_some())
        + usize::from(all_of.is_some())
        + usize::from(webhook.is_some());
    if found != 1 {
        return Err(ConfigError::RuleKind {
            rule: name.clone(),
            found,
        });
    }
    let requirement = if is_public {
        Requirement::Public
    } else if is_authenticated {
        Requirement::Authenticated
    } else if let Some(roles) = any_of {
        Requirement::AnyOf(role_list(name, "any_of", roles)?)
    } else if let Some(roles) = all_of {
        Requirement::AllOf(role_list(name, "all_of", roles)?)
    } else {
        let webhook = webhook.clone().unwrap_or_default();
        if !webhooks.contains_key(&webhook) {
            return Err(ConfigError::UnknownWebhook {
                rule: name.clone(),
                webhook,
            });
        }
        Requirement::Webhook(webhook)
    };
    let needs_identity = matches!(
        requirement,
        Requirement::Authenticated | Requirement::AnyOf(_) | Requirement::AllOf(_)
    );
    if needs_identity && identity.is_none() {
        return Err(ConfigError::MissingIdentity {
            needed_by: format!("rule `{name}`"),
        });
    }
    if matches!(requirement, Requirement::Webhook(_)) && *mode == Some(RawMode::DryRun) {
        return Err(ConfigError::DryRunWebhookRule { rule: name.clone() });
    }
    let tenant_param = match tenant_param {
        None => None,
        Some(param) => {
            if !needs_identity {
                return Err(ConfigError::TenantParamWithoutIdentity {
                    rule: name.clone(),
                    kind: if is_public { "public" } else { "webhook" },
                });
            }
            let index = template.param_index(param).ok_or_else(|| {
                ConfigError::TenantParamNotInTemplate {
                    rule: name.clone(),
                    param: param.clone(),
                }
            })?;
            if identity.is_some_and(|i| i.claims.tenant.is_none()) {
                return Err(ConfigError::TenantParamWithoutTenantClaim { rule: name.clone() });
            }
            Some((param.clone(), index))
        }
    };
    let rule = Rule {
        name: name.clone(),
        methods,
        template: path.clone(),
        requirement,
        tenant_param,
        mode: mode.map(mode_of),
        audit: audit.map(AuditLevel::from),
    };
    Ok((rule, template))
}

/// First 16 hex digits of SHA-256 over the canonical JSON of the raw policy
/// (object keys sorted at every level, no whitespace, defaults filled in).
fn revision_of(raw: &RawPolicy) -> Result<String, ConfigError> {
    let value = serde_json::to_value(raw).map_err(ConfigError::Schema)?;
    let digest = Sha256::digest(canonical_json(&value).as_bytes());
    let mut revision = String::with_capacity(16);
    for byte in &digest[..8] {
        let _ = write!(revision, "{byte:02x}");
    }
    Ok(revision)
}
