//! Raw (serde) form of the filter configuration, exactly as written.
//!
//! Every struct denies unknown fields: a typo such as `any_off` must be a
//! configuration error, never a silently ignored requirement that widens
//! access. Defaults are filled in here, so the canonical JSON used for the
//! policy revision depends on what the policy means, not on how it is spelled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::webhook::RawWebhook;

/// The whole policy document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default)]
    pub mode: RawMode,
    #[serde(default)]
    pub unmatched: RawUnmatched,
    #[serde(default)]
    pub identity: Option<RawIdentity>,
    #[serde(default)]
    pub role_inherits: BTreeMap<String, Vec<String>>,
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub webhooks: BTreeMap<String, RawWebhook>,
    #[serde(default)]
    pub audit: Option<RawAudit>,
}

/// `enforce` (the default) or `dry_run`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RawMode {
    #[default]
    Enforce,
    DryRun,
}

/// What a request that no rule matches gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RawUnmatched {
    #[default]
    Deny,
    Authenticated,
    Allow,
}

/// Where the caller's identity comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RawIdentitySource {
    /// `Authorization: Bearer <jwt>`, verified by the filter itself.
    #[default]
    BearerJwt,
    /// The payload Envoy's jwt_authn filter verified and stored in dynamic metadata.
    JwtAuthnMetadata,
}

fn default_subject_claim() -> String {
    "sub".to_owned()
}

fn default_clock_skew_seconds() -> u64 {
    60
}

/// The `identity` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    #[serde(default)]
    pub source: RawIdentitySource,
    /// Required for `bearer_jwt`, not allowed for `jwt_authn_metadata`.
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    /// Required for `jwt_authn_metadata`, not allowed for `bearer_jwt`.
    #[serde(default)]
    pub metadata_key: Option<String>,
    /// Dotted path of the roles claim, e.g. `realm_access.roles`. No default.
    pub roles_claim: String,
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    #[serde(default)]
    pub tenant_claim: Option<String>,
    #[serde(default = "default_clock_skew_seconds")]
    pub clock_skew_seconds: u64,
    #[serde(default)]
    pub cross_tenant_roles: Vec<String>,
}

/// One trusted token issuer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: RawJwks,
}

/// A JSON Web Key Set (RFC 7517), with `*_env` indirection for secrets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwks {
    pub keys: Vec<RawJwk>,
}

/// One JSON Web Key. Certificate fields (`x5c`, `x5t`, `x5t#S256`) are
/// accepted so a provider's published JWKS can be pasted as is; they are
/// ignored (the key material is `n`/`e` or `x`/`y`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub key_use: Option<String>,
    /// `oct`: the secret, base64url.
    #[serde(default)]
    pub k: Option<String>,
    /// `oct`: name of the environment variable holding the base64url secret.
    #[serde(default)]
    pub k_env: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
    #[serde(default)]
    pub x5c: Option<Vec<String>>,
    #[serde(default)]
    pub x5t: Option<String>,
    #[serde(default, rename = "x5t#S256")]
    pub x5t_s256: Option<String>,
}

/// One route rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    /// Omitted means any method; an empty list is an error.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    pub path: String,
    #[serde(default)]
    pub public: Option<bool>,
    #[serde(default)]
    pub authenticated: Option<bool>,
    #[serde(default)]
    pub any_of: Option<Vec<String>>,
    #[serde(default)]
    pub all_of: Option<Vec<String>>,
    #[serde(default)]
    pub webhook: Option<String>,
    #[serde(default)]
    pub tenant_param: Option<String>,
    #[serde(default)]
    pub mode: Option<RawMode>,
    #[serde(default)]
    pub audit: Option<RawRuleAudit>,
}

/// A rule's audit override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RawRuleAudit {
    All,
    Denied,
    None,
}

/// The policy-wide audit level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RawAuditEvents {
    #[default]
    Denied,
    All,
}

fn default_batch_size() -> usize {
    100
}

fn default_flush_interval_ms() -> u64 {
    500
}

fn default_queue_limit() -> usize {
    10_000
}

fn default_timeout_ms() -> u64 {
    2_000
}

/// The `audit` section: where the filter ships its audit events.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub events: RawAuditEvents,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    #[serde(default = "default_queue_limit")]
    pub queue_limit: usize,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}
