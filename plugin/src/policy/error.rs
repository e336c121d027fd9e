//! Configuration errors: every way a policy document can be refused.
//!
//! Each message names the rule, field, issuer or key concerned, so the one log
//! line `on_configure` writes is enough to fix the policy. Messages never
//! contain secret values (only the names of environment variables).

use super::matcher::TemplateError;
use super::roles::RoleCycle;
use crate::strict_json::StrictJsonError;
use crate::webhook::WebhookConfigError;

/// A policy that cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("policy is not valid JSON: {0}")]
    Json(#[source] StrictJsonError),
    #[error("policy does not match the schema: {0}")]
    Schema(#[source] serde_json::Error),
    #[error("rule name `{name}` is invalid: use letters, digits, `.`, `_` and `-`")]
    InvalidRuleName { name: String },
    #[error("rule name `{name}` is used twice")]
    DuplicateRuleName { name: String },
    #[error("rule `{rule}`: method `{method}` is invalid: {problem}")]
    InvalidMethod {
        rule: String,
        method: String,
        problem: super::path::MethodError,
    },
    #[error("rule `{rule}`: method `{method}` is listed twice")]
    DuplicateMethod { rule: String, method: String },
    #[error("rule `{rule}`: `methods` is empty; omit it to allow any method")]
    EmptyMethods { rule: String },
    #[error(
        "rule `{rule}` must have exactly one of `public`, `authenticated`, `any_of`, `all_of`, `webhook` (found {found})"
    )]
    RuleKind { rule: String, found: usize },
    #[error("rule `{rule}`: `{field}` may only be `true`; remove it instead")]
    FalseFlag { rule: String, field: &'static str },
    #[error("rule `{rule}`: `{field}` lists no roles")]
    EmptyRoleList { rule: String, field: &'static str },
    #[error(
        "{context}: role name `{role}` is invalid: use printable ASCII without spaces or commas"
    )]
    InvalidRoleName { context: String, role: String },
    #[error("rule `{rule}`: invalid path template `{path}`: {problem}")]
    InvalidTemplate {
        rule: String,
        path: String,
        #[source]
        problem: TemplateError,
    },
    #[error(
        "rules `{first}` and `{second}` overlap: same path shape and a common method, so neither is more specific"
    )]
    OverlappingRules { first: String, second: String },
    #[error("rule `{rule}`: tenant_param `{param}` is not a `{{param}}` of its path template")]
    TenantParamNotInTemplate { rule: String, param: String },
    #[error("rule `{rule}`: tenant_param needs identity.tenant_claim to be set")]
    TenantParamWithoutTenantClaim { rule: String },
    #[error("rule `{rule}`: tenant_param needs an identity, but the rule is `{kind}`")]
    TenantParamWithoutIdentity { rule: String, kind: &'static str },
    #[error(
        "rule `{rule}`: webhook rules cannot be dry_run (an unverified body is never let through)"
    )]
    DryRunWebhookRule { rule: String },
    #[error("rule `{rule}`: webhook `{webhook}` is not configured under `webhooks`")]
    UnknownWebhook { rule: String, webhook: String },
    /// The webhook's own message already names it.
    #[error("{problem}")]
    Webhook {
        name: String,
        problem: WebhookConfigError,
    },
    #[error(transparent)]
    RoleCycle(#[from] RoleCycle),
    #[error("{needed_by} needs an identity, but the policy has no `identity` section")]
    MissingIdentity { needed_by: String },
    #[error("identity: {problem}")]
    Identity { problem: String },
    #[error("identity: issuer `{issuer}` is listed twice")]
    DuplicateIssuer { issuer: String },
    #[error("identity: issuer `{issuer}` lists no audiences")]
    NoAudiences { issuer: String },
    #[error("identity: issuer `{issuer}` has no keys")]
    NoKeys { issuer: String },
    #[error("identity: issuer `{issuer}`: key `{kid}` is listed twice")]
    DuplicateKid { issuer: String, kid: String },
    #[error("identity: issuer `{issuer}`, key {key}: {problem}")]
    Key {
        issuer: String,
        /// `` `kid` `` or `#index` when the key has no kid.
        key: String,
        problem: KeyError,
    },
    #[error("`{field}` names environment variable `{var}`, which is not set or empty")]
    MissingEnv { field: String, var: String },
    #[error("`{field}`: give exactly one of `{field}` and `{field}_env`")]
    SecretSource { field: String },
    #[error("audit: {problem}")]
    Audit { problem: String },
}

/// Why one JSON Web Key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("unsupported key type `{0}` (use oct, RSA or EC)")]
    UnsupportedKeyType(String),
    #[error("algorithm `{alg}` does not fit key type `{kty}`")]
    AlgorithmMismatch { kty: String, alg: String },
    #[error("key type `oct` needs `alg` (HS256, HS384 or HS512)")]
    MissingAlgorithm,
    #[error("`use` is `{0}`; only signature keys (`sig`) are accepted")]
    NotSignatureKey(String),
    #[error("missing `{0}`")]
    MissingField(&'static str),
    #[error("`{0}` is not valid unpadded base64url")]
    BadBase64(&'static str),
    #[error("field `{0}` does not belong to this key type")]
    UnexpectedField(&'static str),
    #[error("HMAC key is {bytes} bytes; {alg} needs at least {min}")]
    HmacKeyTooShort {
        alg: &'static str,
        bytes: usize,
        min: usize,
    },
    #[error("RSA modulus is {bits} bits; at least 2048 are required")]
    RsaTooSmall { bits: usize },
    #[error("RSA key is invalid: {0}")]
    InvalidRsa(String),
    #[error("curve `{0}` is not supported (use P-256)")]
    WrongCurve(String),
    #[error("EC point is not on P-256")]
    InvalidEcPoint,
}
