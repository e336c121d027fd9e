//! Deciding requests "as a caller with roles X" without a real token.
//!
//! The policy is compiled a second time with every issuer's keys replaced by
//! one freshly generated `oct` key (issuers, audiences, claim paths, rules and
//! everything else unchanged). A real HS256 token carrying the requested
//! roles, tenant and subject is signed with that key and handed to
//! [`Policy::decide`], so the whole engine path runs: token verification,
//! claim extraction, role inheritance, tenant checks and the rule decision.
//! For `identity.source: jwt_authn_metadata` the same claims are passed as the
//! payload Envoy's jwt_authn would have stored.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::policy::config::{RawIdentitySource, RawJwk};
use crate::policy::identity::{sign_hs, HmacAlgorithm};
use crate::policy::{Authorization, Decision, Policy, RawPolicy, Request};

use super::env_file::Environment;
use super::secrets::OfflineSecrets;
use super::source::{PolicyDocument, SourceError};

/// Who sends a probe request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token at all.
    Anonymous,
    /// A valid token with these claims.
    Token {
        roles: Vec<String>,
        tenant: Option<String>,
        subject: Option<String>,
    },
}

impl Caller {
    /// A short label for output: `anonymous` or the roles (`<no roles>` when none).
    pub fn label(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".to_owned(),
            Caller::Token { roles, .. } if roles.is_empty() => "<no roles>".to_owned(),
            Caller::Token { roles, .. } => roles.join(","),
        }
    }
}

/// Subject used when the caller does not name one.
pub const DEFAULT_SUBJECT: &str = "avb-policy-probe";
const PROBE_TOKEN_LIFETIME_SECONDS: u64 = 300;

/// How tokens reach the probe policy.
enum TokenRoute {
    Bearer {
        issuer: String,
        audience: String,
        kid: String,
    },
    Metadata,
    NoIdentity,
}

/// The policy recompiled with a generated key, able to decide as any caller.
pub struct ProbePolicy {
    policy: Policy,
    key: [u8; 32],
    route: TokenRoute,
    roles_claim: String,
    subject_claim: String,
    tenant_claim: Option<String>,
}

impl ProbePolicy {
    /// Builds the probe variant of `document`. Errors are reported against the
    /// document (they mean the policy itself is invalid).
    pub fn new(
        document: &PolicyDocument,
        environment: &Environment,
    ) -> Result<ProbePolicy, SourceError> {
        let key = generate_key();
        let mut raw: RawPolicy = document.raw.clone();
        let mut route = TokenRoute::NoIdentity;
        let (mut roles_claim, mut subject_claim, mut tenant_claim) =
            (String::new(), "sub".to_owned(), None);
        if let Some(identity) = raw.identity.as_mut() {
            roles_claim = identity.roles_claim.clone();
            subject_claim = identity.subject_claim.clone();
            tenant_claim = identity.tenant_claim.clone();
            match identity.source {
                RawIdentitySource::JwtAuthnMetadata => route = TokenRoute::Metadata,
                RawIdentitySource::BearerJwt => {
                    for (index, issuer) in identity.issuers.iter_mut().enumerate() {
                        let kid = format!("avb-policy-probe-{index}");
                        issuer.jwks.keys = vec![probe_jwk(&kid, &key)];
                        if index == 0 {
                            route = TokenRoute::Bearer {
                                issuer: issuer.issuer.clone(),
                                audience: issuer.audiences.first().cloned().unwrap_or_default(),
                                kid,
                            };
                        }
                    }
                }
            }
        }
        let secrets = OfflineSecrets::new(&raw, environment);
        let policy = Policy::from_raw(raw, &|name: &str| secrets.lookup(name))
            .map_err(|error| document.compile_error(&error.to_string()))?;
        Ok(ProbePolicy {
            policy,
            key,
            route,
            roles_claim,
            subject_claim,
            tenant_claim,
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Decides `method path` as `caller` at `now` (unix seconds).
    pub fn decide(&self, method: &str, path: &str, caller: &Caller, now: u64) -> Decision {
        let claims = match caller {
            Caller::Anonymous => None,
            Caller::Token {
                roles,
                tenant,
                subject,
            } => Some(self.claims(roles, tenant.as_deref(), subject.as_deref(), now)),
        };
        let mut token = None;
        let mut payload = None;
        if let Some(claims) = claims {
            match &self.route {
                TokenRoute::Bearer { kid, .. } => {
                    token = Some(format!(
                        "Bearer {}",
                        sign_hs(
                            HmacAlgorithm::Hs256,
                            &self.key,
                            Some(kid),
                            &claims.to_string()
                        )
                    ));
                }
                TokenRoute::Metadata => payload = Some(claims),
                TokenRoute::NoIdentity => {}
            }
        }
        let authorization = match &token {
            Some(value) => Authorization::One(value),
            None => Authorization::Absent,
        };
        let request = Request {
            method: Some(method),
            path: Some(path),
            authorization,
            jwt_payload: payload.as_ref(),
        };
        self.policy.decide(&request, now)
    }

    fn claims(
        &self,
        roles: &[String],
        tenant: Option<&str>,
        subject: Option<&str>,
        now: u64,
    ) -> Value {
        let mut claims = Value::Object(Map::new());
        if let TokenRoute::Bearer {
            issuer, audience, ..
        } = &self.route
        {
            set_claim(&mut claims, "iss", Value::from(issuer.as_str()));
            set_claim(&mut claims, "aud", Value::from(audience.as_str()));
        }
        set_claim(&mut claims, "iat", Value::from(now));
        set_claim(
            &mut claims,
            "exp",
            Value::from(now + PROBE_TOKEN_LIFETIME_SECONDS),
        );
        set_claim(
            &mut claims,
            &self.subject_claim,
            Value::from(subject.unwrap_or(DEFAULT_SUBJECT)),
        );
        if !self.roles_claim.is_empty() {
            set_claim(&mut claims, &self.roles_claim, Value::from(roles.to_vec()));
        }
        if let (Some(claim), Some(tenant)) = (&self.tenant_claim, tenant) {
            set_claim(&mut claims, claim, Value::from(tenant));
        }
        claims
    }
}

/// Places `value` at a dotted claim path, creating the objects on the way.
pub fn set_claim(claims: &mut Value, dotted_path: &str, value: Value) {
    let mut current = claims;
    let mut parts = dotted_path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let Value::Object(map) = current else {
            return;
        };
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        current = map
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

fn probe_jwk(kid: &str, key: &[u8]) -> RawJwk {
    RawJwk {
        kty: "oct".to_owned(),
        kid: Some(kid.to_owned()),
        alg: Some("HS256".to_owned()),
        key_use: None,
        k: Some(URL_SAFE_NO_PAD.encode(key)),
        k_env: None,
        n: None,
        e: None,
        crv: None,
        x: None,
        y: None,
        x5c: None,
        x5t: None,
        x5t_s256: None,
    }
}

/// A key nobody else knows: it only lives in this process, for the tokens
/// this process mints for itself.
fn generate_key() -> [u8; 32] {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(nanos.to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    hasher.update(RandomState::new().hash_one(nanos).to_le_bytes());
    hasher.finalize().into()
}

/// Seconds since the epoch (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_claim_builds_nested_objects_for_dotted_paths() {
        let mut claims = Value::Object(Map::new());
        set_claim(&mut claims, "realm_access.roles", Value::from(vec!["A"]));
        set_claim(&mut claims, "sub", Value::from("s"));
        assert_eq!(
            claims,
            serde_json::json!({"realm_access": {"roles": ["A"]}, "sub": "s"})
        );
    }

    #[test]
    fn set_claim_replaces_a_scalar_in_the_way() {
        let mut claims = serde_json::json!({"a": 1});
        set_claim(&mut claims, "a.b", Value::from(2));
        assert_eq!(claims, serde_json::json!({"a": {"b": 2}}));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(generate_key(), generate_key());
    }

    #[test]
    fn caller_labels_name_the_roles() {
        assert_eq!(Caller::Anonymous.label(), "anonymous");
        let caller = Caller::Token {
            roles: vec![],
            tenant: None,
            subject: None,
        };
        assert_eq!(caller.label(), "<no roles>");
    }
}
