//! Pure policy engine (no proxy-wasm imports): the filter configuration,
//! compiled once, and the decision for every request.
//!
//! Modules, in the order a request meets them:
//! - [`config`]: the raw serde types of the policy document ([`RawPolicy`]).
//! - `compile`: [`Policy::from_json`] / [`Policy::from_raw`], which validate
//!   everything and refuse any policy they do not fully understand
//!   ([`ConfigError`]).
//! - [`path`]: [`canonical_path`] and [`check_method`]; non-canonical request
//!   targets are a 400 and never reach a rule.
//! - [`matcher`]: path templates and the segment-trie [`RouteTable`].
//! - [`roles`]: `role_inherits` compiled into a transitive closure.
//! - [`identity`]: JWT verification ([`identity::Verifier`]), claims to
//!   [`Identity`], the [`TokenCache`], and [`identity::sign_hs`] for dev tokens.
//! - `decision`: [`Policy::decide`], which turns a [`Request`] into a
//!   [`Decision`]. A denial is a decision, never an error, and any failure on
//!   a security path resolves to a denial.
//! - `audit_settings`: the `audit` section ([`AuditSettings`], [`AuditLevel`]).
//! - `strict_json`: JSON parsing that refuses duplicate keys.

mod audit_settings;
mod compile;
pub mod config;
mod decision;
mod error;
pub mod identity;
pub mod matcher;
pub mod path;
pub mod roles;

use std::collections::BTreeMap;

pub use crate::strict_json::StrictJsonError;
pub use audit_settings::{AuditLevel, AuditSettings};
pub use config::RawPolicy;
pub use decision::{Authorization, Decision, DecisionKind, Effect, Request};
pub use error::{ConfigError, KeyError};
pub use identity::{Identity, TokenCache};
pub use matcher::{RouteTable, Template, TemplateError};
pub use path::{canonical_path, check_method, MethodError, PathError};

use identity::{ClaimSettings, Verifier};
use roles::RoleGraph;

/// Whether denials are enforced or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    /// Would-be denials (401/403) are let through and reported as
    /// [`DecisionKind::DryRunDenied`]. A 400 is never let through.
    DryRun,
}

/// What a request that matches no rule gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// 403 `no_matching_rule`.
    Deny,
    /// Any valid identity.
    Authenticated,
    /// Let through.
    Allow,
}

/// What a rule asks of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Public,
    Authenticated,
    /// At least one of these roles (effective roles, after inheritance).
    AnyOf(Vec<String>),
    /// Every one of these roles.
    AllOf(Vec<String>),
    /// A signed delivery, verified on the body by the named webhook verifier.
    Webhook(String),
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    name: String,
    methods: Option<Vec<String>>,
    template: String,
    requirement: Requirement,
    /// Name and segment index of the tenant parameter.
    tenant_param: Option<(String, usize)>,
    mode: Option<Mode>,
    audit: Option<AuditLevel>,
}

impl Rule {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Methods the rule lists; `None` means any method.
    pub fn methods(&self) -> Option<&[String]> {
        self.methods.as_deref()
    }

    /// The path template as written.
    pub fn template(&self) -> &str {
        &self.template
    }

    pub fn requirement(&self) -> &Requirement {
        &self.requirement
    }

    /// The path parameter that must equal the caller's tenant.
    pub fn tenant_param(&self) -> Option<&str> {
        self.tenant_param.as_ref().map(|(name, _)| name.as_str())
    }

    /// The rule's own mode, when it overrides the policy's.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// The rule's own audit level, when it overrides the policy's.
    pub fn audit(&self) -> Option<AuditLevel> {
        self.audit
    }
}

/// How identities are obtained.
#[derive(Debug, Clone)]
enum IdentitySource {
    Bearer(Verifier),
    /// Envoy's jwt_authn verified the token; its payload is in dynamic
    /// metadata under this key (read by the glue).
    JwtAuthnMetadata {
        metadata_key: String,
    },
}

#[derive(Debug, Clone)]
struct IdentitySettings {
    source: IdentitySource,
    claims: ClaimSettings,
    cross_tenant_roles: Vec<String>,
}

/// A compiled, immutable policy. `Send + Sync`: one per plugin configuration.
#[derive(Debug)]
pub struct Policy {
    revision: String,
    mode: Mode,
    unmatched: Unmatched,
    identity: Option<IdentitySettings>,
    roles: RoleGraph,
    rules: Vec<Rule>,
    routes: RouteTable,
    webhooks: BTreeMap<String, crate::webhook::LagoVerifier>,
    audit: Option<AuditSettings>,
}

impl Policy {
    /// Short stable hash of the policy: the first 16 hex digits of SHA-256
    /// over the canonical JSON (sorted keys, defaults filled) of the raw policy.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The rules in configuration order; [`Decision::rule`] indexes this.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn audit(&self) -> Option<&AuditSettings> {
        self.audit.as_ref()
    }

    pub fn webhook(&self, name: &str) -> Option<&crate::webhook::LagoVerifier> {
        self.webhooks.get(name)
    }

    pub fn webhook_names(&self) -> impl Iterator<Item = &str> {
        self.webhooks.keys().map(String::as_str)
    }

    /// The policy-wide mode (a rule may override it).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn unmatched(&self) -> Unmatched {
        self.unmatched
    }

    /// For `identity.source = jwt_authn_metadata`: the key under
    /// `metadata.filter_metadata["envoy.filters.http.jwt_authn"]` that holds
    /// the verified payload. `None` for bearer tokens or without identity.
    pub fn jwt_authn_metadata_key(&self) -> Option<&str> {
        match &self.identity.as_ref()?.source {
            IdentitySource::JwtAuthnMetadata { metadata_key } => Some(metadata_key),
            IdentitySource::Bearer(_) => None,
        }
    }

    /// The bearer token verifier, when identities come from bearer tokens.
    pub fn verifier(&self) -> Option<&Verifier> {
        match &self.identity.as_ref()?.source {
            IdentitySource::Bearer(verifier) => Some(verifier),
            IdentitySource::JwtAuthnMetadata { .. } => None,
        }
    }

    /// The effective roles granted by `claimed` under this policy's `role_inherits`.
    pub fn effective_roles<'a>(&self, claimed: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        self.roles.effective_roles(claimed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(policy: serde_json::Value) -> Policy {
        Policy::from_json(policy.to_string().as_bytes(), &|_| None).unwrap()
    }

    fn identity(source: serde_json::Value) -> serde_json::Value {
        let mut identity = serde_json::json!({"roles_claim": "roles"});
        for (key, value) in source.as_object().unwrap() {
            identity[key] = value.clone();
        }
        identity
    }

    #[test]
    fn identity_accessors_answer_none_for_the_other_source() {
        let metadata = compile(serde_json::json!({
            "identity": identity(serde_json::json!({"source": "jwt_authn_metadata", "metadata_key": "p"})),
            "rules": []
        }));
        assert_eq!(metadata.jwt_authn_metadata_key(), Some("p"));
        assert!(metadata.verifier().is_none());

        let bearer = compile(serde_json::json!({
            "identity": identity(serde_json::json!({"issuers": [{"issuer": "i", "audiences": ["a"],
                "jwks": {"keys": [{"kty": "oct", "alg": "HS256", "k": "ztaE2Q9vzzMOFaw52fhRZjLEA3NiZGG_jFhxPeWNSuA"}]}}]})),
            "rules": []
        }));
        assert!(bearer.verifier().is_some());
        assert_eq!(bearer.jwt_authn_metadata_key(), None);

        let none = compile(serde_json::json!({"rules": []}));
        assert!(none.verifier().is_none());
        assert_eq!(none.jwt_authn_metadata_key(), None);
        assert!(none.audit().is_none());
        assert_eq!(none.webhook_names().count(), 0);
    }

    #[test]
    fn effective_roles_follow_role_inherits() {
        let policy = compile(serde_json::json!({
            "role_inherits": {"ADMIN": ["OPERATOR"]},
            "rules": []
        }));
        assert_eq!(policy.effective_roles(["ADMIN"]), ["ADMIN", "OPERATOR"]);
        assert_eq!(policy.effective_roles(["VIEWER"]), ["VIEWER"]);
    }

    #[test]
    fn rule_accessors_expose_the_compiled_rule() {
        let policy = compile(serde_json::json!({
            "rules": [{"name": "h", "methods": ["GET", "HEAD"], "path": "/h/{id}", "public": true,
                       "mode": "dry_run", "audit": "none"}]
        }));
        let rule = &policy.rules()[0];
        assert_eq!(rule.name(), "h");
        assert_eq!(rule.template(), "/h/{id}");
        assert_eq!(
            rule.methods(),
            Some(&["GET".to_owned(), "HEAD".to_owned()][..])
        );
        assert_eq!(rule.requirement(), &Requirement::Public);
        assert_eq!(rule.mode(), Some(Mode::DryRun));
        assert_eq!(rule.audit(), Some(AuditLevel::None));
        assert_eq!(rule.tenant_param(), None);
        assert_eq!(policy.mode(), Mode::Enforce);
    }

    #[test]
    fn policy_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Policy>();
    }
}
